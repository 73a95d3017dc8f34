/*
 * A resource is a declaration: one constant struct kiln_resource per
 * resource, in app/src/api/resources/<name>.c, is the single source of
 * truth for its routes, input validation, SQL (both dialects), JSON shape,
 * OpenAPI schema and the check of the database's columns at start. The
 * engine (engine.c) turns it into handlers; a fork's own logic goes into
 * hooks next to the declaration.
 *
 * Registration is the file itself: the build lists every C file in
 * app/src/api/resources/ and expects each to define
 * `const struct kiln_resource kiln_resource_<file name>` (build/gen/
 * resources.c), so `kiln gen resource` never has to edit a shared file.
 *
 * Every declared table has the standard columns the engine manages and the
 * declaration does not list: `id` (UUID made by Kiln, first in the JSON),
 * the owner column (`user_id` today), `inserted_at` and `updated_at`
 * (RFC 3339 text made by Kiln, last in the JSON). The fields below come
 * between them, in declaration order, under their column names.
 */
#ifndef KILN_API_DECLARE_H
#define KILN_API_DECLARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "http/request.h"
#include "http/response.h"
#include "http/router.h"
#include "store/db.h"

enum kiln_field_type {
    KILN_TEXT,      /* string; bounds in characters (code points) */
    KILN_INTEGER,   /* JSON integer, 64-bit; optional bounds */
    KILN_BOOLEAN,   /* true / false */
    KILN_DATE,      /* "YYYY-MM-DD", a day that exists */
    KILN_TIMESTAMP, /* RFC 3339 in, RFC 3339 UTC microseconds out */
    KILN_UUID,      /* a UUID, stored lower-cased */
    KILN_ENUM,      /* one of .values */
    KILN_JSON,      /* any JSON value (jsonb on PostgreSQL, text on SQLite) */
    KILN_REFERENCE, /* the id of a row of the resource named .ref, owned by
                       the same owner: checked in the statement that writes */
};

enum kiln_field_flags {
    /* Must be given on create: absent or null is "can't be blank" (a
     * required reference: 400 invalid_request "<name> is required", the
     * contract's answer for tasks.project_id). */
    KILN_REQUIRED = 1u << 0,
    /* The column may hold NULL: JSON null stores NULL and shows null. */
    KILN_NULLABLE = 1u << 1,
    /* JSON null is accepted and stores .def (notes.content: null is ""). */
    KILN_NULL_IS_DEFAULT = 1u << 2,
    /* Never taken from a body (set by hooks or the database); shown. */
    KILN_READ_ONLY = 1u << 3,
    /* ?<name>=value narrows lists (exact match; a malformed value is 400). */
    KILN_FILTER = 1u << 4,
    /* ?search=term matches it (case-blind substring, % and _ literal). */
    KILN_SEARCH = 1u << 5,
    /* ?sort=<name> / ?sort=-<name> orders lists by it. */
    KILN_SORT = 1u << 6,
    /* Integer bounds .min / .max apply (0 is a real bound). */
    KILN_BOUNDED = 1u << 7,
};

struct kiln_field {
    const char *name;             /* JSON member and column */
    enum kiln_field_type type;
    unsigned flags;               /* enum kiln_field_flags */
    size_t min_len, max_len;      /* KILN_TEXT: characters; max 0 = no bound */
    int64_t min, max;             /* KILN_INTEGER with KILN_BOUNDED */
    /* On create when absent (and on null with KILN_NULL_IS_DEFAULT): the
     * value as a SQL text parameter ("todo", "0", ""); NULL: NULL. A
     * boolean is "1" / "0". */
    const char *def;
    const char *const *values;    /* KILN_ENUM: NULL-terminated */
    const char *ref;              /* KILN_REFERENCE: the resource's name */
    /* A filter's value when the query does not give one (notes list
     * non-archived notes unless asked): NULL = no filter. */
    const char *filter_def;
    const char *doc;              /* one line for the OpenAPI description */
};

/* Who owns a row. Today the session's user; an organisation later is a
 * new kind with its own column, and every statement already scopes by
 * whatever column the kind names. */
enum kiln_owner_kind {
    KILN_OWNER_USER, /* the session's user id, in column "user_id" */
};

enum kiln_op {
    KILN_OP_CREATE,
    KILN_OP_UPDATE,
    KILN_OP_DELETE,
    KILN_OP_ACTION,
};

struct kiln_resource;

#define KILN_WRITE_MAX_JOBS 8

/*
 * What a hook sees. Before a write the values are what will be written
 * (change them with kiln_write_set); after it, row holds the row as
 * stored (row 0; none for a delete). A before hook that answers (sets
 * res) and returns non-zero stops the write; an after hook runs once the
 * write succeeded, and its non-zero return keeps the answer it set.
 */
