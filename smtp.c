/*
 * smtp.c - the SMTP server state machine of one connection (RFC 5321 with
 * RFC 6409 submission, RFC 4954 AUTH, RFC 2920 PIPELINING, RFC 1870 SIZE,
 * RFC 6152 8BITMIME, RFC 2034 enhanced status codes).
 *
 * The command table is the spine: one row per verb says which handler runs
 * it, what state it needs and whether its reply must go out at once.  The
 * dispatcher enforces the state; handlers only do their own verb.  Replies
 * are buffered and flushed when the client has nothing more pipelined, or
 * when a verb needs an answer before the client can go on.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "smtpauthd.h"

#define SPOOL_BUF_SIZE	65536

struct session {
	const struct config	*cf;
	struct io		*io;
	const char		*peer;
	char			 helo[HOSTNAME_MAX + 1];
	int			 ehlo;		/* EHLO (not HELO) was given */
	int			 authenticated;
	char			 user[AUTH_USER_MAX + 1];
	int			 in_mail;
	struct envelope		 env;
	/*
	 * The transaction's, made when MAIL is accepted ("" outside one):
	 * its refusals, the Received: header, sendmail's log lines and the
	 * queued line all name it, so grep id= finds the whole story.
	 */
	char			 queue_id[QUEUE_ID_LEN + 1];
	uint64_t		 errors;
	uint64_t		 auth_failures;
	uint64_t		 commands;
	uint64_t		 messages;
	uint64_t		 junk;		/* NOOP, RSET, VRFY, HELP */
	/*
	 * login-grace-time runs out here (INT64_MAX: never): until a
	 * successful AUTH, no read waits past it.
	 */
	int64_t			 login_deadline_ms;
	struct ssl_ctx_st	*starttls_ctx;	/* NULL: STARTTLS unavailable */
	const struct backend	*backend;	/* auth and submit */
	char			 tls_version[32];	/* "none" until TLS */
	char			 tls_cipher[64];
	const char		*log_cmd;	/* verb whose refusals are logged */
	const char		*close_reason;	/* set: the session is over */
};

struct smtp_cmd {
	const char	*verb;
	void		(*handler)(struct session *, char *arg);
	unsigned	 flags;
};

#define CMD_FLUSH	0x01	/* the client waits for this reply */
#define CMD_NEED_HELO	0x02
#define CMD_NEED_AUTH	0x04
#define CMD_NEED_MAIL	0x08
#define CMD_NEED_RCPT	0x10
#define CMD_LOG_REFUSAL	0x20	/* 4xx/5xx replies go to the log */
#define CMD_JUNK	0x40	/* counts towards max-junk-commands */

static void cmd_helo(struct session *, char *);
static void cmd_ehlo(struct session *, char *);
static void cmd_auth(struct session *, char *);
static void cmd_mail(struct session *, char *);
static void cmd_rcpt(struct session *, char *);
static void cmd_data(struct session *, char *);
static void cmd_rset(struct session *, char *);
static void cmd_noop(struct session *, char *);
static void cmd_quit(struct session *, char *);
static void cmd_vrfy(struct session *, char *);
static void cmd_help(struct session *, char *);
static void cmd_starttls(struct session *, char *);
static void cmd_not_implemented(struct session *, char *);

static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO", cmd_ehlo, CMD_FLUSH },
	{ "HELO", cmd_helo, CMD_FLUSH },
	{ "AUTH", cmd_auth, CMD_FLUSH },
	{ "MAIL", cmd_mail, CMD_NEED_HELO | CMD_NEED_AUTH | CMD_LOG_REFUSAL },
	{ "RCPT", cmd_rcpt, CMD_NEED_HELO | CMD_NEED_AUTH | CMD_NEED_MAIL |
	    CMD_LOG_REFUSAL },
	{ "DATA", cmd_data, CMD_FLUSH | CMD_NEED_HELO | CMD_NEED_AUTH |
	    CMD_NEED_MAIL | CMD_NEED_RCPT | CMD_LOG_REFUSAL },
	{ "RSET", cmd_rset, CMD_JUNK },
	{ "NOOP", cmd_noop, CMD_FLUSH | CMD_JUNK },
	{ "QUIT", cmd_quit, CMD_FLUSH },
	{ "VRFY", cmd_vrfy, CMD_FLUSH | CMD_JUNK },
	{ "HELP", cmd_help, CMD_FLUSH | CMD_JUNK },
	{ "STARTTLS", cmd_starttls, CMD_FLUSH },
	{ "EXPN", cmd_not_implemented, CMD_FLUSH },
	{ "ETRN", cmd_not_implemented, CMD_FLUSH },
	{ "TURN", cmd_not_implemented, CMD_FLUSH },
	{ "BDAT", cmd_not_implemented, CMD_FLUSH },
	{ "SEND", cmd_not_implemented, CMD_FLUSH },
	{ "SOML", cmd_not_implemented, CMD_FLUSH },
	{ "SAML", cmd_not_implemented, CMD_FLUSH },
};

#define NCMDS	(sizeof(smtp_cmds) / sizeof(smtp_cmds[0]))

/* ---- replies ---- */

static const char *
user_or_dash(const struct session *s)
{
	return s->authenticated ? s->user : "-";
}

