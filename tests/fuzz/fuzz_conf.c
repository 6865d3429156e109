/*
 * fuzz_conf.c - libFuzzer target for the configuration (conf.c): the file
 * parser conf_load_file() reading a memfd through /proc/self/fd/N, every
 * line of the input once more as a -o key=value (conf_set_option()), then
 * conf_finish() with hostname set, so that no DNS look-up happens, and
 * conf_print() (-T).
 *
 * Checked beyond "no crash, no leak": each -o line adds exactly one error
 * or none; what -T prints is itself a configuration that loads without
 * error (less the unset keys, printed as the key alone) and prints the
 * same again (for one input in four, by its hash: it doubles the cost);
 * and conf_free() leaves nothing.
 */
#include <fcntl.h>

#include "fuzz.h"

static int conf_fd;
static char conf_path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_log();
	conf_fd = fuzz_memfd("fuzz-conf");
	snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
	return 0;
}

/* conf_print() into a malloc'd string. */
static char *
print_conf(const struct config *cf, size_t *lenp)
{
	FILE	*fp;
	char	*buf = NULL;

	if ((fp = open_memstream(&buf, lenp)) == NULL)
		abort();
	conf_print(cf, fp);
	if (fclose(fp) != 0)
		abort();
	return buf;
}

/* Load text as a configuration file, the way main() does. */
static void
load(struct config *cf, const char *text, size_t len)
{
	conf_defaults(cf);
	FUZZ_CHECK(cf->nerrors == 0);
	/* Set first: a file may change it, but never leaves it unset. */
	FUZZ_CHECK(conf_set(cf, "hostname", "fuzz.example", "fuzz") == 0);
	fuzz_memfd_set(conf_fd, text, len);
	FUZZ_CHECK(conf_load_file(cf, conf_path, 1) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	 cf, again;
	char		*text, *line, *next, *printed, *printed2, *reload, *p;
	size_t		 plen, plen2, rlen, errors_before, finish_errors;

	if ((text = malloc(size + 1)) == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';

	load(&cf, text, size);
	/* Each line (to its first NUL) as -o key=value, too. */
	for (line = text; line != NULL && *line != '\0'; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		errors_before = cf.nerrors;
		if (conf_set_option(&cf, line) == 0)
			FUZZ_CHECK(cf.nerrors == errors_before);
		else
			FUZZ_CHECK(cf.nerrors == errors_before + 1);
	}
	errors_before = cf.nerrors;
	conf_finish(&cf);
	finish_errors = cf.nerrors - errors_before;
	FUZZ_CHECK(cf.hostname != NULL && !cf.hostname_looked_up);
	FUZZ_CHECK(cf.tls != TLS_UNSET);
	printed = print_conf(&cf, &plen);
	FUZZ_CHECK(strlen(printed) == plen);

	/*
	 * -T's output, less the unset keys, is a configuration of its own.
	 * (For one input in four, chosen by its hash: it doubles the cost.)
	 */
	if (fuzz_seed(data, size) % 4 != 0) {
		free(printed);
		conf_free(&cf);
		free(text);
		return 0;
	}
	if ((reload = malloc(plen + 1)) == NULL)
		abort();
	rlen = 0;
	for (line = printed; *line != '\0'; line = next) {
		next = strchr(line, '\n');
		FUZZ_CHECK(next != NULL);
		next++;
		p = memchr(line, ' ', (size_t)(next - line));
		if (p != NULL) {
			memcpy(reload + rlen, line, (size_t)(next - line));
			rlen += (size_t)(next - line);
		}
	}
	reload[rlen] = '\0';
	load(&again, reload, rlen);
	conf_finish(&again);
	/* The same complaint about TLS without a certificate, if any. */
	FUZZ_CHECK(again.nerrors == finish_errors);
	printed2 = print_conf(&again, &plen2);
	FUZZ_CHECK(plen2 == plen && memcmp(printed, printed2, plen) == 0);

	free(printed2);
	free(reload);
	free(printed);
	conf_free(&again);
	conf_free(&cf);
	free(text);
	return 0;
}
