/*
 * S3 calls without an SDK; see s3.h.
 *
 * The one decision to know: S3's XML is untrusted input (a misbehaving or
 * hostile endpoint can answer anything), so the ListObjectsV2 parser is a
 * small expat state machine that accepts only the elements it needs, refuses
 * any DTD (no entity can expand), bounds every text it keeps, and copies
 * what it keeps into the request's arena. Nothing else of S3's answers goes
 * further than a log line, and there only the error code.
 */
#include "aws/s3.h"

#include <expat.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aws/aws.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/str.h"

#define URL_MAX 8192
#define LIST_BODY_MAX (8u << 20)   /* 1000 keys of 1 KiB, escaped, and their fields */
#define ERROR_BODY_MAX (64u << 10)
#define CODE_MAX 128
#define FIELD_MAX 64               /* Size, LastModified */

/* ---- where the bucket is ------------------------------------------------ */

/*
 * The bucket's location: origin ("https://host[:port]"), the Host header as
 * a client sends it ("host[:port]", no default port), and the path prefix
 * keys follow ("" virtual-hosted, "/bucket" path-style, after any path of
 * the endpoint itself).
 */
struct loc {
    char origin[512];
    char host[512];
    char prefix[512];
};

static int locate(const struct kiln_s3 *s3, struct loc *l)
{
    char ep[512], def[256];
    if (!s3->bucket || !*s3->bucket || !s3->region || !*s3->region ||
        kiln_aws_endpoint("S3", "s3", s3->region, ep, sizeof ep) != 0)
        return KILN_EINVAL;
    snprintf(def, sizeof def, "https://s3.%s.amazonaws.com", s3->region);
    bool vhost = strcmp(ep, def) == 0 && !strchr(s3->bucket, '.');
    int n;
    if (vhost)
        n = snprintf(ep, sizeof ep, "https://%s.s3.%s.amazonaws.com", s3->bucket, s3->region);
    else
        n = 0;
    if (n < 0 || (size_t)n >= sizeof ep)
        return KILN_EINVAL;

    const char *scheme_end = strstr(ep, "://");
    if (!scheme_end)
        return KILN_EINVAL;
    const char *hs = scheme_end + 3;
    const char *he = hs + strcspn(hs, "/?#");
    if (he == hs || *he == '?' || *he == '#')
        return KILN_EINVAL;
    size_t olen = (size_t)(he - ep), hlen = (size_t)(he - hs);
    if (olen >= sizeof l->origin || hlen >= sizeof l->host)
        return KILN_EINVAL;
    memcpy(l->origin, ep, olen);
    l->origin[olen] = '\0';
    memcpy(l->host, hs, hlen);
    l->host[hlen] = '\0';
    /* A client leaves a default port out of Host; sign what it sends. */
    bool https = strncmp(ep, "https://", 8) == 0;
    const char *dflt = https ? ":443" : ":80";
    size_t dl = strlen(dflt);
    if (hlen > dl && strcmp(l->host + hlen - dl, dflt) == 0)
        l->host[hlen - dl] = '\0';

    /* Bucket names are [a-z0-9.-] (kiln_s3_bucket_valid): no escaping. */
    n = vhost ? snprintf(l->prefix, sizeof l->prefix, "%s", he)
              : snprintf(l->prefix, sizeof l->prefix, "%s/%s", he, s3->bucket);
    if (n < 0 || (size_t)n >= sizeof l->prefix)
        return KILN_EINVAL;
    return 0;
}

bool kiln_s3_bucket_valid(const char *b)
{
    /* docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html */
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '.' && c != '-')
            return false;
        if ((i == 0 || i == n - 1) && !alnum)
            return false;
        if (c == '.' && (b[i + 1] == '.' || b[i + 1] == '-' || (i && b[i - 1] == '-')))
            return false;
    }
    return true;
}

