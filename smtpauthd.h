/*
 * smtpauthd.h - the types shared by the pieces of smtpauthd (configuration,
 * connection I/O, the SMTP session and its envelope) and their prototypes.
 * Each .c file owns one concern; this header is the only place they meet.
 */
#ifndef SMTPAUTHD_H
#define SMTPAUTHD_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#define SMTPAUTHD_VERSION	"0.1.0"

#define EX_OK_			0
#define EX_SOFTWARE_		70	/* sysexits.h EX_SOFTWARE */
#define EX_TEMPFAIL_		75	/* sysexits.h EX_TEMPFAIL */
#define EX_CONFIG_		78	/* sysexits.h EX_CONFIG */

/* RFC 5321 4.5.3.1 limits, in octets. */
#define SMTP_CMD_MAX		512	/* command line, CRLF included */
#define SMTP_AUTH_LINE_MAX	12288	/* AUTH with initial response, and AUTH continuations */
#define SMTP_TEXT_LINE_MAX	1000	/* DATA text line, CRLF included */
#define SMTP_LOCAL_MAX		64
#define SMTP_DOMAIN_MAX		255
#define SMTP_PATH_MAX		256	/* "<" and ">" included */

#define AUTH_USER_MAX		256
#define AUTH_PASS_MAX		1024
#define HOSTNAME_MAX		255
#define PEER_MAX		64	/* an IPv6 text address fits */
#define QUEUE_ID_LEN		16

/*
 * The ceiling of max-recipients.  Every recipient becomes one argument of
 * sendmail, and execve(2) fails (E2BIG, a 451 for every retry) when the
 * arguments and the environment exceed the kernel's limit: on Linux a
 * quarter of RLIMIT_STACK (sysconf(_SC_ARG_MAX), 2 MiB with the usual
 * 8 MiB stack, at most 6 MiB), counting each string with its NUL and one
 * pointer (8 octets) for each.  The worst case at 5000 recipients:
 *   recipients, SMTP_PATH_MAX - 2 = 254 octets each:
 *     5000 * (254 + 1 + 8)                             1315000
 *   the program (PATH_MAX), -i, -t, -f, the sender, --:   4400
 *   the environment (HOME up to 1100, USER and LOGNAME
 *     up to 300 each, PATH, SHELL, pointers):              1800
 *   in all                                          ~  1321200
 * 63% of 2 MiB: the rest is room for an MTA whose sendmail passes its
 * arguments on to another program with some of its own.  No argument is
 * near the kernel's limit for one string (MAX_ARG_STRLEN, 128 KiB).
 * smtpauthd -t warns when max-recipients does not fit the ARG_MAX it
 * finds (a stack limit below 8 MiB).
 */
#define RCPTS_MAX		5000
#define RCPT_ARG_COST		(SMTP_PATH_MAX - 2 + 1 + sizeof(char *))
#define ARGV_FIXED_MAX		6200	/* all but the recipients, above */

/* ---- configuration (conf.c) ---- */

enum auth_backend { AUTH_PAM, AUTH_FILE };
enum tls_mode { TLS_UNSET, TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };
enum inject_mode { INJECT_ENVELOPE, INJECT_HEADERS };
enum tls_version { TLS_V1_2, TLS_V1_3 };
enum sender_policy { SENDER_OWN, SENDER_MAP, SENDER_ANY };
/* What Received: says of the client: its HELO and address, or nothing. */
enum received_client { RECEIVED_SHOW, RECEIVED_HIDE };

/* A limit: count things within window seconds; count 0 is off. */
struct rate {
	uint64_t	 count;
	uint64_t	 window;
};

/* Limits that all hold ("200/1h, 1000/1d"); n 0 is none. */
#define RATES_MAX	4
#define RATE_COUNT_MAX	10000000
struct rates {
	struct rate	 r[RATES_MAX];
	size_t		 n;
};

