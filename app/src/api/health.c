/*
 * Service info and health. /livez says the process runs (it answers on the
 * event loop, so it stays cheap and honest under load); /readyz and /healthz
 * report the stores (one shared, briefly cached check: below) and turn 503
 * while draining so that the load balancer stops sending traffic before
 * connections close.
 */
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/app.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/log.h"
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

/*
 * The stores' check: SELECT 1 and PING. One process-wide check at a time,
 * shared: a request that finds one running waits for its result instead of
 * starting another, and a finished result answers every request for
 * health_cache_ms more (HEALTH_CACHE_MS). So however many load balancers,
 * probes or clients ask, the stores see about one SELECT 1 and one PING per
 * HEALTH_CACHE_MS (at most two: a check that starts just as the previous
 * result expires), instead of one each per request: /healthz is public, and
 * must not be a way to load the database.
 *
 * Who waits how. The first request without a usable result runs the check
 * on its own connections (the leader) and publishes the result under the
 * lock, then writes an eventfd made for that check. Others wait for that
 * eventfd to turn readable: a worker thread with poll(), a fiber through
 * kiln_wait_fd, which parks it on its loop. libuv watches an fd at most once
 * per loop, so on each loop one waiting fiber watches the eventfd and the
 * loop's other waiters park on a list it wakes (loop-local: no lock). The
 * eventfd is closed by whoever lets go of it last (a reference count under
 * the lock). A waiter that wakes looks again: the result it waited for, a
 * fresh one, or else (its check was older than its arrival, or timed out)
 * another round.
 */

/* Health checks wait at most this long for each store (API.md). */
#define CHECK_TIMEOUT_MS 2000
/* A waiter gives up after this long: both checks' deadlines, and room for a
 * slow machine to schedule the leader. */
#define WAIT_MS (2 * CHECK_TIMEOUT_MS + 2000)

struct check {
    const char *name;
    bool ok;
    const char *message; /* for clients; a static string */
};

/* One check of both stores; checks[] as answered in ?detailed=true. */
struct result {
    struct check checks[2];
};

/* One running check's eventfd, shared by its leader and its waiters. */
struct flight {
    int efd;
    unsigned refs;              /* under hc.lock */
};

static struct {
    pthread_mutex_t lock;
    bool running;
    struct flight *flight;      /* the running check's; NULL: none, or no eventfd */
    uint64_t started;           /* checks started; the running one's number */
    uint64_t finished;          /* the number of the check whose result is below */
    uint64_t finished_ms;       /* when it finished (kiln_now_ms) */
    struct result result;
} hc = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The fibers of this thread's loop waiting for a check: one watches the
 * eventfd, the others park on the list until it wakes them. */
struct parked {
    struct kiln_fiber *fiber;
    struct parked *next;
};
static _Thread_local struct {
    bool watching;
    struct parked *head;
} loop_waiters;

/*
 * SELECT 1 and PING on the caller's connections. Failures say what kind
 * (unavailable, authentication failed, ...) and not the driver's text, which
 * names internal hosts and ports: anyone can ask /healthz. The driver's
 * text goes to the log, through kiln_log_outage: during an outage one line
 * per dependency per second, whatever the number of checks (and requests)
 * failing with it.
 */
static void run_checks(struct kiln_req *req, struct result *r)
{
    struct kiln_db *db = app_db(req);
    struct kiln_kv *kv = app_kv(req);

    int err = kiln_db_ping(db, CHECK_TIMEOUT_MS);
    r->checks[0] = (struct check){ "database", err == 0,
                                   err ? kiln_err_message(err) : "connected" };
    if (err)
        kiln_log_outage("Database", kiln_db_last_error(db));

    if (!req->config->valkey_host) {
        /* The in-process store: nothing to reach, nothing to fail. */
        r->checks[1] = (struct check){ "valkey", true, "not configured" };
        return;
    }
    err = kiln_kv_ping(kv, CHECK_TIMEOUT_MS);
    r->checks[1] = (struct check){ "valkey", err == 0,
                                   err ? kiln_err_message(err) : "connected" };
    if (err)
        kiln_log_outage("Session store", kiln_kv_last_error(kv));
}

/* Under hc.lock. */
static void flight_release(struct flight *f)
{
    if (--f->refs)
        return;
    close(f->efd);
    free(f);
}

/*
 * Wait until f's check is done or the deadline passes (hc.lock not held).
 * 0 (done, or look again), or KILN_EIO when the eventfd cannot be waited on:
 * then the caller checks on its own rather than spin.
 */
