/*
 * authproc.c - the password check in a process of its own, for the
 * monitor (privsep.c): bounded by auth-timeout, stopped when the client
 * leaves or the monitor is told to stop, and killed when it ends with
 * everything it started, wherever that went (setsid, double forks).
 *
 * The check (auth_check: PAM or the password file) runs as root in a
 * child that answers with one fixed-size struct over a pipe, validated
 * field by field; a PAM stack that hangs costs the client auth-timeout
 * and a 454, not a connection held for ever.
 */
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "smtpauthd.h"

#define AUTH_REASON_MAX	32

/* What the backend's process tells the monitor. */
struct auth_answer {
	int32_t		 result;
	char		 reason[AUTH_REASON_MAX];
	char		 canon[AUTH_USER_MAX + 1];
};

/* The process group of the password check running now, or 0. */
static volatile sig_atomic_t	 auth_group;
/* Set from the fork of a check until all it left is reaped. */
static volatile sig_atomic_t	 auth_running;
/* A stop signal that came then: raised again once that is done. */
static volatile sig_atomic_t	 auth_stop_signal;

/* What stops a monitor (systemd, xinetd, a terminal). */
static const int stop_signals[] = { SIGTERM, SIGHUP, SIGINT };
#define NSTOPS	(sizeof(stop_signals) / sizeof(stop_signals[0]))

/* The stop signals as a set, for sigprocmask(2). */
static void
stop_signal_set(sigset_t *set)
{
	size_t	 i;

	if (sigemptyset(set) == -1)
		fatal("sigemptyset");
	for (i = 0; i < NSTOPS; i++)
		if (sigaddset(set, stop_signals[i]) == -1)
			fatal("sigaddset");
}

/*
 * Dies of sig, as if no handler had been there.  Not SA_RESETHAND: a
 * second stop signal while a check's leftovers are swept must not kill
 * the monitor before it has killed them.
 */
static void
stop_now(int sig)
{
	(void)signal(sig, SIG_DFL);
	(void)raise(sig);
}

/*
 * A monitor told to stop takes the check it runs with it.  The check's
 * process group dies here; what left the group is reparented to the
 * monitor, which must live to kill it: auth_bounded does, then stops.
 */
static void
monitor_stop_signal(int sig)
{
	if (auth_running) {
		if (auth_group > 0)
			(void)kill(-(pid_t)auth_group, SIGKILL);
		auth_stop_signal = sig;
		return;
	}
	stop_now(sig);
}

/* The monitor's handlers of the stop signals, once per connection. */
void
auth_catch_stops(void)
{
	struct sigaction	 stop;
	size_t			 i;

	memset(&stop, 0, sizeof(stop));
	stop.sa_handler = monitor_stop_signal;
	stop.sa_flags = 0;
	if (sigemptyset(&stop.sa_mask) == -1)
		fatal("sigemptyset");
	for (i = 0; i < NSTOPS; i++)
		if (sigaction(stop_signals[i], &stop, NULL) == -1)
			fatal("sigaction");
}

/* In the backend's process: never returns. */
static void __attribute__((noreturn))
auth_child(const struct auth_bounds *m, pid_t monitor_pid,
    const sigset_t *mask, int answer_fd, const char *mech, const char *user,
    const char *pass)
{
	struct auth_answer	 a;
	const char		*reason = "";
	ssize_t			 n;
	size_t			 i;

	/* Not left running as root with a password if the monitor dies. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1 ||
	    getppid() != monitor_pid)
		_exit(EX_SOFTWARE_);
	for (i = 0; i < NSTOPS; i++)
		if (signal(stop_signals[i], SIG_DFL) == SIG_ERR)
			_exit(EX_SOFTWARE_);
	if (sigprocmask(SIG_SETMASK, mask, NULL) == -1)
		_exit(EX_SOFTWARE_);
	(void)setpgid(0, 0);
	close(m->channel);
	memset(&a, 0, sizeof(a));
	if (pass == NULL) {
		a.result = auth_account(m->cf, user, m->peer, &reason);
		snprintf(a.canon, sizeof(a.canon), "%s", user);
	} else
		a.result = auth_check(m->cf, mech, user, pass, m->peer,
		    a.canon, sizeof(a.canon), &reason);
	snprintf(a.reason, sizeof(a.reason), "%s", reason);
	/* One write of less than PIPE_BUF: whole or not at all. */
	do
		n = write(answer_fd, &a, sizeof(a));
	while (n == -1 && errno == EINTR);
	_exit(n == (ssize_t)sizeof(a) ? 0 : EX_SOFTWARE_);
}

/* 1: the whole answer; 0: not yet; -1: there will be none. */
static int
auth_read_answer(int fd, struct auth_answer *a)
{
	ssize_t	 n;

	n = read(fd, a, sizeof(*a));
	if (n == (ssize_t)sizeof(*a))
		return 1;
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return -1;
}

