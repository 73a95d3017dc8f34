/*
 * Calling AWS without an SDK: where credentials come from, which endpoint a
 * service answers on, and one signed HTTPS request (libcurl through
 * core/http_client.h, SigV4 through aws/sigv4.h).
 *
 * Credentials, in the SDKs' order (the first that has any wins):
 *   1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN]
 *   2. the ECS container endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI on
 *      http://169.254.170.2, or AWS_CONTAINER_CREDENTIALS_FULL_URI with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN or _TOKEN_FILE (read at each fetch:
 *      ECS may rotate the file)
 *   3. EC2 IMDSv2 (token PUT, then the instance role's credentials), unless
 *      AWS_EC2_METADATA_DISABLED=true; AWS_EC2_METADATA_SERVICE_ENDPOINT
 *      overrides http://169.254.169.254
 * Temporary credentials are cached and fetched again when fewer than
 * KILN_AWS_REFRESH_S seconds remain; one mutex guards the cache, so any
 * thread may ask, and a refresh that fails keeps serving the cached set
 * while it is still valid.
 *
 * Endpoints: AWS_ENDPOINT_URL_<SERVICE> (the service id upper-cased, spaces
 * as '_': AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL_S3), then
 * AWS_ENDPOINT_URL, then https://<prefix>.<region>.amazonaws.com.
 *
 * Threads: kiln_aws_setup once at start, before any other thread uses it;
 * everything else from any thread. Calls block (network): workers, the
 * secret reload thread, or start-up; never an event loop.
 */
#ifndef KILN_AWS_AWS_H
#define KILN_AWS_AWS_H

#include <stdbool.h>
#include <stddef.h>

#include "aws/sigv4.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/http_client.h"

#define KILN_AWS_REFRESH_S 300

/*
 * Read the AWS_* variables (region, static keys, container and IMDS
 * settings, endpoint overrides) through e. Problems (a key id without its
 * secret, a FULL_URI that is not http(s)) are reported through e.
 * Calling it again replaces the settings and drops cached credentials.
 */
void kiln_aws_setup(struct kiln_env_reader *e);

/* AWS_REGION, else AWS_DEFAULT_REGION; NULL when neither is set. */
const char *kiln_aws_region(void);

/*
 * Current credentials into out. 0, or KILN_ENOTFOUND (no source in the
 * chain has any), KILN_EUNAVAILABLE (a source failed); err says why, never
 * with a secret.
 */
int kiln_aws_credentials(struct kiln_aws_creds *out, char *err, size_t errcap);

/*
 * The base URL (no trailing slash) for a service: service_id as in the
 * variable name ("SECRETS_MANAGER", "S3"), host_prefix for the default
 * ("secretsmanager", "s3"). 0 or KILN_EINVAL (no region and no override).
 */
int kiln_aws_endpoint(const char *service_id, const char *host_prefix, const char *region,
                      char *out, size_t cap);

/* The region field of an ARN (arn:partition:service:region:account:…)
 * into out; false when s is no ARN or names no region. */
bool kiln_aws_arn_region(const char *s, char *out, size_t cap);

/* The signing clock (time(NULL)); one place to read it. */
time_t kiln_aws_now(void);

/* One signed request. */
struct kiln_aws_call {
    const char *service;           /* signing name: "secretsmanager", "s3" */
    const char *region;
    const char *method;            /* "GET", "POST", "HEAD", "DELETE"… */
    const char *url;               /* full URL, path and query percent-encoded */
    const struct kiln_sigv4_header *headers;  /* signed and sent */
    size_t nheaders;
    const void *body;
    size_t body_len;
    const char *content_type;      /* signed and sent when there is a body */
    bool s3;                       /* S3 signing rules (x-amz-content-sha256) */
    unsigned timeout_ms;           /* 0: the client's default */
    size_t max_body;               /* 0: the client's default */
};

/*
 * Fetch credentials, sign and perform call. 0 when a response came back
 * (whatever its status: the caller judges res->status), else a kiln_err
 * with err set. res must be released with kiln_http_response_free.
 */
int kiln_aws_request(const struct kiln_aws_call *call, struct kiln_http_response *res,
                     char *err, size_t errcap);

/* Release the settings (tests). */
void kiln_aws_reset(void);

#endif
