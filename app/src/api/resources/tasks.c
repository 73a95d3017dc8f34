/*
 * Tasks (API.md, protected routes): a declaration. A task belongs to a
 * user and to one of that user's projects: project_id is a reference,
 * which the engine checks in the same statement that writes it, so another
 * user's project (or one deleted at that moment) is 404 project_not_found,
 * never a foreign-key error. A task created without project_id is 400
 * invalid_request, the contract's answer for a missing required reference.
 *
 * GET /tasks is the whole list, newest first, filtered by ?project_id=
 * and ?status= (tasks_user_project_status_idx serves each combination).
 */
#include "api/declare.h"

static const char *const statuses[] = { "todo", "in_progress", "done", NULL };

static const struct kiln_field fields[] = {
    { .name = "project_id", .type = KILN_REFERENCE, .ref = "projects",
      .flags = KILN_REQUIRED | KILN_FILTER, .doc = "The project the task belongs to." },
    { .name = "title", .type = KILN_TEXT, .flags = KILN_REQUIRED | KILN_SORT, .min_len = 1,
      .max_len = 160, .doc = "What to do." },
    { .name = "details", .type = KILN_TEXT, .flags = KILN_NULLABLE, .max_len = 10000,
      .doc = "More about it." },
    { .name = "status", .type = KILN_ENUM, .values = statuses, .def = "todo",
      .flags = KILN_FILTER | KILN_SORT, .doc = "Where the task stands." },
    { .name = "due_date", .type = KILN_DATE, .flags = KILN_NULLABLE | KILN_SORT,
      .doc = "The day it is due." },
};

const struct kiln_resource kiln_resource_tasks = {
    .name = "tasks",
    .singular = "task",
    .fields = fields,
    .nfields = sizeof fields / sizeof fields[0],
    .owner = KILN_OWNER_USER,
    .not_found_code = "task_not_found",
    .not_found_message = "Task not found",
    .order = "inserted_at DESC",
    .doc = "A user's tasks, each in one of the user's projects.",
};
