/*
 * fuzz_session.c - libFuzzer target for a whole SMTP session: the real
 * smtp_session() (smtp.c) with its command table, verb/argument split,
 * HELO/EHLO, AUTH PLAIN and LOGIN exchanges, MAIL parameters, RCPT, DATA,
 * pipelining and error limits, reading the input from a memfd as it reads
 * fd 0, with the real io.c, data.c, addr.c, auth.c parsers and relay.c's
 * spool and Received: header.  Only the two seams of DESIGN.md are fakes,
 * through struct backend: auth accepts the one user "fuzz" with password
 * "fuzzpass" (and answers "tempfail" with a temporary failure), submit
 * reads the spool to its end and replies 250 (451 when the body says
 * "tempfail").  The spool is in /dev/shm where it can be, else /tmp.
 *
 * Input: byte 0 picks one of four configurations (its low two bits; the
 * seeds use the digits '0'-'3'), the rest is what the client sends.
 *
 * Checked beyond "no crash, no leak": every reply line is "NNN " or
 * "NNN-" with a 2xx-5xx code, ends in CRLF and fits 512 octets; the first
 * is the greeting; a message reaches submit only from the authenticated
 * user, with a valid envelope within the limits, and with a spool that
 * holds a Received: header and a body that has no CR, no NUL and no more
 * than max-message-size octets; each queued reply matches one submission.
 */
#include <fcntl.h>
#include <signal.h>

#include "fuzz.h"

#define NCONFIGS	4
#define FUZZ_USER	"fuzz"
#define FUZZ_PASS	"fuzzpass"
#define FUZZ_PEER	"192.0.2.1"
#define FUZZ_HOST	"fuzz.example"
#define GREETING	"220 " FUZZ_HOST " ESMTP\r\n"

static struct config	 configs[NCONFIGS];
static int		 in_fd, out_fd;
static unsigned		 submitted;

/*
 * login-grace-time counts from the process's connection, and one fuzzing
 * process serves them all: past it every input would end at once.
 */
static const char *const base_options[] = {
	"hostname=" FUZZ_HOST, "auth-require-tls=no", "auth-failure-delay=0",
	"timeout=1", "data-timeout=1", "sendmail-timeout=1",
	"sendmail=/bin/false", "login-grace-time=0", NULL,
};

static const char *const variant_options[NCONFIGS][8] = {
	/* 0: the defaults otherwise */
	{ NULL },
	/* 1: tight limits, so that each is reached */
	{ "max-recipients=2", "max-errors=3", "max-auth-failures=1",
	  "max-message-size=300", "inject=headers", NULL },
	/* 2: STARTTLS configured but unavailable, AUTH only inside TLS */
	{ "tls=starttls", "tls-cert=/nonexistent/cert.pem",
	  "tls-key=/nonexistent/key.pem", "auth-require-tls=yes", NULL },
	/* 3: lax limits, so that long sessions go on */
	{ "max-recipients=5000", "max-errors=1000",
	  "max-auth-failures=1000", NULL },
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	size_t i, j;

	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < NCONFIGS; i++) {
		conf_defaults(&configs[i]);
		/*
		 * The spool in memory where there is a tmpfs: an O_TMPFILE on
		 * a disk file system costs more than the rest of a session.
		 */
		conf_set_option(&configs[i], access("/dev/shm", W_OK | X_OK) == 0 ?
		    "spool-dir=/dev/shm" : "spool-dir=/tmp");
		for (j = 0; base_options[j] != NULL; j++)
			conf_set_option(&configs[i], base_options[j]);
		for (j = 0; variant_options[i][j] != NULL; j++)
			conf_set_option(&configs[i], variant_options[i][j]);
		conf_finish(&configs[i]);
		if (configs[i].nerrors != 0) {
			fprintf(fuzz_report, "fuzz_session: config %zu: %s\n",
			    i, configs[i].errors[0]);
			abort();
		}
	}
	in_fd = fuzz_memfd("fuzz-session-in");
	out_fd = fuzz_memfd("fuzz-session-out");
	return 0;
}

static int
fake_auth(const struct config *cf, const char *mech, const char *user,
    const char *pass, const char *peer, const char *tls, char *canon,
    size_t canonsize, const char **reason)
{
	(void)cf;
	FUZZ_CHECK(strcmp(mech, "PLAIN") == 0 || strcmp(mech, "LOGIN") == 0);
	FUZZ_CHECK(strcmp(peer, FUZZ_PEER) == 0);
	FUZZ_CHECK(strcmp(tls, "none") == 0);
	/* The session asks no backend about what it must refuse itself. */
	FUZZ_CHECK(auth_user_acceptable(user, strlen(user)));
	FUZZ_CHECK(pass[0] != '\0' && strlen(pass) <= AUTH_PASS_MAX);
	if (strcmp(user, "tempfail") == 0) {
		*reason = "unavailable";
		return AUTH_TEMPFAIL;
	}
	if (strcmp(user, FUZZ_USER) != 0 || strcmp(pass, FUZZ_PASS) != 0) {
		*reason = "credentials";
		return AUTH_FAIL;
	}
	FUZZ_CHECK(canonsize > strlen(user));
	snprintf(canon, canonsize, "%s", user);
	return AUTH_OK;
}

