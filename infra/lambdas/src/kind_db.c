/*
 * The PostgreSQL app user, alternating users (AWS's "multi user" strategy):
 * the secret {"engine":"postgres","host","port","dbname","username",
 * "password"} switches between two roles, <user> and <user>_clone, at every
 * rotation, and each rotation sets a new password on the role that is NOT in
 * use. The role in use keeps its password, so every connection Kiln opened
 * or will open with the current value keeps working until the next
 * rotation, which is the one that changes that role's password.
 *
 *   createSecret  pending = current with the other username (append or
 *                 strip "_clone", as AWS's template does) and a new random
 *                 password (32 bytes from getrandom, base64url)
 *   setSecret     as the master user (MASTER_SECRET_ARN): create the other
 *                 role when missing, as a member of the current user (so it
 *                 has every privilege and membership the current user has,
 *                 through inheritance) with the current user's per-database
 *                 settings copied (ALTER ROLE … IN DATABASE … SET, e.g. a
 *                 SET role = <owner> that makes both users create objects
 *                 as the same owner); then ALTER ROLE … LOGIN PASSWORD with
 *                 a SCRAM-SHA-256 verifier computed here: the password
 *                 itself never reaches the server (nor its statement log).
 *                 Skipped when the pending login already works (a retry).
 *   testSecret    log in as the pending user with the pending password and
 *                 check session_user.
 *
 * Statements that name roles are built by the server's format() (%I for
 * identifiers, %L for literals) from parameters, then executed: no quoting
 * here. TLS: DB_SSLMODE (default require), DB_SSLROOTCERT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "aws/secrets.h"
#include "core/arena.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"
#include "rotate.h"
#include "store/db.h"
#include "core/wipe.h"

#define PASSWORD_BYTES 32
#define SCRAM_ITERATIONS 4096
#define CLONE_SUFFIX "_clone"
#define NAMEDATALEN 64

struct pg_login {
    char *host;
    unsigned port;
    char *dbname;
    char *username;
    char *password;
};

static void login_free(struct pg_login *l)
{
    free(l->host);
    free(l->dbname);
    free(l->username);
    kiln_free_secret(l->password);
    memset(l, 0, sizeof *l);
}

static char *field(json_t *o, const char *name)
{
    const char *v = json_string_value(json_object_get(o, name));
    return v && *v ? strdup(v) : NULL;
}

/* Parse a secret of the RDS shape. which: "current", "pending", "master".
 * Without need_host (the master secret) host and port may be missing: an
 * RDS-managed master secret holds only username and password; the caller
 * then takes the app secret's (port 0 here). */
static int parse_login(const char *secret, const char *which, bool need_host,
                       struct pg_login *out, struct rot_error *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = json_loads(secret, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        rot_fail(e, "InvalidSecret", "the %s secret is not a JSON object", which);
        return -1;
    }
    const char *eng = json_string_value(json_object_get(o, "engine"));
    bool engine_ok = !eng || !strcmp(eng, "postgres") || !strcmp(eng, "aurora-postgresql");
    char engine[48];
    snprintf(engine, sizeof engine, "%s", eng ? eng : "");
    json_t *port = json_object_get(o, "port");
    out->host = field(o, "host");
    out->dbname = field(o, "dbname");
    out->username = field(o, "username");
    out->password = field(o, "password");
    if (json_is_integer(port))
        out->port = (unsigned)json_integer_value(port);
    else if (json_is_string(port))
        out->port = (unsigned)strtoul(json_string_value(port), NULL, 10);
    else if (!port)
        out->port = need_host ? 5432 : 0;
    kiln_json_wipe(o);
    json_decref(o);

    const char *missing = need_host && !out->host ? "host"
                        : !out->username          ? "username"
                        : !out->password          ? "password"
                                                  : NULL;
    if (!engine_ok) {
        rot_fail(e, "InvalidSecret", "the %s secret's engine is \"%.40s\", not postgres", which,
                 engine);
    } else if (missing) {
        rot_fail(e, "InvalidSecret", "the %s secret has no \"%s\"", which, missing);
    } else if ((need_host && out->port == 0) || out->port > 65535) {
        rot_fail(e, "InvalidSecret", "the %s secret's port is not a port number", which);
    } else if (strlen(out->username) >= NAMEDATALEN) {
        rot_fail(e, "InvalidSecret", "the %s secret's username is too long", which);
    } else {
        return 0;
    }
    login_free(out);
    return -1;
}

