/*
 * state_sqlite.c - the state store in one SQLite database on this host
 * (`state sqlite:PATH`), for state.c.
 *
 * Every connection's monitor opens the database for a moment, so it is
 * in WAL mode (readers never wait for a writer) with synchronous=NORMAL
 * (a power cut may lose the last few counts, never the file), and each
 * change is one IMMEDIATE transaction, so that concurrent connections
 * serialise on the write lock instead of losing updates.  A lock held
 * longer than BUSY_MS is a store too slow to wait for: STATE_RETRY, and
 * the caller goes on without it.
 *
 * One table: marks(key, member, expires, marked).  Expired members of a
 * key go when that key is next changed; all expired ones, and then the
 * least recently marked beyond STATE_ROWS_MAX, every TRIM_EVERY
 * insertions.  Least recently marked, not soonest to expire: a flood of
 * new names must not push out an address's fresh failures (10 minutes)
 * before a user's old ones (a day).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "smtpauthd.h"
#include "state.h"

#define BUSY_MS		1000
#define TRIM_EVERY	256

/*
 * marked: when a member was last added or renewed, by which the oldest go
 * first past the bound; expires: when it is forgotten (STATE_FOREVER:
 * never, and never pushed out by the bound either: only an
 * administrator's -S makes such members); weight: how much the member
 * counts (a message's recipients are one member).  Another layout
 * (user_version) is dropped and made anew: it holds only counts that
 * expire anyway.
 */
#define SCHEMA_VERSION	3
static const char schema[] =
    "DROP TABLE IF EXISTS marks;"
    "CREATE TABLE marks ("
    " key TEXT NOT NULL, member TEXT NOT NULL, expires INTEGER NOT NULL,"
    " marked INTEGER NOT NULL, weight INTEGER NOT NULL DEFAULT 1,"
    " UNIQUE (key, member));"
    "CREATE INDEX marks_expires ON marks (expires);"
    "CREATE INDEX marks_marked ON marks (marked);"
    "PRAGMA user_version = 3;";

static int
sqlite_check(const char *path, const char **why)
{
	if (path[0] != '/' || strlen(path) > PATH_MAX - 16) {
		*why = "sqlite:PATH needs an absolute path";
		return -1;
	}
	if (path[strlen(path) - 1] == '/') {
		*why = "sqlite:PATH names a directory";
		return -1;
	}
	return 0;
}

/*
 * SQLite's own busy handler sleeps longer and longer (up to 100 ms at a
 * time), and a connection that sleeps long loses the lock to those that
 * do not: with eight writers at once one of them waited past a second.
 * Short sleeps with a little jitter share the lock fairly enough.
 */
static int
busy_wait(void *arg, int attempts)
{
	static int64_t	 deadline;
	struct timespec	 ts;

	(void)arg;
	if (attempts == 0)
		deadline = now_ms() + BUSY_MS;
	if (now_ms() >= deadline)
		return 0;
	/* The clock's low digits differ between processes; random() not. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		ts.tv_nsec = 0;
	ts.tv_nsec = 200000 + ts.tv_nsec % 800000;
	ts.tv_sec = 0;
	(void)nanosleep(&ts, NULL);
	return 1;
}

static sqlite3 *
db(struct state *st)
{
	return st->handle;
}

static int
failed(struct state *st, const char *what)
{
	snprintf(st->error, sizeof(st->error), "%s: %s", what,
	    sqlite3_errmsg(db(st)));
	return STATE_RETRY;
}

/* The directory is made at first use, root's alone (systemd's
 * StateDirectory= makes it so too). */
static int
make_dir(const char *path, char *err, size_t errsize)
{
	struct stat	 sb;
	char		 copy[PATH_MAX], *dir;

	snprintf(copy, sizeof(copy), "%s", path);
	dir = dirname(copy);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errsize, "%s: %s", dir, strerror(errno));
		return -1;
	}
	/*
	 * SQLite makes PATH-wal and PATH-shm there as it needs them: in a
	 * directory someone else may write, they could be planted links.
	 */
	if (stat(dir, &sb) == -1 || !S_ISDIR(sb.st_mode) ||
	    sb.st_uid != geteuid() || (sb.st_mode & (S_IWGRP | S_IWOTH))) {
		snprintf(err, errsize, "%s: must be a directory of ours that "
		    "no one else may write", dir);
		return -1;
	}
	return 0;
}