static void
sweep_failed(const char *why, int err)
{
	log_msg(LOG_ERR, "monitor: what the password check started may live "
	    "on: %s%s%s", why, err != 0 ? ": " : "", err != 0 ?
	    strerror(err) : "");
}

/* The parent of process pid as /proc tells it, or -1. */
static pid_t
proc_ppid(pid_t pid)
{
	char		 path[64], buf[512], *end;
	const char	*f;
	ssize_t		 n;
	long		 ppid;
	int		 fd;

	(void)snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n == -1 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) state ppid ...": comm may hold ')' and spaces too. */
	if ((f = strrchr(buf, ')')) == NULL || f[1] != ' ' || f[2] == '\0' ||
	    f[3] != ' ')
		return -1;
	errno = 0;
	ppid = strtol(f + 4, &end, 10);
	if (errno != 0 || end == f + 4 || *end != ' ' || ppid < 0 ||
	    ppid > INT_MAX)
		return -1;
	return (pid_t)ppid;
}

/*
 * Up to max children of the monitor but the session into out, their
 * number into *np; -1 when /proc cannot be read through.  A child cannot
 * vanish while this reads (it stays a zombie until the monitor reaps it),
 * so none that was a child throughout is missed.
 */
static int
monitor_children(pid_t self, pid_t session, pid_t *out, size_t max,
    size_t *np)
{
	struct dirent	*de;
	DIR		*d;
	char		*end;
	long		 v;
	int		 rc = 0;

	*np = 0;
	if ((d = opendir("/proc")) == NULL)
		return -1;
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			if (errno != 0)
				rc = -1;
			break;
		}
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		errno = 0;
		v = strtol(de->d_name, &end, 10);
		if (errno != 0 || *end != '\0' || v <= 0 || v == (long)self ||
		    v == (long)session || proc_ppid((pid_t)v) != self)
			continue;
		out[(*np)++] = (pid_t)v;
		if (*np == max)
			break;
	}
	closedir(d);
	return rc;
}

#define SWEEP_BATCH	64
#define SWEEP_ROUNDS	100

/*
 * Kills and reaps whatever the check left, wherever it went.  A helper
 * that called setsid() and forked again is in no process group of the
 * check's and nobody's child, so no group kill reaches it; but the
 * monitor is a child subreaper from before the check's fork until here,
 * so every process below the check stays below the monitor: when its
 * parent dies it becomes the monitor's child, not init's.  (Making the
 * check's process the subreaper instead would not hold: the monitor
 * SIGKILLs it on timeout, and its orphans would go up to init; finding
 * them by ancestry in /proc afterwards is a race against reparenting.)
 * The monitor's children now are the session, which cannot fork (its
 * RLIMIT_NPROC is 0 and seccomp refuses clone), and what the check left:
 * no sendmail runs (no SUBMIT before a successful AUTH, no AUTH after
 * one).  So each round kills every child but the session and reaps it;
 * a dying process's children are reparented before it can be reaped, so
 * the next round finds them, and a round that finds none means none is
 * left, for a descendant would have an ancestor among the children.  A
 * child's pid cannot be reused before the monitor reaps it, so killing
 * by pid is safe.  The rounds are bounded: a process that forks and exits
 * for ever could outrun them.
 */
static int
auth_sweep(pid_t self, pid_t session)
{
	pid_t	 found[SWEEP_BATCH];
	size_t	 n, i;
	int	 round, status;

	for (round = 0; round < SWEEP_ROUNDS; round++) {
		if (monitor_children(self, session, found, SWEEP_BATCH,
		    &n) == -1) {
			sweep_failed("/proc", errno);
			return -1;
		}
		if (n == 0)
			return 0;
		for (i = 0; i < n; i++)
			(void)kill(found[i], SIGKILL);
		for (i = 0; i < n; i++)
			while (waitpid(found[i], &status, 0) == -1 &&
			    errno == EINTR)
				;
	}
	sweep_failed("it keeps forking", 0);
	return -1;
}

/*
 * The backend runs in a process of its own, so that one that never
 * answers (a PAM stack waiting on an LDAP server that is down) costs the
 * client `auth-timeout` seconds and a 454, not a connection that hangs.
 * It is not `timeout`, the client's (300 s): a directory that hangs would
 * hold every connection, and its processes, that long.  When the session
 * hangs up meanwhile (the client left: wait_for_answer), no one waits for
 * the answer: the check is stopped at once, and AUTH_GONE ends the
 * monitor's loop.  When it has answered, or not in time, or no longer
 * matters, it is killed with its process group, and then whatever it
 * started that left the group (auth_sweep): nothing it started outlives
 * the check.
 */
