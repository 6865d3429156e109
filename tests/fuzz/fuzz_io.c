/*
 * fuzz_io.c - libFuzzer target for the command-line reader, io_getline()
 * in io.c, reading its input from a memfd as the session reads fd 0.
 *
 * Input: byte 0 picks the line limit and the caller's buffer size (the
 * session's own limits among them), the rest is the stream.  Every line
 * io_getline() returns is checked against a plain model of what it must
 * do: a line whose octets, LF included, fit the limit comes back without
 * its LF and one CR before it; a longer one is IO_TOOLONG and is consumed
 * to its LF; an unterminated tail is IO_EOF.  The lines read are written
 * back with io_write() and the output compared, which covers io_write()'s
 * buffering (lines larger than the output buffer included) and io_flush().
 * The verb/argument split after io_getline() lives in smtp.c's dispatch()
 * and is fuzzed through fuzz_session.
 */
#include <fcntl.h>

#include "fuzz.h"

static int in_fd, out_fd;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	in_fd = fuzz_memfd("fuzz-io-in");
	out_fd = fuzz_memfd("fuzz-io-out");
	return 0;
}

/* The limit the caller passes and its buffer size. */
static void
pick_limits(uint8_t sel, uint8_t arg, size_t *maxlen, size_t *bufsize)
{
	static const size_t limits[] = {
		SMTP_CMD_MAX, SMTP_AUTH_LINE_MAX, SMTP_TEXT_LINE_MAX,
		IO_INBUF_SIZE, IO_INBUF_SIZE + 100, 0 /* from arg */, 1, 2,
	};

	*maxlen = limits[sel & 7];
	if ((sel & 7) == 5)
		*maxlen = 1 + (size_t)arg;
	/* The session passes its buffer size less one: room for the NUL. */
	switch (sel >> 3 & 3) {
	case 0:
	case 1:
		*bufsize = *maxlen + 1;
		break;
	case 2:
		*bufsize = *maxlen;
		break;
	default:
		*bufsize = *maxlen / 2 + 1;
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct io	 io;
	const char		*in, *lf;
	char			*buf, *out, *expect;
	size_t			 inlen, maxlen, bufsize, effective, pos, len;
	size_t			 explen = 0, outlen, content;
	int			 rc, want, eof_seen = 0;

	if (size < 1)
		return 0;
	pick_limits(data[0], size > 1 ? data[1] : 0, &maxlen, &bufsize);
	in = (const char *)data + 1;
	inlen = size - 1;
	fuzz_memfd_set(in_fd, in, inlen);
	fuzz_memfd_set(out_fd, "", 0);
	io_init(&io, in_fd, out_fd, 1000);

	effective = maxlen < bufsize ? maxlen : bufsize;
	if (effective > IO_INBUF_SIZE)
		effective = IO_INBUF_SIZE;
	if ((buf = malloc(bufsize)) == NULL ||
	    (expect = malloc(inlen * 2 + 1)) == NULL)
		abort();

	pos = 0;
	for (;;) {
		/* The model. */
		lf = memchr(in + pos, '\n', inlen - pos);
		if (lf == NULL)
			want = IO_EOF;
		else {
			content = (size_t)(lf - (in + pos));
			want = content + 1 <= effective ? IO_OK : IO_TOOLONG;
		}
		/* The code. */
		len = (size_t)-1;
		rc = io_getline(&io, buf, bufsize, maxlen,
		    now_ms() + 60000, &len);
		FUZZ_CHECK(rc == want);
		if (rc == IO_EOF) {
			/* And it stays at the end. */
			if (eof_seen++ > 0)
				break;
			continue;
		}
		if (rc == IO_OK) {
			size_t l = content;

			if (l > 0 && in[pos + l - 1] == '\r')
				l--;
			FUZZ_CHECK(len == l);
			FUZZ_CHECK(len < bufsize);
			FUZZ_CHECK(buf[len] == '\0');
			FUZZ_CHECK(memcmp(buf, in + pos, len) == 0);
			memcpy(expect + explen, buf, len);
			memcpy(expect + explen + len, "\r\n", 2);
			explen += len + 2;
			FUZZ_CHECK(io_write(&io, buf, len) == 0);
			FUZZ_CHECK(io_write(&io, "\r\n", 2) == 0);
		}
		pos = (size_t)(lf - in) + 1;
		/* What is left unread in the buffer is the model's rest. */
		{
			size_t		 plen;
			const char	*peek = io_peek(&io, &plen);

			FUZZ_CHECK(io_pending(&io) == plen);
			FUZZ_CHECK(plen <= inlen - pos);
			FUZZ_CHECK(memcmp(peek, in + pos, plen) == 0);
		}
	}
	FUZZ_CHECK(io_flush(&io) == 0);
	out = fuzz_read_all(out_fd, &outlen);
	FUZZ_CHECK(outlen == explen && memcmp(out, expect, explen) == 0);
	free(out);
	free(expect);
	free(buf);
	return 0;
}
