/*
 * unit.c - unit tests of the parsers and small pieces, in TAP for prove:
 * base64 and SASL PLAIN, paths, the DATA state machine (byte by byte and
 * in random chunkings), command-line reading and its limits, log escaping,
 * the exit-status table and configuration values.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtpauthd.h"

static int ntests, nfailed;

static void
ok(int cond, const char *fmt, ...)
{
	va_list ap;

	ntests++;
	if (!cond)
		nfailed++;
	printf("%s %d - ", cond ? "ok" : "not ok", ntests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* ---- base64 ---- */

static int
b64(const char *in, char *out, size_t *outlen)
{
	return base64_decode(in, strlen(in), (unsigned char *)out, 64, outlen);
}

static void
test_base64(void)
{
	static const char *const bad[] = {
		"A", "AB", "ABC", "ABCDE",	/* length not a multiple of 4 */
		"AB=C", "A===", "====", "=AAA",	/* padding in the wrong place */
		"AB C", "AB\nC", "AB-_", "AB.C",	/* stray characters */
		"QQ==QQ==",			/* padding before the end */
		"QR==", "QUJ=",			/* non-zero unused bits */
		"AAAA====",
	};
	char	 out[64], enc[64];
	size_t	 len, i;

	ok(b64("", out, &len) == 0 && len == 0, "base64: empty");
	ok(b64("QQ==", out, &len) == 0 && len == 1 && out[0] == 'A',
	    "base64: one octet");
	ok(b64("QUI=", out, &len) == 0 && len == 2 && memcmp(out, "AB", 2) == 0,
	    "base64: two octets");
	ok(b64("QUJD", out, &len) == 0 && len == 3 && memcmp(out, "ABC", 3) == 0,
	    "base64: three octets");
	ok(b64("AGJvYgBzZWNyZXQ=", out, &len) == 0 && len == 11 &&
	    memcmp(out, "\0bob\0secret", 11) == 0, "base64: PLAIN blob");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char esc[ESC_MAX];

		ok(b64(bad[i], out, &len) == -1, "base64: refuses \"%s\"",
		    log_escape(bad[i], esc, sizeof(esc)));
	}
	ok(base64_decode("QUJD", 4, (unsigned char *)out, 2, &len) == -1,
	    "base64: output that does not fit is refused");
	for (i = 0; i < 40; i++) {
		unsigned char	 raw[40];
		size_t		 j;

		for (j = 0; j < i; j++)
			raw[j] = (unsigned char)(j * 37 + i);
		base64_encode(raw, i, enc, sizeof(enc));
		if (base64_decode(enc, strlen(enc), (unsigned char *)out,
		    sizeof(out), &len) != 0 || len != i ||
		    memcmp(out, raw, i) != 0)
			break;
	}
	ok(i == 40, "base64: encode/decode round trip for 0..39 octets");
}

/* ---- SASL PLAIN ---- */

static int
plain(const char *blob, size_t len, char *user, char *pass)
{
	return sasl_plain_split((const unsigned char *)blob, len, user, 300,
	    pass, 300);
}

static void
test_plain(void)
{
	char user[300], pass[300], big[700];

	ok(plain("\0bob\0pw", 7, user, pass) == 0 && strcmp(user, "bob") == 0 &&
	    strcmp(pass, "pw") == 0, "plain: no authzid");
	ok(plain("bob\0bob\0pw", 10, user, pass) == 0 &&
	    strcmp(user, "bob") == 0, "plain: authzid equal to authcid");
	ok(plain("eve\0bob\0pw", 10, user, pass) == -2,
	    "plain: authzid naming someone else is refused");
	ok(plain("bo\0bob\0pw", 9, user, pass) == -2,
	    "plain: authzid a prefix of authcid is refused");
	ok(plain("\0bob", 4, user, pass) == -1, "plain: one NUL only");
	ok(plain("bob", 3, user, pass) == -1, "plain: no NUL");
	ok(plain("\0bob\0pw\0x", 9, user, pass) == -1, "plain: three NULs");
	ok(plain("\0\0pw", 4, user, pass) == 0 && user[0] == '\0',
	    "plain: empty authcid splits (refused later)");
	ok(plain("\0bob\0", 5, user, pass) == 0 && pass[0] == '\0',
	    "plain: empty password splits (refused later)");
	memset(big, 'a', sizeof(big));
	big[0] = '\0';
	big[400] = '\0';
	ok(plain(big, sizeof(big), user, pass) == -1,
	    "plain: an authcid larger than the buffer is refused");
	ok(auth_user_acceptable("bob", 3), "user: plain name");
	ok(!auth_user_acceptable("", 0), "user: empty");
	ok(!auth_user_acceptable("b\rb", 3), "user: CR");
	ok(!auth_user_acceptable("b\nb", 3), "user: LF");
	ok(!auth_user_acceptable("b\0b", 3), "user: NUL");
	ok(auth_user_acceptable("bob.smith@example.org", 21),
	    "user: an address as user name");
	ok(auth_user_acceptable("_svc-1+x", 8), "user: '_', '-', '+'");
	ok(!auth_user_acceptable("b b", 3), "user: space");
	ok(!auth_user_acceptable("+bob", 4), "user: leading '+'");
	ok(!auth_user_acceptable("-bob", 4), "user: leading '-'");
	ok(!auth_user_acceptable(".bob", 4), "user: leading '.'");
	ok(!auth_user_acceptable("bob=1", 5), "user: '='");
	ok(!auth_user_acceptable("b[o]b", 5), "user: brackets");
	ok(!auth_user_acceptable("b\xc3\xa9", 3), "user: non-ASCII");
	memset(big, 'u', sizeof(big));
	ok(auth_user_acceptable(big, 256), "user: 256 octets");
	ok(!auth_user_acceptable(big, 257), "user: 257 octets");
}

