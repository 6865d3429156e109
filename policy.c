/*
 * policy.c - the monitor's decisions about what a logged-in user may do,
 * one section each: the sender bound to the login (issue 12, "Sender
 * policy"); sending limits and suspension are to follow as sections of
 * their own.
 *
 * The monitor calls these, never the session: a compromised session must
 * not be able to skip a check.  Nothing here logs.  The caller writes the
 * refusal line, and for POLICY_TEMPFAIL logs the reason it is given (a
 * map that cannot be read or has a bad line), escaped.  The replies the
 * client gets are made here too (policy_*_reply), so that their wording
 * lives in one place.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtpauthd.h"
#include "policy.h"

/* ---- the sender bound to the login ----
 *
 * sender-policy own: the address is the login's own.  Its local part is
 * the login, or the login followed by one of the sender-delimiter
 * characters and any tag (Postfix's recipient_delimiter: with "+-",
 * alice+news and alice-news are alice's), compared without regard to
 * case; its domain is one of sender-domains.  Trying the login as a
 * prefix, rather than cutting at the first delimiter, keeps a login that
 * holds a delimiter itself (mary-ann with "+-") the owner of its address.
 * A login with an '@' in it (a password-file user may be an address) owns
 * that address, tagged or not, whatever sender-domains says.
 *
 * sender-policy map: own, or sender-map gives the address to the login.
 * The map is looked up as Postfix looks up smtpd_sender_login_maps: the
 * address as given, then without its tag, then - when the domain is one
 * of sender-domains, Postfix's local domains - the local part as given
 * and without its tag, then @domain.  The first key the map has decides,
 * whether or not it names the login (a more specific entry overrides a
 * domain-wide one, as in Postfix); within the map the first entry of a key
 * counts.  Keys and logins compare without regard to case.
 *
 * The null sender is always allowed: bounces, receipts and vacation
 * replies are sent with it.
 */

enum { KEY_ADDR, KEY_ADDR_UNTAGGED, KEY_LOCAL, KEY_LOCAL_UNTAGGED,
	KEY_DOMAIN, SENDER_KEYS };

struct sender_lookup {
	const char	*login;		/* NULL: -t, checking only */
	char		 keys[SENDER_KEYS][SMTP_PATH_MAX + 2];	/* "": none */
	int		 rank;		/* of the key found; SENDER_KEYS: none */
	int		 owned;		/* that key names the login */
};

static const char *
delimiters(const struct config *cf)
{
	return cf->sender_delimiter != NULL ? cf->sender_delimiter : "+";
}

/* Is local (len octets) name, or name, a delimiter and a tag? */
static int
local_owned(const char *local, size_t len, const char *name, size_t namelen,
    const char *delims)
{
	if (namelen == 0 || len < namelen ||
	    strncasecmp(local, name, namelen) != 0)
		return 0;
	return len == namelen || strchr(delims, local[namelen]) != NULL;
}

/* Where the tag of local (len octets) begins: len when it has none. */
static size_t
tag_start(const char *local, size_t len, const char *delims)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (strchr(delims, local[i]) != NULL)
			return i;
	return len;
}

/*
 * Is domain one of sender-domains?  Unset, they are hostname and, when
 * it has two labels or more, the domain hostname is in
 * (mail.example.org: mail.example.org and example.org; test.example:
 * test.example alone, not "example", a domain nobody's mail comes from).
 */
int
policy_sender_domain(const struct config *cf, const char *domain)
{
	const char	*p = cf->sender_domains, *parent;
	size_t		 n, len = strlen(domain);

	if (len == 0)
		return 0;
	if (p == NULL) {
		if (cf->hostname == NULL)
			return 0;
		if (strcasecmp(domain, cf->hostname) == 0)
			return 1;
		parent = strchr(cf->hostname, '.');
		return parent != NULL && strchr(parent + 1, '.') != NULL &&
		    strcasecmp(domain, parent + 1) == 0;
	}
	for (;;) {
		p += strspn(p, ", \t");
		if (*p == '\0')
			return 0;
		n = strcspn(p, ", \t");
		if (n == len && strncasecmp(p, domain, n) == 0)
			return 1;
		p += n;
	}
}

