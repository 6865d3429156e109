/*
 * smtpauthd.c - the program: the command line, loading the configuration,
 * finding out who the peer is, logging, and then one SMTP session on the
 * connection that inetd or systemd handed over on fds 0 and 1.
 */
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "smtpauthd.h"
#include "proxy.h"

#define DEFAULT_CONF	"/etc/smtpauthd.conf"
#define MAX_OPTIONS	128

static int log_to_stderr;
static char log_ident[32];

static void	log_say_if_unavailable(void);

void
log_init(int to_stderr)
{
	/*
	 * "smtpauthd[PID]" with the pid of the process started for the
	 * connection: the session process logs under it too, so that one
	 * pid finds every line of a connection.  The socket to syslog is
	 * opened now, before the session is chrooted.
	 */
	snprintf(log_ident, sizeof(log_ident), "smtpauthd[%ld]",
	    (long)getpid());
	log_to_stderr = to_stderr;
	if (!to_stderr) {
		openlog(log_ident, LOG_NDELAY, LOG_MAIL);
		log_say_if_unavailable();
	}
}

/*
 * syslog(3) reports nothing: with no one listening on /dev/log (a
 * container, a minimal VM) every line is dropped without a word.  So
 * the connection it makes is tried here once, before any chroot or
 * seccomp filter, the way glibc makes it (a datagram socket, else a
 * stream one).  Returns 0, or the errno that says why not.
 */
int
log_syslog_reachable(void)
{
	static const int	 types[] = { SOCK_DGRAM, SOCK_STREAM };
	struct sockaddr_un	 sun;
	size_t			 i;
	int			 fd, e = 0;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", _PATH_LOG);
	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if ((fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0)) == -1)
			return errno;
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(fd);
			return 0;
		}
		e = errno;
		close(fd);
		if (e != EPROTOTYPE)
			break;
	}
	return e;
}

/*
 * One line on standard error, once per process (the session inherits
 * the answer), where systemd's journal or a terminal keeps it.  Under
 * inetd fd 2 was the client's socket: stderr_off_the_socket() made it
 * /dev/null before this runs, so the client never sees the line.
 */
static void
log_say_if_unavailable(void)
{
	int e;

	if ((e = log_syslog_reachable()) != 0)
		fprintf(stderr, "%s: logging unavailable: %s: %s (is a syslog "
		    "daemon running?); nothing will be logged\n", log_ident,
		    _PATH_LOG, strerror(e));
}

void
log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (log_to_stderr) {
		char line[2048];

		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "%s: %s\n", log_ident, line);
	} else
		vsyslog(prio, fmt, ap);
	va_end(ap);
}

void
fatal(const char *what)
{
	log_msg(LOG_CRIT, "fatal: %s: %s", what, strerror(errno));
	exit(EX_SOFTWARE_);
}

static const char *
escape(const char *s, char *buf, size_t bufsize, int keep_space)
{
	static const char hex[] = "0123456789abcdef";
	size_t		  o = 0;
	unsigned char	  c;

	for (; (c = (unsigned char)*s) != '\0'; s++) {
		if (o + 8 >= bufsize) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if ((c > ' ' || (c == ' ' && keep_space)) && c < 0x7f &&
		    c != '"' && c != '\\' && c != '=') {
			buf[o++] = (char)c;
			continue;
		}
		buf[o++] = '\\';
		buf[o++] = 'x';
		buf[o++] = hex[c >> 4];
		buf[o++] = hex[c & 15];
	}
	buf[o] = '\0';
	return buf;
}

/*
 * Client-supplied text as one log token: octets outside printable ASCII,
 * and space, '"', '\' and '=', become \xNN, so a line always splits into
 * its key=value fields the same way.  Long text is cut and marked.
 */
const char *
log_escape(const char *s, char *buf, size_t bufsize)
{
	return escape(s, buf, bufsize, 0);
}

/* The same for free text at the end of a line, where spaces may stay. */
const char *
log_escape_text(const char *s, char *buf, size_t bufsize)
{
	return escape(s, buf, bufsize, 1);
}

