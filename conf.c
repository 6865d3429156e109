/*
 * conf.c - the configuration: defaults, the file, -o key=value, the
 * effective listing (-T) and the usability check (-t).
 *
 * Every key is one row of a table (name, kind, where it lives, bounds), so
 * that parsing, printing and checking cannot disagree about what exists.
 * Problems are collected, not fatal: -t must name every one of them.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <err.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "state.h"
#include "policy.h"
#include "policy_client.h"

#define CONF_LINE_MAX	4096

enum conf_kind { K_STRING, K_PATH, K_NAME, K_HOST, K_BOOL, K_UINT, K_OCTAL,
    K_ENUM, K_STATE, K_RATE, K_RATES, K_DURATION, K_PREFIXES, K_DOMAINS,
    K_DELIMS, K_POLICY_SERVICE, K_POLICY_ACTION };

struct conf_key {
	const char	*name;
	enum conf_kind	 kind;
	size_t		 offset;
	uint64_t	 min, max;	/* K_UINT, K_OCTAL */
	const char	*const *names;	/* K_ENUM: index = enum value */
	const char	*defval;
	const char	*why_max;	/* K_UINT: what the maximum stands for */
};

static const char *const auth_names[] = { "pam", "file", NULL };
static const char *const tls_names[] = { "", "none", "starttls", "implicit",
    NULL };
static const char *const inject_names[] = { "envelope", "headers", NULL };
static const char *const tls_version_names[] = { "1.2", "1.3", NULL };
static const char *const sender_policy_names[] = { "own", "map", "any",
    NULL };
static const char *const received_client_names[] = { "show", "hide", NULL };

#define OFF(f)	offsetof(struct config, f)
/* Windows longer than a year remember more than anyone means to. */
#define DURATION_MAX	(UINT64_C(366) * 86400)

