/*
 * Unit tests for app/src/core/caps.c. Capabilities belong to threads, so
 * every case runs on a thread of its own and leaves the test process as it
 * was. The bind checks need a thread that has CAP_NET_BIND_SERVICE to begin
 * with (root, as the test machines run) and a kernel whose unprivileged
 * ports start above the port tried; otherwise they skip.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_util.h"

#include "core/caps.h"

#define LOW_PORT 1023

/* errno of binding 127.0.0.1:port, 0 on success. */
static int try_bind(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1, err = 0;
    if (fd < 0)
        return errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        err = errno;
    close(fd);
    return err;
}

static unsigned unprivileged_port_start(void)
{
    unsigned n = 1024;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "r");
    if (f) {
        if (fscanf(f, "%u", &n) != 1)
            n = 1024;
        fclose(f);
    }
    return n;
}

struct outcome {
    bool began, began_again;
    int bind_before, bind_after;
};

static void *begin_end(void *arg)
{
    struct outcome *o = arg;
    o->began = kiln_caps_bind_begin();
    /* EADDRINUSE (someone holds the port) still says the permission check
     * passed: the kernel checks the capability first. */
    o->bind_before = try_bind(LOW_PORT);
    kiln_caps_bind_end();
    o->bind_after = try_bind(LOW_PORT);
    o->began_again = kiln_caps_bind_begin();
    kiln_caps_bind_end();   /* twice: harmless */
    return NULL;
}

static void test_bind_begin_end(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    if (unprivileged_port_start() <= LOW_PORT)
        skip();
    struct outcome o;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, begin_end, &o), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(o.began);
    if (o.bind_before != 0 && o.bind_before != EADDRINUSE)
        fail_msg("bind with the capability: %s", strerror(o.bind_before));
    assert_int_equal(o.bind_after, EACCES);
    assert_false(o.began_again);
    /* This thread was not touched. */
    assert_true(kiln_caps_bind_begin());
}

static void *end_only(void *arg)
{
    int *err = arg;
    kiln_caps_bind_end();
    *err = try_bind(LOW_PORT);
    return NULL;
}

/* A thread started after kiln_caps_bind_end inherits the sets without it. */
static void *spawn_after_end(void *arg)
{
    pthread_t t;
    kiln_caps_bind_end();
    /* No cmocka assertion off the test's thread: they longjmp. */
    if (pthread_create(&t, NULL, end_only, arg) != 0) {
        *(int *)arg = -1;
        return NULL;
    }
    pthread_join(t, NULL);
    *(int *)arg = *(int *)arg == EACCES && !kiln_caps_bind_begin() ? EACCES : -1;
    return NULL;
}

static void test_children_inherit_the_loss(void **state)
{
    (void)state;
    if (geteuid() != 0 || unprivileged_port_start() <= LOW_PORT)
        skip();
    int err = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, spawn_after_end, &err), 0);
    pthread_join(t, NULL);
    assert_int_equal(err, EACCES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bind_begin_end),
        cmocka_unit_test(test_children_inherit_the_loss),
    };
    return cmocka_run_group_tests_name("core/caps", tests, NULL, NULL);
}
