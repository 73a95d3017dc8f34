/*
 * THE route table: every route Kiln serves, in one place: the handlers
 * written by hand below, and between them the routes of every declared
 * resource (app/src/api/resources/, served by engine.c), which are derived
 * from the declarations and never written here. To add a resource, run
 * `kiln gen resource` (docs/RESOURCES.md); to add a plain endpoint, add a
 * line here and its handler.
 *
 *   method, scope, path, guard, handler, flags
 *
 * scope KILN_SCOPE_API mounts the route at /api/v1<path> (canonical) and at
 * /api<path> (the original's compatibility alias). KILN_ROUTE_LOOP answers on
 * the event loop and is only for handlers that never wait at all;
 * KILN_ROUTE_BLOCKING is for handlers that block their thread (libcurl,
 * sleep) and always run on the worker pool; everything else runs on a fiber
 * of the connection's loop when the loops have stores (PostgreSQL), and on
 * the worker pool otherwise (http/server.h).
 */
#include <pthread.h>
#include <string.h>

#include "api/api.h"
#include "api/engine.h"
#include "auth/guard.h"
#include "core/alloc.h"

static const struct kiln_route before[] = {
    /* Public: service info and health (API.md, Public routes). */
    { KILN_GET, KILN_SCOPE_ROOT, "/", NULL, api_root, KILN_ROUTE_LOOP, NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/livez", NULL, api_livez, KILN_ROUTE_LOOP, NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/readyz", NULL, api_readyz, 0, NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/healthz", NULL, api_healthz, 0, NULL },
    /* The OpenAPI document of this table, and its page (openapi.c). */
    { KILN_GET, KILN_SCOPE_API, "/openapi", NULL, api_openapi, KILN_ROUTE_LOOP, NULL },
    { KILN_GET, KILN_SCOPE_API, "/docs", NULL, api_docs, KILN_ROUTE_LOOP, NULL },

    /* Login and logout (API.md; docs/AUTHENTICATION.md). logout comes
     * before /auth/:provider, which would match it too. */
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/logout", kiln_guard_public, api_auth_logout, 0, NULL },
    { KILN_DELETE, KILN_SCOPE_ROOT, "/auth/logout", kiln_guard_public, api_auth_logout, 0, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/dev/login", kiln_guard_public, api_dev_login, 0, NULL },
    /* Email and password (accounts.c): hashing blocks, so the worker
     * pool runs them. Before /auth/:provider, which would match them. */
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/password/register", kiln_guard_public,
      api_password_register, KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/password/login", kiln_guard_public, api_password_login,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/password/verify", kiln_guard_public, api_password_verify,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/password/verify", kiln_guard_public,
      api_password_verify, KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/password/change", kiln_guard_session,
      api_password_change, KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/password/reset", kiln_guard_public, api_password_reset,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/password/reset/confirm", kiln_guard_public,
      api_password_reset_confirm, KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/passkey/options", kiln_guard_public,
      api_passkey_login_options, 0, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/passkey/login", kiln_guard_public, api_passkey_login,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/mfa", kiln_guard_public, api_mfa_verify,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/email/code", kiln_guard_public, api_email_code,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/email/verify", kiln_guard_public, api_email_verify,
      KILN_ROUTE_BLOCKING, NULL },
    /* These fetch the provider's discovery document, keys and tokens with
     * libcurl, which blocks: the worker pool runs them. */
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/:provider", kiln_guard_public, api_auth_request,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/:provider/callback", kiln_guard_public,
      api_auth_callback, KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/:provider/callback", kiln_guard_public,
      api_auth_callback, KILN_ROUTE_BLOCKING, NULL },

    /* Protected: a session is required (cookie or Bearer). */
    { KILN_GET, KILN_SCOPE_API, "/me", kiln_guard_session, api_me, 0, NULL },
    /* The second factor (factors.c). */
    { KILN_GET, KILN_SCOPE_API, "/me/totp", kiln_guard_session, api_totp_show, 0, NULL },
    { KILN_POST, KILN_SCOPE_API, "/me/totp", kiln_guard_session, api_totp_enrol,
      KILN_ROUTE_BLOCKING, NULL }, /* the QR code: libqrencode loads, encodes */
    { KILN_POST, KILN_SCOPE_API, "/me/totp/confirm", kiln_guard_session, api_totp_confirm, 0,
      NULL },
    { KILN_POST, KILN_SCOPE_API, "/me/totp/disable", kiln_guard_session, api_totp_disable, 0,
      NULL },
    /* Passkeys (passkeys.c): the checks load libcbor and verify
     * signatures, so registration and sign-in run on the workers. */
    { KILN_POST, KILN_SCOPE_API, "/me/passkeys/options", kiln_guard_session,
      api_passkeys_options, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/me/passkeys", kiln_guard_session, api_passkeys_list, 0, NULL },
    { KILN_POST, KILN_SCOPE_API, "/me/passkeys", kiln_guard_session, api_passkeys_create,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/me/passkeys/:id", kiln_guard_session, api_passkeys_delete, 0,
      NULL },
    /* The user's sessions, and ending them (sessions.c). */
    { KILN_GET, KILN_SCOPE_API, "/sessions", kiln_guard_session, api_sessions_list, 0, NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/sessions", kiln_guard_session, api_sessions_delete_others, 0,
      NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/sessions/:id", kiln_guard_session, api_sessions_delete, 0,
      NULL },

    /* The user's profile and dashboard (profile.c). */
    { KILN_GET, KILN_SCOPE_API, "/profile", kiln_guard_session, api_profile, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/dashboard", kiln_guard_session, api_dashboard, 0, NULL },

    /* The change feed and the audit log (events.c). The stream's handler
     * only finds where to start; the open stream then holds no fiber or
     * worker (http/stream.h). */
    { KILN_GET, KILN_SCOPE_API, "/events", kiln_guard_session, api_events_stream, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/audit", kiln_guard_session, api_audit_list, 0, NULL },

    /* Webhooks (webhooks.c; docs/WEBHOOKS.md): the user's endpoints. */
    { KILN_POST, KILN_SCOPE_API, "/webhooks", kiln_guard_session, api_webhooks_create, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/webhooks", kiln_guard_session, api_webhooks_list, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/webhooks/:id", kiln_guard_session, api_webhooks_show, 0, NULL },
    { KILN_PATCH, KILN_SCOPE_API, "/webhooks/:id", kiln_guard_session, api_webhooks_update, 0,
      NULL },
    { KILN_PUT, KILN_SCOPE_API, "/webhooks/:id", kiln_guard_session, api_webhooks_update, 0,
      NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/webhooks/:id", kiln_guard_session, api_webhooks_delete, 0,
      NULL },
    { KILN_POST, KILN_SCOPE_API, "/webhooks/:id/test", kiln_guard_session, api_webhooks_test, 0,
      NULL },
    { KILN_POST, KILN_SCOPE_API, "/webhooks/:id/rotate-secret", kiln_guard_session,
      api_webhooks_rotate, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/webhooks/:id/deliveries", kiln_guard_session,
      api_webhooks_deliveries, 0, NULL },
    { KILN_POST, KILN_SCOPE_API, "/webhooks/:id/deliveries/:delivery_id/retry",
      kiln_guard_session, api_webhooks_retry, 0, NULL },
};

/* After the declared resources' routes (engine.c), which come between. */
static const struct kiln_route after[] = {
    /* Uploads (uploads.c): files in S3. A key (users/<user id>/uploads/
     * <name>) travels either as one segment with its slashes encoded, as
     * the original's clients send it (*key takes %2F), or as the path
     * itself. Every route that calls S3 (or may fetch credentials) blocks:
     * the worker pool runs it. The types route comes before the *key
     * routes, which would match it too. */
    { KILN_GET, KILN_SCOPE_API, "/uploads", kiln_guard_session, api_uploads_list,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_API, "/uploads/presign", kiln_guard_session, api_uploads_presign,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_GET, KILN_SCOPE_API, "/uploads/types", kiln_guard_session, api_uploads_types, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/uploads/*key", kiln_guard_session, api_uploads_show,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/uploads/*key", kiln_guard_session, api_uploads_delete,
      KILN_ROUTE_BLOCKING, NULL },
    { KILN_GET, KILN_SCOPE_API, "/uploads/*key/download", kiln_guard_session,
      api_uploads_download, KILN_ROUTE_BLOCKING, NULL },
    { KILN_GET, KILN_SCOPE_API, "/uploads/users/:user_id/uploads/:name", kiln_guard_session,
      api_uploads_show, KILN_ROUTE_BLOCKING, NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/uploads/users/:user_id/uploads/:name", kiln_guard_session,
      api_uploads_delete, KILN_ROUTE_BLOCKING, NULL },
    { KILN_GET, KILN_SCOPE_API, "/uploads/users/:user_id/uploads/:name/download",
      kiln_guard_session, api_uploads_download, KILN_ROUTE_BLOCKING, NULL },

    /* Test support: answer only when KILN_ENV=test (404 otherwise). */
    { KILN_GET, KILN_SCOPE_ROOT, "/_test/sleep", NULL, api_test_sleep,
      KILN_ROUTE_INTERNAL | KILN_ROUTE_BLOCKING, NULL },
    { KILN_POST, KILN_SCOPE_API, "/_test/protected", kiln_guard_session, api_test_protected,
      KILN_ROUTE_INTERNAL, NULL },
    { KILN_POST, KILN_SCOPE_ROOT, "/_test/jobs", NULL, api_test_jobs, KILN_ROUTE_INTERNAL,
      NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/_test/jobs", NULL, api_test_jobs_stats, KILN_ROUTE_INTERNAL,
      NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/_test/passkeys", NULL, api_test_passkeys_page,
      KILN_ROUTE_INTERNAL, NULL },
};

static struct kiln_route *table;
static size_t table_len;

static void build(void)
{
    size_t nb = sizeof before / sizeof before[0], na = sizeof after / sizeof after[0];
    size_t nr = kiln_engine_routes(NULL, 0);
    table = kiln_calloc(nb + nr + na, sizeof *table);
    memcpy(table, before, sizeof before);
    kiln_engine_routes(table + nb, nr);
    memcpy(table + nb + nr, after, sizeof after);
    table_len = nb + nr + na;
}

const struct kiln_route *api_routes(size_t *n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build);
    *n = table_len;
    return table;
}
