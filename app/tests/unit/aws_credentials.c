/*
 * Unit tests for app/src/aws/aws.c: the credentials chain (environment, the
 * ECS container endpoint, EC2 IMDSv2), its cache and refresh, and endpoint
 * resolution. The container endpoint and IMDS are a small HTTP server on
 * loopback inside this test, which counts what it is asked.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#include "aws/aws.h"
#include "core/err.h"

static struct {
    int fd, port;
    pthread_t thread;
    atomic_int creds_hits, imds_token_hits, imds_creds_hits;
    atomic_int status;          /* answer of the credentials path */
    atomic_long expires_in;     /* seconds from now */
    char key_id[32];
} srv;

static void send_str(int fd, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
                     strlen(body));
    if (write(fd, head, (size_t)n) < 0 || write(fd, body, strlen(body)) < 0)
        return;
}

static void creds_json(char *out, size_t cap)
{
    time_t exp = time(NULL) + atomic_load(&srv.expires_in);
    struct tm tm;
    char ts[32];
    gmtime_r(&exp, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(out, cap,
             "{\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"very-secret-key\","
             "\"Token\":\"session-token\",\"Expiration\":\"%s\",\"Code\":\"Success\"}",
             srv.key_id, ts);
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(srv.fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char req[4096];
        ssize_t n = read(c, req, sizeof req - 1);
        req[n > 0 ? n : 0] = '\0';
        char body[512];
        if (strncmp(req, "GET /creds", 10) == 0) {
            atomic_fetch_add(&srv.creds_hits, 1);
            if (!strstr(req, "Authorization: the-token")) {
                send_str(c, 403, "{\"message\":\"bad token\"}");
            } else if (atomic_load(&srv.status) != 200) {
                send_str(c, atomic_load(&srv.status), "oops");
            } else {
                creds_json(body, sizeof body);
                send_str(c, 200, body);
            }
        } else if (strncmp(req, "PUT /latest/api/token", 21) == 0) {
            atomic_fetch_add(&srv.imds_token_hits, 1);
            send_str(c, strstr(req, "X-aws-ec2-metadata-token-ttl-seconds: ") ? 200 : 400,
                     "imds-token");
        } else if (strncmp(req, "GET /latest/meta-data/iam/security-credentials/", 47) == 0) {
            if (!strstr(req, "X-aws-ec2-metadata-token: imds-token")) {
                send_str(c, 401, "");
            } else if (strncmp(req + 47, "web-role", 8) == 0) {
                atomic_fetch_add(&srv.imds_creds_hits, 1);
                creds_json(body, sizeof body);
                send_str(c, 200, body);
            } else {
                send_str(c, 200, "web-role\n");
            }
        } else {
            send_str(c, 404, "");
        }
        close(c);
    }
}

static int setup_group(void **state)
{
    (void)state;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(srv.fd, (struct sockaddr *)&a, sizeof a) || listen(srv.fd, 64) ||
        getsockname(srv.fd, (struct sockaddr *)&a, &len))
        return -1;
    srv.port = ntohs(a.sin_port);
    return pthread_create(&srv.thread, NULL, serve, NULL);
}

static const char *fake_getenv(void *ctx, const char *name)
{
    const char *const *kv = ctx;
    for (; kv[0]; kv += 2)
        if (strcmp(kv[0], name) == 0)
            return kv[1];
    return NULL;
}

static int setup_env(const char *const *env)
{
    kiln_buf problems;
    kiln_buf_init(&problems, 4096);
    struct kiln_env_reader e = { fake_getenv, (void *)env, &problems, 0 };
    kiln_aws_setup(&e);
    kiln_buf_free(&problems);
    atomic_store(&srv.creds_hits, 0);
    atomic_store(&srv.imds_token_hits, 0);
    atomic_store(&srv.imds_creds_hits, 0);
    atomic_store(&srv.status, 200);
    atomic_store(&srv.expires_in, 3600);
    snprintf(srv.key_id, sizeof srv.key_id, "ASIAFIRST");
    return e.count;
}

