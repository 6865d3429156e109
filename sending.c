/*
 * sending.c - how much an authenticated login may send, and whether it
 * may send at all: the sending limits per login (user-recipient-limit,
 * user-message-limit, their overrides in limits-map) and suspension
 * (smtpauthd -S suspend), kept in the state store by the monitor.
 *
 * A stolen password turns an account into a spammer; these are what stop
 * it between the client and the MTA's queue, where Postfix's own smtpd_*
 * restrictions never apply to mail that arrives through sendmail.
 *
 * Counts are weighted members of the store: one per message accepted by
 * sendmail, weighing its recipients (sent-rcpt:WINDOW:LOGIN) or 1
 * (sent-msg:WINDOW:LOGIN), kept for the window.  A message is counted
 * before sendmail runs (so that two connections of one login cannot both
 * slip under the limit) and taken back when sendmail refused it: what the
 * MTA did not take costs nothing.  A suspension is a member that never
 * expires (suspended:LOGIN, its reason as the member).
 *
 * The client is told at the command that goes over: MAIL for messages
 * and suspension, the RCPT that would pass a recipient limit; SUBMIT
 * checks again, since other connections may have sent meanwhile.  Like
 * the limits on guessing, these fail open: a store that fails lets mail
 * through, with one log line per connection.
 */
#include <sys/random.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "policy.h"
#include "state.h"

#define REASON_MAX	150	/* octets of a suspension's reason */

static const char limited_text[] =
    "4.7.1 Sending rate limit exceeded, try later";
static const char suspended_text[] =
    "5.7.1 Account suspended from sending; contact postmaster";

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

static void
set_reply(struct relay_reply *rr, int code, const char *text)
{
	rr->code = code;
	snprintf(rr->text, sizeof(rr->text), "%s", text);
}

/* ---- limits-map: "login recipients=5000/1d messages=off", "login unlimited" ---- */

static int
parse_one(const char *item, struct rate *r)
{
	struct rates	 rs;

	if (conf_parse_rates(item, RATE_COUNT_MAX, &rs) == -1 || rs.n != 1)
		return -1;
	*r = rs.r[0];
	return 0;
}

static int
window_taken(const struct rates *rs, const struct rate *r)
{
	size_t	 i;

	for (i = 0; i < rs->n; i++)
		if (rs->r[i].window == r->window)
			return 1;
	return 0;
}

struct override {
	const char	*login;		/* NULL: -t, every line checked */
	int		 found;
	struct rates	 rcpt, msg;
	int		 unlimited;
};

/*
 * One line's overrides.  The map splits values at commas and blanks, so
 * "recipients=200/1h, 1000/1d" arrives as two items: an item without
 * '=' adds a limit to the name before it.
 */
static int
override_entry(struct map_file *mf, size_t lineno, char *key, char *value,
    void *arg)
{
	struct override	*o = arg, line;
	struct rates	*cur = NULL;
	struct rate	 one;
	char		*item, *eq;
	int		 named = 0;

	memset(&line, 0, sizeof(line));
	line.rcpt.n = line.msg.n = (size_t)-1;	/* not named: the default */
	while ((item = map_value_next(&value)) != NULL) {
		if (strcmp(item, "unlimited") == 0) {
			line.unlimited = 1;
			cur = NULL;
			continue;
		}
		if ((eq = strchr(item, '=')) != NULL) {
			*eq = '\0';
			if (strcmp(item, "recipients") == 0)
				cur = &line.rcpt;
			else if (strcmp(item, "messages") == 0)
				cur = &line.msg;
			else {
				map_error(mf, lineno, "\"%s\": expected "
				    "recipients=, messages= or unlimited", item);
				return -1;
			}
			if (cur->n != (size_t)-1) {
				map_error(mf, lineno, "%s= given twice", item);
				return -1;
			}
			if (conf_parse_rates(eq + 1, RATE_COUNT_MAX, cur) == -1) {
				map_error(mf, lineno, "%s=%s: not COUNT/TIME "
				    "limits or off", item, eq + 1);
				return -1;
			}
			named = 1;
			continue;
		}
		if (cur == NULL || cur->n == 0 || cur->n >= RATES_MAX ||
		    parse_one(item, &one) == -1 || window_taken(cur, &one)) {
			map_error(mf, lineno, "\"%s\": expected recipients=, "
			    "messages= or unlimited, or one more COUNT/TIME "
			    "limit with a time of its own", item);
			return -1;
		}
		cur->r[cur->n++] = one;
	}
	if (!named && !line.unlimited) {
		map_error(mf, lineno, "%s: no recipients=, messages= or "
		    "unlimited", key);
		return -1;
	}
	if (o->login == NULL || o->found || strcasecmp(key, o->login) != 0)
		return 0;
	o->found = 1;
	o->unlimited = line.unlimited;
	if (line.rcpt.n != (size_t)-1)
		o->rcpt = line.rcpt;
	if (line.msg.n != (size_t)-1)
		o->msg = line.msg;
	return 0;
}

