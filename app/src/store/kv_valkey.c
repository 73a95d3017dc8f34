/*
 * The Valkey driver: RESP over one TCP or TLS connection per handle, with
 * our own non-blocking socket and kiln_wait_fd for every deadline (poll()
 * on a worker, the loop on a fiber), OpenSSL for TLS,
 * and hiredis 0.14 only for what it is good at without a socket: formatting
 * commands and reading replies (Debian's 0.14 has no TLS).
 *
 * The one design decision to know: a handle is synchronous and holds no
 * state between commands but its connection. After any I/O error, timeout
 * or unexpected reply the connection is dropped, and the next command
 * connects again; only failed connects back off (BACKOFF_MIN_MS doubling up
 * to BACKOFF_MAX_MS), and during that window commands fail at once with the
 * code of the failure that started it, so a dead server costs callers no
 * waiting and a restarted one is picked up without restarting kiln.
 *
 * Reply interpretation (kiln__kv_reply_*) needs no socket, so the resp_reply
 * fuzz target drives it with whatever bytes it likes.
 *
 * Name resolution uses getaddrinfo, which the connect timeout does not
 * bound (the resolver's own timeouts in resolv.conf do) and which blocks
 * the thread, a loop's included; it runs only when connecting.
 *
 * A handle from kiln_kv_open_shared is the same connection code driven by
 * a loop: see "shared handle" below.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/log.h"
#include "store/kv_internal.h"

#define DEFAULT_PORT 6379u
#define DEFAULT_TIMEOUT_MS 2000u
#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 2000u
/* Our replies are one value at most, plus small framing. */
#define MAX_REPLY_BYTES (KILN__KV_MAX_VALUE + 64u * 1024)
/* Our largest array reply is a set's members (SRANDMEMBER key max, which
 * the server bounds by max); a hostile length past it allocates nothing. */
#define MAX_ARRAY_ELEMENTS KILN_KV_SET_LIST_MAX
/* The output buffer is released after a command larger than this. */
#define KEEP_OUT_BYTES (64u * 1024)
#define MAX_REPLIES 5

struct valkey_store {
    struct kiln_kv_store base;
    char *host;
    char port[12];
    char *user;              /* NULL: AUTH with the password alone */
    char *password;          /* NULL: no AUTH; never logged */
    kiln_kv_credentials_fn credentials; /* set: AUTH with what it gives */
    void *credentials_ctx;
    void (*credentials_rejected)(void *ctx);
    unsigned long (*credentials_version)(void *ctx);
    uint64_t reauth_ms;      /* 0: never re-authenticate */
    bool host_is_ip;
    unsigned connect_timeout_ms;
    unsigned command_timeout_ms;
    bool tls;
    SSL_CTX *ssl_ctx;        /* NULL with tls set: tls_error says why */
    BIO_METHOD *bio_method;
    char tls_error[KILN__KV_ERR_MAX];
    /* kiln_now_ms of the last successful connect by any handle: a handle in
     * backoff tries at once when the server has been seen back since. */
    _Atomic uint64_t connected_at;
};

struct pipe;

struct valkey {
    struct kiln_kv base;
    struct valkey_store *s;
    struct pipe *pipe;       /* a shared handle's loop side; NULL otherwise */
    struct kiln_fdwatch *watch; /* waiting on a fiber (connecting) */
    int fd;                  /* -1: not connected */
    SSL *ssl;
    redisReader *reader;     /* fresh for each connection */
    kiln_buf out;            /* the commands of one round trip */
    /* Reconnect backoff: while kiln_now_ms() < retry_at, fail at once. */
    unsigned backoff_ms;
    uint64_t retry_at;
    uint64_t failed_at;      /* kiln_now_ms of the last failed connect */
    int connect_rc;
    char connect_err[KILN__KV_ERR_MAX];
    uint64_t authed_at;      /* kiln_now_ms of the last AUTH on this connection */
    bool subscribed;         /* kiln_kv_listen: this connection is subscribed */
    unsigned long failed_version; /* credentials_version at the last failed connect */
};

static const struct kiln_kv_ops valkey_ops;

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Error text "valkey host:port: ..."; returns code. */
__attribute__((format(printf, 3, 4)))
static int fail(struct valkey *c, int code, const char *fmt, ...)
{
    char msg[KILN__KV_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kiln__kv_error(&c->base, code, "valkey %s:%s: %s", c->s->host, c->s->port, msg);
}

static const char *errno_text(int e, char *buf, size_t cap)
{
    return strerror_r(e, buf, cap); /* the GNU variant: returns the text */
}

/* ---- reply interpretation (no socket) ----------------------------------- */

static void *(*default_create_array)(const redisReadTask *, int);
static redisReplyObjectFunctions bounded_fns;
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;

/* A NULL here makes the reader fail with "Out of memory"; we treat any
 * reader failure as a protocol error and drop the connection. */
static void *create_array_bounded(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > MAX_ARRAY_ELEMENTS)
        return NULL;
    return default_create_array(task, elements);
}

/* hiredis's reply constructors are static; borrow them from a default
 * reader and wrap the array one. */
static void init_bounded_fns(void)
{
    redisReader *r = redisReaderCreate();
    if (!r || !r->fn)
        kiln_fatal("out of memory: redisReaderCreate");
    bounded_fns = *r->fn;
    redisReaderFree(r);
    default_create_array = bounded_fns.createArray;
    bounded_fns.createArray = create_array_bounded;
}

redisReader *kiln__kv_reader_new(void)
{
    pthread_once(&bounded_once, init_bounded_fns);
    redisReader *r = redisReaderCreateWithFunctions(&bounded_fns);
    if (!r)
        kiln_fatal("out of memory: redisReaderCreate");
    return r;
}

static bool starts_with(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->str && r->len >= n && memcmp(r->str, prefix, n) == 0;
}

static bool is_status(const redisReply *r, const char *text)
{
    return r->type == REDIS_REPLY_STATUS && r->str && r->len == strlen(text) &&
           memcmp(r->str, text, r->len) == 0;
}

/*
 * What an error reply means to callers: credentials (503 for them too, but
 * worth telling apart in logs), a server that cannot serve right now
 * (loading, failing over, out of memory), or anything else: a protocol
 * surprise.
 */
static int classify_error(const redisReply *r)
{
    static const char *const unavailable[] = {
        "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN",
        "CLUSTERDOWN", "OOM", "MISCONF",
    };
    if (starts_with(r, "NOAUTH") || starts_with(r, "WRONGPASS"))
        return KILN_EAUTH;
    /* A key of the other type (a set read with GET): the caller's mistake,
     * as the memory driver says it, and nothing wrong with the connection. */
    if (starts_with(r, "WRONGTYPE"))
        return KILN_EINVAL;
    for (size_t i = 0; i < sizeof unavailable / sizeof unavailable[0]; i++) {
        size_t n = strlen(unavailable[i]);
        if (starts_with(r, unavailable[i]) && (r->len == n || r->str[n] == ' '))
            return KILN_EUNAVAILABLE;
    }
    return KILN_EPROTO;
}

/* Quote a server error, unless it contains the secret: checked on the whole
 * text before truncation, so not even a prefix of the secret is copied. */
static int reply_error(struct kiln_kv *kv, int code, const char *what, const redisReply *r)
{
    int len = r->len > 160 ? 160 : (int)r->len;
    if (kv->secret && kv->secret[0] && r->str &&
        memmem(r->str, r->len, kv->secret, strlen(kv->secret)))
        return kiln__kv_error(kv, code, "%s: server error (text withheld)", what);
    return kiln__kv_error(kv, code, "%s: server error: %.*s", what, len, r->str ? r->str : "");
}

static int unexpected(struct kiln_kv *kv, const char *what, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR)
        return reply_error(kv, classify_error(r), what, r);
    return kiln__kv_error(kv, KILN_EPROTO, "%s: unexpected reply (type %d)", what, r->type);
}

