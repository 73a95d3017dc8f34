/*
 * Fibers: handlers written as plain blocking code that run on an event-loop
 * thread and give the thread back while they wait for a socket.
 *
 * A request handler that talks to PostgreSQL and Valkey spends almost all of
 * its time waiting. On a worker thread each wait is a thread switch, and a
 * request costs two more (loop to worker, worker to loop). On a fiber the
 * wait parks the handler's stack, the loop serves other connections, and the
 * loop's epoll wakes the fiber when its socket is ready: no thread switch at
 * all, and the store drivers can pipeline the commands of many fibers onto
 * one connection (store/kv_valkey.c).
 *
 * The code that waits does not need to know whether it runs on a fiber:
 * kiln_wait_fd parks the fiber on a fiber and calls poll() anywhere else,
 * so the same driver code serves worker threads and loops.
 *
 * Rules:
 *   - One scheduler per loop thread (kiln_fibers_new on that thread). A fiber
 *     lives and dies on its loop's thread.
 *   - A fiber must not block the thread (no sleep, no blocking socket, no
 *     curl): routes that must block run on the worker pool instead.
 *   - kiln_fiber_wake is called on the loop thread, from a loop callback or
 *     from another fiber; the woken fiber runs at the loop's next idle point,
 *     never inside the caller's stack.
 */
#ifndef KILN_CORE_FIBER_H
#define KILN_CORE_FIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct kiln_fiber;
struct kiln_fibers;

/* A scheduler for the calling thread's loop. stack_size 0: the default
 * (256 KiB, 1 MiB under AddressSanitizer), rounded to pages; only the pages
 * a fiber touches become resident. */
struct kiln_fibers *kiln_fibers_new(uv_loop_t *loop, size_t stack_size);
/* After every fiber has finished (the loop is stopping). */
void kiln_fibers_free(struct kiln_fibers *f);
/* Fibers alive now (running or parked). */
unsigned kiln_fibers_alive(const struct kiln_fibers *f);

/*
 * Run fn(arg) on a new fiber. It runs at once, until it first waits or
 * returns, and then this call returns: true when fn has already returned,
 * false when it waits; then done(arg) (may be NULL) runs on the loop, off
 * the fiber, once fn returns. Call from the loop, not from a fiber.
 */
bool kiln_fiber_spawn(struct kiln_fibers *f, void (*fn)(void *arg), void (*done)(void *arg),
                      void *arg);

/* The calling fiber, or NULL on a plain thread. */
struct kiln_fiber *kiln_fiber_self(void);
/* The loop of the calling thread's scheduler (on a fiber or in a callback of
 * that loop), or NULL on a thread without one. */
uv_loop_t *kiln_fiber_loop(void);
/* Park the calling fiber until someone calls kiln_fiber_wake on it. */
void kiln_fiber_park(void);
/* Make a parked fiber runnable. Waking a fiber that is not parked is a bug. */
void kiln_fiber_wake(struct kiln_fiber *fiber);

/*
 * Wait until fd is ready for events (POLLIN and/or POLLOUT) or the deadline
 * (kiln_now_ms; UINT64_MAX: none) passes. 0 when ready (POLLERR/POLLHUP count
 * as ready: the next I/O call says what happened), KILN_ETIMEDOUT, or
 * KILN_EIO. *watch caches the loop's watcher for fd between calls on a
 * fiber; pass the same one for the same fd, and kiln_fdwatch_close it
 * before closing fd. On a plain thread it stays NULL and poll() waits.
 */
struct kiln_fdwatch;
int kiln_wait_fd(struct kiln_fdwatch **watch, int fd, short events, uint64_t deadline);
void kiln_fdwatch_close(struct kiln_fdwatch **watch);

/*
 * Background threads' waits end when kiln stops. A plain thread that calls
 * kiln_wait_abortable() has every later kiln_wait_fd answer KILN_ETIMEDOUT
 * at once, as if its deadline had passed, from kiln_wait_abort(true) until
 * kiln_wait_abort(false): a database or Valkey that accepts and never
 * answers then costs the exit nothing instead of a connect or query
 * timeout per thread. Fibers and threads that did not opt in are not
 * affected (the HTTP drain bounds those).
 */
void kiln_wait_abortable(void);
void kiln_wait_abort(bool on);
/* The same for the fibers of s that called kiln_wait_abortable: their
 * waits in kiln_wait_fd end now, and later ones at once (a loop's drain
 * must not sit out its warm-up's connect timeout). */
void kiln_fibers_abort_waits(struct kiln_fibers *s);

#endif
