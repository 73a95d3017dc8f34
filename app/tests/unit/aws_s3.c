/*
 * aws/s3.c without a network: the ListObjectsV2 parser (S3's XML is
 * untrusted input: DTDs, entities, oversized keys, stray elements), the POST
 * policy document and its form fields, and bucket names. The signatures
 * themselves are checked against botocore by app/tests/http/test_uploads.py.
 */
#include <jansson.h>
#include <openssl/evp.h>

#include "test_util.h"

#include "aws/s3.h"
#include "core/arena.h"
#include "core/err.h"

#define LIST_HEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" \
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
#define LIST_TAIL "</ListBucketResult>"
#define ENTRY(k, size, date) \
    "<Contents><Key>" k "</Key><LastModified>" date "</LastModified>" \
    "<ETag>&quot;abc&quot;</ETag><Size>" size "</Size><StorageClass>STANDARD</StorageClass>" \
    "</Contents>"

static void test_list_parses_entries_and_token(void **state)
{
    (void)state;
    static const char xml[] = LIST_HEAD "<Name>b</Name><Prefix>users/u/uploads/</Prefix>"
        "<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
        ENTRY("users/u/uploads/a&amp;b.txt", "14", "2026-02-13T17:54:34.599Z")
        ENTRY("users/u/uploads/c.png", "0", "2026-02-13T17:54:34Z")
        "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
        LIST_TAIL;
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_s3_list l;
    assert_int_equal(kiln_s3_list_parse(a, xml, sizeof xml - 1, 10, &l), 0);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.objects[0].key, "users/u/uploads/a&b.txt");
    assert_int_equal(l.objects[0].size, 14);
    assert_string_equal(l.objects[0].last_modified, "2026-02-13T17:54:34.599000Z");
    assert_string_equal(l.objects[1].key, "users/u/uploads/c.png");
    assert_int_equal(l.objects[1].size, 0);
    assert_string_equal(l.objects[1].last_modified, "2026-02-13T17:54:34.000000Z");
    assert_null(l.objects[0].content_type);
    assert_string_equal(l.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    assert_null(l.error_code);
    kiln_arena_free(a);
}

static void test_list_empty_and_error_document(void **state)
{
    (void)state;
    static const char empty[] = LIST_HEAD "<KeyCount>0</KeyCount>"
        "<IsTruncated>false</IsTruncated>" LIST_TAIL;
    static const char error[] = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>"
        "<Message>The specified bucket does not exist</Message></Error>";
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_s3_list l;
    assert_int_equal(kiln_s3_list_parse(a, empty, sizeof empty - 1, 10, &l), 0);
    assert_int_equal(l.count, 0);
    assert_null(l.next_token);
    assert_int_equal(kiln_s3_list_parse(a, error, sizeof error - 1, 10, &l), 0);
    assert_int_equal(l.count, 0);
    assert_string_equal(l.error_code, "NoSuchBucket");
    kiln_arena_free(a);
}

/* A date S3 would not send is shown as unknown, not refused. */
static void test_list_unknown_date_is_empty(void **state)
{
    (void)state;
    static const char xml[] = LIST_HEAD ENTRY("k", "1", "yesterday")
        ENTRY("k2", "1", "2026-13-01T00:00:00Z") LIST_TAIL;
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_s3_list l;
    assert_int_equal(kiln_s3_list_parse(a, xml, sizeof xml - 1, 10, &l), 0);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.objects[0].last_modified, "");
    assert_string_equal(l.objects[1].last_modified, "");
    kiln_arena_free(a);
}