int kiln__kv_reply_auth(struct kiln_kv *kv, const redisReply *r)
{
    if (is_status(r, "OK"))
        return 0;
    if (r->type != REDIS_REPLY_ERROR)
        return unexpected(kv, "AUTH", r);
    if (classify_error(r) == KILN_EUNAVAILABLE)
        return reply_error(kv, KILN_EUNAVAILABLE, "AUTH", r);
    /* Never quote an AUTH error: some servers and proxies echo arguments. */
    if (memmem(r->str, r->len, "without any password configured", 31))
        return kiln__kv_error(kv, KILN_EAUTH, "AUTH refused: the server has no password "
                                              "set (unset VALKEY_PASSWORD)");
    if (starts_with(r, "WRONGPASS"))
        return kiln__kv_error(kv, KILN_EAUTH, "AUTH refused: wrong user name or password");
    return kiln__kv_error(kv, KILN_EAUTH, "AUTH refused by the server");
}

int kiln__kv_reply_ping(struct kiln_kv *kv, const redisReply *r)
{
    if (is_status(r, "PONG"))
        return 0;
    return unexpected(kv, "PING", r);
}

/* A bulk string or nil: GET's reply, and GETDEL's. */
static int reply_value(struct kiln_kv *kv, const char *what, const redisReply *r, kiln_arena *a,
                       kiln_str *out)
{
    if (r->type == REDIS_REPLY_NIL)
        return KILN_ENOTFOUND;
    if (r->type != REDIS_REPLY_STRING || (!r->str && r->len))
        return unexpected(kv, what, r);
    char *p = kiln_arena_alloc(a, r->len + 1);
    if (r->len)
        memcpy(p, r->str, r->len);
    p[r->len] = '\0';
    *out = (kiln_str){ p, r->len };
    return 0;
}

int kiln__kv_reply_get(struct kiln_kv *kv, const redisReply *r, kiln_arena *a, kiln_str *out)
{
    return reply_value(kv, "GET", r, a, out);
}

int kiln__kv_reply_take(struct kiln_kv *kv, const redisReply *r, kiln_arena *a, kiln_str *out)
{
    return reply_value(kv, "GETDEL", r, a, out);
}

int kiln__kv_reply_set(struct kiln_kv *kv, const redisReply *r)
{
    if (is_status(r, "OK"))
        return 0;
    return unexpected(kv, "SET", r);
}

int kiln__kv_reply_replace(struct kiln_kv *kv, const redisReply *r)
{
    if (is_status(r, "OK"))
        return 0;
    if (r->type == REDIS_REPLY_NIL)
        return KILN_ENOTFOUND; /* XX: the key was not there, nothing written */
    return unexpected(kv, "SET XX", r);
}

int kiln__kv_reply_del(struct kiln_kv *kv, const redisReply *r, bool *deleted)
{
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0)
        return unexpected(kv, "DEL", r);
    *deleted = r->integer > 0;
    return 0;
}

int kiln__kv_reply_expire(struct kiln_kv *kv, const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        return KILN_ENOTFOUND;
    return unexpected(kv, "PEXPIRE", r);
}

int kiln__kv_reply_incr(struct kiln_kv *kv, redisReply *const *r, size_t n, bool with_ttl,
                        int64_t *value, uint64_t *ttl_left_ms)
{
    size_t queued = KILN__KV_INCR_REPLIES(with_ttl) - 2; /* between MULTI and EXEC */
    if (n != queued + 2)
        return kiln__kv_error(kv, KILN_EPROTO, "INCR: %zu replies, expected %zu", n,
                              queued + 2);
    if (!is_status(r[0], "OK"))
        return unexpected(kv, "MULTI", r[0]);
    for (size_t i = 1; i <= queued; i++)
        if (!is_status(r[i], "QUEUED"))
            return unexpected(kv, "INCR (queueing)", r[i]);

    const redisReply *exec = r[n - 1];
    if (exec->type != REDIS_REPLY_ARRAY)
        return unexpected(kv, "EXEC", exec);
    if (exec->elements != queued || !exec->element)
        return kiln__kv_error(kv, KILN_EPROTO, "EXEC: %zu results, expected %zu",
                              exec->elements, queued);
    for (size_t i = 0; i < queued; i++)
        if (!exec->element[i])
            return kiln__kv_error(kv, KILN_EPROTO, "EXEC: missing result");

    const redisReply *set = with_ttl ? exec->element[0] : NULL;
    const redisReply *incr = exec->element[with_ttl ? 1 : 0];
    const redisReply *pttl = exec->element[with_ttl ? 2 : 1];

    /* SET NX: OK when it created the key, nil when the key was there. */
    if (set && !is_status(set, "OK") && set->type != REDIS_REPLY_NIL)
        return unexpected(kv, "SET NX", set);
    if (incr->type == REDIS_REPLY_ERROR &&
        (starts_with(incr, "ERR value is not an integer") ||
         starts_with(incr, "ERR increment or decrement would overflow") ||
         starts_with(incr, "WRONGTYPE")))
        return reply_error(kv, KILN_EINVAL, "INCR", incr);
    if (incr->type != REDIS_REPLY_INTEGER)
        return unexpected(kv, "INCR", incr);
    if (pttl->type != REDIS_REPLY_INTEGER || pttl->integer < -2)
        return unexpected(kv, "PTTL", pttl);
    *value = incr->integer;
    /* -1: no TTL, -2: no key (cannot happen inside the transaction). A TTL
     * with under a millisecond left reads as 1: 0 means "none". */
    *ttl_left_ms = pttl->integer < 0 ? 0 : pttl->integer == 0 ? 1 : (uint64_t)pttl->integer;
    return 0;
}

int kiln__kv_reply_sadd(struct kiln_kv *kv, redisReply *const *r, size_t n, bool with_ttl,
                        bool *added)
{
    if (n != KILN__KV_SADD_REPLIES(with_ttl))
        return kiln__kv_error(kv, KILN_EPROTO, "SADD: %zu replies, expected %u", n,
                              KILN__KV_SADD_REPLIES(with_ttl));
    const redisReply *sadd = r[0];
    if (with_ttl) {
        if (!is_status(r[0], "OK"))
            return unexpected(kv, "MULTI", r[0]);
        for (size_t i = 1; i <= 2; i++)
            if (!is_status(r[i], "QUEUED"))
                return unexpected(kv, "SADD (queueing)", r[i]);
        const redisReply *exec = r[3];
        if (exec->type != REDIS_REPLY_ARRAY)
            return unexpected(kv, "EXEC", exec);
        if (exec->elements != 2 || !exec->element || !exec->element[0] || !exec->element[1])
            return kiln__kv_error(kv, KILN_EPROTO, "EXEC: %zu results, expected 2",
                                  exec->elements);
        sadd = exec->element[0];
        const redisReply *pexpire = exec->element[1];
        /* 0 only if the key were gone, which SADD just made impossible
         * inside the transaction; a WRONGTYPE SADD leaves PEXPIRE's 1. */
        if (sadd->type != REDIS_REPLY_ERROR &&
            (pexpire->type != REDIS_REPLY_INTEGER || pexpire->integer != 1))
            return unexpected(kv, "PEXPIRE", pexpire);
    }
    if (sadd->type != REDIS_REPLY_INTEGER || sadd->integer < 0 || sadd->integer > 1)
        return unexpected(kv, "SADD", sadd);
    *added = sadd->integer == 1;
    return 0;
}

int kiln__kv_reply_srem(struct kiln_kv *kv, const redisReply *r, size_t *removed)
{
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0 ||
        (unsigned long long)r->integer > KILN_KV_SET_LIST_MAX)
        return unexpected(kv, "SREM", r);
    *removed = (size_t)r->integer;
    return 0;
}

int kiln__kv_reply_members(struct kiln_kv *kv, const redisReply *r, kiln_arena *a, size_t max,
                           kiln_str **out, size_t *n)
{
    if (r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element))
        return unexpected(kv, "SRANDMEMBER", r);
    if (r->elements > max)
        return kiln__kv_error(kv, KILN_EPROTO, "SRANDMEMBER: %zu members, asked for %zu",
                              r->elements, max);
    kiln_str *list = kiln_arena_alloc(a, (r->elements ? r->elements : 1) * sizeof *list);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *m = r->element[i];
        if (!m || m->type != REDIS_REPLY_STRING || (!m->str && m->len))
            return kiln__kv_error(kv, KILN_EPROTO, "SRANDMEMBER: member %zu is not a string",
                                  i);
        char *p = kiln_arena_alloc(a, m->len + 1);
        if (m->len)
            memcpy(p, m->str, m->len);
        p[m->len] = '\0';
        list[i] = (kiln_str){ p, m->len };
    }
    *out = list;
    *n = r->elements;
    return 0;
}

