/*
 * Sessions and signed cookies; see session.h. Tags are compared in constant
 * time (CRYPTO_memcmp); keys are HMAC-SHA256(SECRET_KEY_BASE, label), one
 * label per purpose.
 *
 * A sid joins its user's index (user_sessions:<user id>) after its record
 * is written, and leaves it after its record is deleted: however requests
 * interleave, what can be left behind is an index entry without a record,
 * which the next listing or ending removes, never a record that the index
 * misses. (An index lost anyway, evicted by a full store, is rebuilt as
 * its sessions are used: each refresh adds its sid back.)
 */
#include "auth/session.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/base64.h"
#include "core/err.h"
#include "core/random.h"

#define KEY_LEN 32
#define REFRESH_EVERY_S 60
#define INDEX_PREFIX "user_sessions:"
/* User ids are UUIDs; a key has room for more. */
#define USER_ID_MAX 64
#define INDEX_KEY_SIZE (sizeof INDEX_PREFIX + USER_ID_MAX)
/* An address as kiln_client_ip gives it: an IPv6 text is at most 45. */
#define IP_MAX 64
/* kiln_session_end_all takes up to KILN_KV_SET_LIST_MAX sessions a round;
 * a user who still has some after this many rounds (a million sessions,
 * or logins racing it as fast as it ends them) is told to try again. */
#define END_ALL_MAX_ROUNDS 1000

/*
 * The signing keys: [0] from the current SECRET_KEY_BASE (signs and
 * verifies), [1] from the previous one (verifies only). A set is immutable
 * once published; a rotation publishes a new set with one atomic store, so
 * signing and verifying take no lock. Replaced sets stay allocated until
 * the next kiln_auth_init (a rotation a month costs 136 bytes), because a
 * thread may still be reading one.
 */
struct keyset {
    unsigned char session[2][KEY_LEN];
    unsigned char login[2][KEY_LEN];
    unsigned char public_id[2][KEY_LEN];
    int nkeys; /* 1, or 2 with the previous secret */
    struct keyset *retired; /* the set this one replaced */
};

static void derive(const char *secret, size_t len, const char *label, unsigned char out[KEY_LEN])
{
    unsigned int n = KEY_LEN;
    HMAC(EVP_sha256(), secret, (int)len, (const unsigned char *)label, strlen(label), out, &n);
}

/* Where the secrets are (the configuration owns them). */
static struct {
    const char *cur, *prev;
    size_t cur_len, prev_len;
} secrets;
static _Atomic(struct keyset *) current;
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;

static void free_sets(struct keyset *k)
{
    while (k) {
        struct keyset *next = k->retired;
        explicit_bzero(k, sizeof *k);
        free(k);
        k = next;
    }
}

static struct keyset *derive_keys(void)
{
    struct keyset *k = kiln_calloc(1, sizeof *k);
    derive(secrets.cur, secrets.cur_len, "kiln session cookie v1", k->session[0]);
    derive(secrets.cur, secrets.cur_len, "kiln login cookie v1", k->login[0]);
    derive(secrets.cur, secrets.cur_len, "kiln session public id v1", k->public_id[0]);
    k->nkeys = 1;
    if (secrets.prev) {
        derive(secrets.prev, secrets.prev_len, "kiln session cookie v1", k->session[1]);
        derive(secrets.prev, secrets.prev_len, "kiln login cookie v1", k->login[1]);
        derive(secrets.prev, secrets.prev_len, "kiln session public id v1", k->public_id[1]);
        k->nkeys = 2;
    }
    return k;
}

/*
 * The keys are derived on first use, not at start: the first HMAC
 * initialises OpenSSL's providers (about 2 MiB of pages), which a process
 * that serves no session never needs.
 */
void kiln_auth_init(const struct kiln_config *cfg)
{
    pthread_mutex_lock(&keys_lock);
    secrets.cur = cfg->secret_key_base;
    secrets.cur_len = cfg->secret_key_base_len;
    secrets.prev = cfg->secret_key_base_previous;
    secrets.prev_len = cfg->secret_key_base_previous_len;
    free_sets(atomic_exchange(&current, NULL));
    pthread_mutex_unlock(&keys_lock);
}

