/*
 * Notes (API.md, protected routes): the example to copy when adding a
 * resource (docs/RESOURCES.md walks through it).
 *
 * The shape of every handler: the user from the session, the id from the
 * path (a non-UUID is 404 before any query), the body validated into
 * per-field 422 details, one parameterised statement scoped to the user
 * (another user's row answers exactly like a missing one), the row turned
 * into JSON by one function. SQL is written once for both databases:
 * booleans travel as "1"/"0", timestamps as RFC 3339 text made here, and
 * RETURNING gives back what was stored.
 *
 * Lists are cached in the kv store (CACHE_TTL_SECONDS) under a key that
 * holds the user's note generation, a random token every write replaces:
 * a write is visible to the very next read from any instance, no key is
 * ever searched for, and a kv failure only skips the cache.
 */
#include <openssl/evp.h>
#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/random.h"
#include "core/str.h"
#include "core/uuid.h"
#include "store/kv.h"

#define TITLE_MAX 255
#define CONTENT_MAX 10000
#define LIST_DEFAULT 50
#define LIST_MAX 100
#define GENERATION_TTL_MS (24ull * 3600 * 1000)

static const char NOT_FOUND[] = "note_not_found";
static const char NOT_FOUND_MSG[] = "Note not found";

static void append_text(kiln_buf *b, kiln_str s)
{
    if (!s.p) {
        kiln_buf_append_c(b, "null");
        return;
    }
    kiln_buf_append_c(b, "\"");
    kiln_buf_append_json_str(b, s.p, s.len);
    kiln_buf_append_c(b, "\"");
}

static void append_time(kiln_buf *b, const struct kiln_db_rows *r, size_t i, size_t col)
{
    char t[KILN_RFC3339_LEN + 1];
    if (res_time_text(r, i, col, t)) {
        kiln_buf_append_c(b, "\"");
        kiln_buf_append(b, t, KILN_RFC3339_LEN);
        kiln_buf_append_c(b, "\"");
    } else {
        kiln_buf_append_c(b, "null");
    }
}

/*
 * One row of NOTE_COLUMNS as API.md's note, written as JSON text: the one
 * definition of the shape. A page of notes is written straight into its
 * buffer (building a jansson tree for it cost more CPU than the database
 * did); api_note_json parses this for callers that want a tree.
 */
static void note_append(kiln_buf *b, const struct kiln_db_rows *r, size_t i)
{
    bool archived = false;
    kiln_db_bool(r, i, 3, &archived);
    kiln_buf_append_c(b, "{\"id\":");
    append_text(b, kiln_db_text(r, i, 0));
    kiln_buf_append_c(b, ",\"title\":");
    append_text(b, kiln_db_text(r, i, 1));
    kiln_buf_append_c(b, ",\"content\":");
    append_text(b, kiln_db_text(r, i, 2));
    kiln_buf_append_c(b, archived ? ",\"archived\":true" : ",\"archived\":false");
    kiln_buf_append_c(b, ",\"inserted_at\":");
    append_time(b, r, i, 4);
    kiln_buf_append_c(b, ",\"updated_at\":");
    append_time(b, r, i, 5);
    kiln_buf_append_c(b, "}");
}

/* Shared through api.h: the dashboard shows notes in this same shape. */
json_t *api_note_json(const struct kiln_db_rows *r, size_t i)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    note_append(&b, r, i);
    json_t *note = json_loadb(b.p, b.len, JSON_ALLOW_NUL, NULL);
    kiln_buf_free(&b);
    return note;
}

static void answer_note(struct kiln_req *req, struct kiln_res *res, int status,
                        const struct kiln_db_rows *rows)
{
    kiln_res_json(req, res, status, json_pack("{s:o}", "data", api_note_json(rows, 0)));
}

/* ---- the list cache ---- */

static char *generation_key(kiln_arena *a, const char *user_id)
{
    return kiln_arena_sprintf(a, "notes_gen:%s", user_id);
}

/* A new generation after a write. Best effort: if the kv store is down,
 * cached lists expire within CACHE_TTL_SECONDS. */
static void cache_invalidate(struct kiln_req *req)
{
    struct kiln_kv *kv = app_kv(req);
    if (!kv || !req->config->cache_ttl_s)
        return;
    unsigned char r[12];
    char token[25];
    kiln_random_bytes(r, sizeof r);
    kiln_hex_encode(r, sizeof r, token);
    token[24] = '\0';
    kiln_kv_set(kv, kiln_str_c(generation_key(req->arena, res_user_id(req))),
                kiln_str_c(token), GENERATION_TTL_MS);
}

/* The cache key of this list, or NULL (no cache, kv down). The search term
 * is hashed: keys stay short and carry no user text. */
