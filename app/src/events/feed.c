/*
 * The change feed (events/feed.h): the feed thread, the streams' records on
 * their loops, and the messages between them.
 *
 * Threads and ownership:
 *   - the feed thread owns its connections, the registrations (which
 *     stream is on which loop, for which owner and session) and the feed's
 *     position G (the last event it handed out, in (tx, id) order);
 *   - each loop owns the records of its streams (struct fsub), in a table
 *     by owner, allocated on its first stream;
 *   - loops tell the feed thread about streams through its inbox (mutex +
 *     eventfd); the feed thread gives loops batches of formatted events
 *     through kiln_server_post, which keeps them in order.
 *
 * A new stream is not live at once: its loop registers it, the feed
 * thread reads that owner's events after the stream's position up to G
 * (the catch-up) and sends them with "live" set. Every broadcast batch the
 * loop received before holds only events up to G (already in the
 * catch-up, so a stream that is not live skips them) and every one after
 * only events after G: the single queue per loop makes that hand-over
 * exact, without locks.
 */
#include "events/feed.h"

#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/log.h"
#include "jobs/jobs.h"

#define BATCH_ROWS 500
#define BUCKETS 4096
#define HELD_MIN_MS 2
#define HELD_MAX_MS 250
#define HELD_WARN_MS 10000
/* Under a stream of writes, the outbox is read (and the instances woken
 * through Valkey) at most this often: each read costs the database a
 * statement and the horizon, so one per write would take a share of its
 * CPU that grows with the write rate. A write after a quiet spell is read
 * at once. */
#define TAIL_GAP_MS 5
#define SIDHASH_LEN 32
#define RETRY_HINT "retry: 2000\n"

static const char PREAMBLE[] = RETRY_HINT ": connected\n\n";
static const char RESET[] =
    "event: reset\ndata: {\"reason\":\"The events after the given id are no longer kept (or "
    "the id is unknown): fetch the current state again.\"}\n\n";

/* ---- records ---- */

/* A stream's record on its loop. sub comes first: the handler fills it
 * through kiln_feed_sub_new's pointer. */
struct fsub {
    struct kiln_feed_sub sub;
    struct fsub *prev, *next;       /* its owner's bucket */
    struct kiln_stream *s;
    uint64_t id;
    char sidhash[SIDHASH_LEN + 1];
    unsigned bucket;
    bool registered;                /* in the loop's table, known to the feed */
    bool live;
};

struct lreg {
    struct fsub *b[BUCKETS];
};

/* One event, formatted once for every stream that gets it. */
struct frame {
    int64_t tx, id;
    int res;                         /* index in cfg.resources, -1: none */
    char owner[37];
    size_t off, len;                 /* in the batch's text */
};

struct batch {
    atomic_int refs;
    size_t n;
    struct frame *f;
    char *text;
};

enum task_kind { T_BROADCAST, T_CATCHUP, T_CLOSE_SID };

struct ltask {
    struct kiln_task t;
    enum task_kind kind;
    struct batch *b;
    uint64_t stream;                 /* T_CATCHUP */
    char owner[37];                  /* T_CATCHUP */
    char sidhash[SIDHASH_LEN + 1];   /* T_CLOSE_SID */
    unsigned loop;
};

enum msg_kind { M_REGISTER, M_UNREGISTER, M_SESSION_END };

struct msg {
    struct msg *next;
    enum msg_kind kind;
    uint64_t id;
    unsigned loop;
    char owner[37];
    char sid[64];
    char sidhash[SIDHASH_LEN + 1];
    int64_t tx, pos;
};

/* The feed thread's view of a stream. */
struct reg {
    struct reg *next;                /* hash chain by id */
    uint64_t id;
    unsigned loop;
    char owner[37];
    char sid[64];
    char sidhash[SIDHASH_LEN + 1];
    int64_t tx, pos;                 /* catch-up from here */
    bool pending;                    /* catch-up not done yet */
};

#define MAX_LOOPS 256

static struct {
    struct kiln_feed_config cfg;
    pthread_t thread;
    bool started;
    int wake_fd;
    atomic_bool changed, stop;
    pthread_mutex_t lock;
    struct msg *inbox, **inbox_tail;
    atomic_uint_least64_t next_stream;
    struct lreg *lregs[MAX_LOOPS];   /* each touched by its loop only */

