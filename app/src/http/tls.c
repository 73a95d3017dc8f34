/*
 * OpenSSL over memory BIOs. Protocol floor TLS 1.2, renegotiation off (a
 * client-driven CPU sink), buffers released on idle connections so that
 * thousands of idle TLS keep-alives stay cheap, ALPN pinned to http/1.1.
 */
#include "http/tls.h"

#include <stdlib.h>
#include <openssl/err.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"

struct kiln_tls {
    SSL *ssl;
    BIO *rbio;  /* ciphertext in, owned by ssl */
    BIO *wbio;  /* ciphertext out, owned by ssl */
};

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void last_error(const char *what, const char *path, char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    snprintf(err, errlen, "%s \"%s\": %s", what, path, reason);
    ERR_clear_error();
}

/*
 * An in-memory self-signed certificate (EC P-256, one year, CN and SAN
 * "localhost"): for the hop from a load balancer that encrypts to its
 * targets but does not verify them (the ALB), where a certificate file would
 * be one more secret to ship. Never for clients that verify.
 */
static int use_self_signed(SSL_CTX *ctx, char *err, size_t errlen)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_EXTENSION *san = NULL;
    int ok = 0;
    if (!key || !x)
        goto out;
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1)
        goto out;
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    if (!ok)
        goto out;
    ok = 0;
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    if (!san || !X509_add_ext(x, san, -1) || !X509_sign(x, key, EVP_sha256()))
        goto out;
    ok = SSL_CTX_use_certificate(ctx, x) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1;
out:
    if (!ok) {
        snprintf(err, errlen, "SSL_SELF_SIGNED: cannot make a certificate");
        ERR_clear_error();
    }
    X509_EXTENSION_free(san);
    X509_free(x);
    EVP_PKEY_free(key);
    return ok ? 0 : -1;
}

SSL_CTX *kiln_tls_ctx_new(const char *certfile, const char *keyfile, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (!certfile) {
        if (use_self_signed(ctx, err, errlen) != 0)
            goto fail;
        return ctx;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
        last_error("SSL_CERTFILE: cannot load certificate chain", certfile, err, errlen);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1) {
        last_error("SSL_KEYFILE: cannot load private key", keyfile, err, errlen);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "SSL_KEYFILE does not match the certificate in SSL_CERTFILE");
        ERR_clear_error();
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void kiln_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

struct kiln_tls *kiln_tls_new(SSL_CTX *ctx)
{
    struct kiln_tls *t = kiln_calloc(1, sizeof *t);
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio)
        kiln_fatal("out of memory (TLS)");
    /* An empty read BIO means "want more", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void kiln_tls_free(struct kiln_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

int kiln_tls_feed(struct kiln_tls *t, const char *data, size_t len)
{
    while (len) {
        int n = BIO_write(t->rbio, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0)
            return KILN_ETLS;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int kiln_tls_read(struct kiln_tls *t, char *out, size_t cap)
{
    int n = SSL_read(t->ssl, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(t->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
        return KILN_ECLOSED;
    return KILN_ETLS;
}

int kiln_tls_write(struct kiln_tls *t, const char *data, size_t len)
{
    while (len) {
        int n = SSL_write(t->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0) {
            ERR_clear_error();
            return KILN_ETLS;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

void kiln_tls_shutdown(struct kiln_tls *t)
{
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}

int kiln_tls_take(struct kiln_tls *t, kiln_buf *out)
{
    char *p;
    long n = BIO_get_mem_data(t->wbio, &p);
    if (n <= 0)
        return 0;
    int err = kiln_buf_append(out, p, (size_t)n);
    (void)BIO_reset(t->wbio);
    return err;
}
