/*
 * relay.c - handing a message to the local MTA: the spool file, the
 * Received: header, running sendmail as the authenticated user, and
 * turning its exit status into the SMTP reply.
 *
 * relay_submit() is the seam privilege separation puts behind a process
 * boundary (privsep.c): an envelope and a spool descriptor in, a reply out.
 * sendmail gets the envelope in argv (never through a shell), a read-only
 * descriptor of the spool as standard input, a fixed environment, umask
 * sendmail-umask and no other descriptors, and is killed with its whole
 * process group when it takes too long.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "smtpauthd.h"

#define STDERR_LOG_MAX	2048	/* octets of sendmail's stderr logged */
#define STATUS_TIMEOUT	(-1)	/* wait_sendmail(): killed at the deadline */
#define STATUS_LOST	(-2)	/* wait_sendmail(): the exit status is gone */
#define STDERR_LINES	8

/* Postfix's sys_exits table: sendmail's exit status as an SMTP reply. */
static const struct {
	int		 status;
	int		 code;
	const char	*text;
} exit_replies[] = {
	{ 64, 554, "5.3.0 Mail system rejected the message (usage error)" },
	{ 65, 554, "5.6.0 Mail system rejected the message (data format error)" },
	{ 66, 554, "5.3.0 Mail system rejected the message (no input)" },
	{ 67, 550, "5.1.1 Recipient address rejected: user unknown" },
	{ 68, 550, "5.1.2 Recipient address rejected: host unknown" },
	{ 69, 554, "5.3.0 Mail system rejected the message (service unavailable)" },
	{ 70, 554, "5.3.0 Mail system rejected the message (internal software error)" },
	{ 71, 451, "4.3.0 Mail system error, try again later" },
	{ 72, 554, "5.3.0 Mail system rejected the message (system file error)" },
	{ 73, 550, "5.2.0 Mail system rejected the message (cannot create output)" },
	{ 74, 554, "5.3.0 Mail system rejected the message (I/O error)" },
	{ 75, 451, "4.3.0 Mail system busy, try again later" },
	{ 76, 554, "5.5.0 Mail system rejected the message (remote protocol error)" },
	{ 77, 550, "5.7.0 Mail system rejected the message (permission denied)" },
	{ 78, 554, "5.3.5 Mail system configuration error" },
};

static const char tempfail_text[] = "4.3.0 Mail system error, try again later";

/* The reply for an exit status other than 0. */
const char *
relay_exit_reply(int status, int *code)
{
	size_t i;

	for (i = 0; i < sizeof(exit_replies) / sizeof(exit_replies[0]); i++)
		if (exit_replies[i].status == status) {
			*code = exit_replies[i].code;
			return exit_replies[i].text;
		}
	*code = 451;
	return tempfail_text;
}

static void
set_reply(struct relay_reply *r, int code, const char *text)
{
	r->code = code;
	snprintf(r->text, sizeof(r->text), "%s", text);
}

/*
 * An unnamed file: it vanishes with the process, whatever happens to it.
 * Where the file system has no O_TMPFILE, a named file unlinked at once.
 */
int
spool_open(const struct config *cf)
{
	char	 path[4096];
	int	 fd;

	fd = open(cf->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd != -1)
		return fd;
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
		log_msg(LOG_ERR, "spool-dir %s: %s", cf->spool_dir,
		    strerror(errno));
		return -1;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/smtpauthd.XXXXXX",
	    cf->spool_dir) >= sizeof(path))
		return -1;
	if ((fd = mkostemp(path, O_CLOEXEC)) == -1) {
		log_msg(LOG_ERR, "spool-dir %s: %s", cf->spool_dir,
		    strerror(errno));
		return -1;
	}
	if (unlink(path) == -1) {
		log_msg(LOG_ERR, "unlink %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* HELO text fit for a header comment: printable, no parentheses. */
static void
header_safe(const char *in, char *out, size_t outsize)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < outsize; i++)
		out[i] = isalnum((unsigned char)in[i]) ||
		    strchr(".-_:[]@+", in[i]) != NULL ? in[i] : '?';
	out[i] = '\0';
}