/* ---- paths ---- */

static int
path(const char *s, int allow_null, char *out)
{
	const char *rest;

	return addr_parse_path(s, allow_null, out, SMTP_PATH_MAX + 1, &rest);
}

static void
test_paths(void)
{
	static const struct {
		const char	*in;
		int		 want;
	} cases[] = {
		{ "<bob@example.org>", ADDR_OK },
		{ "<b.o.b+tag@sub.example.org>", ADDR_OK },
		{ "<bob@[192.0.2.1]>", ADDR_OK },
		{ "<bob@[IPv6:2001:db8::1]>", ADDR_OK },
		{ "<postmaster>", ADDR_OK },
		{ "<PostMaster>", ADDR_OK },
		{ "<o'brien@example.org>", ADDR_OK },
		{ "bob@example.org", ADDR_SYNTAX },
		{ "<bob@example.org", ADDR_SYNTAX },
		{ "<\"bob\"@example.org>", ADDR_QUOTED },
		{ "<\"b o b\"@example.org>", ADDR_QUOTED },
		{ "<-oQ/tmp@example.org>", ADDR_BAD },
		{ "<-bob@example.org>", ADDR_BAD },
		{ "</etc/passwd@example.org>", ADDR_BAD },
		{ "<|/bin/sh@example.org>", ADDR_BAD },
		{ "<bob|x@example.org>", ADDR_BAD },
		{ "<:include:/etc/x@example.org>", ADDR_BAD },
		{ "<a@b.org,c@d.org>", ADDR_BAD },
		{ "<bob @example.org>", ADDR_BAD },
		{ "<bob\t@example.org>", ADDR_BAD },
		{ "<b\x01ob@example.org>", ADDR_BAD },
		{ "<b\xc3\xa9@example.org>", ADDR_BAD },
		{ "<bob@exa\xc3\xa9mple.org>", ADDR_BAD },
		{ "<@relay.org:bob@example.org>", ADDR_BAD },
		{ "<@a.org,@b.org:bob@example.org>", ADDR_BAD },
		{ "<bob>", ADDR_BAD },
		{ "<bob@>", ADDR_BAD },
		{ "<@example.org>", ADDR_BAD },
		{ "<bob@@example.org>", ADDR_BAD },
		{ "<bob@a@example.org>", ADDR_BAD },
		{ "<.bob@example.org>", ADDR_BAD },
		{ "<bob.@example.org>", ADDR_BAD },
		{ "<b..ob@example.org>", ADDR_BAD },
		{ "<bob@-example.org>", ADDR_BAD },
		{ "<bob@example-.org>", ADDR_BAD },
		{ "<bob@example..org>", ADDR_BAD },
		{ "<bob@example.org.>", ADDR_BAD },
		{ "<bob@.example.org>", ADDR_BAD },
		{ "<bob@exa_mple.org>", ADDR_BAD },
		{ "<bob@[300.1.1.1]>", ADDR_BAD },
		{ "<bob@[IPv6:zz::1]>", ADDR_BAD },
		{ "<bob@[tag:stuff]>", ADDR_BAD },
		{ "<bob@[192.0.2.1>", ADDR_BAD },
		{ "<>", ADDR_BAD },	/* with allow_null 0 */
	};
	char	 out[SMTP_PATH_MAX + 1], big[600];
	size_t	 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char esc[ESC_MAX];

		ok(path(cases[i].in, 0, out) == cases[i].want,
		    "path %s -> %d", log_escape(cases[i].in, esc, sizeof(esc)),
		    cases[i].want);
	}
	ok(path("<>", 1, out) == ADDR_OK && out[0] == '\0',
	    "path <> is the null sender where allowed");
	ok(path("<bob@example.org>", 0, out) == ADDR_OK &&
	    strcmp(out, "bob@example.org") == 0, "path: brackets removed");

	/* local part 64 ok, 65 not; domain labels; whole path 256 */
	memset(big, 0, sizeof(big));
	big[0] = '<';
	memset(big + 1, 'l', 64);
	strcpy(big + 65, "@example.org>");
	ok(path(big, 0, out) == ADDR_OK, "path: local part of 64 octets");
	memset(big + 1, 'l', 65);
	strcpy(big + 66, "@example.org>");
	ok(path(big, 0, out) == ADDR_BAD, "path: local part of 65 octets");
	/* 256 octets with brackets: "<a@" + labels + ">" */
	strcpy(big, "<a@");
	while (strlen(big) < 252)
		strcat(big, "abcdefghi.");
	big[252] = '\0';
	while (strlen(big) < 255)
		strcat(big, "x");
	strcat(big, ">");
	ok(strlen(big) == 256 && path(big, 0, out) == ADDR_OK,
	    "path: 256 octets with brackets");
	big[255] = 'y';
	strcpy(big + 256, "x>");
	ok(path(big, 0, out) == ADDR_TOOLONG, "path: 257 octets");
	ok(addr_is_safe("bob@example.org"), "safe: plain address");
	ok(!addr_is_safe("-f@example.org"), "safe: leading dash");
	ok(!addr_is_safe(""), "safe: empty");
}

