/*
 * Uploads (API.md, "Uploads"): files in S3 under users/<user id>/uploads/,
 * uploaded by the browser straight to S3 with a presigned POST policy, so
 * that file bytes never pass through Kiln (docs/ARCHITECTURE.md, Uploads).
 *
 * What Kiln decides is who may touch which key: a new key is always made
 * here (users/<id>/uploads/<uuid>-<sanitised name>) and pinned exactly in
 * the policy, with its Content-Type (from UPLOADS_ALLOWED_TYPES) and a size
 * range; a key that comes in a path is checked before any S3 call (well
 * formed: 400 invalid_request; under another user's prefix: 403 forbidden).
 *
 * Keys in paths, two spellings of one key: the original's clients send it
 * as one segment with its slashes encoded (GET /uploads/users%2F<id>%2F
 * uploads%2F<name>, the route's *key parameter), and the path itself works
 * too (GET /uploads/users/<id>/uploads/<name>); .../download is its
 * presigned URL. Both are checked the same way before anything reaches
 * S3: users/<id>/uploads/<name>, the session's own id, and no empty, "."
 * or ".." segment (S3 keys are not paths, but the browser and every proxy
 * between treat them as such). Every name Kiln makes is one segment; a
 * deeper key something else put under the prefix is addressable only in
 * the encoded spelling.
 *
 * Every route but /uploads/types calls S3 (or may fetch credentials), which
 * blocks: they run on the worker pool (routes.c, KILN_ROUTE_BLOCKING). S3
 * failing is 503 service_unavailable; what S3 said is logged (its error
 * code), never shown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/resource.h"
#include "aws/s3.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/dl.h"
#include "core/http_client.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"
#include "core/uuid.h"

#define NAME_MAX_CHARS 100         /* sanitised file name, extension kept */
#define FILENAME_IN_MAX API_UPLOADS_FILENAME_MAX /* filename as sent, in characters */
#define TYPE_MAX 127               /* RFC 6838 4.2: type and subtype names */
#define MAX_TYPES 64
#define LIST_DEFAULT API_UPLOADS_LIST_DEFAULT
#define S3_TIMEOUT_MS 10000

static const char DEFAULT_TYPES[] =
    "image/jpeg,image/png,image/gif,image/webp,application/pdf,text/plain";

/* Read once at start (api_uploads_setup), read-only afterwards. */
static struct {
    char *bucket;                  /* NULL: uploads are off (503) */
    char *region;
    uint64_t max_bytes;
    unsigned expiry_s;
    char *types[MAX_TYPES];
    size_t ntypes;
} up;

static const char NOT_FOUND[] = "upload_not_found";
static const char NOT_FOUND_MSG[] = "Upload not found";

/* ---- configuration ------------------------------------------------------ */

static bool type_char(unsigned char c)
{
    /* RFC 6838 4.2 restricted-name-chars */
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '!' || c == '#' ||
           c == '$' || c == '&' || c == '-' || c == '^' || c == '_' || c == '.' || c == '+';
}

/* "type/subtype", lower-cased into out (TYPE_MAX * 2 + 2 bytes). */
static bool parse_type(const char *s, size_t n, char *out)
{
    size_t slash = 0, i;
    if (n == 0 || n > 2 * TYPE_MAX + 1)
        return false;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c == '/' && !slash && i > 0)
            slash = i;
        else if (!type_char(c))
            return false;
        out[i] = (char)c;
    }
    out[n] = '\0';
    return slash && slash < n - 1 && slash <= TYPE_MAX && n - slash - 1 <= TYPE_MAX;
}

