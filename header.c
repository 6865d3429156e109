/*
 * header.c - the addresses of the From: and Sender: fields of a spooled
 * message, which the monitor reads itself (sender-header-check) to hold
 * them against the login.
 *
 * It runs as root on octets the client chose, in whatever form a
 * compromised session wrote them to the spool, so it is small and bounded:
 * one buffer of HEADER_SECTION_MAX octets and a little, no recursion, a
 * fixed array out; tests/fuzz/fuzz_header.c fuzzes it.  Whatever cannot be
 * read with certainty is HEADER_BAD, and the message is refused.
 *
 * Where an MTA could read the header differently, the choice here is the
 * one that sees at least every From: the MTA might see:
 *  - Lines end with LF (the spool's form, relay.c) or CRLF.  Any other CR,
 *    and any NUL, in the header section is BAD: an MTA could take a bare
 *    CR for a line end and find a field this reader never saw.
 *  - The section ends at the first empty line, or at the end of the file.
 *    A line that is no field (an mbox "From " line, junk) does not end it,
 *    although most MTAs would start the body there; a line of white space
 *    only continues the field above it.  Past HEADER_SECTION_MAX: BAD.
 *  - Field names compare case-insensitively, with white space allowed
 *    before the colon (RFC 5322 4.5.3).  Resent-From, X-From... are other
 *    fields.  Every From: and every Sender: counts, and each must name an
 *    address: a field that names none (empty, or an empty group only) is
 *    BAD, for the MTA adds no From: to a message that has one.
 *
 * The addresses (RFC 5322 3.4, with the obsolete forms of 4.4): display
 * names of atoms and quoted strings, comments (nested) and folding
 * anywhere between tokens, <angle> addresses, bare addr-specs, groups,
 * obsolete routes (dropped: the mailbox is what follows them).  An
 * address comes out as local@domain with the comments and white space
 * between its tokens taken out, as RFC 5322 says they carry no meaning.
 * A quoted local part is BAD: the policy compares local parts with logins,
 * which are never quoted, and refusing keeps forms like "a@b"@c from any
 * comparison.  Non-ASCII or control octets in an address are BAD; in a
 * display name non-ASCII is allowed (RFC 6532), and encoded words are left
 * as they are, being names.  Domain literals are kept as written, when
 * made of atext, '.' and ':' only (no second '@').
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtpauthd.h"

enum tok { T_END, T_ATOM, T_QSTRING, T_DLIT, T_SPECIAL, T_BAD };

struct lexer {
	const char	*s;
	size_t		 len;
	size_t		 pos;
	/* The current token. */
	enum tok	 tok;
	char		 c;		/* T_SPECIAL: which one */
	const char	*text;		/* T_ATOM, T_DLIT: as written */
	size_t		 tlen;
	int		 nonascii;	/* T_ATOM: an octet >= 0x80 */
	const char	*why;		/* T_BAD */
};

struct parse {
	struct lexer		 lx;
	struct header_senders	*out;
	enum header_field	 field;
	size_t			 found;		/* addresses of this field */
	const char		*why;
};

/* An address being put together, bounded. */
struct abuf {
	char	 s[HEADER_ADDR_SIZE];
	size_t	 len;
	int	 toolong;
};

static int
is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

