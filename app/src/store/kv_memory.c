/*
 * The in-process key-value store, used when no VALKEY_HOST is configured:
 * one hash table shared by every handle, behind one mutex (each operation is
 * a hash lookup and a copy, far shorter than a request, so one lock costs
 * less than the bookkeeping lock striping would add to eviction and sweeps).
 *
 * The one design decision to know: every entry with a TTL sits in a min-heap
 * ordered by deadline, every entry without one in a list ordered by last
 * write. That makes the three jobs around expiry cheap and exact:
 *   - an expired key is absent on every read (checked on lookup);
 *   - expired keys are reclaimed without scanning: each write pops up to
 *     SWEEP_PER_WRITE expired entries off the heap top, and a write that
 *     needs room at max_keys pops all of them, so no live key is evicted
 *     while an expired one is left;
 *   - when the store is full of live keys, the eviction victim is the key
 *     that expires soonest (the heap top); only when no key has a TTL does
 *     the least recently written key go (the list head). Keys without a TTL
 *     are what callers asked to keep, so they are the last to be dropped.
 * Eviction logs one warning line, at most once a minute.
 *
 * Hashing is SipHash-2-4 with a per-store random key: keys carry client
 * data (rate-limit keys, cache keys), and a keyed hash keeps a client from
 * choosing keys that all land in one bucket. A set's members (an entry
 * whose value is a set) sit in a small table of their own, hashed the same
 * way: a member is added or removed in constant time however large the set
 * grows, as on Valkey, and a user who logs in a thousand times does not
 * make each login scan the ones before.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "store/kv_internal.h"

#define DEFAULT_MAX_KEYS 100000ul
#define FIRST_BUCKETS 64u
#define SWEEP_PER_WRITE 8u
#define WARN_INTERVAL_MS 60000u
#define NOT_IN_HEAP SIZE_MAX

/* A set's members: a chained table, grown as it fills. */
struct member {
    struct member *next;
    uint64_t hash;
    size_t len;
    char p[];
};

struct mset {
    struct member **buckets;
    size_t nbuckets;               /* a power of two */
    size_t count;
};

struct entry {
    struct entry *chain;           /* next in the same bucket */
    struct entry *older, *newer;   /* the no-TTL list; unused while in the heap */
    uint64_t hash;
    uint64_t expires_at;           /* kiln_now_ms() deadline; 0: no TTL */
    size_t heap_idx;               /* position in the heap, or NOT_IN_HEAP */
    char *value;                   /* owned; NULL when vlen is 0 */
    size_t vlen;
    struct mset *set;              /* owned; non-NULL: a set (no value) */
    size_t klen;
    char key[];
};

struct mem_store {
    struct kiln_kv_store base;
    pthread_mutex_t lock;
    uint64_t sipkey[2];
    unsigned long max_keys;

    struct entry **buckets;
    size_t nbuckets;               /* a power of two */
    size_t count;

    struct entry **heap;           /* entries with a TTL, soonest deadline first */
    size_t heap_len, heap_cap;
    struct entry *oldest, *newest; /* entries without a TTL, by last write */

    uint64_t reclaimed, evicted;
    uint64_t evicted_unreported;
    uint64_t last_warn_ms;
    bool warned;
};

static const struct kiln_kv_ops memory_ops;

/* ---- SipHash-2-4 (Aumasson & Bernstein), byte order independent --------- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);             \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                 \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                 \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);             \
    } while (0)

static uint64_t siphash(const uint64_t k[2], const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0];
    uint64_t v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0];
    uint64_t v3 = 0x7465646279746573ull ^ k[1];
    uint64_t b = (uint64_t)len << 56;
    size_t whole = len - len % 8;

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int j = 7; j >= 0; j--)
            m = (m << 8) | in[i + (size_t)j];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; j < len % 8; j++)
        b |= (uint64_t)in[whole + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t hash_key(const struct mem_store *s, kiln_str key)
{
    return siphash(s->sipkey, (const unsigned char *)key.p, key.len);
}

/* ---- the deadline heap ------------------------------------------------- */

