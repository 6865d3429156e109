/*
 * state_redis.c - the state store in Redis (`state redis://...` or
 * `state redis+unix:///PATH`), for state.c: one store that several hosts
 * share, so that a guesser spread across them is counted once.
 *
 * Each set is one Redis hash, PREFIX KEY: member -> "expires marked seq
 * weight" (seq: the order of insertion, which breaks ties as SQLite's
 * rowid does), and the field "" - never a member, state.c refuses empty
 * ones - holds the next seq.  Every change is one call of one Lua script
 * (run by EVALSHA of its digest, which this file works out itself; EVAL
 * when Redis does not have it yet, which also loads it), so it is atomic on the
 * server and the semantics are state_sqlite.c's, operation for
 * operation.  Each hash expires with its last member (EXPIRE, relative,
 * so the hosts' clocks need not agree with Redis's); a hash with a
 * member kept for ever (a suspension) has no TTL.  Redis needs no
 * cleaning; its maxmemory with a volatile-* policy bounds it instead of
 * STATE_ROWS_MAX, and never evicts a suspension.
 *
 * begin/end: a lock key per scope (PREFIX lock SCOPE, SET NX PX
 * state-timeout: one login's, so that the logins of a fleet do not queue
 * for one lock) taken by begin; the changes made until end are kept here
 * and sent by end as one script call, so a rollback is sending nothing.  Reads between begin and end
 * do not see them - sending_reserve reads before it writes.
 *
 * hiredis does all the parsing of RESP; what comes back is checked here
 * for the type expected and a bounded size, nothing else is used.
 * Timeouts: state-timeout bounds the connect and each command; a name
 * rather than an address for HOST is looked up without that bound.
 */
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "smtpauthd.h"
#include "state.h"

#define DEFAULT_PORT	6379
#define DEFAULT_PREFIX	"smtpauthd:"
#define DEFAULT_TIMEOUT	200
#define QUEUE_MAX	32	/* changes between begin and end */
/*
 * The lock lives this many state-timeouts: the round trips a holder may
 * make before end (a suspension read, a count for each of up to 4 rates
 * of each of the two limits, end itself), each bounded by state-timeout;
 * so a holder not yet timed out still holds it.  Past that, end finds it
 * lost and applies nothing.
 */
#define LOCK_ROUND_TRIPS	12
#define LOCK_MAX	(STATE_KEY_MAX + 8)	/* " lock SCOPE" */
#define REPLY_MAX	(STATE_KEY_MAX + 128)	/* one string of a reply */
#define SCAN_KEYS_MAX	STATE_ROWS_MAX
/* SCAN ... COUNT 1000 calls: a full store takes about its keys / 1000. */
#define SCAN_ROUNDS_MAX	(4 * SCAN_KEYS_MAX / 1000 + 1000)
#define PASSWORD_MAX	512
#define FOREVER_TEXT	"9223372036854775807"

/*
 * KEYS: the hashes; ARGV: five for each: op, now, a, b, member.  The
 * result is the last operation's.
 */