/* path of key: prefix "/" key, the key encoded once with '/' kept. */
static int key_path(kiln_buf *b, const struct loc *l, const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > KILN_S3_KEY_MAX)
        return KILN_EINVAL;
    kiln_buf_append_c(b, l->prefix);
    kiln_buf_append_c(b, "/");
    kiln_uri_encode(b, key, n, true);
    return kiln_buf_append(b, "", 1);
}

static void set_err(char *err, size_t cap, const char *fmt, const char *op, const char *detail)
{
    if (err && cap)
        snprintf(err, cap, fmt, op, detail);
}

/*
 * The status of an answer as a kiln_err. S3's <Error><Code> (when the body
 * has one) goes into err for the log; the rest of the body goes nowhere.
 */
static int judge(const struct kiln_http_response *res, kiln_arena *a, const char *op,
                 bool not_found_ok, char *err, size_t errcap)
{
    if (res->status >= 200 && res->status < 300)
        return 0;
    const char *code = NULL;
    struct kiln_s3_list parsed;
    if (res->body.len && kiln_s3_list_parse(a, res->body.p, res->body.len, 0, &parsed) == 0)
        code = parsed.error_code;
    if (err && errcap)
        snprintf(err, errcap, "S3 %s: HTTP %ld%s%s", op, res->status, code ? " " : "",
                 code ? code : "");
    if (res->status == 404 && not_found_ok)
        return KILN_ENOTFOUND;
    if (res->status == 400)
        return KILN_EINVAL;
    return KILN_EUNAVAILABLE;
}

static int perform(const struct kiln_s3 *s3, const char *method, const char *url,
                   size_t max_body, struct kiln_http_response *res, char *err, size_t errcap)
{
    struct kiln_aws_call call = {
        .service = "s3", .region = s3->region, .method = method, .url = url, .s3 = true,
        .timeout_ms = s3->timeout_ms, .max_body = max_body,
    };
    char why[256] = "";
    int rc = kiln_aws_request(&call, res, why, sizeof why);
    if (rc) {
        set_err(err, errcap, "S3 %s: %s", method, why[0] ? why : kiln_err_message(rc));
        /* No answer, no credentials, or an answer too big: S3 is
         * unavailable as far as a client is concerned. */
        return KILN_EUNAVAILABLE;
    }
    return 0;
}

/* ---- time formats ------------------------------------------------------- */

static bool digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

static void format_time(unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s,
                        unsigned us, char out[KILN_RFC3339_LEN + 1])
{
    snprintf(out, KILN_RFC3339_LEN + 1, "%04u-%02u-%02uT%02u:%02u:%02u.%06uZ", y % 10000,
             mo % 100, d % 100, h % 100, mi % 100, s % 100, us % 1000000);
}

static bool valid_fields(unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi,
                         unsigned s)
{
    return y >= 1 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 &&
           mi <= 59 && s <= 60;
}

/* "2009-10-12T17:50:30.000Z" (ListObjectsV2) → RFC 3339 with microseconds;
 * false (out "") for anything else. */
static bool iso_time(const char *s, size_t n, char out[KILN_RFC3339_LEN + 1])
{
    unsigned y, mo, d, h, mi, sec, us = 0;
    out[0] = '\0';
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[n - 1] != 'Z' || !digits(s, 4, &y) || !digits(s + 5, 2, &mo) ||
        !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) ||
        !digits(s + 17, 2, &sec) || !valid_fields(y, mo, d, h, mi, sec))
        return false;
    size_t i = 19;
    if (s[i] == '.') {
        size_t f = 0;
        for (i++; i < n - 1; i++, f++) {
            if (s[i] < '0' || s[i] > '9' || f >= 9)
                return false;
            if (f < 6)
                us = us * 10 + (unsigned)(s[i] - '0');
        }
        if (f == 0)
            return false;
        for (; f < 6; f++)
            us *= 10;
    }
    if (i != n - 1)
        return false;
    format_time(y, mo, d, h, mi, sec, us, out);
    return true;
}

