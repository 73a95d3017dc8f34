/*
 * Sessions and signed cookies; see session.h. Tags are compared in constant
 * time (CRYPTO_memcmp); keys are HMAC-SHA256(SECRET_KEY_BASE, label), one
 * label per purpose.
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
    k->nkeys = 1;
    if (secrets.prev) {
        derive(secrets.prev, secrets.prev_len, "kiln session cookie v1", k->session[1]);
        derive(secrets.prev, secrets.prev_len, "kiln login cookie v1", k->login[1]);
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
    /* The key that signed until now keeps verifying. */
    memcpy(k->session[1], old->session[0], KEY_LEN);
    memcpy(k->login[1], old->login[0], KEY_LEN);
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

static json_t *opt(const char *s)
{
    return s ? json_string(s) : json_null();
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
                        char token[KILN_SESSION_TOKEN_LEN + 1])
{
    unsigned char raw[32];
    char sid[KILN_SID_LEN + 1];
    if (kiln_random_bytes(raw, sizeof raw) != 0)
        return KILN_EIO;
    kiln_base64url_encode(raw, sizeof raw, sid);
    json_t *user = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "email", opt(u->email),
                             "name", opt(u->name), "first_name", opt(u->first_name),
                             "last_name", opt(u->last_name), "image", opt(u->image),
                             "provider", opt(u->provider), "provider_uid",
                             opt(u->provider_uid));
    json_t *record = json_pack("{s:s, s:o, s:I}", "user_id", u->user_id, "user", user,
                               "refreshed_at", (json_int_t)time(NULL));
    int err = record ? save(kv, sid, record, false) : KILN_EINVAL;
    json_decref(record);
    if (!err)
        kiln_session_token(sid, token);
    return err;
}

int kiln_session_load(struct kiln_kv *kv, kiln_arena *a, const char *sid,
                      struct kiln_session *out)
{
    char key[64];
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
     */
    json_int_t refreshed = json_integer_value(json_object_get(record, "refreshed_at"));
    time_t now = time(NULL);
    if (now - (time_t)refreshed >= REFRESH_EVERY_S) {
        json_object_set_new(record, "refreshed_at", json_integer((json_int_t)now));
        err = save(kv, sid, record, true);
        /* Any other failure: best effort, a failed refresh is not a logout. */
        if (err != KILN_ENOTFOUND)
            err = 0;
    }
    json_decref(record);
    return err;
}

int kiln_session_delete(struct kiln_kv *kv, const char *sid, bool *deleted)
{
    char key[64];
    kv_key(sid, key);
    return kiln_kv_del(kv, kiln_str_c(key), deleted);
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
