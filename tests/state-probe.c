/*
 * state-probe - drives the state store (state.c) directly, for the tests
 * of what no single connection can show: many writers at once.
 *
 *   state-probe SPEC mark KEY PREFIX N   add N members PREFIX-0.. to KEY
 *   state-probe SPEC count KEY           print how many KEY has
 *   state-probe SPEC cycle KEY N         N times: open, mark, close, as
 *                                        a monitor does (for bench/)
 *
 * Exits 0, or 1 with the store's error on standard error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smtpauthd.h"
#include "state.h"

static int
fail(struct state *st, const char *err)
{
	fprintf(stderr, "state-probe: %s\n", st != NULL ? state_error(st) :
	    err);
	return 1;
}

int
main(int argc, char *argv[])
{
	struct config	 cf;
	struct state	*st;
	char		 err[512], member[128];
	uint64_t	 n = 0;
	long		 i, count;
	int		 added;

	if (argc < 4 || (strcmp(argv[2], "mark") == 0 && argc != 6)) {
		fprintf(stderr, "usage: state-probe SPEC mark KEY PREFIX N | "
		    "count KEY\n");
		return 2;
	}
	memset(&cf, 0, sizeof(cf));
	cf.state = argv[1];
	if (strcmp(argv[2], "cycle") == 0 && argc == 5) {
		count = strtol(argv[4], NULL, 10);
		for (i = 0; i < count; i++) {
			snprintf(member, sizeof(member), "m-%ld", i);
			if (state_open(&cf, &st, err, sizeof(err)) != STATE_OK ||
			    st == NULL)
				return fail(NULL, err);
			if (state_mark(st, argv[3], member, (int64_t)time(NULL),
			    3600, 100, &n, &added) != STATE_OK)
				return fail(st, NULL);
			state_close(st);
		}
		printf("%llu\n", (unsigned long long)n);
		return 0;
	}
	if (state_open(&cf, &st, err, sizeof(err)) != STATE_OK || st == NULL)
		return fail(NULL, err);
	if (strcmp(argv[2], "mark") == 0) {
		count = strtol(argv[5], NULL, 10);
		for (i = 0; i < count; i++) {
			snprintf(member, sizeof(member), "%s-%ld", argv[4], i);
			if (state_mark(st, argv[3], member, (int64_t)time(NULL),
			    3600, 1000000, &n, &added) != STATE_OK)
				return fail(st, NULL);
		}
	} else if (state_count(st, argv[3], (int64_t)time(NULL), 0, &n,
	    NULL) != STATE_OK)
		return fail(st, NULL);
	printf("%llu\n", (unsigned long long)n);
	state_close(st);
	return 0;
}