/* -t: the problems of limits-map, each printed on report. */
int
sending_check_map(const struct config *cf, FILE *report)
{
	struct override	 o;
	struct map_file	 mf;

	if (cf->limits_map == NULL)
		return 0;
	memset(&o, 0, sizeof(o));
	memset(&mf, 0, sizeof(mf));
	mf.what = "limits-map";
	mf.path = cf->limits_map;
	mf.report = report;
	(void)map_read(&mf, override_entry, &o);
	return mf.problems;
}

/*
 * The login's limits: the defaults, or limits-map's line for it.  A map
 * that cannot be read leaves the defaults, with a log line: the limits
 * fail safe, not open, when the exception list is broken.
 */
void
sending_init(struct sending *sd, const struct config *cf, const char *peer,
    const char *login)
{
	struct override	 o;
	struct map_file	 mf;
	char		 esc[ESC_MAX];

	memset(sd, 0, sizeof(*sd));
	sd->cf = cf;
	sd->peer = peer;
	snprintf(sd->login, sizeof(sd->login), "%s", login);
	sd->rcpt = cf->user_recipient_limit;
	sd->msg = cf->user_message_limit;
	sd->off = strcmp(cf->state, "none") == 0;
	if (cf->limits_map == NULL)
		return;
	memset(&o, 0, sizeof(o));
	memset(&mf, 0, sizeof(mf));
	o.login = login;
	o.rcpt = sd->rcpt;
	o.msg = sd->msg;
	mf.what = "limits-map";
	mf.path = cf->limits_map;
	if (map_read(&mf, override_entry, &o) == -1) {
		log_msg(LOG_ERR, "%s; the default sending limits apply",
		    log_escape_text(mf.why, esc, sizeof(esc)));
		return;
	}
	if (!o.found)
		return;
	sd->unlimited = o.unlimited;
	sd->rcpt = o.rcpt;
	sd->msg = o.msg;
}

/*
 * The store, or NULL: none, or failing open (logged once).  It stays open
 * from MAIL through the RCPTs (one open, not one per recipient) until
 * sending_release, which the monitor calls before it forks anything: no
 * child inherits an SQLite connection.
 */
static struct state *
store(struct sending *sd)
{
	if (sd->st == NULL && !sd->off)
		sd->st = state_open_step(sd->cf, &sd->failed);
	return sd->st;
}

static void
store_failed(struct sending *sd, struct state *st)
{
	state_step_failed(sd->cf, st, &sd->failed);
	sending_release(sd);
}

void
sending_release(struct sending *sd)
{
	state_close(sd->st);
	sd->st = NULL;
}

/* "sent-rcpt:3600:alice" */
static void
count_key(const char *kind, const struct rate *r, const char *login,
    char *key, size_t size)
{
	char	 name[32];

	snprintf(name, sizeof(name), "%s:%llu", kind,
	    (unsigned long long)r->window);
	state_name_key(name, login, key, size);
}

static void
log_limited(const struct sending *sd, const char *what, const struct rate *r,
    uint64_t count)
{
	char	 esc[ESC_MAX], rate[64];

	snprintf(rate, sizeof(rate), "%llu/%llus", (unsigned long long)r->count,
	    (unsigned long long)r->window);
	log_msg(LOG_NOTICE, "limited user=%s ip=%s limit=%s rate=%s sent=%llu",
	    log_escape(sd->login, esc, sizeof(esc)), sd->peer, what, rate,
	    (unsigned long long)count);
}