static const struct conf_key conf_keys[] = {
	{ "hostname", K_HOST, OFF(hostname), 0, 0, NULL, NULL, NULL },
	{ "auth", K_ENUM, OFF(auth), 0, 0, auth_names, "pam", NULL },
	{ "pam-service", K_NAME, OFF(pam_service), 0, 0, NULL, "smtpauthd",
	    NULL },
	{ "passwd-file", K_PATH, OFF(passwd_file), 0, 0, NULL,
	    "/etc/smtpauthd/passwd", NULL },
	{ "auth-require-tls", K_BOOL, OFF(auth_require_tls), 0, 0, NULL,
	    "yes", NULL },
	{ "tls", K_ENUM, OFF(tls), 0, 0, tls_names, NULL, NULL },
	{ "tls-cert", K_PATH, OFF(tls_cert), 0, 0, NULL, NULL, NULL },
	{ "tls-key", K_PATH, OFF(tls_key), 0, 0, NULL, NULL, NULL },
	{ "tls-min-version", K_ENUM, OFF(tls_min_version), 0, 0,
	    tls_version_names, "1.2", NULL },
	{ "tls-ciphers", K_STRING, OFF(tls_ciphers), 0, 0, NULL, NULL, NULL },
	{ "sendmail", K_PATH, OFF(sendmail), 0, 0, NULL,
	    "/usr/sbin/sendmail", NULL },
	{ "inject", K_ENUM, OFF(inject), 0, 0, inject_names, "envelope", NULL },
	/* hide: a roaming user's home address is not in every message */
	{ "received-client", K_ENUM, OFF(received_client), 0, 0,
	    received_client_names, "show", NULL },
	{ "max-message-size", K_UINT, OFF(max_message_size), 1,
	    UINT64_C(1) << 40, NULL, "36700160", NULL },
	/* RCPTS_MAX: all recipients must fit in one argv (smtpauthd.h) */
	{ "max-recipients", K_UINT, OFF(max_recipients), 1, RCPTS_MAX, NULL,
	    "100", "all recipients go into sendmail's argument list" },
	{ "max-auth-failures", K_UINT, OFF(max_auth_failures), 1, 1000, NULL,
	    "3", NULL },
	{ "max-errors", K_UINT, OFF(max_errors), 1, 1000, NULL, "10", NULL },
	/* 0: no limit (Postfix's smtpd_junk_command_limit) */
	{ "max-junk-commands", K_UINT, OFF(max_junk_commands), 0, 1000000,
	    NULL, "100", NULL },
	{ "auth-failure-delay", K_UINT, OFF(auth_failure_delay), 0, 60, NULL,
	    "2", NULL },
	{ "timeout", K_UINT, OFF(timeout), 1, 86400, NULL, "300", NULL },
	/* 0: no limit (sshd's LoginGraceTime) */
	{ "login-grace-time", K_UINT, OFF(login_grace_time), 0, 86400, NULL,
	    "60", NULL },
	{ "data-timeout", K_UINT, OFF(data_timeout), 1, 86400, NULL, "600",
	    NULL },
	{ "sendmail-timeout", K_UINT, OFF(sendmail_timeout), 1, 86400, NULL,
	    "300", NULL },
	{ "auth-timeout", K_UINT, OFF(auth_timeout), 1, 86400, NULL, "30",
	    NULL },
	/* A login shell's umask, which MTAs expect, not smtpauthd's 077. */
	{ "sendmail-umask", K_OCTAL, OFF(sendmail_umask), 0, 0777, NULL,
	    "022", NULL },
	{ "spool-dir", K_PATH, OFF(spool_dir), 0, 0, NULL, "/var/tmp", NULL },
	{ "privsep-user", K_NAME, OFF(privsep_user), 0, 0, NULL, "smtpauthd",
	    NULL },
	{ "privsep-dir", K_PATH, OFF(privsep_dir), 0, 0, NULL,
	    "/run/smtpauthd", NULL },
	{ "state", K_STATE, OFF(state), 0, 0, NULL,
	    "sqlite:/var/lib/smtpauthd/state.db", NULL },
	/* Redis (state_redis.c): the password's file, the keys' prefix. */
	{ "state-password-file", K_PATH, OFF(state_password_file), 0, 0, NULL,
	    NULL, NULL },
	{ "state-prefix", K_STRING, OFF(state_prefix), 0, STATE_PREFIX_MAX,
	    NULL, "smtpauthd:", NULL },
	/* Milliseconds: the connect, and each command. */
	{ "state-timeout", K_UINT, OFF(state_timeout), 1, 60000, NULL, "200",
	    NULL },
	/* Counts are bounded: each key keeps at most that many members. */
	{ "auth-limit-ip", K_RATE, OFF(auth_limit_ip), 0, 10000, NULL,
	    "10/10m", NULL },
	{ "auth-limit-net", K_RATE, OFF(auth_limit_net), 0, 10000, NULL,
	    "30/10m", NULL },
	{ "auth-limit-user", K_RATE, OFF(auth_limit_user), 0, 10000, NULL,
	    "20/1d", NULL },
	{ "auth-known-ip-time", K_DURATION, OFF(auth_known_ip_time), 0,
	    DURATION_MAX, NULL, "1d", NULL },
	{ "auth-limit-exempt", K_PREFIXES, OFF(auth_limit_exempt), 0, 0, NULL,
	    NULL, NULL },
	/* Load balancers whose connections start with a PROXY header. */
	{ "proxy-protocol-from", K_PREFIXES, OFF(proxy_protocol_from), 0, 0,
	    NULL, NULL, NULL },
	{ "user-recipient-limit", K_RATES, OFF(user_recipient_limit), 0,
	    RATE_COUNT_MAX, NULL, "200/1h, 1000/1d", NULL },
	{ "user-message-limit", K_RATES, OFF(user_message_limit), 0,
	    RATE_COUNT_MAX, NULL, "30/1m", NULL },
	{ "limits-map", K_PATH, OFF(limits_map), 0, 0, NULL, NULL, NULL },
	/* The sender bound to the login (policy.c). */
	{ "sender-policy", K_ENUM, OFF(sender_policy), 0, 0,
	    sender_policy_names, "own", NULL },
	{ "sender-domains", K_DOMAINS, OFF(sender_domains), 0, 0, NULL, NULL,
	    NULL },
	{ "sender-delimiter", K_DELIMS, OFF(sender_delimiter), 0, 0, NULL, "+",
	    NULL },
	{ "sender-map", K_PATH, OFF(sender_map), 0, 0, NULL, NULL, NULL },
	{ "sender-header-check", K_BOOL, OFF(sender_header_check), 0, 0, NULL,
	    "no", NULL },
	{ "policy-service", K_POLICY_SERVICE, OFF(policy_service), 0, 0, NULL,
	    NULL, NULL },
	/* Bounds one whole query: connect, request, reply. */
	{ "policy-service-timeout", K_UINT, OFF(policy_service_timeout), 1,
	    3600, NULL, "10", NULL },
	{ "policy-service-default-action", K_POLICY_ACTION,
	    OFF(policy_service_default_action), 0, 0, NULL, "DUNNO", NULL },
};

#define NKEYS	(sizeof(conf_keys) / sizeof(conf_keys[0]))

void
conf_error(struct config *cf, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		err(EX_CONFIG_, "conf_error");
	va_end(ap);
	cf->errors = reallocarray(cf->errors, cf->nerrors + 1,
	    sizeof(*cf->errors));
	if (cf->errors == NULL)
		err(EX_CONFIG_, "conf_error");
	cf->errors[cf->nerrors++] = msg;
}

static int
parse_uint(const char *s, uint64_t *v)
{
	uint64_t n = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (n > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*s - '0');
	}
	*v = n;
	return 0;
}