/* ---- TLS socket BIO ------------------------------------------------------ */

/*
 * OpenSSL's socket BIO writes with write(2), which raises SIGPIPE on a
 * connection the server closed. The server ignores SIGPIPE, but a library
 * should not rely on that: this BIO is the socket BIO with send(MSG_NOSIGNAL).
 */
static int bio_write_nosignal(BIO *b, const char *data, int len)
{
    int fd = -1;
    ssize_t n;
    BIO_get_fd(b, &fd);
    do
        n = send(fd, data, (size_t)len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return (int)n;
}

static BIO_METHOD *bio_method_new(void)
{
    const BIO_METHOD *sock = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "kiln valkey socket");
    if (!m)
        return NULL;
    BIO_meth_set_write(m, bio_write_nosignal);
    BIO_meth_set_read(m, BIO_meth_get_read(sock));
    BIO_meth_set_puts(m, BIO_meth_get_puts(sock));
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock));
    BIO_meth_set_create(m, BIO_meth_get_create(sock));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock));
    return m;
}

/* The most specific reason OpenSSL has; clears its error queue. */
static void tls_reason(SSL *ssl, int ret, int saved_errno, char *buf, size_t cap)
{
    char e[128];
    int kind = SSL_get_error(ssl, ret);
    unsigned long code = ERR_peek_last_error();
    long verify = SSL_get_verify_result(ssl);

    if (verify != X509_V_OK)
        snprintf(buf, cap, "server certificate not trusted: %s",
                 X509_verify_cert_error_string(verify));
    else if (kind == SSL_ERROR_ZERO_RETURN)
        snprintf(buf, cap, "closed by the server");
    else if (code) {
        ERR_error_string_n(code, e, sizeof e);
        snprintf(buf, cap, "%s", e);
    } else if (kind == SSL_ERROR_SYSCALL && saved_errno)
        snprintf(buf, cap, "%s", errno_text(saved_errno, e, sizeof e));
    else
        snprintf(buf, cap, "connection closed by the server");
    ERR_clear_error();
}

/* ---- socket I/O with deadlines ------------------------------------------- */

/* 0 when fd is ready for events, KILN_ETIMEDOUT past the deadline. POLLERR
 * and POLLHUP count as ready: the next I/O call reports what happened. */
static int wait_fd(struct valkey *c, int fd, short events, uint64_t deadline)
{
    if (fd == c->fd)
        return kiln_wait_fd(&c->watch, fd, events, deadline);
    /* A socket not yet ours (still connecting): a watcher for this wait. */
    struct kiln_fdwatch *w = NULL;
    int rc = kiln_wait_fd(&w, fd, events, deadline);
    kiln_fdwatch_close(&w);
    return rc;
}

static void pipe_io_stop(struct pipe *p);

static void conn_drop(struct valkey *c)
{
    kiln_fdwatch_close(&c->watch); /* out of the loop before the fd closes */
    if (c->pipe)
        pipe_io_stop(c->pipe);
    SSL_free(c->ssl); /* no close_notify after an error: the stream is suspect */
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->reader)
        redisReaderFree(c->reader);
    c->reader = NULL;
    c->subscribed = false;
}

static int conn_write(struct valkey *c, const char *p, size_t len, uint64_t deadline,
                      unsigned timeout_ms)
{
    char e[128];
    while (len) {
        short want = POLLOUT;
        if (c->ssl) {
            ERR_clear_error();
            int n = SSL_write(c->ssl, p, len > INT_MAX ? INT_MAX : (int)len);
            int saved = errno;
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            int kind = SSL_get_error(c->ssl, n);
            if (kind == SSL_ERROR_WANT_READ)
                want = POLLIN;
            else if (kind != SSL_ERROR_WANT_WRITE) {
                tls_reason(c->ssl, n, saved, e, sizeof e);
                return fail(c, KILN_EUNAVAILABLE, "TLS write: %s", e);
            }
        } else {
            ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return fail(c, KILN_EUNAVAILABLE, "send: %s", errno_text(errno, e, sizeof e));
        }
        if (wait_fd(c, c->fd, want, deadline))
            return fail(c, KILN_EUNAVAILABLE, "command not sent within %u ms", timeout_ms);
    }
    return 0;
}

/* Some bytes into buf: *got > 0, or an error. */
static int conn_read(struct valkey *c, char *buf, size_t cap, uint64_t deadline,
                     unsigned timeout_ms, size_t *got)
{
    char e[128];
    for (;;) {
        short want = POLLIN;
        if (c->ssl) {
            ERR_clear_error();
            int n = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
            int saved = errno;
            if (n > 0) {
                *got = (size_t)n;
                return 0;
            }
            int kind = SSL_get_error(c->ssl, n);
            if (kind == SSL_ERROR_WANT_WRITE)
                want = POLLOUT;
            else if (kind != SSL_ERROR_WANT_READ) {
                tls_reason(c->ssl, n, saved, e, sizeof e);
                return fail(c, KILN_EUNAVAILABLE, "TLS read: %s", e);
            }
        } else {
            ssize_t n = recv(c->fd, buf, cap, 0);
            if (n > 0) {
                *got = (size_t)n;
                return 0;
            }
            if (n == 0)
                return fail(c, KILN_EUNAVAILABLE, "connection closed by the server");
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return fail(c, KILN_EUNAVAILABLE, "recv: %s", errno_text(errno, e, sizeof e));
        }
        if (wait_fd(c, c->fd, want, deadline))
            return fail(c, KILN_EUNAVAILABLE, "no reply within %u ms", timeout_ms);
    }
}

/* Read n replies into out[] (NULL-filled first; the caller frees them). */
static int read_replies(struct valkey *c, redisReply **out, size_t n, uint64_t deadline,
                        unsigned timeout_ms)
{
    char buf[16384];
    size_t got = 0, fed = 0;
    int rc;

    while (got < n) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
            return fail(c, KILN_EPROTO, "bad reply: %s",
                        c->reader->err == REDIS_ERR_OOM
                            ? "array too large (or out of memory)" /* create_array_bounded */
                            : c->reader->errstr);
        if (reply) {
            out[got++] = reply;
            continue;
        }
        if (fed > MAX_REPLY_BYTES)
            return fail(c, KILN_EPROTO, "reply larger than %u bytes", MAX_REPLY_BYTES);
        size_t k = 0;
        if ((rc = conn_read(c, buf, sizeof buf, deadline, timeout_ms, &k)))
            return rc;
        if (redisReaderFeed(c->reader, buf, k) != REDIS_OK)
            return fail(c, KILN_EPROTO, "bad reply: %s", c->reader->errstr);
        fed += k;
    }
    return 0;
}

/* Append one formatted command to an output buffer. */
static void add_command(kiln_buf *out, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        kiln_fatal("out of memory: redisFormatCommandArgv");
    /* kv.c caps keys and values far below the buffer's maximum. */
    if (kiln_buf_append(out, cmd, (size_t)n) != 0)
        kiln_fatal("kv: command larger than the output buffer");
    /* The AUTH command holds the password: leave no copy in freed memory. */
    explicit_bzero(cmd, (size_t)n);
    redisFreeCommand(cmd);
}

static void clear_out(kiln_buf *out)
{
    if (out->p)
        explicit_bzero(out->p, out->len);
    if (out->cap > KEEP_OUT_BYTES)
        kiln_buf_free(out);
    else
        kiln_buf_reset(out);
}

static void free_replies(redisReply **r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i])
            freeReplyObject(r[i]);
        r[i] = NULL;
    }
}

/* Send what is in out (then emptied) and read n replies, on the current
 * connection; any failure drops it. */
