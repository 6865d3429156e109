/*
 * unit.c - unit tests of the parsers and small pieces, in TAP for prove:
 * base64 and SASL PLAIN, paths, the DATA state machine (byte by byte and
 * in random chunkings), command-line reading and its limits, log escaping,
 * the exit-status table, configuration values, the From:/Sender:
 * addresses of a message (header.c), the map files and the sender policy,
 * the policy client's request, reply and actions, the PROXY header, the
 * state store's specs (state redis://...).
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "policy.h"
#include "policy_client.h"
#include "proxy.h"
#include "state.h"

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

/* ---- the addresses of From: and Sender: (header.c) ---- */

/* The addresses found in one field's value, space-separated, or "BAD". */
static const char *
header_list(const char *value, char *buf, size_t size)
{
	struct header_senders	 hs;
	size_t			 i;

	memset(&hs, 0, sizeof(hs));
	if (header_address_list(value, strlen(value), HEADER_FROM, &hs) !=
	    HEADER_OK)
		return hs.why != NULL && hs.n == 0 ? "BAD" : "BAD?";
	buf[0] = '\0';
	for (i = 0; i < hs.n; i++) {
		if (i > 0)
			strncat(buf, " ", size - strlen(buf) - 1);
		strncat(buf, hs.addr[i], size - strlen(buf) - 1);
	}
	return buf;
}

/*
 * The message in a file as the monitor reads it: rc, and the addresses
 * as "from:a sender:b ..." in buf.
 */
static int
header_file(const char *msg, size_t len, char *buf, size_t size)
{
	struct header_senders	 hs;
	FILE			*f;
	size_t			 i;
	int			 rc;

	buf[0] = '\0';
	if ((f = tmpfile()) == NULL || fwrite(msg, 1, len, f) != len ||
	    fflush(f) != 0) {
		if (f != NULL)
			fclose(f);
		return -1;
	}
	rc = header_senders(fileno(f), &hs);
	/* pread: the descriptor's offset, which sendmail reads from, stays. */
	if (ftell(f) != (long)len)
		rc = -2;
	fclose(f);
	for (i = 0; rc == HEADER_OK && i < hs.n; i++)
		snprintf(buf + strlen(buf), size - strlen(buf), "%s%s:%s",
		    i > 0 ? " " : "",
		    hs.field[i] == HEADER_FROM ? "from" : "sender", hs.addr[i]);
	if (rc == HEADER_BAD)
		snprintf(buf, size, "%s", hs.why != NULL ? hs.why : "");
	return rc;
}