/* "Wed, 12 Oct 2009 17:50:00 GMT" (RFC 9110 IMF-fixdate, what S3 sends in
 * Last-Modified) → RFC 3339; false for anything else. No strptime: its
 * month names follow the locale. */
static bool http_time(const char *s, char out[KILN_RFC3339_LEN + 1])
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    unsigned y, d, h, mi, sec, mo = 0;
    out[0] = '\0';
    if (strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
        s[16] != ' ' || s[19] != ':' || s[22] != ':' || strcmp(s + 25, " GMT") != 0 ||
        !digits(s + 5, 2, &d) || !digits(s + 12, 4, &y) || !digits(s + 17, 2, &h) ||
        !digits(s + 20, 2, &mi) || !digits(s + 23, 2, &sec))
        return false;
    for (unsigned m = 0; m < 12; m++)
        if (memcmp(s + 8, months + 3 * m, 3) == 0)
            mo = m + 1;
    if (!valid_fields(y, mo, d, h, mi, sec))
        return false;
    format_time(y, mo, d, h, mi, sec, 0, out);
    return true;
}

/* ---- ListObjectsV2 XML -------------------------------------------------- */

enum root { ROOT_NONE, ROOT_LIST, ROOT_ERROR };
enum field { F_NONE, F_KEY, F_SIZE, F_MODIFIED, F_TOKEN, F_CODE };

struct parse {
    XML_Parser xp;
    kiln_arena *a;
    struct kiln_s3_list *out;
    size_t max, cap;
    bool failed;
    int depth;
    enum root root;
    bool in_contents;
    enum field field;              /* the leaf whose text is being kept */
    int field_depth;
    kiln_buf text;
    /* the entry being read */
    const char *key;
    bool have_size;
    uint64_t size;
    char modified[KILN_RFC3339_LEN + 1];
    bool have_modified;
};

static void fail(struct parse *p)
{
    if (!p->failed) {
        p->failed = true;
        XML_StopParser(p->xp, XML_FALSE);
    }
}

static size_t field_max(enum field f)
{
    switch (f) {
    case F_KEY: return KILN_S3_KEY_MAX;
    case F_TOKEN: return KILN_S3_TOKEN_MAX;
    case F_CODE: return CODE_MAX;
    default: return FIELD_MAX;
    }
}

static void capture(struct parse *p, enum field f)
{
    p->field = f;
    p->field_depth = p->depth;
    kiln_buf_reset(&p->text);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct parse *p = ud;
    (void)attrs;
    if (p->failed)
        return;
    p->depth++;
    /* Leaves hold text only: an element inside one is not S3's answer. */
    if (p->field != F_NONE || p->depth > 16) {
        fail(p);
        return;
    }
    if (p->depth == 1) {
        if (strcmp(name, "ListBucketResult") == 0)
            p->root = ROOT_LIST;
        else if (strcmp(name, "Error") == 0)
            p->root = ROOT_ERROR;
        else
            fail(p);
        return;
    }
    if (p->depth == 2 && p->root == ROOT_ERROR) {
        if (strcmp(name, "Code") == 0)
            capture(p, F_CODE);
        return;
    }
    if (p->depth == 2 && p->root == ROOT_LIST) {
        if (strcmp(name, "Contents") == 0) {
            p->in_contents = true;
            p->key = NULL;
            p->have_size = p->have_modified = false;
            p->modified[0] = '\0';
        } else if (strcmp(name, "NextContinuationToken") == 0) {
            capture(p, F_TOKEN);
        }
        return;
    }
    if (p->depth == 3 && p->in_contents) {
        if (strcmp(name, "Key") == 0)
            capture(p, F_KEY);
        else if (strcmp(name, "Size") == 0)
            capture(p, F_SIZE);
        else if (strcmp(name, "LastModified") == 0)
            capture(p, F_MODIFIED);
    }
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    struct parse *p = ud;
    if (p->failed || p->field == F_NONE || len <= 0)
        return;
    if (p->text.len + (size_t)len > field_max(p->field) ||
        kiln_buf_append(&p->text, s, (size_t)len) != 0)
        fail(p);
}