static void heap_put(struct mem_store *s, size_t i, struct entry *e)
{
    s->heap[i] = e;
    e->heap_idx = i;
}

static void heap_sift_up(struct mem_store *s, size_t i)
{
    struct entry *e = s->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->heap[parent]->expires_at <= e->expires_at)
            break;
        heap_put(s, i, s->heap[parent]);
        i = parent;
    }
    heap_put(s, i, e);
}

static void heap_sift_down(struct mem_store *s, size_t i)
{
    struct entry *e = s->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->heap_len)
            break;
        if (child + 1 < s->heap_len &&
            s->heap[child + 1]->expires_at < s->heap[child]->expires_at)
            child++;
        if (e->expires_at <= s->heap[child]->expires_at)
            break;
        heap_put(s, i, s->heap[child]);
        i = child;
    }
    heap_put(s, i, e);
}

static void heap_push(struct mem_store *s, struct entry *e)
{
    if (s->heap_len == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = kiln_realloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    heap_put(s, s->heap_len++, e);
    heap_sift_up(s, e->heap_idx);
}

static void heap_remove(struct mem_store *s, struct entry *e)
{
    size_t i = e->heap_idx;
    struct entry *last = s->heap[--s->heap_len];
    e->heap_idx = NOT_IN_HEAP;
    if (last == e)
        return;
    heap_put(s, i, last);
    heap_sift_up(s, i);
    heap_sift_down(s, last->heap_idx);
}

/* ---- the no-TTL list ---------------------------------------------------- */

static void list_append(struct mem_store *s, struct entry *e)
{
    e->newer = NULL;
    e->older = s->newest;
    if (s->newest)
        s->newest->newer = e;
    else
        s->oldest = e;
    s->newest = e;
}

static void list_unlink(struct mem_store *s, struct entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    e->older = e->newer = NULL;
}

/* Give e a new deadline (0: none). Also counts as a write: an entry without
 * a TTL moves to the newest end of the list. */
static void set_deadline(struct mem_store *s, struct entry *e, uint64_t expires_at)
{
    if (e->expires_at)
        heap_remove(s, e);
    else
        list_unlink(s, e);
    e->expires_at = expires_at;
    if (expires_at)
        heap_push(s, e);
    else
        list_append(s, e);
}

/* ---- sets ------------------------------------------------------------------ */

#define FIRST_MEMBER_BUCKETS 8u

static struct mset *mset_new(void)
{
    struct mset *m = kiln_calloc(1, sizeof *m);
    m->nbuckets = FIRST_MEMBER_BUCKETS;
    m->buckets = kiln_calloc(m->nbuckets, sizeof *m->buckets);
    return m;
}

static void mset_free(struct mset *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct member *x = m->buckets[i];
        while (x) {
            struct member *next = x->next;
            free(x);
            x = next;
        }
    }
    free(m->buckets);
    free(m);
}

/* The link that points at member v (h its hash), or at the NULL ending its
 * chain when it is not there. */
static struct member **mset_link(struct mset *m, kiln_str v, uint64_t h)
{
    struct member **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->len == v.len && memcmp((*pp)->p, v.p, v.len) == 0)
            break;
    return pp;
}

