/*
 * Listeners, loops, connections, timeouts and the drain.
 *
 * One design decision to know: a connection handles one request at a time.
 * Bytes of pipelined requests wait (in the kernel, or in conn->in) until the
 * response before them has been produced, so responses leave in request
 * order without any reordering queue, and a client that sends faster than it
 * reads is throttled by TCP instead of by our memory.
 *
 * Threads: everything here runs on the connection's loop thread, except
 * job_run/job_finish (worker threads) and the main thread's signal handling.
 * A connection whose request is on a worker is not touched by its loop until
 * the worker hands it back through loop->done (mutex + uv_async).
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#ifdef __linux__
#include <linux/filter.h>
#endif

#include "core/alloc.h"
#include "core/caps.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/log.h"
#include "core/random.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/stream.h"
#include "http/tls.h"
#include "http/workers.h"

#define READ_BUF_SIZE (64 * 1024)
#define SWEEP_INTERVAL_MS 250
/* After an error response: how long and how much we keep reading (and
 * discarding) so the client sees the response instead of a TCP reset. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (256 * 1024)
/* Drain: how long a stopping listener drops new SYNs before it takes what is
 * queued and closes, so that handshakes already under way (an RTT: well
 * under a millisecond on loopback or inside a VPC) land in its queue. */
#define LISTEN_SETTLE_MS 100
/* Drain: after our FIN to an idle keep-alive connection, how long we read
 * and discard before closing, so that a request crossing the FIN meets a
 * clean EOF (which clients retry) instead of a reset. */
#define DRAIN_LINGER_MS 500
/* Output waiting behind a slow reader: one response at most is produced while
 * a write is pending, so this only bounds a single response. */
#define OUT_MAX ((size_t)1 << 30)
/* Arenas kept per loop for reuse. */
#define ARENA_POOL_MAX 256
#define ARENA_FIRST_CHUNK 4096
#define LOG_FLUSH_BYTES (32 * 1024)

struct server;
struct loop;

enum conn_state {
    CONN_IDLE,        /* between requests (or before the first) */
    CONN_READING,     /* a request has started arriving */
    CONN_PROCESSING,  /* the request is on a worker or a fiber */
    CONN_LINGER,      /* final response sent, discarding input until close */
    CONN_STREAM,      /* a long-lived response (http/stream.h) */
};

struct conn {
    uv_tcp_t tcp;             /* tcp.data == this */
    struct loop *loop;
    struct conn *prev, *next; /* loop->conns */
    enum conn_state state;
    uint64_t deadline;        /* loop ms; 0 = none */

    struct kiln_parser parser;
    struct kiln_req *req;     /* current request, in its arena */
    struct kiln_res *res;
    kiln_arena *arena;
    struct kiln_job job;

    kiln_buf in;              /* unparsed bytes saved while paused */
    kiln_buf inflight;        /* bytes handed to uv_write */
    kiln_buf queued;          /* bytes produced while a write is pending */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct kiln_tls *tls;

    size_t lingered;
    bool writing;             /* wreq in flight */
    bool reading;             /* uv_read_start active */
    bool job_running;         /* a worker or fiber holds req/res */
    bool close_after_write;   /* no keep-alive: close when output drained */
    bool peer_eof;            /* client half-closed */
    bool shutting;            /* uv_shutdown called */
    bool drain_linger;        /* closed idle by the drain: short linger */
    bool closing;             /* uv_close called */
    bool handle_closed;       /* close_cb ran */
    bool body_started;        /* body deadline set */
    bool stream_chunked;      /* CONN_STREAM: chunked framing */
    const struct kiln_stream_ops *stream; /* CONN_STREAM until closed */
    void *stream_arg;
    unsigned heartbeat_ms;
    uint64_t last_write;      /* CONN_STREAM: loop ms of the last write */
    char remote_ip[INET6_ADDRSTRLEN];
};

struct loop {
    uv_loop_t uv;
    uv_thread_t thread;
    struct server *server;
    uv_tcp_t listener;
    uv_async_t wake;          /* worker results and drain requests */
    uv_timer_t sweep;         /* timeouts */
    uv_prepare_t flush;       /* log lines, once per iteration */
    uv_timer_t handover;      /* drain: closes the listener after LISTEN_SETTLE_MS */
    uint64_t idle_until;      /* drain: when idle connections are closed (loop ms) */
    struct kiln_fibers *fibers; /* NULL: no loop context */
    void *context;            /* from kiln_loop_hooks.start */
    bool warming;             /* the warm hook's fiber has not returned */
    bool listening;
    bool draining;
    bool stopping;

    pthread_mutex_t done_lock;
    struct conn *done_head;   /* linked through conn->job.next's owner */
    struct conn **done_tail;
    struct kiln_task *tasks;  /* kiln_server_post, under done_lock */
    struct kiln_task **tasks_tail;
    bool closed_to_tasks;     /* under done_lock: the wake handle is closing */

    struct conn *conns;
    size_t nconns;
    kiln_arena *arenas[ARENA_POOL_MAX];
    size_t narenas;

    kiln_buf out;             /* responses of the current drive() */
    kiln_buf log;             /* request log lines of this iteration */
    /* The time requests (not streams) took, summed: written by this loop
     * only, read by kiln_server_request_ns (the jobs' yielding). */
    _Atomic uint64_t request_ns;
    char date[KILN_HTTP_DATE_LEN + 1];
    time_t date_sec;
    char readbuf[READ_BUF_SIZE];
    char tlsbuf[READ_BUF_SIZE];
};

struct server {
    const struct kiln_config *cfg;
    struct kiln_router *router;
    struct kiln_workers *workers;
    const struct kiln_loop_hooks *loop_hooks;
    SSL_CTX *tls;
    struct kiln_parser_limits limits;
    struct loop *loops;
    unsigned nloops;
    unsigned max_conns;
    atomic_uint nconns;
    bool migrate_req;         /* net.ipv4.tcp_migrate_req is on (see listener_handover) */
    uv_async_t loop_exited;   /* on the main loop */
    atomic_uint exited;
};

static atomic_bool draining;
/* The running server, for kiln_server_post (under server_lock). */
static pthread_mutex_t server_lock = PTHREAD_MUTEX_INITIALIZER;
static struct server *running;

bool kiln_server_draining(void)
{
    return atomic_load(&draining);
}

/* Per-conn link for the done list, kept apart from job.next (pool-owned). */
static struct conn **done_link(struct conn *c)
{
    return (struct conn **)&c->job.next;
}

static void conn_close(struct conn *c);
static void conn_send(struct conn *c);
static void conn_free(struct conn *c);
static void loop_maybe_stop(struct loop *l);

/* ---- small helpers ---- */

static uint64_t now_ms(struct loop *l)
{
    return uv_now(&l->uv);
}

/* When a connection that has just gone idle is closed: after the keep-alive
 * timeout, or while draining when the idle grace ends (loop_drain). */