void *
xcalloc(size_t n, size_t size)
{
	void *p;

	if ((p = calloc(n, size)) == NULL)
		fatal("calloc");
	return p;
}

char *
xstrdup(const char *s)
{
	char *p;

	if ((p = strdup(s)) == NULL)
		fatal("strdup");
	return p;
}

int64_t
now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		fatal("clock_gettime");
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t connection_start_ms;

/*
 * When login-grace-time runs out (INT64_MAX: never): counted from the
 * connection, so that implicit TLS's handshake counts too.
 */
int64_t
login_grace_deadline(const struct config *cf)
{
	if (connection_start_ms == 0)
		connection_start_ms = now_ms();
	if (cf->login_grace_time == 0)
		return INT64_MAX;
	return connection_start_ms + (int64_t)cf->login_grace_time * 1000;
}

void
sleep_until(int64_t deadline_ms)
{
	struct timespec	 ts;
	int64_t		 left;

	while ((left = deadline_ms - now_ms()) > 0) {
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		(void)nanosleep(&ts, NULL);
	}
}

void
make_queue_id(char id[QUEUE_ID_LEN + 1])
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char	  rnd[QUEUE_ID_LEN / 2];
	size_t		  i;

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		fatal("getrandom");
	for (i = 0; i < sizeof(rnd); i++) {
		id[2 * i] = hex[rnd[i] >> 4];
		id[2 * i + 1] = hex[rnd[i] & 15];
	}
	id[QUEUE_ID_LEN] = '\0';
}

/* An IP address from the environment, if it is one. */
static int
env_ip(const char *name, char *out, size_t outsize)
{
	const char	*v = getenv(name);
	unsigned char	 bin[16];

	if (v == NULL || strlen(v) >= outsize)
		return -1;
	if (inet_pton(AF_INET, v, bin) != 1 && inet_pton(AF_INET6, v, bin) != 1)
		return -1;
	snprintf(out, outsize, "%s", v);
	return 0;
}

static void
peer_address(char *out, size_t outsize)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));	/* no family if none is given back */
	if (getpeername(0, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET &&
		    inet_ntop(AF_INET, &sin->sin_addr, out, outsize) != NULL)
			return;
		if (ss.ss_family == AF_INET6 &&
		    IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
		    inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], out,
		    outsize) != NULL)
			return;
		if (ss.ss_family == AF_INET6 &&
		    inet_ntop(AF_INET6, &sin6->sin6_addr, out, outsize) != NULL)
			return;
	}
	if (env_ip("REMOTE_ADDR", out, outsize) == 0 ||
	    env_ip("TCPREMOTEIP", out, outsize) == 0)
		return;
	snprintf(out, outsize, "unknown");
}

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: smtpauthd [-dtTV] [-f file] [-o key=value]...\n"
	    "       smtpauthd -H\n"
	    "       smtpauthd [-f file] [-o key=value]... -S list | "
	    "unblock ADDRESS|PREFIX|USER |\n"
	    "           suspend LOGIN [REASON] | unsuspend LOGIN\n");
	exit(64);
}

/* fds 0-2 must exist, or a later open() would become "stdout". */
static void
sanitise_fds(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) != -1 && fd <= 2)
		;
	if (fd > 2)
		close(fd);
}

/* The context for STARTTLS or implicit TLS; NULL with the reason logged. */
static struct ssl_ctx_st *
load_tls(const struct config *cf)
{
	struct ssl_ctx_st	*ctx;
	char			 why[1024];
	int			 days;

	if (cf->tls == TLS_NONE)
		return NULL;
	if ((ctx = tls_context(cf, why, sizeof(why))) == NULL)
		log_msg(LOG_ERR, "tls unavailable: %s", why);
	else if ((days = tls_cert_days_left(ctx)) < 0 &&
	    days != TLS_EXPIRY_UNKNOWN)
		/* Served all the same: refusing TLS would help no one. */
		log_msg(LOG_WARNING, "tls-cert %s has expired; clients that "
		    "check it will refuse it", cf->tls_cert);
	return ctx;
}

