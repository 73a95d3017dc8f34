/*
 * SigV4 signing speed: N signings of the requests Kiln makes most (a
 * Secrets Manager JSON call with a session token, an RDS IAM token), timed
 * with CLOCK_MONOTONIC; bench/aws.sh runs botocore on the same requests and
 * prints the ratio.
 *
 *   sigv4_bench N   → "header <ns per signing>\ntoken <ns per token>\n"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/iam.h"
#include "aws/sigv4.h"

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    struct kiln_aws_creds c = { .expires_at = 0 };
    strcpy(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    strcpy(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    memset(c.session_token, 'T', 800);
    struct kiln_sigv4 s = { &c, "eu-west-3", "secretsmanager", 1773500966 };
    const char *body = "{\"SecretId\":\"arn:aws:secretsmanager:eu-west-3:123456789012:secret:kiln-db-AbCdEf\"}";
    struct kiln_sigv4_header h[] = { { "X-Amz-Target", "secretsmanager.GetSecretValue" },
                                     { "Content-Type", "application/x-amz-json-1.1" } };
    struct kiln_sigv4_request r = { .method = "POST", .host = "secretsmanager.eu-west-3.amazonaws.com",
                                    .path = "/", .headers = h, .nheaders = 2, .payload = body,
                                    .payload_len = strlen(body) };
    double t0 = now_ns();
    size_t sink = 0;
    for (long i = 0; i < n; i++) {
        struct kiln_sigv4_signed o;
        kiln_sigv4_sign(&s, &r, &o);
        sink += o.authorization.len;
        kiln_sigv4_signed_free(&o);
    }
    double t1 = now_ns();
    for (long i = 0; i < n; i++) {
        kiln_buf b;
        kiln_buf_init(&b, 1 << 16);
        kiln_rds_token_sign(&c, "eu-west-3", "kiln.proxy-abc.eu-west-3.rds.amazonaws.com", 5432,
                            "kiln_app", 1773500966, &b);
        sink += b.len;
        kiln_buf_free(&b);
    }
    double t2 = now_ns();
    printf("header %.0f\ntoken %.0f\n", (t1 - t0) / (double)n, (t2 - t1) / (double)n);
    return sink == 0;
}
