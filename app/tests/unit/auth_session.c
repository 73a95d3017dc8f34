/*
 * Unit tests for app/src/auth/session.c (signed tokens, key rotation, the
 * login cookie, sessions in the kv store, the per-user index: listing,
 * ending one, ending all, lazy cleanup) and app/src/http/cookie.c, on the
 * memory kv driver.
 */
#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#include "test_util.h"

#include "auth/session.h"
#include "core/config.h"
#include "core/err.h"
#include "http/cookie.h"
#include "store/kv_internal.h"

static char key_a[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static char key_b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static void use_keys(char *current, char *previous)
{
    struct kiln_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.secret_key_base = current;
    cfg.secret_key_base_len = strlen(current);
    cfg.secret_key_base_previous = previous;
    cfg.secret_key_base_previous_len = previous ? strlen(previous) : 0;
    kiln_auth_init(&cfg);
}

static const char sid[] = "rf4rQ33-TcUoMopGDt9oBTDkPRQzWlet6K3lZuBfF-M";

static void test_token_roundtrip_and_tampering(void **state)
{
    (void)state;
    char token[KILN_SESSION_TOKEN_LEN + 1], got[KILN_SID_LEN + 1];
    use_keys(key_a, NULL);
    kiln_session_token(sid, token);
    assert_int_equal(strlen(token), KILN_SESSION_TOKEN_LEN);
    assert_true(kiln_session_token_verify(kiln_str_c(token), got));
    assert_string_equal(got, sid);

    /* Every single-character change is refused. */
    for (size_t i = 0; i < KILN_SESSION_TOKEN_LEN; i++) {
        char bad[KILN_SESSION_TOKEN_LEN + 1];
        memcpy(bad, token, sizeof bad);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        if (kiln_session_token_verify(kiln_str_c(bad), got))
            fail_msg("token with byte %zu changed was accepted", i);
    }
    /* Truncated, extended, empty, garbage. */
    assert_false(kiln_session_token_verify((kiln_str){ token, KILN_SESSION_TOKEN_LEN - 1 }, got));
    char longer[KILN_SESSION_TOKEN_LEN + 2];
    snprintf(longer, sizeof longer, "%sA", token);
    assert_false(kiln_session_token_verify(kiln_str_c(longer), got));
    assert_false(kiln_session_token_verify(KILN_STR(""), got));
    assert_false(kiln_session_token_verify(KILN_STR_NULL, got));
}

static void test_key_rotation(void **state)
{
    (void)state;
    char token[KILN_SESSION_TOKEN_LEN + 1], got[KILN_SID_LEN + 1];
    use_keys(key_a, NULL);
    kiln_session_token(sid, token);
    use_keys(key_b, key_a); /* rotated: old cookies still verify */
    assert_true(kiln_session_token_verify(kiln_str_c(token), got));
    use_keys(key_b, NULL); /* previous key dropped */
    assert_false(kiln_session_token_verify(kiln_str_c(token), got));
}

static void test_login_cookie(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    use_keys(key_a, NULL);
    const char *sealed = kiln_login_cookie_seal(a, KILN_STR("{\"s\":\"state\"}"));
    kiln_str payload;
    assert_true(kiln_login_cookie_open(a, kiln_str_c(sealed), &payload));
    assert_kstr_eq(payload, "{\"s\":\"state\"}");
    /* A session token is not a login cookie, and the reverse. */
    char token[KILN_SESSION_TOKEN_LEN + 1], got[KILN_SID_LEN + 1];
    kiln_session_token(sid, token);
    assert_false(kiln_login_cookie_open(a, kiln_str_c(token), &payload));
    assert_false(kiln_session_token_verify(kiln_str_c(sealed), got));
    char *bad = kiln_arena_strndup(a, sealed, strlen(sealed));
    bad[2] = bad[2] == 'x' ? 'y' : 'x';
    assert_false(kiln_login_cookie_open(a, kiln_str_c(bad), &payload));
    kiln_arena_free(a);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* How many sids the user's index holds. */
static size_t index_size(struct kiln_kv *kv, kiln_arena *a, const char *user_id)
{
    char key[128];
    kiln_str *m = NULL;
    size_t n = 0;
    snprintf(key, sizeof key, "user_sessions:%s", user_id);
    assert_int_equal(kiln_kv_smembers(kv, a, kiln_str_c(key), KILN_KV_SET_LIST_MAX, &m, &n), 0);
    return n;
}

static void test_session_store(void **state)
{
    (void)state;
    use_keys(key_a, NULL);
    struct kiln_kv_config kc;
    memset(&kc, 0, sizeof kc);
    kc.max_keys = 1000;
    struct kiln_kv_store *store = kiln_kv_store_new(&kc);
    struct kiln_kv *kv = kiln_kv_open(store);
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_session_user u = { "8d0c6a1e-0000-4000-8000-000000000001", "a@b.c", "Ada L",
                                   "Ada", "L", NULL, "dev", "a@b.c" };
    char t1[KILN_SESSION_TOKEN_LEN + 1], t2[KILN_SESSION_TOKEN_LEN + 1];
    char s1[KILN_SID_LEN + 1], s2[KILN_SID_LEN + 1];
    assert_int_equal(kiln_session_create(kv, &u, NULL, t1), 0);
    assert_int_equal(kiln_session_create(kv, &u, NULL, t2), 0);
    assert_string_not_equal(t1, t2); /* a fresh sid every time */
    assert_true(kiln_session_token_verify(kiln_str_c(t1), s1));
    assert_true(kiln_session_token_verify(kiln_str_c(t2), s2));

    struct kiln_session s;
    assert_int_equal(kiln_session_load(kv, a, s1, &s), 0);
    assert_string_equal(s.user_id, u.user_id);
    assert_non_null(strstr(s.user_json.p, "\"provider\":\"dev\""));
    assert_non_null(strstr(s.user_json.p, "\"image\":null"));

    assert_int_equal(index_size(kv, a, u.user_id), 2);
    assert_int_equal(kiln_session_delete(kv, s1, NULL), 0);
    assert_int_equal(kiln_session_load(kv, a, s1, &s), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_load(kv, a, s2, &s), 0);
    /* A logout takes the sid out of its user's index too. */
    assert_int_equal(index_size(kv, a, u.user_id), 1);

    /* A record that is not a session is no session. */
    char key[80];
    snprintf(key, sizeof key, "backend_session:%s", s2);
    assert_int_equal(kiln_kv_set(kv, kiln_str_c(key), KILN_STR("not json"), 0), 0);
    assert_int_equal(kiln_session_load(kv, a, s2, &s), KILN_ENOTFOUND);

    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(store);
}

/*
 * A logout that lands between a session's read and its rolling refresh
 * must win: the refresh may not write the record back. Reproduced exactly
 * with a handle on the memory store whose get deletes the key right after
 * reading it.
 */
static int (*plain_get)(struct kiln_kv *, kiln_arena *, kiln_str, kiln_str *);

static int get_then_logout(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    bool gone;
    int rc = plain_get(kv, a, key, out);
    if (rc == 0)
        kv->ops->del(kv, key, &gone);
    return rc;
}

static void old_refresh(struct kiln_kv *kv, kiln_arena *a, const char *sid_)
{
    /* The record as a session last refreshed long ago: the next load refreshes. */
    char key[80];
    kiln_str v;
    snprintf(key, sizeof key, "backend_session:%s", sid_);
    assert_int_equal(kiln_kv_get(kv, a, kiln_str_c(key), &v), 0);
    char *p = strstr(v.p, "\"refreshed_at\":");
    assert_non_null(p);
    char *rec = kiln_arena_sprintf(a, "%.*s\"refreshed_at\":1000}", (int)(p - v.p), v.p);
    assert_int_equal(kiln_kv_set(kv, kiln_str_c(key), kiln_str_c(rec), 60000), 0);
}

static void test_refresh_never_revives_a_deleted_session(void **state)
{
    (void)state;
    use_keys(key_a, NULL);
    struct kiln_kv_config kc;
    memset(&kc, 0, sizeof kc);
    struct kiln_kv_store *store = kiln_kv_store_new(&kc);
    struct kiln_kv *kv = kiln_kv_open(store);
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_session_user u = { "8d0c6a1e-0000-4000-8000-000000000002", "r@b.c", NULL,
                                   NULL, NULL, NULL, "dev", "r@b.c" };
    char t[KILN_SESSION_TOKEN_LEN + 1], s1[KILN_SID_LEN + 1], key[80];
    struct kiln_session s;
    kiln_str v;

    /* A plain refresh rewrites the record with the full TTL. */
    assert_int_equal(kiln_session_create(kv, &u, NULL, t), 0);
    assert_true(kiln_session_token_verify(kiln_str_c(t), s1));
    snprintf(key, sizeof key, "backend_session:%s", s1);
    old_refresh(kv, a, s1);
    assert_int_equal(kiln_session_load(kv, a, s1, &s), 0);
    assert_int_equal(kiln_kv_get(kv, a, kiln_str_c(key), &v), 0);
    assert_null(strstr(v.p, "\"refreshed_at\":1000}"));

    /* The same refresh with a logout in between. */
    struct kiln_kv_ops racing = *kv->ops;
    plain_get = racing.get;
    racing.get = get_then_logout;
    struct kiln_kv *racer = kiln_kv_open(store);
    const struct kiln_kv_ops *own = racer->ops;
    racer->ops = &racing;
    old_refresh(kv, a, s1);
    assert_int_equal(kiln_session_load(racer, a, s1, &s), KILN_ENOTFOUND);
    racer->ops = own;
    assert_int_equal(kiln_kv_get(kv, a, kiln_str_c(key), &v), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_load(kv, a, s1, &s), KILN_ENOTFOUND);

    kiln_kv_close(racer);
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(store);
}

/* ---- the per-user index ------------------------------------------------ */

static const char USER_U[] = "8d0c6a1e-0000-4000-8000-0000000000a1";
static const char USER_V[] = "8d0c6a1e-0000-4000-8000-0000000000b2";

struct store {
    struct kiln_kv_store *store;
    struct kiln_kv *kv;
    kiln_arena *a;
};

static void store_open(struct store *st)
{
    struct kiln_kv_config kc;
    memset(&kc, 0, sizeof kc);
    st->store = kiln_kv_store_new(&kc);
    st->kv = kiln_kv_open(st->store);
    st->a = kiln_arena_new(4096);
}

static void store_close(struct store *st)
{
    kiln_arena_free(st->a);
    kiln_kv_close(st->kv);
    kiln_kv_store_free(st->store);
}

/* A session of user_id, opened by provider from a client sending ua (NULL:
 * no User-Agent); its sid in out. */
static void new_session(struct kiln_kv *kv, const char *user_id, const char *provider,
                        const char *ua, char out[KILN_SID_LEN + 1])
{
    struct kiln_session_user u = { user_id, "x@example.com", NULL, NULL, NULL, NULL, provider,
                                   "x@example.com" };
    struct kiln_session_client c = { "192.0.2.7", kiln_str_c(ua), NULL };
    char t[KILN_SESSION_TOKEN_LEN + 1];
    assert_int_equal(kiln_session_create(kv, &u, &c, t), 0);
    assert_true(kiln_session_token_verify(kiln_str_c(t), out));
}

/* Set a number field of a session's record, as if written long ago. */
static void set_field(struct kiln_kv *kv, kiln_arena *a, const char *sid_, const char *field,
                      long long value)
{
    char key[80];
    kiln_str v;
    snprintf(key, sizeof key, "backend_session:%s", sid_);
    assert_int_equal(kiln_kv_get(kv, a, kiln_str_c(key), &v), 0);
    json_t *r = json_loadb(v.p, v.len, 0, NULL);
    assert_non_null(r);
    json_object_set_new(r, field, json_integer(value));
    char *text = json_dumps(r, JSON_COMPACT);
    assert_int_equal(kiln_kv_set(kv, kiln_str_c(key), kiln_str_c(text), 60000), 0);
    free(text);
    json_decref(r);
}

static void drop_record(struct kiln_kv *kv, const char *sid_)
{
    char key[80];
    bool deleted = false;
    snprintf(key, sizeof key, "backend_session:%s", sid_);
    assert_int_equal(kiln_kv_del(kv, kiln_str_c(key), &deleted), 0);
    assert_true(deleted);
}

static const struct kiln_session_info *find_info(const struct kiln_session_info *l, size_t n,
                                                 const char *sid_)
{
    char id[KILN_SESSION_ID_LEN + 1];
    kiln_session_public_id(sid_, id);
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i].id, id) == 0)
            return &l[i];
    return NULL;
}