/* One libpq key=value pair; values quoted as libpq wants (\\ and \'). */
static void conninfo_add(kiln_buf *b, const char *key, const char *v)
{
    if (!v)
        return;
    kiln_buf_printf(b, "%s%s='", b->len ? " " : "", key);
    for (const char *c = v; *c; c++) {
        if (*c == '\\' || *c == '\'')
            kiln_buf_append(b, "\\", 1);
        kiln_buf_append(b, c, 1);
    }
    kiln_buf_append(b, "'", 1);
}

/* The password goes to libpq through the credentials hook, never into the
 * conninfo string. */
static int password_of(void *ctx, const struct kiln_db_target *target, char *user,
                       size_t user_cap, char *password, size_t password_cap, char *err,
                       size_t errcap)
{
    (void)target, (void)user, (void)user_cap;
    const struct pg_login *l = ctx;
    if (strlen(l->password) >= password_cap) {
        snprintf(err, errcap, "password too long");
        return KILN_EINVAL;
    }
    snprintf(password, password_cap, "%s", l->password);
    return 0;
}

struct pg_session {
    char *conninfo;
    struct kiln_db_config cfg;
    struct kiln_db *db;
};

static void session_open(const struct rot_env *env, const struct pg_login *l, const char *dbname,
                         struct pg_session *s)
{
    char port[16];
    kiln_buf b;
    kiln_buf_init(&b, 16 * 1024);
    snprintf(port, sizeof port, "%u", l->port);
    conninfo_add(&b, "host", l->host);
    conninfo_add(&b, "port", port);
    conninfo_add(&b, "dbname", dbname);
    conninfo_add(&b, "user", l->username);
    conninfo_add(&b, "sslmode", env->db_sslmode);
    conninfo_add(&b, "sslrootcert", env->db_sslrootcert);
    conninfo_add(&b, "application_name", "kiln-rotate");
    kiln_buf_append(&b, "", 1);
    s->conninfo = b.p;
    s->cfg = (struct kiln_db_config){
        .dialect = KILN_DB_POSTGRES, .conninfo = s->conninfo,
        .connect_timeout_s = env->db_connect_timeout_s, .query_timeout_ms = 30000,
        .credentials = password_of, .credentials_ctx = (void *)l,
    };
    s->db = kiln_db_open(&s->cfg);
}

static void session_close(struct pg_session *s)
{
    kiln_db_close(s->db);
    free(s->conninfo);
    memset(s, 0, sizeof *s);
}

/* Log in as l and read session_user. 0, or -1 with why set. */
static int try_login(const struct rot_env *env, const struct pg_login *l, char *why, size_t cap)
{
    struct pg_session s;
    session_open(env, l, l->dbname, &s);
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_db_rows rows;
    int rc = kiln_db_query(s.db, a, "SELECT session_user::text", NULL, 0, &rows);
    if (rc)
        snprintf(why, cap, "%s", kiln_db_last_error(s.db));
    else if (rows.nrows != 1 || !kiln_str_eq_c(kiln_db_text(&rows, 0, 0), l->username)) {
        snprintf(why, cap, "logged in, but not as %s", l->username);
        rc = -1;
    }
    kiln_arena_free(a);
    session_close(&s);
    return rc ? -1 : 0;
}

/* ---- createSecret ------------------------------------------------------ */

/* The other user of the pair: AWS's convention. */
static int other_user(const char *user, char *out, size_t cap)
{
    size_t n = strlen(user), sl = strlen(CLONE_SUFFIX);
    if (n > sl && strcmp(user + n - sl, CLONE_SUFFIX) == 0)
        snprintf(out, cap, "%.*s", (int)(n - sl), user);
    else if (n + sl < NAMEDATALEN)
        snprintf(out, cap, "%s" CLONE_SUFFIX, user);
    else
        return -1;
    return 0;
}

