/*
 * state.c - the state store's front end: what smtpauthd remembers across
 * connections (failed guesses, the addresses a user logged in from),
 * behind one small interface with a backend for each kind of store
 * (state_sqlite.c; state_redis.c for several hosts).
 *
 * The store holds sets: a key ("ip:192.0.2.7", "user:alice") names a set
 * of members (a keyed hash of a guess, an address), each with the time it
 * is forgotten.  Counting the members of a set counts distinct things,
 * which is what the limits want: the same stale password retried all day
 * is one member.  Only this file checks keys (bounded, no blanks or
 * control characters), so no backend has to.
 *
 * Only the monitor (root) opens the store, and only with facts it owns:
 * the peer address it took itself, the user and password of a check it
 * ran.  Every failure says which kind it is: STATE_RETRY (the store is
 * down, busy past its timeout, unreadable, corrupt) makes the caller go
 * on without it - fail open, mail beats throttling - and STATE_CONFIG is
 * a `state` value that cannot work, which -t reports.
 *
 * The keyed hash's secret is a random 32-octet file beside the database
 * (PATH.key, mode 0600), made at first use: the store never holds a
 * password, nor a hash that could be tested offline without that file.
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "smtpauthd.h"
#include "state.h"

#define SECRET_LEN	32

static const struct state_backend *const backends[] = {
	&state_sqlite_backend,
	&state_redis_backend,
	&state_redis_unix_backend,
};

static int
key_valid(const char *key)
{
	size_t n;

	for (n = 0; key[n] != '\0'; n++)
		if ((unsigned char)key[n] <= ' ' || key[n] == 0x7f)
			return 0;
	return n > 0 && n <= STATE_KEY_MAX;
}

/*
 * Whether spec names a store that can exist: "none" (0 and *backend
 * NULL), or a backend's scheme.  -1 with why for anything else.
 */
int
state_spec_check(const char *spec, const struct state_backend **backend,
    const char **why)
{
	size_t i, n;

	*backend = NULL;
	if (strcmp(spec, "none") == 0)
		return 0;
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		n = strlen(backends[i]->scheme);
		if (strncmp(spec, backends[i]->scheme, n) == 0 &&
		    spec[n] == ':') {
			*backend = backends[i];
			return backends[i]->check(spec + n + 1, why);
		}
	}
	*why = "expected sqlite:PATH, redis://[:PASSWORD@]HOST[:PORT][/DB], "
	    "redis+unix:///PATH[?db=N] or none";
	return -1;
}

/*
 * spec as the log and the messages show it: whatever stands before the
 * host of a redis URL (":PASSWORD@", or a "USER:PASSWORD@" that the
 * parser refuses but the refusal still shows) replaced by "****"; with
 * no '@', a ':' right after "//" starts a password that runs to the end.
 */
const char *
state_shown(const char *spec, char *buf, size_t size)
{
	const char	*slashes, *at;
	int		 n;

	if (strncmp(spec, "redis", 5) != 0 ||
	    (slashes = strstr(spec, "//")) == NULL)
		return spec;
	n = (int)(slashes + 2 - spec) + (slashes[2] == ':');
	if ((at = strrchr(slashes, '@')) != NULL)
		snprintf(buf, size, "%.*s****%s", n, spec, at);
	else if (slashes[2] == ':')
		snprintf(buf, size, "%.*s****", n, spec);
	else
		return spec;
	return buf;
}

/*
 * The configured store, open; *st NULL (and STATE_OK) for `state none`.
 * The error text says what failed, for the one log line of failing open.
 */
int
state_open(const struct config *cf, struct state **st, char *err,
    size_t errsize)
{
	const struct state_backend	*be;
	const char			*why;
	struct state			*s;
	int				 rc;

	*st = NULL;
	if (state_spec_check(cf->state, &be, &why) == -1) {
		snprintf(err, errsize, "%s", why);
		return STATE_CONFIG;
	}
	if (be == NULL)
		return STATE_OK;
	s = xcalloc(1, sizeof(*s));
	s->backend = be;
	s->cf = cf;
	rc = be->open(s, cf->state + strlen(be->scheme) + 1, err, errsize);
	if (rc != STATE_OK) {
		free(s);
		return rc;
	}
	*st = s;
	return STATE_OK;
}