static void load_types(struct kiln_env_reader *e, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *end = p + strcspn(p, ",");
        kiln_str t = kiln_str_trim((kiln_str){ p, (size_t)(end - p) });
        char type[2 * TYPE_MAX + 2];
        if (!parse_type(t.p, t.len, type)) {
            kiln_env_problem(e, "UPLOADS_ALLOWED_TYPES: \"%.*s\" is not a media type "
                                "(type/subtype)", (int)(t.len > 60 ? 60 : t.len), t.p);
        } else {
            bool dup = false;
            for (size_t i = 0; i < up.ntypes && !dup; i++)
                dup = strcmp(up.types[i], type) == 0;
            if (!dup && up.ntypes == MAX_TYPES)
                kiln_env_problem(e, "UPLOADS_ALLOWED_TYPES: more than %d types", MAX_TYPES);
            else if (!dup)
                up.types[up.ntypes++] = kiln_strdup(type);
        }
        p = *end ? end + 1 : end;
    }
    if (up.ntypes == 0)
        kiln_env_problem(e, "UPLOADS_ALLOWED_TYPES names no media type");
}

static bool uint_env(struct kiln_env_reader *e, const char *name, uint64_t min, uint64_t max,
                     uint64_t *out)
{
    const char *v = kiln_env_value(e, name);
    uint64_t n;
    if (!v)
        return true;
    if (!kiln_str_to_u64(kiln_str_c(v), UINT64_MAX, &n) || n < min || n > max) {
        kiln_env_problem(e, "%s must be an integer from %llu to %llu (got \"%.40s\")", name,
                         (unsigned long long)min, (unsigned long long)max, v);
        return false;
    }
    *out = n;
    return true;
}

/* An AWS region name as it appears in host names: "eu-west-1",
 * "us-gov-west-1", "cn-north-1". */
