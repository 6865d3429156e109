/*
 * policy_client.c - the client side of Postfix's policy delegation
 * protocol (SMTPD_POLICY_README), so that the policy daemons
 * administrators already run (policyd-rate-limit, postfwd, SPF and
 * greylisting servers) judge smtpauthd's mail too.  The monitor asks at
 * each RCPT and at the end of DATA.
 *
 * The exchange: the request is "name=value" lines ended by an empty line;
 * the reply is the same, and only its action= is used (any other
 * attribute is ignored, as Postfix ignores them).  Like OpenSMTPD's table
 * front end, an external server is treated as hostile: a reply that is
 * not exactly of that form, longer than POLICY_REPLY_MAX, or whose action
 * is not one smtpauthd can apply, is no reply, never a guess.  No answer,
 * no valid answer and no connection all take policy-service-default-action
 * (DUNNO: fail open), with one log line.
 *
 * policy-service-timeout bounds the whole query (connect, write, read)
 * with one deadline, not per-read timers, so a server that drips its
 * reply cannot hold the monitor longer.  Resolving a host name
 * (getaddrinfo) is not under it: give an address to keep it bounded.
 *
 * One connection per query.  Postfix keeps its connections open across
 * queries; here the monitor lives for one SMTP connection, asks a few
 * times, and a fresh connection leaves nothing to get wrong between two
 * queries (a server that closed an idle connection, half a reply left
 * over from a timeout).  On loopback a connection costs far less than a
 * policy server's own work.
 *
 * Actions, as Postfix's access(5) applies them at RCPT:
 *   OK, DUNNO                   go on
 *   REJECT [text]               554 5.7.1 text ("Access denied")
 *   DEFER [text]                450 4.7.1 text ("Access denied")
 *   DEFER_IF_PERMIT [text]      450 4.7.1 text ("Service unavailable"):
 *                               smtpauthd would otherwise permit
 *   4NN text, 5NN text          that code, with the text's enhanced code
 *                               or 4.7.1/5.7.1
 *   DEFER_IF_REJECT, PREPEND,   go on, logged: nothing here would reject
 *   WARN, INFO                  later, and smtpauthd adds no headers
 *   anything else (HOLD,        not valid: a server that wants mail held,
 *   DISCARD, FILTER, REDIRECT,  dropped or redirected must not have it
 *   BCC, restriction names)     delivered as if it had said DUNNO
 * Keywords are matched without regard to case (policyd-rate-limit
 * answers "defer_if_permit").  The text may begin with an enhanced code
 * (RFC 3463); its class is made the reply's.  Unlike Postfix, a bare
 * "450" is a refusal with the default text, not an OK (Postfix's reading
 * of an all-numerical result is for pop-before-smtp maps), and the text
 * is not prefixed with "<rcpt>: Recipient address rejected:" (the caller
 * knows the command; the reply stays what the server said).
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "policy_client.h"

#define SERVICE_HOST_MAX	255
#define SERVICE_PORT_MAX	32

/* policy-service, taken apart. */
struct service {
	int	 is_unix;
	char	 host[SERVICE_HOST_MAX + 1];	/* without the [] of IPv6 */
	char	 port[SERVICE_PORT_MAX + 1];
	char	 path[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
};

/* A port: 1 to 65535, or a service name (letters, digits, '-'). */
static int
valid_port(const char *s, size_t n)
{
	size_t	 i;
	long	 v = 0;

	if (n == 0 || n > SERVICE_PORT_MAX)
		return 0;
	if (isdigit((unsigned char)s[0])) {
		for (i = 0; i < n; i++) {
			if (!isdigit((unsigned char)s[i]))
				return 0;
			v = v * 10 + (s[i] - '0');
			if (v > 65535)
				return 0;
		}
		return v > 0 && s[0] != '0';
	}
	if (!isalpha((unsigned char)s[0]))
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return 0;
	return 1;
}

static int
parse_service(const char *spec, struct service *sv, const char **why)
{
	const char	*rest, *colon, *host, *close;
	size_t		 hlen, i;

	memset(sv, 0, sizeof(*sv));
	if (strncmp(spec, "unix:", 5) == 0) {
		rest = spec + 5;
		sv->is_unix = 1;
		if (rest[0] != '/') {
			*why = "unix:PATH needs an absolute path";
			return -1;
		}
		if (strlen(rest) >= sizeof(sv->path)) {
			*why = "unix:PATH: the path is too long for a socket";
			return -1;
		}
		for (i = 0; rest[i] != '\0'; i++)
			if ((unsigned char)rest[i] <= ' ' || rest[i] == 0x7f) {
				*why = "unix:PATH: a blank or control "
				    "character in the path";
				return -1;
			}
		memcpy(sv->path, rest, strlen(rest) + 1);
		return 0;
	}
	if (strncmp(spec, "inet:", 5) != 0) {
		*why = "expected inet:HOST:PORT or unix:PATH";
		return -1;
	}
	rest = spec + 5;
	if (rest[0] == '[') {
		/* inet:[2001:db8::1]:10031 */
		if ((close = strchr(rest, ']')) == NULL || close[1] != ':') {
			*why = "inet:[IPv6]:PORT: no ]: before the port";
			return -1;
		}
		host = rest + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
		for (i = 0; i < hlen; i++)
			if (!isxdigit((unsigned char)host[i]) &&
			    strchr(":.", host[i]) == NULL)
				break;
		if (hlen == 0 || i < hlen || memchr(host, ':', hlen) == NULL) {
			*why = "inet:[IPv6]:PORT: not an IPv6 address "
			    "between the brackets";
			return -1;
		}
	} else {
		if ((colon = strrchr(rest, ':')) == NULL) {
			*why = "inet:HOST:PORT: no port";
			return -1;
		}
		host = rest;
		hlen = (size_t)(colon - host);
		for (i = 0; i < hlen; i++)
			if (!isalnum((unsigned char)host[i]) &&
			    strchr(".-_", host[i]) == NULL)
				break;
		if (hlen == 0 || i < hlen || host[0] == '-' ||
		    host[0] == '.') {
			*why = "inet:HOST:PORT: HOST is not a host name or "
			    "address (an IPv6 address goes in [])";
			return -1;
		}
	}
	if (hlen > SERVICE_HOST_MAX) {
		*why = "inet:HOST:PORT: HOST too long";
		return -1;
	}
	if (!valid_port(colon + 1, strlen(colon + 1))) {
		*why = "inet:HOST:PORT: PORT is not 1-65535 or a service name";
		return -1;
	}
	memcpy(sv->host, host, hlen);
	sv->host[hlen] = '\0';
	memcpy(sv->port, colon + 1, strlen(colon + 1) + 1);
	return 0;
}

/* policy-service's form (conf.c); 0 or -1 with *why. */
int
policy_service_check(const char *spec, const char **why)
{
	struct service sv;

	return parse_service(spec, &sv, why);
}

/* ---- the request ---- */

struct req_buf {
	char		*buf;
	size_t		 size;
	size_t		 len;
	const char	*why;		/* set: refused */
};

static void
put(struct req_buf *b, const char *name, const char *value)
{
	int n;

	if (b->why != NULL)
		return;
	if (value == NULL)
		value = "";
	if (strpbrk(value, "\r\n") != NULL) {
		b->why = "a value holds a newline";
		return;
	}
	n = snprintf(b->buf + b->len, b->size - b->len, "%s=%s\n", name,
	    value);
	if (n < 0 || (size_t)n >= b->size - b->len) {
		b->why = "the request is too long";
		return;
	}
	b->len += (size_t)n;
}

static void
put_num(struct req_buf *b, const char *name, uint64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	put(b, name, num);
}

/*
 * The request in Postfix's order, with every attribute Postfix 3.2 sends
 * (those smtpauthd has no value for empty, as Postfix sends them), ended
 * by the empty line.  0, or -1 with *why: a value holds CR or LF, or it
 * all does not fit.
 */
int
policy_format_request(const struct policy_request *rq, char *buf,
    size_t bufsize, size_t *lenp, const char **why)
{
	struct req_buf b = { buf, bufsize, 0, NULL };

	put(&b, "request", "smtpd_access_policy");
	put(&b, "protocol_state", rq->state == POLICY_RCPT ? "RCPT" :
	    "END-OF-MESSAGE");
	put(&b, "protocol_name", rq->protocol_name != NULL ?
	    rq->protocol_name : "ESMTP");
	put(&b, "helo_name", rq->helo_name);
	put(&b, "queue_id", rq->queue_id);
	put(&b, "sender", rq->sender);
	put(&b, "recipient", rq->recipient);
	put_num(&b, "recipient_count", rq->recipient_count);
	put(&b, "client_address", rq->client_address);
	put(&b, "client_name", rq->client_name != NULL ? rq->client_name :
	    "unknown");
	put(&b, "reverse_client_name", rq->reverse_client_name != NULL ?
	    rq->reverse_client_name : "unknown");
	put(&b, "instance", rq->instance);
	put(&b, "sasl_method", rq->sasl_method);
	put(&b, "sasl_username", rq->sasl_username);
	put(&b, "sasl_sender", rq->sasl_sender);
	put_num(&b, "size", rq->size);
	put(&b, "ccert_subject", NULL);
	put(&b, "ccert_issuer", NULL);
	put(&b, "ccert_fingerprint", NULL);
	put(&b, "ccert_pubkey_fingerprint", NULL);
	put(&b, "encryption_protocol", rq->encryption_protocol);
	put(&b, "encryption_cipher", rq->encryption_cipher);
	put_num(&b, "encryption_keysize", rq->encryption_keysize);
	put(&b, "etrn_domain", NULL);
	put(&b, "stress", NULL);
	put(&b, "client_port", rq->client_port);
	put(&b, "policy_context", NULL);
	put(&b, "server_address", rq->server_address);
	put(&b, "server_port", rq->server_port);
	if (b.why == NULL && b.len + 1 >= b.size)
		b.why = "the request is too long";
	if (b.why != NULL) {
		*why = b.why;
		return -1;
	}
	buf[b.len++] = '\n';
	buf[b.len] = '\0';
	*lenp = b.len;
	return 0;
}

/* ---- the reply ---- */

/*
 * What arrived so far, buf[0..len): POLICY_REPLY_OK with the value of
 * action= in action (NUL-terminated), POLICY_REPLY_SHORT (no empty line
 * yet, and room for more), or POLICY_REPLY_BAD with *why.  Lines end in
 * LF; a CR before it is dropped (a server written on the wrong system
 * still means its words).  Every line before the empty one must be
 * name=value with a name; action= exactly once.
 */
/* A CR not before its LF, and the like: a reply no server means. */
static int
has_control(const char *s, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (((unsigned char)s[i] < ' ' && s[i] != '\t') ||
		    (unsigned char)s[i] == 0x7f)
			return 1;
	return 0;
}

int
policy_parse_reply(const char *buf, size_t len, char *action,
    size_t actionsize, const char **why)
{
	const char	*line, *end, *eq;
	size_t		 n, off = 0;
	int		 seen = 0;

	if (memchr(buf, '\0', len) != NULL) {
		*why = "a NUL in the reply";
		return POLICY_REPLY_BAD;
	}
	while (off < len) {
		line = buf + off;
		if ((end = memchr(line, '\n', len - off)) == NULL)
			break;
		n = (size_t)(end - line);
		off += n + 1;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (has_control(line, n)) {
			*why = "a control character in the reply";
			return POLICY_REPLY_BAD;
		}
		if (n == 0) {
			if (!seen) {
				*why = "no action= in the reply";
				return POLICY_REPLY_BAD;
			}
			return POLICY_REPLY_OK;
		}
		if ((eq = memchr(line, '=', n)) == NULL || eq == line) {
			*why = "a reply line that is not name=value";
			return POLICY_REPLY_BAD;
		}
		if ((size_t)(eq - line) == 6 && memcmp(line, "action", 6) == 0) {
			if (seen) {
				*why = "two action= in the reply";
				return POLICY_REPLY_BAD;
			}
			seen = 1;
			n -= 7;
			if (n >= actionsize) {
				*why = "action= too long";
				return POLICY_REPLY_BAD;
			}
			memcpy(action, eq + 1, n);
			action[n] = '\0';
		}
	}
	if (len >= POLICY_REPLY_MAX) {
		*why = "no end of the reply within its first 4096 octets";
		return POLICY_REPLY_BAD;
	}
	return POLICY_REPLY_SHORT;
}

/* "X.Y.Z" of RFC 3463: class, then 1-3 digits, twice.  Its length or 0. */
static size_t
enhanced_code(const char *s)
{
	size_t i = 2, part, digits;

	if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	for (part = 0; part < 2; part++) {
		for (digits = 0; isdigit((unsigned char)s[i]); digits++)
			i++;
		if (digits == 0 || digits > 3)
			return 0;
		if (part == 0) {
			if (s[i] != '.')
				return 0;
			i++;
		}
	}
	return s[i] == '\0' || s[i] == ' ' || s[i] == '\t' ? i : 0;
}

/*
 * The reply for a refusal: code, then the enhanced code (the text's own
 * if it begins with one, its class made the code's; else class.7.1),
 * then the text or deftext, made safe for an SMTP line: printable ASCII
 * only, at most POLICY_TEXT_MAX octets.
 */
static void
refusal(struct relay_reply *r, int code, const char *text,
    const char *deftext)
{
	char	 enh[16], clean[POLICY_TEXT_MAX + 1];
	size_t	 n, i;

	while (*text == ' ' || *text == '\t')
		text++;
	if ((n = enhanced_code(text)) > 0 && n < sizeof(enh)) {
		memcpy(enh, text, n);
		enh[n] = '\0';
		enh[0] = (char)('0' + code / 100);
		text += n;
		while (*text == ' ' || *text == '\t')
			text++;
	} else
		snprintf(enh, sizeof(enh), "%d.7.1", code / 100);
	if (*text == '\0')
		text = deftext;
	for (i = 0; i < POLICY_TEXT_MAX && text[i] != '\0'; i++) {
		if (text[i] >= ' ' && text[i] < 0x7f)
			clean[i] = text[i];
		else
			clean[i] = '?';
	}
	/* No blank at the end of the SMTP line. */
	while (i > 0 && clean[i - 1] == ' ')
		i--;
	clean[i] = '\0';
	r->code = code;
	snprintf(r->text, sizeof(r->text), "%s %s", enh, i > 0 ? clean :
	    deftext);
}

static const struct {
	const char	*word;
	int		 code;		/* 0: go on */
	const char	*deftext;	/* go on: why it is not applied */
} actions[] = {
	{ "OK", 0, NULL },
	{ "DUNNO", 0, NULL },
	{ "REJECT", 554, "Access denied" },
	{ "DEFER", 450, "Access denied" },
	{ "DEFER_IF_PERMIT", 450, "Service unavailable" },
	{ "DEFER_IF_REJECT", 0, "nothing else rejects: treated as DUNNO" },
	{ "PREPEND", 0, "smtpauthd adds no headers: treated as DUNNO" },
	{ "WARN", 0, "logged, treated as DUNNO" },
	{ "INFO", 0, "logged, treated as DUNNO" },
};

/*
 * An action= value: POLICY_PASS (*note set when the action was not
 * applied as such, for the log), POLICY_DENY with the reply filled, or
 * -1: not an action smtpauthd can apply (*note says why).
 */
int
policy_action(const char *action, struct relay_reply *r, const char **note)
{
	const char	*text;
	size_t		 wlen, i;
	int		 code;

	*note = NULL;
	wlen = strcspn(action, " \t");
	text = action + wlen;
	if (wlen == 0) {
		*note = "an empty action";
		return -1;
	}
	for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		if (strlen(actions[i].word) != wlen ||
		    strncasecmp(action, actions[i].word, wlen) != 0)
			continue;
		if (actions[i].code == 0) {
			*note = actions[i].deftext;
			return POLICY_PASS;
		}
		refusal(r, actions[i].code, text, actions[i].deftext);
		return POLICY_DENY;
	}
	if (wlen == 3 && (action[0] == '4' || action[0] == '5') &&
	    isdigit((unsigned char)action[1]) &&
	    isdigit((unsigned char)action[2])) {
		code = (action[0] - '0') * 100 + (action[1] - '0') * 10 +
		    (action[2] - '0');
		refusal(r, code, text, "Access denied");
		return POLICY_DENY;
	}
	*note = "not an action smtpauthd applies";
	return -1;
}