static int make_pending(const struct rot_env *env, const struct rot_event *ev,
                        const char *current, kiln_buf *pending, struct rot_error *e)
{
    (void)env, (void)ev;
    struct pg_login cur;
    if (parse_login(current, "current", true, &cur, e))
        return -1;
    char other[NAMEDATALEN], password[PASSWORD_BYTES * 2];
    int rc = -1;
    if (other_user(cur.username, other, sizeof other) != 0) {
        rot_fail(e, "InvalidSecret", "no room for \"%s\" after the username (63 bytes at most)",
                 CLONE_SUFFIX);
    } else if (rot_random_string(PASSWORD_BYTES, password, sizeof password) != 0) {
        rot_fail(e, "RandomError", "getrandom failed");
    } else {
        /* Every other field (host, port, dbname, engine…) stays. */
        json_t *o = json_loads(current, 0, NULL);
        json_object_set_new(o, "username", json_string(other));
        json_object_set_new(o, "password", json_string(password));
        char *s = json_dumps(o, JSON_COMPACT);
        kiln_buf_append_c(pending, s);
        kiln_buf_append(pending, "", 1);
        pending->len--;
        kiln_free_secret(s);
        kiln_json_wipe(o);
        json_decref(o);
        kiln_log(KILN_LOG_INFO, "createSecret: the pending value switches users", "request_id",
                 ev->request_id, "from", cur.username, "to", other, NULL);
        rc = 0;
    }
    explicit_bzero(password, sizeof password);
    login_free(&cur);
    return rc;
}

/* ---- setSecret ----------------------------------------------------------- */

/*
 * The SCRAM-SHA-256 verifier PostgreSQL stores for password (RFC 5802, RFC
 * 7677; PostgreSQL's scram_build_secret): SCRAM-SHA-256$<iterations>:<salt>
 * $<StoredKey>:<ServerKey>, standard base64. ALTER ROLE … PASSWORD takes it
 * as is. The password is ASCII from base64url, so SASLprep leaves it alone.
 */
static int scram_verifier(const char *password, char *out, size_t cap)
{
    unsigned char salt[16], salted[32], client[32], stored[32], server[32];
    unsigned int n = 0;
    char salt64[32], stored64[48], server64[48];
    int ok = 0;
    if (kiln_random_bytes(salt, sizeof salt) == 0 &&
        PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof salt, SCRAM_ITERATIONS,
                          EVP_sha256(), sizeof salted, salted) == 1 &&
        HMAC(EVP_sha256(), salted, sizeof salted, (const unsigned char *)"Client Key", 10,
             client, &n) && n == 32 &&
        EVP_Digest(client, sizeof client, stored, &n, EVP_sha256(), NULL) == 1 && n == 32 &&
        HMAC(EVP_sha256(), salted, sizeof salted, (const unsigned char *)"Server Key", 10,
             server, &n) && n == 32) {
        EVP_EncodeBlock((unsigned char *)salt64, salt, sizeof salt);
        EVP_EncodeBlock((unsigned char *)stored64, stored, sizeof stored);
        EVP_EncodeBlock((unsigned char *)server64, server, sizeof server);
        ok = snprintf(out, cap, "SCRAM-SHA-256$%d:%s$%s:%s", SCRAM_ITERATIONS, salt64, stored64,
                      server64) < (int)cap;
    }
    explicit_bzero(salted, sizeof salted);
    explicit_bzero(client, sizeof client);
    explicit_bzero(stored, sizeof stored);
    explicit_bzero(server, sizeof server);
    return ok ? 0 : -1;
}

/* SELECT format(fmt, args…) on the server, then run its text. */
#define MAX_FORMAT_ARGS 16
static int run_formatted(struct kiln_db *db, const char *fmt, const char *const *args, size_t n)
{
    char sql[512];
    kiln_str params[MAX_FORMAT_ARGS + 1];
    size_t len = (size_t)snprintf(sql, sizeof sql, "SELECT format($1::text");
    params[0] = kiln_str_c(fmt);
    if (n > MAX_FORMAT_ARGS)
        return KILN_EINVAL;
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(sql + len, sizeof sql - len, ", $%zu::text", i + 2);
        params[i + 1] = kiln_str_c(args[i]);
    }
    snprintf(sql + len, sizeof sql - len, ")");
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_db_rows rows;
    int rc = kiln_db_query(db, a, sql, params, n + 1, &rows);
    if (rc == 0) {
        kiln_str stmt = kiln_db_text(&rows, 0, 0);
        char *text = strndup(stmt.p ? stmt.p : "", stmt.len);
        if (stmt.p)
            explicit_bzero((char *)stmt.p, stmt.len);
        rc = kiln_db_exec(db, text);
        kiln_free_secret(text);
    }
    kiln_arena_free(a);
    return rc;
}