static uint64_t idle_deadline(struct loop *l)
{
    uint64_t d = now_ms(l) + l->server->cfg->keepalive_timeout_s * 1000ull;
    return l->draining && l->idle_until < d ? l->idle_until : d;
}

static const char *loop_date(struct loop *l)
{
    time_t t = time(NULL);
    if (t != l->date_sec) {
        kiln_time_http_date(l->date, t);
        l->date_sec = t;
    }
    return l->date;
}

static kiln_arena *arena_take(struct loop *l)
{
    if (l->narenas)
        return l->arenas[--l->narenas];
    return kiln_arena_new(ARENA_FIRST_CHUNK);
}

static void arena_give(struct loop *l, kiln_arena *a)
{
    kiln_arena_reset(a);
    if (l->narenas < ARENA_POOL_MAX)
        l->arenas[l->narenas++] = a;
    else
        kiln_arena_free(a);
}

static void log_flush(struct loop *l)
{
    if (l->log.len) {
        kiln_log_write(l->log.p, l->log.len);
        kiln_buf_reset(&l->log);
    }
}

/* ---- request lifecycle ---- */

static void request_begin(struct conn *c)
{
    struct server *s = c->loop->server;
    c->arena = arena_take(c->loop);
    c->req = kiln_arena_alloc_z(c->arena, sizeof *c->req);
    c->res = kiln_arena_alloc_z(c->arena, sizeof *c->res);
    c->req->arena = c->arena;
    c->req->config = s->cfg;
    c->req->remote_ip = c->remote_ip;
    c->req->start_ns = kiln_now_ns();
    c->body_started = false;
    kiln_parser_begin(&c->parser, c->req);
    c->state = CONN_READING;
    c->deadline = now_ms(c->loop) + s->cfg->header_timeout_s * 1000ull;
}

static void ensure_request_id(struct kiln_req *req)
{
    if (!req->request_id_len) {
        kiln_request_id(req->request_id);
        req->request_id_len = KILN_REQUEST_ID_LEN;
    }
}

/*
 * Serialize the current response into loop->out, log it, and release the
 * request. Decides keep-alive: never while draining or after an error.
 */
static void request_end(struct conn *c)
{
    struct loop *l = c->loop;
    struct kiln_req *req = c->req;
    struct kiln_res *res = c->res;
    ensure_request_id(req);
    bool keep = req->keep_alive && !res->close && !l->draining && !c->peer_eof;
    const struct kiln_stream_ops *stream = NULL;
    void *stream_arg = res->stream_arg;
    if (res->stream) {
        /* Only a 200 to a GET becomes a stream; anything else (an error
         * after kiln_res_stream, HEAD, a drain begun meanwhile) is a plain
         * answer and the stream's owner gets its arg back. */
        if (res->status == 200 && req->method == KILN_GET && !l->draining && !c->peer_eof) {
            stream = res->stream;
            keep = keep && req->http_minor >= 1;
        } else {
            const struct kiln_stream_ops *ops = res->stream;
            res->stream = NULL;
            ops->closed(NULL, stream_arg);
        }
    }
    if (kiln_res_serialize(req, res, keep, loop_date(l), &l->out) != 0) {
        /* Only a response over OUT_MAX gets here: a bug, not a client. */
        kiln_log(KILN_LOG_ERROR, "response too large to send", "request_id", req->request_id,
                 NULL);
        keep = false;
    }

    int status = res->status ? res->status : 500;
    uint64_t took_ns = kiln_now_ns() - req->start_ns;
    if (!stream)
        atomic_store_explicit(&l->request_ns,
                              atomic_load_explicit(&l->request_ns, memory_order_relaxed) + took_ns,
                              memory_order_relaxed);
    if (kiln_log_enabled(kiln_log_request_level(status))) {
        struct kiln_log_request r = {
            .request_id = { req->request_id, req->request_id_len },
            .trace_id = req->trace_id,
            .method = req->method_name.len ? req->method_name : KILN_STR("-"),
            .path = req->path,
            .status = status,
            .duration_ms = (double)took_ns / 1e6,
            .user_id = req->user_id ? kiln_str_c(req->user_id) : KILN_STR_NULL,
            .user_agent = kiln_req_header(req, "user-agent"),
            .remote_ip = c->remote_ip,
        };
        kiln_log_format_request(&l->log, &r);
        if (l->log.len >= LOG_FLUSH_BYTES)
            log_flush(l);
    }

    unsigned heartbeat_ms = res->stream_heartbeat_ms;
    arena_give(l, c->arena);
    c->arena = NULL;
    c->req = NULL;
    c->res = NULL;
    if (stream) {
        c->state = CONN_STREAM;
        c->deadline = 0;
        c->stream = stream;
        c->stream_arg = stream_arg;
        c->stream_chunked = keep;
        c->heartbeat_ms = heartbeat_ms ? heartbeat_ms : 15000;
        c->last_write = now_ms(l);
        /* Bytes of a request pipelined behind this one will never be
         * answered. */
        kiln_buf_free(&c->in);
        kiln_buf_init(&c->in, LINGER_MAX_BYTES + 2 * READ_BUF_SIZE);
        stream->open((struct kiln_stream *)c, stream_arg);
        return;
    }
    c->state = CONN_IDLE;
    c->deadline = idle_deadline(l);
    if (!keep)
        c->close_after_write = true;
}

/* An error answered before or instead of routing; the connection closes. */
static void request_fail(struct conn *c, int status, const char *code, const char *message)
{
    if (!c->req)
        request_begin(c);
    ensure_request_id(c->req);
    kiln_res_error(c->req, c->res, status, code, message, NULL);
    c->res->close = true;
    request_end(c);
}

static void run_route(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_route *route = req->route;
    if (route->guard && route->guard(req, res) != 0)
        return;
    route->handler(req, res);
    if (!res->status)
        kiln_res_error(req, res, 500, "internal_error", "Internal server error", NULL);
}

static void job_run(struct kiln_job *job)
{
    struct conn *c = (struct conn *)((char *)job - offsetof(struct conn, job));
    c->req->context = kiln_worker_context();
    run_route(c->req, c->res);
}

static void job_finish(struct kiln_job *job)
{
    struct conn *c = (struct conn *)((char *)job - offsetof(struct conn, job));
    struct loop *l = c->loop;
    pthread_mutex_lock(&l->done_lock);
    *done_link(c) = NULL;
    *l->done_tail = c;
    l->done_tail = done_link(c);
    pthread_mutex_unlock(&l->done_lock);
    uv_async_send(&l->wake);
}

static void fiber_run(void *arg)
{
    struct conn *c = arg;
    c->req->context = c->loop->context;
    run_route(c->req, c->res);
}

/* The client left while its handler ran: a stream it had asked for never
 * opens, and its owner gets its arg back. */
static void abandon_stream(struct conn *c)
{
    if (c->res && c->res->stream) {
        const struct kiln_stream_ops *ops = c->res->stream;
        c->res->stream = NULL;
        ops->closed(NULL, c->res->stream_arg);
    }
}