/* ---- the exchange ---- */

static int
connect_fd(int fd, const struct sockaddr *sa, socklen_t salen,
    int64_t deadline, const char **why)
{
	int		 err = 0, rc;
	socklen_t	 len = sizeof(err);

	if (connect(fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR) {
		*why = strerror(errno);
		return -1;
	}
	if ((rc = io_wait_fd(fd, POLLOUT, deadline)) != IO_OK) {
		*why = rc == IO_TIMEOUT ? "no connection within "
		    "policy-service-timeout" : strerror(errno);
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		*why = strerror(err);
		return -1;
	}
	return 0;
}

/* A connected socket, or -1 with *why. */
static int
service_connect(const struct service *sv, int64_t deadline, const char **why)
{
	struct sockaddr_un	 sun;
	struct addrinfo		 hints, *res = NULL, *ai;
	int			 fd = -1, gai;

	if (sv->is_unix) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, sv->path, strlen(sv->path) + 1);
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0)) == -1) {
			*why = strerror(errno);
			return -1;
		}
		if (connect_fd(fd, (struct sockaddr *)&sun, sizeof(sun),
		    deadline, why) == -1) {
			(void)close(fd);
			return -1;
		}
		return fd;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((gai = getaddrinfo(sv->host, sv->port, &hints, &res)) != 0) {
		*why = gai_strerror(gai);
		return -1;
	}
	*why = "no address";
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype |
		    SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol)) == -1) {
			*why = strerror(errno);
			continue;
		}
		if (connect_fd(fd, ai->ai_addr, ai->ai_addrlen, deadline,
		    why) == 0)
			break;
		(void)close(fd);
		fd = -1;
		if (now_ms() >= deadline)
			break;
	}
	freeaddrinfo(res);
	return fd;
}

