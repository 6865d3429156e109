/*
 * proxy.h - the PROXY protocol header (HAProxy's v1 text and v2 binary)
 * that a load balancer puts before the client's first byte: the parser
 * and the monitor's reader (proxy.c).
 */
#ifndef PROXY_H
#define PROXY_H

#include <stddef.h>
#include <stdint.h>

/* v1: "PROXY TCP6 " + two 39-octet addresses + two ports + CRLF. */
#define PROXY_V1_MAX	107
/*
 * v2: HAProxy's spec asks senders to fit the header in 536 octets (the
 * smallest TCP segment every host must take, 576 - 40), so it arrives in
 * one segment; a longer one is refused rather than waited for.
 */
#define PROXY_MAX	536

enum { PROXY_OK, PROXY_SHORT, PROXY_BAD };

struct proxy_info {
	int		 version;	/* 1 or 2 */
	int		 local;		/* v2 LOCAL: the balancer's own check */
	int		 family;	/* AF_INET, AF_INET6; AF_UNSPEC for v1
					   UNKNOWN and v2 UNSPEC; AF_UNIX */
	unsigned char	 src[16], dst[16];	/* network order */
	uint16_t	 sport, dport;
};

int	 proxy_parse(const unsigned char *, size_t, size_t *used,
	    struct proxy_info *, const char **why);
int	 proxy_client_address(const struct proxy_info *, char *, size_t);
int	 proxy_read(int fd, uint64_t timeout, struct proxy_info *,
	    const char **reason, const char **why);

#endif
