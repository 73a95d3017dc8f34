/* Run-time loading of libpq and libcurl; see dl.h. */
#include "core/dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

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
