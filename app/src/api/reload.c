/* Secret reload thread; see reload.h. */
#include "api/reload.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth/session.h"
#include "aws/aws.h"
#include "aws/secrets.h"
#include "core/log.h"

#define CREDENTIALS_REFRESH_S 60

static pthread_t thread;
static atomic_bool started;
static atomic_bool stopping;
static atomic_bool kicked;
static _Atomic int64_t last_kick;   /* seconds */
static const struct kiln_config *config;

void kiln_reload_block_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Variables applied while running. */
static bool applied_live(const char *name, size_t len)
{
    static const char *live[] = { "SECRET_KEY_BASE", "DB_USERNAME", "DB_PASSWORD",
                                  "VALKEY_USER", "VALKEY_PASSWORD", NULL };
    for (int i = 0; live[i]; i++)
        if (strlen(live[i]) == len && memcmp(live[i], name, len) == 0)
            return true;
    return false;
}

int kiln_reload_secrets(const struct kiln_config *cfg)
{
    kiln_buf changed;
    kiln_buf_init(&changed, 4096);
    char err[1024];
    int n = kiln_secret_vars_reload(&changed, err, sizeof err);
    if (n < 0) {
        /* The values in use stay: a failed read is not a reason to drop
         * working credentials. */
        kiln_log(KILN_LOG_ERROR, "secret reload failed; keeping the current values", "error",
                 err, NULL);
        kiln_buf_free(&changed);
        return -1;
    }
    if (n == 0) {
        kiln_log(KILN_LOG_DEBUG, "secrets unchanged", NULL);
        kiln_buf_free(&changed);
        return 0;
    }
    const char *names = changed.p;
    bool key_rotated = false;
    for (const char *p = names; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 15 && memcmp(p, "SECRET_KEY_BASE", 15) == 0) {
            char key[4096];
            if (!kiln_secret_vars_copy("SECRET_KEY_BASE", key, sizeof key)) {
                kiln_log(KILN_LOG_ERROR, "new SECRET_KEY_BASE too long; not applied", NULL);
            } else if (cfg->env == KILN_ENV_PRODUCTION &&
                       strlen(key) < KILN_SECRET_KEY_BASE_MIN) {
                kiln_log(KILN_LOG_ERROR, "new SECRET_KEY_BASE shorter than 64 bytes; not applied",
                         NULL);
            } else {
                kiln_auth_rotate_secret(key, strlen(key));
                key_rotated = true;
            }
            explicit_bzero(key, sizeof key);
        } else if (!applied_live(p, len)) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)len, p);
            kiln_log(KILN_LOG_WARNING, "secret changed; it applies at the next start", "variable",
                     name, NULL);
        }
        p += len;
        if (*p == ',')
            p++;
    }
    kiln_log(KILN_LOG_INFO, "secrets reloaded", "changed", names, "session_key",
             key_rotated ? "rotated (previous key still accepted)" : NULL, NULL);
    kiln_buf_free(&changed);
    return n;
}

static bool refresh_credentials_needed(const struct kiln_config *cfg)
{
    return cfg->db_iam_auth || cfg->valkey_iam_auth;
}

static void *run(void *arg)
{
    const struct kiln_config *cfg = arg;
    bool reload = cfg->secret_reload && kiln_secret_vars_count() > 0;
    bool refresh = refresh_credentials_needed(cfg);
    time_t next_reload = reload && cfg->secret_reload_interval_s
                             ? time(NULL) + cfg->secret_reload_interval_s : 0;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    while (!atomic_load(&stopping)) {
        time_t now = time(NULL);
        long wait = 3600;
        if (refresh)
            wait = CREDENTIALS_REFRESH_S;
        if (next_reload && next_reload - now < wait)
            wait = next_reload - now > 0 ? next_reload - now : 0;
        struct timespec ts = { .tv_sec = wait, .tv_nsec = 0 };
        int sig = sigtimedwait(&set, NULL, &ts);
        if (atomic_load(&stopping))
            break;
        if (refresh) {
            struct kiln_aws_creds c;
            char err[512];
            if (kiln_aws_credentials(&c, err, sizeof err) != 0)
                kiln_log(KILN_LOG_ERROR, "aws credentials refresh failed", "error", err, NULL);
            explicit_bzero(&c, sizeof c);
        }
        if (sig == SIGHUP && atomic_exchange(&kicked, false) && reload) {
            kiln_log(KILN_LOG_WARNING, "credentials refused; reading the secrets again now", NULL);
            kiln_reload_secrets(cfg);
        } else if (sig == SIGHUP) {
            if (reload)
                kiln_reload_secrets(cfg);
            else
                kiln_log(KILN_LOG_INFO, "SIGHUP ignored: ENABLE_SECRET_RELOAD is off or no "
                                        "*_SECRET_ARN variable is set", NULL);
        } else if (sig < 0 && errno != EAGAIN && errno != EINTR) {
            break;
        }
        if (next_reload && time(NULL) >= next_reload) {
            kiln_reload_secrets(cfg);
            next_reload = time(NULL) + cfg->secret_reload_interval_s;
        }
    }
    return NULL;
}

void kiln_reload_kick(const char *store)
{
    (void)store;
    const struct kiln_config *cfg = config;
    if (!atomic_load(&started) || !cfg || !cfg->secret_reload || kiln_secret_vars_count() == 0)
        return;
    int64_t now = (int64_t)time(NULL), last = atomic_load(&last_kick);
    if (now - last < KILN_RELOAD_KICK_S || !atomic_compare_exchange_strong(&last_kick, &last, now))
        return;
    atomic_store(&kicked, true);
    pthread_kill(thread, SIGHUP);
}

void kiln_reload_start(const struct kiln_config *cfg)
{
    config = cfg;
    atomic_store(&stopping, false);
    if (pthread_create(&thread, NULL, run, (void *)cfg) != 0) {
        kiln_log(KILN_LOG_ERROR, "cannot start the secret reload thread", NULL);
        return;
    }
    atomic_store(&started, true);
}

void kiln_reload_stop(void)
{
    if (!atomic_load(&started))
        return;
    atomic_store(&stopping, true);
    pthread_kill(thread, SIGHUP);
    pthread_join(thread, NULL);
    atomic_store(&started, false);
}