/* GUCs whose values are lists (PostgreSQL's GUC_LIST_QUOTE): pg_dumpall
 * splits them and quotes each element. */
static bool list_guc(const char *name)
{
    static const char *const lists[] = { "search_path", "temp_tablespaces",
                                         "session_preload_libraries", "local_preload_libraries",
                                         "shared_preload_libraries", "unix_socket_directories",
                                         NULL };
    for (size_t i = 0; lists[i]; i++)
        if (strcmp(lists[i], name) == 0)
            return true;
    return false;
}

#define MAX_LIST (MAX_FORMAT_ARGS - 3)

/* Split a stored list value (SplitGUCList: commas, blanks around, "quoted"
 * elements with "" for a quote) into at most max elements, in place; max + 1
 * when there are more. */
static size_t split_list(char *v, char **out, size_t max)
{
    size_t n = 0;
    char *r = v;
    while (*r) {
        while (*r == ' ' || *r == '\t')
            r++;
        char *w = r, *start = r;
        if (*r == '"') {
            start = w = ++r;
            while (*r && !(r[0] == '"' && r[1] != '"')) {
                if (r[0] == '"')
                    r++;
                *w++ = *r++;
            }
            if (*r == '"')
                r++;
        } else {
            while (*r && *r != ',' && *r != ' ' && *r != '\t')
                *w++ = *r++;
        }
        while (*r == ' ' || *r == '\t')
            r++;
        bool more = *r == ',';
        if (more)
            r++;
        *w = '\0';
        if (n == max)
            return max + 1;       /* too many */
        out[n++] = start;
        if (!more)
            break;
    }
    return n;
}

/* The current user's per-database settings (pg_db_role_setting) onto
 * pending_user. */
static int copy_settings(struct kiln_db *db, const struct rot_event *ev,
                         const char *current_user, const char *pending_user, char *why,
                         size_t cap)
{
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_db_rows rows;
    kiln_str p[1] = { kiln_str_c(current_user) };
    int rc = kiln_db_query(
        db, a,
        "SELECT coalesce(d.datname::text, ''), c.setting "
        "FROM pg_catalog.pg_db_role_setting s "
        "LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase "
        "CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting) "
        "WHERE s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) "
        "ORDER BY 1, 2",
        p, 1, &rows);
    if (rc)
        snprintf(why, cap, "reading %s's settings: %s", current_user, kiln_db_last_error(db));
    for (size_t i = 0; rc == 0 && i < rows.nrows; i++) {
        kiln_str dbname = kiln_db_text(&rows, i, 0), setting = kiln_db_text(&rows, i, 1);
        char *s = strndup(setting.p ? setting.p : "", setting.len);
        char *eq = strchr(s, '=');
        if (!eq) {
            free(s);
            continue;
        }
        *eq = '\0';
        char *elems[MAX_LIST];
        size_t n = list_guc(s) ? split_list(eq + 1, elems, MAX_LIST) : (elems[0] = eq + 1, 1);
        char fmt[MAX_FORMAT_ARGS * 4 + 64];
        const char *args[MAX_FORMAT_ARGS];
        size_t k = 0;
        char *d = strndup(dbname.p ? dbname.p : "", dbname.len);
        args[k++] = pending_user;
        if (d[0])
            args[k++] = d;
        args[k++] = s;
        if (n > MAX_LIST) {
            snprintf(why, cap, "%s's setting %s has more than %d elements", current_user, s,
                     MAX_LIST);
            free(d);
            free(s);
            rc = KILN_EINVAL;
            break;
        }
        int len = snprintf(fmt, sizeof fmt, "ALTER ROLE %%I%s SET %%I = ",
                           d[0] ? " IN DATABASE %I" : "");
        for (size_t j = 0; j < n; j++) {
            len += snprintf(fmt + len, sizeof fmt - (size_t)len, "%s%%L", j ? ", " : "");
            args[k++] = elems[j];
        }
        rc = run_formatted(db, fmt, args, k);
        if (rc)
            snprintf(why, cap, "copying %s's setting %s%s%s: %s", current_user, s,
                     d[0] ? " in database " : "", d, kiln_db_last_error(db));
        else
            kiln_log(KILN_LOG_INFO, "setSecret: setting copied to the new role", "request_id",
                     ev->request_id, "role", pending_user, "setting", s, "database",
                     d[0] ? d : NULL, NULL);
        free(d);
        free(s);
    }
    kiln_arena_free(a);
    return rc;
}

