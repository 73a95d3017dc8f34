/*
 * eventtool: the change feed's load generator for bench/events.sh (loopback
 * only, no dependencies, one thread, epoll). It speaks HTTP/1.1 to
 * GET /api/v1/events itself: response head, chunked body, SSE lines.
 *
 *   eventtool hold HOST PORT PATH N COOKIES [IN_FLIGHT] [TIMEOUT_S]
 *       Open N event streams (GET PATH, Accept: text/event-stream, a
 *       `_backend_session` cookie taken in turn from the file COOKIES, one
 *       value a line), at most IN_FLIGHT (default 200) connecting at once.
 *       A stream counts as established once the answer is 200
 *       text/event-stream and its `: connected` comment has arrived. Then
 *       it holds them all, reading whatever comes (heartbeats), and prints
 *           READY established=E failed=F seconds=S
 *       and waits for SIGUSR1, SIGTERM or SIGINT (or 30 min); then prints
 *           RELEASED held=E still_open=O closed_by_peer=C heartbeats=H
 *                    events=V bytes=B
 *       (H, V, B: what the held streams received after READY), closes them
 *       and exits (0 when E == N, else 1). RLIMIT_NOFILE is raised to the
 *       hard limit first.
 *
 *   eventtool fanout HOST PORT PATH N COOKIE WHOST WPORT WRITES [GAP_MS]
 *                    [TIMEOUT_MS] [IN_FLIGHT]
 *       Open N event streams on HOST:PORT, all with the one session cookie
 *       COOKIE (one user, N tabs), wait until every one is established and
 *       250 ms more, then WRITES times, one after the other: POST
 *       /api/v1/notes with that cookie on one keep-alive connection to
 *       WHOST:WPORT (which may be another instance), and wait until every
 *       stream has received that note's event (its `row_id`), at most
 *       TIMEOUT_MS (default 5000), then GAP_MS (default 20) before the next.
 *       Every stream's i-th `notes.*` event is matched to the i-th write (the
 *       row_id must be the id the POST answered; a mismatch is counted).
 *       Times: from the moment the POST's response was read in full, to the
 *       first and to the last stream's receipt (the first can be negative: a
 *       stream may get the event before the writer gets its answer). Per
 *       write
 *           WRITE i status=S write_ms=W first_ms=F last_ms=L received=R
 *       and at the end
 *           SUMMARY writes=W subscribers=N complete=C last_p50_ms=.. last_p99_ms=..
 *                   last_max_ms=.. first_p50_ms=.. write_p50_ms=.. write_p99_ms=..
 *                   mismatched=M resets=R closed=X
 *       (p50/p99: nearest rank over the complete writes). Exit 0 when every
 *       write was answered 201 and reached every stream, else 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 4096
#define LINE_MAX_KEEP 1024
#define MAX_RETRIES 5
#define UUID_LEN 36

enum { S_IDLE, S_CONNECTING, S_HEAD, S_BODY, S_FAILED, S_CLOSED };
enum { CH_NONE, CH_SIZE, CH_DATA, CH_CRLF, CH_END };

struct stream {
    int fd;
    unsigned char state, chunk_state, connected, skip_line;
    unsigned char retries;
    size_t chunk_left;
    char *buf;   /* head, then the current SSE line (first LINE_MAX_KEEP bytes) */
    size_t len;
    unsigned events; /* notes.* events received */
    unsigned heartbeats, resets;
    unsigned long long bytes;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int make_addr(const char *host, const char *port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    long p = strtol(port, NULL, 10);
    if (p < 1 || p > 65535) {
        fprintf(stderr, "eventtool: bad port %s\n", port);
        return -1;
    }
    sa->sin_port = htons((unsigned short)p);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "eventtool: bad IPv4 address %s\n", host);
        return -1;
    }
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static long nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 30 : (long)rl.rlim_cur;
}

/* ------------------------------------------------------------- streams -- */

static struct stream *st;
static int nst;
static int ep;
static struct sockaddr_in sub_addr;
static char **cookies;
static int ncookies;
static const char *sub_host, *sub_port, *sub_path;

/* fan-out bookkeeping: recv[e * nst + k] = time stream k got event e */
static double *recv_at;
static char *recv_uuid;   /* UUID_LEN per (e, k) */
static int max_events;

static int established, failed, inflight, closed_after, last_errno;
static int *queue;
static long qhead, qtail;
static int held; /* after READY: count what arrives */
static unsigned long long held_bytes;
static unsigned held_heartbeats, held_events;

