/*
 * Unit tests for the Standard Webhooks signature and the event patterns of
 * app/src/webhooks/webhooks.c. The expected signatures were computed
 * outside Kiln (Python's hmac and base64, from the specification's rule:
 * base64(HMAC-SHA256(base64-decoded secret, "msg_id.timestamp.body"))); the
 * black-box suite also verifies real deliveries with the standardwebhooks
 * npm library.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "test_util.h"

#include "core/arena.h"
#include "webhooks/webhooks.h"

#define SECRET1 "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define SECRET2 "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define SIG1 "v1,AMaOha7DUT/0J0JMycRuYOBSvbx3WtwLd2khXXbaVj4="
#define SIG2 "v1,5Bd8hIzJdVuIx8oyKYcXmDzB5J3H/yo75pNF3NbZ0Is="
#define BODY "{\"a\":1}"

static void test_signature_matches_an_outside_computation(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    const char *sig = NULL;
    assert_true(kiln_webhook_sign(a, SECRET1, NULL, "msg_1", 1700000000LL, BODY, 7, &sig));
    assert_string_equal(sig, SIG1);
    /* After a rotation: the new secret's, then the previous one's. */
    assert_true(kiln_webhook_sign(a, SECRET1, SECRET2, "msg_1", 1700000000LL, BODY, 7, &sig));
    assert_string_equal(sig, SIG1 " " SIG2);
    /* Any change to the id, the time or the body changes it. */
    assert_true(kiln_webhook_sign(a, SECRET1, NULL, "msg_2", 1700000000LL, BODY, 7, &sig));
    assert_string_not_equal(sig, SIG1);
    assert_true(kiln_webhook_sign(a, SECRET1, NULL, "msg_1", 1700000001LL, BODY, 7, &sig));
    assert_string_not_equal(sig, SIG1);
    assert_true(kiln_webhook_sign(a, SECRET1, NULL, "msg_1", 1700000000LL, "{\"a\":2}", 7, &sig));
    assert_string_not_equal(sig, SIG1);
    kiln_arena_free(a);
}

static void test_secrets_that_are_not_whsec_are_refused(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    const char *sig = "x";
    assert_false(kiln_webhook_sign(a, "AAECAwQF", NULL, "m", 1, "", 0, &sig));
    assert_null(sig);
    assert_false(kiln_webhook_sign(a, "whsec_", NULL, "m", 1, "", 0, &sig));
    assert_false(kiln_webhook_sign(a, "whsec_abc", NULL, "m", 1, "", 0, &sig));
    assert_false(kiln_webhook_sign(a, SECRET1, "nope", "m", 1, "", 0, &sig));
    kiln_arena_free(a);
}

static void test_new_secrets_are_whsec_and_differ(void **state)
{
    (void)state;
    char s1[KILN_WEBHOOK_SECRET_LEN + 1], s2[KILN_WEBHOOK_SECRET_LEN + 1];
    assert_int_equal(kiln_webhook_new_secret(s1), 0);
    assert_int_equal(kiln_webhook_new_secret(s2), 0);
    assert_int_equal(strlen(s1), KILN_WEBHOOK_SECRET_LEN);
    assert_memory_equal(s1, "whsec_", 6);
    assert_string_not_equal(s1, s2);
    kiln_arena *a = kiln_arena_new(1024);
    const char *sig = NULL;
    assert_true(kiln_webhook_sign(a, s1, NULL, "m", 1, "", 0, &sig));
    assert_int_equal(strlen(sig), 3 + 44);
    kiln_arena_free(a);
}

static void test_patterns(void **state)
{
    (void)state;
    assert_true(kiln_webhook_pattern_matches("*", "notes.created"));
    assert_true(kiln_webhook_pattern_matches("notes.*", "notes.created"));
    assert_true(kiln_webhook_pattern_matches("notes.created", "notes.created"));
    assert_false(kiln_webhook_pattern_matches("notes.created", "notes.updated"));
    assert_false(kiln_webhook_pattern_matches("notes.*", "notesx.created"));
    assert_false(kiln_webhook_pattern_matches("note.*", "notes.created"));
    assert_false(kiln_webhook_pattern_matches("tasks.*", "notes.created"));
    assert_false(kiln_webhook_pattern_matches(".*", "notes.created"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_matches_an_outside_computation),
        cmocka_unit_test(test_secrets_that_are_not_whsec_are_refused),
        cmocka_unit_test(test_new_secrets_are_whsec_and_differ),
        cmocka_unit_test(test_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