static const char script[] =
"local FOREVER = '" FOREVER_TEXT "'\n"
"local function parse(v)\n"
"  local e, m, s, w = string.match(v, '^(%d+) (%d+) (%d+) (%d+)$')\n"
"  if e == nil then return nil end\n"
"  return {es = e, e = tonumber(e), m = tonumber(m), s = tonumber(s),\n"
"    w = tonumber(w)}\n"
"end\n"
"local function load(k, now, drop)\n"
"  local all = redis.call('HGETALL', k)\n"
"  local t = {}\n"
"  for i = 1, #all, 2 do\n"
"    if all[i] ~= '' then\n"
"      local r = parse(all[i + 1])\n"
"      if r ~= nil and r.e > now then\n"
"        r.f = all[i]\n"
"        t[#t + 1] = r\n"
"      elseif drop then\n"
"        redis.call('HDEL', k, all[i])\n"
"      end\n"
"    end\n"
"  end\n"
"  return t\n"
"end\n"
"local function settle(k, t, now)\n"
"  local max = 0\n"
"  for _, r in ipairs(t) do\n"
"    if r.es == FOREVER then redis.call('PERSIST', k) return end\n"
"    if r.e > max then max = r.e end\n"
"  end\n"
"  if max <= now then redis.call('DEL', k) return end\n"
"  redis.call('EXPIRE', k, string.format('%d', max - now + 1))\n"
"end\n"
"local function newer(a, b)\n"
"  if a.m ~= b.m then return a.m > b.m end\n"
"  return a.s > b.s\n"
"end\n"
"local function members(k)\n"
"  return redis.call('HLEN', k) - redis.call('HEXISTS', k, '')\n"
"end\n"
"local function op(k, o, now, a, b, f)\n"
"  if o == 'mark' or o == 'add' then\n"
"    local t = load(k, now, true)\n"
"    local r, added = nil, 0\n"
"    for _, x in ipairs(t) do if x.f == f then r = x end end\n"
"    if r == nil then\n"
"      r = {f = f, s = redis.call('HINCRBY', k, '', 1), w = 1}\n"
"      t[#t + 1] = r\n"
"      added = 1\n"
"    end\n"
"    r.m = now\n"
"    if o == 'add' then r.w = b end\n"
"    if o == 'add' and a == 0 then\n"
"      r.es = FOREVER\n"
"      r.e = tonumber(FOREVER)\n"
"    else\n"
"      r.e = now + a\n"
"      r.es = string.format('%d', r.e)\n"
"    end\n"
"    redis.call('HSET', k, f, r.es .. ' ' ..\n"
"      string.format('%d %d %d', r.m, r.s, r.w))\n"
"    if o == 'mark' and #t > b then\n"
"      table.sort(t, newer)\n"
"      for i = #t, b + 1, -1 do\n"
"        redis.call('HDEL', k, t[i].f)\n"
"        t[i] = nil\n"
"      end\n"
"    end\n"
"    settle(k, t, now)\n"
"    if o == 'add' then return 1 end\n"
"    return {#t, added}\n"
"  elseif o == 'unmark' then\n"
"    redis.call('HDEL', k, f)\n"
"    if members(k) == 0 then redis.call('DEL', k) end\n"
"    return 1\n"
"  elseif o == 'count' then\n"
"    local t = load(k, now, false)\n"
"    local n, u = 0, ''\n"
"    for _, r in ipairs(t) do n = n + r.w end\n"
"    if a > 0 and n >= a then\n"
"      table.sort(t, function(x, y)\n"
"        if x.e ~= y.e then return x.e > y.e end\n"
"        return x.s > y.s\n"
"      end)\n"
"      local total = 0\n"
"      for _, r in ipairs(t) do\n"
"        total = total + r.w\n"
"        if total >= a then u = r.es break end\n"
"      end\n"
"    end\n"
"    return {n, u}\n"
"  elseif o == 'latest' then\n"
"    local best = nil\n"
"    for _, r in ipairs(load(k, now, false)) do\n"
"      if best == nil or newer(r, best) then best = r end\n"
"    end\n"
"    if best == nil then return {} end\n"
"    return {best.f, string.format('%d', best.m)}\n"
"  elseif o == 'has' then\n"
"    local v = redis.call('HGET', k, f)\n"
"    if v and f ~= '' then\n"
"      local r = parse(v)\n"
"      if r ~= nil and r.e > now then return 1 end\n"
"    end\n"
"    return 0\n"
"  elseif o == 'forget' then\n"
"    local n = members(k)\n"
"    redis.call('DEL', k)\n"
"    return n\n"
"  elseif o == 'alive' then\n"
"    return #load(k, now, false)\n"
"  elseif o == 'unlock' then\n"
"    if redis.call('GET', k) == f then redis.call('DEL', k) end\n"
"    return 1\n"
"  elseif o == 'verify' then\n"
"    redis.call('SET', k, f, 'PX', 1000)\n"
"    redis.call('DEL', k)\n"
"    return 1\n"
"  end\n"
"  return redis.error_reply('smtpauthd: unknown operation')\n"
"end\n"
"local n = #KEYS\n"
"if ARGV[5 * n - 4] == 'unlock' and\n"
"    redis.call('GET', KEYS[n]) ~= ARGV[5 * n] then\n"
"  return redis.error_reply('smtpauthd: the lock was lost (held too long)')\n"
"end\n"
"local result = nil\n"
"for i, k in ipairs(KEYS) do\n"
"  local j = 5 * (i - 1)\n"
"  result = op(k, ARGV[j + 1], tonumber(ARGV[j + 2]),\n"
"    tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4]), ARGV[j + 5])\n"
"end\n"
"return result\n";

struct call {
	const char	*op;
	char		 key[STATE_KEY_MAX + 256];	/* with the prefix */
	char		 member[STATE_KEY_MAX + 1];
	int64_t		 now, a, b;
};

struct redis {
	redisContext	*c;
	char		 sha[41];
	char		 prefix[STATE_PREFIX_MAX + 1];
	int64_t		 timeout_ms;
	char		 token[33];	/* the lock's, while it is held */
	char		 lock[LOCK_MAX];	/* " lock SCOPE", while held */
	int		 locked;
	struct call	 queue[QUEUE_MAX + 1];	/* and the unlock */
	size_t		 nqueue;
};

/* ---- the spec ---- */

static int
parse_number(const char *s, size_t len, long max, long *v)
{
	long n = 0;
	size_t i;

	if (len == 0 || len > 10)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		n = n * 10 + (s[i] - '0');
	}
	if (n > max)
		return -1;
	*v = n;
	return 0;
}

/*
 * "//[:PASSWORD@]HOST[:PORT][/DB]" (after "redis:"), or with unixsock
 * "///PATH[?db=N]" (after "redis+unix:").  The password is everything
 * between "//:" and the last '@', taken as it is (no %-decoding).
 */