static void mset_grow(struct mset *m)
{
    size_t n = m->nbuckets * 2;
    struct member **b = kiln_calloc(n, sizeof *b);
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct member *x = m->buckets[i];
        while (x) {
            struct member *next = x->next;
            x->next = b[x->hash & (n - 1)];
            b[x->hash & (n - 1)] = x;
            x = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

/* true when v was not there and is now. */
static bool mset_add(struct mset *m, kiln_str v, uint64_t h)
{
    struct member **pp = mset_link(m, v, h);
    if (*pp)
        return false;
    struct member *x = kiln_malloc(sizeof *x + v.len);
    x->next = NULL;
    x->hash = h;
    x->len = v.len;
    memcpy(x->p, v.p, v.len);
    *pp = x;
    if (++m->count > m->nbuckets)
        mset_grow(m);
    return true;
}

/* true when v was there and is not any more. */
static bool mset_del(struct mset *m, kiln_str v, uint64_t h)
{
    struct member **pp = mset_link(m, v, h);
    struct member *x = *pp;
    if (!x)
        return false;
    *pp = x->next;
    m->count--;
    free(x);
    return true;
}

/* Valkey's WRONGTYPE, in the same words for both drivers' callers. */
static int wrong_type(struct kiln_kv *kv, const char *op, const struct entry *e)
{
    return kiln__kv_error(kv, KILN_EINVAL,
                          "%s: WRONGTYPE: the key holds a %s", op, e->set ? "set" : "string");
}

/* ---- the table ---------------------------------------------------------- */

static void remove_entry(struct mem_store *s, struct entry *e)
{
    struct entry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->expires_at)
        heap_remove(s, e);
    else
        list_unlink(s, e);
    s->count--;
    free(e->value);
    mset_free(e->set);
    free(e);
}

/* Free up to limit expired entries, soonest first. */
static void reclaim(struct mem_store *s, uint64_t now, size_t limit)
{
    while (limit-- && s->heap_len && s->heap[0]->expires_at <= now) {
        remove_entry(s, s->heap[0]);
        s->reclaimed++;
    }
}

/* The live entry for key, or NULL. An expired entry found on the way is
 * freed: it is absent from the moment its deadline passes. */
static struct entry *find(struct mem_store *s, kiln_str key, uint64_t h, uint64_t now)
{
    struct entry *e = s->buckets[h & (s->nbuckets - 1)];
    for (; e; e = e->chain) {
        if (e->hash != h || e->klen != key.len || memcmp(e->key, key.p, key.len) != 0)
            continue;
        if (e->expires_at && e->expires_at <= now) {
            remove_entry(s, e);
            s->reclaimed++;
            return NULL;
        }
        return e;
    }
    return NULL;
}

static void grow_buckets(struct mem_store *s)
{
    size_t n = s->nbuckets * 2;
    struct entry **b = kiln_calloc(n, sizeof *b);
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->buckets[i];
        while (e) {
            struct entry *next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/*
 * Make room for one more entry: reclaim every expired entry, then, if the
 * store is still full, evict the entry that expires soonest, or the least
 * recently written one when no entry has a TTL. Returns the number of
 * evictions to report in a warning line (0: nothing to log now), so that the
 * caller logs after releasing the lock.
 */
static uint64_t make_room(struct mem_store *s, uint64_t now)
{
    if (s->count < s->max_keys)
        return 0;
    reclaim(s, now, SIZE_MAX);
    if (s->count < s->max_keys)
        return 0;
    remove_entry(s, s->heap_len ? s->heap[0] : s->oldest);
    s->evicted++;
    s->evicted_unreported++;
    if (s->warned && now - s->last_warn_ms < WARN_INTERVAL_MS)
        return 0;
    uint64_t n = s->evicted_unreported;
    s->warned = true;
    s->last_warn_ms = now;
    s->evicted_unreported = 0;
    return n;
}

static struct entry *insert(struct mem_store *s, kiln_str key, uint64_t h)
{
    struct entry *e = kiln_malloc(sizeof *e + key.len);
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->heap_idx = NOT_IN_HEAP;
    e->klen = key.len;
    memcpy(e->key, key.p, key.len);
    e->chain = s->buckets[h & (s->nbuckets - 1)];
    s->buckets[h & (s->nbuckets - 1)] = e;
    list_append(s, e);
    if (++s->count > s->nbuckets)
        grow_buckets(s);
    return e;
}

static void warn_eviction(const struct mem_store *s, uint64_t evicted)
{
    char max[24], n[24];
    if (!evicted)
        return;
    snprintf(max, sizeof max, "%lu", s->max_keys);
    snprintf(n, sizeof n, "%llu", (unsigned long long)evicted);
    kiln_log(KILN_LOG_WARNING,
             "kv memory store full: evicting the keys that expire soonest "
             "(raise KV_MEMORY_MAX_KEYS or use Valkey)",
             "max_keys", max, "evicted", n, NULL);
}

static uint64_t deadline(uint64_t now, uint64_t ttl_ms)
{
    return ttl_ms ? now + ttl_ms : 0;
}

/* What is left of e's TTL; a TTL that has a millisecond or less left reads
 * as 1, since 0 means "no TTL". */
static uint64_t ttl_left(const struct entry *e, uint64_t now)
{
    if (!e->expires_at)
        return 0;
    return e->expires_at > now + 1 ? e->expires_at - now : 1;
}

/*
 * A value INCR accepts: what Redis's string2ll accepts, so both drivers
 * refuse the same strings: an optional '-', no '+', no spaces, no leading
 * zeros (and no "-0"), within int64.
 */
static bool parse_i64(const char *p, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    uint64_t v = 0, limit = INT64_MAX;

    if (n == 1 && p[0] == '0') {
        *out = 0;
        return true;
    }
    if (n > 0 && p[0] == '-') {
        neg = true;
        limit = (uint64_t)INT64_MAX + 1;
        i = 1;
    }
    if (i >= n || n > 20 || p[i] < '1' || p[i] > '9')
        return false;
    for (; i < n; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9 || v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (!neg)
        *out = (int64_t)v;
    else
        *out = v == limit ? INT64_MIN : -(int64_t)v;
    return true;
}

/* ---- the driver ---------------------------------------------------------- */

struct kiln_kv_store *kiln__kv_memory_new(const struct kiln_kv_config *cfg)
{
    struct mem_store *s = kiln_calloc(1, sizeof *s);
    s->base.ops = &memory_ops;
    pthread_mutex_init(&s->lock, NULL);
    s->max_keys = cfg->max_keys ? cfg->max_keys : DEFAULT_MAX_KEYS;
    s->nbuckets = FIRST_BUCKETS;
    s->buckets = kiln_calloc(s->nbuckets, sizeof *s->buckets);
    if (kiln_random_bytes(s->sipkey, sizeof s->sipkey) != 0) {
        /* Still a working store; only flooding resistance is weaker. */
        s->sipkey[0] = kiln_now_ns();
        s->sipkey[1] = (uint64_t)(uintptr_t)s;
        kiln_log(KILN_LOG_WARNING, "kv memory store: no kernel randomness for the hash key",
                 NULL);
    }
    return &s->base;
}

static void memory_store_free(struct kiln_kv_store *base)
{
    struct mem_store *s = (struct mem_store *)base;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->buckets[i];
        while (e) {
            struct entry *next = e->chain;
            free(e->value);
            mset_free(e->set);
            free(e);
            e = next;
        }
    }
    free(s->buckets);
    free(s->heap);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void kiln__kv_memory_stats(struct kiln_kv_store *base, struct kiln__kv_memory_stats *out)
{
    struct mem_store *s = (struct mem_store *)base;
    pthread_mutex_lock(&s->lock);
    out->keys = s->count;
    out->reclaimed = s->reclaimed;
    out->evicted = s->evicted;
    pthread_mutex_unlock(&s->lock);
}

static struct kiln_kv *memory_open(struct kiln_kv_store *s)
{
    return kiln_calloc(1, sizeof(struct kiln_kv));
}

static void memory_close(struct kiln_kv *kv)
{
    free(kv);
}

static struct mem_store *store_of(struct kiln_kv *kv)
{
    return (struct mem_store *)kv->store;
}

/* e's value, copied into the arena with a NUL after it. Under the lock. */
static void copy_out(kiln_arena *a, const struct entry *e, kiln_str *out)
{
    char *p = kiln_arena_alloc(a, e->vlen + 1);
    if (e->vlen)
        memcpy(p, e->value, e->vlen);
    p[e->vlen] = '\0';
    *out = (kiln_str){ p, e->vlen };
}

static int memory_get(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key);
    int rc = KILN_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    struct entry *e = find(s, key, h, kiln_now_ms());
    if (e && e->set) {
        rc = wrong_type(kv, "get", e);
    } else if (e) {
        copy_out(a, e, out);
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/*
 * SET, or with only_existing SET XX: the lookup and the write under one
 * hold of the lock, so a delete lands either before (nothing written) or
 * after (it wins).
 */
static int put(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms,
               bool only_existing)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key), evicted = 0;
    /* Copy the value before taking the lock, free the old one after. */
    char *copy = value.len ? kiln_malloc(value.len) : NULL, *old = copy;
    struct mset *old_set = NULL;
    int rc = 0;
    if (value.len)
        memcpy(copy, value.p, value.len);

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    reclaim(s, now, SWEEP_PER_WRITE);
    struct entry *e = find(s, key, h, now);
    if (!e && !only_existing) {
        evicted = make_room(s, now);
        e = insert(s, key, h);
    }
    if (e) {
        old = e->value;
        e->value = copy;
        e->vlen = value.len;
        /* Like SET: a string replaces a set. */
        old_set = e->set;
        e->set = NULL;
        /* Like SET: a write without a TTL clears the old one. */
        set_deadline(s, e, deadline(now, ttl_ms));
    } else {
        rc = KILN_ENOTFOUND;
    }
    pthread_mutex_unlock(&s->lock);

    free(old); /* the replaced value, or our unused copy */
    mset_free(old_set);
    warn_eviction(s, evicted);
    return rc;
}

static int memory_set(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    return put(kv, key, value, ttl_ms, false);
}

static int memory_replace(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    return put(kv, key, value, ttl_ms, true);
}

/* GETDEL: found, copied and unlinked under one hold of the lock, so of two
 * takers racing for a key only one finds it. */
static int memory_take(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key);
    int rc = KILN_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    struct entry *e = find(s, key, h, now);
    if (e && e->set) {
        rc = wrong_type(kv, "take", e);
    } else if (e) {
        copy_out(a, e, out);
        remove_entry(s, e);
        rc = 0;
    }
    reclaim(s, now, SWEEP_PER_WRITE);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int memory_del(struct kiln_kv *kv, kiln_str key, bool *deleted)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key);

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    struct entry *e = find(s, key, h, now);
    if (e)
        remove_entry(s, e);
    reclaim(s, now, SWEEP_PER_WRITE);
    pthread_mutex_unlock(&s->lock);
    *deleted = e != NULL;
    return 0;
}

/* Every expired entry, in batches so a huge backlog does not hold the
 * lock for long at once. */
static int memory_sweep(struct kiln_kv *kv, size_t *freed)
{
    struct mem_store *s = store_of(kv);
    size_t n = 0;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        uint64_t before = s->reclaimed;
        reclaim(s, kiln_now_ms(), 1024);
        size_t got = (size_t)(s->reclaimed - before);
        pthread_mutex_unlock(&s->lock);
        n += got;
        if (got < 1024)
            break;
    }
    *freed = n;
    return 0;
}

