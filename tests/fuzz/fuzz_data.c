/*
 * fuzz_data.c - libFuzzer target for the DATA state machine (data.c):
 * data_init() and data_feed(), end of data, dot-unstuffing, CRLF to LF,
 * bare CR / bare LF / NUL / long-line flags and size accounting.
 *
 * Input: byte 0 holds the mode and the size limit, bytes 1-2 a small limit,
 * the rest is the body.  Two modes:
 *  - raw: the body is what the client sends after 354.  It is fed whole,
 *    then in chunkings derived from the input (one octet at a time, and one
 *    of: random small pieces, random large pieces, a cut after every CR or
 *    before every LF), and with a sink that fails part way, and every run
 *    must give the same output, end position, flags and size.  A plain
 *    model (the first
 *    <CRLF>.<CRLF>, lines split at CRLF, one leading dot dropped) gives the
 *    end position, and, for a message that ended, the output, the size and
 *    the flags.
 *  - round trip: the body is a message; it is dot-stuffed and sent with
 *    CRLF line ends and the final dot, as a client does, and what comes out
 *    must be the message (LF line ends), ending exactly at the final dot.
 */
#include "fuzz.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	return 0;
}

struct buf {
	char	*p;
	size_t	 len, cap;
	size_t	 fail_after;	/* the sink fails once this much is kept */
};

