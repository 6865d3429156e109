/*
 * chan.h - the packets of the channel between a connection's monitor and
 * its session: their types, and the codec both sides use (chan.c).  The
 * protocol itself - which packets, which fields, in which order - is in
 * privsep.c's top comment.
 */
#ifndef CHAN_H
#define CHAN_H

#include <stddef.h>
#include <stdint.h>

#define MSG_AUTH	1
#define MSG_SUBMIT	2
#define MSG_RCPT	3
#define MSG_READY	4	/* monitor -> session, once: go ahead */
#define MSG_SPOOL	5
#define MSG_MAIL	6
#define MSG_TYPES	7	/* one more than the last */

#define SPOOL_OK	0	/* the descriptor comes with the reply */
#define SPOOL_NONE	1

#define MECH_PLAIN	1
#define MECH_LOGIN	2

/* The TLS version the session reports ("TLSv1.3", "none"). */
#define TLS_NAME_MAX	15
#define TLS_NAME_CHARS	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789."

#define PACKET_MAX	(AUTH_USER_MAX + AUTH_PASS_MAX + 64)

struct packet {
	unsigned char	 buf[PACKET_MAX];
	size_t		 len;		/* built, or received */
	size_t		 off;		/* read so far */
	int		 bad;		/* did not fit, or ran short */
};

void	 packet_start(struct packet *, uint32_t type);
void	 put_u32(struct packet *, uint32_t);
void	 put_bytes(struct packet *, const void *, size_t);
void	 put_string(struct packet *, const char *);
uint32_t get_u32(struct packet *);
void	 get_bytes(struct packet *, void *out, size_t n);
void	 get_string(struct packet *, uint32_t n, char *out, size_t outsize);
int	 packet_done(const struct packet *);
int	 packet_send(int fd, struct packet *);
int	 packet_send_fd(int fd, struct packet *, int passed);
int	 packet_recv(int fd, struct packet *);
int	 packet_recv_fd(int fd, struct packet *, int *passed);

#endif