struct config {
	char		*hostname;
	enum auth_backend auth;
	char		*pam_service;
	char		*passwd_file;
	int		 auth_require_tls;
	enum tls_mode	 tls;
	char		*tls_cert;
	char		*tls_key;
	enum tls_version tls_min_version;
	char		*tls_ciphers;		/* NULL: our default */
	char		*sendmail;
	enum inject_mode inject;
	enum received_client received_client;
	uint64_t	 max_message_size;
	uint64_t	 max_recipients;
	uint64_t	 max_auth_failures;
	uint64_t	 max_errors;
	uint64_t	 max_junk_commands;	/* 0: no limit */
	uint64_t	 auth_failure_delay;
	uint64_t	 timeout;
	uint64_t	 login_grace_time;	/* 0: no limit */
	uint64_t	 data_timeout;
	uint64_t	 sendmail_timeout;
	uint64_t	 auth_timeout;
	uint64_t	 sendmail_umask;
	char		*spool_dir;
	char		*privsep_user;
	char		*privsep_dir;
	char		*state;			/* "none", "sqlite:PATH" */
	char		*state_password_file;	/* Redis's; NULL: none */
	char		*state_prefix;		/* Redis keys' */
	uint64_t	 state_timeout;		/* ms, Redis */
	struct rate	 auth_limit_ip;
	struct rate	 auth_limit_net;
	struct rate	 auth_limit_user;
	uint64_t	 auth_known_ip_time;
	char		*auth_limit_exempt;	/* prefixes; NULL: none */
	char		*proxy_protocol_from;	/* prefixes; NULL: none */
	struct rates	 user_recipient_limit;
	struct rates	 user_message_limit;
	char		*limits_map;		/* NULL: none */
	enum sender_policy sender_policy;	/* policy.c */
	char		*sender_domains;	/* NULL: hostname's domain */
	char		*sender_delimiter;
	char		*sender_map;		/* NULL: none */
	int		 sender_header_check;
	char		*policy_service;	/* inet:HOST:PORT, unix:PATH;
						   NULL: none */
	uint64_t	 policy_service_timeout;
	char		*policy_service_default_action;
	int		 hostname_looked_up;	/* the default came from DNS */

	/* Problems found while loading; reported by -t or at connection. */
	char		**errors;
	size_t		 nerrors;
};

void	 conf_defaults(struct config *);
int	 conf_load_file(struct config *, const char *path, int must_exist);
int	 conf_set(struct config *, const char *key, const char *value,
	    const char *where);
