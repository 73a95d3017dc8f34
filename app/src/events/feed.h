/*
 * The change feed: the events outbox (written by api/engine.c with every
 * change, in the change's transaction) read in commit order and handed to
 * server-sent event streams, on this instance and, through Valkey, on
 * every other one. docs/REALTIME.md is the contract; ARCHITECTURE.md the
 * design.
 *
 * One feed thread per instance owns a database connection and two Valkey
 * connections (one subscribed to KILN_FEED_CHANNEL, one to publish and
 * check sessions). It reads the outbox after its position whenever this
 * instance wrote (kiln_events_notify), another instance published, or
 * every EVENTS_POLL_MS while streams are open (so nothing is lost while
 * Valkey is away), and posts what it read to the loops that hold streams
 * (http/stream.h). A stream holds no fiber, worker or connection while
 * idle: only its connection and a small record on its loop.
 *
 * Order. On PostgreSQL an event's id comes from a sequence before its
 * transaction commits, so ids can commit out of order. Each event carries
 * its transaction's id (tx); the feed is read in (tx, id) order and hands
 * out only events whose tx is below the oldest transaction still running
 * (pg_snapshot_xmin): every event that can still commit then sorts after
 * everything handed out, so a reader's position never jumps over one. On
 * SQLite one writer at a time and AUTOINCREMENT make ids commit order.
 */
#ifndef KILN_EVENTS_FEED_H
#define KILN_EVENTS_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/str.h"
#include "http/stream.h"
#include "store/db.h"
#include "store/kv.h"

#define KILN_FEED_CHANNEL "kiln:events"
#define KILN_FEED_MAX_RESOURCES 64
/* PostgreSQL: the oldest transaction id of this database still running at
 * the statement's snapshot (or the next one when none): every event with a
 * smaller tx has committed or never will (feed.c explains). A scalar
 * subquery, for the readers of the outbox (the feed, webhooks/). */
#define KILN_FEED_HORIZON                                                                                  \
    "SELECT coalesce(min(x.x::text::bigint), "                                                   \
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint) FROM "                              \
    "pg_snapshot_xip(pg_current_snapshot()) AS x(x) WHERE x.x::text::bigint % 4294967296 NOT "  \
    "IN (SELECT backend_xid::text::bigint FROM pg_stat_activity WHERE backend_xid IS NOT NULL " \
    "AND datname IS DISTINCT FROM current_database())"


struct kiln_feed_config {
    struct kiln_db_config db;          /* the feed's own connection */
    struct kiln_kv_store *kv;          /* sessions; pub/sub when it is Valkey */
    const char *const *resources;      /* names a stream may filter on */
    size_t nresources;
    unsigned heartbeat_ms;             /* EVENTS_HEARTBEAT_SECONDS */
    unsigned poll_ms;                  /* EVENTS_POLL_MS */
    unsigned session_check_s;          /* EVENTS_SESSION_CHECK_SECONDS */
    /* 0 when the session exists, KILN_ENOTFOUND when it has ended, another
     * error when the kv store cannot tell. */
    int (*session_exists)(struct kiln_kv *kv, const char *sid);
    /* An event's stored data as its stream shows it (the API's JSON of
     * the row), into out; false: send the data as stored. May be NULL. */
    bool (*render)(const char *resource, kiln_str data, kiln_buf *out);
};

/* Start the feed thread (cfg is copied; its strings must outlive the
 * feed). 0 or an error (logged). */
int kiln_feed_start(const struct kiln_feed_config *cfg);
/* After the server stopped: end the thread, close its connections. */
void kiln_feed_stop(void);

/* A change committed on this instance (any thread, cheap: no I/O). */
void kiln_events_notify(void);
/* A session ended (logout): its streams close, on every instance. */
void kiln_events_session_ended(const char *sid);

/* What a new stream asks for (filled by its handler). */
struct kiln_feed_sub {
    char owner[37];
    char sid[64];
    uint64_t filter;            /* bit i: resources[i]; 0: all */
    int64_t tx, id;             /* position: events after it */
    bool reset;                 /* the asked position is gone: say reset first */
};

/* A record for a new stream (zeroed), which the handler fills and hands to
 * kiln_res_stream with kiln_feed_stream_ops; kiln_feed_sub_free only if it
 * never does. */
struct kiln_feed_sub *kiln_feed_sub_new(void);
void kiln_feed_sub_free(struct kiln_feed_sub *sub);
/* The ops of an event stream; arg is a kiln_feed_sub_new record. */
extern const struct kiln_stream_ops kiln_feed_stream_ops;
unsigned kiln_feed_heartbeat_ms(void);

/* Resource names ("notes,tasks") as a filter; false on an unknown one
 * (*bad gets it, in a), or an empty element. */
bool kiln_feed_filter(kiln_arena *a, const char *list, uint64_t *mask, const char **bad);
/* The position now: events committed from here on all come after it. */
int kiln_feed_head(struct kiln_db *db, kiln_arena *a, int64_t *tx, int64_t *id);
/* The position of event id when it is owner's and still kept. */
int kiln_feed_position(struct kiln_db *db, kiln_arena *a, const char *owner, int64_t id,
                       int64_t *tx, bool *found);
/* A Last-Event-ID: 1..19 digits; one past INT64_MAX names no event (*out
 * is -1: the stream starts with a reset). */
bool kiln_feed_parse_id(kiln_str s, int64_t *out);

/* For the fuzz target and unit tests: one event as an SSE message (id:
 * and a single data: line whatever data holds), and the resource names
 * kiln_feed_filter knows without a running feed. */
void kiln__feed_frame(kiln_buf *out, int64_t id, kiln_str resource, kiln_str action,
                      kiln_str row_id, kiln_str data, kiln_str owner, const char *at);
void kiln__feed_set_resources(const char *const *names, size_t n);

/* Whether the feed is running (kiln serve started it). */
bool kiln_feed_running(void);

#endif