static int round_trip(struct valkey *c, kiln_buf *out, redisReply **replies, size_t n,
                      uint64_t deadline, unsigned timeout_ms)
{
    int rc;
    for (size_t i = 0; i < n; i++)
        replies[i] = NULL;
    rc = conn_write(c, out->p, out->len, deadline, timeout_ms);
    clear_out(out);
    if (rc == 0)
        rc = read_replies(c, replies, n, deadline, timeout_ms);
    if (rc) {
        free_replies(replies, n);
        conn_drop(c);
    }
    return rc;
}

/* ---- connecting ----------------------------------------------------------- */

static int tcp_connect(struct valkey *c, uint64_t deadline, unsigned timeout_ms)
{
    struct valkey_store *s = c->s;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    char e[128] = "no address";
    int rc = KILN_EUNAVAILABLE;

    int gai = getaddrinfo(s->host, s->port, &hints, &res);
    if (gai != 0)
        return fail(c, KILN_EUNAVAILABLE, "cannot resolve the host: %s", gai_strerror(gai));

    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            char t[96];
            snprintf(e, sizeof e, "socket: %s", errno_text(errno, t, sizeof t));
            continue;
        }
        int err = 0;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                socklen_t len = sizeof err;
                if (wait_fd(c, fd, POLLOUT, deadline)) {
                    close(fd);
                    snprintf(e, sizeof e, "connect timed out after %u ms", timeout_ms);
                    break; /* the deadline is spent for every address */
                }
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                    err = errno;
            }
        }
        if (err) {
            char t[96];
            snprintf(e, sizeof e, "connect: %s", errno_text(err, t, sizeof t));
            close(fd);
            continue;
        }
        /* Small pipelined commands must not wait for Nagle. Keepalive finds
         * a peer that vanished while the connection sat idle. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        c->fd = fd;
        rc = 0;
        break;
    }
    freeaddrinfo(res);
    if (rc)
        return fail(c, rc, "%s", e);
    return 0;
}

static int tls_handshake(struct valkey *c, uint64_t deadline, unsigned timeout_ms)
{
    struct valkey_store *s = c->s;
    char e[200];

    c->ssl = SSL_new(s->ssl_ctx);
    BIO *bio = c->ssl ? BIO_new(s->bio_method) : NULL;
    if (!bio) {
        ERR_clear_error();
        return fail(c, KILN_EUNAVAILABLE, "TLS: cannot create a session");
    }
    BIO_set_fd(bio, c->fd, BIO_NOCLOSE);
    SSL_set_bio(c->ssl, bio, bio);
    /* RFC 6066 3: SNI carries DNS names only; an IP address is checked
     * against the certificate's IP SANs instead of its DNS names. */
    if (s->host_is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), s->host) != 1)
            goto setup_failed;
    } else if (SSL_set_tlsext_host_name(c->ssl, s->host) != 1 ||
               SSL_set1_host(c->ssl, s->host) != 1) {
        goto setup_failed;
    }

    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        int saved = errno;
        if (r == 1)
            return 0;
        int kind = SSL_get_error(c->ssl, r);
        short want;
        if (kind == SSL_ERROR_WANT_READ)
            want = POLLIN;
        else if (kind == SSL_ERROR_WANT_WRITE)
            want = POLLOUT;
        else {
            tls_reason(c->ssl, r, saved, e, sizeof e);
            return fail(c, KILN_EUNAVAILABLE, "TLS handshake: %s", e);
        }
        if (wait_fd(c, c->fd, want, deadline))
            return fail(c, KILN_EUNAVAILABLE, "TLS handshake timed out after %u ms", timeout_ms);
    }

setup_failed:
    ERR_clear_error();
    return fail(c, KILN_EUNAVAILABLE, "TLS: cannot set the expected host name");
}

/*
 * The AUTH command into out: the configured user and password, or what the
 * credentials source gives now (an IAM token). Redis 6 ACLs: AUTH user
 * password; older servers: AUTH password.
 */
static int auth_command(struct valkey *c, kiln_buf *out)
{
    struct valkey_store *s = c->s;
    const char *argv[3] = { "AUTH", NULL, NULL };
    size_t lens[3] = { 4, 0, 0 };
    int argc = 1;
    char user[256] = "", password[8192] = "", err[256] = "";
    const char *u = s->user, *pw = s->password;
    if (s->credentials) {
        int rc = s->credentials(s->credentials_ctx, user, sizeof user, password, sizeof password,
                                err, sizeof err);
        if (rc) {
            explicit_bzero(password, sizeof password);
            return fail(c, KILN_EUNAVAILABLE, "no credentials for AUTH: %s", err);
        }
        u = user[0] ? user : NULL;
        pw = password;
    }
    if (u) {
        argv[argc] = u;
        lens[argc++] = strlen(u);
    }
    argv[argc] = pw;
    lens[argc++] = strlen(pw);
    add_command(out, argc, argv, lens);
    explicit_bzero(password, sizeof password);
    return 0;
}

static int authenticate(struct valkey *c, uint64_t deadline, unsigned timeout_ms)
{
    int rc;
    redisReply *reply = NULL;
    kiln_buf out; /* its own buffer: c->out already holds the caller's command */

    kiln_buf_init(&out, SIZE_MAX / 2);
    if ((rc = auth_command(c, &out))) {
        kiln_buf_free(&out);
        return rc;
    }
    rc = round_trip(c, &out, &reply, 1, deadline, timeout_ms);
    clear_out(&out);
    kiln_buf_free(&out);
    if (rc)
        return rc;
    if ((rc = kiln__kv_reply_auth(&c->base, reply))) {
        /* Prefix the interpreted text with where it came from. */
        char why[KILN__KV_ERR_MAX];
        memcpy(why, c->base.err, sizeof why);
        fail(c, rc, "%s", why);
        if (rc == KILN_EAUTH && c->s->credentials_rejected)
            c->s->credentials_rejected(c->s->credentials_ctx);
    }
    freeReplyObject(reply);
    if (rc == 0)
        c->authed_at = kiln_now_ms();
    return rc;
}

static int conn_open(struct valkey *c, uint64_t limit)
{
    struct valkey_store *s = c->s;
    uint64_t now = kiln_now_ms();
    unsigned ct = (unsigned)min_u64(s->connect_timeout_ms, limit - min_u64(limit, now));
    unsigned cmd = (unsigned)min_u64(s->command_timeout_ms, limit - min_u64(limit, now));
    int rc;

    if (s->tls && !s->ssl_ctx)
        return fail(c, KILN_EUNAVAILABLE, "TLS: %s", s->tls_error);
    if ((rc = tcp_connect(c, now + ct, ct)))
        return rc;
    if (s->tls && (rc = tls_handshake(c, now + ct, ct)))
        goto fail;
    c->reader = kiln__kv_reader_new();
    if ((s->password || s->credentials) && (rc = authenticate(c, kiln_now_ms() + cmd, cmd)))
        goto fail;
    return 0;
fail:
    conn_drop(c);
    return rc;
}

/*
 * Connect unless in backoff. During the backoff window the error is the one
 * that started it, returned at once; the first call after the window tries
 * again.
 */
static int connect_with_backoff(struct valkey *c, uint64_t limit)
{
    uint64_t now = kiln_now_ms();
    struct valkey_store *s = c->s;
    bool seen_back = atomic_load(&s->connected_at) > c->failed_at ||
                     (s->credentials_version &&
                      s->credentials_version(s->credentials_ctx) != c->failed_version);
    if (c->retry_at && now < c->retry_at && !seen_back)
        return kiln__kv_error(&c->base, c->connect_rc, "%s (next attempt in %llu ms)",
                              c->connect_err, (unsigned long long)(c->retry_at - now));
    /* Read before the attempt: a rotation landing during it still counts
     * as new afterwards. */
    unsigned long version = s->credentials_version ? s->credentials_version(s->credentials_ctx) : 0;
    int rc = conn_open(c, limit);
    if (rc == 0) {
        c->backoff_ms = 0;
        c->retry_at = 0;
        atomic_store(&c->s->connected_at, kiln_now_ms());
        return 0;
    }
    c->failed_at = kiln_now_ms();
    c->failed_version = version;
    c->backoff_ms = c->backoff_ms ? (unsigned)min_u64(c->backoff_ms * 2u, BACKOFF_MAX_MS)
                                  : BACKOFF_MIN_MS;
    c->retry_at = kiln_now_ms() + c->backoff_ms;
    c->connect_rc = rc;
    memcpy(c->connect_err, c->base.err, sizeof c->connect_err);
    return rc;
}

