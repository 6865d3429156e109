/*
 * monitor-probe.c - speaks the privsep channel protocol to a real monitor.
 *
 *   monitor-probe CONF SCRIPT
 *
 * Runs privsep_run() as smtpauthd does, but the confined session process
 * follows SCRIPT instead of speaking SMTP: "send HEX" sends one packet,
 * "recv" waits up to 5 s for one and prints "reply HEX" or "eof" on
 * stdout.  The monitor's exit status is this program's: 70 when it refused
 * a request.  Tests build the packets; see tests/test_privsep.py.
 */
#include <sys/socket.h>

#include <err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtpauthd.h"

#define SCRIPT_MAX	(1 << 20)

static char	*script;

static int
unhex(const char *in, unsigned char *out, size_t outsize)
{
	size_t n = 0;

	while (in[0] != '\0' && in[1] != '\0' && n < outsize) {
		unsigned int v;

		if (sscanf(in, "%2x", &v) != 1)
			return -1;
		out[n++] = (unsigned char)v;
		in += 2;
	}
	return (int)n;
}

static void
probe(int channel)
{
	static unsigned char	 buf[65536];
	char			*line, *save = NULL;
	struct pollfd		 pfd;
	ssize_t			 n, i;
	int			 len;

	for (line = strtok_r(script, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "send ", 5) == 0) {
			if ((len = unhex(line + 5, buf, sizeof(buf))) < 0)
				_exit(2);
			if (send(channel, buf, (size_t)len, MSG_NOSIGNAL) != len)
				printf("send failed\n");
		} else if (strcmp(line, "recv") == 0) {
			pfd.fd = channel;
			pfd.events = POLLIN;
			n = poll(&pfd, 1, 5000) == 1 ?
			    recv(channel, buf, sizeof(buf), 0) : -1;
			if (n <= 0)
				printf("eof\n");
			else {
				printf("reply ");
				for (i = 0; i < n; i++)
					printf("%02x", buf[i]);
				printf("\n");
			}
		}
		fflush(stdout);
	}
}

int
main(int argc, char *argv[])
{
	struct config	 cf;
	struct io	 io;
	FILE		*fp;
	size_t		 n;
	int		 rc;

	if (argc != 3)
		errx(64, "usage: monitor-probe CONF SCRIPT");
	if ((fp = fopen(argv[2], "r")) == NULL)
		err(66, "%s", argv[2]);
	script = calloc(1, SCRIPT_MAX + 1);
	n = fread(script, 1, SCRIPT_MAX, fp);
	script[n] = '\0';
	fclose(fp);
	log_init(1);
	conf_defaults(&cf);
	conf_load_file(&cf, argv[1], 1);
	conf_finish(&cf);
	if (cf.nerrors > 0)
		errx(78, "%s: %s", argv[1], cf.errors[0]);
	io_init(&io, 0, 1, 5000);
	privsep_session_hook = probe;
	rc = privsep_run(&cf, &io, "192.0.2.9", NULL, NULL);
	conf_free(&cf);
	free(script);
	return rc;
}