/* 1 to 4 octal digits, as umask(1) takes them. */
static int
parse_octal(const char *s, uint64_t *v)
{
	uint64_t n = 0;
	size_t	 len;

	len = strlen(s);
	if (len == 0 || len > 4 || strspn(s, "01234567") != len)
		return -1;
	for (; *s != '\0'; s++)
		n = n * 8 + (uint64_t)(*s - '0');
	*v = n;
	return 0;
}

static const struct {
	char		 unit;
	uint64_t	 seconds;
} duration_units[] = { { 'd', 86400 }, { 'h', 3600 }, { 'm', 60 },
    { 's', 1 } };

/* "90", "90s", "10m", "2h", "1d": seconds. */
static int
parse_duration(const char *s, uint64_t *v)
{
	char		 digits[24];
	size_t		 n, i;
	uint64_t	 mult = 1;

	n = strspn(s, "0123456789");
	if (n == 0 || n >= sizeof(digits))
		return -1;
	if (s[n] != '\0') {
		if (s[n + 1] != '\0')
			return -1;
		for (i = 0; i < sizeof(duration_units) /
		    sizeof(duration_units[0]); i++)
			if (duration_units[i].unit == s[n])
				break;
		if (i == sizeof(duration_units) / sizeof(duration_units[0]))
			return -1;
		mult = duration_units[i].seconds;
	}
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (parse_uint(digits, v) == -1 || *v > DURATION_MAX / mult)
		return -1;
	*v *= mult;
	return 0;
}

/* The largest unit that says it exactly: 600 is "10m". */
static void
print_duration(uint64_t v, char *out, size_t size)
{
	size_t i;

	for (i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]);
	    i++)
		if (v != 0 && v % duration_units[i].seconds == 0) {
			snprintf(out, size, "%llu%c", (unsigned long long)
			    (v / duration_units[i].seconds),
			    duration_units[i].unit);
			return;
		}
	snprintf(out, size, "%llu", (unsigned long long)v);
}

static void
print_rate(const struct rate *r, char *out, size_t size)
{
	char window[32];

	if (r->count == 0) {
		snprintf(out, size, "0");
		return;
	}
	print_duration(r->window, window, sizeof(window));
	snprintf(out, size, "%llu/%s", (unsigned long long)r->count, window);
}

/* "COUNT/DURATION", or "0": off. */
static int
parse_rate(const char *s, uint64_t max, struct rate *r)
{
	char		 count[24];
	const char	*slash;

	if (strcmp(s, "0") == 0) {
		r->count = r->window = 0;
		return 0;
	}
	if ((slash = strchr(s, '/')) == NULL ||
	    (size_t)(slash - s) >= sizeof(count))
		return -1;
	memcpy(count, s, (size_t)(slash - s));
	count[slash - s] = '\0';
	if (parse_uint(count, &r->count) == -1 || r->count > max ||
	    parse_duration(slash + 1, &r->window) == -1 ||
	    (r->count > 0 && r->window == 0))
		return -1;
	if (r->count == 0)
		r->window = 0;
	return 0;
}

/*
 * "200/1h, 1000/1d": each limit holds; "0" (or "off") is none.  Two
 * limits over the same window would be one too many: refused.
 */
int
conf_parse_rates(const char *s, uint64_t max, struct rates *rs)
{
	char		 copy[CONF_LINE_MAX + 1], *tok, *save = NULL;
	struct rate	 r;
	size_t		 i;

	memset(rs, 0, sizeof(*rs));
	if (strcmp(s, "0") == 0 || strcmp(s, "off") == 0)
		return 0;
	if (strlen(s) > CONF_LINE_MAX)
		return -1;
	snprintf(copy, sizeof(copy), "%s", s);
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (parse_rate(tok, max, &r) == -1 || r.count == 0 ||
		    rs->n == RATES_MAX)
			return -1;
		for (i = 0; i < rs->n; i++)
			if (rs->r[i].window == r.window)
				return -1;
		rs->r[rs->n++] = r;
	}
	return rs->n > 0 ? 0 : -1;
}

void
conf_print_rates(const struct rates *rs, char *out, size_t size)
{
	size_t	 i, len = 0;
	char	 one[64];

	out[0] = '\0';
	if (rs->n == 0)
		snprintf(out, size, "0");
	for (i = 0; i < rs->n; i++) {
		print_rate(&rs->r[i], one, sizeof(one));
		if (len < size)
			len += (size_t)snprintf(out + len, size - len, "%s%s",
			    i > 0 ? ", " : "", one);
	}
}

static int
valid_name(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && strchr("._-", s[n]) == NULL)
			return 0;
	return n > 0 && n <= 64 && s[0] != '-' && s[0] != '.';
}

/* A host name as it may appear in the greeting and Received: header. */
static int
valid_hostname(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && strchr(".-_", s[n]) == NULL)
			return 0;
	return n > 0 && n <= HOSTNAME_MAX && s[0] != '-' && s[0] != '.';
}