/*
 * Is the idle connection still worth using? Nothing should be readable on it
 * between commands; something readable is the server's FIN or RST (idle
 * timeout, restart) or garbage. Finding that out now means a restarted
 * server costs no failed command. TLS 1.3 session tickets may still sit
 * there: SSL_read consumes them and asks for more, which means alive.
 */
static bool conn_alive(struct valkey *c)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    if (poll(&p, 1, 0) == 0)
        return true;
    if (c->ssl && !(p.revents & (POLLERR | POLLHUP))) {
        char b;
        ERR_clear_error();
        int n = SSL_read(c->ssl, &b, 1);
        bool alive = n <= 0 && SSL_get_error(c->ssl, n) == SSL_ERROR_WANT_READ;
        ERR_clear_error();
        return alive;
    }
    return false;
}


/* ---- shared handle: one pipelined connection for a loop's fibers ---------- */

/*
 * Every fiber's commands go into p->out in call order and one write per loop
 * iteration (a uv_prepare, just before the loop polls) sends them; replies
 * come back in the same order and are handed to the waiters in FIFO order.
 * Connecting (TCP, TLS, AUTH) is done by the first fiber that needs the
 * connection, with the same code as a private handle (wait_fd parks it);
 * fibers arriving meanwhile queue behind it. Any failure fails every waiter:
 * with replies in order, nothing after a lost or late reply can be trusted.
 */
struct waiter {
    struct waiter *next;
    struct kiln_fiber *fiber;
    redisReply **replies;
    size_t n, got;
    uint64_t deadline;
    int rc;
    bool done;
};

struct pipe {
    struct valkey *c;        /* NULL once the handle is closed */
    uv_loop_t *loop;
    uv_poll_t *poll;         /* the connected socket's watcher; NULL when down */
    uv_prepare_t flush;
    uv_timer_t timer;        /* the earliest waiter's deadline */
    uint64_t timer_due;
    int closed;              /* handles whose close callback ran */
    kiln_buf out;            /* commands not yet written, from out_pos */
    size_t out_pos;
    struct waiter *head, **tail;
    bool connecting;
    bool want_write;
};

static void pipe_read(struct pipe *p);
static void pipe_flush(struct pipe *p);

static void on_poll_closed(uv_handle_t *h)
{
    free(h);
}

/* Take the socket out of the loop (before conn_drop closes it). */
static void pipe_io_stop(struct pipe *p)
{
    if (!p->poll)
        return;
    uv_poll_stop(p->poll);
    uv_close((uv_handle_t *)p->poll, on_poll_closed);
    p->poll = NULL;
    p->want_write = false;
}

/* Fail every waiter with rc (c->base.err says why), drop the connection.
 * self, when it is a waiter, is running and is not woken. */
static void pipe_fail(struct pipe *p, int rc, struct kiln_fiber *self)
{
    struct valkey *c = p->c;
    conn_drop(c);
    if (p->out.p)
        explicit_bzero(p->out.p, p->out.len);
    kiln_buf_reset(&p->out);
    p->out_pos = 0;
    uv_prepare_stop(&p->flush);
    uv_timer_stop(&p->timer);
    struct waiter *w = p->head;
    p->head = NULL;
    p->tail = &p->head;
    while (w) {
        struct waiter *next = w->next;
        free_replies(w->replies, w->n);
        w->rc = rc;
        w->done = true;
        if (w->fiber != self)
            kiln_fiber_wake(w->fiber);
        w = next;
    }
}

static void arm_timer(struct pipe *p, uint64_t deadline);

static void on_pipe_timer(uv_timer_t *h)
{
    struct pipe *p = h->data;
    if (!p->c || !p->head)
        return;
    if (p->connecting) {
        /* The connect has its own deadline; look again after it. */
        arm_timer(p, kiln_now_ms() + 100);
        return;
    }
    uint64_t now = kiln_now_ms(), next = UINT64_MAX;
    for (struct waiter *w = p->head; w; w = w->next) {
        if (w->deadline <= now) {
            pipe_fail(p, fail(p->c, KILN_EUNAVAILABLE, "no reply within %u ms",
                              p->c->s->command_timeout_ms), NULL);
            return;
        }
        next = min_u64(next, w->deadline);
    }
    if (next != UINT64_MAX)
        arm_timer(p, next);
}

static void arm_timer(struct pipe *p, uint64_t deadline)
{
    if (uv_is_active((uv_handle_t *)&p->timer) && p->timer_due <= deadline)
        return;
    uint64_t now = kiln_now_ms();
    p->timer_due = deadline;
    uv_timer_start(&p->timer, on_pipe_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_pipe_poll(uv_poll_t *h, int status, int events)
{
    struct pipe *p = h->data;
    (void)status;
    (void)events;
    /* Errors show up as failed reads and writes. */
    pipe_flush(p);
    if (p->poll == h)
        pipe_read(p);
}

static void on_pipe_prepare(uv_prepare_t *h)
{
    struct pipe *p = h->data;
    uv_prepare_stop(h);
    pipe_flush(p);
}

static void pipe_start(struct pipe *p)
{
    struct valkey *c = p->c;
    kiln_fdwatch_close(&c->watch);
    p->poll = kiln_malloc(sizeof *p->poll);
    if (uv_poll_init_socket(p->loop, p->poll, c->fd) != 0) {
        free(p->poll);
        p->poll = NULL;
        pipe_fail(p, fail(c, KILN_EUNAVAILABLE, "cannot watch the socket"), kiln_fiber_self());
        return;
    }
    p->poll->data = p;
    uv_poll_start(p->poll, UV_READABLE, on_pipe_poll);
    uv_prepare_start(&p->flush, on_pipe_prepare);
}

/* Write what is queued, as far as the socket takes it. */
static void pipe_flush(struct pipe *p)
{
    struct valkey *c = p->c;
    char e[128];
    if (!c || p->connecting || !p->poll)
        return;
    while (p->out_pos < p->out.len) {
        const char *at = p->out.p + p->out_pos;
        size_t len = p->out.len - p->out_pos;
        if (c->ssl) {
            ERR_clear_error();
            int n = SSL_write(c->ssl, at, len > INT_MAX ? INT_MAX : (int)len);
            int saved = errno;
            if (n > 0) {
                p->out_pos += (size_t)n;
                continue;
            }
            int kind = SSL_get_error(c->ssl, n);
            if (kind == SSL_ERROR_WANT_READ)
                return; /* the next readable event calls again */
            if (kind != SSL_ERROR_WANT_WRITE) {
                tls_reason(c->ssl, n, saved, e, sizeof e);
                pipe_fail(p, fail(c, KILN_EUNAVAILABLE, "TLS write: %s", e), NULL);
                return;
            }
        } else {
            ssize_t n = send(c->fd, at, len, MSG_NOSIGNAL);
            if (n > 0) {
                p->out_pos += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                pipe_fail(p, fail(c, KILN_EUNAVAILABLE, "send: %s",
                                  errno_text(errno, e, sizeof e)), NULL);
                return;
            }
        }
        if (!p->want_write) {
            p->want_write = true;
            uv_poll_start(p->poll, UV_READABLE | UV_WRITABLE, on_pipe_poll);
        }
        return;
    }
    if (p->out.cap > KEEP_OUT_BYTES)
        kiln_buf_free(&p->out);
    else
        kiln_buf_reset(&p->out);
    p->out_pos = 0;
    if (p->want_write) {
        p->want_write = false;
        uv_poll_start(p->poll, UV_READABLE, on_pipe_poll);
    }
}

/* Read what has arrived and hand complete replies to their waiters. */
static void pipe_read(struct pipe *p)
{
    struct valkey *c = p->c;
    char buf[16384], e[128];
    for (;;) {
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, buf, sizeof buf);
            int saved = errno;
            if (r <= 0) {
                int kind = SSL_get_error(c->ssl, r);
                if (kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE)
                    break;
                tls_reason(c->ssl, r, saved, e, sizeof e);
                pipe_fail(p, fail(c, KILN_EUNAVAILABLE, "TLS read: %s", e), NULL);
                return;
            }
            n = r;
        } else {
            n = recv(c->fd, buf, sizeof buf, 0);
            if (n == 0) {
                pipe_fail(p, fail(c, KILN_EUNAVAILABLE, "connection closed by the server"),
                          NULL);
                return;
            }
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                pipe_fail(p, fail(c, KILN_EUNAVAILABLE, "recv: %s",
                                  errno_text(errno, e, sizeof e)), NULL);
                return;
            }
        }
        if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            pipe_fail(p, fail(c, KILN_EPROTO, "bad reply: %s", c->reader->errstr), NULL);
            return;
        }
        if (c->reader->len - c->reader->pos > 2 * (size_t)MAX_REPLY_BYTES) {
            pipe_fail(p, fail(c, KILN_EPROTO, "reply larger than %u bytes", MAX_REPLY_BYTES),
                      NULL);
            return;
        }
        if ((size_t)n < sizeof buf && !c->ssl)
            break; /* drained: spare a recv that would say EAGAIN */
    }
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            pipe_fail(p, fail(c, KILN_EPROTO, "bad reply: %s",
                              c->reader->err == REDIS_ERR_OOM
                                  ? "array too large (or out of memory)"
                                  : c->reader->errstr), NULL);
            return;
        }
        if (!reply)
            break;
        struct waiter *w = p->head;
        if (!w) {
            freeReplyObject(reply);
            pipe_fail(p, fail(c, KILN_EPROTO, "reply to no command"), NULL);
            return;
        }
        w->replies[w->got++] = reply;
        if (w->got == w->n) {
            p->head = w->next;
            if (!p->head) {
                p->tail = &p->head;
                uv_timer_stop(&p->timer);
            }
            w->done = true;
            kiln_fiber_wake(w->fiber);
        }
    }
}

