/*
 * io.c - buffered line I/O on the client connection (fd 0 in, fd 1 out).
 *
 * Every read waits against a deadline, not a per-read timer, so a client
 * that drip-feeds a byte at a time cannot hold the process longer than the
 * configured timeout.  The input buffer has a fixed size: a line longer
 * than the caller's limit is discarded to its end, never stored.  Output is
 * collected and written only when flushed (PIPELINING) or when full.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "smtpauthd.h"

static void
set_nonblock(int fd)
{
	int flags;

	if ((flags = fcntl(fd, F_GETFL)) != -1)
		(void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/*
 * Replies are written whole, once per flush: nothing is gained by Nagle's
 * algorithm holding a small one back.  Not a socket (a pipe): no matter.
 */
static void
set_nodelay(int fd)
{
	int on = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

void
io_init(struct io *io, int infd, int outfd, uint64_t write_timeout_ms)
{
	memset(io, 0, sizeof(*io));
	io->infd = infd;
	io->outfd = outfd;
	io->write_timeout_ms = write_timeout_ms;
	set_nonblock(infd);
	set_nonblock(outfd);
	set_nodelay(outfd);
}

/* Wait until fd is ready for events, or the deadline: an io_status. */
int
io_wait_fd(int fd, short events, int64_t deadline_ms)
{
	struct pollfd	 pfd;
	int64_t		 left;
	int		 n;

	for (;;) {
		left = deadline_ms - now_ms();
		if (left <= 0)
			return IO_TIMEOUT;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0)
			return IO_OK;
		if (n == -1 && errno != EINTR)
			return IO_ERROR;
	}
}

/* Read more input; returns the number of new bytes or an io_status. */
int
io_fill(struct io *io, int64_t deadline_ms)
{
	ssize_t	 n;
	int	 rc;

	if (io->in_start > 0) {
		memmove(io->in, io->in + io->in_start,
		    io->in_end - io->in_start);
		io->in_end -= io->in_start;
		io->in_start = 0;
	}
	if (io->in_end == sizeof(io->in))
		return IO_TOOLONG;
	if (io->tls != NULL) {
		n = tls_read(io->tls, io->in + io->in_end,
		    sizeof(io->in) - io->in_end, deadline_ms);
		if (n > 0)
			io->in_end += (size_t)n;
		return n == 0 ? IO_EOF : (int)n;
	}
	for (;;) {
		n = read(io->infd, io->in + io->in_end,
		    sizeof(io->in) - io->in_end);
		if (n > 0) {
			io->in_end += (size_t)n;
			return (int)n;
		}
		if (n == 0)
			return IO_EOF;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno == ECONNRESET ? IO_EOF : IO_ERROR;
		if ((rc = io_wait_fd(io->infd, POLLIN, deadline_ms)) != IO_OK)
			return rc;
	}
}

/* Input already received: ours, and what TLS has decrypted but not given. */
size_t
io_pending(const struct io *io)
{
	return io->in_end - io->in_start +
	    (io->tls != NULL ? tls_pending(io->tls) : 0);
}

const char *
io_peek(const struct io *io, size_t *lenp)
{
	*lenp = io->in_end - io->in_start;
	return io->in + io->in_start;
}

void
io_consume(struct io *io, size_t n)
{
	if (n > io->in_end - io->in_start)
		n = io->in_end - io->in_start;
	io->in_start += n;
	if (io->in_start == io->in_end)
		io->in_start = io->in_end = 0;
}

void
io_discard_input(struct io *io)
{
	io->in_start = io->in_end = 0;
}

/*
 * From here on the connection is TLS.  Whatever arrived in plaintext
 * before the handshake is dropped: it was not protected, and a man in the
 * middle may have put it there (CVE-2011-0411).
 */
void
io_start_tls(struct io *io, struct ssl_st *ssl)
{
	io_discard_input(io);
	io->tls = ssl;
}

/* Drop input up to and including the next LF, reading as needed. */
static int
discard_line(struct io *io, int64_t deadline_ms)
{
	const char	*p;
	int		 rc;

	for (;;) {
		p = memchr(io->in + io->in_start, '\n',
		    io->in_end - io->in_start);
		if (p != NULL) {
			io_consume(io, (size_t)(p - (io->in + io->in_start)) + 1);
			return IO_TOOLONG;
		}
		io_discard_input(io);
		if ((rc = io_fill(io, deadline_ms)) < 0)
			return rc;
	}
}

/*
 * Take one line ending in LF (a CR before the LF is dropped with it) into
 * buf as a C string.  A line whose octets, CRLF included, exceed maxlen is
 * discarded and IO_TOOLONG returned.
 */
int
io_getline(struct io *io, char *buf, size_t bufsize, size_t maxlen,
    int64_t deadline_ms, size_t *lenp)
{
	const char	*start, *lf;
	size_t		 avail, len;
	int		 rc;

	if (maxlen > bufsize)
		maxlen = bufsize;
	for (;;) {
		start = io->in + io->in_start;
		avail = io->in_end - io->in_start;
		lf = memchr(start, '\n', avail < maxlen ? avail : maxlen);
		if (lf != NULL)
			break;
		if (avail >= maxlen)
			return discard_line(io, deadline_ms);
		if ((rc = io_fill(io, deadline_ms)) < 0)
			return rc == IO_TOOLONG ? discard_line(io, deadline_ms) :
			    rc;
	}
	len = (size_t)(lf - start);
	io_consume(io, len + 1);
	if (len > 0 && start[len - 1] == '\r')
		len--;
	memcpy(buf, start, len);
	buf[len] = '\0';
	*lenp = len;
	return IO_OK;
}

static int
write_all(struct io *io, const char *buf, size_t len)
{
	int64_t	 deadline = now_ms() + (int64_t)io->write_timeout_ms;
	ssize_t	 n;

	if (io->tls != NULL) {
		if (tls_write(io->tls, buf, len, deadline) == -1)
			io->failed = 1;
		return io->failed ? -1 : 0;
	}
	while (len > 0) {
		n = write(io->outfd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    io_wait_fd(io->outfd, POLLOUT, deadline) == IO_OK)
			continue;
		io->failed = 1;
		return -1;
	}
	return 0;
}

int
io_flush(struct io *io)
{
	int rc;

	if (io->failed)
		return -1;
	if (io->out_len == 0)
		return 0;
	rc = write_all(io, io->out, io->out_len);
	io->out_len = 0;
	return rc;
}

int
io_write(struct io *io, const char *buf, size_t len)
{
	if (io->failed)
		return -1;
	if (io->out_len + len > sizeof(io->out) && io_flush(io) == -1)
		return -1;
	if (len > sizeof(io->out))
		return write_all(io, buf, len);
	memcpy(io->out + io->out_len, buf, len);
	io->out_len += len;
	return 0;
}

int
io_printf(struct io *io, const char *fmt, ...)
{
	char	 line[SMTP_CMD_MAX * 2];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above; the analyzer cannot model it when it inlines a variadic call */
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	return io_write(io, line, (size_t)n);
}