static void test_session_list(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session_info *l = NULL;
    size_t n = 0;
    char s1[KILN_SID_LEN + 1], s2[KILN_SID_LEN + 1], s3[KILN_SID_LEN + 1], v1[KILN_SID_LEN + 1];
    use_keys(key_a, NULL);
    store_open(&st);
    new_session(st.kv, USER_U, "dev", "Agent One", s1);
    new_session(st.kv, USER_U, "google", "Agent Two", s2);
    new_session(st.kv, USER_U, "password", NULL, s3);
    new_session(st.kv, USER_V, "dev", "Agent Other", v1);
    /* Opened at distinct times: newest first. */
    set_field(st.kv, st.a, s1, "created_at", 1000);
    set_field(st.kv, st.a, s2, "created_at", 3000);
    set_field(st.kv, st.a, s3, "created_at", 2000);

    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, s2, &l, &n), 0);
    assert_int_equal(n, 3);
    assert_ptr_equal(find_info(l, n, s2), &l[0]);
    assert_ptr_equal(find_info(l, n, s3), &l[1]);
    assert_ptr_equal(find_info(l, n, s1), &l[2]);
    assert_int_equal(l[0].created_at, 3000);
    assert_true(l[0].current);
    assert_false(l[1].current || l[2].current);
    assert_string_equal(l[0].method, "google");
    assert_string_equal(l[0].user_agent, "Agent Two");
    assert_string_equal(l[0].ip, "192.0.2.7");
    assert_true(l[0].last_seen_at > 1000000000);
    assert_string_equal(l[1].method, "password");
    assert_null(l[1].user_agent);
    assert_string_equal(l[2].user_agent, "Agent One");
    /* Public ids: the length promised, each its own, and no part of a sid. */
    const char *sids[] = { s1, s2, s3 };
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(strlen(l[i].id), KILN_SESSION_ID_LEN);
        for (size_t j = 0; j < ARRAY_LEN(sids); j++)
            if (memmem(sids[j], KILN_SID_LEN, l[i].id, 8))
                fail_msg("public id %s shares 8 characters with sid %s", l[i].id, sids[j]);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(l[i].id, l[j].id);
    }
    /* Each user sees their own; without a current sid none is current. */
    assert_int_equal(kiln_session_list(st.kv, st.a, USER_V, NULL, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_non_null(find_info(l, n, v1));
    assert_false(l[0].current);
    store_close(&st);
}

/* What a client sends is kept as printable ASCII, cut to a bound. */
static void test_session_client_text(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session_info *l = NULL;
    size_t n = 0;
    char ua[400], s1[KILN_SID_LEN + 1];
    use_keys(key_a, NULL);
    store_open(&st);
    memset(ua, 'a', sizeof ua - 1);
    ua[sizeof ua - 1] = '\0';
    ua[0] = '\xff';
    ua[1] = '\x01';
    ua[2] = '\"';
    new_session(st.kv, USER_U, "dev", ua, s1);
    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, s1, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(strlen(l[0].user_agent), KILN_SESSION_USER_AGENT_MAX);
    assert_memory_equal(l[0].user_agent, "??\"aaa", 6);
    store_close(&st);
}

/* Sids whose record is gone leave the index as a listing finds them. */
static void test_session_list_cleans_up(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session_info *l = NULL;
    size_t n = 0;
    char s1[KILN_SID_LEN + 1], s2[KILN_SID_LEN + 1], s3[KILN_SID_LEN + 1], key[128];
    use_keys(key_a, NULL);
    store_open(&st);
    new_session(st.kv, USER_U, "dev", "one", s1);
    new_session(st.kv, USER_U, "dev", "two", s2);
    new_session(st.kv, USER_U, "dev", "three", s3);
    drop_record(st.kv, s1); /* deleted behind the index's back */
    snprintf(key, sizeof key, "backend_session:%s", s2);
    assert_int_equal(kiln_kv_expire(st.kv, kiln_str_c(key), 20), 0);
    sleep_ms(50); /* expired */
    snprintf(key, sizeof key, "user_sessions:%s", USER_U);
    assert_int_equal(kiln_kv_sadd(st.kv, kiln_str_c(key), KILN_STR("not a sid"), 0, NULL), 0);
    assert_int_equal(index_size(st.kv, st.a, USER_U), 4);

    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, NULL, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_non_null(find_info(l, n, s3));
    assert_int_equal(index_size(st.kv, st.a, USER_U), 1);
    store_close(&st);
}

/* The rolling refresh records the use and puts a lost sid back. */
static void test_session_refresh_keeps_the_index(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session s;
    struct kiln_session_info *l = NULL;
    size_t n = 0;
    char s1[KILN_SID_LEN + 1], key[128];
    use_keys(key_a, NULL);
    store_open(&st);
    new_session(st.kv, USER_U, "dev", "one", s1);
    snprintf(key, sizeof key, "user_sessions:%s", USER_U);
    kiln_str member = { s1, KILN_SID_LEN };
    assert_int_equal(kiln_kv_srem(st.kv, kiln_str_c(key), &member, 1, NULL), 0);
    set_field(st.kv, st.a, s1, "last_seen_at", 1000);
    set_field(st.kv, st.a, s1, "refreshed_at", 1000);
    assert_int_equal(kiln_session_load(st.kv, st.a, s1, &s), 0);
    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, s1, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_true(l[0].last_seen_at > 1000000000);
    store_close(&st);
}

/* A record written before the index existed joins it on its first use. */
static void test_session_from_before_the_index(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session s;
    struct kiln_session_info *l = NULL;
    size_t n = 0;
    char key[80], *rec;
    use_keys(key_a, NULL);
    store_open(&st);
    snprintf(key, sizeof key, "backend_session:%s", sid);
    rec = kiln_arena_sprintf(st.a,
                             "{\"user_id\":\"%s\",\"user\":{\"email\":\"o@example.com\","
                             "\"provider\":\"google\"},\"refreshed_at\":%lld}",
                             USER_U, (long long)time(NULL));
    assert_int_equal(kiln_kv_set(st.kv, kiln_str_c(key), kiln_str_c(rec), 60000), 0);
    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, NULL, &l, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(kiln_session_load(st.kv, st.a, sid, &s), 0);
    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, sid, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(l[0].created_at, 0); /* unknown */
    assert_string_equal(l[0].method, "google");
    assert_null(l[0].ip);
    assert_true(l[0].current);
    /* And ending every session ends it. */
    size_t ended = 0;
    assert_int_equal(kiln_session_end_all(st.kv, USER_U, NULL, NULL, NULL, &ended), 0);
    assert_int_equal(ended, 1);
    assert_int_equal(kiln_session_load(st.kv, st.a, sid, &s), KILN_ENOTFOUND);
    store_close(&st);
}

static void test_session_end(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session s;
    char s1[KILN_SID_LEN + 1], s2[KILN_SID_LEN + 1], v1[KILN_SID_LEN + 1];
    char id[KILN_SESSION_ID_LEN + 1], got[KILN_SID_LEN + 1];
    use_keys(key_a, NULL);
    store_open(&st);
    new_session(st.kv, USER_U, "dev", "one", s1);
    new_session(st.kv, USER_U, "dev", "two", s2);
    new_session(st.kv, USER_V, "dev", "other", v1);

    /* Another user's session is no session of U's. */
    kiln_session_public_id(v1, id);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(id), got), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_load(st.kv, st.a, v1, &s), 0);
    /* Ids that were never made. */
    assert_int_equal(kiln_session_end(st.kv, USER_U, KILN_STR("short"), got), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_end(st.kv, USER_U, KILN_STR("AAAAAAAAAAAAAAAAAAAAAA"), got),
                     KILN_ENOTFOUND);
    assert_int_equal(kiln_session_end(st.kv, USER_U, (kiln_str){ s1, KILN_SESSION_ID_LEN }, got),
                     KILN_ENOTFOUND); /* a sid's first characters are not its id */
    assert_int_equal(kiln_session_end(st.kv, USER_U, KILN_STR_NULL, got), KILN_ENOTFOUND);

    kiln_session_public_id(s1, id);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(id), got), 0);
    assert_string_equal(got, s1);
    assert_int_equal(kiln_session_load(st.kv, st.a, s1, &s), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_load(st.kv, st.a, s2, &s), 0);
    assert_int_equal(index_size(st.kv, st.a, USER_U), 1);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(id), got), KILN_ENOTFOUND);

    /* Still indexed but expired: nothing to end, and it leaves the index. */
    drop_record(st.kv, s2);
    kiln_session_public_id(s2, id);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(id), got), KILN_ENOTFOUND);
    assert_int_equal(index_size(st.kv, st.a, USER_U), 0);
    store_close(&st);
}