/* The string value of the first "KEY": in JSON text (spaces allowed
 * around the colon), or NULL. Good enough for the server's events. */
static const char *json_str(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p++ != ':')
        return NULL;
    while (*p == ' ')
        p++;
    return *p == '"' ? p + 1 : NULL;
}

static void on_line(int k, char *line, size_t n)
{
    struct stream *s = &st[k];
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = 0;
    if (n >= 11 && memcmp(line, ": connected", 11) == 0) {
        if (!s->connected) {
            s->connected = 1;
            established++;
            inflight--;
        }
        return;
    }
    if (n >= 11 && memcmp(line, ": heartbeat", 11) == 0) {
        s->heartbeats++;
        if (held)
            held_heartbeats++;
        return;
    }
    if (n >= 12 && memcmp(line, "event: reset", 12) == 0) {
        s->resets++;
        return;
    }
    if (n > 6 && memcmp(line, "data: ", 6) == 0) {
        const char *t = json_str(line, "type");
        if (!t || strncmp(t, "notes.", 6) != 0)
            return;
        double t_now = now_ms();
        if (held)
            held_events++;
        unsigned e = s->events++;
        if (recv_at && (int)e < max_events) {
            recv_at[(size_t)e * nst + k] = t_now;
            const char *r = json_str(line, "row_id");
            if (r && strlen(r) >= UUID_LEN)
                memcpy(recv_uuid + ((size_t)e * nst + k) * UUID_LEN, r, UUID_LEN);
        }
    }
}

/* SSE bytes (the de-chunked body) of stream k */
static void feed_sse(int k, const char *p, size_t n)
{
    struct stream *s = &st[k];
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            on_line(k, s->buf, s->len);
            s->len = 0;
            continue;
        }
        if (s->len < LINE_MAX_KEEP - 1)
            s->buf[s->len++] = c;
    }
}

/* body bytes as they come off the socket: chunked or not */
static void feed_body(int k, const char *p, size_t n)
{
    struct stream *s = &st[k];
    size_t i = 0;
    if (s->chunk_state == CH_NONE) {
        feed_sse(k, p, n);
        return;
    }
    while (i < n) {
        switch (s->chunk_state) {
        case CH_SIZE: {
            char c = p[i++];
            if (c == '\n') {
                if (s->chunk_left == 0) {
                    s->chunk_state = CH_END;
                    return;
                }
                s->chunk_state = CH_DATA;
            } else if (!s->skip_line) {
                int v = -1;
                if (c >= '0' && c <= '9')
                    v = c - '0';
                else if (c >= 'a' && c <= 'f')
                    v = c - 'a' + 10;
                else if (c >= 'A' && c <= 'F')
                    v = c - 'A' + 10;
                if (v >= 0)
                    s->chunk_left = s->chunk_left * 16 + (size_t)v;
                else
                    s->skip_line = 1; /* extension or CR */
            }
            break;
        }
        case CH_DATA: {
            size_t take = n - i < s->chunk_left ? n - i : s->chunk_left;
            feed_sse(k, p + i, take);
            i += take;
            s->chunk_left -= take;
            if (s->chunk_left == 0)
                s->chunk_state = CH_CRLF;
            break;
        }
        case CH_CRLF:
            if (p[i++] == '\n') {
                s->chunk_state = CH_SIZE;
                s->chunk_left = 0;
                s->skip_line = 0;
            }
            break;
        default:
            return;
        }
    }
}

static void stream_close(int k, int retry, int err)
{
    struct stream *s = &st[k];
    if (s->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
    last_errno = err;
    if (s->connected) {
        /* an established stream ended */
        established--;
        closed_after++;
        s->state = S_CLOSED;
        return;
    }
    inflight--;
    s->len = 0;
    if (retry && ++s->retries <= MAX_RETRIES) {
        s->state = S_IDLE;
        queue[qtail++] = k;
    } else {
        s->state = S_FAILED;
        failed++;
    }
}

static void start_connects(int inflight_max)
{
    while (inflight < inflight_max && qhead < qtail) {
        int k = queue[qhead++];
        struct stream *s = &st[k];
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0) {
            fprintf(stderr, "eventtool: socket: %s\n", strerror(errno));
            s->state = S_FAILED;
            failed++;
            continue;
        }
        inflight++;
        s->state = S_CONNECTING;
        s->len = 0;
        s->chunk_state = CH_NONE;
        s->chunk_left = 0;
        s->skip_line = 0;
        if (!s->buf)
            s->buf = malloc(HEAD_MAX);
        if (connect(s->fd, (struct sockaddr *)&sub_addr, sizeof(sub_addr)) != 0 &&
            errno != EINPROGRESS) {
            stream_close(k, 1, errno);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)k};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
}

