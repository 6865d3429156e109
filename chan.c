/*
 * chan.c - the codec of the privsep channel: packets built and read field
 * by field, sent and received whole over the SOCK_SEQPACKET socketpair,
 * one with a descriptor (SCM_RIGHTS).  Every field is a 32-bit number in
 * host order, or octets whose length a number gave; a reader that runs
 * short, or a writer that would overflow PACKET_MAX, marks the packet
 * bad instead of guessing, and packet_done() says whether every octet
 * was accounted for.  What the packets mean is privsep.c's.
 */
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <poll.h>
#include <string.h>

#include "smtpauthd.h"
#include "chan.h"

void
packet_start(struct packet *p, uint32_t type)
{
	memset(p, 0, sizeof(*p));
	put_u32(p, type);
}

void
put_u32(struct packet *p, uint32_t v)
{
	put_bytes(p, &v, sizeof(v));
}

void
put_bytes(struct packet *p, const void *b, size_t n)
{
	if (n > sizeof(p->buf) - p->len) {
		p->bad = 1;
		return;
	}
	memcpy(p->buf + p->len, b, n);
	p->len += n;
}

/* Its length, then its octets. */
void
put_string(struct packet *p, const char *s)
{
	size_t	 n = strlen(s);

	if (n > UINT32_MAX) {
		p->bad = 1;
		return;
	}
	put_u32(p, (uint32_t)n);
	put_bytes(p, s, n);
}

/* Read even from a bad packet: its handler says what was wrong. */
void
get_bytes(struct packet *p, void *out, size_t n)
{
	if (p->len - p->off < n) {
		p->bad = 1;
		memset(out, 0, n);
		return;
	}
	memcpy(out, p->buf + p->off, n);
	p->off += n;
}

uint32_t
get_u32(struct packet *p)
{
	uint32_t v;

	get_bytes(p, &v, sizeof(v));
	return v;
}

/* n octets as a C string into out (outsize > n), refusing NUL inside. */
void
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

/* Every octet accounted for. */
int
packet_done(const struct packet *p)
{
	return !p->bad && p->off == p->len;
}

/* The packet, with a descriptor when passed is not -1 (monitor only). */
int
packet_send_fd(int fd, struct packet *p, int passed)
{
	union {
		struct cmsghdr	 hdr;
		char		 buf[CMSG_SPACE(sizeof(int))];
	} cmsg;
	struct msghdr	 msg;
	struct iovec	 iov;
	struct cmsghdr	*c;
	ssize_t		 n;

	if (p->bad)
		return -1;
	memset(&cmsg, 0, sizeof(cmsg));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = p->buf;
	iov.iov_len = p->len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (passed != -1) {
		msg.msg_control = cmsg.buf;
		msg.msg_controllen = sizeof(cmsg.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &passed, sizeof(int));
	}
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	explicit_bzero(p->buf, sizeof(p->buf));
	return n == (ssize_t)p->len ? 0 : -1;
}

/* send(2), not sendmsg: the only one the session's filter lets through. */
int
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
int
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
int
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