static const char *cache_key(struct kiln_req *req, bool archived, unsigned limit,
                             unsigned offset, kiln_str search)
{
    struct kiln_kv *kv = app_kv(req);
    if (!kv || !req->config->cache_ttl_s)
        return NULL;
    kiln_str gen;
    int err = kiln_kv_get(kv, req->arena, kiln_str_c(generation_key(req->arena,
                                                                    res_user_id(req))),
                          &gen);
    if (err == KILN_ENOTFOUND)
        gen = KILN_STR("0"); /* no write for a day: any token a write makes differs */
    else if (err)
        return NULL;
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hex[65];
    EVP_Digest(search.p ? search.p : "", search.len, md, &mdlen, EVP_sha256(), NULL);
    kiln_hex_encode(md, 16, hex);
    hex[32] = '\0';
    return kiln_arena_sprintf(req->arena, "notes:%s:%.*s:%d:%u:%u:%s", res_user_id(req),
                              (int)gen.len, gen.p, archived, limit, offset, hex);
}

/* ---- handlers ---- */

void api_notes_list(struct kiln_req *req, struct kiln_res *res)
{
    bool archived;
    unsigned limit, offset;
    kiln_str search = KILN_STR_NULL;
    if (!res_query_bool(req, res, "archived", false, &archived) ||
        !res_query_uint(req, res, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit) ||
        !res_query_uint(req, res, "offset", 0, 0, 1000000000u, &offset))
        return;
    if (kiln_req_query(req, "search", &search) && search.len) {
        size_t chars = 0;
        for (size_t i = 0; i < search.len; i++)
            chars += ((unsigned char)search.p[i] & 0xC0) != 0x80;
        if (!kiln_utf8_valid(search) || memchr(search.p, '\0', search.len) ||
            chars > TITLE_MAX) {
            kiln_res_error(req, res, 400, "invalid_request",
                           "search must be UTF-8 text of at most 255 characters", NULL);
            return;
        }
    } else {
        search = KILN_STR_NULL;
    }

    const char *key = cache_key(req, archived, limit, offset, search);
    struct kiln_kv *kv = app_kv(req);
    kiln_str cached;
    if (key && kiln_kv_get(kv, req->arena, kiln_str_c(key), &cached) == 0) {
        kiln_res_json_text(res, 200, cached);
        return;
    }

    struct kiln_db *db = app_db(req);
    char lim[16], off[16];
    snprintf(lim, sizeof lim, "%u", limit);
    snprintf(off, sizeof off, "%u", offset);
    /* $1 user, $2 archived, $3 search pattern or NULL; the list adds
     * $4 limit and $5 offset. lower() on both sides: case-blind on both
     * databases; ESCAPE makes % and _ in the term plain characters. */
    kiln_str p[5] = { kiln_str_c(res_user_id(req)), kiln_str_c(archived ? "1" : "0"),
                      search.p ? kiln_str_c(res_like_pattern(req->arena, search))
                               : KILN_STR_NULL,
                      kiln_str_c(lim), kiln_str_c(off) };
    static const char where[] =
        " FROM notes WHERE user_id = $1 AND archived = $2 AND (CAST($3 AS TEXT) IS NULL OR "
        "lower(title) LIKE lower(CAST($3 AS TEXT)) ESCAPE '\\' OR "
        "lower(content) LIKE lower(CAST($3 AS TEXT)) ESCAPE '\\')";
    /* One statement: the page, and the total as an uncorrelated subquery
     * (computed once, in the same snapshot as the page): one round trip per
     * list. Past the last page no row carries the total, and a count says
     * it. */
    struct kiln_db_rows rows, count;
    int err = kiln_db_query(db, req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "SELECT " NOTE_COLUMNS ", (SELECT count(*)%s) "
                                               "AS total%s ORDER BY inserted_at DESC, id DESC "
                                               "LIMIT $4 OFFSET $5",
                                               where, where),
                            p, 5, &rows);
    int64_t total = 0;
    if (!err && rows.nrows)
        kiln_db_int64(&rows, 0, 6, &total);
    else if (!err && offset > 0 &&
             !(err = kiln_db_query(db, req->arena,
                                   kiln_arena_sprintf(req->arena, "SELECT count(*)%s", where),
                                   p, 3, &count)))
        kiln_db_int64(&count, 0, 0, &total);
    if (err) {
        res_store_error(req, res, err, "notes list");
        return;
    }
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    kiln_buf_append_c(&b, "{\"data\":[");
    for (size_t i = 0; i < rows.nrows; i++) {
        if (i)
            kiln_buf_append_c(&b, ",");
        note_append(&b, &rows, i);
    }
    kiln_buf_printf(&b, "],\"meta\":{\"count\":%zu,\"total\":%lld,\"limit\":%u,\"offset\":%u}}",
                    rows.nrows, (long long)total, limit, offset);
    kiln_str out = { kiln_arena_strndup(req->arena, b.p, b.len), b.len };
    kiln_buf_free(&b);
    if (key)
        kiln_kv_set(kv, kiln_str_c(key), out, (uint64_t)req->config->cache_ttl_s * 1000);
    kiln_res_json_text(res, 200, out);
}