static int memory_expire(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key);
    int rc = KILN_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    reclaim(s, now, SWEEP_PER_WRITE);
    struct entry *e = find(s, key, h, now);
    if (e) {
        set_deadline(s, e, deadline(now, ttl_ms));
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int memory_incr(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms, int64_t *value,
                       uint64_t *ttl_left_ms)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key), evicted = 0;
    int64_t v = 0;
    char digits[24];
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    reclaim(s, now, SWEEP_PER_WRITE);
    struct entry *e = find(s, key, h, now);
    if (e && e->set) {
        rc = wrong_type(kv, "incr", e);
        goto out;
    }
    if (e) {
        if (!parse_i64(e->value, e->vlen, &v)) {
            rc = kiln__kv_error(kv, KILN_EINVAL, "incr: value is not an integer");
            goto out;
        }
        if (v == INT64_MAX) {
            rc = kiln__kv_error(kv, KILN_EINVAL, "incr: increment would overflow");
            goto out;
        }
        v++;
        /* A value write, but the TTL stays (fixed-window counters). */
        if (!e->expires_at) {
            list_unlink(s, e);
            list_append(s, e);
        }
    } else {
        evicted = make_room(s, now);
        e = insert(s, key, h);
        v = 1;
        if (ttl_ms)
            set_deadline(s, e, deadline(now, ttl_ms));
    }
    int n = snprintf(digits, sizeof digits, "%lld", (long long)v);
    free(e->value);
    e->value = kiln_malloc((size_t)n);
    memcpy(e->value, digits, (size_t)n);
    e->vlen = (size_t)n;
    *value = v;
    *ttl_left_ms = ttl_left(e, now);