static void
test_header(void)
{
	static const struct {
		const char	*value, *want;
	} cases[] = {
		/* simple forms */
		{ " alice@example.org", "alice@example.org" },
		{ "alice@example.org", "alice@example.org" },
		{ " <alice@example.org>", "alice@example.org" },
		{ " Alice Liddell <alice@example.org>", "alice@example.org" },
		{ " alice.liddell@mail.example.org",
		    "alice.liddell@mail.example.org" },
		{ " alice+tag@example.org", "alice+tag@example.org" },
		{ " Alice@Example.ORG", "Alice@Example.ORG" },
		/* quoted display names hide specials */
		{ " \"Bob <bob@evil.example>, x@y: z;\" <alice@example.org>",
		    "alice@example.org" },
		{ " \"eve@evil.example\" <alice@example.org>",
		    "alice@example.org" },
		{ " \"a \\\" quote, \\\\ and <x@y>\" <alice@example.org>",
		    "alice@example.org" },
		{ " \"\" <alice@example.org>", "alice@example.org" },
		{ " John Q. Public <jqp@example.org>", "jqp@example.org" },
		{ " =?UTF-8?Q?Ren=C3=A9?= <rene@example.org>",
		    "rene@example.org" },
		{ " R\xc3\xa9na <rena@example.org>", "rena@example.org" },
		/* comments everywhere, nested, with escapes */
		{ " alice@example.org (Alice Liddell)", "alice@example.org" },
		{ " (c)alice(c)@(c)example.org(c)", "alice@example.org" },
		{ " Alice (x) <(y)alice(z)@(w)example(v).(u)org(t)> (s)",
		    "alice@example.org" },
		{ " (a (nested (comment) <eve@evil.example>) here) "
		    "alice@example.org", "alice@example.org" },
		{ " (an \\) escaped paren, <eve@evil.example>) alice@example.org",
		    "alice@example.org" },
		{ " alice . liddell @ example . org", "alice.liddell@example.org" },
		/* lists and groups */
		{ " alice@example.org, Bob <bob@example.org>",
		    "alice@example.org bob@example.org" },
		{ " , alice@example.org,, ,bob@example.org,",
		    "alice@example.org bob@example.org" },
		{ " Team: alice@example.org, Bob <bob@example.org>;",
		    "alice@example.org bob@example.org" },
		{ " Team: alice@example.org;, carol@example.org",
		    "alice@example.org carol@example.org" },
		{ " Nobody:;, alice@example.org", "alice@example.org" },
		{ " \"The Team\" (c) : (c) ; , alice@example.org",
		    "alice@example.org" },
		/* obsolete route: the mailbox after it */
		{ " <@relay.example,@b.example:alice@example.org>",
		    "alice@example.org" },
		{ " <,@relay.example,,:alice@example.org>", "alice@example.org" },
		/* domain literal, as written */
		{ " alice@[192.0.2.1]", "alice@[192.0.2.1]" },
		{ " alice@[IPv6:2001:db8::1]", "alice@[IPv6:2001:db8::1]" },
		/* folding, LF and CRLF */
		{ " Alice\n <alice@example.org>", "alice@example.org" },
		{ " Alice\r\n\t<alice@example.org>,\r\n bob@example.org",
		    "alice@example.org bob@example.org" },
		{ " \"Alice\n Liddell\" (a\r\n comment) <alice@example.org>",
		    "alice@example.org" },

		/* refused */
		{ "", "BAD" },
		{ "   ", "BAD" },
		{ " (only a comment)", "BAD" },
		{ " Nobody:;", "BAD" },		/* no address to check */
		{ " alice", "BAD" },		/* the MTA would add a domain */
		{ " Alice Liddell", "BAD" },
		{ " <>", "BAD" },
		{ " \"alice\"@example.org", "BAD" },	/* quoted local part */
		{ " Alice <\"alice\"@example.org>", "BAD" },
		{ " <\"a@b\"@example.org>", "BAD" },
		{ " alice liddell@example.org", "BAD" },
		{ " alice..liddell@example.org", "BAD" },
		{ " .alice@example.org", "BAD" },
		{ " alice.@example.org", "BAD" },
		{ " alice@example.org.", "BAD" },
		{ " alice@", "BAD" },
		{ " @example.org", "BAD" },
		{ " alice@example.org <eve@evil.example>", "BAD" },
		{ " alice@example.org eve@evil.example", "BAD" },
		{ " Alice <alice@example.org", "BAD" },	/* unterminated angle */
		{ " Alice <alice@example.org> <eve@evil.example>", "BAD" },
		{ " \"Alice <alice@example.org>", "BAD" },	/* unterminated */
		{ " (Alice alice@example.org", "BAD" },	/* unterminated */
		{ " (a (b) alice@example.org", "BAD" },	/* nesting unclosed */
		{ " alice@example.org)", "BAD" },
		{ " \"Alice\\", "BAD" },
		{ " A: B: alice@example.org;;", "BAD" },	/* nested group */
		{ " Team: alice@example.org", "BAD" },	/* no ';' */
		{ " Team: alice@example.org; eve@evil.example", "BAD" },
		{ " <@relay.example alice@example.org>", "BAD" },
		{ " al\xc3\xaf" "ce@example.org", "BAD" },	/* non-ASCII local */
		{ " alice@ex\xc3\xa4mple.org", "BAD" },
		{ " alice@example.org\r", "BAD" },	/* bare CR */
		{ " Alice\n<alice@example.org>", "BAD" },	/* LF, no fold */
		{ " alice\x01@example.org", "BAD" },
		{ " \"Al\x7f\" <alice@example.org>", "BAD" },
		{ " alice@[192.0.2.1 ]", "BAD" },
		{ " alice@[192.0.2.1", "BAD" },
		{ " alice@[a@example.org]", "BAD" },
		{ " alice@[a\\]]", "BAD" },
		{ " alice\\@example.org", "BAD" },
		{ " alice@exa[mple.org", "BAD" },
		{ " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    "aaaa@example.org", "BAD" },	/* local part of 65 */
	};
	static const char pad[] = "X-Pad: 0123456789012345678901234567890"
	    "12345678901234567890123456789012345678\n";
	struct header_senders	 hs;
	char		 got[2048], esc[ESC_MAX], msg[8192], big[70000];
	const char	*r;
	size_t		 i, n;
	int		 rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = header_list(cases[i].value, got, sizeof(got));
		ok(strcmp(r, cases[i].want) == 0,
		    "header: From:%s -> %s (got %s)",
		    log_escape(cases[i].value, esc, sizeof(esc)),
		    cases[i].want, r);
	}

	/* Exactly at the bounds: 254 octets, 64 in the local part. */
	snprintf(msg, sizeof(msg), "%.64s@%.189s",
	    "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll",
	    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd."
	    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd."
	    "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	    "ddddddddddddddddddddddddddd");
	ok(strlen(msg) == 254 && strcmp(header_list(msg, got, sizeof(got)),
	    msg) == 0, "header: an address of 254 octets");
	msg[strlen(msg) - 1] = '.';
	strncat(msg, "d", sizeof(msg) - strlen(msg) - 1);
	ok(strlen(msg) == 255 && strcmp(header_list(msg, got, sizeof(got)),
	    "BAD") == 0, "header: an address of 255 octets");

	/* 32 addresses fit, 33 do not. */
	msg[0] = '\0';
	for (i = 0; i < HEADER_ADDRS_MAX; i++)
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
		    "%su%zu@example.org", i > 0 ? ", " : "", i);
	r = header_list(msg, got, sizeof(got));
	ok(strncmp(r, "u0@example.org u1@", 18) == 0 &&
	    strstr(r, "u31@example.org") != NULL, "header: 32 addresses");
	strncat(msg, ", u32@example.org", sizeof(msg) - strlen(msg) - 1);
	ok(strcmp(header_list(msg, got, sizeof(got)), "BAD") == 0,
	    "header: 33 addresses are too many");

	/* Whole messages, read from a file as the monitor does. */
#define HF(m, g)	header_file((m), sizeof(m) - 1, (g), sizeof(g))
#define RECEIVED	"Received: from client ([192.0.2.1])\n" \
			"\tby mx.example.org (smtpauthd) with ESMTPSA id X;\n" \
			"\t(authenticated user alice); Thu, 1 Jan 1970\n"
	rc = HF(RECEIVED "From: Alice <alice@example.org>\n"
	    "To: bob@example.net\nSubject: hi\n\nbody\n", got);
	ok(rc == HEADER_OK && strcmp(got, "from:alice@example.org") == 0,
	    "header: a message, LF (%s)", got);
	rc = HF(RECEIVED "Subject: hi\r\nFrom: Alice\r\n <alice@example.org>"
	    "\r\nSender: sec@example.org\r\n\r\nFrom: eve@evil.example\r\n",
	    got);
	ok(rc == HEADER_OK && strcmp(got, "from:alice@example.org "
	    "sender:sec@example.org") == 0,
	    "header: CRLF, folded, Sender:, From: in the body not taken (%s)",
	    got);
	rc = HF(RECEIVED "From: alice@example.org\nFROM : eve@evil.example\n"
	    "from:\tbob@example.org\n\nbody", got);
	ok(rc == HEADER_OK && strcmp(got, "from:alice@example.org "
	    "from:eve@evil.example from:bob@example.org") == 0,
	    "header: every From: counts, any case, space before ':' (%s)",
	    got);
	rc = HF(RECEIVED "To: bob@example.net\nX-From: eve@evil.example\n"
	    "Resent-From: eve@evil.example\nFromage: x\nReply-To: e@evil.ex\n"
	    "\nFrom: eve@evil.example\n", got);
	ok(rc == HEADER_NONE_FOUND, "header: no From: (X-From, Resent-From, "
	    "in the body) is none found");
	rc = HF(RECEIVED "Sender: sec@example.org\n\n", got);
	ok(rc == HEADER_OK && strcmp(got, "sender:sec@example.org") == 0,
	    "header: Sender: without From: is checked");
	rc = HF(RECEIVED "Subject: no body, no empty line\n"
	    "From: alice@example.org", got);
	ok(rc == HEADER_OK && strcmp(got, "from:alice@example.org") == 0,
	    "header: a message that is all header, no final line end");
	rc = HF(RECEIVED "Subject: x\n \nFrom: eve@evil.example\n\n", got);
	ok(rc == HEADER_OK && strcmp(got, "from:eve@evil.example") == 0,
	    "header: a blank line of white space does not end the header");
	rc = HF(RECEIVED "From alice Thu Jan  1 00:00:00 1970\n"
	    "junk line\nFrom: eve@evil.example\n\n", got);
	ok(rc == HEADER_OK && strcmp(got, "from:eve@evil.example") == 0,
	    "header: a line that is no field does not end the header");
	rc = HF(RECEIVED "From\n : eve@evil.example\n\n", got);
	ok(rc == HEADER_OK && strcmp(got, "from:eve@evil.example") == 0,
	    "header: a From: folded before its colon");
	rc = HF(RECEIVED " From: eve@evil.example\n\n", got);
	ok(rc == HEADER_NONE_FOUND,
	    "header: a continuation line is not a field");
	rc = HF(RECEIVED "From: alice@example.org\nFrom: Alice\n\n", got);
	ok(rc == HEADER_BAD, "header: one bad From: of two is bad (%s)", got);
	rc = HF(RECEIVED "From: \n\nbody", got);
	ok(rc == HEADER_BAD, "header: an empty From: is bad (%s)", got);
	rc = HF(RECEIVED "Subject: x\nFrom: a\0b@example.org\n\n", got);
	ok(rc == HEADER_BAD, "header: NUL (%s)", got);
	rc = HF(RECEIVED "Subject: x\0\nFrom: alice@example.org\n\n", got);
	ok(rc == HEADER_BAD, "header: NUL in another field (%s)", got);
	rc = HF(RECEIVED "Subject: x\rFrom: eve@evil.example\n"
	    "From: alice@example.org\n\n", got);
	ok(rc == HEADER_BAD, "header: bare CR, a line end to some (%s)", got);
	rc = HF(RECEIVED "Subject: x\n\nbody \0 with NUL\r", got);
	ok(rc == HEADER_NONE_FOUND,
	    "header: NUL and CR in the body are not the header's");
	rc = HF("", got);
	ok(rc == HEADER_NONE_FOUND, "header: an empty file");
	rc = HF("\nFrom: eve@evil.example\n", got);
	ok(rc == HEADER_NONE_FOUND, "header: an empty header section");

	/* The bound: 64 KiB of header section. */
	n = (size_t)snprintf(big, sizeof(big), "From: alice@example.org\n");
	while (n + 80 < HEADER_SECTION_MAX) {
		memcpy(big + n, pad, strlen(pad));
		n += strlen(pad);
	}
	memset(big + n, 'y', HEADER_SECTION_MAX - n);
	big[HEADER_SECTION_MAX - 1] = '\n';
	n = HEADER_SECTION_MAX;
	memcpy(big + n, "\nbody\n", 6);
	rc = header_file(big, n + 6, got, sizeof(got));
	ok(rc == HEADER_OK && strcmp(got, "from:alice@example.org") == 0,
	    "header: a header section of exactly 64 KiB (%s)", got);
	memcpy(big + n, "\r\nbody\n", 7);
	rc = header_file(big, n + 7, got, sizeof(got));
	ok(rc == HEADER_OK, "header: 64 KiB, then a CRLF empty line (%s)", got);
	big[n - 1] = 'y';
	memcpy(big + n, "\n\r\nbody\n", 8);
	rc = header_file(big, n + 8, got, sizeof(got));
	ok(rc == HEADER_BAD, "header: 64 KiB and one octet, CRLF (%s)", got);
	memcpy(big + n, "y\n\nbody\n", 8);
	rc = header_file(big, n + 8, got, sizeof(got));
	ok(rc == HEADER_BAD, "header: 64 KiB and two octets (%s)", got);
	rc = header_file(big, n + 1, got, sizeof(got));
	ok(rc == HEADER_BAD, "header: all header, 64 KiB and one (%s)", got);
	rc = header_file(big, n, got, sizeof(got));
	ok(rc == HEADER_OK, "header: all header, 64 KiB (%s)", got);
	memset(big, 'z', sizeof(big));
	rc = header_file(big, sizeof(big), got, sizeof(got));
	ok(rc == HEADER_BAD, "header: no line end at all (%s)", got);
	ok(header_senders(-1, &hs) == HEADER_IOERR && hs.n == 0,
	    "header: a read error");
#undef HF
#undef RECEIVED
}