static void stream_event(int k, uint32_t events)
{
    struct stream *s = &st[k];
    if (s->state == S_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            stream_close(k, 1, err);
            return;
        }
        char req[2048];
        const char *cookie = cookies[k % ncookies];
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n"
                         "Cookie: _backend_session=%s\r\nUser-Agent: kiln-bench-events\r\n\r\n",
                         sub_path, sub_host, sub_port, cookie);
        if (write(s->fd, req, (size_t)n) != n) {
            stream_close(k, 1, errno);
            return;
        }
        s->state = S_HEAD;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)k};
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        return;
    }
    (void)events;
    char buf[16384];
    for (;;) {
        ssize_t r = read(s->fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            stream_close(k, s->state == S_HEAD, r == 0 ? ECONNRESET : errno);
            return;
        }
        s->bytes += (unsigned long long)r;
        if (held)
            held_bytes += (unsigned long long)r;
        const char *p = buf;
        size_t n = (size_t)r;
        if (s->state == S_HEAD) {
            size_t take = n < HEAD_MAX - 1 - s->len ? n : HEAD_MAX - 1 - s->len;
            memcpy(s->buf + s->len, p, take);
            s->len += take;
            s->buf[s->len] = 0;
            char *end = strstr(s->buf, "\r\n\r\n");
            if (!end) {
                if (s->len >= HEAD_MAX - 1)
                    stream_close(k, 0, EPROTO);
                continue;
            }
            size_t hl = (size_t)(end - s->buf) + 4;
            int status = s->len > 12 ? atoi(s->buf + 9) : 0;
            if (status != 200 || !strcasestr(s->buf, "text/event-stream")) {
                static int told;
                if (told++ < 3)
                    fprintf(stderr, "eventtool: stream answered %d: %.200s\n", status, s->buf);
                stream_close(k, status == 503 || status == 429, EPROTO);
                return;
            }
            *end = 0;
            s->chunk_state = strcasestr(s->buf, "\r\ntransfer-encoding: chunked") ? CH_SIZE : CH_NONE;
            *end = '\r';
            /* body bytes that came with the head */
            size_t rest_in_buf = s->len - hl;
            size_t rest_total = rest_in_buf + (n - take);
            char tmp[HEAD_MAX + sizeof(buf)];
            memcpy(tmp, s->buf + hl, rest_in_buf);
            memcpy(tmp + rest_in_buf, p + take, n - take);
            s->len = 0;
            s->state = S_BODY;
            feed_body(k, tmp, rest_total);
        } else {
            feed_body(k, p, n);
        }
        if (s->chunk_state == CH_END) {
            stream_close(k, 0, 0);
            return;
        }
    }
}

static int load_cookies(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        /* not a file: the value itself */
        cookies = malloc(sizeof(char *));
        cookies[0] = strdup(path);
        ncookies = 1;
        return 0;
    }
    char line[1024];
    int cap = 16;
    cookies = malloc(sizeof(char *) * (size_t)cap);
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            continue;
        if (ncookies == cap) {
            cap *= 2;
            cookies = realloc(cookies, sizeof(char *) * (size_t)cap);
        }
        cookies[ncookies++] = strdup(line);
    }
    fclose(f);
    if (!ncookies) {
        fprintf(stderr, "eventtool: no cookies in %s\n", path);
        return -1;
    }
    return 0;
}