/* The file is made before SQLite opens it, so it is never world-readable. */
static int
make_file(const char *path, char *err, size_t errsize)
{
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

static int
exec_sql(struct state *st, const char *sql)
{
	if (sqlite3_exec(db(st), sql, NULL, NULL, NULL) != SQLITE_OK)
		return failed(st, "sqlite");
	return STATE_OK;
}

static int	run(struct state *, const char *, const char *, const char *,
		    int64_t, int64_t, int64_t *);
static int	run_ints(struct state *, const char *, const char *,
		    const char *, const int64_t *, size_t, int64_t *);

/*
 * A store a newer smtpauthd made (another host, or an upgrade rolled
 * back) is left alone: dropping it would lift its suspensions.
 */
static int
newer(struct state *st, int version)
{
	snprintf(st->error, sizeof(st->error), "its layout (version %d) is "
	    "newer than this smtpauthd's (%d): left as it is", version,
	    SCHEMA_VERSION);
	return STATE_RETRY;
}

static int
setup(struct state *st)
{
	sqlite3_stmt	*stmt;
	int64_t		 current = -1;
	int		 version = -1;

	if (sqlite3_prepare_v2(db(st), "PRAGMA user_version", -1, &stmt,
	    NULL) != SQLITE_OK)
		return failed(st, "sqlite");
	if (sqlite3_step(stmt) == SQLITE_ROW)
		version = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	if (version == -1)
		return failed(st, "sqlite");
	if (version == SCHEMA_VERSION)
		return STATE_OK;
	if (version > SCHEMA_VERSION)
		return newer(st, version);
	if (exec_sql(st, "PRAGMA journal_mode = WAL") != STATE_OK ||
	    exec_sql(st, "BEGIN IMMEDIATE") != STATE_OK)
		return STATE_RETRY;
	/* Another connection may have made it while this one waited. */
	if (run(st, "PRAGMA user_version", NULL, NULL, 0, 0, &current) !=
	    STATE_OK || current > SCHEMA_VERSION ||
	    (current != SCHEMA_VERSION && exec_sql(st, schema) != STATE_OK)) {
		(void)sqlite3_exec(db(st), "ROLLBACK", NULL, NULL, NULL);
		return current > SCHEMA_VERSION ? newer(st, (int)current) :
		    STATE_RETRY;
	}
	return exec_sql(st, "COMMIT");
}

static int
sqlite_open(struct state *st, const char *path, char *err, size_t errsize)
{
	sqlite3	*handle = NULL;
	int	 rc;

	if (make_dir(path, err, errsize) == -1 ||
	    make_file(path, err, errsize) == -1)
		return STATE_RETRY;
	rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_NOFOLLOW, NULL);
	st->handle = handle;
	if (rc != SQLITE_OK) {
		snprintf(err, errsize, "%s: %s", path, handle != NULL ?
		    sqlite3_errmsg(handle) : sqlite3_errstr(rc));
		sqlite3_close(handle);
		return STATE_RETRY;
	}
	sqlite3_busy_handler(handle, busy_wait, NULL);
	if (exec_sql(st, "PRAGMA synchronous = NORMAL") != STATE_OK ||
	    setup(st) != STATE_OK) {
		snprintf(err, errsize, "%s: %s", path, st->error);
		sqlite3_close(handle);
		return STATE_RETRY;
	}
	if ((rc = state_load_secret(st, path, err, errsize)) != STATE_OK) {
		sqlite3_close(handle);
		return rc;
	}
	return STATE_OK;
}

static void
sqlite_close(struct state *st)
{
	sqlite3_close(db(st));
	st->handle = NULL;
}

/*
 * Runs sql with the text and integer arguments given (?1.. in order:
 * texts first), stepping through its rows; the first column of the last
 * row goes to *result when it is asked for.
 */
