/*
 * Unit tests for app/src/auth/session.c (signed tokens, key rotation, the
 * login cookie, sessions in the kv store) and app/src/http/cookie.c, on the
 * memory kv driver.
 */
#include <stdlib.h>

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
    assert_int_equal(kiln_session_create(kv, &u, t1), 0);
    assert_int_equal(kiln_session_create(kv, &u, t2), 0);
    assert_string_not_equal(t1, t2); /* a fresh sid every time */
    assert_true(kiln_session_token_verify(kiln_str_c(t1), s1));
    assert_true(kiln_session_token_verify(kiln_str_c(t2), s2));

    struct kiln_session s;
    assert_int_equal(kiln_session_load(kv, a, s1, &s), 0);
    assert_string_equal(s.user_id, u.user_id);
    assert_non_null(strstr(s.user_json.p, "\"provider\":\"dev\""));
    assert_non_null(strstr(s.user_json.p, "\"image\":null"));

    assert_int_equal(kiln_session_delete(kv, s1, NULL), 0);
    assert_int_equal(kiln_session_load(kv, a, s1, &s), KILN_ENOTFOUND);
    assert_int_equal(kiln_session_load(kv, a, s2, &s), 0);

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
    assert_int_equal(kiln_session_create(kv, &u, t), 0);
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
        cmocka_unit_test(test_cookie_parsing),
    };
    return cmocka_run_group_tests_name("auth/session", tests, NULL, NULL);
}