    /* the feed thread's */
    struct kiln_db *db;
    struct kiln_kv *pub, *sub;
    bool pg, valkey;
    struct reg *regs[BUCKETS];
    size_t nregs;
    unsigned per_loop[MAX_LOOPS];
    bool have_pos;
    int64_t gtx, gid;
    bool tail_needed;
} F = { .wake_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

static unsigned hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

static void sid_hash(const char *sid, char out[SIDHASH_LEN + 1])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(sid, strlen(sid), md, &len, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < SIDHASH_LEN / 2; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[SIDHASH_LEN] = '\0';
}

static bool after(int64_t tx, int64_t id, int64_t ctx, int64_t cid)
{
    return tx > ctx || (tx == ctx && id > cid);
}

static void wake_feed(void)
{
    if (F.wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(F.wake_fd, &one, sizeof one);
        (void)n; /* a full counter is already a wake-up */
    }
}

static void send_msg(struct msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&F.lock);
    *F.inbox_tail = m;
    F.inbox_tail = &m->next;
    pthread_mutex_unlock(&F.lock);
    wake_feed();
}

bool kiln_feed_running(void)
{
    return F.started;
}

void kiln_events_notify(void)
{
    /* The outbox's other reader: the webhooks' dispatcher (a jobs pump). */
    kiln_jobs_pump_due();
    if (F.started && !atomic_exchange(&F.changed, true))
        wake_feed();
}

void kiln_events_session_ended(const char *sid)
{
    if (!F.started || !sid)
        return;
    struct msg *m = kiln_calloc(1, sizeof *m);
    m->kind = M_SESSION_END;
    sid_hash(sid, m->sidhash);
    send_msg(m);
}

/* ---- the loop side ---- */

static void batch_unref(struct batch *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->f);
        free(b->text);
        free(b);
    }
}

static void fsub_unlink(struct lreg *r, struct fsub *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        r->b[f->bucket] = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
}

static void stream_open(struct kiln_stream *s, void *arg)
{
    struct fsub *f = arg;
    unsigned loop = kiln_stream_loop(s);
    if (loop >= MAX_LOOPS) {
        kiln_stream_end(s, NULL, 0);
        return;
    }
    if (!F.lregs[loop])
        F.lregs[loop] = kiln_calloc(1, sizeof *F.lregs[loop]);
    struct lreg *r = F.lregs[loop];
    f->s = s;
    f->id = atomic_fetch_add(&F.next_stream, 1) + 1;
    sid_hash(f->sub.sid, f->sidhash);
    f->bucket = hash_str(f->sub.owner);
    f->next = r->b[f->bucket];
    if (f->next)
        f->next->prev = f;
    r->b[f->bucket] = f;
    f->registered = true;

    struct msg *m = kiln_calloc(1, sizeof *m);
    m->kind = M_REGISTER;
    m->id = f->id;
    m->loop = loop;
    memcpy(m->owner, f->sub.owner, sizeof m->owner);
    memcpy(m->sid, f->sub.sid, sizeof m->sid);
    memcpy(m->sidhash, f->sidhash, sizeof m->sidhash);
    m->tx = f->sub.tx;
    m->pos = f->sub.id;
    send_msg(m);

    /* Written last: a failed write closes the stream (stream_closed),
     * which finds it registered. */
    if (kiln_stream_write(s, PREAMBLE, sizeof PREAMBLE - 1) == 0 && f->sub.reset)
        kiln_stream_write(s, RESET, sizeof RESET - 1);
}

static void stream_closed(struct kiln_stream *s, void *arg)
{
    struct fsub *f = arg;
    if (s && f->registered) {
        fsub_unlink(F.lregs[kiln_stream_loop(s)], f);
        struct msg *m = kiln_calloc(1, sizeof *m);
        m->kind = M_UNREGISTER;
        m->id = f->id;
        send_msg(m);
    }
    memset(f->sub.sid, 0, sizeof f->sub.sid);
    free(f);
}

const struct kiln_stream_ops kiln_feed_stream_ops = {
    .open = stream_open,
    .closed = stream_closed,
    .heartbeat = ": heartbeat\n\n",
    .goodbye = "retry: 1000\n\n",
};

struct kiln_feed_sub *kiln_feed_sub_new(void)
{
    struct fsub *f = kiln_calloc(1, sizeof *f);
    return &f->sub;
}

void kiln_feed_sub_free(struct kiln_feed_sub *sub)
{
    free((struct fsub *)sub);
}