static int wait_for(struct flight *f, uint64_t deadline)
{
    struct kiln_fiber *self = kiln_fiber_self();
    struct kiln_fdwatch *watch = NULL;
    int err;
    if (!self) {
        /* A worker thread: poll() (the eventfd stays readable once written). */
        err = kiln_wait_fd(&watch, f->efd, POLLIN, deadline);
        return err == KILN_EIO ? err : 0;
    }
    if (loop_waiters.watching) {
        /* This loop's watcher wakes us when its check is done; its
         * deadline is no later than ours (it came first). */
        struct parked me = { self, loop_waiters.head };
        loop_waiters.head = &me;
        kiln_fiber_park();
        return 0;
    }
    loop_waiters.watching = true;
    err = kiln_wait_fd(&watch, f->efd, POLLIN, deadline);
    kiln_fdwatch_close(&watch);
    loop_waiters.watching = false;
    struct parked *p = loop_waiters.head;
    loop_waiters.head = NULL;
    while (p) {
        struct parked *next = p->next;  /* p lives on a stack that may run now */
        kiln_fiber_wake(p->fiber);
        p = next;
    }
    return err == KILN_EIO ? err : 0;
}

/*
 * The result for this request: a fresh cached one, the one of the check
 * running when it arrived, or one it runs itself. Never blocks a loop
 * thread: fibers park.
 */
static void get_result(struct kiln_req *req, struct result *out)
{
    uint64_t cache_ms = req->config->health_cache_ms;
    uint64_t deadline = kiln_now_ms() + WAIT_MS;
    uint64_t want = 0;          /* a check this request may take the result of */

    /* HEALTH_CACHE_MS=0: every call checks for itself, as before the
     * shared check existed (bench/ measures the store path this way). */
    if (cache_ms == 0) {
        run_checks(req, out);
        return;
    }

    pthread_mutex_lock(&hc.lock);
    for (;;) {
        uint64_t now = kiln_now_ms();
        if (hc.finished && ((want && hc.finished >= want) ||
                            now - hc.finished_ms < cache_ms)) {
            *out = hc.result;
            pthread_mutex_unlock(&hc.lock);
            return;
        }
        if (!hc.running)
            break;              /* lead a new check */
        if (!want)
            want = hc.started;
        struct flight *f = hc.flight;
        if (!f || now >= deadline) {
            pthread_mutex_unlock(&hc.lock);
            if (!f) {
                /* The leader has no eventfd (out of file descriptors):
                 * nothing to wait on, so check on our own. */
                run_checks(req, out);
                return;
            }
            for (size_t i = 0; i < 2; i++)
                out->checks[i] = (struct check){ i ? "valkey" : "database", false,
                                                 kiln_err_message(KILN_ETIMEDOUT) };
            return;
        }
        f->refs++;
        pthread_mutex_unlock(&hc.lock);
        int err = wait_for(f, deadline);
        pthread_mutex_lock(&hc.lock);
        flight_release(f);
        if (err) {
            pthread_mutex_unlock(&hc.lock);
            run_checks(req, out);
            return;
        }
    }

    /* The leader. */
    uint64_t id = ++hc.started;
    struct flight *f = NULL;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd >= 0) {
        f = kiln_malloc(sizeof *f);
        *f = (struct flight){ efd, 1 };
    }
    hc.running = true;
    hc.flight = f;
    pthread_mutex_unlock(&hc.lock);

    run_checks(req, out);

    pthread_mutex_lock(&hc.lock);
    hc.result = *out;
    hc.finished = id;
    hc.finished_ms = kiln_now_ms();
    hc.running = false;
    hc.flight = NULL;
    if (f) {
        /* Published first: whoever wakes finds the result. */
        uint64_t one = 1;
        ssize_t n = write(f->efd, &one, sizeof one);
        (void)n;                /* an eventfd counter cannot overflow at 1 */
        flight_release(f);
    }
    pthread_mutex_unlock(&hc.lock);
}

static void health(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str detailed;
    bool detail = kiln_req_query(req, "detailed", &detailed) &&
                  kiln_str_eq_c(detailed, "true");
    struct result r;
    bool draining = kiln_server_draining();
    bool ok = !draining;

    /* Draining answers 503 at once, without a check (and nothing is cached
     * for it): the load balancer must stop sending now. */
    if (!draining) {
        get_result(req, &r);
        for (size_t i = 0; i < 2; i++)
            ok = ok && r.checks[i].ok;
    }

    json_t *body = json_pack("{s:s}", "status", ok ? "ok" : "degraded");
    if (detail) {
        char now[KILN_RFC3339_LEN + 1];
        if (!draining) {
            json_t *c = json_object();
            for (size_t i = 0; i < 2; i++)
                json_object_set_new(c, r.checks[i].name,
                                    json_pack("{s:s, s:s}", "status",
                                              r.checks[i].ok ? "ok" : "error", "message",
                                              r.checks[i].message));
            json_object_set_new(body, "checks", c);
        }
        kiln_time_rfc3339_now(now);
        json_object_set_new(body, "timestamp", json_string(now));
        if (draining)
            json_object_set_new(body, "draining", json_true());
    }
    kiln_res_json(req, res, ok ? 200 : 503, body);
}

void api_readyz(struct kiln_req *req, struct kiln_res *res)
{
    health(req, res);
}

void api_healthz(struct kiln_req *req, struct kiln_res *res)
{
    health(req, res);
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
