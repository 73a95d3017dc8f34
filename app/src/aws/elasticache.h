/*
 * Amazon ElastiCache, the one call a Valkey password rotation needs:
 * ModifyUser with the user's new password list (Query protocol: a form POST
 * of Action=ModifyUser&Version=2015-02-02&UserId=…&Passwords.member.N=…,
 * signing name "elasticache"; XML answers). An ElastiCache user holds up to
 * two passwords and accepts either, which is what lets a rotation hand out
 * a new one while connections still open with the old one.
 *
 * Endpoint: kiln_aws_endpoint("ELASTICACHE", "elasticache"):
 * AWS_ENDPOINT_URL_ELASTICACHE, AWS_ENDPOINT_URL, or
 * https://elasticache.<region>.amazonaws.com; region AWS_REGION. Blocks
 * (network): not for an event loop.
 */
#ifndef KILN_AWS_ELASTICACHE_H
#define KILN_AWS_ELASTICACHE_H

#include <stddef.h>

/*
 * Replace the passwords of ElastiCache user user_id with passwords[0..n-1]
 * (n is 1 or 2). ElastiCache applies it asynchronously (the user is
 * "modifying" for a while). The request body holds the passwords and is
 * wiped after sending; err never holds one. 0, or KILN_ENOTFOUND
 * (UserNotFound), KILN_EBUSY (InvalidUserState: a modification in
 * progress; try again later), KILN_EINVAL (bad arguments, no region),
 * KILN_EUNAVAILABLE (anything else).
 */
int kiln_elasticache_set_passwords(const char *user_id, const char *const *passwords, size_t n,
                                   char *err, size_t errcap);

#endif
