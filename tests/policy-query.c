/*
 * policy-query - runs one policy_query (policy_client.c) as the monitor
 * would, for the tests of the policy client against real and scripted
 * policy servers.
 *
 *   policy-query CONFIG [NAME=VALUE]...
 *
 * CONFIG is an smtpauthd configuration file (policy-service and its
 * timeout and default action); each NAME=VALUE sets one attribute of the
 * request by its Postfix name (protocol_state=RCPT or END-OF-MESSAGE,
 * sender=, recipient=, sasl_username=, size=, ...; \n in a value is a
 * newline).  Prints "PASS", or "DENY CODE TEXT"; the log goes to standard
 * error.  Exits 0, or 2 for a bad CONFIG or argument.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpauthd.h"
#include "policy_client.h"

#define F(x)	offsetof(struct policy_request, x)

static const struct {
	const char	*name;
	size_t		 offset;
	int		 number;
} fields[] = {
	{ "protocol_name", F(protocol_name), 0 },
	{ "helo_name", F(helo_name), 0 },
	{ "queue_id", F(queue_id), 0 },
	{ "sender", F(sender), 0 },
	{ "recipient", F(recipient), 0 },
	{ "recipient_count", F(recipient_count), 1 },
	{ "client_address", F(client_address), 0 },
	{ "client_name", F(client_name), 0 },
	{ "reverse_client_name", F(reverse_client_name), 0 },
	{ "client_port", F(client_port), 0 },
	{ "server_address", F(server_address), 0 },
	{ "server_port", F(server_port), 0 },
	{ "instance", F(instance), 0 },
	{ "sasl_method", F(sasl_method), 0 },
	{ "sasl_username", F(sasl_username), 0 },
	{ "sasl_sender", F(sasl_sender), 0 },
	{ "size", F(size), 1 },
	{ "encryption_protocol", F(encryption_protocol), 0 },
	{ "encryption_cipher", F(encryption_cipher), 0 },
	{ "encryption_keysize", F(encryption_keysize), 1 },
};

/* "\n" in an argument becomes a newline, in place. */
static void
unescape(char *s)
{
	char *o = s;

	for (; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] == 'n') {
			*o++ = '\n';
			s++;
		} else
			*o++ = *s;
	}
	*o = '\0';
}

static int
set_field(struct policy_request *rq, char *arg)
{
	char	*eq, *end;
	size_t	 i;

	if ((eq = strchr(arg, '=')) == NULL)
		return -1;
	*eq++ = '\0';
	unescape(eq);
	if (strcmp(arg, "protocol_state") == 0) {
		if (strcmp(eq, "RCPT") == 0)
			rq->state = POLICY_RCPT;
		else if (strcmp(eq, "END-OF-MESSAGE") == 0)
			rq->state = POLICY_END_OF_MESSAGE;
		else
			return -1;
		return 0;
	}
	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (strcmp(arg, fields[i].name) != 0)
			continue;
		if (fields[i].number) {
			*(uint64_t *)((char *)rq + fields[i].offset) =
			    strtoull(eq, &end, 10);
			return *end == '\0' ? 0 : -1;
		}
		*(const char **)((char *)rq + fields[i].offset) = eq;
		return 0;
	}
	return -1;
}

int
main(int argc, char *argv[])
{
	struct config		 cf;
	struct policy_request	 rq;
	struct relay_reply	 reply;
	size_t			 i;
	int			 rc;

	if (argc < 2) {
		fprintf(stderr, "usage: policy-query CONFIG [NAME=VALUE]...\n");
		return 2;
	}
	log_init(1);
	conf_defaults(&cf);
	conf_load_file(&cf, argv[1], 1);
	conf_finish(&cf);
	if (cf.nerrors > 0) {
		for (i = 0; i < cf.nerrors; i++)
			fprintf(stderr, "policy-query: %s\n", cf.errors[i]);
		conf_free(&cf);
		return 2;
	}
	memset(&rq, 0, sizeof(rq));
	rq.state = POLICY_RCPT;
	for (i = 2; i < (size_t)argc; i++)
		if (set_field(&rq, argv[i]) == -1) {
			fprintf(stderr, "policy-query: bad attribute %s\n",
			    argv[i]);
			conf_free(&cf);
			return 2;
		}
	memset(&reply, 0, sizeof(reply));
	rc = policy_query(&cf, &rq, &reply);
	if (rc == POLICY_DENY)
		printf("DENY %d %s\n", reply.code, reply.text);
	else
		printf("PASS\n");
	conf_free(&cf);
	return 0;
}
