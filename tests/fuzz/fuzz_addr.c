/*
 * fuzz_addr.c - libFuzzer target for MAIL FROM / RCPT TO paths: the
 * project's addr_parse_path() and addr_is_safe() (addr.c).
 *
 * Input: byte 0 holds flags (null path allowed, a short output buffer),
 * the rest is the text after "FROM:" or "TO:", made a C string at its
 * first NUL as the session's line is.  What a path accepted here becomes
 * is one argv element of sendmail, so the checks are those of DESIGN.md:
 * it fits the buffer, it is exactly the text between the brackets, it has
 * no space, control, non-ASCII, quote, pipe, comma or leading '-', and
 * addr_is_safe() agrees.  The MAIL parameters after the path (SIZE=,
 * BODY=, AUTH=) are parsed in smtp.c and fuzzed through fuzz_session.
 */
#include "fuzz.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	return 0;
}

/* What no address handed to sendmail may contain. */
static void
check_mailbox(const char *a)
{
	size_t i, len = strlen(a);

	FUZZ_CHECK(len > 0 && len <= SMTP_PATH_MAX - 2);
	FUZZ_CHECK(a[0] != '-' && a[0] != '@' && a[0] != '/' && a[0] != '.');
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)a[i];

		FUZZ_CHECK(c > ' ' && c < 0x7f);
		FUZZ_CHECK(strchr("\"|,<>()\\;:", c) == NULL || (c == ':' &&
		    strchr(a, '[') != NULL));
	}
	/* A local part and a domain, or the bare postmaster. */
	if (strchr(a, '@') == NULL)
		FUZZ_CHECK(strcasecmp(a, "postmaster") == 0);
	else
		FUZZ_CHECK(strchr(a, '@') == strrchr(a, '@'));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		*s, *out;
	const char	*rest;
	size_t		 outsize, len;
	int		 allow_null, rc;

	if (size < 1)
		return 0;
	allow_null = data[0] & 1;
	outsize = data[0] & 2 ? (size_t)(data[0] >> 2) + 1 : SMTP_PATH_MAX + 1;
	if ((s = malloc(size)) == NULL || (out = malloc(outsize)) == NULL)
		abort();
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';

	rest = NULL;
	rc = addr_parse_path(s, allow_null, out, outsize, &rest);
	FUZZ_CHECK(rc >= ADDR_OK && rc <= ADDR_TOOLONG);
	if (rc == ADDR_OK) {
		len = strlen(out);
		FUZZ_CHECK(len < outsize);
		FUZZ_CHECK(rest != NULL && rest > s && rest[-1] == '>');
		FUZZ_CHECK(rest <= s + strlen(s));
		FUZZ_CHECK(s[0] == '<' && (size_t)(rest - s) == len + 2);
		FUZZ_CHECK(memcmp(s + 1, out, len) == 0);
		if (len == 0)
			FUZZ_CHECK(allow_null);
		else {
			check_mailbox(out);
			FUZZ_CHECK(addr_is_safe(out));
		}
	}

	/* The input itself, as the mailbox text between the brackets. */
	if (addr_is_safe(s)) {
		check_mailbox(s);
		/* Bracketed, it parses to itself when there is room. */
		len = strlen(s);
		if (len + 1 <= SMTP_PATH_MAX + 1) {
			char path[SMTP_PATH_MAX + 3], got[SMTP_PATH_MAX + 1];

			snprintf(path, sizeof(path), "<%s>", s);
			FUZZ_CHECK(addr_parse_path(path, 0, got, sizeof(got),
			    &rest) == ADDR_OK);
			FUZZ_CHECK(strcmp(got, s) == 0 && *rest == '\0');
		}
	}
	free(out);
	free(s);
	return 0;
}
