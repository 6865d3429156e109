/*
 * auth.c - checking a user name and password: strict base64 and the SASL
 * PLAIN split (RFC 4648, RFC 4616), the PAM conversation, the crypt(3)
 * password file (libxcrypt), and -H, which makes hashes for that file.
 *
 * auth_check() is the seam privilege separation puts behind a process
 * boundary (privsep.c): it takes a mechanism, a user, a password and the
 * peer, and answers ok, fail or tempfail, with the canonical user name on
 * success.  It never says why
 * to the client; the reason goes to the log only.
 */
#include <sys/stat.h>

#include <crypt.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <shadow.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <syslog.h>
#include <termios.h>
#include <unistd.h>

#include "smtpauthd.h"

#define PASSWD_LINE_MAX	1024

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int
b64_value(unsigned char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64_alphabet, c)) == NULL)
		return -1;
	return (int)(p - b64_alphabet);
}

/*
 * Strict RFC 4648 base64: length a multiple of 4, '=' only as the last one
 * or two characters, no white space, and unused bits zero (so that every
 * byte string has exactly one encoding).  Returns 0 or -1.
 */
int
base64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t outsize, size_t *outlen)
{
	size_t		 i, o = 0, pad = 0;
	int		 v[4], k;
	uint32_t	 bits;

	if (inlen % 4 != 0)
		return -1;
	if (inlen > 0 && in[inlen - 1] == '=')
		pad = (inlen > 1 && in[inlen - 2] == '=') ? 2 : 1;
	if (inlen / 4 * 3 - pad > outsize)
		return -1;
	for (i = 0; i < inlen; i += 4) {
		int last = i + 4 == inlen;

		for (k = 0; k < 4; k++) {
			if (last && k >= 4 - (int)pad)
				v[k] = 0;
			else if ((v[k] = b64_value((unsigned char)in[i + k])) < 0)
				return -1;
		}
		bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)v[2] << 6 | (uint32_t)v[3];
		if (last && pad == 2 && (bits & 0xffff) != 0)
			return -1;
		if (last && pad == 1 && (bits & 0xff) != 0)
			return -1;
		out[o++] = (unsigned char)(bits >> 16);
		if (!last || pad < 2)
			out[o++] = (unsigned char)(bits >> 8);
		if (!last || pad < 1)
			out[o++] = (unsigned char)bits;
	}
	*outlen = o;
	return 0;
}

size_t
base64_encode(const unsigned char *in, size_t inlen, char *out, size_t outsize)
{
	size_t		 i, o = 0;
	uint32_t	 bits;

	if ((inlen + 2) / 3 * 4 + 1 > outsize)
		return 0;
	for (i = 0; i < inlen; i += 3) {
		bits = (uint32_t)in[i] << 16;
		if (i + 1 < inlen)
			bits |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < inlen)
			bits |= in[i + 2];
		out[o++] = b64_alphabet[bits >> 18 & 63];
		out[o++] = b64_alphabet[bits >> 12 & 63];
		out[o++] = (char)(i + 1 < inlen ? b64_alphabet[bits >> 6 & 63] :
		    '=');
		out[o++] = (char)(i + 2 < inlen ? b64_alphabet[bits & 63] : '=');
	}
	out[o] = '\0';
	return o;
}

/*
 * RFC 4616: [authzid] NUL authcid NUL passwd.  Returns 0, -1 when it is not
 * of that form (or a field does not fit), -2 when an authzid names someone
 * else: proxy authorisation is not offered.
 */
