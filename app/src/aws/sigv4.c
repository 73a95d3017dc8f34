/* AWS Signature Version 4; see sigv4.h. */
#include "aws/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "core/alloc.h"
#include "core/err.h"

#define MAX_HEADERS 64
#define MAX_PARAMS 128
#define BUF_MAX (1u << 20)

static const char HEX[] = "0123456789abcdef";

static void hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data ? data : (const void *)"", n, md);
    hex(md, sizeof md, out);
}

static void hmac(const void *key, size_t klen, const void *data, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)klen, data, n, out, &len);
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

void kiln_uri_encode(kiln_buf *b, const char *s, size_t n, bool keep_slash)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            kiln_buf_append(b, &s[i], 1);
        } else {
            char e[3] = { '%', "0123456789ABCDEF"[c >> 4], "0123456789ABCDEF"[c & 15] };
            kiln_buf_append(b, e, 3);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode n bytes into b; KILN_EINVAL on a malformed escape. */
static int uri_decode(kiln_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
                return KILN_EINVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        kiln_buf_append(b, &c, 1);
    }
    return 0;
}

void kiln_sigv4_amz_date(time_t t, char out[17])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

void kiln_sigv4_credential(const struct kiln_sigv4 *s, char *out, size_t cap)
{
    char date[17];
    kiln_sigv4_amz_date(s->now, date);
    snprintf(out, cap, "%s/%.8s/%s/%s/aws4_request", s->creds->access_key_id, date,
             s->region, s->service);
}

static void signing_key(const struct kiln_sigv4 *s, unsigned char key[32])
{
    char date[17];
    kiln_sigv4_amz_date(s->now, date);
    char k0[sizeof s->creds->secret_access_key + 4];
    int n = snprintf(k0, sizeof k0, "AWS4%s", s->creds->secret_access_key);
    hmac(k0, (size_t)n, date, 8, key);
    explicit_bzero(k0, sizeof k0);
    hmac(key, 32, s->region, strlen(s->region), key);
    hmac(key, 32, s->service, strlen(s->service), key);
    hmac(key, 32, "aws4_request", 12, key);
}

void kiln_sigv4_sign_text(const struct kiln_sigv4 *s, const char *text, size_t len,
                          char sig_hex[65])
{
    unsigned char key[32], mac[32];
    signing_key(s, key);
    hmac(key, 32, text, len, mac);
    explicit_bzero(key, sizeof key);
    hex(mac, 32, sig_hex);
}

/*
 * Canonical URI. S3: the path as sent. Others: dot segments and empty
 * segments removed (a trailing slash kept), then each byte encoded once more.
 */
static int canonical_uri(kiln_buf *b, const char *path, bool s3)
{
    if (!path || !*path)
        path = "/";
    if (s3) {
        kiln_buf_append_c(b, path);
        return 0;
    }
    /* Split into segments, resolving "." and "..". */
    const char *seg[256];
    size_t seglen[256], nseg = 0;
    const char *p = path;
    size_t plen = strlen(path);
    bool trailing = plen > 0 && path[plen - 1] == '/';
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 1 && p[0] == '.') {
            /* skip */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (nseg)
                nseg--;
        } else {
            if (nseg == 256)
                return KILN_EINVAL;
            seg[nseg] = p;
            seglen[nseg++] = n;
        }
        p += n;
    }
    for (size_t i = 0; i < nseg; i++) {
        kiln_buf_append(b, "/", 1);
        kiln_uri_encode(b, seg[i], seglen[i], false);
    }
    if (nseg == 0 || trailing)
        kiln_buf_append(b, "/", 1);
    return 0;
}

struct param {
    char *name;   /* encoded */
    char *value;  /* encoded */
};