static const struct refused {
    const char *name;
    const char *xml;
} refused[] = {
    { "not XML", "hello" },
    { "empty", "" },
    { "truncated", LIST_HEAD "<Contents><Key>k</Key>" },
    { "another root", "<ListAllMyBucketsResult></ListAllMyBucketsResult>" },
    { "a DTD", "<!DOCTYPE x [<!ENTITY a \"b\">]>" LIST_HEAD LIST_TAIL },
    { "an entity bomb",
      "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
      "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
      "<ListBucketResult><Contents><Key>&c;</Key><Size>1</Size></Contents></ListBucketResult>" },
    { "an external entity",
      "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
      "<ListBucketResult><Contents><Key>&x;</Key><Size>1</Size></Contents></ListBucketResult>" },
    { "an undefined entity", LIST_HEAD "<Contents><Key>&x;</Key><Size>1</Size></Contents>"
      LIST_TAIL },
    { "an entry without a key", LIST_HEAD "<Contents><Size>1</Size></Contents>" LIST_TAIL },
    { "an empty key", LIST_HEAD "<Contents><Key></Key><Size>1</Size></Contents>" LIST_TAIL },
    { "an entry without a size", LIST_HEAD "<Contents><Key>k</Key></Contents>" LIST_TAIL },
    { "a size that is not a number", LIST_HEAD ENTRY("k", "-1", "2026-01-01T00:00:00Z")
      LIST_TAIL },
    { "two keys in one entry",
      LIST_HEAD "<Contents><Key>a</Key><Key>b</Key><Size>1</Size></Contents>" LIST_TAIL },
    { "an element inside a key",
      LIST_HEAD "<Contents><Key>a<b/></Key><Size>1</Size></Contents>" LIST_TAIL },
    { "two tokens", LIST_HEAD "<NextContinuationToken>a</NextContinuationToken>"
      "<NextContinuationToken>b</NextContinuationToken>" LIST_TAIL },
    { "a NUL reference", LIST_HEAD "<Contents><Key>a&#0;</Key><Size>1</Size></Contents>"
      LIST_TAIL },
    { "more entries than asked", LIST_HEAD ENTRY("a", "1", "x") ENTRY("b", "1", "x")
      ENTRY("c", "1", "x") ENTRY("d", "1", "x") LIST_TAIL },
};

static void test_list_refuses(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
        struct kiln_s3_list l;
        int rc = kiln_s3_list_parse(a, refused[i].xml, strlen(refused[i].xml), 3, &l);
        if (rc != KILN_EPROTO)
            fail_msg("%s: got %d, want KILN_EPROTO", refused[i].name, rc);
        assert_int_equal(l.count, 0);
        assert_null(l.objects);
    }
    kiln_arena_free(a);
}

/* Keys up to S3's 1024 bytes pass; one more byte is refused. */
static void test_list_key_length_cap(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    for (size_t n = KILN_S3_KEY_MAX; n <= KILN_S3_KEY_MAX + 1; n++) {
        char key[KILN_S3_KEY_MAX + 2];
        memset(key, 'k', n);
        key[n] = '\0';
        char *xml = kiln_arena_sprintf(a, LIST_HEAD "<Contents><Key>%s</Key><Size>1</Size>"
                                          "</Contents>" LIST_TAIL, key);
        struct kiln_s3_list l;
        int rc = kiln_s3_list_parse(a, xml, strlen(xml), 10, &l);
        assert_int_equal(rc, n == KILN_S3_KEY_MAX ? 0 : KILN_EPROTO);
    }
    kiln_arena_free(a);
}

/* ---- POST policy -------------------------------------------------------- */

static char *b64_decode(const char *in)
{
    size_t n = strlen(in);
    unsigned char *out = calloc(1, n + 1);
    int got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    assert_true(got >= 0);
    while (n && in[n - 1] == '=') {
        n--;
        got--;
    }
    out[got] = '\0';
    return (char *)out;
}

static const char *field(const struct kiln_s3_post *p, const char *name)
{
    for (size_t i = 0; i < p->nfields; i++)
        if (strcmp(p->fields[i].name, name) == 0)
            return p->fields[i].value;
    return NULL;
}