/* Write what of b this stream has not had yet; catchup: ignore "live".
 * false when a write failed, which closed the stream and freed f. */
static bool deliver(struct fsub *f, const struct batch *b, bool catchup)
{
    if (!f->live && !catchup)
        return true;
    for (size_t i = 0; i < b->n; i++) {
        const struct frame *fr = &b->f[i];
        if (strcmp(fr->owner, f->sub.owner) || !after(fr->tx, fr->id, f->sub.tx, f->sub.id))
            continue;
        f->sub.tx = fr->tx;
        f->sub.id = fr->id;
        if (f->sub.filter && (fr->res < 0 || !(f->sub.filter & (1ull << fr->res))))
            continue;
        if (kiln_stream_write(f->s, b->text + fr->off, fr->len) != 0)
            return false;
    }
    return true;
}

static void run_task(struct kiln_task *t)
{
    struct ltask *lt = (struct ltask *)t;
    struct lreg *r = lt->loop < MAX_LOOPS ? F.lregs[lt->loop] : NULL;
    if (r && lt->kind == T_BROADCAST) {
        /* Each owner's streams once: frames of one owner go to its bucket. */
        for (size_t i = 0; i < lt->b->n; i++) {
            const struct frame *fr = &lt->b->f[i];
            unsigned bk = hash_str(fr->owner);
            for (struct fsub *f = r->b[bk], *next; f; f = next) {
                next = f->next;
                if (f->live && !strcmp(f->sub.owner, fr->owner) &&
                    after(fr->tx, fr->id, f->sub.tx, f->sub.id)) {
                    /* deliver writes this and every later frame of the
                     * owner in the batch; the others are skipped there. */
                    deliver(f, lt->b, false);
                }
            }
        }
    } else if (r && lt->kind == T_CATCHUP) {
        for (struct fsub *f = r->b[hash_str(lt->owner)]; f; f = f->next)
            if (f->id == lt->stream) {
                if (!lt->b || deliver(f, lt->b, true))
                    f->live = true;
                break;
            }
    } else if (r && lt->kind == T_CLOSE_SID) {
        for (unsigned bk = 0; bk < BUCKETS; bk++)
            for (struct fsub *f = r->b[bk], *next; f; f = next) {
                next = f->next;
                if (!strcmp(f->sidhash, lt->sidhash))
                    kiln_stream_end(f->s, ": session ended\n\n", 17);
            }
    }
    batch_unref(lt->b);
    free(lt);
}

static bool post(unsigned loop, enum task_kind kind, struct batch *b)
{
    struct ltask *lt = kiln_calloc(1, sizeof *lt);
    lt->t.run = run_task;
    lt->kind = kind;
    lt->b = b;
    lt->loop = loop;
    if (b)
        atomic_fetch_add(&b->refs, 1);
    if (kiln_server_post(loop, &lt->t))
        return true;
    batch_unref(b);
    free(lt);
    return false;
}

/* ---- the feed thread ---- */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static struct reg **reg_slot(uint64_t id)
{
    struct reg **p = &F.regs[id % BUCKETS];
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    return p;
}

/* Post b to every loop that has streams. */
static void broadcast(struct batch *b)
{
    for (unsigned i = 0; i < MAX_LOOPS; i++)
        if (F.per_loop[i])
            post(i, T_BROADCAST, b);
}

static void close_sid_everywhere(const char *sidhash)
{
    for (unsigned i = 0; i < MAX_LOOPS; i++)
        if (F.per_loop[i]) {
            struct ltask *lt = kiln_calloc(1, sizeof *lt);
            lt->t.run = run_task;
            lt->kind = T_CLOSE_SID;
            lt->loop = i;
            memcpy(lt->sidhash, sidhash, sizeof lt->sidhash);
            if (!kiln_server_post(i, &lt->t))
                free(lt);
        }
}

static int resource_index(kiln_str name)
{
    for (size_t i = 0; i < F.cfg.nresources && i < KILN_FEED_MAX_RESOURCES; i++)
        if (kiln_str_eq(name, kiln_str_c(F.cfg.resources[i])))
            return (int)i;
    return -1;
}

static void append_json_text(kiln_buf *b, kiln_str s)
{
    kiln_buf_append_c(b, "\"");
    kiln_buf_append_json_str(b, s.p ? s.p : "", s.p ? s.len : 0);
    kiln_buf_append_c(b, "\"");
}

/* Rows (id, tx, resource, action, row_id, owner, data, at) from `from` up
 * to `upto` rows (those past a horizon are left out by the caller) as a
 * batch of SSE messages. */
