/* Outbound HTTP(S) on libcurl; see http_client.h. */
#include "core/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/dl.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/version.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CURLcode init_result = CURLE_FAILED_INIT;

static void global_init(void)
{
    if (kiln_dl_curl() != 0)
        return; /* init_result stays CURLE_FAILED_INIT */
    init_result = kiln_curl.curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *ca_file;  /* set once at start, read-only afterwards */

void kiln_http_client_set_ca_file(const char *path)
{
    free(ca_file);
    ca_file = path ? kiln_strdup(path) : NULL;
}

int kiln_http_client_init(void)
{
    pthread_once(&init_once, global_init);
    return init_result == CURLE_OK ? 0 : KILN_EIO;
}

/* The thread's kept handle (keep_alive), cleaned up when the thread ends. */
static pthread_key_t kept_key;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;

static void kept_free(void *h)
{
    kiln_curl.curl_easy_cleanup(h);
}

static void kept_init(void)
{
    if (pthread_key_create(&kept_key, kept_free) != 0)
        kiln_fatal("pthread_key_create failed");
}

struct sink {
    kiln_buf *body;
    size_t max;
    bool truncate;   /* keep what fits and stop, instead of failing */
    bool too_big;
    bool truncated;
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct sink *s = userdata;
    size_t n = size * nmemb;
    /* Returning less than n makes curl stop with CURLE_WRITE_ERROR; with
     * truncate, kiln_http_fetch then reports the answer it has. */
    if (n > s->max - s->body->len && s->truncate) {
        size_t room = s->max - s->body->len;
        if (room && kiln_buf_append(s->body, data, room) != 0)
            s->too_big = true;
        s->truncated = !s->too_big;
        return 0;
    }
    if (n > s->max - s->body->len || kiln_buf_append(s->body, data, n) != 0) {
        s->too_big = true;
        return 0;
    }
    return n;
}

/*
 * The pinned address (http_client.h, resolve_pin): "host:port:address", the
 * host in brackets when it is an IPv6 literal, an IPv6 address with or
 * without them. A bracketed host goes into no CURLOPT_RESOLVE entry (libcurl
 * 7.88 cuts an entry's host at its first colon, and never looks a literal
 * up anyway); the socket check below holds the connection either way.
 */
struct pin {
    int family;
    struct in_addr v4;
    struct in6_addr v6;
    bool host_literal;
    bool refused;        /* a socket to another address was refused */
};

static bool parse_pin(const char *s, struct pin *pin)
{
    const char *p;
    memset(pin, 0, sizeof *pin);
    if (s[0] == '[') {
        const char *end = strstr(s, "]:");
        if (!end || end == s + 1)
            return false;
        pin->host_literal = true;
        p = end + 2;
    } else {
        const char *colon = strchr(s, ':');
        if (!colon || colon == s)
            return false;
        p = colon + 1;
    }
    unsigned long port = 0;
    const char *digits = p;
    while (*p >= '0' && *p <= '9' && port <= 65535)
        port = port * 10 + (unsigned long)(*p++ - '0');
    if (p == digits || *p != ':' || port == 0 || port > 65535)
        return false;
    p++;
    char addr[INET6_ADDRSTRLEN];
    size_t n = strlen(p);
    if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
        p++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof addr)
        return false;
    memcpy(addr, p, n);
    addr[n] = '\0';
    if (inet_pton(AF_INET, addr, &pin->v4) == 1)
        pin->family = AF_INET;
    else if (inet_pton(AF_INET6, addr, &pin->v6) == 1)
        pin->family = AF_INET6;
    else
        return false;
    return true;
}

/* CURLOPT_OPENSOCKETFUNCTION: a socket only towards the pinned address.
 * The CURLOPT_RESOLVE entry already sends the connection there; this holds
 * even if the entry did not match the name libcurl looked up (a libcurl
 * that normalises host names differently), or a redirect or proxy were
 * ever turned on. */
static curl_socket_t open_pinned(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct pin *pin = clientp;
    bool same = false;
    if (purpose == CURLSOCKTYPE_IPCXN && a->family == pin->family) {
        /* a->addr is the head of a buffer that holds the whole address. */
        if (a->family == AF_INET && a->addrlen >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in in;
            memcpy(&in, &a->addr, sizeof in);
            same = in.sin_addr.s_addr == pin->v4.s_addr;
        } else if (a->family == AF_INET6 && a->addrlen >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 in6;
            memcpy(&in6, &a->addr, sizeof in6);
            same = memcmp(&in6.sin6_addr, &pin->v6, sizeof pin->v6) == 0;
        }
    }
    if (!same) {
        pin->refused = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Header lines: a new status line (a redirect or 100 Continue before the
 * final answer) starts the list again, so only the final response's remain. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    kiln_buf *h = userdata;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        h->len = 0;
    else if (h->len + n <= 64 * 1024)
        kiln_buf_append(h, data, n);
    return n;
}

bool kiln_http_response_header(const struct kiln_http_response *res, const char *name,
                               char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = res->headers.p, *end = p ? p + res->headers.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if ((size_t)(ve - v) >= cap)
                return false;
            memcpy(out, v, (size_t)(ve - v));
            out[ve - v] = '\0';
            return true;
        }
        p = eol + 1;
    }
    return false;
}