/* A rotated SECRET_KEY_BASE changes the ids; the previous key's still work. */
static void test_session_public_id_rotation(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session_info *l = NULL;
    size_t n = 0;
    char s1[KILN_SID_LEN + 1], s2[KILN_SID_LEN + 1], got[KILN_SID_LEN + 1];
    char old1[KILN_SESSION_ID_LEN + 1], old2[KILN_SESSION_ID_LEN + 1];
    char new1[KILN_SESSION_ID_LEN + 1], new2[KILN_SESSION_ID_LEN + 1];
    use_keys(key_a, NULL);
    store_open(&st);
    new_session(st.kv, USER_U, "dev", "one", s1);
    new_session(st.kv, USER_U, "dev", "two", s2);
    kiln_session_public_id(s1, old1);
    kiln_session_public_id(s2, old2);

    use_keys(key_b, key_a);
    kiln_session_public_id(s1, new1);
    kiln_session_public_id(s2, new2);
    assert_string_not_equal(old1, new1);
    assert_int_equal(kiln_session_list(st.kv, st.a, USER_U, NULL, &l, &n), 0);
    assert_int_equal(n, 2);
    assert_true(strcmp(l[0].id, new1) == 0 || strcmp(l[1].id, new1) == 0);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(old1), got), 0);
    assert_string_equal(got, s1);

    use_keys(key_b, NULL);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(old2), got), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_end(st.kv, USER_U, kiln_str_c(new2), got), 0);
    store_close(&st);
}

