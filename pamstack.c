/*
 * pamstack.c - whether a PAM service's stack can work, read the way libpam
 * reads it, so that a broken one is refused instead of trusted.
 *
 * libpam never refuses a service: a missing /etc/pam.d/SERVICE falls back
 * to "other" (on Debian, common-auth: every account gets in), a missing
 * @include leaves an empty stack ("Permission denied", which looks like a
 * wrong password), an unknown module fails every login as if the password
 * were wrong.  So the service file is looked up here (where libpam looks),
 * and -t and every password check follow its lines: each @include,
 * include and substack must name a file that exists, each module (but
 * those of a "-type" line, which libpam skips when missing) must exist
 * where libpam would load it from, and each line must parse.
 *
 * Under pam_wrapper (the tests: PAM_WRAPPER=1, LD_PRELOAD), libpam reads
 * the service files from PAM_WRAPPER_SERVICE_DIR instead: looked up there,
 * but only when pam_wrapper's pam_start is the one linked.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <security/pam_appl.h>

#include "smtpauthd.h"

/* Where libpam loads a module named without a path from (pkg-config). */
#ifndef PAM_MODULE_DIR
#define PAM_MODULE_DIR	"/lib/security"
#endif

#define PAM_LINE_MAX	4096	/* longer lines are a problem, not cut */
#define PAM_DEPTH_MAX	8	/* includes of includes */
#define PAM_DIRS_MAX	2

/* The stacks of a service, in libpam's order of the names. */
enum { T_AUTH, T_ACCOUNT, T_PASSWORD, T_SESSION, NTYPES, T_ALL = -1 };
static const char *const type_names[NTYPES] = {
	"auth", "account", "password", "session"
};

struct stack_walk {
	pam_problem_fn	 problem;
	void		*arg;
	int		 problems;
	int		 entries[NTYPES];	/* modules each stack got */
};

static void
walk_problem(struct stack_walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
walk_problem(struct stack_walk *w, const char *fmt, ...)
{
	char	 msg[PATH_MAX + 256];
	va_list	 ap;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above; the analyzer cannot model it when it inlines a variadic call */
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	w->problems++;
	if (w->problem != NULL)
		w->problem(w->arg, msg);
}

/*
 * Whether pam_start is pam_wrapper's (preloaded by the tests): only then
 * do its variables say where libpam reads, and an environment that sets
 * them for a real libpam changes nothing here either.
 */
static int
pam_wrapper_loaded(void)
{
	Dl_info		 info;
	const char	*base;

	if (dladdr((void *)pam_start, &info) == 0 || info.dli_fname == NULL)
		return 0;
	base = strrchr(info.dli_fname, '/');
	base = base != NULL ? base + 1 : info.dli_fname;
	return strncmp(base, "libpam_wrapper.so", 17) == 0;
}

static size_t
service_dirs(const char *dirs[PAM_DIRS_MAX])
{
	const char *wrapper = getenv("PAM_WRAPPER");
	const char *wdir = getenv("PAM_WRAPPER_SERVICE_DIR");

	if (wrapper != NULL && strcmp(wrapper, "1") == 0 && wdir != NULL &&
	    wdir[0] == '/' && pam_wrapper_loaded()) {
		dirs[0] = wdir;
		return 1;
	}
	dirs[0] = "/etc/pam.d";
	dirs[1] = "/usr/lib/pam.d";
	return 2;
}

/*
 * The file libpam reads for the service (or an included file named
 * without a path), in path; -1 when there is none.
 */
int
pam_service_file(const char *name, char *path, size_t size)
{
	const char	*dirs[PAM_DIRS_MAX];
	struct stat	 st;
	size_t		 i, n;
	int		 len;

	if (name[0] == '/') {
		len = snprintf(path, size, "%s", name);
		return len >= 0 && (size_t)len < size && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode) ? 0 : -1;
	}
	n = service_dirs(dirs);
	for (i = 0; i < n; i++) {
		len = snprintf(path, size, "%s/%s", dirs[i], name);
		if (len < 0 || (size_t)len >= size)
			return -1;
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			return 0;
	}
	return -1;
}

