/*
 * monitor-probe.c - speaks the privsep channel protocol to a real monitor.
 *
 *   monitor-probe CONF SCRIPT
 *
 * Runs privsep_run() as smtpauthd does, but the confined session process
 * follows SCRIPT instead of speaking SMTP: "send HEX" sends one packet,
 * "recv" waits up to 5 s for one and prints "reply HEX" or "eof" on
 * stdout.  The monitor's exit status is this program's: 70 when it refused
 * a request.  Tests build the packets; see tests/test_privsep.py.
 *
 * Other lines make a system call the session should or should not be
 * allowed, as an attacker who took it over would, and print
 * "did NAME RC ERRNO" when it returns (a call the filter refuses kills the
 * session first): "setown PID", "setown-ex PID", "setsig SIG", "async"
 * (fcntl on the channel), "fcntl-ok" (the fcntl commands the filter
 * allows), "mmap-exec", "mprotect-exec", "tgkill PID SIG", "tgkill-self
 * SIG", "abort" and
 * "stack-chk" (what the stack protector calls on a smashed stack).
 *
 * And what a subverted session could do with the spool file: "spool"
 * sends SPOOL and keeps the descriptor that comes with the reply (printed
 * as "reply HEX" like any other), "write HEX" writes its octets at the
 * start of that file, "sleep MS" waits.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "chan.h"

#define SCRIPT_MAX	(1 << 20)

static char	*script;
static int	 spool_fd = -1;	/* "spool": the last one the monitor gave */

void	__stack_chk_fail(void);		/* glibc's */

static void
did(const char *name, long rc)
{
	printf("did %s %ld %d\n", name, rc, rc == -1 ? errno : 0);
}

