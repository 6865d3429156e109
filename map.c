/*
 * map.c - reading the map files smtpauthd shares with Postfix: the source
 * form of a "hash:" or "texthash:" table (postmap(1)), one "key value"
 * entry per logical line.
 *
 *   # a comment: first non-blank character '#'
 *   alice@example.org   alice, alice.smith
 *   @example.net        bob
 *       carol            <- begins with a blank: continues the line above
 *
 * Blank lines and comments may sit between a line and its continuations,
 * as in Postfix.  The key ends at the first blank; the value is the rest,
 * trimmed, and its items are separated by commas and/or blanks
 * (map_value_next).  What keys and values mean is the caller's: this file
 * only opens, bounds and splits, and calls back once per entry.  The
 * sender map (policy.c) uses it, and so can any later map (limits).
 *
 * The file is read whole on every use: maps are small, and a change then
 * takes effect with the next look-up, without a reload.  Since a map
 * grants rights (who may send as whom), it must be a regular file, not a
 * symbolic link, owned by root or by the user smtpauthd runs as, and
 * writable by no one else; others may read it (Postfix's maps are 0644).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "policy.h"

/* One problem: to -t's report, counted, and the first kept for the caller. */
static void
map_vproblem(struct map_file *mf, int warning, size_t lineno, const char *fmt,
    va_list ap) __attribute__((format(printf, 4, 0)));

static void
map_vproblem(struct map_file *mf, int warning, size_t lineno, const char *fmt,
    va_list ap)
{
	char msg[MAP_WHY_MAX], where[PATH_MAX + 64];

	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): the callers va_start it */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (lineno > 0)
		snprintf(where, sizeof(where), "%s %s:%zu", mf->what, mf->path,
		    lineno);
	else
		snprintf(where, sizeof(where), "%s %s", mf->what, mf->path);
	if (mf->report != NULL)
		fprintf(mf->report, "smtpauthd: %s%s: %s\n",
		    warning ? "warning: " : "", where, msg);
	if (warning)
		return;
	/* Cut if need be: the file and line come first and say enough. */
	if (mf->problems++ == 0 && snprintf(mf->why, sizeof(mf->why),
	    "%s: %s", where, msg) >= (int)sizeof(mf->why))
		mf->why[sizeof(mf->why) - 1] = '\0';
}

void
map_error(struct map_file *mf, size_t lineno, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	map_vproblem(mf, 0, lineno, fmt, ap);
	va_end(ap);
}

void
map_warning(struct map_file *mf, size_t lineno, const char *fmt, ...)
{
	va_list ap;

	/* Only -t shows warnings: at look-up time they change nothing. */
	if (mf->report == NULL)
		return;
	va_start(ap, fmt);
	map_vproblem(mf, 1, lineno, fmt, ap);
	va_end(ap);
}

/*
 * The whole file, NUL-terminated, in *bufp (the caller frees it), if it
 * is one a map may be: see the top of this file.
 */
