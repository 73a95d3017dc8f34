/*
 * The resource engine (engine.c): the handlers every declaration in
 * app/src/api/resources/ gets (declare.h), their routes, the checks of a
 * declaration, and the comparison of the declarations with the database's
 * columns.
 */
#ifndef KILN_API_ENGINE_H
#define KILN_API_ENGINE_H

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

#endif
