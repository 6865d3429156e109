/*
 * privsep.c - privilege separation: the two processes of a connection.
 *
 * The monitor keeps root (PAM reads /etc/shadow; sendmail must run as the
 * user), never reads a byte from the network, and answers exactly two
 * requests.  The session does everything else - TLS, SMTP, spooling - as
 * privsep-user, chrooted into an empty directory, with no new privileges,
 * tight resource limits and a seccomp filter.  Not running as root, the
 * same two processes run without the user switch and chroot, so the one
 * code path is what the tests exercise.
 *
 * The channel is a SOCK_SEQPACKET socketpair: one request or reply per
 * packet, so there is no framing to get wrong.  Every field is a 32-bit
 * length or number in host order followed by its bytes; a packet must be
 * exactly as long as its fields say.
 *
 *   session -> monitor
 *     AUTH         u32 type=1, u32 mech (1 PLAIN, 2 LOGIN),
 *                  u32 ulen, u32 plen, u32 tlen, user[ulen],
 *                  password[plen], tls[tlen] (the session's TLS version,
 *                  "none" before TLS: for the log line only)
 *     SUBMIT       u32 type=2, char id[16], u32 nrcpts, u32 slen, sender[slen]
 *     RCPT         u32 type=3, u32 len, address[len]   (nrcpts of them)
 *     SPOOL        u32 type=5: an empty spool file for the next message
 *   monitor -> session
 *     READY        u32 type=4, u32 verdict (0 go on, 1 the client's
 *                  address is over a limit on guessing: greet it with
 *                  421), once, when the monitor has let go of the client
 *                  connection: only then does the session begin
 *     AUTH reply   u32 type=1, u32 result (auth_result, AUTH_GONE
 *                  excepted), u32 rlen,
 *                  u32 clen, reason[rlen], canonical user[clen]
 *     SUBMIT reply u32 type=2, u32 code, u32 tlen, text[tlen]
 *     SPOOL reply  u32 type=5, u32 result (0 a file, 1 none could be
 *                  made), the file's descriptor (SCM_RIGHTS) with 0
 *
 * The monitor runs each password check in a child of its own (authproc.c),
 * killed when it has not answered within `auth-timeout`, so that a PAM
 * stack that hangs answers 454 instead of holding the connection.  A
 * client that leaves meanwhile ends it at once: the session watches the
 * client while it waits and exits, and the monitor, seeing the channel
 * hang up, stops the check.  Whatever the check started dies with it, daemons that left
 * its session included: the monitor is a child subreaper while a check
 * runs (auth_sweep).
 *
 * The limits on guessing across connections (limits.c) are the
 * monitor's too: it asks the state store whether the client's address is
 * blocked before the session greets anyone, and around each password
 * check; a blocked AUTH is answered without asking the backend, whatever
 * the session did with the verdict it was given.
 *
 * The monitor checks every request again - lengths, characters, counts -
 * and the order: no SUBMIT or SPOOL before a successful AUTH, no AUTH after
 * one, at most max-auth-failures AUTHs, the RCPTs of a SUBMIT and nothing
 * else.  Anything else is logged and ends the connection with nothing
 * injected.  The message itself never crosses the channel: the monitor
 * creates each spool file (the chrooted session could not), keeps a
 * descriptor of it, and runs sendmail on a read-only one of its own.  Each
 * message gets a new file: the first is made before the fork (so that a
 * spool-dir that does not work refuses the connection), the next one
 * after each SUBMIT, and a file handed out but never submitted is not
 * handed out again.
 */
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND	0
#endif

/* A sanitizer's runtime makes system calls of its own. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED	1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED	0
#endif

#include "smtpauthd.h"

#define MSG_AUTH	1
#define MSG_SUBMIT	2
#define MSG_RCPT	3
#define MSG_READY	4	/* monitor -> session, once: go ahead */
#define MSG_SPOOL	5

#define SPOOL_OK	0	/* the descriptor comes with the reply */
#define SPOOL_NONE	1

#define MECH_PLAIN	1
#define MECH_LOGIN	2

/* The TLS version the session reports ("TLSv1.3", "none"). */
#define TLS_NAME_MAX	15
#define TLS_NAME_CHARS	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789."