int	 conf_set_option(struct config *, const char *keyvalue);
void	 conf_finish(struct config *);
void	 conf_print(const struct config *, FILE *);
int	 conf_check(struct config *, FILE *);
void	 conf_error(struct config *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
void	 conf_free(struct config *);
int	 conf_parse_rates(const char *, uint64_t max, struct rates *);
void	 conf_print_rates(const struct rates *, char *out, size_t size);

/* ---- logging and small helpers (smtpauthd.c) ---- */

#define ESC_MAX		(4 * 256 + 8)

void	 log_init(int to_stderr);
int	 log_syslog_reachable(void);
void	 log_msg(int prio, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
const char *log_escape(const char *s, char *buf, size_t bufsize);
const char *log_escape_text(const char *s, char *buf, size_t bufsize);
void	 fatal(const char *what) __attribute__((noreturn));
void	 *xcalloc(size_t, size_t);
char	 *xstrdup(const char *);
int64_t	  now_ms(void);
int64_t	  login_grace_deadline(const struct config *);
void	  sleep_until(int64_t deadline_ms);
void	  make_queue_id(char id[QUEUE_ID_LEN + 1]);

/*
 * ---- the process title (proctitle.c) ----
 * proc_title_init: first thing in main, with main's argc and argv (which it
 * repoints at copies).  proc_title_set: the title ps shows and the short
 * name (PR_SET_NAME); for processes without the seccomp filter (the
 * monitor).  proc_title_set_confined: the title only, no system call; for
 * the confined session.
 */
#define PROC_TITLE_MAX	512

void	 proc_title_init(int argc, char **argv);
void	 proc_title_set(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
void	 proc_title_set_confined(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));

/* ---- connection I/O (io.c) ---- */

#define IO_INBUF_SIZE	(SMTP_AUTH_LINE_MAX + 4096)
#define IO_OUTBUF_SIZE	8192

enum io_status {
	IO_OK = 0,
	IO_EOF = -1,
	IO_TIMEOUT = -2,
	IO_ERROR = -3,
	IO_TOOLONG = -4,
};

struct ssl_st;
struct ssl_ctx_st;

struct io {
	int		 infd;
	int		 outfd;
	struct ssl_st	*tls;		/* set: TLS is on */
	uint64_t	 write_timeout_ms;
	char		 in[IO_INBUF_SIZE];
	size_t		 in_start;
	size_t		 in_end;
	char		 out[IO_OUTBUF_SIZE];
	size_t		 out_len;
	int		 failed;	/* a write failed: the peer is gone */
};

void	 io_init(struct io *, int infd, int outfd, uint64_t write_timeout_ms);
int	 io_wait_fd(int fd, short events, int64_t deadline_ms);
int	 io_fill(struct io *, int64_t deadline_ms);
int	 io_getline(struct io *, char *buf, size_t bufsize, size_t maxlen,
	    int64_t deadline_ms, size_t *lenp);
size_t	 io_pending(const struct io *);
const char *io_peek(const struct io *, size_t *lenp);
void	 io_consume(struct io *, size_t n);
void	 io_discard_input(struct io *);
int	 io_write(struct io *, const char *buf, size_t len);
int	 io_printf(struct io *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
int	 io_flush(struct io *);
void	 io_start_tls(struct io *, struct ssl_st *);

/* ---- TLS (tls.c) ---- */

struct ssl_ctx_st *tls_context(const struct config *, char *err,
	    size_t errsize);
void	 tls_context_free(struct ssl_ctx_st *);
#define TLS_EXPIRY_UNKNOWN	(-100000)
int	 tls_cert_days_left(struct ssl_ctx_st *);
struct ssl_st *tls_accept(struct ssl_ctx_st *, int infd, int outfd,
	    int64_t deadline_ms, const char *peer);
int	 tls_read(struct ssl_st *, char *buf, size_t len, int64_t deadline_ms);
int	 tls_write(struct ssl_st *, const char *buf, size_t len,
	    int64_t deadline_ms);
size_t	 tls_pending(struct ssl_st *);
void	 tls_describe(struct ssl_st *, char *version, size_t vsize,
	    char *cipher, size_t csize);
void	 tls_close(struct ssl_st *);

/* ---- DATA: end of data, dot-unstuffing, line checks (data.c) ---- */

enum data_state {
	DATA_BOL,	/* at the beginning of a line */
	DATA_BOL_DOT,	/* a '.' at the beginning of a line */
	DATA_DOT_CR,	/* ".\r" at the beginning of a line */
	DATA_TEXT,	/* inside a line */
	DATA_CR,	/* a '\r' inside a line */
	DATA_END,	/* <CRLF>.<CRLF> seen */
};

#define DATA_BARE_CR	0x01
#define DATA_BARE_LF	0x02
#define DATA_NUL	0x04
#define DATA_LONG_LINE	0x08
#define DATA_TOO_BIG	0x10

typedef int (*data_sink)(void *arg, const char *buf, size_t len);

struct data_parser {
	enum data_state	 state;
	unsigned	 flags;
	uint64_t	 size;		/* message octets, CRLF form, unstuffed */
	uint64_t	 max_size;
	size_t		 line_len;	/* octets on this line so far, CRLF excluded */
	data_sink	 sink;
	void		*sink_arg;
	int		 sink_failed;
};

void	 data_init(struct data_parser *, uint64_t max_size, data_sink, void *);
size_t	 data_feed(struct data_parser *, const char *buf, size_t len);
int	 data_done(const struct data_parser *);

/* ---- the Message-ID of a message being spooled (msgid.c) ---- */

#define MSGID_MAX	250	/* octets of the value kept; the rest is cut */

enum msgid_state { MSGID_BOL, MSGID_NAME, MSGID_VALUE, MSGID_DONE };

struct msgid_scan {
	enum msgid_state state;
	size_t		 name_len;	/* octets of "message-id" matched */
	int		 name_ok;	/* the field name may still be it */
	int		 name_blank;	/* blanks after the name */
	int		 capturing;	/* inside the first Message-ID: field */
	int		 found;
	int		 cut;		/* the value was longer than MSGID_MAX */
	size_t		 len;
	char		 value[MSGID_MAX + 1];
};

void	 msgid_init(struct msgid_scan *);
void	 msgid_feed(struct msgid_scan *, const char *buf, size_t len);
const char *msgid_value(struct msgid_scan *);

/* ---- addresses and MAIL/RCPT parameters (addr.c) ---- */

enum addr_result {
	ADDR_OK = 0,
	ADDR_SYNTAX,		/* not a path at all */
	ADDR_BAD,		/* a path, but a refused address */
	ADDR_QUOTED,		/* quoted local part */
	ADDR_TOOLONG,
};

int	 addr_parse_path(const char *s, int allow_null, char *out,
	    size_t outsize, const char **rest);
int	 addr_is_safe(const char *addr);

/* ---- the addresses of From: and Sender: (header.c) ---- */

#define HEADER_SECTION_MAX	65536	/* the header section's octets, at most */
#define HEADER_ADDRS_MAX	32	/* addresses kept, all fields together */
#define HEADER_ADDR_SIZE	(SMTP_PATH_MAX - 1)	/* 254 octets and a NUL */

enum header_result {
	HEADER_OK = 0,		/* addr[] holds every address, n >= 1 */
	HEADER_NONE_FOUND,	/* no From: and no Sender: field: nothing to
				   check (the MTA adds a From:) */
	HEADER_BAD,		/* refuse the message; why says why */
	HEADER_IOERR,		/* the spool could not be read; errno kept */
};

enum header_field { HEADER_FROM, HEADER_SENDER };

struct header_senders {
	size_t		 n;			/* addresses in addr[] */
	size_t		 nfrom;			/* From: fields seen */
	size_t		 nsender;		/* Sender: fields seen */
	unsigned char	 field[HEADER_ADDRS_MAX];	/* enum header_field */
	char		 addr[HEADER_ADDRS_MAX][HEADER_ADDR_SIZE];
	const char	*why;			/* not OK: a constant text */
};

int	 header_senders(int fd, struct header_senders *);
int	 header_section(const char *buf, size_t len, int whole,
	    struct header_senders *);
int	 header_address_list(const char *value, size_t len,
	    enum header_field, struct header_senders *);

/* ---- the SMTP session (smtp.c) ---- */

struct relay_reply {
	int	 code;
	char	 text[256];	/* enhanced code and text, no leading number */
};

struct session;

struct envelope {
	char		 sender[SMTP_PATH_MAX + 1];	/* "" for <> */
	char		**rcpts;
	size_t		 nrcpts;
	uint64_t	 declared_size;
	int		 body_8bit;
};

/*
 * What the session asks of the privileged side: check a password, approve
 * a sender and each recipient, hand over a message.  The seams of
 * DESIGN.md, as calls the session makes without knowing who answers
 * (directly, a monitor process, a test fake).  mail, rcpt and submit
 * return 0 with a 250 in the reply, -1 with the refusal to give.
 */
struct backend {
	int	(*auth)(const struct config *, const char *mech,
		    const char *user, const char *pass, const char *peer,
		    const char *tls, char *canon, size_t canonsize,
		    const char **reason);
	int	(*mail)(const struct config *, const char *sender,
		    struct relay_reply *);
	int	(*rcpt)(const struct config *, const char *rcpt,
		    struct relay_reply *);
	int	(*submit)(const struct config *, const struct envelope *,
		    int spool_fd, const char *user, const char *queue_id,
		    struct relay_reply *);
	int	(*spool)(const struct config *);	/* an empty spool */
};

int	 smtp_session(const struct config *, struct io *, const char *peer,
	    struct ssl_ctx_st *starttls_ctx, const struct backend *);
int	 smtp_any_sender(const struct config *, const char *sender,
	    struct relay_reply *);
int	 smtp_any_rcpt(const struct config *, const char *rcpt,
	    struct relay_reply *);

/* ---- authentication (auth.c) ---- */

/*
 * AUTH_GONE: the client left while the backend worked; no reply, the
 * session ends.  Only the session's side of privsep says it.
 * AUTH_BLOCKED: the monitor did not ask the backend: the client's address
 * is over its limit (limits.c); 421 and the session ends.
 */
enum auth_result { AUTH_OK, AUTH_FAIL, AUTH_TEMPFAIL, AUTH_GONE,
	AUTH_BLOCKED };

int	 base64_decode(const char *in, size_t inlen, unsigned char *out,
	    size_t outsize, size_t *outlen);
size_t	 base64_encode(const unsigned char *in, size_t inlen, char *out,
	    size_t outsize);
int	 sasl_plain_split(const unsigned char *buf, size_t len,
	    char *user, size_t usersize, char *pass, size_t passsize);
int	 auth_user_acceptable(const char *user, size_t len);
int	 auth_check(const struct config *, const char *mech, const char *user,
	    const char *pass,
	    const char *peer, char *canon, size_t canonsize,
	    const char **reason);
int	 auth_account(const struct config *, const char *user,
	    const char *peer, const char **reason);
int	 auth_hash_password(FILE *in, FILE *out);
int64_t	 auth_failure_deadline(const struct config *, int64_t start_ms);
void	 auth_log_result(int result, const char *user, const char *mech,
	    const char *peer, const char *reason, const char *tls);
int	 auth_check_passwd_file(const struct config *, FILE *report);

/* ---- whether a PAM service's stack can work (pamstack.c) ---- */

typedef void (*pam_problem_fn)(void *arg, const char *problem);

int	 pam_service_file(const char *name, char *path, size_t size);
int	 pam_stack_check(const char *service, pam_problem_fn, void *arg);

/* ---- the password check in a process of its own (authproc.c) ---- */

/* What the monitor's check needs to know of its connection. */
struct auth_bounds {
	const struct config	*cf;
	const char		*peer;
	int			 channel;	/* its hang-up: the client left */
	pid_t			 session;	/* the one child to keep */
};

void	 auth_catch_stops(void);
/* pass NULL: auth_account() instead of auth_check(). */
int	 auth_bounded(const struct auth_bounds *, const char *mech,
	    const char *user, const char *pass, char *canon, size_t canonsize,
	    const char **reason);

/* ---- client addresses and prefixes (prefix.c) ---- */
struct net_addr {
	int		 family;	/* 4 or 6 */
	unsigned char	 bytes[16];
};
struct net_prefix {
	struct net_addr	 addr;
	unsigned	 bits;
};
int	 net_addr_parse(const char *, struct net_addr *);
int	 net_prefix_parse(const char *, struct net_prefix *);
int	 net_prefix_match(const struct net_prefix *, const struct net_addr *);
int	 net_prefix_list_match(const char *list, const struct net_addr *);
void	 net_addr_network(const struct net_addr *, unsigned v4bits,
	    unsigned v6bits, char *out, size_t outsize);

/* ---- limits on guessing, across connections (limits.c) ---- */
enum limit_verdict { LIMIT_OK, LIMIT_ADDR, LIMIT_USER };
#define LIMIT_MARKS_MAX	3		/* address, network, user */
struct limit_mark {
	char		 key[620];	/* STATE_KEY_MAX and its NUL fit */
	int		 added;		/* new: taken back if not a failure */
	uint64_t	 count;		/* the set's, this guess included */
	uint64_t	 limit;
	const char	*what;		/* "auth-limit-ip", ... */
};
struct limits {
	const struct config	*cf;
	const char		*peer;
	struct net_addr		 addr;
	char			 client[PEER_MAX + 8];	/* addr, or its /64 */
	int			 has_addr;	/* peer is an IP address */
	int			 exempt;	/* in auth-limit-exempt */
	int			 off;		/* state none, or exempt */
	int			 failed;	/* the store failed: fail open */
	char			 guess[33];	/* this check's keyed hash */
	struct limit_mark	 marks[LIMIT_MARKS_MAX];	/* counted */
	size_t			 nmarks;
};
void	 limits_init(struct limits *, const struct config *, const char *peer);
const char *limits_connect(struct limits *);
int	 limits_before_auth(struct limits *, const char *user,
	    const char *pass);
void	 limits_after_auth(struct limits *, int result, const char *user);
int	 limits_admin(const struct config *, int argc, char *const argv[]);
int	 limits_check_store(const struct config *, char *err, size_t errsize);

/* ---- sending limits and suspension, per login (sending.c) ---- */
struct state;
struct sending {
	const struct config	*cf;
	const char		*peer;
	char			 login[AUTH_USER_MAX + 1];
	struct rates		 rcpt;		/* this login's, limits-map's */
	struct rates		 msg;
	int			 unlimited;	/* limits-map says so */
	int			 off;		/* state none */
	int			 failed;	/* the store failed: fail open */
	int			 reserved;	/* a message counted, not settled */
	struct state		*st;		/* open from MAIL to the forks */
	/*
	 * The counted message's member: the queue id (the session's word,
	 * which it may repeat) and a nonce of the monitor's, so that no
	 * message replaces another's count.
	 */
	char			 member[QUEUE_ID_LEN + 18];
};
void	 sending_init(struct sending *, const struct config *,
	    const char *peer, const char *login);
int	 sending_mail(struct sending *, struct relay_reply *);
int	 sending_rcpt(struct sending *, size_t approved, struct relay_reply *);
int	 sending_reserve(struct sending *, const char *queue_id,
	    size_t nrcpts, struct relay_reply *);
void	 sending_settle(struct sending *, const char *queue_id,
	    int delivered);
void	 sending_release(struct sending *);
int	 sending_suspend(const struct config *, struct state *,
	    const char *login, const char *reason);
int	 sending_unsuspend(const struct config *, struct state *,
	    const char *login);
int	 sending_list_key(const struct config *, struct state *, int64_t now,
	    const char *key);
int	 sending_check_map(const struct config *, FILE *report);

/* ---- privilege separation (privsep.c, monitor.c, sandbox.c) ---- */

struct passwd;

/*
 * What the confined session runs: SMTP behind privsep_run, a script of
 * raw channel packets in tests/monitor-probe.
 */
typedef void (*session_main_fn)(const struct config *, struct io *,
	    const char *peer, struct ssl_ctx_st *starttls_ctx,
	    struct ssl_ctx_st *implicit_ctx, int channel);

void	 sandbox_confine(const struct config *, const struct passwd *,
	    pid_t monitor_pid);
int	 sandbox_check_dir(const char *);
const char *privsep_user_problem(const struct passwd *);
int	 monitor_run(const struct config *, const char *peer, pid_t session,
	    int channel, int spool);
void	 refuse_connection(const struct config *, const char *peer,
	    const char *why, const char *reason);
int	 privsep_run(const struct config *, struct io *, const char *peer,
	    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx);
int	 privsep_split(const struct config *, struct io *, const char *peer,
	    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx,
	    session_main_fn);

/* ---- injection (relay.c) ---- */

int	 spool_open(const struct config *);
int	 relay_received(const struct config *, int fd, const char *helo,
	    const char *peer, const char *queue_id, const char *user,
	    const struct envelope *, const char *tls_info);
int	 relay_submit(const struct config *, const struct envelope *,
	    int spool_fd, const char *user, const char *queue_id,
	    struct relay_reply *);
const char *relay_exit_reply(int status, int *code);

#endif
