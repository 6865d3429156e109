/*
 * tls.c - TLS on the client connection (OpenSSL 3): the server context
 * built from the configuration, the handshake on fds 0/1 for STARTTLS
 * (RFC 3207) and implicit TLS (RFC 8314), and the read/write calls io.c
 * uses once TLS is on, so that nothing above io.c knows the transport.
 *
 * One process serves one connection, so there is nothing to resume a
 * session from: no tickets are sent and no session cache is kept.  Small
 * replies go out at once (TCP_NODELAY), and the end of the handshake is
 * acknowledged at once (TCP_QUICKACK), so no reply waits on a timer.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "smtpauthd.h"

/* ECDHE key exchange and AEAD ciphers only, for TLS 1.2. */
#define TLS12_CIPHERS_DEFAULT	"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"

static void
tls_errors(char *buf, size_t size)
{
	unsigned long	 e;
	size_t		 len = 0;

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		if (len + 2 >= size)
			continue;
		if (len > 0) {
			buf[len++] = ';';
			buf[len] = '\0';
		}
		ERR_error_string_n(e, buf + len, size - len);
		len = strlen(buf);
	}
	if (buf[0] == '\0')
		snprintf(buf, size, "%s", errno != 0 ? strerror(errno) :
		    "unknown error");
}

void
tls_context_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

/*
 * Builds the server context; on failure returns NULL and says why in err
 * (the certificate or key could not be loaded, or do not match).
 */
SSL_CTX *
tls_context(const struct config *cf, char *err, size_t errsize)
{
	SSL_CTX		*ctx;
	char		 why[512];

	err[0] = '\0';
	/*
	 * No OpenSSL cleanup at exit: the process ends with its connection and
	 * the kernel frees everything.  The cleanup would only cost time, and a
	 * process stopped by a signal half-way through it (a SIGTERM to the
	 * unit's processes) is left with freed lists holding live blocks, which
	 * valgrind then reports as leaks.  This is the first OpenSSL call, so
	 * its options hold for the process.
	 */
	if (OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL) != 1) {
		tls_errors(why, sizeof(why));
		snprintf(err, errsize, "OPENSSL_init_ssl: %s", why);
		return NULL;
	}
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_errors(why, sizeof(why));
		snprintf(err, errsize, "SSL_CTX_new: %s", why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, cf->tls_min_version == TLS_V1_3 ?
	    TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_set_cipher_list(ctx, cf->tls_ciphers != NULL ?
	    cf->tls_ciphers : TLS12_CIPHERS_DEFAULT) != 1) {
		tls_errors(why, sizeof(why));
		snprintf(err, errsize, "tls-ciphers: %s", why);
		goto fail;
	}
	if (cf->tls_cert == NULL || cf->tls_key == NULL) {
		snprintf(err, errsize, "tls-cert and tls-key must both be set");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cf->tls_cert) != 1) {
		tls_errors(why, sizeof(why));
		snprintf(err, errsize, "tls-cert %s: %s", cf->tls_cert, why);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cf->tls_key, SSL_FILETYPE_PEM)
	    != 1) {
		tls_errors(why, sizeof(why));
		snprintf(err, errsize, "tls-key %s: %s", cf->tls_key, why);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_errors(why, sizeof(why));
		snprintf(err, errsize, "tls-key %s does not match tls-cert %s: "
		    "%s", cf->tls_key, cf->tls_cert, why);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * Days until the certificate expires (negative: expired), or
 * TLS_EXPIRY_UNKNOWN when its date cannot be read.
 */
int
tls_cert_days_left(SSL_CTX *ctx)
{
	X509	*cert = SSL_CTX_get0_certificate(ctx);
	int	 days = 0, secs = 0;

	if (cert == NULL ||
	    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(cert)) != 1)
		return TLS_EXPIRY_UNKNOWN;
	if (days == 0 && secs < 0)
		days = -1;
	return days;
}

