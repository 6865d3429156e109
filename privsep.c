/*
 * privsep.c - privilege separation: the two processes of a connection,
 * and the session's side of the channel between them.
 *
 * The monitor (monitor.c) keeps root (PAM reads /etc/shadow; sendmail must
 * run as the user), reads no byte the client sends, and answers the
 * requests below.  The one exception comes before the session exists: a
 * load balancer's PROXY header from a peer listed in proxy-protocol-from
 * (proxy.c, called from smtpauthd.c), which the monitor reads itself so
 * that the client address it hands PAM, the log and the limits is not one
 * a compromised session could choose.  It is bounded (536 octets, within
 * `timeout`), taken before any privilege is used for the client, parsed
 * by a pure function that is fuzzed (fuzz_proxy), and never a byte past
 * the header.  The session does everything else - TLS, SMTP,
 * spooling - as privsep-user, chrooted into an empty directory, with no
 * new privileges, tight resource limits and a seccomp filter (sandbox.c).
 * Not running as root, the same two processes run without the user
 * switch and chroot, so the one code path is what the tests exercise.
 *
 * The channel is a SOCK_SEQPACKET socketpair: one request or reply per
 * packet, so there is no framing to get wrong.  Every field is a 32-bit
 * length or number in host order followed by its bytes; a packet must be
 * exactly as long as its fields say (chan.c).
 *
 *   session -> monitor
 *     AUTH         u32 type=1, u32 mech (1 PLAIN, 2 LOGIN),
 *                  u32 ulen, u32 plen, u32 tlen, user[ulen],
 *                  password[plen], tls[tlen] (the session's TLS version,
 *                  "none" before TLS: for the log line only)
 *     MAIL         u32 type=6, u32 len, sender[len] (empty for <>):
 *                  a new transaction, whatever came before
 *     RCPT         u32 type=3, u32 len, address[len]
 *     SUBMIT       u32 type=2, char id[16]: the message in the spool,
 *                  to the sender and recipients the monitor approved
 *     SPOOL        u32 type=5: an empty spool file for the next message
 *   monitor -> session
 *     READY        u32 type=4, u32 verdict (0 go on, 1 the client's
 *                  address is over a limit on guessing: greet it with
 *                  421), once, when the monitor has let go of the client
 *                  connection: only then does the session begin
 *     AUTH reply   u32 type=1, u32 result (auth_result, AUTH_GONE
 *                  excepted), u32 rlen,
 *                  u32 clen, reason[rlen], canonical user[clen]
 *     MAIL reply, RCPT reply, SUBMIT reply
 *                  u32 type (6, 3, 2), u32 code, u32 tlen, text[tlen]:
 *                  the SMTP reply to give (250: approved, or delivered)
 *     SPOOL reply  u32 type=5, u32 result (0 a file, 1 none could be
 *                  made), the file's descriptor (SCM_RIGHTS) with 0
 *
 * The monitor runs each password check in a child of its own (authproc.c),
 * killed when it has not answered within `auth-timeout`, so that a PAM
 * stack that hangs answers 454 instead of holding the connection.  A
 * client that leaves meanwhile ends it at once: the session watches the
 * client while it waits and exits, and the monitor, seeing the channel
 * hang up, stops the check.  Whatever the check started dies with it,
 * daemons that left its session included: the monitor is a child
 * subreaper while a check runs (auth_sweep).
 *
 * The limits on guessing across connections (limits.c) are the
 * monitor's too: it asks the state store whether the client's address is
 * blocked before the session greets anyone, and around each password
 * check; a blocked AUTH is answered without asking the backend, whatever
 * the session did with the verdict it was given.
 *
 * The monitor checks every request again - lengths, characters, counts -
 * and the order: no MAIL, RCPT, SUBMIT or SPOOL before a successful AUTH,
 * no AUTH after one, at most max-auth-failures AUTHs, no RCPT without an
 * approved MAIL, no SUBMIT without an approved RCPT, at most
 * max-recipients recipients.  Anything else is logged and ends the
 * connection with nothing injected.  What the session says of the
 * message is never trusted: SUBMIT names only the queue id, and the
 * envelope is the one the monitor approved command by command.  The
 * message itself never crosses the channel: the monitor creates each
 * spool file (the chrooted session could not), keeps a descriptor of it,
 * and runs sendmail on a read-only one of its own.  Each message gets a
 * new file: the first is made before the fork (so that a spool-dir that
 * does not work refuses the connection), the next one after each SUBMIT,
 * and a file handed out but never submitted is not handed out again.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "chan.h"

/* ---- the session's side of the channel ---- */

