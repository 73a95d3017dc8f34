/*
 * benchtool: small helper for bench/run.sh (loopback only, no dependencies).
 *
 *   benchtool freeport
 *       Print a TCP port on 127.0.0.1 that is free right now.
 *
 *   benchtool get HOST PORT PATH [TIMEOUT_MS]
 *       One keep-alive GET on a new connection (closed by us after the
 *       response, so the sizes are those wrk sees). Prints "STATUS HEADER_BYTES BODY_BYTES"
 *       on the first line and the body on the second. Exit 0 when a complete
 *       response arrived (any status), 1 otherwise.
 *
 *   benchtool hold HOST PORT PATH N [IN_FLIGHT] [TIMEOUT_S]
 *       Open N TCP connections (non-blocking connects, at most IN_FLIGHT
 *       (default 200) connecting at once so the listen backlog never
 *       overflows), send one keep-alive "GET PATH" on each and read the full
 *       response, then hold all of them open. Prints
 *           READY established=E failed=F seconds=S
 *       when every connection has finished its first request (or failed), then
 *       waits for SIGUSR1, SIGTERM or SIGINT (or 30 min), checks which
 *       connections the server closed meanwhile, prints
 *           RELEASED held=E still_open=O closed_by_peer=C unexpected_data=D
 *       closes them all and exits (0 when E == N, else 1).
 *       RLIMIT_NOFILE is raised to the hard limit first.
 *
 *   benchtool start PORT N [TIMEOUT_MS] -- CMD [ARG...]
 *       Start-to-ready, N times in a row: fork, and in the child (its own
 *       process group, SIGKILLed should benchtool die; stdout and stderr go to
 *       benchtool's stderr) read CLOCK_MONOTONIC right before execve(CMD) and
 *       pass it to the parent through a pipe. The parent tries a non-blocking
 *       connect to 127.0.0.1:PORT every ~100 us and, once connected, sends
 *       "GET /livez HTTP/1.1"; a "HTTP/1.1 200" response ends the sample
 *       (anything else: close, and try again). Then SIGTERM, and wait for the
 *       exit (SIGKILL after 10 s) before the next start. Per start it prints
 *           START i ready_ms=R listen_ms=L stop_ms=S attempts=A exit=E
 *                   minflt=F majflt=J cpu_ms=C
 *       (L: exec to the first accepted connect; S: SIGTERM to exit; E: the
 *       exit status, or "signalN"; F, J, C: page faults and user + system
 *       CPU time of the whole run, start to exit, all threads), then
 *           SUMMARY n=N median_ms=M min_ms=m max_ms=X children_cpu_ms=K
 *                   self_cpu_ms=B wall_ms=W
 *       (K: the commands' CPU time, all starts; B: benchtool's own; W: the
 *       whole run, wall clock)
 *       A start that gets no 200 within TIMEOUT_MS (default 10000), or whose
 *       command exits first, ends the whole run (exit 1). Something already
 *       answering on PORT before a start is an error too (exit 1).
 *       SIGINT/SIGTERM: the running command is stopped, exit 130/143.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RESP_MAX 8192
#define MAX_RETRIES 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int make_addr(const char *host, const char *port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    long p = strtol(port, NULL, 10);
    if (p < 1 || p > 65535) {
        fprintf(stderr, "benchtool: bad port %s\n", port);
        return -1;
    }
    sa->sin_port = htons((unsigned short)p);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "benchtool: bad IPv4 address %s\n", host);
        return -1;
    }
    return 0;
}

/* Returns: 1 complete, 0 need more, -1 malformed. Fills status, header and
 * body sizes when complete. */
static int parse_response(const char *buf, size_t len, int *status, size_t *hdr_len,
                          size_t *body_len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len >= RESP_MAX ? -1 : 0;
    size_t hl = (size_t)(end - buf) + 4;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    int st = atoi(buf + 9);
    long cl = -1;
    const char *p = memchr(buf, '\n', hl);
    while (p && p < buf + hl) {
        p++;
        if ((size_t)(buf + hl - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) {
            cl = strtol(p + 15, NULL, 10);
        }
        p = memchr(p, '\n', (size_t)(buf + hl - p));
    }
    if (cl < 0)
        cl = 0; /* our targets always send Content-Length; treat absence as empty */
    if (len < hl + (size_t)cl)
        return hl + (size_t)cl > RESP_MAX ? -1 : 0;
    *status = st;
    *hdr_len = hl;
    *body_len = (size_t)cl;
    return 1;
}

static int cmd_freeport(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("benchtool freeport");
        return 1;
    }
    printf("%u\n", ntohs(sa.sin_port));
    close(fd);
    return 0;
}