static struct batch *format(const struct kiln_db_rows *rows, size_t upto)
{
    struct batch *b = kiln_calloc(1, sizeof *b);
    atomic_init(&b->refs, 1);
    b->f = kiln_calloc(upto ? upto : 1, sizeof *b->f);
    kiln_buf t;
    kiln_buf_init(&t, (size_t)1 << 30);
    for (size_t i = 0; i < upto; i++) {
        struct frame *fr = &b->f[b->n];
        kiln_str owner = kiln_db_text(rows, i, 5);
        if (!kiln_db_int64(rows, i, 0, &fr->id) || !kiln_db_int64(rows, i, 1, &fr->tx) ||
            !owner.p || owner.len >= sizeof fr->owner)
            continue;
        memcpy(fr->owner, owner.p, owner.len);
        fr->owner[owner.len] = '\0';
        kiln_str res = kiln_db_text(rows, i, 2), act = kiln_db_text(rows, i, 3);
        kiln_str data = kiln_db_text(rows, i, 6);
        fr->res = resource_index(res);
        char at[KILN_RFC3339_LEN + 1] = "";
        int64_t us;
        if (kiln_db_timestamp(rows, i, 7, &us)) {
            struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
            kiln_time_rfc3339(at, &ts);
        }
        kiln_buf shown;
        kiln_buf_init(&shown, (size_t)1 << 28);
        if (data.p && F.cfg.render && res.len < 64) {
            char name[64];
            memcpy(name, res.p, res.len);
            name[res.len] = '\0';
            if (F.cfg.render(name, data, &shown))
                data = (kiln_str){ shown.p, shown.len };
        }
        fr->off = t.len;
        kiln__feed_frame(&t, fr->id, res, act, kiln_db_text(rows, i, 4), data, owner, at);
        kiln_buf_free(&shown);
        fr->len = t.len - fr->off;
        b->n++;
    }
    b->text = t.p;
    return b;
}

void kiln__feed_frame(kiln_buf *t, int64_t id, kiln_str res, kiln_str act, kiln_str row_id,
                      kiln_str data, kiln_str owner, const char *at)
{
    kiln_buf_printf(t, "id: %lld\ndata: {\"id\":%lld,\"type\":\"", (long long)id, (long long)id);
    kiln_buf_append_json_str(t, res.p ? res.p : "", res.p ? res.len : 0);
    kiln_buf_append_c(t, ".");
    kiln_buf_append_json_str(t, act.p ? act.p : "", act.p ? act.len : 0);
    kiln_buf_append_c(t, "\",\"resource\":");
    append_json_text(t, res);
    kiln_buf_append_c(t, ",\"action\":");
    append_json_text(t, act);
    kiln_buf_append_c(t, ",\"row_id\":");
    append_json_text(t, row_id);
    kiln_buf_append_c(t, ",\"data\":");
    if (data.p && data.len) {
        /* JSON text from the outbox: a line break in it can only be
         * whitespace between tokens (inside a string it is escaped), and
         * one data: line must hold the whole message. */
        size_t at0 = t->len;
        kiln_buf_append(t, data.p, data.len);
        for (size_t k = at0; k < t->len; k++)
            if (t->p[k] == '\n' || t->p[k] == '\r')
                t->p[k] = ' ';
    } else {
        kiln_buf_append_c(t, "null");
    }
    kiln_buf_append_c(t, ",\"owner\":");
    append_json_text(t, owner);
    kiln_buf_append_c(t, ",\"at\":");
    append_json_text(t, kiln_str_c(at));
    kiln_buf_append_c(t, "}\n\n");
}

bool kiln_feed_parse_id(kiln_str s, int64_t *out)
{
    if (!s.p || s.len == 0 || s.len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    /* Well formed but past any id there can be: no event, so a reset. */
    *out = v > INT64_MAX ? -1 : (int64_t)v;
    return true;
}

void kiln__feed_set_resources(const char *const *names, size_t n)
{
    F.cfg.resources = names;
    F.cfg.nresources = n;
}

/*
 * PostgreSQL: the feed's horizon for the statement's own snapshot. Every
 * transaction that was running when the statement began is in the
 * snapshot's list (pg_snapshot_xip), and those it does not list below its
 * xmax have ended; so the smallest listed one is the oldest that can still
 * commit an event, and every event below it is final. Transaction ids are
 * global to the server, so a transaction of ANOTHER database would hold
 * the feed back for nothing: those that pg_stat_activity shows in another
 * database are left out (it can only show them, never hide one of ours:
 * one that is not there any more, or whose details this role may not see,
 * stays in, which only makes the feed wait). backend_xid is 32 bits, the
 * list's ids carry the epoch above them.
 */
#define HORIZON KILN_FEED_HORIZON

static void pos_params(kiln_arena *a, kiln_str *p, int64_t tx, int64_t id)
{
    p[0] = kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)tx));
    p[1] = kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)id));
}

