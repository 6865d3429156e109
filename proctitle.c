/*
 * proctitle.c - the process title ps(1) and pgrep -f show: after a
 * successful AUTH it says "smtpauthd: LOGIN@IP", so that a sysadmin finds
 * (and can stop) the processes of a user whose password was stolen.
 *
 * Linux has no setproctitle(3).  /proc/PID/cmdline is read from the
 * memory where the kernel put the argument strings at execve(2); the
 * environment strings follow them.  proc_title_init() moves what lives
 * there out of the way (argv's strings, the environment, glibc's program
 * name all get copies on the heap), so the whole area can be overwritten
 * with the title.  The kernel reads past the end of the original argument
 * strings, into the old environment, once their last octet is no longer
 * a NUL (fs/proc/base.c, get_mm_cmdline), so a title may be as long as
 * both together.
 *
 * Overwriting memory needs no system call, so the confined session can
 * change its title under its seccomp filter.  prctl(PR_SET_NAME), the
 * short name top(1) and ps -o comm show, is a system call that filter
 * does not allow: only proc_title_set() makes it; the session calls
 * proc_title_set_confined().
 */
#include <sys/prctl.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpauthd.h"

extern char **environ;

static char	*title_area;	/* NULL: proc_title_init found nothing */
static size_t	 title_size;	/* octets of it, the last NUL included */
/*
 * The copies: kept reachable here, for the leak checker too (volatile:
 * stored but never read again, they would be optimised away).  setenv(3)
 * may replace environ's entries or environ itself.
 */
static char	**saved_argv;
static char	**volatile saved_environ;
static char	**volatile new_environ;

/* A copy that outlives anything else we might point at; or exit. */
static char *
copy_or_die(const char *s)
{
	char *p;

	if ((p = strdup(s)) == NULL)
		fatal("strdup");
	return p;
}

void
proc_title_init(int argc, char **argv)
{
	char	*start, *end, **copies, **array;
	size_t	 n, i;

	if (argc <= 0 || argv == NULL || argv[0] == NULL || saved_argv != NULL)
		return;
	/*
	 * The area: argv[0] and every string directly after it, arguments
	 * then environment, as execve(2) lays them out.  What does not
	 * follow on is left out (a launcher moved it already).
	 */
	start = argv[0];
	end = start + strlen(start);
	for (i = 1; i < (size_t)argc && argv[i] == end + 1; i++)
		end = argv[i] + strlen(argv[i]);
	for (n = 0; environ != NULL && environ[n] != NULL; n++)
		;
	for (i = 0; i < n && environ[i] == end + 1; i++)
		end = environ[i] + strlen(environ[i]);

	/* The strings that live there move to the heap first. */
	saved_argv = xcalloc((size_t)argc + 1, sizeof(*saved_argv));
	for (i = 0; i < (size_t)argc; i++)
		saved_argv[i] = argv[i] = copy_or_die(argv[i]);
	copies = xcalloc(n + 1, sizeof(*copies));
	for (i = 0; i < n; i++)
		copies[i] = copy_or_die(environ[i]);
	saved_environ = copies;
	/*
	 * environ gets an array of its own: unsetenv(3) shifts entries out
	 * of it, and saved_environ keeps what it drops reachable.
	 */
	array = xcalloc(n + 1, sizeof(*array));
	memcpy(array, copies, n * sizeof(*array));
	new_environ = array;
	environ = array;
	/* err(3) and warn(3) print these; they pointed into the area. */
	program_invocation_name = saved_argv[0];
	program_invocation_short_name = strrchr(saved_argv[0], '/');
	if (program_invocation_short_name != NULL)
		program_invocation_short_name++;
	else
		program_invocation_short_name = saved_argv[0];

	title_area = start;
	title_size = (size_t)(end - start) + 1;
}

/*
 * The title, made printable (a login is checked, but the title is no
 * place for a control character either way), into buf.
 */
static void
format_title(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void
format_title(char *buf, size_t size, const char *fmt, va_list ap)
{
	size_t i;

	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): the callers va_start it */
	vsnprintf(buf, size, fmt, ap);
	for (i = 0; buf[i] != '\0'; i++)
		if ((unsigned char)buf[i] < ' ' || (unsigned char)buf[i] >= 0x7f)
			buf[i] = '?';
}

/* Over the area, the rest of it NULs; no system call. */
static void
write_title(const char *title)
{
	size_t len;

	if (title_area == NULL || title_size < 2)
		return;
	len = strlen(title);
	if (len > title_size - 1)
		len = title_size - 1;
	memcpy(title_area, title, len);
	memset(title_area + len, '\0', title_size - len);
}

void
proc_title_set_confined(const char *fmt, ...)
{
	char	 title[PROC_TITLE_MAX];
	va_list	 ap;

	va_start(ap, fmt);
	format_title(title, sizeof(title), fmt, ap);
	va_end(ap);
	write_title(title);
}

void
proc_title_set(const char *fmt, ...)
{
	char	 title[PROC_TITLE_MAX];
	va_list	 ap;

	va_start(ap, fmt);
	format_title(title, sizeof(title), fmt, ap);
	va_end(ap);
	write_title(title);
	/*
	 * The kernel keeps 15 octets of it (TASK_COMM_LEN); failing only
	 * costs ps -o comm its detail, so no error is worth reporting.
	 */
	(void)prctl(PR_SET_NAME, title, 0, 0, 0);
}