static int cmd_get(const char *host, const char *port, const char *path, int timeout_ms)
{
    struct sockaddr_in sa;
    if (make_addr(host, port, &sa) != 0)
        return 2;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 1;
    double deadline = now_s() + timeout_ms / 1000.0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS)
        return 1;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    if (poll(&pfd, 1, timeout_ms) != 1)
        return 1;
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err)
        return 1;
    char req[1024];
    int rl = snprintf(req, sizeof(req),
                      "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: kiln-bench\r\n\r\n",
                      path, host, port);
    if (write(fd, req, (size_t)rl) != rl)
        return 1;
    char buf[RESP_MAX];
    size_t len = 0;
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0)
            return 1;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, left) != 1)
            return 1;
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return 1;
        len += (size_t)n;
        int st;
        size_t hl, bl;
        int r = parse_response(buf, len, &st, &hl, &bl);
        if (r < 0)
            return 1;
        if (r == 1) {
            printf("%d %zu %zu\n", st, hl, bl);
            fwrite(buf + hl, 1, bl, stdout);
            printf("\n");
            close(fd);
            return 0;
        }
    }
}

enum { C_IDLE, C_CONNECTING, C_READING, C_DONE, C_FAILED };

struct conn {
    int fd;
    int state;
    int retries;
    size_t len;
    char *buf;
};

static struct conn *conns;
static int nconns;

static int cmd_hold(const char *host, const char *port, const char *path, int n,
                    int inflight_max, int timeout_s)
{
    struct sockaddr_in sa;
    if (make_addr(host, port, &sa) != 0)
        return 2;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < (long)n + 16) {
        fprintf(stderr, "benchtool hold: open-file limit %ld is too low for %d connections\n",
                (long)rl.rlim_cur, n);
        return 2;
    }

    /* Signals are taken with sigtimedwait later; block them now. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char req[1024];
    int reqlen = snprintf(req, sizeof(req),
                          "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: kiln-bench-hold\r\n\r\n",
                          path, host, port);

    conns = calloc((size_t)n, sizeof(*conns));
    nconns = n;
    int ep = epoll_create1(0);
    if (!conns || ep < 0) {
        perror("benchtool hold");
        return 2;
    }

    int *queue = malloc(sizeof(int) * (size_t)n * (MAX_RETRIES + 1));
    long qhead = 0, qtail = 0;
    for (int i = 0; i < n; i++) {
        conns[i].fd = -1;
        queue[qtail++] = i;
    }

    int inflight = 0, established = 0, failed = 0;
    int last_errno = 0;
    double t0 = now_s();
    double deadline = t0 + timeout_s;
    struct epoll_event evs[256];

#define FAIL_OR_RETRY(c, idx, e)                                                       \
    do {                                                                               \
        last_errno = (e);                                                              \
        epoll_ctl(ep, EPOLL_CTL_DEL, (c)->fd, NULL);                                   \
        close((c)->fd);                                                                \
        (c)->fd = -1;                                                                  \
        (c)->len = 0;                                                                  \
        inflight--;                                                                    \
        if (++(c)->retries > MAX_RETRIES) {                                            \
            (c)->state = C_FAILED;                                                     \
            free((c)->buf);                                                            \
            (c)->buf = NULL;                                                           \
            failed++;                                                                  \
        } else {                                                                       \
            (c)->state = C_IDLE;                                                       \
            queue[qtail++] = (idx);                                                    \
        }                                                                              \
    } while (0)

    while (established + failed < n) {
        if (now_s() > deadline) {
            fprintf(stderr, "benchtool hold: timed out after %d s\n", timeout_s);
            for (int i = 0; i < n; i++) {
                if (conns[i].state != C_DONE && conns[i].state != C_FAILED) {
                    if (conns[i].fd >= 0)
                        close(conns[i].fd);
                    conns[i].fd = -1;
                    conns[i].state = C_FAILED;
                    failed++;
                }
            }
            break;
        }
        while (inflight < inflight_max && qhead < qtail) {
            int i = queue[qhead++];
            struct conn *c = &conns[i];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c->fd < 0) {
                fprintf(stderr, "benchtool hold: socket: %s\n", strerror(errno));
                c->state = C_FAILED;
                failed++;
                continue;
            }
            if (!c->buf)
                c->buf = malloc(RESP_MAX);
            inflight++;
            c->state = C_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
                errno != EINPROGRESS) {
                int e = errno;
                close(c->fd);
                c->fd = -1;
                inflight--;
                last_errno = e;
                if (++c->retries > MAX_RETRIES) {
                    c->state = C_FAILED;
                    failed++;
                } else {
                    c->state = C_IDLE;
                    queue[qtail++] = i;
                }
                continue;
            }
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        }
        int k = epoll_wait(ep, evs, 256, 200);
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            struct conn *c = &conns[i];
            if (c->state == C_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    FAIL_OR_RETRY(c, i, err);
                    continue;
                }
                if (write(c->fd, req, (size_t)reqlen) != reqlen) {
                    FAIL_OR_RETRY(c, i, errno);
                    continue;
                }
                c->state = C_READING;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            } else if (c->state == C_READING) {
                ssize_t r = read(c->fd, c->buf + c->len, RESP_MAX - c->len);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (r <= 0) {
                    FAIL_OR_RETRY(c, i, r == 0 ? ECONNRESET : errno);
                    continue;
                }
                c->len += (size_t)r;
                int st;
                size_t hl, bl;
                int pr = parse_response(c->buf, c->len, &st, &hl, &bl);
                if (pr == 0)
                    continue;
                if (pr < 0 || st != 200) {
                    if (pr > 0)
                        fprintf(stderr, "benchtool hold: got status %d\n", st);
                    FAIL_OR_RETRY(c, i, EPROTO);
                    continue;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                free(c->buf);
                c->buf = NULL;
                c->state = C_DONE;
                inflight--;
                established++;
            }
        }
    }
    if (failed)
        fprintf(stderr, "benchtool hold: %d connections failed (last error: %s)\n", failed,
                strerror(last_errno));
    printf("READY established=%d failed=%d seconds=%.2f\n", established, failed, now_s() - t0);
    fflush(stdout);

    struct timespec wait = {.tv_sec = 1800};
    int sig = sigtimedwait(&sigs, NULL, &wait);
    (void)sig;

    int still_open = 0, closed = 0, unexpected = 0;
    for (int i = 0; i < n; i++) {
        if (conns[i].state != C_DONE)
            continue;
        char b[64];
        ssize_t r = recv(conns[i].fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            closed++;
        else if (r > 0)
            unexpected++;
        else
            still_open++;
    }
    printf("RELEASED held=%d still_open=%d closed_by_peer=%d unexpected_data=%d\n",
           established, still_open, closed, unexpected);
    fflush(stdout);
    for (int i = 0; i < n; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    return established == n ? 0 : 1;
}

/* ------------------------------------------------------------------ start -- */