/* A fiber's request finished after waiting: resume the connection, on the
 * loop, as on_wake does for a worker's. */
static void fiber_done(void *arg)
{
    struct conn *c = arg;
    c->job_running = false;
    if (c->closing) {
        abandon_stream(c);
        if (c->handle_closed)
            conn_free(c);
        return;
    }
    request_end(c);
    conn_send(c);
}

/* Route a complete request. Returns true if it went to a worker or fiber. */
static bool dispatch(struct conn *c)
{
    struct server *s = c->loop->server;
    struct kiln_req *req = c->req;
    struct kiln_res *res = c->res;
    unsigned allow = 0;

    ensure_request_id(req);
    switch (kiln_router_match(s->router, req, &allow)) {
    case KILN_MATCH_NOT_FOUND:
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return false;
    case KILN_MATCH_BAD_PATH:
        kiln_res_error(req, res, 400, "invalid_request", "Malformed request: invalid path encoding",
                       NULL);
        return false;
    case KILN_MATCH_BAD_QUERY:
        kiln_res_error(req, res, 400, "invalid_request",
                       "Malformed request: invalid query encoding", NULL);
        return false;
    case KILN_MATCH_METHOD:
        kiln_res_error(req, res, 405, "method_not_allowed", "Method not allowed", NULL);
        kiln_res_header(res, "allow", kiln_allow_header(req->arena, allow));
        return false;
    case KILN_MATCH_OK:
        break;
    }
    if (req->route->flags & KILN_ROUTE_LOOP) {
        run_route(req, res);
        return false;
    }
    struct loop *l = c->loop;
    if (l->context && !(req->route->flags & KILN_ROUTE_BLOCKING)) {
        if (kiln_fibers_alive(l->fibers) >= s->cfg->worker_queue) {
            /* Saturation is an outage of our own capacity: said once a
             * second, with a count, like any other (core/log.h). */
            kiln_log_outage("Request queue", "a loop's fibers reached WORKER_QUEUE_SIZE");
            kiln_res_error(req, res, 503, "service_unavailable",
                           "Server busy, retry shortly", NULL);
            kiln_res_header(res, "retry-after", "1");
            return false;
        }
        /* Runs until the handler first waits; it may even finish here,
         * and then the request is answered like a loop route's. */
        c->job_running = true;
        if (kiln_fiber_spawn(l->fibers, fiber_run, fiber_done, c)) {
            c->job_running = false;
            return false;
        }
        c->state = CONN_PROCESSING;
        c->deadline = 0;
        return true;
    }
    c->job.run = job_run;
    c->job.finish = job_finish;
    int err = kiln_workers_submit(s->workers, &c->job);
    if (err) {
        kiln_log_outage("Request queue", "the worker queue reached WORKER_QUEUE_SIZE");
        kiln_res_error(req, res, 503, "service_unavailable",
                       "Server busy, retry shortly", NULL);
        kiln_res_header(res, "retry-after", "1");
        return false;
    }
    c->job_running = true;
    c->state = CONN_PROCESSING;
    c->deadline = 0;
    return true;
}

/* ---- input ---- */

static void read_stop(struct conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    /* One buffer per loop: read_cb consumes (or copies) it before returning. */
    buf->base = c->loop->readbuf;
    buf->len = READ_BUF_SIZE;
}

static void read_start(struct conn *c);

/*
 * Feed plaintext to the parser and answer every complete request, in order,
 * until the input runs out or a request must wait (worker, pending write).
 * Leftover bytes are kept in c->in.
 */
static void feed(struct conn *c, const char *data, size_t len)
{
    struct loop *l = c->loop;
    while (len && !c->close_after_write) {
        if (c->state == CONN_STREAM)
            return; /* nothing a client sends on a stream is read */
        if (c->job_running || c->writing) {
            /* Wait for the response before this request; keep the bytes. */
            if (kiln_buf_append(&c->in, data, len) != 0) {
                conn_close(c);
                return;
            }
            read_stop(c);
            return;
        }
        if (!c->req)
            request_begin(c);
        size_t used = 0;
        enum kiln_parse_result r = kiln_parser_feed(&c->parser, data, len, &used);
        data += used;
        len -= used;
        if (r == KILN_PARSE_ERROR) {
            request_fail(c, c->parser.error_status, c->parser.error_code,
                         c->parser.error_message);
            return;
        }
        if (r == KILN_PARSE_MORE) {
            if (c->parser.state == KILN_PARSER_BODY && !c->body_started) {
                /* Headers complete: the body has its own deadline. */
                c->body_started = true;
                c->deadline = now_ms(l) + l->server->cfg->body_timeout_s * 1000ull;
                if (c->req->expect_continue) {
                    /* RFC 9110 10.1.1: the client waits for this. */
                    kiln_buf_append_c(&l->out, "HTTP/1.1 100 Continue\r\n\r\n");
                }
            }
            break;
        }
        /* KILN_PARSE_DONE. Responses collect in l->out; the caller sends
         * them in one write, so a pipelined batch costs one syscall. */
        if (!dispatch(c))
            request_end(c);
        else if (len && kiln_buf_append(&c->in, data, len) != 0)
            conn_close(c);
        if (c->job_running) {
            /* Keep reading: a client that waits for its answer sends
             * nothing more, and stopping and restarting the read costs two
             * epoll_ctl calls per request. Bytes that do arrive meanwhile
             * stop the reading at the top of this function. */
            return;
        }
    }
}

static void process(struct conn *c, const char *data, size_t len)
{
    if (c->in.len) {
        /* Older bytes first: append, then work from the saved buffer. */
        if (kiln_buf_append(&c->in, data, len) != 0) {
            conn_close(c);
            return;
        }
        kiln_buf pending = c->in;
        kiln_buf_init(&c->in, c->in.max);
        feed(c, pending.p, pending.len);
        kiln_buf_free(&pending);
    } else {
        feed(c, data, len);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    struct loop *l = c->loop;
    if (nread == 0)
        return;
    if (nread < 0) {
        read_stop(c);
        if (c->state == CONN_LINGER || nread != UV_EOF) {
            conn_close(c);
            return;
        }
        /* Half-close: answer what is complete, then close. */
        c->peer_eof = true;
        if (c->job_running || c->writing)
            c->close_after_write = true;
        else
            conn_close(c);
        return;
    }
    if (c->state == CONN_LINGER || (c->state == CONN_STREAM && !c->tls)) {
        c->lingered += (size_t)nread;
        if (c->lingered > LINGER_MAX_BYTES)
            conn_close(c);
        return;
    }
    if (c->tls) {
        if (kiln_tls_feed(c->tls, buf->base, (size_t)nread) != 0) {
            conn_close(c);
            return;
        }
        for (;;) {
            int n = kiln_tls_read(c->tls, l->tlsbuf, sizeof l->tlsbuf);
            if (n == 0)
                break;
            if (n < 0) {
                /* Send what OpenSSL queued (an alert), then close. */
                conn_send(c);
                conn_close(c);
                return;
            }
            process(c, l->tlsbuf, (size_t)n);
            conn_send(c);
            if (c->closing)
                return;
            if (c->job_running || c->writing || c->close_after_write) {
                /* Decrypt the rest later: park it in c->in. */
                for (;;) {
                    n = kiln_tls_read(c->tls, l->tlsbuf, sizeof l->tlsbuf);
                    if (n <= 0)
                        break;
                    if (kiln_buf_append(&c->in, l->tlsbuf, (size_t)n) != 0) {
                        conn_close(c);
                        return;
                    }
                }
                break;
            }
        }
    } else {
        process(c, buf->base, (size_t)nread);
    }
    if (c->closing)
        return;
    conn_send(c);
}

static void read_start(struct conn *c)
{
    if (!c->reading && !c->closing && !c->peer_eof) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    }
}