static int cmp_param(const void *a, const void *b)
{
    const struct param *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static char *encoded_copy(const char *s, size_t n, int *rc)
{
    kiln_buf raw, enc;
    kiln_buf_init(&raw, BUF_MAX);
    kiln_buf_init(&enc, BUF_MAX);
    if (uri_decode(&raw, s, n) != 0) {
        *rc = KILN_EINVAL;
        kiln_buf_free(&raw);
        return NULL;
    }
    kiln_uri_encode(&enc, raw.p ? raw.p : "", raw.len, false);
    kiln_buf_append(&enc, "", 1);
    kiln_buf_free(&raw);
    return enc.p;
}

struct params {
    struct param v[MAX_PARAMS];
    size_t n;
};

static int params_add_encoded(struct params *ps, const char *name, size_t nlen,
                              const char *value, size_t vlen)
{
    int rc = 0;
    if (ps->n == MAX_PARAMS)
        return KILN_EINVAL;
    char *n = encoded_copy(name, nlen, &rc);
    char *v = n ? encoded_copy(value, vlen, &rc) : NULL;
    if (!n || !v) {
        free(n);
        return rc ? rc : KILN_EINVAL;
    }
    ps->v[ps->n].name = n;
    ps->v[ps->n++].value = v;
    return 0;
}

/* Add a parameter given in clear (not yet encoded). */
static void params_add_raw(struct params *ps, const char *name, const char *value)
{
    kiln_buf n, v;
    kiln_buf_init(&n, BUF_MAX);
    kiln_buf_init(&v, BUF_MAX);
    kiln_uri_encode(&n, name, strlen(name), false);
    kiln_uri_encode(&v, value, strlen(value), false);
    kiln_buf_append(&n, "", 1);
    kiln_buf_append(&v, "", 1);
    ps->v[ps->n].name = n.p;
    ps->v[ps->n++].value = v.p;
}

static int params_parse(struct params *ps, const char *q)
{
    if (!q)
        return 0;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n) {
            const char *eq = memchr(q, '=', n);
            size_t nl = eq ? (size_t)(eq - q) : n;
            int rc = params_add_encoded(ps, q, nl, eq ? eq + 1 : "", eq ? n - nl - 1 : 0);
            if (rc)
                return rc;
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return 0;
}

static void params_write(kiln_buf *b, struct params *ps)
{
    qsort(ps->v, ps->n, sizeof ps->v[0], cmp_param);
    for (size_t i = 0; i < ps->n; i++) {
        if (i)
            kiln_buf_append(b, "&", 1);
        kiln_buf_append_c(b, ps->v[i].name);
        kiln_buf_append(b, "=", 1);
        kiln_buf_append_c(b, ps->v[i].value);
    }
}

static void params_free(struct params *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].name);
        free(ps->v[i].value);
    }
    ps->n = 0;
}

struct hdr {
    char name[128];       /* lower case */
    const char *value;
};

static int cmp_hdr(const void *a, const void *b)
{
    return strcmp(((const struct hdr *)a)->name, ((const struct hdr *)b)->name);
}

/* Value trimmed, runs of blanks collapsed to one space. */
static void append_trimmed(kiln_buf *b, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    bool blank = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') {
            blank = true;
            continue;
        }
        if (blank && b->len)
            kiln_buf_append(b, " ", 1);
        blank = false;
        kiln_buf_append(b, v, 1);
    }
}

struct headers {
    struct hdr v[MAX_HEADERS + 4];
    size_t n;
};

static bool has_header(const struct headers *h, const char *lname)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->v[i].name, lname) == 0)
            return true;
    return false;
}