struct ended_log {
    size_t n;
    char sids[8][KILN_SID_LEN + 1];
};

static void log_end(void *ctx, const char *sid_)
{
    struct ended_log *e = ctx;
    if (e->n < ARRAY_LEN(e->sids))
        memcpy(e->sids[e->n], sid_, KILN_SID_LEN + 1);
    e->n++;
}

static void test_session_end_all(void **state)
{
    (void)state;
    struct store st;
    struct kiln_session s;
    struct ended_log log;
    char u[5][KILN_SID_LEN + 1], v1[KILN_SID_LEN + 1];
    size_t ended = 0;
    use_keys(key_a, NULL);
    store_open(&st);
    for (size_t i = 0; i < ARRAY_LEN(u); i++)
        new_session(st.kv, USER_U, "dev", "agent", u[i]);
    new_session(st.kv, USER_V, "dev", "other", v1);
    drop_record(st.kv, u[4]); /* expired: in the index, not ended */

    memset(&log, 0, sizeof log);
    assert_int_equal(kiln_session_end_all(st.kv, USER_U, u[2], log_end, &log, &ended), 0);
    assert_int_equal(ended, 3);
    assert_int_equal(log.n, 3);
    for (size_t i = 0; i < ARRAY_LEN(u); i++) {
        bool reported = false;
        for (size_t j = 0; j < log.n; j++)
            reported = reported || strcmp(log.sids[j], u[i]) == 0;
        assert_int_equal(reported, i != 2 && i != 4);
        assert_int_equal(kiln_session_load(st.kv, st.a, u[i], &s), i == 2 ? 0 : KILN_ENOTFOUND);
    }
    assert_int_equal(kiln_session_load(st.kv, st.a, v1, &s), 0);
    assert_int_equal(index_size(st.kv, st.a, USER_U), 1);

    /* Every one (a password reset). */
    assert_int_equal(kiln_session_end_all(st.kv, USER_U, NULL, NULL, NULL, &ended), 0);
    assert_int_equal(ended, 1);
    assert_int_equal(kiln_session_load(st.kv, st.a, u[2], &s), KILN_ENOTFOUND);
    assert_int_equal(index_size(st.kv, st.a, USER_U), 0);
    assert_int_equal(kiln_session_end_all(st.kv, USER_U, NULL, NULL, NULL, &ended), 0);
    assert_int_equal(ended, 0);
    assert_int_equal(kiln_session_load(st.kv, st.a, v1, &s), 0);
    store_close(&st);
}