static const char *text_dup(struct parse *p)
{
    return kiln_arena_strndup(p->a, p->text.p ? p->text.p : "", p->text.len);
}

static void add_object(struct parse *p)
{
    if (!p->key || !p->have_size || p->out->count >= p->max) {
        fail(p);
        return;
    }
    if (p->out->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        if (cap > p->max)
            cap = p->max;
        struct kiln_s3_object *v = kiln_arena_alloc(p->a, cap * sizeof *v);
        if (p->out->count)
            memcpy(v, p->out->objects, p->out->count * sizeof *v);
        p->out->objects = v;
        p->cap = cap;
    }
    struct kiln_s3_object *o = &p->out->objects[p->out->count++];
    memset(o, 0, sizeof *o);
    o->key = p->key;
    o->size = p->size;
    memcpy(o->last_modified, p->modified, sizeof o->last_modified);
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct parse *p = ud;
    (void)name;
    if (p->failed)
        return;
    if (p->field != F_NONE && p->depth == p->field_depth) {
        enum field f = p->field;
        p->field = F_NONE;
        switch (f) {
        case F_KEY:
            if (p->key || p->text.len == 0)
                fail(p);
            else
                p->key = text_dup(p);
            break;
        case F_SIZE:
            if (p->have_size || !kiln_str_to_u64((kiln_str){ p->text.p, p->text.len },
                                                 UINT64_MAX / 2, &p->size))
                fail(p);
            p->have_size = true;
            break;
        case F_MODIFIED:
            if (p->have_modified)
                fail(p);
            p->have_modified = true;
            /* A date in another format is shown as unknown, not refused. */
            iso_time(p->text.p ? p->text.p : "", p->text.len, p->modified);
            break;
        case F_TOKEN:
            if (p->out->next_token)
                fail(p);
            else if (p->text.len)
                p->out->next_token = text_dup(p);
            break;
        case F_CODE:
            if (!p->out->error_code)
                p->out->error_code = text_dup(p);
            break;
        case F_NONE:
            break;
        }
    } else if (p->depth == 2 && p->in_contents) {
        p->in_contents = false;
        add_object(p);
    }
    p->depth--;
}

/* Any DTD (internal subset, entity declarations, external references) is
 * refused: nothing S3 sends has one, and it is how XML bombs start. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal;
    fail(ud);
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_param,
                                   const XML_Char *value, int value_len, const XML_Char *base,
                                   const XML_Char *sysid, const XML_Char *pubid,
                                   const XML_Char *notation)
{
    (void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid;
    (void)pubid, (void)notation;
    fail(ud);
}

int kiln_s3_list_parse(kiln_arena *a, const char *xml, size_t len, size_t max_objects,
                       struct kiln_s3_list *out)
{
    memset(out, 0, sizeof *out);
    if (len > LIST_BODY_MAX || len > (size_t)INT32_MAX)
        return KILN_EPROTO;
    struct parse p = { .a = a, .out = out, .max = max_objects };
    kiln_buf_init(&p.text, KILN_S3_TOKEN_MAX + 1);
    int rc = KILN_EPROTO;
    p.xp = XML_ParserCreate("UTF-8");
    if (!p.xp)
        goto out;
    XML_SetUserData(p.xp, &p);
    XML_SetElementHandler(p.xp, on_start, on_end);
    XML_SetCharacterDataHandler(p.xp, on_text);
    XML_SetStartDoctypeDeclHandler(p.xp, on_doctype);
    XML_SetEntityDeclHandler(p.xp, on_entity_decl);
    XML_SetParamEntityParsing(p.xp, XML_PARAM_ENTITY_PARSING_NEVER);
    if (XML_Parse(p.xp, xml ? xml : "", (int)len, XML_TRUE) != XML_STATUS_OK || p.failed ||
        p.root == ROOT_NONE)
        goto out;
    rc = 0;
out:
    if (p.xp)
        XML_ParserFree(p.xp);
    kiln_buf_free(&p.text);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

/* ---- operations --------------------------------------------------------- */

