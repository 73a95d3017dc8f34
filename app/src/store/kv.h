/*
 * The key-value store: sessions, cache and rate limits. Two drivers behind
 * one interface, and callers cannot tell which they have:
 *   - valkey: RESP over TCP or TLS to Valkey/Redis (VALKEY_HOST set). One
 *     connection per kiln_kv handle, so one handle per worker thread (a
 *     handle is used by one thread at a time), or one pipelined connection
 *     shared by a loop's fibers (kiln_kv_open_shared). Connects lazily, reconnects
 *     with capped backoff after a failure.
 *   - memory: in-process (VALKEY_HOST unset). One shared store; every handle
 *     opened on it is thread-safe. TTLs honoured, expired keys reclaimed,
 *     bounded by KV_MEMORY_MAX_KEYS.
 *
 * Errors: KILN_ENOTFOUND (get, take or replace of a missing or expired key),
 * KILN_EUNAVAILABLE (cannot reach the server, timeout, or in backoff:
 * callers answer 503), KILN_EAUTH (credentials refused: also 503 for
 * callers), KILN_EPROTO (unexpected reply), KILN_EINVAL (bad arguments,
 * e.g. an incr on a non-integer value, or a key of the other type: a set
 * read with get, a string given to a set operation; Valkey's WRONGTYPE).
 * During the valkey driver's reconnect backoff (100 ms doubling to 2 s)
 * calls fail at once with the code of the connect failure that started it,
 * unless another handle on the same store has connected since: then the
 * server is back and the handle tries at once.
 * TTLs are in milliseconds; 0 means no expiry. Keys and values are bytes
 * (NUL allowed); keys up to 64 KiB, values up to 64 MiB, TTLs up to 10^13
 * ms, KILN_EINVAL past that, for both drivers.
 */
#ifndef KILN_STORE_KV_H
#define KILN_STORE_KV_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/str.h"

/*
 * Credentials for AUTH, asked for at each connect and re-authentication:
 * user (may stay empty: AUTH password) and password (an IAM token, or a
 * rotated password). 0 or a kiln_err with err set. Runs on the connecting
 * thread, possibly an event loop: must not block for long.
 */
typedef int (*kiln_kv_credentials_fn)(void *ctx, char *user, size_t user_cap, char *password,
                                      size_t password_cap, char *err, size_t errcap);

struct kiln_kv_config {
    /* valkey driver when host is set; memory driver otherwise */
    const char *host;
    unsigned port;                 /* 6379 */
    const char *user;              /* NULL: AUTH with password only */
    const char *password;          /* NULL: no AUTH */
    bool tls;
    const char *ca_file;           /* NULL: system trust store */
    unsigned connect_timeout_ms;   /* 2000 */
    unsigned command_timeout_ms;   /* 2000 */
    kiln_kv_credentials_fn credentials;  /* NULL: user and password above */
    void *credentials_ctx;
    /* Told when the server refuses AUTH (WRONGPASS): the credentials may
     * have rotated. NULL: nobody. */
    void (*credentials_rejected)(void *ctx);
    /* As kiln_db_config's: moves when the credentials change, so that a
     * handle in backoff tries at once. NULL: backoff only. */
    unsigned long (*credentials_version)(void *ctx);
    /* Send AUTH again (fresh credentials) on a connection this long after
     * the last one: ElastiCache drops IAM connections 12 h after their
     * AUTH. 0: never. Only with credentials set. */
    unsigned reauth_interval_s;
    /* memory driver */
    unsigned long max_keys;        /* KV_MEMORY_MAX_KEYS, 100000 */
};

/* Shared state of a driver (the memory store itself, or nothing for
 * valkey). Create once at start, free after every handle is closed. */
struct kiln_kv_store;
struct kiln_kv;

struct kiln_kv_store *kiln_kv_store_new(const struct kiln_kv_config *cfg);
void kiln_kv_store_free(struct kiln_kv_store *s);
/* "valkey" or "memory". */
const char *kiln_kv_driver(const struct kiln_kv_store *s);
bool kiln_kv_is_memory(const struct kiln_kv_store *s);

/* A handle for one thread; never NULL. No I/O until the first command. */
struct kiln_kv *kiln_kv_open(struct kiln_kv_store *s);
/*
 * A handle shared by the fibers of the calling thread's event loop
 * (core/fiber.h); call on that thread, use and close it there. On valkey,
 * the commands of every fiber travel pipelined on one connection: written
 * together once per loop iteration, replies handed back in order, so the
 * server reads and answers a batch per wake-up instead of one command. A
 * connection failure or timeout fails every command in flight on it. On the
 * memory driver it is a plain handle.
 */
struct kiln_kv *kiln_kv_open_shared(struct kiln_kv_store *s);
void kiln_kv_close(struct kiln_kv *kv);           /* NULL allowed */

/* Value copied into the arena (not NUL-terminated in general; a NUL is
 * appended after len for convenience). */