#define PACKET_MAX	(AUTH_USER_MAX + AUTH_PASS_MAX + 64)
#define SESSION_NOFILE	16	/* 0-2, the channel, the spool, TLS's few */

/* ---- packets ---- */

struct packet {
	unsigned char	 buf[PACKET_MAX];
	size_t		 len;		/* built, or received */
	size_t		 off;		/* read so far */
	int		 bad;		/* did not fit, or ran short */
};

static void
put_u32(struct packet *p, uint32_t v)
{
	if (p->len + sizeof(v) > sizeof(p->buf)) {
		p->bad = 1;
		return;
	}
	memcpy(p->buf + p->len, &v, sizeof(v));
	p->len += sizeof(v);
}

static void
put_bytes(struct packet *p, const void *b, size_t n)
{
	if (n > sizeof(p->buf) - p->len) {
		p->bad = 1;
		return;
	}
	memcpy(p->buf + p->len, b, n);
	p->len += n;
}

static uint32_t
get_u32(struct packet *p)
{
	uint32_t v = 0;

	if (p->len - p->off < sizeof(v)) {
		p->bad = 1;
		return 0;
	}
	memcpy(&v, p->buf + p->off, sizeof(v));
	p->off += sizeof(v);
	return v;
}

/* n octets as a C string into out (outsize > n), refusing NUL inside. */
static void
get_string(struct packet *p, uint32_t n, char *out, size_t outsize)
{
	if (p->bad || n >= outsize || p->len - p->off < n ||
	    memchr(p->buf + p->off, '\0', n) != NULL) {
		p->bad = 1;
		out[0] = '\0';
		return;
	}
	memcpy(out, p->buf + p->off, n);
	out[n] = '\0';
	p->off += n;
}

static int
packet_send(int fd, struct packet *p)
{
	ssize_t n;

	if (p->bad)
		return -1;
	do
		n = send(fd, p->buf, p->len, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	explicit_bzero(p->buf, sizeof(p->buf));
	return n == (ssize_t)p->len ? 0 : -1;
}

/* 0 with a packet, -1 at the end of the channel or on error. */
static int
packet_recv(int fd, struct packet *p)
{
	ssize_t n;

	memset(p, 0, sizeof(*p));
	do
		n = recv(fd, p->buf, sizeof(p->buf), MSG_TRUNC);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if (n == 0) {
		struct pollfd pfd = { fd, 0, 0 };

		/* An empty packet reads as 0 too; only a hang-up ends. */
		if (poll(&pfd, 1, 0) == -1 || (pfd.revents & POLLHUP))
			return -1;
		p->bad = 1;
		return 0;
	}
	if ((size_t)n > sizeof(p->buf)) {
		p->bad = 1;		/* truncated: a lie about its size */
		p->len = sizeof(p->buf);
	} else
		p->len = (size_t)n;
	return 0;
}

/*
 * A reply that may carry a descriptor (SCM_RIGHTS): *passed is it, or -1.
 * A descriptor that did not fit (RLIMIT_NOFILE) is simply not there.
 */
static int
packet_recv_fd(int fd, struct packet *p, int *passed)
{
	union {
		struct cmsghdr	 hdr;
		char		 buf[CMSG_SPACE(sizeof(int))];
	} cmsg;
	struct msghdr	 msg;
	struct iovec	 iov;
	struct cmsghdr	*c;
	ssize_t		 n;

	*passed = -1;
	memset(p, 0, sizeof(*p));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = p->buf;
	iov.iov_len = sizeof(p->buf);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cmsg.buf;
	msg.msg_controllen = sizeof(cmsg.buf);
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	if (n <= 0)
		return -1;	/* every reply has octets: 0 is the end */
	for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len != CMSG_LEN(sizeof(int)))
			continue;
		if (*passed == -1)
			memcpy(passed, CMSG_DATA(c), sizeof(int));
	}
	if ((size_t)n > sizeof(p->buf) || (msg.msg_flags & MSG_TRUNC)) {
		p->bad = 1;
		p->len = sizeof(p->buf);
	} else
		p->len = (size_t)n;
	return 0;
}

