/*
 * What kv.c and its two drivers share, and nothing callers need: the driver
 * vtable, the base structs each driver embeds first, and the socket-free
 * pieces of the valkey driver (reader, reply interpretation) that the unit
 * tests and the resp_reply fuzz target drive directly.
 *
 * kv.c validates arguments once for both drivers (key and value sizes, TTL
 * range, NULL outputs), so a driver may assume them.
 */
#ifndef KILN_STORE_KV_INTERNAL_H
#define KILN_STORE_KV_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "core/arena.h"
#include "core/str.h"
#include "store/kv.h"

/* Limits enforced in kv.c for both drivers (KILN_EINVAL past them). */
#define KILN__KV_MAX_KEY (64u * 1024)
#define KILN__KV_MAX_VALUE (64u * 1024 * 1024)
/* About 317 years: far past any real use, far below int64 overflow in
 * Redis's "now + ttl" and in the memory driver's deadlines. */
#define KILN__KV_MAX_TTL_MS 10000000000000ull

#define KILN__KV_ERR_MAX 256

struct kiln_kv_ops {
    const char *name;
    void (*store_free)(struct kiln_kv_store *s);
    struct kiln_kv *(*open)(struct kiln_kv_store *s);
    /* A handle for the fibers of the calling loop; NULL: open serves. */
    struct kiln_kv *(*open_shared)(struct kiln_kv_store *s);
    void (*close)(struct kiln_kv *kv);
    int (*get)(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out);
    int (*set)(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms);
    int (*replace)(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms);
    int (*take)(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out);
    int (*del)(struct kiln_kv *kv, kiln_str key, bool *deleted);
    int (*expire)(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms);
    int (*incr)(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms, int64_t *value,
                uint64_t *ttl_left_ms);
    int (*ping)(struct kiln_kv *kv, unsigned timeout_ms);
    int (*sadd)(struct kiln_kv *kv, kiln_str key, kiln_str member, uint64_t ttl_ms,
                bool *added);
    int (*srem)(struct kiln_kv *kv, kiln_str key, const kiln_str *members, size_t n,
                size_t *removed);
    int (*smembers)(struct kiln_kv *kv, kiln_arena *a, kiln_str key, size_t max,
                    kiln_str **out, size_t *n);
    /* NULL where the server expires keys itself (Valkey). */
    int (*sweep)(struct kiln_kv *kv, size_t *freed);
    /* NULL on the memory driver (kv.c answers for it). */
    int (*publish)(struct kiln_kv *kv, const char *channel, kiln_str message);
    int (*listen)(struct kiln_kv *kv, const char *channel, int wake_fd, uint64_t deadline,
                  void (*on_message)(void *arg, kiln_str message), void *arg, bool *fresh);
};

/* First member of each driver's store. */
struct kiln_kv_store {
    const struct kiln_kv_ops *ops;
};

/* First member of each driver's handle. */
struct kiln_kv {
    const struct kiln_kv_ops *ops;
    struct kiln_kv_store *store;
    /* Never copied into err, even in part (the valkey password); may be NULL. */
    const char *secret;
    char err[KILN__KV_ERR_MAX];
};

/* Set kv->err (printable ASCII only, truncated) and return code. */
int kiln__kv_error(struct kiln_kv *kv, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- memory driver ---------------------------------------------------- */

struct kiln_kv_store *kiln__kv_memory_new(const struct kiln_kv_config *cfg);

struct kiln__kv_memory_stats {
    size_t keys;          /* entries held, including expired ones not yet reclaimed */
    uint64_t reclaimed;   /* expired entries freed so far */
    uint64_t evicted;     /* live entries dropped because the store was full */
};
/* For tests and metrics; s must be a memory store. Thread-safe. */
void kiln__kv_memory_stats(struct kiln_kv_store *s, struct kiln__kv_memory_stats *out);

/* ---- valkey driver ---------------------------------------------------- */

struct kiln_kv_store *kiln__kv_valkey_new(const struct kiln_kv_config *cfg);

/*
 * A hiredis reader whose arrays are capped at a few elements (our commands
 * never get more), so a hostile "*2147483647\r\n" is a protocol error rather
 * than a 16 GiB calloc. Free with redisReaderFree.
 */
redisReader *kiln__kv_reader_new(void);

/*
 * Reply interpretation: one hiredis reply (or the replies of one pipeline)
 * → a kiln result, error text in kv->err. No socket involved; kv is only
 * used for its error text and secret. Replies are not freed here.
 */
int kiln__kv_reply_auth(struct kiln_kv *kv, const redisReply *r);
int kiln__kv_reply_ping(struct kiln_kv *kv, const redisReply *r);
int kiln__kv_reply_get(struct kiln_kv *kv, const redisReply *r, kiln_arena *a, kiln_str *out);
int kiln__kv_reply_set(struct kiln_kv *kv, const redisReply *r);
/* SET XX: OK when written, nil (KILN_ENOTFOUND) when the key was absent. */
int kiln__kv_reply_replace(struct kiln_kv *kv, const redisReply *r);
/* GETDEL: as GET's. */
int kiln__kv_reply_take(struct kiln_kv *kv, const redisReply *r, kiln_arena *a, kiln_str *out);
int kiln__kv_reply_del(struct kiln_kv *kv, const redisReply *r, bool *deleted);
int kiln__kv_reply_expire(struct kiln_kv *kv, const redisReply *r);

/*
 * The incr transaction's replies, in order:
 *   with a TTL:    MULTI, SET key 0 PX ttl NX, INCR, PTTL, EXEC   (5)
 *   without:       MULTI, INCR, PTTL, EXEC                        (4)
 */
#define KILN__KV_INCR_REPLIES(with_ttl) ((with_ttl) ? 5u : 4u)
int kiln__kv_reply_incr(struct kiln_kv *kv, redisReply *const *r, size_t n, bool with_ttl,
                        int64_t *value, uint64_t *ttl_left_ms);

/*
 * Sets. sadd's replies, in order:
 *   with a TTL:    MULTI, SADD, PEXPIRE, EXEC                     (4)
 *   without:       SADD                                           (1)
 * srem: SREM's integer. members: SRANDMEMBER key max's array, at most max
 * strings, copied into the arena (an array of *n, each with a NUL after).
 */
#define KILN__KV_SADD_REPLIES(with_ttl) ((with_ttl) ? 4u : 1u)
int kiln__kv_reply_sadd(struct kiln_kv *kv, redisReply *const *r, size_t n, bool with_ttl,
                        bool *added);
int kiln__kv_reply_srem(struct kiln_kv *kv, const redisReply *r, size_t *removed);
int kiln__kv_reply_members(struct kiln_kv *kv, const redisReply *r, kiln_arena *a, size_t max,
                           kiln_str **out, size_t *n);

#endif
