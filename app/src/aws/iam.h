/*
 * IAM authentication tokens: the "password" an RDS database (or RDS Proxy)
 * and an ElastiCache cache accept from an IAM principal. Each is a SigV4
 * presigned URL without its scheme, valid 15 minutes (only for opening a
 * connection or re-authenticating: an open connection outlives it):
 *
 *   RDS:         <host>:<port>/?Action=connect&DBUser=<user>&X-Amz-…   (rds-db)
 *   ElastiCache: <cluster id>/?Action=connect&User=<user>&X-Amz-…      (elasticache)
 *
 * Signed with the credentials chain of aws.h; generating one is a few
 * HMACs once credentials are cached.
 */
#ifndef KILN_AWS_IAM_H
#define KILN_AWS_IAM_H

#include <stddef.h>
#include <time.h>

#include "aws/sigv4.h"
#include "core/buf.h"

#define KILN_IAM_TOKEN_TTL_S 900

/* Pure: the token for these credentials at time now. 0 or KILN_EINVAL. */
int kiln_rds_token_sign(const struct kiln_aws_creds *creds, const char *region,
                        const char *host, unsigned port, const char *user, time_t now,
                        kiln_buf *out);
int kiln_elasticache_token_sign(const struct kiln_aws_creds *creds, const char *region,
                                const char *cluster_id, const char *user, time_t now,
                                kiln_buf *out);

/* With the current credentials (aws.h) and clock. 0 or a kiln_err with err
 * set (never a secret). */
int kiln_rds_token(const char *region, const char *host, unsigned port, const char *user,
                   kiln_buf *out, char *err, size_t errcap);
int kiln_elasticache_token(const char *region, const char *cluster_id, const char *user,
                           kiln_buf *out, char *err, size_t errcap);

#endif