void
state_close(struct state *st)
{
	if (st == NULL)
		return;
	st->backend->close(st);
	explicit_bzero(st->secret, sizeof(st->secret));
	free(st);
}

const char *
state_error(const struct state *st)
{
	return st->error;
}

int
state_mark(struct state *st, const char *key, const char *member,
    int64_t now, uint64_t ttl, uint64_t keep, uint64_t *count, int *added)
{
	if (!key_valid(key) || !key_valid(member) || keep == 0)
		return STATE_CONFIG;
	return st->backend->mark(st, key, member, now, ttl, keep, count,
	    added);
}

int
state_add(struct state *st, const char *key, const char *member,
    int64_t now, uint64_t ttl, uint64_t weight)
{
	if (!key_valid(key) || !key_valid(member) || weight == 0)
		return STATE_CONFIG;
	return st->backend->add(st, key, member, now, ttl, weight);
}

int
state_begin(struct state *st, const char *scope)
{
	if (!key_valid(scope))
		return STATE_CONFIG;
	return st->backend->begin(st, scope);
}

int
state_end(struct state *st, int commit)
{
	return st->backend->end(st, commit);
}

int
state_latest(struct state *st, const char *key, int64_t now, char *member,
    size_t size, int64_t *marked, int *found)
{
	if (!key_valid(key) || size == 0)
		return STATE_CONFIG;
	return st->backend->latest(st, key, now, member, size, marked, found);
}

int
state_unmark(struct state *st, const char *key, const char *member)
{
	if (!key_valid(key) || !key_valid(member))
		return STATE_CONFIG;
	return st->backend->unmark(st, key, member);
}

int
state_verify(struct state *st)
{
	return st->backend->verify(st);
}

int
state_count(struct state *st, const char *key, int64_t now, uint64_t limit,
    uint64_t *count, int64_t *until)
{
	if (!key_valid(key))
		return STATE_CONFIG;
	return st->backend->count(st, key, now, limit, count, until);
}

int
state_has(struct state *st, const char *key, const char *member,
    int64_t now, int *yes)
{
	if (!key_valid(key) || !key_valid(member))
		return STATE_CONFIG;
	return st->backend->has(st, key, member, now, yes);
}

int
state_forget(struct state *st, const char *key, uint64_t *removed)
{
	if (!key_valid(key))
		return STATE_CONFIG;
	return st->backend->forget(st, key, removed);
}

int
state_keys(struct state *st, int64_t now, state_key_fn fn, void *arg)
{
	return st->backend->keys(st, now, fn, arg);
}

/*
 * A store that failed once in this process (one connection's monitor)
 * is not asked again by any part: the limits and the sending limits go
 * on without it together, and the log says so once.
 */
static int store_failed_here;

static void
log_failing_open(const struct config *cf, const char *err)
{
	char shown[STATE_SHOWN_MAX];

	store_failed_here = 1;
	log_msg(LOG_ERR, "state %s: %s; no limits for this connection "
	    "(failing open)", state_shown(cf->state, shown, sizeof(shown)),
	    err);
}

/*
 * The store for one step of a connection's work, or NULL: none, or
 * failing open.  *failed is the part's own note that it goes without.
 */
struct state *
state_open_step(const struct config *cf, int *failed)
{
	struct state	*st;
	char		 err[512];

	if (*failed || store_failed_here) {
		*failed = 1;
		return NULL;
	}
	if (state_open(cf, &st, err, sizeof(err)) != STATE_OK) {
		log_failing_open(cf, err);
		*failed = 1;
		return NULL;
	}
	return st;
}

/* A step's store failed: logged once, and not opened again. */
void
state_step_failed(const struct config *cf, struct state *st, int *failed)
{
	if (!store_failed_here)
		log_failing_open(cf, state_error(st));
	*failed = 1;
}

/*
 * "user:alice": KIND, then the name in lower case (a guesser gains
 * nothing from ALICE), as it is when made of the usual characters, else
 * '#' and the name in hex.
 */
