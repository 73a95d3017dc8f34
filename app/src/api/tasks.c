/*
 * Tasks (API.md, protected routes), built like notes.c. A task belongs to
 * a user and to one of that user's projects.
 *
 * The one decision to know: a task only ever enters a project of its own
 * user, and that is checked in the same statement that writes it (INSERT
 * ... SELECT FROM projects, UPDATE ... WHERE EXISTS), so that a project
 * deleted or never owned cannot slip in between a check and the write.
 * Another user's project answers 404 project_not_found, exactly like one
 * that does not exist. On PostgreSQL the project row is read FOR KEY
 * SHARE: a project being deleted at that moment makes the statement wait
 * for the delete, then see no project (404), instead of passing the check
 * and failing the foreign key at commit (a 500). SQLite has one writer at
 * a time, so nothing can come between the read and the write there.
 *
 * Lists: GET /tasks newest first, like every other top-level list;
 * GET /projects/:id shows its tasks oldest first (projects.c).
 */
#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "core/uuid.h"

#define TITLE_MAX 160
#define DETAILS_MAX 10000

static const char NOT_FOUND[] = "task_not_found";
static const char NOT_FOUND_MSG[] = "Task not found";
static const char PROJECT_NOT_FOUND[] = "project_not_found";
static const char PROJECT_NOT_FOUND_MSG[] = "Project not found";

/* Shared through api.h: a project's page shows its tasks in this shape. */
json_t *api_task_json(const struct kiln_db_rows *r, size_t i)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", res_text(r, i, 0),
                     "project_id", res_text(r, i, 1), "title", res_text(r, i, 2), "details",
                     res_text(r, i, 3), "status", res_text(r, i, 4), "due_date",
                     res_text(r, i, 5), "inserted_at", res_time(r, i, 6), "updated_at",
                     res_time(r, i, 7));
}

static void answer_task(struct kiln_req *req, struct kiln_res *res, int status,
                        const struct kiln_db_rows *rows)
{
    kiln_res_json(req, res, status, json_pack("{s:o}", "data", api_task_json(rows, 0)));
}

/* ---- validation ---- */

static bool status_valid(kiln_str s)
{
    return kiln_str_eq_c(s, "todo") || kiln_str_eq_c(s, "in_progress") ||
           kiln_str_eq_c(s, "done");
}

/* due_date, with res_string's contract: true when present and valid (*out
 * NULL for JSON null), false when absent or invalid ("is invalid"). */
static bool due_date_field(json_t *in, struct res_errors *e, const char **out)
{
    json_t *v = json_object_get(in, "due_date");
    *out = NULL;
    if (!v)
        return false;
    if (json_is_null(v))
        return true;
    kiln_str text = { json_string_value(v), json_string_length(v) };
    if (json_is_string(v) && res_calendar_date(text)) {
        *out = json_string_value(v);
        return true;
    }
    res_error(e, "due_date", "is invalid");
    return false;
}

/* status: a string of the three API.md names. */
static void status_field(json_t *in, struct res_errors *e, const char **out)
{
    if (res_string(in, "status", false, 1, SIZE_MAX, e, out) && !status_valid(kiln_str_c(*out))) {
        res_error(e, "status", "is invalid");
        *out = NULL;
    }
}

/* What a body says about a task; NULL pointers for what it leaves out. */
struct task_input {
    const char *project_id;   /* any string; checked as a UUID afterwards */
    const char *title, *details, *status, *due_date;
    bool has_details, has_due_date; /* present, maybe null */
};

/* The fields shared by create and update, each checked when present. */
static void task_fields(json_t *in, struct res_errors *e, struct task_input *t)
{
    res_string(in, "project_id", false, 0, SIZE_MAX, e, &t->project_id);
    res_string(in, "title", false, 1, TITLE_MAX, e, &t->title);
    t->has_details = res_string(in, "details", true, 0, DETAILS_MAX, e, &t->details);
    status_field(in, e, &t->status);
    t->has_due_date = due_date_field(in, e, &t->due_date);
}

/* ---- handlers ---- */

