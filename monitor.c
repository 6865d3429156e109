/*
 * monitor.c - the monitor's side of a connection: the one process that
 * keeps root, answers the session's requests and decides everything that
 * matters - who logged in, which sender and which recipients a message
 * may have, what reaches sendmail.  The requests and their order are
 * privsep.c's top comment; here each request type has one row in
 * `requests` (what must have happened before it, how many are allowed),
 * checked in one place before its handler runs, as smtp.c's command
 * table is.  A request that breaks the protocol is logged and ends the
 * connection with nothing injected.
 *
 * Its peers: the session (the channel), the password check's child, the
 * state store, sendmail, the policy server - and, before all of them and
 * before the fork, a load balancer's PROXY header (privsep.c's top
 * comment says why that one read from the network is safe).
 *
 * The transaction is the monitor's own: MAIL records a sender it
 * approved, each RCPT a recipient it approved, and SUBMIT delivers that
 * envelope - never one the session describes afterwards.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "chan.h"
#include "policy.h"
#include "policy_client.h"

struct monitor {
	const struct config	*cf;
	const char		*peer;
	pid_t			 session;	/* the one child to keep */
	int			 channel;
	int			 spool;		/* the next message's, or -1 */
	int			 spool_given;	/* the session has it */
	int			 authenticated;
	int			 blocked;	/* over a limit: no more checks */
	int			 in_mail;	/* a sender approved */
	int			 account_refused; /* locked since AUTH */
	uint64_t		 count[MSG_TYPES];	/* requests so far */
	uint64_t		 messages;	/* accepted by sendmail */
	uint64_t		 transactions;	/* MAILs approved */
	char			 instance[40];	/* this transaction's */
	struct envelope		 env;		/* what MAIL and RCPT approved */
	struct limits		 limits;
	struct sending		 sending;	/* the login's limits */
	char			 user[AUTH_USER_MAX + 1];
	char			 mech[8];	/* of the successful AUTH */
	char			 tls[TLS_NAME_MAX + 1];	/* the session's word */
};

static int	monitor_auth(struct monitor *, struct packet *);
static int	monitor_mail(struct monitor *, struct packet *);
static int	monitor_rcpt(struct monitor *, struct packet *);
static int	monitor_submit(struct monitor *, struct packet *);
static int	monitor_spool(struct monitor *, struct packet *);

#define REQ_AUTHENTICATED	0x01	/* after a successful AUTH */
#define REQ_ANONYMOUS		0x02	/* before one */
#define REQ_MAIL		0x04	/* a sender approved */
#define REQ_RCPT		0x08	/* and a recipient */

static uint64_t
auth_requests_max(const struct config *cf)
{
	return cf->max_auth_failures;
}

static const struct request {
	uint32_t	 type;
	unsigned	 needs;
	const char	*name;
	int		 (*handler)(struct monitor *, struct packet *);
	uint64_t	 (*max)(const struct config *);	/* per connection */
	const char	*max_key;
} requests[] = {
	{ MSG_AUTH, REQ_ANONYMOUS, "AUTH", monitor_auth, auth_requests_max,
	    "max-auth-failures" },
	{ MSG_MAIL, REQ_AUTHENTICATED, "MAIL", monitor_mail, NULL, NULL },
	{ MSG_RCPT, REQ_AUTHENTICATED | REQ_MAIL, "RCPT", monitor_rcpt, NULL,
	    NULL },
	{ MSG_SUBMIT, REQ_AUTHENTICATED | REQ_MAIL | REQ_RCPT, "SUBMIT",
	    monitor_submit, NULL, NULL },
	{ MSG_SPOOL, REQ_AUTHENTICATED, "SPOOL", monitor_spool, NULL, NULL },
};
#define NREQUESTS	(sizeof(requests) / sizeof(requests[0]))

/* A request the session had no business making: nothing more is done. */
static void __attribute__((noreturn))
monitor_refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void __attribute__((noreturn))
monitor_refuse(const char *fmt, ...)
{
	char	 why[128];
	va_list	 ap;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above */
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_msg(LOG_ERR, "monitor: refused a request from the session: %s; "
	    "closing", why);
	exit(EX_SOFTWARE_);
}

