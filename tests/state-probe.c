/*
 * state-probe - drives the state store (state.c) directly, for the tests
 * of what no single connection can show: many writers at once.
 *
 *   state-probe SPEC mark KEY PREFIX N   add N members PREFIX-0.. to KEY
 *   state-probe SPEC count KEY           print how many KEY has
 *   state-probe SPEC cycle KEY N         N times: open, mark, close, as
 *                                        a monitor does (for bench/)
 *   state-probe [-p PREFIX] [-P PASSWORD-FILE] [-t MS] SPEC run
 *                                        the operations on standard input,
 *                                        one a line, an answer a line:
 *     mark KEY MEMBER DT TTL KEEP   -> COUNT ADDED
 *     add KEY MEMBER DT TTL WEIGHT  -> ok
 *     unmark KEY MEMBER             -> ok
 *     count KEY DT LIMIT            -> COUNT UNTIL
 *     latest KEY DT                 -> MEMBER MARKED | none
 *     has KEY MEMBER DT             -> 0 | 1
 *     forget KEY                    -> REMOVED
 *     keys DT                       -> the keys, blank-separated
 *     begin SCOPE | end COMMIT      -> ok
 *   DT: seconds after the time run started (the times printed are too;
 *   "forever" for STATE_FOREVER), so that the same input gives the same
 *   answers from every store.  A failure prints "retry" (and the error
 *   on standard error) or "config", and the run goes on.
 *
 * Exits 0, or 1 with the store's error on standard error.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "state.h"

static int
fail(struct state *st, const char *err)
{
	fprintf(stderr, "state-probe: %s\n", st != NULL ? state_error(st) :
	    err);
	return 1;
}

static struct state	*run_st;
static int64_t		 run_t0;

static void
print_time(int64_t t)
{
	if (t == STATE_FOREVER)
		printf("forever");
	else if (t == 0)
		printf("0");
	else
		printf("%lld", (long long)(t - run_t0));
}

static int64_t
arg_time(const char *s)
{
	return run_t0 + strtoll(s, NULL, 10);
}

static uint64_t
arg_uint(const char *s)
{
	return strtoull(s, NULL, 10);
}

static int
keys_print(void *arg, const char *key)
{
	int *n = arg;

	printf("%s%s", (*n)++ > 0 ? " " : "", key);
	return 0;
}

/* One line of run's input: its answer, or the failure. */
static void
run_line(char *line)
{
	char		*w[8], *save = NULL, member[STATE_KEY_MAX + 1];
	uint64_t	 n = 0;
	int64_t		 t = 0;
	int		 nw = 0, rc = STATE_CONFIG, yes = 0, found = 0;

	for (w[nw] = strtok_r(line, " \t\n", &save); w[nw] != NULL && nw < 7;
	    w[++nw] = strtok_r(NULL, " \t\n", &save))
		;
	if (nw == 0)
		return;
#define IS(name, args) (strcmp(w[0], name) == 0 && nw == (args) + 1)
	if (IS("mark", 5)) {
		if ((rc = state_mark(run_st, w[1], w[2], arg_time(w[3]),
		    arg_uint(w[4]), arg_uint(w[5]), &n, &yes)) == STATE_OK)
			printf("%llu %d\n", (unsigned long long)n, yes);
	} else if (IS("add", 5)) {
		if ((rc = state_add(run_st, w[1], w[2], arg_time(w[3]),
		    arg_uint(w[4]), arg_uint(w[5]))) == STATE_OK)
			printf("ok\n");
	} else if (IS("unmark", 2)) {
		if ((rc = state_unmark(run_st, w[1], w[2])) == STATE_OK)
			printf("ok\n");
	} else if (IS("count", 3)) {
		if ((rc = state_count(run_st, w[1], arg_time(w[2]),
		    arg_uint(w[3]), &n, &t)) == STATE_OK) {
			printf("%llu ", (unsigned long long)n);
			print_time(t);
			printf("\n");
		}
	} else if (IS("latest", 2)) {
		if ((rc = state_latest(run_st, w[1], arg_time(w[2]), member,
		    sizeof(member), &t, &found)) == STATE_OK) {
			if (found) {
				printf("%s ", member);
				print_time(t);
				printf("\n");
			} else
				printf("none\n");
		}
	} else if (IS("has", 3)) {
		if ((rc = state_has(run_st, w[1], w[2], arg_time(w[3]),
		    &yes)) == STATE_OK)
			printf("%d\n", yes);
	} else if (IS("forget", 1)) {
		if ((rc = state_forget(run_st, w[1], &n)) == STATE_OK)
			printf("%llu\n", (unsigned long long)n);
	} else if (IS("keys", 1)) {
		yes = 0;
		if ((rc = state_keys(run_st, arg_time(w[1]), keys_print,
		    &yes)) == STATE_OK)
			printf("\n");
	} else if (IS("begin", 1)) {
		if ((rc = state_begin(run_st, w[1])) == STATE_OK)
			printf("ok\n");
	} else if (IS("end", 1)) {
		if ((rc = state_end(run_st, (int)strtol(w[1], NULL, 10))) == STATE_OK)
			printf("ok\n");
	}
#undef IS
	if (rc == STATE_RETRY)
	{
		printf("retry\n");
		fprintf(stderr, "state-probe: %s\n", state_error(run_st));
	}
	else if (rc != STATE_OK)
		printf("config\n");
	(void)fflush(stdout);
}

int
main(int argc, char *argv[])
{
	struct config	 cf;
	struct state	*st;
	char		 err[512], member[128];
	uint64_t	 n = 0;
	long		 i, count;
	int		 added, c;

	memset(&cf, 0, sizeof(cf));
	(void)signal(SIGPIPE, SIG_IGN);
	while ((c = getopt(argc, argv, "p:P:t:")) != -1) {
		switch (c) {
		case 'p':
			cf.state_prefix = optarg;
			break;
		case 'P':
			cf.state_password_file = optarg;
			break;
		case 't':
			cf.state_timeout = strtoull(optarg, NULL, 10);
			break;
		default:
			return 2;
		}
	}
	argc -= optind - 1;
	argv += optind - 1;
	if (argc == 3 && strcmp(argv[2], "run") == 0) {
		char line[2048];

		cf.state = argv[1];
		if (state_open(&cf, &run_st, err, sizeof(err)) != STATE_OK ||
		    run_st == NULL)
			return fail(NULL, err);
		run_t0 = (int64_t)time(NULL);
		while (fgets(line, sizeof(line), stdin) != NULL)
			run_line(line);
		state_close(run_st);
		return 0;
	}
	if (argc < 4 || (strcmp(argv[2], "mark") == 0 && argc != 6)) {
		fprintf(stderr, "usage: state-probe SPEC mark KEY PREFIX N | "
		    "count KEY\n");
		return 2;
	}
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
