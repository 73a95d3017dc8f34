/*
 * The application's wiring: which stores exist (from the configuration),
 * how each worker gets its own connections to them, and how each event loop
 * gets the handles its fibers share. Handlers reach the stores of wherever
 * they run through app_db / app_kv.
 */
#ifndef KILN_API_APP_H
#define KILN_API_APP_H

#include "core/config.h"
#include "http/request.h"
#include "http/server.h"
#include "http/workers.h"
#include "store/db.h"
#include "store/kv.h"

struct kiln_app {
    const struct kiln_config *cfg;
    struct kiln_db_config db;
    struct kiln_kv_config kv;
    struct kiln_kv_store *kv_store;
    struct kiln_worker_hooks hooks;
    struct kiln_loop_hooks loop_hooks;
    unsigned loop_db_connections;  /* per loop */
};

/* Store configuration from cfg; no I/O (connections open lazily). cfg must
 * outlive app. */
void kiln_app_init(struct kiln_app *app, const struct kiln_config *cfg);
void kiln_app_free(struct kiln_app *app);
/* The change feed's thread (events/feed.h), with its own connections to the
 * app's stores. 0 or an error (logged). kiln_feed_stop ends it. */
int kiln_app_feed_start(struct kiln_app *app);
/* Register the job kinds (Kiln's own, then the webhooks') and start the
 * jobs thread (jobs/jobs.h). 0 or an error. */
int kiln_app_jobs_start(struct kiln_app *app);

/* The stores of the worker or loop fiber running req. Not for
 * KILN_ROUTE_LOOP routes; for every other route they are never NULL. */
struct kiln_db *app_db(const struct kiln_req *req);
struct kiln_kv *app_kv(const struct kiln_req *req);

#endif