static int setup(const char *host, const char *port, const char *path, int n)
{
    if (make_addr(host, port, &sub_addr) != 0)
        return -1;
    sub_host = host;
    sub_port = port;
    sub_path = path;
    raise_nofile();
    if (nofile() < (long)n + 32) {
        fprintf(stderr, "eventtool: open-file limit %ld is too low for %d streams\n", nofile(), n);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    nst = n;
    st = calloc((size_t)n, sizeof(*st));
    queue = malloc(sizeof(int) * (size_t)n * (MAX_RETRIES + 2));
    ep = epoll_create1(0);
    if (!st || !queue || ep < 0) {
        perror("eventtool");
        return -1;
    }
    for (int k = 0; k < n; k++) {
        st[k].fd = -1;
        queue[qtail++] = k;
    }
    return 0;
}

/* Connect every stream; returns seconds taken, or < 0 on timeout. */
static double connect_all(int inflight_max, int timeout_s)
{
    struct epoll_event evs[512];
    double t0 = now_ms(), deadline = t0 + timeout_s * 1000.0;
    while (established + failed + closed_after < nst) {
        if (now_ms() > deadline) {
            fprintf(stderr, "eventtool: timed out after %d s with %d of %d established\n",
                    timeout_s, established, nst);
            for (int k = 0; k < nst; k++)
                if (!st[k].connected && st[k].state != S_FAILED) {
                    if (st[k].fd >= 0) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, st[k].fd, NULL);
                        close(st[k].fd);
                        st[k].fd = -1;
                    }
                    st[k].state = S_FAILED;
                    failed++;
                }
            break;
        }
        start_connects(inflight_max);
        int m = epoll_wait(ep, evs, 512, 100);
        for (int j = 0; j < m; j++)
            stream_event((int)evs[j].data.u32, evs[j].events);
    }
    if (failed)
        fprintf(stderr, "eventtool: %d streams failed (last error: %s)\n", failed,
                strerror(last_errno));
    return (now_ms() - t0) / 1000.0;
}

/* ---------------------------------------------------------------- hold -- */

static int cmd_hold(int argc, char **argv)
{
    const char *host = argv[2], *port = argv[3], *path = argv[4];
    int n = atoi(argv[5]);
    int inflight_max = argc > 7 ? atoi(argv[7]) : 200;
    int timeout_s = argc > 8 ? atoi(argv[8]) : 120;
    if (n < 1 || inflight_max < 1 || timeout_s < 1 || load_cookies(argv[6]) != 0)
        return 2;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    if (setup(host, port, path, n) != 0)
        return 2;
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK);
    double secs = connect_all(inflight_max, timeout_s);
    /* the handshake buffers are not needed any more except the line buffer */
    printf("READY established=%d failed=%d seconds=%.2f\n", established, failed, secs);
    fflush(stdout);
    held = 1;
    int held_n = established;
    int closed_before = closed_after;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    double deadline = now_ms() + 1800e3;
    int done = 0;
    struct epoll_event evs[512];
    while (!done && now_ms() < deadline) {
        int m = epoll_wait(ep, evs, 512, 1000);
        for (int j = 0; j < m; j++) {
            if (evs[j].data.u32 == UINT32_MAX) {
                done = 1;
                continue;
            }
            stream_event((int)evs[j].data.u32, evs[j].events);
        }
    }
    printf("RELEASED held=%d still_open=%d closed_by_peer=%d heartbeats=%u events=%u bytes=%llu\n",
           held_n, established, closed_after - closed_before, held_heartbeats, held_events,
           held_bytes);
    fflush(stdout);
    for (int k = 0; k < n; k++)
        if (st[k].fd >= 0)
            close(st[k].fd);
    return held_n == n ? 0 : 1;
}

/* -------------------------------------------------------------- fanout -- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p)
{
    if (n == 0)
        return -1;
    int rank = (int)((p / 100.0) * n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

struct writer {
    int fd;
    struct sockaddr_in addr;
    char req[4096];
    int reqlen;
    char resp[65536];
    size_t len;
};

static int writer_connect(struct writer *w)
{
    w->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (w->fd < 0 || connect(w->fd, (struct sockaddr *)&w->addr, sizeof(w->addr)) != 0) {
        perror("eventtool: connect (writer)");
        return -1;
    }
    int one = 1;
    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = UINT32_MAX - 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, w->fd, &ev);
    return 0;
}

/* 1: complete (status, uuid filled); 0: more; -1: closed/malformed */
static int writer_read(struct writer *w, int *status, char *uuid)
{
    for (;;) {
        ssize_t r = read(w->fd, w->resp + w->len, sizeof(w->resp) - 1 - w->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0)
            return -1;
        w->len += (size_t)r;
        if (w->len >= sizeof(w->resp) - 1)
            return -1;
    }
    w->resp[w->len] = 0;
    char *end = strstr(w->resp, "\r\n\r\n");
    if (!end)
        return 0;
    size_t hl = (size_t)(end - w->resp) + 4;
    const char *cl = strcasestr(w->resp, "\r\ncontent-length:");
    long clen = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
    if (w->len < hl + (size_t)clen)
        return 0;
    *status = atoi(w->resp + 9);
    uuid[0] = 0;
    const char *id = json_str(w->resp + hl, "id");
    if (id && strlen(id) >= UUID_LEN) {
        memcpy(uuid, id, UUID_LEN);
        uuid[UUID_LEN] = 0;
    }
    if (*status != 201)
        fprintf(stderr, "eventtool: POST answered %d: %.300s\n", *status, w->resp + hl);
    memmove(w->resp, w->resp + hl + clen, w->len - hl - (size_t)clen);
    w->len -= hl + (size_t)clen;
    return 1;
}

