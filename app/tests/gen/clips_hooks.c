/*
 * Hooks that scripts/gen-check.sh splices into a resource it generates
 * (`kiln gen resource clips url:text:required note:text:nullable`), to
 * prove in a real build that every kind of write hook runs where
 * docs/RESOURCES.md says: before a write (refusing it with an answer, or
 * changing what is written), after it (with the stored row), and around a
 * delete. test_clips_hooks.py drives them over HTTP on both stores.
 */
#include <string.h>

#include "api/app.h"
#include "api/engine.h"
#include "api/resource.h"
#include "jobs/jobs.h"

/* A job with every write that gets past its checks, in the write's own
 * transaction (KILN_ENV=test registers test.record: one line per run in
 * KILN_TEST_JOBS_LOG), so the tests see it exactly when the write happened. */
static void enqueue(struct kiln_write *w)
{
    if (!kiln_job_kind_find("test.record"))
        return;
    const char *op = w->op == KILN_OP_CREATE ? "create" : w->op == KILN_OP_DELETE ? "delete"
                                                                                  : "update";
    kiln_write_enqueue(w, "test.record",
                       kiln_arena_sprintf(w->req->arena, "{\"clip\":\"%s\",\"op\":\"%s\"}",
                                          w->id, op));
}

/* Create and update: a url that is set must be http(s) (a 422 like the
 * engine's own); a clip created without a note gets one. */
static int clip_before_write(struct kiln_write *w)
{
    int f = kiln_resource_field(w->resource, "url");
    const char *url = f >= 0 && w->set[f] ? w->values[f] : NULL;
    if (url && strncmp(url, "https://", 8) && strncmp(url, "http://", 7)) {
        struct res_errors e = { 0 };
        res_error(&e, "url", "must start with http:// or https://");
        res_errors_answer(w->req, w->res, &e);
        return 1;
    }
    int n = kiln_resource_field(w->resource, "note");
    if (w->op == KILN_OP_CREATE && n >= 0 && !w->values[n])
        kiln_write_set(w, "note", "noted by a hook");
    enqueue(w);
    return 0;
}

/* After a create: the stored row's id, in a header. */
static int clip_after_create(struct kiln_write *w)
{
    kiln_str id = kiln_db_text(w->row, 0, 0);
    kiln_res_header(w->res, "x-clip-created", kiln_arena_strndup(w->req->arena, id.p, id.len));
    return 0;
}

/* A clip whose url says "keep" cannot be deleted: the hook reads the row
 * itself and answers 403. */
static int clip_before_delete(struct kiln_write *w)
{
    kiln_str p[2] = { kiln_str_c(w->id), kiln_str_c(res_user_id(w->req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(w->req), w->req->arena,
                            "SELECT url FROM clips WHERE id = $1 AND user_id = $2", p, 2, &rows);
    if (err) {
        res_store_error(w->req, w->res, err, "clips delete");
        return 1;
    }
    kiln_str url = rows.nrows ? kiln_db_text(&rows, 0, 0) : KILN_STR_NULL;
    if (url.p && memmem(url.p, url.len, "keep", 4)) {
        kiln_res_error(w->req, w->res, 403, "forbidden", "This clip is kept", NULL);
        return 1;
    }
    enqueue(w);
    return 0;
}

static int clip_after_delete(struct kiln_write *w)
{
    kiln_res_header(w->res, "x-clip-deleted", w->id);
    return 0;
}