static int
sender_own(const struct config *cf, const char *login, const char *sender)
{
	const char *at, *lat;

	if ((at = strrchr(sender, '@')) == NULL)
		return 0;
	if ((lat = strrchr(login, '@')) != NULL)
		return strcasecmp(at + 1, lat + 1) == 0 &&
		    local_owned(sender, (size_t)(at - sender), login,
		    (size_t)(lat - login), delimiters(cf));
	return policy_sender_domain(cf, at + 1) &&
	    local_owned(sender, (size_t)(at - sender), login, strlen(login),
	    delimiters(cf));
}

/* A key of sender-map: address, local part or @domain, printable ASCII. */
static int
sender_key_valid(const char *key)
{
	const char	*at, *p;
	size_t		 len = strlen(key);

	if (len == 0 || len > SMTP_PATH_MAX - 2)
		return 0;
	for (p = key; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '"')
			return 0;
	if ((at = strchr(key, '@')) == NULL)
		return 1;
	if (strchr(at + 1, '@') != NULL || at[1] == '\0')
		return 0;
	return 1;
}

static int
sender_entry(struct map_file *mf, size_t lineno, char *key, char *value,
    void *arg)
{
	struct sender_lookup	*l = arg;
	char			 esc[ESC_MAX];
	char			*login;
	int			 r, n = 0, owned = 0;

	if (!sender_key_valid(key)) {
		map_error(mf, lineno, "\"%s\" is not an address, a local part "
		    "or @domain", log_escape(key, esc, sizeof(esc)));
		return -1;
	}
	while ((login = map_value_next(&value)) != NULL) {
		n++;
		if (!auth_user_acceptable(login, strlen(login)))
			map_warning(mf, lineno, "\"%s\" is not a user name "
			    "smtpauthd accepts: it never matches",
			    log_escape(login, esc, sizeof(esc)));
		if (l->login != NULL && strcasecmp(login, l->login) == 0)
			owned = 1;
	}
	if (n == 0) {
		map_error(mf, lineno, "\"%s\" names no login",
		    log_escape(key, esc, sizeof(esc)));
		return -1;
	}
	for (r = 0; r < l->rank; r++)
		if (l->keys[r][0] != '\0' && strcasecmp(l->keys[r], key) == 0) {
			l->rank = r;
			l->owned = owned;
			break;
		}
	return 0;
}

/* The keys to try for sender, best first (see the top of this section). */
static void
sender_keys(const struct config *cf, const char *sender,
    struct sender_lookup *l)
{
	const char	*at = strrchr(sender, '@');
	size_t		 local, tag, size = sizeof(l->keys[0]);
	int		 local_domain;

	memset(l->keys, 0, sizeof(l->keys));
	if (at == NULL || strlen(sender) >= size)
		return;		/* no key fits: nothing is found */
	local = (size_t)(at - sender);
	tag = tag_start(sender, local, delimiters(cf));
	local_domain = policy_sender_domain(cf, at + 1);
	snprintf(l->keys[KEY_ADDR], size, "%s", sender);
	if (tag < local && tag > 0)
		snprintf(l->keys[KEY_ADDR_UNTAGGED], size, "%.*s%s", (int)tag,
		    sender, at);
	if (local_domain) {
		snprintf(l->keys[KEY_LOCAL], size, "%.*s", (int)local, sender);
		if (tag < local && tag > 0)
			snprintf(l->keys[KEY_LOCAL_UNTAGGED], size, "%.*s",
			    (int)tag, sender);
	}
	snprintf(l->keys[KEY_DOMAIN], size, "%s", at);
}

/*
 * May login send as sender (the envelope's, without brackets; "" for the
 * null sender)?  POLICY_OK, POLICY_REFUSE, or POLICY_TEMPFAIL when
 * sender-map is needed and cannot be used; why then says what is wrong
 * with it (for the log; escape it).
 */
int
policy_sender(const struct config *cf, const char *login, const char *sender,
    char *why, size_t whysize)
{
	struct sender_lookup	 l;
	struct map_file		 mf;

	if (whysize > 0)
		why[0] = '\0';
	if (sender[0] == '\0' || cf->sender_policy == SENDER_ANY)
		return POLICY_OK;
	if (login == NULL || login[0] == '\0')
		return POLICY_REFUSE;
	if (sender_own(cf, login, sender))
		return POLICY_OK;
	if (cf->sender_policy != SENDER_MAP || cf->sender_map == NULL)
		return POLICY_REFUSE;
	memset(&mf, 0, sizeof(mf));
	mf.what = "sender-map";
	mf.path = cf->sender_map;
	l.login = login;
	l.rank = SENDER_KEYS;
	l.owned = 0;
	sender_keys(cf, sender, &l);
	if (map_read(&mf, sender_entry, &l) == -1) {
		snprintf(why, whysize, "%s", mf.why);
		return POLICY_TEMPFAIL;
	}
	return l.rank < SENDER_KEYS && l.owned ? POLICY_OK : POLICY_REFUSE;
}