/* F_GETFD, F_SETFD, F_GETFL, F_SETFL without O_ASYNC, F_DUPFD_CLOEXEC. */
static long
fcntl_allowed(int fd)
{
	int	 fdflags, flags, copy;

	if ((fdflags = fcntl(fd, F_GETFD)) == -1 ||
	    fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC) == -1 ||
	    (flags = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1 ||
	    fcntl(fd, F_SETFL, flags) == -1 ||
	    (copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1)
		return -1;
	return close(copy);
}

/* The session doing what an attacker in it would try; 1: a line for it. */
static int
attack(const char *line, int channel)
{
	struct f_owner_ex	 owner;
	void			*p;
	long			 rc;
	int			 a = 0, b = 0, flags;

	if (sscanf(line, "setown %d", &a) == 1)
		did("setown", fcntl(channel, F_SETOWN, a));
	else if (sscanf(line, "setown-ex %d", &a) == 1) {
		owner.type = F_OWNER_PID;
		owner.pid = a;
		did("setown-ex", fcntl(channel, F_SETOWN_EX, &owner));
	} else if (sscanf(line, "setsig %d", &a) == 1)
		did("setsig", fcntl(channel, F_SETSIG, a));
	else if (strcmp(line, "async") == 0) {
		rc = flags = fcntl(channel, F_GETFL);
		if (flags != -1)
			rc = fcntl(channel, F_SETFL, flags | O_ASYNC);
		did("async", rc);
	} else if (strcmp(line, "fcntl-ok") == 0)
		did("fcntl-ok", fcntl_allowed(channel));
	else if (strcmp(line, "mmap-exec") == 0) {
		p = mmap(NULL, 4096, PROT_READ | PROT_EXEC,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		did("mmap-exec", p == MAP_FAILED ? -1 : 0);
	} else if (strcmp(line, "mprotect-exec") == 0) {
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		did("mprotect-exec", p == MAP_FAILED ? -1 :
		    mprotect(p, 4096, PROT_READ | PROT_EXEC));
	} else if (sscanf(line, "tgkill %d %d", &a, &b) == 2)
		did("tgkill", syscall(SYS_tgkill, a, a, b));
	else if (sscanf(line, "tgkill-self %d", &a) == 1)
		did("tgkill-self", syscall(SYS_tgkill, getpid(), gettid(), a));
	else if (strcmp(line, "abort") == 0)
		abort();
	else if (strcmp(line, "stack-chk") == 0)
		__stack_chk_fail();
	else
		return 0;
	return 1;
}

static int
unhex(const char *in, unsigned char *out, size_t outsize)
{
	size_t n = 0;

	while (in[0] != '\0' && in[1] != '\0' && n < outsize) {
		unsigned int v;

		if (sscanf(in, "%2x", &v) != 1)
			return -1;
		out[n++] = (unsigned char)v;
		in += 2;
	}
	return (int)n;
}

/* The confined session's work here: the script. */
static void
probe(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx,
    int channel)
{
	static unsigned char	 buf[65536];
	char			*line, *save = NULL;
	struct pollfd		 pfd;
	ssize_t			 n, i;
	int			 len;

	(void)cf;
	(void)io;
	(void)peer;
	(void)starttls_ctx;
	(void)implicit_ctx;

	for (line = strtok_r(script, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "send ", 5) == 0) {
			if ((len = unhex(line + 5, buf, sizeof(buf))) < 0)
				_exit(2);
			if (send(channel, buf, (size_t)len, MSG_NOSIGNAL) != len)
				printf("send failed\n");
		} else if (strcmp(line, "recv") == 0) {
			pfd.fd = channel;
			pfd.events = POLLIN;
			n = poll(&pfd, 1, 5000) == 1 ?
			    recv(channel, buf, sizeof(buf), 0) : -1;
			if (n <= 0)
				printf("eof\n");
			else {
				printf("reply ");
				for (i = 0; i < n; i++)
					printf("%02x", buf[i]);
				printf("\n");
			}
		} else if (strcmp(line, "spool") == 0) {
			static const unsigned char req[4] = { 5, 0, 0, 0 };
			struct packet	 p;
			int		 fd;

			if (send(channel, req, sizeof(req), MSG_NOSIGNAL) != 4 ||
			    packet_recv_fd(channel, &p, &fd) == -1)
				printf("eof\n");
			else {
				if (spool_fd != -1)
					close(spool_fd);
				spool_fd = fd;
				printf("reply ");
				for (i = 0; i < (ssize_t)p.len; i++)
					printf("%02x", p.buf[i]);
				printf("\n");
			}
		} else if (strncmp(line, "write ", 6) == 0) {
			if ((len = unhex(line + 6, buf, sizeof(buf))) < 0)
				_exit(2);
			did("write", spool_fd == -1 ||
			    lseek(spool_fd, 0, SEEK_SET) == -1 ? -1 :
			    (long)write(spool_fd, buf, (size_t)len));
		} else if (strncmp(line, "sleep ", 6) == 0) {
			struct timespec ts;
			long ms = atol(line + 6);

			ts.tv_sec = ms / 1000;
			ts.tv_nsec = (ms % 1000) * 1000000L;
			(void)nanosleep(&ts, NULL);
		} else if (!attack(line, channel))
			_exit(2);
		fflush(stdout);
	}
}

int
main(int argc, char *argv[])
{
	struct config	 cf;
	struct io	 io;
	FILE		*fp;
	size_t		 n;
	int		 rc;

	if (argc != 3)
		errx(64, "usage: monitor-probe CONF SCRIPT");
	if ((fp = fopen(argv[2], "r")) == NULL)
		err(66, "%s", argv[2]);
	script = calloc(1, SCRIPT_MAX + 1);
	n = fread(script, 1, SCRIPT_MAX, fp);
	script[n] = '\0';
	fclose(fp);
	log_init(1);
	conf_defaults(&cf);
	conf_load_file(&cf, argv[1], 1);
	conf_finish(&cf);
	if (cf.nerrors > 0)
		errx(78, "%s: %s", argv[1], cf.errors[0]);
	io_init(&io, 0, 1, 5000);
	rc = privsep_split(&cf, &io, "192.0.2.9", NULL, NULL, probe);
	conf_free(&cf);
	free(script);
	return rc;
}
