/* Secrets Manager and variables from secrets; see secrets.h. */
#include "aws/secrets.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aws/aws.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/wipe.h"

#define SUFFIX "_SECRET_ARN"
#define MAX_VARS 64
#define MAX_SECRET (64 * 1024)   /* Secrets Manager's own limit */

struct var {
    char *name;     /* NAME */
    char *id;       /* ARN or name */
    char *field;    /* NULL: the whole string */
    char *value;    /* current value; owned */
};

static struct var vars[MAX_VARS];
static size_t nvars;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic unsigned long generation;

/* The region of a call on secret_id: the ARN's, else AWS_REGION. */
static bool region_of(const char *secret_id, char *region, size_t cap, char *err, size_t errcap)
{
    if (kiln_aws_arn_region(secret_id, region, cap))
        return true;
    const char *r = kiln_aws_region();
    if (!r) {
        snprintf(err, errcap, "no region: set AWS_REGION or use a full secret ARN");
        return false;
    }
    snprintf(region, cap, "%s", r);
    return true;
}

/*
 * One Secrets Manager operation (awsJson1.1): op ("GetSecretValue"…) with
 * req as the body, for secret_id (its region). On 200 the parsed answer goes
 * to *doc (the caller wipes and frees it: it may hold a value). Otherwise
 * err says "Secrets Manager answered <status> <type>: <message>" (AWS's
 * error never holds a value) and the result is KILN_ENOTFOUND
 * (ResourceNotFoundException), KILN_ECONFLICT (ResourceExistsException),
 * KILN_EINVAL (no region or endpoint, or a request that cannot be made) or
 * KILN_EUNAVAILABLE. A 200 answer that is not JSON leaves *doc NULL. The
 * request body is wiped after sending (PutSecretValue carries a value).
 */
static int sm_call(const char *secret_id, const char *op, json_t *req, json_t **doc, char *err,
                   size_t errcap)
{
    char region[64], url[512], target[96];
    *doc = NULL;
    if (!region_of(secret_id, region, sizeof region, err, errcap))
        return KILN_EINVAL;
    if (kiln_aws_endpoint("SECRETS_MANAGER", "secretsmanager", region, url, sizeof url) != 0) {
        snprintf(err, errcap, "no Secrets Manager endpoint");
        return KILN_EINVAL;
    }
    strncat(url, "/", sizeof url - strlen(url) - 1);
    snprintf(target, sizeof target, "secretsmanager.%s", op);

    char *body = json_dumps(req, JSON_COMPACT);
    if (!body)
        kiln_fatal("out of memory");
    const struct kiln_sigv4_header h[] = { { "X-Amz-Target", target } };
    struct kiln_aws_call call = {
        .service = "secretsmanager", .region = region, .method = "POST", .url = url,
        .headers = h, .nheaders = 1, .body = body, .body_len = strlen(body),
        .content_type = "application/x-amz-json-1.1", .max_body = MAX_SECRET * 2 + 4096,
    };
    struct kiln_http_response res;
    int rc = kiln_aws_request(&call, &res, err, errcap);
    explicit_bzero(body, strlen(body));
    free(body);
    if (rc) {
        kiln_http_response_free(&res);
        return rc == KILN_EINVAL ? rc : KILN_EUNAVAILABLE;
    }
    json_t *d = json_loadb(res.body.p ? res.body.p : "", res.body.len, 0, NULL);
    if (res.status != 200) {
        /* AWS's JSON error: {"__type": "...#ResourceNotFoundException",
         * "Message": ...}; neither holds the secret. */
        const char *type = json_string_value(json_object_get(d, "__type"));
        const char *msg = json_string_value(json_object_get(d, "Message"));
        if (!msg)
            msg = json_string_value(json_object_get(d, "message"));
        const char *hash = type ? strrchr(type, '#') : NULL;
        snprintf(err, errcap, "Secrets Manager answered %ld%s%s%s%s", res.status,
                 type ? " " : "", type ? (hash ? hash + 1 : type) : "", msg ? ": " : "",
                 msg ? msg : "");
        rc = type && strstr(type, "ResourceNotFound")  ? KILN_ENOTFOUND
             : type && strstr(type, "ResourceExists") ? KILN_ECONFLICT
                                                      : KILN_EUNAVAILABLE;
        if (d) {
            kiln_json_wipe(d);
            json_decref(d);
        }
    } else {
        *doc = d;          /* may be NULL or not an object: callers check */
    }
    if (res.body.p)
        explicit_bzero(res.body.p, res.body.len);
    kiln_http_response_free(&res);
    return rc;
}