/* ---- output ---- */

static void on_write(uv_write_t *w, int status);

static void start_write(struct conn *c)
{
    uv_buf_t b = uv_buf_init(c->inflight.p, (unsigned)c->inflight.len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        conn_close(c);
        return;
    }
    c->writing = true;
    /* A client that stops reading is dropped after the idle timeout. */
    c->deadline = now_ms(c->loop) + c->loop->server->cfg->keepalive_timeout_s * 1000ull;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    (void)status;
    if (c->closing)
        return;
    /* Keep reading (and discarding) briefly so that unread request bytes
     * do not turn our last response into a TCP reset. */
    c->state = CONN_LINGER;
    c->deadline = now_ms(c->loop) + (c->drain_linger ? DRAIN_LINGER_MS : LINGER_MS);
    if (c->peer_eof)
        conn_close(c);
    else
        read_start(c);
}

static void finish_close(struct conn *c)
{
    /* Once only: bytes read while the shutdown is pending lead here again,
     * and a second uv_shutdown fails (which would close at once). */
    if (c->closing || c->shutting)
        return;
    c->shutting = true;
    /* Bounds the wait for the FIN too (on_sweep); on_shutdown restarts it. */
    c->deadline = now_ms(c->loop) + (c->drain_linger ? DRAIN_LINGER_MS : LINGER_MS);
    if (c->tls) {
        kiln_tls_shutdown(c->tls);
        kiln_buf_reset(&c->inflight);
        kiln_tls_take(c->tls, &c->inflight);
        if (c->inflight.len) {
            uv_buf_t b = uv_buf_init(c->inflight.p, (unsigned)c->inflight.len);
            uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

/* After output drains: resume input, or close. */
static void output_drained(struct conn *c)
{
    if (c->state == CONN_STREAM && !c->close_after_write) {
        read_start(c); /* to see the client leave */
        return;
    }
    if (c->close_after_write) {
        if (!c->job_running)
            finish_close(c);
        return;
    }
    if (c->in.len && !c->job_running) {
        kiln_buf pending = c->in;
        kiln_buf_init(&c->in, c->in.max);
        feed(c, pending.p, pending.len);
        kiln_buf_free(&pending);
        conn_send(c);
        return;
    }
    if (c->peer_eof && !c->job_running && !c->writing) {
        conn_close(c);
        return;
    }
    /* Idle while draining: stay open until the idle grace ends (on_sweep),
     * since the client may be sending its next request right now. */
    if (!c->job_running)
        read_start(c);
}

static void on_write(uv_write_t *w, int status)
{
    struct conn *c = w->handle->data;
    c->writing = false;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    kiln_buf_reset(&c->inflight);
    if (c->queued.len) {
        kiln_buf tmp = c->inflight;
        c->inflight = c->queued;
        c->queued = tmp;
        start_write(c);
        return;
    }
    /* Idle connections should not pin a big output buffer. */
    if (c->inflight.cap > 16 * 1024)
        kiln_buf_free(&c->inflight);
    if (c->state == CONN_IDLE)
        c->deadline = idle_deadline(c->loop);
    else if (c->state == CONN_STREAM && !c->shutting)
        c->deadline = 0;
    output_drained(c);
}

/*
 * Send loop->out (and, with TLS, whatever OpenSSL has queued). Writes at
 * once when possible; otherwise the rest waits in the connection.
 */
static void conn_send(struct conn *c)
{
    struct loop *l = c->loop;
    if (c->closing) {
        kiln_buf_reset(&l->out);
        return;
    }
    kiln_buf *src = &l->out;
    kiln_buf cipher;
    kiln_buf_init(&cipher, OUT_MAX);
    if (c->tls) {
        if (l->out.len && kiln_tls_write(c->tls, l->out.p, l->out.len) != 0) {
            kiln_buf_reset(&l->out);
            conn_close(c);
            return;
        }
        kiln_buf_reset(&l->out);
        kiln_tls_take(c->tls, &cipher);
        src = &cipher;
    }
    if (src->len == 0) {
        kiln_buf_free(&cipher);
        if (!c->writing)
            output_drained(c);
        return;
    }
    if (c->writing) {
        if (kiln_buf_append(&c->queued, src->p, src->len) != 0)
            conn_close(c);
        kiln_buf_reset(src);
        kiln_buf_free(&cipher);
        return;
    }
    uv_buf_t b = uv_buf_init(src->p, (unsigned)src->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        kiln_buf_reset(src);
        kiln_buf_free(&cipher);
        conn_close(c);
        return;
    }
    size_t sent = n > 0 ? (size_t)n : 0;
    if (sent < src->len) {
        kiln_buf_reset(&c->inflight);
        if (kiln_buf_append(&c->inflight, src->p + sent, src->len - sent) != 0) {
            kiln_buf_reset(src);
            kiln_buf_free(&cipher);
            conn_close(c);
            return;
        }
        kiln_buf_reset(src);
        kiln_buf_free(&cipher);
        start_write(c);
        return;
    }
    kiln_buf_reset(src);
    kiln_buf_free(&cipher);
    output_drained(c);
}

/* ---- connection close ---- */

static void conn_free(struct conn *c)
{
    struct loop *l = c->loop;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nconns--;
    atomic_fetch_sub(&l->server->nconns, 1);
    if (c->arena)
        arena_give(l, c->arena);
    kiln_buf_free(&c->in);
    kiln_buf_free(&c->inflight);
    kiln_buf_free(&c->queued);
    kiln_tls_free(c->tls);
    free(c);
    loop_maybe_stop(l);
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->handle_closed = true;
    /* A worker may still hold req/res: the conn is freed when it returns. */
    if (!c->job_running)
        conn_free(c);
}

static void stream_gone(struct conn *c)
{
    const struct kiln_stream_ops *ops = c->stream;
    if (ops) {
        c->stream = NULL;
        ops->closed((struct kiln_stream *)c, c->stream_arg);
        c->stream_arg = NULL;
    }
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    stream_gone(c);
    c->closing = true;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* ---- streams (http/stream.h) ---- */

void kiln_res_stream(struct kiln_res *res, const struct kiln_stream_ops *ops, void *arg,
                     unsigned heartbeat_ms)
{
    res->status = 200;
    res->body = KILN_STR("");
    res->stream = ops;
    res->stream_arg = arg;
    res->stream_heartbeat_ms = heartbeat_ms;
}

unsigned kiln_stream_loop(const struct kiln_stream *s)
{
    const struct conn *c = (const struct conn *)s;
    return (unsigned)(c->loop - c->loop->server->loops);
}

int kiln_stream_write(struct kiln_stream *s, const char *p, size_t n)
{
    struct conn *c = (struct conn *)s;
    struct loop *l = c->loop;
    if (!c->stream || c->closing || c->shutting || c->close_after_write)
        return KILN_ECLOSED;
    if (c->inflight.len + c->queued.len > KILN_STREAM_MAX_PENDING) {
        /* The client stopped reading: it resumes from where it got to. */
        conn_close(c);
        return KILN_ECLOSED;
    }
    if (n == 0)
        return 0;
    int err = 0;
    if (c->stream_chunked)
        err |= kiln_buf_printf(&l->out, "%zx\r\n", n);
    err |= kiln_buf_append(&l->out, p, n);
    if (c->stream_chunked)
        err |= kiln_buf_append_c(&l->out, "\r\n");
    if (err) {
        kiln_buf_reset(&l->out);
        conn_close(c);
        return KILN_ECLOSED;
    }
    c->last_write = now_ms(l);
    conn_send(c);
    return c->closing ? KILN_ECLOSED : 0;
}

void kiln_stream_end(struct kiln_stream *s, const char *last, size_t n)
{
    struct conn *c = (struct conn *)s;
    if (!c->stream || c->closing || c->shutting || c->close_after_write)
        return;
    if (last && n)
        kiln_stream_write(s, last, n);
    if (c->closing)
        return;
    if (c->stream_chunked)
        kiln_buf_append_c(&c->loop->out, "0\r\n\r\n");
    stream_gone(c);
    c->drain_linger = true; /* a short linger: nothing more is expected */
    c->close_after_write = true;
    conn_send(c);
}

/* Every stream of the loop: a heartbeat when it has been quiet. */
static void stream_heartbeats(struct loop *l, uint64_t now)
{
    for (struct conn *c = l->conns; c; c = c->next)
        if (c->state == CONN_STREAM && c->stream && !c->closing &&
            now - c->last_write >= c->heartbeat_ms && c->stream->heartbeat)
            kiln_stream_write((struct kiln_stream *)c, c->stream->heartbeat,
                              strlen(c->stream->heartbeat));
}

bool kiln_server_post(unsigned loop, struct kiln_task *t)
{
    bool ok = false;
    pthread_mutex_lock(&server_lock);
    struct server *s = running;
    if (s && loop < s->nloops) {
        struct loop *l = &s->loops[loop];
        pthread_mutex_lock(&l->done_lock);
        if (!l->closed_to_tasks) {
            t->next = NULL;
            *l->tasks_tail = t;
            l->tasks_tail = &t->next;
            uv_async_send(&l->wake);
            ok = true;
        }
        pthread_mutex_unlock(&l->done_lock);
    }
    pthread_mutex_unlock(&server_lock);
    return ok;
}

unsigned kiln_server_loops(void)
{
    pthread_mutex_lock(&server_lock);
    unsigned n = running ? running->nloops : 0;
    pthread_mutex_unlock(&server_lock);
    return n;
}

uint64_t kiln_server_request_ns(void)
{
    uint64_t sum = 0;
    pthread_mutex_lock(&server_lock);
    for (unsigned i = 0; running && i < running->nloops; i++)
        sum += atomic_load_explicit(&running->loops[i].request_ns, memory_order_relaxed);
    pthread_mutex_unlock(&server_lock);
    return sum;
}

/* Posted tasks, on the loop. */
static void run_tasks(struct loop *l)
{
    pthread_mutex_lock(&l->done_lock);
    struct kiln_task *t = l->tasks;
    l->tasks = NULL;
    l->tasks_tail = &l->tasks;
    pthread_mutex_unlock(&l->done_lock);
    while (t) {
        struct kiln_task *next = t->next;
        t->run(t);
        t = next;
    }
}

/* ---- accept ---- */

/* Best effort: a clear 503 (in the usual envelope) instead of a bare close. */
static void refuse_busy(struct conn *c)
{
    char id[KILN_REQUEST_ID_LEN + 1];
    char body[256], head[512];
    kiln_request_id(id);
    int blen = snprintf(body, sizeof body,
                        "{\"error\":\"Too many connections\",\"code\":\"service_unavailable\","
                        "\"message\":\"Too many connections\",\"request_id\":\"%s\"}", id);
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 503 Service Unavailable\r\n"
                        "content-type: application/json; charset=utf-8\r\n"
                        "content-length: %d\r\nx-request-id: %s\r\nretry-after: 1\r\n"
                        "connection: close\r\n\r\n", blen, id);
    uv_buf_t b[2] = { uv_buf_init(head, (unsigned)hlen), uv_buf_init(body, (unsigned)blen) };
    uv_try_write((uv_stream_t *)&c->tcp, b, 2);
}

/* For a connection refused before it was set up (tcp is its first member). */
static void on_close_free(uv_handle_t *h)
{
    free(h->data);
}

/*
 * Set up a connection whose handle holds an accepted socket. While draining
 * it is served like any other (its answer carries connection: close): the
 * kernel queued it on this loop's listener, and turning it away would fail
 * a client that did nothing wrong.
 */
static void conn_start(struct loop *l, struct conn *c)
{
    struct server *s = l->server;
    if (atomic_fetch_add(&s->nconns, 1) >= s->max_conns) {
        atomic_fetch_sub(&s->nconns, 1);
        /* Like every 503: said once a second, with a count (core/log.h). */
        kiln_log_outage("Connections", "MAX_CONNECTIONS reached: new connections refused");
        if (!s->tls)
            refuse_busy(c);
        uv_close((uv_handle_t *)&c->tcp, on_close_free);
        return;
    }
    l->nconns++;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;

    kiln_buf_init(&c->in, LINGER_MAX_BYTES + 2 * READ_BUF_SIZE);
    kiln_buf_init(&c->inflight, OUT_MAX);
    kiln_buf_init(&c->queued, OUT_MAX);
    kiln_parser_init(&c->parser, &s->limits);
    uv_tcp_nodelay(&c->tcp, 1);

    struct sockaddr_storage ss;
    int len = sizeof ss;
    strcpy(c->remote_ip, "-");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->remote_ip, sizeof c->remote_ip);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote_ip, sizeof c->remote_ip);
    }
    if (s->tls)
        c->tls = kiln_tls_new(s->tls);
    c->state = CONN_IDLE;
    /* A connection that never sends a byte gets the header timeout (it may be
     * a slowloris), not the longer keep-alive one; while draining, no more
     * than the idle grace. */
    c->deadline = now_ms(l) + s->cfg->header_timeout_s * 1000ull;
    if (l->draining) {
        uint64_t grace = now_ms(l) + s->cfg->shutdown_idle_grace_ms;
        if (grace < c->deadline)
            c->deadline = grace;
    }
    read_start(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct loop *l = listener->data;
    if (status < 0)
        return;
    struct conn *c = kiln_calloc(1, sizeof *c);
    c->loop = l;
    uv_tcp_init(&l->uv, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close_free);
        return;
    }
    conn_start(l, c);
}

