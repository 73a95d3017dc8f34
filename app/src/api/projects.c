/*
 * Projects (API.md, protected routes), built like notes.c: the user from
 * the session, a non-UUID id answered 404 before any query, one statement
 * scoped to the user, one function from row to JSON.
 *
 * A project's page carries its tasks, oldest first (the order they were
 * written down in); deleting a project deletes its tasks through the
 * foreign key's ON DELETE CASCADE, in the same statement.
 */
#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "core/uuid.h"

#define NAME_MAX_CHARS 120
#define DESCRIPTION_MAX 10000

#define PROJECT_COLUMNS "id, name, description, archived, inserted_at, updated_at"

static const char NOT_FOUND[] = "project_not_found";
static const char NOT_FOUND_MSG[] = "Project not found";

/* One row of PROJECT_COLUMNS as API.md's project. */
static json_t *project_json(const struct kiln_db_rows *r, size_t i)
{
    bool archived = false;
    kiln_db_bool(r, i, 3, &archived);
    return json_pack("{s:o, s:o, s:o, s:b, s:o, s:o}", "id", res_text(r, i, 0), "name",
                     res_text(r, i, 1), "description", res_text(r, i, 2), "archived",
                     archived, "inserted_at", res_time(r, i, 4), "updated_at",
                     res_time(r, i, 5));
}

static void answer_project(struct kiln_req *req, struct kiln_res *res, int status,
                           const struct kiln_db_rows *rows)
{
    kiln_res_json(req, res, status, json_pack("{s:o}", "data", project_json(rows, 0)));
}

void api_projects_list(struct kiln_req *req, struct kiln_res *res)
{
    /* No paging: API.md's answer is the bare list, as the original's. */
    kiln_str p[1] = { kiln_str_c(res_user_id(req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT " PROJECT_COLUMNS " FROM projects WHERE user_id = $1 "
                            "ORDER BY inserted_at DESC, id DESC",
                            p, 1, &rows);
    if (err) {
        res_store_error(req, res, err, "projects list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < rows.nrows; i++)
        json_array_append_new(data, project_json(&rows, i));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}

void api_projects_show(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_db_rows project, tasks;
    if (!res_fetch_owned(req, res, "projects", PROJECT_COLUMNS, NOT_FOUND, NOT_FOUND_MSG,
                         &project))
        return;
    kiln_str p[2] = { kiln_db_text(&project, 0, 0), kiln_str_c(res_user_id(req)) };
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT " TASK_COLUMNS " FROM tasks WHERE project_id = $1 AND "
                            "user_id = $2 ORDER BY inserted_at, id",
                            p, 2, &tasks);
    if (err) {
        res_store_error(req, res, err, "projects show");
        return;
    }
    json_t *data = project_json(&project, 0), *list = json_array();
    for (size_t i = 0; i < tasks.nrows; i++)
        json_array_append_new(list, api_task_json(&tasks, i));
    json_object_set_new(data, "tasks", list);
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}

void api_projects_create(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors e = { 0 };
    const char *name = NULL, *description = NULL;
    bool archived = false;
    if (!json_object_get(in, "name"))
        res_error(&e, "name", "can't be blank");
    res_string(in, "name", false, 1, NAME_MAX_CHARS, &e, &name);
    res_string(in, "description", true, 0, DESCRIPTION_MAX, &e, &description);
    /* Checked as on update: a project may be created archived. */
    res_bool(in, "archived", &e, &archived);
    if (res_errors_answer(req, res, &e)) {
        json_decref(in);
        return;
    }
    char id[KILN_UUID_LEN + 1];
    kiln_uuid_v4(id);
    const char *now = res_now(req->arena);
    /* description stays NULL when not given: "none" differs from "". */
    kiln_str p[7] = { kiln_str_c(id), kiln_str_c(res_user_id(req)), kiln_str_c(name),
                      description ? kiln_str_c(description) : KILN_STR_NULL,
                      kiln_str_c(now), kiln_str_c(now), kiln_str_c(archived ? "1" : "0") };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "INSERT INTO projects (id, user_id, name, description, archived, "
                            "inserted_at, updated_at) VALUES ($1, $2, $3, $4, $7, $5, $6) "
                            "RETURNING " PROJECT_COLUMNS,
                            p, 7, &rows);
    json_decref(in); /* name and description point into it */
    if (err) {
        res_store_error(req, res, err, "projects create");
        return;
    }
    answer_project(req, res, 201, &rows);
}

void api_projects_update(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = res_id(req, res, NOT_FOUND, NOT_FOUND_MSG);
    if (!id)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors e = { 0 };
    const char *name = NULL, *description = NULL;
    bool archived = false;
    res_string(in, "name", false, 1, NAME_MAX_CHARS, &e, &name);
    bool has_description = res_string(in, "description", true, 0, DESCRIPTION_MAX, &e,
                                      &description);
    bool has_archived = res_bool(in, "archived", &e, &archived);
    if (res_errors_answer(req, res, &e)) {
        json_decref(in);
        return;
    }
    /* An absent field ($n NULL) keeps its value. description may be set to
     * NULL, so a flag ($5) rather than NULL says whether to touch it. */
    kiln_str p[7] = { kiln_str_c(id), kiln_str_c(res_user_id(req)),
                      name ? kiln_str_c(name) : KILN_STR_NULL,
                      description ? kiln_str_c(description) : KILN_STR_NULL,
                      kiln_str_c(has_description ? "1" : "0"),
                      has_archived ? kiln_str_c(archived ? "1" : "0") : KILN_STR_NULL,
                      kiln_str_c(res_now(req->arena)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "UPDATE projects SET name = COALESCE($3, name), "
                            "description = CASE WHEN CAST($5 AS TEXT) = '1' THEN $4 "
                            "ELSE description END, "
                            "archived = COALESCE($6, archived), updated_at = $7 "
                            "WHERE id = $1 AND user_id = $2 RETURNING " PROJECT_COLUMNS,
                            p, 7, &rows);
    json_decref(in);
    if (err)
        res_store_error(req, res, err, "projects update");
    else if (rows.nrows == 0)
        res_not_found(req, res, NOT_FOUND, NOT_FOUND_MSG);
    else
        answer_project(req, res, 200, &rows);
}

void api_projects_delete(struct kiln_req *req, struct kiln_res *res)
{
    /* Its tasks go with it (ON DELETE CASCADE). */
    res_delete_owned(req, res, "projects", NOT_FOUND, NOT_FOUND_MSG);
}