static void
reply(struct session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A refusal's log line.  The keys fail2ban filters and scripts read come
 * first, in their old order; from= (once MAIL was accepted) and id= (once
 * the transaction has one) follow, so that a refused recipient is found
 * with the sender and the queue id of its transaction.
 */
static void
log_rejected(const struct session *s, int code, const char *text)
{
	char	 esc_user[ESC_MAX], esc_from[ESC_MAX], from[ESC_MAX + 8];
	char	 id[QUEUE_ID_LEN + 8];

	from[0] = id[0] = '\0';
	if (s->in_mail)
		snprintf(from, sizeof(from), " from=<%s>", log_escape(
		    s->env.sender, esc_from, sizeof(esc_from)));
	if (s->queue_id[0] != '\0')
		snprintf(id, sizeof(id), " id=%s", s->queue_id);
	log_msg(LOG_INFO, "rejected ip=%s user=%s cmd=%s reply=\"%d %s\"%s%s",
	    s->peer, log_escape(user_or_dash(s), esc_user, sizeof(esc_user)),
	    s->log_cmd, code, text, from, id);
}

static void
reply(struct session *s, int code, const char *fmt, ...)
{
	char	 text[512];
	va_list	 ap;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above; the analyzer cannot model it when it inlines a variadic call */
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	io_printf(s->io, "%d %s\r\n", code, text);
	if (code >= 400 && s->log_cmd != NULL)
		log_rejected(s, code, text);
}

static void
close_session(struct session *s, const char *reason)
{
	if (s->close_reason == NULL)
		s->close_reason = reason;
}

/*
 * A 5xx for a syntax or sequence error.  These are counted: the one that
 * reaches max-errors is answered 421 and ends the session, so a client
 * cannot probe for ever.
 */
static void
reply_error(struct session *s, int code, const char *text)
{
	if (++s->errors >= s->cf->max_errors) {
		reply(s, 421, "4.7.0 %s Too many errors, closing connection",
		    s->cf->hostname);
		close_session(s, "errors");
		return;
	}
	reply(s, code, "%s", text);
}

/* ---- time limits on reads ---- */

static int
login_grace_applies(const struct session *s)
{
	return s->login_deadline_ms != INT64_MAX && !s->authenticated;
}

static int
login_grace_over(const struct session *s)
{
	return login_grace_applies(s) && now_ms() >= s->login_deadline_ms;
}

/*
 * The deadline of one read that may take `seconds`.  Before a successful
 * AUTH it is never later than the login grace deadline, so that no mix of
 * idling, NOOPs, slow lines and unanswered AUTH prompts holds a connection
 * that has not logged in for longer than login-grace-time.
 */
static int64_t
read_deadline(const struct session *s, uint64_t seconds)
{
	int64_t deadline = now_ms() + (int64_t)seconds * 1000;

	if (login_grace_applies(s) && s->login_deadline_ms < deadline)
		deadline = s->login_deadline_ms;
	return deadline;
}

/* A read ran out of time: say whose limit it was, and end the session. */
static void
read_timed_out(struct session *s)
{
	if (login_grace_over(s)) {
		reply(s, 421, "4.4.2 %s Login grace time exceeded",
		    s->cf->hostname);
		close_session(s, "login-grace-time");
		return;
	}
	reply(s, 421, "4.4.2 %s Error: timeout exceeded", s->cf->hostname);
	close_session(s, "timeout");
}

/* ---- the transaction ---- */

static void
envelope_reset(struct session *s)
{
	size_t i;

	for (i = 0; i < s->env.nrcpts; i++)
		free(s->env.rcpts[i]);
	free(s->env.rcpts);
	memset(&s->env, 0, sizeof(s->env));
	s->in_mail = 0;
	s->queue_id[0] = '\0';
}

/* ---- HELO, EHLO and the rest of the small verbs ---- */

/* One word of printable ASCII: enough to log it and put it in a header. */
static int
helo_acceptable(const char *arg)
{
	size_t i;

	for (i = 0; arg[i] != '\0'; i++)
		if (arg[i] <= ' ' || arg[i] >= 0x7f)
			return 0;
	return i > 0 && i <= HOSTNAME_MAX;
}

/*
 * The one place that decides whether AUTH is available: EHLO advertises it
 * and AUTH accepts it on exactly the same condition.
 */
static int
auth_offered(const struct session *s)
{
	return s->io->tls != NULL || !s->cf->auth_require_tls;
}

/*
 * Not after AUTH (possible in plaintext only with auth-require-tls no):
 * RFC 3207 would have the login forgotten, and the monitor, which checked
 * that login, allows no second one.
 */
static int
starttls_offered(const struct session *s)
{
	return s->cf->tls == TLS_STARTTLS && s->starttls_ctx != NULL &&
	    s->io->tls == NULL && !s->authenticated;
}

static int
greet(struct session *s, char *arg, const char *verb)
{
	if (!helo_acceptable(arg)) {
		char text[64];

		snprintf(text, sizeof(text), "5.5.4 Syntax: %s hostname", verb);
		reply_error(s, 501, text);
		return -1;
	}
	envelope_reset(s);
	snprintf(s->helo, sizeof(s->helo), "%s", arg);
	return 0;
}

static void
cmd_helo(struct session *s, char *arg)
{
	if (greet(s, arg, "HELO") == 0) {
		s->ehlo = 0;
		reply(s, 250, "%s", s->cf->hostname);
	}
}

static void
cmd_ehlo(struct session *s, char *arg)
{
	struct io *io = s->io;

	if (greet(s, arg, "EHLO") == -1)
		return;
	s->ehlo = 1;
	io_printf(io, "250-%s\r\n", s->cf->hostname);
	io_printf(io, "250-PIPELINING\r\n");
	io_printf(io, "250-SIZE %llu\r\n",
	    (unsigned long long)s->cf->max_message_size);
	io_printf(io, "250-8BITMIME\r\n");
	if (starttls_offered(s))
		io_printf(io, "250-STARTTLS\r\n");
	if (auth_offered(s))
		io_printf(io, "250-AUTH PLAIN LOGIN\r\n");
	io_printf(io, "250 ENHANCEDSTATUSCODES\r\n");
}

static void
/* cppcheck-suppress constParameter ; its type is the command table's */
cmd_rset(struct session *s, char *arg)
{
	if (*arg != '\0') {
		reply_error(s, 501, "5.5.4 Syntax: RSET");
		return;
	}
	envelope_reset(s);
	reply(s, 250, "2.0.0 Ok");
}

static void
cmd_noop(struct session *s, char *arg)
{
	(void)arg;
	reply(s, 250, "2.0.0 Ok");
}

static void
cmd_quit(struct session *s, char *arg)
{
	(void)arg;
	reply(s, 221, "2.0.0 %s closing connection", s->cf->hostname);
	close_session(s, "quit");
}

static void
cmd_vrfy(struct session *s, char *arg)
{
	(void)arg;
	reply(s, 252, "2.5.0 Cannot VRFY user, but will accept message");
}

static void
cmd_help(struct session *s, char *arg)
{
	(void)arg;
	reply(s, 214, "2.0.0 Commands: EHLO HELO%s AUTH MAIL RCPT DATA RSET "
	    "NOOP QUIT VRFY HELP", starttls_offered(s) ? " STARTTLS" : "");
}

static void
note_tls(struct session *s)
{
	if (s->io->tls == NULL)
		snprintf(s->tls_version, sizeof(s->tls_version), "none");
	else
		tls_describe(s->io->tls, s->tls_version,
		    sizeof(s->tls_version), s->tls_cipher,
		    sizeof(s->tls_cipher));
}

/*
 * RFC 3207.  After the handshake the session starts over: nothing the
 * client said in plaintext (HELO, AUTH, a transaction, pipelined lines)
 * survives into the protected session.
 */
static void
/* cppcheck-suppress constParameter ; its type is the command table's */
cmd_starttls(struct session *s, char *arg)
{
	struct ssl_st *ssl;

	if (s->cf->tls == TLS_NONE) {
		reply_error(s, 502, "5.5.1 Command not implemented");
		return;
	}
	if (s->io->tls != NULL) {
		reply_error(s, 503, "5.5.1 TLS already active");
		return;
	}
	if (*arg != '\0') {
		reply_error(s, 501, "5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->authenticated) {
		reply_error(s, 503, "5.5.1 STARTTLS not allowed after AUTH");
		return;
	}
	if (s->starttls_ctx == NULL) {
		reply(s, 454, "4.7.0 TLS not available due to local problem");
		return;
	}
	reply(s, 220, "2.0.0 Ready to start TLS");
	if (io_flush(s->io) == -1) {
		close_session(s, "write-error");
		return;
	}
	io_discard_input(s->io);
	ssl = tls_accept(s->starttls_ctx, s->io->infd, s->io->outfd,
	    read_deadline(s, s->cf->timeout), s->peer);
	if (ssl == NULL) {
		/* No reply: half a handshake leaves nothing to say it on. */
		close_session(s, login_grace_over(s) ? "login-grace-time" :
		    "tls-failed");
		return;
	}
	io_start_tls(s->io, ssl);
	envelope_reset(s);
	s->helo[0] = '\0';
	s->ehlo = 0;
	s->authenticated = 0;
	s->user[0] = '\0';
	note_tls(s);
}

static void
cmd_not_implemented(struct session *s, char *arg)
{
	(void)arg;
	reply_error(s, 502, "5.5.1 Command not implemented");
}

/* ---- AUTH ---- */

enum auth_step { STEP_OK, STEP_CANCEL, STEP_MALFORMED, STEP_TOOLONG,
    STEP_GONE };

/* Read one AUTH continuation line; "*" cancels (RFC 4954 4). */
static int
auth_read_line(struct session *s, const char *challenge, char *line,
    size_t size, size_t *lenp)
{
	int rc;

	io_printf(s->io, "334 %s\r\n", challenge);
	if (io_flush(s->io) == -1) {
		close_session(s, "write-error");
		return STEP_GONE;
	}
	/* A response pipelined before the grace time ran out is late too. */
	if (login_grace_over(s))
		rc = IO_TIMEOUT;
	else
		rc = io_getline(s->io, line, size, SMTP_AUTH_LINE_MAX,
		    read_deadline(s, s->cf->timeout), lenp);
	if (rc == IO_TOOLONG)
		return STEP_TOOLONG;
	if (rc == IO_TIMEOUT) {
		read_timed_out(s);
		return STEP_GONE;
	}
	if (rc != IO_OK) {
		close_session(s, rc == IO_EOF ? "eof" : "read-error");
		return STEP_GONE;
	}
	/* A NUL would cut the line short of what the client sent. */
	if (memchr(line, '\0', *lenp) != NULL || memchr(line, '\r', *lenp))
		return STEP_MALFORMED;
	if (strcmp(line, "*") == 0)
		return STEP_CANCEL;
	return STEP_OK;
}

/* Decode a client response; "=" is the empty initial response. */
static int
auth_decode(const char *in, unsigned char *out, size_t outsize, size_t *outlen)
{
	if (strcmp(in, "=") == 0) {
		*outlen = 0;
		return 0;
	}
	return base64_decode(in, strlen(in), out, outsize, outlen);
}

struct auth_attempt {
	const char	*mech;
	char		 user[AUTH_USER_MAX + 2];
	char		 pass[AUTH_PASS_MAX + 2];
	const char	*reason;
	/*
	 * When the last credential arrived.  The failure delay runs from
	 * here, so it also hides how long the backend took.
	 */
	int64_t		 done_ms;
};

/* Get a response (initial or by challenge) decoded into buf. */
static int
auth_response(struct session *s, const char *initial, const char *challenge,
    unsigned char *buf, size_t size, size_t *len)
{
	char	 line[SMTP_AUTH_LINE_MAX + 1];
	size_t	 linelen;
	int	 rc = STEP_OK;

	if (initial == NULL) {
		rc = auth_read_line(s, challenge, line, sizeof(line), &linelen);
		initial = line;
	}
	if (rc == STEP_OK && auth_decode(initial, buf, size, len) == -1)
		rc = STEP_MALFORMED;
	explicit_bzero(line, sizeof(line));
	return rc;
}

static int
auth_plain(struct session *s, const char *ir, struct auth_attempt *a)
{
	unsigned char	 buf[SMTP_AUTH_LINE_MAX];
	size_t		 len;
	int		 rc, split;

	rc = auth_response(s, ir, "", buf, sizeof(buf), &len);
	if (rc == STEP_OK) {
		split = sasl_plain_split(buf, len, a->user, sizeof(a->user),
		    a->pass, sizeof(a->pass));
		if (split == -2)
			a->reason = "authzid";
		else if (split == -1)
			rc = STEP_MALFORMED;
	}
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

/*
 * A LOGIN field.  One that hides a NUL or is longer than any we accept is
 * marked unusable rather than cut, so that no prefix of it is ever tried.
 */
static int
auth_login_field(struct session *s, const char *ir, const char *challenge,
    char *out, size_t outsize, int *unusable)
{
	unsigned char	 buf[SMTP_AUTH_LINE_MAX];
	size_t		 len;
	int		 rc;

	rc = auth_response(s, ir, challenge, buf, sizeof(buf), &len);
	if (rc == STEP_OK) {
		*unusable = len >= outsize || memchr(buf, '\0', len) != NULL;
		if (len >= outsize)
			len = outsize - 1;
		memcpy(out, buf, len);
		out[len] = '\0';
	}
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

static int
auth_login(struct session *s, const char *ir, struct auth_attempt *a)
{
	int rc, bad_user = 0, bad_pass = 0;

	/* "Username:" and "Password:", as every LOGIN client expects. */
	rc = auth_login_field(s, ir, "VXNlcm5hbWU6", a->user, sizeof(a->user),
	    &bad_user);
	if (rc == STEP_OK)
		rc = auth_login_field(s, NULL, "UGFzc3dvcmQ6", a->pass,
		    sizeof(a->pass), &bad_pass);
	if (rc == STEP_OK && bad_user)
		a->reason = "bad-username";
	else if (rc == STEP_OK && bad_pass)
		a->reason = "bad-password";
	return rc;
}

/*
 * checked: the backend (the monitor) decided, and logged it and waited
 * out the delay itself; otherwise the session refused the attempt without
 * asking, and does both here.
 */
static void
auth_failed(struct session *s, struct auth_attempt *a, int code,
    const char *text, int checked)
{
	if (!checked) {
		auth_log_result(AUTH_FAIL, a->user, a->mech, s->peer,
		    a->reason, s->tls_version);
		sleep_until(auth_failure_deadline(s->cf, a->done_ms));
	} else
		sleep_until(a->done_ms +
		    (int64_t)s->cf->auth_failure_delay * 1000);
	/*
	 * A temporary failure counts too: the monitor allows no more AUTH
	 * requests than max-auth-failures, whatever their outcome.
	 */
	if (++s->auth_failures >= s->cf->max_auth_failures) {
		reply(s, 421, "4.7.0 %s Too many authentication failures",
		    s->cf->hostname);
		close_session(s, "auth-failures");
		return;
	}
	reply(s, code, "%s", text);
}

static const char bad_credentials[] = "5.7.8 Authentication credentials invalid";

static void
auth_run(struct session *s, struct auth_attempt *a)
{
	char	canon[AUTH_USER_MAX + 1];
	int	rc;

	/* What no backend may see is refused here, before asking one. */
	if (a->reason == NULL && !auth_user_acceptable(a->user,
	    strlen(a->user)))
		a->reason = "bad-username";
	if (a->reason == NULL && a->pass[0] == '\0')
		a->reason = "empty-password";
	if (a->reason == NULL && strlen(a->pass) > AUTH_PASS_MAX)
		a->reason = "bad-password";
	if (a->reason != NULL) {
		auth_failed(s, a, 535, bad_credentials, 0);
		return;
	}
	rc = s->backend->auth(s->cf, a->mech, a->user, a->pass, s->peer,
	    s->tls_version, canon, sizeof(canon), &a->reason);
	if (rc == AUTH_OK) {
		s->authenticated = 1;
		snprintf(s->user, sizeof(s->user), "%s", canon);
		/* ps and pgrep -f find a user's connections (proctitle.c). */
		proc_title_set_confined("smtpauthd: %s@%s", s->user, s->peer);
		reply(s, 235, "2.7.0 Authentication successful");
	} else if (rc == AUTH_GONE)
		close_session(s, "eof");	/* not a failure: no one to tell */
	else if (rc == AUTH_BLOCKED) {
		/* The monitor logged it; no delay: nothing was checked. */
		reply(s, 421, "4.7.0 %s Too many authentication failures from "
		    "your address, try later", s->cf->hostname);
		close_session(s, "auth-limit");
	} else if (rc == AUTH_TEMPFAIL)
		auth_failed(s, a, 454, "4.7.0 Temporary authentication failure",
		    1);
	else
		auth_failed(s, a, 535, bad_credentials, 1);
}

static void
cmd_auth(struct session *s, char *arg)
{
	struct auth_attempt	 a;
	char			*mech, *ir;
	int			 rc;

	if (!s->ehlo) {
		reply_error(s, 503, "5.5.1 Send EHLO first");
		return;
	}
	if (s->authenticated) {
		reply_error(s, 503, "5.5.1 Already authenticated");
		return;
	}
	if (s->in_mail) {
		reply_error(s, 503, "5.5.1 AUTH not allowed during a mail "
		    "transaction");
		return;
	}
	if (!auth_offered(s)) {
		/*
		 * Logged as a refusal (rejected ... cmd=AUTH), not as an
		 * auth line: no password was checked, and fail2ban's filter
		 * must not count a client that forgot STARTTLS as a guess.
		 * Its sysadmin learns which client sends credentials in
		 * the clear.
		 */
		s->log_cmd = "AUTH";
		reply_error(s, 538, "5.7.11 Encryption required for requested "
		    "authentication mechanism");
		return;
	}
	mech = arg;
	ir = strchr(arg, ' ');
	if (ir != NULL)
		*ir++ = '\0';
	if (*mech == '\0' || (ir != NULL && (*ir == '\0' ||
	    strchr(ir, ' ') != NULL))) {
		reply_error(s, 501, "5.5.4 Syntax: AUTH mechanism "
		    "[initial-response]");
		return;
	}
	memset(&a, 0, sizeof(a));
	if (strcasecmp(mech, "PLAIN") == 0) {
		a.mech = "PLAIN";
		rc = auth_plain(s, ir, &a);
	} else if (strcasecmp(mech, "LOGIN") == 0) {
		a.mech = "LOGIN";
		rc = auth_login(s, ir, &a);
	} else {
		reply_error(s, 504, "5.5.4 Unrecognized authentication "
		    "mechanism");
		return;
	}
	a.done_ms = now_ms();
	if (rc == STEP_CANCEL) {
		a.reason = "cancelled";
		auth_failed(s, &a, 501, "5.0.0 Authentication cancelled", 0);
	} else if (rc == STEP_MALFORMED) {
		a.reason = "malformed";
		auth_failed(s, &a, 501, "5.5.2 Cannot decode response", 0);
	} else if (rc == STEP_TOOLONG) {
		a.reason = "malformed";
		auth_failed(s, &a, 500, "5.5.6 Authentication exchange line "
		    "is too long", 0);
	} else if (rc == STEP_OK)
		auth_run(s, &a);
	explicit_bzero(&a, sizeof(a));
	if (ir != NULL)
		explicit_bzero(ir, strlen(ir));
}

/* ---- MAIL and RCPT ---- */

#define PARAM_SIZE	0x01
#define PARAM_BODY	0x02
#define PARAM_AUTH	0x04

/* An xtext (RFC 3461 4): printable ASCII, no '=' or space. */
static int
xtext_acceptable(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < '!' || *s > '~' || *s == '=')
			return 0;
	return 1;
}

static int
parse_size(const char *v, uint64_t *size)
{
	uint64_t n = 0;

	if (*v == '\0' || strlen(v) > 20)
		return -1;
	for (; *v != '\0'; v++) {
		if (*v < '0' || *v > '9')
			return -1;
		if (n > (UINT64_MAX - (uint64_t)(*v - '0')) / 10)
			n = UINT64_MAX;		/* too big either way */
		else
			n = n * 10 + (uint64_t)(*v - '0');
	}
	*size = n;
	return 0;
}

/*
 * MAIL parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 4954 AUTH).  Replies
 * itself and returns -1 when one is refused.
 */
static int
mail_params(struct session *s, char *params)
{
	char		*p, *value;
	unsigned	 seen = 0, bit;

	while ((p = strsep(&params, " ")) != NULL) {
		if (*p == '\0')
			continue;
		if (!s->ehlo) {
			reply_error(s, 555, "5.5.4 Parameters need EHLO");
			return -1;
		}
		if ((value = strchr(p, '=')) != NULL)
			*value++ = '\0';
		if (strcasecmp(p, "SIZE") == 0)
			bit = PARAM_SIZE;
		else if (strcasecmp(p, "BODY") == 0)
			bit = PARAM_BODY;
		else if (strcasecmp(p, "AUTH") == 0)
			bit = PARAM_AUTH;
		else {
			reply_error(s, 555, "5.5.4 Unsupported parameter");
			return -1;
		}
		if (seen & bit) {
			reply_error(s, 501, "5.5.4 Duplicate parameter");
			return -1;
		}
		seen |= bit;
		if (bit == PARAM_SIZE) {
			if (value == NULL ||
			    parse_size(value, &s->env.declared_size) == -1) {
				reply_error(s, 501, "5.5.4 Bad SIZE value");
				return -1;
			}
			if (s->env.declared_size > s->cf->max_message_size) {
				reply(s, 552, "5.3.4 Message size exceeds "
				    "fixed limit");
				return -1;
			}
		} else if (bit == PARAM_BODY) {
			if (value != NULL && strcasecmp(value, "8BITMIME") == 0)
				s->env.body_8bit = 1;
			else if (value == NULL || strcasecmp(value, "7BIT") != 0) {
				reply_error(s, 501, "5.5.4 Bad BODY value");
				return -1;
			}
		} else if (value == NULL || *value == '\0' ||
		    !xtext_acceptable(value)) {
			reply_error(s, 501, "5.5.4 Bad AUTH value");
			return -1;
		}
	}
	return 0;
}

/* "FROM:" or "TO:", then the path; returns what follows the path. */
static int
parse_path_arg(char *arg, const char *prefix,
    int allow_null, char *out, size_t outsize, char **rest)
{
	const char	*after;
	size_t		 plen = strlen(prefix);
	int		 rc;

	if (strncasecmp(arg, prefix, plen) != 0)
		return ADDR_SYNTAX;
	arg += plen;
	while (*arg == ' ')
		arg++;
	rc = addr_parse_path(arg, allow_null, out, outsize, &after);
	if (rc == ADDR_OK && *after != '\0' && *after != ' ')
		rc = ADDR_SYNTAX;
	if (rc == ADDR_OK)
		*rest = (char *)after;
	return rc;
}

/*
 * What the backend refused: a permanent refusal counts against
 * max-errors, as Postfix counts its 5xx, so that a client cannot try one
 * sender after another for ever.
 */
static void
backend_refused(struct session *s, const struct relay_reply *rr)
{
	if (rr->code >= 500)
		reply_error(s, rr->code, rr->text);
	else
		reply(s, rr->code, "%s", rr->text);
	/* 421 (a policy server's, say) means what it says: closing. */
	if (rr->code == 421)
		close_session(s, "policy");
}

/* For backends that check nothing: every sender and recipient is taken. */
int
smtp_any_sender(const struct config *cf, const char *sender,
    struct relay_reply *rr)
{
	(void)cf;
	(void)sender;
	rr->code = 250;
	snprintf(rr->text, sizeof(rr->text), "2.1.0 Ok");
	return 0;
}

int
smtp_any_rcpt(const struct config *cf, const char *rcpt,
    struct relay_reply *rr)
{
	(void)cf;
	(void)rcpt;
	rr->code = 250;
	snprintf(rr->text, sizeof(rr->text), "2.1.5 Ok");
	return 0;
}

static void
cmd_mail(struct session *s, char *arg)
{
	struct relay_reply	 rr;
	char			*params;
	int			 rc;

	if (s->in_mail) {
		reply_error(s, 503, "5.5.1 Nested MAIL command");
		return;
	}
	envelope_reset(s);
	rc = parse_path_arg(arg, "FROM:", 1, s->env.sender,
	    sizeof(s->env.sender), &params);
	/* A bare <postmaster> is a recipient (RFC 5321 4.1.1.3), not a sender. */
	if (rc == ADDR_OK && s->env.sender[0] != '\0' &&
	    strchr(s->env.sender, '@') == NULL)
		rc = ADDR_BAD;
	switch (rc) {
	case ADDR_OK:
		break;
	case ADDR_SYNTAX:
		reply_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
		return;
	case ADDR_QUOTED:
		reply_error(s, 553, "5.1.3 Quoted local parts are not accepted");
		return;
	default:
		reply_error(s, 501, "5.1.7 Bad sender address syntax");
		return;
	}
	if (mail_params(s, params) == -1) {
		envelope_reset(s);
		return;
	}
	if (s->backend->mail(s->cf, s->env.sender, &rr) == -1) {
		backend_refused(s, &rr);
		envelope_reset(s);
		return;
	}
	s->in_mail = 1;
	make_queue_id(s->queue_id);
	reply(s, rr.code, "%s", rr.text);
}

static void
cmd_rcpt(struct session *s, char *arg)
{
	struct relay_reply	 rr;
	char			 rcpt[SMTP_PATH_MAX + 1], *params;
	int			 rc;

	rc = parse_path_arg(arg, "TO:", 0, rcpt, sizeof(rcpt), &params);
	switch (rc) {
	case ADDR_OK:
		break;
	case ADDR_SYNTAX:
		reply_error(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
		return;
	case ADDR_QUOTED:
		reply_error(s, 553, "5.1.3 Quoted local parts are not accepted");
		return;
	default:
		reply_error(s, 553, "5.1.3 Bad recipient address syntax");
		return;
	}
	params += strspn(params, " ");
	if (*params != '\0') {
		reply_error(s, 555, "5.5.4 Unsupported parameter");
		return;
	}
	if (s->env.nrcpts >= s->cf->max_recipients) {
		reply(s, 452, "4.5.3 Too many recipients");
		return;
	}
	if (s->backend->rcpt(s->cf, rcpt, &rr) == -1) {
		backend_refused(s, &rr);
		return;
	}
	s->env.rcpts = reallocarray(s->env.rcpts, s->env.nrcpts + 1,
	    sizeof(*s->env.rcpts));
	if (s->env.rcpts == NULL)
		fatal("reallocarray");
	s->env.rcpts[s->env.nrcpts++] = xstrdup(rcpt);
	reply(s, rr.code, "%s", rr.text);
}

/* ---- DATA ---- */

struct spool {
	int			 fd;
	char			*buf;
	size_t			 len;
	int			 failed;
	struct msgid_scan	 msgid;	/* looks at what passes, once */
};

static int
spool_flush(struct spool *sp)
{
	size_t	 off = 0;
	ssize_t	 n;

	while (off < sp->len && !sp->failed) {
		n = write(sp->fd, sp->buf + off, sp->len - off);
		if (n > 0)
			off += (size_t)n;
		else if (n == -1 && errno == EINTR)
			continue;
		else {
			log_msg(LOG_ERR, "spool write: %s", n == -1 ?
			    strerror(errno) : "short write");
			sp->failed = 1;
		}
	}
	sp->len = 0;
	return sp->failed ? -1 : 0;
}

static int
spool_sink(void *arg, const char *buf, size_t len)
{
	struct spool *sp = arg;

	msgid_feed(&sp->msgid, buf, len);
	if (sp->len + len > SPOOL_BUF_SIZE && spool_flush(sp) == -1)
		return -1;
	memcpy(sp->buf + sp->len, buf, len);
	sp->len += len;
	return 0;
}

/* Read the message to its end; returns -1 if the session is over. */
static int
data_receive(struct session *s, struct data_parser *dp)
{
	const char	*buf;
	size_t		 len;
	int		 rc;

	while (!data_done(dp)) {
		buf = io_peek(s->io, &len);
		if (len > 0) {
			io_consume(s->io, data_feed(dp, buf, len));
			continue;
		}
		rc = io_fill(s->io, now_ms() +
		    (int64_t)s->cf->data_timeout * 1000);
		if (rc == IO_TIMEOUT) {
			reply(s, 421, "4.4.2 %s Error: timeout exceeded",
			    s->cf->hostname);
			close_session(s, "timeout");
			return -1;
		}
		if (rc < 0) {
			close_session(s, rc == IO_EOF ? "eof-in-data" :
			    "read-error");
			return -1;
		}
	}
	return 0;
}

/* What makes a received message unacceptable, or NULL. */
static const char *
data_verdict(const struct data_parser *dp, const struct spool *sp, int *code)
{
	*code = 554;
	if (dp->flags & DATA_TOO_BIG) {
		*code = 552;
		return "5.3.4 Message size exceeds fixed limit";
	}
	if (dp->flags & DATA_NUL)
		return "5.6.0 Message contains NUL characters";
	if (dp->flags & (DATA_BARE_CR | DATA_BARE_LF))
		return "5.6.0 Message contains bare CR or bare LF";
	if (dp->flags & DATA_LONG_LINE)
		return "5.6.0 Message contains lines longer than 998 characters";
	if (sp->failed || dp->sink_failed) {
		*code = 452;
		return "4.3.1 Insufficient system storage";
	}
	return NULL;
}

/*
 * The queued line's msgid=: escaped as one token, "..." when cut (at
 * MSGID_MAX octets, or by the escape), "-" when the message has none.
 */
static const char *
msgid_for_log(struct msgid_scan *m, char *buf, size_t size)
{
	const char	*v = msgid_value(m);
	size_t		 len;

	if (v == NULL)
		return "-";
	log_escape(v, buf, size);
	len = strlen(buf);
	if (m->cut && (len < 3 || strcmp(buf + len - 3, "...") != 0) &&
	    len + 4 <= size)
		memcpy(buf + len, "...", 4);
	return buf;
}

static void
data_deliver(struct session *s, int spool_fd, const char *queue_id,
    uint64_t size, struct msgid_scan *msgid)
{
	struct relay_reply	 rr;
	char			 esc_user[ESC_MAX], esc_from[ESC_MAX];
	char			 esc_msgid[ESC_MAX], esc_to[ESC_MAX];
	size_t			 i;

	s->backend->submit(s->cf, &s->env, spool_fd, s->user, queue_id, &rr);
	reply(s, rr.code, "%s", rr.text);
	if (rr.code != 250)
		return;
	s->messages++;
	/*
	 * As Postfix does: a client that delivers mail is working, whatever
	 * RSETs and NOOPs it sends between messages.
	 */
	s->junk = 0;
	log_msg(LOG_INFO, "queued id=%s user=%s from=<%s> nrcpt=%zu size=%llu "
	    "ip=%s tls=%s msgid=%s", queue_id, log_escape(s->user, esc_user,
	    sizeof(esc_user)), log_escape(s->env.sender, esc_from,
	    sizeof(esc_from)), s->env.nrcpts, (unsigned long long)size,
	    s->peer, s->tls_version, msgid_for_log(msgid, esc_msgid,
	    sizeof(esc_msgid)));
	/*
	 * One line each, in RCPT order: "who sent to this address, when,
	 * from where" is a grep for to=<...>, then one for its id=.
	 */
	for (i = 0; i < s->env.nrcpts; i++)
		log_msg(LOG_INFO, "recipient id=%s to=<%s>", queue_id,
		    log_escape(s->env.rcpts[i], esc_to, sizeof(esc_to)));
}

static void
/* cppcheck-suppress constParameter ; its type is the command table's */
cmd_data(struct session *s, char *arg)
{
	struct data_parser	 dp;
	struct spool		 sp;
	char			 queue_id[QUEUE_ID_LEN + 1], tls_info[128];
	const char		*verdict;
	int			 code;

	if (*arg != '\0') {
		reply_error(s, 501, "5.5.4 Syntax: DATA");
		return;
	}
	memset(&sp, 0, sizeof(sp));
	msgid_init(&sp.msgid);
	/* A copy: envelope_reset() clears the session's at the end. */
	memcpy(queue_id, s->queue_id, sizeof(queue_id));
	tls_info[0] = '\0';
	if (s->io->tls != NULL)
		snprintf(tls_info, sizeof(tls_info), "(using %s with cipher %s)",
		    s->tls_version, s->tls_cipher);
	if ((sp.fd = s->backend->spool(s->cf)) == -1 ||
	    relay_received(s->cf, sp.fd, s->helo, s->peer, queue_id, s->user,
	    &s->env, tls_info[0] != '\0' ? tls_info : NULL) == -1) {
		if (sp.fd != -1)
			close(sp.fd);
		reply(s, 451, "4.3.0 Local error in processing");
		return;
	}
	sp.buf = xcalloc(1, SPOOL_BUF_SIZE);
	reply(s, 354, "End data with <CR><LF>.<CR><LF>");
	if (io_flush(s->io) == -1)
		close_session(s, "write-error");
	data_init(&dp, s->cf->max_message_size, spool_sink, &sp);
	if (s->close_reason == NULL && data_receive(s, &dp) == 0) {
		s->log_cmd = "END-OF-MESSAGE";
		spool_flush(&sp);
		if ((verdict = data_verdict(&dp, &sp, &code)) != NULL)
			reply(s, code, "%s", verdict);
		else
			data_deliver(s, sp.fd, queue_id, dp.size, &sp.msgid);
	}
	close(sp.fd);
	free(sp.buf);
	envelope_reset(s);
}

/* ---- the command loop ---- */

static const struct smtp_cmd *
find_cmd(const char *verb)
{
	size_t i;

	for (i = 0; i < NCMDS; i++)
		if (strcasecmp(smtp_cmds[i].verb, verb) == 0)
			return &smtp_cmds[i];
	return NULL;
}

/*
 * A junk command past max-junk-commands ends the session: they cost
 * nothing to send and do nothing, the tool of a client that only wants
 * to hold the connection.
 */
static int
junk_exceeded(struct session *s)
{
	if (s->cf->max_junk_commands == 0 ||
	    ++s->junk <= s->cf->max_junk_commands)
		return 0;
	reply(s, 421, "4.7.0 %s Too many junk commands, closing connection",
	    s->cf->hostname);
	close_session(s, "junk-commands");
	return 1;
}

/*
 * HTTP request methods (RFC 9110 9, and HTTP/2's connection preface).
 * Case-sensitive, as HTTP has them: no SMTP client sends them so.
 */
static const char *const http_methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
	"TRACE", "PATCH", "PRI", NULL,
};

/*
 * The method of a line that is an HTTP request line, "METHOD target
 * HTTP/version", or NULL.  The method returned is ours, not the client's.
 */
static const char *
http_request_method(const char *line)
{
	const char	*target, *version;
	size_t		 i, n = 0;

	for (i = 0; http_methods[i] != NULL; i++) {
		n = strlen(http_methods[i]);
		if (strncmp(line, http_methods[i], n) == 0 && line[n] == ' ')
			break;
	}
	if (http_methods[i] == NULL)
		return NULL;
	target = line + n + 1;
	n = strcspn(target, " ");
	if (n == 0 || target[n] != ' ')
		return NULL;
	version = target + n + 1;
	if (strncmp(version, "HTTP/", 5) != 0 || version[5] == '\0' ||
	    strchr(version, ' ') != NULL)
		return NULL;
	return http_methods[i];
}

/*
 * A web browser, an HTTP proxy probe, or a page making a browser post a
 * form to this port (cross-protocol scripting): none of it is SMTP, and
 * nothing in the rest of it is worth a reply.  Only the connection's
 * first line is looked at; later, such a line is an ordinary bad command.
 */
static int
refuse_http(struct session *s, const char *line)
{
	const char *method;

	if (s->commands != 1 || (method = http_request_method(line)) == NULL)
		return 0;
	log_msg(LOG_INFO, "rejected ip=%s user=- cmd=%s reason=non-smtp",
	    s->peer, method);
	close_session(s, "non-smtp");
	return 1;
}

/* The state the table asks for; replies and returns -1 when missing. */
static int
check_state(struct session *s, unsigned flags)
{
	if ((flags & CMD_NEED_HELO) && s->helo[0] == '\0')
		reply_error(s, 503, "5.5.1 Send HELO/EHLO first");
	else if ((flags & CMD_NEED_AUTH) && !s->authenticated)
		reply_error(s, 530, "5.7.0 Authentication required");
	else if ((flags & CMD_NEED_MAIL) && !s->in_mail)
		reply_error(s, 503, "5.5.1 Need MAIL command");
	else if ((flags & CMD_NEED_RCPT) && s->env.nrcpts == 0)
		reply_error(s, 503, "5.5.1 Need RCPT command");
	else
		return 0;
	return -1;
}

static void
flush_replies(struct session *s)
{
	if (io_flush(s->io) == -1)
		close_session(s, "write-error");
}

static void
dispatch(struct session *s, char *line, size_t len)
{
	const struct smtp_cmd	*cmd;
	char			*verb, *arg;
	int			 too_long;

	s->log_cmd = NULL;
	if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL) {
		reply_error(s, 500, "5.5.2 Invalid characters in command");
		return;
	}
	/* The limit is on what was sent, trailing blanks included. */
	too_long = len + 2 > SMTP_CMD_MAX;
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		line[--len] = '\0';
	if (refuse_http(s, line))
		return;
	verb = line;
	arg = line + strcspn(line, " ");
	if (*arg != '\0')
		*arg++ = '\0';
	arg += strspn(arg, " ");
	if ((cmd = find_cmd(verb)) == NULL) {
		reply_error(s, 500, "5.5.2 Command unrecognized");
		return;
	}
	if (cmd->handler != cmd_auth && too_long) {
		reply_error(s, 500, "5.5.2 Line too long");
		return;
	}
	if ((cmd->flags & CMD_JUNK) && junk_exceeded(s))
		return;
	if (cmd->flags & CMD_LOG_REFUSAL)
		s->log_cmd = cmd->verb;
	if (check_state(s, cmd->flags) == 0)
		cmd->handler(s, arg);
	s->log_cmd = NULL;
	if (cmd->flags & CMD_FLUSH)
		flush_replies(s);
}

static void
read_command(struct session *s)
{
	char	 line[SMTP_AUTH_LINE_MAX + 1];
	size_t	 len;
	int	 rc;

	/*
	 * Checked before reading, not only by the read's deadline: lines a
	 * client has queued (NOOPs every second) would otherwise keep it
	 * going past login-grace-time.
	 */
	if (login_grace_over(s))
		rc = IO_TIMEOUT;
	else
		rc = io_getline(s->io, line, sizeof(line), SMTP_AUTH_LINE_MAX,
		    read_deadline(s, s->cf->timeout), &len);
	switch (rc) {
	case IO_OK:
		s->commands++;
		dispatch(s, line, len);
		break;
	case IO_TOOLONG:
		s->commands++;
		reply_error(s, 500, "5.5.2 Line too long");
		break;
	case IO_TIMEOUT:
		read_timed_out(s);
		break;
	case IO_EOF:
		close_session(s, "eof");
		break;
	default:
		close_session(s, "read-error");
		break;
	}
	/* An AUTH line may hold a password: leave no copy on the stack. */
	explicit_bzero(line, sizeof(line));
	/* PIPELINING: answer once the client has nothing more queued. */
	if (io_pending(s->io) == 0 || s->close_reason != NULL)
		flush_replies(s);
}

int
smtp_session(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *starttls_ctx, const struct backend *backend)
{
	struct session	 s;
	char		 esc[ESC_MAX];

	memset(&s, 0, sizeof(s));
	s.cf = cf;
	s.io = io;
	s.peer = peer;
	s.starttls_ctx = starttls_ctx;
	s.backend = backend;
	s.login_deadline_ms = login_grace_deadline(cf);
	note_tls(&s);
	reply(&s, 220, "%s ESMTP", cf->hostname);
	if (io_flush(io) == -1)
		close_session(&s, "write-error");
	while (s.close_reason == NULL)
		read_command(&s);
	(void)io_flush(io);
	log_msg(LOG_INFO, "disconnect ip=%s user=%s reason=%s commands=%llu "
	    "messages=%llu", peer, log_escape(user_or_dash(&s), esc,
	    sizeof(esc)), s.close_reason, (unsigned long long)s.commands,
	    (unsigned long long)s.messages);
	envelope_reset(&s);
	explicit_bzero(&s, sizeof(s));
	return 0;
}
