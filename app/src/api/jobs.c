/*
 * POST /_test/jobs (KILN_ENV=test only, 404 otherwise): enqueue jobs of the
 * test kinds (jobs/builtin.c) the way a handler does, in a transaction,
 * so the black-box tests drive the queue from outside.
 *
 * Body: {"kind", "args" (object), "count" (1..5000: that many jobs in one
 * transaction, each args with "n": its index), "idempotency_key",
 * "delay_ms", "max_attempts", "rollback" (true: roll the transaction back
 * instead of committing)}. Answer 201 {"ids": [...]} (null for a key
 * already taken), or 200 {"rolled_back": true, "ids": [...]}.
 *
 * GET /_test/jobs (the same): this instance's counts (kiln_jobs_stats).
 */
#include <jansson.h>
#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "core/err.h"
#include "jobs/jobs.h"

void api_test_jobs(struct kiln_req *req, struct kiln_res *res)
{
    if (req->config->env != KILN_ENV_TEST) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    const char *kind = json_string_value(json_object_get(in, "kind"));
    json_t *args = json_object_get(in, "args");
    json_int_t count = json_integer_value(json_object_get(in, "count"));
    if (!json_object_get(in, "count"))
        count = 1;
    const char *key = json_string_value(json_object_get(in, "idempotency_key"));
    json_int_t delay = json_integer_value(json_object_get(in, "delay_ms"));
    json_int_t attempts = json_integer_value(json_object_get(in, "max_attempts"));
    bool rollback = json_is_true(json_object_get(in, "rollback"));
    if (!kind || !kiln_job_kind_find(kind) || (args && !json_is_object(args)) || count < 1 ||
        count > 5000 || delay < 0 || attempts < 0 || (key && count != 1)) {
        json_decref(in);
        kiln_res_error(req, res, 422, "validation_failed", "Validation failed", NULL);
        return;
    }
    struct kiln_db *db = app_db(req);
    int err = kiln_db_begin(db);
    json_t *ids = json_array();
    for (json_int_t i = 0; !err && i < count; i++) {
        json_t *a = args ? json_deep_copy(args) : json_object();
        if (count > 1)
            json_object_set_new(a, "n", json_integer(i));
        char *text = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        struct kiln_job_options o = { .idempotency_key = key,
                                      .delay_ms = (uint64_t)delay,
                                      .max_attempts = (int)attempts };
        int64_t id = 0;
        err = kiln_job_enqueue(db, req->arena, kind, text, &o, &id);
        free(text);
        json_array_append_new(ids, id ? json_integer(id) : json_null());
    }
    json_decref(in);
    if (err || rollback) {
        kiln_db_rollback(db);
        if (err) {
            json_decref(ids);
            res_store_error(req, res, err, "enqueue");
            return;
        }
        kiln_res_json(req, res, 200, json_pack("{s:b, s:o}", "rolled_back", 1, "ids", ids));
        return;
    }
    if ((err = kiln_db_commit(db)) != 0) {
        json_decref(ids);
        res_store_error(req, res, err, "enqueue");
        return;
    }
    kiln_jobs_notify();
    kiln_res_json(req, res, 201, json_pack("{s:o}", "ids", ids));
}

void api_test_jobs_stats(struct kiln_req *req, struct kiln_res *res)
{
    if (req->config->env != KILN_ENV_TEST) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    struct kiln_jobs_stats st;
    kiln_jobs_stats(&st);
    kiln_res_json(req, res, 200,
                  json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I}", "running",
                            (json_int_t)st.running, "claimed", (json_int_t)st.claimed, "done",
                            (json_int_t)st.done, "retried", (json_int_t)st.retried, "dead",
                            (json_int_t)st.dead, "released", (json_int_t)st.released,
                            "yielding", st.yielding, "yielded", (json_int_t)st.yielded));
}