/* A socket taken from the listener's queue by hand (listener_stop). */
static void conn_adopt(struct loop *l, int fd)
{
    struct conn *c = kiln_calloc(1, sizeof *c);
    c->loop = l;
    uv_tcp_init(&l->uv, &c->tcp);
    c->tcp.data = c;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd); /* not the handle's until uv_tcp_open succeeds */
        uv_close((uv_handle_t *)&c->tcp, on_close_free);
        return;
    }
    conn_start(l, c);
}

/* ---- timers, wake-ups, drain ---- */

/*
 * The idle grace is over for a keep-alive connection. A request may be
 * crossing our close: one already in the kernel's buffer is read on this
 * loop's next turn and answered (with connection: close); otherwise we send
 * FIN and discard what still comes for DRAIN_LINGER_MS, so that a request
 * sent at this very moment meets a clean EOF, which clients retry, instead
 * of a reset. (No server closes the race entirely: RFC 9112 9.3.1.)
 */
static void drain_close_idle(struct conn *c)
{
    struct loop *l = c->loop;
    if (c->shutting) {
        conn_close(c); /* the FIN did not leave in time: give up */
        return;
    }
    int fd, pending = 0;
    if (c->reading && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 &&
        ioctl(fd, FIONREAD, &pending) == 0 && pending > 0) {
        c->deadline = now_ms(l) + SWEEP_INTERVAL_MS;
        return;
    }
    c->drain_linger = true;
    c->close_after_write = true; /* what arrives now is discarded */
    finish_close(c);
}

