/* IAM authentication tokens; see iam.h. */
#include "aws/iam.h"

#include <stdio.h>
#include <string.h>

#include "aws/aws.h"
#include "core/err.h"

/* "<host>/?<query>", botocore's layout without the scheme. */
static int presign_token(const struct kiln_aws_creds *creds, const char *region,
                         const char *service, const char *host, const char *query,
                         time_t now, kiln_buf *out)
{
    struct kiln_sigv4 s = { creds, region, service, now };
    struct kiln_sigv4_request req = {
        .method = "GET", .host = host, .path = "/", .query = query,
    };
    kiln_buf q;
    kiln_buf_init(&q, 64 * 1024);
    int rc = kiln_sigv4_presign(&s, &req, KILN_IAM_TOKEN_TTL_S, &q, NULL);
    if (rc == 0) {
        kiln_buf_printf(out, "%s/?%.*s", host, (int)q.len, q.p);
        if (kiln_buf_append(out, "", 1) == 0)
            out->len--;
    }
    if (q.p)
        explicit_bzero(q.p, q.len);
    kiln_buf_free(&q);
    return rc;
}

/* user, encoded for a query value. */
static void query_with(kiln_buf *q, const char *param, const char *user)
{
    kiln_buf_printf(q, "Action=connect&%s=", param);
    kiln_uri_encode(q, user, strlen(user), false);
    kiln_buf_append(q, "", 1);
}

int kiln_rds_token_sign(const struct kiln_aws_creds *creds, const char *region,
                        const char *host, unsigned port, const char *user, time_t now,
                        kiln_buf *out)
{
    if (!host || !*host || !user || !*user || !port || !region)
        return KILN_EINVAL;
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%u", host, port);
    kiln_buf q;
    kiln_buf_init(&q, 4096);
    query_with(&q, "DBUser", user);
    int rc = presign_token(creds, region, "rds-db", hostport, q.p, now, out);
    kiln_buf_free(&q);
    return rc;
}

int kiln_elasticache_token_sign(const struct kiln_aws_creds *creds, const char *region,
                                const char *cluster_id, const char *user, time_t now,
                                kiln_buf *out)
{
    if (!cluster_id || !*cluster_id || !user || !*user || !region)
        return KILN_EINVAL;
    kiln_buf q;
    kiln_buf_init(&q, 4096);
    query_with(&q, "User", user);
    int rc = presign_token(creds, region, "elasticache", cluster_id, q.p, now, out);
    kiln_buf_free(&q);
    return rc;
}

int kiln_rds_token(const char *region, const char *host, unsigned port, const char *user,
                   kiln_buf *out, char *err, size_t errcap)
{
    struct kiln_aws_creds c;
    int rc = kiln_aws_credentials(&c, err, errcap);
    if (rc == 0 && (rc = kiln_rds_token_sign(&c, region, host, port, user, kiln_aws_now(), out)))
        snprintf(err, errcap, "cannot sign an RDS auth token (host, port, user, region)");
    explicit_bzero(&c, sizeof c);
    return rc;
}

int kiln_elasticache_token(const char *region, const char *cluster_id, const char *user,
                           kiln_buf *out, char *err, size_t errcap)
{
    struct kiln_aws_creds c;
    int rc = kiln_aws_credentials(&c, err, errcap);
    if (rc == 0 &&
        (rc = kiln_elasticache_token_sign(&c, region, cluster_id, user, kiln_aws_now(), out)))
        snprintf(err, errcap, "cannot sign an ElastiCache auth token (cluster id, user, region)");
    explicit_bzero(&c, sizeof c);
    return rc;
}
