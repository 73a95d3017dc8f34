/* Secrets Manager and variables from secrets; see secrets.h. */
#include "aws/secrets.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aws/aws.h"
#include "core/alloc.h"
#include "core/err.h"

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

static void zfree(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* The region of an ARN (arn:partition:service:region:account:…), or NULL. */
static bool arn_region(const char *id, char *out, size_t cap)
{
    if (strncmp(id, "arn:", 4) != 0)
        return false;
    const char *p = id;
    for (int i = 0; i < 3; i++) {
        p = strchr(p, ':');
        if (!p)
            return false;
        p++;
    }
    const char *e = strchr(p, ':');
    if (!e || e == p || (size_t)(e - p) >= cap)
        return false;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return true;
}

static void wipe_json_strings(json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_string(v)) {
        explicit_bzero((char *)json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, x) wipe_json_strings(x);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) wipe_json_strings(x);
    }
}

/* The SecretString of secret_id, owned (zfree it), or NULL with err set. */
static char *get_string(const char *secret_id, int *rcp, char *err, size_t errcap)
{
    char region[64], url[512];
    *rcp = KILN_EINVAL;
    if (!arn_region(secret_id, region, sizeof region)) {
        const char *r = kiln_aws_region();
        if (!r) {
            snprintf(err, errcap, "no region: set AWS_REGION or use a full secret ARN");
            return NULL;
        }
        snprintf(region, sizeof region, "%s", r);
    }
    if (kiln_aws_endpoint("SECRETS_MANAGER", "secretsmanager", region, url, sizeof url) != 0) {
        snprintf(err, errcap, "no Secrets Manager endpoint");
        return NULL;
    }
    strncat(url, "/", sizeof url - strlen(url) - 1);

    json_t *req = json_pack("{s:s}", "SecretId", secret_id);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    const struct kiln_sigv4_header h[] = { { "X-Amz-Target", "secretsmanager.GetSecretValue" } };
    struct kiln_aws_call call = {
        .service = "secretsmanager", .region = region, .method = "POST", .url = url,
        .headers = h, .nheaders = 1, .body = body, .body_len = strlen(body),
        .content_type = "application/x-amz-json-1.1", .max_body = MAX_SECRET * 2 + 4096,
    };
    struct kiln_http_response res;
    int rc = kiln_aws_request(&call, &res, err, errcap);
    free(body);
    if (rc) {
        kiln_http_response_free(&res);
        *rcp = rc == KILN_EINVAL ? rc : KILN_EUNAVAILABLE;
        return NULL;
    }
    char *value = NULL;
    json_t *doc = json_loadb(res.body.p ? res.body.p : "", res.body.len, 0, NULL);
    if (res.status != 200) {
        /* AWS's JSON error: {"__type": "...#ResourceNotFoundException",
         * "Message": ...}; neither holds the secret. */
        const char *type = json_string_value(json_object_get(doc, "__type"));
        const char *msg = json_string_value(json_object_get(doc, "Message"));
        if (!msg)
            msg = json_string_value(json_object_get(doc, "message"));
        const char *hash = type ? strrchr(type, '#') : NULL;
        snprintf(err, errcap, "Secrets Manager answered %ld%s%s%s%s", res.status,
                 type ? " " : "", type ? (hash ? hash + 1 : type) : "", msg ? ": " : "",
                 msg ? msg : "");
        *rcp = type && strstr(type, "ResourceNotFound") ? KILN_ENOTFOUND : KILN_EUNAVAILABLE;
    } else {
        const char *str = json_string_value(json_object_get(doc, "SecretString"));
        if (!str)
            snprintf(err, errcap, "the secret has no SecretString (binary secrets are not supported)");
        else
            value = kiln_strdup(str);
    }
    if (doc) {
        wipe_json_strings(doc);
        json_decref(doc);
    }
    if (res.body.p)
        explicit_bzero(res.body.p, res.body.len);
    kiln_http_response_free(&res);
    if (value)
        *rcp = 0;
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
            wipe_json_strings(inner);
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
    char *str = get_string(secret_id, &rc, err, errcap);
    if (!str)
        return rc;
    rc = pick_field(str, field, out, err, errcap);
    zfree(str);
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
            str = strings[i] = get_string(vars[i].id, &grc, why, sizeof why);
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
        zfree(strings[i]);
        if (rc)
            zfree(values[i]);
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
        zfree(vars[i].value);
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
            zfree(values[i]);
            continue;
        }
        if (n++)
            kiln_buf_append(changed, ",", 1);
        kiln_buf_append_c(changed, vars[i].name);
        zfree(vars[i].value);
        vars[i].value = values[i];
    }
    pthread_mutex_unlock(&lock);
    if (kiln_buf_append(changed, "", 1) == 0)
        changed->len--;
    return n;
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
        zfree(vars[i].value);
    }
    memset(vars, 0, sizeof vars);
    nvars = 0;
    pthread_mutex_unlock(&lock);
}
