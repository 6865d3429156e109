/*
 * data.c - the DATA state machine: finds the end of the message, undoes
 * dot-stuffing, turns CRLF into LF, and notes what makes a message
 * unacceptable (bare CR, bare LF, NUL, over-long lines, excess size).
 *
 * Only <CRLF>.<CRLF> ends a message (RFC 5321 4.1.1.4).  A bare CR or LF is
 * never a line end here: treating one as such is what SMTP smuggling
 * exploits.  Such a message is read to its real end and then refused, so
 * the client and the server never disagree about where it ended.  The
 * parser is byte-at-a-time and keeps no line buffer, so any chunking of
 * the input gives the same result, with bounded memory.
 */
#include <string.h>

#include "smtpauthd.h"

void
data_init(struct data_parser *dp, uint64_t max_size, data_sink sink, void *arg)
{
	memset(dp, 0, sizeof(*dp));
	dp->state = DATA_BOL;
	dp->max_size = max_size;
	dp->sink = sink;
	dp->sink_arg = arg;
}

/* Output for the spool; after a size overflow nothing more is kept. */
static void
emit(struct data_parser *dp, const char *buf, size_t len)
{
	if (dp->flags & DATA_TOO_BIG || dp->sink_failed || dp->sink == NULL)
		return;
	if (dp->sink(dp->sink_arg, buf, len) == -1)
		dp->sink_failed = 1;
}

static void
count(struct data_parser *dp, size_t n)
{
	dp->size += n;
	if (dp->size > dp->max_size)
		dp->flags |= DATA_TOO_BIG;
}

/* One octet of line content (not CR, not the LF of a CRLF). */
static void
text_octet(struct data_parser *dp, char c)
{
	if (c == '\n')
		dp->flags |= DATA_BARE_LF;
	else if (c == '\0')
		dp->flags |= DATA_NUL;
	if (++dp->line_len > SMTP_TEXT_LINE_MAX - 2)
		dp->flags |= DATA_LONG_LINE;
	dp->state = DATA_TEXT;
	count(dp, 1);
	emit(dp, &c, 1);
}

/* A CR that was not followed by LF. */
static void
bare_cr(struct data_parser *dp)
{
	dp->flags |= DATA_BARE_CR;
	text_octet(dp, '\r');
}

static void
step(struct data_parser *dp, char c)
{
	switch (dp->state) {
	case DATA_BOL:
		if (c == '.') {
			/* RFC 5321 4.5.3.1.6: the stuffed dot does not count. */
			dp->state = DATA_BOL_DOT;
			return;
		}
		/* FALLTHROUGH */
	case DATA_TEXT:
		if (c == '\r')
			dp->state = DATA_CR;
		else
			text_octet(dp, c);
		return;
	case DATA_BOL_DOT:
		/* The stuffed dot is dropped; what follows is content. */
		if (c == '\r')
			dp->state = DATA_DOT_CR;
		else
			text_octet(dp, c);
		return;
	case DATA_DOT_CR:
		if (c == '\n') {
			dp->state = DATA_END;
			return;
		}
		bare_cr(dp);
		step(dp, c);
		return;
	case DATA_CR:
		if (c == '\n') {
			count(dp, 2);
			emit(dp, "\n", 1);
			dp->line_len = 0;
			dp->state = DATA_BOL;
			return;
		}
		bare_cr(dp);
		step(dp, c);
		return;
	case DATA_END:
		return;
	}
}

/*
 * Feed received octets; returns how many were consumed, which is fewer
 * than len only when the end of data was reached (the rest belongs to the
 * next command).
 */
size_t
data_feed(struct data_parser *dp, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len && dp->state != DATA_END; i++)
		step(dp, buf[i]);
	return i;
}

int
data_done(const struct data_parser *dp)
{
	return dp->state == DATA_END;
}
