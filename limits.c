/*
 * limits.c - the limits on guessing passwords, across connections: what
 * the monitor asks the state store when a connection begins and around
 * each password check, and smtpauthd -S, which shows and lifts blocks.
 *
 * What is counted (a member of a set in the store, state.c): each failed
 * check as a keyed hash of the user and the password, in three sets -
 * the client's address (an IPv4 address, an IPv6 /64), its network (/24,
 * /48) and the user.  Counting distinct hashes is Dovecot's idea: a phone
 * retrying a stale password all day is one failure, a guesser trying new
 * passwords or new users is many.  Unknown users are counted like known
 * ones, so no limit tells which accounts exist.  Each success records the
 * address (or IPv6 /64) it came from for the user: past auth-limit-user, only those
 * addresses may still try, so the owner keeps working while a botnet is
 * stopped - unlike pam_faillock, which locks the owner out with them.
 *
 * The monitor calls this with facts it owns (its peer address, the user
 * and password of a check it runs); the session never sees the store.  A
 * store that fails is logged once for the connection and then left alone:
 * the connection goes on without limits (fail open).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "smtpauthd.h"
#include "state.h"

/* The addresses one user logged in from: a phone on many networks. */
#define KNOWN_KEEP	64
/*
 * A set keeps this many members beyond its limit: guesses counted ahead
 * of their checks by attempts at once, which may yet be taken back.
 */
#define RESERVE_SLACK	64

_Static_assert(sizeof(((struct limit_mark *)0)->key) > STATE_KEY_MAX,
    "a limit_mark holds any key");

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

static int
limit_on(const struct rate *r)
{
	return r->count > 0 && r->window > 0;
}

void
limits_init(struct limits *l, const struct config *cf, const char *peer)
{
	memset(l, 0, sizeof(*l));
	l->cf = cf;
	l->peer = peer;
	if (net_addr_parse(peer, &l->addr) == 0) {
		l->has_addr = 1;
		/* A client is an address, or an IPv6 /64 (privacy addresses). */
		net_addr_network(&l->addr, 32, 64, l->client,
		    sizeof(l->client));
		l->exempt = net_prefix_list_match(cf->auth_limit_exempt,
		    &l->addr) == 1;
	}
	l->off = strcmp(cf->state, "none") == 0 || l->exempt;
}

/* The store for one step, or NULL: none, or failing open (logged once). */
static struct state *
store(struct limits *l)
{
	return l->off ? NULL : state_open_step(l->cf, &l->failed);
}

static void
store_failed(struct limits *l, struct state *st)
{
	state_step_failed(l->cf, st, &l->failed);
}

/* "ip:192.0.2.7", "net:2001:db8:1::/48" */
static void
addr_key(const struct limits *l, int net, char *key, size_t size)
{
	char text[PEER_MAX + 8];

	net_addr_network(&l->addr, net ? 24 : 32, net ? 48 : 64, text,
	    sizeof(text));
	snprintf(key, size, "%s:%s", net ? "net" : "ip", text);
}

/*
 * Whether the address or its network is over its limit: the reason, or
 * NULL.  Logged as the refusal it causes.
 */
static const char *
addr_blocked(struct limits *l, struct state *st)
{
	const struct rate	*r;
	char			 key[STATE_KEY_MAX + 1];
	uint64_t		 n;
	int			 net;

	if (!l->has_addr)
		return NULL;
	for (net = 0; net <= 1; net++) {
		r = net ? &l->cf->auth_limit_net : &l->cf->auth_limit_ip;
		if (!limit_on(r))
			continue;
		addr_key(l, net, key, sizeof(key));
		if (state_count(st, key, now_s(), 0, &n, NULL) != STATE_OK) {
			store_failed(l, st);
			return NULL;
		}
		if (n >= r->count) {
			log_msg(LOG_NOTICE, "blocked ip=%s reason=%s", l->peer,
			    net ? "auth-limit-net" : "auth-limit-ip");
			return net ? "auth-limit-net" : "auth-limit-ip";
		}
	}
	return NULL;
}

/* At the start of a connection: NULL, or why it is turned away. */
const char *
limits_connect(struct limits *l)
{
	struct state	*st;
	const char	*why;

	if ((st = store(l)) == NULL)
		return NULL;
	why = addr_blocked(l, st);
	state_close(st);
	return why;
}

