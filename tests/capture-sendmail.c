/*
 * capture-sendmail.c - a fake sendmail(1) for the protocol tests: it records
 * how smtpauthd ran it (argv, environment, ids, open descriptors, cwd,
 * process group, signal state, the spool it got as stdin) and then behaves
 * as the test asked (exit status, sleeping, stderr noise, a signal, reading
 * only part of its input).
 *
 * The tests copy it into a per-test directory (mode 0755, the directory
 * world-writable and sticky, so that a switched uid can write there).  The
 * program finds that directory through /proc/self/exe; smtpauthd scrubs the
 * environment, so nothing can be passed through it.
 *
 * Each run creates DIR/call-N (the first free N) holding:
 *   pid      "PID\n" (written first, so a test can look for a hung process)
 *   argv     the arguments, each ended by a NUL
 *   env      the environment, each entry ended by a NUL
 *   ids      "uid gid euid egid\n" then the supplementary groups,
 *            space-separated, on a second line
 *   fds      the open descriptor numbers, one a line (the directory handle
 *            used to list them excluded)
 *   fdinfo   "N TARGET" a line: readlink of /proc/self/fd/N
 *   cwd      the working directory
 *   pgid     "pid=P pgid=G sid=S ppid=Q\n"
 *   stat0    "mode=OCTAL uid=U size=BYTES offset=OFF type=T access=A
 *            dev=D ino=I\n" for descriptor 0 (A: rdonly, wronly or rdwr,
 *            from fcntl F_GETFL)
 *   sigs     the SigBlk and SigIgn lines of /proc/self/status
 *   umask    the inherited umask, octal
 *   message  the bytes read from stdin
 *   childpid (with the "child" or "tamper" knob) the pid of a forked
 *            grandchild
 *   tamper   (with the "tamper" knob, in call-1) "write=ok" or
 *            "write=error:ERRNO": what the grandchild's write to offset 0
 *            of the descriptor 0 it kept did, once call-2 had started
 *   tamperread  what that grandchild then read there (up to 4096 octets)
 *   status   "done\n" when the run finished normally (before exiting)
 *
 * Knobs, files in DIR each holding a number:
 *   exit       status to exit with (default 0)
 *   sleep      seconds to sleep after reading stdin
 *   stderr     number of bytes of junk (with control characters) for stderr
 *   signal     kill itself with this signal at the end
 *   readlimit  read only this many bytes of stdin, then exit 0 at once
 *   child      fork a grandchild that sleeps this many seconds
 *   tamper     seconds: call-1 forks a grandchild that keeps descriptor 0
 *              (as an MTA's background delivery would) and, once call-2
 *              has started, tries to overwrite the start of what it
 *              reads; call-2 and later wait (at most this long) for that
 *              before reading their message
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char dir[PATH_MAX];
static char calldir[PATH_MAX + 32];

static void
die(const char *what)
{
	fprintf(stderr, "capture-sendmail: %s: %s\n", what, strerror(errno));
	exit(98);
}

static long long
knob(const char *name, long long def)
{
	char path[PATH_MAX + 64], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return def;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return def;
	buf[n] = '\0';
	return strtoll(buf, NULL, 10);
}

static void
put(const char *name, const void *data, size_t len)
{
	char path[sizeof calldir + 64];
	const char *p = data;
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "%s/%s", calldir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd == -1)
		die(path);
	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			die(path);
		}
		p += n;
		len -= (size_t)n;
	}
	close(fd);
}

static void
puts_file(const char *name, const char *s)
{
	put(name, s, strlen(s));
}

/* Append to a growable buffer. */
struct buf {
	char	*p;
	size_t	 len, cap;
};

static void
buf_add(struct buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + len + 1)
			cap *= 2;
		if ((b->p = realloc(b->p, cap)) == NULL)
			die("realloc");
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

