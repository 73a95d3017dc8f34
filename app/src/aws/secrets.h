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
/* Is NAME set from a secret? */
bool kiln_secret_vars_has(const char *name);
/* The current value of NAME into out (cap bytes); false when NAME is not
 * from a secret or the value does not fit. */
bool kiln_secret_vars_copy(const char *name, char *out, size_t cap);
/* Forget everything (tests, exit). */
void kiln_secret_vars_free(void);

#endif
