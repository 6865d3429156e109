/*
 * policy_client.h - the client side of Postfix's policy delegation
 * protocol (policy_client.c): what the monitor knows of a transaction,
 * as the attributes Postfix sends, and the one call that asks the
 * configured policy-service about it.
 */
#ifndef POLICY_CLIENT_H
#define POLICY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "smtpauthd.h"

#define POLICY_REQUEST_MAX	8192	/* the request, empty line included */
#define POLICY_REPLY_MAX	4096	/* the reply, empty line included */
#define POLICY_TEXT_MAX		200	/* a reply's text on the SMTP line */

/* The SMTP stages smtpauthd asks at (Postfix's protocol_state). */
enum policy_state { POLICY_RCPT, POLICY_END_OF_MESSAGE };

/*
 * One question.  Every string may be NULL, which is sent as Postfix sends
 * what it does not know: empty, or "unknown" for the client's names.
 * Values must not hold CR or LF (the query then takes the default
 * action); being C strings, they cannot hold a NUL.
 */
struct policy_request {
	enum policy_state	 state;
	const char		*protocol_name;	/* "ESMTP" (NULL) or "SMTP" */
	const char		*helo_name;
	const char		*queue_id;
	const char		*sender;	/* no <>; "" for the null sender */
	const char		*recipient;	/* RCPT: this one; END-OF-
						   MESSAGE: the only one, or
						   NULL when there are more */
	uint64_t		 recipient_count;	/* END-OF-MESSAGE */
	const char		*client_address;
	const char		*client_name;
	const char		*reverse_client_name;
	const char		*client_port;
	const char		*server_address;
	const char		*server_port;
	const char		*instance;	/* the same for every query of
						   one message */
	const char		*sasl_method;	/* "PLAIN", "LOGIN" */
	const char		*sasl_username;
	const char		*sasl_sender;	/* MAIL FROM's AUTH=; unused */
	uint64_t		 size;		/* declared, then the real one */
	const char		*encryption_protocol;	/* "TLSv1.3" */
	const char		*encryption_cipher;
	uint64_t		 encryption_keysize;	/* bits; 0: none */
};

/* What a query decides. */
enum policy_answer {
	POLICY_PASS = 0,	/* OK, DUNNO: the command goes on */
	POLICY_DENY = 1,	/* the reply is filled: code, "X.Y.Z text" */
};

/* What policy_parse_reply finds in what arrived so far. */
enum policy_parse { POLICY_REPLY_OK, POLICY_REPLY_SHORT, POLICY_REPLY_BAD };

int	 policy_query(const struct config *, const struct policy_request *,
	    struct relay_reply *);

/* The pieces, for conf.c, -t and the unit tests. */
int	 policy_service_check(const char *spec, const char **why);
int	 policy_format_request(const struct policy_request *, char *buf,
	    size_t bufsize, size_t *lenp, const char **why);
int	 policy_parse_reply(const char *buf, size_t len, char *action,
	    size_t actionsize, const char **why);
int	 policy_action(const char *action, struct relay_reply *,
	    const char **note);
int	 policy_probe(const struct config *, char *err, size_t errsize);

#endif
