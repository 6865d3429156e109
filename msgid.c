/*
 * msgid.c - finds a message's Message-ID: header while it is spooled, so
 * that the log's queued line can name it (msgid=), which joins smtpauthd's
 * log to the MTA's.  No second pass over the spool: the scanner sees the
 * octets as data.c hands them to the spool (LF line ends, dot-unstuffed)
 * and keeps only the field it looks for.
 *
 * Only the header section counts: it ends at the first empty line, and a
 * Message-ID: in the body (a forwarded message, a quoted one) is never
 * taken.  Folded fields are unfolded (RFC 5322 2.2.3: the line break goes,
 * the white space stays).  The first Message-ID: field wins.  Memory is
 * bounded: a field name longer than "Message-ID" cannot be it, and a value
 * longer than MSGID_MAX is cut.
 */
#include <ctype.h>
#include <string.h>

#include "smtpauthd.h"

static const char msgid_name[] = "message-id";

void
msgid_init(struct msgid_scan *m)
{
	memset(m, 0, sizeof(*m));
	m->state = MSGID_BOL;
}

/* The value collected so far becomes the answer, trimmed of blanks. */
static void
msgid_finish(struct msgid_scan *m)
{
	size_t start = 0, end = m->len;

	while (start < end && (m->value[start] == ' ' ||
	    m->value[start] == '\t'))
		start++;
	while (end > start && (m->value[end - 1] == ' ' ||
	    m->value[end - 1] == '\t'))
		end--;
	memmove(m->value, m->value + start, end - start);
	m->len = end - start;
	m->value[m->len] = '\0';
	m->capturing = 0;
	m->found = 1;
}

static void
msgid_keep(struct msgid_scan *m, char c)
{
	if (m->len < MSGID_MAX)
		m->value[m->len++] = c;
	else
		m->cut = 1;
}

static void
msgid_step(struct msgid_scan *m, char c)
{
	switch (m->state) {
	case MSGID_BOL:
		if (c == ' ' || c == '\t') {
			/* A folded line: the field goes on. */
			if (m->capturing)
				msgid_keep(m, c);
			m->state = MSGID_VALUE;
			return;
		}
		if (m->capturing)
			msgid_finish(m);
		if (c == '\n') {
			/* The empty line: the body follows. */
			m->state = MSGID_DONE;
			return;
		}
		m->name_len = 0;
		m->name_ok = 1;
		m->name_blank = 0;
		m->state = MSGID_NAME;
		/* FALLTHROUGH */
	case MSGID_NAME:
		if (c == '\n') {
			/* Not a field (no colon): nothing to take from it. */
			m->state = MSGID_BOL;
			return;
		}
		if (c == ':') {
			/* RFC 5322 4.5.3 (obsolete) allows blanks before it. */
			m->capturing = m->name_ok && !m->found &&
			    m->name_len == sizeof(msgid_name) - 1;
			m->state = MSGID_VALUE;
			return;
		}
		if (c == ' ' || c == '\t') {
			m->name_blank = 1;
			return;
		}
		if (!m->name_ok)
			return;
		if (m->name_blank || m->name_len >= sizeof(msgid_name) - 1 ||
		    tolower((unsigned char)c) != msgid_name[m->name_len])
			m->name_ok = 0;
		else
			m->name_len++;
		return;
	case MSGID_VALUE:
		if (c == '\n')
			m->state = MSGID_BOL;
		else if (m->capturing)
			msgid_keep(m, c);
		return;
	case MSGID_DONE:
		return;
	}
}

void
msgid_feed(struct msgid_scan *m, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len && m->state != MSGID_DONE; i++)
		msgid_step(m, buf[i]);
}

/*
 * The Message-ID found (without the field name, unfolded, trimmed), or
 * NULL.  A message that ends inside its header section still counts.
 */
const char *
msgid_value(struct msgid_scan *m)
{
	if (m->capturing)
		msgid_finish(m);
	return m->found && m->len > 0 ? m->value : NULL;
}