int kiln_feed_head(struct kiln_db *db, kiln_arena *a, int64_t *tx, int64_t *id)
{
    bool pg = kiln_db_dialect(db) == KILN_DB_POSTGRES;
    struct kiln_db_rows rows;
    int err = kiln_db_query(db, a,
                            pg ? "SELECT (" HORIZON ")"
                               : "SELECT coalesce(max(id), 0) FROM events",
                            NULL, 0, &rows);
    if (err)
        return err;
    int64_t v = 0;
    if (rows.nrows != 1 || !kiln_db_int64(&rows, 0, 0, &v))
        return KILN_EDB;
    /* PostgreSQL: every transaction from the oldest still running on
     * commits after now, and each of its events has tx >= v. */
    *tx = pg ? v : 0;
    *id = pg ? 0 : v;
    return 0;
}

int kiln_feed_position(struct kiln_db *db, kiln_arena *a, const char *owner, int64_t id,
                       int64_t *tx, bool *found)
{
    kiln_str p[2] = { kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)id)),
                      kiln_str_c(owner) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(db, a, "SELECT tx FROM events WHERE id = $1 AND owner = $2", p, 2,
                            &rows);
    if (err)
        return err;
    *found = rows.nrows == 1 && kiln_db_int64(&rows, 0, 0, tx);
    return 0;
}

bool kiln_feed_filter(kiln_arena *a, const char *list, uint64_t *mask, const char **bad)
{
    *mask = 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int i = len ? resource_index((kiln_str){ p, len }) : -1;
        if (i < 0) {
            *bad = kiln_arena_strndup(a, p, len);
            return false;
        }
        *mask |= 1ull << i;
        if (!end)
            return true;
        p = end + 1;
    }
}

/* Read the outbox after G and hand it out. *held: events exist that wait
 * for an older transaction. */
static int tail(bool *held)
{
    *held = false;
    for (int rounds = 0; rounds < 20; rounds++) {
        kiln_arena *a = kiln_arena_new(16 * 1024);
        kiln_str p[2];
        pos_params(a, p, F.gtx, F.gid);
        struct kiln_db_rows rows;
        int err = kiln_db_query(
            F.db, a,
            F.pg ? "SELECT id, tx, resource, action, row_id, owner, data, at, (" HORIZON
                   ") FROM events WHERE (tx, id) > ($1, $2) ORDER BY tx, id LIMIT 500"
                 : "SELECT id, tx, resource, action, row_id, owner, data, at, NULL FROM events "
                   "WHERE tx = $1 AND id > $2 ORDER BY id LIMIT 500",
            p, 2, &rows);
        if (err) {
            kiln_arena_free(a);
            return err;
        }
        size_t upto = 0;
        for (; upto < rows.nrows; upto++) {
            int64_t tx = 0, horizon = 0;
            kiln_db_int64(&rows, upto, 1, &tx);
            if (F.pg && kiln_db_int64(&rows, upto, 8, &horizon) && tx >= horizon) {
                *held = true;
                break;
            }
        }
        if (upto) {
            struct batch *b = format(&rows, upto);
            if (b->n) {
                F.gtx = b->f[b->n - 1].tx;
                F.gid = b->f[b->n - 1].id;
                broadcast(b);
            }
            batch_unref(b);
        }
        kiln_arena_free(a);
        if (*held || rows.nrows < BATCH_ROWS)
            return 0;
    }
    return 0; /* more next time: others wait meanwhile */
}

static void post_live(struct reg *g, struct batch *b)
{
    struct ltask *lt = kiln_calloc(1, sizeof *lt);
    lt->t.run = run_task;
    lt->kind = T_CATCHUP;
    lt->b = b; /* the task's reference */
    lt->loop = g->loop;
    lt->stream = g->id;
    memcpy(lt->owner, g->owner, sizeof lt->owner);
    if (!kiln_server_post(g->loop, &lt->t)) {
        batch_unref(b);
        free(lt);
    }
}