/* run() for a shared handle: queue c->out, wait for n replies. */
static int pipe_run(struct valkey *c, redisReply **replies, size_t n, uint64_t limit)
{
    struct pipe *p = c->pipe;
    struct waiter w = { .fiber = kiln_fiber_self(), .replies = replies, .n = n };
    if (!w.fiber)
        kiln_fatal("kv: a shared valkey handle used outside a fiber");
    for (size_t i = 0; i < n; i++)
        replies[i] = NULL;
    uint64_t now = kiln_now_ms();
    w.deadline = now + min_u64(c->s->command_timeout_ms, limit - min_u64(limit, now));
    if (kiln_buf_append(&p->out, c->out.p, c->out.len) != 0)
        kiln_fatal("kv: pipeline larger than the output buffer");
    clear_out(&c->out);
    *p->tail = &w;
    p->tail = &w.next;
    arm_timer(p, w.deadline);
    if (p->connecting) {
        /* queued behind the fiber that is connecting */
    } else if (c->fd >= 0) {
        uv_prepare_start(&p->flush, on_pipe_prepare);
    } else {
        p->connecting = true;
        int rc = connect_with_backoff(c, limit);
        p->connecting = false;
        if (rc)
            pipe_fail(p, rc, w.fiber);
        else
            pipe_start(p);
    }
    if (!w.done)
        kiln_fiber_park();
    return w.rc;
}

static void on_pipe_closed(uv_handle_t *h)
{
    struct pipe *p = h->data;
    if (++p->closed == 2) {
        kiln_buf_free(&p->out);
        free(p);
    }
}

/*
 * One command (or pipeline) in c->out, n replies. limit is an overall
 * deadline for connecting and the round trip (UINT64_MAX: the configured
 * timeouts alone).
 */
static int run_once(struct valkey *c, redisReply **replies, size_t n, uint64_t limit)
{
    int rc;
    if (c->pipe)
        return pipe_run(c, replies, n, limit);
    if (c->fd >= 0 && !conn_alive(c))
        conn_drop(c);
    if (c->fd < 0 && (rc = connect_with_backoff(c, limit))) {
        clear_out(&c->out);
        return rc;
    }
    uint64_t now = kiln_now_ms();
    unsigned t = (unsigned)min_u64(c->s->command_timeout_ms, limit - min_u64(limit, now));
    return round_trip(c, &c->out, replies, n, now + t, t);
}

static int after_reply(struct valkey *c, int rc);

/*
 * A connection whose last AUTH is older than the re-authentication interval
 * sends AUTH again, with fresh credentials, in front of the next command:
 * same round trip, and on a shared handle the same pipeline (authed_at is
 * set first, so one fiber does it).
 */
static int run(struct valkey *c, redisReply **replies, size_t n, uint64_t limit)
{
    struct valkey_store *s = c->s;
    if (!s->reauth_ms || c->fd < 0 || (c->pipe && !c->authed_at) ||
        kiln_now_ms() - c->authed_at < s->reauth_ms)
        return run_once(c, replies, n, limit);
    c->authed_at = kiln_now_ms();
    kiln_buf cmd = c->out;
    kiln_buf_init(&c->out, cmd.max);
    int rc = auth_command(c, &c->out);
    if (rc == 0)
        rc = kiln_buf_append(&c->out, cmd.p, cmd.len) == 0 ? 0 : KILN_ETOOBIG;
    clear_out(&cmd);
    kiln_buf_free(&cmd);
    if (rc) {
        clear_out(&c->out);
        return rc;
    }
    redisReply *all[MAX_REPLIES + 1] = { NULL };
    rc = run_once(c, all, n + 1, limit);
    for (size_t i = 0; i < n; i++)
        replies[i] = rc ? NULL : all[i + 1];
    if (rc)
        return rc;
    int arc = kiln__kv_reply_auth(&c->base, all[0]);
    freeReplyObject(all[0]);
    if (arc) {
        free_replies(replies, n);
        if (arc == KILN_EAUTH && s->credentials_rejected)
            s->credentials_rejected(s->credentials_ctx);
        return after_reply(c, arc);
    }
    kiln_log(KILN_LOG_DEBUG, "valkey: re-authenticated", NULL);
    return 0;
}

/* After an interpreted error that may leave the connection in a bad state
 * (a protocol surprise, a failover, an auth change), start afresh. */
static int after_reply(struct valkey *c, int rc)
{
    if (rc == KILN_EPROTO || rc == KILN_EUNAVAILABLE || rc == KILN_EAUTH) {
        char why[KILN__KV_ERR_MAX];
        memcpy(why, c->base.err, sizeof why);
        fail(c, rc, "%s", why);
        if (c->pipe)
            pipe_fail(c->pipe, rc, NULL); /* whoever is in flight shares it */
        else
            conn_drop(c);
    }
    return rc;
}

/* ---- the driver ------------------------------------------------------------ */

static struct valkey *conn_of(struct kiln_kv *kv) { return (struct valkey *)kv; }