/* ---- map files and the sender policy (map.c, policy.c) ---- */

static char policy_dir[] = "/tmp/smtpauthd-unit.XXXXXX";

/* A file of the test directory with text (len octets), mode mode. */
static const char *
policy_file(const char *name, const char *text, size_t len, mode_t mode)
{
	static char	 path[4][256];
	static int	 next;
	char		*p = path[next++ % 4];
	FILE		*fp;

	snprintf(p, sizeof(path[0]), "%s/%s", policy_dir, name);
	if ((fp = fopen(p, "w")) == NULL || fwrite(text, 1, len, fp) != len ||
	    fclose(fp) != 0 || chmod(p, mode) == -1) {
		perror(p);
		exit(1);
	}
	return p;
}

#define POLICY_MAP \
	"# sender logins, as Postfix's smtpd_sender_login_maps\n" \
	"sales@example.org      alice, bob\n" \
	"\n" \
	"support@example.org    alice bob,carol\n" \
	"   # a comment between a line and its continuation\n" \
	"        dave\n" \
	"@example.net           erin\n" \
	"Shared@Example.ORG     ALICE\n" \
	"info+x@example.org     frank\n" \
	"info@example.org       grace\n" \
	"mary                   heidi\n" \
	"postmaster@example.net ivan\r\n" \
	"sales@example.org      mallory\n"

struct map_seen {
	char	 text[512];
	size_t	 n;
};

static int
map_collect(struct map_file *mf, size_t lineno, char *key, char *value,
    void *arg)
{
	struct map_seen	*seen = arg;
	size_t		 len = strlen(seen->text);
	char		*item;

	(void)mf;
	seen->n++;
	snprintf(seen->text + len, sizeof(seen->text) - len, "%zu:%s=", lineno,
	    key);
	while ((item = map_value_next(&value)) != NULL) {
		len = strlen(seen->text);
		snprintf(seen->text + len, sizeof(seen->text) - len, "[%s]",
		    item);
	}
	len = strlen(seen->text);
	snprintf(seen->text + len, sizeof(seen->text) - len, ";");
	return 0;
}

static const char *const policy_names[] = { "ok", "refuse", "tempfail" };

static void
test_map(void)
{
	struct map_file	 mf;
	struct map_seen	 seen;
	char		 big[MAP_LINE_MAX + 64];
	int		 rc;

	memset(&mf, 0, sizeof(mf));
	memset(&seen, 0, sizeof(seen));
	mf.what = "test-map";
	mf.path = policy_file("m1", POLICY_MAP, strlen(POLICY_MAP), 0644);
	rc = map_read(&mf, map_collect, &seen);
	ok(rc == 0 && seen.n == 9, "map: read (%zu entries)", seen.n);
	ok(strstr(seen.text, "4:support@example.org=[alice][bob][carol]"
	    "[dave];") != NULL, "map: continuation joined, comment skipped, "
	    "comma and blank lists: %s", seen.text);
	ok(strstr(seen.text, "12:postmaster@example.net=[ivan];") != NULL,
	    "map: CRLF line");
	memset(&seen, 0, sizeof(seen));
	mf.path = policy_file("m2", "a b\n  c\nnovalue\nd e\n", 19, 0644);
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "m2:3: \"novalue\" has no value") != NULL &&
	    strncmp(mf.why, "test-map ", 9) == 0, "map: no value, line 3: %s",
	    mf.why);
	memset(&seen, 0, sizeof(seen));
	mf.path = policy_file("m3", "# x\n  a b\n", 10, 0644);
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "m3:2: begins with a blank") != NULL,
	    "map: continuation of nothing: %s", mf.why);
	mf.path = policy_file("m4", "a b\nc\0d e\n", 10, 0644);
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "m4:2: NUL") != NULL, "map: NUL: %s", mf.why);
	memset(big, 'x', sizeof(big));
	big[0] = 'k';
	big[1] = ' ';
	big[sizeof(big) - 1] = '\n';
	mf.path = policy_file("m5", big, sizeof(big), 0644);
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "m5:1: line longer") != NULL, "map: long line: %s",
	    mf.why);
	mf.path = policy_file("m6", "a b\n", 4, 0664);
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "chmod go-w") != NULL, "map: group-writable: %s",
	    mf.why);
	mf.path = policy_file("m7", "a b\n", 4, 0646);
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "chmod go-w") != NULL, "map: world-writable");
	mf.path = "/nonexistent/map";
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "/nonexistent/map: No such file") != NULL,
	    "map: missing: %s", mf.why);
	mf.path = policy_dir;
	ok(map_read(&mf, map_collect, &seen) == -1 &&
	    strstr(mf.why, "not a regular file") != NULL, "map: directory");
	mf.path = policy_file("m8", "a b\n", 4, 0644);
	{
		char link[300];

		snprintf(link, sizeof(link), "%s/link", policy_dir);
		ok(symlink(mf.path, link) == 0 && (mf.path = link,
		    map_read(&mf, map_collect, &seen) == -1) &&
		    strstr(mf.why, "symbolic link") != NULL,
		    "map: symbolic link refused: %s", mf.why);
		(void)unlink(link);
	}
	if (geteuid() != 0) {
		mf.path = policy_file("m9", "a b\n", 4, 0000);
		ok(map_read(&mf, map_collect, &seen) == -1 &&
		    strstr(mf.why, "Permission denied") != NULL,
		    "map: unreadable: %s", mf.why);
	}
}

