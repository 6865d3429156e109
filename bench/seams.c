/*
 * seams.c - what makes each server variant of the benchmarks differ from
 * the shipped program, kept out of the program's sources: the variants
 * link the very objects of the shipped build (those in ../build) with this
 * file, compiled with one switch or more, and the linker's --wrap sends
 * the program's calls of the wrapped functions here (bench/Makefile names
 * the --wrap options of each switch).
 *
 *   BENCH_NO_QUICKACK    no TCP_QUICKACK after the handshake (setsockopt)
 *   BENCH_NAGLE          Nagle's algorithm left on (setsockopt)
 *   BENCH_SEND_TICKETS   TLS session tickets sent, as OpenSSL's default
 *                        (SSL_CTX_set_options, SSL_CTX_set_num_tickets)
 *   BENCH_SINGLE_PROCESS the connection in one process, as before
 *                        privilege separation (privsep_run)
 *   BENCH_AUTH_INLINE    the password check in the monitor itself, no
 *                        process of its own and no bound (auth_bounded)
 *   BENCH_NO_ACCOUNT_CHECK no account check before each message: the
 *                        ACCOUNT question answered yes at once, the
 *                        password check untouched (auth_bounded)
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "smtpauthd.h"

#if defined(BENCH_NO_QUICKACK) || defined(BENCH_NAGLE)
int	__real_setsockopt(int, int, int, const void *, socklen_t);
int	__wrap_setsockopt(int, int, int, const void *, socklen_t);

int
__wrap_setsockopt(int fd, int level, int name, const void *val,
    socklen_t len)
{
#ifdef BENCH_NO_QUICKACK
	if (level == IPPROTO_TCP && name == TCP_QUICKACK)
		return 0;
#endif
#ifdef BENCH_NAGLE
	if (level == IPPROTO_TCP && name == TCP_NODELAY)
		return 0;
#endif
	return __real_setsockopt(fd, level, name, val, len);
}
#endif

#ifdef BENCH_SEND_TICKETS
uint64_t	__real_SSL_CTX_set_options(SSL_CTX *, uint64_t);
uint64_t	__wrap_SSL_CTX_set_options(SSL_CTX *, uint64_t);
int		__wrap_SSL_CTX_set_num_tickets(SSL_CTX *, size_t);

uint64_t
__wrap_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t op)
{
	return __real_SSL_CTX_set_options(ctx, op & ~(uint64_t)SSL_OP_NO_TICKET);
}

int
__wrap_SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t n)
{
	(void)ctx;
	(void)n;
	return 1;
}
#endif

#ifdef BENCH_SINGLE_PROCESS
int	__wrap_privsep_run(const struct config *, struct io *, const char *,
	    struct ssl_ctx_st *, struct ssl_ctx_st *);

/* auth_check, which logs nothing itself, as a backend. */
static int
single_auth(const struct config *cf, const char *mech, const char *user,
    const char *pass, const char *peer, const char *tls, char *canon,
    size_t canonsize, const char **reason)
{
	int result;

	result = auth_check(cf, mech, user, pass, peer, canon, canonsize,
	    reason);
	auth_log_result(result, result == AUTH_OK ? canon : user, mech, peer,
	    *reason, tls);
	return result;
}

int
__wrap_privsep_run(const struct config *cf, struct io *io, const char *peer,
    struct ssl_ctx_st *starttls_ctx, struct ssl_ctx_st *implicit_ctx)
{
	static const struct backend direct = {
		single_auth, smtp_any_sender, smtp_any_rcpt, relay_submit,
		spool_open
	};
	struct ssl_st *ssl;

	if (implicit_ctx != NULL) {
		ssl = tls_accept(implicit_ctx, io->infd, io->outfd, now_ms() +
		    (int64_t)cf->timeout * 1000, peer);
		if (ssl == NULL)
			return 0;
		io_start_tls(io, ssl);
	}
	smtp_session(cf, io, peer, starttls_ctx, &direct);
	tls_close(io->tls);
	return 0;
}
#endif

#ifdef BENCH_AUTH_INLINE
int	__wrap_auth_bounded(const struct auth_bounds *, const char *,
	    const char *, const char *, char *, size_t, const char **);

int
__wrap_auth_bounded(const struct auth_bounds *b, const char *mech,
    const char *user, const char *pass, char *canon, size_t canonsize,
    const char **reason)
{
	return auth_check(b->cf, mech, user, pass, b->peer, canon, canonsize,
	    reason);
}
#endif

#ifdef BENCH_NO_ACCOUNT_CHECK
int	__real_auth_bounded(const struct auth_bounds *, const char *,
	    const char *, const char *, char *, size_t, const char **);
int	__wrap_auth_bounded(const struct auth_bounds *, const char *,
	    const char *, const char *, char *, size_t, const char **);

/* What the check would answer for an account still in order. */
int
__wrap_auth_bounded(const struct auth_bounds *b, const char *mech,
    const char *user, const char *pass, char *canon, size_t canonsize,
    const char **reason)
{
	if (strcmp(mech, "ACCOUNT") != 0)
		return __real_auth_bounded(b, mech, user, pass, canon,
		    canonsize, reason);
	snprintf(canon, canonsize, "%s", user);
	*reason = "";
	return AUTH_OK;
}
#endif