/* Whether the request may come now; refused (the connection ends) if not. */
static void
check_order(struct monitor *m, const struct request *r)
{
	if ((r->needs & REQ_ANONYMOUS) && m->authenticated)
		monitor_refuse("%s after a successful AUTH", r->name);
	if ((r->needs & REQ_AUTHENTICATED) && !m->authenticated)
		monitor_refuse("%s before a successful AUTH", r->name);
	if ((r->needs & REQ_MAIL) && !m->in_mail)
		monitor_refuse("%s without an approved MAIL", r->name);
	if ((r->needs & REQ_RCPT) && m->env.nrcpts == 0)
		monitor_refuse("%s without an approved RCPT", r->name);
	if (r->max != NULL && ++m->count[r->type] > r->max(m->cf))
		monitor_refuse("more %s requests than %s", r->name,
		    r->max_key);
}

/* The reply of MAIL, RCPT and SUBMIT: a code and its text. */
static int
send_reply(struct monitor *m, uint32_t type, const struct relay_reply *rr)
{
	struct packet	 p;

	packet_start(&p, type);
	put_u32(&p, (uint32_t)rr->code);
	put_string(&p, rr->text);
	return packet_send(m->channel, &p);
}

static void
set_reply(struct relay_reply *rr, int code, const char *text)
{
	rr->code = code;
	snprintf(rr->text, sizeof(rr->text), "%s", text);
}

/* ---- AUTH ---- */

/*
 * One password check, within the limits: a blocked address or user is
 * refused without asking the backend (limits.c logged why), and what the
 * backend answers is counted.  The record of a checked password is the
 * monitor's, which a subverted session can neither leave out nor hurry
 * (tls= is the session's word, the rest the monitor's).  What the
 * session refuses unasked it logs itself, and a subverted one could
 * forge such lines (smtpauthd.8, SECURITY).
 */
static int
monitor_check(struct monitor *m, const char *mechname, const char *user,
    const char *pass, char *canon, size_t canonsize, const char **reason,
    const char *tls)
{
	struct auth_bounds	 bounds;
	int			 result;

	if (!m->blocked) {
		switch (limits_before_auth(&m->limits, user, pass)) {
		case LIMIT_ADDR:
			m->blocked = 1;
			break;
		case LIMIT_USER:
			*reason = "auth-limit-user";
			return AUTH_TEMPFAIL;
		default:
			break;
		}
	}
	if (m->blocked) {
		*reason = "auth-limit";
		return AUTH_BLOCKED;
	}
	bounds.cf = m->cf;
	bounds.peer = m->peer;
	bounds.channel = m->channel;
	bounds.session = m->session;
	result = auth_bounded(&bounds, mechname, user, pass, canon, canonsize,
	    reason);
	limits_after_auth(&m->limits, result, user);
	if (result == AUTH_GONE)
		return result;
	auth_log_result(result, result == AUTH_OK ? canon : user, mechname,
	    m->peer, *reason, tls);
	return result;
}

static int
monitor_auth(struct monitor *m, struct packet *p)
{
	char		 user[AUTH_USER_MAX + 1], pass[AUTH_PASS_MAX + 1];
	char		 canon[AUTH_USER_MAX + 1] = "", tls[TLS_NAME_MAX + 1];
	const char	*reason = "", *mechname;
	uint32_t	 mech, ulen, plen, tlen;
	int64_t		 started;
	int		 result;

	started = now_ms();
	mech = get_u32(p);
	ulen = get_u32(p);
	plen = get_u32(p);
	tlen = get_u32(p);
	get_string(p, ulen, user, sizeof(user));
	get_string(p, plen, pass, sizeof(pass));
	get_string(p, tlen, tls, sizeof(tls));
	explicit_bzero(p->buf, sizeof(p->buf));
	if (!packet_done(p) || (mech != MECH_PLAIN && mech != MECH_LOGIN) ||
	    tls[0] == '\0' || strspn(tls, TLS_NAME_CHARS) != strlen(tls)) {
		explicit_bzero(pass, sizeof(pass));
		monitor_refuse("malformed AUTH");
	}
	mechname = mech == MECH_LOGIN ? "LOGIN" : "PLAIN";
	result = monitor_check(m, mechname, user, pass, canon, sizeof(canon),
	    &reason, tls);
	explicit_bzero(pass, sizeof(pass));
	if (result == AUTH_GONE)
		return -1;	/* no one to answer: the loop ends */
	if (result != AUTH_OK && result != AUTH_BLOCKED)
		sleep_until(auth_failure_deadline(m->cf, started));
	if (result == AUTH_OK) {
		m->authenticated = 1;
		snprintf(m->user, sizeof(m->user), "%s", canon);
		snprintf(m->mech, sizeof(m->mech), "%s", mechname);
		snprintf(m->tls, sizeof(m->tls), "%s", tls);
		sending_init(&m->sending, m->cf, m->peer, m->user);
		/*
		 * The process to stop to stop a user: this one (its name
		 * stays, for pidof and killall).
		 */
		proc_title_set_confined("smtpauthd: %s@%s", m->user,
		    m->peer);
	} else
		canon[0] = '\0';
	packet_start(p, MSG_AUTH);
	put_u32(p, (uint32_t)result);
	put_u32(p, (uint32_t)strlen(reason));
	put_u32(p, (uint32_t)strlen(canon));
	put_bytes(p, reason, strlen(reason));
	put_bytes(p, canon, strlen(canon));
	return packet_send(m->channel, p);
}