struct kiln_write {
    struct kiln_req *req;
    struct kiln_res *res;
    const struct kiln_resource *resource;
    enum kiln_op op;
    const char *action;            /* KILN_OP_ACTION: its name */
    const char *id;                /* the row's id (made before a create) */
    json_t *body;                  /* the request's object (NULL: none) */
    const struct kiln_db_rows *row;/* after: the stored row */
    /* per field, in declaration order: the text parameter to write, and
     * whether the field is written at all (an update's absent field is
     * not) */
    const char **values;
    bool *set;
    /* Jobs a before hook enqueued with kiln_write_enqueue. */
    const char *job_kind[KILN_WRITE_MAX_JOBS];
    const char *job_args[KILN_WRITE_MAX_JOBS];
    size_t njobs;
};
typedef int (*kiln_write_hook)(struct kiln_write *w);

/*
 * From a before hook: enqueue a job (jobs/jobs.h) with the write, in the
 * write's own transaction (on PostgreSQL its one statement): it exists if
 * and only if the change was made and committed (a write that finds no
 * row, or fails, enqueues nothing). args: JSON text (NULL: "{}"), copied.
 * 0, or KILN_EINVAL for an unknown kind or more than KILN_WRITE_MAX_JOBS.
 */
int kiln_write_enqueue(struct kiln_write *w, const char *kind, const char *args);

/* Set (or, with value NULL, set to NULL) field name for the write a before
 * hook is looking at. false if the resource has no such field. */
bool kiln_write_set(struct kiln_write *w, const char *name, const char *value);

/*
 * Writes extra members into a shown row's JSON object, after its fields
 * and before its closing brace (a project's "tasks"). Returns 0, or a
 * kiln_err after which the engine answers through kiln_res_fail.
 */
typedef int (*kiln_show_hook)(struct kiln_req *req, const struct kiln_resource *r,
                              const char *id, kiln_buf *out);

/*
 * An extra route: POST /<name>/:id/<action>. Declared (set .field to
 * .value, as archive and unarchive do), or written in C (.handler, any
 * method), which then reads the resource from kiln_route_resource(req).
 */
struct kiln_action {
    const char *name;
    const char *field, *value;
    kiln_handler_fn handler;
    enum kiln_method method;     /* for .handler; declared ones are POST */
    const char *doc;
    /* The change feed's name for what it did ("archived": the event type
     * notes.archived); NULL: the action's name. A declared action records
     * its event like an update; a .handler action writes its own rows and
     * records nothing by itself. */
    const char *event;
};

struct kiln_resource {
    const char *name;             /* plural path segment and table: "notes" */
    const char *singular;         /* "note": OpenAPI schema name and messages */
    const struct kiln_field *fields;
    size_t nfields;
    enum kiln_owner_kind owner;
    /* 404 for a missing (or another owner's) row: "note_not_found",
     * "Note not found" */
    const char *not_found_code, *not_found_message;
    /* Lists: page size default and cap (0 and 0: the whole list, as a bare
     * {"data": [...]}, the contract of projects and tasks); a paged list
     * answers {"data", "meta": {count, total, limit, offset}} */
    unsigned page_default, page_max;
    /* "inserted_at DESC" or "title": the column and direction; id breaks
     * ties in the same direction */
    const char *order;
    size_t search_max;            /* characters in ?search= (255) */
    /* Lists cached in the kv store for CACHE_TTL_SECONDS under the owner's
     * generation of this resource, which every write replaces. */
    bool cache;
    const struct kiln_action *actions;
    size_t nactions;
    kiln_write_hook before_create, after_create;
    kiln_write_hook before_update, after_update;
    kiln_write_hook before_delete, after_delete;
    kiln_show_hook show_extra;
    /* What show_extra adds, for the OpenAPI document (api/openapi.c), which
     * cannot read it from C code: a member named show_extra_name holding an
     * array of rows of the resource named show_extra_of (a project's
     * "tasks": "tasks", "tasks"). NULL when show_extra adds nothing. */
    const char *show_extra_name, *show_extra_of;
    const char *doc;              /* OpenAPI tag description */
};

/* Every declared resource, in file-name order (build/gen/resources.c). */
extern const struct kiln_resource *const kiln_resources[];
extern const size_t kiln_resources_count;

/* The declared resource called name, or NULL. */
const struct kiln_resource *kiln_resource_find(const char *name);
/* The resource of the route being served (engine routes and actions). */
const struct kiln_resource *kiln_route_resource(const struct kiln_req *req);

/* The columns the engine selects, in JSON order ("id, title, ...,
 * inserted_at, updated_at"), and one selected row written as the
 * resource's JSON object: for hooks and handlers that show rows of a
 * declared resource (a project's tasks, the dashboard's notes). */
const char *kiln_resource_columns(const struct kiln_resource *r);
void kiln_resource_append_json(const struct kiln_resource *r, kiln_buf *out,
                               const struct kiln_db_rows *rows, size_t i);
json_t *kiln_resource_json(const struct kiln_resource *r, const struct kiln_db_rows *rows,
                           size_t i);

#endif