int
sasl_plain_split(const unsigned char *buf, size_t len, char *user,
    size_t usersize, char *pass, size_t passsize)
{
	const unsigned char	*nul1, *nul2, *authcid, *passwd;
	size_t			 zlen, ulen, plen;

	if ((nul1 = memchr(buf, '\0', len)) == NULL)
		return -1;
	authcid = nul1 + 1;
	if ((nul2 = memchr(authcid, '\0', len - (size_t)(authcid - buf))) == NULL)
		return -1;
	passwd = nul2 + 1;
	zlen = (size_t)(nul1 - buf);
	ulen = (size_t)(nul2 - authcid);
	plen = len - (size_t)(passwd - buf);
	if (memchr(passwd, '\0', plen) != NULL)
		return -1;
	if (ulen >= usersize || plen >= passsize)
		return -1;
	if (zlen != 0 && (zlen != ulen || memcmp(buf, authcid, ulen) != 0))
		return -2;
	memcpy(user, authcid, ulen);
	user[ulen] = '\0';
	memcpy(pass, passwd, plen);
	pass[plen] = '\0';
	return 0;
}

/*
 * Refused before any backend sees them: a name must look like an account
 * name (letters, digits, '.', '_', '-', '+', '@', not first '-', '+', '.'
 * or '@').  PAM modules log the name they are given as they got it, under
 * our ident, so anything else could forge a log line for fail2ban.
 */
int
auth_user_acceptable(const char *user, size_t len)
{
	size_t i;

	if (len == 0 || len > AUTH_USER_MAX)
		return 0;
	if (!isalnum((unsigned char)user[0]) && user[0] != '_')
		return 0;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)user[i]) &&
		    (user[i] == '\0' || strchr("._-+@", user[i]) == NULL))
			return 0;
	return 1;
}

/* ---- PAM ---- */

struct pam_creds {
	const char	*user;
	const char	*pass;
};

static void
free_responses(struct pam_response *r, int n)
{
	int i;

	if (r == NULL)
		return;
	for (i = 0; i < n; i++) {
		if (r[i].resp != NULL) {
			explicit_bzero(r[i].resp, strlen(r[i].resp));
			free(r[i].resp);
		}
	}
	free(r);
}

/*
 * Echo-off prompts get the password, echo-on prompts the user name; text
 * for the user is dropped (nobody is there to read it).  Anything else is
 * a conversation this program cannot hold.
 */
