/*
 * The store handles one worker thread owns: what req->context points to on
 * a worker (api/app.c opens them). Layers above store/ reach the stores of
 * the request they serve through this.
 */
#ifndef KILN_STORE_STORES_H
#define KILN_STORE_STORES_H

#include "store/db.h"
#include "store/kv.h"

struct kiln_stores {
    struct kiln_db *db;
    struct kiln_kv *kv;
};

#endif
