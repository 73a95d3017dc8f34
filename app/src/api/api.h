/*
 * Handlers of the public API, one file per resource, all listed in the one
 * route table (routes.c). A handler reads its input from the request, calls
 * the stores, and writes JSON with the response helpers; it never touches a
 * socket, libpq or RESP.
 */
#ifndef KILN_API_H
#define KILN_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "http/request.h"
#include "http/response.h"
#include "http/router.h"
#include "store/db.h"

struct kiln_env_reader;

/* The route table (routes.c): the hand-written routes and every declared
 * resource's, built once, shared by every thread. */
const struct kiln_route *api_routes(size_t *n);

/* health.c */
void api_root(struct kiln_req *req, struct kiln_res *res);
void api_livez(struct kiln_req *req, struct kiln_res *res);
void api_readyz(struct kiln_req *req, struct kiln_res *res);
void api_healthz(struct kiln_req *req, struct kiln_res *res);
void api_test_sleep(struct kiln_req *req, struct kiln_res *res);

/*
 * openapi.c: the OpenAPI 3.1 document, generated on first use from the route
 * table, the resource declarations and app/docs/operations.json (the
 * operations of the handlers written by hand), and the page that renders it.
 */
void api_openapi(struct kiln_req *req, struct kiln_res *res);
void api_docs(struct kiln_req *req, struct kiln_res *res);
/* The document (built once, shared, never freed); and NULL, or the first
 * thing the generator found wrong (a route without its operation in
 * operations.json, an operation no route serves, a bound that names
 * nothing): the unit test and `kiln openapi` fail on it. */
const json_t *api_openapi_document(void);
const char *api_openapi_problem(void);
/* `kiln openapi`: the document, indented, on out. 0, or 1 after saying on
 * stderr what is wrong with it. */
int api_openapi_write(FILE *out);

/* Bounds that handlers enforce and the document states (openapi.c). A
 * query number above its maximum is capped to it (res_query_uint). */
#define API_DASHBOARD_RECENT_DEFAULT 5   /* ?recent_limit= */
#define API_DASHBOARD_RECENT_MAX 20
#define API_UPLOADS_LIST_DEFAULT 100     /* GET /uploads ?limit=; its cap is
                                            KILN_S3_LIST_MAX (aws/s3.h) */
#define API_UPLOADS_FILENAME_MAX 255     /* presign's filename, in characters */

#define API_AUDIT_PAGE_DEFAULT 50        /* GET /audit ?limit= */
#define API_AUDIT_PAGE_MAX 200
#define API_AUDIT_OFFSET_MAX 1000000

#define API_WEBHOOK_DELIVERIES_DEFAULT 50 /* GET /webhooks/:id/deliveries ?limit= */
#define API_WEBHOOK_DELIVERIES_MAX 100

/* events.c: the change feed's stream and the audit log */
void api_events_stream(struct kiln_req *req, struct kiln_res *res);
void api_audit_list(struct kiln_req *req, struct kiln_res *res);
/* An audit row for something that is not a resource's change (login,
 * logout); actor may be NULL. Best effort: a failure is logged. */
void kiln_audit_record(struct kiln_req *req, const char *actor, const char *action,
                       const char *target);

/* auth.c */
void api_auth_request(struct kiln_req *req, struct kiln_res *res);
void api_auth_callback(struct kiln_req *req, struct kiln_res *res);
void api_auth_logout(struct kiln_req *req, struct kiln_res *res);
void api_dev_login(struct kiln_req *req, struct kiln_res *res);
/* A new session for u (any way in): ends the one the request presented,
 * sets the cookie, writes the audit row. 0 or a kv error. */
struct kiln_session_user;
int api_start_session(struct kiln_req *req, struct kiln_res *res, struct kiln_session_user *u);
/* The answer of every way in once its session started: 200 with the
 * session user, as /api/v1/me shows it. */
void api_signed_in(struct kiln_req *req, struct kiln_res *res, const struct kiln_session_user *u);