static int
run_ints(struct state *st, const char *sql, const char *t1, const char *t2,
    const int64_t *ints, size_t nints, int64_t *result)
{
	sqlite3_stmt	*stmt;
	size_t		 i;
	int		 rc, n = 1;

	if (sqlite3_prepare_v2(db(st), sql, -1, &stmt, NULL) != SQLITE_OK)
		return failed(st, "sqlite");
	if (t1 != NULL)
		sqlite3_bind_text(stmt, n++, t1, -1, SQLITE_STATIC);
	if (t2 != NULL)
		sqlite3_bind_text(stmt, n++, t2, -1, SQLITE_STATIC);
	for (i = 0; i < nints && sqlite3_bind_parameter_count(stmt) >= n; i++)
		sqlite3_bind_int64(stmt, n++, ints[i]);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		if (result != NULL)
			*result = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	if (rc != SQLITE_DONE)
		return failed(st, "sqlite");
	return STATE_OK;
}

static int
run(struct state *st, const char *sql, const char *t1, const char *t2,
    int64_t i1, int64_t i2, int64_t *result)
{
	const int64_t ints[2] = { i1, i2 };

	return run_ints(st, sql, t1, t2, ints, 2, result);
}

static int
rollback(struct state *st)
{
	(void)sqlite3_exec(db(st), "ROLLBACK", NULL, NULL, NULL);
	return STATE_RETRY;
}

/* Expired members, then the least recently marked beyond the bound. */
static int
trim(struct state *st, int64_t now)
{
	int64_t rows = 0;

	if (run(st, "DELETE FROM marks WHERE expires <= ?1", NULL, NULL, now,
	    0, NULL) != STATE_OK ||
	    run(st, "SELECT count(*) FROM marks", NULL, NULL, 0, 0, &rows) !=
	    STATE_OK)
		return STATE_RETRY;
	if (rows <= STATE_ROWS_MAX)
		return STATE_OK;
	return run(st, "DELETE FROM marks WHERE rowid IN (SELECT rowid FROM "
	    "marks WHERE expires < ?2 ORDER BY marked LIMIT ?1)", NULL, NULL,
	    rows - STATE_ROWS_MAX, STATE_FOREVER, NULL);
}

/*
 * A new member is inserted (and every TRIM_EVERY-th insertion trims the
 * table: only insertions grow it); a known one is renewed.
 */
static int
sqlite_mark(struct state *st, const char *key, const char *member,
    int64_t now, uint64_t ttl, uint64_t keep, uint64_t *count, int *added)
{
	int64_t n = 0;

	if (ttl > INT32_MAX)
		ttl = INT32_MAX;
	if (keep > INT32_MAX)
		keep = INT32_MAX;
	if (exec_sql(st, "BEGIN IMMEDIATE") != STATE_OK)
		return STATE_RETRY;
	if (run(st, "DELETE FROM marks WHERE key = ?1 AND expires <= ?2",
	    key, NULL, now, 0, NULL) != STATE_OK ||
	    run(st, "INSERT INTO marks (key, member, expires, marked) VALUES "
	    "(?1, ?2, ?3, ?4) ON CONFLICT (key, member) DO NOTHING", key,
	    member, now + (int64_t)ttl, now, NULL) != STATE_OK)
		return rollback(st);
	*added = sqlite3_changes(db(st)) > 0;
	if (*added) {
		if (sqlite3_last_insert_rowid(db(st)) % TRIM_EVERY == 0 &&
		    trim(st, now) != STATE_OK)
			return rollback(st);
	} else if (run(st, "UPDATE marks SET expires = ?3, marked = ?4 WHERE "
	    "key = ?1 AND member = ?2", key, member, now + (int64_t)ttl, now,
	    NULL) != STATE_OK)
		return rollback(st);
	if (run(st, "DELETE FROM marks WHERE key = ?1 AND rowid NOT IN "
	    "(SELECT rowid FROM marks WHERE key = ?1 ORDER BY marked DESC, "
	    "rowid DESC LIMIT ?2)", key, NULL, (int64_t)keep, 0, NULL) !=
	    STATE_OK ||
	    run(st, "SELECT count(*) FROM marks WHERE key = ?1", key, NULL, 0,
	    0, &n) != STATE_OK)
		return rollback(st);
	if (exec_sql(st, "COMMIT") != STATE_OK)
		return rollback(st);
	*count = (uint64_t)n;
	return STATE_OK;
}