/* A registration's events after its position up to G. */
static int catch_up(struct reg *g)
{
    /* A stream that starts from now is usually past G already: nothing to
     * read, it is live at once. */
    if (!after(F.gtx, F.gid, g->tx, g->pos)) {
        post_live(g, NULL);
        return 0;
    }
    for (;;) {
        kiln_arena *a = kiln_arena_new(16 * 1024);
        kiln_str p[5];
        p[0] = kiln_str_c(g->owner);
        pos_params(a, p + 1, g->tx, g->pos);
        pos_params(a, p + 3, F.gtx, F.gid);
        struct kiln_db_rows rows;
        int err = kiln_db_query(
            F.db, a,
            F.pg ? "SELECT id, tx, resource, action, row_id, owner, data, at FROM events WHERE "
                   "owner = $1 AND (tx, id) > ($2, $3) AND (tx, id) <= ($4, $5) ORDER BY tx, "
                   "id LIMIT 500"
                 : "SELECT id, tx, resource, action, row_id, owner, data, at FROM events WHERE "
                   "owner = $1 AND tx = $2 AND id > $3 AND tx = $4 AND id <= $5 ORDER BY id "
                   "LIMIT 500",
            p, 5, &rows);
        if (err) {
            kiln_arena_free(a);
            return err;
        }
        struct batch *b = format(&rows, rows.nrows);
        bool last = rows.nrows < BATCH_ROWS;
        if (b->n) {
            g->tx = b->f[b->n - 1].tx;
            g->pos = b->f[b->n - 1].id;
        }
        /* Live after the first batch already: nothing is broadcast until
         * the catch-up is over, so only its own batches follow. */
        post_live(g, b);
        kiln_arena_free(a);
        if (last)
            return 0;
    }
}

static void outage(const char *what, int err, const char *detail)
{
    (void)err;
    kiln_log_outage(what, detail && *detail ? detail : "the change feed cannot reach it");
}

static void on_message(void *arg, kiln_str m)
{
    (void)arg;
    if (m.len == 1 && m.p[0] == 'w') {
        F.tail_needed = true;
    } else if (m.len == 1 + SIDHASH_LEN && m.p[0] == 's') {
        char h[SIDHASH_LEN + 1];
        memcpy(h, m.p + 1, SIDHASH_LEN);
        h[SIDHASH_LEN] = '\0';
        close_sid_everywhere(h);
    }
}

static void handle_inbox(void)
{
    pthread_mutex_lock(&F.lock);
    struct msg *m = F.inbox;
    F.inbox = NULL;
    F.inbox_tail = &F.inbox;
    pthread_mutex_unlock(&F.lock);
    while (m) {
        struct msg *next = m->next;
        if (m->kind == M_REGISTER) {
            if (F.nregs == 0)
                F.have_pos = false; /* start from now, not from long ago */
            struct reg *g = kiln_calloc(1, sizeof *g);
            g->id = m->id;
            g->loop = m->loop < MAX_LOOPS ? m->loop : 0;
            memcpy(g->owner, m->owner, sizeof g->owner);
            memcpy(g->sid, m->sid, sizeof g->sid);
            memcpy(g->sidhash, m->sidhash, sizeof g->sidhash);
            g->tx = m->tx;
            g->pos = m->pos;
            g->pending = true;
            struct reg **slot = reg_slot(g->id);
            g->next = *slot;
            *slot = g;
            F.nregs++;
            F.per_loop[g->loop]++;
        } else if (m->kind == M_UNREGISTER) {
            struct reg **slot = reg_slot(m->id);
            struct reg *g = *slot;
            if (g) {
                *slot = g->next;
                F.nregs--;
                F.per_loop[g->loop]--;
                memset(g->sid, 0, sizeof g->sid);
                free(g);
            }
        } else if (m->kind == M_SESSION_END) {
            close_sid_everywhere(m->sidhash);
            if (F.valkey) {
                char msg[1 + SIDHASH_LEN];
                msg[0] = 's';
                memcpy(msg + 1, m->sidhash, SIDHASH_LEN);
                int err = kiln_kv_publish(F.pub, KILN_FEED_CHANNEL,
                                          (kiln_str){ msg, sizeof msg });
                if (err)
                    outage("Valkey", err, kiln_kv_last_error(F.pub));
            }
        }
        memset(m->sid, 0, sizeof m->sid);
        free(m);
        m = next;
    }
}