/*
 * Counts this guess in a set before the check, not after it: attempts
 * made at once (eight connections from one address, a botnet on one
 * user) then see each other, and no more than the limit reach the
 * backend.  What it was before this guess decides: a repeated guess
 * counts as nothing new.  0, or -1 when the store failed.
 */
static int
reserve(struct limits *l, struct state *st, const char *key,
    const struct rate *r, const char *what, uint64_t *before)
{
	struct limit_mark	*m;
	uint64_t		 n;
	int			 added;

	if (l->nmarks == LIMIT_MARKS_MAX ||
	    state_mark(st, key, l->guess, now_s(), r->window,
	    r->count + RESERVE_SLACK, &n, &added) != STATE_OK) {
		store_failed(l, st);
		return -1;
	}
	m = &l->marks[l->nmarks++];
	snprintf(m->key, sizeof(m->key), "%s", key);
	m->added = added;
	m->count = n;
	m->limit = r->count;
	m->what = what;
	*before = added ? n - 1 : n;
	return 0;
}

/* The guesses counted for an attempt that turned out not to be one. */
static void
release(struct limits *l, struct state *st)
{
	size_t i;

	for (i = 0; i < l->nmarks; i++)
		if (l->marks[i].added && !l->failed &&
		    state_unmark(st, l->marks[i].key, l->guess) != STATE_OK)
			store_failed(l, st);
	l->nmarks = 0;
}

/* Whether the user may try from here though over its limit. */
static int
known_here(struct limits *l, struct state *st, const char *user)
{
	char	 key[STATE_KEY_MAX + 1];
	int	 known = 0;

	if (!l->has_addr || l->cf->auth_known_ip_time == 0)
		return 0;
	state_name_key("known", user, key, sizeof(key));
	if (state_has(st, key, l->client, now_s(), &known) != STATE_OK) {
		store_failed(l, st);
		return 0;
	}
	return known;
}

/*
 * Before a password check: LIMIT_OK (ask the backend), LIMIT_ADDR (the
 * address or its network is over its limit: 421 and close) or LIMIT_USER
 * (the user is, and this address is not one it logged in from: 454, as
 * an outage).  The guess is counted now (reserve); limits_after_auth
 * takes it back unless the backend said it was wrong.
 */
int
limits_before_auth(struct limits *l, const char *user, const char *pass)
{
	const struct rate	*r;
	struct state		*st;
	char			 key[STATE_KEY_MAX + 1], esc[ESC_MAX];
	const char		*why = NULL;
	uint64_t		 before;
	int			 net, rc = LIMIT_OK;

	l->guess[0] = '\0';
	l->nmarks = 0;
	if ((st = store(l)) == NULL)
		return LIMIT_OK;
	state_name_key("user", user, key, sizeof(key));
	state_digest(st, key + strlen("user:"), pass, l->guess);
	for (net = 0; l->has_addr && net <= 1 && why == NULL; net++) {
		r = net ? &l->cf->auth_limit_net : &l->cf->auth_limit_ip;
		if (!limit_on(r))
			continue;
		addr_key(l, net, key, sizeof(key));
		if (reserve(l, st, key, r, net ? "auth-limit-net" :
		    "auth-limit-ip", &before) == -1)
			break;
		if (before >= r->count)
			why = net ? "auth-limit-net" : "auth-limit-ip";
	}
	r = &l->cf->auth_limit_user;
	if (why == NULL && !l->failed && limit_on(r)) {
		state_name_key("user", user, key, sizeof(key));
		if (reserve(l, st, key, r, "auth-limit-user", &before) == 0 &&
		    before >= r->count && !known_here(l, st, user) &&
		    !l->failed)
			rc = LIMIT_USER;
	}
	if (why != NULL) {
		log_msg(LOG_NOTICE, "blocked ip=%s reason=%s", l->peer, why);
		rc = LIMIT_ADDR;
	} else if (rc == LIMIT_USER)
		log_msg(LOG_NOTICE, "blocked user=%s ip=%s "
		    "reason=auth-limit-user", log_escape(user, esc,
		    sizeof(esc)), l->peer);
	if (rc != LIMIT_OK || l->failed)
		release(l, st);
	state_close(st);
	return l->failed ? LIMIT_OK : rc;
}

/*
 * After the backend answered: a wrong password stays counted (and the
 * count that reaches a limit is logged); anything else is taken back,
 * and a success remembers where the user logged in from.
 */
