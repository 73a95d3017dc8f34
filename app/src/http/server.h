/*
 * The HTTP server: HTTP_LOOPS event-loop threads, each with its own
 * SO_REUSEPORT listener, owning their connections from accept to close.
 * Handlers run on a fiber of the connection's loop when the loop has stores
 * (kiln_loop_hooks), or on the worker pool, which hands the response back
 * to the connection's loop. kiln_server_run blocks until a SIGTERM or
 * SIGINT drain has finished (or SHUTDOWN_TIMEOUT_SECONDS passed) and returns
 * the process exit status.
 */
#ifndef KILN_HTTP_SERVER_H
#define KILN_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "http/router.h"
#include "http/workers.h"

/*
 * Per-loop state (store handles that wait through fibers). start runs on each
 * loop thread before it serves; a non-NULL context makes the loop run
 * handlers on its own fibers, with req->context = that context, except
 * KILN_ROUTE_BLOCKING routes; NULL sends every handler that is not
 * KILN_ROUTE_LOOP to the worker pool. stop runs on the same thread after its
 * last connection closed, while the loop can still close handles.
 */
struct kiln_loop_hooks {
    void *(*start)(void *arg, unsigned index);
    void (*stop)(void *arg, void *context);
    /* May be NULL. Runs once per loop, on a fiber of it, right after start
     * returned a context, while the loop already serves: store connections
     * opened here are ready before the first burst of requests needs them.
     * A drain waits for it to return (it should check kiln_server_draining
     * between steps). */
    void (*warm)(void *arg, void *context);
    void *arg;
};

/*
 * Bind, serve, drain. Returns 0 after a clean drain, 1 when the server could
 * not start (the reason is logged). The route table must outlive the call.
 * hooks (may be NULL) give each worker its context, loop_hooks (may be
 * NULL) each loop's: req->context.
 */
int kiln_server_run(const struct kiln_config *cfg, const struct kiln_route *routes,
                     size_t nroutes, const struct kiln_worker_hooks *hooks,
                     const struct kiln_loop_hooks *loop_hooks);

/* True from the moment a shutdown signal arrives (readiness turns 503).
 * Any thread. */
bool kiln_server_draining(void);

/* The time the requests answered so far took, summed over the loops (ns;
 * streams not counted). Its growth over an interval divided by the
 * interval is the mean number of requests in progress then (Little's
 * law): what the jobs' yielding reads. Any thread; 0 without a server. */
uint64_t kiln_server_request_ns(void);

#endif