static const struct keyset *need_keys(void)
{
    struct keyset *k = atomic_load(&current);
    if (k)
        return k;
    pthread_mutex_lock(&keys_lock);
    if (!(k = atomic_load(&current))) {
        k = derive_keys();
        atomic_store(&current, k);
    }
    pthread_mutex_unlock(&keys_lock);
    return k;
}

void kiln_auth_rotate_secret(const char *secret, size_t len)
{
    need_keys();
    pthread_mutex_lock(&keys_lock);
    struct keyset *old = atomic_load(&current);
    struct keyset *k = kiln_calloc(1, sizeof *k);
    derive(secret, len, "kiln session cookie v1", k->session[0]);
    derive(secret, len, "kiln login cookie v1", k->login[0]);
    derive(secret, len, "kiln session public id v1", k->public_id[0]);
    /* The key that signed until now keeps verifying. */
    memcpy(k->session[1], old->session[0], KEY_LEN);
    memcpy(k->login[1], old->login[0], KEY_LEN);
    memcpy(k->public_id[1], old->public_id[0], KEY_LEN);
    k->nkeys = 2;
    k->retired = old;
    atomic_store(&current, k);
    pthread_mutex_unlock(&keys_lock);
}

static void tag(const unsigned char key[KEY_LEN], const void *data, size_t len,
                unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, KEY_LEN, data, len, out, &n);
}

void kiln_session_token(const char *sid, char out[KILN_SESSION_TOKEN_LEN + 1])
{
    unsigned char mac[32];
    tag(need_keys()->session[0], sid, KILN_SID_LEN, mac);
    memcpy(out, sid, KILN_SID_LEN);
    out[KILN_SID_LEN] = '.';
    kiln_base64url_encode(mac, sizeof mac, out + KILN_SID_LEN + 1);
}

/* Does mac_b64 carry HMAC(key, data) for one of our keys? */
static bool verify(bool login, const char *data, size_t len, const char *mac_b64,
                   size_t mac_len)
{
    unsigned char got[32], want[32];
    size_t n = 0;
    const struct keyset *ks = need_keys();
    const unsigned char(*k)[KEY_LEN] = login ? ks->login : ks->session;
    if (mac_len != 43 || !kiln_base64url_decode(mac_b64, mac_len, got, sizeof got, &n) ||
        n != 32)
        return false;
    for (int i = 0; i < ks->nkeys; i++) {
        tag(k[i], data, len, want);
        if (CRYPTO_memcmp(got, want, 32) == 0)
            return true;
    }
    return false;
}

bool kiln_session_token_verify(kiln_str t, char sid[KILN_SID_LEN + 1])
{
    if (t.len != KILN_SESSION_TOKEN_LEN || t.p[KILN_SID_LEN] != '.')
        return false;
    unsigned char raw[32];
    size_t n = 0;
    if (!kiln_base64url_decode(t.p, KILN_SID_LEN, raw, sizeof raw, &n) || n != 32)
        return false;
    if (!verify(false, t.p, KILN_SID_LEN, t.p + KILN_SID_LEN + 1, 43))
        return false;
    memcpy(sid, t.p, KILN_SID_LEN);
    sid[KILN_SID_LEN] = '\0';
    return true;
}

static void kv_key(const char *sid, char out[64])
{
    memcpy(out, "backend_session:", 16);
    memcpy(out + 16, sid, KILN_SID_LEN + 1);
}

/* user_sessions:<user id>; KILN_EINVAL for a user id no user has. */
static int index_key(const char *user_id, char out[INDEX_KEY_SIZE])
{
    size_t n = user_id ? strlen(user_id) : 0;
    if (n == 0 || n > USER_ID_MAX)
        return KILN_EINVAL;
    memcpy(out, INDEX_PREFIX, sizeof INDEX_PREFIX - 1);
    memcpy(out + sizeof INDEX_PREFIX - 1, user_id, n + 1);
    return 0;
}

/* Put sid in the index at ikey and give the index a full session TTL: it
 * is written with every record it indexes, so it outlives all of them. */
static int index_add(struct kiln_kv *kv, const char *ikey, const char *sid)
{
    return kiln_kv_sadd(kv, kiln_str_c(ikey), (kiln_str){ sid, KILN_SID_LEN },
                        (uint64_t)KILN_SESSION_TTL_S * 1000, NULL);
}