/* ---- DATA ---- */

struct collect {
	char	 buf[8192];
	size_t	 len;
};

static int
collect_sink(void *arg, const char *buf, size_t len)
{
	struct collect *c = arg;

	if (c->len + len > sizeof(c->buf))
		return -1;
	memcpy(c->buf + c->len, buf, len);
	c->len += len;
	return 0;
}

/* Feed in chunks of the given sizes (cycled); returns octets consumed. */
static size_t
feed_chunked(struct data_parser *dp, const char *in, size_t len,
    const size_t *chunks, size_t nchunks)
{
	size_t off = 0, k = 0, n, used;

	while (off < len && !data_done(dp)) {
		n = chunks[k++ % nchunks];
		if (n > len - off)
			n = len - off;
		used = data_feed(dp, in + off, n);
		off += used;
		if (used < n)
			break;
	}
	return off;
}

static void
run_data(const char *in, size_t len, uint64_t max, struct collect *c,
    struct data_parser *dp, size_t *consumed)
{
	static const size_t whole[] = { 1 << 20 };

	memset(c, 0, sizeof(*c));
	data_init(dp, max, collect_sink, c);
	*consumed = feed_chunked(dp, in, len, whole, 1);
}

#define S(x)	x, sizeof(x) - 1

static void
test_data(void)
{
	static const struct {
		const char	*in;
		size_t		 len;
		int		 ends;		/* end found */
		size_t		 consumed;	/* octets up to and with the end */
		unsigned	 flags;
		const char	*out;
	} cases[] = {
		{ S("a\r\n.\r\n"), 1, 6, 0, "a\n" },
		{ S(".\r\n"), 1, 3, 0, "" },
		{ S("a\r\n.\r\nQUIT\r\n"), 1, 6, 0, "a\n" },
		{ S("..x\r\n.\r\n"), 1, 8, 0, ".x\n" },
		{ S("..\r\n.\r\n"), 1, 7, 0, ".\n" },
		{ S("a\n.\nb\r\n.\r\n"), 1, 10, DATA_BARE_LF, NULL },
		{ S("a\n.\r\nb\r\n.\r\n"), 1, 11, DATA_BARE_LF, NULL },
		{ S("a\r.\rb\r\n.\r\n"), 1, 10, DATA_BARE_CR, NULL },
		{ S("a\r.\r\nb\r\n.\r\n"), 1, 11, DATA_BARE_CR, NULL },
		{ S("a\r\n.\nb\r\n.\r\n"), 1, 11, DATA_BARE_LF, NULL },
		{ S("a\r\n.\rb\r\n.\r\n"), 1, 11, DATA_BARE_CR, NULL },
		{ S("a\r\n.\r\r\n.\r\n"), 1, 10, DATA_BARE_CR, NULL },
		{ S("a\r\r\n.\r\n"), 1, 7, DATA_BARE_CR, NULL },
		{ S("a\n\r\n.\r\n"), 1, 7, DATA_BARE_LF, NULL },
		{ S("a\0\r\n.\r\n"), 1, 7, DATA_NUL, NULL },
		{ S("a\r\n\0.\r\n.\r\n"), 1, 10, DATA_NUL, NULL },
		{ S("a\r\n.\n"), 0, 5, DATA_BARE_LF, NULL },
		{ S("a\n.\n"), 0, 4, DATA_BARE_LF, NULL },
		{ S("a\r.\r"), 0, 4, DATA_BARE_CR, NULL },
		{ S("a\r\n. \r\n.\r\n"), 1, 10, 0, "a\n \n" },
	};
	static const size_t chunkings[][4] = {
		{ 1, 1, 1, 1 }, { 2, 3, 1, 5 }, { 7, 1, 2, 1 }, { 3, 3, 3, 3 },
	};
	struct data_parser	 dp;
	struct collect		 c, c2;
	size_t			 i, j, consumed, consumed2;
	char			 line[1200];

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char esc[ESC_MAX], want[64];

		memcpy(want, cases[i].in, cases[i].len);
		want[cases[i].len] = '\0';
		run_data(cases[i].in, cases[i].len, 1000, &c, &dp, &consumed);
		log_escape_text(want, esc, sizeof(esc));
		ok(data_done(&dp) == cases[i].ends &&
		    consumed == cases[i].consumed &&
		    (dp.flags & ~DATA_LONG_LINE) == cases[i].flags &&
		    (cases[i].out == NULL || (c.len == strlen(cases[i].out) &&
		    memcmp(c.buf, cases[i].out, c.len) == 0)),
		    "data: case %zu (%s...) end=%d consumed=%zu flags=%#x",
		    i, esc, data_done(&dp), consumed, dp.flags);
		for (j = 0; j < sizeof(chunkings) / sizeof(chunkings[0]); j++) {
			memset(&c2, 0, sizeof(c2));
			data_init(&dp, 1000, collect_sink, &c2);
			consumed2 = feed_chunked(&dp, cases[i].in, cases[i].len,
			    chunkings[j], 4);
			ok(consumed2 == consumed && c2.len == c.len &&
			    memcmp(c2.buf, c.buf, c.len) == 0,
			    "data: case %zu chunking %zu gives the same result",
			    i, j);
		}
	}

	/* Random chunkings of a longer message with every hazard in it. */
	{
		static const char msg[] = "Subject: x\r\n\r\n..a\r\n.b\r\nc\rd\r\n"
		    "e\nf\r\n\r\n..\r\n.\r\ntrailing";
		struct collect	 ref;
		size_t		 refc, trial;
		int		 same = 1;

		run_data(msg, sizeof(msg) - 1, 1000, &ref, &dp, &refc);
		srandom(42);
		for (trial = 0; trial < 500; trial++) {
			size_t sizes[4];

			for (j = 0; j < 4; j++)
				sizes[j] = 1 + (size_t)random() % 9;
			memset(&c2, 0, sizeof(c2));
			data_init(&dp, 1000, collect_sink, &c2);
			consumed2 = feed_chunked(&dp, msg, sizeof(msg) - 1,
			    sizes, 4);
			if (consumed2 != refc || c2.len != ref.len ||
			    memcmp(c2.buf, ref.buf, ref.len) != 0)
				same = 0;
		}
		ok(same, "data: 500 random chunkings agree with one feed");
	}

	/* Line length: 998 octets are fine, 999 are not. */
	memset(line, 'x', sizeof(line));
	memcpy(line + 998, "\r\n.\r\n", 5);
	run_data(line, 1003, 1 << 20, &c, &dp, &consumed);
	ok(data_done(&dp) && !(dp.flags & DATA_LONG_LINE),
	    "data: a 998-octet line is accepted");
	memset(line, 'x', sizeof(line));
	memcpy(line + 999, "\r\n.\r\n", 5);
	run_data(line, 1004, 1 << 20, &c, &dp, &consumed);
	ok(data_done(&dp) && (dp.flags & DATA_LONG_LINE),
	    "data: a 999-octet line is flagged");
	line[0] = '.';
	memset(line + 1, 'x', 998);
	memcpy(line + 999, "\r\n.\r\n", 5);
	run_data(line, 1004, 1 << 20, &c, &dp, &consumed);
	ok(data_done(&dp) && !(dp.flags & DATA_LONG_LINE),
	    "data: a stuffed dot does not count toward the line length");
	line[0] = '.';
	memset(line + 1, 'x', 999);
	memcpy(line + 1000, "\r\n.\r\n", 5);
	run_data(line, 1005, 1 << 20, &c, &dp, &consumed);
	ok(data_done(&dp) && (dp.flags & DATA_LONG_LINE),
	    "data: a stuffed line of 999 octets after the dot is flagged");

	/* Size: the limit is on the unstuffed CRLF message. */
	run_data(S("abc\r\n.\r\n"), 5, &c, &dp, &consumed);
	ok(data_done(&dp) && dp.size == 5 && !(dp.flags & DATA_TOO_BIG),
	    "data: a message of exactly the limit");
	run_data(S("abcd\r\n.\r\n"), 5, &c, &dp, &consumed);
	ok(data_done(&dp) && (dp.flags & DATA_TOO_BIG) && c.len < 5,
	    "data: one octet over the limit, and no more output kept");
	run_data(S("..\r\n.\r\n"), 3, &c, &dp, &consumed);
	ok(data_done(&dp) && dp.size == 3 && !(dp.flags & DATA_TOO_BIG),
	    "data: a stuffed dot does not count toward the size");
}