/* One word of printable ASCII. */
static int
valid_word(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (s[n] <= ' ' || s[n] >= 0x7f)
			return 0;
	return n > 0 && n <= 1024;
}

/* Host names separated by commas and/or blanks, at least one. */
static int
valid_domains(const char *s)
{
	char	 name[HOSTNAME_MAX + 1];
	size_t	 n, count = 0;

	if (strlen(s) > CONF_LINE_MAX)
		return 0;
	for (;;) {
		s += strspn(s, ", \t");
		if (*s == '\0')
			return count > 0;
		n = strcspn(s, ", \t");
		if (n >= sizeof(name))
			return 0;
		memcpy(name, s, n);
		name[n] = '\0';
		if (!valid_hostname(name) || name[n - 1] == '.')
			return 0;
		count++;
		s += n;
	}
}

/*
 * sender-delimiter: 1 to 8 characters that can separate a tag from a
 * local part, as Postfix's recipient_delimiter; not a letter or digit,
 * '@', a blank or a control character, which would cut logins or
 * addresses where they cannot be cut.
 */
static int
valid_delimiters(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (s[n] <= ' ' || s[n] >= 0x7f || s[n] == '@' ||
		    isalnum((unsigned char)s[n]))
			return 0;
	return n >= 1 && n <= 8;
}