static int	channel = -1;	/* the session's end */
static int	start_blocked;	/* READY's verdict: greet with 421 */
static struct io *client_io;	/* the session's client connection */

/* The session is beyond help when the monitor stops answering. */
static void __attribute__((noreturn))
monitor_gone(void)
{
	log_msg(LOG_ERR, "session: the monitor is gone");
	/* No exit handlers: LeakSanitizer's cannot run once confined. */
	_exit(EX_SOFTWARE_);
}

/*
 * Whether the client is gone, from what poll(2) said of its connection:
 * an error (a reset), or the end of its input - a hang-up, or a FIN,
 * which is all a TCP client that closes sends - with nothing unread
 * before it.  Input left unread - a command sent before a half-close,
 * decrypted data in TLS's buffer, TLS records on the socket (a
 * close_notify among them), data in a pipe whose writer is gone (-d) -
 * may be a client that still reads its replies: not gone.  (An end of
 * input with nothing before it may be a client that half-closed after
 * AUTH and still waits for the reply; but it can send nothing more, and
 * the session would end right after that reply anyway.)
 */
static int
client_gone(const struct io *io, short revents)
{
	struct pollfd	 pfd;
	char		 c;
	ssize_t		 n;

	if (revents & POLLERR)
		return 1;
	if (!(revents & (POLLHUP | POLLRDHUP)) || io_pending(io) > 0)
		return 0;
	do
		n = recv(io->infd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	while (n == -1 && errno == EINTR);
	if (n >= 0)
		return n == 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return 0;
	if (errno != ENOTSOCK)
		return 1;
	/* A pipe or a terminal: at its end, only unread data is readable. */
	pfd.fd = io->infd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) == 1 && !(pfd.revents & POLLIN);
}

/*
 * Waits for the monitor's answer, watching the client meanwhile: -1 when
 * the client has left first, so that a password check that hangs does not
 * keep the connection's processes for auth-timeout when no one waits for
 * it.  The monitor then sees the channel hang up when the session exits,
 * and stops the check.
 */
static int
wait_for_answer(void)
{
	struct pollfd	 pfd[2];

	pfd[0].fd = channel;
	pfd[0].events = POLLIN;
	pfd[1].fd = client_io != NULL ? client_io->infd : -1;
	pfd[1].events = POLLRDHUP;
	for (;;) {
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			return 0;	/* packet_recv blocks, as before */
		}
		if (pfd[0].revents != 0)
			return 0;
		if (pfd[1].revents != 0) {
			if (client_io != NULL &&
			    client_gone(client_io, pfd[1].revents))
				return -1;
			/* Still there: only the channel, not a busy loop. */
			pfd[1].fd = -1;
		}
	}
}

static int
priv_auth(const struct config *cf, const char *mech, const char *user,
    const char *pass, const char *peer, const char *tls, char *canon,
    size_t canonsize, const char **reason)
{
	static char	 reason_buf[64];
	struct packet	 p;
	uint32_t	 result, rlen, clen;

	(void)cf;
	(void)peer;		/* the monitor knows the peer itself */
	packet_start(&p, MSG_AUTH);
	put_u32(&p, strcmp(mech, "LOGIN") == 0 ? MECH_LOGIN : MECH_PLAIN);
	put_u32(&p, (uint32_t)strlen(user));
	put_u32(&p, (uint32_t)strlen(pass));
	put_u32(&p, (uint32_t)strlen(tls));
	put_bytes(&p, user, strlen(user));
	put_bytes(&p, pass, strlen(pass));
	put_bytes(&p, tls, strlen(tls));
	if (packet_send(channel, &p) == -1)
		monitor_gone();
	if (wait_for_answer() == -1)
		return AUTH_GONE;
	if (packet_recv(channel, &p) == -1)
		monitor_gone();
	if (get_u32(&p) != MSG_AUTH)
		monitor_gone();
	result = get_u32(&p);
	rlen = get_u32(&p);
	clen = get_u32(&p);
	get_string(&p, rlen, reason_buf, sizeof(reason_buf));
	get_string(&p, clen, canon, canonsize);
	if (!packet_done(&p) || result == AUTH_GONE || result > AUTH_BLOCKED)
		monitor_gone();
	*reason = reason_buf;
	return (int)result;
}