/* Control octets (but HTAB), which no part of a field value may hold. */
static int
is_ctl(int c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* RFC 5322 atext, and octets >= 0x80 (RFC 6532); not locale-dependent. */
static int
is_atext(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c >= 0x80 ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* RFC 5322 ftext: what a field name is made of. */
static int
is_ftext(int c)
{
	return c >= 33 && c <= 126 && c != ':';
}

/*
 * The length of a fold at s[i] (a line end and the white space that makes
 * the next line a continuation), or 0.  The white space is not counted: it
 * stays, as unfolding leaves it.
 */
static size_t
fold_at(const char *s, size_t len, size_t i)
{
	if (i + 1 < len && s[i] == '\n' && is_wsp((unsigned char)s[i + 1]))
		return 1;
	if (i + 2 < len && s[i] == '\r' && s[i + 1] == '\n' &&
	    is_wsp((unsigned char)s[i + 2]))
		return 2;
	return 0;
}

static void
lex_bad(struct lexer *lx, const char *why)
{
	lx->tok = T_BAD;
	lx->why = why;
}

/* After the opening '(' or '"': to the closing one, escapes and folds. */
static int
lex_enclosed(struct lexer *lx, int comment)
{
	size_t	 depth = 1, f;
	int	 c;

	lx->pos++;
	for (;;) {
		if (lx->pos >= lx->len) {
			lex_bad(lx, comment ? "unterminated comment" :
			    "unterminated quoted string");
			return -1;
		}
		c = (unsigned char)lx->s[lx->pos];
		if ((f = fold_at(lx->s, lx->len, lx->pos)) > 0) {
			lx->pos += f;
			continue;
		}
		if (is_ctl(c)) {
			lex_bad(lx, "control character");
			return -1;
		}
		if (c == '\\') {
			if (lx->pos + 1 >= lx->len || is_ctl((unsigned char)
			    lx->s[lx->pos + 1])) {
				lex_bad(lx, "bad quoted pair");
				return -1;
			}
			lx->pos += 2;
			continue;
		}
		lx->pos++;
		if (!comment && c == '"')
			return 0;
		if (comment && c == '(')
			depth++;
		else if (comment && c == ')' && --depth == 0)
			return 0;
	}
}

/* Comments, white space and folds: nothing, between tokens. */
static int
skip_cfws(struct lexer *lx)
{
	size_t f;

	while (lx->pos < lx->len) {
		if (is_wsp((unsigned char)lx->s[lx->pos]))
			lx->pos++;
		else if ((f = fold_at(lx->s, lx->len, lx->pos)) > 0)
			lx->pos += f;
		else if (lx->s[lx->pos] == '(') {
			if (lex_enclosed(lx, 1) == -1)
				return -1;
		} else
			break;
	}
	return 0;
}

static void
advance(struct lexer *lx)
{
	size_t	 start;
	int	 c;

	if (lx->tok == T_BAD)
		return;
	lx->nonascii = 0;
	if (skip_cfws(lx) == -1)
		return;
	if (lx->pos >= lx->len) {
		lx->tok = T_END;
		return;
	}
	start = lx->pos;
	c = (unsigned char)lx->s[start];
	if (is_ctl(c))
		lex_bad(lx, "control character");
	else if (is_atext(c)) {
		while (lx->pos < lx->len &&
		    is_atext((unsigned char)lx->s[lx->pos])) {
			if ((unsigned char)lx->s[lx->pos] >= 0x80)
				lx->nonascii = 1;
			lx->pos++;
		}
		lx->tok = T_ATOM;
		lx->text = lx->s + start;
		lx->tlen = lx->pos - start;
	} else if (c == '"') {
		if (lex_enclosed(lx, 0) == 0)
			lx->tok = T_QSTRING;
	} else if (c == '[') {
		/*
		 * What address literals are made of (RFC 5321 4.1.3), not
		 * all of dtext: no '@' that would make a second one in the
		 * address, no white space, no quoted pairs.
		 */
		for (lx->pos++; lx->pos < lx->len; lx->pos++) {
			c = (unsigned char)lx->s[lx->pos];
			if (c >= 0x80 || !(is_atext(c) || c == '.' ||
			    c == ':'))
				break;
		}
		if (lx->pos >= lx->len || lx->s[lx->pos] != ']') {
			lex_bad(lx, "bad domain literal");
			return;
		}
		lx->pos++;
		lx->tok = T_DLIT;
		lx->text = lx->s + start;
		lx->tlen = lx->pos - start;
	} else if (strchr("<>@,;:.", c) != NULL) {
		lx->pos++;
		lx->tok = T_SPECIAL;
		lx->c = (char)c;
	} else
		lex_bad(lx, "unexpected character");
}

static int
is_special(const struct lexer *lx, char c)
{
	return lx->tok == T_SPECIAL && lx->c == c;
}

/* A failure: the lexer's reason, when it is the lexer that failed. */
static int
fail(struct parse *p, const char *why)
{
	p->why = p->lx.tok == T_BAD ? p->lx.why : why;
	return -1;
}

static void
abuf_add(struct abuf *b, const char *s, size_t len)
{
	if (b->toolong || len >= sizeof(b->s) - b->len) {
		b->toolong = 1;
		return;
	}
	memcpy(b->s + b->len, s, len);
	b->len += len;
	b->s[b->len] = '\0';
}

/* A domain (atoms and dots, or a literal) into b, or only checked. */
static int
parse_domain(struct parse *p, struct abuf *b)
{
	struct lexer *lx = &p->lx;

	if (lx->tok == T_DLIT) {
		if (b != NULL)
			abuf_add(b, lx->text, lx->tlen);
		advance(lx);
		return 0;
	}
	for (;;) {
		if (lx->tok != T_ATOM)
			return fail(p, "bad domain");
		if (lx->nonascii)
			return fail(p, "non-ASCII domain");
		if (b != NULL)
			abuf_add(b, lx->text, lx->tlen);
		advance(lx);
		if (!is_special(lx, '.'))
			return 0;
		if (b != NULL)
			abuf_add(b, ".", 1);
		advance(lx);
	}
}

/* The mailbox local@domain, in b with its local part, is one more. */
static int
store(struct parse *p, struct abuf *b)
{
	struct header_senders *out = p->out;

	if (p->lx.tok != T_SPECIAL || p->lx.c != '@')
		return fail(p, "no '@' after the local part");
	if (b->toolong || b->len > SMTP_LOCAL_MAX)
		return fail(p, "local part too long");
	abuf_add(b, "@", 1);
	advance(&p->lx);
	if (parse_domain(p, b) == -1)
		return -1;
	if (b->toolong)
		return fail(p, "address too long");
	if (out->n >= HEADER_ADDRS_MAX)
		return fail(p, "too many addresses");
	memcpy(out->addr[out->n], b->s, b->len + 1);
	out->field[out->n] = (unsigned char)p->field;
	out->n++;
	p->found++;
	return 0;
}

/* Inside <...>: an obsolete route, then local@domain, then '>'. */
static int
parse_angle(struct parse *p)
{
	struct lexer	*lx = &p->lx;
	struct abuf	 b;

	memset(&b, 0, sizeof(b));
	if (is_special(lx, '@') || is_special(lx, ',')) {
		/* obs-route: "@a,@b:"; the domains are checked, dropped. */
		for (;;) {
			if (is_special(lx, ',')) {
				advance(lx);
			} else if (is_special(lx, '@')) {
				advance(lx);
				if (parse_domain(p, NULL) == -1)
					return -1;
			} else
				break;
		}
		if (!is_special(lx, ':'))
			return fail(p, "bad route");
		advance(lx);
	}
	for (;;) {
		if (lx->tok == T_QSTRING)
			return fail(p, "quoted local part");
		if (lx->tok != T_ATOM)
			return fail(p, "bad local part");
		if (lx->nonascii)
			return fail(p, "non-ASCII local part");
		abuf_add(&b, lx->text, lx->tlen);
		advance(lx);
		if (!is_special(lx, '.'))
			break;
		abuf_add(&b, ".", 1);
		advance(lx);
	}
	if (store(p, &b) == -1)
		return -1;
	if (!is_special(lx, '>'))
		return fail(p, "no '>' after the address");
	advance(lx);
	return 0;
}

static int parse_address(struct parse *, int in_group);

/* After "name:": mailboxes up to ';' (none is an empty group). */
static int
parse_group(struct parse *p)
{
	struct lexer *lx = &p->lx;

	for (;;) {
		if (is_special(lx, ';')) {
			advance(lx);
			return 0;
		}
		if (is_special(lx, ',')) {
			advance(lx);
			continue;
		}
		if (lx->tok == T_END)
			return fail(p, "group without ';'");
		if (parse_address(p, 1) == -1)
			return -1;
		if (!is_special(lx, ',') && !is_special(lx, ';'))
			return fail(p, "junk after an address in a group");
	}
}

/*
 * One address: "name <a@b>", "<a@b>", "a@b", or (not in a group) a group.
 * What comes first is read once: it is a display name if '<' or ':'
 * follows it, the local part of a bare address if '@' does.
 */
static int
parse_address(struct parse *p, int in_group)
{
	struct lexer	*lx = &p->lx;
	struct abuf	 b;
	size_t		 words = 0;
	int		 local_ok = 1, want_word = 1, quoted = 0;

	memset(&b, 0, sizeof(b));
	while (lx->tok == T_ATOM || lx->tok == T_QSTRING ||
	    is_special(lx, '.')) {
		if (lx->tok == T_SPECIAL) {
			/* obs-phrase allows dots after the first word. */
			if (words == 0)
				return fail(p, "leading dot");
			if (want_word)
				local_ok = 0;
			want_word = 1;
			abuf_add(&b, ".", 1);
		} else {
			if (!want_word || lx->nonascii)
				local_ok = 0;
			if (lx->tok == T_QSTRING)
				quoted = 1;
			else
				abuf_add(&b, lx->text, lx->tlen);
			want_word = 0;
			words++;
		}
		advance(lx);
	}
	if (is_special(lx, '@')) {
		if (quoted)
			return fail(p, "quoted local part");
		if (words == 0 || !local_ok || want_word)
			return fail(p, "bad local part");
		return store(p, &b);
	}
	if (is_special(lx, '<')) {
		advance(lx);
		return parse_angle(p);
	}
	if (is_special(lx, ':') && words > 0) {
		if (in_group)
			return fail(p, "group inside a group");
		advance(lx);
		return parse_group(p);
	}
	return fail(p, "not an address");
}

/*
 * The addresses of one From: or Sender: field's value (after the colon,
 * folds included, the last line end not), appended to out->addr.  A pure
 * function of the text; out->n must be right (zero the struct first).
 * HEADER_OK, or HEADER_BAD with out->why and out->n as it was.
 */
int
header_address_list(const char *value, size_t len, enum header_field field,
    struct header_senders *out)
{
	struct parse	 p;
	size_t		 n0 = out->n;

	memset(&p, 0, sizeof(p));
	p.lx.s = value;
	p.lx.len = len;
	p.lx.tok = T_END;
	p.out = out;
	p.field = field;
	advance(&p.lx);
	for (;;) {
		/* obs-addr-list: empty elements between commas. */
		if (is_special(&p.lx, ',')) {
			advance(&p.lx);
			continue;
		}
		if (p.lx.tok == T_END)
			break;
		if (parse_address(&p, 0) == -1)
			goto bad;
		if (p.lx.tok != T_END && !is_special(&p.lx, ',')) {
			fail(&p, "junk after an address");
			goto bad;
		}
	}
	if (p.found == 0) {
		p.why = "no address";
		goto bad;
	}
	return HEADER_OK;
bad:
	out->n = n0;
	out->why = p.why;
	return HEADER_BAD;
}

static int
ascii_caseeq(const char *a, size_t alen, const char *b)
{
	size_t i;

	if (alen != strlen(b))
		return 0;
	for (i = 0; i < alen; i++) {
		int ca = (unsigned char)a[i], cb = (unsigned char)b[i];

		if (ca >= 'A' && ca <= 'Z')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'Z')
			cb += 'a' - 'A';
		if (ca != cb)
			return 0;
	}
	return 1;
}

/* One field (its lines, the last line end not included). */
static int
one_field(const char *f, size_t len, struct header_senders *out)
{
	enum header_field	 which;
	size_t			 i = 0, name, fl;

	while (i < len && is_ftext((unsigned char)f[i]))
		i++;
	name = i;
	/* RFC 5322 4.5.3: white space (even folded) before the colon. */
	while (i < len) {
		if (is_wsp((unsigned char)f[i]))
			i++;
		else if ((fl = fold_at(f, len, i)) > 0)
			i += fl;
		else
			break;
	}
	if (name == 0 || i >= len || f[i] != ':')
		return HEADER_OK;	/* no field: not ours either way */
	if (ascii_caseeq(f, name, "from")) {
		which = HEADER_FROM;
		out->nfrom++;
	} else if (ascii_caseeq(f, name, "sender")) {
		which = HEADER_SENDER;
		out->nsender++;
	} else
		return HEADER_OK;
	i++;
	return header_address_list(f + i, len - i, which, out);
}

/* Where line at i ends: the index of its LF, or end. */
static size_t
line_end(const char *buf, size_t i, size_t end)
{
	const char *nl = memchr(buf + i, '\n', end - i);

	return nl != NULL ? (size_t)(nl - buf) : end;
}

/*
 * The From: and Sender: addresses of the message that starts buf.  whole:
 * buf is the whole file (else it is the first len octets, and a header
 * section that does not end within them is too large).
 */
int
header_section(const char *buf, size_t len, int whole,
    struct header_senders *out)
{
	size_t	 i, end, next, cend;
	int	 rc;

	memset(out, 0, sizeof(*out));
	/* The end: the first empty line, LF or CRLF. */
	i = 0;
	while (i < len) {
		if (buf[i] == '\n' || (buf[i] == '\r' && i + 1 < len &&
		    buf[i + 1] == '\n'))
			break;
		next = line_end(buf, i, len);
		i = next < len ? next + 1 : len;
	}
	if (i == len && !whole) {
		out->why = "header section too large";
		return HEADER_BAD;
	}
	end = i;
	if (end > HEADER_SECTION_MAX) {
		out->why = "header section too large";
		return HEADER_BAD;
	}
	if (memchr(buf, '\0', end) != NULL) {
		out->why = "NUL in the header section";
		return HEADER_BAD;
	}
	for (i = 0; i < end; i++)
		if (buf[i] == '\r' && (i + 1 >= end || buf[i + 1] != '\n')) {
			out->why = "bare CR in the header section";
			return HEADER_BAD;
		}

	for (i = 0; i < end; i = next) {
		/* A field: its line and each that starts with white space. */
		cend = line_end(buf, i, end);
		while (cend + 1 < end && is_wsp((unsigned char)buf[cend + 1]))
			cend = line_end(buf, cend + 1, end);
		next = cend < end ? cend + 1 : end;
		if (cend > i && buf[cend - 1] == '\r' && cend < end)
			cend--;
		if ((rc = one_field(buf + i, cend - i, out)) != HEADER_OK)
			return rc;
	}
	if (out->nfrom == 0 && out->nsender == 0)
		return HEADER_NONE_FOUND;
	return HEADER_OK;
}

/*
 * The From: and Sender: addresses of the message in the spool fd, read
 * with pread(2) from offset 0 (the descriptor's offset is not moved).
 */
int
header_senders(int fd, struct header_senders *out)
{
	const size_t	 cap = HEADER_SECTION_MAX + 2;	/* and a CRLF */
	char		*buf;
	size_t		 len = 0;
	ssize_t		 n;
	int		 rc, saved;

	memset(out, 0, sizeof(*out));
	if ((buf = malloc(cap)) == NULL) {
		out->why = "out of memory";
		return HEADER_IOERR;
	}
	while (len < cap) {
		n = pread(fd, buf + len, cap - len, (off_t)len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			saved = errno;
			free(buf);
			memset(out, 0, sizeof(*out));
			out->why = "reading the spool failed";
			errno = saved;
			return HEADER_IOERR;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	rc = header_section(buf, len, len < cap, out);
	free(buf);
	return rc;
}