static void doc_free(json_t *doc)
{
    if (doc) {
        kiln_json_wipe(doc);
        json_decref(doc);
    }
}

/* The SecretString of one version of secret_id (version_id and/or stage;
 * both NULL: AWSCURRENT), owned (zfree it), or NULL with err set; the
 * version's id into version_out when given. */
static char *get_string(const char *secret_id, const char *version_id, const char *stage,
                        char *version_out, size_t vcap, int *rcp, char *err, size_t errcap)
{
    json_t *req = json_pack("{s:s}", "SecretId", secret_id);
    if (version_id)
        json_object_set_new(req, "VersionId", json_string(version_id));
    if (stage)
        json_object_set_new(req, "VersionStage", json_string(stage));
    json_t *doc;
    *rcp = sm_call(secret_id, "GetSecretValue", req, &doc, err, errcap);
    json_decref(req);
    if (*rcp)
        return NULL;
    char *value = NULL;
    const char *str = json_string_value(json_object_get(doc, "SecretString"));
    if (!str) {
        snprintf(err, errcap, "the secret has no SecretString (binary secrets are not supported)");
        *rcp = KILN_EINVAL;
    } else {
        value = kiln_strdup(str);
        const char *vid = json_string_value(json_object_get(doc, "VersionId"));
        if (version_out && vcap)
            snprintf(version_out, vcap, "%s", vid ? vid : "");
    }
    doc_free(doc);
    return value;
}

/* field of the JSON object in str (or all of str when field is NULL) into
 * out. 0 or KILN_ENOTFOUND with err set. */
static int pick_field(const char *str, const char *field, kiln_buf *out, char *err, size_t errcap)
{
    int rc = 0;
    if (!field) {
        kiln_buf_append_c(out, str);
    } else {
        json_t *inner = json_loads(str, 0, NULL);
        json_t *f = json_object_get(inner, field);
        char num[32];
        const char *v = json_string_value(f);
        if (!v && json_is_integer(f)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(f));
            v = num;
        }
        if (!json_is_object(inner))
            snprintf(err, errcap, "the secret is not a JSON object, so it has no field \"%s\"", field);
        else if (!v)
            snprintf(err, errcap, "the secret has no string field \"%s\"", field);
        else
            kiln_buf_append_c(out, v);
        rc = v && json_is_object(inner) ? 0 : KILN_ENOTFOUND;
        if (inner) {
            kiln_json_wipe(inner);
            json_decref(inner);
        }
    }
    if (rc == 0 && kiln_buf_append(out, "", 1) == 0)
        out->len--;
    return rc;
}

int kiln_secrets_get(const char *secret_id, const char *field, kiln_buf *out, char *err,
                     size_t errcap)
{
    int rc;
    char *str = get_string(secret_id, NULL, NULL, NULL, 0, &rc, err, errcap);
    if (!str)
        return rc;
    rc = pick_field(str, field, out, err, errcap);
    kiln_free_secret(str);
    return rc;
}

int kiln_secrets_get_version(const char *secret_id, const char *version_id,
                             const char *version_stage, kiln_buf *out, char *version_out,
                             size_t vcap, char *err, size_t errcap)
{
    int rc;
    char *str = get_string(secret_id, version_id, version_stage, version_out, vcap, &rc, err,
                           errcap);
    if (!str)
        return rc;
    rc = pick_field(str, NULL, out, err, errcap);
    kiln_free_secret(str);
    return rc;
}

int kiln_secrets_describe(const char *secret_id, struct kiln_secret_info *out, char *err,
                          size_t errcap)
{
    memset(out, 0, sizeof *out);
    json_t *req = json_pack("{s:s}", "SecretId", secret_id), *doc;
    int rc = sm_call(secret_id, "DescribeSecret", req, &doc, err, errcap);
    json_decref(req);
    if (rc)
        return rc;
    json_t *map = json_object_get(doc, "VersionIdsToStages");
    if (!json_is_object(doc) || (map && !json_is_object(map))) {
        snprintf(err, errcap, "DescribeSecret answered something other than the expected JSON");
        doc_free(doc);
        return KILN_EUNAVAILABLE;
    }
    out->rotation_enabled = json_is_true(json_object_get(doc, "RotationEnabled"));
    size_t n = map ? json_object_size(map) : 0;
    if (n > KILN_SECRET_MAX_VERSIONS)
        n = KILN_SECRET_MAX_VERSIONS;
    out->versions = kiln_malloc((n ? n : 1) * sizeof *out->versions);
    const char *vid;
    json_t *stages;
    json_object_foreach(map, vid, stages) {
        if (out->nversions == n)
            break;
        struct kiln_secret_version *v = &out->versions[out->nversions];
        if (strlen(vid) >= sizeof v->id || !json_is_array(stages))
            continue;
        snprintf(v->id, sizeof v->id, "%s", vid);
        kiln_buf b;
        kiln_buf_init(&b, sizeof v->stages - 1);
        kiln_buf_append(&b, ",", 1);
        size_t i;
        json_t *st;
        json_array_foreach(stages, i, st) {
            if (json_is_string(st) && kiln_buf_append_c(&b, json_string_value(st)) == 0)
                kiln_buf_append(&b, ",", 1);
        }
        snprintf(v->stages, sizeof v->stages, "%.*s", (int)b.len, b.p ? b.p : "");
        kiln_buf_free(&b);
        out->nversions++;
    }
    doc_free(doc);
    return 0;
}

