/*
 * fuzz_auth.c - libFuzzer target for what AUTH parses before any backend
 * sees it (auth.c): base64_decode() and base64_encode(), the SASL PLAIN
 * split sasl_plain_split(), and the user-name filter auth_user_acceptable().
 *
 * Input: byte 0 picks output buffer sizes (exact, short by one, the
 * session's), the rest is the text.  Checked: the decoder is strict, so
 * whatever it accepts encodes back to exactly the same text, and whatever
 * is encoded decodes back to the same octets; no buffer is overrun (ASan
 * and the exact-size buffers see to that); a PLAIN split gives two NUL-free
 * fields that are where the message has them; an acceptable user name is
 * made only of the characters the log and PAM can take.  The LOGIN
 * exchange (challenges, "*", "=") is in smtp.c and fuzzed by fuzz_session.
 */
#include <ctype.h>

#include "fuzz.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	return 0;
}

static void
check_decode(const char *in, size_t inlen, uint8_t sel)
{
	unsigned char	*dec;
	char		*enc;
	size_t		 need, outsize, declen = (size_t)-1, enclen;
	int		 rc;

	/* Room for the decoded octets: as much as could come out, or less. */
	need = inlen / 4 * 3;
	switch (sel & 3) {
	case 0:
		outsize = need;
		break;
	case 1:
		outsize = need > 0 ? need - 1 : 0;
		break;
	case 2:
		outsize = need > 2 ? need - 2 : 0;
		break;
	default:
		outsize = SMTP_AUTH_LINE_MAX;
		break;
	}
	/* Exactly outsize octets, so that ASan sees a write past them. */
	if ((dec = malloc(outsize)) == NULL && outsize > 0)
		abort();
	rc = base64_decode(in, inlen, dec, outsize, &declen);
	FUZZ_CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		FUZZ_CHECK(declen <= outsize);
		FUZZ_CHECK(inlen % 4 == 0 && declen <= need &&
		    declen + 2 >= need);
		/* Canonical: it encodes back to the very same text. */
		if ((enc = malloc(inlen + 1)) == NULL)
			abort();
		enclen = base64_encode(dec, declen, enc, inlen + 1);
		FUZZ_CHECK(enclen == inlen && memcmp(enc, in, inlen) == 0);
		FUZZ_CHECK(enc[enclen] == '\0');
		/* And one octet less room is refused, not overrun. */
		if (inlen > 0)
			FUZZ_CHECK(base64_encode(dec, declen, enc, inlen) == 0);
		free(enc);
	}
	free(dec);
}

static void
check_encode(const unsigned char *in, size_t inlen)
{
	char		*enc;
	unsigned char	*dec;
	size_t		 encsize = (inlen + 2) / 3 * 4 + 1, enclen, declen;

	if ((enc = malloc(encsize)) == NULL ||
	    ((dec = malloc(inlen)) == NULL && inlen > 0))
		abort();
	enclen = base64_encode(in, inlen, enc, encsize);
	FUZZ_CHECK(enclen == encsize - 1 && strlen(enc) == enclen);
	FUZZ_CHECK(base64_decode(enc, enclen, dec, inlen, &declen) == 0);
	FUZZ_CHECK(declen == inlen && memcmp(dec, in, inlen) == 0);
	free(dec);
	free(enc);
}

static void
check_plain(const unsigned char *in, size_t inlen, uint8_t sel)
{
	char		*user, *pass;
	const unsigned char *nul1, *nul2;
	size_t		 usersize, passsize;
	int		 rc;

	/* The session's sizes, or small ones to reach the length checks. */
	usersize = sel & 4 ? (size_t)(sel >> 3 & 7) + 1 : AUTH_USER_MAX + 2;
	passsize = sel & 4 ? (size_t)(sel >> 5 & 7) + 1 : AUTH_PASS_MAX + 2;
	if ((user = malloc(usersize)) == NULL ||
	    (pass = malloc(passsize)) == NULL)
		abort();
	rc = sasl_plain_split(in, inlen, user, usersize, pass, passsize);
	FUZZ_CHECK(rc == 0 || rc == -1 || rc == -2);
	nul1 = memchr(in, '\0', inlen);
	nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0',
	    inlen - (size_t)(nul1 + 1 - in)) : NULL;
	if (nul1 == NULL || nul2 == NULL ||
	    memchr(nul2 + 1, '\0', inlen - (size_t)(nul2 + 1 - in)) != NULL)
		FUZZ_CHECK(rc == -1);	/* not three fields */
	if (rc == 0) {
		size_t ulen = strlen(user), plen = strlen(pass);

		FUZZ_CHECK(ulen < usersize && plen < passsize);
		/* authzid empty or equal to authcid */
		FUZZ_CHECK(nul1 == in || ((size_t)(nul1 - in) == ulen &&
		    memcmp(in, user, ulen) == 0));
		FUZZ_CHECK((size_t)(nul2 - nul1 - 1) == ulen &&
		    memcmp(nul1 + 1, user, ulen) == 0);
		FUZZ_CHECK((size_t)(in + inlen - nul2 - 1) == plen &&
		    memcmp(nul2 + 1, pass, plen) == 0);
	}
	explicit_bzero(pass, passsize);
	free(pass);
	free(user);
}

static void
check_user(const char *in, size_t inlen)
{
	size_t i;

	if (!auth_user_acceptable(in, inlen))
		return;
	FUZZ_CHECK(inlen > 0 && inlen <= AUTH_USER_MAX);
	FUZZ_CHECK(isalnum((unsigned char)in[0]) || in[0] == '_');
	for (i = 0; i < inlen; i++)
		FUZZ_CHECK(isalnum((unsigned char)in[i]) ||
		    strchr("._-+@", in[i]) != NULL);
	FUZZ_CHECK(memchr(in, '\0', inlen) == NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*copy;
	size_t	 len;
	uint8_t	 sel;

	if (size < 1)
		return 0;
	sel = data[0];
	len = size - 1;
	/* An exact-size copy, no NUL after it: ASan sees a read past it. */
	if ((copy = malloc(len)) == NULL && len > 0)
		abort();
	if (len > 0)
		memcpy(copy, data + 1, len);

	check_decode(copy, len, sel);
	check_encode((const unsigned char *)copy, len);
	check_plain((const unsigned char *)copy, len, sel);
	check_user(copy, len);
	/* The session decodes, then splits: PLAIN on what the text holds. */
	{
		unsigned char	 buf[SMTP_AUTH_LINE_MAX];
		size_t		 declen;

		if (len <= SMTP_AUTH_LINE_MAX &&
		    base64_decode(copy, len, buf, sizeof(buf), &declen) == 0) {
			check_plain(buf, declen, sel);
			check_user((const char *)buf, declen);
		}
	}
	free(copy);
	return 0;
}
