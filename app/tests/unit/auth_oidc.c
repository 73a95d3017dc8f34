/*
 * Unit tests for app/src/auth/oidc.c and app/src/core/http_client.c, with
 * no network: a tiny HTTP/1.1 server thread on 127.0.0.1 (plain sockets)
 * plays every identity provider. Each provider is an issuer path on it
 * (/p1, /basic, /apple …) that serves a discovery document, and all share
 * one JWKS and one canned token answer that the tests set. So the whole
 * path runs for real: discovery, authorization URL, token exchange (post
 * and Basic client authentication, Apple's ES256 client secret), ID token
 * verification, JWKS refetch on an unknown kid and its rate limit.
 * The log goes to a temporary file, which the last test searches for
 * secrets, codes and tokens.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "test_util.h"

#include "auth/jwt.h"
#include "auth/oidc.h"
#include "core/arena.h"
#include "core/base64.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"

#define CLIENT_ID "client/1"          /* '/' must come out percent-encoded */
#define CLIENT_SECRET "s3cr&t-XYZZY"  /* '&' too */
#define APPLE_CLIENT "com.example.web"
#define TEAM "TEAM123456"
#define KEY_ID "KEY1234567"
#define REDIRECT "http://app.example/auth/mock/callback"
#define CODE "code-abc-PLUGH"
#define VERIFIER "verifier-0123456789012345678901234567890123"
#define NONCE "nonce-42"

/* --- the fake provider -------------------------------------------------------- */

static struct {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    /* answers, set by tests */
    char *jwks;
    int token_status;
    char *token_body;
    unsigned discovery_delay_ms;
    /* what was asked */
    struct {
        char path[256];
        int n;
    } hits[64];
    char form[8192];
    char auth[1024];
} srv = { .mu = PTHREAD_MUTEX_INITIALIZER };

static int hits(const char *path)
{
    int n = 0;
    pthread_mutex_lock(&srv.mu);
    for (size_t i = 0; i < ARRAY_LEN(srv.hits); i++)
        if (strcmp(srv.hits[i].path, path) == 0)
            n = srv.hits[i].n;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static void count_hit(const char *path)
{
    for (size_t i = 0; i < ARRAY_LEN(srv.hits); i++) {
        if (strcmp(srv.hits[i].path, path) == 0 || !srv.hits[i].path[0]) {
            snprintf(srv.hits[i].path, sizeof srv.hits[i].path, "%s", path);
            srv.hits[i].n++;
            return;
        }
    }
}

static void reset_server(void)
{
    pthread_mutex_lock(&srv.mu);
    memset(srv.hits, 0, sizeof srv.hits);
    srv.form[0] = srv.auth[0] = '\0';
    srv.token_status = 200;
    srv.discovery_delay_ms = 0;
    pthread_mutex_unlock(&srv.mu);
}

static void set_answer(char **slot, const char *body)
{
    pthread_mutex_lock(&srv.mu);
    free(*slot);
    *slot = strdup(body);
    pthread_mutex_unlock(&srv.mu);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, int status, const char *extra_headers, const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, len, extra_headers ? extra_headers : "");
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

/* Case-insensitive header lookup in the request head; copies the value. */
static bool header(const char *head, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, name, n) == 0 && l[2 + n] == ':') {
            const char *v = l + 3 + n;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            snprintf(out, cap, "%.*s", (int)(e - v), v);
            return true;
        }
    }
    return false;
}

/* Discovery documents: one per issuer path, each with a twist. */
static void discovery(int fd, const char *prefix)
{
    char base[128], doc[2048];
    const char *methods = ",\"token_endpoint_auth_methods_supported\":"
                          "[\"client_secret_post\",\"client_secret_basic\"]";
    const char *issuer_suffix = "";
    char auth_ep[256];
    snprintf(base, sizeof base, "http://127.0.0.1:%d%s", srv.port, prefix);
    snprintf(auth_ep, sizeof auth_ep, "%s/authorize", base);
    if (!strcmp(prefix, "/basic"))
        methods = ",\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\"]";
    else if (!strcmp(prefix, "/noauth"))
        methods = "";
    else if (!strcmp(prefix, "/none"))
        methods = ",\"token_endpoint_auth_methods_supported\":[\"none\"]";
    else if (!strcmp(prefix, "/apple"))
        methods = ",\"token_endpoint_auth_methods_supported\":[\"client_secret_post\"]";
    else if (!strcmp(prefix, "/bad-iss"))
        issuer_suffix = "/other";
    else if (!strcmp(prefix, "/p1"))
        snprintf(auth_ep, sizeof auth_ep, "%s/authorize?prompt=login", base);
    if (!strcmp(prefix, "/insecure"))
        snprintf(doc, sizeof doc,
                 "{\"issuer\":\"%s\",\"authorization_endpoint\":\"http://idp.example/a\","
                 "\"token_endpoint\":\"http://idp.example/t\",\"jwks_uri\":\"%s/jwks\"}",
                 base, base);
    else
        snprintf(doc, sizeof doc,
                 "{\"issuer\":\"%s%s\",\"authorization_endpoint\":\"%s\","
                 "\"token_endpoint\":\"%s/token\",\"jwks_uri\":\"%s/jwks\","
                 "\"response_types_supported\":[\"code\"]%s}",
                 base, issuer_suffix, auth_ep, base, base, methods);
    respond(fd, 200, NULL, doc, strlen(doc));
}

