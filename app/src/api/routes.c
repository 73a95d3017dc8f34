/*
 * THE route table: every route Kiln serves, in one place. To add an
 * endpoint, add a line here and a handler in a resource file.
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
#include "api/api.h"
#include "auth/guard.h"

const struct kiln_route kiln_routes[] = {
    /* Public: service info and health (API.md, Public routes). */
    { KILN_GET, KILN_SCOPE_ROOT, "/", NULL, api_root, KILN_ROUTE_LOOP },
    { KILN_GET, KILN_SCOPE_ROOT, "/livez", NULL, api_livez, KILN_ROUTE_LOOP },
    { KILN_GET, KILN_SCOPE_ROOT, "/readyz", NULL, api_readyz, 0 },
    { KILN_GET, KILN_SCOPE_ROOT, "/healthz", NULL, api_healthz, 0 },
    /* The OpenAPI document of this table, and its page (openapi.c). */
    { KILN_GET, KILN_SCOPE_API, "/openapi", NULL, api_openapi, KILN_ROUTE_LOOP },
    { KILN_GET, KILN_SCOPE_API, "/docs", NULL, api_docs, KILN_ROUTE_LOOP },

    /* Login and logout (API.md; docs/AUTHENTICATION.md). logout comes
     * before /auth/:provider, which would match it too. */
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/logout", kiln_guard_public, api_auth_logout, 0 },
    { KILN_DELETE, KILN_SCOPE_ROOT, "/auth/logout", kiln_guard_public, api_auth_logout, 0 },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/dev/login", kiln_guard_public, api_dev_login, 0 },
    /* These fetch the provider's discovery document, keys and tokens with
     * libcurl, which blocks: the worker pool runs them. */
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/:provider", kiln_guard_public, api_auth_request,
      KILN_ROUTE_BLOCKING },
    { KILN_GET, KILN_SCOPE_ROOT, "/auth/:provider/callback", kiln_guard_public,
      api_auth_callback, KILN_ROUTE_BLOCKING },
    { KILN_POST, KILN_SCOPE_ROOT, "/auth/:provider/callback", kiln_guard_public,
      api_auth_callback, KILN_ROUTE_BLOCKING },

    /* Protected: a session is required (cookie or Bearer). */
    { KILN_GET, KILN_SCOPE_API, "/me", kiln_guard_session, api_me, 0 },

    /* Notes (notes.c; docs/RESOURCES.md uses them as the example). */
    { KILN_GET, KILN_SCOPE_API, "/notes", kiln_guard_session, api_notes_list, 0 },
    { KILN_POST, KILN_SCOPE_API, "/notes", kiln_guard_session, api_notes_create, 0 },
    { KILN_GET, KILN_SCOPE_API, "/notes/:id", kiln_guard_session, api_notes_show, 0 },
    { KILN_PUT, KILN_SCOPE_API, "/notes/:id", kiln_guard_session, api_notes_update, 0 },
    { KILN_PATCH, KILN_SCOPE_API, "/notes/:id", kiln_guard_session, api_notes_update, 0 },
    { KILN_DELETE, KILN_SCOPE_API, "/notes/:id", kiln_guard_session, api_notes_delete, 0 },
    { KILN_POST, KILN_SCOPE_API, "/notes/:id/archive", kiln_guard_session, api_notes_archive,
      0 },
    { KILN_POST, KILN_SCOPE_API, "/notes/:id/unarchive", kiln_guard_session,
      api_notes_unarchive, 0 },

    /* The user's profile and dashboard (profile.c), projects (projects.c)
     * and their tasks (tasks.c). */
    { KILN_GET, KILN_SCOPE_API, "/profile", kiln_guard_session, api_profile, 0 },
    { KILN_GET, KILN_SCOPE_API, "/dashboard", kiln_guard_session, api_dashboard, 0 },
    { KILN_GET, KILN_SCOPE_API, "/projects", kiln_guard_session, api_projects_list, 0 },
    { KILN_POST, KILN_SCOPE_API, "/projects", kiln_guard_session, api_projects_create, 0 },
    { KILN_GET, KILN_SCOPE_API, "/projects/:id", kiln_guard_session, api_projects_show, 0 },
    { KILN_PUT, KILN_SCOPE_API, "/projects/:id", kiln_guard_session, api_projects_update, 0 },
    { KILN_PATCH, KILN_SCOPE_API, "/projects/:id", kiln_guard_session, api_projects_update,
      0 },
    { KILN_DELETE, KILN_SCOPE_API, "/projects/:id", kiln_guard_session, api_projects_delete,
      0 },
    { KILN_GET, KILN_SCOPE_API, "/tasks", kiln_guard_session, api_tasks_list, 0 },
    { KILN_POST, KILN_SCOPE_API, "/tasks", kiln_guard_session, api_tasks_create, 0 },
    { KILN_GET, KILN_SCOPE_API, "/tasks/:id", kiln_guard_session, api_tasks_show, 0 },
    { KILN_PUT, KILN_SCOPE_API, "/tasks/:id", kiln_guard_session, api_tasks_update, 0 },
    { KILN_PATCH, KILN_SCOPE_API, "/tasks/:id", kiln_guard_session, api_tasks_update, 0 },
    { KILN_DELETE, KILN_SCOPE_API, "/tasks/:id", kiln_guard_session, api_tasks_delete, 0 },

    /* Uploads (uploads.c): files in S3. A key (users/<user id>/uploads/
     * <name>) travels either as one segment with its slashes encoded, as
     * the original's clients send it (*key takes %2F), or as the path
     * itself. Every route that calls S3 (or may fetch credentials) blocks:
     * the worker pool runs it. The types route comes before the *key
     * routes, which would match it too. */
    { KILN_GET, KILN_SCOPE_API, "/uploads", kiln_guard_session, api_uploads_list,
      KILN_ROUTE_BLOCKING },
    { KILN_POST, KILN_SCOPE_API, "/uploads/presign", kiln_guard_session, api_uploads_presign,
      KILN_ROUTE_BLOCKING },
    { KILN_GET, KILN_SCOPE_API, "/uploads/types", kiln_guard_session, api_uploads_types, 0 },
    { KILN_GET, KILN_SCOPE_API, "/uploads/*key", kiln_guard_session, api_uploads_show,
      KILN_ROUTE_BLOCKING },
    { KILN_DELETE, KILN_SCOPE_API, "/uploads/*key", kiln_guard_session, api_uploads_delete,
      KILN_ROUTE_BLOCKING },
    { KILN_GET, KILN_SCOPE_API, "/uploads/*key/download", kiln_guard_session,
      api_uploads_download, KILN_ROUTE_BLOCKING },
    { KILN_GET, KILN_SCOPE_API, "/uploads/users/:user_id/uploads/:name", kiln_guard_session,
      api_uploads_show, KILN_ROUTE_BLOCKING },
    { KILN_DELETE, KILN_SCOPE_API, "/uploads/users/:user_id/uploads/:name", kiln_guard_session,
      api_uploads_delete, KILN_ROUTE_BLOCKING },
    { KILN_GET, KILN_SCOPE_API, "/uploads/users/:user_id/uploads/:name/download",
      kiln_guard_session, api_uploads_download, KILN_ROUTE_BLOCKING },

    /* Test support: answer only when KILN_ENV=test (404 otherwise). */
    { KILN_GET, KILN_SCOPE_ROOT, "/_test/sleep", NULL, api_test_sleep,
      KILN_ROUTE_INTERNAL | KILN_ROUTE_BLOCKING },
    { KILN_POST, KILN_SCOPE_API, "/_test/protected", kiln_guard_session, api_test_protected,
      KILN_ROUTE_INTERNAL },
};

const size_t kiln_routes_count = sizeof kiln_routes / sizeof kiln_routes[0];