void
state_name_key(const char *kind, const char *name, char *key, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t		 i, n, plain;

	n = (size_t)snprintf(key, size, "%s:", kind);
	plain = strspn(name, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+=-");
	if (name[plain] != '\0' && n + 1 < size)
		key[n++] = '#';
	for (i = 0; name[i] != '\0' && n + 2 < size; i++) {
		unsigned char c = (unsigned char)name[i];

		if (name[plain] == '\0')
			key[n++] = (char)tolower(c);
		else {
			key[n++] = hex[c >> 4];
			key[n++] = hex[c & 15];
		}
	}
	key[n] = '\0';
}

/* ---- the keyed hash ---- */

static int
read_secret(const char *path, unsigned char *secret)
{
	struct stat	 sb;
	ssize_t		 n;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return -1;
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode) ||
	    sb.st_uid != geteuid() || (sb.st_mode & (S_IRWXG | S_IRWXO))) {
		close(fd);
		errno = EPERM;
		return -1;
	}
	do
		n = read(fd, secret, SECRET_LEN);
	while (n == -1 && errno == EINTR);
	close(fd);
	if (n != SECRET_LEN) {
		errno = n == -1 ? errno : EINVAL;
		return -1;
	}
	return 0;
}

/*
 * Made whole under a name of its own and linked into place, so that two
 * connections making it at once agree on one secret: the loser reads the
 * winner's.
 */
static int
make_secret(const char *path, unsigned char *secret)
{
	char	 tmp[PATH_MAX];
	int	 fd, rc;

	if (getrandom(secret, SECRET_LEN, 0) != SECRET_LEN)
		return -1;
	if (snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid()) >=
	    (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	(void)unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) ==
	    -1)
		return -1;
	rc = write(fd, secret, SECRET_LEN) == SECRET_LEN && fsync(fd) == 0 ?
	    0 : -1;
	if (close(fd) == -1)
		rc = -1;
	if (rc == 0 && link(tmp, path) == -1)
		rc = errno == EEXIST ? read_secret(path, secret) : -1;
	(void)unlink(tmp);
	return rc;
}

/* The secret beside the store at path, made when there is none. */
int
state_load_secret(struct state *st, const char *path, char *err,
    size_t errsize)
{
	char name[PATH_MAX];

	if (snprintf(name, sizeof(name), "%s.key", path) >= (int)sizeof(name)) {
		snprintf(err, errsize, "%s.key: name too long", path);
		return STATE_CONFIG;
	}
	if (read_secret(name, st->secret) == 0)
		return STATE_OK;
	if (errno != ENOENT || make_secret(name, st->secret) == -1) {
		snprintf(err, errsize, "%s: %s%s", name, strerror(errno),
		    errno == EPERM ? " (it must be a file of ours, mode 0600)" :
		    "");
		return STATE_RETRY;
	}
	return STATE_OK;
}

/*
 * HMAC-SHA-256 of the parts, each with its length before it (so that
 * ("ab", "c") and ("a", "bc") differ), truncated to 128 bits, in hex.
 */
void
state_digest(const struct state *st, const char *a, const char *b,
    char out[STATE_DIGEST_HEX + 1])
{
	unsigned char	 buf[2 * (4 + STATE_PART_MAX)], md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;
	const char	*parts[2] = { a, b };
	size_t		 i, n, len = 0;
	static const char hex[] = "0123456789abcdef";

	for (i = 0; i < 2; i++) {
		if ((n = strlen(parts[i])) > STATE_PART_MAX)
			n = STATE_PART_MAX;	/* longer ones are refused */
		buf[len++] = (unsigned char)(n >> 24);
		buf[len++] = (unsigned char)(n >> 16);
		buf[len++] = (unsigned char)(n >> 8);
		buf[len++] = (unsigned char)n;
		memcpy(buf + len, parts[i], n);
		len += n;
	}
	if (HMAC(EVP_sha256(), st->secret, SECRET_LEN, buf, len, md,
	    &mdlen) == NULL || mdlen < STATE_DIGEST_HEX / 2)
		fatal("HMAC");
	explicit_bzero(buf, sizeof(buf));
	for (i = 0; i < STATE_DIGEST_HEX / 2; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[STATE_DIGEST_HEX] = '\0';
	explicit_bzero(md, sizeof(md));
}