void api_notes_show(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_db_rows rows;
    if (res_fetch_owned(req, res, "notes", NOTE_COLUMNS, NOT_FOUND, NOT_FOUND_MSG, &rows))
        answer_note(req, res, 200, &rows);
}

void api_notes_create(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors e = { 0 };
    const char *title = NULL, *content = NULL;
    bool archived = false;
    if (!json_object_get(in, "title"))
        res_error(&e, "title", "can't be blank");
    res_string(in, "title", false, 1, TITLE_MAX, &e, &title);
    res_string(in, "content", true, 0, CONTENT_MAX, &e, &content);
    /* Checked as on update: a note may be created archived. */
    res_bool(in, "archived", &e, &archived);
    if (res_errors_answer(req, res, &e)) {
        json_decref(in);
        return;
    }
    char id[KILN_UUID_LEN + 1];
    kiln_uuid_v4(id);
    const char *now = res_now(req->arena);
    kiln_str p[7] = { kiln_str_c(id), kiln_str_c(res_user_id(req)), kiln_str_c(title),
                      kiln_str_c(content ? content : ""), kiln_str_c(now), kiln_str_c(now),
                      kiln_str_c(archived ? "1" : "0") };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "INSERT INTO notes (id, user_id, title, content, archived, "
                            "inserted_at, updated_at) VALUES ($1, $2, $3, $4, $7, $5, $6) "
                            "RETURNING " NOTE_COLUMNS,
                            p, 7, &rows);
    json_decref(in); /* title and content point into it */
    if (err) {
        res_store_error(req, res, err, "notes create");
        return;
    }
    cache_invalidate(req);
    answer_note(req, res, 201, &rows);
}

/* UPDATE with COALESCE: an absent field ($n NULL) keeps its value. */
static void update(struct kiln_req *req, struct kiln_res *res, const char *id,
                   const char *title, const char *content, const char *archived)
{
    kiln_str p[6] = { kiln_str_c(id), kiln_str_c(res_user_id(req)),
                      title ? kiln_str_c(title) : KILN_STR_NULL,
                      content ? kiln_str_c(content) : KILN_STR_NULL,
                      archived ? kiln_str_c(archived) : KILN_STR_NULL,
                      kiln_str_c(res_now(req->arena)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "UPDATE notes SET title = COALESCE($3, title), "
                            "content = COALESCE($4, content), "
                            "archived = COALESCE($5, archived), updated_at = $6 "
                            "WHERE id = $1 AND user_id = $2 RETURNING " NOTE_COLUMNS,
                            p, 6, &rows);
    if (err) {
        res_store_error(req, res, err, "notes update");
        return;
    }
    if (rows.nrows == 0) {
        res_not_found(req, res, NOT_FOUND, NOT_FOUND_MSG);
        return;
    }
    cache_invalidate(req);
    answer_note(req, res, 200, &rows);
}

void api_notes_update(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = res_id(req, res, NOT_FOUND, NOT_FOUND_MSG);
    if (!id)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors e = { 0 };
    const char *title = NULL, *content = NULL;
    bool archived = false;
    /* Present fields are checked as on create; null content empties it. */
    res_string(in, "title", false, 1, TITLE_MAX, &e, &title);
    bool has_content = res_string(in, "content", true, 0, CONTENT_MAX, &e, &content);
    bool has_archived = res_bool(in, "archived", &e, &archived);
    if (res_errors_answer(req, res, &e)) {
        json_decref(in);
        return;
    }
    update(req, res, id, title, has_content ? (content ? content : "") : NULL,
           has_archived ? (archived ? "1" : "0") : NULL);
    json_decref(in);
}

void api_notes_delete(struct kiln_req *req, struct kiln_res *res)
{
    if (res_delete_owned(req, res, "notes", NOT_FOUND, NOT_FOUND_MSG))
        cache_invalidate(req);
}

void api_notes_archive(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = res_id(req, res, NOT_FOUND, NOT_FOUND_MSG);
    if (id)
        update(req, res, id, NULL, NULL, "1");
}

void api_notes_unarchive(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = res_id(req, res, NOT_FOUND, NOT_FOUND_MSG);
    if (id)
        update(req, res, id, NULL, NULL, "0");
}