void
limits_after_auth(struct limits *l, int result, const char *user)
{
	struct state		*st;
	struct limit_mark	*m;
	char			 key[STATE_KEY_MAX + 1], esc[ESC_MAX];
	uint64_t		 n;
	size_t			 i;
	int			 added, known;

	if (l->guess[0] == '\0') {
		l->nmarks = 0;
		return;
	}
	if (result == AUTH_FAIL) {
		for (i = 0; i < l->nmarks; i++) {
			m = &l->marks[i];
			if (m->added && m->count == m->limit)
				log_msg(LOG_NOTICE, "limit reached %s reason=%s "
				    "failures=%llu", log_escape(m->key, esc,
				    sizeof(esc)), m->what,
				    (unsigned long long)m->count);
		}
		l->nmarks = 0;
		explicit_bzero(l->guess, sizeof(l->guess));
		return;
	}
	known = result == AUTH_OK && l->has_addr &&
	    l->cf->auth_known_ip_time > 0 && limit_on(&l->cf->auth_limit_user);
	if ((l->nmarks > 0 || known) && (st = store(l)) != NULL) {
		release(l, st);
		if (known && !l->failed) {
			state_name_key("known", user, key, sizeof(key));
			if (state_mark(st, key, l->client, now_s(),
			    l->cf->auth_known_ip_time, KNOWN_KEEP, &n,
			    &added) != STATE_OK)
				store_failed(l, st);
		}
		state_close(st);
	}
	l->nmarks = 0;
	explicit_bzero(l->guess, sizeof(l->guess));
}

/* ---- smtpauthd -S ---- */

struct listing {
	const struct config	*cf;
	struct state		*st;
	int64_t			 now;
	int			 shown;
	int			 failed;
};

static const struct rate *
key_rate(const struct config *cf, const char *key, const char **kind)
{
	if (strncmp(key, "ip:", 3) == 0) {
		*kind = "ip";
		return &cf->auth_limit_ip;
	}
	if (strncmp(key, "net:", 4) == 0) {
		*kind = "net";
		return &cf->auth_limit_net;
	}
	if (strncmp(key, "user:", 5) == 0) {
		*kind = "user";
		return &cf->auth_limit_user;
	}
	return NULL;
}

static void
utc_time(int64_t t, char *out, size_t size)
{
	time_t		 tt = (time_t)t;
	struct tm	 tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "%lld", (long long)t);
}

static int
list_key(void *arg, const char *key)
{
	struct listing		*ls = arg;
	const struct rate	*r;
	const char		*kind;
	char			 until[32];
	uint64_t		 n;
	int64_t			 t;

	switch (sending_list_key(ls->cf, ls->st, ls->now, key)) {
	case -1:
		ls->failed = 1;
		return -1;
	case 1:
		ls->shown++;
		return 0;
	default:
		break;
	}
	if ((r = key_rate(ls->cf, key, &kind)) == NULL || !limit_on(r))
		return 0;
	if (state_count(ls->st, key, ls->now, r->count, &n, &t) != STATE_OK) {
		ls->failed = 1;
		return -1;
	}
	if (n < r->count)
		return 0;
	utc_time(t, until, sizeof(until));
	printf("blocked %s=%s failures=%llu limit=%llu until=%s\n", kind,
	    key + strlen(kind) + 1, (unsigned long long)n,
	    (unsigned long long)r->count, until);
	ls->shown++;
	return 0;
}

static int
forget(struct state *st, const char *key, int *lifted)
{
	uint64_t	 n = 0;
	char		 esc[ESC_MAX];

	if (state_forget(st, key, &n) != STATE_OK)
		return -1;
	if (n > 0) {
		printf("unblocked %s (%llu counted)\n", log_escape(key, esc,
		    sizeof(esc)), (unsigned long long)n);
		log_msg(LOG_NOTICE, "unblocked %s by smtpauthd -S", esc);
		*lifted = 1;
	}
	return 0;
}