int
state_redis_parse(const char *rest, int unixsock, struct redis_spec *rs,
    const char **why)
{
	const char	*p, *at, *end, *colon, *q;
	size_t		 n;
	long		 v;

	memset(rs, 0, sizeof(*rs));
	rs->port = DEFAULT_PORT;
	rs->unixsock = unixsock;
	if (strncmp(rest, "//", 2) != 0) {
		*why = unixsock ? "expected redis+unix:///PATH[?db=N]" :
		    "expected redis://[:PASSWORD@]HOST[:PORT][/DB]";
		return -1;
	}
	p = rest + 2;
	if (unixsock) {
		if (*p != '/') {
			*why = "redis+unix:///PATH needs an absolute path";
			return -1;
		}
		q = strchr(p, '?');
		n = q != NULL ? (size_t)(q - p) : strlen(p);
		if (n >= sizeof(rs->path) || n < 2 || p[n - 1] == '/') {
			*why = "redis+unix:///PATH: not a socket's path (too "
			    "long, or a directory)";
			return -1;
		}
		memcpy(rs->path, p, n);
		rs->path[n] = '\0';
		if (q != NULL) {
			if (strncmp(q, "?db=", 4) != 0 ||
			    parse_number(q + 4, strlen(q + 4), 9999, &v) ==
			    -1) {
				*why = "redis+unix:///PATH?db=N: N is a "
				    "database number, 0 to 9999";
				return -1;
			}
			rs->db = (int)v;
		}
		return 0;
	}
	if ((at = strrchr(p, '@')) != NULL) {
		if (*p != ':') {
			*why = "redis://:PASSWORD@HOST: only a password (no "
			    "user name) goes before '@'";
			return -1;
		}
		n = (size_t)(at - p - 1);
		if (n == 0 || n >= sizeof(rs->password)) {
			*why = "redis://:PASSWORD@HOST: the password is empty "
			    "or too long";
			return -1;
		}
		memcpy(rs->password, p + 1, n);
		rs->password[n] = '\0';
		rs->has_password = 1;
		p = at + 1;
	}
	end = p + strcspn(p, "/");
	if (*p == '[') {
		/* [IPv6]:PORT */
		if ((q = memchr(p, ']', (size_t)(end - p))) == NULL) {
			*why = "redis://[ADDRESS]: no closing ']'";
			return -1;
		}
		n = (size_t)(q - p - 1);
		if (n == 0 || n >= sizeof(rs->host)) {
			*why = "redis://[ADDRESS]: empty or too long";
			return -1;
		}
		memcpy(rs->host, p + 1, n);
		rs->host[n] = '\0';
		if (strspn(rs->host, "0123456789abcdefABCDEF:.") != n) {
			*why = "redis://[ADDRESS]: not an IPv6 address";
			return -1;
		}
		colon = q + 1 < end ? q + 1 : NULL;
		if (colon != NULL && *colon != ':') {
			*why = "redis://[ADDRESS]: ':PORT' or '/DB' may follow "
			    "']', nothing else";
			return -1;
		}
	} else {
		colon = memchr(p, ':', (size_t)(end - p));
		n = (size_t)((colon != NULL ? colon : end) - p);
		if (n == 0 || n >= sizeof(rs->host)) {
			*why = "redis://HOST: no host, or too long a name";
			return -1;
		}
		memcpy(rs->host, p, n);
		rs->host[n] = '\0';
		if (strspn(rs->host, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != n) {
			*why = "redis://HOST: not a host name or an address";
			return -1;
		}
	}
	if (colon != NULL) {
		if (parse_number(colon + 1, (size_t)(end - colon - 1), 65535,
		    &v) == -1 || v == 0) {
			*why = "redis://HOST:PORT: PORT is a number, 1 to "
			    "65535";
			return -1;
		}
		rs->port = (int)v;
	}
	if (*end == '/' && end[1] != '\0') {
		if (parse_number(end + 1, strlen(end + 1), 9999, &v) == -1) {
			*why = "redis://HOST/DB: DB is a database number, 0 to "
			    "9999";
			return -1;
		}
		rs->db = (int)v;
	}
	return 0;
}

static int
check_tcp(const char *rest, const char **why)
{
	struct redis_spec rs;
	int rc;

	rc = state_redis_parse(rest, 0, &rs, why);
	explicit_bzero(&rs, sizeof(rs));
	return rc;
}

static int
check_unix(const char *rest, const char **why)
{
	struct redis_spec rs;

	return state_redis_parse(rest, 1, &rs, why);
}

/* ---- replies and errors ---- */

static struct redis *
rd(struct state *st)
{
	return st->handle;
}

/* Redis's and hiredis's words, printable only, for the one log line. */
static int
failed(struct state *st, const char *what, const char *text)
{
	size_t i, n;

	n = (size_t)snprintf(st->error, sizeof(st->error), "redis %s: ", what);
	if (n >= sizeof(st->error))
		return STATE_RETRY;
	for (i = 0; text[i] != '\0' && n + 1 < sizeof(st->error); i++) {
		if ((unsigned char)text[i] < ' ' || text[i] == 0x7f)
			st->error[n++] = '?';
		else
			st->error[n++] = text[i];
	}
	st->error[n] = '\0';
	return STATE_RETRY;
}

/*
 * No reply: the connection is useless after that, and closed.  A read
 * that timed out says so in words an administrator can act on.
 */
static void
lost(struct state *st, const char *what)
{
	struct redis	*r = rd(st);
	char		 text[128];

	if (r->c->err == REDIS_ERR_IO && (errno == EAGAIN ||
	    errno == EWOULDBLOCK)) {
		snprintf(text, sizeof(text), "no answer within state-timeout "
		    "(%lld ms)", (long long)r->timeout_ms);
		(void)failed(st, what, text);
	} else
		(void)failed(st, what, r->c->errstr[0] != '\0' ?
		    r->c->errstr : "no reply");
	redisFree(r->c);
	r->c = NULL;
}

/*
 * The reply, or NULL with the error said: no reply (down, slow: the
 * connection is then useless, and closed), or an error reply.
 */
static redisReply *
command(struct state *st, const char *what, int argc, const char **argv,
    const size_t *argvlen)
{
	struct redis	*r = rd(st);
	redisReply	*reply;

	if (r->c == NULL) {
		(void)failed(st, what, "no connection");
		return NULL;
	}
	reply = redisCommandArgv(r->c, argc, argv, argvlen);
	if (reply == NULL) {
		lost(st, what);
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		(void)failed(st, what, reply->str != NULL ? reply->str : "");
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

static int
is_string(const redisReply *reply)
{
	return reply != NULL && (reply->type == REDIS_REPLY_STRING ||
	    reply->type == REDIS_REPLY_STATUS) && reply->str != NULL &&
	    reply->len <= REPLY_MAX && strlen(reply->str) == reply->len;
}

static int
unexpected(struct state *st, const char *what, redisReply *reply)
{
	freeReplyObject(reply);
	return failed(st, what, "unexpected reply");
}

/* ---- the script ---- */

/*
 * One call of the script on the calls given, EVALSHA, or EVAL when Redis
 * lost the script (SCRIPT FLUSH, a restart under us).
 */
static redisReply *
run(struct state *st, const struct call *calls, size_t n)
{
	struct redis	*r = rd(st);
	const char	*argv[3 + 6 * (QUEUE_MAX + 1)];
	size_t		 len[3 + 6 * (QUEUE_MAX + 1)], i;
	char		 nkeys[16], nums[QUEUE_MAX + 1][3][24];
	redisReply	*reply;
	int		 argc = 0;

	if (n == 0 || n > QUEUE_MAX + 1) {
		(void)failed(st, "script", "too many calls");
		return NULL;
	}
	snprintf(nkeys, sizeof(nkeys), "%zu", n);
	argv[argc++] = "EVALSHA";
	argv[argc++] = r->sha;
	argv[argc++] = nkeys;
	for (i = 0; i < n; i++)
		argv[argc++] = calls[i].key;
	for (i = 0; i < n; i++) {
		snprintf(nums[i][0], sizeof(nums[i][0]), "%lld",
		    (long long)calls[i].now);
		snprintf(nums[i][1], sizeof(nums[i][1]), "%lld",
		    (long long)calls[i].a);
		snprintf(nums[i][2], sizeof(nums[i][2]), "%lld",
		    (long long)calls[i].b);
		argv[argc++] = calls[i].op;
		argv[argc++] = nums[i][0];
		argv[argc++] = nums[i][1];
		argv[argc++] = nums[i][2];
		argv[argc++] = calls[i].member;
	}
	for (i = 0; i < (size_t)argc; i++)
		len[i] = strlen(argv[i]);
	if (r->c == NULL) {
		(void)failed(st, calls[0].op, "no connection");
		return NULL;
	}
	reply = redisCommandArgv(r->c, argc, argv, len);
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    reply->str != NULL && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
		freeReplyObject(reply);
		argv[0] = "EVAL";
		argv[1] = script;
		len[0] = 4;
		len[1] = sizeof(script) - 1;
		reply = redisCommandArgv(r->c, argc, argv, len);
	}
	if (reply == NULL) {
		lost(st, calls[0].op);
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		(void)failed(st, calls[0].op, reply->str != NULL ? reply->str :
		    "");
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

static int
make_call(struct state *st, struct call *c, const char *op, const char *key,
    const char *member, int64_t now, int64_t a, int64_t b)
{
	memset(c, 0, sizeof(*c));
	c->op = op;
	if (snprintf(c->key, sizeof(c->key), "%s%s", rd(st)->prefix, key) >=
	    (int)sizeof(c->key) || snprintf(c->member, sizeof(c->member),
	    "%s", member != NULL ? member : "") >= (int)sizeof(c->member))
		return failed(st, op, "key too long");
	c->now = now;
	c->a = a;
	c->b = b;
	return STATE_OK;
}

/* One operation, now: its reply. */
static redisReply *
run1(struct state *st, const char *op, const char *key, const char *member,
    int64_t now, int64_t a, int64_t b)
{
	struct call c;

	if (make_call(st, &c, op, key, member, now, a, b) != STATE_OK)
		return NULL;
	return run(st, &c, 1);
}

/* An operation whose answer is an integer. */
static int
run_int(struct state *st, const char *op, const char *key,
    const char *member, int64_t now, int64_t a, int64_t b, long long *v)
{
	redisReply *reply;

	if ((reply = run1(st, op, key, member, now, a, b)) == NULL)
		return STATE_RETRY;
	if (reply->type != REDIS_REPLY_INTEGER)
		return unexpected(st, op, reply);
	if (v != NULL)
		*v = reply->integer;
	freeReplyObject(reply);
	return STATE_OK;
}

/* A change: now, or at end when a transaction is open. */
static int
change(struct state *st, const char *op, const char *key,
    const char *member, int64_t now, int64_t a, int64_t b)
{
	struct redis *r = rd(st);

	if (!r->locked)
		return run_int(st, op, key, member, now, a, b, NULL);
	if (r->nqueue == QUEUE_MAX)
		return failed(st, op, "too many changes in one transaction");
	return make_call(st, &r->queue[r->nqueue++], op, key, member, now, a,
	    b);
}

/* ---- opening ---- */

/*
 * The first line of state-password-file, which must be root's alone:
 * it opens the store every host shares.
 */
static int
read_password(const char *path, char *buf, size_t size, char *err,
    size_t errsize)
{
	struct stat	 sb;
	ssize_t		 n;
	int		 fd;

	/* O_NONBLOCK: a FIFO put there must not hold the monitor. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
	    O_NONBLOCK)) == -1) {
		snprintf(err, errsize, "state-password-file %s: %s", path,
		    strerror(errno));
		return STATE_RETRY;
	}
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode) ||
	    sb.st_uid != geteuid() || (sb.st_mode & (S_IRWXG | S_IRWXO))) {
		close(fd);
		snprintf(err, errsize, "state-password-file %s: must be a "
		    "file of ours, mode 0600 or 0400", path);
		return STATE_CONFIG;
	}
	do
		n = read(fd, buf, size - 1);
	while (n == -1 && errno == EINTR);
	close(fd);
	if (n <= 0) {
		snprintf(err, errsize, "state-password-file %s: %s", path,
		    n == 0 ? "empty" : strerror(errno));
		explicit_bzero(buf, size);
		return STATE_CONFIG;
	}
	buf[n] = '\0';
	if ((size_t)n == size - 1 && strpbrk(buf, "\r\n") == NULL) {
		snprintf(err, errsize, "state-password-file %s: the first "
		    "line is longer than %zu octets", path, size - 2);
		explicit_bzero(buf, size);
		return STATE_CONFIG;
	}
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		snprintf(err, errsize, "state-password-file %s: the first "
		    "line is empty", path);
		return STATE_CONFIG;
	}
	return STATE_OK;
}

/*
 * The script's name for EVALSHA, its SHA-1, worked out here: loading it at
 * every connection (the store is opened several times a session) would
 * send it whole each time.  A Redis that lacks it gets EVAL (run()).
 */
static int
script_digest(char out[41])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 n = 0;
	size_t		 i;

	if (EVP_Digest(script, sizeof(script) - 1, md, &n, EVP_sha1(),
	    NULL) != 1 || n != 20)
		return -1;
	for (i = 0; i < 20; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[40] = '\0';
	return 0;
}

/* AUTH, SELECT: the connection made ready. */
static int
prepare(struct state *st, const struct redis_spec *rs, const char *password)
{
	struct redis	*r = rd(st);
	redisReply	*reply;
	const char	*argv[2];
	size_t		 len[2];
	char		 db[16];

	if (password[0] != '\0') {
		argv[0] = "AUTH";
		argv[1] = password;
		len[0] = 4;
		len[1] = strlen(password);
		if ((reply = command(st, "AUTH", 2, argv, len)) == NULL)
			return STATE_RETRY;
		freeReplyObject(reply);
	}
	if (rs->db != 0) {
		snprintf(db, sizeof(db), "%d", rs->db);
		argv[0] = "SELECT";
		argv[1] = db;
		len[0] = 6;
		len[1] = strlen(db);
		if ((reply = command(st, "SELECT", 2, argv, len)) == NULL)
			return STATE_RETRY;
		freeReplyObject(reply);
	}
	if (script_digest(r->sha) == -1)
		return failed(st, "script", "no SHA-1 digest");
	return STATE_OK;
}

static int
unhex(const char *s, unsigned char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const char *hi, *lo;
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[2 * i] == '\0' || (hi = strchr(hex, s[2 * i])) == NULL ||
		    s[2 * i + 1] == '\0' ||
		    (lo = strchr(hex, s[2 * i + 1])) == NULL)
			return -1;
		out[i] = (unsigned char)((hi - hex) << 4 | (lo - hex));
	}
	return s[2 * n] == '\0' ? 0 : -1;
}

/*
 * The keyed hash's secret, shared by every host: in Redis itself
 * (PREFIX "secret", with a blank no state key can have), made by the
 * first to need it.  Whoever can read the store can therefore test the
 * failed guesses it holds: Redis must require a password.
 */
static int
load_secret(struct state *st)
{
	static const char hex[] = "0123456789abcdef";
	struct redis	*r = rd(st);
	unsigned char	 rnd[sizeof(st->secret)];
	char		 key[STATE_PREFIX_MAX + 16], val[2 * sizeof(rnd) + 1];
	const char	*argv[4];
	size_t		 len[4], i;
	redisReply	*reply;
	int		 tries;

	snprintf(key, sizeof(key), "%s secret", r->prefix);
	for (tries = 0; tries < 2; tries++) {
		argv[0] = "GET";
		argv[1] = key;
		len[0] = 3;
		len[1] = strlen(key);
		if ((reply = command(st, "GET", 2, argv, len)) == NULL)
			return STATE_RETRY;
		if (is_string(reply)) {
			i = (size_t)unhex(reply->str, st->secret,
			    sizeof(st->secret));
			explicit_bzero(reply->str, reply->len);
			freeReplyObject(reply);
			if (i != 0)
				return failed(st, "GET", "the secret is not "
				    "64 hex digits");
			return STATE_OK;
		}
		if (reply->type != REDIS_REPLY_NIL)
			return unexpected(st, "GET", reply);
		freeReplyObject(reply);
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return failed(st, "secret", strerror(errno));
		for (i = 0; i < sizeof(rnd); i++) {
			val[2 * i] = hex[rnd[i] >> 4];
			val[2 * i + 1] = hex[rnd[i] & 15];
		}
		val[2 * sizeof(rnd)] = '\0';
		explicit_bzero(rnd, sizeof(rnd));
		/* NX: of two hosts making it at once, one wins; both read. */
		argv[0] = "SET";
		argv[1] = key;
		argv[2] = val;
		argv[3] = "NX";
		len[0] = 3;
		len[1] = strlen(key);
		len[2] = strlen(val);
		len[3] = 2;
		reply = command(st, "SET", 4, argv, len);
		explicit_bzero(val, sizeof(val));
		if (reply == NULL)
			return STATE_RETRY;
		freeReplyObject(reply);
	}
	return failed(st, "GET", "no secret");
}

static int
redis_open_spec(struct state *st, const char *rest, int unixsock, char *err,
    size_t errsize)
{
	const struct config	*cf = st->cf;
	struct redis_spec	 rs;
	struct redis		*r;
	struct timeval		 tv;
	char			 password[PASSWORD_MAX];
	const char		*why;
	int			 rc;

	if (state_redis_parse(rest, unixsock, &rs, &why) == -1) {
		snprintf(err, errsize, "%s", why);
		return STATE_CONFIG;
	}
	password[0] = '\0';
	if (cf != NULL && cf->state_password_file != NULL) {
		rc = read_password(cf->state_password_file, password,
		    sizeof(password), err, errsize);
		if (rc != STATE_OK) {
			explicit_bzero(&rs, sizeof(rs));
			return rc;
		}
	} else if (rs.has_password)
		snprintf(password, sizeof(password), "%s", rs.password);
	explicit_bzero(rs.password, sizeof(rs.password));
	r = xcalloc(1, sizeof(*r));
	st->handle = r;
	snprintf(r->prefix, sizeof(r->prefix), "%s", cf != NULL &&
	    cf->state_prefix != NULL ? cf->state_prefix : DEFAULT_PREFIX);
	r->timeout_ms = cf != NULL && cf->state_timeout > 0 ?
	    (int64_t)cf->state_timeout : DEFAULT_TIMEOUT;
	tv.tv_sec = (time_t)(r->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(r->timeout_ms % 1000 * 1000);
	r->c = unixsock ? redisConnectUnixWithTimeout(rs.path, tv) :
	    redisConnectWithTimeout(rs.host, rs.port, tv);
	if (r->c == NULL || r->c->err != 0) {
		if (unixsock)
			snprintf(err, errsize, "cannot reach Redis at %s: %s",
			    rs.path, r->c != NULL ? r->c->errstr :
			    "out of memory");
		else
			snprintf(err, errsize, "cannot reach Redis at %s:%d: "
			    "%s", rs.host, rs.port, r->c != NULL ?
			    r->c->errstr : "out of memory");
		rc = STATE_RETRY;
	} else if (redisSetTimeout(r->c, tv) != REDIS_OK) {
		snprintf(err, errsize, "redis: setting the timeout: %s",
		    r->c->errstr);
		rc = STATE_RETRY;
	} else if ((rc = prepare(st, &rs, password)) != STATE_OK ||
	    (rc = load_secret(st)) != STATE_OK)
		snprintf(err, errsize, "%s", st->error);
	explicit_bzero(password, sizeof(password));
	if (rc != STATE_OK) {
		if (r->c != NULL)
			redisFree(r->c);
		free(r);
		st->handle = NULL;
	}
	return rc;
}

static int
open_tcp(struct state *st, const char *rest, char *err, size_t errsize)
{
	return redis_open_spec(st, rest, 0, err, errsize);
}

static int
open_unix(struct state *st, const char *rest, char *err, size_t errsize)
{
	return redis_open_spec(st, rest, 1, err, errsize);
}

static void
redis_close(struct state *st)
{
	struct redis *r = rd(st);

	if (r == NULL)
		return;
	if (r->locked)
		(void)st->backend->end(st, 0);
	if (r->c != NULL)
		redisFree(r->c);
	explicit_bzero(r, sizeof(*r));
	free(r);
	st->handle = NULL;
}

/* ---- the operations ---- */

static int
redis_mark(struct state *st, const char *key, const char *member,
    int64_t now, uint64_t ttl, uint64_t keep, uint64_t *count, int *added)
{
	redisReply *reply;

	if (ttl > INT32_MAX)
		ttl = INT32_MAX;
	if (keep > INT32_MAX)
		keep = INT32_MAX;
	if ((reply = run1(st, "mark", key, member, now, (int64_t)ttl,
	    (int64_t)keep)) == NULL)
		return STATE_RETRY;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER ||
	    reply->element[1]->type != REDIS_REPLY_INTEGER ||
	    reply->element[0]->integer < 0)
		return unexpected(st, "mark", reply);
	*count = (uint64_t)reply->element[0]->integer;
	*added = reply->element[1]->integer != 0;
	freeReplyObject(reply);
	return STATE_OK;
}

static int
redis_add(struct state *st, const char *key, const char *member,
    int64_t now, uint64_t ttl, uint64_t weight)
{
	if (ttl > INT32_MAX)
		ttl = INT32_MAX;
	if (weight > INT32_MAX)
		weight = INT32_MAX;
	return change(st, "add", key, member, now, (int64_t)ttl,
	    (int64_t)weight);
}

static int
redis_unmark(struct state *st, const char *key, const char *member)
{
	return change(st, "unmark", key, member, 0, 0, 0);
}

static int
parse_time(const redisReply *reply, int64_t *t)
{
	char		*end;
	long long	 v;

	if (!is_string(reply) || reply->len == 0 || reply->len > 19)
		return -1;
	errno = 0;
	v = strtoll(reply->str, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return -1;
	*t = v;
	return 0;
}

static int
redis_count(struct state *st, const char *key, int64_t now, uint64_t limit,
    uint64_t *count, int64_t *until)
{
	redisReply	*reply;
	int64_t		 t = 0;

	if (limit > INT32_MAX)
		limit = INT32_MAX;
	if ((reply = run1(st, "count", key, NULL, now, until != NULL ?
	    (int64_t)limit : 0, 0)) == NULL)
		return STATE_RETRY;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER ||
	    reply->element[0]->integer < 0 || !is_string(reply->element[1]) ||
	    (reply->element[1]->len > 0 &&
	    parse_time(reply->element[1], &t) == -1))
		return unexpected(st, "count", reply);
	*count = (uint64_t)reply->element[0]->integer;
	if (until != NULL)
		*until = t;
	freeReplyObject(reply);
	return STATE_OK;
}

static int
redis_latest(struct state *st, const char *key, int64_t now, char *member,
    size_t size, int64_t *marked, int *found)
{
	redisReply *reply;

	*found = 0;
	if ((reply = run1(st, "latest", key, NULL, now, 0, 0)) == NULL)
		return STATE_RETRY;
	if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 &&
	    (reply->elements != 2 || !is_string(reply->element[0]) ||
	    parse_time(reply->element[1], marked) == -1)))
		return unexpected(st, "latest", reply);
	if (reply->elements == 2) {
		snprintf(member, size, "%s", reply->element[0]->str);
		*found = 1;
	}
	freeReplyObject(reply);
	return STATE_OK;
}

static int
redis_has(struct state *st, const char *key, const char *member,
    int64_t now, int *yes)
{
	long long v = 0;

	if (run_int(st, "has", key, member, now, 0, 0, &v) != STATE_OK)
		return STATE_RETRY;
	*yes = v != 0;
	return STATE_OK;
}

static int
redis_forget(struct state *st, const char *key, uint64_t *removed)
{
	long long v = 0;

	if (run_int(st, "forget", key, NULL, 0, 0, 0, &v) != STATE_OK)
		return STATE_RETRY;
	*removed = v > 0 ? (uint64_t)v : 0;
	return STATE_OK;
}

/* For -t: the script runs and may write (a replica refuses). */
static int
redis_verify(struct state *st)
{
	return run_int(st, "verify", " verify", "1", 0, 0, 0, NULL);
}

static int
compare_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The prefix as a SCAN pattern: its glob characters escaped, then '*'.
 */
static void
scan_pattern(const char *prefix, char *out, size_t size)
{
	size_t n = 0;

	for (; *prefix != '\0' && n + 3 < size; prefix++) {
		if (strchr("*?[]\\", *prefix) != NULL)
			out[n++] = '\\';
		out[n++] = *prefix;
	}
	out[n++] = '*';
	out[n] = '\0';
}

/* Gathered by SCAN (not KEYS: that would stall every host), sorted. */
/* A key state.c could have made: no blank, no control octet. */
static int
printable_key(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return 0;
	return 1;
}

static int
gather(struct state *st, char ***list, size_t *nlist)
{
	struct redis	*r = rd(st);
	redisReply	*reply, *keys;
	const char	*argv[6];
	size_t		 len[6], i, plen = strlen(r->prefix);
	char		 cursor[32] = "0", pattern[2 * STATE_PREFIX_MAX + 2];
	size_t		 rounds = 0;

	scan_pattern(r->prefix, pattern, sizeof(pattern));
	do {
		argv[0] = "SCAN";
		argv[1] = cursor;
		argv[2] = "MATCH";
		argv[3] = pattern;
		argv[4] = "COUNT";
		argv[5] = "1000";
		for (i = 0; i < 6; i++)
			len[i] = strlen(argv[i]);
		if ((reply = command(st, "SCAN", 6, argv, len)) == NULL)
			return STATE_RETRY;
		if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
		    !is_string(reply->element[0]) ||
		    reply->element[0]->len >= sizeof(cursor) ||
		    reply->element[1]->type != REDIS_REPLY_ARRAY)
			return unexpected(st, "SCAN", reply);
		memcpy(cursor, reply->element[0]->str,
		    reply->element[0]->len + 1);
		keys = reply->element[1];
		for (i = 0; i < keys->elements; i++) {
			const redisReply *k = keys->element[i];

			/*
			 * Ours with a blank: the lock, the secret.  What no
			 * key of state.c's can be (a control octet, from
			 * whoever else writes there) never reaches -S's
			 * output.
			 */
			if (!is_string(k) || k->len <= plen ||
			    k->len - plen > STATE_KEY_MAX ||
			    strncmp(k->str, r->prefix, plen) != 0 ||
			    !printable_key(k->str + plen))
				continue;
			if (*nlist == SCAN_KEYS_MAX) {
				freeReplyObject(reply);
				return failed(st, "SCAN", "too many keys");
			}
			*list = reallocarray(*list, *nlist + 1,
			    sizeof(**list));
			if (*list == NULL)
				fatal("reallocarray");
			(*list)[(*nlist)++] = xstrdup(k->str + plen);
		}
		freeReplyObject(reply);
		/* A server that never says 0 does not keep -S here. */
		if (++rounds > SCAN_ROUNDS_MAX)
			return failed(st, "SCAN", "no end to the keys");
	} while (strcmp(cursor, "0") != 0);
	if (*nlist > 1)
		qsort(*list, *nlist, sizeof(**list), compare_keys);
	return STATE_OK;
}

