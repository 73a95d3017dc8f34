/* Run-time loading of libpq, libcurl, SQLite and the accounts' libraries;
 * see dl.h. */
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
struct kiln_sqlite_api kiln_sqlite;
struct kiln_argon2_api kiln_argon2;
struct kiln_cbor_api kiln_cbor;
struct kiln_qrencode_api kiln_qrencode;

struct lib {
    const char *soname;
    const char *needed_for; /* the log line's words */
    pthread_once_t once;
    int rc;
};

static struct lib pq_lib = { KILN_PQ_SONAME, "PostgreSQL", PTHREAD_ONCE_INIT, KILN_EIO };
static struct lib curl_lib = { KILN_CURL_SONAME, "outbound HTTPS", PTHREAD_ONCE_INIT, KILN_EIO };
static struct lib sqlite_lib = { KILN_SQLITE_SONAME, "SQLite", PTHREAD_ONCE_INIT, KILN_EIO };
static struct lib argon2_lib = { KILN_ARGON2_SONAME, "password hashes", PTHREAD_ONCE_INIT,
                                 KILN_EIO };
static struct lib cbor_lib = { KILN_CBOR_SONAME, "passkeys (WebAuthn)", PTHREAD_ONCE_INIT,
                               KILN_EIO };
static struct lib qrencode_lib = { KILN_QRENCODE_SONAME, "TOTP QR codes", PTHREAD_ONCE_INIT,
                                   KILN_EIO };

/*
 * dlopen, then one dlsym per name into a table that is published only when
 * every name was found. RTLD_LAZY: the libraries' own calls are bound on
 * first use, so what Kiln never calls (LDAP, Kerberos, RTMP...) is never
 * resolved. RTLD_LOCAL: nothing of theirs is visible to later lookups.
 */
#define LOAD_SYM(f)                                                            \
    if (!why) {                                                                \
        void *sym = dlsym(h, #f);                                              \
        if (!sym)                                                              \
            why = #f " missing";                                               \
        /* POSIX guarantees object and function pointers convert here. */      \
        *(void **)&api.f = sym;                                                \
    }

#define LOADER(name, lib, table, FUNCS)                                        \
    static void name(void)                                                     \
    {                                                                          \
        const char *why = NULL;                                                \
        void *h = dlopen(lib.soname, RTLD_LAZY | RTLD_LOCAL);                  \
        __typeof__(table) api = { 0 };                                         \
        if (!h)                                                                \
            why = dlerror();                                                   \
        FUNCS(LOAD_SYM)                                                        \
        if (!why) {                                                            \
            table = api;                                                       \
            lib.rc = 0;                                                        \
            return;                                                            \
        }                                                                      \
        kiln_log(KILN_LOG_ERROR, "cannot load a shared library", "library",    \
                 lib.soname, "needed_for", lib.needed_for, "error", why, NULL); \
    }

LOADER(load_pq, pq_lib, kiln_pq, KILN_PQ_FUNCS)
LOADER(load_curl, curl_lib, kiln_curl, KILN_CURL_FUNCS)
LOADER(load_sqlite, sqlite_lib, kiln_sqlite, KILN_SQLITE_FUNCS)
LOADER(load_argon2, argon2_lib, kiln_argon2, KILN_ARGON2_FUNCS)
LOADER(load_cbor, cbor_lib, kiln_cbor, KILN_CBOR_FUNCS)
LOADER(load_qrencode, qrencode_lib, kiln_qrencode, KILN_QRENCODE_FUNCS)

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

int kiln_dl_sqlite(void)
{
    pthread_once(&sqlite_lib.once, load_sqlite);
    return sqlite_lib.rc;
}

int kiln_dl_argon2(void)
{
    pthread_once(&argon2_lib.once, load_argon2);
    return argon2_lib.rc;
}

int kiln_dl_cbor(void)
{
    pthread_once(&cbor_lib.once, load_cbor);
    return cbor_lib.rc;
}

int kiln_dl_qrencode(void)
{
    pthread_once(&qrencode_lib.once, load_qrencode);
    return qrencode_lib.rc;
}

int _gnutls_global_init_skip(void)
{
    return 1;
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
