/*
 * Fibers (see fiber.h). Each fiber has an mmap'd stack with a guard page
 * below it, so an overflow faults instead of corrupting a neighbour.
 * Finished fibers keep their stack and are reused: their entry function
 * loops, so a reused fiber costs one context switch.
 *
 * Switching saves the callee-saved registers and the stack pointer, nothing
 * else: a few instructions, where swapcontext would also save the signal
 * mask with a system call (four per request). kiln__fiber_switch is written
 * for x86-64 and AArch64 (Fargate's Graviton); other machines use
 * ucontext.
 *
 * Runnable fibers are resumed from a uv_check handle (right after the loop's
 * I/O callbacks) and a uv_idle handle (which keeps the loop from sleeping in
 * epoll while a fiber is runnable), both active only while the ready queue
 * is not empty.
 *
 * AddressSanitizer tracks one stack per thread; the
 * __sanitizer_*_switch_fiber calls tell it about every switch so that it
 * does not report the fiber's stack as an overflow of the thread's.
 */
#include "core/fiber.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KILN_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define KILN_ASAN 1
#endif

#ifdef KILN_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
#define DEFAULT_STACK (1024u * 1024)
#else
#define DEFAULT_STACK (256u * 1024)
#endif

#if defined(__x86_64__) || defined(__aarch64__)
#define KILN_FIBER_ASM 1
#else
#include <ucontext.h>
#endif

/* Finished fibers kept for reuse per loop; more are unmapped. */
#define KEEP_FREE 128

#ifdef KILN_FIBER_ASM
/* Save the callee-saved registers on the current stack, store the stack
 * pointer in *from, load to and restore its registers: returns on the other
 * stack. A new stack starts with a frame that "returns" into fiber_start. */
void kiln__fiber_switch(void **from, void *to);
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl kiln__fiber_switch\n"
        ".type kiln__fiber_switch,@function\n"
        "kiln__fiber_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size kiln__fiber_switch, .-kiln__fiber_switch\n"
        ".section .note.GNU-stack,\"\",@progbits\n"
        ".text\n");
#define SAVED_WORDS 6
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl kiln__fiber_switch\n"
        ".type kiln__fiber_switch,%function\n"
        "kiln__fiber_switch:\n"
        "    sub sp, sp, #160\n"
        "    stp x19, x20, [sp, #0]\n"
        "    stp x21, x22, [sp, #16]\n"
        "    stp x23, x24, [sp, #32]\n"
        "    stp x25, x26, [sp, #48]\n"
        "    stp x27, x28, [sp, #64]\n"
        "    stp x29, x30, [sp, #80]\n"
        "    stp d8, d9, [sp, #96]\n"
        "    stp d10, d11, [sp, #112]\n"
        "    stp d12, d13, [sp, #128]\n"
        "    stp d14, d15, [sp, #144]\n"
        "    mov x2, sp\n"
        "    str x2, [x0]\n"
        "    mov sp, x1\n"
        "    ldp x19, x20, [sp, #0]\n"
        "    ldp x21, x22, [sp, #16]\n"
        "    ldp x23, x24, [sp, #32]\n"
        "    ldp x25, x26, [sp, #48]\n"
        "    ldp x27, x28, [sp, #64]\n"
        "    ldp x29, x30, [sp, #80]\n"
        "    ldp d8, d9, [sp, #96]\n"
        "    ldp d10, d11, [sp, #112]\n"
        "    ldp d12, d13, [sp, #128]\n"
        "    ldp d14, d15, [sp, #144]\n"
        "    add sp, sp, #160\n"
        "    ret\n"
        ".size kiln__fiber_switch, .-kiln__fiber_switch\n"
        ".section .note.GNU-stack,\"\",%progbits\n"
        ".text\n");
#endif
#endif