static int
send_all(int fd, const char *buf, size_t len, int64_t deadline,
    const char **why)
{
	ssize_t	 n;
	size_t	 off = 0;
	int	 rc;

	while (off < len) {
		n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			*why = strerror(errno);
			return -1;
		}
		if ((rc = io_wait_fd(fd, POLLOUT, deadline)) != IO_OK) {
			*why = rc == IO_TIMEOUT ? "the request not taken "
			    "within policy-service-timeout" : strerror(errno);
			return -1;
		}
	}
	return 0;
}

/* The reply's action, or -1 with *why. */
static int
read_reply(int fd, int64_t deadline, char *action, size_t actionsize,
    const char **why)
{
	char	 buf[POLICY_REPLY_MAX];
	size_t	 len = 0;
	ssize_t	 n;
	int	 rc;

	for (;;) {
		if ((rc = io_wait_fd(fd, POLLIN, deadline)) != IO_OK) {
			*why = rc == IO_TIMEOUT ? "no reply within "
			    "policy-service-timeout" : strerror(errno);
			return -1;
		}
		n = recv(fd, buf + len, sizeof(buf) - len, 0);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			*why = strerror(errno);
			return -1;
		}
		if (n == 0) {
			*why = len == 0 ? "closed the connection without a "
			    "reply" : "closed the connection before the end "
			    "of its reply";
			return -1;
		}
		len += (size_t)n;
		switch (policy_parse_reply(buf, len, action, actionsize,
		    why)) {
		case POLICY_REPLY_OK:
			return 0;
		case POLICY_REPLY_BAD:
			return -1;
		default:
			break;
		}
	}
}