/* RFC 5322 date-time in local time, as MTAs write it. */
static void
rfc5322_date(char *buf, size_t size)
{
	time_t		 t = time(NULL);
	struct tm	 tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(buf, size, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		snprintf(buf, size, "Thu, 01 Jan 1970 00:00:00 +0000");
}

/*
 * The header, LF line ends as in the rest of the spool.
 *
 * With received-client hide there is no "from" clause at all, neither
 * the HELO name nor the address: "Received: by HOST (smtpauthd) with
 * ESMTPSA id ID ...".  RFC 5321 4.4 wants the clause from a relay that
 * passes on mail it got over SMTP; here a message enters the mail system
 * (RFC 6409 submission), as mail handed to an MTA's own sendmail does,
 * and MTAs stamp that with "by" alone (Postfix's pickup writes
 * "Received: by HOST (Postfix, from userid N)").  RFC 5322 3.6.7 allows
 * it.  A made-up clause ("from localhost", "[127.0.0.1]") would state
 * something false to whoever reads the trace.  The log keeps both.
 */
int
relay_received(const struct config *cf, int fd, const char *helo,
    const char *peer, const char *queue_id, const char *user,
    const struct envelope *env, const char *tls_info)
{
	char	 safe_helo[HOSTNAME_MAX + 1], safe_user[AUTH_USER_MAX + 1];
	char	 date[64], forpart[SMTP_PATH_MAX + 16], hdr[2048];
	char	 frompart[HOSTNAME_MAX + PEER_MAX + 32];
	int	 n;

	header_safe(helo, safe_helo, sizeof(safe_helo));
	header_safe(user, safe_user, sizeof(safe_user));
	rfc5322_date(date, sizeof(date));
	forpart[0] = '\0';
	if (env->nrcpts == 1)
		snprintf(forpart, sizeof(forpart), "\n\tfor <%s>",
		    env->rcpts[0]);
	if (cf->received_client == RECEIVED_HIDE)
		snprintf(frompart, sizeof(frompart), "by");
	else
		/* RFC 5321 4.1.3: an IPv6 address literal is tagged "IPv6:". */
		snprintf(frompart, sizeof(frompart), "from %s ([%s%s])\n\tby",
		    safe_helo[0] != '\0' ? safe_helo : "unknown",
		    strchr(peer, ':') != NULL ? "IPv6:" : "", peer);
	n = snprintf(hdr, sizeof(hdr),
	    "Received: %s %s (smtpauthd) with %s id %s%s%s\n"
	    "\t(authenticated user %s)%s; %s\n",
	    frompart,
	    cf->hostname, tls_info != NULL ? "ESMTPSA" : "ESMTPA", queue_id,
	    tls_info != NULL ? "\n\t" : "", tls_info != NULL ? tls_info : "",
	    safe_user, forpart, date);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -1;
	if (write(fd, hdr, (size_t)n) != n)
		return -1;
	return n;
}

/* ---- running sendmail ---- */

struct runas {
	int		 switch_user;
	uid_t		 uid;
	gid_t		 gid;
	char		 name[AUTH_USER_MAX + 1];
	char		 home[1024];
};

static int
lookup_runas(const char *user, struct runas *ra)
{
	struct passwd	*pw;

	memset(ra, 0, sizeof(*ra));
	ra->switch_user = geteuid() == 0;
	/* cppcheck-suppress [getpwnamCalled,getpwuidCalled] ; one thread */
	pw = ra->switch_user ? getpwnam(user) : getpwuid(geteuid());
	if (pw == NULL) {
		if (ra->switch_user)
			return -1;
		snprintf(ra->name, sizeof(ra->name), "%s", user);
		snprintf(ra->home, sizeof(ra->home), "/");
		ra->uid = geteuid();
		ra->gid = getegid();
		return 0;
	}
	if (ra->switch_user && pw->pw_uid == 0)
		return -1;	/* never run the MTA as root for a client */
	snprintf(ra->name, sizeof(ra->name), "%s", pw->pw_name);
	snprintf(ra->home, sizeof(ra->home), "%s", pw->pw_dir);
	ra->uid = pw->pw_uid;
	ra->gid = pw->pw_gid;
	return 0;
}

static void
close_other_fds(void)
{
	long fd, max;

	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (fd = 3; fd < max; fd++)
		(void)close((int)fd);
}

static int
become_user(const struct runas *ra)
{
	if (!ra->switch_user)
		return 0;
	if (initgroups(ra->name, ra->gid) == -1 || setgid(ra->gid) == -1 ||
	    setuid(ra->uid) == -1)
		return -1;
	/* The switch is irreversible, or sendmail does not run. */
	if (getuid() != ra->uid || geteuid() != ra->uid ||
	    getgid() != ra->gid || getegid() != ra->gid || setuid(0) != -1)
		return -1;
	return 0;
}

/*
 * sendmail's own descriptor of the spool, opened read-only through
 * /proc/self/fd (the file is unnamed): whatever sendmail leaves running
 * with it after its exit - a background delivery keeps its standard
 * input - can read this message, never change it.  Opened by the monitor,
 * as the spool's owner, before the fork and the user switch; the offset
 * is sendmail's alone, so that status_reply() sees how far it read.
 */
static int
spool_reopen_read_only(int spool_fd, const char *queue_id)
{
	char	 path[64];
	int	 fd;

	if ((size_t)snprintf(path, sizeof(path), "/proc/self/fd/%d",
	    spool_fd) >= sizeof(path))
		return -1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		log_msg(LOG_ERR, "id=%s: reopening the spool read-only: %s: %s",
		    queue_id, path, strerror(errno));
	return fd;
}

/* In the child: never returns. */
static void
exec_sendmail(const struct config *cf, char *const argv[],
    const struct runas *ra, int spool_fd, int err_fd)
{
	char		 home[1100], user[300], logname[300];
	char		*envp[] = { "PATH=/usr/bin:/bin:/usr/sbin:/sbin", home,
	    user, logname, "SHELL=/bin/sh", NULL };
	sigset_t	 none;
	int		 sig;

	(void)setpgid(0, 0);
	for (sig = 1; sig < NSIG; sig++)
		(void)signal(sig, SIG_DFL);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	snprintf(home, sizeof(home), "HOME=%s", ra->home);
	snprintf(user, sizeof(user), "USER=%s", ra->name);
	snprintf(logname, sizeof(logname), "LOGNAME=%s", ra->name);
	if (lseek(spool_fd, 0, SEEK_SET) == -1 ||
	    dup2(spool_fd, 0) == -1 || dup2(err_fd, 1) == -1 ||
	    dup2(err_fd, 2) == -1)
		_exit(71);
	close_other_fds();
	if (become_user(ra) == -1) {
		dprintf(2, "smtpauthd: cannot switch to user %s\n", ra->name);
		_exit(71);
	}
	if (chdir("/") == -1)
		_exit(71);
	(void)umask((mode_t)cf->sendmail_umask);
	execve(cf->sendmail, argv, envp);
	dprintf(2, "smtpauthd: execve %s: %s\n", cf->sendmail, strerror(errno));
	_exit(71);
}

static char **
build_argv(const struct config *cf, const struct envelope *env)
{
	char	**argv;
	size_t	  n = 0, i;

	argv = xcalloc(env->nrcpts + 7, sizeof(*argv));
	argv[n++] = cf->sendmail;
	argv[n++] = "-i";
	if (cf->inject == INJECT_HEADERS)
		argv[n++] = "-t";
	argv[n++] = "-f";
	argv[n++] = env->sender[0] != '\0' ? (char *)env->sender : "<>";
	if (cf->inject == INJECT_ENVELOPE) {
		argv[n++] = "--";
		for (i = 0; i < env->nrcpts; i++)
			argv[n++] = env->rcpts[i];
	}
	argv[n] = NULL;
	return argv;
}

/* Validated once more here: this is where an address becomes argv. */
static int
envelope_safe(const struct envelope *env)
{
	size_t i;

	if (env->sender[0] != '\0' && !addr_is_safe(env->sender))
		return 0;
	if (env->nrcpts == 0)
		return 0;
	for (i = 0; i < env->nrcpts; i++)
		if (!addr_is_safe(env->rcpts[i]))
			return 0;
	return 1;
}

struct stderr_log {
	char	 buf[STDERR_LOG_MAX + 1];
	size_t	 len;
	int	 truncated;
};

static void
collect_stderr(int fd, struct stderr_log *sl)
{
	char	 junk[4096];
	ssize_t	 n;

	for (;;) {
		if (sl->len < STDERR_LOG_MAX)
			n = read(fd, sl->buf + sl->len, STDERR_LOG_MAX - sl->len);
		else
			n = read(fd, junk, sizeof(junk));
		if (n <= 0)
			return;
		if (sl->len < STDERR_LOG_MAX)
			sl->len += (size_t)n;
		else
			sl->truncated = 1;
	}
}

static void
log_stderr(struct stderr_log *sl, const char *queue_id)
{
	char	 esc[ESC_MAX], *line, *save = NULL;
	int	 lines = 0;

	sl->buf[sl->len] = '\0';
	for (line = strtok_r(sl->buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (++lines > STDERR_LINES) {
			sl->truncated = 1;
			break;
		}
		log_msg(LOG_WARNING, "sendmail id=%s stderr: %s", queue_id,
		    log_escape_text(line, esc, sizeof(esc)));
	}
	if (sl->truncated)
		log_msg(LOG_WARNING, "sendmail id=%s stderr: (more output "
		    "dropped)", queue_id);
}

/*
 * Wait for the child and drain its output, until it exits or the deadline
 * passes.  Output is not waited for after the exit: a daemon that the MTA
 * forked may keep the pipe open for ever.  Returns the wait status, or
 * STATUS_TIMEOUT (the group has then been killed and reaped) or
 * STATUS_LOST.
 */
static int
wait_sendmail(pid_t pid, int err_fd, int64_t deadline, struct stderr_log *sl)
{
	struct pollfd	 pfd[2];
	int		 pidfd, status, nfds, timeout;
	int64_t		 left;
	pid_t		 w;

	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w == -1 && errno != EINTR) {
			log_msg(LOG_ERR, "waitpid: %s", strerror(errno));
			status = STATUS_LOST;
			break;
		}
		left = deadline - now_ms();
		if (left <= 0) {
			(void)kill(-pid, SIGKILL);
			(void)kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
				;
			status = STATUS_TIMEOUT;
			break;
		}
		nfds = 0;
		if (err_fd != -1) {
			pfd[nfds].fd = err_fd;
			pfd[nfds++].events = POLLIN;
		}
		if (pidfd != -1) {
			pfd[nfds].fd = pidfd;
			pfd[nfds++].events = POLLIN;
		}
		timeout = pidfd != -1 ? (left > 60000 ? 60000 : (int)left) :
		    (left > 50 ? 50 : (int)left);
		if (poll(pfd, (nfds_t)nfds, timeout) > 0 && err_fd != -1 &&
		    pfd[0].revents != 0) {
			size_t before = sl->len;
			int trunc = sl->truncated;

			collect_stderr(err_fd, sl);
			if (before == sl->len && trunc == sl->truncated &&
			    (pfd[0].revents & (POLLHUP | POLLERR)))
				err_fd = -1;	/* EOF: stop polling it */
		}
	}
	if (err_fd != -1)
		collect_stderr(err_fd, sl);
	if (pidfd != -1)
		close(pidfd);
	/*
	 * After a normal exit the group is left alone: an MTA may have forked
	 * a background delivery that must be allowed to finish.
	 */
	return status;
}

