/*
 * Amazon S3 without an SDK: the five operations the uploads resource needs
 * (a presigned POST policy for browser uploads, ListObjectsV2, HeadObject,
 * a presigned GET, DeleteObject), on top of aws.h (credentials, endpoint,
 * one signed request) and sigv4.h.
 *
 * Addressing: with an endpoint override (AWS_ENDPOINT_URL_S3 or
 * AWS_ENDPOINT_URL: s3rver, MinIO, LocalStack) URLs are path-style,
 * <endpoint>/<bucket>/<key>; with AWS's own endpoint they are
 * virtual-hosted, https://<bucket>.s3.<region>.amazonaws.com/<key>, except
 * for bucket names with a dot, which AWS's wildcard certificate does not
 * cover (path-style on the regional endpoint then). Keys are percent-encoded
 * once (kiln_uri_encode, '/' kept) and signed with S3's rules, which sign
 * the path as sent: no double encoding.
 *
 * Results and their strings live in the caller's arena. Every call blocks
 * on the network (workers only, like aws.h); the parser is pure and
 * thread-safe. Errors: 0, or KILN_ENOTFOUND (S3 said 404), KILN_EINVAL (S3
 * refused the request with a 400, e.g. a bad continuation token),
 * KILN_EUNAVAILABLE (no credentials, no answer, 5xx, 403 or any other
 * status), KILN_EPROTO (an answer that does not parse); err (may be NULL)
 * says why, for logs: S3's error code, never its body.
 */
#ifndef KILN_AWS_S3_H
#define KILN_AWS_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/sigv4.h"
#include "core/arena.h"
#include "core/clock.h"

/* S3's own limits: a key is at most 1024 bytes of UTF-8; a list page holds
 * at most 1000 keys. */
#define KILN_S3_KEY_MAX 1024
#define KILN_S3_LIST_MAX 1000
/* Continuation tokens are opaque; AWS's are well under this. */
#define KILN_S3_TOKEN_MAX 2048

/* A bucket name S3 accepts (3..63 of [a-z0-9.-], starting and ending with
 * a letter or digit, no ".." ".-" "-."). */
bool kiln_s3_bucket_valid(const char *name);

/* One bucket; the strings are the caller's and must outlive the calls. */
struct kiln_s3 {
    const char *bucket;
    const char *region;
    unsigned timeout_ms;           /* per request; 0: the HTTP client's default */
};

struct kiln_s3_object {
    const char *key;
    uint64_t size;
    const char *content_type;      /* HeadObject only; NULL when unknown */
    /* RFC 3339 UTC with microseconds (API.md's format); "" when unknown. */
    char last_modified[KILN_RFC3339_LEN + 1];
};

struct kiln_s3_list {
    struct kiln_s3_object *objects;
    size_t count;
    const char *next_token;        /* NextContinuationToken; NULL on the last page */
    /* The root element was <Error>: its <Code> (NULL otherwise). */
    const char *error_code;
};

/*
 * Parse a ListObjectsV2 answer (or S3's <Error> document: then only
 * error_code is set) into out, at most max_objects entries (more:
 * KILN_EPROTO). Untrusted input: no DTD or entity is accepted, keys are
 * capped at KILN_S3_KEY_MAX bytes and tokens at KILN_S3_TOKEN_MAX, an entry
 * without a key or with a size that is not a number is refused. 0 or
 * KILN_EPROTO.
 */
int kiln_s3_list_parse(kiln_arena *a, const char *xml, size_t len, size_t max_objects,
                       struct kiln_s3_list *out);

/* ListObjectsV2 under prefix: max_keys 1..1000, token NULL for the first
 * page. */
int kiln_s3_list(const struct kiln_s3 *s3, kiln_arena *a, const char *prefix,
                 unsigned max_keys, const char *token, struct kiln_s3_list *out, char *err,
                 size_t errcap);

/* HeadObject: size, content type and last modified from the headers.
 * KILN_ENOTFOUND when there is no such key. */
int kiln_s3_head(const struct kiln_s3 *s3, kiln_arena *a, const char *key,
                 struct kiln_s3_object *out, char *err, size_t errcap);

/* DeleteObject (S3 answers 204 whether or not the key existed). */
int kiln_s3_delete(const struct kiln_s3 *s3, const char *key, char *err, size_t errcap);

/*
 * A presigned GET URL for key, valid expires_s seconds (1..604800).
 * content_disposition, when not NULL, is sent as
 * response-content-disposition (S3 answers with that header). *url in a.
 */
int kiln_s3_presign_get(const struct kiln_s3 *s3, kiln_arena *a, const char *key,
                        unsigned expires_s, const char *content_disposition, const char **url,
                        char *err, size_t errcap);

/* What a browser may upload with one presigned POST. */
struct kiln_s3_post_policy {
    const char *key;               /* exactly this key */
    const char *content_type;      /* exactly this Content-Type */
    uint64_t max_bytes;            /* content-length-range 1..max_bytes */
    unsigned expires_s;            /* the policy's expiration, from now */
};

#define KILN_S3_POST_FIELDS 8
struct kiln_s3_post {
    const char *url;               /* where the form goes (the bucket's URL) */
    /* The form fields, in the order to send them (the file goes last):
     * key, Content-Type, x-amz-algorithm, x-amz-credential, x-amz-date,
     * [x-amz-security-token], policy, x-amz-signature. */
    struct { const char *name, *value; } fields[KILN_S3_POST_FIELDS];
    size_t nfields;
    const char *policy_json;       /* the policy before base64, for tests and logs */
};

/*
 * The POST policy document for p, signed by s (its clock is the signing
 * time; the expiration is s->now + p->expires_s), with the form posting to
 * url. Pure: the building block of kiln_s3_presign_post, and what the unit
 * test checks. 0 or KILN_EINVAL.
 */
int kiln_s3_post_sign(const struct kiln_sigv4 *s, kiln_arena *a, const char *bucket,
                      const char *url, const struct kiln_s3_post_policy *p,
                      struct kiln_s3_post *out);

/* The same with the current credentials and clock. No request is sent. */
int kiln_s3_presign_post(const struct kiln_s3 *s3, kiln_arena *a,
                         const struct kiln_s3_post_policy *p, struct kiln_s3_post *out,
                         char *err, size_t errcap);

#endif