static volatile sig_atomic_t start_signal;

static void on_start_signal(int sig)
{
    start_signal = sig;
}

static double mono_ms(void)
{
    return now_s() * 1000.0;
}

static void sleep_us(long us)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
    nanosleep(&ts, NULL); /* EINTR: the caller checks start_signal */
}

/* 1: something accepts connections on sa, 0: refused (nothing listens),
 * -1: could not tell within 1 s. */
static int port_answers(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    if (r != 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, 1000) != 1) {
            close(fd);
            return -1;
        }
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        r = err ? -1 : 0;
        errno = err;
    }
    int e = errno;
    close(fd);
    if (r == 0)
        return 1;
    return e == ECONNREFUSED ? 0 : -1;
}

/* Wait for pid to exit, up to timeout_ms, then SIGKILL it. Returns the
 * wait status (-1 when waitpid failed); fills ru (all its threads) when not
 * NULL. */
static int reap_ru(pid_t pid, int timeout_ms, struct rusage *ru)
{
    double deadline = mono_ms() + timeout_ms;
    int status = 0;
    struct rusage dummy;
    if (!ru)
        ru = &dummy;
    memset(ru, 0, sizeof(*ru));
    for (;;) {
        pid_t r = wait4(pid, &status, WNOHANG, ru);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (mono_ms() > deadline) {
            fprintf(stderr, "benchtool start: pid %d still running %d ms after SIGTERM; "
                            "sending SIGKILL\n", (int)pid, timeout_ms);
            kill(pid, SIGKILL);
            while (wait4(pid, &status, 0, ru) < 0 && errno == EINTR)
                ;
            return status;
        }
        sleep_us(1000);
    }
}

static int reap(pid_t pid, int timeout_ms)
{
    return reap_ru(pid, timeout_ms, NULL);
}