static const char *
state_name(const struct policy_request *rq)
{
	return rq->state == POLICY_RCPT ? "RCPT" : "END-OF-MESSAGE";
}

/*
 * The query failed: policy-service-default-action, and one log line.
 * why is our own text; action, when set, the server's words (escaped).
 */
static int
fallback(const struct config *cf, const struct policy_request *rq,
    const char *action, const char *why, struct relay_reply *reply)
{
	char		 ip[ESC_MAX], user[ESC_MAX], act[ESC_MAX];
	const char	*note;
	int		 rc;

	log_msg(LOG_WARNING, "policy-service %s: %s%s%s%s; taking "
	    "policy-service-default-action %s ip=%s user=%s state=%s",
	    cf->policy_service, action != NULL ? "action " : "",
	    action != NULL ? log_escape_text(action, act, sizeof(act)) : "",
	    action != NULL ? ": " : "", why,
	    cf->policy_service_default_action,
	    log_escape(rq->client_address != NULL ? rq->client_address :
	    "unknown", ip, sizeof(ip)),
	    log_escape(rq->sasl_username != NULL && *rq->sasl_username !=
	    '\0' ? rq->sasl_username : "-", user, sizeof(user)),
	    state_name(rq));
	/* conf.c accepted it, so it is PASS or DENY; anything else passes. */
	rc = policy_action(cf->policy_service_default_action, reply, &note);
	return rc == POLICY_DENY ? POLICY_DENY : POLICY_PASS;
}