struct kiln_fiber {
#ifdef KILN_FIBER_ASM
    void *sp;                   /* saved stack pointer while not running */
#else
    ucontext_t ctx;
#endif
    struct kiln_fibers *sched;
    struct kiln_fiber *next;    /* free list or ready queue */
    void (*fn)(void *arg);
    void (*done)(void *arg);
    void *arg;
    char *map;                  /* guard page + stack */
    size_t map_size;
    char *stack;                /* lowest usable address */
    size_t stack_size;
    bool parked;
    bool ready;
    bool finished;
    bool abortable;             /* kiln_wait_abortable on this fiber */
    void *fake_stack;           /* AddressSanitizer's, across switches */
};

struct kiln_fibers {
    uv_loop_t *loop;
#ifdef KILN_FIBER_ASM
    void *loop_sp;              /* the loop's stack pointer while a fiber runs */
#else
    ucontext_t loop_ctx;
#endif
    struct kiln_fiber *current;
    struct kiln_fiber *free;
    unsigned nfree;
    unsigned alive;
    struct kiln_fiber *ready_head;
    struct kiln_fiber **ready_tail;
    uv_idle_t idle;
    uv_check_t check;
    bool scheduled;
    size_t stack_size;
    const void *loop_stack;     /* AddressSanitizer: the thread's stack */
    size_t loop_stack_size;
    int closed;                 /* handles whose close callback ran */
    bool aborting;              /* kiln_fibers_abort_waits was called */
    struct kiln_fdwatch *abortable_waits;  /* abortable fibers in kiln_wait_fd */
};

static _Thread_local struct kiln_fibers *sched_of_thread;

static void run_ready(struct kiln_fibers *s);

static void on_idle(uv_idle_t *h)
{
    run_ready(h->data);
}

static void on_check(uv_check_t *h)
{
    run_ready(h->data);
}

struct kiln_fibers *kiln_fibers_new(uv_loop_t *loop, size_t stack_size)
{
    struct kiln_fibers *s = kiln_calloc(1, sizeof *s);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (!stack_size)
        stack_size = DEFAULT_STACK;
    s->stack_size = (stack_size + page - 1) / page * page;
    s->loop = loop;
    s->ready_tail = &s->ready_head;
    uv_idle_init(loop, &s->idle);
    uv_check_init(loop, &s->check);
    /* Active only while a fiber is runnable, and then they keep the loop
     * running: a runnable fiber is work. */
    s->idle.data = s->check.data = s;
    sched_of_thread = s;
    return s;
}

static void fiber_unmap(struct kiln_fiber *f)
{
    munmap(f->map, f->map_size);
    free(f);
}

static void free_scheduler(uv_handle_t *h)
{
    struct kiln_fibers *s = h->data;
    if (++s->closed == 2)
        free(s);
}

void kiln_fibers_free(struct kiln_fibers *s)
{
    if (!s)
        return;
    while (s->free) {
        struct kiln_fiber *f = s->free;
        s->free = f->next;
        fiber_unmap(f);
    }
    if (sched_of_thread == s)
        sched_of_thread = NULL;
    uv_close((uv_handle_t *)&s->idle, free_scheduler);
    uv_close((uv_handle_t *)&s->check, free_scheduler);
}

unsigned kiln_fibers_alive(const struct kiln_fibers *s)
{
    return s->alive;
}

static void switch_out(struct kiln_fiber *f);

/* Where every fiber starts (on its own stack): run jobs until unmapped. */
static void fiber_main(void)
{
    struct kiln_fibers *s = sched_of_thread;
    struct kiln_fiber *f = s->current;
#ifdef KILN_ASAN
    __sanitizer_finish_switch_fiber(NULL, &s->loop_stack, &s->loop_stack_size);
#endif
    for (;;) {
        f->fn(f->arg);
        f->finished = true;
        switch_out(f); /* resumed when reused, with a new fn */
    }
}

#ifdef KILN_FIBER_ASM
/* The first frame of a new stack: fiber_main never returns. */
static void fiber_start(void)
{
    fiber_main();
    abort();
}
#endif