int
auth_bounded(const struct auth_bounds *m, const char *mech, const char *user,
    const char *pass, char *canon, size_t canonsize, const char **reason)
{
	static char		 reason_buf[AUTH_REASON_MAX];
	struct auth_answer	 a;
	struct pollfd		 pfd[3];
	siginfo_t		 si;
	sigset_t		 stops, saved;
	int64_t			 deadline, left;
	pid_t			 monitor_pid = getpid(), pid;
	nfds_t			 npfd;
	int			 fds[2], pidfd, got = 0, exited = 0, status, r;
	int			 session_gone = 0;

	*reason = "unavailable";
	if (pipe2(fds, O_CLOEXEC) == -1) {
		log_msg(LOG_ERR, "pipe: %s", strerror(errno));
		return AUTH_TEMPFAIL;
	}
	/* A stop signal waits until auth_group names the child. */
	stop_signal_set(&stops);
	if (sigprocmask(SIG_BLOCK, &stops, &saved) == -1)
		fatal("sigprocmask");
	/* Before the fork: nothing below the check may be orphaned to init. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1)
		sweep_failed("prctl", errno);
	auth_running = 1;
	if ((pid = fork()) == -1) {
		log_msg(LOG_ERR, "fork: %s", strerror(errno));
		auth_running = 0;
		(void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
		(void)sigprocmask(SIG_SETMASK, &saved, NULL);
		close(fds[0]);
		close(fds[1]);
		return AUTH_TEMPFAIL;
	}
	if (pid == 0) {
		close(fds[0]);
		auth_child(m, monitor_pid, &saved, fds[1], mech, user, pass);
	}
	(void)setpgid(pid, pid);	/* before a kill can be needed */
	auth_group = pid;
	(void)sigprocmask(SIG_SETMASK, &saved, NULL);
	close(fds[1]);
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
	/* Its end, too: a child it forked may hold the pipe open. */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	deadline = now_ms() + (int64_t)m->cf->auth_timeout * 1000;
	memset(&a, 0, sizeof(a));
	for (;;) {
		/* Ended, but not reaped: its group id cannot be reused yet. */
		memset(&si, 0, sizeof(si));
		r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
		if ((r == 0 && si.si_pid == pid) || (r == -1 && errno != EINTR))
			exited = 1;
		if ((got = auth_read_answer(fds[0], &a)) != 0 || exited ||
		    auth_stop_signal != 0)
			break;
		if ((left = deadline - now_ms()) <= 0)
			break;
		pfd[0].fd = fds[0];
		pfd[0].events = POLLIN;
		/* Its requests wait: only a hang-up (or error) is asked for. */
		pfd[1].fd = m->channel;
		pfd[1].events = 0;
		pfd[1].revents = 0;
		pfd[2].fd = pidfd;
		pfd[2].events = POLLIN;
		npfd = pidfd != -1 ? 3 : 2;
		if (poll(pfd, npfd, pidfd != -1 ?
		    (left > 60000 ? 60000 : (int)left) :
		    (left > 50 ? 50 : (int)left)) > 0 &&
		    (pfd[1].revents & (POLLHUP | POLLERR)) != 0) {
			session_gone = 1;
			break;
		}
	}
	close(fds[0]);
	if (pidfd != -1)
		close(pidfd);
	if (!exited) {
		/* Answered, it is on its way out; if not, it is stopped. */
		if (got != 1)
			(void)kill(pid, SIGKILL);
		while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == -1 &&
		    errno == EINTR)
			;
	}
	/* Whatever it left in its group goes too, before the id is free. */
	(void)kill(-pid, SIGKILL);
	auth_group = 0;
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	/* And what left the group: the monitor's children now. */
	(void)auth_sweep(monitor_pid, m->session);
	/* Cannot fail once set; an MTA's daemons are not the monitor's. */
	(void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	auth_running = 0;
	if (auth_stop_signal != 0) {
		explicit_bzero(&a, sizeof(a));
		stop_now(auth_stop_signal);
	}
	if (session_gone && got != 1) {
		log_msg(LOG_NOTICE, "monitor: authentication ip=%s: the client "
		    "left; check stopped", m->peer);
		explicit_bzero(&a, sizeof(a));
		return AUTH_GONE;
	}
	if (got == 0 && !exited) {
		log_msg(LOG_ERR, "monitor: authentication ip=%s took more than "
		    "auth-timeout (%llu s): stopped", m->peer,
		    (unsigned long long)m->cf->auth_timeout);
		*reason = "timeout";
		return AUTH_TEMPFAIL;
	}
	if (got != 1 || a.result < AUTH_OK || a.result > AUTH_TEMPFAIL ||
	    memchr(a.reason, '\0', sizeof(a.reason)) == NULL ||
	    memchr(a.canon, '\0', sizeof(a.canon)) == NULL ||
	    strlen(a.canon) >= canonsize) {
		log_msg(LOG_ERR, "monitor: authentication ip=%s: no answer "
		    "from its process", m->peer);
		explicit_bzero(&a, sizeof(a));
		return AUTH_TEMPFAIL;
	}
	memcpy(reason_buf, a.reason, sizeof(reason_buf));
	*reason = reason_buf;
	memcpy(canon, a.canon, strlen(a.canon) + 1);
	return a.result;
}