static bool region_valid(const char *r)
{
    size_t n = strlen(r);
    if (n < 4 || n > 32 || r[0] == '-' || r[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-'))
            return false;
    return true;
}

void api_uploads_free(void)
{
    free(up.bucket);
    free(up.region);
    for (size_t i = 0; i < up.ntypes; i++)
        free(up.types[i]);
    memset(&up, 0, sizeof up);
}

void api_uploads_setup(struct kiln_env_reader *e)
{
    api_uploads_free();
    uint64_t mb = 10, expiry = 3600;
    /* S3 takes at most 5 GiB in one POST; presigned URLs live at most 7 days. */
    uint_env(e, "UPLOADS_MAX_SIZE_MB", 1, 5120, &mb);
    uint_env(e, "UPLOADS_PRESIGNED_URL_EXPIRY", 1, 604800, &expiry);
    up.max_bytes = mb * 1024 * 1024;
    up.expiry_s = (unsigned)expiry;
    const char *types = kiln_env_value(e, "UPLOADS_ALLOWED_TYPES");
    load_types(e, types ? types : DEFAULT_TYPES);

    const char *bucket = kiln_env_value(e, "UPLOADS_BUCKET");
    /* The bucket's region (the original's variable): a bucket may live in
     * another region than the task, whose AWS_REGION ECS sets. */
    const char *region = kiln_env_value(e, "UPLOADS_REGION");
    const char *region_var = "UPLOADS_REGION";
    if (!region) {
        region = kiln_env_value(e, "AWS_REGION");
        region_var = "AWS_REGION";
    }
    if (!region) {
        region = kiln_env_value(e, "AWS_DEFAULT_REGION");
        region_var = "AWS_DEFAULT_REGION";
    }
    if (bucket && !kiln_s3_bucket_valid(bucket))
        kiln_env_problem(e, "UPLOADS_BUCKET is not an S3 bucket name (3 to 63 of a-z 0-9 . -)");
    else if (bucket && !region)
        kiln_env_problem(e, "UPLOADS_BUCKET is set but UPLOADS_REGION (or AWS_REGION, "
                            "AWS_DEFAULT_REGION) is not: S3 requests are signed for a region");
    else if (bucket && !region_valid(region))
        /* It becomes part of the endpoint's host name and of every
         * signature: a typo must stop the start, not every upload. */
        kiln_env_problem(e, "%s is not an AWS region name (e.g. eu-west-1; got \"%.40s\")",
                         region_var, region);
    else if (bucket && kiln_http_client_init() != 0)
        /* Loaded now (core/dl.h) so that no request pays for it. */
        kiln_env_problem(e, "UPLOADS_BUCKET is set but " KILN_CURL_SONAME
                            " (S3 requests) cannot be loaded");
    else if (bucket) {
        up.bucket = kiln_strdup(bucket);
        up.region = kiln_strdup(region);
    }
    if (up.bucket) {
        char size[24];
        snprintf(size, sizeof size, "%llu", (unsigned long long)up.max_bytes);
        kiln_log(KILN_LOG_INFO, "uploads: S3 bucket configured", "bucket", up.bucket,
                 "region", up.region, "max_size_bytes", size, NULL);
    } else {
        kiln_log(KILN_LOG_INFO, "uploads: off (UPLOADS_BUCKET not set)", NULL);
    }
}

/* ---- keys and names ----------------------------------------------------- */

static const char *user_prefix(struct kiln_req *req)
{
    return kiln_arena_sprintf(req->arena, "users/%s/uploads/", res_user_id(req));
}

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

/*
 * The file name a key is made of: what follows the last '/' or '\' (a
 * browser may send a whole path), control characters dropped, any other
 * character outside [A-Za-z0-9._-] (spaces, punctuation, non-ASCII) turned
 * into '_' (one per run), runs of dots into one dot and leading dots
 * removed (no "..", no hidden names), cut to NAME_MAX_CHARS with the
 * extension kept. NULL when nothing is left. ASCII only, so that a key is
 * the same bytes in a URL, a form field and a signature.
 */
static const char *sanitize_name(kiln_arena *a, const char *in, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        if (in[i] == '/' || in[i] == '\\')
            start = i + 1;
    char *out = kiln_arena_alloc(a, n - start + 1);
    size_t o = 0;
    bool replaced = false;         /* the last byte out stands for a run */
    for (size_t i = start; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7f)
            continue;
        if (!name_char(c)) {
            if (!replaced)
                out[o++] = '_';
            replaced = true;
            continue;
        }
        replaced = false;
        if (c == '.' && (o == 0 || out[o - 1] == '.'))
            continue;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (o > NAME_MAX_CHARS) {
        const char *dot = strrchr(out, '.');
        size_t ext = dot ? strlen(dot) : 0;
        if (ext > 16)
            ext = 0;
        memmove(out + NAME_MAX_CHARS - ext, out + o - ext, ext + 1);
        o = NAME_MAX_CHARS;
        /* The cut may have put two dots side by side. */
        for (size_t i = 1; i < o; i++)
            if (out[i] == '.' && out[i - 1] == '.') {
                memmove(out + i, out + i + 1, o - i);
                o--;
                i--;
            }
        if (out[0] == '.') {
            memmove(out, out + 1, o);
            o--;
        }
    }
    return o ? out : NULL;
}

/* The name shown for a key: its last segment, without the "<uuid>-" that
 * presign puts in front. */
static const char *key_filename(const char *key)
{
    const char *s = strrchr(key, '/');
    s = s ? s + 1 : key;
    if (strlen(s) > KILN_UUID_LEN + 1 && s[KILN_UUID_LEN] == '-' &&
        kiln_uuid_valid((kiln_str){ s, KILN_UUID_LEN }))
        s += KILN_UUID_LEN + 1;
    return s;
}

/* A type for a listed key, which ListObjectsV2 does not give: from the
 * extension, NULL when unknown (GET /uploads/:key reads the stored one). */
static const char *type_of_name(const char *name)
{
    static const char *const map[][2] = {
        { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" }, { "png", "image/png" },
        { "gif", "image/gif" },  { "webp", "image/webp" }, { "pdf", "application/pdf" },
        { "txt", "text/plain" }, { "text", "text/plain" }, { "csv", "text/csv" },
        { "json", "application/json" }, { "heic", "image/heic" }, { "svg", "image/svg+xml" },
        { "mp4", "video/mp4" },  { "mov", "video/quicktime" }, { "mp3", "audio/mpeg" },
        { "zip", "application/zip" },
    };
    const char *dot = strrchr(name, '.');
    if (!dot || !dot[1])
        return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcasecmp(dot + 1, map[i][0]) == 0)
            return map[i][1];
    return NULL;
}

/* A key's text is safe to hand to S3: UTF-8, at most KILN_S3_KEY_MAX bytes,
 * no control character, backslash or "..", and no empty or "." segment. */
static bool key_well_formed(kiln_str k)
{
    if (k.len == 0 || k.len > KILN_S3_KEY_MAX || !kiln_utf8_valid(k))
        return false;
    size_t seg = 0; /* where the current segment starts */
    for (size_t i = 0; i <= k.len; i++) {
        if (i == k.len || k.p[i] == '/') {
            kiln_str s = { k.p + seg, i - seg };
            if (s.len == 0 || kiln_str_eq_c(s, ".") || kiln_str_eq_c(s, ".."))
                return false;
            seg = i + 1;
            continue;
        }
        unsigned char c = (unsigned char)k.p[i];
        if (c < 0x20 || c == 0x7f || c == '\\' ||
            (c == '.' && i + 1 < k.len && k.p[i + 1] == '.'))
            return false;
    }
    return true;
}

/*
 * The key named by the path, in either spelling, or NULL after answering
 * 400 (not a key we would ever make or accept) or 403 (another user's).
 * Nothing reaches S3, and no other answer is given, before this passes.
 */
static const char *path_key(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str key = kiln_req_param(req, "key");
    if (!key.p) {
        kiln_str uid = kiln_req_param(req, "user_id"), name = kiln_req_param(req, "name");
        key.p = kiln_arena_sprintf(req->arena, "users/%.*s/uploads/%.*s", (int)uid.len,
                                   uid.p ? uid.p : "", (int)name.len, name.p ? name.p : "");
        key.len = strlen(key.p);
    }
    static const char users[] = "users/", uploads[] = "/uploads/";
    const char *uid = key.p + sizeof users - 1;
    const char *after = key.len > sizeof users - 1
                            ? memchr(uid, '/', key.len - (sizeof users - 1))
                            : NULL;
    /* The router refuses %00, so the text has no NUL; users/<id>/uploads/
     * <name> with every segment well formed. */
    if (!key_well_formed(key) || strncmp(key.p, users, sizeof users - 1) != 0 || !after ||
        (size_t)(key.p + key.len - after) <= sizeof uploads - 1 ||
        strncmp(after, uploads, sizeof uploads - 1) != 0) {
        kiln_res_error(req, res, 400, "invalid_request", "Invalid upload key", NULL);
        return NULL;
    }
    if (!kiln_str_eq_c((kiln_str){ uid, (size_t)(after - uid) }, res_user_id(req))) {
        kiln_res_error(req, res, 403, "forbidden", "This upload belongs to another user", NULL);
        return NULL;
    }
    return kiln_arena_strndup(req->arena, key.p, key.len);
}

/* ---- answers ------------------------------------------------------------ */

/* 503 when UPLOADS_BUCKET is unset; true when uploads can go on. */
static bool configured(struct kiln_req *req, struct kiln_res *res, struct kiln_s3 *s3)
{
    if (!up.bucket) {
        kiln_res_fail(req, res, KILN_EUNAVAILABLE, "File storage", "uploads",
                      "uploads are off: UPLOADS_BUCKET is not set");
        return false;
    }
    s3->bucket = up.bucket;
    s3->region = up.region;
    s3->timeout_ms = S3_TIMEOUT_MS;
    return true;
}

/* What S3 said goes to the log (its error code), never to the client. */
static void s3_failed(struct kiln_req *req, struct kiln_res *res, const char *what, int rc,
                      const char *err)
{
    kiln_res_fail(req, res, rc, "File storage", what, err);
}

static json_t *string_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *file_json(const struct kiln_s3_object *o, const char *content_type)
{
    return json_pack("{s:s, s:s, s:I, s:o, s:o}", "key", o->key, "filename",
                     key_filename(o->key), "size", (json_int_t)o->size, "content_type",
                     string_or_null(content_type), "last_modified",
                     string_or_null(o->last_modified));
}

/* HeadObject of the path's key: true with *o, or false after answering
 * (400/403 from path_key first, then 503 when uploads are off, 404, 503). */
static bool head(struct kiln_req *req, struct kiln_res *res, struct kiln_s3 *s3,
                 struct kiln_s3_object *o)
{
    const char *key = path_key(req, res);
    if (!key || !configured(req, res, s3))
        return false;
    char err[256] = "";
    int rc = kiln_s3_head(s3, req->arena, key, o, err, sizeof err);
    if (rc == KILN_ENOTFOUND) {
        res_not_found(req, res, NOT_FOUND, NOT_FOUND_MSG);
        return false;
    }
    if (rc) {
        s3_failed(req, res, "head", rc, err);
        return false;
    }
    return true;
}

/* ---- handlers ----------------------------------------------------------- */

void api_uploads_types(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_s3 s3;
    if (!configured(req, res, &s3))
        return;
    json_t *types = json_array();
    for (size_t i = 0; i < up.ntypes; i++)
        json_array_append_new(types, json_string(up.types[i]));
    kiln_res_json(req, res, 200, json_pack("{s:o, s:I}", "types", types, "max_size_bytes",
                                           (json_int_t)up.max_bytes));
}

void api_uploads_presign(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_s3 s3;
    if (!configured(req, res, &s3))
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors e = { 0 };
    const char *filename = NULL, *ctype = NULL, *name = NULL, *type = NULL;
    if (!json_object_get(in, "filename"))
        res_error(&e, "filename", "can't be blank");
    if (!json_object_get(in, "content_type"))
        res_error(&e, "content_type", "can't be blank");
    if (res_string(in, "filename", false, 1, FILENAME_IN_MAX, &e, &filename) &&
        !(name = sanitize_name(req->arena, filename, strlen(filename))))
        res_error(&e, "filename", "is invalid");
    if (res_string(in, "content_type", false, 1, 2 * TYPE_MAX + 1, &e, &ctype)) {
        for (size_t i = 0; i < up.ntypes && !type; i++)
            if (strcasecmp(ctype, up.types[i]) == 0)
                type = up.types[i];
        if (!type)
            res_error(&e, "content_type",
                      kiln_arena_sprintf(req->arena, "is not an allowed type (%zu allowed: "
                                                     "see GET /api/v1/uploads/types)",
                                         up.ntypes));
    }
    if (res_errors_answer(req, res, &e)) {
        json_decref(in);
        return;
    }
    char id[KILN_UUID_LEN + 1];
    kiln_uuid_v4(id);
    const char *key = kiln_arena_sprintf(req->arena, "%s%s-%s", user_prefix(req), id, name);
    json_decref(in); /* filename and content_type point into it */

    struct kiln_s3_post_policy p = { key, type, up.max_bytes, up.expiry_s };
    struct kiln_s3_post post;
    char err[256] = "";
    int rc = kiln_s3_presign_post(&s3, req->arena, &p, &post, err, sizeof err);
    if (rc != 0) {
        s3_failed(req, res, "presign", rc, err);
        return;
    }
    json_t *fields = json_object();
    for (size_t i = 0; i < post.nfields; i++)
        json_object_set_new(fields, post.fields[i].name, json_string(post.fields[i].value));
    kiln_res_json(req, res, 200,
                  json_pack("{s:s, s:s, s:o}", "url", post.url, "key", key, "fields", fields));
}

void api_uploads_list(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_s3 s3;
    unsigned limit;
    kiln_str token = KILN_STR_NULL;
    if (!configured(req, res, &s3) ||
        !res_query_uint(req, res, "limit", LIST_DEFAULT, 1, KILN_S3_LIST_MAX, &limit))
        return;
    if (kiln_req_query(req, "next_token", &token) && token.len) {
        /* S3's tokens are base64: a '+' sent unencoded arrives as a space
         * (form decoding); put it back rather than refuse the page. */
        char *t = kiln_arena_strndup(req->arena, token.p, token.len);
        for (size_t i = 0; i < token.len; i++)
            if (t[i] == ' ')
                t[i] = '+';
        token.p = t;
        bool ok = token.len <= KILN_S3_TOKEN_MAX;
        for (size_t i = 0; i < token.len && ok; i++)
            ok = token.p[i] > 0x20 && token.p[i] < 0x7f;
        if (!ok) {
            kiln_res_error(req, res, 400, "invalid_request", "next_token is invalid", NULL);
            return;
        }
    } else {
        token = KILN_STR_NULL;
    }
    const char *prefix = user_prefix(req);
    struct kiln_s3_list list;
    char err[256] = "";
    int rc = kiln_s3_list(&s3, req->arena, prefix, limit, token.p, &list, err, sizeof err);
    if (rc == KILN_EINVAL && token.p) {
        /* S3 refuses a token it did not make (or one of another listing). */
        kiln_res_error(req, res, 400, "invalid_request", "next_token is invalid", NULL);
        return;
    }
    if (rc) {
        s3_failed(req, res, "list", rc, err);
        return;
    }
    json_t *files = json_array();
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < list.count; i++) {
        const struct kiln_s3_object *o = &list.objects[i];
        /* S3 filtered by the prefix; checked again all the same. */
        if (strncmp(o->key, prefix, plen) != 0 || !o->key[plen])
            continue;
        json_array_append_new(files, file_json(o, type_of_name(o->key)));
    }
    kiln_res_json(req, res, 200, json_pack("{s:o, s:o}", "files", files, "next_token",
                                           string_or_null(list.next_token)));
}

void api_uploads_show(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_s3 s3;
    struct kiln_s3_object o;
    if (head(req, res, &s3, &o))
        kiln_res_json(req, res, 200, file_json(&o, o.content_type));
}

void api_uploads_download(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_s3 s3;
    struct kiln_s3_object o;
    if (!head(req, res, &s3, &o))
        return;
    /* attachment: the browser saves the file instead of rendering it from
     * the bucket's origin. The name is [A-Za-z0-9._-] when Kiln made it;
     * anything else is left out rather than quoted. */
    const char *name = key_filename(o.key);
    bool plain = *name != '\0';
    for (const char *c = name; *c && plain; c++)
        plain = name_char((unsigned char)*c);
    const char *disposition =
        plain ? kiln_arena_sprintf(req->arena, "attachment; filename=\"%s\"", name)
              : "attachment";
    const char *url = NULL;
    char err[256] = "";
    int rc = kiln_s3_presign_get(&s3, req->arena, o.key, up.expiry_s, disposition, &url, err,
                                 sizeof err);
    if (rc != 0) {
        s3_failed(req, res, "presign get", rc, err);
        return;
    }
    kiln_res_json(req, res, 200, json_pack("{s:s, s:s}", "url", url, "key", o.key));
}

void api_uploads_delete(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_s3 s3;
    struct kiln_s3_object o;
    /* HeadObject first: S3 deletes a missing key with 204, and a client
     * should learn it named nothing (404, as for every other resource). */
    if (!head(req, res, &s3, &o))
        return;
    char err[256] = "";
    int rc = kiln_s3_delete(&s3, o.key, err, sizeof err);
    if (rc != 0) {
        s3_failed(req, res, "delete", rc, err);
        return;
    }
    res_no_content(res);
}
