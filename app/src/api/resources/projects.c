/*
 * Projects (API.md, protected routes): a declaration and one hook. A
 * project's page carries its tasks, oldest first (the order they were
 * written down in); deleting a project deletes its tasks through the
 * foreign key's ON DELETE CASCADE, in the same statement
 * (app/migrations/<dialect>/0004_projects_tasks.sql).
 *
 * The list is the whole list, as a bare {"data": [...]}: the original's
 * contract, kept for its clients.
 */
#include "api/app.h"
#include "api/declare.h"
#include "api/resource.h"

extern const struct kiln_resource kiln_resource_tasks;

static const struct kiln_field fields[] = {
    { .name = "name", .type = KILN_TEXT, .flags = KILN_REQUIRED | KILN_SORT, .min_len = 1,
      .max_len = 120, .doc = "The project's name." },
    /* absent or null: NULL ("none" differs from "") */
    { .name = "description", .type = KILN_TEXT, .flags = KILN_NULLABLE, .max_len = 10000,
      .doc = "What the project is about." },
    { .name = "archived", .type = KILN_BOOLEAN, .flags = KILN_FILTER, .def = "0",
      .doc = "Whether the project is archived." },
};

/* GET /projects/:id adds "tasks": the project's tasks, oldest first, in
 * the tasks declaration's shape. */
static int project_tasks(struct kiln_req *req, const struct kiln_resource *r, const char *id,
                         kiln_buf *out)
{
    (void)r;
    const struct kiln_resource *tasks = &kiln_resource_tasks;
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "SELECT %s FROM tasks WHERE project_id = $1 AND "
                                               "user_id = $2 ORDER BY inserted_at, id",
                                               kiln_resource_columns(tasks)),
                            p, 2, &rows);
    if (err)
        return err;
    kiln_buf_append_c(out, ",\"tasks\":[");
    for (size_t i = 0; i < rows.nrows; i++) {
        if (i)
            kiln_buf_append_c(out, ",");
        kiln_resource_append_json(tasks, out, &rows, i);
    }
    kiln_buf_append_c(out, "]");
    return 0;
}

const struct kiln_resource kiln_resource_projects = {
    .name = "projects",
    .singular = "project",
    .fields = fields,
    .nfields = sizeof fields / sizeof fields[0],
    .owner = KILN_OWNER_USER,
    .not_found_code = "project_not_found",
    .not_found_message = "Project not found",
    .order = "inserted_at DESC",
    .show_extra = project_tasks,
    .show_extra_name = "tasks",
    .show_extra_of = "tasks",
    .doc = "A user's projects; each shows its tasks.",
};
