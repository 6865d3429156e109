/*
 * sandbox.c - the confinement of a connection's session: the empty
 * chroot directory it runs in, the account it runs as (privsep-user),
 * its resource limits, and the seccomp filter that kills it for any
 * system call it has no use for.  The monitor checks the directory and
 * the account before the fork; the session confines itself right after
 * it, before it reads a byte from the client (privsep.c).
 */
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
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

#define SESSION_NOFILE	16	/* 0-2, the channel, the spool, TLS's few */

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

/*
 * The session, right after the fork: root's powers dropped (when it has
 * them), limits set, the filter loaded; it exits when any of it fails.
 */
void
sandbox_confine(const struct config *cf, const struct passwd *pw,
    pid_t monitor_pid)
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

/* The chroot directory must be empty and only root's to change. */
int
sandbox_check_dir(const char *dir)
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