static void describe_status(int status, char *buf, size_t n)
{
    if (status == -1)
        snprintf(buf, n, "unknown");
    else if (WIFEXITED(status))
        snprintf(buf, n, "%d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "signal%d", WTERMSIG(status));
    else
        snprintf(buf, n, "status%d", status);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Stops the current child (if any) after a signal or failure. */
static void stop_child(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    reap(pid, 10000);
}

enum { P_IDLE, P_CONNECTING, P_READING };

static int cmd_start(const char *port, int n, int timeout_ms, char **cmd)
{
    struct sockaddr_in sa;
    if (make_addr("127.0.0.1", port, &sa) != 0)
        return 2;

    struct sigaction act;
    memset(&act, 0, sizeof(act));
    act.sa_handler = on_start_signal; /* no SA_RESTART: waits return EINTR */
    sigemptyset(&act.sa_mask);
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGHUP, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    char req[256];
    int reqlen = snprintf(req, sizeof(req),
                          "GET /livez HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n"
                          "User-Agent: kiln-bench-start\r\n\r\n", port);
    double *samples = calloc((size_t)n, sizeof(double));
    if (!samples)
        return 2;
    pid_t self = getpid();
    prctl(PR_SET_TIMERSLACK, 1UL); /* 100 us sleeps, not 150 */
    double t_begin = mono_ms(), children_cpu_ms = 0;

    for (int i = 1; i <= n; i++) {
        int a = port_answers(&sa);
        if (a != 0) {
            fprintf(stderr, "benchtool start: %s on 127.0.0.1:%s before start %d\n",
                    a > 0 ? "something already answers" : "cannot probe the port", port, i);
            return 1;
        }
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) != 0) {
            perror("benchtool start: pipe");
            return 1;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            perror("benchtool start: fork");
            return 1;
        }
        if (pid == 0) {
            /* Own process group (a Ctrl-C on the terminal reaches benchtool,
             * which stops the command); killed should benchtool die. */
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != self)
                _exit(127);
            signal(SIGPIPE, SIG_DFL); /* an ignored signal would stay ignored */
            dup2(2, 1);
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (write(pfd[1], &t, sizeof(t)) != (ssize_t)sizeof(t))
                _exit(127);
            execvp(cmd[0], cmd);
            int e = errno;
            if (write(pfd[1], &e, sizeof(e)) < 0)
                _exit(127);
            _exit(127);
        }
        close(pfd[1]);
        struct timespec t_exec;
        ssize_t got;
        while ((got = read(pfd[0], &t_exec, sizeof(t_exec))) < 0 && errno == EINTR)
            ;
        int exec_errno = 0;
        ssize_t got2 = 0;
        if (got == (ssize_t)sizeof(t_exec))
            while ((got2 = read(pfd[0], &exec_errno, sizeof(exec_errno))) < 0 && errno == EINTR)
                ;
        close(pfd[0]);
        if (got != (ssize_t)sizeof(t_exec) || got2 > 0) {
            fprintf(stderr, "benchtool start: cannot run %s: %s\n", cmd[0],
                    got2 > 0 ? strerror(exec_errno) : "the child failed before exec");
            reap(pid, 1000);
            return 1;
        }
        double exec_ms = (double)t_exec.tv_sec * 1000.0 + (double)t_exec.tv_nsec / 1e6;
        double deadline = exec_ms + timeout_ms;
        double listen_ms = -1, ready_ms = -1;
        int state = P_IDLE, fd = -1, attempts = 0;
        size_t len = 0;
        char buf[RESP_MAX];

        while (ready_ms < 0) {
            if (start_signal) {
                if (fd >= 0)
                    close(fd);
                fprintf(stderr, "benchtool start: signal %d, stopping pid %d\n",
                        (int)start_signal, (int)pid);
                stop_child(pid);
                return 128 + start_signal;
            }
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                char d[32];
                describe_status(status, d, sizeof(d));
                fprintf(stderr, "benchtool start: start %d: %s exited (status %s) before "
                                "GET /livez answered 200\n", i, cmd[0], d);
                if (fd >= 0)
                    close(fd);
                return 1;
            }
            if (mono_ms() > deadline) {
                fprintf(stderr, "benchtool start: start %d: no 200 on GET /livez within %d ms "
                                "(%d connect attempts, %s); stopping pid %d\n",
                        i, timeout_ms, attempts,
                        listen_ms < 0 ? "never accepted a connection" : "connections accepted",
                        (int)pid);
                if (fd >= 0)
                    close(fd);
                stop_child(pid);
                return 1;
            }
            if (state == P_IDLE) {
                fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                    perror("benchtool start: socket");
                    stop_child(pid);
                    return 1;
                }
                attempts++;
                len = 0;
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                    state = P_CONNECTING; /* writable at once; handled below */
                } else if (errno == EINPROGRESS) {
                    state = P_CONNECTING;
                } else {
                    close(fd);
                    fd = -1;
                    sleep_us(100);
                    continue;
                }
            }
            if (state == P_CONNECTING) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                int r = poll(&p, 1, 1);
                if (r == 0 || (r < 0 && errno == EINTR))
                    continue;
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (r < 0 || err) {
                    close(fd);
                    fd = -1;
                    state = P_IDLE;
                    sleep_us(100);
                    continue;
                }
                if (listen_ms < 0)
                    listen_ms = mono_ms();
                if (write(fd, req, (size_t)reqlen) != reqlen) {
                    close(fd);
                    fd = -1;
                    state = P_IDLE;
                    sleep_us(100);
                    continue;
                }
                state = P_READING;
            }
            if (state == P_READING) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int r = poll(&p, 1, 1);
                if (r == 0 || (r < 0 && errno == EINTR))
                    continue;
                ssize_t k = r < 0 ? -1 : read(fd, buf + len, sizeof(buf) - len);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                double t = mono_ms();
                int st = 0, pr = -1;
                size_t hl, bl;
                if (k > 0) {
                    len += (size_t)k;
                    pr = parse_response(buf, len, &st, &hl, &bl);
                    if (pr == 0)
                        continue;
                }
                close(fd);
                fd = -1;
                state = P_IDLE;
                if (pr == 1 && st == 200 && memcmp(buf, "HTTP/1.1 200", 12) == 0) {
                    ready_ms = t;
                    break;
                }
                sleep_us(100); /* closed early, or not (yet) 200: try again */
            }
        }

        double sample = ready_ms - exec_ms;
        samples[i - 1] = sample;
        double t_term = mono_ms();
        kill(pid, SIGTERM);
        struct rusage ru;
        int status = reap_ru(pid, 10000, &ru);
        double stop_ms = mono_ms() - t_term;
        char d[32];
        describe_status(status, d, sizeof(d));
        double cpu_ms = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
                        (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
        children_cpu_ms += cpu_ms;
        printf("START %d ready_ms=%.3f listen_ms=%.3f stop_ms=%.1f attempts=%d exit=%s "
               "minflt=%ld majflt=%ld cpu_ms=%.1f\n", i, sample, listen_ms - exec_ms, stop_ms,
               attempts, d, ru.ru_minflt, ru.ru_majflt, cpu_ms);
        fflush(stdout);
        if (start_signal)
            return 128 + start_signal;
    }
    qsort(samples, (size_t)n, sizeof(double), cmp_double);
    double median = n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
    struct rusage own;
    getrusage(RUSAGE_SELF, &own);
    double self_cpu_ms = (double)(own.ru_utime.tv_sec + own.ru_stime.tv_sec) * 1000.0 +
                         (double)(own.ru_utime.tv_usec + own.ru_stime.tv_usec) / 1000.0;
    printf("SUMMARY n=%d median_ms=%.3f min_ms=%.3f max_ms=%.3f children_cpu_ms=%.1f "
           "self_cpu_ms=%.1f wall_ms=%.1f\n", n, median, samples[0], samples[n - 1],
           children_cpu_ms, self_cpu_ms, mono_ms() - t_begin);
    fflush(stdout);
    free(samples);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: benchtool freeport\n"
                    "       benchtool get HOST PORT PATH [TIMEOUT_MS]\n"
                    "       benchtool hold HOST PORT PATH N [IN_FLIGHT] [TIMEOUT_S]\n"
                    "       benchtool start PORT N [TIMEOUT_MS] -- CMD [ARG...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "freeport") == 0)
        return cmd_freeport();
    if (strcmp(argv[1], "get") == 0 && argc >= 5)
        return cmd_get(argv[2], argv[3], argv[4], argc > 5 ? atoi(argv[5]) : 2000);
    if (strcmp(argv[1], "hold") == 0 && argc >= 6) {
        int n = atoi(argv[5]);
        int inflight = argc > 6 ? atoi(argv[6]) : 200;
        int timeout = argc > 7 ? atoi(argv[7]) : 120;
        if (n < 1 || inflight < 1 || timeout < 1)
            usage();
        return cmd_hold(argv[2], argv[3], argv[4], n, inflight, timeout);
    }
    if (strcmp(argv[1], "start") == 0 && argc >= 6) {
        int sep = 4;
        while (sep < argc && strcmp(argv[sep], "--") != 0)
            sep++;
        if (sep > 5 || sep + 1 >= argc)
            usage();
        int n = atoi(argv[3]);
        int timeout = sep == 5 ? atoi(argv[4]) : 10000;
        if (n < 1 || timeout < 1)
            usage();
        return cmd_start(argv[2], n, timeout, argv + sep + 1);
    }
    usage();
    return 2;
}
