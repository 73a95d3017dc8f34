/*
 * Secret rotation without a restart (ENABLE_SECRET_RELOAD=true): one
 * background thread re-reads every *_SECRET_ARN variable on SIGHUP and every
 * SECRET_RELOAD_INTERVAL_SECONDS, and applies what changed:
 *
 *   SECRET_KEY_BASE            signs from now on; the previous key still
 *                              verifies (no one is logged out)
 *   DB_USERNAME, DB_PASSWORD   new database connections (api/app.c asks for
 *   VALKEY_USER, VALKEY_PASSWORD  credentials at every connect); open ones
 *                              keep working on the credentials they used
 *   anything else              logged: it applies at the next start
 *
 * With IAM auth (DB_IAM_AUTH, VALKEY_IAM_AUTH) and temporary credentials the
 * same thread also refreshes the AWS credentials once a minute, so that a
 * connection opened on an event loop signs its token from the cache and
 * never waits for the credentials endpoint.
 *
 * SIGHUP is blocked in every thread (kiln_reload_block_signal, before any
 * thread starts) and taken by sigtimedwait here, so it never terminates the
 * process; without ENABLE_SECRET_RELOAD it is ignored.
 */
#ifndef KILN_API_RELOAD_H
#define KILN_API_RELOAD_H

#include "core/config.h"

/* Block SIGHUP in the calling thread and every thread it starts later. */
void kiln_reload_block_signal(void);
/* Start the thread when there is something to do. cfg must outlive it. */
void kiln_reload_start(const struct kiln_config *cfg);
/* Stop and join it (no-op when not started). */
void kiln_reload_stop(void);
/*
 * A store refused credentials that come from a secret (they may have been
 * rotated since the last reload, e.g. the database user moved to the other
 * of two alternating users): wake the thread to read the secrets now
 * instead of at the next period. At most once per KILN_RELOAD_KICK_S; a
 * no-op unless secret reload is on. Any thread, cheap.
 */
#define KILN_RELOAD_KICK_S 5
void kiln_reload_kick(const char *store);
/* One reload now, on the calling thread (the thread's own step). Returns
 * the number of variables changed, or -1 (logged). */
int kiln_reload_secrets(const struct kiln_config *cfg);

#endif
