/*
 * The key-value store's front door: picks the driver (valkey when a host is
 * configured, memory otherwise) and dispatches every call through the
 * driver's vtable (kv_internal.h).
 *
 * Arguments are checked here, once, so that both drivers refuse the same
 * things with the same error: callers must not be able to tell which driver
 * they have, and a test that passes on one passes on the other.
 */
#include "store/kv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"
#include "store/kv_internal.h"

struct kiln_kv_store *kiln_kv_store_new(const struct kiln_kv_config *cfg)
{
    static const struct kiln_kv_config defaults = { 0 };
    if (!cfg)
        cfg = &defaults;
    if (cfg->host && cfg->host[0])
        return kiln__kv_valkey_new(cfg);
    return kiln__kv_memory_new(cfg);
}

void kiln_kv_store_free(struct kiln_kv_store *s)
{
    if (s)
        s->ops->store_free(s);
}

const char *kiln_kv_driver(const struct kiln_kv_store *s)
{
    return s->ops->name;
}

bool kiln_kv_is_memory(const struct kiln_kv_store *s)
{
    return strcmp(s->ops->name, "memory") == 0;
}

struct kiln_kv *kiln_kv_open(struct kiln_kv_store *s)
{
    struct kiln_kv *kv = s->ops->open(s);
    kv->ops = s->ops;
    kv->store = s;
    kv->err[0] = '\0';
    return kv;
}

struct kiln_kv *kiln_kv_open_shared(struct kiln_kv_store *s)
{
    if (!s->ops->open_shared)
        return kiln_kv_open(s);
    struct kiln_kv *kv = s->ops->open_shared(s);
    kv->ops = s->ops;
    kv->store = s;
    kv->err[0] = '\0';
    return kv;
}

void kiln_kv_close(struct kiln_kv *kv)
{
    if (kv)
        kv->ops->close(kv);
}

const char *kiln_kv_last_error(const struct kiln_kv *kv)
{
    return kv ? kv->err : "no key-value handle";
}

