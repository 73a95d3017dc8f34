/* Credentials chain, endpoints and signed requests; see aws.h. */
#include "aws/aws.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/dl.h"
#include <jansson.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/wipe.h"

#define ECS_HOST "http://169.254.170.2"
#define IMDS_DEFAULT "http://169.254.169.254"
#define META_TIMEOUT_MS 2000
#define MAX_OVERRIDES 32

/* Settings read by kiln_aws_setup; read-only afterwards. */
struct settings {
    char *region;
    char *key_id, *secret, *token;           /* static keys */
    char *container_url;                     /* full URL, or NULL */
    char *container_token, *container_token_file;
    char *imds;                              /* NULL: IMDS disabled */
    char *endpoint_default;                  /* AWS_ENDPOINT_URL */
    struct { char *name; char *url; } overrides[MAX_OVERRIDES];
    size_t noverrides;
};

static struct settings cfg;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct kiln_aws_creds cached;         /* guarded by lock */
static bool have_cached;

static char *dup_or_null(const char *s)
{
    return s ? kiln_strdup(s) : NULL;
}

void kiln_aws_reset(void)
{
    pthread_mutex_lock(&lock);
    free(cfg.region);
    free(cfg.key_id);
    kiln_free_secret(cfg.secret);
    kiln_free_secret(cfg.token);
    free(cfg.container_url);
    kiln_free_secret(cfg.container_token);
    free(cfg.container_token_file);
    free(cfg.imds);
    free(cfg.endpoint_default);
    for (size_t i = 0; i < cfg.noverrides; i++) {
        free(cfg.overrides[i].name);
        free(cfg.overrides[i].url);
    }
    memset(&cfg, 0, sizeof cfg);
    explicit_bzero(&cached, sizeof cached);
    have_cached = false;
    pthread_mutex_unlock(&lock);
}