static int
redis_keys(struct state *st, int64_t now, state_key_fn fn, void *arg)
{
	char		**list = NULL;
	size_t		  nlist = 0, i;
	long long	  alive = 0;
	int		  rc;

	rc = gather(st, &list, &nlist);
	for (i = 0; rc == STATE_OK && i < nlist; i++) {
		/* SCAN may return a key twice: sorted, they are neighbours. */
		if (i > 0 && strcmp(list[i], list[i - 1]) == 0)
			continue;
		if ((rc = run_int(st, "alive", list[i], NULL, now, 0, 0,
		    &alive)) == STATE_OK && alive > 0 &&
		    fn(arg, list[i]) == -1)
			break;
	}
	for (i = 0; i < nlist; i++)
		free(list[i]);
	free(list);
	return rc;
}

/*
 * The lock every host's begin takes, for at most state-timeout: a host
 * that dies holding it delays the others that long, no more.  Waiting
 * for it is bounded by state-timeout too; past that, STATE_RETRY.
 */
static int
redis_begin(struct state *st, const char *scope)
{
	static const char hex[] = "0123456789abcdef";
	struct redis	*r = rd(st);
	struct timespec	 ts;
	unsigned char	 rnd[16];
	redisReply	*reply;
	const char	*argv[6];
	size_t		 len[6], i;
	char		 key[STATE_PREFIX_MAX + LOCK_MAX], px[24];
	int64_t		 deadline;
	long		 pause_ns = 200000;
	int		 got;

	if (r->locked)
		return failed(st, "begin", "a transaction is open");
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return failed(st, "begin", strerror(errno));
	for (i = 0; i < sizeof(rnd); i++) {
		r->token[2 * i] = hex[rnd[i] >> 4];
		r->token[2 * i + 1] = hex[rnd[i] & 15];
	}
	r->token[2 * sizeof(rnd)] = '\0';
	if (snprintf(r->lock, sizeof(r->lock), " lock %s", scope) >=
	    (int)sizeof(r->lock))
		return failed(st, "begin", "scope too long");
	snprintf(key, sizeof(key), "%s%s", r->prefix, r->lock);
	snprintf(px, sizeof(px), "%lld",
	    (long long)r->timeout_ms * LOCK_ROUND_TRIPS);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = r->token;
	argv[3] = "NX";
	argv[4] = "PX";
	argv[5] = px;
	for (i = 0; i < 6; i++)
		len[i] = strlen(argv[i]);
	deadline = now_ms() + r->timeout_ms;
	for (;;) {
		if ((reply = command(st, "lock", 6, argv, len)) == NULL)
			return STATE_RETRY;
		got = reply->type == REDIS_REPLY_STATUS;
		if (!got && reply->type != REDIS_REPLY_NIL)
			return unexpected(st, "lock", reply);
		freeReplyObject(reply);
		if (got)
			break;
		if (now_ms() >= deadline)
			return failed(st, "lock", "held by another "
			    "connection past state-timeout");
		/*
		 * The holder needs a few round trips: a short wait, longer
		 * each time (up to 10 ms, jittered), so that waiters do not
		 * keep Redis busy asking.
		 */
		if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
			ts.tv_nsec = 0;
		ts.tv_nsec = pause_ns + ts.tv_nsec % pause_ns;
		ts.tv_sec = 0;
		(void)nanosleep(&ts, NULL);
		if (pause_ns < 5000000)
			pause_ns *= 2;
	}
	r->locked = 1;
	r->nqueue = 0;
	return STATE_OK;
}