/* Every octet accounted for. */
static int
packet_done(const struct packet *p)
{
	return !p->bad && p->off == p->len;
}

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
	memset(&p, 0, sizeof(p));
	put_u32(&p, MSG_AUTH);
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

static int
priv_submit(const struct config *cf, const struct envelope *env,
    int spool_fd, const char *user, const char *queue_id,
    struct relay_reply *reply)
{
	struct packet	 p;
	uint32_t	 code, tlen;
	size_t		 i;

	(void)cf;
	(void)spool_fd;		/* the monitor reads its own copy */
	(void)user;		/* the monitor knows who authenticated */
	memset(&p, 0, sizeof(p));
	put_u32(&p, MSG_SUBMIT);
	put_bytes(&p, queue_id, QUEUE_ID_LEN);
	put_u32(&p, (uint32_t)env->nrcpts);
	put_u32(&p, (uint32_t)strlen(env->sender));
	put_bytes(&p, env->sender, strlen(env->sender));
	if (packet_send(channel, &p) == -1)
		monitor_gone();
	for (i = 0; i < env->nrcpts; i++) {
		memset(&p, 0, sizeof(p));
		put_u32(&p, MSG_RCPT);
		put_u32(&p, (uint32_t)strlen(env->rcpts[i]));
		put_bytes(&p, env->rcpts[i], strlen(env->rcpts[i]));
		if (packet_send(channel, &p) == -1)
			monitor_gone();
	}
	if (packet_recv(channel, &p) == -1 || get_u32(&p) != MSG_SUBMIT)
		monitor_gone();
	code = get_u32(&p);
	tlen = get_u32(&p);
	get_string(&p, tlen, reply->text, sizeof(reply->text));
	if (!packet_done(&p) || code < 200 || code > 599)
		monitor_gone();
	reply->code = (int)code;
	return code == 250 ? 0 : -1;
}

/* A new, empty spool file from the monitor, for one message. */
static int
priv_spool(const struct config *cf)
{
	struct packet	 p;
	uint32_t	 result;
	int		 fd;

	(void)cf;
	memset(&p, 0, sizeof(p));
	put_u32(&p, MSG_SPOOL);
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
	priv_auth, priv_submit, priv_spool
};

/* ---- the monitor ---- */

struct monitor {
	const struct config	*cf;
	const char		*peer;
	pid_t			 session;	/* the one child to keep */
	int			 channel;
	int			 spool;		/* the next message's, or -1 */
	int			 spool_given;	/* the session has it */
	int			 authenticated;
	int			 blocked;	/* over a limit: no more checks */
	uint64_t		 auth_requests;
	struct limits		 limits;
	char			 user[AUTH_USER_MAX + 1];
};

/* A request the session had no business making: nothing more is done. */
static void __attribute__((noreturn))
monitor_refuse(const char *why)
{
	log_msg(LOG_ERR, "monitor: refused a request from the session: %s; "
	    "closing", why);
	exit(EX_SOFTWARE_);
}

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

	if (m->authenticated)
		monitor_refuse("AUTH after a successful AUTH");
	if (++m->auth_requests > m->cf->max_auth_failures)
		monitor_refuse("more AUTH requests than max-auth-failures");
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
	} else
		canon[0] = '\0';
	memset(p, 0, sizeof(*p));
	put_u32(p, MSG_AUTH);
	put_u32(p, (uint32_t)result);
	put_u32(p, (uint32_t)strlen(reason));
	put_u32(p, (uint32_t)strlen(canon));
	put_bytes(p, reason, strlen(reason));
	put_bytes(p, canon, strlen(canon));
	return packet_send(m->channel, p);
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

/* The SPOOL reply, with the file's descriptor when there is one. */
static int
send_spool_reply(int fd, int spool)
{
	union {
		struct cmsghdr	 hdr;
		char		 buf[CMSG_SPACE(sizeof(int))];
	} cmsg;
	struct packet	 p;
	struct msghdr	 msg;
	struct iovec	 iov;
	struct cmsghdr	*c;
	ssize_t		 n;

	memset(&p, 0, sizeof(p));
	put_u32(&p, MSG_SPOOL);
	put_u32(&p, spool != -1 ? SPOOL_OK : SPOOL_NONE);
	memset(&cmsg, 0, sizeof(cmsg));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = p.buf;
	iov.iov_len = p.len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (spool != -1) {
		msg.msg_control = cmsg.buf;
		msg.msg_controllen = sizeof(cmsg.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &spool, sizeof(int));
	}
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	return n == (ssize_t)p.len ? 0 : -1;
}