static void serve_one(int fd)
{
    char req[32768];
    size_t len = 0;
    char *end = NULL;
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (!end && len < sizeof req - 1) {
        ssize_t r = recv(fd, req + len, sizeof req - 1 - len, 0);
        if (r <= 0)
            return;
        len += (size_t)r;
        req[len] = '\0';
        end = strstr(req, "\r\n\r\n");
    }
    if (!end)
        return;
    char method[8], path[256], value[1024];
    if (sscanf(req, "%7s %255s", method, path) != 2)
        return;
    size_t body_len = header(req, "Content-Length", value, sizeof value) ? strtoul(value, NULL, 10) : 0;
    if (header(req, "Expect", value, sizeof value))
        send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    size_t have = len - (size_t)(end + 4 - req);
    while (have < body_len && len < sizeof req - 1) {
        ssize_t r = recv(fd, req + len, sizeof req - 1 - len, 0);
        if (r <= 0)
            return;
        len += (size_t)r;
        have += (size_t)r;
        req[len] = '\0';
    }

    pthread_mutex_lock(&srv.mu);
    count_hit(path);
    unsigned delay = srv.discovery_delay_ms;
    pthread_mutex_unlock(&srv.mu);

    char *wk = strstr(path, "/.well-known/openid-configuration");
    if (wk) {
        if (delay)
            usleep(delay * 1000);
        *wk = '\0';
        discovery(fd, path);
    } else if (strlen(path) > 5 && !strcmp(path + strlen(path) - 5, "/jwks")) {
        pthread_mutex_lock(&srv.mu);
        char *body = strdup(srv.jwks ? srv.jwks : "{\"keys\":[]}");
        pthread_mutex_unlock(&srv.mu);
        respond(fd, 200, NULL, body, strlen(body));
        free(body);
    } else if (strlen(path) > 6 && !strcmp(path + strlen(path) - 6, "/token")) {
        pthread_mutex_lock(&srv.mu);
        snprintf(srv.form, sizeof srv.form, "%.*s", (int)body_len, end + 4);
        if (!header(req, "Authorization", srv.auth, sizeof srv.auth))
            srv.auth[0] = '\0';
        char *body = strdup(srv.token_body ? srv.token_body : "{}");
        int status = srv.token_status;
        pthread_mutex_unlock(&srv.mu);
        respond(fd, status, NULL, body, strlen(body));
        free(body);
    } else if (!strcmp(path, "/big")) {
        size_t n = 2u << 20;
        char *big = malloc(n);
        memset(big, ' ', n);
        respond(fd, 200, NULL, big, n);
        free(big);
    } else if (!strcmp(path, "/big-chunked")) {
        const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                           "Connection: close\r\n\r\n";
        send_all(fd, head, strlen(head));
        char *chunk = malloc(65536);
        memset(chunk, 'x', 65536);
        for (int i = 0; i < 40; i++) {
            send_all(fd, "10000\r\n", 7);
            send_all(fd, chunk, 65536);
            send_all(fd, "\r\n", 2);
        }
        free(chunk);
        send_all(fd, "0\r\n\r\n", 5);
    } else if (!strcmp(path, "/slow")) {
        usleep(1500 * 1000);
        respond(fd, 200, NULL, "{}", 2);
    } else if (!strcmp(path, "/redirect")) {
        respond(fd, 302, "Location: /p1/jwks\r\n", "", 0);
    } else if (!strcmp(path, "/echo-method")) {
        respond(fd, 200, NULL, method, strlen(method));
    } else {
        respond(fd, 404, NULL, "{\"error\":\"not_found\"}", 21);
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd pfd = { srv.fd, POLLIN, 0 };
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int c = accept(srv.fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(c);
        close(c);
    }
    return NULL;
}

static int listen_loopback(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    int port;
    int fd = listen_loopback(&port);
    close(fd);
    return port;
}

/* --- keys and tokens ---------------------------------------------------------- */

static EVP_PKEY *pk1, *pk2, *apple_key;
static char *apple_pem_escaped, *apple_pem, *rsa_pem;
static char log_path[64];
static int log_fd = -1;

static char *b64(const void *p, size_t n)
{
    char *out = malloc(kiln_base64url_len(n) + 1);
    kiln_base64url_encode(p, n, out);
    return out;
}

static char *ec_jwk(EVP_PKEY *key, const char *kid)
{
    BIGNUM *x = NULL, *y = NULL;
    unsigned char bx[32], by[32];
    assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
    assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
    BN_bn2binpad(x, bx, 32);
    BN_bn2binpad(y, by, 32);
    char *sx = b64(bx, 32), *sy = b64(by, 32);
    char *out = malloc(512);
    snprintf(out, 512,
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"use\":\"sig\",\"alg\":\"ES256\",\"kid\":\"%s\","
             "\"x\":\"%s\",\"y\":\"%s\"}", kid, sx, sy);
    free(sx);
    free(sy);
    BN_free(x);
    BN_free(y);
    return out;
}

static void serve_keys(EVP_PKEY *key, const char *kid)
{
    char *k = ec_jwk(key, kid), doc[1024];
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", k);
    set_answer(&srv.jwks, doc);
    free(k);
}

static char *issuer(const char *prefix)
{
    static char buf[8][128];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 128, "http://127.0.0.1:%d%s", srv.port, prefix);
    return b;
}

/* An ID token signed by key under kid, with claims for this provider. */
static char *id_token(EVP_PKEY *key, const char *kid, const char *iss, const char *aud,
                      const char *nonce, long exp_in, const char *extra)
{
    char claims[2048];
    long long now = (long long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"user-42\",\"exp\":%lld,\"iat\":%lld,"
             "\"nonce\":\"%s\",\"email\":\"ada@example.com\",\"email_verified\":true,"
             "\"name\":\"Ada Lovelace\",\"given_name\":\"Ada\",\"family_name\":\"Lovelace\","
             "\"picture\":\"https://img.example/ada.png\"%s}",
             iss, aud, now + exp_in, now, nonce, extra ? extra : "");
    char *t = kiln_jwt_sign_es256(key, kid, kiln_str_c(claims));
    assert_non_null(t);
    return t;
}

static void serve_token(int status, const char *id_tok)
{
    char body[8192];
    if (id_tok)
        snprintf(body, sizeof body,
                 "{\"access_token\":\"at-SECRET\",\"token_type\":\"Bearer\",\"expires_in\":3600,"
                 "\"id_token\":\"%s\"}", id_tok);
    else
        snprintf(body, sizeof body, "{\"error\":\"invalid_grant\","
                                    "\"error_description\":\"code already used\"}");
    pthread_mutex_lock(&srv.mu);
    srv.token_status = status;
    pthread_mutex_unlock(&srv.mu);
    set_answer(&srv.token_body, body);
}