/*
 * Ask policy-service about one RCPT or one message.  POLICY_PASS (also
 * when no policy-service is set), or POLICY_DENY with *reply filled.
 * Whatever goes wrong takes policy-service-default-action.
 */
int
policy_query(const struct config *cf, const struct policy_request *rq,
    struct relay_reply *reply)
{
	struct service	 sv;
	char		 req[POLICY_REQUEST_MAX], action[POLICY_REPLY_MAX];
	char		 why_buf[256], ip[ESC_MAX];
	char		 user[ESC_MAX], act[ESC_MAX];
	const char	*why = NULL, *note;
	size_t		 len;
	int64_t		 deadline;
	int		 fd, rc;

	if (cf->policy_service == NULL)
		return POLICY_PASS;
	deadline = now_ms() + (int64_t)cf->policy_service_timeout * 1000;
	if (parse_service(cf->policy_service, &sv, &why) == -1)
		return fallback(cf, rq, NULL, why, reply);
	if (policy_format_request(rq, req, sizeof(req), &len, &why) == -1)
		return fallback(cf, rq, NULL, why, reply);
	if ((fd = service_connect(&sv, deadline, &why)) == -1) {
		snprintf(why_buf, sizeof(why_buf), "connect: %s", why);
		return fallback(cf, rq, NULL, why_buf, reply);
	}
	if (send_all(fd, req, len, deadline, &why) == -1 ||
	    read_reply(fd, deadline, action, sizeof(action), &why) == -1) {
		(void)close(fd);
		return fallback(cf, rq, NULL, why, reply);
	}
	(void)close(fd);
	rc = policy_action(action, reply, &note);
	if (rc == -1)
		return fallback(cf, rq, action, note, reply);
	if (note != NULL)
		log_msg(LOG_NOTICE, "policy-service %s: action %s: %s ip=%s "
		    "user=%s state=%s", cf->policy_service,
		    log_escape_text(action, act, sizeof(act)), note,
		    log_escape(rq->client_address != NULL ?
		    rq->client_address : "unknown", ip, sizeof(ip)),
		    log_escape(rq->sasl_username != NULL &&
		    *rq->sasl_username != '\0' ? rq->sasl_username : "-",
		    user, sizeof(user)), state_name(rq));
	return rc;
}

/*
 * -t: can policy-service be reached now?  0, or -1 with err.  A server
 * that is down is no configuration error (the queries fail over to the
 * default action), so the caller only warns.
 */
int
policy_probe(const struct config *cf, char *err, size_t errsize)
{
	struct service	 sv;
	const char	*why = NULL;
	int		 fd;

	if (cf->policy_service == NULL)
		return 0;
	if (parse_service(cf->policy_service, &sv, &why) == -1 ||
	    (fd = service_connect(&sv, now_ms() +
	    (int64_t)cf->policy_service_timeout * 1000, &why)) == -1) {
		snprintf(err, errsize, "%s", why);
		return -1;
	}
	(void)close(fd);
	return 0;
}