/* ---- the transaction: MAIL, RCPT, SUBMIT ---- */

/* A refusal the monitor decided; sender: the address it concerns, or NULL. */
static void
log_denied(const struct monitor *m, const char *cmd, const char *reason,
    const char *sender)
{
	char	 esc[ESC_MAX], escs[ESC_MAX];

	if (sender == NULL)
		log_msg(LOG_NOTICE, "denied user=%s ip=%s cmd=%s reason=%s",
		    log_escape(m->user, esc, sizeof(esc)), m->peer, cmd,
		    reason);
	else
		log_msg(LOG_NOTICE, "denied user=%s ip=%s cmd=%s reason=%s "
		    "from=<%s>", log_escape(m->user, esc, sizeof(esc)),
		    m->peer, cmd, reason, log_escape(sender, escs,
		    sizeof(escs)));
}

/*
 * The envelope sender, by sender-policy: 0, or -1 with the reply set and
 * the refusal logged.
 */
static int
sender_allowed(struct monitor *m, const char *cmd, const char *sender,
    struct relay_reply *rr)
{
	char	 why[POLICY_WHY_MAX], esc[ESC_MAX];

	switch (policy_sender(m->cf, m->user, sender, why, sizeof(why))) {
	case POLICY_OK:
		return 0;
	case POLICY_REFUSE:
		rr->code = policy_sender_reply(sender, m->user, rr->text,
		    sizeof(rr->text));
		log_denied(m, cmd, "sender-not-owned", sender);
		return -1;
	default:
		log_msg(LOG_ERR, "%s", log_escape_text(why, esc, sizeof(esc)));
		rr->code = policy_tempfail_reply(sender, rr->text,
		    sizeof(rr->text));
		log_denied(m, cmd, "sender-map-unavailable", sender);
		return -1;
	}
}

/*
 * sender-header-check: the From: and Sender: addresses of the message in
 * the spool, read by the monitor itself, pass sender-policy too.
 */
static int
headers_allowed(struct monitor *m, int spool, struct relay_reply *rr)
{
	static struct header_senders	 hs;
	const char			*addrs[HEADER_ADDRS_MAX];
	char				 why[POLICY_WHY_MAX], esc[ESC_MAX];
	size_t				 i, failed = 0;
	int				 rc;

	if (!m->cf->sender_header_check)
		return 0;
	switch (header_senders(spool, &hs)) {
	case HEADER_NONE_FOUND:
		return 0;	/* the MTA adds From: from the envelope */
	case HEADER_OK:
		break;
	case HEADER_BAD:
		rr->code = policy_header_reply(m->user, rr->text,
		    sizeof(rr->text));
		log_denied(m, "DATA", "header-unreadable", NULL);
		return -1;
	default:
		log_msg(LOG_ERR, "spool: %s (reading its header)",
		    strerror(errno));
		set_reply(rr, 451, "4.3.0 Local error in processing");
		return -1;
	}
	for (i = 0; i < hs.n; i++)
		addrs[i] = hs.addr[i];
	rc = policy_sender_list(m->cf, m->user, addrs, hs.n, &failed, why,
	    sizeof(why));
	if (rc == POLICY_OK)
		return 0;
	if (rc == POLICY_REFUSE) {
		rr->code = policy_header_reply(m->user, rr->text,
		    sizeof(rr->text));
		log_denied(m, "DATA", hs.field[failed] == HEADER_SENDER ?
		    "sender-header-not-owned" : "from-header-not-owned",
		    hs.addr[failed]);
		return -1;
	}
	log_msg(LOG_ERR, "%s", log_escape_text(why, esc, sizeof(esc)));
	rr->code = policy_tempfail_reply(hs.addr[failed], rr->text,
	    sizeof(rr->text));
	log_denied(m, "DATA", "sender-map-unavailable", hs.addr[failed]);
	return -1;
}