/*
 * The changes kept since begin, all in one script call (all or none),
 * and the lock given back in that same call.
 */
static int
redis_end(struct state *st, int commit)
{
	struct redis	*r = rd(st);
	redisReply	*reply;
	int		 rc = STATE_OK;

	if (!r->locked)
		return failed(st, "end", "no transaction is open");
	r->locked = 0;
	if (!commit)
		r->nqueue = 0;
	if (make_call(st, &r->queue[r->nqueue], "unlock", r->lock, r->token, 0,
	    0, 0) != STATE_OK)
		return STATE_RETRY;
	reply = run(st, r->queue, r->nqueue + 1);
	if (reply == NULL)
		rc = STATE_RETRY;
	else if (reply->type != REDIS_REPLY_INTEGER)
		rc = unexpected(st, "end", reply);
	else
		freeReplyObject(reply);
	r->nqueue = 0;
	return commit ? rc : STATE_RETRY;
}

const struct state_backend state_redis_backend = {
	"redis", check_tcp, open_tcp, redis_mark, redis_add,
	redis_unmark, redis_count, redis_latest, redis_has, redis_forget,
	redis_keys, redis_verify, redis_close, redis_begin, redis_end
};

const struct state_backend state_redis_unix_backend = {
	"redis+unix", check_unix, open_unix, redis_mark, redis_add,
	redis_unmark, redis_count, redis_latest, redis_has, redis_forget,
	redis_keys, redis_verify, redis_close, redis_begin, redis_end
};