void api_tasks_list(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str project = KILN_STR_NULL, status = KILN_STR_NULL;
    const char *project_id = NULL;
    /* A malformed filter is the client's mistake (400); a well-formed id of
     * no project of this user simply matches no task. */
    if (kiln_req_query(req, "project_id", &project) && project.len &&
        !(project_id = res_uuid(req->arena, project))) {
        kiln_res_error(req, res, 400, "invalid_request", "project_id must be a UUID", NULL);
        return;
    }
    if (kiln_req_query(req, "status", &status) && status.len && !status_valid(status)) {
        kiln_res_error(req, res, 400, "invalid_request",
                       "status must be one of todo, in_progress, done", NULL);
        return;
    }
    /* Only the filters given go into the WHERE, so that each combination
     * uses tasks_user_project_status_idx on both databases. */
    kiln_str p[3] = { kiln_str_c(res_user_id(req)) };
    size_t n = 1;
    const char *where = "user_id = $1";
    if (project_id) {
        p[n++] = kiln_str_c(project_id);
        where = kiln_arena_sprintf(req->arena, "%s AND project_id = $%zu", where, n);
    }
    if (status.len) {
        p[n++] = status;
        where = kiln_arena_sprintf(req->arena, "%s AND status = $%zu", where, n);
    }
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "SELECT " TASK_COLUMNS " FROM tasks WHERE %s "
                                               "ORDER BY inserted_at DESC, id DESC",
                                               where),
                            p, n, &rows);
    if (err) {
        res_store_error(req, res, err, "tasks list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < rows.nrows; i++)
        json_array_append_new(data, api_task_json(&rows, i));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}

void api_tasks_show(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_db_rows rows;
    if (res_fetch_owned(req, res, "tasks", TASK_COLUMNS, NOT_FOUND, NOT_FOUND_MSG, &rows))
        answer_task(req, res, 200, &rows);
}

/* The lock that holds a project still while a task enters it (see the top
 * of this file); SQLite has no row locks and needs none. */
static const char *key_share(struct kiln_req *req)
{
    return kiln_db_dialect(app_db(req)) == KILN_DB_POSTGRES ? " FOR KEY SHARE" : "";
}

/* The INSERT takes the project from the user's own projects: no row, no
 * task, and the answer is 404 project_not_found. */
static void create(struct kiln_req *req, struct kiln_res *res, const char *project_id,
                   const struct task_input *t)
{
    char id[KILN_UUID_LEN + 1];
    kiln_uuid_v4(id);
    const char *now = res_now(req->arena);
    kiln_str p[8] = { kiln_str_c(id), kiln_str_c(res_user_id(req)), kiln_str_c(project_id),
                      kiln_str_c(t->title),
                      t->details ? kiln_str_c(t->details) : KILN_STR_NULL,
                      kiln_str_c(t->status ? t->status : "todo"),
                      t->due_date ? kiln_str_c(t->due_date) : KILN_STR_NULL,
                      kiln_str_c(now) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "INSERT INTO tasks (id, user_id, project_id, "
                                               "title, details, status, due_date, inserted_at, "
                                               "updated_at) SELECT $1, $2, id, $4, $5, $6, $7, "
                                               "$8, $8 FROM projects WHERE id = $3 AND "
                                               "user_id = $2%s RETURNING " TASK_COLUMNS,
                                               key_share(req)),
                            p, 8, &rows);
    if (err)
        res_store_error(req, res, err, "tasks create");
    else if (rows.nrows == 0)
        res_not_found(req, res, PROJECT_NOT_FOUND, PROJECT_NOT_FOUND_MSG);
    else
        answer_task(req, res, 201, &rows);
}

void api_tasks_create(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    json_t *pid = json_object_get(in, "project_id");
    if (!pid || json_is_null(pid)) {
        json_decref(in);
        kiln_res_error(req, res, 400, "invalid_request", "project_id is required", NULL);
        return;
    }
    struct res_errors e = { 0 };
    struct task_input t = { 0 };
    if (!json_object_get(in, "title"))
        res_error(&e, "title", "can't be blank");
    task_fields(in, &e, &t);
    if (!res_errors_answer(req, res, &e)) {
        const char *project_id = res_uuid(req->arena, kiln_str_c(t.project_id));
        if (project_id)
            create(req, res, project_id, &t);
        else
            res_not_found(req, res, PROJECT_NOT_FOUND, PROJECT_NOT_FOUND_MSG);
    }
    json_decref(in); /* t's strings point into it */
}