/*
 * Turn the client away before any session: 421 and the reason in the log.
 * An implicit-TLS client would take plaintext for a broken handshake, so
 * it gets nothing.
 */
void
refuse_connection(const struct config *cf, const char *peer,
    const char *why, const char *reason)
{
	if (cf->tls != TLS_IMPLICIT)
		dprintf(1, "421 4.3.0 %s Service unavailable: %s\r\n",
		    cf->hostname, why);
	log_msg(LOG_INFO, "disconnect ip=%s user=- reason=%s commands=0 "
	    "messages=0", peer, reason);
}

/*
 * inetd and xinetd put the connection on fd 2 too: anything written to
 * stderr (a library's complaint) would reach the client, and the monitor
 * would hold the connection after letting go of fds 0 and 1.
 */
static void
stderr_off_the_socket(void)
{
	struct stat	 in, errst;
	int		 fd;

	if (fstat(0, &in) == -1 || fstat(2, &errst) == -1 ||
	    !S_ISSOCK(errst.st_mode) || in.st_dev != errst.st_dev ||
	    in.st_ino != errst.st_ino)
		return;
	if ((fd = open("/dev/null", O_WRONLY)) != -1) {
		(void)dup2(fd, 2);
		if (fd != 2)
			close(fd);
	}
}

/*
 * A peer listed in proxy-protocol-from must start with a PROXY header:
 * the client it names becomes `peer` (the balancer's address goes to
 * `balancer`).  0 to go on; -1 when the connection is to close without a
 * greeting, logged: a balancer's health check (v2 LOCAL, or a connection
 * closed at once) at debug level only, anything else as a disconnect.
 */
static int
proxied_peer(const struct config *cf, char *peer, size_t peersize,
    char *balancer, size_t balsize)
{
	struct net_addr		 a;
	struct proxy_info	 pi;
	const char		*reason, *why;
	char			 client[PEER_MAX], esc[64];

	balancer[0] = '\0';
	if (cf->proxy_protocol_from == NULL ||
	    net_addr_parse(peer, &a) == -1 ||
	    net_prefix_list_match(cf->proxy_protocol_from, &a) != 1)
		return 0;
	if (proxy_read(0, cf->timeout, &pi, &reason, &why) == PROXY_OK) {
		if (pi.local) {
			reason = "proxy-local";
			why = "-";
		} else if (proxy_client_address(&pi, client,
		    sizeof(client)) == 0) {
			snprintf(balancer, balsize, "%s", peer);
			snprintf(peer, peersize, "%s", client);
			return 0;
		} else {
			reason = "proxy-no-address";
			why = pi.family == AF_UNSPEC ? "unknown" : "family";
		}
	}
	log_msg(strcmp(reason, "proxy-local") == 0 ||
	    strcmp(reason, "proxy-eof") == 0 ? LOG_DEBUG : LOG_NOTICE,
	    "disconnect ip=%s user=- reason=%s commands=0 messages=0 "
	    "detail=%s", peer, reason, log_escape(why, esc, sizeof(esc)));
	return -1;
}

static int
serve(struct config *cf)
{
	struct io		*io;
	struct ssl_ctx_st	*ctx;
	char			 peer[PEER_MAX], balancer[PEER_MAX];
	size_t			 i;
	int			 rc;

	(void)login_grace_deadline(cf);		/* the clock starts */
	peer_address(peer, sizeof(peer));
	if (cf->nerrors > 0) {
		log_msg(LOG_INFO, "connect ip=%s", peer);
		for (i = 0; i < cf->nerrors; i++)
			log_msg(LOG_ERR, "config error: %s", cf->errors[i]);
		refuse_connection(cf, peer, "configuration error",
		    "config-error");
		return EX_CONFIG_;
	}
	/*
	 * Before the session exists and before anything is greeted: the
	 * header is the balancer's, not the client's, to send.
	 */
	if (proxied_peer(cf, peer, sizeof(peer), balancer,
	    sizeof(balancer)) == -1)
		return 0;
	/* ip= stays first: fail2ban filters and log readers key on it. */
	if (balancer[0] != '\0')
		log_msg(LOG_INFO, "connect ip=%s proxy=%s", peer, balancer);
	else
		log_msg(LOG_INFO, "connect ip=%s", peer);
	ctx = load_tls(cf);
	if (cf->tls == TLS_IMPLICIT && ctx == NULL) {
		refuse_connection(cf, peer, "", "tls-unavailable");
		return EX_CONFIG_;
	}
	io = xcalloc(1, sizeof(*io));
	io_init(io, 0, 1, cf->timeout * 1000);
	rc = privsep_run(cf, io, peer, cf->tls == TLS_STARTTLS ? ctx : NULL,
	    cf->tls == TLS_IMPLICIT ? ctx : NULL);
	tls_context_free(ctx);
	free(io);
	return rc;
}