static int
pam_conv_fn(int n, const struct pam_message **msg, struct pam_response **resp,
    void *appdata)
{
	const struct pam_creds	*cr = appdata;
	struct pam_response	*r;
	const char		*answer;
	int			 i;

	*resp = NULL;
	if (n <= 0 || n > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	if ((r = calloc((size_t)n, sizeof(*r))) == NULL)
		return PAM_BUF_ERR;
	for (i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			answer = cr->pass;
			break;
		case PAM_PROMPT_ECHO_ON:
			answer = cr->user;
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			continue;
		default:
			free_responses(r, n);
			return PAM_CONV_ERR;
		}
		if ((r[i].resp = strdup(answer)) == NULL) {
			free_responses(r, n);
			return PAM_BUF_ERR;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

/*
 * Only a verdict on the user or the password is a failure (535, counted
 * by fail2ban as a guess).  Every other code - a module missing or broken,
 * a directory down, a stack that does not parse - says nothing about the
 * credentials: 454, so that a broken stack neither lets anyone in nor
 * gets the users banned.
 */
static int
pam_result(int rc)
{
	switch (rc) {
	case PAM_SUCCESS:
		return AUTH_OK;
	case PAM_AUTH_ERR:
	case PAM_USER_UNKNOWN:
	case PAM_CRED_INSUFFICIENT:
	case PAM_MAXTRIES:
	case PAM_PERM_DENIED:
	case PAM_ACCT_EXPIRED:
	case PAM_NEW_AUTHTOK_REQD:
	case PAM_AUTHTOK_EXPIRED:
		return AUTH_FAIL;
	default:
		return AUTH_TEMPFAIL;
	}
}

/*
 * pam_unix asks libpam for a delay of its own (2 s +-25 %) that libpam
 * applies only when pam_authenticate fails: a right password for an
 * account refused afterwards (expired, root, the account stack) would
 * answer sooner than a wrong one.  The program's own delay, the same for
 * every failure, is the only one (auth_failure_deadline).
 */
static void
pam_no_delay(int retval, unsigned usec, void *appdata)
{
	(void)retval;
	(void)usec;
	(void)appdata;
}

/* The first problem of a broken stack is logged, with the count. */
struct stack_report {
	const struct config	*cf;
	int			 logged;
};

static void
stack_problem(void *arg, const char *problem)
{
	struct stack_report *r = arg;

	if (r->logged++ == 0)
		log_msg(LOG_ERR, "pam-service %s cannot work: %s; every AUTH "
		    "answers 454 until it is fixed (smtpauthd -t lists all)",
		    r->cf->pam_service, problem);
}

/*
 * A PAM transaction for user, from peer: -1 when none can be had (a
 * stack that cannot work: never libpam's fallback to "other", nor a
 * stack half there), else 0 with *rc what setting the items said.
 */
static int
pam_open(const struct config *cf, const char *user, const char *peer,
    const struct pam_conv *conv, pam_handle_t **ph, int *rc)
{
	struct stack_report	 report = { cf, 0 };

	*ph = NULL;
	if (pam_stack_check(cf->pam_service, stack_problem, &report) > 0)
		return -1;
	if ((*rc = pam_start(cf->pam_service, user, conv, ph)) !=
	    PAM_SUCCESS) {
		log_msg(LOG_ERR, "pam_start %s: %s", cf->pam_service,
		    pam_strerror(*ph, *rc));
		if (*ph != NULL)
			pam_end(*ph, *rc);
		return -1;
	}
	*rc = pam_set_item(*ph, PAM_RHOST, peer);
	return 0;
}

static int
auth_pam(const struct config *cf, const char *mech, const char *user,
    const char *pass, const char *peer, char *canon, size_t canonsize,
    const char **reason)
{
	struct pam_creds	 cr = { user, pass };
	struct pam_conv		 conv = { pam_conv_fn, &cr };
	pam_handle_t		*ph = NULL;
	const void		*item = NULL;
	int			 rc, result;

	if (pam_open(cf, user, peer, &conv, &ph, &rc) == -1) {
		*reason = "unavailable";
		return AUTH_TEMPFAIL;
	}
	if (rc == PAM_SUCCESS)
		rc = pam_set_item(ph, PAM_FAIL_DELAY, (const void *)pam_no_delay);
	if (rc == PAM_SUCCESS)
		rc = pam_authenticate(ph, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	if (rc == PAM_SUCCESS)
		rc = pam_acct_mgmt(ph, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	if (rc == PAM_SUCCESS)
		rc = pam_get_item(ph, PAM_USER, &item);
	if (rc == PAM_SUCCESS && (item == NULL ||
	    strlen(item) >= canonsize || !auth_user_acceptable(item,
	    strlen(item))))
		rc = PAM_USER_UNKNOWN;
	if (rc == PAM_SUCCESS)
		/* NOLINTNEXTLINE(clang-analyzer-security.insecureAPI.strcpy): the length is checked above */
		strcpy(canon, item);
	result = pam_result(rc);
	if (result != AUTH_OK) {
		*reason = result == AUTH_TEMPFAIL ? "unavailable" :
		    rc == PAM_NEW_AUTHTOK_REQD || rc == PAM_AUTHTOK_EXPIRED ?
		    "password-expired" :
		    rc == PAM_ACCT_EXPIRED ? "account-expired" : "credentials";
		log_msg(result == AUTH_TEMPFAIL ? LOG_ERR : LOG_INFO,
		    "pam %s (%s): %s", cf->pam_service, mech,
		    pam_strerror(ph, rc));
	}
	pam_end(ph, rc);
	return result;
}

/* ---- the password file ---- */

static int
ct_equal(const char *a, const char *b)
{
	size_t		 la = strlen(a), lb = strlen(b), i, n;
	unsigned char	 diff = la != lb;

	n = la > lb ? la : lb;
	for (i = 0; i < n; i++)
		diff |= (unsigned char)(a[i < la ? i : 0] ^ b[i < lb ? i : 0]);
	return diff == 0;
}

/* A hash usable for checking: anything else never matches. */
static int
hash_acceptable(const char *hash)
{
	int rc;

	if (hash[0] == '\0' || hash[0] == '*' || hash[0] == '!')
		return 0;
	rc = crypt_checksalt(hash);
	return rc == CRYPT_SALT_OK || rc == CRYPT_SALT_TOO_CHEAP;
}

/* Opens the file if only its owner may read or change it. */
static FILE *
open_passwd_file(const char *path, const char **why)
{
	struct stat	 st;
	FILE		*fp;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1) {
		*why = strerror(errno);
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		close(fd);
		return NULL;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		*why = "group or others have access (chmod 600 it)";
		close(fd);
		return NULL;
	}
	if (st.st_uid != geteuid()) {
		*why = "not owned by the user smtpauthd runs as";
		close(fd);
		return NULL;
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		*why = strerror(errno);
		close(fd);
	}
	return fp;
}

/* A problem with the password file, for -t (report) or else the log. */
static void
passwd_problem(FILE *report, int *problems, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
passwd_problem(FILE *report, int *problems, const char *fmt, ...)
{
	char	 msg[PATH_MAX + 256];
	va_list	 ap;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above; the analyzer cannot model it when it inlines a variadic call */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (report != NULL)
		fprintf(report, "smtpauthd: %s\n", msg);
	else
		log_msg(LOG_ERR, "%s", msg);
	if (problems != NULL)
		(*problems)++;
}

/*
 * Looks user up; on a match copies the hash.  Returns 1 found, 0 not found,
 * -1 the file is unusable.  With report (-t), every line is checked and
 * each problem counted in *problems; a hash that can never match is only
 * a warning, since "!" or "*" is how an entry is locked.
 */
static int
passwd_lookup(const char *path, const char *user, char *hash, size_t hashsize,
    FILE *report, int *problems)
{
	FILE		*fp;
	const char	*why = NULL;
	char		 line[PASSWD_LINE_MAX + 2], *colon, *end;
	size_t		 lineno = 0, len;
	int		 found = 0, toolong = 0;

	if ((fp = open_passwd_file(path, &why)) == NULL) {
		passwd_problem(report, problems, "passwd-file %s: %s", path, why);
		return -1;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		len = strlen(line);
		if (toolong) {
			toolong = len == 0 || line[len - 1] != '\n';
			continue;
		}
		lineno++;
		if (len > 0 && line[len - 1] != '\n' && !feof(fp)) {
			if (report != NULL)
				passwd_problem(report, problems, "passwd-file "
				    "%s:%zu: line too long", path, lineno);
			toolong = 1;
			continue;
		}
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		if ((colon = strchr(line, ':')) == NULL) {
			if (report != NULL)
				passwd_problem(report, problems, "passwd-file "
				    "%s:%zu: no ':'", path, lineno);
			continue;
		}
		*colon = '\0';
		if ((end = strchr(colon + 1, ':')) != NULL)
			*end = '\0';
		if (report != NULL && !auth_user_acceptable(line, strlen(line)))
			passwd_problem(report, problems, "passwd-file %s:%zu: "
			    "\"%s\" is not a user name smtpauthd accepts", path,
			    lineno, line);
		else if (report != NULL && !hash_acceptable(colon + 1))
			fprintf(report, "smtpauthd: warning: passwd-file %s:%zu:"
			    " the hash of %s never matches (locked, or a legacy "
			    "or unknown method)\n", path, lineno, line);
		if (!found && user != NULL && strcmp(line, user) == 0 &&
		    strlen(colon + 1) < hashsize) {
			/* NOLINTNEXTLINE(clang-analyzer-security.insecureAPI.strcpy): the length is checked above */
			strcpy(hash, colon + 1);
			found = 1;
		}
	}
	explicit_bzero(line, sizeof(line));
	(void)fclose(fp);	/* read only: nothing to lose */
	return found;
}

/* For -t: the number of problems, each described on report. */
int
auth_check_passwd_file(const struct config *cf, FILE *report)
{
	int problems = 0;

	(void)passwd_lookup(cf->passwd_file, NULL, NULL, 0, report, &problems);
	return problems;
}

/* A setting of the default method, so an unknown user costs a real hash. */
static const char *
dummy_setting(void)
{
	static char setting[CRYPT_GENSALT_OUTPUT_SIZE];

	if (setting[0] == '\0' &&
	    crypt_gensalt_rn(NULL, 0, NULL, 0, setting, sizeof(setting)) == NULL)
		return "*";
	return setting;
}

static int
auth_file(const struct config *cf, const char *user, const char *pass,
    char *canon, size_t canonsize, const char **reason)
{
	struct crypt_data	*cd;
	char			 hash[PASSWD_LINE_MAX];
	const char		*out;
	int			 found, match = 0;

	found = passwd_lookup(cf->passwd_file, user, hash, sizeof(hash), NULL,
	    NULL);
	if (found == -1) {
		*reason = "unavailable";
		return AUTH_TEMPFAIL;
	}
	if ((cd = calloc(1, sizeof(*cd))) == NULL) {
		*reason = "unavailable";
		return AUTH_TEMPFAIL;
	}
	if (found && hash_acceptable(hash)) {
		out = crypt_rn(pass, hash, cd, sizeof(*cd));
		match = out != NULL && out[0] != '*' && ct_equal(out, hash);
	} else {
		(void)crypt_rn(pass, dummy_setting(), cd, sizeof(*cd));
		if (found)
			log_msg(LOG_WARNING, "passwd-file %s: the hash of the "
			    "user is locked or of a method not accepted",
			    cf->passwd_file);
	}
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	explicit_bzero(hash, sizeof(hash));
	if (!match) {
		*reason = found ? "credentials" : "unknown-user";
		return AUTH_FAIL;
	}
	if (strlen(user) >= canonsize) {
		*reason = "bad-username";
		return AUTH_FAIL;
	}
	/* NOLINTNEXTLINE(clang-analyzer-security.insecureAPI.strcpy): the length is checked above */
	strcpy(canon, user);
	return AUTH_OK;
}

/*
 * The account sendmail will run as: AUTH_OK; AUTH_FAIL when there is none
 * or it is root's (uid 0); AUTH_TEMPFAIL when the lookup itself failed -
 * a directory that is down says nothing about the user, so it is neither
 * a refused account (550) nor, at AUTH, a guess.  getpwnam(3) counts
 * ENOENT among "not found", but glibc reports not found as 0 and passes
 * on a source's own errno when the source is unavailable: nss-pam-ldapd
 * answers ENOENT when nslcd cannot reach the directory (tests/test_ldap.py
 * measured it), and an NSS module that fails to load is ENOENT too.
 */
static int
account_lookup(const char *user, const char **reason)
{
	struct passwd	*pw;
	char		 esc[ESC_MAX];
	int		 saved;

	errno = 0;
	/* cppcheck-suppress getpwnamCalled ; one thread: nothing to re-enter */
	pw = getpwnam(user);
	saved = errno;
	if (pw != NULL && pw->pw_uid != 0)
		return AUTH_OK;
	if (pw != NULL) {
		*reason = "root";
		return AUTH_FAIL;
	}
	switch (saved) {
	case 0:
	case ESRCH:
	case EBADF:
	case EPERM:
		*reason = "no-account";
		return AUTH_FAIL;
	default:
		log_msg(LOG_ERR, "getpwnam user=%s: %s",
		    log_escape(user, esc, sizeof(esc)), strerror(saved));
		*reason = "unavailable";
		return AUTH_TEMPFAIL;
	}
}

int
auth_check(const struct config *cf, const char *mech, const char *user,
    const char *pass, const char *peer, char *canon, size_t canonsize,
    const char **reason)
{
	int rc;

	if (!auth_user_acceptable(user, strlen(user))) {
		*reason = "bad-username";
		return AUTH_FAIL;
	}
	if (pass[0] == '\0') {
		*reason = "empty-password";
		return AUTH_FAIL;
	}
	if (cf->auth == AUTH_PAM)
		rc = auth_pam(cf, mech, user, pass, peer, canon, canonsize,
		    reason);
	else
		rc = auth_file(cf, user, pass, canon, canonsize, reason);
	/*
	 * sendmail will run as this user: it must be an account, and not one
	 * with uid 0, whose password is no business of a mail service.
	 */
	if (rc == AUTH_OK && geteuid() == 0)
		rc = account_lookup(canon, reason);
	return rc;
}

/* ---- the account, again, before each message ---- */

/*
 * pam_acct_mgmt alone (no password: the client proved it at AUTH):
 * expired, or refused by pam_access, pam_time, pam_nologin...
 */
static int
account_pam(const struct config *cf, const char *user, const char *peer,
    const char **reason)
{
	struct pam_creds	 cr = { user, "" };
	struct pam_conv		 conv = { pam_conv_fn, &cr };
	pam_handle_t		*ph = NULL;
	int			 rc, result;

	*reason = "unavailable";
	if (pam_open(cf, user, peer, &conv, &ph, &rc) == -1)
		return AUTH_TEMPFAIL;
	if (rc == PAM_SUCCESS)
		rc = pam_acct_mgmt(ph, PAM_SILENT);
	result = pam_result(rc);
	if (result != AUTH_OK) {
		*reason = result == AUTH_TEMPFAIL ? "unavailable" :
		    rc == PAM_ACCT_EXPIRED ? "account-expired" :
		    rc == PAM_NEW_AUTHTOK_REQD || rc == PAM_AUTHTOK_EXPIRED ?
		    "password-expired" : "account";
		log_msg(result == AUTH_TEMPFAIL ? LOG_ERR : LOG_INFO,
		    "pam %s (account): %s", cf->pam_service,
		    pam_strerror(ph, rc));
	}
	pam_end(ph, rc);
	return result;
}

/*
 * Whether user may still send, as the check at AUTH would say now without
 * the password: the password-file entry is still there and not locked;
 * with PAM, the account stack agrees and the local account is not locked
 * (passwd -l and usermod -L put a '!' before the shadow hash, which only
 * the auth stack would notice); and sendmail can still run as it.
 */
int
auth_account(const struct config *cf, const char *user, const char *peer,
    const char **reason)
{
	char		 hash[PASSWD_LINE_MAX];
	struct spwd	*sp;
	int		 found, rc = AUTH_OK;

	if (cf->auth == AUTH_FILE) {
		found = passwd_lookup(cf->passwd_file, user, hash, sizeof(hash),
		    NULL, NULL);
		if (found == -1) {
			*reason = "unavailable";
			rc = AUTH_TEMPFAIL;
		} else if (!found || !hash_acceptable(hash)) {
			*reason = found ? "account-locked" : "unknown-user";
			rc = AUTH_FAIL;
		}
		explicit_bzero(hash, sizeof(hash));
	} else {
		rc = account_pam(cf, user, peer, reason);
		sp = NULL;
		if (rc == AUTH_OK && geteuid() == 0)
			/* cppcheck-suppress getspnamCalled ; one thread */
			sp = getspnam(user);
		if (sp != NULL && sp->sp_pwdp != NULL &&
		    sp->sp_pwdp[0] == '!') {
			*reason = "account-locked";
			rc = AUTH_FAIL;
		}
		endspent();
	}
	if (rc == AUTH_OK && geteuid() == 0)
		rc = account_lookup(user, reason);
	return rc;
}

/* Up to this much is added to auth-failure-delay, at random. */
#define AUTH_JITTER_MS	50

/*
 * When a failed AUTH that began at start_ms may be answered: every
 * failure, whatever its reason and wherever it was decided, waits
 * auth-failure-delay plus a little jitter from the same start, so that
 * the time of the answer tells nothing of why (a backend slower than
 * that is the one exception: nothing answers before it).
 */
int64_t
auth_failure_deadline(const struct config *cf, int64_t start_ms)
{
	uint16_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = 0;
	return start_ms + (int64_t)cf->auth_failure_delay * 1000 +
	    (int64_t)(r % (AUTH_JITTER_MS + 1));
}

/*
 * The one log line of an AUTH result (fail2ban reads it): written by the
 * monitor for every check it made, by the session only for what it
 * refused without asking (a malformed exchange, a user name no backend
 * may see).  user is the canonical name on success, else as given.
 */
void
auth_log_result(int result, const char *user, const char *mech,
    const char *peer, const char *reason, const char *tls)
{
	char esc[ESC_MAX];

	if (result == AUTH_OK)
		log_msg(LOG_INFO, "auth ok user=%s mech=%s ip=%s tls=%s",
		    log_escape(user, esc, sizeof(esc)), mech, peer, tls);
	else
		log_msg(LOG_NOTICE, "auth failed user=%s mech=%s ip=%s "
		    "reason=%s tls=%s", user[0] != '\0' ? log_escape(user, esc,
		    sizeof(esc)) : "-", mech, peer, reason, tls);
}

/* ---- -H ---- */

static int
read_password(FILE *in, const char *prompt, char *buf, size_t size)
{
	struct termios	 saved, noecho;
	int		 tty, fd = fileno(in), ok;

	tty = isatty(fd) && tcgetattr(fd, &saved) == 0;
	if (tty) {
		fputs(prompt, stderr);
		noecho = saved;
		noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		noecho.c_lflag |= ICANON;
		(void)tcsetattr(fd, TCSAFLUSH, &noecho);
	}
	ok = fgets(buf, (int)size, in) != NULL;
	if (tty) {
		(void)tcsetattr(fd, TCSAFLUSH, &saved);
		fputc('\n', stderr);
	}
	if (!ok)
		return -1;
	if (strchr(buf, '\n') == NULL && !feof(in))
		return -1;
	buf[strcspn(buf, "\r\n")] = '\0';
	return tty;
}

int
auth_hash_password(FILE *in, FILE *out)
{
	char		 pass[AUTH_PASS_MAX + 2], again[AUTH_PASS_MAX + 2];
	char		 setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	const char	*hash;
	int		 tty, rc = 1;

	if ((tty = read_password(in, "Password: ", pass, sizeof(pass))) == -1) {
		fprintf(stderr, "smtpauthd: -H: no password read (or longer "
		    "than %d)\n", AUTH_PASS_MAX);
		return 1;
	}
	if (tty && (read_password(in, "Again: ", again, sizeof(again)) == -1 ||
	    strcmp(pass, again) != 0)) {
		fprintf(stderr, "smtpauthd: -H: the passwords differ\n");
		goto done;
	}
	if (pass[0] == '\0') {
		fprintf(stderr, "smtpauthd: -H: empty password\n");
		goto done;
	}
	if ((cd = calloc(1, sizeof(*cd))) == NULL ||
	    crypt_gensalt_rn(NULL, 0, NULL, 0, setting, sizeof(setting)) == NULL ||
	    (hash = crypt_rn(pass, setting, cd, sizeof(*cd))) == NULL ||
	    hash[0] == '*') {
		fprintf(stderr, "smtpauthd: -H: crypt: %s\n", strerror(errno));
		free(cd);
		goto done;
	}
	rc = fprintf(out, "%s\n", hash) < 0 || fflush(out) != 0;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
done:
	explicit_bzero(pass, sizeof(pass));
	explicit_bzero(again, sizeof(again));
	return rc;
}