/*
 * The same for several addresses (those of the From: and Sender: headers,
 * for sender-header-check): POLICY_OK when login owns them all (and when
 * there are none: whether a message needs a From: is the caller's call);
 * else POLICY_REFUSE with *failed the index of the first refused, or,
 * when none is refused but one could not be decided, POLICY_TEMPFAIL with
 * *failed its index and why as for policy_sender.  The null address ("")
 * passes, as for the envelope.
 */
int
policy_sender_list(const struct config *cf, const char *login,
    const char *const *addrs, size_t n, size_t *failed, char *why,
    size_t whysize)
{
	char	 reason[POLICY_WHY_MAX];
	size_t	 i;
	int	 rc = POLICY_OK;

	if (whysize > 0)
		why[0] = '\0';
	for (i = 0; i < n; i++)
		switch (policy_sender(cf, login, addrs[i], reason,
		    sizeof(reason))) {
		case POLICY_REFUSE:
			*failed = i;
			if (whysize > 0)
				why[0] = '\0';
			return POLICY_REFUSE;
		case POLICY_TEMPFAIL:
			if (rc == POLICY_OK) {
				*failed = i;
				snprintf(why, whysize, "%s", reason);
				rc = POLICY_TEMPFAIL;
			}
			break;
		default:
			break;
		}
	return rc;
}

/*
 * The replies, as text (enhanced code and words, no reply code: a
 * struct relay_reply's text) with the reply code returned.  sender and
 * login are ones the session and monitor already checked (addr.c,
 * auth_user_acceptable): no CR, LF or blank can be in them.  A text
 * longer than size is cut, as a reply may be.
 */
int
policy_sender_reply(const char *sender, const char *login, char *text,
    size_t size)
{
	snprintf(text, size, "5.7.1 <%s>: Sender address rejected: not owned "
	    "by user %s", sender, login);
	return 553;
}

int
policy_header_reply(const char *login, char *text, size_t size)
{
	snprintf(text, size, "5.7.1 From: header not owned by user %s", login);
	return 550;
}

/* sender-map could not be used: try later (Postfix's words). */
int
policy_tempfail_reply(const char *sender, char *text, size_t size)
{
	snprintf(text, size, "4.3.0 <%s>: Temporary lookup failure", sender);
	return 451;
}

/*
 * -t: the sender policy's settings and its map.  Errors are counted and
 * returned, warnings only printed.  (sender-policy map without a
 * sender-map is a configuration error of conf_finish: connections are
 * refused with it, rather than run a policy that is not the one named.)
 */
int
policy_check(const struct config *cf, FILE *report)
{
	struct sender_lookup	 l;
	struct map_file		 mf;

	if (cf->sender_policy == SENDER_ANY)
		fprintf(report, "smtpauthd: warning: sender-policy any: every "
		    "user may send as any address, anyone's who has a stolen "
		    "password included (set own or map)\n");
	else if (cf->sender_domains == NULL && cf->hostname != NULL &&
	    strchr(cf->hostname, '.') == NULL)
		fprintf(report, "smtpauthd: warning: sender-domains is unset "
		    "and hostname %s has no domain: users may send only as "
		    "LOGIN@%s (set sender-domains)\n", cf->hostname,
		    cf->hostname);
	if (cf->sender_map == NULL)
		return 0;
	if (cf->sender_policy != SENDER_MAP)
		fprintf(report, "smtpauthd: warning: sender-map %s is not used "
		    "unless sender-policy is map\n", cf->sender_map);
	memset(&mf, 0, sizeof(mf));
	memset(&l, 0, sizeof(l));
	mf.what = "sender-map";
	mf.path = cf->sender_map;
	mf.report = report;
	l.login = NULL;
	l.rank = 0;		/* no key to find */
	(void)map_read(&mf, sender_entry, &l);
	return mf.problems;
}