static int
valid_path(const char *s)
{
	const char *p;

	if (s[0] != '/' || strlen(s) > PATH_MAX)
		return 0;
	for (p = s; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

static void
set_string(char **slot, const char *value)
{
	free(*slot);
	*slot = xstrdup(value);
}

static int
set_state(struct config *cf, const struct conf_key *k, const char *value,
    const char *where)
{
	const struct state_backend	*be;
	const char			*why = "";
	char				 shown[STATE_SHOWN_MAX];

	if (!valid_word(value) ||
	    state_spec_check(value, &be, &why) == -1) {
		conf_error(cf, "%s: %s: \"%s\": %s", where, k->name,
		    state_shown(value, shown, sizeof(shown)),
		    valid_word(value) ? why : "not one word");
		return -1;
	}
	set_string((char **)((char *)cf + k->offset), value);
	return 0;
}

static int
set_policy_service(struct config *cf, const struct conf_key *k,
    const char *value, const char *where)
{
	const char *why = "not one word";

	if (!valid_word(value) || policy_service_check(value, &why) == -1) {
		conf_error(cf, "%s: %s: \"%s\": %s", where, k->name, value,
		    why);
		return -1;
	}
	set_string((char **)((char *)cf + k->offset), value);
	return 0;
}

/*
 * An action as a policy server would answer it, which the policy client
 * applies when the server fails: DUNNO, or "451 4.3.5 Server
 * configuration problem" to fail closed.  Printable ASCII, since -T
 * prints it and a refusal puts it on an SMTP line.
 */
static int
set_policy_action(struct config *cf, const struct conf_key *k,
    const char *value, const char *where)
{
	struct relay_reply	 r;
	const char		*note = "", *p;

	for (p = value; *p != '\0'; p++)
		if (*p < ' ' || *p >= 0x7f)
			break;
	if (*p != '\0' || p - value > POLICY_TEXT_MAX ||
	    policy_action(value, &r, &note) == -1) {
		conf_error(cf, "%s: %s: \"%s\" is not an action a policy "
		    "server may answer (OK, DUNNO, REJECT [text], DEFER "
		    "[text], DEFER_IF_PERMIT [text], 4NN text, 5NN text)",
		    where, k->name, value);
		return -1;
	}
	set_string((char **)((char *)cf + k->offset), value);
	return 0;
}

int
conf_set(struct config *cf, const char *key, const char *value,
    const char *where)
{
	const struct conf_key	*k = NULL;
	char			*base = (char *)cf;
	size_t			 i;
	uint64_t		 n;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(conf_keys[i].name, key) == 0)
			k = &conf_keys[i];
	if (k == NULL) {
		conf_error(cf, "%s: unknown key \"%s\"", where, key);
		return -1;
	}
	switch (k->kind) {
	case K_STRING:
		/* max, when set: the longest it may be */
		if (!valid_word(value) || (k->max > 0 && strlen(value) >
		    k->max))
			break;
		set_string((char **)(base + k->offset), value);
		return 0;
	case K_PATH:
		if (!valid_path(value))
			break;
		set_string((char **)(base + k->offset), value);
		return 0;
	case K_NAME:
		if (!valid_name(value))
			break;
		set_string((char **)(base + k->offset), value);
		return 0;
	case K_HOST:
		if (!valid_hostname(value))
			break;
		set_string((char **)(base + k->offset), value);
		return 0;
	case K_BOOL:
		if (strcmp(value, "yes") == 0)
			*(int *)(base + k->offset) = 1;
		else if (strcmp(value, "no") == 0)
			*(int *)(base + k->offset) = 0;
		else
			break;
		return 0;
	case K_UINT:
		if (parse_uint(value, &n) == -1 || n < k->min || n > k->max) {
			conf_error(cf, "%s: %s: \"%s\" is not a number from "
			    "%llu to %llu%s%s%s", where, key, value,
			    (unsigned long long)k->min,
			    (unsigned long long)k->max,
			    k->why_max != NULL ? " (" : "",
			    k->why_max != NULL ? k->why_max : "",
			    k->why_max != NULL ? ")" : "");
			return -1;
		}
		*(uint64_t *)(base + k->offset) = n;
		return 0;
	case K_OCTAL:
		if (parse_octal(value, &n) == -1 || n < k->min || n > k->max) {
			conf_error(cf, "%s: %s: \"%s\" is not an octal number "
			    "from %03llo to %03llo", where, key, value,
			    (unsigned long long)k->min,
			    (unsigned long long)k->max);
			return -1;
		}
		*(uint64_t *)(base + k->offset) = n;
		return 0;
	case K_ENUM:
		for (i = 0; k->names[i] != NULL; i++)
			if (k->names[i][0] != '\0' &&
			    strcmp(k->names[i], value) == 0) {
				*(int *)(base + k->offset) = (int)i;
				return 0;
			}
		break;
	case K_STATE:
		return set_state(cf, k, value, where);
	case K_RATE:
		if (parse_rate(value, k->max, (struct rate *)(base +
		    k->offset)) == -1) {
			conf_error(cf, "%s: %s: \"%s\" is not COUNT/TIME (a "
			    "count up to %llu, a time like 90s, 10m, 2h or "
			    "1d) or 0 (off)", where, key, value,
			    (unsigned long long)k->max);
			return -1;
		}
		return 0;
	case K_RATES:
		if (conf_parse_rates(value, k->max, (struct rates *)(base +
		    k->offset)) == -1) {
			conf_error(cf, "%s: %s: \"%s\" is not a list of up to "
			    "%d limits COUNT/TIME with different times (a "
			    "count up to %llu, a time like 90s, 10m, 2h or "
			    "1d), separated by commas, or 0 (off)", where,
			    key, value, RATES_MAX, (unsigned long long)k->max);
			return -1;
		}
		return 0;
	case K_DURATION:
		if (parse_duration(value, &n) == -1) {
			conf_error(cf, "%s: %s: \"%s\" is not a time like 90s, "
			    "10m, 2h or 1d, up to 366d, or 0", where, key,
			    value);
			return -1;
		}
		*(uint64_t *)(base + k->offset) = n;
		return 0;
	case K_POLICY_SERVICE:
		return set_policy_service(cf, k, value, where);
	case K_POLICY_ACTION:
		return set_policy_action(cf, k, value, where);
	case K_PREFIXES:
		if (strlen(value) > CONF_LINE_MAX ||
		    net_prefix_list_match(value, NULL) == -1) {
			conf_error(cf, "%s: %s: \"%s\" is not a list of "
			    "addresses and prefixes (192.0.2.0/24, "
			    "2001:db8::/32) separated by commas or blanks",
			    where, key, value);
			return -1;
		}
		set_string((char **)(base + k->offset), value);
		return 0;
	case K_DOMAINS:
		if (!valid_domains(value)) {
			conf_error(cf, "%s: %s: \"%s\" is not a list of domain "
			    "names separated by commas or blanks", where, key,
			    value);
			return -1;
		}
		set_string((char **)(base + k->offset), value);
		return 0;
	case K_DELIMS:
		if (!valid_delimiters(value)) {
			conf_error(cf, "%s: %s: \"%s\" is not 1 to 8 "
			    "characters, none of them a letter, a digit, '@', a "
			    "blank or a control character", where, key, value);
			return -1;
		}
		set_string((char **)(base + k->offset), value);
		return 0;
	}
	conf_error(cf, "%s: %s: bad value \"%s\"", where, key, value);
	return -1;
}

void
conf_defaults(struct config *cf)
{
	size_t i;

	memset(cf, 0, sizeof(*cf));
	for (i = 0; i < NKEYS; i++)
		if (conf_keys[i].defval != NULL)
			conf_set(cf, conf_keys[i].name, conf_keys[i].defval,
			    "default");
	cf->tls = TLS_UNSET;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

static void
conf_line(struct config *cf, char *line, const char *where)
{
	char *key, *value;

	key = trim(line);
	if (*key == '\0' || *key == '#')
		return;
	value = key + strcspn(key, " \t");
	if (*value == '\0') {
		conf_error(cf, "%s: \"%s\" has no value", where, key);
		return;
	}
	*value++ = '\0';
	value = trim(value);
	conf_set(cf, key, value, where);
}

int
conf_load_file(struct config *cf, const char *path, int must_exist)
{
	FILE	*fp;
	char	*line = NULL, where[PATH_MAX + 32];
	size_t	 lineno = 0, cap = 0;
	ssize_t	 len;

	if ((fp = fopen(path, "re")) == NULL) {
		if (errno == ENOENT && !must_exist)
			return 0;
		conf_error(cf, "%s: %s", path, strerror(errno));
		return -1;
	}
	while ((len = getline(&line, &cap, fp)) != -1) {
		snprintf(where, sizeof(where), "%s:%zu", path, ++lineno);
		if ((size_t)len != strlen(line))
			conf_error(cf, "%s: NUL byte", where);
		else if (len > CONF_LINE_MAX)
			conf_error(cf, "%s: line too long", where);
		else
			conf_line(cf, line, where);
	}
	if (ferror(fp))
		conf_error(cf, "%s: read error", path);
	free(line);
	(void)fclose(fp);	/* read only: nothing to lose */
	return 0;
}

int
conf_set_option(struct config *cf, const char *keyvalue)
{
	char	*copy, *eq;
	int	 rc;

	copy = xstrdup(keyvalue);
	if ((eq = strchr(copy, '=')) == NULL) {
		conf_error(cf, "-o %s: expected key=value", keyvalue);
		free(copy);
		return -1;
	}
	*eq = '\0';
	rc = conf_set(cf, copy, eq + 1, "-o");
	free(copy);
	return rc;
}

/*
 * The host's FQDN: gethostname() when it has a dot in it, else the
 * resolver's canonical name for it.  That look-up happens on every
 * connection, so -t suggests setting hostname instead.
 */
static char *
default_hostname(int *looked_up)
{
	char		 name[HOSTNAME_MAX + 1];
	struct addrinfo	 hints, *res = NULL;
	char		*fqdn = NULL;

	*looked_up = 0;
	if (gethostname(name, sizeof(name)) == -1)
		return xstrdup("localhost");
	name[sizeof(name) - 1] = '\0';
	if (strchr(name, '.') == NULL) {
		*looked_up = 1;
		memset(&hints, 0, sizeof(hints));
		hints.ai_flags = AI_CANONNAME;
		hints.ai_socktype = SOCK_STREAM;
		if (getaddrinfo(name, NULL, &hints, &res) == 0 && res != NULL &&
		    res->ai_canonname != NULL &&
		    valid_hostname(res->ai_canonname))
			fqdn = xstrdup(res->ai_canonname);
		if (res != NULL)
			freeaddrinfo(res);
	}
	if (fqdn == NULL)
		fqdn = xstrdup(valid_hostname(name) ? name : "localhost");
	return fqdn;
}

/* Resolve the defaults that depend on other keys or on the host. */
void
conf_finish(struct config *cf)
{
	if (cf->tls == TLS_UNSET)
		cf->tls = cf->tls_cert != NULL ? TLS_STARTTLS : TLS_NONE;
	if (cf->hostname == NULL)
		cf->hostname = default_hostname(&cf->hostname_looked_up);
	if (cf->tls != TLS_NONE && (cf->tls_cert == NULL || cf->tls_key == NULL))
		conf_error(cf, "tls %s needs tls-cert and tls-key",
		    tls_names[cf->tls]);
	/* Not quietly own: the administrator asked for a map. */
	if (cf->sender_policy == SENDER_MAP && cf->sender_map == NULL)
		conf_error(cf, "sender-policy map needs sender-map");
}

void
conf_print(const struct config *cf, FILE *out)
{
	const char	*base = (const char *)cf;
	const char	*s;
	char		 text[128];
	size_t		 i;

	for (i = 0; i < NKEYS; i++) {
		const struct conf_key *k = &conf_keys[i];

		switch (k->kind) {
		case K_STRING:
		case K_PATH:
		case K_NAME:
		case K_HOST:
		case K_STATE:
		case K_PREFIXES:
		case K_DOMAINS:
		case K_DELIMS:
		case K_POLICY_SERVICE:
		case K_POLICY_ACTION:
			s = *(char *const *)(base + k->offset);
			if (s == NULL)
				fprintf(out, "%s\n", k->name);
			else
				fprintf(out, "%s %s\n", k->name, s);
			break;
		case K_BOOL:
			fprintf(out, "%s %s\n", k->name,
			    *(const int *)(base + k->offset) ? "yes" : "no");
			break;
		case K_UINT:
			fprintf(out, "%s %llu\n", k->name, (unsigned long long)
			    *(const uint64_t *)(base + k->offset));
			break;
		case K_OCTAL:
			fprintf(out, "%s %03llo\n", k->name, (unsigned long long)
			    *(const uint64_t *)(base + k->offset));
			break;
		case K_ENUM:
			fprintf(out, "%s %s\n", k->name,
			    k->names[*(const int *)(base + k->offset)]);
			break;
		case K_RATE:
			print_rate((const struct rate *)(base + k->offset),
			    text, sizeof(text));
			fprintf(out, "%s %s\n", k->name, text);
			break;
		case K_RATES:
			conf_print_rates((const struct rates *)(base +
			    k->offset), text, sizeof(text));
			fprintf(out, "%s %s\n", k->name, text);
			break;
		case K_DURATION:
			print_duration(*(const uint64_t *)(base + k->offset),
			    text, sizeof(text));
			fprintf(out, "%s %s\n", k->name, text);
			break;
		}
	}
}

static void
check_file(struct config *cf, const char *what, const char *path, int mode)
{
	if (access(path, mode) == -1)
		conf_error(cf, "%s %s: %s", what, path, strerror(errno));
}

static void
pam_problem(void *arg, const char *problem)
{
	struct config *cf = arg;

	conf_error(cf, "pam-service %s: %s", cf->pam_service, problem);
}

/* The certificate and key load and match, and are not about to expire. */
static void
check_tls(struct config *cf, FILE *report)
{
	struct stat		 st;
	struct ssl_ctx_st	*ctx;
	char			 why[1024];
	int			 days;

	/* The password file's rule: a secret is its owner's alone. */
	if (cf->tls_key != NULL && stat(cf->tls_key, &st) == 0 &&
	    (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		conf_error(cf, "tls-key %s: group or others have access "
		    "(mode %04o): only its owner may read a private key "
		    "(chmod 600 it)", cf->tls_key,
		    (unsigned)(st.st_mode & 07777));
	if ((ctx = tls_context(cf, why, sizeof(why))) == NULL) {
		conf_error(cf, "%s", why);
		return;
	}
	days = tls_cert_days_left(ctx);
	if (days == TLS_EXPIRY_UNKNOWN)
		conf_error(cf, "tls-cert %s: cannot read its expiry date",
		    cf->tls_cert);
	else if (days < 0)
		conf_error(cf, "tls-cert %s has expired", cf->tls_cert);
	else if (days < 14)
		fprintf(report, "smtpauthd: warning: tls-cert %s expires in "
		    "%d days\n", cf->tls_cert, days);
	tls_context_free(ctx);
}

/*
 * RCPTS_MAX fits the usual ARG_MAX; a smaller stack limit (ARG_MAX is a
 * quarter of it) may make max-recipients longest addresses too many for
 * one execve of sendmail.  -t runs with the limits of whoever runs it,
 * so this is a warning, not an error.
 */
static void
check_arg_max(const struct config *cf, FILE *report)
{
	long		 arg_max;
	uint64_t	 need;

	arg_max = sysconf(_SC_ARG_MAX);
	need = cf->max_recipients * RCPT_ARG_COST + ARGV_FIXED_MAX;
	if (arg_max > 0 && need > (uint64_t)arg_max)
		fprintf(report, "smtpauthd: warning: max-recipients %llu: the "
		    "longest addresses would take %llu octets of sendmail's "
		    "arguments, more than this system's ARG_MAX (%ld; a "
		    "quarter of the stack limit)\n",
		    (unsigned long long)cf->max_recipients,
		    (unsigned long long)need, arg_max);
}

/*
 * The store opens (it is made if need be): one that does not is no
 * error at connection time (the service fails open), but the limits are
 * then off, which -t must not call ok.
 */
static void
check_state(struct config *cf)
{
	char err[512], shown[STATE_SHOWN_MAX];

	if (strcmp(cf->state, "none") != 0 &&
	    limits_check_store(cf, err, sizeof(err)) == -1)
		conf_error(cf, "state %s: %s (connections would go on without "
		    "limits; set state none to mean that)",
		    state_shown(cf->state, shown, sizeof(shown)), err);
}

/*
 * A password in `state redis://:PASSWORD@...` works, but the
 * configuration file, readable by more than root as a rule, then holds
 * the key to the store every host shares.
 */
static void
check_state_password(const struct config *cf, FILE *report)
{
	struct redis_spec	 rs;
	const char		*why;

	if (strncmp(cf->state, "redis:", 6) == 0 &&
	    state_redis_parse(cf->state + 6, 0, &rs, &why) == 0 &&
	    rs.has_password)
		fprintf(report, "smtpauthd: warning: state: the configuration "
		    "holds Redis's password%s; put it in state-password-file "
		    "(mode 0600) instead\n", cf->state_password_file != NULL ?
		    " (and state-password-file's is used)" : "");
	explicit_bzero(&rs, sizeof(rs));
}

/*
 * The form of policy-service was checked while loading; here, whether it
 * answers a connection now.  A server that is down is no configuration
 * error (each query then takes policy-service-default-action, which
 * says what that means), so only a warning.
 */
static void
check_policy_service(const struct config *cf, FILE *report)
{
	char err[512];

	if (cf->policy_service != NULL &&
	    policy_probe(cf, err, sizeof(err)) == -1)
		fprintf(report, "smtpauthd: warning: policy-service %s: %s "
		    "(each query would take policy-service-default-action "
		    "%s)\n", cf->policy_service, err,
		    cf->policy_service_default_action);
}

/*
 * -t: beyond the syntax already checked while loading, is each thing the
 * configuration names usable?  Returns the number of problems.
 */
int
conf_check(struct config *cf, FILE *report)
{
	struct passwd	*pw;
	struct stat	 st;
	const char	*why;
	size_t		 i;
	int		 problems = 0, e;

	if (cf->auth == AUTH_PAM)
		(void)pam_stack_check(cf->pam_service, pam_problem, cf);
	else
		problems += auth_check_passwd_file(cf, report);
	if (stat(cf->sendmail, &st) == -1 || !S_ISREG(st.st_mode) ||
	    access(cf->sendmail, X_OK) == -1)
		conf_error(cf, "sendmail %s: not an executable file",
		    cf->sendmail);
	if (stat(cf->spool_dir, &st) == -1 || !S_ISDIR(st.st_mode))
		conf_error(cf, "spool-dir %s: not a directory", cf->spool_dir);
	else
		check_file(cf, "spool-dir", cf->spool_dir, W_OK | X_OK);
	if (cf->hostname_looked_up)
		fprintf(report, "smtpauthd: warning: hostname is not set: each "
		    "connection asks the resolver for the FQDN (now %s); set "
		    "hostname to skip that\n", cf->hostname);
	/*
	 * The state of a fresh install before the certificate is set: it
	 * would run, but offer AUTH to no one, so no one could send.  Not
	 * "ok": an administrator who means plain-text logins says so with
	 * auth-require-tls no, which needs no key of its own.
	 */
	if (cf->tls != TLS_NONE)
		check_tls(cf, report);
	else if (cf->auth_require_tls)
		conf_error(cf, "tls none with auth-require-tls yes: AUTH is "
		    "never offered, so no one can send; set tls-cert and "
		    "tls-key, or auth-require-tls no if the network is "
		    "trusted");
	if (geteuid() == 0) {
		if ((pw = getpwnam(cf->privsep_user)) == NULL)
			conf_error(cf, "privsep-user %s does not exist (make "
			    "install creates it)", cf->privsep_user);
		else if ((why = privsep_user_problem(pw)) != NULL)
			conf_error(cf, "privsep-user %s %s", cf->privsep_user,
			    why);
	}
	if (stat(cf->privsep_dir, &st) == 0 && (!S_ISDIR(st.st_mode) ||
	    st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0))
		conf_error(cf, "privsep-dir %s: must be a directory owned by "
		    "root and writable by no one else", cf->privsep_dir);
	check_arg_max(cf, report);
	if ((e = log_syslog_reachable()) != 0)
		fprintf(report, "smtpauthd: warning: %s: %s: nothing smtpauthd "
		    "logs would be kept (is a syslog daemon running?)\n",
		    _PATH_LOG, strerror(e));
	check_state(cf);
	check_state_password(cf, report);
	if (strcmp(cf->state, "none") == 0 &&
	    (cf->user_recipient_limit.n > 0 || cf->user_message_limit.n > 0 ||
	    cf->limits_map != NULL))
		fprintf(report, "smtpauthd: warning: state none: the sending "
		    "limits are not counted and no login can be suspended "
		    "(set state sqlite:PATH, or the limits to 0)\n");
	if (cf->inject == INJECT_HEADERS && cf->user_recipient_limit.n > 0)
		fprintf(report, "smtpauthd: warning: inject headers: sendmail "
		    "takes the recipients from To:, Cc: and Bcc:, which "
		    "user-recipient-limit does not count (set inject "
		    "envelope)\n");
	problems += policy_check(cf, report);
	problems += sending_check_map(cf, report);
	check_policy_service(cf, report);
	if (cf->max_message_size > SIZE_MAX / 2)
		conf_error(cf, "max-message-size %llu: too large for this "
		    "machine", (unsigned long long)cf->max_message_size);
	for (i = 0; i < cf->nerrors; i++)
		fprintf(report, "smtpauthd: %s\n", cf->errors[i]);
	return problems + (int)cf->nerrors;
}

void
conf_free(struct config *cf)
{
	size_t i;

	for (i = 0; i < NKEYS; i++) {
		switch (conf_keys[i].kind) {
		case K_STRING:
		case K_PATH:
		case K_NAME:
		case K_HOST:
		case K_STATE:
		case K_PREFIXES:
		case K_DOMAINS:
		case K_DELIMS:
		case K_POLICY_SERVICE:
		case K_POLICY_ACTION:
			free(*(char **)((char *)cf + conf_keys[i].offset));
			break;
		default:
			break;
		}
	}
	for (i = 0; i < cf->nerrors; i++)
		free(cf->errors[i]);
	free(cf->errors);
	memset(cf, 0, sizeof(*cf));
}