/* The message's octets in the spool, our Received: header included. */
static uint64_t
spool_size(int fd)
{
	struct stat	 sb;

	return fstat(fd, &sb) == 0 && sb.st_size > 0 ? (uint64_t)sb.st_size :
	    0;
}

/*
 * policy-service, asked at RCPT (rcpt) or at the end of the message (the
 * one in spool).
 */
static int
policy_service_allows(struct monitor *m, const char *rcpt, const char *id,
    int spool, struct relay_reply *rr)
{
	struct policy_request	 rq;
	struct relay_reply	 answer;

	if (m->cf->policy_service == NULL)
		return 0;
	memset(&rq, 0, sizeof(rq));
	rq.state = rcpt != NULL ? POLICY_RCPT : POLICY_END_OF_MESSAGE;
	rq.client_address = m->peer;
	rq.sender = m->env.sender;
	rq.recipient = rcpt != NULL ? rcpt : m->env.nrcpts == 1 ?
	    m->env.rcpts[0] : NULL;
	rq.recipient_count = rcpt != NULL ? 0 : m->env.nrcpts;
	rq.queue_id = id;
	rq.instance = m->instance;
	rq.sasl_method = m->mech;
	rq.sasl_username = m->user;
	rq.encryption_protocol = strcmp(m->tls, "none") != 0 ? m->tls : NULL;
	if (rcpt == NULL)
		rq.size = spool_size(spool);
	if (policy_query(m->cf, &rq, &answer) == POLICY_PASS)
		return 0;
	*rr = answer;
	log_denied(m, rcpt != NULL ? "RCPT" : "DATA", "policy-service",
	    m->env.sender);
	return -1;
}

static const char account_refused_text[] =
    "5.7.1 Account not permitted to send";

static void
transaction_reset(struct monitor *m)
{
	size_t	 i;

	for (i = 0; i < m->env.nrcpts; i++)
		free(m->env.rcpts[i]);
	free(m->env.rcpts);
	memset(&m->env, 0, sizeof(m->env));
	m->in_mail = 0;
}

/* A new transaction, whatever the last one was: RSET is the session's. */
static int
monitor_mail(struct monitor *m, struct packet *p)
{
	struct relay_reply	 rr;
	char			 sender[SMTP_PATH_MAX + 1];

	get_string(p, get_u32(p), sender, sizeof(sender));
	if (!packet_done(p))
		monitor_refuse("malformed MAIL");
	if (sender[0] != '\0' && (!addr_is_safe(sender) ||
	    strchr(sender, '@') == NULL))
		monitor_refuse("MAIL with an unsafe sender");
	transaction_reset(m);
	set_reply(&rr, 250, "2.1.0 Ok");
	if (m->account_refused) {
		log_denied(m, "MAIL", "account", NULL);
		set_reply(&rr, 550, account_refused_text);
	} else if (sender_allowed(m, "MAIL", sender, &rr) == 0)
		(void)sending_mail(&m->sending, &rr);
	if (rr.code == 250) {
		snprintf(m->env.sender, sizeof(m->env.sender), "%s", sender);
		/* Postfix's instance: one per transaction, for the policy
		 * server to tie its questions together. */
		snprintf(m->instance, sizeof(m->instance), "%lx.%llx",
		    (unsigned long)getpid(),
		    (unsigned long long)++m->transactions);
		m->env.rcpts = xcalloc(m->cf->max_recipients,
		    sizeof(*m->env.rcpts));
		m->in_mail = 1;
	}
	return send_reply(m, MSG_MAIL, &rr);
}