int kiln__kv_error(struct kiln_kv *kv, int code, const char *fmt, ...)
{
    char tmp[KILN__KV_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    /* The text ends up in logs and in /healthz bodies: printable ASCII only. */
    size_t i = 0;
    for (; tmp[i] && i < sizeof kv->err - 1; i++) {
        unsigned char c = (unsigned char)tmp[i];
        kv->err[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    kv->err[i] = '\0';
    /* Callers never format the secret in; this is the last line of defence
     * should a server or library echo it. */
    if (kv->secret && kv->secret[0] && strstr(kv->err, kv->secret))
        snprintf(kv->err, sizeof kv->err, "%s (details withheld: they contained the password)",
                 kiln_err_message(code));
    return code;
}

/* Common checks; on failure the handle's error says which argument. */
static int check_key(struct kiln_kv *kv, kiln_str key)
{
    if (!key.p && key.len)
        return kiln__kv_error(kv, KILN_EINVAL, "key is NULL");
    if (key.len > KILN__KV_MAX_KEY)
        return kiln__kv_error(kv, KILN_EINVAL, "key of %zu bytes is over the %u-byte limit",
                              key.len, KILN__KV_MAX_KEY);
    return 0;
}

static int check_ttl(struct kiln_kv *kv, uint64_t ttl_ms)
{
    if (ttl_ms > KILN__KV_MAX_TTL_MS)
        return kiln__kv_error(kv, KILN_EINVAL, "TTL of %llu ms is too long",
                              (unsigned long long)ttl_ms);
    return 0;
}

static int check_value(struct kiln_kv *kv, kiln_str value)
{
    if (!value.p && value.len)
        return kiln__kv_error(kv, KILN_EINVAL, "value is NULL");
    if (value.len > KILN__KV_MAX_VALUE)
        return kiln__kv_error(kv, KILN_EINVAL, "value of %zu bytes is over the %u-byte limit",
                              value.len, KILN__KV_MAX_VALUE);
    return 0;
}

/* A key of length 0 may come with p == NULL; give drivers a real pointer. */
static kiln_str norm(kiln_str s)
{
    if (!s.p)
        s.p = "";
    return s;
}

/* The checks every read that copies a value out starts with (get, take). */
static int begin_read(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out,
                      const char *op)
{
    int rc;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if (!a || !out)
        return kiln__kv_error(kv, KILN_EINVAL, "%s needs an arena and an output", op);
    if ((rc = check_key(kv, key)))
        return rc;
    *out = KILN_STR_NULL;
    return 0;
}

/* The checks every write of a value starts with (set, replace). */
static int begin_write(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    int rc;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if ((rc = check_key(kv, key)) || (rc = check_ttl(kv, ttl_ms)) ||
        (rc = check_value(kv, value)))
        return rc;
    return 0;
}

int kiln_kv_get(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    int rc = begin_read(kv, a, key, out, "get");
    return rc ? rc : kv->ops->get(kv, a, norm(key), out);
}

int kiln_kv_set(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    int rc = begin_write(kv, key, value, ttl_ms);
    return rc ? rc : kv->ops->set(kv, norm(key), norm(value), ttl_ms);
}

int kiln_kv_replace(struct kiln_kv *kv, kiln_str key, kiln_str value, uint64_t ttl_ms)
{
    int rc = begin_write(kv, key, value, ttl_ms);
    return rc ? rc : kv->ops->replace(kv, norm(key), norm(value), ttl_ms);
}

int kiln_kv_take(struct kiln_kv *kv, kiln_arena *a, kiln_str key, kiln_str *out)
{
    int rc = begin_read(kv, a, key, out, "take");
    return rc ? rc : kv->ops->take(kv, a, norm(key), out);
}

int kiln_kv_del(struct kiln_kv *kv, kiln_str key, bool *deleted)
{
    int rc;
    bool dummy;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if ((rc = check_key(kv, key)))
        return rc;
    if (!deleted)
        deleted = &dummy;
    *deleted = false;
    return kv->ops->del(kv, norm(key), deleted);
}

int kiln_kv_expire(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms)
{
    int rc;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if ((rc = check_key(kv, key)) || (rc = check_ttl(kv, ttl_ms)))
        return rc;
    /* PEXPIRE 0 would delete the key; "no expiry" here is not a deletion. */
    if (ttl_ms == 0)
        return kiln__kv_error(kv, KILN_EINVAL, "expire needs a TTL above 0 ms");
    return kv->ops->expire(kv, norm(key), ttl_ms);
}

int kiln_kv_incr(struct kiln_kv *kv, kiln_str key, uint64_t ttl_ms, int64_t *value,
                 uint64_t *ttl_left_ms)
{
    int rc;
    int64_t v_dummy;
    uint64_t t_dummy;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if ((rc = check_key(kv, key)) || (rc = check_ttl(kv, ttl_ms)))
        return rc;
    if (!value)
        value = &v_dummy;
    if (!ttl_left_ms)
        ttl_left_ms = &t_dummy;
    *value = 0;
    *ttl_left_ms = 0;
    return kv->ops->incr(kv, norm(key), ttl_ms, value, ttl_left_ms);
}

/* A set member: bytes like a key, and bounded like one. */
static int check_member(struct kiln_kv *kv, kiln_str m)
{
    if (!m.p && m.len)
        return kiln__kv_error(kv, KILN_EINVAL, "member is NULL");
    if (m.len > KILN__KV_MAX_KEY)
        return kiln__kv_error(kv, KILN_EINVAL, "member of %zu bytes is over the %u-byte limit",
                              m.len, KILN__KV_MAX_KEY);
    return 0;
}

int kiln_kv_sadd(struct kiln_kv *kv, kiln_str key, kiln_str member, uint64_t ttl_ms,
                 bool *added)
{
    int rc;
    bool dummy;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if ((rc = check_key(kv, key)) || (rc = check_ttl(kv, ttl_ms)) ||
        (rc = check_member(kv, member)))
        return rc;
    if (!added)
        added = &dummy;
    *added = false;
    return kv->ops->sadd(kv, norm(key), norm(member), ttl_ms, added);
}

int kiln_kv_srem(struct kiln_kv *kv, kiln_str key, const kiln_str *members, size_t n,
                 size_t *removed)
{
    int rc;
    size_t dummy;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if (!removed)
        removed = &dummy;
    *removed = 0;
    if ((rc = check_key(kv, key)))
        return rc;
    if (n > KILN_KV_SET_LIST_MAX || (n && !members))
        return kiln__kv_error(kv, KILN_EINVAL, "srem of %zu members (at most %u)", n,
                              KILN_KV_SET_LIST_MAX);
    for (size_t i = 0; i < n; i++)
        if ((rc = check_member(kv, members[i])))
            return rc;
    /* SREM needs a member; removing none is done already. */
    if (n == 0)
        return 0;
    /* Drivers get real pointers, as for keys (an empty member may come
     * with p == NULL); a copy only when one does not. */
    size_t i = 0;
    while (i < n && members[i].p)
        i++;
    if (i == n)
        return kv->ops->srem(kv, norm(key), members, n, removed);
    kiln_str *copy = kiln_malloc(n * sizeof *copy);
    for (i = 0; i < n; i++)
        copy[i] = norm(members[i]);
    rc = kv->ops->srem(kv, norm(key), copy, n, removed);
    free(copy);
    return rc;
}

int kiln_kv_smembers(struct kiln_kv *kv, kiln_arena *a, kiln_str key, size_t max,
                     kiln_str **out, size_t *n)
{
    int rc;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    if (!a || !out || !n)
        return kiln__kv_error(kv, KILN_EINVAL, "smembers needs an arena and outputs");
    *out = NULL;
    *n = 0;
    if ((rc = check_key(kv, key)))
        return rc;
    if (max == 0 || max > KILN_KV_SET_LIST_MAX)
        return kiln__kv_error(kv, KILN_EINVAL, "smembers of up to %zu members (1..%u)", max,
                              KILN_KV_SET_LIST_MAX);
    return kv->ops->smembers(kv, a, norm(key), max, out, n);
}

int kiln_kv_publish(struct kiln_kv *kv, const char *channel, kiln_str message)
{
    if (!kv || !channel || !message.p || message.len > KILN__KV_MAX_VALUE)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    return kv->ops->publish ? kv->ops->publish(kv, channel, message) : 0;
}

int kiln_kv_listen(struct kiln_kv *kv, const char *channel, int wake_fd, uint64_t deadline,
                   void (*on_message)(void *arg, kiln_str message), void *arg, bool *fresh)
{
    if (!kv || !channel || !on_message || !fresh)
        return KILN_EINVAL;
    *fresh = false;
    kv->err[0] = '\0';
    if (!kv->ops->listen)
        return KILN_EINVAL;
    return kv->ops->listen(kv, channel, wake_fd, deadline, on_message, arg, fresh);
}

int kiln_kv_sweep(struct kiln_kv *kv, size_t *freed)
{
    *freed = 0;
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    return kv->ops->sweep ? kv->ops->sweep(kv, freed) : 0;
}

int kiln_kv_ping(struct kiln_kv *kv, unsigned timeout_ms)
{
    if (!kv)
        return KILN_EINVAL;
    kv->err[0] = '\0';
    return kv->ops->ping(kv, timeout_ms);
}