/* ---- command lines ---- */

static int
getline_from(const char *input, size_t inlen, size_t maxlen, char *buf,
    size_t bufsize, size_t *lenp, struct io *io, int *fds)
{
	if (fds[0] == -1) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == -1)
			return -100;
		io_init(io, fds[0], fds[0], 1000);
		if (write(fds[1], input, inlen) != (ssize_t)inlen)
			return -100;
		shutdown(fds[1], SHUT_WR);
	}
	return io_getline(io, buf, bufsize, maxlen, now_ms() + 2000, lenp);
}

static void
test_lines(void)
{
	static struct io	 io;
	char			 buf[SMTP_AUTH_LINE_MAX + 1], *input;
	size_t			 len;
	int			 fds[2] = { -1, -1 }, rc;

	rc = getline_from("EHLO a\r\nNOOP\nQUIT", 18, 512, buf, sizeof(buf),
	    &len, &io, fds);
	ok(rc == IO_OK && strcmp(buf, "EHLO a") == 0 && len == 6,
	    "line: CRLF stripped");
	rc = getline_from(NULL, 0, 512, buf, sizeof(buf), &len, &io, fds);
	ok(rc == IO_OK && strcmp(buf, "NOOP") == 0, "line: bare LF ends a "
	    "command line");
	rc = getline_from(NULL, 0, 512, buf, sizeof(buf), &len, &io, fds);
	ok(rc == IO_EOF, "line: no line end before EOF is EOF");
	close(fds[0]);
	close(fds[1]);

	/* 512 with CRLF is the limit: 510 + CRLF fits, 511 + CRLF not. */
	input = malloc(20000);
	memset(input, 'x', 20000);
	memcpy(input + 510, "\r\n", 2);
	memcpy(input + 511 + 512, "\r\nNOOP\r\n", 8);
	fds[0] = -1;
	rc = getline_from(input, 511 + 512 + 8, 512, buf, sizeof(buf), &len,
	    &io, fds);
	ok(rc == IO_OK && len == 510, "line: 512 octets with CRLF accepted");
	rc = getline_from(NULL, 0, 512, buf, sizeof(buf), &len, &io, fds);
	ok(rc == IO_TOOLONG, "line: 513 octets refused");
	rc = getline_from(NULL, 0, 512, buf, sizeof(buf), &len, &io, fds);
	ok(rc == IO_OK && strcmp(buf, "NOOP") == 0,
	    "line: the rest of an over-long line is discarded, not parsed");
	close(fds[0]);
	close(fds[1]);

	/* Far beyond the buffer: still discarded, still bounded. */
	memset(input, 'x', 20000);
	memcpy(input + 19990, "\r\nRSET\r\n", 8);
	fds[0] = -1;
	rc = getline_from(input, 19998, SMTP_AUTH_LINE_MAX, buf, sizeof(buf),
	    &len, &io, fds);
	ok(rc == IO_TOOLONG, "line: 19990 octets refused (%d)", rc);
	rc = getline_from(NULL, 0, 512, buf, sizeof(buf), &len, &io, fds);
	ok(rc == IO_OK && strcmp(buf, "RSET") == 0,
	    "line: next command found after a huge line");
	close(fds[0]);
	close(fds[1]);
	free(input);

	/* A client that sends nothing times out. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0) {
		int64_t start = now_ms();

		io_init(&io, fds[0], fds[0], 1000);
		rc = io_getline(&io, buf, sizeof(buf), 512, now_ms() + 200,
		    &len);
		ok(rc == IO_TIMEOUT && now_ms() - start >= 200,
		    "line: a silent client times out at the deadline");
		close(fds[0]);
		close(fds[1]);
	}
}

/* ---- small things ---- */

static void
test_misc(void)
{
	char		 esc[ESC_MAX], id[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1];
	struct config	 cf;
	int		 code;
	size_t		 i;
	static const struct { int status, code; const char *enh; } table[] = {
		{ 64, 554, "5.3.0" }, { 65, 554, "5.6.0" }, { 66, 554, "5.3.0" },
		{ 67, 550, "5.1.1" }, { 68, 550, "5.1.2" }, { 69, 554, "5.3.0" },
		{ 70, 554, "5.3.0" }, { 71, 451, "4.3.0" }, { 72, 554, "5.3.0" },
		{ 73, 550, "5.2.0" }, { 74, 554, "5.3.0" }, { 75, 451, "4.3.0" },
		{ 76, 554, "5.5.0" }, { 77, 550, "5.7.0" }, { 78, 554, "5.3.5" },
		{ 1, 451, "4.3.0" }, { 127, 451, "4.3.0" },
	};

	ok(strcmp(log_escape("bob", esc, sizeof(esc)), "bob") == 0,
	    "escape: plain");
	ok(strcmp(log_escape("a b\r\n=\"\\", esc, sizeof(esc)),
	    "a\\x20b\\x0d\\x0a\\x3d\\x22\\x5c") == 0, "escape: specials");
	ok(strcmp(log_escape("\xff", esc, sizeof(esc)), "\\xff") == 0,
	    "escape: non-ASCII");
	ok(strlen(log_escape("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", esc,
	    16)) < 16, "escape: bounded by the buffer");
	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const char *t = relay_exit_reply(table[i].status, &code);

		ok(code == table[i].code && strncmp(t, table[i].enh, 5) == 0,
		    "exit status %d -> %d %s", table[i].status, table[i].code,
		    table[i].enh);
	}
	make_queue_id(id);
	make_queue_id(id2);
	ok(strlen(id) == QUEUE_ID_LEN && strspn(id, "0123456789ABCDEF") ==
	    QUEUE_ID_LEN && strcmp(id, id2) != 0, "queue id: 16 hex, random");

	conf_defaults(&cf);
	ok(cf.nerrors == 0 && cf.max_message_size == 36700160 &&
	    cf.auth_require_tls == 1 && cf.max_auth_failures == 3,
	    "conf: defaults");
	ok(conf_set(&cf, "max-recipients", "0", "t") == -1, "conf: 0 recipients");
	ok(conf_set(&cf, "timeout", "-1", "t") == -1, "conf: negative");
	ok(conf_set(&cf, "timeout", "18446744073709551616", "t") == -1,
	    "conf: overflow");
	ok(conf_set(&cf, "timeout", "12x", "t") == -1, "conf: trailing junk");
	ok(conf_set(&cf, "auth", "ldap", "t") == -1, "conf: unknown enum");
	ok(conf_set(&cf, "tls", "", "t") == -1, "conf: empty enum");
	ok(conf_set(&cf, "sendmail", "sendmail", "t") == -1,
	    "conf: relative path");
	ok(conf_set(&cf, "hostname", "a b", "t") == -1, "conf: bad hostname");
	ok(conf_set(&cf, "nosuchkey", "1", "t") == -1, "conf: unknown key");
	ok(conf_set(&cf, "auth-require-tls", "no", "t") == 0 &&
	    cf.auth_require_tls == 0, "conf: bool");
	ok(conf_set_option(&cf, "max-errors=5") == 0 && cf.max_errors == 5,
	    "conf: -o key=value");
	ok(conf_set_option(&cf, "max-errors") == -1, "conf: -o without =");
	ok(cf.nerrors == 10, "conf: every problem recorded (%zu)", cf.nerrors);
	conf_free(&cf);
}