/*
 * The first rotation of a new cluster: the secret names a user that does
 * not exist yet (Terraform wrote the secret; nobody has created the role).
 * Create it with the secret's password, under a NOLOGIN owner role
 * "<user>_owner" that owns the schema's objects, and make every session of
 * the user act as that owner (ALTER ROLE ... IN DATABASE ... SET role).
 * Both alternating users then share one owner: tables a migration creates
 * under one are the other's too after the next rotation. The clone made
 * below inherits all of it (GRANT current TO clone, settings copied).
 * Nothing happens when the user exists.
 */
static int bootstrap_current(struct pg_session *s, const struct rot_event *ev,
                             const struct pg_login *cur, const char *dbname, kiln_arena *a,
                             char *why, size_t cap)
{
    struct kiln_db_rows rows;
    kiln_str p[1] = { kiln_str_c(cur->username) };
    int q = kiln_db_query(s->db, a, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", p, 1,
                          &rows);
    if (q) {
        snprintf(why, cap, "looking for role %s: %s", cur->username, kiln_db_last_error(s->db));
        return q;
    }
    if (rows.nrows)
        return 0;
    char owner[128], verifier[256];
    if (snprintf(owner, sizeof owner, "%s_owner", cur->username) >= (int)sizeof owner) {
        snprintf(why, cap, "user name too long");
        return -1;
    }
    if (scram_verifier(cur->password, verifier, sizeof verifier) != 0) {
        snprintf(why, cap, "cannot compute the SCRAM verifier");
        return -1;
    }
    kiln_str o[1] = { kiln_str_c(owner) };
    q = kiln_db_query(s->db, a, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", o, 1,
                      &rows);
    const char *own[] = { owner };
    if (q == 0 && rows.nrows == 0)
        q = run_formatted(s->db, "CREATE ROLE %I NOLOGIN", own, 1);
    if (q == 0)
        q = run_formatted(s->db, "GRANT ALL ON SCHEMA public TO %I", own, 1);
    const char *create[] = { cur->username, verifier, owner };
    if (q == 0)
        q = run_formatted(s->db, "CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I", create, 3);
    const char *set_role[] = { cur->username, dbname ? dbname : "postgres", owner };
    if (q == 0)
        q = run_formatted(s->db, "ALTER ROLE %I IN DATABASE %I SET role = %I", set_role, 3);
    explicit_bzero(verifier, sizeof verifier);
    if (q) {
        snprintf(why, cap, "creating the first user %s (owner %s): %s", cur->username, owner,
                 kiln_db_last_error(s->db));
        return q;
    }
    kiln_log(KILN_LOG_INFO, "setSecret: first rotation, created the current user", "request_id",
             ev->request_id, "role", cur->username, "owner", owner, NULL);
    return 0;
}