static int cmd_fanout(int argc, char **argv)
{
    const char *host = argv[2], *port = argv[3], *path = argv[4];
    int n = atoi(argv[5]);
    const char *cookie = argv[6];
    const char *whost = argv[7], *wport = argv[8];
    int writes = atoi(argv[9]);
    int gap_ms = argc > 10 ? atoi(argv[10]) : 20;
    int timeout_ms = argc > 11 ? atoi(argv[11]) : 5000;
    int inflight_max = argc > 12 ? atoi(argv[12]) : 200;
    if (n < 1 || writes < 1 || gap_ms < 0 || timeout_ms < 1 || inflight_max < 1)
        return 2;
    cookies = malloc(sizeof(char *));
    cookies[0] = strdup(cookie);
    ncookies = 1;
    if (setup(host, port, path, n) != 0)
        return 2;
    max_events = writes;
    recv_at = calloc((size_t)writes * (size_t)n, sizeof(double));
    recv_uuid = calloc((size_t)writes * (size_t)n, UUID_LEN);
    double *resp_at = calloc((size_t)writes, sizeof(double));
    double *sent_at = calloc((size_t)writes, sizeof(double));
    char (*uuids)[UUID_LEN + 1] = calloc((size_t)writes, UUID_LEN + 1);
    int *statuses = calloc((size_t)writes, sizeof(int));
    double *lasts = calloc((size_t)writes, sizeof(double));
    double *firsts = calloc((size_t)writes, sizeof(double));
    double *wlat = calloc((size_t)writes, sizeof(double));
    if (!recv_at || !recv_uuid || !resp_at || !uuids || !statuses || !lasts || !firsts || !wlat) {
        perror("eventtool");
        return 2;
    }
    double secs = connect_all(inflight_max, 120);
    printf("CONNECTED established=%d failed=%d seconds=%.2f\n", established, failed, secs);
    fflush(stdout);
    if (established < n)
        return 1;

    struct writer w = {.fd = -1, .len = 0};
    if (make_addr(whost, wport, &w.addr) != 0 || writer_connect(&w) != 0)
        return 2;
    const char *body = "{\"title\":\"Fan-out note\",\"content\":\"A note written by bench/events.sh; "
                       "every subscriber of its owner gets it.\"}";
    w.reqlen = snprintf(w.req, sizeof(w.req),
                        "POST /api/v1/notes HTTP/1.1\r\nHost: %s:%s\r\nCookie: _backend_session=%s\r\n"
                        "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                        "User-Agent: kiln-bench-events\r\n\r\n%s",
                        whost, wport, cookie, strlen(body), body);

    struct epoll_event evs[512];
    /* let the streams settle (the server may still be registering them) */
    double settle = now_ms() + 250;
    while (now_ms() < settle) {
        int m = epoll_wait(ep, evs, 512, 50);
        for (int j = 0; j < m; j++)
            if (evs[j].data.u32 < (uint32_t)n)
                stream_event((int)evs[j].data.u32, evs[j].events);
    }
    /* events that arrived before the first write are not ours */
    unsigned base_events = 0;
    for (int k = 0; k < n; k++)
        if (st[k].events > base_events)
            base_events = st[k].events;
    if (base_events) {
        fprintf(stderr, "eventtool: %u notes events arrived before the first write\n", base_events);
        return 2;
    }

    int complete = 0, ok = 1;
    for (int e = 0; e < writes; e++) {
        sent_at[e] = now_ms();
        if (write(w.fd, w.req, (size_t)w.reqlen) != w.reqlen) {
            perror("eventtool: write (writer)");
            return 1;
        }
        int have_resp = 0;
        double deadline = sent_at[e] + timeout_ms;
        for (;;) {
            int got = 0;
            for (int k = 0; k < n; k++)
                if (st[k].events > (unsigned)e)
                    got++;
            if (have_resp && got == n)
                break;
            double left = deadline - now_ms();
            if (left <= 0)
                break;
            int m = epoll_wait(ep, evs, 512, (int)left + 1);
            for (int j = 0; j < m; j++) {
                uint32_t id = evs[j].data.u32;
                if (id == UINT32_MAX - 1) {
                    int r = writer_read(&w, &statuses[e], uuids[e]);
                    if (r == 1) {
                        resp_at[e] = now_ms();
                        have_resp = 1;
                    } else if (r < 0) {
                        fprintf(stderr, "eventtool: the writer's connection closed\n");
                        return 1;
                    }
                } else {
                    stream_event((int)id, evs[j].events);
                }
            }
        }
        int got = 0;
        double first = 1e300, last = -1e300;
        for (int k = 0; k < n; k++) {
            if (st[k].events > (unsigned)e) {
                double t = recv_at[(size_t)e * n + k];
                got++;
                if (t < first)
                    first = t;
                if (t > last)
                    last = t;
            }
        }
        wlat[e] = have_resp ? resp_at[e] - sent_at[e] : -1;
        if (!have_resp || statuses[e] != 201)
            ok = 0;
        if (have_resp && got == n) {
            firsts[complete] = first - resp_at[e];
            lasts[complete] = last - resp_at[e];
            complete++;
            printf("WRITE %d status=%d write_ms=%.3f first_ms=%.3f last_ms=%.3f received=%d\n", e + 1,
                   statuses[e], wlat[e], first - resp_at[e], last - resp_at[e], got);
        } else {
            ok = 0;
            printf("WRITE %d status=%d write_ms=%.3f first_ms=- last_ms=- received=%d\n", e + 1,
                   have_resp ? statuses[e] : 0, wlat[e], got);
            /* the next write's events would be miscounted: stop here */
            writes = e + 1;
            break;
        }
        fflush(stdout);
        double until = now_ms() + gap_ms;
        while (now_ms() < until) {
            int m = epoll_wait(ep, evs, 512, (int)(until - now_ms()) + 1);
            for (int j = 0; j < m; j++)
                if (evs[j].data.u32 < (uint32_t)n)
                    stream_event((int)evs[j].data.u32, evs[j].events);
        }
    }
    int mismatched = 0;
    unsigned resets = 0;
    for (int e = 0; e < writes; e++)
        for (int k = 0; k < n; k++)
            if (st[k].events > (unsigned)e && uuids[e][0] &&
                memcmp(recv_uuid + ((size_t)e * n + k) * UUID_LEN, uuids[e], UUID_LEN) != 0)
                mismatched++;
    for (int k = 0; k < n; k++)
        resets += st[k].resets;
    double wsorted[writes];
    int nw = 0;
    for (int e = 0; e < writes; e++)
        if (wlat[e] >= 0)
            wsorted[nw++] = wlat[e];
    qsort(lasts, (size_t)complete, sizeof(double), cmp_double);
    qsort(firsts, (size_t)complete, sizeof(double), cmp_double);
    qsort(wsorted, (size_t)nw, sizeof(double), cmp_double);
    printf("SUMMARY writes=%d subscribers=%d complete=%d last_p50_ms=%.3f last_p99_ms=%.3f "
           "last_max_ms=%.3f first_p50_ms=%.3f write_p50_ms=%.3f write_p99_ms=%.3f "
           "mismatched=%d resets=%u closed=%d\n",
           writes, n, complete, pct(lasts, complete, 50), pct(lasts, complete, 99),
           complete ? lasts[complete - 1] : -1, pct(firsts, complete, 50), pct(wsorted, nw, 50),
           pct(wsorted, nw, 99), mismatched, resets, closed_after);
    fflush(stdout);
    for (int k = 0; k < n; k++)
        if (st[k].fd >= 0)
            close(st[k].fd);
    close(w.fd);
    return ok && complete == writes && !mismatched && !closed_after ? 0 : 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: eventtool hold HOST PORT PATH N COOKIES [IN_FLIGHT] [TIMEOUT_S]\n"
            "       eventtool fanout HOST PORT PATH N COOKIE WHOST WPORT WRITES [GAP_MS] "
            "[TIMEOUT_MS] [IN_FLIGHT]\n");
}

int main(int argc, char **argv)
{
    if (argc >= 7 && strcmp(argv[1], "hold") == 0)
        return cmd_hold(argc, argv);
    if (argc >= 10 && strcmp(argv[1], "fanout") == 0)
        return cmd_fanout(argc, argv);
    usage();
    return 2;
}
