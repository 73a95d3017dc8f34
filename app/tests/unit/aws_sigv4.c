/*
 * Unit tests for app/src/aws/sigv4.c against AWS's published vectors:
 *
 * - the SigV4 test suite (aws-sig-v4-test-suite), one folder per case under
 *   app/tests/data/sigv4/ (README.md there says where the files come from):
 *   each .req is parsed and signed with the suite's fixed credentials and
 *   clock, and the canonical request, string to sign and Authorization must
 *   equal the .creq, .sts and .authz byte for byte (the .sreq too, rebuilt
 *   from the .req and our Authorization);
 * - the S3 documentation's worked examples: the header-signed GET (Range),
 *   PUT, GET ?lifecycle and GET ?max-keys&prefix, the presigned GET of
 *   examplebucket/test.txt, and the browser POST policy;
 * - malformed input: bad escapes, missing credentials, expiry out of range.
 *
 * The data folder is app/tests/data/sigv4 relative to the working directory
 * (make runs the tests from the repository root); KILN_SIGV4_DATA overrides.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "test_util.h"

#include "aws/sigv4.h"
#include "core/buf.h"
#include "core/err.h"

/* ---- the suite's fixed inputs (its README) ------------------------------ */

#define SUITE_AKID "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_REGION "us-east-1"
#define SUITE_SERVICE "service"
#define SUITE_TIME ((time_t)1440938160) /* 20150830T123600Z */
/* post-sts-token/readme.txt of the suite. */
#define SUITE_TOKEN                                                                  \
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwA" \
    "eMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8" \
    "phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rK" \
    "wT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJ" \
    "abIQwj2ICCR/oLxBA=="

/* The S3 documentation's examples. */
#define S3_AKID "AKIAIOSFODNN7EXAMPLE"
#define S3_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_TIME ((time_t)1369353600) /* 20130524T000000Z */
#define S3_HOST "examplebucket.s3.amazonaws.com"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Every case expected in the data folder (the folder must hold exactly
 * these: a case added there without a line here fails the count). Not
 * included: get-header-value-multiline, which the suite marks obsolete. */
static const char *const CASES[] = {
    "get-header-key-duplicate",
    "get-header-value-order",
    "get-header-value-trim",
    "get-relative",
    "get-relative-relative",
    "get-slash",
    "get-slash-dot-slash",
    "get-slash-pointless-dot",
    "get-slashes",
    "get-space",
    "get-unreserved",
    "get-utf8",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-key",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-order-value",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-header-after",
    "post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
};

/*
 * Two cases whose published files disagree with each other (README.md): AWS
 * added "Content-Length:13" to their .req and .creq (and changed the
 * charset to "utf-8" in the second) but kept the .sts, .authz and .sreq made
 * from the earlier request. Here the .creq is checked against the .req as
 * published, and the .sts and the signature of the .authz against that
 * earlier request: the .req without Content-Length, with content_type when
 * given.
 */
static const struct erratum {
    const char *name;
    const char *content_type;   /* NULL: the .req's */
    bool authz_whole;           /* the .authz's SignedHeaders match too */
    bool sreq;                  /* the .sreq can be rebuilt */
} ERRATA[] = {
    { "post-x-www-form-urlencoded", NULL, true, true },
    { "post-x-www-form-urlencoded-parameters", "application/x-www-form-urlencoded; charset=utf8",
      false, false },
};

/* ---- helpers ------------------------------------------------------------ */

static const char *data_dir(void)
{
    const char *d = getenv("KILN_SIGV4_DATA");
    return d && *d ? d : "app/tests/data/sigv4";
}

/* The whole file, NUL-terminated; *len without the NUL. Fails the test when
 * the file cannot be read. */
static char *slurp(const char *name, const char *ext, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s.%s", data_dir(), name, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f) {
        print_error("cannot open %s (run from the repository root, or set KILN_SIGV4_DATA)\n",
                    path);
        fail();
    }
    kiln_buf b;
    kiln_buf_init(&b, 1u << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(kiln_buf_append(&b, chunk, n), 0);
    fclose(f);
    assert_int_equal(kiln_buf_append(&b, "", 1), 0);
    *len = b.len - 1;
    return b.p;
}