static void
test_policy(void)
{
	static const struct {
		const char	*login, *sender;
		int		 policy;	/* SENDER_* */
		const char	*domains;	/* NULL: from hostname */
		const char	*hostname, *delims;
		int		 map;		/* use sender-map m1 */
		int		 want;
	} t[] = {
		/* own */
		{ "alice", "alice@example.org", SENDER_OWN, "example.org, "
		    "mail.example.org", NULL, "+", 0, POLICY_OK },
		{ "alice", "alice@mail.example.org", SENDER_OWN, "example.org, "
		    "mail.example.org", NULL, "+", 0, POLICY_OK },
		{ "alice", "ALICE@Example.ORG", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_OK },
		{ "Alice", "alice@example.org", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_OK },
		{ "alice", "alice+news@example.org", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_OK },
		{ "alice", "alice-news@example.org", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_REFUSE },
		{ "alice", "alice-news@example.org", SENDER_OWN, "example.org",
		    NULL, "+-", 0, POLICY_OK },
		{ "alice", "alice+news@example.org", SENDER_OWN, "example.org",
		    NULL, "+-", 0, POLICY_OK },
		{ "mary-ann", "mary-ann+x@example.org", SENDER_OWN,
		    "example.org", NULL, "+-", 0, POLICY_OK },
		{ "mary-ann", "mary@example.org", SENDER_OWN, "example.org",
		    NULL, "+-", 0, POLICY_REFUSE },
		{ "alice", "bob@example.org", SENDER_OWN, "example.org", NULL,
		    "+", 0, POLICY_REFUSE },
		{ "alice", "aliceb@example.org", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_REFUSE },
		{ "alice", "ali@example.org", SENDER_OWN, "example.org", NULL,
		    "+", 0, POLICY_REFUSE },
		{ "alice", "alice@example.com", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_REFUSE },
		{ "alice", "alice@sub.example.org", SENDER_OWN, "example.org",
		    NULL, "+", 0, POLICY_REFUSE },
		{ "alice", "alice", SENDER_OWN, "example.org", NULL, "+", 0,
		    POLICY_REFUSE },
		{ "alice", "", SENDER_OWN, "example.org", NULL, "+", 0,
		    POLICY_OK },
		{ "alice", "sales@example.org", SENDER_OWN, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		/* a login that is an address */
		{ "alice@example.com", "alice@example.com", SENDER_OWN,
		    "example.org", NULL, "+", 0, POLICY_OK },
		{ "alice@example.com", "ALICE+x@Example.COM", SENDER_OWN,
		    "example.org", NULL, "+", 0, POLICY_OK },
		{ "alice@example.com", "alice@example.org", SENDER_OWN,
		    "example.org", NULL, "+", 0, POLICY_REFUSE },
		{ "alice@example.com", "bob@example.com", SENDER_OWN,
		    "example.org", NULL, "+", 0, POLICY_REFUSE },
		/* sender-domains unset: from hostname */
		{ "alice", "alice@example.org", SENDER_OWN, NULL,
		    "mail.example.org", "+", 0, POLICY_OK },
		{ "alice", "alice@mail.example.org", SENDER_OWN, NULL,
		    "mail.example.org", "+", 0, POLICY_OK },
		{ "alice", "alice@org", SENDER_OWN, NULL, "mail.example.org",
		    "+", 0, POLICY_REFUSE },
		{ "alice", "alice@test.example", SENDER_OWN, NULL,
		    "test.example", "+", 0, POLICY_OK },
		{ "alice", "alice@example", SENDER_OWN, NULL, "test.example",
		    "+", 0, POLICY_REFUSE },
		/* any */
		{ "alice", "bob@example.com", SENDER_ANY, "example.org", NULL,
		    "+", 0, POLICY_OK },
		/* map */
		{ "alice", "alice@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "alice", "sales@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "bob", "SALES@example.org", SENDER_MAP, "example.org", NULL,
		    "+", 1, POLICY_OK },
		{ "carol", "sales@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "mallory", "sales@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "carol", "support@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "dave", "support@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "alice", "sales+q3@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "erin", "anyone@example.net", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "bob", "anyone@example.net", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "ivan", "postmaster@example.net", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "erin", "postmaster@example.net", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "alice", "shared@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "frank", "info+x@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "grace", "info+x@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "grace", "info+y@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "frank", "info@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "heidi", "mary@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "heidi", "mary+x@example.org", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_OK },
		{ "heidi", "mary@example.net", SENDER_MAP, "example.org",
		    NULL, "+", 1, POLICY_REFUSE },
		{ "alice", "", SENDER_MAP, "example.org", NULL, "+", 1,
		    POLICY_OK },
	};
	struct config	 cf;
	const char	*m1, *bad;
	const char	*list[3];
	char		 why[POLICY_WHY_MAX], text[256];
	size_t		 i, failed = 99;
	int		 rc;

	m1 = policy_file("sender-map", POLICY_MAP, strlen(POLICY_MAP), 0644);
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		conf_defaults(&cf);
		cf.sender_policy = t[i].policy;
		if (t[i].domains != NULL)
			(void)conf_set(&cf, "sender-domains", t[i].domains, "t");
		(void)conf_set(&cf, "hostname", t[i].hostname != NULL ?
		    t[i].hostname : "mail.example.org", "t");
		(void)conf_set(&cf, "sender-delimiter", t[i].delims, "t");
		if (t[i].map)
			(void)conf_set(&cf, "sender-map", m1, "t");
		rc = policy_sender(&cf, t[i].login, t[i].sender, why,
		    sizeof(why));
		ok(cf.nerrors == 0 && rc == t[i].want, "sender: %s %s as %s "
		    "(domains %s, delimiter %s): %s", t[i].policy == SENDER_MAP ?
		    "map" : t[i].policy == SENDER_ANY ? "any" : "own",
		    t[i].login, t[i].sender[0] != '\0' ? t[i].sender : "<>",
		    t[i].domains != NULL ? t[i].domains : "unset",
		    t[i].delims, policy_names[rc]);
		conf_free(&cf);
	}

	/* A map that cannot be used: 451, unless the address is one's own. */
	conf_defaults(&cf);
	(void)conf_set(&cf, "hostname", "mail.example.org", "t");
	(void)conf_set(&cf, "sender-policy", "map", "t");
	bad = policy_file("bad-map", "sales@example.org alice\n\n"
	    "x@y@z bob\n", 35, 0644);
	(void)conf_set(&cf, "sender-map", bad, "t");
	ok(policy_sender(&cf, "alice", "sales@example.org", why, sizeof(why))
	    == POLICY_TEMPFAIL && strstr(why, "bad-map:3: \"x@y@z\" is not")
	    != NULL, "sender: bad map line: tempfail, why names line 3: %s",
	    why);
	ok(policy_sender(&cf, "alice", "alice@example.org", why, sizeof(why))
	    == POLICY_OK, "sender: own address needs no map");
	bad = policy_file("empty-value", "sales@example.org ,\n", 20, 0644);
	(void)conf_set(&cf, "sender-map", bad, "t");
	ok(policy_sender(&cf, "alice", "sales@example.org", why, sizeof(why))
	    == POLICY_TEMPFAIL && strstr(why, "names no login") != NULL,
	    "sender: entry without logins: %s", why);
	bad = policy_file("gw-map", "sales@example.org alice\n", 24, 0620);
	(void)conf_set(&cf, "sender-map", bad, "t");
	ok(policy_sender(&cf, "alice", "sales@example.org", why, sizeof(why))
	    == POLICY_TEMPFAIL && strstr(why, "sender-map ") == why &&
	    strstr(why, "group or others may write") != NULL,
	    "sender: group-writable map: %s", why);
	(void)conf_set(&cf, "sender-map", "/nonexistent/sender-map", "t");
	ok(policy_sender(&cf, "alice", "sales@example.org", why, sizeof(why))
	    == POLICY_TEMPFAIL && strstr(why, "No such file") != NULL,
	    "sender: missing map: %s", why);
	(void)conf_set(&cf, "sender-map", m1, "t");
	list[0] = "alice@example.org";
	list[1] = "carol@example.org";
	list[2] = "sales@example.org";
	ok(policy_sender_list(&cf, "alice", list, 3, &failed, why,
	    sizeof(why)) == POLICY_REFUSE && failed == 1,
	    "sender: list, second refused");
	list[1] = "";
	ok(policy_sender_list(&cf, "alice", list, 3, &failed, why,
	    sizeof(why)) == POLICY_OK, "sender: list, all owned");
	ok(policy_sender_list(&cf, "alice", list, 0, &failed, why,
	    sizeof(why)) == POLICY_OK, "sender: empty list");
	conf_free(&cf);

	ok(policy_sender_reply("bob@example.org", "alice", text, sizeof(text))
	    == 553 && strcmp(text, "5.7.1 <bob@example.org>: Sender address "
	    "rejected: not owned by user alice") == 0, "sender: MAIL reply");
	ok(policy_header_reply("alice", text, sizeof(text)) == 550 &&
	    strcmp(text, "5.7.1 From: header not owned by user alice") == 0,
	    "sender: header reply");
	ok(policy_tempfail_reply("bob@example.org", text, sizeof(text)) ==
	    451 && strncmp(text, "4.3.0 ", 6) == 0, "sender: tempfail reply");

	/* The keys' values. */
	conf_defaults(&cf);
	ok(cf.sender_policy == SENDER_OWN && cf.sender_domains == NULL &&
	    strcmp(cf.sender_delimiter, "+") == 0 && cf.sender_map == NULL &&
	    cf.sender_header_check == 0, "sender conf: defaults");
	ok(conf_set(&cf, "sender-delimiter", "+-", "t") == 0 &&
	    conf_set(&cf, "sender-delimiter", "+-_=.~/!", "t") == 0,
	    "sender conf: delimiters");
	ok(conf_set(&cf, "sender-delimiter", "+-_=.~/!#", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "a", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "+1", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "@", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "+ -", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "+\t", "t") == -1 &&
	    conf_set(&cf, "sender-delimiter", "\xc3\xa9", "t") == -1,
	    "sender conf: delimiters refused");
	ok(conf_set(&cf, "sender-domains", "example.org", "t") == 0 &&
	    conf_set(&cf, "sender-domains", "example.org, mail.example.org "
	    "example.net,", "t") == 0, "sender conf: domain lists");
	ok(conf_set(&cf, "sender-domains", ",", "t") == -1 &&
	    conf_set(&cf, "sender-domains", "example.org, exa mple!", "t") ==
	    -1 && conf_set(&cf, "sender-domains", "@example.org", "t") == -1 &&
	    conf_set(&cf, "sender-domains", "example.org.", "t") == -1,
	    "sender conf: domain lists refused");
	ok(conf_set(&cf, "sender-policy", "map", "t") == 0 &&
	    cf.sender_policy == SENDER_MAP &&
	    conf_set(&cf, "sender-policy", "all", "t") == -1,
	    "sender conf: policy");
	ok(cf.nerrors == 13, "sender conf: every problem recorded (%zu)",
	    cf.nerrors);
	conf_free(&cf);
}

static void
test_map_policy(void)
{
	char cmd[64];

	if (mkdtemp(policy_dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	test_map();
	test_policy();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", policy_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "# could not remove %s\n", policy_dir);
}

/* ---- the policy client (policy_client.c) ---- */

/* What Postfix 3.2 sends, in its order, for one RCPT of ours. */
static const char policy_golden_rcpt[] =
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=ESMTP\n"
    "helo_name=laptop.example\n"
    "queue_id=0123456789ABCDEF\n"
    "sender=alice@example.org\n"
    "recipient=bob@example.net\n"
    "recipient_count=0\n"
    "client_address=192.0.2.7\n"
    "client_name=unknown\n"
    "reverse_client_name=unknown\n"
    "instance=1234.5678.1\n"
    "sasl_method=PLAIN\n"
    "sasl_username=alice\n"
    "sasl_sender=\n"
    "size=1200\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=TLSv1.3\n"
    "encryption_cipher=TLS_AES_256_GCM_SHA384\n"
    "encryption_keysize=256\n"
    "etrn_domain=\n"
    "stress=\n"
    "client_port=50123\n"
    "policy_context=\n"
    "server_address=198.51.100.1\n"
    "server_port=587\n"
    "\n";

/* END-OF-MESSAGE with two recipients: no recipient, the count; <>. */
static const char policy_golden_eom[] =
    "request=smtpd_access_policy\n"
    "protocol_state=END-OF-MESSAGE\n"
    "protocol_name=ESMTP\n"
    "helo_name=\n"
    "queue_id=\n"
    "sender=\n"
    "recipient=\n"
    "recipient_count=2\n"
    "client_address=2001:db8::7\n"
    "client_name=unknown\n"
    "reverse_client_name=unknown\n"
    "instance=\n"
    "sasl_method=LOGIN\n"
    "sasl_username=bob\n"
    "sasl_sender=\n"
    "size=54321\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "client_port=\n"
    "policy_context=\n"
    "server_address=\n"
    "server_port=\n"
    "\n";

static int
same_text(const char *what, const char *got, const char *want)
{
	size_t i;

	if (strcmp(got, want) == 0)
		return 1;
	for (i = 0; got[i] == want[i]; i++)
		;
	fprintf(stderr, "# %s differs at offset %zu: got \"%.40s\", want "
	    "\"%.40s\"\n", what, i, got + i, want + i);
	return 0;
}

static void
test_policy_request(void)
{
	struct policy_request	 rq;
	char			 buf[POLICY_REQUEST_MAX], big[POLICY_REQUEST_MAX];
	const char		*why = NULL;
	size_t			 len = 0;

	memset(&rq, 0, sizeof(rq));
	rq.state = POLICY_RCPT;
	rq.helo_name = "laptop.example";
	rq.queue_id = "0123456789ABCDEF";
	rq.sender = "alice@example.org";
	rq.recipient = "bob@example.net";
	rq.client_address = "192.0.2.7";
	rq.instance = "1234.5678.1";
	rq.sasl_method = "PLAIN";
	rq.sasl_username = "alice";
	rq.size = 1200;
	rq.encryption_protocol = "TLSv1.3";
	rq.encryption_cipher = "TLS_AES_256_GCM_SHA384";
	rq.encryption_keysize = 256;
	rq.client_port = "50123";
	rq.server_address = "198.51.100.1";
	rq.server_port = "587";
	ok(policy_format_request(&rq, buf, sizeof(buf), &len, &why) == 0 &&
	    len == strlen(policy_golden_rcpt) &&
	    same_text("RCPT request", buf, policy_golden_rcpt),
	    "policy: RCPT request as Postfix sends it");

	memset(&rq, 0, sizeof(rq));
	rq.state = POLICY_END_OF_MESSAGE;
	rq.sender = "";
	rq.recipient_count = 2;
	rq.client_address = "2001:db8::7";
	rq.sasl_method = "LOGIN";
	rq.sasl_username = "bob";
	rq.size = 54321;
	ok(policy_format_request(&rq, buf, sizeof(buf), &len, &why) == 0 &&
	    same_text("END-OF-MESSAGE request", buf, policy_golden_eom),
	    "policy: END-OF-MESSAGE request, null sender, empty unknowns");

	rq.helo_name = "evil\nrequest=smtpd_access_policy";
	why = NULL;
	ok(policy_format_request(&rq, buf, sizeof(buf), &len, &why) == -1 &&
	    why != NULL && strstr(why, "newline") != NULL,
	    "policy: a value with LF is refused");
	rq.helo_name = "evil\r";
	ok(policy_format_request(&rq, buf, sizeof(buf), &len, &why) == -1,
	    "policy: a value with CR is refused");
	rq.helo_name = "ok";
	rq.sasl_username = "x\n\nrequest=x";
	ok(policy_format_request(&rq, buf, sizeof(buf), &len, &why) == -1,
	    "policy: an empty line smuggled in a user name is refused");
	rq.sasl_username = "bob";
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	rq.recipient = big;
	ok(policy_format_request(&rq, buf, sizeof(buf), &len, &why) == -1 &&
	    strstr(why, "too long") != NULL,
	    "policy: a request over the buffer is refused, not cut");
	rq.recipient = NULL;
	ok(policy_format_request(&rq, buf, 100, &len, &why) == -1,
	    "policy: a small buffer is refused");
}

static void
test_policy_reply(void)
{
	static const struct {
		const char	*in;
		int		 want_rc;
		const char	*want_action;
	} t[] = {
		{ "action=DUNNO\n\n", POLICY_REPLY_OK, "DUNNO" },
		{ "action=REJECT go away\n\n", POLICY_REPLY_OK,
		    "REJECT go away" },
		{ "action=OK\r\n\r\n", POLICY_REPLY_OK, "OK" },
		{ "x=1\naction=DEFER\ny=2\n\n", POLICY_REPLY_OK, "DEFER" },
		{ "action=a=b\n\n", POLICY_REPLY_OK, "a=b" },
		{ "action=OK\n\nleftover", POLICY_REPLY_OK, "OK" },
		{ "action=", POLICY_REPLY_SHORT, NULL },
		{ "action=OK\n", POLICY_REPLY_SHORT, NULL },
		{ "", POLICY_REPLY_SHORT, NULL },
		{ "\n", POLICY_REPLY_BAD, NULL },		/* no action */
		{ "foo=bar\n\n", POLICY_REPLY_BAD, NULL },
		{ "action=OK\naction=REJECT\n\n", POLICY_REPLY_BAD, NULL },
		{ "garbage\n\n", POLICY_REPLY_BAD, NULL },
		{ "=OK\n\n", POLICY_REPLY_BAD, NULL },
		{ "HTTP/1.0 200 OK\n\n", POLICY_REPLY_BAD, NULL },
		{ "ACTION=OK\n\n", POLICY_REPLY_BAD, NULL },	/* names: case */
		{ "action=REJECT a\rb\n\n", POLICY_REPLY_BAD, NULL },
		{ "action=REJECT a\033[2Jb\n\n", POLICY_REPLY_BAD, NULL },
		{ "action=REJECT a\tb\n\n", POLICY_REPLY_OK, "REJECT a\tb" },
	};
	char		 action[POLICY_REPLY_MAX], big[POLICY_REPLY_MAX + 10];
	const char	*why;
	size_t		 i;
	int		 rc;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		why = NULL;
		action[0] = '\0';
		rc = policy_parse_reply(t[i].in, strlen(t[i].in), action,
		    sizeof(action), &why);
		ok(rc == t[i].want_rc && (t[i].want_action == NULL ||
		    strcmp(action, t[i].want_action) == 0) &&
		    (rc != POLICY_REPLY_BAD || why != NULL),
		    "policy reply %zu: %d (want %d) action \"%s\"", i, rc,
		    t[i].want_rc, rc == POLICY_REPLY_OK ? action : "");
	}
	ok(policy_parse_reply("action=OK\0\n\n", 12, action, sizeof(action),
	    &why) == POLICY_REPLY_BAD, "policy reply: NUL refused");
	memset(big, 'x', sizeof(big));
	memcpy(big, "action=", 7);
	ok(policy_parse_reply(big, POLICY_REPLY_MAX, action, sizeof(action),
	    &why) == POLICY_REPLY_BAD, "policy reply: over the bound");
	ok(policy_parse_reply(big, POLICY_REPLY_MAX - 1, action,
	    sizeof(action), &why) == POLICY_REPLY_SHORT,
	    "policy reply: just under the bound, more may come");
	ok(policy_parse_reply("action=OK REJECT\n\n", 18, action, 4, &why) ==
	    POLICY_REPLY_BAD, "policy reply: action longer than its room");
}

static void
test_policy_actions(void)
{
	static const struct {
		const char	*action;
		int		 want_rc;
		int		 want_code;
		const char	*want_text;
	} t[] = {
		{ "OK", POLICY_PASS, 0, NULL },
		{ "DUNNO", POLICY_PASS, 0, NULL },
		{ "dunno", POLICY_PASS, 0, NULL },
		{ "OK fine", POLICY_PASS, 0, NULL },
		{ "WARN watch this", POLICY_PASS, 0, NULL },
		{ "INFO note", POLICY_PASS, 0, NULL },
		{ "PREPEND X-Policy: yes", POLICY_PASS, 0, NULL },
		{ "DEFER_IF_REJECT maybe", POLICY_PASS, 0, NULL },
		{ "REJECT", POLICY_DENY, 554, "5.7.1 Access denied" },
		{ "REJECT Go away", POLICY_DENY, 554, "5.7.1 Go away" },
		{ "reject  spaced", POLICY_DENY, 554, "5.7.1 spaced" },
		{ "REJECT 5.7.0 Own code", POLICY_DENY, 554, "5.7.0 Own code" },
		{ "REJECT 4.7.0 Wrong class", POLICY_DENY, 554,
		    "5.7.0 Wrong class" },
		{ "DEFER", POLICY_DENY, 450, "4.7.1 Access denied" },
		{ "DEFER try later", POLICY_DENY, 450, "4.7.1 try later" },
		{ "DEFER_IF_PERMIT", POLICY_DENY, 450,
		    "4.7.1 Service unavailable" },
		{ "defer_if_permit Rate limit reach, retry later", POLICY_DENY,
		    450, "4.7.1 Rate limit reach, retry later" },
		{ "550 No such user here", POLICY_DENY, 550,
		    "5.7.1 No such user here" },
		{ "550 5.1.1 No such user", POLICY_DENY, 550,
		    "5.1.1 No such user" },
		{ "451 4.3.5 Server configuration problem", POLICY_DENY, 451,
		    "4.3.5 Server configuration problem" },
		{ "421 closing", POLICY_DENY, 421, "4.7.1 closing" },
		{ "450", POLICY_DENY, 450, "4.7.1 Access denied" },
		{ "554 5.7.1", POLICY_DENY, 554, "5.7.1 Access denied" },
		{ "550 5.1.1x not a code", POLICY_DENY, 550,
		    "5.7.1 5.1.1x not a code" },
		{ "REJECT bad\001char\x7f", POLICY_DENY, 554,
		    "5.7.1 bad?char?" },
		{ "250 fine", -1, 0, NULL },
		{ "350 what", -1, 0, NULL },
		{ "5500 long", -1, 0, NULL },
		{ "55 short", -1, 0, NULL },
		{ "HOLD", -1, 0, NULL },
		{ "DISCARD", -1, 0, NULL },
		{ "REDIRECT a@b", -1, 0, NULL },
		{ "FILTER smtp:x", -1, 0, NULL },
		{ "BCC a@b", -1, 0, NULL },
		{ "permit", -1, 0, NULL },
		{ "OKAY", -1, 0, NULL },
		{ "", -1, 0, NULL },
		{ " REJECT", -1, 0, NULL },
	};
	struct relay_reply	 r;
	const char		*note;
	char			 longtext[600];
	size_t			 i;
	int			 rc;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&r, 0, sizeof(r));
		rc = policy_action(t[i].action, &r, &note);
		ok(rc == t[i].want_rc && (rc != POLICY_DENY ||
		    (r.code == t[i].want_code &&
		    strcmp(r.text, t[i].want_text) == 0)),
		    "policy action \"%s\" -> %d %d %s", t[i].action, rc,
		    r.code, r.text);
	}
	ok(policy_action("WARN x", &r, &note) == POLICY_PASS && note != NULL,
	    "policy action: WARN passes with a note for the log");
	ok(policy_action("DUNNO", &r, &note) == POLICY_PASS && note == NULL,
	    "policy action: DUNNO passes quietly");
	memcpy(longtext, "REJECT ", 7);
	memset(longtext + 7, 'y', sizeof(longtext) - 8);
	longtext[sizeof(longtext) - 1] = '\0';
	ok(policy_action(longtext, &r, &note) == POLICY_DENY &&
	    strlen(r.text) == 6 + POLICY_TEXT_MAX,
	    "policy action: long text cut to %d octets", POLICY_TEXT_MAX);
	ok(policy_action("REJECT trailing   ", &r, &note) == POLICY_DENY &&
	    strcmp(r.text, "5.7.1 trailing") == 0,
	    "policy action: no blanks at the end of the line");
}

