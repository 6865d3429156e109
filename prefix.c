/*
 * prefix.c - client addresses as numbers: address prefixes ("192.0.2.0/24",
 * "2001:db8::/32", a bare address) parsed strictly, matched, and the
 * canonical text of the network around an address, which is what the
 * limits count by (an IPv4 address or an IPv6 /64 is one client; its /24
 * or /48 one network).
 *
 * Only addresses inet_pton accepts count: the peer "unknown" (a pipe
 * without REMOTE_ADDR) is in no prefix and has no network.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpauthd.h"

/* An IPv4-mapped IPv6 address is the IPv4 client it stands for. */
static int
addr_bytes(const char *s, struct net_addr *a)
{
	unsigned char	 v6[16];
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0xff, 0xff };

	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, a->bytes) == 1) {
		a->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, s, v6) != 1)
		return -1;
	if (memcmp(v6, mapped, sizeof(mapped)) == 0) {
		memcpy(a->bytes, v6 + 12, 4);
		a->family = 4;
	} else {
		memcpy(a->bytes, v6, 16);
		a->family = 6;
	}
	return 0;
}

int
net_addr_parse(const char *s, struct net_addr *a)
{
	if (strlen(s) >= PEER_MAX)
		return -1;
	return addr_bytes(s, a);
}

static void
mask_bits(unsigned char *b, size_t size, unsigned bits)
{
	size_t i;

	for (i = 0; i < size; i++) {
		if (bits >= 8) {
			bits -= 8;
			continue;
		}
		b[i] &= (unsigned char)(0xff << (8 - bits));
		bits = 0;
	}
}

/*
 * "ADDRESS" or "ADDRESS/LEN"; host bits set under the length are an error
 * (192.0.2.1/24 is a typing mistake more often than a wish).
 */
int
net_prefix_parse(const char *s, struct net_prefix *p)
{
	char		 buf[PEER_MAX + 8], *slash, *end;
	unsigned char	 masked[16];
	unsigned long	 len;
	size_t		 size;

	if (strlen(s) >= sizeof(buf))
		return -1;
	snprintf(buf, sizeof(buf), "%s", s);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (addr_bytes(buf, &p->addr) == -1)
		return -1;
	size = p->addr.family == 4 ? 4 : 16;
	p->bits = (unsigned)size * 8;
	if (slash != NULL) {
		if (*slash < '0' || *slash > '9' || strlen(slash) > 3)
			return -1;
		len = strtoul(slash, &end, 10);
		if (*end != '\0')
			return -1;
		/* ::ffff:192.0.2.0/120 is 192.0.2.0/24 */
		if (p->addr.family == 4 && strchr(buf, ':') != NULL) {
			if (len < 96 || len > 128)
				return -1;
			len -= 96;
		}
		if (len > size * 8)
			return -1;
		p->bits = (unsigned)len;
	}
	memcpy(masked, p->addr.bytes, size);
	mask_bits(masked, size, p->bits);
	if (memcmp(masked, p->addr.bytes, size) != 0)
		return -1;
	return 0;
}

int
net_prefix_match(const struct net_prefix *p, const struct net_addr *a)
{
	unsigned char	 masked[16];
	size_t		 size;

	if (p->addr.family != a->family)
		return 0;
	size = a->family == 4 ? 4 : 16;
	memcpy(masked, a->bytes, size);
	mask_bits(masked, size, p->bits);
	return memcmp(masked, p->addr.bytes, size) == 0;
}

/*
 * A list of prefixes separated by commas and/or blanks, as
 * auth-limit-exempt takes them: 1 when addr is in one of them, 0 when not,
 * -1 when the list does not parse (conf.c has refused it by then).
 */
int
net_prefix_list_match(const char *list, const struct net_addr *a)
{
	char			 word[PEER_MAX + 8];
	struct net_prefix	 p;
	size_t			 n;

	while (list != NULL && *list != '\0') {
		list += strspn(list, ", \t");
		n = strcspn(list, ", \t");
		if (n == 0)
			break;
		if (n >= sizeof(word))
			return -1;
		memcpy(word, list, n);
		word[n] = '\0';
		list += n;
		if (net_prefix_parse(word, &p) == -1)
			return -1;
		if (a != NULL && net_prefix_match(&p, a))
			return 1;
	}
	return 0;
}

/*
 * The text of the network of `bits` (v4bits or v6bits by family) around
 * a: "192.0.2.0/24", "2001:db8:1::/48"; a whole IPv4 address is written
 * without its /32, so that a client is keyed by the address it is known
 * by.
 */
void
net_addr_network(const struct net_addr *a, unsigned v4bits, unsigned v6bits,
    char *out, size_t outsize)
{
	unsigned char	 b[16];
	char		 text[INET6_ADDRSTRLEN];
	unsigned	 bits;

	bits = a->family == 4 ? v4bits : v6bits;
	memcpy(b, a->bytes, sizeof(b));
	mask_bits(b, a->family == 4 ? 4 : 16, bits);
	if (inet_ntop(a->family == 4 ? AF_INET : AF_INET6, b, text,
	    sizeof(text)) == NULL) {
		snprintf(out, outsize, "-");
		return;
	}
	if (a->family == 4 && bits == 32)
		snprintf(out, outsize, "%s", text);
	else
		snprintf(out, outsize, "%s/%u", text, bits);
}