#define MAX_REQ_HEADERS 16

/* A .req file split in place: request line, headers, body. */
struct parsed_req {
    char *method, *path, *query;            /* query NULL: no '?' */
    struct kiln_sigv4_header h[MAX_REQ_HEADERS];
    size_t nh;
    const char *host;
    const char *body;
    size_t body_len;
    size_t head_len;                        /* bytes before the blank line */
};

/* METHOD SP TARGET SP HTTP/1.1 — the target may hold a raw space
 * (get-space), so the method ends at the first space and the version
 * starts at the last. Header lines are "Name:value" (the value as written,
 * the signer trims it). */
static void parse_req(const char *name, char *text, size_t len, struct parsed_req *r)
{
    memset(r, 0, sizeof *r);
    char *end = text + len;
    char *blank = strstr(text, "\n\n");
    r->head_len = blank ? (size_t)(blank - text) : len;
    if (blank) {
        r->body = blank + 2;
        r->body_len = (size_t)(end - r->body);
    } else {
        r->body = "";
    }
    text[r->head_len] = '\0';

    char *nl = strchr(text, '\n');
    if (nl)
        *nl = '\0';
    char *sp1 = strchr(text, ' ');
    char *sp2 = strrchr(text, ' ');
    if (!sp1 || sp1 == sp2 || strcmp(sp2 + 1, "HTTP/1.1") != 0) {
        print_error("[%s] bad request line: %s\n", name, text);
        fail();
    }
    *sp1 = '\0';
    *sp2 = '\0';
    r->method = text;
    r->path = sp1 + 1;
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }

    char *line = nl ? nl + 1 : NULL;
    while (line && *line) {
        char *next = strchr(line, '\n');
        if (next)
            *next = '\0';
        char *colon = strchr(line, ':');
        if (!colon || line[0] == ' ' || line[0] == '\t' || r->nh == MAX_REQ_HEADERS) {
            print_error("[%s] unexpected header line: %s\n", name, line);
            fail();
        }
        *colon = '\0';
        r->h[r->nh].name = line;
        r->h[r->nh++].value = colon + 1;
        if (strcasecmp(line, "host") == 0)
            r->host = colon + 1;
        line = next ? next + 1 : NULL;
    }
    if (!r->host) {
        print_error("[%s] no Host header\n", name);
        fail();
    }
}

static struct kiln_sigv4_request to_request(const struct parsed_req *r)
{
    return (struct kiln_sigv4_request){
        .method = r->method, .host = r->host, .path = r->path, .query = r->query,
        .headers = r->h, .nheaders = r->nh, .payload = r->body, .payload_len = r->body_len,
    };
}

static void suite_creds(struct kiln_aws_creds *c, const char *token)
{
    memset(c, 0, sizeof *c);
    snprintf(c->access_key_id, sizeof c->access_key_id, "%s", SUITE_AKID);
    snprintf(c->secret_access_key, sizeof c->secret_access_key, "%s", SUITE_SECRET);
    snprintf(c->session_token, sizeof c->session_token, "%s", token ? token : "");
}