static struct kiln_fiber *fiber_new(struct kiln_fibers *s)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    struct kiln_fiber *f = kiln_calloc(1, sizeof *f);
    f->sched = s;
    f->map_size = s->stack_size + page;
    f->map = mmap(NULL, f->map_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (f->map == MAP_FAILED)
        kiln_fatal("out of memory: fiber stack");
    /* Stacks grow down: the guard page is the lowest one. */
    if (mprotect(f->map, page, PROT_NONE) != 0)
        kiln_fatal("cannot protect a fiber's guard page");
    f->stack = f->map + page;
    f->stack_size = s->stack_size;
#ifdef KILN_FIBER_ASM
    /* A frame for kiln__fiber_switch to "return" through: zeroed saved
     * registers, then fiber_start as the return address, then a null
     * return address for fiber_start, so that its frame is aligned as if
     * it had been called (16 bytes at the call). */
    void **top = (void **)(f->stack + f->stack_size);
#if defined(__x86_64__)
    top -= 2;
    top[1] = NULL;                    /* fiber_start's return address */
    top[0] = (void *)fiber_start;     /* ret target */
    top -= SAVED_WORDS;
    memset(top, 0, SAVED_WORDS * sizeof *top);
#else /* AArch64: 160-byte frame, x30 (lr) at offset 88 */
    top -= 160 / sizeof *top;
    memset(top, 0, 160);
    top[88 / sizeof *top] = (void *)fiber_start;
#endif
    f->sp = top;
#else
    if (getcontext(&f->ctx) != 0)
        kiln_fatal("getcontext failed");
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = f->stack_size;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, fiber_main, 0);
#endif
    return f;
}

/* From the loop's context into f, until f parks or finishes. Returns true
 * when it finished (and was recycled). */
static bool switch_in(struct kiln_fibers *s, struct kiln_fiber *f)
{
    s->current = f;
#ifdef KILN_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, f->stack, f->stack_size);
#endif
#ifdef KILN_FIBER_ASM
    kiln__fiber_switch(&s->loop_sp, f->sp);
#else
    if (swapcontext(&s->loop_ctx, &f->ctx) != 0)
        kiln_fatal("swapcontext failed");
#endif
#ifdef KILN_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    s->current = NULL;
    if (!f->finished)
        return false;
    s->alive--;
    f->fn = NULL;
    f->done = NULL;
    f->arg = NULL;
    if (s->nfree < KEEP_FREE) {
        f->next = s->free;
        s->free = f;
        s->nfree++;
    } else {
        fiber_unmap(f);
    }
    return true;
}

/* From the running fiber back to the loop's context. */
static void switch_out(struct kiln_fiber *f)
{
    struct kiln_fibers *s = f->sched;
#ifdef KILN_ASAN
    __sanitizer_start_switch_fiber(&f->fake_stack, s->loop_stack, s->loop_stack_size);
#endif
#ifdef KILN_FIBER_ASM
    kiln__fiber_switch(&f->sp, s->loop_sp);
#else
    if (swapcontext(&f->ctx, &s->loop_ctx) != 0)
        kiln_fatal("swapcontext failed");
#endif
#ifdef KILN_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, &s->loop_stack, &s->loop_stack_size);
#endif
}

bool kiln_fiber_spawn(struct kiln_fibers *s, void (*fn)(void *arg), void (*done)(void *arg),
                      void *arg)
{
    struct kiln_fiber *f = s->free;
    if (f) {
        s->free = f->next;
        s->nfree--;
    } else {
        f = fiber_new(s);
    }
    f->next = NULL;
    f->fn = fn;
    f->done = done;
    f->abortable = false;     /* fibers are reused from the free list */
    f->arg = arg;
    f->finished = f->parked = f->ready = false;
    s->alive++;
    return switch_in(s, f);
}

