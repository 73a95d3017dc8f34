/*
 * Long-lived responses (server-sent events). A handler answers with
 * kiln_res_stream; once the status and headers are queued, the connection
 * belongs to the stream until either side ends it. Meanwhile it holds no
 * fiber, worker, arena or store connection: only the connection itself and
 * what the stream's owner keeps for it. The body is chunked on HTTP/1.1
 * and ends at the close on HTTP/1.0.
 *
 * The server keeps streams alive (ops->heartbeat after heartbeat_ms without
 * a write), closes one whose client stops reading (over
 * KILN_STREAM_MAX_PENDING bytes waiting), discards what a client sends on
 * one, and at a drain writes ops->goodbye to every stream, ends it and
 * closes it at once: a drain never waits for streams.
 *
 * Threads: open, closed, kiln_stream_write and kiln_stream_end run on the
 * stream's loop thread only; kiln_server_post may be called from any.
 */
#ifndef KILN_HTTP_STREAM_H
#define KILN_HTTP_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "http/response.h"

#define KILN_STREAM_MAX_PENDING ((size_t)1 << 20)

struct kiln_stream;

struct kiln_stream_ops {
    /* The headers are queued; arg (the handler's) belongs to the ops from
     * here on, and is given back to closed. */
    void (*open)(struct kiln_stream *s, void *arg);
    /* The connection is closing (client gone, write error, too slow, the
     * drain, or kiln_stream_end); s must not be used after. Once. */
    void (*closed)(struct kiln_stream *s, void *arg);
    const char *heartbeat;       /* written when idle for heartbeat_ms */
    const char *goodbye;         /* written at a drain, before the end */
};

/* In a handler: answer 200 with a stream (the handler sets the content type
 * and other headers). arg is passed to ops->open; if the stream never
 * opens (HEAD, the connection closed first) ops->closed gets it with s
 * NULL. */
void kiln_res_stream(struct kiln_res *res, const struct kiln_stream_ops *ops, void *arg,
                     unsigned heartbeat_ms);

/* Queue bytes on the stream (one chunk). 0, or KILN_ECLOSED when the stream
 * is closed or has just been closed because its client is too slow. */
int kiln_stream_write(struct kiln_stream *s, const char *p, size_t n);
/* Write last (may be NULL), end the body and close. */
void kiln_stream_end(struct kiln_stream *s, const char *last, size_t n);
/* The index of the stream's loop (0..loops-1). */
unsigned kiln_stream_loop(const struct kiln_stream *s);

/* Work for a loop thread, posted from any thread. */
struct kiln_task {
    struct kiln_task *next;
    void (*run)(struct kiln_task *t);   /* on the loop; owns t from then on */
};
/* Run t->run(t) on loop `loop`'s thread soon. false when that loop has
 * stopped or the server is not running: the caller still owns t. */
bool kiln_server_post(unsigned loop, struct kiln_task *t);
/* Loops of the running server (HTTP_LOOPS), 0 when none runs. */
unsigned kiln_server_loops(void);

#endif
