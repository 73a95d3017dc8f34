/*
 * The application's wiring: which stores exist (from the configuration) and
 * how each worker gets its own connections to them. Handlers reach the
 * stores of the worker they run on through app_db / app_kv.
 */
#ifndef KILN_API_APP_H
#define KILN_API_APP_H

#include "core/config.h"
#include "http/request.h"
#include "http/workers.h"
#include "store/db.h"
#include "store/kv.h"

struct kiln_app {
    const struct kiln_config *cfg;
    struct kiln_db_config db;
    struct kiln_kv_config kv;
    struct kiln_kv_store *kv_store;
    struct kiln_worker_hooks hooks;
};

/* Store configuration from cfg; no I/O (connections open lazily). cfg must
 * outlive app. */
void kiln_app_init(struct kiln_app *app, const struct kiln_config *cfg);
void kiln_app_free(struct kiln_app *app);

/* The stores of the worker running req. Only for routes that run on the
 * worker pool (not KILN_ROUTE_LOOP): there they are never NULL. */
struct kiln_db *app_db(const struct kiln_req *req);
struct kiln_kv *app_kv(const struct kiln_req *req);

#endif
