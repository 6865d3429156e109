/*
 * policy.h - the monitor's policy decisions (policy.c) and the map files
 * they read (map.c).  The monitor calls these; the session never does, so
 * that a compromised session cannot skip a check.
 */
#ifndef POLICY_H
#define POLICY_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>

struct config;

/* ---- map files in Postfix's source form (map.c) ---- */

#define MAP_FILE_MAX	8388608	/* octets of a whole file: 8 MiB */
#define MAP_LINE_MAX	4096	/* one line, its newline excluded */
#define MAP_ENTRY_MAX	16384	/* one entry, continuation lines joined */
#define MAP_WHY_MAX	(PATH_MAX + 512)

struct map_file {
	const char	*what;		/* the key naming it: "sender-map" */
	const char	*path;
	FILE		*report;	/* -t: every problem printed there */
	int		 problems;	/* errors found (warnings not counted) */
	char		 why[MAP_WHY_MAX];	/* the first error */
};

/* One entry: key and value in place (the callee may change them). */
typedef int (*map_entry_fn)(struct map_file *, size_t lineno, char *key,
	    char *value, void *arg);

int	 map_read(struct map_file *, map_entry_fn, void *arg);
char	*map_value_next(char **cursor);
void	 map_error(struct map_file *, size_t lineno, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
void	 map_warning(struct map_file *, size_t lineno, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/* ---- decisions (policy.c) ---- */

enum policy_result { POLICY_OK, POLICY_REFUSE, POLICY_TEMPFAIL };

#define POLICY_WHY_MAX	MAP_WHY_MAX

int	 policy_sender(const struct config *, const char *login,
	    const char *sender, char *why, size_t whysize);
int	 policy_sender_domain(const struct config *, const char *domain);
int	 policy_sender_list(const struct config *, const char *login,
	    const char *const *addrs, size_t n, size_t *failed, char *why,
	    size_t whysize);
int	 policy_sender_reply(const char *sender, const char *login,
	    char *text, size_t size);
int	 policy_header_reply(const char *login, char *text, size_t size);
int	 policy_tempfail_reply(const char *sender, char *text, size_t size);
int	 policy_check(const struct config *, FILE *report);

#endif