#define assert_buf_eq_in(ctx, b, want, want_len)                                        \
    do {                                                                                \
        char x_[256];                                                                   \
        snprintf(x_, sizeof x_, "[%s] %s", (ctx), #b);                                  \
        tu_assert_mem_eq((b).p, (b).len, (want), (want_len), x_, __FILE__, __LINE__);    \
    } while (0)

#define assert_str_eq_in(ctx, got, want)                                                \
    do {                                                                                \
        char x_[256];                                                                   \
        const char *g_ = (got), *w_ = (want);                                           \
        snprintf(x_, sizeof x_, "[%s] %s", (ctx), #got);                                \
        tu_assert_mem_eq(g_, strlen(g_), w_, strlen(w_), x_, __FILE__, __LINE__);       \
    } while (0)

static const struct erratum *erratum_for(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(ERRATA); i++)
        if (strcmp(ERRATA[i].name, name) == 0)
            return &ERRATA[i];
    return NULL;
}

/* "Signature=<hex>" at the end of an Authorization value. */
static const char *signature_of(const char *authz)
{
    const char *s = strstr(authz, "Signature=");
    assert_non_null(s);
    return s + strlen("Signature=");
}

/* The .sreq: the .req's head, the token when it is added after signing,
 * the Authorization line, then the body after a blank line. */
static void check_sreq(const char *name, const char *head, size_t head_len, const char *token,
                       const char *authz, const char *body, size_t body_len)
{
    size_t want_len;
    char *want = slurp(name, "sreq", &want_len);
    kiln_buf b;
    kiln_buf_init(&b, 1u << 20);
    kiln_buf_append(&b, head, head_len);
    if (token)
        kiln_buf_printf(&b, "\nX-Amz-Security-Token:%s", token);
    kiln_buf_printf(&b, "\nAuthorization: %s", authz);
    if (body_len) {
        kiln_buf_append(&b, "\n\n", 2);
        kiln_buf_append(&b, body, body_len);
    }
    assert_buf_eq_in(name, b, want, want_len);
    kiln_buf_free(&b);
    free(want);
}

/* Sign one suite case; compare with its files. */
static void run_case(const char *name)
{
    size_t req_len, creq_len, sts_len, authz_len;
    char *req_text = slurp(name, "req", &req_len);
    char *req_copy = malloc(req_len + 1);
    memcpy(req_copy, req_text, req_len + 1);
    char *creq = slurp(name, "creq", &creq_len);
    char *sts = slurp(name, "sts", &sts_len);
    char *authz = slurp(name, "authz", &authz_len);

    struct parsed_req r;
    parse_req(name, req_text, req_len, &r);
    const struct erratum *e = erratum_for(name);
    bool token_after = strcmp(name, "post-sts-header-after") == 0;

    /* The request as published: signed by our signer with the headers it
     * lists (Host and X-Amz-Date among them, so the signer adds neither). */
    struct kiln_aws_creds creds;
    suite_creds(&creds, NULL);
    struct kiln_sigv4 s = { &creds, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    struct kiln_sigv4_request sr = to_request(&r);
    struct kiln_sigv4_signed out;
    assert_int_equal(kiln_sigv4_sign(&s, &sr, &out), 0);
    assert_buf_eq_in(name, out.canonical_request, creq, creq_len);
    assert_str_eq_in(name, out.amz_date, "20150830T123600Z");

    if (!e) {
        assert_buf_eq_in(name, out.string_to_sign, sts, sts_len);
        assert_buf_eq_in(name, out.authorization, authz, authz_len);
        assert_str_eq_in(name, out.signature, signature_of(authz));
        /* post-sts-header-after: the token is added after signing (our
         * caller signs without it in the credentials, then sends it). */
        check_sreq(name, req_copy, r.head_len, token_after ? SUITE_TOKEN : NULL,
                   out.authorization.p, r.body, r.body_len);
    } else {
        /* The earlier request behind the published .sts and .authz. */
        struct parsed_req old = r;
        old.nh = 0;
        kiln_buf head;
        kiln_buf_init(&head, 1u << 16);
        kiln_buf_printf(&head, "%s %s HTTP/1.1", r.method, r.path);
        for (size_t i = 0; i < r.nh; i++) {
            if (strcasecmp(r.h[i].name, "content-length") == 0)
                continue;
            old.h[old.nh] = r.h[i];
            if (e->content_type && strcasecmp(r.h[i].name, "content-type") == 0)
                old.h[old.nh].value = e->content_type;
            kiln_buf_printf(&head, "\n%s:%s", old.h[old.nh].name, old.h[old.nh].value);
            old.nh++;
        }
        struct kiln_sigv4_request osr = to_request(&old);
        struct kiln_sigv4_signed oout;
        assert_int_equal(kiln_sigv4_sign(&s, &osr, &oout), 0);
        assert_buf_eq_in(name, oout.string_to_sign, sts, sts_len);
        assert_str_eq_in(name, oout.signature, signature_of(authz));
        if (e->authz_whole)
            assert_buf_eq_in(name, oout.authorization, authz, authz_len);
        if (e->sreq)
            check_sreq(name, head.p, head.len, NULL, oout.authorization.p, old.body,
                       old.body_len);
        kiln_buf_free(&head);
        kiln_sigv4_signed_free(&oout);
    }
    kiln_sigv4_signed_free(&out);

    /* post-sts-header-before again, the token now coming from the
     * credentials: the signer adds the header itself, same result. */
    if (strcmp(name, "post-sts-header-before") == 0) {
        struct parsed_req nt = r;
        nt.nh = 0;
        for (size_t i = 0; i < r.nh; i++)
            if (strcasecmp(r.h[i].name, "x-amz-security-token") != 0)
                nt.h[nt.nh++] = r.h[i];
        assert_int_equal(nt.nh, r.nh - 1);
        struct kiln_aws_creds tc;
        suite_creds(&tc, SUITE_TOKEN);
        struct kiln_sigv4 ts = { &tc, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
        struct kiln_sigv4_request tsr = to_request(&nt);
        assert_int_equal(kiln_sigv4_sign(&ts, &tsr, &out), 0);
        assert_buf_eq_in(name, out.canonical_request, creq, creq_len);
        assert_buf_eq_in(name, out.string_to_sign, sts, sts_len);
        assert_buf_eq_in(name, out.authorization, authz, authz_len);
        kiln_sigv4_signed_free(&out);
    }

    free(req_text);
    free(req_copy);
    free(creq);
    free(sts);
    free(authz);
}

/* ---- the test suite ----------------------------------------------------- */

static void test_suite_folder_matches_the_case_list(void **state)
{
    DIR *d = opendir(data_dir());
    if (!d) {
        print_error("cannot open %s (run from the repository root, or set KILN_SIGV4_DATA)\n",
                    data_dir());
        fail();
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "README.md") == 0)
            continue;
        bool known = false;
        for (size_t i = 0; i < ARRAY_LEN(CASES); i++)
            known = known || strcmp(CASES[i], de->d_name) == 0;
        if (!known) {
            print_error("%s/%s is not in CASES\n", data_dir(), de->d_name);
            fail();
        }
        n++;
    }
    closedir(d);
    assert_int_equal(n, ARRAY_LEN(CASES));
}

static void test_suite_vectors(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(CASES); i++)
        run_case(CASES[i]);
}