/* Catch up every registration still waiting; false if one failed. */
static bool catch_up_all(void)
{
    bool ok = true;
    for (unsigned bk = 0; bk < BUCKETS; bk++)
        for (struct reg *g = F.regs[bk]; g; g = g->next)
            if (g->pending) {
                int err = catch_up(g);
                if (err) {
                    outage("Database", err, kiln_db_last_error(F.db));
                    ok = false;
                } else {
                    g->pending = false;
                }
            }
    return ok;
}

static int cmp_sid(const void *a, const void *b)
{
    return strcmp((*(struct reg *const *)a)->sid, (*(struct reg *const *)b)->sid);
}

/* Streams of sessions that ended some other way (expiry, a store flush,
 * another instance's logout while Valkey was away) close too. */
static void check_sessions(void)
{
    if (!F.cfg.session_exists || !F.nregs)
        return;
    struct reg **all = kiln_calloc(F.nregs, sizeof *all);
    size_t n = 0;
    for (unsigned bk = 0; bk < BUCKETS; bk++)
        for (struct reg *g = F.regs[bk]; g && n < F.nregs; g = g->next)
            all[n++] = g;
    qsort(all, n, sizeof *all, cmp_sid);
    kiln_arena *a = kiln_arena_new(4096);
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(all[i]->sid, all[i - 1]->sid))
            continue;
        int err = F.cfg.session_exists(F.pub, all[i]->sid);
        if (err == KILN_ENOTFOUND) {
            close_sid_everywhere(all[i]->sidhash);
            char now[KILN_RFC3339_LEN + 1];
            kiln_time_rfc3339_now(now);
            kiln_str p[2] = { kiln_str_c(now), kiln_str_c(all[i]->owner) };
            kiln_db_query(F.db, a,
                          "INSERT INTO audit (at, actor, action, target) VALUES ($1, $2, "
                          "'session_ended', 'session')",
                          p, 2, NULL);
        } else if (err) {
            outage("Valkey", err, kiln_kv_last_error(F.pub));
            break;
        }
    }
    kiln_arena_free(a);
    free(all);
}