/*
 * A file handed out before and not submitted (a message refused for its
 * size, say) is replaced: each message is alone in its file.
 */
static int
monitor_spool(struct monitor *m, struct packet *p)
{
	if (!m->authenticated)
		monitor_refuse("SPOOL before a successful AUTH");
	if (!packet_done(p))
		monitor_refuse("malformed SPOOL");
	if (m->spool == -1 || m->spool_given)
		monitor_new_spool(m);
	if (m->spool != -1)
		m->spool_given = 1;
	return send_spool_reply(m->channel, m->spool);
}

static int
queue_id_valid(const char *id)
{
	return strlen(id) == QUEUE_ID_LEN &&
	    strspn(id, "0123456789ABCDEF") == QUEUE_ID_LEN;
}

static int
monitor_submit(struct monitor *m, struct packet *p)
{
	struct envelope		 env;
	struct relay_reply	 reply;
	char			 id[QUEUE_ID_LEN + 1], rcpt[SMTP_PATH_MAX + 1];
	uint32_t		 nrcpts, slen, i;

	if (!m->authenticated)
		monitor_refuse("SUBMIT before a successful AUTH");
	memset(&env, 0, sizeof(env));
	if (p->len - p->off < QUEUE_ID_LEN)
		monitor_refuse("malformed SUBMIT");
	memcpy(id, p->buf + p->off, QUEUE_ID_LEN);
	id[QUEUE_ID_LEN] = '\0';
	p->off += QUEUE_ID_LEN;
	nrcpts = get_u32(p);
	slen = get_u32(p);
	get_string(p, slen, env.sender, sizeof(env.sender));
	if (!packet_done(p) || !queue_id_valid(id))
		monitor_refuse("malformed SUBMIT");
	if (nrcpts == 0 || nrcpts > m->cf->max_recipients)
		monitor_refuse("SUBMIT with a bad number of recipients");
	if (env.sender[0] != '\0' && (!addr_is_safe(env.sender) ||
	    strchr(env.sender, '@') == NULL))
		monitor_refuse("SUBMIT with an unsafe sender");
	env.rcpts = xcalloc(nrcpts, sizeof(*env.rcpts));
	for (i = 0; i < nrcpts; i++) {
		if (packet_recv(m->channel, p) == -1)
			monitor_refuse("SUBMIT cut short");
		if (get_u32(p) != MSG_RCPT)
			monitor_refuse("SUBMIT without its recipients");
		slen = get_u32(p);
		get_string(p, slen, rcpt, sizeof(rcpt));
		if (!packet_done(p) || !addr_is_safe(rcpt))
			monitor_refuse("SUBMIT with an unsafe recipient");
		env.rcpts[i] = xstrdup(rcpt);
		env.nrcpts++;
	}
	if (m->spool != -1)
		relay_submit(m->cf, &env, m->spool, m->user, id, &reply);
	else {
		/* No file since the last one failed, and no SPOOL asked. */
		reply.code = 451;
		snprintf(reply.text, sizeof(reply.text), "4.3.0 Local error "
		    "in processing");
	}
	monitor_new_spool(m);
	for (i = 0; i < env.nrcpts; i++)
		free(env.rcpts[i]);
	free(env.rcpts);
	memset(p, 0, sizeof(*p));
	put_u32(p, MSG_SUBMIT);
	put_u32(p, (uint32_t)reply.code);
	put_u32(p, (uint32_t)strlen(reply.text));
	put_bytes(p, reply.text, strlen(reply.text));
	return packet_send(m->channel, p);
}

/*
 * Answers until the session closes the channel, or can no longer be
 * answered (it died while the monitor was at work).
 */