/* A MAIL, RCPT or SUBMIT reply: the code and text the client gets. */
static int
recv_reply(uint32_t type, struct relay_reply *reply)
{
	struct packet	 p;
	uint32_t	 code;

	if (packet_recv(channel, &p) == -1 || get_u32(&p) != type)
		monitor_gone();
	code = get_u32(&p);
	get_string(&p, get_u32(&p), reply->text, sizeof(reply->text));
	if (!packet_done(&p) || code < 200 || code > 599)
		monitor_gone();
	reply->code = (int)code;
	return code == 250 ? 0 : -1;
}

/* One address, asked of the monitor: 0 approved, -1 refused. */
static int
ask_address(uint32_t type, const char *addr, struct relay_reply *reply)
{
	struct packet	 p;

	packet_start(&p, type);
	put_string(&p, addr);
	if (packet_send(channel, &p) == -1)
		monitor_gone();
	return recv_reply(type, reply);
}

static int
priv_mail(const struct config *cf, const char *sender,
    struct relay_reply *reply)
{
	(void)cf;
	return ask_address(MSG_MAIL, sender, reply);
}

static int
priv_rcpt(const struct config *cf, const char *rcpt,
    struct relay_reply *reply)
{
	(void)cf;
	return ask_address(MSG_RCPT, rcpt, reply);
}

/*
 * The message in the spool, to the envelope the monitor approved: only
 * the queue id crosses, so the session's idea of the envelope is moot.
 */
static int
priv_submit(const struct config *cf, const struct envelope *env,
    int spool_fd, const char *user, const char *queue_id,
    struct relay_reply *reply)
{
	struct packet	 p;

	(void)cf;
	(void)env;		/* the monitor's own record is delivered */
	(void)spool_fd;		/* the monitor reads its own copy */
	(void)user;		/* the monitor knows who authenticated */
	packet_start(&p, MSG_SUBMIT);
	put_bytes(&p, queue_id, QUEUE_ID_LEN);
	if (packet_send(channel, &p) == -1)
		monitor_gone();
	return recv_reply(MSG_SUBMIT, reply);
}

/* A new, empty spool file from the monitor, for one message. */
static int
priv_spool(const struct config *cf)
{
	struct packet	 p;
	uint32_t	 result;
	int		 fd;

	(void)cf;
	packet_start(&p, MSG_SPOOL);
	if (packet_send(channel, &p) == -1 ||
	    packet_recv_fd(channel, &p, &fd) == -1)
		monitor_gone();
	if (get_u32(&p) != MSG_SPOOL)
		monitor_gone();
	result = get_u32(&p);
	if (!packet_done(&p) || (result != SPOOL_OK && result != SPOOL_NONE))
		monitor_gone();
	if (result == SPOOL_OK && fd != -1)
		return fd;
	if (fd != -1)
		close(fd);
	log_msg(LOG_ERR, "spool: %s", result == SPOOL_OK ? "its descriptor "
	    "did not arrive" : "the monitor could not create one");
	return -1;
}

static const struct backend privsep_backend = {
	priv_auth, priv_mail, priv_rcpt, priv_submit, priv_spool
};


/* Only the session holds the client connection, from its first byte. */
static void
wait_for_monitor(void)
{
	struct packet	 p;
	uint32_t	 verdict;

	if (packet_recv(channel, &p) == -1 || get_u32(&p) != MSG_READY)
		monitor_gone();
	verdict = get_u32(&p);
	if (!packet_done(&p) || verdict > 1)
		monitor_gone();
	start_blocked = verdict == 1;
}

/* ---- start-up ---- */