static int
monitor_rcpt(struct monitor *m, struct packet *p)
{
	struct relay_reply	 rr;
	char			 rcpt[SMTP_PATH_MAX + 1];

	get_string(p, get_u32(p), rcpt, sizeof(rcpt));
	if (!packet_done(p))
		monitor_refuse("malformed RCPT");
	if (!addr_is_safe(rcpt))
		monitor_refuse("RCPT with an unsafe recipient");
	if (m->env.nrcpts >= m->cf->max_recipients)
		monitor_refuse("more RCPT requests than max-recipients");
	set_reply(&rr, 250, "2.1.5 Ok");
	if (sending_rcpt(&m->sending, m->env.nrcpts, &rr) == 0)
		(void)policy_service_allows(m, rcpt, NULL, -1, &rr);
	if (rr.code == 250)
		m->env.rcpts[m->env.nrcpts++] = xstrdup(rcpt);
	return send_reply(m, MSG_RCPT, &rr);
}

static int
queue_id_valid(const char *id)
{
	return strlen(id) == QUEUE_ID_LEN &&
	    strspn(id, "0123456789ABCDEF") == QUEUE_ID_LEN;
}

/*
 * The spool file a message has been in is never used again: not by the
 * session for the next message, whatever sendmail left running with its
 * copy.  -1 when no file can be made now (spool_open() logged why); the
 * next SPOOL tries again.
 */
static void
monitor_new_spool(struct monitor *m)
{
	if (m->spool != -1)
		close(m->spool);
	m->spool = spool_open(m->cf);
	m->spool_given = 0;
}

/*
 * The account as it is now, before each message: one locked, expired or
 * removed since the login sends nothing more on this connection.  0: go
 * on; -1: the reply is set; AUTH_GONE: the session left meanwhile.
 */
static int
account_still_ok(struct monitor *m, struct relay_reply *rr)
{
	struct auth_bounds	 bounds;
	const char		*reason = "";
	char			 canon[AUTH_USER_MAX + 1];

	bounds.cf = m->cf;
	bounds.peer = m->peer;
	bounds.channel = m->channel;
	bounds.session = m->session;
	switch (auth_bounded(&bounds, "ACCOUNT", m->user, NULL, canon,
	    sizeof(canon), &reason)) {
	case AUTH_OK:
		return 0;
	case AUTH_GONE:
		return AUTH_GONE;
	case AUTH_FAIL:
		m->account_refused = 1;
		log_denied(m, "DATA", reason, NULL);
		set_reply(rr, 550, account_refused_text);
		return -1;
	default:
		log_denied(m, "DATA", reason[0] != '\0' ? reason :
		    "unavailable", NULL);
		set_reply(rr, 451, "4.7.0 Cannot check the account now, try "
		    "later");
		return -1;
	}
}

/*
 * A copy of the spool file that only the monitor holds, or -1 (logged).
 * The session keeps its writable descriptor of the spool after SUBMIT: a
 * subverted one could rewrite the message between the checks and
 * sendmail's read of it (a From: changed once sender-header-check had
 * passed).  The checks and sendmail read the copy, so what is delivered
 * is what was checked.
 */
static int
spool_snapshot(struct monitor *m)
{
	char	 buf[65536];
	off_t	 in = 0;
	ssize_t	 n, w, off;
	int	 fd;

	if ((fd = spool_open(m->cf)) == -1)
		return -1;
	for (;;) {
		n = copy_file_range(m->spool, &in, fd, NULL, 1 << 30, 0);
		if (n == 0)
			return fd;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EINVAL &&
		    errno != EOPNOTSUPP)
			goto fail;
		break;		/* not between these files: by hand */
	}
	for (;;) {
		n = pread(m->spool, buf, sizeof(buf), in);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0)
			return fd;
		for (off = 0; off < n;) {
			w = write(fd, buf + off, (size_t)(n - off));
			if (w == -1 && errno == EINTR)
				continue;
			if (w <= 0)
				goto fail;
			off += w;
		}
		in += n;
	}
fail:
	log_msg(LOG_ERR, "spool: %s (copying the message)", strerror(errno));
	close(fd);
	return -1;
}

