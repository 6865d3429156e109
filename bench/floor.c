/*
 * floor.c - the floor of one authenticated SMTP session (issue 15): the
 * least a program can do for what smtpauthd does per connection, to
 * print smtpauthd's cost as a ratio to it.  Run by
 * systemd-socket-activate --inetd (the socket on 0 and 1), one process:
 * the same dialogue (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP,
 * QUIT), one crypt_rn of the user's hash from a user:hash file, the
 * message into an O_TMPFILE spool, the same sendmail (-i -f SENDER --
 * RCPTS) spawned as a child with the spool on its input.  No TLS, no
 * privilege separation, no limits, no logs: that is the point.
 *   floor PASSWD-FILE SENDMAIL [SPOOL-DIR]   serve one connection
 *   floor -H                                 a sha512crypt hash of stdin
 *   floor -C HASH PASSWORD COUNT             COUNT crypt_rn, then exit
 * Bench code, not the program's: every read still has a deadline
 * (alarm), every buffer is bounded.
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINE_MAX_	1000
#define RCPT_MAX	100
#define DEADLINE	60	/* seconds of silence before giving up */

static char	 inbuf[4096];
static size_t	 inlen, inoff;

static void
say(const char *s)
{
	size_t	 len = strlen(s), off = 0;
	ssize_t	 n;

	while (off < len) {
		n = write(1, s + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(1);
		off += (size_t)n;
	}
}

/* One line without its CRLF into line; 0 at end of input. */
static int
get_line(char *line, size_t size)
{
	size_t	 n = 0;
	ssize_t	 r;
	char	 c;

	for (;;) {
		if (inoff == inlen) {
			alarm(DEADLINE);
			r = read(0, inbuf, sizeof(inbuf));
			if (r == -1 && errno == EINTR)
				continue;
			if (r <= 0)
				return 0;
			inlen = (size_t)r;
			inoff = 0;
		}
		c = inbuf[inoff++];
		if (c == '\n')
			break;
		if (n + 1 < size)
			line[n++] = c;
	}
	if (n > 0 && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	return 1;
}

static int
b64val(int c)
{
	const char	*tab =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char	*p;

	if (c == '\0' || (p = strchr(tab, c)) == NULL)
		return -1;
	return (int)(p - tab);
}

static size_t
b64decode(const char *in, char *out, size_t size)
{
	size_t	 n = 0;
	int	 bits = 0, v;
	unsigned acc = 0;

	for (; *in != '\0' && *in != '='; in++) {
		if ((v = b64val((unsigned char)*in)) < 0)
			return 0;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n + 1 >= size)
				return 0;
			out[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[n] = '\0';
	return n;
}

/* The hash of user in the user:hash file, or NULL. */
static char *
lookup(const char *file, const char *user, char *buf, size_t size)
{
	FILE	*fp;
	size_t	 ulen = strlen(user);
	char	*hash = NULL;

	if ((fp = fopen(file, "re")) == NULL)
		return NULL;
	while (fgets(buf, (int)size, fp) != NULL) {
		if (strncmp(buf, user, ulen) == 0 && buf[ulen] == ':') {
			hash = buf + ulen + 1;
			hash[strcspn(hash, "\r\n")] = '\0';
			break;
		}
	}
	fclose(fp);
	return hash;
}

static int
check(const char *file, const char *arg)
{
	char			 dec[1024], buf[1024], *user, *pass, *hash;
	const char		*out;
	static struct crypt_data cd;
	size_t			 n;
	int			 ok;

	if ((n = b64decode(arg, dec, sizeof(dec))) == 0)
		return 0;
	user = memchr(dec, '\0', n);
	if (user == NULL || (size_t)(user - dec) + 1 >= n)
		return 0;
	user++;
	pass = user + strlen(user) + 1;
	if (pass > dec + n)
		return 0;
	if ((hash = lookup(file, user, buf, sizeof(buf))) == NULL)
		return 0;
	out = crypt_rn(pass, hash, &cd, sizeof(cd));
	ok = out != NULL && strcmp(out, hash) == 0;
	explicit_bzero(dec, sizeof(dec));
	return ok;
}

static const char *
addr(const char *line)
{
	static char	 a[LINE_MAX_];
	const char	*lt = strchr(line, '<'), *gt;

	if (lt == NULL || (gt = strchr(lt, '>')) == NULL)
		return NULL;
	snprintf(a, sizeof(a), "%.*s", (int)(gt - lt - 1), lt + 1);
	return a;
}

/* The message from the client into an unnamed spool file, then sendmail. */
static int
data(const char *sendmail, const char *spool, const char *sender,
    char rcpts[][LINE_MAX_], int nrcpts)
{
	char	 line[LINE_MAX_ + 2];
	char	*argv[RCPT_MAX + 6];
	int	 fd, n = 0, i, st;
	pid_t	 pid;
	FILE	*fp;

	if ((fd = open(spool, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) == -1 ||
	    (fp = fdopen(fd, "w")) == NULL)
		_exit(1);
	say("354 go ahead\r\n");
	while (get_line(line, sizeof(line) - 2)) {
		if (strcmp(line, ".") == 0)
			break;
		fprintf(fp, "%s\n", line[0] == '.' ? line + 1 : line);
	}
	if (fflush(fp) == EOF || lseek(fd, 0, SEEK_SET) == -1)
		_exit(1);
	argv[n++] = (char *)sendmail;
	argv[n++] = "-i";
	argv[n++] = "-f";
	argv[n++] = (char *)(sender[0] != '\0' ? sender : "<>");
	argv[n++] = "--";
	for (i = 0; i < nrcpts; i++)
		argv[n++] = rcpts[i];
	argv[n] = NULL;
	if ((pid = fork()) == -1)
		_exit(1);
	if (pid == 0) {
		if (dup2(fd, 0) == -1 || dup2(2, 1) == -1)
			_exit(71);
		execv(sendmail, argv);
		_exit(71);
	}
	fclose(fp);
	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR)
			return 0;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int
serve(const char *file, const char *sendmail, const char *spool)
{
	static char	 rcpts[RCPT_MAX][LINE_MAX_];
	char		 line[LINE_MAX_ + 2], sender[LINE_MAX_] = "";
	const char	*a;
	int		 authed = 0, mail = 0, nrcpts = 0;

	say("220 floor.example ESMTP\r\n");
	while (get_line(line, sizeof(line))) {
		if (strncasecmp(line, "EHLO", 4) == 0)
			say("250-floor.example\r\n250-PIPELINING\r\n"
			    "250-8BITMIME\r\n250 AUTH PLAIN\r\n");
		else if (strncasecmp(line, "AUTH PLAIN ", 11) == 0) {
			authed = check(file, line + 11);
			say(authed ? "235 ok\r\n" : "535 no\r\n");
		} else if (strncasecmp(line, "MAIL FROM:", 10) == 0 && authed &&
		    (a = addr(line)) != NULL) {
			snprintf(sender, sizeof(sender), "%s", a);
			mail = 1;
			nrcpts = 0;
			say("250 ok\r\n");
		} else if (strncasecmp(line, "RCPT TO:", 8) == 0 && mail &&
		    nrcpts < RCPT_MAX && (a = addr(line)) != NULL) {
			snprintf(rcpts[nrcpts++], LINE_MAX_, "%s", a);
			say("250 ok\r\n");
		} else if (strcasecmp(line, "DATA") == 0 && nrcpts > 0) {
			say(data(sendmail, spool, sender, rcpts, nrcpts) ?
			    "250 queued\r\n" : "451 sendmail failed\r\n");
			mail = nrcpts = 0;
		} else if (strcasecmp(line, "RSET") == 0) {
			mail = nrcpts = 0;
			say("250 ok\r\n");
		} else if (strcasecmp(line, "NOOP") == 0)
			say("250 ok\r\n");
		else if (strcasecmp(line, "QUIT") == 0) {
			say("221 bye\r\n");
			return 0;
		} else
			say("503 no\r\n");
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	static struct crypt_data cd;
	char		 pass[256], setting[CRYPT_GENSALT_OUTPUT_SIZE];
	const char	*h;
	long		 i, count;

	if (argc == 2 && strcmp(argv[1], "-H") == 0) {
		if (fgets(pass, sizeof(pass), stdin) == NULL)
			return 1;
		pass[strcspn(pass, "\n")] = '\0';
		if (crypt_gensalt_rn("$6$", 0, NULL, 0, setting,
		    sizeof(setting)) == NULL ||
		    (h = crypt_rn(pass, setting, &cd, sizeof(cd))) == NULL)
			return 1;
		printf("%s\n", h);
		return 0;
	}
	if (argc == 5 && strcmp(argv[1], "-C") == 0) {
		count = strtol(argv[4], NULL, 10);
		for (i = 0; i < count; i++)
			if ((h = crypt_rn(argv[3], argv[2], &cd,
			    sizeof(cd))) == NULL || strcmp(h, argv[2]) != 0)
				return 1;
		return 0;
	}
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: floor passwd-file sendmail [spool-dir]"
		    " | -H | -C hash password count\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	return serve(argv[1], argv[2], argc == 4 ? argv[3] : "/var/tmp");
}