/* More sessions than one batch of the index: every one ends all the same. */
static void test_session_end_all_many(void **state)
{
    (void)state;
    enum { N = KILN_KV_SET_LIST_MAX + 205 };
    struct store st;
    struct kiln_session s;
    char keep[KILN_SID_LEN + 1], other[KILN_SID_LEN + 1];
    size_t ended = 0;
    use_keys(key_a, NULL);
    store_open(&st);
    new_session(st.kv, USER_U, "dev", "keep", keep);
    for (int i = 1; i < N; i++)
        new_session(st.kv, USER_U, "dev", "many", other);
    assert_int_equal(kiln_session_end_all(st.kv, USER_U, keep, NULL, NULL, &ended), 0);
    assert_int_equal(ended, N - 1);
    assert_int_equal(index_size(st.kv, st.a, USER_U), 1);
    assert_int_equal(kiln_session_load(st.kv, st.a, keep, &s), 0);
    assert_int_equal(kiln_session_load(st.kv, st.a, other, &s), KILN_ENOTFOUND);
    store_close(&st);
}

static void test_cookie_parsing(void **state)
{
    (void)state;
    static const struct {
        const char *header, *name, *want; /* want NULL: absent */
    } cases[] = {
        { "_backend_session=abc", "_backend_session", "abc" },
        { "a=1; _backend_session=abc; b=2", "_backend_session", "abc" },
        { "a=1;_backend_session=abc", "_backend_session", "abc" },
        { "  _backend_session = abc  ", "_backend_session", "abc" },
        { "_backend_session=\"abc\"", "_backend_session", "abc" },
        { "_backend_session=first; _backend_session=second", "_backend_session", "first" },
        { "x_backend_session=abc", "_backend_session", NULL },
        { "_backend_session", "_backend_session", NULL },
        { ";;;=;", "_backend_session", NULL },
        { "", "_backend_session", NULL },
        { "_backend_session=", "_backend_session", "" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        kiln_str v;
        bool found = kiln_cookie_find(kiln_str_c(cases[i].header), cases[i].name, &v);
        if (found != (cases[i].want != NULL))
            fail_msg("\"%s\": found=%d", cases[i].header, found);
        if (found)
            assert_kstr_eq_in(cases[i].header, v, cases[i].want);
    }
    kiln_arena *a = kiln_arena_new(512);
    struct kiln_cookie_attrs at = { "/", 604800, true, true, "Lax" };
    assert_string_equal(kiln_cookie_build(a, "_backend_session", KILN_STR("v"), &at),
                        "_backend_session=v; Path=/; Max-Age=604800; HttpOnly; Secure; "
                        "SameSite=Lax");
    struct kiln_cookie_attrs gone = { "/auth", 0, true, false, NULL };
    assert_string_equal(kiln_cookie_build(a, "_kiln_login", KILN_STR(""), &gone),
                        "_kiln_login=; Path=/auth; Max-Age=0; HttpOnly");
    kiln_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_roundtrip_and_tampering),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_login_cookie),
        cmocka_unit_test(test_session_store),
        cmocka_unit_test(test_refresh_never_revives_a_deleted_session),
        cmocka_unit_test(test_session_list),
        cmocka_unit_test(test_session_client_text),
        cmocka_unit_test(test_session_list_cleans_up),
        cmocka_unit_test(test_session_refresh_keeps_the_index),
        cmocka_unit_test(test_session_from_before_the_index),
        cmocka_unit_test(test_session_end),
        cmocka_unit_test(test_session_public_id_rotation),
        cmocka_unit_test(test_session_end_all),
        cmocka_unit_test(test_session_end_all_many),
        cmocka_unit_test(test_cookie_parsing),
    };
    return cmocka_run_group_tests_name("auth/session", tests, NULL, NULL);
}
