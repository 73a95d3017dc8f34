/*
 * SQLite driver: the embedded default, one file at DB_PATH. Every worker has
 * its own connection (SQLITE_OPEN_NOMUTEX), WAL mode lets readers run beside
 * the one writer, busy_timeout makes writers queue instead of failing, and
 * synchronous=FULL makes an answered write survive power loss, not only a
 * crash. Statements are prepared once per connection and reused. $1..$n in
 * the SQL are SQLite named parameters ("$1"), bound by name.
 */
#include "store/db_internal.h"

#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include "core/dl.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <wctype.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"

static sqlite3 *S(struct kiln_db *db)
{
    return db->conn;
}

static void sqlite_disconnect(struct kiln_db *db)
{
    for (unsigned i = 0; i < KILN_DB_STMT_CACHE; i++) {
        kiln_sqlite.sqlite3_finalize(db->cache[i].stmt);
        free(db->cache[i].sql);
        db->cache[i].stmt = NULL;
        db->cache[i].sql = NULL;
        db->cache[i].hash = 0;
    }
    kiln_sqlite.sqlite3_close_v2(S(db));
    db->conn = NULL;
}

/* mkdir -p for the folder of path. */
static int make_parent(struct kiln_db *db, const char *path)
{
    char *dir = kiln_strdup(path);
    char *slash = strrchr(dir, '/');
    int err = 0;
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            mkdir(dir, 0750);
            *p = '/';
        }
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            kiln__db_error(db, "sqlite: cannot create folder %s: %s", dir, strerror(errno));
            err = KILN_EUNAVAILABLE;
        }
    }
    free(dir);
    return err;
}


/* ---- LIKE that folds case beyond ASCII ---- */

/*
 * SQLite's LIKE (and lower()) fold ASCII letters only; PostgreSQL's lower()
 * folds every letter. like() is replaced on each connection so that a
 * search for "ÉCOLE" finds "école" on both databases: code points compared
 * after towlower in the C.UTF-8 locale, % and _ on code points, the ESCAPE
 * character honoured. Nothing in kiln relies on LIKE using an index.
 */
static locale_t utf8_loc;
static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;