/* accounts.c: email and password (docs/AUTHENTICATION.md) */
#define API_ACCOUNT_NAME_MAX 255         /* sign-up's name, in characters */
#define API_EMAIL_CODE_MAX 16            /* what /auth/email/verify reads as a code */
void api_password_register(struct kiln_req *req, struct kiln_res *res);
void api_password_login(struct kiln_req *req, struct kiln_res *res);
void api_password_verify(struct kiln_req *req, struct kiln_res *res);
void api_password_change(struct kiln_req *req, struct kiln_res *res);
void api_password_reset(struct kiln_req *req, struct kiln_res *res);
void api_password_reset_confirm(struct kiln_req *req, struct kiln_res *res);
void api_email_code(struct kiln_req *req, struct kiln_res *res);
/* factors.c: TOTP and the second step (docs/AUTHENTICATION.md) */
void api_totp_show(struct kiln_req *req, struct kiln_res *res);
void api_totp_enrol(struct kiln_req *req, struct kiln_res *res);
void api_totp_confirm(struct kiln_req *req, struct kiln_res *res);
void api_totp_disable(struct kiln_req *req, struct kiln_res *res);
void api_mfa_verify(struct kiln_req *req, struct kiln_res *res);
void kiln_factors_init(const struct kiln_config *cfg);
/* passkeys.c: WebAuthn ceremonies (docs/AUTHENTICATION.md) */
#define API_PASSKEY_NAME_MAX 100         /* a passkey's name, in bytes */
void api_passkeys_options(struct kiln_req *req, struct kiln_res *res);
void api_passkeys_create(struct kiln_req *req, struct kiln_res *res);
void api_passkeys_list(struct kiln_req *req, struct kiln_res *res);
void api_passkeys_delete(struct kiln_req *req, struct kiln_res *res);
void api_passkey_login_options(struct kiln_req *req, struct kiln_res *res);
void api_passkey_login(struct kiln_req *req, struct kiln_res *res);
void kiln_passkeys_init(const struct kiln_config *cfg);
void api_test_passkeys_page(struct kiln_req *req, struct kiln_res *res);
/* After a first factor (method "password", "email") proved user: when the
 * user has a confirmed second factor, answer 202 mfa_required (a pending
 * sign-in for POST /auth/mfa) and return 1; also 1 after answering an
 * error; 0 when no second step is needed (start the session). */
int api_mfa_required(struct kiln_req *req, struct kiln_res *res, const char *user,
                     const char *method, const char *provider_uid);
void api_email_verify(struct kiln_req *req, struct kiln_res *res);
/* The password rules, the mailer and the mail job kind; before the jobs
 * start. */
struct kiln_config;
void kiln_accounts_init(const struct kiln_config *cfg);
void api_me(struct kiln_req *req, struct kiln_res *res);
void api_test_protected(struct kiln_req *req, struct kiln_res *res);
void api_test_jobs(struct kiln_req *req, struct kiln_res *res);
void api_test_jobs_stats(struct kiln_req *req, struct kiln_res *res);

/* Webhooks (webhooks.c). */
void api_webhooks_create(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_list(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_show(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_update(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_delete(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_rotate(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_test(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_deliveries(struct kiln_req *req, struct kiln_res *res);
void api_webhooks_retry(struct kiln_req *req, struct kiln_res *res);

/*
 * sessions.c: the user's sessions (docs/AUTHENTICATION.md, Sessions).
 * api_sessions_end_all ends every session of user_id but keep_sid (NULL:
 * every one, as a password reset must), each with what a logout owes: its
 * event streams closed on every instance and an audit row
 * ("session_ended", "session/<public id>: <why>"). *ended (may be NULL)
 * counts them. 0, or a kv error to answer through kiln_res_fail ("Session
 * store"); what was ended by then stays ended.
 */
void api_sessions_list(struct kiln_req *req, struct kiln_res *res);
void api_sessions_delete(struct kiln_req *req, struct kiln_res *res);
void api_sessions_delete_others(struct kiln_req *req, struct kiln_res *res);
int api_sessions_end_all(struct kiln_req *req, const char *user_id, const char *keep_sid,
                         const char *why, size_t *ended);

/* profile.c */
void api_profile(struct kiln_req *req, struct kiln_res *res);
void api_dashboard(struct kiln_req *req, struct kiln_res *res);

/*
 * uploads.c. api_uploads_setup reads UPLOADS_* and AWS_REGION through e at
 * start (problems reported through e), on the main thread before any
 * request; api_uploads_free at exit.
 */
void api_uploads_setup(struct kiln_env_reader *e);
void api_uploads_free(void);
void api_uploads_presign(struct kiln_req *req, struct kiln_res *res);
void api_uploads_list(struct kiln_req *req, struct kiln_res *res);
void api_uploads_types(struct kiln_req *req, struct kiln_res *res);
void api_uploads_show(struct kiln_req *req, struct kiln_res *res);
void api_uploads_download(struct kiln_req *req, struct kiln_res *res);
void api_uploads_delete(struct kiln_req *req, struct kiln_res *res);

#endif
