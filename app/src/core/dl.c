/* Run-time loading of libpq and libcurl; see dl.h. */
#include "core/dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

struct kiln_pq_api kiln_pq;
struct kiln_curl_api kiln_curl;

struct lib {
    const char *soname;
    pthread_once_t once;
    int rc;
};

static struct lib pq_lib = { KILN_PQ_SONAME, PTHREAD_ONCE_INIT, KILN_EIO };
static struct lib curl_lib = { KILN_CURL_SONAME, PTHREAD_ONCE_INIT, KILN_EIO };

/* dlopen + one dlsym per name; *missing names the first symbol not found. */
static void *open_lib(const char *soname, const char **why)
{
    /* RTLD_LAZY: the libraries' own calls are bound on first use, so what
     * Kiln never calls (LDAP, Kerberos, RTMP...) is never resolved.
     * RTLD_LOCAL: nothing of theirs is visible to later lookups. */
    void *h = dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
    if (!h)
        *why = dlerror();
    return h;
}

#define LOAD_SYM(f)                                                            \
    if (ok) {                                                                  \
        void *sym = dlsym(h, #f);                                              \
        if (!sym) {                                                            \
            ok = false;                                                        \
            why = #f " missing";                                               \
        }                                                                      \
        /* POSIX guarantees object and function pointers convert here. */      \
        *(void **)&api.f = sym;                                                \
    }

static void load_pq(void)
{
    const char *why = NULL;
    void *h = open_lib(pq_lib.soname, &why);
    bool ok = h != NULL;
    struct kiln_pq_api api = { 0 };
    if (ok) {
        KILN_PQ_FUNCS(LOAD_SYM)
    }
    if (ok) {
        kiln_pq = api;
        pq_lib.rc = 0;
    } else {
        kiln_log(KILN_LOG_ERROR, "cannot load a library PostgreSQL needs", "library",
                 pq_lib.soname, "error", why ? why : "unknown", NULL);
    }
}

static void load_curl(void)
{
    const char *why = NULL;
    void *h = open_lib(curl_lib.soname, &why);
    bool ok = h != NULL;
    struct kiln_curl_api api = { 0 };
    if (ok) {
        KILN_CURL_FUNCS(LOAD_SYM)
    }
    if (ok) {
        kiln_curl = api;
        curl_lib.rc = 0;
    } else {
        kiln_log(KILN_LOG_ERROR, "cannot load a library outbound HTTPS needs", "library",
                 curl_lib.soname, "error", why ? why : "unknown", NULL);
    }
}

int kiln_dl_pq(void)
{
    pthread_once(&pq_lib.once, load_pq);
    return pq_lib.rc;
}

int kiln_dl_curl(void)
{
    pthread_once(&curl_lib.once, load_curl);
    return curl_lib.rc;
}

void kiln_dl_setup_env(void)
{
    setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 0);
}

static int pq_ready = -1;
static pthread_t pq_thread;
static bool pq_thread_started;

static void *pq_loader(void *arg)
{
    (void)arg;
    kiln_dl_pq();
    uint64_t one = 1;
    if (write(pq_ready, &one, sizeof one) != (ssize_t)sizeof one) {
        /* An eventfd write of 1 cannot fail short of a bug; waiters then
         * time out and kiln_dl_pq, already loaded, answers them. */
    }
    return NULL;
}

int kiln_dl_pq_background(void)
{
    if (pq_ready >= 0)
        return pq_ready;
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -1;
    pq_ready = fd;
    /* The loader never handles signals; the main thread does. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pq_thread_started = pthread_create(&pq_thread, NULL, pq_loader, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!pq_thread_started) {
        close(fd);
        pq_ready = -1;
    }
    return pq_ready;
}

int kiln_dl_pq_ready_fd(void)
{
    return pq_ready;
}

void kiln_dl_pq_join(void)
{
    if (pq_thread_started)
        pthread_join(pq_thread, NULL);
    pq_thread_started = false;
    if (pq_ready >= 0)
        close(pq_ready);
    pq_ready = -1;
}
