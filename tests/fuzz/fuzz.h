/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz/ share: a memfd that
 * holds an input, reading a descriptor back, a small deterministic PRNG,
 * and quieting the program's log (fprintf to stderr) without hiding the
 * sanitizers' reports, which go to fd 2 directly.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <sys/mman.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../smtpauthd.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

/* A failed check: a report libFuzzer records as a crash, with the input. */
#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(fuzz_report, "%s:%d: check failed: %s\n",	\
		    __FILE__, __LINE__, #cond);				\
		fflush(fuzz_report);					\
		abort();						\
	}								\
} while (0)

static FILE *fuzz_report __attribute__((unused));

/*
 * The program logs through log_msg() to stdio's stderr (log_init(1)).
 * That stream is pointed at /dev/null unless FUZZ_LOG is set; fd 2, where
 * ASan, UBSan and libFuzzer write, stays as it is.
 */
static __attribute__((unused)) void
fuzz_quiet_log(void)
{
	FILE *null;

	fuzz_report = stderr;
	log_init(1);
	if (getenv("FUZZ_LOG") != NULL)
		return;
	if ((null = fopen("/dev/null", "w")) == NULL) {
		perror("/dev/null");
		abort();
	}
	stderr = null;
}

static __attribute__((unused)) int
fuzz_memfd(const char *name)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd == -1) {
		perror("memfd_create");
		abort();
	}
	return fd;
}

/* Make fd hold exactly buf, positioned at its start. */
static __attribute__((unused)) void
fuzz_memfd_set(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	if (ftruncate(fd, 0) == -1 || lseek(fd, 0, SEEK_SET) == -1) {
		perror("memfd reset");
		abort();
	}
	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			perror("memfd write");
			abort();
		}
		p += n;
		len -= (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) == -1) {
		perror("memfd lseek");
		abort();
	}
}

/* All of fd from offset 0, malloc'd (free it); *lenp its length. */
static __attribute__((unused)) char *
fuzz_read_all(int fd, size_t *lenp)
{
	char	*buf = NULL, *nbuf;
	size_t	 len = 0, cap = 0;
	ssize_t	 n;
	off_t	 off = 0;

	for (;;) {
		if (cap - len < 4096) {
			cap = cap * 2 + 8192;
			if ((nbuf = realloc(buf, cap)) == NULL)
				abort();
			buf = nbuf;
		}
		n = pread(fd, buf + len, cap - len - 1, off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			perror("pread");
			abort();
		}
		if (n == 0)
			break;
		len += (size_t)n;
		off += n;
	}
	buf[len] = '\0';
	*lenp = len;
	return buf;
}

/* xorshift64*: chunk sizes and the like, the same for the same input. */
static __attribute__((unused)) uint64_t
fuzz_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * UINT64_C(2685821657736338717);
}

static __attribute__((unused)) uint64_t
fuzz_seed(const uint8_t *data, size_t size)
{
	uint64_t h = UINT64_C(1469598103934665603);	/* FNV-1a */
	size_t	 i;

	for (i = 0; i < size; i++) {
		h ^= data[i];
		h *= UINT64_C(1099511628211);
	}
	return h != 0 ? h : 1;
}

#endif