int kiln_s3_list(const struct kiln_s3 *s3, kiln_arena *a, const char *prefix,
                 unsigned max_keys, const char *token, struct kiln_s3_list *out, char *err,
                 size_t errcap)
{
    memset(out, 0, sizeof *out);
    struct loc l;
    if (max_keys < 1 || max_keys > KILN_S3_LIST_MAX || locate(s3, &l) != 0) {
        set_err(err, errcap, "S3 %s: %s", "ListObjectsV2", "bad bucket, region or page size");
        return KILN_EINVAL;
    }
    kiln_buf url;
    kiln_buf_init(&url, URL_MAX);
    kiln_buf_printf(&url, "%s%s%s?list-type=2&max-keys=%u&prefix=", l.origin, l.prefix,
                    l.prefix[0] ? "" : "/", max_keys);
    kiln_uri_encode(&url, prefix, strlen(prefix), false);
    if (token) {
        kiln_buf_append_c(&url, "&continuation-token=");
        kiln_uri_encode(&url, token, strlen(token), false);
    }
    int rc = kiln_buf_append(&url, "", 1) ? KILN_EINVAL : 0;
    struct kiln_http_response res = { 0 };
    if (rc == 0)
        rc = perform(s3, "GET", url.p, LIST_BODY_MAX, &res, err, errcap);
    /* A missing bucket is a broken deployment, not an empty list. */
    if (rc == 0)
        rc = judge(&res, a, "ListObjectsV2", false, err, errcap);
    if (rc == 0 && kiln_s3_list_parse(a, res.body.p, res.body.len, max_keys, out) != 0) {
        set_err(err, errcap, "S3 %s: %s", "ListObjectsV2", "unparsable answer");
        rc = KILN_EPROTO;
    }
    if (rc == 0 && out->error_code) {
        set_err(err, errcap, "S3 %s: %s", "ListObjectsV2", "an error document with 200");
        rc = KILN_EPROTO;
    }
    if (rc)
        memset(out, 0, sizeof *out);
    kiln_http_response_free(&res);
    kiln_buf_free(&url);
    return rc;
}

int kiln_s3_head(const struct kiln_s3 *s3, kiln_arena *a, const char *key,
                 struct kiln_s3_object *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    struct loc l;
    kiln_buf url;
    kiln_buf_init(&url, URL_MAX);
    int rc = locate(s3, &l);
    if (rc == 0) {
        kiln_buf_append_c(&url, l.origin);
        rc = key_path(&url, &l, key);
    }
    if (rc) {
        set_err(err, errcap, "S3 %s: %s", "HeadObject", "bad bucket, region or key");
        kiln_buf_free(&url);
        return KILN_EINVAL;
    }
    struct kiln_http_response res = { 0 };
    rc = perform(s3, "HEAD", url.p, 0, &res, err, errcap);
    if (rc == 0)
        rc = judge(&res, a, "HeadObject", true, err, errcap);
    char v[512], t[KILN_RFC3339_LEN + 1];
    if (rc == 0) {
        out->key = kiln_arena_strndup(a, key, strlen(key));
        if (!kiln_http_response_header(&res, "content-length", v, sizeof v) ||
            !kiln_str_to_u64(kiln_str_c(v), UINT64_MAX / 2, &out->size)) {
            set_err(err, errcap, "S3 %s: %s", "HeadObject", "no content-length");
            rc = KILN_EPROTO;
        }
    }
    if (rc == 0) {
        /* Printable ASCII only: a media type is, and callers put it in JSON. */
        bool ok = kiln_http_response_header(&res, "content-type", v, sizeof v) && v[0];
        for (const char *c = v; ok && *c; c++)
            ok = *c >= 0x20 && *c < 0x7f;
        if (ok)
            out->content_type = kiln_arena_strndup(a, v, strlen(v));
        if (kiln_http_response_header(&res, "last-modified", v, sizeof v) && http_time(v, t))
            memcpy(out->last_modified, t, sizeof t);
    }
    kiln_http_response_free(&res);
    kiln_buf_free(&url);
    return rc;
}

