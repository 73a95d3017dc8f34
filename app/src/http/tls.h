/*
 * TLS for the listener, on memory BIOs: the event loop moves ciphertext
 * between the socket and OpenSSL, so TLS needs no socket of its own and no
 * blocking call. One kiln_tls per connection, used only by its loop thread;
 * the SSL_CTX is shared (OpenSSL makes it thread-safe).
 */
#ifndef KILN_HTTP_TLS_H
#define KILN_HTTP_TLS_H

#include <stddef.h>

#include "core/buf.h"

typedef struct ssl_ctx_st SSL_CTX;
struct kiln_tls;

/*
 * Load and check a PEM chain and key (certfile NULL: a self-signed
 * certificate made in memory, SSL_SELF_SIGNED). Returns NULL and writes one
 * line about the problem into err (never key material) on failure.
 */
SSL_CTX *kiln_tls_ctx_new(const char *certfile, const char *keyfile, char *err, size_t errlen);
void kiln_tls_ctx_free(SSL_CTX *ctx);

struct kiln_tls *kiln_tls_new(SSL_CTX *ctx);
void kiln_tls_free(struct kiln_tls *t);   /* NULL allowed */

/* Ciphertext from the socket. 0 or KILN_ETLS. */
int kiln_tls_feed(struct kiln_tls *t, const char *data, size_t len);
/*
 * Decrypted bytes into out: > 0 bytes, 0 when more ciphertext is needed,
 * KILN_ECLOSED after the peer's close_notify, KILN_ETLS on a protocol error.
 */
int kiln_tls_read(struct kiln_tls *t, char *out, size_t cap);
/* Encrypt plaintext; the records wait in the TLS output (kiln_tls_take). */
int kiln_tls_write(struct kiln_tls *t, const char *data, size_t len);
/* Queue a close_notify alert. */
void kiln_tls_shutdown(struct kiln_tls *t);
/* Move pending ciphertext (handshake or records) to the end of out. */
int kiln_tls_take(struct kiln_tls *t, kiln_buf *out);

#endif