static int
map_load(struct map_file *mf, char **bufp, size_t *lenp)
{
	struct stat	 st;
	char		*buf;
	size_t		 len = 0;
	ssize_t		 n;
	int		 fd;

	*bufp = NULL;
	/* O_NONBLOCK: a FIFO put there must not hang the open. */
	if ((fd = open(mf->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
	    O_NONBLOCK)) == -1) {
		map_error(mf, 0, "%s", errno == ELOOP ? "a symbolic link "
		    "(name the file itself)" : strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		map_error(mf, 0, "%s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		map_error(mf, 0, "not a regular file");
		goto fail;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		map_error(mf, 0, "owned by uid %lu, neither root nor the user "
		    "smtpauthd runs as: whoever owns it decides who may send "
		    "as whom", (unsigned long)st.st_uid);
		goto fail;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		map_error(mf, 0, "group or others may write to it (mode %04o; "
		    "chmod go-w it)", (unsigned)(st.st_mode & 07777));
		goto fail;
	}
	if (st.st_size > MAP_FILE_MAX) {
		map_error(mf, 0, "larger than %d MiB", MAP_FILE_MAX >> 20);
		goto fail;
	}
	/* One octet more than allowed: a file that grew is caught too. */
	if ((buf = malloc(MAP_FILE_MAX + 2)) == NULL) {
		map_error(mf, 0, "%s", strerror(errno));
		goto fail;
	}
	while (len <= MAP_FILE_MAX) {
		n = read(fd, buf + len, MAP_FILE_MAX + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			map_error(mf, 0, "%s", strerror(errno));
			free(buf);
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	(void)close(fd);	/* read only: nothing to lose */
	if (len > MAP_FILE_MAX) {
		map_error(mf, 0, "larger than %d MiB", MAP_FILE_MAX >> 20);
		free(buf);
		return -1;
	}
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	return 0;
fail:
	(void)close(fd);
	return -1;
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* One logical line: "key value", handed to fn.  -1: a problem. */
static int
map_entry(struct map_file *mf, size_t lineno, char *entry, map_entry_fn fn,
    void *arg)
{
	char *value, *end;

	value = entry + strcspn(entry, " \t");
	if (*value != '\0')
		*value++ = '\0';
	while (is_blank(*value))
		value++;
	end = value + strlen(value);
	while (end > value && is_blank(end[-1]))
		*--end = '\0';
	if (*value == '\0') {
		map_error(mf, lineno, "\"%.64s\" has no value (a line is KEY "
		    "VALUE)", entry);
		return -1;
	}
	return fn(mf, lineno, entry, value, arg) == -1 ? -1 : 0;
}

/* The entry gathered so far goes to fn (unless a bad line spoilt it). */
struct map_pending {
	char	*text;		/* MAP_ENTRY_MAX + 1 octets */
	size_t	 len;
	size_t	 lineno;	/* of its first line */
	int	 bad;
};

static int
map_flush(struct map_file *mf, struct map_pending *e, map_entry_fn fn,
    void *arg)
{
	int rc = 0;

	if (e->len > 0 && !e->bad)
		rc = map_entry(mf, e->lineno, e->text, fn, arg);
	e->len = 0;
	e->text[0] = '\0';
	e->bad = 0;
	return rc;
}

/*
 * Reads the whole map and calls fn(mf, lineno, key, value, arg) for each
 * entry, in file order; fn returns 0, or -1 for a problem it reported
 * with map_error.  Without a report, the first problem stops the reading
 * (mf->why says what); with one (-t), every line is checked and every
 * problem printed.  Returns 0 for a good file, -1 when the file is
 * unusable or has a problem anywhere: a map is used whole or not at all,
 * so that whether a look-up works does not depend on where the broken
 * line sits.
 */
int
map_read(struct map_file *mf, map_entry_fn fn, void *arg)
{
	struct map_pending	 e;
	char			*buf, *line, *next, *text;
	size_t			 len, linelen, lineno = 0;

	mf->problems = 0;
	mf->why[0] = '\0';
	if (map_load(mf, &buf, &len) == -1)
		return -1;
	memset(&e, 0, sizeof(e));
	if ((e.text = malloc(MAP_ENTRY_MAX + 1)) == NULL) {
		map_error(mf, 0, "%s", strerror(errno));
		free(buf);
		return -1;
	}
	e.text[0] = '\0';
	for (line = buf; line < buf + len; line = next) {
		if (mf->problems > 0 && mf->report == NULL)
			break;
		lineno++;
		if ((next = memchr(line, '\n', (size_t)(buf + len - line))) ==
		    NULL)
			next = buf + len;
		linelen = (size_t)(next - line);
		if (next < buf + len)
			*next++ = '\0';
		if (linelen > 0 && line[linelen - 1] == '\r')
			line[--linelen] = '\0';
		if (strlen(line) != linelen || linelen > MAP_LINE_MAX) {
			/* It spoils the entry it begins or continues. */
			if (linelen > 0 && !is_blank(line[0]) &&
			    line[0] != '#') {
				(void)map_flush(mf, &e, fn, arg);
				e.lineno = lineno;
			}
			if (strlen(line) != linelen)
				map_error(mf, lineno, "NUL octet");
			else
				map_error(mf, lineno, "line longer than %d "
				    "octets", MAP_LINE_MAX);
			e.bad = 1;
			continue;
		}
		text = line + strspn(line, " \t");
		if (*text == '\0' || *text == '#')
			continue;	/* ends no entry, as in postmap */
		if (text == line) {
			(void)map_flush(mf, &e, fn, arg);
			e.lineno = lineno;
		} else if (e.len == 0 && !e.bad) {
			map_error(mf, lineno, "begins with a blank but "
			    "continues nothing (a key begins its line)");
			e.bad = 1;
		}
		if (e.bad)
			continue;
		if (e.len + 1 + strlen(text) > MAP_ENTRY_MAX) {
			map_error(mf, e.lineno, "entry longer than %d octets "
			    "with its continuation lines", MAP_ENTRY_MAX);
			e.bad = 1;
			continue;
		}
		if (e.len > 0)
			e.text[e.len++] = ' ';
		memcpy(e.text + e.len, text, strlen(text) + 1);
		e.len += strlen(text);
	}
	if (mf->problems == 0 || mf->report != NULL)
		(void)map_flush(mf, &e, fn, arg);
	free(e.text);
	free(buf);
	return mf->problems > 0 ? -1 : 0;
}

/*
 * The next item of a value (items are separated by commas and/or
 * blanks), NUL-terminated in place; NULL after the last.
 */
char *
map_value_next(char **cursor)
{
	char *p = *cursor, *item;

	p += strspn(p, ", \t");
	if (*p == '\0') {
		*cursor = p;
		return NULL;
	}
	item = p;
	p += strcspn(p, ", \t");
	if (*p != '\0')
		*p++ = '\0';
	*cursor = p;
	return item;
}