int kiln_s3_delete(const struct kiln_s3 *s3, const char *key, char *err, size_t errcap)
{
    struct loc l;
    kiln_buf url;
    kiln_buf_init(&url, URL_MAX);
    int rc = locate(s3, &l);
    if (rc == 0) {
        kiln_buf_append_c(&url, l.origin);
        rc = key_path(&url, &l, key);
    }
    if (rc) {
        set_err(err, errcap, "S3 %s: %s", "DeleteObject", "bad bucket, region or key");
        kiln_buf_free(&url);
        return KILN_EINVAL;
    }
    struct kiln_http_response res = { 0 };
    kiln_arena *scratch = kiln_arena_new(1024);
    rc = perform(s3, "DELETE", url.p, ERROR_BODY_MAX, &res, err, errcap);
    if (rc == 0)
        rc = judge(&res, scratch, "DeleteObject", false, err, errcap);
    kiln_arena_free(scratch);
    kiln_http_response_free(&res);
    kiln_buf_free(&url);
    return rc;
}

int kiln_s3_presign_get(const struct kiln_s3 *s3, kiln_arena *a, const char *key,
                        unsigned expires_s, const char *content_disposition, const char **url,
                        char *err, size_t errcap)
{
    *url = NULL;
    struct loc l;
    kiln_buf path, query, q;
    kiln_buf_init(&path, URL_MAX);
    kiln_buf_init(&query, URL_MAX);
    kiln_buf_init(&q, URL_MAX);
    int rc = locate(s3, &l);
    if (rc == 0)
        rc = key_path(&path, &l, key);
    if (rc == 0 && content_disposition) {
        kiln_buf_append_c(&query, "response-content-disposition=");
        kiln_uri_encode(&query, content_disposition, strlen(content_disposition), false);
        rc = kiln_buf_append(&query, "", 1) ? KILN_EINVAL : 0;
    }
    if (rc) {
        set_err(err, errcap, "S3 %s: %s", "presign", "bad bucket, region or key");
        goto out;
    }
    struct kiln_aws_creds creds;
    char why[256] = "";
    if (kiln_aws_credentials(&creds, why, sizeof why) != 0) {
        set_err(err, errcap, "S3 %s: %s", "presign", why);
        rc = KILN_EUNAVAILABLE;
        goto out;
    }
    struct kiln_sigv4 s = { &creds, s3->region, "s3", kiln_aws_now() };
    struct kiln_sigv4_request r = {
        .method = "GET", .host = l.host, .path = path.p,
        .query = content_disposition ? query.p : NULL, .s3 = true,
    };
    rc = kiln_sigv4_presign(&s, &r, expires_s, &q, NULL);
    explicit_bzero(&creds, sizeof creds);
    if (rc) {
        set_err(err, errcap, "S3 %s: %s", "presign", "cannot sign");
        rc = KILN_EINVAL;
        goto out;
    }
    *url = kiln_arena_sprintf(a, "%s%s?%s", l.origin, path.p, q.p);
out:
    kiln_buf_free(&path);
    kiln_buf_free(&query);
    kiln_buf_free(&q);
    return rc;
}

/* ---- POST policy -------------------------------------------------------- */

/*
 * docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html:
 * the policy is JSON with an expiration and the conditions every form field
 * must meet; its base64 is the "policy" field and what the signing key
 * signs. The conditions pin the key and the Content-Type exactly and the
 * size to 1..max, so the browser can upload that one object and nothing
 * else.
 */
