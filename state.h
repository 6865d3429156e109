/*
 * state.h - the state store's interface (state.c) and what a backend
 * fills in (state_sqlite.c).  Only the monitor and -S include it.
 */
#ifndef STATE_H
#define STATE_H
#include <stdint.h>

#define STATE_KEY_MAX		600	/* "user:" and a hex-encoded name fit */
#define STATE_DIGEST_HEX	32	/* 128 bits of HMAC-SHA-256, in hex */
#define STATE_PART_MAX		(AUTH_PASS_MAX + 8)
/*
 * At most this many members in all: a flood of addresses and names
 * cannot grow the store past about 31 MiB (130 MiB were every name 256
 * octets long); the least recently marked go first.
 */
#define STATE_ROWS_MAX		200000
#define STATE_PREFIX_MAX	64	/* state-prefix */

/* state redis://[:PASSWORD@]HOST[:PORT][/DB], redis+unix:///PATH[?db=N] */
struct redis_spec {
	char	host[256];
	char	path[108];		/* sun_path */
	char	password[256];
	int	port, db, unixsock, has_password;
};

enum state_status { STATE_OK = 0, STATE_RETRY = -1, STATE_CONFIG = -2 };

/* The expiry of what is kept until an administrator removes it. */
#define STATE_FOREVER		INT64_MAX

struct state;
typedef int (*state_key_fn)(void *arg, const char *key);

struct state_backend {
	const char	*scheme;	/* "sqlite" in sqlite:PATH */
	int	(*check)(const char *rest, const char **why);
	int	(*open)(struct state *, const char *rest, char *err,
		    size_t errsize);
	/*
	 * Add member (or renew it) until now + ttl; keep the `keep` most
	 * recently marked; *added: it was not there.
	 */
	int	(*mark)(struct state *, const char *key, const char *member,
		    int64_t now, uint64_t ttl, uint64_t keep, uint64_t *count,
		    int *added);
	/*
	 * Member with a weight until now + ttl (0: for ever), replacing
	 * what it was.
	 */
	int	(*add)(struct state *, const char *key, const char *member,
		    int64_t now, uint64_t ttl, uint64_t weight);
	int	(*unmark)(struct state *, const char *key, const char *member);
	/*
	 * The weights of the members alive at now (mark's weigh 1); until:
	 * when less than limit will be.
	 */
	int	(*count)(struct state *, const char *key, int64_t now,
		    uint64_t limit, uint64_t *count, int64_t *until);
	/* The member marked last, and when. */
	int	(*latest)(struct state *, const char *key, int64_t now,
		    char *member, size_t size, int64_t *marked, int *found);
	int	(*has)(struct state *, const char *key, const char *member,
		    int64_t now, int *yes);
	int	(*forget)(struct state *, const char *key, uint64_t *removed);
	int	(*keys)(struct state *, int64_t now, state_key_fn, void *arg);
	int	(*verify)(struct state *);	/* -t: writable, not corrupt */
	void	(*close)(struct state *);
	/*
	 * Several reads and changes as one: between begin and end no other
	 * connection's transaction of the same scope (a key: what it is
	 * about) changes the store (add and unmark join the transaction);
	 * end commits, or with commit 0 rolls back.  A backend may exclude
	 * more than the scope (SQLite: every writer).
	 */
	int	(*begin)(struct state *, const char *scope);
	int	(*end)(struct state *, int commit);
};

struct state {
	const struct state_backend *backend;
	const struct config *cf;		/* state-prefix, ...; or NULL */
	void		*handle;		/* the backend's */
	unsigned char	 secret[32];		/* the keyed hash's */
	char		 error[256];		/* the last failure, for the log */
};

extern const struct state_backend state_sqlite_backend;
extern const struct state_backend state_redis_backend;
extern const struct state_backend state_redis_unix_backend;

int	 state_spec_check(const char *spec, const struct state_backend **,
	    const char **why);
int	 state_open(const struct config *, struct state **, char *err,
	    size_t errsize);
void	 state_close(struct state *);
struct state *state_open_step(const struct config *, int *failed);
void	 state_step_failed(const struct config *, struct state *, int *failed);
const char *state_error(const struct state *);
int	 state_mark(struct state *, const char *key, const char *member,
	    int64_t now, uint64_t ttl, uint64_t keep, uint64_t *count,
	    int *added);
int	 state_add(struct state *, const char *key, const char *member,
	    int64_t now, uint64_t ttl, uint64_t weight);
int	 state_unmark(struct state *, const char *key, const char *member);
int	 state_latest(struct state *, const char *key, int64_t now,
	    char *member, size_t size, int64_t *marked, int *found);
int	 state_verify(struct state *);
int	 state_begin(struct state *, const char *scope);
int	 state_end(struct state *, int commit);
int	 state_count(struct state *, const char *key, int64_t now,
	    uint64_t limit, uint64_t *count, int64_t *until);
int	 state_has(struct state *, const char *key, const char *member,
	    int64_t now, int *yes);
int	 state_forget(struct state *, const char *key, uint64_t *removed);
int	 state_keys(struct state *, int64_t now, state_key_fn, void *arg);
void	 state_name_key(const char *kind, const char *name, char *key,
	    size_t size);
int	 state_load_secret(struct state *, const char *path, char *err,
	    size_t errsize);
#define STATE_SHOWN_MAX		512
const char *state_shown(const char *spec, char *buf, size_t size);
int	 state_redis_parse(const char *rest, int unixsock, struct redis_spec *,
	    const char **why);
void	 state_digest(const struct state *, const char *a, const char *b,
	    char out[STATE_DIGEST_HEX + 1]);
#endif