struct kiln_fiber *kiln_fiber_self(void)
{
    struct kiln_fibers *s = sched_of_thread;
    return s ? s->current : NULL;
}

uv_loop_t *kiln_fiber_loop(void)
{
    struct kiln_fibers *s = sched_of_thread;
    return s ? s->loop : NULL;
}

void kiln_fiber_park(void)
{
    struct kiln_fiber *f = kiln_fiber_self();
    if (!f)
        kiln_fatal("kiln_fiber_park outside a fiber");
    f->parked = true;
    switch_out(f);
}

void kiln_fiber_wake(struct kiln_fiber *f)
{
    struct kiln_fibers *s = f->sched;
    if (!f->parked || f->ready)
        kiln_fatal("kiln_fiber_wake on a fiber that is not parked");
    f->parked = false;
    f->ready = true;
    f->next = NULL;
    *s->ready_tail = f;
    s->ready_tail = &f->next;
    if (!s->scheduled) {
        s->scheduled = true;
        uv_idle_start(&s->idle, on_idle);
        uv_check_start(&s->check, on_check);
    }
}

static void run_ready(struct kiln_fibers *s)
{
    /* Fibers woken while these run wait for the next round: a fiber that
     * keeps waking another cannot starve the loop's I/O. */
    struct kiln_fiber *f = s->ready_head;
    s->ready_head = NULL;
    s->ready_tail = &s->ready_head;
    while (f) {
        struct kiln_fiber *next = f->next;
        void (*done)(void *) = f->done;
        void *arg = f->arg;
        f->ready = false;
        if (switch_in(s, f) && done)
            done(arg);
        f = next;
    }
    if (!s->ready_head) {
        s->scheduled = false;
        uv_idle_stop(&s->idle);
        uv_check_stop(&s->check);
    }
}

/* ---- waiting for a socket ---- */

struct kiln_fdwatch {
    uv_poll_t poll;
    uv_timer_t timer;
    struct kiln_fiber *waiter;
    struct kiln_fdwatch *abort_next;   /* in abortable_waits while waiting */
    int result;
    int events;                 /* UV_* the poll watches while active */
    int closed;                 /* handles whose close callback ran */
};

static void watch_wake(struct kiln_fdwatch *w, int result)
{
    struct kiln_fiber *f = w->waiter;
    w->waiter = NULL;
    w->result = result;
    uv_timer_stop(&w->timer);
    if (f)
        kiln_fiber_wake(f);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct kiln_fdwatch *w = h->data;
    (void)events;
    if (!w->waiter) {
        /* Ready with nobody waiting: stop until someone waits again. */
        uv_poll_stop(h);
        return;
    }
    /* An error counts as ready: the caller's next I/O call reports it. */
    (void)status;
    watch_wake(w, 0);
}

static void on_watch_timer(uv_timer_t *h)
{
    struct kiln_fdwatch *w = h->data;
    uv_poll_stop(&w->poll);
    watch_wake(w, KILN_ETIMEDOUT);
}

/* Readable (and left so) while kiln_wait_abort(true) holds. */
static int abort_fd = -1;
static atomic_bool aborting;
static pthread_once_t abort_once = PTHREAD_ONCE_INIT;
static _Thread_local bool abortable;

