/*
 * libFuzzer target for what aws/s3.c does with S3's XML (ListObjectsV2
 * answers and <Error> documents), the untrusted input of the uploads
 * routes: bytes → kiln_s3_list_parse with a page limit chosen by the
 * first byte.
 *
 * Beyond "no crash, no leak, no blow-up" (expat with DTDs refused), it
 * checks the promises uploads.c relies on: only 0 or KILN_EPROTO, nothing
 * but error_code after a failure, at most the limit of entries, every key
 * non-empty, NUL-free UTF-8 of at most KILN_S3_KEY_MAX bytes, a token
 * of at most KILN_S3_TOKEN_MAX bytes, and a last-modified that is empty or
 * API.md's timestamp shape.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aws/s3.h"
#include "core/arena.h"
#include "core/err.h"
#include "core/str.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_time(const char *t)
{
    size_t n = strlen(t);
    if (n == 0)
        return;
    if (n != KILN_RFC3339_LEN || t[4] != '-' || t[10] != 'T' || t[19] != '.' || t[26] != 'Z')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t max = data[0] % 8; /* 0: error documents only */
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_s3_list l;
    int rc = kiln_s3_list_parse(a, (const char *)data + 1, size - 1, max, &l);
    if (rc != 0 && rc != KILN_EPROTO)
        abort();
    if (rc != 0 && (l.count || l.objects || l.next_token || l.error_code))
        abort();
    if (l.count > max)
        abort();
    for (size_t i = 0; i < l.count; i++) {
        const struct kiln_s3_object *o = &l.objects[i];
        size_t n = strlen(o->key);
        if (n == 0 || n > KILN_S3_KEY_MAX || !kiln_utf8_valid((kiln_str){ o->key, n }))
            abort();
        if (o->content_type)
            abort();
        check_time(o->last_modified);
    }
    if (l.next_token && strlen(l.next_token) > KILN_S3_TOKEN_MAX)
        abort();
    kiln_arena_free(a);
    return 0;
}
