/*
 * proxy.c - the PROXY protocol header (HAProxy's doc/proxy-protocol.txt,
 * v1 text and v2 binary) that a load balancer listed in
 * proxy-protocol-from sends before its client's first byte, naming the
 * client.
 *
 * proxy_parse() is a pure function of the bytes seen so far: a header
 * (OK, with how many bytes it took), not yet a whole one (SHORT), or not
 * a header (BAD).  It decides as early as it can: an SMTP command or a
 * TLS ClientHello is BAD at its first byte, not after a timeout.
 *
 * proxy_read() is the monitor's: it runs as root before the session is
 * forked, so that the address behind PAM, the logs and the counters is
 * one the monitor obtained itself.  It reads at most PROXY_MAX bytes
 * under one deadline, and never a byte past the header: the first SMTP
 * command, or implicit TLS's ClientHello, is the session's.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "smtpauthd.h"
#include "proxy.h"

static const unsigned char v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
    0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
static const char v1_sig[] = "PROXY ";

/* A port: 1 to 5 digits, at most 65535. */
static int
v1_port(const char *s, uint16_t *port)
{
	unsigned long	 n = 0;
	size_t		 len = strlen(s);

	if (len == 0 || len > 5 || strspn(s, "0123456789") != len)
		return -1;
	for (; *s != '\0'; s++)
		n = n * 10 + (unsigned long)(*s - '0');
	if (n > 65535)
		return -1;
	*port = (uint16_t)n;
	return 0;
}

/*
 * "TCP4 SRC DST SPORT DPORT" or "TCP6 ...", each field separated by one
 * space, nothing more; or "UNKNOWN" and anything (the spec asks the
 * receiver to ignore what follows it).
 */
static int
v1_fields(char *line, struct proxy_info *pi, const char **why)
{
	char	*f[5], *p = line;
	size_t	 n;
	int	 af;

	if (strcmp(line, "UNKNOWN") == 0 || strncmp(line, "UNKNOWN ", 8) == 0) {
		pi->family = AF_UNSPEC;
		return PROXY_OK;
	}
	for (n = 0; n < 5; n++) {
		f[n] = p;
		if ((p = strchr(p, ' ')) == NULL)
			break;
		*p++ = '\0';
	}
	if (n != 4 || p != NULL) {
		*why = "v1-fields";
		return PROXY_BAD;
	}
	if (strcmp(f[0], "TCP4") == 0)
		af = AF_INET;
	else if (strcmp(f[0], "TCP6") == 0)
		af = AF_INET6;
	else {
		*why = "v1-protocol";
		return PROXY_BAD;
	}
	if (inet_pton(af, f[1], pi->src) != 1 ||
	    inet_pton(af, f[2], pi->dst) != 1) {
		*why = "v1-address";
		return PROXY_BAD;
	}
	if (v1_port(f[3], &pi->sport) == -1 || v1_port(f[4], &pi->dport) == -1) {
		*why = "v1-port";
		return PROXY_BAD;
	}
	pi->family = af;
	return PROXY_OK;
}

static int
parse_v1(const unsigned char *buf, size_t len, size_t *used,
    struct proxy_info *pi, const char **why)
{
	char	 line[PROXY_V1_MAX + 1];
	size_t	 i;

	for (i = 0; i < len && i < PROXY_V1_MAX; i++) {
		if (buf[i] == '\r')
			break;
		/* Printable ASCII only: the line goes into the log. */
		if (buf[i] < ' ' || buf[i] > '~') {
			*why = "v1-character";
			return PROXY_BAD;
		}
	}
	/* CRLF must end within PROXY_V1_MAX octets. */
	if (i + 1 >= PROXY_V1_MAX) {
		*why = "v1-too-long";
		return PROXY_BAD;
	}
	if (i + 1 >= len)
		return PROXY_SHORT;
	if (buf[i + 1] != '\n') {
		*why = "v1-crlf";
		return PROXY_BAD;
	}
	memcpy(line, buf, i);
	line[i] = '\0';
	pi->version = 1;
	if (v1_fields(line + sizeof(v1_sig) - 1, pi, why) != PROXY_OK)
		return PROXY_BAD;
	*used = i + 2;
	return PROXY_OK;
}