static int
in_prefix(const char *prefix, const char *addr)
{
	struct net_prefix	 p;
	struct net_addr		 a;

	if (net_prefix_parse(prefix, &p) == -1 || net_addr_parse(addr, &a) == -1)
		return -1;
	return net_prefix_match(&p, &a);
}

static int
network_is(const char *addr, unsigned v4, unsigned v6, const char *want)
{
	struct net_addr	 a;
	char		 out[PEER_MAX + 8];

	if (net_addr_parse(addr, &a) == -1)
		return 0;
	net_addr_network(&a, v4, v6, out, sizeof(out));
	if (strcmp(out, want) != 0)
		fprintf(stderr, "# %s -> %s, not %s\n", addr, out, want);
	return strcmp(out, want) == 0;
}

static void
test_prefixes(void)
{
	struct net_prefix	 p;
	struct net_addr		 a;
	struct config		 cf;

	ok(in_prefix("192.0.2.0/24", "192.0.2.200") == 1, "prefix: v4 in");
	ok(in_prefix("192.0.2.0/24", "192.0.3.1") == 0, "prefix: v4 out");
	ok(in_prefix("192.0.2.7", "192.0.2.7") == 1 &&
	    in_prefix("192.0.2.7", "192.0.2.8") == 0, "prefix: one address");
	ok(in_prefix("0.0.0.0/0", "203.0.113.1") == 1, "prefix: /0");
	ok(in_prefix("2001:db8::/32", "2001:db8:ffff::1") == 1 &&
	    in_prefix("2001:db8::/32", "2001:db9::1") == 0, "prefix: v6");
	ok(in_prefix("2001:db8::/32", "192.0.2.1") == 0 &&
	    in_prefix("192.0.2.0/24", "2001:db8::1") == 0, "prefix: families");
	ok(in_prefix("192.0.2.0/24", "::ffff:192.0.2.9") == 1 &&
	    in_prefix("::ffff:192.0.2.0/120", "192.0.2.9") == 1,
	    "prefix: v4-mapped is v4");
	ok(in_prefix("192.0.2.0/25", "192.0.2.128") == 0 &&
	    in_prefix("192.0.2.128/25", "192.0.2.255") == 1, "prefix: /25");
	ok(net_prefix_parse("192.0.2.1/24", &p) == -1, "prefix: host bits");
	ok(net_prefix_parse("192.0.2.0/33", &p) == -1 &&
	    net_prefix_parse("2001:db8::/129", &p) == -1, "prefix: too long");
	ok(net_prefix_parse("192.0.2.0/", &p) == -1 &&
	    net_prefix_parse("192.0.2.0/+8", &p) == -1 &&
	    net_prefix_parse("192.0.2.0/08x", &p) == -1 &&
	    net_prefix_parse("example.org", &p) == -1 &&
	    net_prefix_parse("", &p) == -1, "prefix: junk");
	ok(net_addr_parse("unknown", &a) == -1 && net_addr_parse("", &a) == -1,
	    "prefix: not an address");
	ok(net_prefix_list_match("10.0.0.0/8, 192.0.2.7 2001:db8::/32,,",
	    NULL) == 0 && net_prefix_list_match("10.0.0.0/8,x", NULL) == -1,
	    "prefix: lists");
	ok(net_addr_parse("2001:db8::1", &a) == 0 &&
	    net_prefix_list_match("10.0.0.0/8 2001:db8::/32", &a) == 1,
	    "prefix: list match");
	ok(network_is("192.0.2.77", 32, 64, "192.0.2.77") &&
	    network_is("192.0.2.77", 24, 48, "192.0.2.0/24") &&
	    network_is("2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64") &&
	    network_is("2001:db8:1:2:3:4:5:6", 24, 48, "2001:db8:1::/48") &&
	    network_is("::ffff:198.51.100.9", 24, 48, "198.51.100.0/24"),
	    "prefix: networks");

	conf_defaults(&cf);
	ok(cf.auth_limit_ip.count == 10 && cf.auth_limit_ip.window == 600 &&
	    cf.auth_limit_net.count == 30 && cf.auth_limit_user.count == 20 &&
	    cf.auth_limit_user.window == 86400 && cf.auth_known_ip_time ==
	    86400, "limits: defaults");
	ok(conf_set(&cf, "auth-limit-ip", "0", "t") == 0 &&
	    cf.auth_limit_ip.count == 0, "limits: 0 is off");
	ok(conf_set(&cf, "auth-limit-ip", "3/90", "t") == 0 &&
	    cf.auth_limit_ip.count == 3 && cf.auth_limit_ip.window == 90,
	    "limits: plain seconds");
	ok(conf_set(&cf, "auth-limit-ip", "3/2h", "t") == 0 &&
	    cf.auth_limit_ip.window == 7200, "limits: hours");
	ok(conf_set(&cf, "auth-limit-ip", "3/0", "t") == -1 &&
	    conf_set(&cf, "auth-limit-ip", "/1m", "t") == -1 &&
	    conf_set(&cf, "auth-limit-ip", "3/1m ", "t") == -1 &&
	    conf_set(&cf, "auth-limit-ip", "3/367d", "t") == -1 &&
	    conf_set(&cf, "auth-limit-ip", "99999999999999999999/1m", "t") ==
	    -1, "limits: refused");
	ok(conf_set(&cf, "auth-known-ip-time", "366d", "t") == 0 &&
	    conf_set(&cf, "auth-known-ip-time", "213503982334601d", "t") == -1,
	    "limits: durations bounded");
	conf_free(&cf);
}