static void
monitor_loop(struct monitor *m)
{
	struct packet	 p;
	int		 rc;

	while (packet_recv(m->channel, &p) == 0) {
		switch (get_u32(&p)) {
		case MSG_AUTH:
			rc = monitor_auth(m, &p);
			break;
		case MSG_SUBMIT:
			rc = monitor_submit(m, &p);
			break;
		case MSG_SPOOL:
			rc = monitor_spool(m, &p);
			break;
		default:
			monitor_refuse("unknown request");
		}
		if (rc == -1)
			return;
	}
}

/* ---- confining the session ---- */

static int
seccomp_allow(scmp_filter_ctx ctx, const char *const names[], size_t n)
{
	size_t	 i;
	int	 nr;

	for (i = 0; i < n; i++) {
		nr = seccomp_syscall_resolve_name(names[i]);
		if (nr == __NR_SCMP_ERROR)
			continue;	/* not on this architecture */
		if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0)
			return -1;
	}
	return 0;
}

/* One rule per entry: the call, allowed when its arguments match. */
struct seccomp_cond {
	int			 nr;
	unsigned int		 nargs;
	struct scmp_arg_cmp	 args[2];
};

static int
seccomp_allow_if(scmp_filter_ctx ctx, const struct seccomp_cond *rules,
    size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, rules[i].nr,
		    rules[i].nargs, rules[i].args) != 0)
			return -1;
	return 0;
}

/*
 * What the session needs once confined: its descriptors, memory, time,
 * randomness (queue ids, TLS), the channel, and logging to an already
 * connected syslog socket.  Anything else kills it, the calls below made
 * with other arguments included: the code and its libraries never make
 * them, so one is an attack, which the monitor's SIGSYS line reports; an
 * error would let the attacker try the next thing unseen.  (socket and
 * connect are the exception: syslog(3) makes them, and must just fail.)
 *
 * fcntl: F_SETOWN, F_SETOWN_EX and F_SETSIG with O_ASYNC would have the
 * kernel signal any process of privsep-user - another connection's
 * session - whenever a descriptor becomes ready; so only the descriptor
 * and status flags, without O_ASYNC, and F_DUPFD_CLOEXEC (as dup).  The
 * session makes none of these today (strace of a STARTTLS session): they
 * are kept for what libc or a non-blocking switch like io.c's would use.
 * ioctl, with FIOASYNC and FIOSETOWN, is not allowed at all.
 *
 * mmap (mprotect is not allowed): never PROT_EXEC, so no new code.  The
 * program is linked without an executable stack, so READ_IMPLIES_EXEC
 * does not turn PROT_READ into PROT_EXEC behind the filter's back.
 *
 * tgkill: the process itself only, for abort(3) (stack protector, malloc
 * checks), so that it dies of SIGABRT, which the monitor logs as such,
 * not of SIGSYS; glibc's raise(3) makes it with getpid and gettid.
 */