/* The TLVs after the addresses: skipped, but they must fill the length. */
static int
v2_tlvs(const unsigned char *p, size_t len)
{
	size_t tlen;

	while (len > 0) {
		if (len < 3)
			return -1;
		tlen = (size_t)p[1] << 8 | p[2];
		if (tlen > len - 3)
			return -1;
		p += 3 + tlen;
		len -= 3 + tlen;
	}
	return 0;
}

static int
parse_v2(const unsigned char *buf, size_t len, size_t *used,
    struct proxy_info *pi, const char **why)
{
	size_t		 hlen, alen;
	unsigned	 cmd, af, transport;

	if (len < 16)
		return PROXY_SHORT;
	if (buf[12] >> 4 != 2) {
		*why = "v2-version";
		return PROXY_BAD;
	}
	if ((cmd = buf[12] & 0x0f) > 1) {
		*why = "v2-command";
		return PROXY_BAD;
	}
	af = buf[13] >> 4;
	transport = buf[13] & 0x0f;
	hlen = (size_t)buf[14] << 8 | buf[15];
	if (16 + hlen > PROXY_MAX) {
		*why = "v2-too-long";
		return PROXY_BAD;
	}
	if (len < 16 + hlen)
		return PROXY_SHORT;
	pi->version = 2;
	*used = 16 + hlen;
	/* LOCAL: the balancer speaking for itself; the rest is ignored. */
	if (cmd == 0) {
		pi->local = 1;
		pi->family = AF_UNSPEC;
		return PROXY_OK;
	}
	/* Checked after LOCAL, whose family byte the receiver ignores. */
	if (af > 3 || transport > 2) {
		*why = "v2-family";
		return PROXY_BAD;
	}
	switch (af) {
	case 0:
		pi->family = AF_UNSPEC;
		return PROXY_OK;
	case 1:
		pi->family = AF_INET;
		alen = 12;
		break;
	case 2:
		pi->family = AF_INET6;
		alen = 36;
		break;
	default:
		pi->family = AF_UNIX;
		alen = 216;
		break;
	}
	/* A stream is what carries SMTP; a datagram header is a mistake. */
	if (transport != 1) {
		*why = "v2-transport";
		return PROXY_BAD;
	}
	if (hlen < alen) {
		*why = "v2-length";
		return PROXY_BAD;
	}
	if (v2_tlvs(buf + 16 + alen, hlen - alen) == -1) {
		*why = "v2-tlv";
		return PROXY_BAD;
	}
	if (pi->family == AF_INET) {
		memcpy(pi->src, buf + 16, 4);
		memcpy(pi->dst, buf + 20, 4);
		pi->sport = (uint16_t)(buf[24] << 8 | buf[25]);
		pi->dport = (uint16_t)(buf[26] << 8 | buf[27]);
	} else if (pi->family == AF_INET6) {
		memcpy(pi->src, buf + 16, 16);
		memcpy(pi->dst, buf + 32, 16);
		pi->sport = (uint16_t)(buf[48] << 8 | buf[49]);
		pi->dport = (uint16_t)(buf[50] << 8 | buf[51]);
	}
	return PROXY_OK;
}

/*
 * The header at the start of buf[len]: PROXY_OK with *used its length
 * and *pi filled in, PROXY_SHORT when buf is the beginning of one (every
 * byte of it then belongs to the header), PROXY_BAD with *why a word for
 * the log.  A family without an address (AF_UNSPEC, AF_UNIX) or v2 LOCAL
 * is still a header: what to do with it is the caller's.
 */
int
proxy_parse(const unsigned char *buf, size_t len, size_t *used,
    struct proxy_info *pi, const char **why)
{
	size_t n;