/* The Message-ID scanner, whole and one octet at a time (msgid.c). */
static const char *
scan_msgid(const char *msg, int bytewise, struct msgid_scan *m)
{
	size_t i, len = strlen(msg);

	msgid_init(m);
	if (bytewise)
		for (i = 0; i < len; i++)
			msgid_feed(m, msg + i, 1);
	else
		msgid_feed(m, msg, len);
	return msgid_value(m);
}

static void
test_msgid(void)
{
	static const struct {
		const char	*msg;
		const char	*want;	/* NULL: none */
	} cases[] = {
		{ "Message-ID: <a@b>\nSubject: x\n\nbody\n", "<a@b>" },
		{ "MESSAGE-id:<a@b>\n\n", "<a@b>" },
		{ "Message-ID :  <a@b> \t\n\n", "<a@b>" },
		{ "Subject: x\n y\nMessage-ID:\n\t<fold@b>\n\n", "<fold@b>" },
		{ "Message-ID: <a\n @b>\n\n", "<a @b>" },
		{ "Message-ID: <1@b>\nMessage-ID: <2@b>\n\n", "<1@b>" },
		{ "Subject: x\n\nMessage-ID: <body@b>\n", NULL },
		{ "\nMessage-ID: <body@b>\n", NULL },
		{ "Message-IDs: <no@b>\n\n", NULL },
		{ "Message-I: <no@b>\n\n", NULL },
		{ "X-Message-ID: <no@b>\n\n", NULL },
		{ "Message ID: <no@b>\n\n", NULL },
		{ "Message-ID:\n\n", NULL },
		{ "Message-ID: <end@b>", "<end@b>" },
		{ "no colon here\nMessage-ID: <after@b>\n\n", "<after@b>" },
		{ "Subject: a\n Message-ID: <folded.into.subject@b>\n\n", NULL },
		{ "", NULL },
	};
	struct msgid_scan	 m;
	const char		*got;
	char			 big[2 * MSGID_MAX];
	size_t			 i;
	int			 bytewise, good;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (bytewise = 0; bytewise < 2; bytewise++) {
			got = scan_msgid(cases[i].msg, bytewise, &m);
			good = cases[i].want == NULL ? got == NULL :
			    got != NULL && strcmp(got, cases[i].want) == 0;
			ok(good, "msgid: case %zu%s", i, bytewise ?
			    " (octet by octet)" : "");
		}
	/* Bounded: a long one is cut at MSGID_MAX and says so. */
	memset(big, 'x', sizeof(big) - 1);
	memcpy(big, "Message-ID: <", 13);
	big[sizeof(big) - 1] = '\0';
	got = scan_msgid(big, 0, &m);
	ok(got != NULL && strlen(got) + 1 >= MSGID_MAX && m.cut &&
	    strncmp(got, "<xxx", 4) == 0, "msgid: cut at MSGID_MAX");
	got = scan_msgid("Message-ID: <short@b>\n\n", 0, &m);
	ok(got != NULL && !m.cut, "msgid: short one not marked cut");
}