/* The approved envelope, with the message in the spool, to sendmail. */
static int
monitor_submit(struct monitor *m, struct packet *p)
{
	struct relay_reply	 rr;
	char			 id[QUEUE_ID_LEN + 1];
	int			 rc, snap = -1;

	get_bytes(p, id, QUEUE_ID_LEN);
	id[QUEUE_ID_LEN] = '\0';
	if (!packet_done(p) || !queue_id_valid(id))
		monitor_refuse("malformed SUBMIT");
	/* The account check forks: no child gets the store. */
	sending_release(&m->sending);
	if (m->spool == -1 || (snap = spool_snapshot(m)) == -1) {
		/* No file since the last one failed, and no SPOOL asked. */
		set_reply(&rr, 451, "4.3.0 Local error in processing");
	} else if ((rc = account_still_ok(m, &rr)) == AUTH_GONE) {
		close(snap);
		return -1;
	} else if (rc == 0 && sender_allowed(m, "DATA", m->env.sender,
	    &rr) == 0 && headers_allowed(m, snap, &rr) == 0 &&
	    policy_service_allows(m, NULL, id, snap, &rr) == 0 &&
	    sending_reserve(&m->sending, id, m->env.nrcpts, &rr) == 0) {
		relay_submit(m->cf, &m->env, snap, m->user, id, &rr);
		sending_settle(&m->sending, id, rr.code == 250);
	}
	if (snap != -1)
		close(snap);
	if (rr.code == 250)
		m->messages++;
	monitor_new_spool(m);
	transaction_reset(m);
	return send_reply(m, MSG_SUBMIT, &rr);
}

/* ---- SPOOL ---- */

/*
 * A file handed out before and not submitted (a message refused for its
 * size, say) is replaced: each message is alone in its file.
 */
static int
monitor_spool(struct monitor *m, struct packet *p)
{
	struct packet	 reply;

	if (!packet_done(p))
		monitor_refuse("malformed SPOOL");
	if (m->spool == -1 || m->spool_given)
		monitor_new_spool(m);
	if (m->spool != -1)
		m->spool_given = 1;
	packet_start(&reply, MSG_SPOOL);
	put_u32(&reply, m->spool != -1 ? SPOOL_OK : SPOOL_NONE);
	return packet_send_fd(m->channel, &reply, m->spool);
}

/* ---- the loop ---- */

/*
 * Answers until the session closes the channel, or can no longer be
 * answered (it died while the monitor was at work).
 */
static void
monitor_loop(struct monitor *m)
{
	const struct request	*r;
	struct packet		 p;
	uint32_t		 type;
	size_t			 i;

	while (packet_recv(m->channel, &p) == 0) {
		type = get_u32(&p);
		for (r = NULL, i = 0; i < NREQUESTS && r == NULL; i++)
			if (requests[i].type == type)
				r = &requests[i];
		if (r == NULL)
			monitor_refuse("unknown request");
		check_order(m, r);
		if (r->handler(m, &p) == -1)
			return;
	}
}

/*
 * The monitor's whole life once the session is forked: the verdict on
 * the client's address (READY), the requests, then the session's end.
 * Returns the monitor's exit status.
 */
int
monitor_run(const struct config *cf, const char *peer, pid_t session,
    int channel, int spool)
{
	struct monitor	 m;
	struct packet	 ready;
	char		 esc[ESC_MAX];
	int		 status;

	memset(&m, 0, sizeof(m));
	m.cf = cf;
	m.peer = peer;
	m.session = session;
	m.channel = channel;
	m.spool = spool;
	/* The store is opened only now: the session never holds it. */
	limits_init(&m.limits, cf, peer);
	m.blocked = limits_connect(&m.limits) != NULL;
	packet_start(&ready, MSG_READY);
	put_u32(&ready, m.blocked ? 1 : 0);
	if (packet_send(channel, &ready) == -1)
		log_msg(LOG_ERR, "monitor: the session is gone before it began");
	monitor_loop(&m);
	sending_release(&m.sending);
	transaction_reset(&m);
	close(m.channel);
	if (m.spool != -1)
		close(m.spool);
	while (waitpid(session, &status, 0) == -1)
		if (errno != EINTR)
			return EX_SOFTWARE_;
	if (WIFSIGNALED(status)) {
		log_msg(LOG_ERR, "session ip=%s: killed by signal %d%s", peer,
		    WTERMSIG(status), WTERMSIG(status) == SIGSYS ?
		    " (a system call the seccomp filter does not allow)" : "");
		/* The session's own line never came: the record is here. */
		log_msg(LOG_INFO, "disconnect ip=%s user=%s reason=killed "
		    "commands=- messages=%llu", peer, m.authenticated ?
		    log_escape(m.user, esc, sizeof(esc)) : "-",
		    (unsigned long long)m.messages);
		return EX_SOFTWARE_;
	}
	return WEXITSTATUS(status);
}
