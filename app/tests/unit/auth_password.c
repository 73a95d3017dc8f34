/*
 * Unit tests for app/src/auth/password.c: the rules a new password must
 * meet (NIST SP 800-63B), the common-password list the build makes
 * (scripts/gen-common-passwords.sh), and Argon2id hashes with the bound on
 * how many run at once.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "test_util.h"

#include "auth/password.h"
#include "core/arena.h"
#include "core/dl.h"

static void test_the_list_is_sorted_lowercase_and_long_enough(void **state)
{
    (void)state;
    assert_true(kiln_common_passwords_count > 10000);
    const char *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < kiln_common_passwords_count; i++) {
        const char *e = kiln_common_passwords + kiln_common_password_at[i];
        const char *nl = strchr(e, '\n');
        assert_non_null(nl);
        size_t len = (size_t)(nl - e);
        assert_true(len >= KILN_PASSWORD_MIN_FLOOR);
        for (size_t j = 0; j < len; j++)
            assert_false(e[j] >= 'A' && e[j] <= 'Z');
        if (prev) {
            size_t m = len < prev_len ? len : prev_len;
            int c = memcmp(prev, e, m);
            assert_true(c < 0 || (c == 0 && prev_len < len));
        }
        prev = e;
        prev_len = len;
        /* Every entry is found by the search. */
        assert_true(kiln_password_is_common(e, len));
    }
}

static void test_common_passwords_are_found_in_any_case(void **state)
{
    (void)state;
    assert_true(kiln_password_is_common("password1", 9));
    assert_true(kiln_password_is_common("PassWord1", 9));
    assert_true(kiln_password_is_common("12345678", 8));
    assert_true(kiln_password_is_common("qwertyuiop", 10));
    assert_false(kiln_password_is_common("password1x-not-common", 21));
    assert_false(kiln_password_is_common("password", 7)); /* a prefix */
    assert_false(kiln_password_is_common("", 0));
}

