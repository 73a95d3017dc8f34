/*
 * The resource engine (engine.c): the handlers every declaration in
 * app/src/api/resources/ gets (declare.h), their routes, the checks of a
 * declaration, and the comparison of the declarations with the database's
 * columns.
 */
#ifndef KILN_API_ENGINE_H
#define KILN_API_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "api/declare.h"
#include "http/router.h"
#include "store/db.h"

/* The largest ?offset= a paged list takes (a larger one is capped to it);
 * the OpenAPI document states it (api/openapi.c). */
#define KILN_ENGINE_OFFSET_MAX 1000000000u

/* GET /<name>, POST /<name>, GET|PUT|PATCH|DELETE /<name>/:id, and
 * POST /<name>/:id/<action> for declared actions. The route's data is the
 * resource. */
void kiln_engine_list(struct kiln_req *req, struct kiln_res *res);
void kiln_engine_create(struct kiln_req *req, struct kiln_res *res);
void kiln_engine_show(struct kiln_req *req, struct kiln_res *res);
void kiln_engine_update(struct kiln_req *req, struct kiln_res *res);
void kiln_engine_delete(struct kiln_req *req, struct kiln_res *res);
void kiln_engine_action(struct kiln_req *req, struct kiln_res *res);

/*
 * The routes of every declared resource, in declaration order, into out
 * (up to cap; the paths are allocated for the life of the process). Returns
 * how many there are: call with cap 0 to size out.
 */
size_t kiln_engine_routes(struct kiln_route *out, size_t cap);

/* What a body asks of a write, per field in declaration order: whether
 * the field is written, and the text parameter to write (NULL: NULL). */
struct kiln_values {
    const char **values;
    bool *set;
};

struct res_errors;

/*
 * Validate a body (a JSON object) against r: on create every writable
 * field (absent ones take their default, absent required ones are "can't
 * be blank"), on update the fields present. true with *out filled (in
 * arena a); false with the messages added to e, or with *missing naming a
 * required reference that is absent (the contract's 400, checked first).
 * A reference's value is any string here: one that is no UUID names no
 * row, which the caller answers as the referenced resource's 404.
 */
bool kiln_resource_input(kiln_arena *a, const struct kiln_resource *r, json_t *in,
                         bool create, struct kiln_values *out, struct res_errors *e,
                         const char **missing);

/*
 * The statements, from the declaration alone (the dialect only decides
 * FOR KEY SHARE, PostgreSQL's lock on a referenced row). Parameters:
 * insert: $1 id, $2 owner, $3 now, then each field v sets, in order;
 * update: $1 id, $2 owner, each field v sets in order, then now;
 * list: $1 owner, each filtered field in order, the search pattern when
 * search, then (paged) limit and offset; count: the list's without paging.
 */
const char *kiln_sql_insert(kiln_arena *a, const struct kiln_resource *r,
                            enum kiln_db_dialect d, const struct kiln_values *v);
const char *kiln_sql_update(kiln_arena *a, const struct kiln_resource *r,
                            enum kiln_db_dialect d, const struct kiln_values *v);
/* PostgreSQL: stmt (an INSERT or UPDATE ... RETURNING the columns) with
 * its event and audit row, one statement answering what stmt answers.
 * owner: the owner's parameter; first_audit: the first of three more
 * (ip, user agent, request id); more: further parts of the WITH (each
 * ", name AS (...)", reading the written row as w), or NULL. */
const char *kiln_sql_outbox(kiln_arena *a, const struct kiln_resource *r, const char *stmt,
                            const char *action, size_t owner, size_t first_audit,
                            const char *more);
/* PostgreSQL: the creates of n requests of the same shape (no reference
 * set, v's fields set) in one statement, with each one's event and audit
 * row, answering every written row. Request m's parameters are the single
 * create's ($1 id, $2 owner, $3 now, the fields, then ip, user agent and
 * request id), numbered from m * kiln_sql_insert_width(r, v). */
const char *kiln_sql_insert_many(kiln_arena *a, const struct kiln_resource *r,
                                 const struct kiln_values *v, size_t n);
size_t kiln_sql_insert_width(const struct kiln_resource *r, const struct kiln_values *v);
/* PostgreSQL: the expression the outbox stores as an event's data: the
 * written row (alias) as JSON, cheap to make in the write's statement. */
const char *kiln_sql_row_json(kiln_arena *a, const struct kiln_resource *r, const char *alias);
/* An event's stored data (that expression's JSON on PostgreSQL, the API's
 * own on SQLite) as the API shows the row of resource: members in
 * declaration order, timestamps in the API's form. false when resource is
 * not declared or data is not a JSON object (out untouched). */
bool kiln_resource_event_json(const char *resource, kiln_str data, kiln_buf *out);
bool kiln_resource_event_json_of(const struct kiln_resource *r, kiln_str data, kiln_buf *out);
/* DELETE of row $1 owned by $2. PostgreSQL: with the events of the row and
 * of every row its cascade removes, its audit row ($3..$5: ip, user
 * agent, request id) and more (as for kiln_sql_outbox, the deleted row's
 * id as d), answering one count; SQLite: the DELETE alone. */
const char *kiln_sql_delete(kiln_arena *a, const struct kiln_resource *r,
                            enum kiln_db_dialect d, const char *more);
const char *kiln_sql_list(kiln_arena *a, const struct kiln_resource *r, const bool *filtered,
                          bool search, const char *col, const char *dir);
const char *kiln_sql_count(kiln_arena *a, const struct kiln_resource *r, const bool *filtered,
                           bool search);

/* The resources whose rows a delete of r's can remove through ON DELETE
 * CASCADE, along any chain of references (a delete makes their cached
 * lists stale too): their number, and *out pointing at them. */
size_t kiln_resource_cascade(const struct kiln_resource *r,
                             const struct kiln_resource *const **out);

/* The index of field name in r, or -1. */
int kiln_resource_field(const struct kiln_resource *r, const char *name);

/* 0, or -1 with one line in err naming the resource and what is wrong
 * with its declaration (names, bounds, defaults, references, actions). */
int kiln_resource_check(const struct kiln_resource *r, char *err, size_t errlen);
/* The same for every declared resource, and no name declared twice. */
int kiln_resources_check(char *err, size_t errlen);

/*
 * Compare every declaration with the database's columns (the standard
 * ones, then each field: present, a type that can hold it, NULL allowed
 * where the field is nullable). 0, or a kiln_err with one line in err
 * naming the resource and the column (KILN_EINVAL for a mismatch; a store
 * error when the columns could not be read).
 */
int kiln_resources_verify(struct kiln_db *db, kiln_arena *a, char *err, size_t errlen);

/*
 * For `kiln serve`: compare the declarations with the database once per
 * process (the first engine request, or a loop's warm-up, whichever comes
 * first; later calls return true at once). A mismatch logs one error line
 * naming the resource and the column and exits the process with status 1:
 * a deployment whose code and schema disagree fails at once instead of
 * answering 500s. A database with no migrations at all returns false
 * (callers answer 503 until `kiln migrate` has run; one warning is
 * logged); an unreachable one returns true and is compared at the next
 * call. kiln_resources_verified records that a caller (migrations at
 * start) has compared them already.
 */
bool kiln_resources_verify_once(struct kiln_db *db);
void kiln_resources_verified(void);

#endif