/* ---- S3 documentation examples ------------------------------------------ */

static void s3_creds(struct kiln_aws_creds *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->access_key_id, sizeof c->access_key_id, "%s", S3_AKID);
    snprintf(c->secret_access_key, sizeof c->secret_access_key, "%s", S3_SECRET);
}

/* "Example: GET Object" of the header-based authentication page. */
static void test_s3_get_object_range(void **state)
{
    struct kiln_aws_creds c;
    s3_creds(&c);
    struct kiln_sigv4 s = { &c, "us-east-1", "s3", S3_TIME };
    const struct kiln_sigv4_header h[] = { { "Range", "bytes=0-9" } };
    struct kiln_sigv4_request r = {
        .method = "GET", .host = S3_HOST, .path = "/test.txt", .headers = h, .nheaders = 1,
        .s3 = true,
    };
    struct kiln_sigv4_signed out;
    assert_int_equal(kiln_sigv4_sign(&s, &r, &out), 0);
    const char *creq = "GET\n/test.txt\n\n"
                       "host:examplebucket.s3.amazonaws.com\n"
                       "range:bytes=0-9\n"
                       "x-amz-content-sha256:" EMPTY_SHA256 "\n"
                       "x-amz-date:20130524T000000Z\n\n"
                       "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256;
    assert_mem_eq(out.canonical_request.p, out.canonical_request.len, creq, strlen(creq));
    const char *sts = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                      "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972";
    assert_mem_eq(out.string_to_sign.p, out.string_to_sign.len, sts, strlen(sts));
    assert_string_equal(out.signature,
                        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_string_equal(out.authorization.p,
                        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                        "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_string_equal(out.payload_hash, EMPTY_SHA256);
    assert_string_equal(out.amz_date, "20130524T000000Z");
    kiln_sigv4_signed_free(&out);
}

/* "Example: PUT Object": a key with '$' (sent as %24; S3 signs the path as
 * sent) and a body. */
static void test_s3_put_object(void **state)
{
    struct kiln_aws_creds c;
    s3_creds(&c);
    struct kiln_sigv4 s = { &c, "us-east-1", "s3", S3_TIME };
    const struct kiln_sigv4_header h[] = {
        { "Date", "Fri, 24 May 2013 00:00:00 GMT" },
        { "x-amz-storage-class", "REDUCED_REDUNDANCY" },
    };
    const char *body = "Welcome to Amazon S3.";
    struct kiln_sigv4_request r = {
        .method = "PUT", .host = S3_HOST, .path = "/test%24file.text", .headers = h,
        .nheaders = 2, .payload = body, .payload_len = strlen(body), .s3 = true,
    };
    struct kiln_sigv4_signed out;
    assert_int_equal(kiln_sigv4_sign(&s, &r, &out), 0);
    const char *creq =
        "PUT\n/test%24file.text\n\n"
        "date:Fri, 24 May 2013 00:00:00 GMT\n"
        "host:examplebucket.s3.amazonaws.com\n"
        "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
        "x-amz-date:20130524T000000Z\n"
        "x-amz-storage-class:REDUCED_REDUNDANCY\n\n"
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
    assert_mem_eq(out.canonical_request.p, out.canonical_request.len, creq, strlen(creq));
    const char *sts = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                      "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d";
    assert_mem_eq(out.string_to_sign.p, out.string_to_sign.len, sts, strlen(sts));
    assert_string_equal(out.signature,
                        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    assert_string_equal(out.payload_hash,
                        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    kiln_sigv4_signed_free(&out);
}

/* "Example: GET Bucket Lifecycle" (a parameter without '=') and "Example:
 * Get Bucket (List Objects)" (parameters sorted). */
static void test_s3_get_bucket_queries(void **state)
{
    struct kiln_aws_creds c;
    s3_creds(&c);
    struct kiln_sigv4 s = { &c, "us-east-1", "s3", S3_TIME };
    static const struct {
        const char *query, *creq_query, *creq_hash, *signature;
    } cases[] = {
        { "lifecycle", "lifecycle=",
          "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
          "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543" },
        { "max-keys=2&prefix=J", "max-keys=2&prefix=J", NULL,
          "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7" },
        /* The same, given in another order: the canonical form sorts. */
        { "prefix=J&max-keys=2", "max-keys=2&prefix=J", NULL,
          "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct kiln_sigv4_request r = {
            .method = "GET", .host = S3_HOST, .path = "/", .query = cases[i].query, .s3 = true,
        };
        struct kiln_sigv4_signed out;
        assert_int_equal(kiln_sigv4_sign(&s, &r, &out), 0);
        char creq[1024];
        snprintf(creq, sizeof creq,
                 "GET\n/\n%s\nhost:examplebucket.s3.amazonaws.com\n"
                 "x-amz-content-sha256:" EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
                 "host;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256,
                 cases[i].creq_query);
        assert_str_eq_in(cases[i].query, out.canonical_request.p, creq);
        if (cases[i].creq_hash) {
            char sts[256];
            snprintf(sts, sizeof sts,
                     "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n%s",
                     cases[i].creq_hash);
            assert_str_eq_in(cases[i].query, out.string_to_sign.p, sts);
        }
        assert_str_eq_in(cases[i].query, out.signature, cases[i].signature);
        kiln_sigv4_signed_free(&out);
    }
}

/* The query-string authentication page: presigned GET of test.txt, one
 * day. */
static void test_s3_presigned_get(void **state)
{
    struct kiln_aws_creds c;
    s3_creds(&c);
    struct kiln_sigv4 s = { &c, "us-east-1", "s3", S3_TIME };
    struct kiln_sigv4_request r = {
        .method = "GET", .host = S3_HOST, .path = "/test.txt", .s3 = true,
    };
    kiln_buf q;
    kiln_buf_init(&q, 1u << 16);
    struct kiln_sigv4_signed out;
    assert_int_equal(kiln_sigv4_presign(&s, &r, 86400, &q, &out), 0);
    const char *params = "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                         "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                         "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host";
    char creq[1024];
    snprintf(creq, sizeof creq,
             "GET\n/test.txt\n%s\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD",
             params);
    assert_string_equal(out.canonical_request.p, creq);
    assert_string_equal(out.string_to_sign.p,
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");
    assert_string_equal(out.signature,
                        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    char want[1024];
    snprintf(want, sizeof want,
             "%s&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
             params);
    assert_mem_eq(q.p, q.len, want, strlen(want));
    assert_int_equal(out.authorization.len, 0);
    kiln_sigv4_signed_free(&out);

    /* out may be NULL: the same query. */
    kiln_buf q2;
    kiln_buf_init(&q2, 1u << 16);
    assert_int_equal(kiln_sigv4_presign(&s, &r, 86400, &q2, NULL), 0);
    assert_mem_eq(q2.p, q2.len, q.p, q.len);
    kiln_buf_free(&q);
    kiln_buf_free(&q2);
}

/* The browser-based POST example (sigv4-post-example): the policy as
 * published (CRLF line ends), its base64, and the signature of that
 * base64 text. */
static void test_s3_post_policy(void **state)
{
    static const char policy[] =
        "{ \"expiration\": \"2015-12-30T12:00:00.000Z\",\r\n"
        "  \"conditions\": [\r\n"
        "    {\"bucket\": \"sigv4examplebucket\"},\r\n"
        "    [\"starts-with\", \"$key\", \"user/user1/\"],\r\n"
        "    {\"acl\": \"public-read\"},\r\n"
        "    {\"success_action_redirect\": "
        "\"http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html\"},\r\n"
        "    [\"starts-with\", \"$Content-Type\", \"image/\"],\r\n"
        "    {\"x-amz-meta-uuid\": \"14365123651274\"},\r\n"
        "    {\"x-amz-server-side-encryption\": \"AES256\"},\r\n"
        "    [\"starts-with\", \"$x-amz-meta-tag\", \"\"],\r\n"
        "\r\n"
        "    {\"x-amz-credential\": "
        "\"AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request\"},\r\n"
        "    {\"x-amz-algorithm\": \"AWS4-HMAC-SHA256\"},\r\n"
        "    {\"x-amz-date\": \"20151229T000000Z\" }\r\n"
        "  ]\r\n"
        "}";
    static const char policy_b64[] =
        "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAg"
        "ICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAi"
        "dXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25f"
        "cmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxf"
        "dXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQog"
        "ICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRl"
        "LWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAi"
        "Il0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMt"
        "ZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEy"
        "NTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
    unsigned char enc[sizeof policy_b64 + 8];
    int n = EVP_EncodeBlock(enc, (const unsigned char *)policy, (int)strlen(policy));
    assert_mem_eq((const char *)enc, (size_t)n, policy_b64, strlen(policy_b64));

    struct kiln_aws_creds c;
    s3_creds(&c);
    struct kiln_sigv4 s = { &c, "us-east-1", "s3", (time_t)1451347200 /* 20151229 */ };
    char sig[65];
    kiln_sigv4_sign_text(&s, policy_b64, strlen(policy_b64), sig);
    assert_string_equal(sig, "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e");

    char cred[256];
    kiln_sigv4_credential(&s, cred, sizeof cred);
    assert_string_equal(cred, "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request");
}

/* ---- smaller contracts -------------------------------------------------- */

static void test_uri_encode_and_dates(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 1024);
    const char in[] = "a b/c~d-e_f.g*h+i%j\xe1\x88\xb4";
    kiln_uri_encode(&b, in, strlen(in), false);
    assert_mem_eq(b.p, b.len, "a%20b%2Fc~d-e_f.g%2Ah%2Bi%25j%E1%88%B4",
                  strlen("a%20b%2Fc~d-e_f.g%2Ah%2Bi%25j%E1%88%B4"));
    kiln_buf_reset(&b);
    kiln_uri_encode(&b, in, strlen(in), true);
    assert_mem_eq(b.p, b.len, "a%20b/c~d-e_f.g%2Ah%2Bi%25j%E1%88%B4",
                  strlen("a%20b/c~d-e_f.g%2Ah%2Bi%25j%E1%88%B4"));
    kiln_buf_free(&b);

    char d[17];
    kiln_sigv4_amz_date(SUITE_TIME, d);
    assert_string_equal(d, "20150830T123600Z");
    kiln_sigv4_amz_date(0, d);
    assert_string_equal(d, "19700101T000000Z");
}

/* A path as sent is encoded once more by non-S3 services (a space sent as
 * %20 signs as %2520), and signed as sent by S3. */
static void test_path_encoding_by_service(void **state)
{
    struct kiln_aws_creds c;
    suite_creds(&c, NULL);
    struct kiln_sigv4 s = { &c, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    struct kiln_sigv4_request r = {
        .method = "GET", .host = "example.amazonaws.com", .path = "/documents%20and%20settings/",
    };
    struct kiln_sigv4_signed out;
    assert_int_equal(kiln_sigv4_sign(&s, &r, &out), 0);
    assert_non_null(strstr(out.canonical_request.p, "GET\n/documents%2520and%2520settings/\n"));
    kiln_sigv4_signed_free(&out);
    r.s3 = true;
    assert_int_equal(kiln_sigv4_sign(&s, &r, &out), 0);
    assert_non_null(strstr(out.canonical_request.p, "GET\n/documents%20and%20settings/\n"));
    kiln_sigv4_signed_free(&out);
}

/* A query means the same however its escapes are spelled: decoded, then
 * encoded with the unreserved set. */
static void test_query_escapes_normalised(void **state)
{
    struct kiln_aws_creds c;
    suite_creds(&c, NULL);
    struct kiln_sigv4 s = { &c, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    static const char *const spellings[] = {
        "b=%7e%2a&a=x%20y", "a=x%20y&b=~*", "b=%7E%2A&a=x%20y",
    };
    for (size_t i = 0; i < ARRAY_LEN(spellings); i++) {
        struct kiln_sigv4_request r = {
            .method = "GET", .host = "example.amazonaws.com", .path = "/", .query = spellings[i],
        };
        struct kiln_sigv4_signed out;
        assert_int_equal(kiln_sigv4_sign(&s, &r, &out), 0);
        assert_non_null(strstr(out.canonical_request.p, "GET\n/\na=x%20y&b=~%2A\n"));
        kiln_sigv4_signed_free(&out);
    }
}

/* ---- malformed input ---------------------------------------------------- */

static void test_malformed_input(void **state)
{
    struct kiln_aws_creds c;
    suite_creds(&c, NULL);
    struct kiln_sigv4 s = { &c, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    struct kiln_sigv4_signed out;
    kiln_buf q;
    kiln_buf_init(&q, 1u << 16);

    /* Bad escapes in the query: sign and presign. */
    static const char *const bad[] = { "a=%zz", "a=%4", "a=%", "%g1=b", "a=1&b=%%41" };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct kiln_sigv4_request r = {
            .method = "GET", .host = "example.amazonaws.com", .path = "/", .query = bad[i],
        };
        int rc = kiln_sigv4_sign(&s, &r, &out);
        if (rc != KILN_EINVAL)
            print_error("query %s: sign returned %d\n", bad[i], rc);
        assert_int_equal(rc, KILN_EINVAL);
        kiln_sigv4_signed_free(&out);
        assert_int_equal(kiln_sigv4_presign(&s, &r, 60, &q, &out), KILN_EINVAL);
        kiln_sigv4_signed_free(&out);
        assert_int_equal(kiln_sigv4_presign(&s, &r, 60, &q, NULL), KILN_EINVAL);
        assert_int_equal(q.len, 0);
    }

    struct kiln_sigv4_request ok = { .method = "GET", .host = "example.amazonaws.com" };

    /* Missing credentials. */
    struct kiln_aws_creds none;
    memset(&none, 0, sizeof none);
    struct kiln_sigv4 sn = { &none, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    assert_int_equal(kiln_sigv4_sign(&sn, &ok, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);
    assert_int_equal(kiln_sigv4_presign(&sn, &ok, 60, &q, NULL), KILN_EINVAL);
    struct kiln_aws_creds nosecret;
    suite_creds(&nosecret, NULL);
    nosecret.secret_access_key[0] = '\0';
    struct kiln_sigv4 sns = { &nosecret, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    assert_int_equal(kiln_sigv4_sign(&sns, &ok, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);
    struct kiln_sigv4 snull = { NULL, SUITE_REGION, SUITE_SERVICE, SUITE_TIME };
    assert_int_equal(kiln_sigv4_sign(&snull, &ok, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);

    /* Missing region, service, method or host. */
    struct kiln_sigv4 noregion = { &c, NULL, SUITE_SERVICE, SUITE_TIME };
    assert_int_equal(kiln_sigv4_sign(&noregion, &ok, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);
    struct kiln_sigv4 noservice = { &c, SUITE_REGION, NULL, SUITE_TIME };
    assert_int_equal(kiln_sigv4_sign(&noservice, &ok, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);
    struct kiln_sigv4_request nomethod = { .host = "example.amazonaws.com" };
    assert_int_equal(kiln_sigv4_sign(&s, &nomethod, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);
    struct kiln_sigv4_request nohost = { .method = "GET" };
    assert_int_equal(kiln_sigv4_sign(&s, &nohost, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);

    /* Expiry: 1..604800 seconds (7 days). */
    assert_int_equal(kiln_sigv4_presign(&s, &ok, 0, &q, NULL), KILN_EINVAL);
    assert_int_equal(kiln_sigv4_presign(&s, &ok, 604801, &q, NULL), KILN_EINVAL);
    assert_int_equal(q.len, 0);
    assert_int_equal(kiln_sigv4_presign(&s, &ok, 604800, &q, NULL), 0);
    assert_non_null(strstr(q.p, "X-Amz-Expires=604800&"));
    kiln_buf_reset(&q);
    assert_int_equal(kiln_sigv4_presign(&s, &ok, 1, &q, NULL), 0);
    assert_non_null(strstr(q.p, "X-Amz-Expires=1&"));

    /* More headers than the signer takes. */
    struct kiln_sigv4_header many[65];
    for (size_t i = 0; i < ARRAY_LEN(many); i++)
        many[i] = (struct kiln_sigv4_header){ "x-many", "v" };
    struct kiln_sigv4_request crowd = {
        .method = "GET", .host = "example.amazonaws.com", .headers = many,
        .nheaders = ARRAY_LEN(many),
    };
    assert_int_equal(kiln_sigv4_sign(&s, &crowd, &out), KILN_EINVAL);
    kiln_sigv4_signed_free(&out);
    crowd.nheaders = 64;
    assert_int_equal(kiln_sigv4_sign(&s, &crowd, &out), 0);
    kiln_sigv4_signed_free(&out);

    kiln_buf_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_folder_matches_the_case_list),
        cmocka_unit_test(test_suite_vectors),
        cmocka_unit_test(test_s3_get_object_range),
        cmocka_unit_test(test_s3_put_object),
        cmocka_unit_test(test_s3_get_bucket_queries),
        cmocka_unit_test(test_s3_presigned_get),
        cmocka_unit_test(test_s3_post_policy),
        cmocka_unit_test(test_uri_encode_and_dates),
        cmocka_unit_test(test_path_encoding_by_service),
        cmocka_unit_test(test_query_escapes_normalised),
        cmocka_unit_test(test_malformed_input),
    };
    return cmocka_run_group_tests_name("aws/sigv4", tests, NULL, NULL);
}
