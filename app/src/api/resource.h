/*
 * What every resource handler needs beyond the request and response
 * helpers: the session's user, a JSON object body, field validation with
 * API.md's 422 details, ids, paging, timestamps, and store errors answered
 * the same way everywhere. notes.c is the example to copy.
 */
#ifndef KILN_API_RESOURCE_H
#define KILN_API_RESOURCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/clock.h"
#include "http/request.h"
#include "http/response.h"
#include "store/db.h"

/* The signed-in user's id (routes guarded by kiln_guard_session). */
const char *res_user_id(const struct kiln_req *req);

/* The body as a JSON object, or NULL after answering 400 invalid_json
 * (not JSON) or invalid_request (JSON, not an object). json_decref it. */
json_t *res_body_object(struct kiln_req *req, struct kiln_res *res);

/* Validation messages per field, answered together as one 422. */
struct res_errors {
    json_t *details;     /* NULL until the first message */
};
void res_error(struct res_errors *e, const char *field, const char *message);
/* true (and 422 validation_failed with the details answered) if any. */
bool res_errors_answer(struct kiln_req *req, struct kiln_res *res, struct res_errors *e);

/*
 * A string field of obj. true when present and valid (*out set; JSON null
 * with null_ok: *out NULL); false when absent (nothing added) or invalid.
 * Invalid: another type ("is invalid"); null without null_ok, empty or
 * whitespace-only with min > 0 ("can't be blank"); a length, counted in
 * characters (code points), outside min..max ("should be at least/most N
 * character(s)").
 */
bool res_string(json_t *obj, const char *field, bool null_ok, size_t min, size_t max,
                struct res_errors *e, const char **out);
/* A boolean field: false when absent; a non-boolean adds "is invalid". */
bool res_bool(json_t *obj, const char *field, struct res_errors *e, bool *out);

/* The :id path parameter when it is a UUID (lower-cased); otherwise NULL
 * after answering 404 with code (e.g. "note_not_found") and message,
 * without touching the database: ids that cannot exist leak nothing. */
const char *res_id(struct kiln_req *req, struct kiln_res *res, const char *code,
                   const char *message);
/* s lower-cased in a, when it is a UUID; NULL otherwise. For ids that come
 * in a body or a query rather than the path. */
const char *res_uuid(kiln_arena *a, kiln_str s);
/* Answer 404 with that code and message. */
void res_not_found(struct kiln_req *req, struct kiln_res *res, const char *code,
                   const char *message);

/* ?name=N: def when absent, capped at max; not a non-negative integer (or
 * below min): false after answering 400 invalid_request. */
bool res_query_uint(struct kiln_req *req, struct kiln_res *res, const char *name,
                    unsigned def, unsigned min, unsigned max, unsigned *out);
/* A timestamp column as API.md's RFC 3339 UTC microseconds, in out; false
 * for NULL or a value that does not parse. */
bool res_time_text(const struct kiln_db_rows *r, size_t row, size_t col,
                   char out[KILN_RFC3339_LEN + 1]);
/* The current time as a parameter for timestamp columns. */
const char *res_now(kiln_arena *a);
/* Text for the audit log (a header's value, a target): printable ASCII,
 * anything else '?' (both drivers take only valid UTF-8 without NUL), at
 * most RES_AUDIT_TEXT_MAX bytes; NULL for NULL. */
#define RES_AUDIT_TEXT_MAX 512
const char *res_audit_text(kiln_arena *a, kiln_str s);

/* A database error, answered through kiln_res_fail (http/response.h: the
 * one map from errors to answers). */
void res_store_error(struct kiln_req *req, struct kiln_res *res, int err, const char *what);

/* Answer 204 with no body. */
void res_no_content(struct kiln_res *res);

/*
 * GET /<things>/:id for a table with id and user_id columns: true with the
 * row's columns (a constant list of the caller) in *row, or false after
 * answering 404 (code, message) or the store error.
 */
bool res_fetch_owned(struct kiln_req *req, struct kiln_res *res, const char *table,
                     const char *columns, const char *code, const char *message,
                     struct kiln_db_rows *row);

/* "YYYY-MM-DD" naming a day that exists (Gregorian, years 1..9999, the
 * range PostgreSQL's date and SQLite's date() share). */
bool res_calendar_date(kiln_str s);

/* LIKE pattern matching s anywhere, with %, _ and \ in s taken literally
 * (ESCAPE '\'). Compare lower(column) LIKE lower(pattern) for case-blind
 * search on both databases. */
const char *res_like_pattern(kiln_arena *a, kiln_str s);

#endif