static void *feed_main(void *arg)
{
    (void)arg;
    kiln_wait_abortable();
    F.db = kiln_db_open(&F.cfg.db);
    F.pg = kiln_db_dialect(F.db) == KILN_DB_POSTGRES;
    F.pub = kiln_kv_open(F.cfg.kv);
    F.valkey = !kiln_kv_is_memory(F.cfg.kv);
    F.sub = F.valkey ? kiln_kv_open(F.cfg.kv) : NULL;
    uint64_t now = kiln_now_ms();
    uint64_t next_poll = now, next_check = now + F.cfg.session_check_s * 1000ull;
    uint64_t sub_retry = 0, held_since = 0, last_tail = 0, last_pub = 0;
    unsigned held_ms = 0;
    bool catchup_failed = false, pub_pending = false;

    while (!atomic_load(&F.stop)) {
        now = kiln_now_ms();
        uint64_t deadline = next_check;
        if (F.nregs) {
            deadline = min_u64(deadline, next_poll);
            if (held_ms)
                deadline = min_u64(deadline, now + held_ms);
            if (catchup_failed)
                deadline = min_u64(deadline, now + 100);
            if (F.tail_needed)
                deadline = min_u64(deadline, last_tail + TAIL_GAP_MS);
        }
        if (pub_pending)
            deadline = min_u64(deadline, last_pub + TAIL_GAP_MS);
        if (F.valkey && now >= sub_retry) {
            bool fresh = false;
            int err = kiln_kv_listen(F.sub, KILN_FEED_CHANNEL, F.wake_fd, deadline, on_message,
                                     NULL, &fresh);
            if (fresh) {
                /* Messages may have been missed while it was away (or
                 * before it first came up): the outbox has every event,
                 * and the session check finds every logout. */
                F.tail_needed = true;
                next_check = kiln_now_ms();
            }
            if (err) {
                outage("Valkey", err, kiln_kv_last_error(F.sub));
                sub_retry = kiln_now_ms() + 1000;
            }
        } else if (deadline > now) {
            if (F.valkey)
                deadline = min_u64(deadline, sub_retry);
            struct pollfd pfd = { .fd = F.wake_fd, .events = POLLIN };
            uint64_t wait = deadline - now;
            poll(&pfd, 1, wait > 60000 ? 60000 : (int)wait);
        }
        uint64_t counter;
        ssize_t rd = read(F.wake_fd, &counter, sizeof counter);
        (void)rd;
        handle_inbox();
        if (atomic_exchange(&F.changed, false)) {
            F.tail_needed = true;
            pub_pending = F.valkey;
        }
        now = kiln_now_ms();
        if (pub_pending && now >= last_pub + TAIL_GAP_MS) {
            pub_pending = false;
            last_pub = now;
            int err = kiln_kv_publish(F.pub, KILN_FEED_CHANNEL, KILN_STR("w"));
            if (err)
                outage("Valkey", err, kiln_kv_last_error(F.pub));
        }
        if (F.nregs) {
            if (!F.have_pos) {
                kiln_arena *a = kiln_arena_new(1024);
                int err = kiln_feed_head(F.db, a, &F.gtx, &F.gid);
                kiln_arena_free(a);
                if (err) {
                    outage("Database", err, kiln_db_last_error(F.db));
                    catchup_failed = true;
                    next_poll = now + F.cfg.poll_ms;
                    continue;
                }
                F.have_pos = true;
            }
            bool held_due = held_ms && now >= held_since + held_ms;
            bool wanted = F.tail_needed && now >= last_tail + TAIL_GAP_MS;
            if (wanted || now >= next_poll || held_due) {
                F.tail_needed = false;
                last_tail = now;
                next_poll = now + F.cfg.poll_ms;
                bool held = false;
                int err = tail(&held);
                if (err) {
                    outage("Database", err, kiln_db_last_error(F.db));
                } else if (held) {
                    if (!held_ms)
                        held_since = now;
                    held_ms = held_ms ? (held_ms * 2 > HELD_MAX_MS ? HELD_MAX_MS : held_ms * 2)
                                      : HELD_MIN_MS;
                    if (now - held_since > HELD_WARN_MS && held_ms == HELD_MAX_MS &&
                        now % 10000 < HELD_MAX_MS)
                        kiln_log(KILN_LOG_WARNING,
                                 "events: the feed waits for a transaction open for over 10 s "
                                 "(pg_stat_activity shows it; idle_in_transaction_session_timeout "
                                 "ends such sessions)",
                                 NULL);
                } else {
                    held_ms = 0;
                }
            }
            catchup_failed = !catch_up_all();
        }
        if (now >= next_check) {
            next_check = now + F.cfg.session_check_s * 1000ull;
            check_sessions();
        }
    }
    kiln_kv_close(F.sub);
    kiln_kv_close(F.pub);
    kiln_db_close(F.db);
    return NULL;
}

int kiln_feed_start(const struct kiln_feed_config *cfg)
{
    F.cfg = *cfg;
    if (!F.cfg.poll_ms)
        F.cfg.poll_ms = 1000;
    if (!F.cfg.session_check_s)
        F.cfg.session_check_s = 15;
    F.inbox_tail = &F.inbox;
    F.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (F.wake_fd < 0) {
        kiln_logf(KILN_LOG_ERROR, "events: eventfd: %s", strerror(errno));
        return KILN_EIO;
    }
    atomic_store(&F.stop, false);
    kiln_wait_abort(false);
    if (pthread_create(&F.thread, NULL, feed_main, NULL) != 0) {
        close(F.wake_fd);
        F.wake_fd = -1;
        kiln_log(KILN_LOG_ERROR, "events: cannot start the feed thread", NULL);
        return KILN_EIO;
    }
    F.started = true;
    return 0;
}

void kiln_feed_stop(void)
{
    if (!F.started)
        return;
    atomic_store(&F.stop, true);
    kiln_wait_abort(true);
    wake_feed();
    pthread_join(F.thread, NULL);
    F.started = false;
    close(F.wake_fd);
    F.wake_fd = -1;
    handle_inbox(); /* frees what is left */
    for (unsigned bk = 0; bk < BUCKETS; bk++)
        while (F.regs[bk]) {
            struct reg *g = F.regs[bk];
            F.regs[bk] = g->next;
            free(g);
        }
    F.nregs = 0;
    memset(F.per_loop, 0, sizeof F.per_loop);
    for (unsigned i = 0; i < MAX_LOOPS; i++) {
        free(F.lregs[i]);
        F.lregs[i] = NULL;
    }
}

unsigned kiln_feed_heartbeat_ms(void)
{
    return F.cfg.heartbeat_ms;
}
