/*
 * Service info and health. /livez says the process runs (it answers on the
 * event loop, so it stays cheap and honest under load); /readyz and /healthz
 * report the stores and turn 503 while draining so that the load balancer
 * stops sending traffic before connections close.
 */
#include <jansson.h>
#include <time.h>
#include <unistd.h>

#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "core/err.h"
#include "core/log.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/version.h"
#include "http/server.h"

void api_root(struct kiln_req *req, struct kiln_res *res)
{
    json_t *endpoints = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
        "health", "/healthz", "me", "/api/v1/me", "profile", "/api/v1/profile",
        "dashboard", "/api/v1/dashboard", "notes", "/api/v1/notes",
        "projects", "/api/v1/projects", "tasks", "/api/v1/tasks", "auth", "/auth/:provider");
    kiln_res_json(req, res, 200,
                  json_pack("{s:s, s:s, s:s, s:o}", "status", "ok", "service", "kiln",
                            "version", kiln_version(), "endpoints", endpoints));
}

void api_livez(struct kiln_req *req, struct kiln_res *res)
{
    (void)req;
    kiln_res_json_text(res, 200, KILN_STR("{\"status\":\"ok\"}"));
}

/* Health checks wait at most this long for each store (API.md). */
#define CHECK_TIMEOUT_MS 2000

struct check {
    const char *name;
    bool ok;
    const char *message; /* for clients */
    const char *detail;  /* for the log */
};

static size_t run_checks(struct kiln_req *req, struct check *out)
{
    struct kiln_db *db = app_db(req);
    struct kiln_kv *kv = app_kv(req);
    size_t n = 0;

    /*
     * Failures say what kind (unavailable, authentication failed, ...) and
     * not the driver's text, which names internal hosts and ports: anyone
     * can ask /healthz. The log line below has the details.
     */
    int err = kiln_db_ping(db, CHECK_TIMEOUT_MS);
    out[n] = (struct check){ "database", err == 0, err ? kiln_err_message(err) : "connected",
                             err ? kiln_db_last_error(db) : NULL };
    n++;

    if (!req->config->valkey_host) {
        /* The in-process store: nothing to reach, nothing to fail. */
        out[n] = (struct check){ "valkey", true, "not configured", NULL };
    } else {
        err = kiln_kv_ping(kv, CHECK_TIMEOUT_MS);
        out[n] = (struct check){ "valkey", err == 0, err ? kiln_err_message(err) : "connected",
                                 err ? kiln_kv_last_error(kv) : NULL };
    }
    n++;

    for (size_t i = 0; i < n; i++)
        if (!out[i].ok)
            kiln_log(KILN_LOG_WARNING, "health check failed", "check", out[i].name, "error",
                     out[i].detail, "request_id", req->request_id, NULL);
    return n;
}

static void health(struct kiln_req *req, struct kiln_res *res, bool allow_detail)
{
    struct check checks[4];
    size_t n = run_checks(req, checks);
    bool ok = !kiln_server_draining();
    for (size_t i = 0; i < n; i++)
        ok = ok && checks[i].ok;

    json_t *body = json_pack("{s:s}", "status", ok ? "ok" : "degraded");
    kiln_str detailed;
    if (allow_detail && kiln_req_query(req, "detailed", &detailed) &&
        kiln_str_eq_c(detailed, "true")) {
        char now[KILN_RFC3339_LEN + 1];
        json_t *c = json_object();
        for (size_t i = 0; i < n; i++)
            json_object_set_new(c, checks[i].name,
                                json_pack("{s:s, s:s}", "status", checks[i].ok ? "ok" : "error",
                                          "message", checks[i].message));
        kiln_time_rfc3339_now(now);
        json_object_set_new(body, "checks", c);
        json_object_set_new(body, "timestamp", json_string(now));
        if (kiln_server_draining())
            json_object_set_new(body, "draining", json_true());
    }
    kiln_res_json(req, res, ok ? 200 : 503, body);
}

void api_readyz(struct kiln_req *req, struct kiln_res *res)
{
    health(req, res, true);
}

void api_healthz(struct kiln_req *req, struct kiln_res *res)
{
    health(req, res, true);
}

void api_test_sleep(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str ms_s;
    uint64_t ms = 0;
    if (req->config->env != KILN_ENV_TEST) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    if (kiln_req_query(req, "ms", &ms_s) && !kiln_str_to_u64(ms_s, 60000, &ms)) {
        kiln_res_error(req, res, 400, "invalid_request", "ms must be 0..60000", NULL);
        return;
    }
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
    kiln_res_json(req, res, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}