/*
 * Whether adding `more` to what each window of rs holds would pass its
 * limit: 1 (logged, reply set), 0, or -1 when the store failed.
 */
static int
over(struct sending *sd, struct state *st, const char *kind,
    const char *what, const struct rates *rs, uint64_t more)
{
	char		 key[STATE_KEY_MAX + 1];
	uint64_t	 n;
	size_t		 i;

	for (i = 0; i < rs->n; i++) {
		count_key(kind, &rs->r[i], sd->login, key, sizeof(key));
		if (state_count(st, key, now_s(), 0, &n, NULL) != STATE_OK)
			return -1;
		if (n + more > rs->r[i].count) {
			log_limited(sd, what, &rs->r[i], n);
			return 1;
		}
	}
	return 0;
}

/* The suspension's reason, if the login is suspended: 1, 0, or -1. */
static int
suspended(struct sending *sd, struct state *st)
{
	char	 key[STATE_KEY_MAX + 1], member[STATE_KEY_MAX + 1];
	int64_t	 since;
	int	 found;

	state_name_key("suspended", sd->login, key, sizeof(key));
	if (state_latest(st, key, now_s(), member, sizeof(member), &since,
	    &found) != STATE_OK)
		return -1;
	return found;
}

static void
log_suspended(const struct sending *sd, const char *cmd)
{
	char	 esc[ESC_MAX];

	log_msg(LOG_NOTICE, "denied user=%s ip=%s cmd=%s reason=suspended",
	    log_escape(sd->login, esc, sizeof(esc)), sd->peer, cmd);
}

/*
 * MAIL: a suspended login gets 550, one over its message limit 451.
 * 0: go on; -1: the reply is set.
 */
int
sending_mail(struct sending *sd, struct relay_reply *rr)
{
	struct state	*st;
	int		 rc = 0, s, o = 0;

	if ((st = store(sd)) == NULL)
		return 0;
	if ((s = suspended(sd, st)) == 1) {
		log_suspended(sd, "MAIL");
		set_reply(rr, 550, suspended_text);
		rc = -1;
	} else if (s == 0 && !sd->unlimited &&
	    (o = over(sd, st, "sent-msg", "user-message-limit", &sd->msg,
	    1)) == 1) {
		set_reply(rr, 451, limited_text);
		rc = -1;
	}
	if (s == -1 || o == -1)
		store_failed(sd, st);
	return rc;
}

/* RCPT: the recipient that would pass a limit gets 451. */
int
sending_rcpt(struct sending *sd, size_t approved, struct relay_reply *rr)
{
	struct state	*st;
	int		 o;

	if (sd->unlimited || sd->rcpt.n == 0 || (st = store(sd)) == NULL)
		return 0;
	o = over(sd, st, "sent-rcpt", "user-recipient-limit", &sd->rcpt,
	    (uint64_t)approved + 1);
	if (o == -1)
		store_failed(sd, st);
	if (o != 1)
		return 0;
	set_reply(rr, 451, limited_text);
	return -1;
}

/* The message counted in every window of rs, or taken back (weight 0). */
static int
record(struct sending *sd, struct state *st, const char *kind,
    const struct rates *rs, const char *queue_id, uint64_t weight)
{
	char	 key[STATE_KEY_MAX + 1];
	size_t	 i;
	int	 rc;

	for (i = 0; i < rs->n; i++) {
		count_key(kind, &rs->r[i], sd->login, key, sizeof(key));
		rc = weight > 0 ? state_add(st, key, queue_id, now_s(),
		    rs->r[i].window, weight) : state_unmark(st, key,
		    queue_id);
		if (rc != STATE_OK)
			return -1;
	}
	return 0;
}

/*
 * The member that counts this message: the queue id names it in -S list
 * and the log, the nonce keeps it apart from any other message with that
 * id - a subverted session chooses the id, and one repeated would
 * otherwise renew a single member instead of adding one per message.
 */
static void
make_member(struct sending *sd, const char *queue_id)
{
	uint64_t	 nonce = 0;

	/* Without randomness, two messages of one monitor are a while apart. */
	if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
		nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)now_ms();
	snprintf(sd->member, sizeof(sd->member), "%s.%016llx", queue_id,
	    (unsigned long long)nonce);
}