static void
test_policy_conf(void)
{
	static const struct { const char *spec; int want; } specs[] = {
		{ "inet:127.0.0.1:10031", 0 },
		{ "inet:localhost:10031", 0 },
		{ "inet:[::1]:10031", 0 },
		{ "inet:[2001:db8::5]:policy-srv", 0 },
		{ "inet:policy.example.org:9998", 0 },
		{ "unix:/run/policyd/policy.sock", 0 },
		{ "inet:::1:10031", -1 },
		{ "inet:127.0.0.1", -1 },
		{ "inet:127.0.0.1:", -1 },
		{ "inet:127.0.0.1:0", -1 },
		{ "inet:127.0.0.1:65536", -1 },
		{ "inet:127.0.0.1:01", -1 },
		{ "inet::10031", -1 },
		{ "inet:[]:10031", -1 },
		{ "inet:[::1]10031", -1 },
		{ "inet:[x::1]:10031", -1 },
		{ "inet:-host:1", -1 },
		{ "unix:relative/path", -1 },
		{ "unix:", -1 },
		{ "unix:/a\tb", -1 },
		{ "tcp:127.0.0.1:1", -1 },
		{ "127.0.0.1:10031", -1 },
	};
	struct config	 cf;
	const char	*why;
	char		 longpath[200];
	size_t		 i;

	for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		why = NULL;
		ok(policy_service_check(specs[i].spec, &why) == specs[i].want &&
		    (specs[i].want == 0 || why != NULL),
		    "policy-service %s: %s", specs[i].spec,
		    specs[i].want == 0 ? "accepted" : "refused");
	}
	memcpy(longpath, "unix:/", 6);
	memset(longpath + 6, 'p', sizeof(longpath) - 7);
	longpath[sizeof(longpath) - 1] = '\0';
	ok(policy_service_check(longpath, &why) == -1,
	    "policy-service: a path too long for sun_path");

	conf_defaults(&cf);
	ok(cf.policy_service == NULL && cf.policy_service_timeout == 10 &&
	    strcmp(cf.policy_service_default_action, "DUNNO") == 0,
	    "policy: defaults unset, 10, DUNNO");
	ok(conf_set(&cf, "policy-service-default-action",
	    "451 4.3.5 Server configuration problem", "t") == 0,
	    "policy: Postfix's fail-closed default accepted");
	ok(conf_set(&cf, "policy-service-default-action", "HOLD", "t") == -1 &&
	    conf_set(&cf, "policy-service-default-action", "250 ok", "t") ==
	    -1 && conf_set(&cf, "policy-service-default-action",
	    "REJECT \001", "t") == -1,
	    "policy: default actions that are not valid are refused");
	ok(conf_set(&cf, "policy-service", "inet:127.0.0.1:10031", "t") == 0 &&
	    strcmp(cf.policy_service, "inet:127.0.0.1:10031") == 0 &&
	    conf_set(&cf, "policy-service", "inet:127.0.0.1", "t") == -1,
	    "policy: policy-service form checked");
	ok(conf_set(&cf, "policy-service-timeout", "0", "t") == -1 &&
	    conf_set(&cf, "policy-service-timeout", "2", "t") == 0,
	    "policy: timeout bounds");
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