static void abort_init(void)
{
    abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void kiln_wait_abortable(void)
{
    struct kiln_fibers *s = sched_of_thread;
    if (s && s->current) {
        s->current->abortable = true;
        return;
    }
    pthread_once(&abort_once, abort_init);
    abortable = true;
}

void kiln_fibers_abort_waits(struct kiln_fibers *s)
{
    s->aborting = true;
    struct kiln_fdwatch *w;
    while ((w = s->abortable_waits)) {
        s->abortable_waits = w->abort_next;
        w->abort_next = NULL;
        uv_poll_stop(&w->poll);
        watch_wake(w, KILN_ETIMEDOUT);
    }
}

static void abort_unlist(struct kiln_fibers *s, struct kiln_fdwatch *w)
{
    for (struct kiln_fdwatch **p = &s->abortable_waits; *p; p = &(*p)->abort_next)
        if (*p == w) {
            *p = w->abort_next;
            w->abort_next = NULL;
            return;
        }
}

void kiln_wait_abort(bool on)
{
    pthread_once(&abort_once, abort_init);
    if (abort_fd < 0 || atomic_exchange(&aborting, on) == on)
        return;
    uint64_t v = 1;
    ssize_t r = on ? write(abort_fd, &v, sizeof v) : read(abort_fd, &v, sizeof v);
    (void)r;    /* a full or empty counter is already what we want */
}

static int wait_poll(int fd, short events, uint64_t deadline)
{
    bool watch_abort = abortable && abort_fd >= 0;
    for (;;) {
        uint64_t now = kiln_now_ms();
        if (now >= deadline || (watch_abort && atomic_load(&aborting)))
            return KILN_ETIMEDOUT;
        struct pollfd p[2] = { { .fd = fd, .events = events },
                               { .fd = abort_fd, .events = POLLIN } };
        uint64_t left = deadline - now;
        int n = poll(p, watch_abort ? 2 : 1, left > 60000 ? 60000 : (int)left);
        if (n > 0 && watch_abort && p[1].revents)
            return KILN_ETIMEDOUT;
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return KILN_EIO;
    }
}

int kiln_wait_fd(struct kiln_fdwatch **watch, int fd, short events, uint64_t deadline)
{
    struct kiln_fibers *s = sched_of_thread;
    struct kiln_fiber *self = s ? s->current : NULL;
    if (!self)
        return wait_poll(fd, events, deadline);

    uint64_t now = kiln_now_ms();
    if (now >= deadline || (self->abortable && s->aborting))
        return KILN_ETIMEDOUT;
    struct kiln_fdwatch *w = *watch;
    if (!w) {
        w = kiln_calloc(1, sizeof *w);
        if (uv_poll_init_socket(s->loop, &w->poll, fd) != 0) {
            free(w);
            return KILN_EIO;
        }
        uv_timer_init(s->loop, &w->timer);
        w->poll.data = w->timer.data = w;
        *watch = w;
    }
    int uv_events = ((events & POLLIN) ? UV_READABLE : 0) | ((events & POLLOUT) ? UV_WRITABLE : 0);
    /* uv_poll_start always re-registers the fd (two epoll_ctl calls): only
     * when the events change. */
    if (!uv_is_active((uv_handle_t *)&w->poll) || w->events != uv_events) {
        if (uv_poll_start(&w->poll, uv_events, on_poll) != 0)
            return KILN_EIO;
        w->events = uv_events;
    }
    if (deadline != UINT64_MAX)
        uv_timer_start(&w->timer, on_watch_timer, deadline - now, 0);
    w->waiter = self;
    if (self->abortable) {
        w->abort_next = s->abortable_waits;
        s->abortable_waits = w;
    }
    kiln_fiber_park();
    if (self->abortable)
        abort_unlist(s, w);
    return w->result;
}

static void on_watch_closed(uv_handle_t *h)
{
    struct kiln_fdwatch *w = h->data;
    if (++w->closed == 2)
        free(w);
}

void kiln_fdwatch_close(struct kiln_fdwatch **watch)
{
    struct kiln_fdwatch *w = *watch;
    *watch = NULL;
    if (!w)
        return;
    /* Stopping takes the fd out of epoll at once, so the caller may close
     * it now; the handles' memory goes when libuv is done with them. */
    uv_poll_stop(&w->poll);
    if (w->waiter)
        watch_wake(w, KILN_EIO);
    uv_close((uv_handle_t *)&w->poll, on_watch_closed);
    uv_close((uv_handle_t *)&w->timer, on_watch_closed);
}