static void test_post_policy(void **state)
{
    (void)state;
    struct kiln_aws_creds creds = { .access_key_id = "AKIDEXAMPLE",
                                    .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" };
    /* 2026-02-13T17:54:34Z */
    struct kiln_sigv4 s = { &creds, "eu-west-1", "s3", 1771005274 };
    struct kiln_s3_post_policy p = { "users/u/uploads/x-a.png", "image/png", 10485760, 3600 };
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_s3_post post;
    assert_int_equal(kiln_s3_post_sign(&s, a, "bkt", "https://bkt.s3.eu-west-1.amazonaws.com/",
                                       &p, &post), 0);
    assert_string_equal(post.url, "https://bkt.s3.eu-west-1.amazonaws.com/");
    static const char want[] =
        "{\"expiration\":\"2026-02-13T18:54:34.000Z\",\"conditions\":[{\"bucket\":\"bkt\"},"
        "[\"eq\",\"$key\",\"users/u/uploads/x-a.png\"],{\"Content-Type\":\"image/png\"},"
        "[\"content-length-range\",1,10485760],{\"x-amz-algorithm\":\"AWS4-HMAC-SHA256\"},"
        "{\"x-amz-credential\":\"AKIDEXAMPLE/20260213/eu-west-1/s3/aws4_request\"},"
        "{\"x-amz-date\":\"20260213T175434Z\"}]}";
    assert_string_equal(post.policy_json, want);
    static const char *const names[] = { "key", "Content-Type", "x-amz-algorithm",
                                         "x-amz-credential", "x-amz-date", "policy",
                                         "x-amz-signature" };
    assert_int_equal(post.nfields, ARRAY_LEN(names));
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        assert_string_equal(post.fields[i].name, names[i]);
    assert_string_equal(field(&post, "key"), "users/u/uploads/x-a.png");
    assert_string_equal(field(&post, "Content-Type"), "image/png");
    assert_string_equal(field(&post, "x-amz-date"), "20260213T175434Z");
    char *decoded = b64_decode(field(&post, "policy"));
    assert_string_equal(decoded, want);
    free(decoded);
    char sig[65];
    kiln_sigv4_sign_text(&s, field(&post, "policy"), strlen(field(&post, "policy")), sig);
    assert_string_equal(field(&post, "x-amz-signature"), sig);
    kiln_arena_free(a);
}

static void test_post_policy_with_session_token(void **state)
{
    (void)state;
    struct kiln_aws_creds creds = { .access_key_id = "ASIA", .secret_access_key = "s",
                                    .session_token = "tok/en+=" };
    struct kiln_sigv4 s = { &creds, "us-east-1", "s3", 1771005274 };
    struct kiln_s3_post_policy p = { "k\"ey", "text/plain", 1, 60 };
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_s3_post post;
    assert_int_equal(kiln_s3_post_sign(&s, a, "b", "http://127.0.0.1:1/b", &p, &post), 0);
    assert_int_equal(post.nfields, 8);
    assert_string_equal(post.fields[5].name, "x-amz-security-token");
    assert_string_equal(post.fields[5].value, "tok/en+=");
    json_t *doc = json_loads(post.policy_json, 0, NULL);
    assert_non_null(doc);
    json_t *c = json_object_get(doc, "conditions");
    assert_int_equal(json_array_size(c), 8);
    assert_string_equal(json_string_value(json_object_get(json_array_get(c, 7),
                                                          "x-amz-security-token")),
                        "tok/en+=");
    /* The key is JSON-escaped, not cut. */
    assert_string_equal(json_string_value(json_array_get(json_array_get(c, 1), 2)), "k\"ey");
    assert_string_equal(json_string_value(json_object_get(doc, "expiration")),
                        "2026-02-13T17:55:34.000Z");
    json_decref(doc);

    struct kiln_s3_post_policy bad[] = {
        { "", "text/plain", 1, 60 }, { "k", "text/plain", 0, 60 }, { "k", "text/plain", 1, 0 },
        { "k", "text/plain", 1, 604801 }, { "k", NULL, 1, 60 },
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(kiln_s3_post_sign(&s, a, "b", "u", &bad[i], &post), KILN_EINVAL);
    kiln_arena_free(a);
}

static void test_bucket_names(void **state)
{
    (void)state;
    static const struct { const char *name; bool ok; } cases[] = {
        { "kiln-uploads", true }, { "a.b.c", true }, { "abc", true }, { "ab", false },
        { "Upper", false }, { "-abc", false }, { "abc-", false }, { "a..b", false },
        { "a.-b", false }, { "a-.b", false }, { "a_b", false }, { "a/b", false },
        { "0123456789012345678901234567890123456789012345678901234567890123", false },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        if (kiln_s3_bucket_valid(cases[i].name) != cases[i].ok)
            fail_msg("bucket \"%s\": want %s", cases[i].name, cases[i].ok ? "valid" : "refused");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_parses_entries_and_token),
        cmocka_unit_test(test_list_empty_and_error_document),
        cmocka_unit_test(test_list_unknown_date_is_empty),
        cmocka_unit_test(test_list_refuses),
        cmocka_unit_test(test_list_key_length_cap),
        cmocka_unit_test(test_post_policy),
        cmocka_unit_test(test_post_policy_with_session_token),
        cmocka_unit_test(test_bucket_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
