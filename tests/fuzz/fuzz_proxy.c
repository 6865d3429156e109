/*
 * fuzz_proxy.c - libFuzzer target for the PROXY protocol header (proxy.c):
 * proxy_parse() on every prefix of the input, and proxy_read() on a
 * socket holding the input.
 *
 * The input is the first bytes of a connection from a load balancer.  The
 * answers over growing prefixes must be SHORT, SHORT, ... then OK or BAD
 * for good: a header once found keeps its length and its fields whatever
 * follows, a refusal stays a refusal, and SHORT never comes at the size
 * limit (107 octets for v1, PROXY_MAX for v2), so that the monitor never
 * waits for a header it could not take.  A header ends v1 with CRLF;
 * a client address comes out as text inet_pton takes back.  proxy_read()
 * must agree with the parser and leave exactly what follows the header
 * on the socket: the session's first byte is never the monitor's.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz.h"
#include "../../proxy.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	return 0;
}

static void
check_header(const uint8_t *data, size_t used, const struct proxy_info *pi)
{
	char		 text[PEER_MAX];
	unsigned char	 bin[16];

	FUZZ_CHECK(used > 0 && used <= PROXY_MAX);
	FUZZ_CHECK(pi->version == 1 || pi->version == 2);
	if (pi->version == 1) {
		FUZZ_CHECK(used <= PROXY_V1_MAX && used >= 8);
		FUZZ_CHECK(memcmp(data, "PROXY ", 6) == 0);
		FUZZ_CHECK(data[used - 2] == '\r' && data[used - 1] == '\n');
		FUZZ_CHECK(memchr(data, '\n', used - 1) == NULL);
		FUZZ_CHECK(!pi->local);
	} else
		FUZZ_CHECK(used >= 16 && data[0] == '\r');
	if (proxy_client_address(pi, text, sizeof(text)) == 0) {
		FUZZ_CHECK(pi->family == AF_INET || pi->family == AF_INET6);
		FUZZ_CHECK(!pi->local);
		FUZZ_CHECK(inet_pton(AF_INET, text, bin) == 1 ||
		    inet_pton(AF_INET6, text, bin) == 1);
	} else
		FUZZ_CHECK(pi->local || (pi->family != AF_INET &&
		    pi->family != AF_INET6));
}

/* proxy_read() on a socket that holds data and then end of file. */
static void
check_read(const uint8_t *data, size_t size, int want, size_t used,
    const struct proxy_info *want_pi)
{
	struct proxy_info	 pi;
	const char		*reason, *why;
	unsigned char		 rest[PROXY_MAX + 2048];
	int			 sv[2], rc;
	ssize_t			 n;

	if (size > sizeof(rest) - 1)
		size = sizeof(rest) - 1;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	if (size > 0 && write(sv[1], data, size) != (ssize_t)size)
		abort();
	(void)shutdown(sv[1], SHUT_WR);
	rc = proxy_read(sv[0], 5, &pi, &reason, &why);
	if (want == PROXY_OK) {
		FUZZ_CHECK(rc == PROXY_OK);
		FUZZ_CHECK(memcmp(&pi, want_pi, sizeof(pi)) == 0);
		n = read(sv[0], rest, sizeof(rest));
		FUZZ_CHECK(n >= 0 && (size_t)n == size - used);
		FUZZ_CHECK(memcmp(rest, data + used, (size_t)n) == 0);
	} else {
		FUZZ_CHECK(rc == PROXY_BAD);
		FUZZ_CHECK(strcmp(reason, want == PROXY_BAD ?
		    "proxy-malformed" : size == 0 ? "proxy-eof" :
		    "proxy-truncated") == 0);
	}
	close(sv[0]);
	close(sv[1]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info	 pi, first;
	const char		*why;
	size_t			 k, used, found = 0, limit;
	int			 rc, settled = PROXY_SHORT;

	limit = size < PROXY_MAX + 1 ? size : PROXY_MAX + 1;
	memset(&first, 0, sizeof(first));
	for (k = 0; k <= limit; k++) {
		rc = proxy_parse(data, k, &used, &pi, &why);
		FUZZ_CHECK(rc == PROXY_OK || rc == PROXY_SHORT ||
		    rc == PROXY_BAD);
		FUZZ_CHECK(why != NULL);
		if (settled == PROXY_SHORT) {
			settled = rc;
			if (rc == PROXY_OK) {
				FUZZ_CHECK(used == k);
				check_header(data, used, &pi);
				found = used;
				first = pi;
			}
			if (rc == PROXY_SHORT) {
				FUZZ_CHECK(k < PROXY_MAX);
				FUZZ_CHECK(k == 0 || data[0] != 'P' ||
				    k < PROXY_V1_MAX);
			}
			continue;
		}
		FUZZ_CHECK(rc == settled);
		if (rc == PROXY_OK)
			FUZZ_CHECK(used == found &&
			    memcmp(&pi, &first, sizeof(pi)) == 0);
	}
	check_read(data, size, settled, found, &first);
	return 0;
}