static int
install_seccomp(void)
{
	static const char *const needed[] = {
		"read", "write", "readv", "writev", "close", "poll", "ppoll",
		"lseek", "ftruncate", "fstat", "newfstatat", "dup",
		"recvfrom", "recvmsg", "setsockopt", "getsockopt", "brk",
		"munmap", "mremap", "madvise",
		"futex", "clock_gettime", "clock_nanosleep", "nanosleep",
		"gettimeofday", "getrandom", "getpid", "gettid",
		"rt_sigreturn", "rt_sigprocmask", "restart_syscall",
		"exit", "exit_group",
	};
	/*
	 * The sanitizers' runtime: reports, LeakSanitizer's exit scan.  Not
	 * tgkill, which the rule for abort covers, nor mprotect, below.
	 */
	static const char *const sanitizer[] = {
		"clone", "clone3", "ptrace", "wait4", "waitid", "prctl",
		"sigaltstack", "prlimit64", "getrlimit", "readlink",
		"readlinkat", "openat", "open", "sched_getaffinity",
		"sched_yield", "getppid", "rt_sigaction", "rt_sigtimedwait",
		"kill", "pipe2", "set_robust_list",
		"rseq", "uname", "getdents64", "access", "faccessat",
	};
	const struct seccomp_cond conds[] = {
		{ SCMP_SYS(fcntl), 1, { { 1, SCMP_CMP_EQ, F_GETFD, 0 } } },
		{ SCMP_SYS(fcntl), 1, { { 1, SCMP_CMP_EQ, F_SETFD, 0 } } },
		{ SCMP_SYS(fcntl), 1, { { 1, SCMP_CMP_EQ, F_GETFL, 0 } } },
		{ SCMP_SYS(fcntl), 2, { { 1, SCMP_CMP_EQ, F_SETFL, 0 },
		    { 2, SCMP_CMP_MASKED_EQ, O_ASYNC, 0 } } },
		{ SCMP_SYS(fcntl), 1, { { 1, SCMP_CMP_EQ, F_DUPFD_CLOEXEC,
		    0 } } },
		{ SCMP_SYS(mmap), 1, { { 2, SCMP_CMP_MASKED_EQ, PROT_EXEC,
		    0 } } },
		{ SCMP_SYS(tgkill), 1, { { 0, SCMP_CMP_EQ,
		    (scmp_datum_t)getpid(), 0 } } },
		/* sendto(2)'s fifth argument, the address: none. */
		{ SCMP_SYS(sendto), 1, { { 4, SCMP_CMP_EQ, 0, 0 } } },
	};
	/*
	 * The sanitizers' runtime may change protections, never to
	 * executable: no session under the filter needs that (the test
	 * suite passes against smtpauthd-asan so).
	 */
	const struct seccomp_cond sanitizer_conds[] = {
		{ SCMP_SYS(mprotect), 1, { { 2, SCMP_CMP_MASKED_EQ, PROT_EXEC,
		    0 } } },
	};
	scmp_filter_ctx	 ctx;
	int		 rc = -1;

	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL)
		return -1;
	if (seccomp_allow(ctx, needed, sizeof(needed) / sizeof(needed[0])) == 0 &&
	    seccomp_allow_if(ctx, conds,
	    sizeof(conds) / sizeof(conds[0])) == 0 &&
	    /* syslog(3) reconnecting after syslogd went away: just fail. */
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket),
	    0) == 0 &&
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(connect),
	    0) == 0 &&
	    (!SANITIZED || (seccomp_allow(ctx, sanitizer,
	    sizeof(sanitizer) / sizeof(sanitizer[0])) == 0 &&
	    seccomp_allow_if(ctx, sanitizer_conds,
	    sizeof(sanitizer_conds) / sizeof(sanitizer_conds[0])) == 0)) &&
	    seccomp_load(ctx) == 0)
		rc = 0;
	seccomp_release(ctx);
	return rc;
}

static void __attribute__((noreturn))
confine_failed(const char *what)
{
	log_msg(LOG_CRIT, "session: cannot confine itself: %s: %s", what,
	    strerror(errno));
	_exit(EX_SOFTWARE_);
}