static int valkey_get(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    const char *argv[] = { "GET", key.p };
    size_t lens[] = { 3, key.len };
    add_command(&c->out, 2, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_get(kv, r, a, out);
    freeReplyObject(r);
    return after_reply(c, rc);
}

static int valkey_set(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    char ttl[24];
    const char *argv[] = { "SET", key.p, value.p, "PX", ttl };
    size_t lens[] = { 3, key.len, value.len, 2, 0 };
    lens[4] = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);
    add_command(&c->out, ttl_ms ? 5 : 3, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_set(kv, r);
    freeReplyObject(r);
    return after_reply(c, rc);
}

/* One command, so atomic on the server: a DEL lands before it (nothing
 * written) or after it (the key is gone). */
static int valkey_replace(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    char ttl[24];
    const char *argv[] = { "SET", key.p, value.p, "XX", "PX", ttl };
    size_t lens[] = { 3, key.len, value.len, 2, 2, 0 };
    lens[5] = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);
    add_command(&c->out, ttl_ms ? 6 : 4, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_replace(kv, r);
    freeReplyObject(r);
    return after_reply(c, rc);
}

/* GETDEL rather than GET + DEL in MULTI: one command, one reply, and the
 * same single winner among concurrent takers. */
static int valkey_take(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    const char *argv[] = { "GETDEL", key.p };
    size_t lens[] = { 6, key.len };
    add_command(&c->out, 2, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_take(kv, r, a, out);
    freeReplyObject(r);
    return after_reply(c, rc);
}

static int valkey_del(struct kiln_kv *kv, kiln_str key, bool *deleted)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    const char *argv[] = { "DEL", key.p };
    size_t lens[] = { 3, key.len };
    add_command(&c->out, 2, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_del(kv, r, deleted);
    freeReplyObject(r);
    return after_reply(c, rc);
}

static int valkey_expire(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    char ttl[24];
    const char *argv[] = { "PEXPIRE", key.p, ttl };
    size_t lens[] = { 7, key.len, 0 };
    lens[2] = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);
    add_command(&c->out, 3, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_expire(kv, r);
    freeReplyObject(r);
    return after_reply(c, rc);
}

/*
 * Atomic increment with a TTL set only when this increment creates the key:
 * MULTI, SET key 0 PX ttl NX, INCR, PTTL, EXEC, in one write. SET NX (rather
 * than PEXPIRE NX after INCR) leaves an existing key's TTL, or its lack of
 * one, alone, never touches a non-integer value that INCR then refuses, and
 * works on servers older than Redis 7.
 */
static int valkey_incr(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms, int64_t *value,
                       uint64_t *ttl_left_ms)
{
    struct valkey *c = conn_of(kv);
    redisReply *r[MAX_REPLIES];
    bool with_ttl = ttl_ms > 0;
    size_t n = KILN__KV_INCR_REPLIES(with_ttl);
    char ttl[24];
    size_t ttl_len = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);

    const char *multi[] = { "MULTI" };
    const size_t multi_len[] = { 5 };
    const char *set[] = { "SET", key.p, "0", "PX", ttl, "NX" };
    const size_t set_len[] = { 3, key.len, 1, 2, ttl_len, 2 };
    const char *incr[] = { "INCR", key.p };
    const size_t incr_len[] = { 4, key.len };
    const char *pttl[] = { "PTTL", key.p };
    const size_t pttl_len[] = { 4, key.len };
    const char *exec[] = { "EXEC" };
    const size_t exec_len[] = { 4 };

    add_command(&c->out, 1, multi, multi_len);
    if (with_ttl)
        add_command(&c->out, 6, set, set_len);
    add_command(&c->out, 2, incr, incr_len);
    add_command(&c->out, 2, pttl, pttl_len);
    add_command(&c->out, 1, exec, exec_len);
    int rc = run(c, r, n, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_incr(kv, r, n, with_ttl, value, ttl_left_ms);
    free_replies(r, n);
    return after_reply(c, rc);
}

static int valkey_ping(struct kiln_kv *kv, unsigned timeout_ms)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    const char *argv[] = { "PING" };
    size_t lens[] = { 4 };
    add_command(&c->out, 1, argv, lens);
    int rc = run(c, &r, 1, timeout_ms ? kiln_now_ms() + timeout_ms : UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_ping(kv, r);
    freeReplyObject(r);
    return after_reply(c, rc);
}

/*
 * SADD and, with a TTL, PEXPIRE in one transaction: an index must never be
 * left without the TTL that keeps it from outliving what it indexes, which
 * two separate commands would allow when the connection drops between them.
 */
static int valkey_sadd(struct kiln_kv *kv, kiln_str key, kiln_str member, uint64_t ttl_ms,
                       bool *added)
{
    struct valkey *c = conn_of(kv);
    redisReply *r[MAX_REPLIES];
    bool with_ttl = ttl_ms > 0;
    size_t n = KILN__KV_SADD_REPLIES(with_ttl);
    char ttl[24];
    size_t ttl_len = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);

    const char *multi[] = { "MULTI" };
    const size_t multi_len[] = { 5 };
    const char *sadd[] = { "SADD", key.p, member.p };
    const size_t sadd_len[] = { 4, key.len, member.len };
    const char *pexpire[] = { "PEXPIRE", key.p, ttl };
    const size_t pexpire_len[] = { 7, key.len, ttl_len };
    const char *exec[] = { "EXEC" };
    const size_t exec_len[] = { 4 };

    if (with_ttl)
        add_command(&c->out, 1, multi, multi_len);
    add_command(&c->out, 3, sadd, sadd_len);
    if (with_ttl) {
        add_command(&c->out, 3, pexpire, pexpire_len);
        add_command(&c->out, 1, exec, exec_len);
    }
    int rc = run(c, r, n, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_sadd(kv, r, n, with_ttl, added);
    free_replies(r, n);
    return after_reply(c, rc);
}

static int valkey_srem(struct kiln_kv *kv, kiln_str key, const kiln_str *members, size_t n,
                       size_t *removed)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    /* Up to KILN_KV_SET_LIST_MAX members: too many for a fiber's stack. */
    const char **argv = kiln_malloc((n + 2) * sizeof *argv);
    size_t *lens = kiln_malloc((n + 2) * sizeof *lens);
    argv[0] = "SREM";
    lens[0] = 4;
    argv[1] = key.p;
    lens[1] = key.len;
    for (size_t i = 0; i < n; i++) {
        argv[i + 2] = members[i].p;
        lens[i + 2] = members[i].len;
    }
    add_command(&c->out, (int)(n + 2), argv, lens);
    free(argv);
    free(lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_srem(kv, r, removed);
    freeReplyObject(r);
    return after_reply(c, rc);
}

/* SRANDMEMBER with a positive count: distinct members, never more than
 * asked, so the reply is bounded whatever the set's size. */
static int valkey_smembers(struct kiln_kv *kv, kiln_arena *a, kiln_str key, size_t max,
                           kiln_str **out, size_t *n)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    char count[24];
    const char *argv[] = { "SRANDMEMBER", key.p, count };
    size_t lens[] = { 11, key.len, 0 };
    lens[2] = (size_t)snprintf(count, sizeof count, "%zu", max);
    add_command(&c->out, 3, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = kiln__kv_reply_members(kv, r, a, max, out, n);
    freeReplyObject(r);
    return after_reply(c, rc);
}

static int valkey_publish(struct kiln_kv *kv, const char *channel, kiln_str message)
{
    struct valkey *c = conn_of(kv);
    redisReply *r;
    const char *argv[] = { "PUBLISH", channel, message.p };
    size_t lens[] = { 7, strlen(channel), message.len };
    add_command(&c->out, 3, argv, lens);
    int rc = run(c, &r, 1, UINT64_MAX);
    if (rc)
        return rc;
    rc = r->type == REDIS_REPLY_INTEGER ? 0 : unexpected(kv, "PUBLISH", r);
    freeReplyObject(r);
    return after_reply(c, rc);
}

/* A pushed ["message", channel, payload] to on_message; anything else on
 * a subscribed connection (the subscribe confirmation, a pong) is
 * ignored. */
static void listen_reply(const redisReply *r, void (*on_message)(void *arg, kiln_str message),
                         void *arg)
{
    if ((r->type == REDIS_REPLY_ARRAY || r->type == 5 /* RESP3 push */) && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 7 &&
        !memcmp(r->element[0]->str, "message", 7) && r->element[2]->type == REDIS_REPLY_STRING)
        on_message(arg, (kiln_str){ r->element[2]->str, r->element[2]->len });
}

static int valkey_listen(struct kiln_kv *kv, const char *channel, int wake_fd, uint64_t deadline,
                         void (*on_message)(void *arg, kiln_str message), void *arg, bool *fresh)
{
    struct valkey *c = conn_of(kv);
    int rc;
    if (!c->subscribed) {
        /* SUBSCRIBE answers like a command: one round trip (with a fresh
         * connection and AUTH as any other), then the connection only
         * receives. */
        const char *argv[] = { "SUBSCRIBE", channel };
        size_t lens[] = { 9, strlen(channel) };
        redisReply *r;
        add_command(&c->out, 2, argv, lens);
        if ((rc = run(c, &r, 1, UINT64_MAX)))
            return rc;
        bool ok = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  !strcmp(r->element[0]->str, "subscribe");
        rc = ok ? 0 : unexpected(kv, "SUBSCRIBE", r);
        freeReplyObject(r);
        if (rc) {
            conn_drop(c);
            return rc;
        }
        c->subscribed = true;
        *fresh = true;
    }
    char buf[16384];
    for (;;) {
        /* Replies already read (or decrypted) first; after a batch of
         * messages the caller acts on them. */
        bool got = false;
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
                rc = fail(c, KILN_EPROTO, "bad message: %s", c->reader->errstr);
                conn_drop(c);
                return rc;
            }
            if (!reply)
                break;
            listen_reply(reply, on_message, arg);
            freeReplyObject(reply);
            got = true;
        }
        if (got && !(c->ssl && SSL_pending(c->ssl) > 0))
            return 0;
        if (c->ssl && SSL_pending(c->ssl) > 0) {
            size_t k = 0;
            if ((rc = conn_read(c, buf, sizeof buf, UINT64_MAX, 0, &k)) ||
                redisReaderFeed(c->reader, buf, k) != REDIS_OK) {
                rc = rc ? rc : fail(c, KILN_EPROTO, "bad message");
                conn_drop(c);
                return rc;
            }
            continue;
        }
        uint64_t now = kiln_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = wake_fd, .events = POLLIN } };
        uint64_t wait = deadline - now;
        int n = poll(p, wake_fd >= 0 ? 2 : 1, wait > 60000 ? 60000 : (int)wait);
        if (n < 0 && errno != EINTR) {
            rc = fail(c, KILN_EIO, "poll: %s", strerror(errno));
            conn_drop(c);
            return rc;
        }
        if (n > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP))) {
            size_t k = 0;
            if ((rc = conn_read(c, buf, sizeof buf, kiln_now_ms() + 1000, 1000, &k))) {
                conn_drop(c);
                return rc;
            }
            if (redisReaderFeed(c->reader, buf, k) != REDIS_OK) {
                rc = fail(c, KILN_EPROTO, "bad message: %s", c->reader->errstr);
                conn_drop(c);
                return rc;
            }
            continue;
        }
        if (n > 0 && wake_fd >= 0 && (p[1].revents & POLLIN))
            return 0;
    }
}

