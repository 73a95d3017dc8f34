/* Migration runner; see migrate.h for the locking and checksum rules. */
#include "store/migrate.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/str.h"

/* Any constant will do; it only has to be the same in every kiln process. */
#define MIGRATION_LOCK_KEY "7335311"

void kiln_migration_checksum(const struct kiln_migration *m, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(m->sql, m->len, md, &n, EVP_sha256(), NULL);
    kiln_hex_encode(md, 32, out);
}

static const char *create_table(enum kiln_db_dialect d)
{
    return d == KILN_DB_POSTGRES
               ? "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 " version text PRIMARY KEY,"
                 " checksum text NOT NULL,"
                 " applied_at timestamptz NOT NULL DEFAULT now())"
               : "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 " version TEXT PRIMARY KEY,"
                 " checksum TEXT NOT NULL,"
                 " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))";
}

int kiln_migrate_list(struct kiln_db *db, const struct kiln_migration *list, size_t n,
                      kiln_migrate_applied_fn on_applied, void *ctx, size_t *applied,
                      char *err, size_t errlen)
{
    enum kiln_db_dialect d = kiln_db_dialect(db);
    kiln_arena *a = kiln_arena_new(8192);
    struct kiln_db_rows rows;
    bool in_tx = false;
    int rc;
    *applied = 0;
    err[0] = '\0';

    rc = kiln_db_exec(db, d == KILN_DB_POSTGRES ? "BEGIN" : "BEGIN IMMEDIATE");
    if (rc)
        goto fail;
    in_tx = true;
    if (d == KILN_DB_POSTGRES &&
        (rc = kiln_db_query(db, a, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", NULL,
                            0, NULL)))
        goto fail;
    if ((rc = kiln_db_exec(db, create_table(d))))
        goto fail;
    if ((rc = kiln_db_query(db, a, "SELECT version, checksum FROM schema_migrations", NULL, 0,
                            &rows)))
        goto fail;

    for (size_t i = 0; i < n; i++) {
        char sum[65];
        kiln_migration_checksum(&list[i], sum);
        bool done = false;
        for (size_t r = 0; r < rows.nrows; r++) {
            if (!kiln_str_eq_c(kiln_db_text(&rows, r, 0), list[i].version))
                continue;
            done = true;
            if (!kiln_str_eq_c(kiln_db_text(&rows, r, 1), sum)) {
                snprintf(err, errlen,
                         "migration %s was changed after it was applied (checksum in "
                         "schema_migrations differs from the file); add a new migration "
                         "instead of editing an applied one",
                         list[i].version);
                rc = KILN_ECONFLICT;
                goto fail;
            }
        }
        if (done)
            continue;
        if ((rc = kiln_db_exec(db, list[i].sql))) {
            snprintf(err, errlen, "migration %s failed: %s", list[i].version,
                     kiln_db_last_error(db));
            goto fail;
        }
        kiln_str params[2] = { kiln_str_c(list[i].version), kiln_str_c(sum) };
        if ((rc = kiln_db_query(db, a,
                                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                                params, 2, NULL)))
            goto fail;
        (*applied)++;
        if (on_applied)
            on_applied(ctx, list[i].version);
    }
    rc = kiln_db_commit(db);
    in_tx = false;
    if (rc)
        goto fail;
    kiln_arena_free(a);
    return 0;

fail:
    if (!err[0])
        snprintf(err, errlen, "migrations: %s", kiln_db_last_error(db));
    if (in_tx)
        kiln_db_rollback(db);
    kiln_arena_free(a);
    *applied = 0;
    return rc ? rc : KILN_EDB;
}

int kiln_migrate(struct kiln_db *db, kiln_migrate_applied_fn on_applied, void *ctx,
                 size_t *applied, char *err, size_t errlen)
{
    if (kiln_db_dialect(db) == KILN_DB_POSTGRES)
        return kiln_migrate_list(db, kiln__migrations_postgres, kiln__migrations_postgres_count,
                                 on_applied, ctx, applied, err, errlen);
    return kiln_migrate_list(db, kiln__migrations_sqlite, kiln__migrations_sqlite_count,
                             on_applied, ctx, applied, err, errlen);
}