static int
fake_submit(const struct config *cf, const struct envelope *env,
    int spool_fd, const char *user, const char *queue_id,
    struct relay_reply *rr)
{
	char		*spool, *body;
	size_t		 len, i, lfs = 0;
	int		 code;

	FUZZ_CHECK(strcmp(user, FUZZ_USER) == 0);
	FUZZ_CHECK(strlen(queue_id) == QUEUE_ID_LEN);
	FUZZ_CHECK(env->nrcpts >= 1 && env->nrcpts <= cf->max_recipients);
	FUZZ_CHECK(env->sender[0] == '\0' || (strchr(env->sender, '@') !=
	    NULL && addr_is_safe(env->sender)));
	for (i = 0; i < env->nrcpts; i++)
		FUZZ_CHECK(addr_is_safe(env->rcpts[i]));
	FUZZ_CHECK(env->declared_size <= cf->max_message_size);

	/* The spool, read to its end as sendmail reads its stdin. */
	spool = fuzz_read_all(spool_fd, &len);
	FUZZ_CHECK(lseek(spool_fd, 0, SEEK_END) == (off_t)len);
	FUZZ_CHECK(strncmp(spool, "Received: from ", 15) == 0);
	FUZZ_CHECK(memchr(spool, '\r', len) == NULL);
	FUZZ_CHECK(memchr(spool, '\0', len) == NULL);
	/* The header ends at the first line that does not begin with a tab. */
	body = spool;
	do {
		body = strchr(body, '\n');
		FUZZ_CHECK(body != NULL);
		body++;
	} while (*body == '\t');
	len -= (size_t)(body - spool);
	for (i = 0; i < len; i++)
		lfs += body[i] == '\n';
	/* The size limit is on the CRLF form. */
	FUZZ_CHECK(len + lfs <= cf->max_message_size);

	if (strstr(body, "tempfail") != NULL) {
		const char *text = relay_exit_reply(75, &code);

		rr->code = code;
		snprintf(rr->text, sizeof(rr->text), "%s", text);
	} else {
		rr->code = 250;
		snprintf(rr->text, sizeof(rr->text), "2.0.0 Ok: queued as %s",
		    queue_id);
		submitted++;
	}
	free(spool);
	return 0;
}

static const struct backend fake_backend = {
	fake_auth, smtp_any_sender, smtp_any_rcpt, fake_submit, spool_open
};

/* Every reply line well formed; returns how many said "queued". */
static unsigned
check_replies(const char *out, size_t len)
{
	const char	*p = out, *end = out + len, *crlf;
	unsigned	 queued = 0;
	int		 first = 1, continued = 0;

	while (p < end) {
		crlf = memmem(p, (size_t)(end - p), "\r\n", 2);
		FUZZ_CHECK(crlf != NULL);
		FUZZ_CHECK(crlf - p + 2 <= SMTP_CMD_MAX);
		FUZZ_CHECK(crlf - p >= 4);
		FUZZ_CHECK(p[0] >= '2' && p[0] <= '5');
		FUZZ_CHECK(p[1] >= '0' && p[1] <= '9');
		FUZZ_CHECK(p[2] >= '0' && p[2] <= '9');
		FUZZ_CHECK(p[3] == ' ' || p[3] == '-');
		FUZZ_CHECK(memchr(p, '\n', (size_t)(crlf - p)) == NULL);
		FUZZ_CHECK(memchr(p, '\r', (size_t)(crlf - p)) == NULL);
		if (first)
			FUZZ_CHECK(strncmp(p, GREETING, sizeof(GREETING) - 1)
			    == 0);
		if (continued)
			FUZZ_CHECK(strncmp(p, "250", 3) == 0);
		continued = p[3] == '-';
		if (strncmp(p, "250 2.0.0 Ok: queued as ", 24) == 0)
			queued++;
		first = 0;
		p = crlf + 2;
	}
	FUZZ_CHECK(!continued);
	return queued;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct io	 io;
	const struct config	*cf;
	char			*out;
	size_t			 outlen;

	if (size < 1)
		return 0;
	cf = &configs[data[0] & (NCONFIGS - 1)];
	fuzz_memfd_set(in_fd, data + 1, size - 1);
	fuzz_memfd_set(out_fd, "", 0);
	io_init(&io, in_fd, out_fd, cf->timeout * 1000);
	submitted = 0;
	FUZZ_CHECK(smtp_session(cf, &io, FUZZ_PEER, NULL, &fake_backend) == 0);
	FUZZ_CHECK(io.tls == NULL);
	out = fuzz_read_all(out_fd, &outlen);
	FUZZ_CHECK(check_replies(out, outlen) == submitted);
	free(out);
	return 0;
}
