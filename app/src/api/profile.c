/*
 * The signed-in user's own pages (API.md, protected routes): the profile,
 * made from the session user alone, and the dashboard, which adds the
 * counts and latest of the user's notes.
 *
 * Both read who the user is from the session (what login stored, what /me
 * shows), not from the users table: the names match /me exactly, and the
 * profile costs no query.
 */
#include "api/api.h"
#include "api/app.h"
#include "api/declare.h"
#include "api/resource.h"
#include "auth/guard.h"

/* The dashboard shows notes in the notes declaration's shape. */
extern const struct kiln_resource kiln_resource_notes;

#define RECENT_DEFAULT API_DASHBOARD_RECENT_DEFAULT
#define RECENT_MAX API_DASHBOARD_RECENT_MAX

/* The session user as a JSON object, or NULL after a 500 (the guard only
 * loads sessions whose user parses, so this is a broken invariant). */
static json_t *session_user(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str text = kiln_req_session(req)->user_json;
    json_t *user = json_loadb(text.p, text.len, 0, NULL);
    if (!json_is_object(user)) {
        json_decref(user);
        kiln_res_error(req, res, 500, "internal_error", "Internal server error", NULL);
        return NULL;
    }
    return user;
}

/* A field of the session user; JSON null when the provider gave none. */
static json_t *user_field(json_t *user, const char *key)
{
    json_t *v = json_object_get(user, key);
    return v ? v : json_null();
}

void api_profile(struct kiln_req *req, struct kiln_res *res)
{
    json_t *u = session_user(req, res);
    if (!u)
        return;
    /* API.md's names: the provider's id is the profile's id. */
    json_t *data = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O}", "id",
                             user_field(u, "provider_uid"), "email", user_field(u, "email"),
                             "name", user_field(u, "name"), "first_name",
                             user_field(u, "first_name"), "last_name",
                             user_field(u, "last_name"), "avatar_url", user_field(u, "image"),
                             "auth_provider", user_field(u, "provider"));
    json_decref(u);
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}

/* active_notes and archived_notes of the user, in one pass over the index. */
static int note_counts(struct kiln_req *req, json_int_t *active, json_int_t *archived)
{
    kiln_str p[1] = { kiln_str_c(res_user_id(req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT archived, count(*) FROM notes WHERE user_id = $1 "
                            "GROUP BY archived",
                            p, 1, &rows);
    *active = *archived = 0;
    for (size_t i = 0; !err && i < rows.nrows; i++) {
        bool is_archived = false;
        int64_t n = 0;
        kiln_db_bool(&rows, i, 0, &is_archived);
        kiln_db_int64(&rows, i, 1, &n);
        *(is_archived ? archived : active) = (json_int_t)n;
    }
    return err;
}

/* The latest active notes, newest first, as the notes list orders them:
 * archived notes are put away, not recent work. */
static int recent_notes(struct kiln_req *req, unsigned limit, json_t **out)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%u", limit);
    kiln_str p[2] = { kiln_str_c(res_user_id(req)), kiln_str_c(lim) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "SELECT %s FROM notes WHERE user_id = $1 AND "
                                               "archived = '0' ORDER BY inserted_at DESC, id "
                                               "DESC LIMIT $2",
                                               kiln_resource_columns(&kiln_resource_notes)),
                            p, 2, &rows);
    if (err)
        return err;
    *out = json_array();
    for (size_t i = 0; i < rows.nrows; i++)
        json_array_append_new(*out, kiln_resource_json(&kiln_resource_notes, &rows, i));
    return 0;
}

void api_dashboard(struct kiln_req *req, struct kiln_res *res)
{
    unsigned limit;
    if (!res_query_uint(req, res, "recent_limit", RECENT_DEFAULT, 1, RECENT_MAX, &limit))
        return;
    json_int_t active, archived;
    json_t *recent = NULL;
    int err = note_counts(req, &active, &archived);
    if (!err)
        err = recent_notes(req, limit, &recent);
    if (err) {
        res_store_error(req, res, err, "dashboard");
        return;
    }
    json_t *u = session_user(req, res);
    if (!u) {
        json_decref(recent);
        return;
    }
    /* user.id is the user's own id, the one every resource belongs to. */
    json_t *data = json_pack("{s:{s:s, s:O, s:O}, s:{s:I, s:I, s:o}}", "user", "id",
                             res_user_id(req), "name", user_field(u, "name"), "email",
                             user_field(u, "email"), "summary", "active_notes", active,
                             "archived_notes", archived, "recent_notes", recent);
    json_decref(u);
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}