static void
status_reply(int status, int spool_fd, struct relay_reply *reply,
    const char *queue_id)
{
	struct stat	 st;
	off_t		 pos;
	const char	*text;
	int		 code;

	if (status == STATUS_TIMEOUT) {
		log_msg(LOG_WARNING, "sendmail id=%s: killed after "
		    "sendmail-timeout", queue_id);
		set_reply(reply, 451, tempfail_text);
	} else if (status == STATUS_LOST) {
		log_msg(LOG_ERR, "sendmail id=%s: exit status lost; the "
		    "message may have been queued", queue_id);
		set_reply(reply, 451, tempfail_text);
	} else if (WIFSIGNALED(status)) {
		log_msg(LOG_WARNING, "sendmail id=%s: killed by signal %d",
		    queue_id, WTERMSIG(status));
		set_reply(reply, 451, tempfail_text);
	} else if (WEXITSTATUS(status) != 0) {
		text = relay_exit_reply(WEXITSTATUS(status), &code);
		log_msg(LOG_WARNING, "sendmail id=%s: exit status %d",
		    queue_id, WEXITSTATUS(status));
		set_reply(reply, code, text);
	} else if (fstat(spool_fd, &st) == -1 ||
	    (pos = lseek(spool_fd, 0, SEEK_CUR)) == -1 || pos != st.st_size) {
		log_msg(LOG_WARNING, "sendmail id=%s: exited 0 without "
		    "reading the whole message", queue_id);
		set_reply(reply, 451, tempfail_text);
	} else {
		reply->code = 250;
		snprintf(reply->text, sizeof(reply->text),
		    "2.0.0 Ok: queued as %s", queue_id);
	}
}