static char url[128], imds[128];

static void test_env_keys_win(void **state)
{
    (void)state;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    const char *env[] = { "AWS_ACCESS_KEY_ID", "AKIDENV", "AWS_SECRET_ACCESS_KEY", "s",
                          "AWS_SESSION_TOKEN", "tok", "AWS_CONTAINER_CREDENTIALS_FULL_URI", url,
                          "AWS_CONTAINER_AUTHORIZATION_TOKEN", "the-token", NULL };
    assert_int_equal(setup_env(env), 0);
    struct kiln_aws_creds c;
    char err[256];
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), 0);
    assert_string_equal(c.access_key_id, "AKIDENV");
    assert_string_equal(c.session_token, "tok");
    assert_int_equal(atomic_load(&srv.creds_hits), 0);
}

struct many { int rc; char id[128]; };

static void *ask(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < 50; i++) {
        struct kiln_aws_creds c;
        char err[256];
        m->rc |= kiln_aws_credentials(&c, err, sizeof err);
        snprintf(m->id, sizeof m->id, "%s", c.access_key_id);
    }
    return NULL;
}

/* Eight threads asking 50 times each: one fetch, the same answer for all. */
static void test_container_cached_across_threads(void **state)
{
    (void)state;
    char tokfile[] = "/tmp/kiln-aws-token-XXXXXX";
    int fd = mkstemp(tokfile);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "the-token\n", 10), 10);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    const char *env[] = { "AWS_CONTAINER_CREDENTIALS_FULL_URI", url,
                          "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokfile,
                          "AWS_EC2_METADATA_DISABLED", "true", NULL };
    assert_int_equal(setup_env(env), 0);
    pthread_t t[8];
    struct many m[8];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, ask, &m[i]);
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(m[i].rc, 0);
        assert_string_equal(m[i].id, "ASIAFIRST");
    }
    assert_int_equal(atomic_load(&srv.creds_hits), 1);
    unlink(tokfile);
}

/* Credentials within the refresh margin are fetched again; a refresh that
 * fails keeps serving the cached ones while they are valid. */
static void test_refresh_before_expiry(void **state)
{
    (void)state;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    const char *env[] = { "AWS_CONTAINER_CREDENTIALS_FULL_URI", url,
                          "AWS_CONTAINER_AUTHORIZATION_TOKEN", "the-token", NULL };
    assert_int_equal(setup_env(env), 0);
    atomic_store(&srv.expires_in, KILN_AWS_REFRESH_S - 60);
    struct kiln_aws_creds c;
    char err[256];
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), 0);
    snprintf(srv.key_id, sizeof srv.key_id, "ASIASECOND");
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), 0);
    assert_string_equal(c.access_key_id, "ASIASECOND");
    assert_int_equal(atomic_load(&srv.creds_hits), 2);

    atomic_store(&srv.status, 500);
    snprintf(srv.key_id, sizeof srv.key_id, "ASIATHIRD");
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), 0);
    assert_string_equal(c.access_key_id, "ASIASECOND");
    assert_int_equal(atomic_load(&srv.creds_hits), 3);
}

static void test_container_refused(void **state)
{
    (void)state;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    const char *env[] = { "AWS_CONTAINER_CREDENTIALS_FULL_URI", url,
                          "AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong-token", NULL };
    assert_int_equal(setup_env(env), 0);
    struct kiln_aws_creds c;
    char err[256];
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), KILN_EUNAVAILABLE);
    assert_non_null(strstr(err, "403"));
    assert_null(strstr(err, "wrong-token"));
}