static void test_rules(void **state)
{
    (void)state;
    kiln_password_init(8, 2);
    assert_int_equal(kiln_password_check("tr0ub4dor", 9, NULL), KILN_PASSWORD_OK);
    assert_int_equal(kiln_password_check("Zq7-kw2p", 8, NULL), KILN_PASSWORD_OK);
    assert_int_equal(kiln_password_check("Zq7-kw2", 7, NULL), KILN_PASSWORD_TOO_SHORT);
    /* Characters are code points: seven two-byte ones are too short,
     * eight are enough. */
    assert_int_equal(kiln_password_check("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 14,
                                         NULL),
                     KILN_PASSWORD_TOO_SHORT);
    assert_int_equal(kiln_password_check("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                                         16, NULL),
                     KILN_PASSWORD_OK);
    /* Spaces and any printable character are allowed, no composition
     * rules: a passphrase of plain words passes. */
    assert_int_equal(kiln_password_check("correct horse battery staple", 28, NULL),
                     KILN_PASSWORD_OK);
    char longpw[300];
    memset(longpw, 'k', sizeof longpw);
    assert_int_equal(kiln_password_check(longpw, 256, NULL), KILN_PASSWORD_OK);
    assert_int_equal(kiln_password_check(longpw, 257, NULL), KILN_PASSWORD_TOO_LONG);
    assert_int_equal(kiln_password_check("abcdefg\xff", 8, NULL), KILN_PASSWORD_NOT_UTF8);
    assert_int_equal(kiln_password_check("abcdef\xc0\xaf", 8, NULL), KILN_PASSWORD_NOT_UTF8);
    assert_int_equal(kiln_password_check("Password1", 9, NULL), KILN_PASSWORD_COMMON);
    assert_int_equal(kiln_password_check("Ann.Example@example.com", 23, "ann.example@example.com"),
                     KILN_PASSWORD_IS_EMAIL);
    assert_int_equal(kiln_password_check("ann.example", 11, "ann.example@example.com"),
                     KILN_PASSWORD_IS_EMAIL);
    assert_int_equal(kiln_password_check("ann.example!", 12, "ann.example@example.com"),
                     KILN_PASSWORD_OK);
    /* PASSWORD_MIN_LENGTH raises the floor, never lowers it. */
    kiln_password_init(12, 2);
    assert_int_equal(kiln_password_check("tr0ub4dor-x", 11, NULL), KILN_PASSWORD_TOO_SHORT);
    kiln_password_init(4, 2);
    assert_int_equal(kiln_password_check("Zq7-kw2", 7, NULL), KILN_PASSWORD_TOO_SHORT);
    kiln_password_init(8, 2);
}

static void test_hash_and_verify(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    const char *h1 = NULL, *h2 = NULL;
    assert_int_equal(kiln_password_hash(a, "correct horse", 13, &h1), 0);
    assert_int_equal(kiln_password_hash(a, "correct horse", 13, &h2), 0);
    /* OWASP's parameters, in the PHC string form; salted: two hashes of
     * one password differ. */
    assert_true(strncmp(h1, "$argon2id$v=19$m=19456,t=2,p=1$", 31) == 0);
    assert_string_not_equal(h1, h2);
    bool ok = false, rehash = true;
    assert_int_equal(kiln_password_verify(h1, "correct horse", 13, &ok, &rehash), 0);
    assert_true(ok);
    assert_false(rehash);
    assert_int_equal(kiln_password_verify(h1, "correct horsE", 13, &ok, &rehash), 0);
    assert_false(ok);
    assert_int_equal(kiln_password_verify(h1, "correct hors", 12, &ok, NULL), 0);
    assert_false(ok);
    /* No account: checked against a hash nobody knows the password of. */
    assert_int_equal(kiln_password_verify(NULL, "correct horse", 13, &ok, &rehash), 0);
    assert_false(ok);
    /* A damaged or foreign stored hash is a mismatch, not a crash. */
    assert_int_equal(kiln_password_verify("$argon2id$v=19$m=19456,t=2,p=1$bad", "x", 1, &ok, NULL),
                     0);
    assert_false(ok);
    assert_int_equal(kiln_password_verify("$2y$10$abcdefghijklmnopqrstuv", "x", 1, &ok, NULL), 0);
    assert_false(ok);
    kiln_arena_free(a);
}

static void test_a_hash_with_older_parameters_verifies_and_asks_for_a_rehash(void **state)
{
    (void)state;
    assert_int_equal(kiln_dl_argon2(), 0);
    char old[160];
    const unsigned char salt[16] = "0123456789abcdef";
    assert_int_equal(kiln_argon2.argon2id_hash_encoded(1, 4096, 1, "hunter22", 8, salt, 16, 32,
                                                       old, sizeof old),
                     ARGON2_OK);
    bool ok = false, rehash = false;
    assert_int_equal(kiln_password_verify(old, "hunter22", 8, &ok, &rehash), 0);
    assert_true(ok);
    assert_true(rehash);
    assert_int_equal(kiln_password_verify(old, "hunter23", 8, &ok, &rehash), 0);
    assert_false(ok);
    assert_false(rehash);
}

static void *hash_one(void *arg)
{
    (void)arg;
    kiln_arena *a = kiln_arena_new(512);
    const char *h = NULL;
    int err = kiln_password_hash(a, "a long enough password", 22, &h);
    kiln_arena_free(a);
    return (void *)(intptr_t)err;
}

static void test_at_most_the_bound_hash_at_once(void **state)
{
    (void)state;
    kiln_password_init(8, 2);
    pthread_t t[6];
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        assert_int_equal(pthread_create(&t[i], NULL, hash_one, NULL), 0);
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        void *rc;
        pthread_join(t[i], &rc);
        assert_int_equal((intptr_t)rc, 0);
    }
    assert_true(kiln_password_peak() >= 1);
    assert_true(kiln_password_peak() <= 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_list_is_sorted_lowercase_and_long_enough),
        cmocka_unit_test(test_common_passwords_are_found_in_any_case),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_hash_and_verify),
        cmocka_unit_test(test_a_hash_with_older_parameters_verifies_and_asks_for_a_rehash),
        cmocka_unit_test(test_at_most_the_bound_hash_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