static struct kiln_kv *valkey_open(struct kiln_kv_store *base)
{
    struct valkey_store *s = (struct valkey_store *)base;
    struct valkey *c = kiln_calloc(1, sizeof *c);
    c->s = s;
    c->fd = -1;
    c->base.secret = s->password;
    kiln_buf_init(&c->out, 2 * (size_t)MAX_REPLY_BYTES);
    return &c->base;
}

static struct kiln_kv *valkey_open_shared(struct kiln_kv_store *base)
{
    uv_loop_t *loop = kiln_fiber_loop();
    if (!loop)
        kiln_fatal("kv: kiln_kv_open_shared outside a loop thread");
    struct valkey *c = conn_of(valkey_open(base));
    struct pipe *p = kiln_calloc(1, sizeof *p);
    p->c = c;
    p->loop = loop;
    p->tail = &p->head;
    kiln_buf_init(&p->out, 64 * (size_t)MAX_REPLY_BYTES);
    uv_prepare_init(loop, &p->flush);
    uv_timer_init(loop, &p->timer);
    p->flush.data = p->timer.data = p;
    /* Neither keeps the loop alive: the connections it serves do. */
    uv_unref((uv_handle_t *)&p->flush);
    uv_unref((uv_handle_t *)&p->timer);
    c->pipe = p;
    return &c->base;
}

static void valkey_close(struct kiln_kv *kv)
{
    struct valkey *c = conn_of(kv);
    struct pipe *p = c->pipe;
    if (p) {
        /* No fiber is left to wait on it: the loop is stopping. */
        pipe_io_stop(p);
        p->c = NULL;
        uv_close((uv_handle_t *)&p->flush, on_pipe_closed);
        uv_close((uv_handle_t *)&p->timer, on_pipe_closed);
        c->pipe = NULL;
    }
    /* A polite close_notify, best effort: the socket is non-blocking. */
    if (c->ssl) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    conn_drop(c);
    clear_out(&c->out);
    kiln_buf_free(&c->out);
    free(c);
}

/* The shared TLS context; on failure ssl_ctx stays NULL and every connect
 * fails with tls_error, so a bad CA file shows on /readyz and in logs. */
static void tls_setup(struct valkey_store *s, const char *ca_file)
{
    char e[160];
    const char *what;

    s->bio_method = bio_method_new();
    s->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!s->bio_method || !s->ssl_ctx) {
        what = "cannot create a TLS context";
        goto fail;
    }
    SSL_CTX_set_min_proto_version(s->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(s->ssl_ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(s->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (ca_file) {
        if (SSL_CTX_load_verify_locations(s->ssl_ctx, ca_file, NULL) != 1) {
            what = "cannot load the CA file";
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(s->ssl_ctx) != 1) {
        what = "cannot load the system trust store";
        goto fail;
    }
    return;

fail:
    ERR_error_string_n(ERR_peek_last_error(), e, sizeof e);
    ERR_clear_error();
    snprintf(s->tls_error, sizeof s->tls_error, "%s%s%s: %s", what, ca_file ? " " : "",
             ca_file ? ca_file : "", e);
    SSL_CTX_free(s->ssl_ctx);
    s->ssl_ctx = NULL;
    kiln_log(KILN_LOG_ERROR, "kv: valkey TLS setup failed", "error", s->tls_error, NULL);
}

struct kiln_kv_store *kiln__kv_valkey_new(const struct kiln_kv_config *cfg)
{
    struct valkey_store *s = kiln_calloc(1, sizeof *s);
    unsigned char addr[sizeof(struct in6_addr)];

    s->base.ops = &valkey_ops;
    s->host = kiln_strdup(cfg->host);
    snprintf(s->port, sizeof s->port, "%u", cfg->port ? cfg->port : DEFAULT_PORT);
    s->user = cfg->user && cfg->user[0] ? kiln_strdup(cfg->user) : NULL;
    s->password = cfg->password && cfg->password[0] ? kiln_strdup(cfg->password) : NULL;
    s->credentials = cfg->credentials;
    s->credentials_ctx = cfg->credentials_ctx;
    s->credentials_rejected = cfg->credentials_rejected;
    s->credentials_version = cfg->credentials_version;
    s->reauth_ms = cfg->credentials ? (uint64_t)cfg->reauth_interval_s * 1000u : 0;
    s->host_is_ip = inet_pton(AF_INET, s->host, addr) == 1 ||
                    inet_pton(AF_INET6, s->host, addr) == 1;
    s->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
                                                    : DEFAULT_TIMEOUT_MS;
    s->command_timeout_ms = cfg->command_timeout_ms ? cfg->command_timeout_ms
                                                    : DEFAULT_TIMEOUT_MS;
    s->tls = cfg->tls;
    if (s->tls)
        tls_setup(s, cfg->ca_file && cfg->ca_file[0] ? cfg->ca_file : NULL);
    return &s->base;
}

static void valkey_store_free(struct kiln_kv_store *base)
{
    struct valkey_store *s = (struct valkey_store *)base;
    if (s->password) {
        explicit_bzero(s->password, strlen(s->password));
        free(s->password);
    }
    free(s->host);
    free(s->user);
    SSL_CTX_free(s->ssl_ctx);
    if (s->bio_method)
        BIO_meth_free(s->bio_method);
    free(s);
}

static const struct kiln_kv_ops valkey_ops = {
    .name = "valkey",
    .store_free = valkey_store_free,
    .open = valkey_open,
    .open_shared = valkey_open_shared,
    .close = valkey_close,
    .get = valkey_get,
    .set = valkey_set,
    .replace = valkey_replace,
    .take = valkey_take,
    .del = valkey_del,
    .expire = valkey_expire,
    .incr = valkey_incr,
    .ping = valkey_ping,
    .sadd = valkey_sadd,
    .srem = valkey_srem,
    .smembers = valkey_smembers,
    .publish = valkey_publish,
    .listen = valkey_listen,
};
