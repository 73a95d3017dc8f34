/*
 * AWS Signature Version 4 (docs.aws.amazon.com/IAM/latest/UserGuide/
 * reference_sigv-create-signed-request.html), with no SDK: the Authorization
 * header, presigned query strings (S3 downloads, RDS and ElastiCache IAM
 * tokens) and the signature of an S3 POST policy.
 *
 * The algorithm, in the order the code follows it:
 *   canonical request = method \n canonical URI \n canonical query \n
 *                       canonical headers \n signed headers \n payload hash
 *   string to sign    = "AWS4-HMAC-SHA256" \n amz date \n scope \n
 *                       hex(SHA-256(canonical request))
 *   signing key       = HMAC chain "AWS4"+secret → date → region → service
 *                       → "aws4_request"
 *   signature         = hex(HMAC(signing key, string to sign))
 *
 * Paths and queries are given as they go on the wire (percent-encoded).
 * The canonical URI of most services encodes that path once more (so a
 * space, sent as %20, signs as %2520) after removing dot segments and empty
 * segments; S3 signs the path as sent. Query parameters are decoded and
 * re-encoded with the RFC 3986 unreserved set, then sorted by name and
 * value, so the result does not depend on how the caller spelled an escape.
 *
 * Pure functions of their inputs (the clock is a parameter): safe on any
 * thread, and testable against AWS's published vectors and botocore.
 */
#ifndef KILN_AWS_SIGV4_H
#define KILN_AWS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"

/* One set of credentials; plain arrays so a copy needs no allocation. */
struct kiln_aws_creds {
    char access_key_id[128];
    char secret_access_key[128];
    char session_token[4096];      /* "" when there is none */
    int64_t expires_at;            /* unix seconds; 0: does not expire */
};

/* Who signs, for what, when. */
struct kiln_sigv4 {
    const struct kiln_aws_creds *creds;
    const char *region;            /* "us-east-1" */
    const char *service;           /* signing name: "s3", "secretsmanager", "rds-db" */
    time_t now;                    /* signing time, unix seconds */
};

struct kiln_sigv4_header {
    const char *name;
    const char *value;
};

struct kiln_sigv4_request {
    const char *method;            /* "GET" */
    const char *host;              /* Host header as sent: "host" or "host:port" */
    const char *path;              /* as sent, percent-encoded; NULL or "": "/" */
    const char *query;             /* as sent, without '?'; NULL: none */
    /* Other headers to sign (and send). host, x-amz-date,
     * x-amz-security-token and (S3) x-amz-content-sha256 are added by the
     * signer unless given here. */
    const struct kiln_sigv4_header *headers;
    size_t nheaders;
    const void *payload;           /* body; NULL with payload_len 0: empty */
    size_t payload_len;
    /* NULL: hex SHA-256 of the payload; else this literal
     * ("UNSIGNED-PAYLOAD"). */
    const char *payload_hash;
    bool s3;                       /* S3's canonical URI rules and x-amz-content-sha256 */
};

#define KILN_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define KILN_SIGV4_UNSIGNED "UNSIGNED-PAYLOAD"

/* What to send. Release the buffers with kiln_sigv4_signed_free. */
struct kiln_sigv4_signed {
    char amz_date[17];             /* X-Amz-Date: 20150830T123600Z */
    char payload_hash[65];         /* x-amz-content-sha256 (S3) */
    char signature[65];
    kiln_buf authorization;        /* Authorization header value */
    kiln_buf canonical_request;    /* for tests and debugging (no secrets) */
    kiln_buf string_to_sign;
};

/*
 * Sign req with an Authorization header. The caller sends the headers it
 * gave, plus Host, X-Amz-Date: out->amz_date, X-Amz-Security-Token when
 * the credentials have a session token, x-amz-content-sha256 for S3, and
 * Authorization: out->authorization. 0 or KILN_EINVAL (missing field,
 * malformed escape, too many headers).
 */
int kiln_sigv4_sign(const struct kiln_sigv4 *s, const struct kiln_sigv4_request *req,
                    struct kiln_sigv4_signed *out);

/*
 * Presign req in its query string (signed headers: host and req's; payload
 * hash: req's, else UNSIGNED-PAYLOAD for S3 and the payload's SHA-256 for
 * other services, as botocore does): query_out receives the whole
 * query to send (req's parameters, X-Amz-Algorithm, -Credential, -Date,
 * -Expires, -SignedHeaders, -Security-Token when there is a token, then
 * -Signature), canonical order. expires_s: 1..604800. out may be NULL; when
 * given it receives the intermediate strings (authorization stays empty).
 */
int kiln_sigv4_presign(const struct kiln_sigv4 *s, const struct kiln_sigv4_request *req,
                       unsigned expires_s, kiln_buf *query_out, struct kiln_sigv4_signed *out);

/* hex(HMAC(signing key, text)): the signature of an S3 POST policy (text is
 * the base64 policy). */
void kiln_sigv4_sign_text(const struct kiln_sigv4 *s, const char *text, size_t len,
                          char sig_hex[65]);

/* "AKID/20150830/us-east-1/service/aws4_request" into out. */
void kiln_sigv4_credential(const struct kiln_sigv4 *s, char *out, size_t cap);
/* "20150830T123600Z". */
void kiln_sigv4_amz_date(time_t t, char out[17]);

/* Percent-encode n bytes with the RFC 3986 unreserved set kept (and '/'
 * when keep_slash). */
void kiln_uri_encode(kiln_buf *b, const char *s, size_t n, bool keep_slash);

void kiln_sigv4_signed_free(struct kiln_sigv4_signed *out);

#endif