static void on_sweep(uv_timer_t *t)
{
    struct loop *l = t->data;
    uint64_t now = now_ms(l);
    struct conn *c = l->conns;
    while (c) {
        struct conn *next = c->next;
        if (!c->closing && c->deadline && now >= c->deadline) {
            if (c->state == CONN_READING && !c->writing) {
                /* Slow headers or body: answer 408 and close (RFC 9110 15.5.9). */
                request_fail(c, 408, "request_timeout", "Request timeout");
                conn_send(c);
            } else if (l->draining && c->state == CONN_IDLE && !c->writing && !c->job_running) {
                drain_close_idle(c);
            } else {
                conn_close(c); /* idle, stalled writer, or linger over */
            }
        }
        c = next;
    }
    stream_heartbeats(l, now);
    log_flush(l);
}

static void on_flush(uv_prepare_t *p)
{
    log_flush(p->data);
}

static void close_loop_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void loop_maybe_stop(struct loop *l)
{
    /* The listener first: what it has queued becomes connections. */
    if (!l->draining || l->nconns || l->listening || l->stopping || l->warming)
        return;
    l->stopping = true;
    log_flush(l);
    if (l->context) {
        /* Every connection, and so every fiber, is gone. */
        const struct kiln_loop_hooks *h = l->server->loop_hooks;
        h->stop(h->arg, l->context);
        l->context = NULL;
    }
    kiln_fibers_free(l->fibers);
    l->fibers = NULL;
    pthread_mutex_lock(&l->done_lock);
    l->closed_to_tasks = true;
    pthread_mutex_unlock(&l->done_lock);
    run_tasks(l); /* what was posted before: its owners free it */
    close_loop_handle((uv_handle_t *)&l->wake);
    close_loop_handle((uv_handle_t *)&l->sweep);
    close_loop_handle((uv_handle_t *)&l->flush);
    close_loop_handle((uv_handle_t *)&l->handover);
}

/*
 * Take every connection the kernel has queued on the listener, then close
 * it. Closing a listener resets what is still queued on it (unless the
 * kernel migrates it: listener_handover), and those clients did nothing
 * wrong: they are accepted and served here instead.
 */
static void listener_stop(struct loop *l)
{
    if (!l->listening)
        return;
    uv_timer_stop(&l->handover);
    int fd;
    if (uv_fileno((uv_handle_t *)&l->listener, &fd) == 0) {
        for (;;) {
            int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (cfd >= 0)
                conn_adopt(l, cfd);
            else if (errno != EINTR && errno != ECONNABORTED)
                break; /* EAGAIN: the queue is empty */
        }
    }
    l->listening = false;
    uv_close((uv_handle_t *)&l->listener, NULL);
    loop_maybe_stop(l);
}

static void on_handover(uv_timer_t *t)
{
    listener_stop(t->data);
}

/*
 * Make the listener refuse new handshakes while it finishes those under
 * way: a classic BPF socket filter (no privilege needed) that drops every
 * segment with SYN and without ACK. A socket filter on a TCP socket sees
 * the segment from its TCP header, so byte 13 holds the flags. A dropped
 * SYN is as if lost: the client sends it again after a second, and by then
 * the listener is closed, so the kernel picks an SO_REUSEPORT sibling (or
 * refuses it when there is none). The ACK that completes a handshake
 * already under way still passes and queues the connection.
 */
static int drop_new_handshakes(struct loop *l)
{
#ifdef SO_ATTACH_FILTER
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),            /* A = TCP flags */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),         /* SYN | ACK */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),   /* SYN alone? */
        BPF_STMT(BPF_RET | BPF_K, 0),                      /* drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),             /* keep */
    };
    struct sock_fprog prog = { (unsigned short)(sizeof code / sizeof code[0]), code };
    int fd;
    if (uv_fileno((uv_handle_t *)&l->listener, &fd) != 0)
        return UV_EBADF;
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
        return -errno;
    return 0;
#else
    (void)l;
    return UV_ENOTSUP;
#endif
}

/*
 * The listener's part of the drain: no connection the kernel gave this
 * listener may be reset. Two ways, chosen by the host:
 *
 * - net.ipv4.tcp_migrate_req=1 (Linux 5.14+, per network namespace): the
 *   kernel moves what a closing listener has queued, and handshakes still
 *   under way, to an SO_REUSEPORT sibling. Take the queue and close now.
 * - otherwise: stop new handshakes (drop_new_handshakes), let those under
 *   way land for LISTEN_SETTLE_MS while accepting as usual, then take the
 *   queue and close. A client whose SYN was dropped retries after a second.
 *
 * docs/OPERATIONS.md has the host setting.
 */
static void listener_handover(struct loop *l)
{
    if (l->server->migrate_req) {
        listener_stop(l);
        return;
    }
    int err = drop_new_handshakes(l);
    if (err) {
        kiln_log(KILN_LOG_WARNING, "shutdown: cannot filter the listener; closing it now",
                 "error", uv_strerror(err), NULL);
        listener_stop(l);
        return;
    }
    uv_timer_start(&l->handover, on_handover, LISTEN_SETTLE_MS, 0);
}