static int
module_exists(const char *module)
{
	char		 path[PATH_MAX];
	struct stat	 st;
	int		 len;

	if (module[0] == '/')
		len = snprintf(path, sizeof(path), "%s", module);
	else
		len = snprintf(path, sizeof(path), "%s/%s", PAM_MODULE_DIR,
		    module);
	return len >= 0 && (size_t)len < sizeof(path) &&
	    stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The next word of *s (a [...] control may hold blanks), or NULL. */
static char *
next_word(char **s)
{
	char	*p = *s, *w;

	while (*p != '\0' && isspace((unsigned char)*p))
		p++;
	if (*p == '\0') {
		*s = p;
		return NULL;
	}
	w = p;
	if (*p == '[') {
		while (*p != '\0' && *p != ']')
			p++;
		if (*p == ']')
			p++;
	}
	while (*p != '\0' && !isspace((unsigned char)*p))
		p++;
	if (*p != '\0')
		*p++ = '\0';
	*s = p;
	return w;
}

/* T_AUTH...T_SESSION for a type ("-auth" too), or -1. */
static int
type_index(const char *type)
{
	int i;

	if (type[0] == '-')
		type++;
	for (i = 0; i < NTYPES; i++)
		if (strcasecmp(type, type_names[i]) == 0)
			return i;
	return -1;
}

/*
 * A control libpam understands: one of the keywords, or [value=action
 * ...] with actions it knows.  libpam takes anything else as "bad" for
 * every result, refusing everyone as if the password were wrong.
 */
static int
control_valid(const char *control)
{
	static const char *const words[] = { "required", "requisite",
	    "sufficient", "optional", "include", "substack" };
	static const char *const actions[] = { "ignore", "bad", "die", "ok",
	    "done", "reset" };
	char	 copy[PAM_LINE_MAX], *s, *tok, *eq, *save = NULL;
	size_t	 i, len = strlen(control);
	int	 known, tokens = 0;

	if (control[0] != '[') {
		for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
			if (strcasecmp(control, words[i]) == 0)
				return 1;
		return 0;
	}
	if (len < 2 || control[len - 1] != ']' || len - 1 >= sizeof(copy))
		return 0;
	memcpy(copy, control + 1, len - 2);
	copy[len - 2] = '\0';
	for (s = copy; (tok = strtok_r(s, " \t", &save)) != NULL; s = NULL) {
		tokens++;
		if ((eq = strchr(tok, '=')) == NULL || eq == tok ||
		    strspn(tok, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != (size_t)(eq - tok))
			return 0;
		eq++;
		known = eq[0] != '\0' && strspn(eq, "0123456789") ==
		    strlen(eq);
		for (i = 0; !known && i < sizeof(actions) / sizeof(actions[0]);
		    i++)
			known = strcasecmp(eq, actions[i]) == 0;
		if (!known)
			return 0;
	}
	return tokens > 0;
}

static void walk_file(struct stack_walk *, const char *name,
    const char *from, int depth, int only);

/*
 * One line of a service file (comment and continuation already gone),
 * counted in the stack of its type when it is of the type only (an
 * "include" takes its own type's lines of the file it names; T_ALL:
 * every line, the service file itself and an @include).
 */
static void
walk_line(struct stack_walk *w, const char *file, int lineno, char *line,
    int depth, int only)
{
	char	*s = line, *type, *control, *module;
	int	 t, before;

	if ((type = next_word(&s)) == NULL)
		return;
	if (strcmp(type, "@include") == 0) {
		if ((module = next_word(&s)) == NULL)
			walk_problem(w, "%s:%d: @include names no file", file,
			    lineno);
		else
			walk_file(w, module, file, depth + 1, only);
		return;
	}
	if ((t = type_index(type)) == -1) {
		walk_problem(w, "%s:%d: unknown type \"%s\"", file, lineno,
		    type);
		return;
	}
	if ((control = next_word(&s)) != NULL && control[0] == '[' &&
	    strchr(control, ']') == NULL) {
		walk_problem(w, "%s:%d: unclosed [", file, lineno);
		return;
	}
	if (control == NULL || (module = next_word(&s)) == NULL) {
		walk_problem(w, "%s:%d: a line needs a control and a module",
		    file, lineno);
		return;
	}
	if (!control_valid(control)) {
		walk_problem(w, "%s:%d: unknown control \"%s\" (libpam "
		    "would refuse everyone on this line)", file, lineno,
		    control);
		return;
	}
	/* Of another type than the include that brought it: not counted. */
	if (only != T_ALL && t != only)
		return;
	if (strcasecmp(control, "include") == 0 ||
	    strcasecmp(control, "substack") == 0) {
		/* Both take the named file's lines of this type only. */
		before = w->entries[t];
		walk_file(w, module, file, depth + 1, t);
		if (strcasecmp(control, "substack") == 0 &&
		    w->entries[t] > before)
			w->entries[t] = before + 1;
		return;
	}
	if (module_exists(module))
		w->entries[t]++;
	else if (type[0] != '-')
		walk_problem(w, "%s:%d: module %s not found%s%s", file, lineno,
		    module, module[0] == '/' ? "" : " in ",
		    module[0] == '/' ? "" : PAM_MODULE_DIR);
}

static void
walk_file(struct stack_walk *w, const char *name, const char *from, int depth,
    int only)
{
	char	 path[PATH_MAX], line[PAM_LINE_MAX], *hash;
	FILE	*fp;
	size_t	 len, used = 0;
	int	 lineno = 0, first = 0;

	if (depth > PAM_DEPTH_MAX) {
		walk_problem(w, "%s: includes nested more than %d deep (a loop?)",
		    from, PAM_DEPTH_MAX);
		return;
	}
	if (pam_service_file(name, path, sizeof(path)) == -1) {
		if (from == NULL)
			walk_problem(w, "no PAM service file %s in /etc/pam.d "
			    "or /usr/lib/pam.d (PAM would fall back to the "
			    "\"other\" service)", name);
		else
			walk_problem(w, "%s: includes %s, which does not exist",
			    from, name);
		return;
	}
	if ((fp = fopen(path, "re")) == NULL) {
		walk_problem(w, "%s: %s", path, strerror(errno));
		return;
	}
	/* Lines ending in a backslash continue on the next one. */
	while (fgets(line + used, (int)(sizeof(line) - used), fp) != NULL) {
		lineno++;
		if (used == 0)
			first = lineno;
		len = strlen(line);
		if (len > 0 && line[len - 1] != '\n' && !feof(fp)) {
			walk_problem(w, "%s:%d: line too long", path, lineno);
			break;
		}
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\\') {
			line[len - 1] = ' ';
			used = len;
			if (used < sizeof(line) - 1)
				continue;
			walk_problem(w, "%s:%d: line too long", path, lineno);
			break;
		}
		used = 0;
		if ((hash = strchr(line, '#')) != NULL)
			*hash = '\0';
		walk_line(w, path, first, line, depth, only);
	}
	if (ferror(fp))
		walk_problem(w, "%s: read error", path);
	(void)fclose(fp);
}

/*
 * Walks the service's stack; each problem goes to problem(arg, text).
 * Returns the number of problems (0: the stack can work).
 */
int
pam_stack_check(const char *service, pam_problem_fn problem, void *arg)
{
	struct stack_walk	 w;
	static const int	 used[] = { T_AUTH, T_ACCOUNT };
	size_t			 i;

	memset(&w, 0, sizeof(w));
	w.problem = problem;
	w.arg = arg;
	walk_file(&w, service, NULL, 0, T_ALL);
	/*
	 * A stack with no module of its own is no refusal: libpam runs the
	 * "other" service's instead (common-auth on Debian: every account).
	 */
	for (i = 0; i < sizeof(used) / sizeof(used[0]); i++)
		if (w.problems == 0 && w.entries[used[i]] == 0)
			walk_problem(&w, "%s: no %s module in its stack (libpam "
			    "would use the \"other\" service's)", service,
			    type_names[used[i]]);
	return w.problems;
}