static void
buf_add(struct buf *b, const char *p, size_t n)
{
	char *np;

	if (n == 0)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		if ((np = realloc(b->p, b->cap)) == NULL)
			abort();
		b->p = np;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static int
sink(void *arg, const char *p, size_t n)
{
	struct buf *b = arg;

	FUZZ_CHECK(n > 0);
	if (b->len + n > b->fail_after)
		return -1;
	buf_add(b, p, n);
	return 0;
}

struct run {
	struct buf		 out;
	struct data_parser	 dp;
	size_t			 end;		/* octets consumed */
};

enum chunking { WHOLE, BYTES, SMALL, LARGE, AT_CR, N_CHUNKINGS };

/*
 * Besides the whole input, each input is fed one octet at a time and in one
 * of the other chunkings, picked by its hash: all of them every time would
 * halve the executions for little more.
 */
static int
chunking_chosen(int how, uint64_t seed)
{
	return how == BYTES || how == SMALL + (int)(seed % 3);
}

/* Feed body in pieces; check the consumed counts as it goes. */
static void
feed(struct run *r, const char *body, size_t len, uint64_t max_size,
    enum chunking how, uint64_t seed, size_t fail_after, int with_sink)
{
	size_t		 off = 0, n, used;
	const char	*cr;

	memset(r, 0, sizeof(*r));
	r->out.fail_after = fail_after;
	data_init(&r->dp, max_size, with_sink ? sink : NULL, &r->out);
	while (off < len) {
		switch (how) {
		case WHOLE:
			n = len - off;
			break;
		case BYTES:
			n = 1;
			break;
		case SMALL:
			n = 1 + fuzz_rand(&seed) % 8;
			break;
		case LARGE:
			n = 1 + fuzz_rand(&seed) % 700;
			break;
		default:
			/* Just past the next CR, or just before the next LF. */
			if (fuzz_rand(&seed) & 1) {
				cr = memchr(body + off, '\r', len - off);
				n = cr != NULL ? (size_t)(cr - (body + off)) + 1 :
				    len - off;
			} else {
				cr = memchr(body + off, '\n', len - off);
				n = cr != NULL ? (size_t)(cr - (body + off)) :
				    len - off;
			}
			if (n == 0)
				n = 1;
			break;
		}
		if (n > len - off)
			n = len - off;
		used = data_feed(&r->dp, body + off, n);
		FUZZ_CHECK(used <= n);
		off += used;
		if (used < n) {
			FUZZ_CHECK(data_done(&r->dp));
			break;
		}
	}
	r->end = off;
	/* Done is done: nothing more is taken. */
	if (data_done(&r->dp) && off < len)
		FUZZ_CHECK(data_feed(&r->dp, body + off, len - off) == 0);
	FUZZ_CHECK(data_done(&r->dp) || r->end == len);
}

static void
same_run(const struct run *a, const struct run *b, int same_output)
{
	FUZZ_CHECK(a->end == b->end);
	FUZZ_CHECK(data_done(&a->dp) == data_done(&b->dp));
	FUZZ_CHECK(a->dp.flags == b->dp.flags);
	FUZZ_CHECK(a->dp.size == b->dp.size);
	FUZZ_CHECK(a->dp.state == b->dp.state);
	FUZZ_CHECK(a->dp.line_len == b->dp.line_len);
	if (same_output)
		FUZZ_CHECK(a->out.len == b->out.len &&
		    (a->out.len == 0 || memcmp(a->out.p, b->out.p,
		    a->out.len) == 0));
}

/* The end of data by a plain search: the first "." CRLF at a line start. */
static size_t
model_end(const char *body, size_t len)
{
	size_t i;

	for (i = 0; i + 3 <= len; i++)
		if ((i == 0 || (i >= 2 && body[i - 2] == '\r' &&
		    body[i - 1] == '\n')) &&
		    memcmp(body + i, ".\r\n", 3) == 0)
			return i + 3;
	return 0;
}

/*
 * The model of a message that ended at end: split what precedes the final
 * "." CRLF at each CRLF, drop one leading dot per line.
 */
static void
model_message(const char *body, size_t end, uint64_t max_size,
    struct buf *out, unsigned *flags, uint64_t *size)
{
	const char	*p = body, *stop = body + end - 3, *eol;
	size_t		 n, i;

	*flags = 0;
	*size = 0;
	while (p < stop) {
		/* Every line before the final dot ends in CRLF. */
		for (eol = p; !(eol[0] == '\r' && eol[1] == '\n'); eol++)
			;
		n = (size_t)(eol - p);
		if (n > 0 && p[0] == '.') {
			p++;
			n--;
		}
		for (i = 0; i < n; i++) {
			if (p[i] == '\r')
				*flags |= DATA_BARE_CR;
			else if (p[i] == '\n')
				*flags |= DATA_BARE_LF;
			else if (p[i] == '\0')
				*flags |= DATA_NUL;
		}
		if (n > SMTP_TEXT_LINE_MAX - 2)
			*flags |= DATA_LONG_LINE;
		*size += n + 2;
		buf_add(out, p, n);
		buf_add(out, "\n", 1);
		p = eol + 2;
	}
	if (*size > max_size)
		*flags |= DATA_TOO_BIG;
}

static void
check_raw(const char *body, size_t len, uint64_t max_size, uint64_t seed)
{
	struct run	 whole, r;
	struct buf	 model = { NULL, 0, 0, 0 };
	unsigned	 flags;
	uint64_t	 size;
	size_t		 end;
	int		 how;

	feed(&whole, body, len, max_size, WHOLE, seed, SIZE_MAX, 1);
	end = model_end(body, len);
	FUZZ_CHECK(end == 0 ? !data_done(&whole.dp) && whole.end == len :
	    data_done(&whole.dp) && whole.end == end);
	if (!(whole.dp.flags & DATA_TOO_BIG))
		FUZZ_CHECK(whole.dp.size <= max_size);
	else
		FUZZ_CHECK(whole.dp.size > max_size);
	if (end != 0) {
		model_message(body, end, max_size, &model, &flags, &size);
		FUZZ_CHECK(whole.dp.flags == flags);
		FUZZ_CHECK(whole.dp.size == size);
		if (!(flags & DATA_TOO_BIG))
			FUZZ_CHECK(whole.out.len == model.len &&
			    (model.len == 0 ||
			    memcmp(whole.out.p, model.p, model.len) == 0));
	} else {
		/*
		 * Not ended: the complete lines so far are the model's, and
		 * what was given out starts with them.
		 */
		size_t last = 0, i;

		for (i = 0; i + 1 < len; i++)
			if (body[i] == '\r' && body[i + 1] == '\n')
				last = i + 2;
		model_message(body, last + 3, UINT64_MAX, &model, &flags,
		    &size);
		FUZZ_CHECK((whole.dp.flags & flags) == flags);
		FUZZ_CHECK(whole.dp.size >= size);
		if (!(whole.dp.flags & DATA_TOO_BIG))
			FUZZ_CHECK(whole.out.len >= model.len &&
			    (model.len == 0 ||
			    memcmp(whole.out.p, model.p, model.len) == 0));
	}
	free(model.p);

	for (how = BYTES; how < N_CHUNKINGS; how++) {
		if (!chunking_chosen(how, seed))
			continue;
		feed(&r, body, len, max_size, (enum chunking)how, seed,
		    SIZE_MAX, 1);
		same_run(&whole, &r, 1);
		free(r.out.p);
	}
	/* With a sink that fails part way: the same parse. */
	feed(&r, body, len, max_size, LARGE, seed, whole.out.len / 2, 1);
	same_run(&whole, &r, 0);
	FUZZ_CHECK(r.out.len <= whole.out.len &&
	    (r.out.len == 0 || memcmp(r.out.p, whole.out.p, r.out.len) == 0));
	if (whole.out.len > 0 && !(whole.dp.flags & DATA_TOO_BIG))
		FUZZ_CHECK(r.dp.sink_failed);
	free(r.out.p);
	free(whole.out.p);
}

/* The client's side: dot-stuff msg, CRLF line ends, the final dot. */
static void
check_round_trip(const char *msg, size_t len, uint64_t max_size,
    uint64_t seed)
{
	struct buf	 wire = { NULL, 0, 0, 0 }, want = { NULL, 0, 0, 0 };
	struct run	 r;
	const char	*p = msg, *end = msg + len, *lf;
	unsigned	 flags = 0;
	uint64_t	 size = 0;
	size_t		 n, i;
	int		 how;

	while (p < end) {
		lf = memchr(p, '\n', (size_t)(end - p));
		n = lf != NULL ? (size_t)(lf - p) : (size_t)(end - p);
		if (n > 0 && p[0] == '.')
			buf_add(&wire, ".", 1);
		buf_add(&wire, p, n);
		buf_add(&wire, "\r\n", 2);
		buf_add(&want, p, n);
		buf_add(&want, "\n", 1);
		for (i = 0; i < n; i++)
			if (p[i] == '\r')
				flags |= DATA_BARE_CR;
			else if (p[i] == '\0')
				flags |= DATA_NUL;
		if (n > SMTP_TEXT_LINE_MAX - 2)
			flags |= DATA_LONG_LINE;
		size += n + 2;
		p += n + 1;
	}
	if (size > max_size)
		flags |= DATA_TOO_BIG;
	buf_add(&wire, ".\r\n", 3);
	/* And what the client pipelines after it is not taken. */
	buf_add(&wire, "QUIT\r\n", 6);

	for (how = WHOLE; how < N_CHUNKINGS; how++) {
		if (how != WHOLE && !chunking_chosen(how, seed))
			continue;
		feed(&r, wire.p, wire.len, max_size, (enum chunking)how, seed,
		    SIZE_MAX, 1);
		FUZZ_CHECK(data_done(&r.dp));
		FUZZ_CHECK(r.end == wire.len - 6);
		FUZZ_CHECK(r.dp.flags == flags);
		FUZZ_CHECK(r.dp.size == size);
		if (!(flags & DATA_TOO_BIG))
			FUZZ_CHECK(r.out.len == want.len &&
			    (want.len == 0 ||
			    memcmp(r.out.p, want.p, want.len) == 0));
		free(r.out.p);
	}
	free(wire.p);
	free(want.p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t	 max_size, seed;
	const char	*body;
	size_t		 len;

	if (size < 3)
		return 0;
	switch (data[0] >> 1 & 3) {
	case 0:
		max_size = UINT64_C(36700160);	/* the default */
		break;
	case 1:
		max_size = (uint64_t)data[1] | (uint64_t)data[2] << 8;
		break;
	case 2:
		max_size = 0;
		break;
	default:
		max_size = UINT64_MAX;
		break;
	}
	body = (const char *)data + 3;
	len = size - 3;
	seed = fuzz_seed(data, size);
	if (data[0] & 1)
		check_round_trip(body, len, max_size, seed);
	else
		check_raw(body, len, max_size, seed);
	return 0;
}