	memset(pi, 0, sizeof(*pi));
	*used = 0;
	*why = "-";
	if (len == 0)
		return PROXY_SHORT;
	if (buf[0] == v2_sig[0]) {
		n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
		if (memcmp(buf, v2_sig, n) != 0) {
			*why = "v2-signature";
			return PROXY_BAD;
		}
		return parse_v2(buf, len, used, pi, why);
	}
	n = len < sizeof(v1_sig) - 1 ? len : sizeof(v1_sig) - 1;
	if (memcmp(buf, v1_sig, n) != 0) {
		*why = "signature";
		return PROXY_BAD;
	}
	return parse_v1(buf, len, used, pi, why);
}

/* The client's address as text, as peer_address() writes one. */
int
proxy_client_address(const struct proxy_info *pi, char *out, size_t outsize)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0xff, 0xff };

	if (pi->family == AF_INET)
		return inet_ntop(AF_INET, pi->src, out, outsize) ? 0 : -1;
	if (pi->family != AF_INET6)
		return -1;
	if (memcmp(pi->src, mapped, sizeof(mapped)) == 0)
		return inet_ntop(AF_INET, pi->src + 12, out, outsize) ? 0 : -1;
	return inet_ntop(AF_INET6, pi->src, out, outsize) ? 0 : -1;
}

/* Take n bytes already peeked from the socket's queue. */
static int
consume(int fd, unsigned char *p, size_t n)
{
	ssize_t got;

	while (n > 0) {
		got = recv(fd, p, n, MSG_DONTWAIT);
		if (got == -1 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

/*
 * Read the header from fd within timeout seconds: PROXY_OK with *pi, or
 * PROXY_BAD with *reason (proxy-malformed, proxy-timeout, proxy-eof when
 * the peer closed or reset before a byte, proxy-truncated after some,
 * proxy-error)
 * and *why the detail.
 *
 * Each pass peeks at what is queued, after what was taken before, and
 * parses the whole.  A header found is taken up to its last byte and no
 * further.  Bytes of a header not yet complete are taken too: they are
 * the header's whatever follows, and left queued they would make poll()
 * return at once, spinning until the rest arrived.
 */
int
proxy_read(int fd, uint64_t timeout, struct proxy_info *pi,
    const char **reason, const char **why)
{
	unsigned char	 buf[PROXY_MAX];
	struct pollfd	 pfd;
	size_t		 have = 0, used, take;
	ssize_t		 n;
	int64_t		 deadline, left;
	int		 rc;

	deadline = now_ms() + (int64_t)timeout * 1000;
	*why = "-";
	for (;;) {
		if ((left = deadline - now_ms()) <= 0) {
			*reason = "proxy-timeout";
			return PROXY_BAD;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		rc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rc == -1 && errno != EINTR) {
			*reason = "proxy-error";
			*why = strerror(errno);
			return PROXY_BAD;
		}
		if (rc <= 0)
			continue;
		n = recv(fd, buf + have, sizeof(buf) - have,
		    MSG_PEEK | MSG_DONTWAIT);
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			/*
			 * A balancer's TCP health check connects and resets:
			 * it left before a byte, as a closed one does.
			 */
			*reason = errno == ECONNRESET && have == 0 ?
			    "proxy-eof" : "proxy-error";
			*why = strerror(errno);
			return PROXY_BAD;
		}
		if (n == 0) {
			*reason = have == 0 ? "proxy-eof" : "proxy-truncated";
			return PROXY_BAD;
		}
		rc = proxy_parse(buf, have + (size_t)n, &used, pi, why);
		if (rc == PROXY_BAD) {
			*reason = "proxy-malformed";
			return PROXY_BAD;
		}
		take = rc == PROXY_OK ? used - have : (size_t)n;
		if (consume(fd, buf + have, take) == -1) {
			*reason = "proxy-error";
			*why = "recv";
			return PROXY_BAD;
		}
		have += take;
		if (rc == PROXY_OK)
			return PROXY_OK;
		/* The parser refuses a header longer than the buffer. */
		if (have == sizeof(buf)) {
			*reason = "proxy-malformed";
			*why = "too-long";
			return PROXY_BAD;
		}
	}
}