bool kiln_secret_info_has(const struct kiln_secret_info *info, const char *version,
                          const char *stage)
{
    char needle[300];
    snprintf(needle, sizeof needle, ",%s,", stage);
    for (size_t i = 0; i < info->nversions; i++)
        if (strcmp(info->versions[i].id, version) == 0)
            return strstr(info->versions[i].stages, needle) != NULL;
    return false;
}

bool kiln_secret_info_knows(const struct kiln_secret_info *info, const char *version)
{
    for (size_t i = 0; i < info->nversions; i++)
        if (strcmp(info->versions[i].id, version) == 0)
            return true;
    return false;
}

const char *kiln_secret_info_version_of(const struct kiln_secret_info *info, const char *stage)
{
    for (size_t i = 0; i < info->nversions; i++)
        if (kiln_secret_info_has(info, info->versions[i].id, stage))
            return info->versions[i].id;
    return NULL;
}

void kiln_secret_info_free(struct kiln_secret_info *info)
{
    free(info->versions);
    memset(info, 0, sizeof *info);
}

int kiln_secrets_put_value(const char *secret_id, const char *token, const char *value,
                           const char *stage, char *err, size_t errcap)
{
    json_t *req = json_pack("{s:s, s:s, s:s}", "SecretId", secret_id, "ClientRequestToken",
                            token, "SecretString", value);
    if (!req) {
        snprintf(err, errcap, "PutSecretValue: the value is not valid UTF-8");
        return KILN_EINVAL;
    }
    if (stage)
        json_object_set_new(req, "VersionStages", json_pack("[s]", stage));
    json_t *doc;
    int rc = sm_call(secret_id, "PutSecretValue", req, &doc, err, errcap);
    kiln_json_wipe(req);
    json_decref(req);
    doc_free(doc);
    return rc;
}

int kiln_secrets_move_stage(const char *secret_id, const char *stage, const char *to_version,
                            const char *from_version, char *err, size_t errcap)
{
    json_t *req = json_pack("{s:s, s:s}", "SecretId", secret_id, "VersionStage", stage);
    if (to_version)
        json_object_set_new(req, "MoveToVersionId", json_string(to_version));
    if (from_version)
        json_object_set_new(req, "RemoveFromVersionId", json_string(from_version));
    json_t *doc;
    int rc = sm_call(secret_id, "UpdateSecretVersionStage", req, &doc, err, errcap);
    json_decref(req);
    doc_free(doc);
    return rc;
}

int kiln_secret_vars_find(char **env, kiln_buf *problems)
{
    int n = 0;
    kiln_secret_vars_free();
    for (char **e = env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t sl = strlen(SUFFIX);
        if (!eq || (size_t)(eq - *e) <= sl || memcmp(eq - sl, SUFFIX, sl) != 0 || !eq[1])
            continue;
        size_t nlen = (size_t)(eq - *e) - sl;
        char *name = kiln_malloc(nlen + 1);
        memcpy(name, *e, nlen);
        name[nlen] = '\0';
        const char *plain = getenv(name);
        if (plain && *plain) {
            kiln_buf_printf(problems, "config: %s and %s" SUFFIX " are both set; set one\n",
                            name, name);
            n++;
            free(name);
            continue;
        }
        if (nvars == MAX_VARS) {
            kiln_buf_printf(problems, "config: more than %d *" SUFFIX " variables\n", MAX_VARS);
            n++;
            free(name);
            break;
        }
        struct var *v = &vars[nvars++];
        v->name = name;
        const char *hash = strchr(eq + 1, '#');
        v->id = hash ? kiln_strndup(eq + 1, (size_t)(hash - eq - 1)) : kiln_strdup(eq + 1);
        v->field = hash && hash[1] ? kiln_strdup(hash + 1) : NULL;
        if (!v->id[0] || (hash && !hash[1])) {
            kiln_buf_printf(problems, "config: %s" SUFFIX " must be <arn> or <arn>#<field>\n", name);
            n++;
        }
    }
    return n;
}

