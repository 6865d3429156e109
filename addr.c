/*
 * addr.c - RFC 5321 reverse-path and forward-path parsing, strict.
 *
 * An address accepted here ends up as one argv element of sendmail, so
 * anything that a sendmail, an alias file or a delivery agent could read as
 * something other than a mailbox is refused: quoted local parts, source
 * routes, a leading '-', '|', a leading '/', ',', white space, control
 * characters and non-ASCII octets.  What is left is a dot-string local part
 * and a host name or an IP address literal.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

#include "smtpauthd.h"

/* RFC 5322 atext, less '|': a pipe to a program in any alias file. */
static int
is_atext(int c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{}~", c)
	    != NULL);
}

static int
valid_local_part(const char *s, size_t len)
{
	size_t	 i;
	int	 atom_len = 0;

	if (len == 0 || len > SMTP_LOCAL_MAX)
		return 0;
	if (s[0] == '-' || s[0] == '/')
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (atom_len == 0)
				return 0;
			atom_len = 0;
		} else if (is_atext((unsigned char)s[i]))
			atom_len++;
		else
			return 0;
	}
	return atom_len > 0;
}

static int
valid_label(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > 63)
		return 0;
	if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[len - 1]))
		return 0;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return 0;
	return 1;
}

static int
valid_address_literal(const char *s, size_t len)
{
	char		 ip[64];
	unsigned char	 bin[16];

	if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof(ip))
		return 0;
	memcpy(ip, s + 1, len - 2);
	ip[len - 2] = '\0';
	if (strncasecmp(ip, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, ip + 5, bin) == 1;
	return inet_pton(AF_INET, ip, bin) == 1;
}

static int
valid_domain(const char *s, size_t len)
{
	const char	*end = s + len, *dot;

	if (len == 0 || len > SMTP_DOMAIN_MAX)
		return 0;
	if (s[0] == '[')
		return valid_address_literal(s, len);
	while (s < end) {
		dot = memchr(s, '.', (size_t)(end - s));
		if (dot == NULL)
			dot = end;
		if (!valid_label(s, (size_t)(dot - s)))
			return 0;
		s = dot < end ? dot + 1 : end;
		if (dot + 1 == end)
			return 0;	/* trailing dot */
	}
	return 1;
}

/* Is addr (no angle brackets) a mailbox we hand to sendmail? */
int
addr_is_safe(const char *addr)
{
	const char	*at;
	size_t		 len = strlen(addr);

	if (len == 0 || len > SMTP_PATH_MAX - 2)
		return 0;
	if ((at = strrchr(addr, '@')) == NULL)
		return strcasecmp(addr, "postmaster") == 0;
	return valid_local_part(addr, (size_t)(at - addr)) &&
	    valid_domain(at + 1, len - (size_t)(at - addr) - 1);
}

/*
 * Parse "<path>" at s.  The mailbox goes to out without brackets ("" for
 * the null path, when allowed); *rest points after the '>'.
 */
int
addr_parse_path(const char *s, int allow_null, char *out, size_t outsize,
    const char **rest)
{
	const char	*close;
	size_t		 len, i;

	if (*s != '<')
		return ADDR_SYNTAX;
	close = strchr(s, '>');
	if (close == NULL)
		return ADDR_SYNTAX;
	len = (size_t)(close - s - 1);
	if (len + 2 > SMTP_PATH_MAX)
		return ADDR_TOOLONG;
	if (rest != NULL)
		*rest = close + 1;
	if (len == 0) {
		if (!allow_null)
			return ADDR_BAD;
		out[0] = '\0';
		return ADDR_OK;
	}
	if (s[1] == '"')
		return ADDR_QUOTED;
	for (i = 1; i <= len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= ' ' || c >= 0x7f)
			return ADDR_BAD;
		if (c == '"')
			return ADDR_QUOTED;
	}
	if (len >= outsize)
		return ADDR_TOOLONG;
	memcpy(out, s + 1, len);
	out[len] = '\0';
	/* A source route ("@a,@b:") begins with '@' and fails here too. */
	return addr_is_safe(out) ? ADDR_OK : ADDR_BAD;
}