/*
 * Acknowledge the client's Finished now rather than after the delayed-ACK
 * timer.  Without a session ticket the server has nothing to send after a
 * TLS 1.3 handshake, so a client whose socket uses Nagle's algorithm holds
 * its first command (EHLO) until that ACK: 40 ms on Linux, on every
 * STARTTLS connection (bench/tls_latency.py measures it).
 */
static void
ack_now(int fd)
{
	int on = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof(on));
}

/* Wait for what OpenSSL asked for; IO_OK, IO_TIMEOUT or IO_ERROR. */
static int
tls_wait(SSL *ssl, int rc, int64_t deadline_ms)
{
	switch (SSL_get_error(ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return io_wait_fd(SSL_get_rfd(ssl), POLLIN, deadline_ms);
	case SSL_ERROR_WANT_WRITE:
		return io_wait_fd(SSL_get_wfd(ssl), POLLOUT, deadline_ms);
	default:
		return IO_ERROR;
	}
}

/*
 * The handshake on the connection.  Returns the SSL object, or NULL with
 * the reason logged (timeout, a client speaking plaintext, a protocol
 * version or cipher we do not accept...).
 */
SSL *
tls_accept(SSL_CTX *ctx, int infd, int outfd, int64_t deadline_ms,
    const char *peer)
{
	SSL	*ssl;
	char	 why[512];
	int	 rc, w;

	ERR_clear_error();
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_rfd(ssl, infd) != 1 ||
	    SSL_set_wfd(ssl, outfd) != 1) {
		tls_errors(why, sizeof(why));
		log_msg(LOG_ERR, "tls failed ip=%s reason=\"%s\"", peer, why);
		SSL_free(ssl);
		return NULL;
	}
	while ((rc = SSL_accept(ssl)) != 1) {
		errno = 0;
		w = tls_wait(ssl, rc, deadline_ms);
		if (w == IO_OK)
			continue;
		if (w == IO_TIMEOUT)
			snprintf(why, sizeof(why), "handshake timeout");
		else if (rc == 0 || (SSL_get_error(ssl, rc) == SSL_ERROR_SYSCALL &&
		    ERR_peek_error() == 0))
			snprintf(why, sizeof(why), "connection closed during "
			    "handshake");
		else
			tls_errors(why, sizeof(why));
		log_msg(LOG_NOTICE, "tls failed ip=%s reason=\"%s\"", peer, why);
		SSL_free(ssl);
		return NULL;
	}
	ack_now(infd);
	return ssl;
}

/* Like read(2): > 0, 0 at the end, or an io_status. */
int
tls_read(SSL *ssl, char *buf, size_t len, int64_t deadline_ms)
{
	size_t	 got;
	int	 rc, w;

	for (;;) {
		ERR_clear_error();
		rc = SSL_read_ex(ssl, buf, len, &got);
		if (rc == 1)
			return (int)got;
		switch (SSL_get_error(ssl, rc)) {
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			if ((w = tls_wait(ssl, rc, deadline_ms)) != IO_OK)
				return w;
			continue;
		default:
			/* A peer that vanished without close_notify ends here. */
			return IO_EOF;
		}
	}
}

/* Writes all of buf or fails. */
int
tls_write(SSL *ssl, const char *buf, size_t len, int64_t deadline_ms)
{
	size_t	 done;
	int	 rc;

	while (len > 0) {
		ERR_clear_error();
		rc = SSL_write_ex(ssl, buf, len, &done);
		if (rc == 1) {
			buf += done;
			len -= done;
			continue;
		}
		if (tls_wait(ssl, rc, deadline_ms) != IO_OK)
			return -1;
	}
	return 0;
}

size_t
tls_pending(SSL *ssl)
{
	return (size_t)SSL_pending(ssl);
}

/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384", for Received: and logs. */
void
tls_describe(SSL *ssl, char *version, size_t vsize, char *cipher,
    size_t csize)
{
	snprintf(version, vsize, "%s", SSL_get_version(ssl));
	snprintf(cipher, csize, "%s", SSL_get_cipher_name(ssl));
}

void
tls_close(SSL *ssl)
{
	if (ssl == NULL)
		return;
	(void)SSL_shutdown(ssl);
	SSL_free(ssl);
}
