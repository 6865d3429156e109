/*
 * fuzz_header.c - libFuzzer target for the From:/Sender: reader the
 * monitor runs as root on the spool (header.c): header_address_list() on
 * the input as one field's value, and header_senders() on the input as a
 * whole spool file (a memfd).
 *
 * The checks are what the policy that compares the addresses with the
 * login relies on: a known result; on OK at least one address and at most
 * HEADER_ADDRS_MAX, each non-empty, within HEADER_ADDR_SIZE, with exactly
 * one '@' outside a domain literal, no white space, control octet or
 * non-ASCII octet, and each parses again, alone, to itself; on BAD a
 * reason and nothing appended.  The reader must not move the spool's
 * offset, which sendmail later reads from.
 */
#include "fuzz.h"

static int spool = -1;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	spool = fuzz_memfd("fuzz_header");
	return 0;
}

static void
check_address(const char *a, unsigned char field)
{
	const char	*at;
	size_t		 i, len = strnlen(a, HEADER_ADDR_SIZE);
	struct header_senders again;

	FUZZ_CHECK(len > 0 && len < HEADER_ADDR_SIZE);
	FUZZ_CHECK(field == HEADER_FROM || field == HEADER_SENDER);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)a[i];

		FUZZ_CHECK(c > ' ' && c < 0x7f);
		FUZZ_CHECK(c != '"' && c != '\\' && c != '(' && c != ')' &&
		    c != '<' && c != '>' && c != ',' && c != ';');
	}
	FUZZ_CHECK((at = strchr(a, '@')) != NULL);
	FUZZ_CHECK(at > a && at[1] != '\0');
	FUZZ_CHECK((size_t)(at - a) <= SMTP_LOCAL_MAX);
	FUZZ_CHECK(strchr(at + 1, '@') == NULL);
	if (at[1] != '[')
		FUZZ_CHECK(strchr(a, '[') == NULL && strchr(a, ':') == NULL);

	/* What came out is an address as it stands, bare or in brackets. */
	memset(&again, 0, sizeof(again));
	FUZZ_CHECK(header_address_list(a, len, HEADER_SENDER, &again) ==
	    HEADER_OK);
	FUZZ_CHECK(again.n == 1 && strcmp(again.addr[0], a) == 0 &&
	    again.field[0] == HEADER_SENDER);
}

static void
check_result(int rc, const struct header_senders *hs, int file)
{
	size_t i;

	FUZZ_CHECK(hs->n <= HEADER_ADDRS_MAX);
	switch (rc) {
	case HEADER_OK:
		FUZZ_CHECK(hs->n > 0);
		FUZZ_CHECK(!file || hs->nfrom + hs->nsender > 0);
		for (i = 0; i < hs->n; i++)
			check_address(hs->addr[i], hs->field[i]);
		break;
	case HEADER_NONE_FOUND:
		FUZZ_CHECK(file && hs->n == 0);
		FUZZ_CHECK(hs->nfrom == 0 && hs->nsender == 0);
		break;
	case HEADER_BAD:
		FUZZ_CHECK(hs->why != NULL && hs->why[0] != '\0');
		break;
	default:
		FUZZ_CHECK(!"an unknown result");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct header_senders	 hs;
	char			*copy;
	int			 rc;

	/* One field's value, in a buffer of its exact size (ASan's bound). */
	if ((copy = malloc(size > 0 ? size : 1)) == NULL)
		abort();
	memcpy(copy, data, size);
	memset(&hs, 0, sizeof(hs));
	rc = header_address_list(copy, size, HEADER_FROM, &hs);
	FUZZ_CHECK(rc == HEADER_OK || rc == HEADER_BAD);
	if (rc == HEADER_BAD)
		FUZZ_CHECK(hs.n == 0);
	check_result(rc, &hs, 0);
	free(copy);

	/* The whole input as a spool, read as the monitor reads it. */
	fuzz_memfd_set(spool, data, size);
	rc = header_senders(spool, &hs);
	check_result(rc, &hs, 1);
	FUZZ_CHECK(lseek(spool, 0, SEEK_CUR) == 0);
	return 0;
}
