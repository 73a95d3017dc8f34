/*
 * The HTTP server: HTTP_LOOPS event-loop threads, each with its own
 * SO_REUSEPORT listener, owning their connections from accept to close;
 * handlers that may block run on the worker pool and hand their response
 * back to the connection's loop. kiln_server_run blocks until a SIGTERM or
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
 * Bind, serve, drain. Returns 0 after a clean drain, 1 when the server could
 * not start (the reason is logged). The route table must outlive the call.
 * hooks (may be NULL) give each worker its context: req->context.
 */
int kiln_server_run(const struct kiln_config *cfg, const struct kiln_route *routes,
                     size_t nroutes, const struct kiln_worker_hooks *hooks);

/* True from the moment a shutdown signal arrives (readiness turns 503).
 * Any thread. */
bool kiln_server_draining(void);

#endif