static int set(const struct rot_env *env, const struct rot_event *ev, const char *current,
               const char *pending, struct rot_error *e)
{
    struct pg_login cur, pend, master;
    char why[1024];
    memset(&master, 0, sizeof master);
    if (parse_login(current, "current", true, &cur, e))
        return -1;
    if (parse_login(pending, "pending", true, &pend, e)) {
        login_free(&cur);
        return -1;
    }
    int rc = -1;
    if (strcmp(cur.username, pend.username) == 0) {
        rot_fail(e, "InvalidSecret", "the pending user is the current user (%s): alternating "
                                     "users need two", cur.username);
        goto out;
    }
    /* A retry after the password was set: nothing to do. */
    if (try_login(env, &pend, why, sizeof why) == 0) {
        kiln_log(KILN_LOG_INFO, "setSecret: the pending login works already", "request_id",
                 ev->request_id, "user", pend.username, NULL);
        rc = 0;
        goto out;
    }

    kiln_buf m;
    kiln_buf_init(&m, 64 * 1024 + 1);
    int grc = kiln_secrets_get(env->master_arn, NULL, &m, why, sizeof why);
    if (grc) {
        rot_fail(e, "SecretsManagerError", "GetSecretValue of MASTER_SECRET_ARN: %s", why);
    } else if (parse_login(m.p, "master", false, &master, e) != 0) {
        grc = -1;
    } else if (master.host && strcmp(master.host, pend.host) != 0) {
        rot_fail(e, "InvalidSecret", "the master secret is for host %s, the secret for %s",
                 master.host, pend.host);
        grc = -1;
    } else {
        if (!master.host)
            master.host = strdup(pend.host);
        if (!master.port)
            master.port = pend.port;
    }
    if (m.p)
        explicit_bzero(m.p, m.len);
    kiln_buf_free(&m);
    if (grc)
        goto out;

    struct pg_session s;
    /* In the app's database: roles are the cluster's, but the first
     * rotation grants on that database's schema. */
    session_open(env, &master, pend.dbname ? pend.dbname : master.dbname ? master.dbname
                                                                        : "postgres", &s);
    char verifier[256];
    if (scram_verifier(pend.password, verifier, sizeof verifier) != 0) {
        rot_fail(e, "RandomError", "cannot compute the SCRAM verifier");
        session_close(&s);
        goto out;
    }
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_db_rows rows;
    kiln_str p[1] = { kiln_str_c(pend.username) };
    bool created = false;
    int q = kiln_db_begin(s.db);
    if (q == 0 && (q = bootstrap_current(&s, ev, &cur, pend.dbname, a, why, sizeof why)) != 0) {
        /* why says what failed */
    } else if (q == 0) {
        q = kiln_db_query(s.db, a, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", p, 1,
                          &rows);
        if (q)
            snprintf(why, sizeof why, "as the master user %s: %s", master.username,
                     kiln_db_last_error(s.db));
    } else {
        snprintf(why, sizeof why, "as the master user %s: %s", master.username,
                 kiln_db_last_error(s.db));
    }
    if (q) {
        /* why is set */
    } else if (rows.nrows == 0) {
        const char *create[] = { pend.username };
        const char *grant[] = { cur.username, pend.username };
        q = run_formatted(s.db, "CREATE ROLE %I LOGIN", create, 1);
        if (q == 0)
            q = run_formatted(s.db, "GRANT %I TO %I", grant, 2);
        if (q)
            snprintf(why, sizeof why, "creating role %s as a member of %s: %s", pend.username,
                     cur.username, kiln_db_last_error(s.db));
        else
            q = copy_settings(s.db, ev, cur.username, pend.username, why, sizeof why);
        created = q == 0;
    }
    if (q == 0) {
        const char *alter[] = { pend.username, verifier };
        q = run_formatted(s.db, "ALTER ROLE %I WITH LOGIN PASSWORD %L", alter, 2);
        if (q)
            snprintf(why, sizeof why, "setting the password of %s: %s", pend.username,
                     kiln_db_last_error(s.db));
    }
    if (q == 0 && (q = kiln_db_commit(s.db)) != 0)
        snprintf(why, sizeof why, "commit: %s", kiln_db_last_error(s.db));
    if (q)
        kiln_db_rollback(s.db);
    explicit_bzero(verifier, sizeof verifier);
    kiln_arena_free(a);
    session_close(&s);
    if (q) {
        rot_fail(e, "SetSecretFailed", "%s", why);
        goto out;
    }
    if (created)
        kiln_log(KILN_LOG_INFO, "setSecret: role created as a member of the current user",
                 "request_id", ev->request_id, "role", pend.username, "member_of", cur.username,
                 NULL);
    kiln_log(KILN_LOG_INFO, "setSecret: password set", "request_id", ev->request_id, "role",
             pend.username, NULL);
    rc = 0;
out:
    login_free(&cur);
    login_free(&pend);
    login_free(&master);
    return rc;
}

/* ---- testSecret ---------------------------------------------------------- */

static int test(const struct rot_env *env, const struct rot_event *ev, const char *pending,
                struct rot_error *e)
{
    struct pg_login pend;
    char why[1024];
    if (parse_login(pending, "pending", true, &pend, e))
        return -1;
    int rc = try_login(env, &pend, why, sizeof why);
    if (rc)
        rot_fail(e, "TestFailed", "cannot log in as %s with the pending password: %s",
                 pend.username, why);
    else
        kiln_log(KILN_LOG_INFO, "testSecret: logged in with the pending value", "request_id",
                 ev->request_id, "user", pend.username, NULL);
    login_free(&pend);
    return rc;
}

const struct rot_kind_ops rot_db_ops = { make_pending, set, test };