/*
 * Member with its weight, until now + ttl (STATE_FOREVER when ttl is 0),
 * whether it was there or not; one transaction, trimming as mark does.
 */
static int
sqlite_add(struct state *st, const char *key, const char *member,
    int64_t now, uint64_t ttl, uint64_t weight)
{
	int64_t	 ints[3];
	int	 own;

	if (ttl > INT32_MAX)
		ttl = INT32_MAX;
	if (weight > INT32_MAX)
		weight = INT32_MAX;
	ints[0] = ttl == 0 ? STATE_FOREVER : now + (int64_t)ttl;
	ints[1] = now;
	ints[2] = (int64_t)weight;
	/* Within state_begin's transaction, state_end commits. */
	own = sqlite3_get_autocommit(db(st)) != 0;
	if (own && exec_sql(st, "BEGIN IMMEDIATE") != STATE_OK)
		return STATE_RETRY;
	if (run(st, "DELETE FROM marks WHERE key = ?1 AND expires <= ?2",
	    key, NULL, now, 0, NULL) != STATE_OK ||
	    run_ints(st, "INSERT INTO marks (key, member, expires, marked, "
	    "weight) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key, member) DO "
	    "UPDATE SET expires = ?3, marked = ?4, weight = ?5", key, member,
	    ints, 3, NULL) != STATE_OK)
		return own ? rollback(st) : STATE_RETRY;
	if (sqlite3_last_insert_rowid(db(st)) % TRIM_EVERY == 0 &&
	    trim(st, now) != STATE_OK)
		return own ? rollback(st) : STATE_RETRY;
	if (own && exec_sql(st, "COMMIT") != STATE_OK)
		return rollback(st);
	return STATE_OK;
}

/* The most recently marked member alive, with when it was marked. */
static int
sqlite_latest(struct state *st, const char *key, int64_t now, char *member,
    size_t size, int64_t *marked, int *found)
{
	sqlite3_stmt	*stmt;
	int		 rc;

	*found = 0;
	if (sqlite3_prepare_v2(db(st), "SELECT member, marked FROM marks "
	    "WHERE key = ?1 AND expires > ?2 ORDER BY marked DESC, rowid DESC "
	    "LIMIT 1", -1, &stmt, NULL) != SQLITE_OK)
		return failed(st, "sqlite");
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, now);
	if ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const unsigned char *m = sqlite3_column_text(stmt, 0);

		snprintf(member, size, "%s", m != NULL ? (const char *)m : "");
		*marked = sqlite3_column_int64(stmt, 1);
		*found = 1;
	}
	sqlite3_finalize(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return failed(st, "sqlite");
	return STATE_OK;
}

static int
sqlite_unmark(struct state *st, const char *key, const char *member)
{
	return run(st, "DELETE FROM marks WHERE key = ?1 AND member = ?2",
	    key, member, 0, 0, NULL);
}

/*
 * For -t: the store can be written (a read-only file opens all the same)
 * and is not corrupt past its first page.
 */
static int
sqlite_verify(struct state *st)
{
	sqlite3_stmt	*stmt;
	const char	*text;
	int		 rc;

	if (exec_sql(st, "BEGIN IMMEDIATE") != STATE_OK)
		return STATE_RETRY;
	if (run(st, "SELECT count(*) FROM marks", NULL, NULL, 0, 0, NULL) !=
	    STATE_OK)
		return rollback(st);
	(void)sqlite3_exec(db(st), "ROLLBACK", NULL, NULL, NULL);
	if (sqlite3_prepare_v2(db(st), "PRAGMA quick_check", -1, &stmt,
	    NULL) != SQLITE_OK)
		return failed(st, "sqlite");
	rc = sqlite3_step(stmt);
	text = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) :
	    NULL;
	if (text == NULL || strcmp(text, "ok") != 0) {
		snprintf(st->error, sizeof(st->error), "quick_check: %s",
		    text != NULL ? text : sqlite3_errmsg(db(st)));
		sqlite3_finalize(stmt);
		return STATE_RETRY;
	}
	sqlite3_finalize(stmt);
	return STATE_OK;
}