static char *pem_of(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static char *escape_newlines(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 1), *o = out;
    for (; *s; s++) {
        if (*s == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

/* --- a fake environment ------------------------------------------------------- */

#define MAX_ENV 64
struct env {
    const char *kv[MAX_ENV][2];
};

/* Placeholders in tables, resolved at lookup: keys made at setup. */
static const char *fake_getenv(void *ctx, const char *name)
{
    const struct env *e = ctx;
    for (size_t i = 0; i < MAX_ENV && e->kv[i][0]; i++) {
        if (strcmp(e->kv[i][0], name) != 0)
            continue;
        const char *v = e->kv[i][1];
        if (v && !strcmp(v, "@PEM@"))
            return apple_pem;
        if (v && !strcmp(v, "@PEM_ESCAPED@"))
            return apple_pem_escaped;
        if (v && !strcmp(v, "@RSA_PEM@"))
            return rsa_pem;
        return v;
    }
    return NULL;
}

static struct env flow_env;
static char flow_vals[MAX_ENV][160];

static void flow_set(size_t *n, const char *name, const char *value)
{
    snprintf(flow_vals[*n], sizeof flow_vals[*n], "%s", value);
    flow_env.kv[*n][0] = name;
    flow_env.kv[*n][1] = flow_vals[*n];
    (*n)++;
}

/* Every provider the flow tests use, on the fake server; a fresh registry
 * (empty caches) each time. */
static void load_flow_providers(void)
{
    size_t n = 0;
    char down[64];
    memset(&flow_env, 0, sizeof flow_env);
    flow_set(&n, "OIDC_PROVIDERS", "mock, basic,noauth,none,bad-iss,insecure,down,conc");
    static const struct {
        const char *var, *prefix;
    } gens[] = {
        { "OIDC_MOCK_ISSUER", "/p1" },       { "OIDC_BASIC_ISSUER", "/basic" },
        { "OIDC_NOAUTH_ISSUER", "/noauth" }, { "OIDC_NONE_ISSUER", "/none" },
        { "OIDC_BAD_ISS_ISSUER", "/bad-iss" }, { "OIDC_INSECURE_ISSUER", "/insecure" },
        { "OIDC_CONC_ISSUER", "/conc" },
    };
    static char ids[8][40], secrets[8][40];
    for (size_t i = 0; i < ARRAY_LEN(gens); i++) {
        flow_set(&n, gens[i].var, issuer(gens[i].prefix));
        size_t plen = strlen(gens[i].var) - strlen("ISSUER");
        snprintf(ids[i], sizeof ids[i], "%.*sCLIENT_ID", (int)plen, gens[i].var);
        snprintf(secrets[i], sizeof secrets[i], "%.*sCLIENT_SECRET", (int)plen, gens[i].var);
        flow_set(&n, ids[i], CLIENT_ID);
        flow_set(&n, secrets[i], CLIENT_SECRET);
    }
    snprintf(down, sizeof down, "http://127.0.0.1:%d", closed_port());
    flow_set(&n, "OIDC_DOWN_ISSUER", down);
    flow_set(&n, "OIDC_DOWN_CLIENT_ID", CLIENT_ID);
    flow_set(&n, "OIDC_DOWN_CLIENT_SECRET", CLIENT_SECRET);
    flow_set(&n, "APPLE_ISSUER", issuer("/apple"));
    flow_set(&n, "APPLE_CLIENT_ID", APPLE_CLIENT);
    flow_set(&n, "APPLE_TEAM_ID", TEAM);
    flow_set(&n, "APPLE_KEY_ID", KEY_ID);
    flow_env.kv[n][0] = "APPLE_PRIVATE_KEY";
    flow_env.kv[n++][1] = "@PEM_ESCAPED@";

    kiln_buf problems;
    kiln_buf_init(&problems, 1 << 16);
    int count = kiln_providers_load(fake_getenv, &flow_env, NULL, &problems);
    if (count != 0)
        fail_msg("problems: %.*s", (int)problems.len, problems.p);
    kiln_buf_free(&problems);
    reset_server();
    serve_keys(pk1, "k1");
}

static const struct kiln_provider *find(const char *name)
{
    const struct kiln_provider *p = kiln_provider_find(kiln_str_c(name));
    if (!p)
        fail_msg("provider %s not loaded", name);
    return p;
}

/* --- setup ---------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    pk1 = EVP_EC_gen("P-256");
    pk2 = EVP_EC_gen("P-256");
    apple_key = EVP_EC_gen("P-256");
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    if (!pk1 || !pk2 || !apple_key || !rsa)
        return -1;
    apple_pem = pem_of(apple_key);
    apple_pem_escaped = escape_newlines(apple_pem);
    rsa_pem = pem_of(rsa);
    EVP_PKEY_free(rsa);

    snprintf(log_path, sizeof log_path, "/tmp/kiln-oidc-log-XXXXXX");
    log_fd = mkstemp(log_path);
    if (log_fd < 0)
        return -1;
    kiln_log_set_fd(log_fd);

    srv.fd = listen_loopback(&srv.port);
    if (srv.fd < 0)
        return -1;
    if (pthread_create(&srv.thread, NULL, server_main, NULL) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&srv.stop, true);
    pthread_join(srv.thread, NULL);
    close(srv.fd);
    kiln_providers_free();
    kiln_log_set_fd(1);
    close(log_fd);
    unlink(log_path);
    free(srv.jwks);
    free(srv.token_body);
    EVP_PKEY_free(pk1);
    EVP_PKEY_free(pk2);
    EVP_PKEY_free(apple_key);
    free(apple_pem);
    free(apple_pem_escaped);
    free(rsa_pem);
    return 0;
}

/* --- provider loading ------------------------------------------------------------ */

struct load_case {
    const char *name;
    const char *env[16][2];
    int problems;
    const char *want[3];  /* substrings of the problem text */
    const char *list;     /* kiln_providers_list() after */
};

static const struct load_case load_cases[] = {
    { "nothing configured", { { NULL, NULL } }, 0, { NULL }, "" },
    { "google", { { "GOOGLE_CLIENT_ID", "gid" }, { "GOOGLE_CLIENT_SECRET", "SECRETVALUE" } }, 0,
      { NULL }, "google" },
    { "google id without secret", { { "GOOGLE_CLIENT_ID", "gid" } }, 1,
      { "config: GOOGLE_CLIENT_SECRET is required when GOOGLE_CLIENT_ID is set\n" }, "" },
    { "google secret without id", { { "GOOGLE_CLIENT_SECRET", "SECRETVALUE" } }, 1,
      { "config: GOOGLE_CLIENT_ID is required when GOOGLE_CLIENT_SECRET is set\n" }, "" },
    { "google issuer alone", { { "GOOGLE_ISSUER", "https://accounts.google.com" } }, 2,
      { "GOOGLE_CLIENT_ID is required when GOOGLE_ISSUER is set",
        "GOOGLE_CLIENT_SECRET is required when GOOGLE_ISSUER is set" }, "" },
    { "empty counts as unset", { { "GOOGLE_CLIENT_ID", "" }, { "GOOGLE_CLIENT_SECRET", "" } }, 0,
      { NULL }, "" },
    { "google http issuer", { { "GOOGLE_CLIENT_ID", "gid" }, { "GOOGLE_CLIENT_SECRET", "SECRETVALUE" },
                              { "GOOGLE_ISSUER", "http://accounts.google.com" } }, 1,
      { "GOOGLE_ISSUER must be an https:// URL" }, "" },
    { "generic complete",
      { { "OIDC_PROVIDERS", "okta" }, { "OIDC_OKTA_ISSUER", "https://example.okta.com" },
        { "OIDC_OKTA_CLIENT_ID", "oid" }, { "OIDC_OKTA_CLIENT_SECRET", "SECRETVALUE" } },
      0, { NULL }, "okta" },
    { "generic partial",
      { { "OIDC_PROVIDERS", "foo" }, { "OIDC_FOO_ISSUER", "https://idp.example" } }, 2,
      { "config: OIDC_FOO_CLIENT_ID is required when OIDC_FOO_ISSUER is set\n",
        "config: OIDC_FOO_CLIENT_SECRET is required when OIDC_FOO_ISSUER is set\n" }, "" },
    { "generic secret only",
      { { "OIDC_PROVIDERS", "foo" }, { "OIDC_FOO_CLIENT_SECRET", "SECRETVALUE" } }, 2,
      { "OIDC_FOO_ISSUER is required when OIDC_FOO_CLIENT_SECRET is set",
        "OIDC_FOO_CLIENT_ID is required when OIDC_FOO_CLIENT_SECRET is set" }, "" },
    { "generic listed, nothing set", { { "OIDC_PROVIDERS", "foo" } }, 1,
      { "OIDC_FOO_ISSUER, OIDC_FOO_CLIENT_ID and OIDC_FOO_CLIENT_SECRET are required" }, "" },
    { "generic name with a dash",
      { { "OIDC_PROVIDERS", "my-idp" }, { "OIDC_MY_IDP_ISSUER", "https://idp.example/" },
        { "OIDC_MY_IDP_CLIENT_ID", "x" }, { "OIDC_MY_IDP_CLIENT_SECRET", "SECRETVALUE" } },
      0, { NULL }, "my-idp" },
    { "http issuer outside localhost",
      { { "OIDC_PROVIDERS", "foo" }, { "OIDC_FOO_ISSUER", "http://idp.example" },
        { "OIDC_FOO_CLIENT_ID", "x" }, { "OIDC_FOO_CLIENT_SECRET", "SECRETVALUE" } },
      1, { "OIDC_FOO_ISSUER must be an https:// URL", "(got \"http://idp.example\")" }, "" },
    { "http issuer to a lookalike host",
      { { "OIDC_PROVIDERS", "foo" }, { "OIDC_FOO_ISSUER", "http://localhost.evil.example" },
        { "OIDC_FOO_CLIENT_ID", "x" }, { "OIDC_FOO_CLIENT_SECRET", "SECRETVALUE" } },
      1, { "OIDC_FOO_ISSUER must be an https:// URL" }, "" },
    { "issuer with a query",
      { { "OIDC_PROVIDERS", "foo" }, { "OIDC_FOO_ISSUER", "https://idp.example/?a=b" },
        { "OIDC_FOO_CLIENT_ID", "x" }, { "OIDC_FOO_CLIENT_SECRET", "SECRETVALUE" } },
      1, { "OIDC_FOO_ISSUER must be an https:// URL" }, "" },
    { "http localhost and 127.0.0.1 allowed",
      { { "OIDC_PROVIDERS", "a,b" }, { "OIDC_A_ISSUER", "http://localhost:8080" },
        { "OIDC_A_CLIENT_ID", "x" }, { "OIDC_A_CLIENT_SECRET", "SECRETVALUE" },
        { "OIDC_B_ISSUER", "http://127.0.0.1/realm" }, { "OIDC_B_CLIENT_ID", "x" },
        { "OIDC_B_CLIENT_SECRET", "SECRETVALUE" } },
      0, { NULL }, "a,b" },
    { "reserved and bad names",
      { { "OIDC_PROVIDERS", "google,apple,dev,Foo,a b,,x/y" } }, 6,
      { "\"google\" is reserved", "\"Foo\" is not a provider name", "\"x/y\" is not" }, "" },
    { "duplicates", { { "OIDC_PROVIDERS", "my-idp,my_idp" }, { "OIDC_MY_IDP_ISSUER", "https://i.example" },
                      { "OIDC_MY_IDP_CLIENT_ID", "x" }, { "OIDC_MY_IDP_CLIENT_SECRET", "SECRETVALUE" } },
      1, { "OIDC_PROVIDERS names \"my_idp\" twice" }, "my-idp" },
    { "scopes without openid",
      { { "OIDC_PROVIDERS", "foo" }, { "OIDC_FOO_ISSUER", "https://idp.example" },
        { "OIDC_FOO_CLIENT_ID", "x" }, { "OIDC_FOO_CLIENT_SECRET", "SECRETVALUE" },
        { "OIDC_FOO_SCOPES", "email profile openidx" } },
      1, { "OIDC_FOO_SCOPES must include openid" }, "" },
    { "apple with key (literal \\n)",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_TEAM_ID", TEAM }, { "APPLE_KEY_ID", KEY_ID },
        { "APPLE_PRIVATE_KEY", "@PEM_ESCAPED@" } }, 0, { NULL }, "apple" },
    { "apple with key (real newlines)",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_TEAM_ID", TEAM }, { "APPLE_KEY_ID", KEY_ID },
        { "APPLE_PRIVATE_KEY", "@PEM@" } }, 0, { NULL }, "apple" },
    { "apple with a static secret",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_CLIENT_SECRET", "SECRETVALUE" } }, 0,
      { NULL }, "apple" },
    { "apple RSA key",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_TEAM_ID", TEAM }, { "APPLE_KEY_ID", KEY_ID },
        { "APPLE_PRIVATE_KEY", "@RSA_PEM@" } }, 1,
      { "APPLE_PRIVATE_KEY is not a PEM EC P-256 private key" }, "" },
    { "apple garbage key",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_TEAM_ID", TEAM }, { "APPLE_KEY_ID", KEY_ID },
        { "APPLE_PRIVATE_KEY", "SECRETVALUE" } }, 1,
      { "APPLE_PRIVATE_KEY is not a PEM EC P-256 private key" }, "" },
    { "apple key without team id",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_KEY_ID", KEY_ID },
        { "APPLE_PRIVATE_KEY", "@PEM@" } }, 1,
      { "config: APPLE_TEAM_ID is required when APPLE_KEY_ID is set\n" }, "" },
    { "apple client id alone", { { "APPLE_CLIENT_ID", APPLE_CLIENT } }, 1,
      { "APPLE_CLIENT_SECRET is required when APPLE_CLIENT_ID is set" }, "" },
    { "apple key without client id",
      { { "APPLE_TEAM_ID", TEAM }, { "APPLE_KEY_ID", KEY_ID }, { "APPLE_PRIVATE_KEY", "@PEM@" } },
      1, { "APPLE_CLIENT_ID is required when APPLE_PRIVATE_KEY is set" }, "" },
    { "apple secret and key",
      { { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_TEAM_ID", TEAM }, { "APPLE_KEY_ID", KEY_ID },
        { "APPLE_PRIVATE_KEY", "@PEM@" }, { "APPLE_CLIENT_SECRET", "SECRETVALUE" } }, 1,
      { "alternatives" }, "" },
    { "everything",
      { { "GOOGLE_CLIENT_ID", "gid" }, { "GOOGLE_CLIENT_SECRET", "SECRETVALUE" },
        { "APPLE_CLIENT_ID", APPLE_CLIENT }, { "APPLE_CLIENT_SECRET", "SECRETVALUE" },
        { "OIDC_PROVIDERS", " okta , corp " }, { "OIDC_OKTA_ISSUER", "https://o.example" },
        { "OIDC_OKTA_CLIENT_ID", "x" }, { "OIDC_OKTA_CLIENT_SECRET", "SECRETVALUE" },
        { "OIDC_CORP_ISSUER", "https://c.example" }, { "OIDC_CORP_CLIENT_ID", "x" },
        { "OIDC_CORP_CLIENT_SECRET", "SECRETVALUE" },
        { "OIDC_CORP_SCOPES", "openid email groups" } },
      0, { NULL }, "google,apple,okta,corp" },
};

