/*
 * kiln-rotate: Secrets Manager rotation functions for Kiln's secrets, one
 * binary behind an AWS Lambda custom runtime (provided.al2023). See
 * infra/lambdas/README.md for what each kind does at each step.
 *
 *   main.c      environment, the Runtime API loop, usage
 *   runtime.c   the Lambda Runtime API (next invocation, response, errors)
 *   contract.c  Secrets Manager's rotation contract, common to every kind:
 *               DescribeSecret checks, createSecret idempotence, the stage
 *               move of finishSecret, the ECS deployment after it
 *   kind_key.c  SECRET_KEY_BASE
 *   kind_db.c   the PostgreSQL app user (alternating users)
 *   kind_valkey.c the ElastiCache (Valkey) user's password
 *
 * Runs on one thread, outside any event loop: the db and kv layers then
 * wait with poll(), the AWS calls block on libcurl. Secret values never
 * reach a log line or an error text; buffers that held one are wiped.
 */
#ifndef KILN_ROTATE_H
#define KILN_ROTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum rot_kind {
    ROT_SECRET_KEY_BASE,
    ROT_DB_USER,
    ROT_VALKEY_USER,
};

/* The function's configuration (environment; see README.md). */
struct rot_env {
    enum rot_kind kind;
    const char *kind_name;          /* "secret-key-base", "db-user", "valkey-user" */
    bool hot_reload;                /* HOT_RELOAD: no ECS deployment after finishSecret */
    const char *ecs_cluster;        /* ECS_CLUSTER */
    const char *ecs_service;        /* ECS_SERVICE */
    /* db-user */
    const char *master_arn;         /* MASTER_SECRET_ARN */
    const char *db_sslmode;         /* DB_SSLMODE, default require */
    const char *db_sslrootcert;     /* DB_SSLROOTCERT */
    unsigned db_connect_timeout_s;  /* DB_CONNECT_TIMEOUT_SECONDS, 10 */
    /* valkey-user */
    const char *valkey_host;        /* VALKEY_HOST */
    unsigned valkey_port;           /* VALKEY_PORT, 6379 */
    bool valkey_tls;                /* VALKEY_SSL, default true */
    const char *valkey_ca_file;     /* VALKEY_CA_FILE */
    const char *elasticache_user_id; /* ELASTICACHE_USER_ID; default: the secret's username */
    unsigned valkey_test_timeout_s; /* VALKEY_TEST_TIMEOUT_SECONDS, 60 */
};

/* One invocation: Secrets Manager's event plus what the runtime told. */
struct rot_event {
    const char *request_id;         /* Lambda-Runtime-Aws-Request-Id */
    const char *secret_id;          /* SecretId (ARN) */
    const char *token;              /* ClientRequestToken: the new version's id */
    const char *step;               /* createSecret | setSecret | testSecret | finishSecret */
    uint64_t deadline_ms;           /* Lambda-Runtime-Deadline-Ms (epoch ms), 0 unknown */
};

/* Why a step failed: errorType and errorMessage of the Runtime API. */
struct rot_error {
    char type[64];
    char message[1024];
};

void rot_fail(struct rot_error *e, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * What differs between the kinds. current and pending are whole
 * SecretStrings (for the JSON kinds, objects).
 */
struct rot_kind_ops {
    /* createSecret: the new value, made from the current one. */
    int (*make_pending)(const struct rot_env *env, const struct rot_event *ev,
                        const char *current, kiln_buf *pending, struct rot_error *e);
    /* setSecret: make the service accept pending (current keeps working). */
    int (*set)(const struct rot_env *env, const struct rot_event *ev, const char *current,
               const char *pending, struct rot_error *e);
    /* testSecret: prove that pending works. */
    int (*test)(const struct rot_env *env, const struct rot_event *ev, const char *pending,
                struct rot_error *e);
};

extern const struct rot_kind_ops rot_key_ops, rot_db_ops, rot_valkey_ops;

/* Run one step of the contract. 0, or -1 with e set. */
int rot_handle(const struct rot_env *env, const struct rot_event *ev, struct rot_error *e);

/* Helpers shared by the kinds. */
/* n random bytes as base64url (no padding) into out (NUL-terminated). */
int rot_random_string(size_t n, char *out, size_t cap);
/* Milliseconds since the epoch. */
uint64_t rot_now_ms(void);
/* The time left before ev's deadline minus margin_ms, capped at cap_ms (0:
 * no cap); cap_ms when the deadline is unknown. */
uint64_t rot_time_left_ms(const struct rot_event *ev, uint64_t margin_ms, uint64_t cap_ms);

/* Lambda Runtime API (runtime.c). api: host:port of AWS_LAMBDA_RUNTIME_API. */
struct rt_invocation {
    char request_id[128];
    uint64_t deadline_ms;
    kiln_buf event;                 /* the event JSON */
};
/* Wait (no timeout: the Runtime API holds the call until there is work)
 * for the next invocation. 0 or a kiln_err; err says why. */
int rt_next(const char *api, struct rt_invocation *inv, char *err, size_t errcap);
int rt_respond(const char *api, const char *request_id, const char *json, char *err,
               size_t errcap);
int rt_error(const char *api, const char *request_id, const struct rot_error *e, char *err,
             size_t errcap);
int rt_init_error(const char *api, const struct rot_error *e, char *err, size_t errcap);
void rt_invocation_free(struct rt_invocation *inv);

#endif