int
relay_submit(const struct config *cf, const struct envelope *env,
    int spool_fd, const char *user, const char *queue_id,
    struct relay_reply *reply)
{
	struct runas		 ra;
	struct stderr_log	*sl;
	char			**argv;
	int			 pipefd[2], status, in_fd;
	pid_t			 pid;

	if (!envelope_safe(env)) {
		log_msg(LOG_ERR, "id=%s: refusing an unsafe envelope", queue_id);
		set_reply(reply, 554, "5.5.0 Envelope refused");
		return -1;
	}
	if (lookup_runas(user, &ra) == -1) {
		log_msg(LOG_ERR, "id=%s: no account to run sendmail as", queue_id);
		set_reply(reply, 451, tempfail_text);
		return -1;
	}
	if ((in_fd = spool_reopen_read_only(spool_fd, queue_id)) == -1) {
		set_reply(reply, 451, tempfail_text);
		return -1;
	}
	if (pipe2(pipefd, O_CLOEXEC) == -1) {
		log_msg(LOG_ERR, "pipe: %s", strerror(errno));
		set_reply(reply, 451, tempfail_text);
		close(in_fd);
		return -1;
	}
	argv = build_argv(cf, env);
	if ((pid = fork()) == -1) {
		log_msg(LOG_ERR, "fork: %s", strerror(errno));
		set_reply(reply, 451, tempfail_text);
		close(pipefd[0]);
		close(pipefd[1]);
		close(in_fd);
		free(argv);
		return -1;
	}
	if (pid == 0) {
		close(pipefd[0]);
		exec_sendmail(cf, argv, &ra, in_fd, pipefd[1]);
	}
	(void)setpgid(pid, pid);	/* whichever of the two runs first */
	/*
	 * Only the parent needs it: allocated before the fork, it would be
	 * a block a child that cannot exec sendmail leaks (valgrind).
	 */
	sl = xcalloc(1, sizeof(*sl));
	close(pipefd[1]);
	(void)fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	status = wait_sendmail(pid, pipefd[0], now_ms() +
	    (int64_t)cf->sendmail_timeout * 1000, sl);
	close(pipefd[0]);
	log_stderr(sl, queue_id);
	status_reply(status, in_fd, reply, queue_id);
	close(in_fd);
	free(argv);
	free(sl);
	return reply->code == 250 ? 0 : -1;
}