static void test_imdsv2(void **state)
{
    (void)state;
    snprintf(imds, sizeof imds, "http://127.0.0.1:%d", srv.port);
    const char *env[] = { "AWS_EC2_METADATA_SERVICE_ENDPOINT", imds, NULL };
    assert_int_equal(setup_env(env), 0);
    struct kiln_aws_creds c;
    char err[256];
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), 0);
    assert_string_equal(c.access_key_id, "ASIAFIRST");
    assert_string_equal(c.secret_access_key, "very-secret-key");
    assert_string_equal(c.session_token, "session-token");
    assert_true(c.expires_at > time(NULL));
    assert_int_equal(atomic_load(&srv.imds_token_hits), 1);
    assert_int_equal(atomic_load(&srv.imds_creds_hits), 1);
}

static void test_no_source(void **state)
{
    (void)state;
    const char *env[] = { "AWS_EC2_METADATA_DISABLED", "true", NULL };
    assert_int_equal(setup_env(env), 0);
    struct kiln_aws_creds c;
    char err[256];
    assert_int_equal(kiln_aws_credentials(&c, err, sizeof err), KILN_ENOTFOUND);
    assert_non_null(strstr(err, "no AWS credentials"));
}

static void test_config_problems(void **state)
{
    (void)state;
    const char *half[] = { "AWS_ACCESS_KEY_ID", "AKID", NULL };
    assert_int_equal(setup_env(half), 1);
    const char *remote_http[] = { "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.5/creds",
                                  NULL };
    assert_int_equal(setup_env(remote_http), 1);
    const char *remote_https[] = { "AWS_CONTAINER_CREDENTIALS_FULL_URI", "https://10.0.0.5/c",
                                   NULL };
    assert_int_equal(setup_env(remote_https), 0);
    const char *bad_endpoint[] = { "AWS_ENDPOINT_URL_S3", "ftp://x", NULL };
    assert_int_equal(setup_env(bad_endpoint), 1);
}

static void test_endpoints(void **state)
{
    (void)state;
    char out[256];
    const char *none[] = { "AWS_REGION", "eu-west-3", NULL };
    assert_int_equal(setup_env(none), 0);
    assert_string_equal(kiln_aws_region(), "eu-west-3");
    assert_int_equal(kiln_aws_endpoint("SECRETS_MANAGER", "secretsmanager", "eu-west-3", out,
                                       sizeof out), 0);
    assert_string_equal(out, "https://secretsmanager.eu-west-3.amazonaws.com");
    assert_int_equal(kiln_aws_endpoint("S3", "s3", NULL, out, sizeof out), KILN_EINVAL);

    const char *both[] = { "AWS_DEFAULT_REGION", "us-east-2", "AWS_ENDPOINT_URL",
                           "http://127.0.0.1:1/", "AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2",
                           NULL };
    assert_int_equal(setup_env(both), 0);
    assert_string_equal(kiln_aws_region(), "us-east-2");
    kiln_aws_endpoint("S3", "s3", "us-east-2", out, sizeof out);
    assert_string_equal(out, "http://127.0.0.1:2");
    kiln_aws_endpoint("SECRETS_MANAGER", "secretsmanager", "us-east-2", out, sizeof out);
    assert_string_equal(out, "http://127.0.0.1:1");

    const char *ignored[] = { "AWS_REGION", "eu-west-1", "AWS_ENDPOINT_URL_S3",
                              "http://127.0.0.1:2", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true",
                              NULL };
    assert_int_equal(setup_env(ignored), 0);
    kiln_aws_endpoint("S3", "s3", "eu-west-1", out, sizeof out);
    assert_string_equal(out, "https://s3.eu-west-1.amazonaws.com");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_keys_win),
        cmocka_unit_test(test_container_cached_across_threads),
        cmocka_unit_test(test_refresh_before_expiry),
        cmocka_unit_test(test_container_refused),
        cmocka_unit_test(test_imdsv2),
        cmocka_unit_test(test_no_source),
        cmocka_unit_test(test_config_problems),
        cmocka_unit_test(test_endpoints),
    };
    int rc = cmocka_run_group_tests_name("aws/credentials", tests, setup_group, NULL);
    kiln_aws_reset();
    return rc;
}