out:
    pthread_mutex_unlock(&s->lock);
    warn_eviction(s, evicted);
    return rc;
}

static int memory_ping(struct kiln_kv *kv, unsigned timeout_ms)
{
    return 0;
}

/* A write that leaves the TTL alone still counts as one for eviction. */
static void touch(struct mem_store *s, struct entry *e)
{
    if (!e->expires_at) {
        list_unlink(s, e);
        list_append(s, e);
    }
}

static int memory_sadd(struct kiln_kv *kv, kiln_str key, kiln_str member, uint64_t ttl_ms,
                       bool *added)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key), mh = hash_key(s, member), evicted = 0;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    reclaim(s, now, SWEEP_PER_WRITE);
    struct entry *e = find(s, key, h, now);
    if (e && !e->set) {
        rc = wrong_type(kv, "sadd", e);
        goto out;
    }
    if (!e) {
        evicted = make_room(s, now);
        e = insert(s, key, h);
        e->set = mset_new();
    }
    *added = mset_add(e->set, member, mh);
    if (ttl_ms)
        set_deadline(s, e, deadline(now, ttl_ms));
    else
        touch(s, e);
out:
    pthread_mutex_unlock(&s->lock);
    warn_eviction(s, evicted);
    return rc;
}

static int memory_srem(struct kiln_kv *kv, kiln_str key, const kiln_str *members, size_t n,
                       size_t *removed)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key);
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    uint64_t now = kiln_now_ms();
    reclaim(s, now, SWEEP_PER_WRITE);
    struct entry *e = find(s, key, h, now);
    if (e && !e->set) {
        rc = wrong_type(kv, "srem", e);
    } else if (e) {
        for (size_t i = 0; i < n; i++)
            if (mset_del(e->set, members[i], hash_key(s, members[i])))
                ++*removed;
        /* As on Valkey: a set without members is no key. */
        if (e->set->count == 0)
            remove_entry(s, e);
        else
            touch(s, e);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int memory_smembers(struct kiln_kv *kv, kiln_arena *a, kiln_str key, size_t max,
                           kiln_str **out, size_t *n)
{
    struct mem_store *s = store_of(kv);
    uint64_t h = hash_key(s, key);
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    struct entry *e = find(s, key, h, kiln_now_ms());
    if (e && !e->set) {
        rc = wrong_type(kv, "smembers", e);
    } else if (e) {
        size_t want = e->set->count < max ? e->set->count : max, got = 0;
        kiln_str *list = kiln_arena_alloc(a, want * sizeof *list);
        for (size_t i = 0; i < e->set->nbuckets && got < want; i++)
            for (struct member *x = e->set->buckets[i]; x && got < want; x = x->next) {
                char *p = kiln_arena_alloc(a, x->len + 1);
                memcpy(p, x->p, x->len);
                p[x->len] = '\0';
                list[got++] = (kiln_str){ p, x->len };
            }
        *out = list;
        *n = got;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static const struct kiln_kv_ops memory_ops = {
    .name = "memory",
    .store_free = memory_store_free,
    .open = memory_open,
    .close = memory_close,
    .get = memory_get,
    .set = memory_set,
    .replace = memory_replace,
    .take = memory_take,
    .del = memory_del,
    .expire = memory_expire,
    .incr = memory_incr,
    .ping = memory_ping,
    .sadd = memory_sadd,
    .srem = memory_srem,
    .smembers = memory_smembers,
    .sweep = memory_sweep,
};
