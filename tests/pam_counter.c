/*
 * pam_counter.c - a PAM module for the protocol tests that counts how often
 * the backend is really consulted.  Stacked before pam_matrix in the test
 * service file, each pam_sm_authenticate and pam_sm_acct_mgmt call appends
 * one line to the file named by its "file=" argument:
 *
 *     authenticate user=USER rhost=RHOST service=SERVICE
 *     account user=USER rhost=RHOST service=SERVICE
 *
 * and returns PAM_IGNORE, or the code named by "ret=" (success, auth_err,
 * authinfo_unavail, user_unknown, acct_expired, perm_denied, system_err,
 * new_authtok_reqd, maxtries, cred_insufficient, authtok_expired,
 * module_unknown, symbol_err, service_err, abort, buf_err, conv_err) so
 * that tests can make the backend fail in a chosen way.  "hang=PIDFILE"
 * makes it fork a helper that never ends, write both pids there ("PID
 * HELPER") and never return,
 * as a module waiting on a server that is down; "helper=PIDFILE" leaves
 * such a helper behind (its pid written there) and returns as usual.
 * "escape=PIDFILE" leaves one that got away as a daemon does: a child
 * calls setsid() and forks the helper, then exits (waited for), so that
 * the helper is in no process group of the check's and nobody's child;
 * "PID HELPER" is written there before the module goes on.  Given with
 * hang=, the helper is left first.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <security/pam_modules.h>

static const struct {
	const char *name;
	int code;
} codes[] = {
	{ "ignore", PAM_IGNORE },
	{ "success", PAM_SUCCESS },
	{ "auth_err", PAM_AUTH_ERR },
	{ "authinfo_unavail", PAM_AUTHINFO_UNAVAIL },
	{ "user_unknown", PAM_USER_UNKNOWN },
	{ "acct_expired", PAM_ACCT_EXPIRED },
	{ "perm_denied", PAM_PERM_DENIED },
	{ "system_err", PAM_SYSTEM_ERR },
	{ "new_authtok_reqd", PAM_NEW_AUTHTOK_REQD },
	{ "maxtries", PAM_MAXTRIES },
	{ "cred_insufficient", PAM_CRED_INSUFFICIENT },
	{ "authtok_expired", PAM_AUTHTOK_EXPIRED },
	{ "module_unknown", PAM_MODULE_UNKNOWN },
	{ "symbol_err", PAM_SYMBOL_ERR },
	{ "service_err", PAM_SERVICE_ERR },
	{ "abort", PAM_ABORT },
	{ "buf_err", PAM_BUF_ERR },
	{ "conv_err", PAM_CONV_ERR },
};

static const char *
item(pam_handle_t *pamh, int type)
{
	const void *v = NULL;

	if (pam_get_item(pamh, type, &v) != PAM_SUCCESS || v == NULL)
		return "-";
	return v;
}

static void
write_pids(const char *pidfile, pid_t pid, pid_t helper)
{
	char pids[64];
	int fd, len;

	len = snprintf(pids, sizeof pids, "%ld %ld\n", (long)pid,
	    (long)helper);
	fd = open(pidfile, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0666);
	if (fd != -1) {
		if (write(fd, pids, (size_t)len) < 0) {
			/* the test finds no pids and fails */
		}
		close(fd);
	}
}

/* Forks a process that pauses for ever; writes "PID HELPER" to pidfile. */
static void
leave_helper(const char *pidfile)
{
	pid_t helper;

	helper = fork();
	if (helper == 0)
		for (;;)
			pause();
	write_pids(pidfile, getpid(), helper);
}

/* The same, but the helper leaves the session and is orphaned. */
static void
leave_escaped_helper(const char *pidfile)
{
	pid_t self = getpid(), first, helper;
	int status;

	first = fork();
	if (first == 0) {
		if (setsid() == -1)
			_exit(1);
		helper = fork();
		if (helper == 0)
			for (;;)
				pause();
		write_pids(pidfile, self, helper);
		_exit(helper == -1);
	}
	if (first > 0)
		while (waitpid(first, &status, 0) == -1 && errno == EINTR)
			;
}

static int
record(pam_handle_t *pamh, const char *what, int argc, const char **argv)
{
	const char *file = NULL, *hang_pidfile = NULL, *helper_pidfile = NULL;
	const char *escape_pidfile = NULL;
	int ret = PAM_IGNORE;
	char line[2048];
	int fd, i, len;
	size_t k;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "file=", 5) == 0)
			file = argv[i] + 5;
		else if (strncmp(argv[i], "hang=", 5) == 0)
			hang_pidfile = argv[i] + 5;
		else if (strncmp(argv[i], "helper=", 7) == 0)
			helper_pidfile = argv[i] + 7;
		else if (strncmp(argv[i], "escape=", 7) == 0)
			escape_pidfile = argv[i] + 7;
		else if (strncmp(argv[i], "ret=", 4) == 0)
			for (k = 0; k < sizeof codes / sizeof codes[0]; k++)
				if (strcmp(argv[i] + 4, codes[k].name) == 0)
					ret = codes[k].code;
	}
	if (file == NULL)
		return ret;
	len = snprintf(line, sizeof line, "%s user=%s rhost=%s service=%s\n",
	    what, item(pamh, PAM_USER), item(pamh, PAM_RHOST),
	    item(pamh, PAM_SERVICE));
	if (len < 0)
		return ret;
	if ((size_t)len >= sizeof line)
		len = sizeof line - 1;
	fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
	if (fd != -1) {
		if (write(fd, line, (size_t)len) < 0) {
			/* nothing to do: the count will show it */
		}
		close(fd);
	}
	if (helper_pidfile != NULL)
		leave_helper(helper_pidfile);
	if (escape_pidfile != NULL)
		leave_escaped_helper(escape_pidfile);
	if (hang_pidfile != NULL) {
		leave_helper(hang_pidfile);
		for (;;)
			pause();
	}
	return ret;
}

PAM_EXTERN int
pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)flags;
	return record(pamh, "authenticate", argc, argv);
}

PAM_EXTERN int
pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh;
	(void)flags;
	(void)argc;
	(void)argv;
	return PAM_IGNORE;
}

PAM_EXTERN int
pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)flags;
	return record(pamh, "account", argc, argv);
}
