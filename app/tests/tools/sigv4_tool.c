/*
 * sigv4_tool: app/src/aws/sigv4.c (and the IAM tokens of aws/iam.c) from
 * the command line, for tests in other languages
 * (app/tests/http/test_sigv4_botocore.py compares it with botocore).
 *
 * Reads one JSON object on stdin:
 *
 *   mode              "sign" | "presign" | "policy" | "rds_token" |
 *                     "elasticache_token"
 *   access_key, secret_key, token (optional), region, service,
 *   time              unix seconds
 *   method, host, path, query (string or null), headers [[name, value], ...],
 *   body (string), s3 (bool)
 *   unsigned_payload  true: "UNSIGNED-PAYLOAD"; false: the body's SHA-256
 *                     given explicitly; absent: the signer's default (the
 *                     body's hash for sign, UNSIGNED-PAYLOAD for presign)
 *   expires           presign: seconds
 *   policy_b64        policy: the text to sign
 *   db_host, port, user, cluster_id   rds_token / elasticache_token
 *
 * and prints one JSON object: authorization, amz_date, payload_hash,
 * signature, canonical_request, string_to_sign, query (presign), token
 * (rds_token / elasticache_token). Exit 0; 1 with {"rc", "error"} when the
 * signer refused; 2 on bad input.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "aws/iam.h"
#include "aws/sigv4.h"
#include "core/buf.h"
#include "core/err.h"

#define MAX_HEADERS 80

static void usage_fail(const char *why)
{
    fprintf(stderr, "sigv4_tool: %s\n", why);
    exit(2);
}

static const char *str_field(json_t *o, const char *key, const char *dflt)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return dflt;
    if (!json_is_string(v)) {
        fprintf(stderr, "sigv4_tool: %s must be a string\n", key);
        exit(2);
    }
    return json_string_value(v);
}

static void copy_field(char *dst, size_t cap, const char *src, const char *key)
{
    if (strlen(src) >= cap) {
        fprintf(stderr, "sigv4_tool: %s too long\n", key);
        exit(2);
    }
    memcpy(dst, src, strlen(src) + 1);
}

static json_t *buf_string(const kiln_buf *b)
{
    return json_stringn(b->p ? b->p : "", b->len);
}

static int refused(int rc)
{
    json_t *o = json_pack("{s:i, s:s}", "rc", rc, "error", kiln_err_name(rc));
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
    return 1;
}

int main(void)
{
    json_error_t jerr;
    json_t *in = json_loadf(stdin, 0, &jerr);
    if (!in || !json_is_object(in)) {
        fprintf(stderr, "sigv4_tool: stdin is not a JSON object: %s\n", jerr.text);
        return 2;
    }

    static struct kiln_aws_creds creds;
    copy_field(creds.access_key_id, sizeof creds.access_key_id, str_field(in, "access_key", ""),
               "access_key");
    copy_field(creds.secret_access_key, sizeof creds.secret_access_key,
               str_field(in, "secret_key", ""), "secret_key");
    copy_field(creds.session_token, sizeof creds.session_token, str_field(in, "token", ""),
               "token");

    const char *mode = str_field(in, "mode", "sign");
    json_t *t = json_object_get(in, "time");
    if (!json_is_integer(t))
        usage_fail("time (unix seconds) is required");
    struct kiln_sigv4 s = {
        .creds = &creds,
        .region = str_field(in, "region", NULL),
        .service = str_field(in, "service", NULL),
        .now = (time_t)json_integer_value(t),
    };

    json_t *out = json_object();
    int rc = 0;

    if (strcmp(mode, "policy") == 0) {
        const char *text = str_field(in, "policy_b64", NULL);
        if (!text || !s.region || !s.service)
            usage_fail("policy needs policy_b64, region and service");
        char sig[65], date[17];
        kiln_sigv4_sign_text(&s, text, strlen(text), sig);
        kiln_sigv4_amz_date(s.now, date);
        json_object_set_new(out, "signature", json_string(sig));
        json_object_set_new(out, "amz_date", json_string(date));
    } else if (strcmp(mode, "rds_token") == 0 || strcmp(mode, "elasticache_token") == 0) {
        kiln_buf tok;
        kiln_buf_init(&tok, 1u << 16);
        const char *user = str_field(in, "user", "");
        if (mode[0] == 'r') {
            json_t *port = json_object_get(in, "port");
            if (!json_is_integer(port))
                usage_fail("rds_token needs port");
            rc = kiln_rds_token_sign(&creds, s.region, str_field(in, "db_host", ""),
                                     (unsigned)json_integer_value(port), user, s.now, &tok);
        } else {
            rc = kiln_elasticache_token_sign(&creds, s.region, str_field(in, "cluster_id", ""),
                                             user, s.now, &tok);
        }
        if (rc == 0)
            json_object_set_new(out, "token", buf_string(&tok));
        kiln_buf_free(&tok);
    } else if (strcmp(mode, "sign") == 0 || strcmp(mode, "presign") == 0) {
        struct kiln_sigv4_header h[MAX_HEADERS];
        size_t nh = 0;
        json_t *hs = json_object_get(in, "headers");
        if (hs && !json_is_array(hs))
            usage_fail("headers must be [[name, value], ...]");
        size_t i;
        json_t *pair;
        json_array_foreach(hs, i, pair) {
            if (nh == MAX_HEADERS || !json_is_array(pair) || json_array_size(pair) != 2 ||
                !json_is_string(json_array_get(pair, 0)) ||
                !json_is_string(json_array_get(pair, 1)))
                usage_fail("headers must be [[name, value], ...]");
            h[nh].name = json_string_value(json_array_get(pair, 0));
            h[nh++].value = json_string_value(json_array_get(pair, 1));
        }
        json_t *body = json_object_get(in, "body");
        if (body && !json_is_null(body) && !json_is_string(body))
            usage_fail("body must be a string");
        const char *payload = json_is_string(body) ? json_string_value(body) : NULL;
        size_t payload_len = json_is_string(body) ? json_string_length(body) : 0;

        char body_hash[65];
        const char *payload_hash = NULL;
        json_t *unsigned_payload = json_object_get(in, "unsigned_payload");
        if (json_is_true(unsigned_payload)) {
            payload_hash = KILN_SIGV4_UNSIGNED;
        } else if (json_is_false(unsigned_payload)) {
            unsigned char md[SHA256_DIGEST_LENGTH];
            SHA256((const unsigned char *)(payload ? payload : ""), payload_len, md);
            for (size_t k = 0; k < sizeof md; k++)
                snprintf(body_hash + 2 * k, 3, "%02x", md[k]);
            payload_hash = body_hash;
        }

        struct kiln_sigv4_request req = {
            .method = str_field(in, "method", NULL),
            .host = str_field(in, "host", NULL),
            .path = str_field(in, "path", NULL),
            .query = str_field(in, "query", NULL),
            .headers = h,
            .nheaders = nh,
            .payload = payload,
            .payload_len = payload_len,
            .payload_hash = payload_hash,
            .s3 = json_is_true(json_object_get(in, "s3")),
        };
        struct kiln_sigv4_signed sig;
        if (mode[0] == 's') {
            rc = kiln_sigv4_sign(&s, &req, &sig);
        } else {
            json_t *exp = json_object_get(in, "expires");
            if (!json_is_integer(exp))
                usage_fail("presign needs expires");
            kiln_buf q;
            kiln_buf_init(&q, 1u << 20);
            rc = kiln_sigv4_presign(&s, &req, (unsigned)json_integer_value(exp), &q, &sig);
            if (rc == 0)
                json_object_set_new(out, "query", buf_string(&q));
            kiln_buf_free(&q);
        }
        if (rc == 0) {
            json_object_set_new(out, "authorization", buf_string(&sig.authorization));
            json_object_set_new(out, "amz_date", json_string(sig.amz_date));
            json_object_set_new(out, "payload_hash", json_string(sig.payload_hash));
            json_object_set_new(out, "signature", json_string(sig.signature));
            json_object_set_new(out, "canonical_request", buf_string(&sig.canonical_request));
            json_object_set_new(out, "string_to_sign", buf_string(&sig.string_to_sign));
        }
        kiln_sigv4_signed_free(&sig);
    } else {
        usage_fail("mode: sign, presign, policy, rds_token or elasticache_token");
    }

    int status = 0;
    if (rc) {
        status = refused(rc);
    } else {
        json_dumpf(out, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
        fputc('\n', stdout);
    }
    json_decref(out);
    json_decref(in);
    explicit_bzero(&creds, sizeof creds);
    return status;
}