static void
buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[PATH_MAX + 128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
	    .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void
sleep_seconds(long long s)
{
	struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = 0 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int
exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/*
 * The "tamper" knob: what a background child of the MTA that kept its
 * standard input could do to the next message of the same connection.
 */
static void
tamper(long long secs)
{
	char path[sizeof dir + 64], buf[4096];
	struct buf b = { 0 };
	long long waited;
	ssize_t n;
	pid_t pid;
	int fd;

	if (strcmp(strrchr(calldir, '/'), "/call-1") != 0) {
		/* A later call: let call-1's grandchild do its worst first. */
		snprintf(path, sizeof path, "%s/call-1/tamper", dir);
		for (waited = 0; !exists(path) && waited < secs * 100; waited++)
			sleep_ms(10);
		return;
	}
	if ((pid = fork()) == -1)
		die("fork");
	if (pid > 0) {
		buf_printf(&b, "%ld\n", (long)pid);
		put("childpid", b.p, b.len);
		free(b.p);
		return;
	}
	/* Off the monitor's stderr pipe; descriptor 0 kept. */
	if ((fd = open("/dev/null", O_WRONLY)) != -1) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	snprintf(path, sizeof path, "%s/call-2/pid", dir);
	for (waited = 0; !exists(path) && waited < secs * 100; waited++)
		sleep_ms(10);
	if (pwrite(0, "TAMPERED", 8, 0) == 8)
		buf_printf(&b, "write=ok\n");
	else
		buf_printf(&b, "write=error:%s\n", strerrorname_np(errno));
	n = pread(0, buf, sizeof buf, 0);
	put("tamperread", buf, n > 0 ? (size_t)n : 0);
	/* Whole when it appears: call-2 goes on as soon as it exists. */
	put("tamper.tmp", b.p, b.len);
	{
		char from[sizeof calldir + 16], to[sizeof calldir + 16];

		snprintf(from, sizeof from, "%s/tamper.tmp", calldir);
		snprintf(to, sizeof to, "%s/tamper", calldir);
		if (rename(from, to) == -1)
			die(to);
	}
	_exit(0);
}

int
main(int argc, char **argv)
{
	struct buf fds = { 0 }, fdinfo = { 0 }, b = { 0 };
	char exe[PATH_MAX], link[PATH_MAX], path[PATH_MAX];
	struct dirent *e;
	struct stat st;
	ssize_t n;
	DIR *d;
	int i;

	(void)argc;

	/* Descriptors first, before this program opens anything itself. */
	if ((d = opendir("/proc/self/fd")) == NULL)
		die("/proc/self/fd");
	while ((e = readdir(d)) != NULL) {
		int fd;

		if (e->d_name[0] == '.')
			continue;
		fd = atoi(e->d_name);
		if (fd == dirfd(d))
			continue;
		buf_printf(&fds, "%d\n", fd);
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof link - 1);
		if (n < 0)
			n = 0;
		link[n] = '\0';
		buf_printf(&fdinfo, "%d %s\n", fd, link);
	}
	closedir(d);

	/* Where am I? */
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		die("/proc/self/exe");
	exe[n] = '\0';
	snprintf(dir, sizeof dir, "%s", exe);
	if (strrchr(dir, '/') != NULL)
		*strrchr(dir, '/') = '\0';

	{
		mode_t old = umask(022);
		char um[16];

		snprintf(um, sizeof um, "%03o\n", (unsigned)old);
		for (i = 1;; i++) {
			snprintf(calldir, sizeof calldir, "%s/call-%d", dir, i);
			if (mkdir(calldir, 0755) == 0)
				break;
			if (errno != EEXIST || i > 100000)
				die(calldir);
		}
		chmod(calldir, 0755);
		buf_printf(&b, "%ld\n", (long)getpid());
		put("pid", b.p, b.len);
		b.len = 0;
		puts_file("umask", um);
	}

	for (i = 0; argv[i] != NULL; i++)
		buf_add(&b, argv[i], strlen(argv[i]) + 1);
	put("argv", b.p ? b.p : "", b.len);
	b.len = 0;

	for (i = 0; environ[i] != NULL; i++)
		buf_add(&b, environ[i], strlen(environ[i]) + 1);
	put("env", b.p ? b.p : "", b.len);
	b.len = 0;

	{
		gid_t groups[NGROUPS_MAX + 1];
		int ng = getgroups(NGROUPS_MAX + 1, groups);

		buf_printf(&b, "%ld %ld %ld %ld\n", (long)getuid(),
		    (long)getgid(), (long)geteuid(), (long)getegid());
		for (i = 0; i < ng; i++)
			buf_printf(&b, "%s%ld", i ? " " : "", (long)groups[i]);
		buf_add(&b, "\n", 1);
		put("ids", b.p, b.len);
		b.len = 0;
	}

	put("fds", fds.p ? fds.p : "", fds.len);
	put("fdinfo", fdinfo.p ? fdinfo.p : "", fdinfo.len);

	if (getcwd(path, sizeof path) == NULL)
		snprintf(path, sizeof path, "?%s", strerror(errno));
	puts_file("cwd", path);

	buf_printf(&b, "pid=%ld pgid=%ld sid=%ld ppid=%ld\n", (long)getpid(),
	    (long)getpgrp(), (long)getsid(0), (long)getppid());
	put("pgid", b.p, b.len);
	b.len = 0;

	if (fstat(0, &st) == 0) {
		int fl = fcntl(0, F_GETFL);

		buf_printf(&b, "mode=%o uid=%ld size=%lld offset=%lld type=%s "
		    "access=%s dev=%llu ino=%llu\n",
		    (unsigned)(st.st_mode & 07777), (long)st.st_uid,
		    (long long)st.st_size, (long long)lseek(0, 0, SEEK_CUR),
		    S_ISREG(st.st_mode) ? "file" : S_ISFIFO(st.st_mode) ?
		    "fifo" : S_ISSOCK(st.st_mode) ? "socket" : "other",
		    fl == -1 ? "error" : (fl & O_ACCMODE) == O_RDONLY ?
		    "rdonly" : (fl & O_ACCMODE) == O_WRONLY ? "wronly" : "rdwr",
		    (unsigned long long)st.st_dev,
		    (unsigned long long)st.st_ino);
	} else
		buf_printf(&b, "error=%s\n", strerror(errno));
	put("stat0", b.p, b.len);
	b.len = 0;

	{
		FILE *f = fopen("/proc/self/status", "re");
		char line[512];

		if (f != NULL) {
			while (fgets(line, sizeof line, f) != NULL)
				if (strncmp(line, "SigBlk:", 7) == 0 ||
				    strncmp(line, "SigIgn:", 7) == 0)
					buf_add(&b, line, strlen(line));
			fclose(f);
		}
		put("sigs", b.p ? b.p : "", b.len);
		b.len = 0;
	}

	{
		long long secs = knob("child", 0);

		if (secs > 0) {
			pid_t pid = fork();

			if (pid == 0) {
				sleep_seconds(secs);
				_exit(0);
			}
			buf_printf(&b, "%ld\n", (long)pid);
			put("childpid", b.p, b.len);
			b.len = 0;
		}
	}

	{
		long long secs = knob("tamper", 0);

		if (secs > 0)
			tamper(secs);
	}

	/* The message. */
	{
		long long limit = knob("readlimit", -1);
		struct buf msg = { 0 };
		char chunk[8192];

		for (;;) {
			size_t want = sizeof chunk;

			if (limit >= 0) {
				if ((long long)msg.len >= limit)
					break;
				if ((long long)want > limit - (long long)msg.len)
					want = (size_t)(limit - (long long)msg.len);
			}
			n = read(0, chunk, want);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			buf_add(&msg, chunk, (size_t)n);
		}
		put("message", msg.p ? msg.p : "", msg.len);
		if (limit >= 0) {
			puts_file("status", "done\n");
			return 0;
		}
	}

	{
		long long junk = knob("stderr", 0);
		static const char pat[] =
		    "junk \001\033[7m\377 sendmail noise\r line\n";
		char blk[4096];
		size_t k;

		for (k = 0; k < sizeof blk; k++)
			blk[k] = pat[k % (sizeof pat - 1)];
		signal(SIGPIPE, SIG_DFL);
		while (junk > 0) {
			size_t w = junk < (long long)sizeof blk ?
			    (size_t)junk : sizeof blk;

			n = write(2, blk, w);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			junk -= n;
		}
	}

	{
		long long secs = knob("sleep", 0);

		if (secs > 0)
			sleep_seconds(secs);
	}

	puts_file("status", "done\n");

	{
		long long sig = knob("signal", 0);

		if (sig > 0) {
			signal((int)sig, SIG_DFL);
			{
				sigset_t set;

				sigemptyset(&set);
				sigaddset(&set, (int)sig);
				sigprocmask(SIG_UNBLOCK, &set, NULL);
			}
			kill(getpid(), (int)sig);
			sleep_seconds(5);
			return 97;
		}
	}

	return (int)knob("exit", 0);
}