static bool http_url(const char *u)
{
    return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

/*
 * The SDKs accept a plain-http FULL_URI only towards the machine itself or
 * the ECS/EKS agent addresses: anywhere else the authorization token and
 * the credentials would cross a network in the clear.
 */
static bool container_url_allowed(const char *u)
{
    if (strncmp(u, "https://", 8) == 0)
        return true;
    if (kiln_dl_curl() != 0)
        return false;
    CURLU *h = kiln_curl.curl_url();
    char *host = NULL;
    bool ok = false;
    if (h && kiln_curl.curl_url_set(h, CURLUPART_URL, u, 0) == CURLUE_OK &&
        kiln_curl.curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        ok = strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
             strcmp(host, "[::1]") == 0 || strcmp(host, "169.254.170.2") == 0 ||
             strcmp(host, "169.254.170.23") == 0 || strcmp(host, "[fd00:ec2::23]") == 0;
    }
    kiln_curl.curl_free(host);
    kiln_curl.curl_url_cleanup(h);
    return ok;
}

static char *trim_slash(const char *u)
{
    char *s = kiln_strdup(u);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

static const char *service_ids[] = { "SECRETS_MANAGER", "S3", "STS", "RDS", "ELASTICACHE", "ECS",
                                      "SES", NULL };

void kiln_aws_setup(struct kiln_env_reader *e)
{
    kiln_aws_reset();
    const char *v;
    pthread_mutex_lock(&lock);
    v = kiln_env_value(e, "AWS_REGION");
    if (!v)
        v = kiln_env_value(e, "AWS_DEFAULT_REGION");
    cfg.region = dup_or_null(v);

    const char *id = kiln_env_value(e, "AWS_ACCESS_KEY_ID");
    const char *sec = kiln_env_value(e, "AWS_SECRET_ACCESS_KEY");
    if (!!id != !!sec)
        kiln_env_problem(e, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    else if (id && (strlen(id) >= sizeof cached.access_key_id ||
                     strlen(sec) >= sizeof cached.secret_access_key))
        kiln_env_problem(e, "AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is too long");
    else if (id) {
        cfg.key_id = kiln_strdup(id);
        cfg.secret = kiln_strdup(sec);
        v = kiln_env_value(e, "AWS_SESSION_TOKEN");
        if (v && strlen(v) >= sizeof cached.session_token)
            kiln_env_problem(e, "AWS_SESSION_TOKEN is too long");
        else
            cfg.token = dup_or_null(v);
    }

    const char *rel = kiln_env_value(e, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = kiln_env_value(e, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (rel) {
        size_t n = strlen(ECS_HOST) + strlen(rel) + 2;
        cfg.container_url = kiln_malloc(n);
        snprintf(cfg.container_url, n, "%s%s%s", ECS_HOST, rel[0] == '/' ? "" : "/", rel);
    } else if (full) {
        if (!http_url(full))
            kiln_env_problem(e, "AWS_CONTAINER_CREDENTIALS_FULL_URI must be an http:// or https:// URL");
        else if (!container_url_allowed(full))
            kiln_env_problem(e, "AWS_CONTAINER_CREDENTIALS_FULL_URI over plain http must point at "
                                "this machine (loopback) or the ECS/EKS agent address");
        else
            cfg.container_url = kiln_strdup(full);
    }
    cfg.container_token = dup_or_null(kiln_env_value(e, "AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    cfg.container_token_file = dup_or_null(kiln_env_value(e, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));

    v = kiln_env_value(e, "AWS_EC2_METADATA_DISABLED");
    if (!(v && strcasecmp(v, "true") == 0)) {
        v = kiln_env_value(e, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
        if (v && !http_url(v))
            kiln_env_problem(e, "AWS_EC2_METADATA_SERVICE_ENDPOINT must be an http:// URL");
        else
            cfg.imds = trim_slash(v ? v : IMDS_DEFAULT);
    }

    v = kiln_env_value(e, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    bool ignore = v && strcasecmp(v, "true") == 0;
    v = kiln_env_value(e, "AWS_ENDPOINT_URL");
    if (v && !ignore) {
        if (!http_url(v))
            kiln_env_problem(e, "AWS_ENDPOINT_URL must be an http:// or https:// URL");
        else
            cfg.endpoint_default = trim_slash(v);
    }
    for (size_t i = 0; service_ids[i] && !ignore; i++) {
        char name[64];
        snprintf(name, sizeof name, "AWS_ENDPOINT_URL_%s", service_ids[i]);
        if (!(v = kiln_env_value(e, name)))
            continue;
        if (!http_url(v)) {
            kiln_env_problem(e, "%s must be an http:// or https:// URL", name);
            continue;
        }
        cfg.overrides[cfg.noverrides].name = kiln_strdup(service_ids[i]);
        cfg.overrides[cfg.noverrides++].url = trim_slash(v);
    }
    pthread_mutex_unlock(&lock);
}

const char *kiln_aws_region(void)
{
    return cfg.region;
}

bool kiln_aws_arn_region(const char *s, char *out, size_t cap)
{
    if (strncmp(s, "arn:", 4) != 0)
        return false;
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        if (!(p = strchr(p, ':')))
            return false;
        p++;
    }
    const char *e = strchr(p, ':');
    if (!e || e == p || (size_t)(e - p) >= cap)
        return false;
    snprintf(out, cap, "%.*s", (int)(e - p), p);
    return true;
}

time_t kiln_aws_now(void)
{
    return time(NULL);
}

int kiln_aws_endpoint(const char *service_id, const char *host_prefix, const char *region,
                      char *out, size_t cap)
{
    for (size_t i = 0; i < cfg.noverrides; i++)
        if (strcmp(cfg.overrides[i].name, service_id) == 0) {
            snprintf(out, cap, "%s", cfg.overrides[i].url);
            return 0;
        }
    if (cfg.endpoint_default) {
        snprintf(out, cap, "%s", cfg.endpoint_default);
        return 0;
    }
    if (!region || !*region)
        return KILN_EINVAL;
    snprintf(out, cap, "https://%s.%s.amazonaws.com", host_prefix, region);
    return 0;
}

/* "2026-12-02T16:00:00Z" (fractions and offsets Z only, as AWS sends). */
static int64_t parse_expiration(const char *s)
{
    struct tm tm = { 0 };
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    return (int64_t)timegm(&tm);
}

static bool copy_field(char *dst, size_t cap, json_t *o, const char *name, bool required)
{
    const char *v = json_string_value(json_object_get(o, name));
    if (!v)
        return !required;
    if (strlen(v) >= cap)
        return false;
    snprintf(dst, cap, "%s", v);
    return true;
}

/* The JSON both the ECS endpoint and IMDS answer with. */
static int parse_creds(const char *body, struct kiln_aws_creds *out, const char *src,
                       char *err, size_t errcap)
{
    json_t *o = json_loads(body, 0, NULL);
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (!json_is_object(o) ||
        !copy_field(out->access_key_id, sizeof out->access_key_id, o, "AccessKeyId", true) ||
        !copy_field(out->secret_access_key, sizeof out->secret_access_key, o, "SecretAccessKey", true) ||
        !copy_field(out->session_token, sizeof out->session_token, o, "Token", false) ||
        !out->access_key_id[0] || !out->secret_access_key[0]) {
        snprintf(err, errcap, "%s: credentials response is not the expected JSON", src);
        rc = KILN_EUNAVAILABLE;
    } else {
        const char *exp = json_string_value(json_object_get(o, "Expiration"));
        out->expires_at = exp ? parse_expiration(exp) : 0;
        if (out->expires_at < 0) {
            snprintf(err, errcap, "%s: unreadable Expiration", src);
            rc = KILN_EUNAVAILABLE;
        }
    }
    if (o) {
        /* jansson keeps the secret in its strings: wipe before freeing. */
        const char *s = json_string_value(json_object_get(o, "SecretAccessKey"));
        if (s)
            explicit_bzero((char *)s, strlen(s));
        json_decref(o);
    }
    if (rc)
        explicit_bzero(out, sizeof *out);
    return rc;
}

static void wipe_response(struct kiln_http_response *res)
{
    if (res->body.p)
        explicit_bzero(res->body.p, res->body.len);
    kiln_http_response_free(res);
}

static int from_container(struct kiln_aws_creds *out, char *err, size_t errcap)
{
    char token[4096] = "", header[4200];
    const char *hdrs[1];
    size_t nh = 0;
    if (cfg.container_token_file) {
        FILE *f = fopen(cfg.container_token_file, "r");
        if (!f) {
            snprintf(err, errcap, "container credentials: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
            return KILN_EUNAVAILABLE;
        }
        size_t n = fread(token, 1, sizeof token - 1, f);
        fclose(f);
        token[n] = '\0';
        while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' '))
            token[--n] = '\0';
    } else if (cfg.container_token) {
        snprintf(token, sizeof token, "%s", cfg.container_token);
    }
    if (token[0]) {
        snprintf(header, sizeof header, "Authorization: %s", token);
        hdrs[nh++] = header;
    }
    struct kiln_http_request req = {
        .url = cfg.container_url, .headers = hdrs, .nheaders = nh,
        .connect_timeout_ms = META_TIMEOUT_MS, .timeout_ms = META_TIMEOUT_MS * 2,
        .max_body = 64 * 1024,
    };
    struct kiln_http_response res;
    int rc = kiln_http_fetch(&req, &res);
    explicit_bzero(token, sizeof token);
    explicit_bzero(header, sizeof header);
    if (rc) {
        snprintf(err, errcap, "container credentials endpoint: %s", res.error);
        rc = KILN_EUNAVAILABLE;
    } else if (res.status != 200) {
        snprintf(err, errcap, "container credentials endpoint answered %ld", res.status);
        rc = KILN_EUNAVAILABLE;
    } else {
        rc = parse_creds(res.body.p, out, "container credentials endpoint", err, errcap);
    }
    wipe_response(&res);
    return rc;
}

static int from_imds(struct kiln_aws_creds *out, char *err, size_t errcap)
{
    char url[512], tok[256], hdr[300], role[256];
    const char *hdrs[1] = { "X-aws-ec2-metadata-token-ttl-seconds: 21600" };
    struct kiln_http_response res;
    snprintf(url, sizeof url, "%s/latest/api/token", cfg.imds);
    struct kiln_http_request req = {
        .url = url, .method = "PUT", .headers = hdrs, .nheaders = 1,
        .connect_timeout_ms = 1000, .timeout_ms = META_TIMEOUT_MS, .max_body = 4096,
    };
    int rc = kiln_http_fetch(&req, &res);
    if (rc || res.status != 200 || res.body.len == 0 || res.body.len >= sizeof tok) {
        snprintf(err, errcap, "EC2 instance metadata (IMDSv2): %s",
                 rc ? res.error : "no session token");
        kiln_http_response_free(&res);
        return KILN_ENOTFOUND;
    }
    memcpy(tok, res.body.p, res.body.len + 1);
    kiln_http_response_free(&res);
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", tok);
    hdrs[0] = hdr;

    snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/", cfg.imds);
    req.method = NULL;
    rc = kiln_http_fetch(&req, &res);
    if (rc || res.status != 200 || res.body.len == 0 || res.body.len >= sizeof role) {
        snprintf(err, errcap, "EC2 instance metadata: no instance role (%s)",
                 rc ? res.error : "no role name");
        kiln_http_response_free(&res);
        return KILN_ENOTFOUND;
    }
    /* The first line is the role name. */
    size_t n = strcspn(res.body.p, "\r\n");
    memcpy(role, res.body.p, n);
    role[n] = '\0';
    kiln_http_response_free(&res);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)role[i]) && !strchr("+=,.@_-", role[i])) {
            snprintf(err, errcap, "EC2 instance metadata: unexpected role name");
            return KILN_EUNAVAILABLE;
        }
    snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/%s", cfg.imds, role);
    req.max_body = 64 * 1024;
    rc = kiln_http_fetch(&req, &res);
    explicit_bzero(tok, sizeof tok);
    explicit_bzero(hdr, sizeof hdr);
    if (rc || res.status != 200) {
        snprintf(err, errcap, "EC2 instance metadata credentials: %s",
                 rc ? res.error : "unexpected status");
        wipe_response(&res);
        return KILN_EUNAVAILABLE;
    }
    rc = parse_creds(res.body.p, out, "EC2 instance metadata", err, errcap);
    wipe_response(&res);
    return rc;
}

static bool fresh(const struct kiln_aws_creds *c, time_t now)
{
    return c->expires_at == 0 || c->expires_at - now > KILN_AWS_REFRESH_S;
}

int kiln_aws_credentials(struct kiln_aws_creds *out, char *err, size_t errcap)
{
    int rc = 0;
    err[0] = '\0';
    pthread_mutex_lock(&lock);
    if (cfg.key_id) {
        memset(out, 0, sizeof *out);
        snprintf(out->access_key_id, sizeof out->access_key_id, "%s", cfg.key_id);
        snprintf(out->secret_access_key, sizeof out->secret_access_key, "%s", cfg.secret);
        if (cfg.token)
            snprintf(out->session_token, sizeof out->session_token, "%s", cfg.token);
        goto done;
    }
    time_t now = time(NULL);
    if (have_cached && fresh(&cached, now)) {
        *out = cached;
        goto done;
    }
    /* Fetched under the lock: concurrent callers wait for one fetch rather
     * than all asking the endpoint at once. */
    struct kiln_aws_creds got;
    if (cfg.container_url)
        rc = from_container(&got, err, errcap);
    else if (cfg.imds)
        rc = from_imds(&got, err, errcap);
    else {
        snprintf(err, errcap, "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                              "run in ECS (container credentials) or enable instance metadata");
        rc = KILN_ENOTFOUND;
    }
    if (rc == 0) {
        cached = got;
        have_cached = true;
        *out = got;
    } else if (have_cached && (cached.expires_at == 0 || cached.expires_at > now + 30)) {
        /* Refresh failed but the cached set is still valid: use it, say so. */
        kiln_log(KILN_LOG_WARNING, "aws credentials refresh failed; using the cached ones",
                 "reason", err, NULL);
        *out = cached;
        rc = 0;
    }
    explicit_bzero(&got, sizeof got);
done:
    pthread_mutex_unlock(&lock);
    return rc;
}

int kiln_aws_request(const struct kiln_aws_call *call, struct kiln_http_response *res,
                     char *err, size_t errcap)
{
    memset(res, 0, sizeof *res);
    kiln_buf_init(&res->body, 1);
    kiln_buf_init(&res->headers, 1);
    err[0] = '\0';

    if (kiln_dl_curl() != 0) {
        snprintf(err, errcap, "cannot load " KILN_CURL_SONAME);
        return KILN_EIO;
    }
    struct kiln_aws_creds creds;
    int rc = kiln_aws_credentials(&creds, err, errcap);
    if (rc)
        return rc;

    CURLU *u = kiln_curl.curl_url();
    char *host = NULL, *port = NULL, *path = NULL, *query = NULL;
    if (!u || kiln_curl.curl_url_set(u, CURLUPART_URL, call->url, 0) != CURLUE_OK ||
        kiln_curl.curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        kiln_curl.curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        snprintf(err, errcap, "malformed AWS URL");
        rc = KILN_EINVAL;
        goto out;
    }
    kiln_curl.curl_url_get(u, CURLUPART_PORT, &port, 0);      /* only when explicit */
    kiln_curl.curl_url_get(u, CURLUPART_QUERY, &query, 0);

    char hostport[512];
    snprintf(hostport, sizeof hostport, "%s%s%s", host, port ? ":" : "", port ? port : "");

    struct kiln_sigv4_header hs[40];
    size_t nh = 0;
    for (size_t i = 0; i < call->nheaders && nh < 38; i++)
        hs[nh++] = call->headers[i];
    if (call->content_type && (call->body || call->body_len))
        hs[nh++] = (struct kiln_sigv4_header){ "content-type", call->content_type };

    struct kiln_sigv4 s = { &creds, call->region, call->service, kiln_aws_now() };
    struct kiln_sigv4_request sr = {
        .method = call->method, .host = hostport, .path = path, .query = query,
        .headers = hs, .nheaders = nh, .payload = call->body, .payload_len = call->body_len,
        .s3 = call->s3,
    };
    struct kiln_sigv4_signed sig;
    rc = kiln_sigv4_sign(&s, &sr, &sig);
    if (rc) {
        snprintf(err, errcap, "cannot sign the request");
        kiln_sigv4_signed_free(&sig);
        goto out;
    }

    /* Every header we signed goes out as signed (content-type is sent by
     * the client from content_type). */
    kiln_buf lines;
    kiln_buf_init(&lines, 64 * 1024);
    size_t offs[48], nl = 0;
#define LINE(...)                                   \
    do {                                            \
        offs[nl++] = lines.len;                     \
        kiln_buf_printf(&lines, __VA_ARGS__);       \
        kiln_buf_append(&lines, "", 1);             \
    } while (0)
    for (size_t i = 0; i < call->nheaders && i < 38; i++)
        LINE("%s: %s", call->headers[i].name, call->headers[i].value);
    LINE("X-Amz-Date: %s", sig.amz_date);
    if (creds.session_token[0])
        LINE("X-Amz-Security-Token: %s", creds.session_token);
    if (call->s3)
        LINE("x-amz-content-sha256: %s", sig.payload_hash);
    LINE("Authorization: %s", sig.authorization.p);
#undef LINE
    const char *hdrs[48];
    for (size_t i = 0; i < nl; i++)
        hdrs[i] = lines.p + offs[i];

    struct kiln_http_request req = {
        .url = call->url, .method = call->method, .body = call->body,
        .body_len = call->body_len, .content_type = call->content_type,
        .headers = hdrs, .nheaders = nl, .timeout_ms = call->timeout_ms,
        .max_body = call->max_body,
    };
    kiln_http_response_free(res);
    rc = kiln_http_fetch(&req, res);
    if (rc)
        snprintf(err, errcap, "%s", res->error);
    explicit_bzero(lines.p, lines.len);
    kiln_buf_free(&lines);
    kiln_sigv4_signed_free(&sig);
out:
    explicit_bzero(&creds, sizeof creds);
    kiln_curl.curl_free(host);
    kiln_curl.curl_free(port);
    kiln_curl.curl_free(path);
    kiln_curl.curl_free(query);
    kiln_curl.curl_url_cleanup(u);
    return rc;
}