int
main(int argc, char *argv[])
{
	struct config	 cf;
	const char	*conf_path = DEFAULT_CONF, *options[MAX_OPTIONS];
	char		*admin[3] = { NULL, NULL, NULL };
	int		 nadmin = 1;
	size_t		 noptions = 0, i;
	int		 ch, debug = 0, test = 0, dump = 0, hash = 0, named = 0;
	int		 rc;
	struct rlimit	 nocore = { 0, 0 };
	sigset_t	 none;

	/* Before anything keeps a pointer into argv or the environment. */
	proc_title_init(argc, argv);
	sanitise_fds();
	stderr_off_the_socket();
	umask(077);
	/* A core file would hold passwords. */
	if (setrlimit(RLIMIT_CORE, &nocore) == -1)
		err(71, "setrlimit");
	/*
	 * Whatever the launcher left: SIGCHLD ignored would make the kernel
	 * reap sendmail before its exit status could be read.
	 */
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) == -1 ||
	    signal(SIGCHLD, SIG_DFL) == SIG_ERR ||
	    signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		err(71, "signals");
	while ((ch = getopt(argc, argv, "df:Ho:S:tTV")) != -1) {
		switch (ch) {
		case 'd':
			debug = 1;
			break;
		case 'f':
			conf_path = optarg;
			named = 1;
			break;
		case 'H':
			hash = 1;
			break;
		case 'o':
			if (noptions == MAX_OPTIONS)
				errx(64, "too many -o options");
			options[noptions++] = optarg;
			break;
		case 'S':
			admin[0] = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'T':
			dump = 1;
			break;
		case 'V':
			printf("smtpauthd %s\n", SMTPAUTHD_VERSION);
			return 0;
		default:
			usage();
		}
	}
	/*
	 * -S unblock takes what to unblock after the options; suspend, the
	 * login and the reason (one argument: quote it).
	 */
	for (nadmin = 1; admin[0] != NULL && optind < argc && nadmin < 3;
	    nadmin++)
		admin[nadmin] = argv[optind++];
	if (optind != argc || (admin[0] != NULL && (test || dump || hash)))
		usage();
	if (hash)
		return auth_hash_password(stdin, stdout);

	log_init(debug || test || dump);
	conf_defaults(&cf);
	conf_load_file(&cf, conf_path, named);
	for (i = 0; i < noptions; i++)
		conf_set_option(&cf, options[i]);
	conf_finish(&cf);

	if (test) {
		rc = conf_check(&cf, stderr) == 0 ? 0 : EX_CONFIG_;
		if (rc == 0)
			fprintf(stderr, "smtpauthd: configuration ok\n");
	} else if (admin[0] != NULL) {
		for (i = 0; i < cf.nerrors; i++)
			fprintf(stderr, "smtpauthd: %s\n", cf.errors[i]);
		rc = cf.nerrors != 0 ? EX_CONFIG_ : limits_admin(&cf,
		    nadmin, admin);
	} else if (dump) {
		for (i = 0; i < cf.nerrors; i++)
			fprintf(stderr, "smtpauthd: %s\n", cf.errors[i]);
		conf_print(&cf, stdout);
		rc = cf.nerrors == 0 ? 0 : EX_CONFIG_;
	} else
		rc = serve(&cf);
	conf_free(&cf);
	return rc;
}
