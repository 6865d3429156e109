/*
 * fuzz_policy.c - libFuzzer target for what the monitor (root) reads from
 * a policy server (policy_client.c): policy_parse_reply() on the input as
 * the bytes that arrived, and policy_action() on the action it found.
 *
 * The checks are what the SMTP line the client gets relies on: a known
 * result; an action is non-empty and holds no CR, LF or NUL; a refusal
 * has a 4xx or 5xx code and a text of printable ASCII, without CR or LF,
 * that begins with an enhanced code of the same class.
 */
#include "fuzz.h"
#include "../../policy_client.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	return 0;
}

static void
check_refusal(const struct relay_reply *r)
{
	size_t	 i, len = strnlen(r->text, sizeof(r->text));

	FUZZ_CHECK(r->code >= 400 && r->code <= 599);
	FUZZ_CHECK(len < sizeof(r->text) && len >= 5);
	FUZZ_CHECK(r->text[0] == (r->code >= 500 ? '5' : '4'));
	FUZZ_CHECK(r->text[1] == '.');
	for (i = 0; i < len; i++)
		FUZZ_CHECK(r->text[i] >= ' ' && r->text[i] < 0x7f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char			 action[POLICY_REPLY_MAX];
	struct relay_reply	 r;
	const char		*why = NULL, *note = NULL;
	int			 rc;

	rc = policy_parse_reply((const char *)data, size, action,
	    sizeof(action), &why);
	FUZZ_CHECK(rc == POLICY_REPLY_OK || rc == POLICY_REPLY_SHORT ||
	    rc == POLICY_REPLY_BAD);
	if (rc != POLICY_REPLY_OK) {
		FUZZ_CHECK(rc == POLICY_REPLY_SHORT || why != NULL);
		return 0;
	}
	FUZZ_CHECK(strnlen(action, sizeof(action)) < sizeof(action));
	FUZZ_CHECK(strpbrk(action, "\r\n") == NULL);
	memset(&r, 0, sizeof(r));
	rc = policy_action(action, &r, &note);
	FUZZ_CHECK(rc == -1 || rc == POLICY_PASS || rc == POLICY_DENY);
	if (rc == POLICY_DENY)
		check_refusal(&r);
	return 0;
}