/* proc_title_*: the argv area is overwritten, argv itself moved. */
static void
test_proc_title(void)
{
	char	 area[] = "prog\0-f\0some.conf", name[32];
	char	*argv[] = { area, area + 5, area + 8, NULL };
	FILE	*comm = NULL;

	proc_title_init(3, argv);
	ok(argv[0] != area && strcmp(argv[0], "prog") == 0 &&
	    strcmp(argv[2], "some.conf") == 0, "proctitle: argv copied");
	proc_title_set_confined("smtpauthd: %s", "x\ny");
	ok(memcmp(area, "smtpauthd: x?y\0\0\0\0", sizeof(area)) == 0,
	    "proctitle: written, control characters replaced, NUL padded");
	proc_title_set_confined("%s", "a-title-longer-than-the-area");
	ok(memcmp(area, "a-title-longer-th\0", sizeof(area)) == 0,
	    "proctitle: cut to the area, last octet NUL");
	ok(strcmp(argv[1], "-f") == 0 && strcmp(program_invocation_name,
	    "prog") == 0, "proctitle: the copies are untouched");
	/* The monitor's: the short name too (15 octets of it). */
	proc_title_set("smtpauthd: %s@%s", "bob", "192.0.2.1");
	ok(memcmp(area, "smtpauthd: bob@19", sizeof(area)) == 0 &&
	    (comm = fopen("/proc/self/comm", "r")) != NULL &&
	    fgets(name, sizeof(name), comm) != NULL &&
	    strcmp(name, "smtpauthd: bob@\n") == 0,
	    "proctitle: proc_title_set sets the name too");
	if (comm != NULL)
		fclose(comm);
}

int
main(void)
{
	log_init(1);
	test_base64();
	test_plain();
	test_paths();
	test_data();
	test_lines();
	test_misc();
	test_prefixes();
	test_msgid();
	test_proc_title();
	printf("1..%d\n", ntests);
	return nfailed != 0;
}