static int add_header(struct headers *h, const char *name, const char *value)
{
    size_t n = strlen(name);
    if (h->n == MAX_HEADERS + 4 || n == 0 || n >= sizeof h->v[0].name)
        return KILN_EINVAL;
    for (size_t i = 0; i <= n; i++) {
        char c = name[i];
        h->v[h->n].name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    h->v[h->n++].value = value;
    return 0;
}

/*
 * The canonical request into out->canonical_request and out->string_to_sign,
 * the signature into out->signature; signed header names into signed_names.
 */
static int build(const struct kiln_sigv4 *s, const struct kiln_sigv4_request *req,
                 struct headers *h, struct params *ps, const char *payload_hash,
                 struct kiln_sigv4_signed *out, kiln_buf *signed_names)
{
    kiln_buf *c = &out->canonical_request;
    kiln_buf_append_c(c, req->method);
    kiln_buf_append(c, "\n", 1);
    if (canonical_uri(c, req->path, req->s3) != 0)
        return KILN_EINVAL;
    kiln_buf_append(c, "\n", 1);
    params_write(c, ps);
    kiln_buf_append(c, "\n", 1);

    /* Headers sorted by name (stable for repeats: values keep their order),
     * repeated names joined with ','. */
    struct hdr sorted[MAX_HEADERS + 4];
    memcpy(sorted, h->v, h->n * sizeof sorted[0]);
    /* insertion sort: stable and tiny */
    for (size_t i = 1; i < h->n; i++) {
        struct hdr t = sorted[i];
        size_t j = i;
        while (j > 0 && cmp_hdr(&sorted[j - 1], &t) > 0) {
            sorted[j] = sorted[j - 1];
            j--;
        }
        sorted[j] = t;
    }
    for (size_t i = 0; i < h->n; i++) {
        bool first = i == 0 || strcmp(sorted[i].name, sorted[i - 1].name) != 0;
        if (first) {
            if (i)
                kiln_buf_append(c, "\n", 1);
            kiln_buf_append_c(c, sorted[i].name);
            kiln_buf_append(c, ":", 1);
            if (signed_names->len)
                kiln_buf_append(signed_names, ";", 1);
            kiln_buf_append_c(signed_names, sorted[i].name);
        } else {
            kiln_buf_append(c, ",", 1);
        }
        kiln_buf v;
        kiln_buf_init(&v, BUF_MAX);
        append_trimmed(&v, sorted[i].value ? sorted[i].value : "");
        if (v.len)
            kiln_buf_append(c, v.p, v.len);
        kiln_buf_free(&v);
    }
    kiln_buf_append(c, "\n\n", 2);
    kiln_buf_append(c, signed_names->p ? signed_names->p : "", signed_names->len);
    kiln_buf_append(c, "\n", 1);
    kiln_buf_append_c(c, payload_hash);
    if (c->len >= BUF_MAX - 1)
        return KILN_ETOOBIG;

    char creq_hash[65], date[17];
    sha256_hex(c->p, c->len, creq_hash);
    kiln_sigv4_amz_date(s->now, date);
    kiln_buf_printf(&out->string_to_sign, KILN_SIGV4_ALGORITHM "\n%s\n%.8s/%s/%s/aws4_request\n%s",
                    date, date, s->region, s->service, creq_hash);
    kiln_sigv4_sign_text(s, out->string_to_sign.p, out->string_to_sign.len, out->signature);
    memcpy(out->amz_date, date, sizeof out->amz_date);
    return 0;
}

/* The outputs are C strings too (the NUL not counted). */
static void terminate(kiln_buf *b)
{
    if (kiln_buf_append(b, "", 1) == 0)
        b->len--;
}

static void signed_init(struct kiln_sigv4_signed *out)
{
    memset(out, 0, sizeof *out);
    kiln_buf_init(&out->authorization, BUF_MAX);
    kiln_buf_init(&out->canonical_request, BUF_MAX);
    kiln_buf_init(&out->string_to_sign, BUF_MAX);
}

void kiln_sigv4_signed_free(struct kiln_sigv4_signed *out)
{
    kiln_buf_free(&out->authorization);
    kiln_buf_free(&out->canonical_request);
    kiln_buf_free(&out->string_to_sign);
}

static int valid(const struct kiln_sigv4 *s, const struct kiln_sigv4_request *req)
{
    if (!s || !s->creds || !s->region || !s->service || !req || !req->method || !req->host ||
        !s->creds->access_key_id[0] || !s->creds->secret_access_key[0] ||
        req->nheaders > MAX_HEADERS)
        return KILN_EINVAL;
    return 0;
}

int kiln_sigv4_sign(const struct kiln_sigv4 *s, const struct kiln_sigv4_request *req,
                    struct kiln_sigv4_signed *out)
{
    signed_init(out);
    int rc = valid(s, req);
    if (rc)
        return rc;

    char date[17];
    kiln_sigv4_amz_date(s->now, date);
    if (req->payload_hash)
        snprintf(out->payload_hash, sizeof out->payload_hash, "%s", req->payload_hash);
    else
        sha256_hex(req->payload, req->payload_len, out->payload_hash);

    struct headers h = { .n = 0 };
    for (size_t i = 0; i < req->nheaders; i++)
        if ((rc = add_header(&h, req->headers[i].name, req->headers[i].value)))
            return rc;
    if (!has_header(&h, "host"))
        add_header(&h, "host", req->host);
    if (!has_header(&h, "x-amz-date"))
        add_header(&h, "x-amz-date", date);
    if (s->creds->session_token[0] && !has_header(&h, "x-amz-security-token"))
        add_header(&h, "x-amz-security-token", s->creds->session_token);
    if (req->s3 && !has_header(&h, "x-amz-content-sha256"))
        add_header(&h, "x-amz-content-sha256", out->payload_hash);

    struct params ps = { .n = 0 };
    kiln_buf names;
    kiln_buf_init(&names, BUF_MAX);
    rc = params_parse(&ps, req->query);
    if (rc == 0)
        rc = build(s, req, &h, &ps, out->payload_hash, out, &names);
    if (rc == 0) {
        char cred[512];
        kiln_sigv4_credential(s, cred, sizeof cred);
        kiln_buf_printf(&out->authorization,
                        KILN_SIGV4_ALGORITHM " Credential=%s, SignedHeaders=%.*s, Signature=%s",
                        cred, (int)names.len, names.p ? names.p : "", out->signature);
    }
    params_free(&ps);
    kiln_buf_free(&names);
    terminate(&out->authorization);
    terminate(&out->canonical_request);
    terminate(&out->string_to_sign);
    return rc;
}

int kiln_sigv4_presign(const struct kiln_sigv4 *s, const struct kiln_sigv4_request *req,
                       unsigned expires_s, kiln_buf *query_out, struct kiln_sigv4_signed *out)
{
    struct kiln_sigv4_signed local;
    if (!out)
        out = &local;
    signed_init(out);
    int rc = valid(s, req);
    if (rc)
        goto done;
    if (expires_s < 1 || expires_s > 604800) {
        rc = KILN_EINVAL;
        goto done;
    }
    /* S3 presigns UNSIGNED-PAYLOAD; every other service (RDS and
     * ElastiCache tokens) signs the body's hash, empty for a GET: the
     * server assumes one or the other, as botocore does. */
    if (req->payload_hash)
        snprintf(out->payload_hash, sizeof out->payload_hash, "%s", req->payload_hash);
    else if (req->s3)
        snprintf(out->payload_hash, sizeof out->payload_hash, "%s", KILN_SIGV4_UNSIGNED);
    else
        sha256_hex(req->payload, req->payload_len, out->payload_hash);
    const char *payload = out->payload_hash;

    struct headers h = { .n = 0 };
    for (size_t i = 0; i < req->nheaders && rc == 0; i++)
        rc = add_header(&h, req->headers[i].name, req->headers[i].value);
    if (rc)
        goto done;
    if (!has_header(&h, "host"))
        add_header(&h, "host", req->host);

    /* The signed header names are a query parameter, so they are needed
     * before the canonical request: sort a copy of the names. */
    kiln_buf names;
    kiln_buf_init(&names, BUF_MAX);
    struct hdr sorted[MAX_HEADERS + 4];
    memcpy(sorted, h.v, h.n * sizeof sorted[0]);
    qsort(sorted, h.n, sizeof sorted[0], cmp_hdr);
    for (size_t i = 0; i < h.n; i++) {
        if (i && strcmp(sorted[i].name, sorted[i - 1].name) == 0)
            continue;
        if (names.len)
            kiln_buf_append(&names, ";", 1);
        kiln_buf_append_c(&names, sorted[i].name);
    }
    kiln_buf_append(&names, "", 1);

    char date[17], cred[512], exp[16];
    kiln_sigv4_amz_date(s->now, date);
    kiln_sigv4_credential(s, cred, sizeof cred);
    snprintf(exp, sizeof exp, "%u", expires_s);

    struct params ps = { .n = 0 };
    rc = params_parse(&ps, req->query);
    if (rc == 0 && ps.n + 6 > MAX_PARAMS)
        rc = KILN_EINVAL;
    if (rc == 0) {
        params_add_raw(&ps, "X-Amz-Algorithm", KILN_SIGV4_ALGORITHM);
        params_add_raw(&ps, "X-Amz-Credential", cred);
        params_add_raw(&ps, "X-Amz-Date", date);
        params_add_raw(&ps, "X-Amz-Expires", exp);
        params_add_raw(&ps, "X-Amz-SignedHeaders", names.p);
        if (s->creds->session_token[0])
            params_add_raw(&ps, "X-Amz-Security-Token", s->creds->session_token);
        kiln_buf got;
        kiln_buf_init(&got, BUF_MAX);
        rc = build(s, req, &h, &ps, payload, out, &got);
        kiln_buf_free(&got);
    }
    if (rc == 0) {
        /* build() sorted ps: the query to send is the canonical one. */
        params_write(query_out, &ps);
        kiln_buf_printf(query_out, "&X-Amz-Signature=%s", out->signature);
        terminate(query_out);
    }
    terminate(&out->canonical_request);
    terminate(&out->string_to_sign);
    params_free(&ps);
    kiln_buf_free(&names);
done:
    if (out == &local)
        kiln_sigv4_signed_free(&local);
    return rc;
}