/* ---- the PROXY header (proxy.c) ---- */

/* pi as a v2 PROXY header (LOCAL when local), then tlvlen octets of TLVs. */
static size_t
proxy_v2(const struct proxy_info *pi, int local, size_t tlvlen,
    unsigned char *out)
{
	static const unsigned char sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
	    0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
	size_t	 alen = 0, hlen, i;

	memcpy(out, sig, 12);
	out[12] = local ? 0x20 : 0x21;
	out[13] = pi->family == AF_INET ? 0x11 : pi->family == AF_INET6 ?
	    0x21 : 0x00;
	if (pi->family == AF_INET || pi->family == AF_INET6) {
		alen = pi->family == AF_INET ? 4 : 16;
		memcpy(out + 16, pi->src, alen);
		memcpy(out + 16 + alen, pi->dst, alen);
		out[16 + 2 * alen] = (unsigned char)(pi->sport >> 8);
		out[17 + 2 * alen] = (unsigned char)pi->sport;
		out[18 + 2 * alen] = (unsigned char)(pi->dport >> 8);
		out[19 + 2 * alen] = (unsigned char)pi->dport;
		alen = 2 * alen + 4;
	}
	/* TLVs of type 0x04 (NOOP), each up to 255 octets of value. */
	for (i = 0; i < tlvlen; ) {
		size_t n = tlvlen - i - 3 > 255 ? 255 : tlvlen - i - 3;

		out[16 + alen + i] = 0x04;
		out[17 + alen + i] = (unsigned char)(n >> 8);
		out[18 + alen + i] = (unsigned char)n;
		memset(out + 19 + alen + i, 'n', n);
		i += 3 + n;
	}
	hlen = alen + tlvlen;
	out[14] = (unsigned char)(hlen >> 8);
	out[15] = (unsigned char)hlen;
	return 16 + hlen;
}