/* Out of memory is fatal here as everywhere (core/alloc.h). */
static struct curl_slist *add_header(struct curl_slist *list, const char *h)
{
    struct curl_slist *l = kiln_curl.curl_slist_append(list, h);
    if (!l)
        kiln_fatal("out of memory");
    return l;
}

static int map_error(CURLcode code, bool too_big)
{
    if (too_big || code == CURLE_FILESIZE_EXCEEDED)
        return KILN_ETOOBIG;
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return KILN_ETIMEDOUT;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return KILN_EINVAL;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return KILN_ETLS;
    default:
        return KILN_EIO;
    }
}

int kiln_http_fetch(const struct kiln_http_request *req, struct kiln_http_response *res)
{
    CURL *h = NULL;
    struct curl_slist *headers = NULL, *resolve = NULL;
    struct pin pin = { 0 };
    char *auth = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    char agent[64];
    int rc = KILN_EIO;

    memset(res, 0, sizeof *res);
    size_t max = req->max_body ? req->max_body : KILN_HTTP_MAX_BODY;
    kiln_buf_init(&res->body, max + 1); /* + the NUL we add at the end */
    kiln_buf_init(&res->headers, 64 * 1024 + 1);
    struct sink sink = { &res->body, max, req->truncate_body, false, false };

    if (kiln_http_client_init() != 0) {
        snprintf(res->error, sizeof res->error, "cannot load or initialise " KILN_CURL_SONAME);
        return KILN_EIO;
    }
    if (!req->url || (strncmp(req->url, "https://", 8) && strncmp(req->url, "http://", 7))) {
        snprintf(res->error, sizeof res->error, "not an http(s) URL");
        return KILN_EINVAL;
    }
    if (req->https_only && strncmp(req->url, "https://", 8) != 0) {
        snprintf(res->error, sizeof res->error, "not an https URL");
        return KILN_EINVAL;
    }
    if (req->resolve_pin && !parse_pin(req->resolve_pin, &pin)) {
        snprintf(res->error, sizeof res->error, "malformed resolve pin");
        return KILN_EINVAL;
    }
    bool keep = req->keep_alive && req->resolve_pin;
    if (keep) {
        pthread_once(&kept_once, kept_init);
        h = pthread_getspecific(kept_key);
        if (h)
            kiln_curl.curl_easy_reset(h); /* options gone; connections kept */
        else if ((h = kiln_curl.curl_easy_init()) != NULL)
            pthread_setspecific(kept_key, h);
    } else {
        h = kiln_curl.curl_easy_init();
    }
    if (!h) {
        snprintf(res->error, sizeof res->error, "curl_easy_init failed");
        return KILN_EIO;
    }

    headers = add_header(headers, "Accept: application/json");
    bool has_body = req->form || req->body || req->body_len;
    if (req->form)
        headers = add_header(headers, "Content-Type: application/x-www-form-urlencoded");
    else if (has_body && req->content_type) {
        char ct[256];
        snprintf(ct, sizeof ct, "Content-Type: %s", req->content_type);
        headers = add_header(headers, ct);
    }
    /* No "Expect: 100-continue" round trip (curl adds it to larger bodies
     * and then waits up to a second for the interim answer). */
    if (has_body)
        headers = add_header(headers, "Expect:");
    for (size_t i = 0; i < req->nheaders; i++)
        headers = add_header(headers, req->headers[i]);
    if (req->authorization) {
        size_t n = strlen(req->authorization) + sizeof "Authorization: ";
        auth = kiln_malloc(n);
        snprintf(auth, n, "Authorization: %s", req->authorization);
        headers = add_header(headers, auth);
    }
    snprintf(agent, sizeof agent, "kiln/%s", kiln_version());

    /* Any option that fails to apply fails the request: a request that
     * silently lost its TLS verification or timeout is worse than none. */
    CURLcode c = CURLE_OK;
#define SET(opt, val) \
    if (c == CURLE_OK) c = kiln_curl.curl_easy_setopt(h, opt, val)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    /* Worker threads: no signals (SIGALRM for DNS timeouts is per process). */
    SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    SET(CURLOPT_PROTOCOLS_STR, req->https_only ? "https" : "http,https");
    if (req->https_only)
        SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
    SET(CURLOPT_PROTOCOLS,
        (long)(req->https_only ? CURLPROTO_HTTPS : CURLPROTO_HTTP | CURLPROTO_HTTPS));
    if (req->https_only)
        SET(CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (ca_file)
        SET(CURLOPT_CAINFO, ca_file);
    SET(CURLOPT_CONNECTTIMEOUT_MS,
        (long)(req->connect_timeout_ms ? req->connect_timeout_ms : KILN_HTTP_CONNECT_TIMEOUT_MS));
    SET(CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : KILN_HTTP_TIMEOUT_MS));
    /* Refuse early when Content-Length already says too much; the write
     * callback enforces the cap for chunked bodies (and cuts the body there
     * with truncate_body, which must not refuse early). */
    if (!req->truncate_body)
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
    if (req->resolve_pin) {
        if (!pin.host_literal) {
            resolve = kiln_curl.curl_slist_append(NULL, req->resolve_pin);
            if (!resolve)
                kiln_fatal("out of memory");
            SET(CURLOPT_RESOLVE, resolve);
        }
        SET(CURLOPT_OPENSOCKETFUNCTION, open_pinned);
        SET(CURLOPT_OPENSOCKETDATA, &pin);
        /* "" turns off the proxy from the environment (http_proxy,
         * https_proxy, all_proxy) as well as any set before. */
        SET(CURLOPT_PROXY, "");
        SET(CURLOPT_NOPROXY, "*");
    }
    SET(CURLOPT_WRITEFUNCTION, on_data);
    SET(CURLOPT_WRITEDATA, &sink);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_USERAGENT, agent);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, &res->headers);
    if (req->form) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, req->form);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->form_len);
    } else if (has_body) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (req->method && strcmp(req->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (req->method && strcmp(req->method, has_body ? "POST" : "GET") != 0) {
        /* PUT, DELETE, or POST without a body: the verb only; the body (if
         * any) was set above. */
        SET(CURLOPT_CUSTOMREQUEST, req->method);
    }
#undef SET
    if (c != CURLE_OK) {
        snprintf(res->error, sizeof res->error, "curl_easy_setopt: %s", kiln_curl.curl_easy_strerror(c));
        goto out;
    }

    uint64_t started = kiln_now_ns();
    c = kiln_curl.curl_easy_perform(h);
    res->elapsed_us = (long long)((kiln_now_ns() - started) / 1000);
    if (c == CURLE_WRITE_ERROR && sink.truncated) {
        res->truncated = true;
        c = CURLE_OK;
    }
    if (c != CURLE_OK && req->resolve_pin && pin.refused) {
        rc = KILN_EIO;
        snprintf(res->error, sizeof res->error,
                 "refused to connect to an address other than the pinned one");
        goto out;
    }
    if (c != CURLE_OK) {
        rc = map_error(c, sink.too_big);
        if (rc == KILN_ETOOBIG)
            snprintf(res->error, sizeof res->error, "response body over %zu bytes", max);
        else
            snprintf(res->error, sizeof res->error, "%s%s%s", kiln_curl.curl_easy_strerror(c),
                     errbuf[0] ? ": " : "", errbuf);
        goto out;
    }
    kiln_curl.curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
    /* NUL-terminate for parsers that want a C string; not counted. */
    if (kiln_buf_append(&res->body, "", 1) != 0) {
        rc = KILN_ETOOBIG;
        snprintf(res->error, sizeof res->error, "response body over %zu bytes", max);
        goto out;
    }
    res->body.len--;
    if (kiln_buf_append(&res->headers, "", 1) == 0)
        res->headers.len--;
    rc = 0;

out:
    if (keep) {
        /* Nothing of this request's may outlive it in the kept handle. */
        kiln_curl.curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        kiln_curl.curl_easy_setopt(h, CURLOPT_RESOLVE, NULL);
        kiln_curl.curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    } else {
        kiln_curl.curl_easy_cleanup(h);
    }
    kiln_curl.curl_slist_free_all(headers);
    kiln_curl.curl_slist_free_all(resolve);
    if (auth) {
        /* The header may carry a client secret. */
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    return rc;
}

void kiln_http_response_free(struct kiln_http_response *res)
{
    kiln_buf_free(&res->body);
    kiln_buf_free(&res->headers);
    res->status = 0;
}