/* Does an index member look like a sid (43 base64url characters)? Only
 * kiln writes the index; this keeps anything else from reaching a key. */
static bool is_sid(kiln_str m)
{
    if (m.len != KILN_SID_LEN)
        return false;
    for (size_t i = 0; i < m.len; i++) {
        char c = m.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static json_t *opt(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* What a client sent, as a JSON string: printable ASCII (anything else
 * '?', so the record always encodes), at most max bytes; null for none. */
static json_t *client_text(kiln_str s, size_t max)
{
    if (!s.p)
        return json_null();
    char buf[KILN_SESSION_USER_AGENT_MAX + 1];
    size_t n = s.len < max ? s.len : max;
    if (n > KILN_SESSION_USER_AGENT_MAX)
        n = KILN_SESSION_USER_AGENT_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    buf[n] = '\0';
    return json_string(buf);
}

/* Write the record with a full TTL: a new session (set), or a refresh of
 * one that must still exist (replace). */
static int save(struct kiln_kv *kv, const char *sid, json_t *record, bool refresh)
{
    char key[64];
    kv_key(sid, key);
    char *text = json_dumps(record, JSON_COMPACT);
    if (!text)
        return KILN_EINVAL;
    uint64_t ttl_ms = (uint64_t)KILN_SESSION_TTL_S * 1000;
    int err = refresh ? kiln_kv_replace(kv, kiln_str_c(key), kiln_str_c(text), ttl_ms)
                      : kiln_kv_set(kv, kiln_str_c(key), kiln_str_c(text), ttl_ms);
    free(text);
    return err;
}

int kiln_session_create(struct kiln_kv *kv, const struct kiln_session_user *u,
                        const struct kiln_session_client *client,
                        char token[KILN_SESSION_TOKEN_LEN + 1])
{
    static const struct kiln_session_client unknown = { NULL, { NULL, 0 }, NULL };
    unsigned char raw[32];
    char sid[KILN_SID_LEN + 1], ikey[INDEX_KEY_SIZE];
    if (!client)
        client = &unknown;
    if (index_key(u->user_id, ikey) != 0)
        return KILN_EINVAL;
    if (kiln_random_bytes(raw, sizeof raw) != 0)
        return KILN_EIO;
    kiln_base64url_encode(raw, sizeof raw, sid);
    json_t *user = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "email", opt(u->email),
                             "name", opt(u->name), "first_name", opt(u->first_name),
                             "last_name", opt(u->last_name), "image", opt(u->image),
                             "provider", opt(u->provider), "provider_uid",
                             opt(u->provider_uid));
    json_int_t now = (json_int_t)time(NULL);
    /* refreshed_at stays last: tests rewrite it at the end of the text. */
    json_t *record = json_pack("{s:s, s:o, s:I, s:o, s:o, s:o, s:I, s:I}", "user_id",
                               u->user_id, "user", user, "created_at", now, "ip",
                               client_text(kiln_str_c(client->ip), IP_MAX), "user_agent",
                               client_text(client->user_agent, KILN_SESSION_USER_AGENT_MAX),
                               "method", opt(client->method ? client->method : u->provider),
                               "last_seen_at", now, "refreshed_at", now);
    int err = record ? save(kv, sid, record, false) : KILN_EINVAL;
    json_decref(record);
    /*
     * A session outside its index would be missing from the user's list
     * and would survive "end every session": the login fails instead. Its
     * record is left to expire rather than deleted, which would replace
     * the error this returns with the delete's: nobody has its sid.
     */
    if (!err)
        err = index_add(kv, ikey, sid);
    if (!err)
        kiln_session_token(sid, token);
    return err;
}

int kiln_session_load(struct kiln_kv *kv, kiln_arena *a, const char *sid,
                      struct kiln_session *out)
{
    char key[64], ikey[INDEX_KEY_SIZE];
    kiln_str value;
    kv_key(sid, key);
    int err = kiln_kv_get(kv, a, kiln_str_c(key), &value);
    if (err)
        return err;
    json_t *record = json_loadb(value.p, value.len, 0, NULL);
    json_t *user = json_object_get(record, "user");
    const char *user_id = json_string_value(json_object_get(record, "user_id"));
    if (!record || !json_is_object(user) || !user_id) {
        json_decref(record);
        return KILN_ENOTFOUND; /* not ours or corrupt: no session */
    }
    memcpy(out->sid, sid, KILN_SID_LEN + 1);
    out->user_id = kiln_arena_strndup(a, user_id, strlen(user_id));
    char *u = json_dumps(user, JSON_COMPACT);
    out->user_json = (kiln_str){ kiln_arena_strndup(a, u ? u : "{}", u ? strlen(u) : 2),
                                 u ? strlen(u) : 2 };
    free(u);
    /*
     * Rolling expiry, written at most once a minute per session. The write
     * happens only if the record still exists (SET XX): a logout between
     * the read above and this write must win, not be undone by it; then
     * this request has no session either.
     *
     * A record from before the index (no created_at) is written at once:
     * it joins its user's index below, so the list shows it and ending
     * every session ends it too, from its first use on.
     */
    json_int_t refreshed = json_integer_value(json_object_get(record, "refreshed_at"));
    bool unindexed = json_object_get(record, "created_at") == NULL;
    time_t now = time(NULL);
    if (unindexed || now - (time_t)refreshed >= REFRESH_EVERY_S) {
        if (unindexed)
            json_object_set_new(record, "created_at", json_null()); /* unknown */
        json_object_set_new(record, "last_seen_at", json_integer((json_int_t)now));
        json_object_set_new(record, "refreshed_at", json_integer((json_int_t)now));
        err = save(kv, sid, record, true);
        /* The index lives as long as its latest record, and takes back a
         * sid it lost (a record from before it). Only after the record was
         * written: a refresh that lost to a logout indexes nothing. */
        if (err == 0 && index_key(out->user_id, ikey) == 0)
            index_add(kv, ikey, sid);
        /* Any other failure: best effort, a failed refresh is not a logout. */
        if (err != KILN_ENOTFOUND)
            err = 0;
    }
    json_decref(record);
    return err;
}

int kiln_session_delete(struct kiln_kv *kv, const char *sid, bool *deleted)
{
    char key[64], ikey[INDEX_KEY_SIZE];
    bool dummy;
    kiln_str value;
    if (!deleted)
        deleted = &dummy;
    *deleted = false;
    kv_key(sid, key);
    kiln_arena *a = kiln_arena_new(1024);
    /* Taken rather than deleted: the record says whose index holds the
     * sid. Removing it from there is best effort (a listing would). */
    int err = kiln_kv_take(kv, a, kiln_str_c(key), &value);
    if (err == 0) {
        *deleted = true;
        json_t *record = json_loadb(value.p, value.len, 0, NULL);
        const char *user_id = json_string_value(json_object_get(record, "user_id"));
        kiln_str member = { sid, KILN_SID_LEN };
        if (index_key(user_id, ikey) == 0)
            kiln_kv_srem(kv, kiln_str_c(ikey), &member, 1, NULL);
        json_decref(record);
    } else if (err == KILN_ENOTFOUND) {
        err = 0;
    }
    kiln_arena_free(a);
    return err;
}

int kiln_session_exists(struct kiln_kv *kv, const char *sid)
{
    char key[64];
    kv_key(sid, key);
    kiln_arena *a = kiln_arena_new(1024);
    kiln_str v;
    int err = kiln_kv_get(kv, a, kiln_str_c(key), &v);
    kiln_arena_free(a);
    return err;
}

/* ---- the index: listing and ending ------------------------------------- */

static void public_id_with(const unsigned char key[KEY_LEN], const char *sid,
                           char out[KILN_SESSION_ID_LEN + 1])
{
    unsigned char mac[32];
    tag(key, sid, KILN_SID_LEN, mac);
    /* 128 bits: as unguessable as anything needs to be, and short. */
    kiln_base64url_encode(mac, 16, out);
}

void kiln_session_public_id(const char *sid, char out[KILN_SESSION_ID_LEN + 1])
{
    public_id_with(need_keys()->public_id[0], sid, out);
}

static const char *arena_text(kiln_arena *a, json_t *v)
{
    const char *s = json_string_value(v);
    return s ? kiln_arena_strndup(a, s, strlen(s)) : NULL;
}

/* A record as the list shows it; false when it is not a session of
 * user_id (corrupt, or someone else's). */
static bool read_info(kiln_arena *a, kiln_str value, const char *user_id,
                      struct kiln_session_info *info)
{
    json_t *r = json_loadb(value.p, value.len, 0, NULL);
    const char *owner = json_string_value(json_object_get(r, "user_id"));
    json_t *user = json_object_get(r, "user");
    bool ok = owner && strcmp(owner, user_id) == 0 && json_is_object(user);
    if (ok) {
        json_t *seen = json_object_get(r, "last_seen_at");
        info->created_at = json_integer_value(json_object_get(r, "created_at"));
        info->last_seen_at =
            json_integer_value(seen ? seen : json_object_get(r, "refreshed_at"));
        info->ip = arena_text(a, json_object_get(r, "ip"));
        info->user_agent = arena_text(a, json_object_get(r, "user_agent"));
        info->method = arena_text(a, json_object_get(r, "method"));
        if (!info->method)
            info->method = arena_text(a, json_object_get(user, "provider"));
    }
    json_decref(r);
    return ok;
}

static int newest_first(const void *pa, const void *pb)
{
    const struct kiln_session_info *a = pa, *b = pb;
    if (a->created_at != b->created_at)
        return a->created_at > b->created_at ? -1 : 1;
    if (a->last_seen_at != b->last_seen_at)
        return a->last_seen_at > b->last_seen_at ? -1 : 1;
    return strcmp(a->id, b->id);
}

int kiln_session_list(struct kiln_kv *kv, kiln_arena *a, const char *user_id,
                      const char *current_sid, struct kiln_session_info **out, size_t *n)
{
    char ikey[INDEX_KEY_SIZE], key[64];
    kiln_str *sids = NULL;
    size_t count = 0, live = 0, ngone = 0;
    *out = NULL;
    *n = 0;
    int err = index_key(user_id, ikey);
    if (!err)
        err = kiln_kv_smembers(kv, a, kiln_str_c(ikey), KILN_SESSION_LIST_MAX, &sids, &count);
    if (err)
        return err;
    struct kiln_session_info *list = kiln_arena_alloc_z(a, (count ? count : 1) * sizeof *list);
    kiln_str *gone = kiln_arena_alloc(a, (count ? count : 1) * sizeof *gone);
    for (size_t i = 0; i < count; i++) {
        kiln_str value;
        if (!is_sid(sids[i])) {
            gone[ngone++] = sids[i];
            continue;
        }
        kv_key(sids[i].p, key);
        err = kiln_kv_get(kv, a, kiln_str_c(key), &value);
        if (err == KILN_ENOTFOUND || (!err && !read_info(a, value, user_id, &list[live]))) {
            gone[ngone++] = sids[i]; /* expired, ended, or not a session of the user's */
            continue;
        }
        if (err)
            return err;
        kiln_session_public_id(sids[i].p, list[live].id);
        list[live].current = current_sid && strcmp(current_sid, sids[i].p) == 0;
        live++;
    }
    /* Lazy cleanup: an index is only ever trimmed here and by the endings. */
    if (ngone)
        kiln_kv_srem(kv, kiln_str_c(ikey), gone, ngone, NULL);
    qsort(list, live, sizeof *list, newest_first);
    *out = list;
    *n = live;
    return 0;
}

int kiln_session_end(struct kiln_kv *kv, const char *user_id, kiln_str public_id,
                     char sid[KILN_SID_LEN + 1])
{
    char ikey[INDEX_KEY_SIZE], key[64], id[KILN_SESSION_ID_LEN + 1];
    kiln_str *sids = NULL, *found = NULL;
    size_t count = 0;
    if (public_id.len != KILN_SESSION_ID_LEN || !public_id.p)
        return KILN_ENOTFOUND; /* not an id we make: nothing to look up */
    int err = index_key(user_id, ikey);
    if (err)
        return err;
    kiln_arena *a = kiln_arena_new(4096);
    err = kiln_kv_smembers(kv, a, kiln_str_c(ikey), KILN_KV_SET_LIST_MAX, &sids, &count);
    /* The id made with either key: one listed just before a rotation
     * still ends its session. */
    const struct keyset *ks = need_keys();
    for (size_t i = 0; !err && !found && i < count; i++) {
        if (!is_sid(sids[i]))
            continue;
        for (int k = 0; k < ks->nkeys && !found; k++) {
            public_id_with(ks->public_id[k], sids[i].p, id);
            if (CRYPTO_memcmp(id, public_id.p, KILN_SESSION_ID_LEN) == 0)
                found = &sids[i];
        }
    }
    if (!err && !found)
        err = KILN_ENOTFOUND;
    if (!err) {
        bool deleted = false;
        kv_key(found->p, key);
        err = kiln_kv_del(kv, kiln_str_c(key), &deleted);
        if (!err) {
            kiln_kv_srem(kv, kiln_str_c(ikey), found, 1, NULL); /* best effort */
            /* Only in the index: it had expired, there was nothing to end. */
            if (deleted)
                memcpy(sid, found->p, KILN_SID_LEN + 1);
            else
                err = KILN_ENOTFOUND;
        }
    }
    kiln_arena_free(a);
    return err;
}

int kiln_session_end_all(struct kiln_kv *kv, const char *user_id, const char *keep_sid,
                         kiln_session_ended_cb on_ended, void *ctx, size_t *ended)
{
    char ikey[INDEX_KEY_SIZE], key[64];
    size_t dummy;
    if (!ended)
        ended = &dummy;
    *ended = 0;
    int err = index_key(user_id, ikey);
    if (err)
        return err;
    kiln_arena *a = kiln_arena_new(16384);
    /*
     * A batch at a time, each taken out of the index once its sessions are
     * deleted, until nothing is left in it but keep_sid: the index may hold
     * more than one batch, and a batch's members are whichever the store
     * picks, so only an index with nothing else in it says "done".
     */
    for (int round = 0;; round++) {
        kiln_str *sids = NULL;
        size_t count = 0, ndone = 0;
        kiln_arena_reset(a);
        if (round == END_ALL_MAX_ROUNDS) {
            err = KILN_EBUSY;
            break;
        }
        if ((err = kiln_kv_smembers(kv, a, kiln_str_c(ikey), KILN_KV_SET_LIST_MAX, &sids,
                                    &count)) != 0)
            break;
        kiln_str *done = kiln_arena_alloc(a, (count ? count : 1) * sizeof *done);
        for (size_t i = 0; i < count && !err; i++) {
            bool deleted = false;
            if (keep_sid && sids[i].len == KILN_SID_LEN &&
                memcmp(sids[i].p, keep_sid, KILN_SID_LEN) == 0)
                continue;
            if (is_sid(sids[i])) {
                kv_key(sids[i].p, key);
                if ((err = kiln_kv_del(kv, kiln_str_c(key), &deleted)) != 0)
                    break;
            }
            if (deleted) {
                ++*ended;
                if (on_ended)
                    on_ended(ctx, sids[i].p);
            }
            done[ndone++] = sids[i];
        }
        if (err || ndone == 0)
            break;
        if ((err = kiln_kv_srem(kv, kiln_str_c(ikey), done, ndone, NULL)) != 0)
            break;
    }
    kiln_arena_free(a);
    return err;
}

const char *kiln_login_cookie_seal(kiln_arena *a, kiln_str payload)
{
    unsigned char mac[32];
    const struct keyset *ks = need_keys();
    size_t blen = kiln_base64url_len(payload.len);
    char *out = kiln_arena_alloc(a, blen + 1 + 43 + 1);
    kiln_base64url_encode(payload.p, payload.len, out);
    tag(ks->login[0], out, blen, mac);
    out[blen] = '.';
    kiln_base64url_encode(mac, sizeof mac, out + blen + 1);
    return out;
}

bool kiln_login_cookie_open(kiln_arena *a, kiln_str value, kiln_str *payload)
{
    const char *dot = value.p ? memchr(value.p, '.', value.len) : NULL;
    if (!dot || value.len > 4096)
        return false;
    size_t blen = (size_t)(dot - value.p);
    if (!verify(true, value.p, blen, dot + 1, value.len - blen - 1))
        return false;
    unsigned char *raw = kiln_arena_alloc(a, blen + 1);
    size_t n = 0;
    if (!kiln_base64url_decode(value.p, blen, raw, blen + 1, &n))
        return false;
    raw[n] = '\0';
    *payload = (kiln_str){ (const char *)raw, n };
    return true;
}