/*
 * SUBMIT, before sendmail: checked again, and counted.  0: deliver (and
 * call sending_settle after); -1: the reply is set, nothing is counted.
 */
int
sending_reserve(struct sending *sd, const char *queue_id, size_t nrcpts,
    struct relay_reply *rr)
{
	struct state	*st;
	char		 scope[STATE_KEY_MAX + 1];
	int		 s, o = 0, p = 0;

	sd->reserved = 0;
	make_member(sd, queue_id);
	if ((st = store(sd)) == NULL)
		return 0;
	/*
	 * The check and the count in one transaction: two connections of
	 * one login ending their messages at once would otherwise both
	 * read the count before either added to it, and both pass.  Only
	 * this login's counts are read and written: the login is the scope.
	 */
	state_name_key("sending", sd->login, scope, sizeof(scope));
	if (state_begin(st, scope) != STATE_OK) {
		store_failed(sd, st);
		return 0;
	}
	if ((s = suspended(sd, st)) == 1) {
		log_suspended(sd, "DATA");
		set_reply(rr, 550, suspended_text);
		(void)state_end(st, 0);
		sending_release(sd);
		return -1;
	}
	if (s == 0 && !sd->unlimited) {
		/* Both before either is recorded: a refusal costs nothing. */
		if ((o = over(sd, st, "sent-rcpt", "user-recipient-limit",
		    &sd->rcpt, nrcpts)) == 0)
			p = over(sd, st, "sent-msg", "user-message-limit",
			    &sd->msg, 1);
		if (o == 1 || p == 1) {
			set_reply(rr, 451, limited_text);
			(void)state_end(st, 0);
			sending_release(sd);
			return -1;
		}
		if (o == 0 && p == 0) {
			if (record(sd, st, "sent-rcpt", &sd->rcpt, sd->member,
			    nrcpts) == -1 || record(sd, st, "sent-msg",
			    &sd->msg, sd->member, 1) == -1)
				o = -1;
			else
				sd->reserved = 1;
		}
	}
	if (state_end(st, sd->reserved) != STATE_OK && sd->reserved) {
		sd->reserved = 0;	/* rolled back: nothing counted */
		o = -1;
	}
	if (s == -1 || o == -1 || p == -1)
		store_failed(sd, st);
	sending_release(sd);
	return 0;
}

/* After sendmail: a message it did not accept is taken back. */
void
sending_settle(struct sending *sd, const char *queue_id, int delivered)
{
	struct state	*st;

	(void)queue_id;		/* sd->member names it */
	if (!sd->reserved || delivered)
		return;
	sd->reserved = 0;
	if ((st = store(sd)) == NULL)
		return;
	if (record(sd, st, "sent-rcpt", &sd->rcpt, sd->member, 0) == -1 ||
	    record(sd, st, "sent-msg", &sd->msg, sd->member, 0) == -1)
		store_failed(sd, st);
	sending_release(sd);
}

/* ---- smtpauthd -S suspend | unsuspend | list ---- */

/* The reason as a member: printable, no blanks ('%' and hex for those). */
static void
reason_encode(const char *reason, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t	 i, n = 0;

	for (i = 0; i < REASON_MAX && reason[i] != '\0' && n + 4 < size; i++) {
		unsigned char c = (unsigned char)reason[i];

		if (c <= ' ' || c == '%' || c >= 0x7f) {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		} else
			out[n++] = (char)c;
	}
	if (n == 0 && size > 1)
		out[n++] = '-';
	out[n] = '\0';
}

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static void
reason_decode(const char *in, char *out, size_t size)
{
	size_t	 n = 0;
	int	 hi, lo;

	for (; *in != '\0' && n + 1 < size; in++) {
		if (in[0] == '%' && (hi = hex_value((unsigned char)in[1])) >=
		    0 && (lo = hex_value((unsigned char)in[2])) >= 0) {
			out[n++] = (char)(hi << 4 | lo);
			in += 2;
		} else
			out[n++] = *in;
	}
	out[n] = '\0';
}

