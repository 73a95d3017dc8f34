/*
 * Secrets Manager: GetSecretValue, and configuration variables whose value
 * lives there.
 *
 * Any variable NAME_SECRET_ARN=<arn>[#<field>] stands for NAME: its value is
 * the secret's SecretString, or the string field <field> of it when the
 * secret is a JSON object (the RDS convention {"username","password",…}).
 * kiln_secret_vars_resolve fetches every one at start (one call per
 * distinct secret) and kiln_secret_vars_getenv then answers NAME with it,
 * so the configuration reads secrets exactly like plain variables. Setting
 * both NAME and NAME_SECRET_ARN is a configuration error: which one wins
 * would be a guess.
 *
 * kiln_secret_vars_reload fetches them again (secret rotation) and keeps
 * the new values, under a lock, for the code that applies them at run time
 * (kiln_secret_vars_copy: new database and Valkey connections, session
 * signing keys). Values never appear in logs or error texts: errors name the
 * variable and what AWS said, which never includes the value.
 */
#ifndef KILN_AWS_SECRETS_H
#define KILN_AWS_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/*
 * GetSecretValue of secret_id (ARN or name); field: NULL for the whole
 * SecretString, else that field of it as a JSON object. The value goes into
 * out (NUL-terminated). The region is the ARN's, else AWS_REGION. 0, or
 * KILN_ENOTFOUND (no such secret or field), KILN_EUNAVAILABLE (AWS
 * unreachable or refused), KILN_EINVAL; err says why.
 */
int kiln_secrets_get(const char *secret_id, const char *field, kiln_buf *out, char *err,
                     size_t errcap);

/*
 * Rotation (Secrets Manager's four-step contract, infra/lambdas/): the calls
 * a rotation function makes. Each returns 0 or KILN_ENOTFOUND (no such
 * secret or version), KILN_ECONFLICT (PutSecretValue: that token already
 * holds another value), KILN_EINVAL, KILN_EUNAVAILABLE; err says why (AWS's
 * error type and message, never a value).
 */

/* GetSecretValue of one version: version_id and/or version_stage (both
 * NULL: AWSCURRENT). The whole SecretString into out (NUL-terminated); the
 * version's id into version_out (vcap bytes) when not NULL. */
int kiln_secrets_get_version(const char *secret_id, const char *version_id,
                             const char *version_stage, kiln_buf *out, char *version_out,
                             size_t vcap, char *err, size_t errcap);

#define KILN_SECRET_MAX_VERSIONS 128
struct kiln_secret_version {
    char id[72];                   /* VersionId (a ClientRequestToken: 32..64 chars) */
    char stages[1024];             /* ",AWSCURRENT,AWSPREVIOUS,": comma-delimited */
};
/* DescribeSecret, what rotation needs of it. */
struct kiln_secret_info {
    bool rotation_enabled;
    size_t nversions;
    struct kiln_secret_version *versions;   /* owned */
};
int kiln_secrets_describe(const char *secret_id, struct kiln_secret_info *out, char *err,
                          size_t errcap);
/* Is version listed (VersionIdsToStages)? Does it hold stage? */
bool kiln_secret_info_knows(const struct kiln_secret_info *info, const char *version);
bool kiln_secret_info_has(const struct kiln_secret_info *info, const char *version,
                          const char *stage);
/* The version holding stage, or NULL. */
const char *kiln_secret_info_version_of(const struct kiln_secret_info *info, const char *stage);
void kiln_secret_info_free(struct kiln_secret_info *info);

/* PutSecretValue: value as version token (ClientRequestToken), with stage
 * as its only VersionStages entry (NULL: AWS's default, AWSCURRENT).
 * Idempotent: the same token and value again succeeds. */
int kiln_secrets_put_value(const char *secret_id, const char *token, const char *value,
                           const char *stage, char *err, size_t errcap);
/* UpdateSecretVersionStage: stage onto to_version (NULL: none), off
 * from_version (NULL: none). Moving AWSCURRENT makes Secrets Manager put
 * AWSPREVIOUS on the version that had it. */
int kiln_secrets_move_stage(const char *secret_id, const char *stage, const char *to_version,
                            const char *from_version, char *err, size_t errcap);

/* Variables from environ (NAME=value strings); returns the number of
 * problems, each appended to problems as "config: …\n". */
int kiln_secret_vars_find(char **env, kiln_buf *problems);
/* Fetch every variable found. 0, or -1 with err naming the variable and the
 * reason (never the value). */
int kiln_secret_vars_resolve(char *err, size_t errcap);
/* Number of variables that come from secrets. */
size_t kiln_secret_vars_count(void);
/* kiln_getenv_fn: the secret's value for NAME, else getenv(NAME). Only
 * before any reload starts (the pointer lives until the next reload). */
const char *kiln_secret_vars_getenv(void *ctx, const char *name);
/*
 * Fetch them all again. Names of the variables whose value changed go into
 * changed (comma-separated). Returns the number changed, or -1 with err set
 * (then nothing changed: a partial rotation is never applied).
 */
int kiln_secret_vars_reload(kiln_buf *changed, char *err, size_t errcap);
/* Incremented by every reload that changed a value (0 at start): a store
 * in reconnect backoff after refused credentials tries again at once when
 * it moved. */
unsigned long kiln_secret_vars_generation(void);
/* Is NAME set from a secret? */
bool kiln_secret_vars_has(const char *name);
/* The current value of NAME into out (cap bytes); false when NAME is not
 * from a secret or the value does not fit. */
bool kiln_secret_vars_copy(const char *name, char *out, size_t cap);
/* Forget everything (tests, exit). */
void kiln_secret_vars_free(void);

#endif