static void test_load(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(load_cases); i++) {
        const struct load_case *c = &load_cases[i];
        struct env e;
        memset(&e, 0, sizeof e);
        for (size_t j = 0; j < 16 && c->env[j][0]; j++) {
            e.kv[j][0] = c->env[j][0];
            e.kv[j][1] = c->env[j][1];
        }
        kiln_buf problems;
        kiln_buf_init(&problems, 1 << 16);
        int n = kiln_providers_load(fake_getenv, &e, NULL, &problems);
        if (n != c->problems)
            fail_msg("[%s] %d problems, want %d:\n%.*s", c->name, n, c->problems,
                     (int)problems.len, problems.p ? problems.p : "");
        for (size_t j = 0; j < 3 && c->want[j]; j++)
            assert_contains(problems.p, problems.len, c->want[j]);
        /* Secret values never appear, nor any key material. */
        assert_not_contains(problems.p, problems.len, "SECRETVALUE");
        assert_not_contains(problems.p, problems.len, "PRIVATE KEY");
        assert_string_equal(kiln_providers_list(), c->list);
        kiln_buf_free(&problems);
    }
    kiln_providers_free();
}

static void test_find(void **state)
{
    (void)state;
    load_flow_providers();
    assert_non_null(kiln_provider_find(KILN_STR("mock")));
    assert_non_null(kiln_provider_find(KILN_STR("bad-iss")));
    assert_null(kiln_provider_find(KILN_STR("google"))); /* no credentials: off */
    assert_null(kiln_provider_find(KILN_STR("moc")));
    assert_null(kiln_provider_find(KILN_STR("mockk")));
    assert_null(kiln_provider_find(KILN_STR_NULL));
    assert_string_equal(kiln_provider_name(find("mock")), "mock");
    assert_false(kiln_provider_form_post(find("mock")));
    assert_true(kiln_provider_form_post(find("apple")));
    assert_string_equal(kiln_providers_list(), "apple,mock,basic,noauth,none,bad-iss,insecure,down,conc");
}