static int
sqlite_count(struct state *st, const char *key, int64_t now, uint64_t limit,
    uint64_t *count, int64_t *until)
{
	int64_t n = 0, t = 0;

	if (run(st, "SELECT coalesce(sum(weight), 0) FROM marks WHERE "
	    "key = ?1 AND expires > ?2", key, NULL, now, 0, &n) != STATE_OK)
		return STATE_RETRY;
	*count = (uint64_t)n;
	if (until == NULL)
		return STATE_OK;
	*until = 0;
	if (limit == 0 || (uint64_t)n < limit)
		return STATE_OK;
	if (limit > INT32_MAX)
		limit = INT32_MAX;
	/*
	 * Newest first, the member that brings the sum to the limit: when
	 * it goes, less than the limit is left.
	 */
	if (run(st, "SELECT expires FROM (SELECT expires, sum(weight) OVER "
	    "(ORDER BY expires DESC, rowid DESC ROWS UNBOUNDED PRECEDING) AS "
	    "total FROM marks WHERE key = ?1 AND expires > ?2) WHERE total >= "
	    "?3 LIMIT 1", key, NULL, now, (int64_t)limit, &t) != STATE_OK)
		return STATE_RETRY;
	*until = t;
	return STATE_OK;
}

static int
sqlite_has(struct state *st, const char *key, const char *member,
    int64_t now, int *yes)
{
	int64_t n = 0;

	if (run(st, "SELECT count(*) FROM marks WHERE key = ?1 AND "
	    "member = ?2 AND expires > ?3", key, member, now, 0, &n) !=
	    STATE_OK)
		return STATE_RETRY;
	*yes = n > 0;
	return STATE_OK;
}

static int
sqlite_forget(struct state *st, const char *key, uint64_t *removed)
{
	if (run(st, "DELETE FROM marks WHERE key = ?1", key, NULL, 0, 0,
	    NULL) != STATE_OK)
		return STATE_RETRY;
	*removed = (uint64_t)sqlite3_changes(db(st));
	return STATE_OK;
}

/*
 * IMMEDIATE: the write lock from the start, so that what is read in the
 * transaction is still so when it writes (a check, then a count).
 */
static int
sqlite_begin(struct state *st, const char *scope)
{
	(void)scope;		/* the write lock excludes every writer */
	return exec_sql(st, "BEGIN IMMEDIATE");
}

static int
sqlite_end(struct state *st, int commit)
{
	if (!commit)
		return rollback(st);
	if (exec_sql(st, "COMMIT") != STATE_OK)
		return rollback(st);
	return STATE_OK;
}

static int
sqlite_keys(struct state *st, int64_t now, state_key_fn fn, void *arg)
{
	sqlite3_stmt	*stmt;
	int		 rc;

	if (sqlite3_prepare_v2(db(st), "SELECT DISTINCT key FROM marks WHERE "
	    "expires > ?1 ORDER BY key", -1, &stmt, NULL) != SQLITE_OK)
		return failed(st, "sqlite");
	sqlite3_bind_int64(stmt, 1, now);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const unsigned char *k = sqlite3_column_text(stmt, 0);

		if (k != NULL && fn(arg, (const char *)k) == -1)
			break;
	}
	sqlite3_finalize(stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return failed(st, "sqlite");
	return STATE_OK;
}

const struct state_backend state_sqlite_backend = {
	"sqlite", sqlite_check, sqlite_open, sqlite_mark, sqlite_add,
	sqlite_unmark, sqlite_count, sqlite_latest, sqlite_has, sqlite_forget,
	sqlite_keys, sqlite_verify, sqlite_close, sqlite_begin, sqlite_end
};