static void utf8_init(void)
{
    utf8_loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* Next code point of s (well-formed or not: a bad byte reads as itself). */
static uint32_t next_cp(const unsigned char **s, const unsigned char *end)
{
    const unsigned char *p = *s;
    uint32_t c = *p;
    size_t len = c < 0x80 ? 1 : c >= 0xC0 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3
               : c >= 0xF0 && c < 0xF8 ? 4 : 1;
    if (len > (size_t)(end - p))
        len = 1;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            len = 1;
    if (len == 2)
        c = (c & 0x1F) << 6 | (p[1] & 0x3F);
    else if (len == 3)
        c = (c & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    else if (len == 4)
        c = (c & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 |
            (p[3] & 0x3F);
    *s = p + len;
    return c;
}

static uint32_t fold(uint32_t c)
{
    if (utf8_loc)
        return (uint32_t)towlower_l((wint_t)c, utf8_loc);
    return c < 0x80 ? (uint32_t)tolower((int)c) : c; /* no C.UTF-8: ASCII, as SQLite */
}

/* Does text match pattern? Iterative, with one backtrack point per %. */
static bool like_match(const unsigned char *p, const unsigned char *pe, const unsigned char *t,
                       const unsigned char *te, uint32_t esc)
{
    const unsigned char *star_p = NULL, *star_t = NULL;
    while (t < te) {
        if (p < pe) {
            const unsigned char *q = p;
            uint32_t pc = next_cp(&q, pe);
            if (pc == '%' && pc != esc) {
                star_p = p = q;
                star_t = t;
                continue;
            }
            const unsigned char *u = t;
            uint32_t tc = next_cp(&u, te);
            bool literal = false;
            if (pc == esc && q < pe) {
                pc = next_cp(&q, pe);
                literal = true;
            }
            if ((!literal && pc == '_' && pc != esc) || fold(pc) == fold(tc)) {
                p = q;
                t = u;
                continue;
            }
        }
        if (!star_p)
            return false;
        /* Let the last % swallow one more code point. */
        next_cp(&star_t, te);
        t = star_t;
        p = star_p;
    }
    while (p < pe) {
        const unsigned char *q = p;
        if (next_cp(&q, pe) != '%')
            return false;
        p = q;
    }
    return true;
}

static void like_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    /* like(pattern, text [, escape]) */
    const unsigned char *pat = kiln_sqlite.sqlite3_value_text(argv[0]);
    const unsigned char *txt = kiln_sqlite.sqlite3_value_text(argv[1]);
    if (!pat || !txt)
        return; /* NULL */
    uint32_t esc = 0xFFFFFFFFu;
    if (argc == 3) {
        const unsigned char *e = kiln_sqlite.sqlite3_value_text(argv[2]);
        int elen = kiln_sqlite.sqlite3_value_bytes(argv[2]);
        const unsigned char *ee = e ? e + elen : NULL;
        if (!e || elen == 0) {
            kiln_sqlite.sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
            return;
        }
        esc = next_cp(&e, ee);
        if (e != ee) {
            kiln_sqlite.sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
            return;
        }
    }
    kiln_sqlite.sqlite3_result_int(ctx, like_match(pat, pat + kiln_sqlite.sqlite3_value_bytes(argv[0]), txt,
                                       txt + kiln_sqlite.sqlite3_value_bytes(argv[1]), esc));
}

static int sqlite_connect(struct kiln_db *db, unsigned timeout_ms)
{
    (void)timeout_ms; /* a local file: opening does not wait on a network */
    sqlite3 *s = NULL;
    if (kiln_dl_sqlite() != 0) {
        kiln__db_error(db, "sqlite: cannot load " KILN_SQLITE_SONAME);
        return KILN_EUNAVAILABLE;
    }
    int err = make_parent(db, db->cfg->path);
    if (err)
        return err;
    int rc = kiln_sqlite.sqlite3_open_v2(db->cfg->path, &s,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        kiln__db_error(db, "sqlite: cannot open %s: %s", db->cfg->path,
                       s ? kiln_sqlite.sqlite3_errmsg(s) : kiln_sqlite.sqlite3_errstr(rc));
        kiln_sqlite.sqlite3_close_v2(s);
        return KILN_EUNAVAILABLE;
    }
    kiln_sqlite.sqlite3_busy_timeout(s, 5000);
    char *msg = NULL;
    /*
     * Turning a fresh file to WAL needs an exclusive lock, and SQLite
     * answers BUSY at once, without the busy handler, while another
     * process holds one (several kilns starting on a new file): retry for
     * as long as the busy timeout would have waited.
     */
    for (int tries = 0;; tries++) {
        rc = kiln_sqlite.sqlite3_exec(s,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                          "PRAGMA foreign_keys=ON;",
                          NULL, NULL, &msg);
        if ((rc & 0xFF) != SQLITE_BUSY || tries >= 500)
            break;
        kiln_sqlite.sqlite3_free(msg);
        msg = NULL;
        kiln_sqlite.sqlite3_sleep(10);
    }
    if (rc != SQLITE_OK) {
        kiln__db_error(db, "sqlite: %s: %s", db->cfg->path, msg ? msg : kiln_sqlite.sqlite3_errstr(rc));
        kiln_sqlite.sqlite3_free(msg);
        kiln_sqlite.sqlite3_close_v2(s);
        return KILN_EUNAVAILABLE;
    }
    pthread_once(&utf8_once, utf8_init);
    kiln_sqlite.sqlite3_create_function(s, "like", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, like_func,
                            NULL, NULL);
    kiln_sqlite.sqlite3_create_function(s, "like", 3, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, like_func,
                            NULL, NULL);
    db->conn = s;
    return 0;
}

static int error_of(struct kiln_db *db, int rc)
{
    kiln__db_error(db, "sqlite: %s", kiln_sqlite.sqlite3_errmsg(S(db)));
    switch (rc & 0xFF) {
    case SQLITE_CONSTRAINT: return KILN_ECONFLICT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_INTERRUPT:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN: return KILN_EUNAVAILABLE;
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return KILN_EINVAL;
    default: return KILN_EDB;
    }
}

static sqlite3_stmt *statement(struct kiln_db *db, const char *sql, int *err)
{
    uint64_t h = kiln_db_sql_hash(sql);
    for (unsigned i = 0; i < KILN_DB_STMT_CACHE; i++)
        if (db->cache[i].sql && db->cache[i].hash == h && !strcmp(db->cache[i].sql, sql))
            return db->cache[i].stmt;
    sqlite3_stmt *st = NULL;
    int rc = kiln_sqlite.sqlite3_prepare_v3(S(db), sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        *err = error_of(db, rc);
        return NULL;
    }
    unsigned slot = db->cache_next++ % KILN_DB_STMT_CACHE;
    kiln_sqlite.sqlite3_finalize(db->cache[slot].stmt);
    free(db->cache[slot].sql);
    db->cache[slot].hash = h;
    db->cache[slot].sql = kiln_strdup(sql);
    db->cache[slot].stmt = st;
    return st;
}

/* Progress handler: interrupt a statement past its deadline. */
static int on_progress(void *arg)
{
    return kiln_now_ms() > *(uint64_t *)arg;
}

static int sqlite_query(struct kiln_db *db, kiln_arena *a, const char *sql,
                        const char *const *params, size_t nparams, struct kiln_db_rows *rows,
                        unsigned timeout_ms)
{
    int err = 0;
    sqlite3_stmt *st = statement(db, sql, &err);
    if (!st)
        return err;
    for (size_t i = 0; i < nparams; i++) {
        char name[24];
        snprintf(name, sizeof name, "$%zu", i + 1);
        int idx = kiln_sqlite.sqlite3_bind_parameter_index(st, name);
        if (idx == 0)
            continue; /* not used by this statement */
        int rc = params[i] ? kiln_sqlite.sqlite3_bind_text(st, idx, params[i], -1, SQLITE_TRANSIENT)
                           : kiln_sqlite.sqlite3_bind_null(st, idx);
        if (rc != SQLITE_OK) {
            err = error_of(db, rc);
            goto out;
        }
    }

    uint64_t deadline = kiln_now_ms() + timeout_ms;
    kiln_sqlite.sqlite3_progress_handler(S(db), 1000, on_progress, &deadline);
    size_t cap = 0, n = 0;
    int nc = kiln_sqlite.sqlite3_column_count(st);
    kiln_str *cells = NULL;
    for (;;) {
        int rc = kiln_sqlite.sqlite3_step(st);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            err = error_of(db, rc);
            break;
        }
        if (!rows)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            kiln_str *grown = kiln_arena_alloc(a, ncap * (size_t)(nc ? nc : 1) * sizeof *grown);
            if (n)
                memcpy(grown, cells, n * (size_t)nc * sizeof *grown);
            cells = grown;
            cap = ncap;
        }
        for (int j = 0; j < nc; j++) {
            kiln_str *cell = &cells[n * (size_t)nc + (size_t)j];
            if (kiln_sqlite.sqlite3_column_type(st, j) == SQLITE_NULL) {
                *cell = KILN_STR_NULL;
            } else {
                const char *t = (const char *)kiln_sqlite.sqlite3_column_text(st, j);
                size_t len = (size_t)kiln_sqlite.sqlite3_column_bytes(st, j);
                *cell = (kiln_str){ kiln_arena_strndup(a, t ? t : "", len), len };
            }
        }
        n++;
    }
    kiln_sqlite.sqlite3_progress_handler(S(db), 0, NULL, NULL);
    if (!err && rows) {
        rows->nrows = n;
        rows->ncols = (size_t)nc;
        rows->cells = cells ? cells : kiln_arena_alloc(a, sizeof *cells);
        rows->names = kiln_arena_alloc(a, (size_t)(nc ? nc : 1) * sizeof *rows->names);
        for (int j = 0; j < nc; j++) {
            const char *name = kiln_sqlite.sqlite3_column_name(st, j);
            rows->names[j] = kiln_arena_strndup(a, name ? name : "", name ? strlen(name) : 0);
        }
        rows->affected = (uint64_t)kiln_sqlite.sqlite3_changes64(S(db));
    }
out:
    kiln_sqlite.sqlite3_reset(st);
    kiln_sqlite.sqlite3_clear_bindings(st);
    return err;
}

static int sqlite_exec(struct kiln_db *db, const char *sql, unsigned timeout_ms)
{
    char *msg = NULL;
    uint64_t deadline = kiln_now_ms() + timeout_ms;
    kiln_sqlite.sqlite3_progress_handler(S(db), 1000, on_progress, &deadline);
    int rc = kiln_sqlite.sqlite3_exec(S(db), sql, NULL, NULL, &msg);
    kiln_sqlite.sqlite3_progress_handler(S(db), 0, NULL, NULL);
    if (rc == SQLITE_OK)
        return 0;
    int err = error_of(db, rc);
    if (msg)
        kiln__db_error(db, "sqlite: %s", msg);
    kiln_sqlite.sqlite3_free(msg);
    return err;
}

const struct kiln_db_ops kiln__db_sqlite_ops = {
    .name = "sqlite",
    .connect = sqlite_connect,
    .disconnect = sqlite_disconnect,
    .query = sqlite_query,
    .exec = sqlite_exec,
};