/* --- the flow -------------------------------------------------------------------- */

static void test_authorize_url(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    const char *url = NULL, *reason = NULL;
    int rc = kiln_oidc_authorize_url(find("mock"), a, REDIRECT, "st+x=/&", NONCE, "chal_-1", &url,
                                     &reason);
    assert_int_equal(rc, 0);
    assert_null(reason);
    char want[512];
    snprintf(want, sizeof want,
             "http://127.0.0.1:%d/p1/authorize?prompt=login&response_type=code"
             "&client_id=client%%2F1"
             "&redirect_uri=http%%3A%%2F%%2Fapp.example%%2Fauth%%2Fmock%%2Fcallback"
             "&scope=openid%%20email%%20profile&state=st%%2Bx%%3D%%2F%%26&nonce=nonce-42"
             "&code_challenge=chal_-1&code_challenge_method=S256", srv.port);
    assert_string_equal(url, want);
    assert_int_equal(hits("/p1/.well-known/openid-configuration"), 1);

    /* Cached: the second URL costs no request. */
    rc = kiln_oidc_authorize_url(find("mock"), a, REDIRECT, "s2", NONCE, "c2", &url, &reason);
    assert_int_equal(rc, 0);
    assert_int_equal(hits("/p1/.well-known/openid-configuration"), 1);
    assert_not_contains(url, strlen(url), "response_mode");

    /* Apple: form_post, its scopes. */
    rc = kiln_oidc_authorize_url(find("apple"), a, "https://api.example/auth/apple/callback", "s",
                                 NONCE, "c", &url, &reason);
    assert_int_equal(rc, 0);
    snprintf(want, sizeof want, "http://127.0.0.1:%d/apple/authorize?response_type=code", srv.port);
    assert_true(strncmp(url, want, strlen(want)) == 0);
    assert_contains(url, strlen(url), "&client_id=com.example.web&");
    assert_contains(url, strlen(url), "&scope=name%20email&");
    assert_contains(url, strlen(url), "&response_mode=form_post");
    assert_contains(url, strlen(url), "&code_challenge_method=S256");
    kiln_arena_free(a);
}