int kiln_kv_get(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out);
int kiln_kv_set(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms);
/*
 * Set only over a key that exists (SET ... XX): KILN_ENOTFOUND, and nothing
 * written, when it does not (never set, deleted, expired). ttl_ms as for
 * kiln_kv_set (0: the key keeps no TTL). For writes that must not bring
 * back a key someone else deleted meanwhile (a session refreshed while it
 * is being logged out).
 */
int kiln_kv_replace(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms);
/*
 * Get and delete in one atomic step (GETDEL, Redis 6.2 or later, every
 * Valkey): of any number of callers racing for one key, exactly one gets
 * the value; the others get KILN_ENOTFOUND. For single-use tokens. The
 * value is copied into the arena as kiln_kv_get's.
 */
int kiln_kv_take(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out);
/* *deleted (may be NULL) is true when the key existed. */
int kiln_kv_del(struct kiln_kv *kv, kiln_str key, bool *deleted);
/* Set a TTL on an existing key; KILN_ENOTFOUND if the key does not exist,
 * KILN_EINVAL for ttl_ms 0 (it cannot remove a TTL). */
int kiln_kv_expire(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms);
/*
 * Atomically add 1 and return the new value. When this increment created the
 * key, ttl_ms (if non-zero) is set on it; later increments keep the TTL
 * (fixed-window counters). *ttl_left_ms (may be NULL) gets the remaining TTL
 * after the increment (0: none). A value that is not a decimal int64 (as
 * Redis's INCR reads it), or an increment past INT64_MAX: KILN_EINVAL, and
 * the key is left as it was.
 */
int kiln_kv_incr(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms, int64_t *value,
                 uint64_t *ttl_left_ms);
/*
 * Sets: distinct members (bytes, up to the key limit each) under one key,
 * for small indexes (a user's sessions, auth/session.c). As on Valkey, a
 * set exists while it has members: removing the last one deletes the key.
 * kiln_kv_del deletes a whole set and kiln_kv_expire gives it a TTL, as
 * for any key; kiln_kv_set over a set replaces it with a string. On the
 * memory driver a set counts as one key towards KV_MEMORY_MAX_KEYS,
 * whatever its size.
 *
 * Add member to the set at key (made if missing). With ttl_ms > 0 the
 * set's TTL is set to it in the same step (MULTI on Valkey), whether or not
 * the member was new, so an index can be kept alive as long as what it
 * indexes; 0 leaves the TTL as it was. *added (may be NULL): the member
 * was not there yet. A string at key: KILN_EINVAL (on Valkey its TTL may
 * have been set all the same: a transaction is not rolled back).
 */
int kiln_kv_sadd(struct kiln_kv *kv, kiln_str key, kiln_str member, uint64_t ttl_ms,
                 bool *added);
/* Most members one call takes or gives back (kiln_kv_srem, kiln_kv_smembers). */
#define KILN_KV_SET_LIST_MAX 1000
/* Remove n members (0..KILN_KV_SET_LIST_MAX; 0 does nothing); *removed (may
 * be NULL): how many were there. A missing key has nothing to remove. */
int kiln_kv_srem(struct kiln_kv *kv, kiln_str key, const kiln_str *members, size_t n,
                 size_t *removed);
/*
 * At most max (1..KILN_KV_SET_LIST_MAX) distinct members of the set at key:
 * every member when it has no more than max, otherwise max of them, which
 * ones unspecified (SRANDMEMBER on Valkey: the server bounds the reply,
 * where SMEMBERS would send a set of any size). *out: an array of *n
 * strings, all in the arena, each with a NUL after it. A missing key: *n 0.
 */
int kiln_kv_smembers(struct kiln_kv *kv, kiln_arena *a, kiln_str key, size_t max,
                     kiln_str **out, size_t *n);
/* Round trip (PING); the memory driver always succeeds. */
int kiln_kv_ping(struct kiln_kv *kv, unsigned timeout_ms);
/* Free every expired key now (the in-process store frees them lazily, as
 * writes come; an idle one would keep ended sessions' memory). Valkey
 * expires keys itself: 0 and nothing to do. *freed: how many. */
int kiln_kv_sweep(struct kiln_kv *kv, size_t *freed);
/*
 * Publish and subscribe, for waking other instances (events/feed.c). On
 * the memory driver there is no other instance: publish does nothing and
 * returns 0, listen returns KILN_EINVAL.
 *
 * kiln_kv_listen, on a handle of its own (kiln_kv_open, one thread):
 * subscribes to channel when the connection is new (*fresh set: messages
 * may have been missed before it), then waits for messages until wake_fd
 * is readable (it is not read) or deadline (kiln_now_ms) passes, and
 * returns 0 after calling on_message for what arrived in one read (or for
 * nothing). A connection failure returns its error (the next call
 * reconnects, after the usual backoff).
 */
int kiln_kv_publish(struct kiln_kv *kv, const char *channel, kiln_str message);
int kiln_kv_listen(struct kiln_kv *kv, const char *channel, int wake_fd, uint64_t deadline,
                   void (*on_message)(void *arg, kiln_str message), void *arg, bool *fresh);
/* Last error text for logs (never contains the password), or "". */
const char *kiln_kv_last_error(const struct kiln_kv *kv);

#endif