/*
 * Start this loop's drain (SIGTERM or SIGINT): requests in progress finish,
 * every answer from now on carries connection: close, idle keep-alive
 * connections stay open for SHUTDOWN_IDLE_GRACE_MS (a request already on
 * its way on one is answered, not met by EOF), and the listener hands over
 * what it has queued.
 */
static void loop_drain(struct loop *l)
{
    l->draining = true;
    if (l->fibers)
        kiln_fibers_abort_waits(l->fibers);
    l->idle_until = now_ms(l) + l->server->cfg->shutdown_idle_grace_ms;
    for (struct conn *c = l->conns; c;) {
        struct conn *next = c->next;
        if (c->state == CONN_IDLE && !c->writing && !c->shutting && c->deadline > l->idle_until)
            c->deadline = l->idle_until;
        if (c->state == CONN_STREAM && c->stream) {
            /* A stream never ends by itself: end it now, with the owner's
             * goodbye (a retry hint), so the client reconnects elsewhere. */
            const char *bye = c->stream->goodbye;
            kiln_stream_end((struct kiln_stream *)c, bye, bye ? strlen(bye) : 0);
        }
        c = next;
    }
    if (l->listening)
        listener_handover(l);
    loop_maybe_stop(l);
}

static void on_wake(uv_async_t *a)
{
    struct loop *l = a->data;
    pthread_mutex_lock(&l->done_lock);
    struct conn *c = l->done_head;
    l->done_head = NULL;
    l->done_tail = &l->done_head;
    pthread_mutex_unlock(&l->done_lock);
    while (c) {
        struct conn *next = *done_link(c);
        c->job_running = false;
        if (c->closing) {
            abandon_stream(c);
            if (c->handle_closed)
                conn_free(c);
        } else {
            request_end(c);
            conn_send(c);
        }
        c = next;
    }
    run_tasks(l);
    if (atomic_load(&draining) && !l->draining)
        loop_drain(l);
}

static void warm_run(void *arg)
{
    struct loop *l = arg;
    const struct kiln_loop_hooks *h = l->server->loop_hooks;
    h->warm(h->arg, l->context);
}

static void warm_done(void *arg)
{
    struct loop *l = arg;
    l->warming = false;
    loop_maybe_stop(l);
}

static void loop_thread(void *arg)
{
    struct loop *l = arg;
    const struct kiln_loop_hooks *h = l->server->loop_hooks;
    if (h && h->start) {
        l->fibers = kiln_fibers_new(&l->uv, 0);
        l->context = h->start(h->arg, (unsigned)(l - l->server->loops));
        if (!l->context) {
            kiln_fibers_free(l->fibers);
            l->fibers = NULL;
        } else if (h->warm) {
            l->warming = true;
            if (kiln_fiber_spawn(l->fibers, warm_run, warm_done, l))
                l->warming = false; /* returned without waiting */
        }
    }
    uv_run(&l->uv, UV_RUN_DEFAULT);
    /* Free pooled arenas and buffers; the loop has no handles left. */
    while (l->narenas)
        kiln_arena_free(l->arenas[--l->narenas]);
    kiln_buf_free(&l->out);
    kiln_buf_free(&l->log);
    atomic_fetch_add(&l->server->exited, 1);
    uv_async_send(&l->server->loop_exited);
}

/* ---- listeners ---- */

static int open_listener(struct loop *l, const struct kiln_config *cfg)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t slen;
    int family;
    if (uv_ip4_addr(cfg->bind_address, (int)cfg->port, (struct sockaddr_in *)&ss) == 0) {
        family = AF_INET;
        slen = sizeof(struct sockaddr_in);
    } else if (uv_ip6_addr(cfg->bind_address, (int)cfg->port, (struct sockaddr_in6 *)&ss) == 0) {
        family = AF_INET6;
        slen = sizeof(struct sockaddr_in6);
    } else {
        return UV_EINVAL;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* Debian's libuv 1.44 has no UV_TCP_REUSEPORT: each loop gets its own
     * socket on the same port and the kernel spreads connections. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, slen) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    uv_tcp_init(&l->uv, &l->listener);
    l->listener.data = l;
    int err = uv_tcp_open(&l->listener, fd);
    if (!err)
        err = uv_listen((uv_stream_t *)&l->listener, 1024, on_connection);
    if (err) {
        uv_close((uv_handle_t *)&l->listener, NULL);
        return err;
    }
    l->listening = true;
    return 0;
}

/* Whether the kernel hands a closing listener's queue to its SO_REUSEPORT
 * siblings (net.ipv4.tcp_migrate_req, Linux 5.14+; absent: no). Read once at
 * start: it is a setting of the host (of its network namespace). */
static bool kernel_migrates_queue(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "re");
    if (!f)
        return false;
    int c = fgetc(f);
    fclose(f);
    return c == '1';
}

/* ---- main thread: signals and the drain deadline ---- */

struct control {
    struct server *server;
    uv_signal_t sigterm, sigint;
    uv_timer_t deadline;
    bool stopping;
};

static void on_deadline(uv_timer_t *t)
{
    struct control *ctl = t->data;
    unsigned open = atomic_load(&ctl->server->nconns);
    kiln_logf(KILN_LOG_WARNING,
              "shutdown: timeout after %us with %u connection(s) open; exiting",
              ctl->server->cfg->shutdown_timeout_s, open);
    /* Workers may be inside a handler; there is nothing safe to wait for. */
    _exit(0);
}