static int exchange(const char *provider, struct kiln_oidc_identity *id, const char **reason,
                    kiln_arena *a)
{
    return kiln_oidc_exchange(find(provider), a, CODE, VERIFIER, REDIRECT, NONCE, id, reason);
}

static void test_exchange_ok(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    char *tok = id_token(pk1, "k1", issuer("/p1"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    struct kiln_oidc_identity id;
    const char *reason = "unset";
    assert_int_equal(exchange("mock", &id, &reason, a), 0);
    assert_null(reason);
    assert_string_equal(id.subject, "user-42");
    assert_string_equal(id.email, "ada@example.com");
    assert_true(id.email_verified);
    assert_string_equal(id.name, "Ada Lovelace");
    assert_string_equal(id.first_name, "Ada");
    assert_string_equal(id.last_name, "Lovelace");
    assert_string_equal(id.picture, "https://img.example/ada.png");

    /* client_secret_post, every parameter encoded. */
    assert_string_equal(srv.form,
                        "grant_type=authorization_code&code=" CODE
                        "&redirect_uri=http%3A%2F%2Fapp.example%2Fauth%2Fmock%2Fcallback"
                        "&code_verifier=" VERIFIER
                        "&client_id=client%2F1&client_secret=s3cr%26t-XYZZY");
    assert_string_equal(srv.auth, "");
    assert_int_equal(hits("/p1/jwks"), 1);
    assert_int_equal(hits("/p1/token"), 1);

    /* The JWKS is cached; discovery too. */
    assert_int_equal(exchange("mock", &id, &reason, a), 0);
    assert_int_equal(hits("/p1/jwks"), 1);
    assert_int_equal(hits("/p1/.well-known/openid-configuration"), 1);

    /* Optional claims absent → NULL; email_verified false. */
    char claims[512];
    long long now = (long long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"u2\",\"exp\":%lld,\"iat\":%lld,"
             "\"nonce\":\"%s\"}", issuer("/p1"), CLIENT_ID, now + 600, now, NONCE);
    free(tok);
    tok = kiln_jwt_sign_es256(pk1, "k1", kiln_str_c(claims));
    serve_token(200, tok);
    assert_int_equal(exchange("mock", &id, &reason, a), 0);
    assert_string_equal(id.subject, "u2");
    assert_null(id.email);
    assert_false(id.email_verified);
    assert_null(id.name);
    assert_null(id.picture);

    /* The none-only provider still gets client_secret_post. */
    free(tok);
    tok = id_token(pk1, "k1", issuer("/none"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    assert_int_equal(exchange("none", &id, &reason, a), 0);
    assert_contains(srv.form, strlen(srv.form), "&client_secret=s3cr%26t-XYZZY");
    assert_string_equal(srv.auth, "");
    free(tok);
    kiln_arena_free(a);
}

struct refusal {
    const char *name;
    int status;          /* of the token endpoint */
    const char *body;    /* raw token answer, or NULL to build from the fields below */
    EVP_PKEY **key;
    const char *kid, *iss_prefix, *aud, *nonce;
    long exp_in;
    const char *want;
};

static const struct refusal refusals[] = {
    { "replayed code (invalid_grant)", 400, "{\"error\":\"invalid_grant\"}", NULL, NULL, NULL,
      NULL, NULL, 0, "token_exchange_failed" },
    { "server error", 500, "oops", NULL, NULL, NULL, NULL, NULL, 0, "token_exchange_failed" },
    { "no id_token", 200, "{\"access_token\":\"at\"}", NULL, NULL, NULL, NULL, NULL, 0,
      "token_exchange_failed" },
    { "answer not JSON", 200, "<html>", NULL, NULL, NULL, NULL, NULL, 0,
      "token_exchange_failed" },
    { "id_token garbage", 200, "{\"id_token\":\"abc.def\"}", NULL, NULL, NULL, NULL, NULL, 0,
      "invalid_token" },
    { "wrong nonce", 200, NULL, &pk1, "k1", "/p1", CLIENT_ID, "other-nonce", 600,
      "nonce_mismatch" },
    { "wrong audience", 200, NULL, &pk1, "k1", "/p1", "someone-else", NONCE, 600,
      "wrong_audience" },
    { "wrong issuer", 200, NULL, &pk1, "k1", "/basic", CLIENT_ID, NONCE, 600, "wrong_issuer" },
    { "expired", 200, NULL, &pk1, "k1", "/p1", CLIENT_ID, NONCE, -120, "token_expired" },
    { "signed by another key", 200, NULL, &pk2, "k1", "/p1", CLIENT_ID, NONCE, 600,
      "bad_signature" },
};

static void test_exchange_refusals(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    for (size_t i = 0; i < ARRAY_LEN(refusals); i++) {
        const struct refusal *r = &refusals[i];
        if (r->body) {
            pthread_mutex_lock(&srv.mu);
            srv.token_status = r->status;
            pthread_mutex_unlock(&srv.mu);
            set_answer(&srv.token_body, r->body);
        } else {
            char *tok = id_token(*r->key, r->kid, issuer(r->iss_prefix), r->aud, r->nonce,
                                 r->exp_in, NULL);
            serve_token(r->status, tok);
            free(tok);
        }
        struct kiln_oidc_identity id;
        const char *reason = NULL;
        int rc = exchange("mock", &id, &reason, a);
        if (rc == 0 || !reason || strcmp(reason, r->want) != 0)
            fail_msg("[%s] rc %d reason %s, want %s", r->name, rc, reason ? reason : "(null)",
                     r->want);
        assert_null(id.subject);
    }
    /* A caller without a nonce is refused, not waved through. */
    char *tok = id_token(pk1, "k1", issuer("/p1"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    struct kiln_oidc_identity id;
    const char *reason = NULL;
    assert_int_not_equal(kiln_oidc_exchange(find("mock"), a, CODE, VERIFIER, REDIRECT, NULL, &id,
                                            &reason), 0);
    assert_string_equal(reason, "nonce_mismatch");
    free(tok);
    kiln_arena_free(a);
}

static void test_jwks_rotation(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_oidc_identity id;
    const char *reason = NULL;

    char *tok = id_token(pk1, "k1", issuer("/p1"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    assert_int_equal(exchange("mock", &id, &reason, a), 0);
    assert_int_equal(hits("/p1/jwks"), 1);
    free(tok);

    /* The provider rotates to k2: the unknown kid triggers one refetch. */
    serve_keys(pk2, "k2");
    tok = id_token(pk2, "k2", issuer("/p1"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    assert_int_equal(exchange("mock", &id, &reason, a), 0);
    assert_null(reason);
    assert_int_equal(hits("/p1/jwks"), 2);
    assert_int_equal(exchange("mock", &id, &reason, a), 0);
    assert_int_equal(hits("/p1/jwks"), 2);
    free(tok);

    /* Another unknown kid within the minute: no refetch, refused. */
    tok = id_token(pk1, "k3", issuer("/p1"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    assert_int_not_equal(exchange("mock", &id, &reason, a), 0);
    assert_string_equal(reason, "bad_signature");
    assert_int_equal(hits("/p1/jwks"), 2);
    free(tok);

    /* k1 is gone from the set we hold. */
    tok = id_token(pk1, "k1", issuer("/p1"), CLIENT_ID, NONCE, 600, NULL);
    serve_token(200, tok);
    assert_int_not_equal(exchange("mock", &id, &reason, a), 0);
    assert_string_equal(reason, "bad_signature");
    assert_int_equal(hits("/p1/jwks"), 2);
    free(tok);
    kiln_arena_free(a);
}

static void test_basic_auth(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_oidc_identity id;
    const char *reason = NULL;
    /* RFC 6749 2.3.1: form-encode id and secret, then base64 (standard). */
    const char *raw = "client%2F1:s3cr%26t-XYZZY";
    unsigned char enc[128];
    EVP_EncodeBlock(enc, (const unsigned char *)raw, (int)strlen(raw));
    char want[160];
    snprintf(want, sizeof want, "Basic %s", enc);

    static const char *const providers[] = { "basic", "noauth" };
    static const char *const prefixes[] = { "/basic", "/noauth" };
    for (size_t i = 0; i < 2; i++) {
        char *tok = id_token(pk1, "k1", issuer(prefixes[i]), CLIENT_ID, NONCE, 600, NULL);
        serve_token(200, tok);
        assert_int_equal(exchange(providers[i], &id, &reason, a), 0);
        assert_string_equal(srv.auth, want);
        assert_not_contains(srv.form, strlen(srv.form), "client_secret");
        assert_not_contains(srv.form, strlen(srv.form), "client_id");
        assert_contains(srv.form, strlen(srv.form), "code_verifier=" VERIFIER);
        free(tok);
    }
    kiln_arena_free(a);
}

/* The client_secret parameter of the last token request (not encoded: a
 * JWT is all unreserved characters). */
static char *form_secret(void)
{
    const char *s = strstr(srv.form, "client_secret=");
    assert_non_null(s);
    s += strlen("client_secret=");
    const char *e = strchr(s, '&');
    return strndup(s, e ? (size_t)(e - s) : strlen(s));
}

static void test_apple(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_oidc_identity id;
    const char *reason = NULL;
    /* Apple's email_verified is a string. */
    char claims[1024];
    long long now = (long long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"001234.abcd\",\"exp\":%lld,\"iat\":%lld,"
             "\"nonce\":\"%s\",\"email\":\"x@privaterelay.appleid.com\","
             "\"email_verified\":\"true\"}", issuer("/apple"), APPLE_CLIENT, now + 600, now, NONCE);
    char *tok = kiln_jwt_sign_es256(pk1, "k1", kiln_str_c(claims));
    serve_token(200, tok);
    assert_int_equal(exchange("apple", &id, &reason, a), 0);
    assert_string_equal(id.subject, "001234.abcd");
    assert_string_equal(id.email, "x@privaterelay.appleid.com");
    assert_true(id.email_verified);
    assert_null(id.name);
    assert_contains(srv.form, strlen(srv.form), "&client_id=com.example.web&client_secret=");

    /* The client secret is an ES256 JWT by Apple's key: verify it. */
    char *secret = form_secret();
    char *k = ec_jwk(apple_key, KEY_ID), doc[1024];
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", k);
    struct kiln_jwks *set = NULL;
    assert_int_equal(kiln_jwks_parse(doc, strlen(doc), &set), 0);
    struct kiln_jwt_expect want = { TEAM, issuer("/apple"), NULL, 0, NULL };
    json_t *c = NULL;
    const char *detail = NULL;
    enum kiln_jwt_status st = kiln_jwt_verify(kiln_str_c(secret), set, &want, &c, &detail);
    if (st != KILN_JWT_OK)
        fail_msg("client secret refused: %s", detail);
    assert_string_equal(json_string_value(json_object_get(c, "sub")), APPLE_CLIENT);
    assert_string_equal(json_string_value(json_object_get(c, "iss")), TEAM);
    json_int_t iat = json_integer_value(json_object_get(c, "iat"));
    json_int_t exp = json_integer_value(json_object_get(c, "exp"));
    assert_true(exp - iat == 3600);
    assert_true(iat <= (json_int_t)time(NULL) && iat > (json_int_t)time(NULL) - 60);
    json_decref(c);

    /* Cached: the next exchange sends the same secret. */
    assert_int_equal(exchange("apple", &id, &reason, a), 0);
    char *again = form_secret();
    assert_string_equal(again, secret);

    kiln_jwks_free(set);
    free(k);
    free(secret);
    free(again);
    free(tok);
    kiln_arena_free(a);
}

static void test_unreachable(void **state)
{
    (void)state;
    load_flow_providers();
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_oidc_identity id;
    static const char *const names[] = { "down", "bad-iss", "insecure" };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        const char *url = NULL, *reason = NULL;
        uint64_t t0 = kiln_now_ms();
        assert_int_not_equal(kiln_oidc_authorize_url(find(names[i]), a, REDIRECT, "s", NONCE, "c",
                                                     &url, &reason), 0);
        assert_null(url);
        assert_string_equal(reason, "provider_unreachable");
        reason = NULL;
        assert_int_not_equal(exchange(names[i], &id, &reason, a), 0);
        assert_string_equal(reason, "provider_unreachable");
        assert_true(kiln_now_ms() - t0 < 3000); /* refused fast, no hang */
    }
    /* The bad issuer's discovery was fetched, and refused each time. */
    assert_int_equal(hits("/bad-iss/.well-known/openid-configuration"), 2);
    kiln_arena_free(a);
}

/* Eight threads need the discovery document at once: one request. */
static void *authorize_thread(void *arg)
{
    kiln_arena *a = kiln_arena_new(4096);
    const char *url = NULL, *reason = NULL;
    int rc = kiln_oidc_authorize_url(find("conc"), a, REDIRECT, "s", NONCE, "c", &url, &reason);
    *(int *)arg = rc == 0 && url && strstr(url, "/conc/authorize?") ? 1 : 0;
    kiln_arena_free(a);
    return NULL;
}

static void test_single_flight(void **state)
{
    (void)state;
    load_flow_providers();
    pthread_mutex_lock(&srv.mu);
    srv.discovery_delay_ms = 300;
    pthread_mutex_unlock(&srv.mu);
    pthread_t t[8];
    int ok[8] = { 0 };
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, authorize_thread, &ok[i]), 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(ok[i], 1);
    }
    assert_int_equal(hits("/conc/.well-known/openid-configuration"), 1);
    reset_server();
}

/* --- http_client ---------------------------------------------------------------- */

static int fetch(const char *path, unsigned timeout_ms, struct kiln_http_response *res)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, path);
    struct kiln_http_request req = { .url = url, .timeout_ms = timeout_ms };
    return kiln_http_fetch(&req, res);
}

static void test_http_client(void **state)
{
    (void)state;
    load_flow_providers();
    struct kiln_http_response res;

    assert_int_equal(fetch("/p1/jwks", 0, &res), 0);
    assert_int_equal(res.status, 200);
    assert_contains(res.body.p, res.body.len, "\"keys\"");
    assert_int_equal(res.body.p[res.body.len], '\0');
    kiln_http_response_free(&res);

    assert_int_equal(fetch("/nowhere", 0, &res), 0);
    assert_int_equal(res.status, 404);
    kiln_http_response_free(&res);

    /* Redirects are answers, not followed. */
    assert_int_equal(fetch("/redirect", 0, &res), 0);
    assert_int_equal(res.status, 302);
    assert_int_equal(res.body.len, 0);
    kiln_http_response_free(&res);

    /* Size cap: by Content-Length, and while a chunked body streams. */
    assert_int_equal(fetch("/big", 0, &res), KILN_ETOOBIG);
    assert_contains(res.error, strlen(res.error), "over");
    kiln_http_response_free(&res);
    assert_int_equal(fetch("/big-chunked", 0, &res), KILN_ETOOBIG);
    kiln_http_response_free(&res);

    /* Total timeout. */
    uint64_t t0 = kiln_now_ms();
    assert_int_equal(fetch("/slow", 300, &res), KILN_ETIMEDOUT);
    assert_true(kiln_now_ms() - t0 < 1400);
    assert_true(res.error[0] != '\0');
    kiln_http_response_free(&res);
    usleep(1300 * 1000); /* let the server finish its slow answer */

    /* Connection refused, bad schemes. */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", closed_port());
    struct kiln_http_request req = { .url = url };
    assert_int_equal(kiln_http_fetch(&req, &res), KILN_EIO);
    assert_true(res.error[0] != '\0');
    kiln_http_response_free(&res);
    static const char *const bad[] = { "ftp://127.0.0.1/", "file:///etc/passwd", "gopher://x/",
                                       "127.0.0.1/" };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        req.url = bad[i];
        assert_int_equal(kiln_http_fetch(&req, &res), KILN_EINVAL);
        kiln_http_response_free(&res);
    }
    /* POST with a form. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo-method", srv.port);
    struct kiln_http_request post = { .url = url, .form = "a=b", .form_len = 3 };
    assert_int_equal(kiln_http_fetch(&post, &res), 0);
    assert_mem_eq(res.body.p, res.body.len, "POST", 4);
    kiln_http_response_free(&res);
}

/* Last: nothing secret reached the log, whatever failed above. */
static void test_log_has_no_secrets(void **state)
{
    (void)state;
    char buf[1 << 16];
    ssize_t n = pread(log_fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    /* Failures were logged with what failed and the provider… */
    assert_contains(buf, (size_t)n, "\"detail\":\"nonce does not match the login attempt\"");
    assert_contains(buf, (size_t)n, "\"provider\":\"mock\"");
    assert_contains(buf, (size_t)n, "\"error\":\"invalid_grant\"");
    /* …and never with a secret, code, verifier or token. */
    static const char *const never[] = { "s3cr", "XYZZY", CODE, VERIFIER, "eyJ", "at-SECRET",
                                         "PRIVATE KEY", "code already used" };
    for (size_t i = 0; i < ARRAY_LEN(never); i++)
        assert_not_contains(buf, (size_t)n, never[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_authorize_url),
        cmocka_unit_test(test_exchange_ok),
        cmocka_unit_test(test_exchange_refusals),
        cmocka_unit_test(test_jwks_rotation),
        cmocka_unit_test(test_basic_auth),
        cmocka_unit_test(test_apple),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_http_client),
        cmocka_unit_test(test_log_has_no_secrets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