/* "sent-rcpt:3600:" and the like: the window, and where the name starts. */
static int
count_key_parse(const char *key, const char *kind, unsigned long long *window,
    size_t *used)
{
	size_t	 n = strlen(kind);
	char	*end;

	if (strncmp(key, kind, n) != 0 || key[n] != ':' ||
	    !isdigit((unsigned char)key[n + 1]))
		return -1;
	errno = 0;
	*window = strtoull(key + n + 1, &end, 10);
	if (errno != 0 || *end != ':')
		return -1;
	*used = (size_t)(end + 1 - key);
	return 0;
}

static int
admin_failed(const struct config *cf, struct state *st)
{
	char shown[STATE_SHOWN_MAX];

	fprintf(stderr, "smtpauthd: state %s: %s\n",
	    state_shown(cf->state, shown, sizeof(shown)), state_error(st));
	return EX_TEMPFAIL_;
}

/* smtpauthd -S suspend LOGIN [REASON...] */
int
sending_suspend(const struct config *cf, struct state *st, const char *login,
    const char *reason)
{
	char	 key[STATE_KEY_MAX + 1], member[3 * REASON_MAX + 2];
	char	 esc[ESC_MAX], escr[ESC_MAX];

	state_name_key("suspended", login, key, sizeof(key));
	reason_encode(reason, member, sizeof(member));
	if (state_forget(st, key, &(uint64_t){ 0 }) != STATE_OK ||
	    state_add(st, key, member, now_s(), 0, 1) != STATE_OK)
		return admin_failed(cf, st);
	printf("suspended %s\n", log_escape(login, esc, sizeof(esc)));
	log_msg(LOG_NOTICE, "suspended user=%s by smtpauthd -S reason=\"%s\"",
	    esc, log_escape_text(reason, escr, sizeof(escr)));
	return 0;
}

/* smtpauthd -S unsuspend LOGIN */
int
sending_unsuspend(const struct config *cf, struct state *st,
    const char *login)
{
	char		 key[STATE_KEY_MAX + 1], esc[ESC_MAX];
	uint64_t	 n = 0;

	state_name_key("suspended", login, key, sizeof(key));
	if (state_forget(st, key, &n) != STATE_OK)
		return admin_failed(cf, st);
	if (n == 0) {
		fprintf(stderr, "smtpauthd: %s: not suspended\n", login);
		return 1;
	}
	printf("unsuspended %s\n", log_escape(login, esc, sizeof(esc)));
	log_msg(LOG_NOTICE, "unsuspended user=%s by smtpauthd -S", esc);
	return 0;
}

/*
 * -S list: a line for a suspension or a login's count in one window;
 * 1 when the key was one of these, 0 if not, -1 when the store failed.
 */
int
sending_list_key(const struct config *cf, struct state *st, int64_t now,
    const char *key)
{
	char		 member[STATE_KEY_MAX + 1], reason[REASON_MAX + 1];
	char		 since[32], esc[ESC_MAX];
	const char	*name;
	unsigned long long window;
	uint64_t	 n;
	int64_t		 marked;
	time_t		 t;
	struct tm	 tm;
	size_t		 used = 0;
	int		 found;

	(void)cf;
	if (strncmp(key, "suspended:", 10) == 0) {
		if (state_latest(st, key, now, member, sizeof(member), &marked,
		    &found) != STATE_OK)
			return -1;
		if (!found)
			return 1;
		reason_decode(member, reason, sizeof(reason));
		t = (time_t)marked;
		if (gmtime_r(&t, &tm) == NULL ||
		    strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ",
		    &tm) == 0)
			snprintf(since, sizeof(since), "%lld", (long long)marked);
		printf("suspended user=%s since=%s reason=\"%s\"\n", key + 10,
		    since, log_escape_text(reason, esc, sizeof(esc)));
		return 1;
	}
	if (count_key_parse(key, "sent-rcpt", &window, &used) == 0)
		name = "recipients";
	else if (count_key_parse(key, "sent-msg", &window, &used) == 0)
		name = "messages";
	else
		return 0;
	if (state_count(st, key, now, 0, &n, NULL) != STATE_OK)
		return -1;
	printf("sent user=%s %s=%llu window=%llus\n", key + used, name,
	    (unsigned long long)n, window);
	return 1;
}