/* 465: the handshake comes first, in the confined session. */
static int
session_implicit_tls(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *ctx)
{
	struct ssl_st	*ssl;
	int64_t		 deadline, grace;

	/* Not past login-grace-time either: no one has logged in yet. */
	deadline = now_ms() + (int64_t)cf->timeout * 1000;
	grace = login_grace_deadline(cf);
	if (grace < deadline)
		deadline = grace;
	ssl = tls_accept(ctx, io->infd, io->outfd, deadline, peer);
	if (ssl == NULL) {
		log_msg(LOG_INFO, "disconnect ip=%s user=- reason=%s "
		    "commands=0 messages=0", peer, now_ms() >= grace ?
		    "login-grace-time" : "tls-failed");
		return -1;
	}
	io_start_tls(io, ssl);
	return 0;
}

static int
setup_failed(const struct config *cf, const char *peer, int status)
{
	refuse_connection(cf, peer, status == EX_CONFIG_ ?
	    "configuration error" : "local error", status == EX_CONFIG_ ?
	    "config-error" : "local-error");
	return status;
}

/* The session's work: the TLS handshake on 465, then SMTP. */
static void
session_main(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx,
    int chan)
{
	(void)chan;		/* the backend's calls use it */
	if (implicit_ctx != NULL && session_implicit_tls(cf, io, peer,
	    implicit_ctx) == -1)
		return;
	if (start_blocked) {
		io_printf(io, "421 4.7.0 %s Too many authentication failures "
		    "from your address, try later\r\n", cf->hostname);
		(void)io_flush(io);
		log_msg(LOG_INFO, "disconnect ip=%s user=- reason=auth-limit "
		    "commands=0 messages=0", peer);
		tls_close(io->tls);
		return;
	}
	client_io = io;
	smtp_session(cf, io, peer, starttls_ctx, &privsep_backend);
	tls_close(io->tls);
}

/*
 * Runs the connection as a monitor and a session; returns the exit status
 * for the monitor (the session never returns from here).
 */
int
privsep_run(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx)
{
	return privsep_split(cf, io, peer, starttls_ctx, implicit_ctx,
	    session_main);
}

/*
 * privsep_run with the session's work given: what the session runs once
 * confined and let go by the monitor; the monitor's exit status.
 */
int
privsep_split(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx,
    session_main_fn session)
{
	struct passwd	*pw = NULL, pwcopy;
	const char	*why;
	int		 sv[2], devnull, spool;
	pid_t		 pid, monitor_pid;

	if (geteuid() == 0) {
		if ((pw = getpwnam(cf->privsep_user)) == NULL) {
			log_msg(LOG_ERR, "privsep-user %s does not exist: "
			    "create it (see smtpauthd(8))", cf->privsep_user);
			return setup_failed(cf, peer, EX_CONFIG_);
		}
		if ((why = privsep_user_problem(pw)) != NULL) {
			log_msg(LOG_ERR, "privsep-user %s %s", cf->privsep_user,
			    why);
			return setup_failed(cf, peer, EX_CONFIG_);
		}
		pwcopy = *pw;
		pw = &pwcopy;
		if (sandbox_check_dir(cf->privsep_dir) == -1)
			return setup_failed(cf, peer, EX_CONFIG_);
	}
	/* The first message's, made now: a spool-dir that fails is found. */
	if ((spool = spool_open(cf)) == -1)
		return setup_failed(cf, peer, EX_TEMPFAIL_);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		log_msg(LOG_ERR, "socketpair: %s", strerror(errno));
		return setup_failed(cf, peer, EX_TEMPFAIL_);
	}
	monitor_pid = getpid();
	if ((pid = fork()) == -1) {
		log_msg(LOG_ERR, "fork: %s", strerror(errno));
		return setup_failed(cf, peer, EX_TEMPFAIL_);
	}
	if (pid == 0) {
		close(sv[0]);
		close(spool);	/* the monitor hands it over with SPOOL */
		channel = sv[1];
		sandbox_confine(cf, pw, monitor_pid);
		wait_for_monitor();
		session(cf, io, peer, starttls_ctx, implicit_ctx, channel);
		_exit(0);
	}

	/* The monitor: no network, only the channel. */
	close(sv[1]);
	auth_catch_stops();
	if ((devnull = open("/dev/null", O_RDWR)) == -1 ||
	    dup2(devnull, 0) == -1 || dup2(devnull, 1) == -1)
		fatal("/dev/null");
	if (devnull > 2)
		close(devnull);
	return monitor_run(cf, peer, pid, sv[0], spool);
}