/* Root: to privsep-user, with no groups, in the empty directory. */
static void
drop_privileges(const struct config *cf, const struct passwd *pw)
{
	uid_t	 r, e, s;
	gid_t	 rg, eg, sg;

	if (chroot(cf->privsep_dir) == -1 || chdir("/") == -1)
		confine_failed("chroot");
	if (setgroups(0, NULL) == -1 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
		confine_failed("setresuid");
	if (getresuid(&r, &e, &s) == -1 || getresgid(&rg, &eg, &sg) == -1 ||
	    r != pw->pw_uid || e != pw->pw_uid || s != pw->pw_uid ||
	    rg != pw->pw_gid || eg != pw->pw_gid || sg != pw->pw_gid ||
	    getgroups(0, NULL) != 0 || setuid(0) != -1)
		confine_failed("the user switch did not hold");
}

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

static void
confine(const struct config *cf, const struct passwd *pw, pid_t monitor_pid)
{
	struct rlimit	 zero = { 0, 0 }, files = { SESSION_NOFILE,
	    SESSION_NOFILE }, size;

	/* Before chroot: the time zone, for the Received: header's date. */
	tzset();
	if (pw != NULL)
		drop_privileges(cf, pw);
	/* The spool holds the header, the message and some slack. */
	size.rlim_cur = size.rlim_max = (rlim_t)cf->max_message_size + 65536;
	if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR ||
	    setrlimit(RLIMIT_CORE, &zero) == -1 ||
	    setrlimit(RLIMIT_NPROC, &zero) == -1 ||
	    /* valgrind refuses a new descriptor limit (EPERM) */
	    (setrlimit(RLIMIT_NOFILE, &files) == -1 && !RUNNING_ON_VALGRIND) ||
	    setrlimit(RLIMIT_FSIZE, &size) == -1)
		confine_failed("setrlimit");
	/* The session ends with the monitor: no orphan holds the client. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1 ||
	    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		confine_failed("prctl");
	/* The monitor may have died before the death signal was set. */
	if (getppid() != monitor_pid)
		_exit(EX_SOFTWARE_);
	/*
	 * Under valgrind (make check-valgrind) no filter: valgrind's own
	 * system calls would meet it.  Nothing is logged, so that the log
	 * lines the tests read stay the same.
	 */
	if (!RUNNING_ON_VALGRIND && install_seccomp() == -1)
		confine_failed("seccomp");
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

/* The chroot directory must be empty and only root's to change. */
static int
check_privsep_dir(const char *dir)
{
	struct stat	 st;
	struct dirent	*de;
	DIR		*d;
	int		 entries = 0;

	if (mkdir(dir, 0555) == -1 && errno != EEXIST) {
		log_msg(LOG_ERR, "privsep-dir %s: %s", dir, strerror(errno));
		return -1;
	}
	if (lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
	    (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		log_msg(LOG_ERR, "privsep-dir %s: must be a directory owned by "
		    "root and writable by no one else", dir);
		return -1;
	}
	if ((d = opendir(dir)) == NULL) {
		log_msg(LOG_ERR, "privsep-dir %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			entries++;
	closedir(d);
	if (entries > 0) {
		log_msg(LOG_ERR, "privsep-dir %s: must be empty", dir);
		return -1;
	}
	return 0;
}

/*
 * Why pw cannot be privsep-user, or NULL.  Root's group counts as much as
 * root: with gid 0 the session would run with root's group, which owns
 * what is root's on most systems; a member of group 0 in /etc/group is an
 * account given root's files, not one of its own with nothing (the
 * session sheds supplementary groups, but the account is still wrong).
 */
const char *
privsep_user_problem(const struct passwd *pw)
{
	gid_t		*groups, first;
	const char	*why = NULL;
	int		 n = 1, i;

	if (pw->pw_uid == 0)
		return "has uid 0";
	if (pw->pw_gid == 0)
		return "has gid 0";
	/* The count first: -1 when there are more, the number in n. */
	(void)getgrouplist(pw->pw_name, pw->pw_gid, &first, &n);
	if (n <= 0)
		return "has groups that cannot be listed";
	groups = xcalloc((size_t)n, sizeof(*groups));
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) == -1)
		why = "has groups that cannot be listed";
	for (i = 0; why == NULL && i < n; i++)
		if (groups[i] == 0)
			why = "is a member of group 0";
	free(groups);
	return why;
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
	struct monitor	 m;
	struct packet	 ready;
	const char	*why;
	int		 sv[2], status, devnull, spool;
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
		if (check_privsep_dir(cf->privsep_dir) == -1)
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
		confine(cf, pw, monitor_pid);
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
	memset(&m, 0, sizeof(m));
	m.cf = cf;
	m.peer = peer;
	m.session = pid;
	m.channel = sv[0];
	m.spool = spool;
	/* The store is opened only now: the session never holds it. */
	limits_init(&m.limits, cf, peer);
	m.blocked = limits_connect(&m.limits) != NULL;
	memset(&ready, 0, sizeof(ready));
	put_u32(&ready, MSG_READY);
	put_u32(&ready, m.blocked ? 1 : 0);
	if (packet_send(sv[0], &ready) == -1)
		log_msg(LOG_ERR, "monitor: the session is gone before it began");
	monitor_loop(&m);
	close(m.channel);
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return EX_SOFTWARE_;
	if (WIFSIGNALED(status)) {
		log_msg(LOG_ERR, "session ip=%s: killed by signal %d%s", peer,
		    WTERMSIG(status), WTERMSIG(status) == SIGSYS ?
		    " (a system call the seccomp filter does not allow)" : "");
		return EX_SOFTWARE_;
	}
	return WEXITSTATUS(status);
}