/*
 * UPDATE with COALESCE: an absent field ($n NULL) keeps its value; details
 * and due_date may be set to NULL, so a flag says whether to touch them.
 * The EXISTS keeps the task in a project of its user: with no new project
 * ($3 NULL) it holds for the current one.
 */
static int update(struct kiln_req *req, const char *id, const char *project_id,
                  const struct task_input *t, struct kiln_db_rows *rows)
{
    kiln_str p[10] = { kiln_str_c(id), kiln_str_c(res_user_id(req)),
                       project_id ? kiln_str_c(project_id) : KILN_STR_NULL,
                       t->title ? kiln_str_c(t->title) : KILN_STR_NULL,
                       t->details ? kiln_str_c(t->details) : KILN_STR_NULL,
                       kiln_str_c(t->has_details ? "1" : "0"),
                       t->status ? kiln_str_c(t->status) : KILN_STR_NULL,
                       t->due_date ? kiln_str_c(t->due_date) : KILN_STR_NULL,
                       kiln_str_c(t->has_due_date ? "1" : "0"),
                       kiln_str_c(res_now(req->arena)) };
    return kiln_db_query(app_db(req), req->arena,
                         kiln_arena_sprintf(req->arena,
                         "UPDATE tasks SET project_id = COALESCE($3, project_id), "
                         "title = COALESCE($4, title), "
                         "details = CASE WHEN CAST($6 AS TEXT) = '1' THEN $5 "
                         "ELSE details END, "
                         "status = COALESCE($7, status), "
                         "due_date = CASE WHEN CAST($9 AS TEXT) = '1' THEN $8 "
                         "ELSE due_date END, "
                         "updated_at = $10 "
                         "WHERE id = $1 AND user_id = $2 AND EXISTS (SELECT 1 FROM projects "
                         "WHERE projects.id = COALESCE($3, tasks.project_id) AND "
                         "projects.user_id = $2%s) RETURNING " TASK_COLUMNS, key_share(req)),
                         p, 10, rows);
}

/* No row updated: the task is missing, or (only when a project was asked
 * for) the project is. The task in the path is named first. */
static void not_updated(struct kiln_req *req, struct kiln_res *res, const char *id,
                        bool project_asked)
{
    struct kiln_db_rows rows = { 0 };
    int err = 0;
    if (project_asked) {
        kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
        err = kiln_db_query(app_db(req), req->arena,
                            "SELECT 1 FROM tasks WHERE id = $1 AND user_id = $2", p, 2, &rows);
    }
    if (err)
        res_store_error(req, res, err, "tasks update");
    else if (rows.nrows)
        res_not_found(req, res, PROJECT_NOT_FOUND, PROJECT_NOT_FOUND_MSG);
    else
        res_not_found(req, res, NOT_FOUND, NOT_FOUND_MSG);
}

void api_tasks_update(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = res_id(req, res, NOT_FOUND, NOT_FOUND_MSG);
    if (!id)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors e = { 0 };
    struct task_input t = { 0 };
    task_fields(in, &e, &t);
    if (res_errors_answer(req, res, &e)) {
        json_decref(in);
        return;
    }
    bool project_asked = t.project_id != NULL;
    const char *project_id = project_asked ? res_uuid(req->arena, kiln_str_c(t.project_id))
                                           : NULL;
    struct kiln_db_rows rows = { 0 };
    int err = 0;
    /* A project_id that is no UUID names no project: not worth an UPDATE. */
    if (!project_asked || project_id)
        err = update(req, id, project_id, &t, &rows);
    json_decref(in);
    if (err)
        res_store_error(req, res, err, "tasks update");
    else if (rows.nrows == 0)
        not_updated(req, res, id, project_asked);
    else
        answer_task(req, res, 200, &rows);
}

void api_tasks_delete(struct kiln_req *req, struct kiln_res *res)
{
    res_delete_owned(req, res, "tasks", NOT_FOUND, NOT_FOUND_MSG);
}