static void begin_drain(struct control *ctl, int signum)
{
    struct server *s = ctl->server;
    if (ctl->stopping) {
        kiln_logf(KILN_LOG_WARNING, "signal %d again while draining; still draining", signum);
        return;
    }
    ctl->stopping = true;
    atomic_store(&draining, true);
    kiln_logf(KILN_LOG_INFO,
              "shutdown: signal %d, draining (timeout %us, idle grace %ums, queued connections "
              "%s)", signum, s->cfg->shutdown_timeout_s, s->cfg->shutdown_idle_grace_ms,
              s->migrate_req ? "accepted, then migrated by the kernel"
                             : "accepted after new handshakes are dropped");
    for (unsigned i = 0; i < s->nloops; i++)
        uv_async_send(&s->loops[i].wake);
    uv_timer_start(&ctl->deadline, on_deadline, s->cfg->shutdown_timeout_s * 1000ull, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct control *ctl = h->data;
    begin_drain(ctl, signum);
}

static void on_loop_exited(uv_async_t *a)
{
    struct control *ctl = a->data;
    struct server *s = ctl->server;
    if (atomic_load(&s->exited) < s->nloops)
        return;
    uv_close((uv_handle_t *)&ctl->sigterm, NULL);
    uv_close((uv_handle_t *)&ctl->sigint, NULL);
    uv_close((uv_handle_t *)&ctl->deadline, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Connections need file descriptors: raise the soft limit to the hard one. */
static unsigned fit_max_connections(unsigned wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return wanted;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Keep room for listeners, logs, store connections and files. */
    rlim_t reserve = 256;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)wanted + reserve) {
        unsigned fit = rl.rlim_cur > reserve * 2 ? (unsigned)(rl.rlim_cur - reserve) : 64;
        kiln_logf(KILN_LOG_WARNING,
                  "MAX_CONNECTIONS %u lowered to %u to fit the open-file limit (%llu)", wanted,
                  fit, (unsigned long long)rl.rlim_cur);
        return fit;
    }
    return wanted;
}

int kiln_server_run(const struct kiln_config *cfg, const struct kiln_route *routes,
                     size_t nroutes, const struct kiln_worker_hooks *hooks,
                     const struct kiln_loop_hooks *loop_hooks)
{
    struct server s;
    struct control ctl;
    uv_loop_t main_loop;
    int status = 1;
    unsigned started = 0, opened = 0;

    memset(&s, 0, sizeof s);
    memset(&ctl, 0, sizeof ctl);
    s.cfg = cfg;
    s.loop_hooks = loop_hooks;
    s.nloops = cfg->http_loops;
    s.limits.max_body = cfg->max_request_body;
    s.limits.max_header_bytes = KILN_MAX_HEADER_BYTES;
    s.limits.max_fields = KILN_MAX_HEADER_FIELDS;
    s.max_conns = fit_max_connections(cfg->max_connections);
    s.migrate_req = kernel_migrates_queue();
    /* Test-only routes exist only in KILN_ENV=test. */
    s.router = kiln_router_new(routes, nroutes, cfg->env == KILN_ENV_TEST);
    ctl.server = &s;
    signal(SIGPIPE, SIG_IGN);

    if (cfg->ssl_certfile || cfg->ssl_self_signed) {
        char err[512];
        s.tls = kiln_tls_ctx_new(cfg->ssl_certfile, cfg->ssl_keyfile, err, sizeof err);
        if (!s.tls) {
            kiln_log(KILN_LOG_ERROR, "cannot start TLS", "error", err, NULL);
            goto out;
        }
    }

    s.loops = kiln_calloc(s.nloops, sizeof *s.loops);
    /* A port below 1024 as a non-root user: the image's file capability,
     * effective for the binds only (core/caps.h). Dropped right after,
     * before the loop and worker threads exist, so none of them has it. */
    kiln_caps_bind_begin();
    for (; opened < s.nloops; opened++) {
        struct loop *l = &s.loops[opened];
        l->server = &s;
        uv_loop_init(&l->uv);
        int err = open_listener(l, cfg);
        if (err) {
            char port[16];
            snprintf(port, sizeof port, "%u", cfg->port);
            kiln_caps_bind_end();
            kiln_log(KILN_LOG_ERROR, "cannot listen", "address", cfg->bind_address, "port", port,
                     "error", uv_strerror(err), "hint",
                     err == UV_EACCES && cfg->port < 1024
                         ? "ports below 1024 need CAP_NET_BIND_SERVICE: the image's kiln "
                           "binary has it as a file capability, unless the container drops "
                           "it (capabilities drop ALL); keep NET_BIND_SERVICE, or use a "
                           "port from 1024 up"
                         : NULL,
                     NULL);
            uv_run(&l->uv, UV_RUN_DEFAULT);
            uv_loop_close(&l->uv);
            goto out;
        }
        pthread_mutex_init(&l->done_lock, NULL);
        l->done_tail = &l->done_head;
        l->tasks_tail = &l->tasks;
        uv_async_init(&l->uv, &l->wake, on_wake);
        l->wake.data = l;
        uv_timer_init(&l->uv, &l->sweep);
        l->sweep.data = l;
        uv_timer_start(&l->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
        uv_timer_init(&l->uv, &l->handover);
        l->handover.data = l;
        uv_prepare_init(&l->uv, &l->flush);
        l->flush.data = l;
        uv_prepare_start(&l->flush, on_flush);
        kiln_buf_init(&l->out, OUT_MAX);
        kiln_buf_init(&l->log, OUT_MAX);
    }
    kiln_caps_bind_end();

    s.workers = kiln_workers_start(cfg->workers, cfg->worker_queue, hooks);

    uv_loop_init(&main_loop);
    uv_signal_init(&main_loop, &ctl.sigterm);
    uv_signal_init(&main_loop, &ctl.sigint);
    ctl.sigterm.data = ctl.sigint.data = &ctl;
    uv_signal_start(&ctl.sigterm, on_signal, SIGTERM);
    uv_signal_start(&ctl.sigint, on_signal, SIGINT);
    uv_timer_init(&main_loop, &ctl.deadline);
    ctl.deadline.data = &ctl;
    uv_async_init(&main_loop, &s.loop_exited, on_loop_exited);
    s.loop_exited.data = &ctl;

    pthread_mutex_lock(&server_lock);
    running = &s;
    pthread_mutex_unlock(&server_lock);
    {
        /* Loop threads leave signals to the main thread's uv_signal. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        for (; started < s.nloops; started++)
            if (uv_thread_create(&s.loops[started].thread, loop_thread, &s.loops[started]) != 0)
                kiln_fatal("cannot start loop thread");
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }

    {
        char port[16], loops[16], workers[16], maxc[16];
        snprintf(port, sizeof port, "%u", cfg->port);
        snprintf(loops, sizeof loops, "%u", s.nloops);
        snprintf(workers, sizeof workers, "%u", cfg->workers);
        snprintf(maxc, sizeof maxc, "%u", s.max_conns);
        kiln_log(KILN_LOG_INFO, "listening", "address", cfg->bind_address, "port", port,
                 "scheme", s.tls ? "https" : "http", "env", kiln_env_name(cfg->env),
                 "loops", loops, "workers", workers, "max_connections", maxc, NULL);
    }

    uv_run(&main_loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < started; i++)
        uv_thread_join(&s.loops[i].thread);
    pthread_mutex_lock(&server_lock);
    running = NULL;
    pthread_mutex_unlock(&server_lock);
    kiln_workers_stop(s.workers);
    s.workers = NULL;
    uv_loop_close(&main_loop);
    kiln_log(KILN_LOG_INFO, "shutdown: complete", NULL);
    status = 0;

out:
    for (unsigned i = 0; i < opened; i++) {
        struct loop *l = &s.loops[i];
        if (status != 0) {
            /* Start-up failed: close what this loop had opened. */
            uv_walk(&l->uv, close_walk, NULL);
            uv_run(&l->uv, UV_RUN_DEFAULT);
            kiln_buf_free(&l->out);
            kiln_buf_free(&l->log);
        }
        uv_loop_close(&l->uv);
        pthread_mutex_destroy(&l->done_lock);
    }
    free(s.loops);
    kiln_router_free(s.router);
    kiln_tls_ctx_free(s.tls);
    return status;
}
