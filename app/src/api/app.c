/*
 * One database connection and one kv handle per worker thread, opened when
 * the worker starts (no I/O yet: both connect on first use) and closed when
 * it stops. Nothing here is shared between workers except the memory kv
 * store, which is thread-safe.
 *
 * Each event loop gets stores of its own when the database is PostgreSQL:
 * a pool of connections lent to its fibers and one shared kv handle
 * (pipelined on Valkey). Handlers then run on the loop's fibers and wait
 * without a thread switch. SQLite has no socket to wait on (its calls block
 * the thread), so with SQLite every handler stays on the worker pool.
 */
#include "api/app.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/stores.h"


static void *on_worker_start(void *arg, unsigned index)
{
    struct kiln_app *app = arg;
    (void)index;
    struct kiln_stores *w = kiln_calloc(1, sizeof *w);
    w->db = kiln_db_open(&app->db);
    w->kv = kiln_kv_open(app->kv_store);
    return w;
}

static void on_worker_stop(void *arg, void *context)
{
    struct kiln_stores *w = context;
    (void)arg;
    if (!w)
        return;
    kiln_db_close(w->db);
    kiln_kv_close(w->kv);
    free(w);
}

static void *on_loop_start(void *arg, unsigned index)
{
    struct kiln_app *app = arg;
    (void)index;
    if (app->db.dialect != KILN_DB_POSTGRES)
        return NULL;
    struct kiln_stores *l = kiln_calloc(1, sizeof *l);
    l->db = kiln_db_pool_open(&app->db, app->loop_db_connections);
    l->kv = kiln_kv_open_shared(app->kv_store);
    return l;
}

void kiln_app_init(struct kiln_app *app, const struct kiln_config *cfg)
{
    memset(app, 0, sizeof *app);
    app->cfg = cfg;
    app->db.dialect = cfg->db_conninfo ? KILN_DB_POSTGRES : KILN_DB_SQLITE;
    app->db.conninfo = cfg->db_conninfo;
    app->db.path = cfg->db_path;
    app->db.prepared_statements = cfg->db_prepared_statements;
    app->db.connect_timeout_s = cfg->db_connect_timeout_s;
    app->db.query_timeout_ms = cfg->db_query_timeout_ms;

    app->kv.host = cfg->valkey_host;
    app->kv.port = cfg->valkey_port;
    app->kv.user = cfg->valkey_user;
    app->kv.password = cfg->valkey_password;
    app->kv.tls = cfg->valkey_tls;
    app->kv.ca_file = cfg->valkey_ca_file;
    app->kv.connect_timeout_ms = cfg->valkey_connect_timeout_ms;
    app->kv.command_timeout_ms = cfg->valkey_command_timeout_ms;
    app->kv.max_keys = cfg->kv_memory_max_keys;
    app->kv_store = kiln_kv_store_new(&app->kv);

    app->hooks.start = on_worker_start;
    app->hooks.stop = on_worker_stop;
    app->hooks.arg = app;

    /* DB_POOL_SIZE connections shared out over the loops, at least one each. */
    unsigned loops = cfg->http_loops ? cfg->http_loops : 1;
    app->loop_db_connections = cfg->workers / loops ? cfg->workers / loops : 1;
    app->loop_hooks.start = on_loop_start;
    app->loop_hooks.stop = on_worker_stop;
    app->loop_hooks.arg = app;
}

void kiln_app_free(struct kiln_app *app)
{
    kiln_kv_store_free(app->kv_store);
    app->kv_store = NULL;
}

struct kiln_db *app_db(const struct kiln_req *req)
{
    const struct kiln_stores *w = req->context;
    return w ? w->db : NULL;
}

struct kiln_kv *app_kv(const struct kiln_req *req)
{
    const struct kiln_stores *w = req->context;
    return w ? w->kv : NULL;
}