size_t kiln_secret_vars_count(void)
{
    return nvars;
}

/*
 * Fetch every variable's value into values[] (one GetSecretValue per
 * distinct secret id). 0 or -1 with err set; values[] then freed.
 */
static int fetch_all(char **values, char *err, size_t errcap)
{
    /* One GetSecretValue per distinct secret, so that the fields of one
     * secret (username and password) always come from the same version. */
    char *strings[MAX_VARS];
    int rc = 0;
    for (size_t i = 0; i < nvars; i++)
        values[i] = strings[i] = NULL;
    for (size_t i = 0; i < nvars && rc == 0; i++) {
        char why[512] = "";
        const char *str = NULL;
        for (size_t j = 0; j < i && !str; j++)
            if (strcmp(vars[j].id, vars[i].id) == 0)
                str = strings[j];
        if (!str) {
            int grc;
            str = strings[i] = get_string(vars[i].id, NULL, NULL, NULL, 0, &grc, why, sizeof why);
        }
        kiln_buf b;
        kiln_buf_init(&b, MAX_SECRET + 1);
        if (!str || pick_field(str, vars[i].field, &b, why, sizeof why) != 0) {
            snprintf(err, errcap, "%s" SUFFIX ": %s", vars[i].name, why);
            kiln_buf_free(&b);
            rc = -1;
            break;
        }
        values[i] = b.p ? b.p : kiln_strdup("");
    }
    for (size_t i = 0; i < nvars; i++) {
        kiln_free_secret(strings[i]);
        if (rc)
            kiln_free_secret(values[i]);
    }
    return rc;
}

int kiln_secret_vars_resolve(char *err, size_t errcap)
{
    char *values[MAX_VARS];
    if (fetch_all(values, err, errcap) != 0)
        return -1;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nvars; i++) {
        kiln_free_secret(vars[i].value);
        vars[i].value = values[i];
    }
    pthread_mutex_unlock(&lock);
    return 0;
}

const char *kiln_secret_vars_getenv(void *ctx, const char *name)
{
    (void)ctx;
    for (size_t i = 0; i < nvars; i++)
        if (strcmp(vars[i].name, name) == 0 && vars[i].value)
            return vars[i].value;
    return getenv(name);
}

int kiln_secret_vars_reload(kiln_buf *changed, char *err, size_t errcap)
{
    char *values[MAX_VARS];
    if (fetch_all(values, err, errcap) != 0)
        return -1;
    int n = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nvars; i++) {
        if (vars[i].value && strcmp(vars[i].value, values[i]) == 0) {
            kiln_free_secret(values[i]);
            continue;
        }
        if (n++)
            kiln_buf_append(changed, ",", 1);
        kiln_buf_append_c(changed, vars[i].name);
        kiln_free_secret(vars[i].value);
        vars[i].value = values[i];
    }
    pthread_mutex_unlock(&lock);
    if (n)
        atomic_fetch_add(&generation, 1);
    if (kiln_buf_append(changed, "", 1) == 0)
        changed->len--;
    return n;
}

unsigned long kiln_secret_vars_generation(void)
{
    return atomic_load(&generation);
}

bool kiln_secret_vars_has(const char *name)
{
    for (size_t i = 0; i < nvars; i++)
        if (strcmp(vars[i].name, name) == 0)
            return true;
    return false;
}

bool kiln_secret_vars_copy(const char *name, char *out, size_t cap)
{
    bool ok = false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nvars; i++)
        if (strcmp(vars[i].name, name) == 0 && vars[i].value) {
            size_t n = strlen(vars[i].value);
            if (n < cap) {
                memcpy(out, vars[i].value, n + 1);
                ok = true;
            }
            break;
        }
    pthread_mutex_unlock(&lock);
    return ok;
}

void kiln_secret_vars_free(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nvars; i++) {
        free(vars[i].name);
        free(vars[i].id);
        free(vars[i].field);
        kiln_free_secret(vars[i].value);
    }
    memset(vars, 0, sizeof vars);
    nvars = 0;
    pthread_mutex_unlock(&lock);
}
