/*
 * Schema migrations: the SQL files under app/migrations/<dialect>/, embedded
 * in the binary at build time (scripts/embed-migrations.sh), applied in
 * version order and recorded in schema_migrations(version, checksum,
 * applied_at). A file changed after it was applied is an error, not a
 * silent skip: the database would no longer be what the code expects.
 *
 * All pending migrations apply in one transaction. On PostgreSQL that
 * transaction first takes pg_advisory_xact_lock, so that many processes
 * migrating at once (a deploy starting several tasks) apply each migration
 * exactly once; the transaction-scoped lock, unlike pg_advisory_lock, is
 * safe through transaction-mode poolers (pgbouncer, RDS Proxy), which may
 * hand each transaction a different server connection. On SQLite,
 * BEGIN IMMEDIATE takes the write lock.
 */
#ifndef KILN_STORE_MIGRATE_H
#define KILN_STORE_MIGRATE_H

#include <stddef.h>

#include "store/db.h"

struct kiln_migration {
    const char *version;   /* "0001_users" (the file name without .sql) */
    const char *sql;
    size_t len;
};

/* The embedded list for a dialect (generated). */
extern const struct kiln_migration kiln__migrations_postgres[];
extern const size_t kiln__migrations_postgres_count;
extern const struct kiln_migration kiln__migrations_sqlite[];
extern const size_t kiln__migrations_sqlite_count;

/* Called once per migration applied. */
typedef void (*kiln_migrate_applied_fn)(void *ctx, const char *version);

/*
 * Apply the pending migrations of list (n entries, in order). Returns 0 and
 * sets *applied, or an error with a one-line reason in err (never a
 * password or parameter).
 */
int kiln_migrate_list(struct kiln_db *db, const struct kiln_migration *list, size_t n,
                      kiln_migrate_applied_fn on_applied, void *ctx, size_t *applied,
                      char *err, size_t errlen);
/* The same with the embedded migrations of db's dialect. */
int kiln_migrate(struct kiln_db *db, kiln_migrate_applied_fn on_applied, void *ctx,
                 size_t *applied, char *err, size_t errlen);

/* SHA-256 of a migration's text as 64 hex characters and a NUL. */
void kiln_migration_checksum(const struct kiln_migration *m, char out[65]);

#endif