int kiln_s3_post_sign(const struct kiln_sigv4 *s, kiln_arena *a, const char *bucket,
                      const char *url, const struct kiln_s3_post_policy *p,
                      struct kiln_s3_post *out)
{
    memset(out, 0, sizeof *out);
    if (!p->key || !*p->key || strlen(p->key) > KILN_S3_KEY_MAX || !p->content_type ||
        !p->max_bytes || p->max_bytes > (uint64_t)1 << 53 || p->expires_s < 1 ||
        p->expires_s > 604800)
        return KILN_EINVAL;
    char date[17], cred[512], expiration[32];
    kiln_sigv4_amz_date(s->now, date);
    kiln_sigv4_credential(s, cred, sizeof cred);
    time_t exp = s->now + (time_t)p->expires_s;
    struct tm tm;
    gmtime_r(&exp, &tm);
    strftime(expiration, sizeof expiration, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    bool token = s->creds->session_token[0] != '\0';

    json_t *conditions = json_pack(
        "[{s:s}, [s,s,s], {s:s}, [s,i,I], {s:s}, {s:s}, {s:s}]", "bucket", bucket, "eq",
        "$key", p->key, "Content-Type", p->content_type, "content-length-range", 1,
        (json_int_t)p->max_bytes, "x-amz-algorithm", KILN_SIGV4_ALGORITHM, "x-amz-credential",
        cred, "x-amz-date", date);
    if (conditions && token)
        json_array_append_new(conditions, json_pack("{s:s}", "x-amz-security-token",
                                                    s->creds->session_token));
    json_t *policy = conditions ? json_pack("{s:s, s:o}", "expiration", expiration,
                                            "conditions", conditions)
                                : NULL;
    char *text = policy ? json_dumps(policy, JSON_COMPACT) : NULL;
    json_decref(policy);
    if (!text)
        return KILN_EINVAL; /* a key or type that is not UTF-8 */

    size_t n = strlen(text);
    char *b64 = kiln_arena_alloc(a, 4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)text, (int)n);
    char sig[65];
    kiln_sigv4_sign_text(s, b64, strlen(b64), sig);

    out->url = kiln_arena_strndup(a, url, strlen(url));
    out->policy_json = kiln_arena_strndup(a, text, n);
    free(text);
#define FIELD(n, v)                                                          \
    do {                                                                     \
        out->fields[out->nfields].name = (n);                                \
        out->fields[out->nfields++].value = kiln_arena_strndup(a, (v), strlen(v)); \
    } while (0)
    FIELD("key", p->key);
    FIELD("Content-Type", p->content_type);
    FIELD("x-amz-algorithm", KILN_SIGV4_ALGORITHM);
    FIELD("x-amz-credential", cred);
    FIELD("x-amz-date", date);
    if (token)
        FIELD("x-amz-security-token", s->creds->session_token);
    FIELD("policy", b64);
    FIELD("x-amz-signature", sig);
#undef FIELD
    return 0;
}

int kiln_s3_presign_post(const struct kiln_s3 *s3, kiln_arena *a,
                         const struct kiln_s3_post_policy *p, struct kiln_s3_post *out,
                         char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    struct loc l;
    if (locate(s3, &l) != 0) {
        set_err(err, errcap, "S3 %s: %s", "presign POST", "bad bucket or region");
        return KILN_EINVAL;
    }
    struct kiln_aws_creds creds;
    char why[256] = "";
    if (kiln_aws_credentials(&creds, why, sizeof why) != 0) {
        set_err(err, errcap, "S3 %s: %s", "presign POST", why);
        return KILN_EUNAVAILABLE;
    }
    struct kiln_sigv4 s = { &creds, s3->region, "s3", kiln_aws_now() };
    /* The form goes to the bucket: "https://b.s3.region.amazonaws.com/"
     * or "<endpoint>/<bucket>". */
    char url[1100];
    snprintf(url, sizeof url, "%s%s%s", l.origin, l.prefix, l.prefix[0] ? "" : "/");
    int rc = kiln_s3_post_sign(&s, a, s3->bucket, url, p, out);
    explicit_bzero(&creds, sizeof creds);
    if (rc)
        set_err(err, errcap, "S3 %s: %s", "presign POST", "cannot build the policy");
    return rc;
}