/* Every prefix of a header is SHORT; the whole, followed by more, is used exactly. */
static int
proxy_prefixes_short(const unsigned char *h, size_t len)
{
	unsigned char		 buf[PROXY_MAX + 16];
	struct proxy_info	 pi;
	const char		*why;
	size_t			 i, used;

	for (i = 0; i < len; i++)
		if (proxy_parse(h, i, &used, &pi, &why) != PROXY_SHORT)
			return 0;
	memcpy(buf, h, len);
	memcpy(buf + len, "EHLO x\r\n", 8);
	return proxy_parse(buf, len + 8, &used, &pi, &why) == PROXY_OK &&
	    used == len;
}

static void
test_proxy(void)
{
	static const struct {
		const char	*v1;
		int		 want;	/* PROXY_OK, _SHORT, _BAD */
		int		 family;
		const char	*client;	/* NULL: none */
		unsigned	 sport;
	} want_v1[] = {
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\r\n", PROXY_OK,
		    AF_INET, "192.0.2.7", 40000 },
		{ "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
		    PROXY_OK, AF_INET, "255.255.255.255", 65535 },
		{ "PROXY TCP6 2001:db8::7 2001:db8::1 1 465\r\n", PROXY_OK,
		    AF_INET6, "2001:db8::7", 1 },
		{ "PROXY TCP6 ::ffff:192.0.2.9 ::ffff:192.0.2.1 0 25\r\n",
		    PROXY_OK, AF_INET6, "192.0.2.9", 0 },
		/* The longest there is: 107 octets. */
		{ "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		    PROXY_OK, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		    65535 },
		{ "PROXY UNKNOWN\r\n", PROXY_OK, AF_UNSPEC, NULL, 0 },
		{ "PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", PROXY_OK,
		    AF_UNSPEC, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\r", PROXY_SHORT,
		    0, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7", PROXY_SHORT, 0, NULL, 0 },
		{ "PROX", PROXY_SHORT, 0, NULL, 0 },
		{ "", PROXY_SHORT, 0, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\n", PROXY_BAD,
		    0, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\rX", PROXY_BAD,
		    0, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 40000 65536\r\n",
		    PROXY_BAD, 0, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 -1 587\r\n", PROXY_BAD,
		    0, NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 000001 587\r\n",
		    PROXY_BAD, 0, NULL, 0 },
		{ "PROXY TCP4 2001:db8::7 2001:db8::1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY TCP6 192.0.2.7 198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY TCP4 192.0.2.7\t198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "PROXY \r\n", PROXY_BAD, 0, NULL, 0 },
		{ "PROXY\r\n", PROXY_BAD, 0, NULL, 0 },
		{ "proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n", PROXY_BAD, 0,
		    NULL, 0 },
		{ "EHLO client.example\r\n", PROXY_BAD, 0, NULL, 0 },
		{ "\x16\x03\x01\x02\x00\x01", PROXY_BAD, 0, NULL, 0 },
		{ "\r\n\r\n\x01", PROXY_BAD, 0, NULL, 0 },
		/* No CRLF within 107 octets. */
		{ "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
		    PROXY_BAD, 0, NULL, 0 },
		{ "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
		    PROXY_BAD, 0, NULL, 0 },
		{ "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
		    PROXY_OK, AF_UNSPEC, NULL, 0 },
	};
	unsigned char		 v2[PROXY_MAX + 64], bad[64];
	struct proxy_info	 pi, pi2;
	const char		*why;
	char			 client[PEER_MAX];
	size_t			 i, len, used, v2len;
	int			 rc, good;

	for (i = 0; i < sizeof(want_v1) / sizeof(want_v1[0]); i++) {
		len = strlen(want_v1[i].v1);
		rc = proxy_parse((const unsigned char *)want_v1[i].v1, len,
		    &used, &pi, &why);
		good = rc == want_v1[i].want;
		if (good && rc == PROXY_OK) {
			good = used == len && pi.version == 1 && !pi.local &&
			    pi.family == want_v1[i].family &&
			    pi.sport == want_v1[i].sport;
			if (want_v1[i].client != NULL)
				good = good && proxy_client_address(&pi,
				    client, sizeof(client)) == 0 &&
				    strcmp(client, want_v1[i].client) == 0;
			else
				good = good && proxy_client_address(&pi,
				    client, sizeof(client)) == -1;
			good = good && proxy_prefixes_short(
			    (const unsigned char *)want_v1[i].v1, len);
		}
		ok(good, "proxy: v1 case %zu (rc %d why %s)", i, rc, why);
		if (rc != PROXY_OK)
			continue;
		/* The same header in v2 gives the same answer. */
		v2len = proxy_v2(&pi, 0, 0, v2);
		rc = proxy_parse(v2, v2len, &used, &pi2, &why);
		pi2.version = 1;
		ok(rc == PROXY_OK && used == v2len &&
		    memcmp(&pi, &pi2, sizeof(pi)) == 0 &&
		    proxy_prefixes_short(v2, v2len),
		    "proxy: v1 case %zu as v2 (rc %d why %s)", i, rc, why);
		/* And with TLVs after the addresses, which are skipped. */
		v2len = proxy_v2(&pi, 0, 3 + 40, v2);
		rc = proxy_parse(v2, v2len, &used, &pi2, &why);
		pi2.version = 1;
		ok(rc == PROXY_OK && used == v2len &&
		    memcmp(&pi, &pi2, sizeof(pi)) == 0,
		    "proxy: v1 case %zu as v2 with a TLV (rc %d why %s)", i, rc,
		    why);
	}

	/* v2 LOCAL: a header, marked local, addresses ignored. */
	rc = proxy_parse((const unsigned char *)want_v1[0].v1,
	    strlen(want_v1[0].v1), &used, &pi, &why);
	v2len = proxy_v2(&pi, 1, 0, v2);
	rc = proxy_parse(v2, v2len, &used, &pi2, &why);
	ok(rc == PROXY_OK && pi2.local && used == v2len &&
	    proxy_client_address(&pi2, client, sizeof(client)) == -1,
	    "proxy: v2 LOCAL");
	/* LOCAL's family octet is ignored, whatever it holds. */
	v2[13] = 0xff;
	rc = proxy_parse(v2, v2len, &used, &pi2, &why);
	ok(rc == PROXY_OK && pi2.local && used == v2len,
	    "proxy: v2 LOCAL with an unknown family (rc %d)", rc);
	/* The longest v2 header taken, one octet more refused. */
	v2len = proxy_v2(&pi, 0, PROXY_MAX - 16 - 12, v2);
	rc = proxy_parse(v2, v2len, &used, &pi2, &why);
	ok(rc == PROXY_OK && v2len == PROXY_MAX && used == PROXY_MAX,
	    "proxy: v2 of %d octets (rc %d why %s)", PROXY_MAX, rc, why);
	v2len = proxy_v2(&pi, 0, PROXY_MAX - 16 - 12 + 1, v2);
	rc = proxy_parse(v2, 16, &used, &pi2, &why);
	ok(rc == PROXY_BAD, "proxy: v2 of %zu octets refused at its length "
	    "(rc %d)", v2len, rc);
	/* Broken v2 headers, each from a good one. */
	len = proxy_v2(&pi, 0, 6, v2);
	static const struct {
		size_t		 at;
		unsigned char	 value;
		const char	*what;
	} breaks[] = {
		{ 11, 0x0b, "signature" },
		{ 12, 0x11, "version 1" },
		{ 12, 0x31, "version 3" },
		{ 12, 0x22, "command 2" },
		{ 13, 0x12, "datagram" },
		{ 13, 0x41, "family 4" },
		{ 13, 0x13, "transport 3" },
		{ 15, 11 + 6, "length under the addresses" },
		{ 15, 12 + 5, "a TLV cut short" },
		{ 30, 0x04, "a TLV longer than the header" },
	};
	for (i = 0; i < sizeof(breaks) / sizeof(breaks[0]); i++) {
		memcpy(bad, v2, len);
		bad[breaks[i].at] = breaks[i].value;
		rc = proxy_parse(bad, len, &used, &pi2, &why);
		ok(rc == PROXY_BAD, "proxy: v2 %s refused (rc %d)",
		    breaks[i].what, rc);
	}
	/* v2 UNSPEC (v1 UNKNOWN's twin) and UNIX: headers without a client. */
	memcpy(bad, v2, len);
	bad[13] = 0x00;
	rc = proxy_parse(bad, len, &used, &pi2, &why);
	ok(rc == PROXY_OK && pi2.family == AF_UNSPEC && used == len,
	    "proxy: v2 UNSPEC");
	memset(v2 + 16, 0, 216);
	memcpy(v2 + 16, "/run/x", 6);
	v2[13] = 0x31;
	v2[14] = 0;
	v2[15] = 216;
	rc = proxy_parse(v2, 16 + 216, &used, &pi2, &why);
	ok(rc == PROXY_OK && pi2.family == AF_UNIX &&
	    proxy_client_address(&pi2, client, sizeof(client)) == -1,
	    "proxy: v2 AF_UNIX parsed, no client address");
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

/* ---- state specs ---- */

static void
test_state_spec(void)
{
	static const struct {
		const char	*spec;
		int		 ok;
		const char	*host;	/* or the socket's path */
		int		 port, db, has_password;
		const char	*why;	/* a word of the error */
	} cases[] = {
		{ "redis://127.0.0.1", 1, "127.0.0.1", 6379, 0, 0, NULL },
		{ "redis://redis.example:6380/3", 1, "redis.example", 6380, 3, 0,
		    NULL },
		{ "redis://:s3:cr@t@10.0.0.5/2", 1, "10.0.0.5", 6379, 2, 1,
		    NULL },
		{ "redis://[2001:db8::5]:7000/1", 1, "2001:db8::5", 7000, 1, 0,
		    NULL },
		{ "redis://[::1]", 1, "::1", 6379, 0, 0, NULL },
		{ "redis://h/", 1, "h", 6379, 0, 0, NULL },
		{ "redis+unix:///run/redis/redis.sock", 1,
		    "/run/redis/redis.sock", 0, 0, 0, NULL },
		{ "redis+unix:///run/redis.sock?db=4", 1, "/run/redis.sock", 0,
		    4, 0, NULL },
		{ "redis:", 0, NULL, 0, 0, 0, "expected" },
		{ "redis://", 0, NULL, 0, 0, 0, "no host" },
		{ "redis://h:0", 0, NULL, 0, 0, 0, "PORT" },
		{ "redis://h:65536", 0, NULL, 0, 0, 0, "PORT" },
		{ "redis://h:", 0, NULL, 0, 0, 0, "PORT" },
		{ "redis://h:12x", 0, NULL, 0, 0, 0, "PORT" },
		{ "redis://h/db", 0, NULL, 0, 0, 0, "DB" },
		{ "redis://h/10000", 0, NULL, 0, 0, 0, "DB" },
		{ "redis://user:pw@h", 0, NULL, 0, 0, 0, "user name" },
		{ "redis://:@h", 0, NULL, 0, 0, 0, "empty" },
		{ "redis://h_x", 0, NULL, 0, 0, 0, "host name" },
		{ "redis://[::1", 0, NULL, 0, 0, 0, "']'" },
		{ "redis://[::1]x", 0, NULL, 0, 0, 0, "nothing else" },
		{ "redis://[zz]", 0, NULL, 0, 0, 0, "IPv6" },
		{ "redis+unix://run/redis.sock", 0, NULL, 0, 0, 0, "absolute" },
		{ "redis+unix:///run/", 0, NULL, 0, 0, 0, "directory" },
		{ "redis+unix:///run/r.sock?db=x", 0, NULL, 0, 0, 0, "0 to 9999" },
		{ "redis+unix:///run/r.sock?dbx=1", 0, NULL, 0, 0, 0, "0 to 9999" },
		{ "rediss://h", 0, NULL, 0, 0, 0, "expected sqlite:PATH, redis" },
		{ "sqlite:/var/lib/x.db", 1, NULL, 0, 0, 0, NULL },
		{ "none", 1, NULL, 0, 0, 0, NULL },
	};
	const struct state_backend	*be;
	struct redis_spec		 rs;
	const char			*why, *rest;
	char				 shown[STATE_SHOWN_MAX];
	size_t				 i;
	int				 rc, unixsock;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why = "";
		rc = state_spec_check(cases[i].spec, &be, &why);
		ok((rc == 0) == cases[i].ok && (cases[i].why == NULL ||
		    strstr(why, cases[i].why) != NULL), "state %s: %s",
		    cases[i].spec, rc == 0 ? "ok" : why);
		if (!cases[i].ok || cases[i].host == NULL)
			continue;
		unixsock = strncmp(cases[i].spec, "redis+unix:", 11) == 0;
		rest = strchr(cases[i].spec, ':') + 1;
		rc = state_redis_parse(rest, unixsock, &rs, &why);
		ok(rc == 0 && strcmp(unixsock ? rs.path : rs.host,
		    cases[i].host) == 0 && (unixsock ||
		    rs.port == cases[i].port) && rs.db == cases[i].db &&
		    rs.has_password == cases[i].has_password,
		    "state %s: host %s port %d db %d", cases[i].spec,
		    unixsock ? rs.path : rs.host, rs.port, rs.db);
	}
	state_redis_parse("//:s3:cr@t@10.0.0.5/2", 0, &rs, &why);
	ok(strcmp(rs.password, "s3:cr@t") == 0, "redis password up to the "
	    "last '@': %s", rs.password);
	ok(strcmp(state_shown("redis://:s3:cr@t@10.0.0.5/2", shown,
	    sizeof(shown)), "redis://:****@10.0.0.5/2") == 0,
	    "the password is not shown");
	ok(strcmp(state_shown("redis://default:s3cr3t@10.0.0.5", shown,
	    sizeof(shown)), "redis://****@10.0.0.5") == 0 &&
	    strcmp(state_shown("redis://:s3cr3t", shown, sizeof(shown)),
	    "redis://:****") == 0 && strcmp(state_shown("sqlite:/a:b@c",
	    shown, sizeof(shown)), "sqlite:/a:b@c") == 0,
	    "nor a user's, nor one with no host; sqlite's path as it is");
	ok(strcmp(state_shown("redis://10.0.0.5", shown, sizeof(shown)),
	    "redis://10.0.0.5") == 0, "nothing to hide");
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
	test_header();
	test_map_policy();
	test_policy_request();
	test_policy_reply();
	test_policy_actions();
	test_policy_conf();
	test_msgid();
	test_proc_title();
	test_proxy();
	test_state_spec();
	printf("1..%d\n", ntests);
	return nfailed != 0;
}