/* An address lifts its own count and its network's; a prefix, that one. */
static int
unblock(const struct config *cf, struct state *st, const char *what)
{
	struct limits		 l;
	struct net_prefix	 p;
	char			 key[STATE_KEY_MAX + 1], text[PEER_MAX + 8],
			 shown[STATE_SHOWN_MAX];
	int			 lifted = 0, rc = 0;

	memset(&l, 0, sizeof(l));
	if (strchr(what, '/') == NULL && net_addr_parse(what, &l.addr) == 0) {
		l.has_addr = 1;
		addr_key(&l, 0, key, sizeof(key));
		rc |= forget(st, key, &lifted);
		addr_key(&l, 1, key, sizeof(key));
		rc |= forget(st, key, &lifted);
	} else if (strchr(what, '/') != NULL) {
		if (net_prefix_parse(what, &p) == -1) {
			fprintf(stderr, "smtpauthd: %s: not an address prefix "
			    "(192.0.2.0/24, 2001:db8:1::/48)\n", what);
			return 64;
		}
		net_addr_network(&p.addr, p.bits, p.bits, text, sizeof(text));
		snprintf(key, sizeof(key), "ip:%s", text);
		rc |= forget(st, key, &lifted);
		snprintf(key, sizeof(key), "net:%s", text);
		rc |= forget(st, key, &lifted);
	} else {
		state_name_key("user", what, key, sizeof(key));
		rc |= forget(st, key, &lifted);
	}
	if (rc != 0) {
		fprintf(stderr, "smtpauthd: state %s: %s\n",
		    state_shown(cf->state, shown, sizeof(shown)),
		    state_error(st));
		return EX_TEMPFAIL_;
	}
	if (!lifted) {
		fprintf(stderr, "smtpauthd: %s: nothing is counted against it\n",
		    what);
		return 1;
	}
	return 0;
}

static int
admin_usage_ok(int argc, char *const argv[])
{
	if (argc < 1)
		return 0;
	if (strcmp(argv[0], "list") == 0)
		return argc == 1;
	if (strcmp(argv[0], "unblock") == 0 ||
	    strcmp(argv[0], "unsuspend") == 0)
		return argc == 2 && argv[1][0] != '\0';
	if (strcmp(argv[0], "suspend") == 0)
		return (argc == 2 || argc == 3) && argv[1][0] != '\0';
	return 0;
}

/* smtpauthd -S list | unblock X | suspend L [R] | unsuspend L: the status. */
int
limits_admin(const struct config *cf, int argc, char *const argv[])
{
	struct listing	 ls;
	struct state	*st;
	char		 err[512], shown[STATE_SHOWN_MAX];
	int		 rc;

	if (!admin_usage_ok(argc, argv)) {
		fprintf(stderr, "usage: smtpauthd [-f file] [-o key=value]... "
		    "-S list | unblock ADDRESS|PREFIX|USER | suspend LOGIN "
		    "[REASON] | unsuspend LOGIN\n");
		return 64;
	}
	if ((rc = state_open(cf, &st, err, sizeof(err))) != STATE_OK) {
		fprintf(stderr, "smtpauthd: state %s: %s\n",
		    state_shown(cf->state, shown, sizeof(shown)), err);
		return rc == STATE_CONFIG ? EX_CONFIG_ : EX_TEMPFAIL_;
	}
	if (st == NULL) {
		fprintf(stderr, "smtpauthd: state none: nothing is remembered "
		    "across connections\n");
		return strcmp(argv[0], "list") == 0 ? 0 : 1;
	}
	if (strcmp(argv[0], "list") != 0) {
		if (strcmp(argv[0], "unblock") == 0)
			rc = unblock(cf, st, argv[1]);
		else if (strcmp(argv[0], "suspend") == 0)
			rc = sending_suspend(cf, st, argv[1], argc == 3 ?
			    argv[2] : "");
		else
			rc = sending_unsuspend(cf, st, argv[1]);
		state_close(st);
		return rc;
	}
	memset(&ls, 0, sizeof(ls));
	ls.cf = cf;
	ls.st = st;
	ls.now = now_s();
	if (state_keys(st, ls.now, list_key, &ls) != STATE_OK || ls.failed) {
		fprintf(stderr, "smtpauthd: state %s: %s\n",
		    state_shown(cf->state, shown, sizeof(shown)),
		    state_error(st));
		state_close(st);
		return EX_TEMPFAIL_;
	}
	state_close(st);
	if (ls.shown == 0)
		fprintf(stderr, "smtpauthd: nothing is blocked, suspended or "
		    "counted\n");
	return 0;
}

/* -t: the store opens (made if need be), or the problem. */
int
limits_check_store(const struct config *cf, char *err, size_t errsize)
{
	struct state	*st;
	int		 rc = 0;

	if (state_open(cf, &st, err, errsize) != STATE_OK)
		return -1;
	if (st != NULL && state_verify(st) != STATE_OK) {
		snprintf(err, errsize, "%s", state_error(st));
		rc = -1;
	}
	state_close(st);
	return rc;
}
