/*
 * libFuzzer target for what the valkey driver does with a server's bytes,
 * without a socket: bytes → hiredis reader (our bounded one, fed in two
 * pieces at a point chosen by the input, since reads split anywhere) →
 * every reply through every interpretation function (get, take, set,
 * replace, del, expire, ping, auth, srem, a set's members), and every run
 * of consecutive replies through the incr and sadd transactions', with and
 * without a TTL.
 *
 * Beyond "no crash, no leak", it checks the promises callers rely on: only
 * the documented error codes come out (KILN_EINVAL from any command for a
 * WRONGTYPE error), a failure always has a printable error text, that text
 * never contains the password, a value read by get or take is the reply's
 * bytes with a NUL after them, and a set's members never outnumber what
 * was asked for.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/err.h"
#include "store/kv_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "fuzz-secret-pw"
#define MAX_REPLIES 16

static void check(struct kiln_kv *kv, int rc, bool may_einval)
{
    switch (rc) {
    case 0:
    case KILN_ENOTFOUND:
        return;
    case KILN_EPROTO:
    case KILN_EUNAVAILABLE:
    case KILN_EAUTH:
        break;
    case KILN_EINVAL:
        if (may_einval)
            break;
        abort();
    default:
        abort();
    }
    size_t n = strlen(kv->err);
    if (n == 0 || strstr(kv->err, SECRET))
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)kv->err[i] < 0x20 || (unsigned char)kv->err[i] > 0x7e)
            abort();
}

static void interpret(struct kiln_kv *kv, kiln_arena *a, const redisReply *r)
{
    kiln_str out = KILN_STR_NULL;
    bool deleted;
    int rc;

    kv->err[0] = '\0';
    rc = kiln__kv_reply_get(kv, r, a, &out);
    check(kv, rc, true);
    if (rc == 0) {
        if (r->type != REDIS_REPLY_STRING || out.len != r->len || out.p[out.len] != '\0' ||
            (out.len && memcmp(out.p, r->str, out.len) != 0))
            abort();
    }
    out = KILN_STR_NULL;
    rc = kiln__kv_reply_take(kv, r, a, &out);
    check(kv, rc, true);
    if (rc == 0 && (r->type != REDIS_REPLY_STRING || out.len != r->len || out.p[out.len] != '\0'))
        abort();
    check(kv, kiln__kv_reply_set(kv, r), true);
    check(kv, kiln__kv_reply_replace(kv, r), true);
    check(kv, kiln__kv_reply_del(kv, r, &deleted), true);
    check(kv, kiln__kv_reply_expire(kv, r), true);
    check(kv, kiln__kv_reply_ping(kv, r), true);
    size_t removed = 0;
    rc = kiln__kv_reply_srem(kv, r, &removed);
    check(kv, rc, true);
    if (rc == KILN_ENOTFOUND || (rc == 0 && removed > KILN_KV_SET_LIST_MAX))
        abort();
    for (size_t max = 1; max <= KILN_KV_SET_LIST_MAX; max *= 31) {
        kiln_str *members = NULL;
        size_t n = 0;
        rc = kiln__kv_reply_members(kv, r, a, max, &members, &n);
        check(kv, rc, true);
        if (rc == KILN_ENOTFOUND || (rc == 0 && n > max))
            abort();
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (members[i].p[members[i].len] != '\0')
                abort();
    }
    rc = kiln__kv_reply_auth(kv, r);
    check(kv, rc, false);
    if (rc == KILN_ENOTFOUND)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kiln_arena *arena;
    struct kiln_kv kv;
    redisReply *replies[MAX_REPLIES];
    size_t n = 0;

    if (size < 1)
        return 0;
    if (!arena)
        arena = kiln_arena_new(4096);
    memset(&kv, 0, sizeof kv);
    kv.secret = SECRET;

    size_t split = data[0] % size;
    const char *p = (const char *)data + 1;
    size_t len = size - 1;
    redisReader *reader = kiln__kv_reader_new();
    const char *chunks[2] = { p, p + split };
    size_t lens[2] = { split, len - split };

    for (int ci = 0; ci < 2; ci++) {
        if (redisReaderFeed(reader, chunks[ci], lens[ci]) != REDIS_OK)
            goto done;
        while (n < MAX_REPLIES) {
            void *r = NULL;
            if (redisReaderGetReply(reader, &r) != REDIS_OK || !r)
                break;
            replies[n++] = r;
        }
    }

    for (size_t i = 0; i < n; i++) {
        interpret(&kv, arena, replies[i]);
        kiln_arena_reset(arena);
    }
    for (size_t i = 0; i < n; i++) {
        for (int with_ttl = 0; with_ttl <= 1; with_ttl++) {
            size_t want = KILN__KV_INCR_REPLIES(with_ttl);
            int64_t value = 0;
            uint64_t ttl_left = 0;
            if (n - i < want)
                continue;
            kv.err[0] = '\0';
            int rc = kiln__kv_reply_incr(&kv, replies + i, want, with_ttl, &value, &ttl_left);
            check(&kv, rc, true);
            if (rc == KILN_ENOTFOUND)
                abort();
        }
        for (int with_ttl = 0; with_ttl <= 1; with_ttl++) {
            size_t want = KILN__KV_SADD_REPLIES(with_ttl);
            bool added = false;
            if (n - i < want)
                continue;
            kv.err[0] = '\0';
            int rc = kiln__kv_reply_sadd(&kv, replies + i, want, with_ttl, &added);
            check(&kv, rc, true);
            if (rc == KILN_ENOTFOUND)
                abort();
        }
    }

done:
    for (size_t i = 0; i < n; i++)
        freeReplyObject(replies[i]);
    redisReaderFree(reader);
    return 0;
}
