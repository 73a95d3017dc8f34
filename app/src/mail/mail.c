/* Outgoing mail; see mail.h. */
#include "mail/mail.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/dl.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"

static struct {
    const char *provider, *from, *smtp_url;
} M = { "log", NULL, NULL };

void kiln_mail_init(const struct kiln_config *cfg)
{
    M.provider = cfg->email_provider ? cfg->email_provider : "log";
    M.from = cfg->email_from;
    M.smtp_url = cfg->smtp_url;
}

bool kiln_mail_address_ok(const char *addr, size_t len)
{
    if (len < 3 || len > KILN_MAIL_ADDRESS_MAX)
        return false;
    const char *at = memchr(addr, '@', len);
    if (!at || at == addr || at == addr + len - 1 || memchr(at + 1, '@', len - (size_t)(at - addr) - 1))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)addr[i];
        /* Printable ASCII without what would end or reshape a header or an
         * SMTP command: spaces, quotes, brackets, commas, semicolons,
         * backslashes. Internationalised addresses would need SMTPUTF8. */
        if (c <= 0x20 || c >= 0x7f || strchr("\"(),:;<>[\\]", c))
            return false;
    }
    const char *domain = at + 1;
    size_t dlen = len - (size_t)(domain - addr);
    const char *dot = memchr(domain, '.', dlen);
    return dot && dot != domain && domain[dlen - 1] != '.' && (size_t)(at - addr) <= 64;
}

/* ---- the log provider ------------------------------------------------------ */

static int send_log(kiln_arena *a, const struct kiln_mail *m)
{
    const char *text = m->text;
    if (m->secret && *m->secret) {
        /* Every occurrence of the secret, so that a link or code never
         * reaches the log, wherever the template put it. */
        kiln_buf b;
        kiln_buf_init(&b, strlen(text) + 16);
        size_t sl = strlen(m->secret);
        for (const char *p = text, *hit; *p; p = hit + sl) {
            hit = strstr(p, m->secret);
            if (!hit) {
                kiln_buf_append_c(&b, p);
                break;
            }
            kiln_buf_append(&b, p, (size_t)(hit - p));
            kiln_buf_append_c(&b, "[redacted]");
        }
        text = kiln_arena_strndup(a, b.p, b.len);
        kiln_buf_free(&b);
    }
    kiln_log(KILN_LOG_INFO, "mail not sent (EMAIL_PROVIDER=log)", "to", m->to, "subject",
             m->subject, "text", text, NULL);
    return 0;
}

/* ---- SMTP ------------------------------------------------------------------- */

struct reader {
    const char *p;
    size_t left;
};

static size_t read_cb(char *buf, size_t size, size_t n, void *arg)
{
    struct reader *r = arg;
    size_t want = size * n;
    if (want > r->left)
        want = r->left;
    memcpy(buf, r->p, want);
    r->p += want;
    r->left -= want;
    return want;
}

/* The address inside EMAIL_FROM ("Name <a@b>" or "a@b"), for MAIL FROM. */
static const char *envelope_from(kiln_arena *a, const char *from)
{
    const char *lt = strrchr(from, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt)
        return kiln_arena_strndup(a, lt + 1, (size_t)(gt - lt - 1));
    return from;
}

/* The message as RFC 5322 text with CRLF line ends (libcurl does the SMTP
 * dot-stuffing). */
static char *message(kiln_arena *a, const struct kiln_mail *m)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    unsigned char rnd[16];
    char id[33];
    kiln_random_bytes(rnd, sizeof rnd);
    kiln_hex_encode(rnd, sizeof rnd, id);
    const char *from_addr = envelope_from(a, M.from);
    const char *domain = strchr(from_addr, '@');
    kiln_buf b;
    kiln_buf_init(&b, strlen(m->text) + 512);
    kiln_buf_printf(&b,
                    "From: %s\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\n"
                    "Message-ID: <%s%s>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\n",
                    M.from, m->to, m->subject, date, id, domain ? domain : "@kiln.invalid");
    for (const char *p = m->text; *p; p++) {
        if (*p == '\n')
            kiln_buf_append_c(&b, "\r\n");
        else if (*p != '\r')
            kiln_buf_append(&b, p, 1);
    }
    if (b.len < 2 || memcmp(b.p + b.len - 2, "\r\n", 2))
        kiln_buf_append_c(&b, "\r\n");
    char *out = kiln_arena_strndup(a, b.p, b.len);
    kiln_buf_free(&b);
    return out;
}

/* smtp:// to a loopback host may stay plain (a relay on the same host, the
 * tests' server); anywhere else it must upgrade with STARTTLS. */
static bool loopback_url(const char *url)
{
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    const char *at = strchr(host, '@');
    const char *slash = strchr(host, '/');
    if (at && (!slash || at < slash))
        host = at + 1;
    return !strncmp(host, "127.", 4) || !strncmp(host, "localhost", 9) ||
           !strncmp(host, "[::1]", 5);
}

static int send_smtp(kiln_arena *a, const struct kiln_mail *m, char *err, size_t errlen)
{
    if (kiln_http_client_init() != 0) {
        snprintf(err, errlen, "libcurl cannot be loaded");
        return KILN_EUNAVAILABLE;
    }
    CURL *h = kiln_curl.curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "curl_easy_init failed");
        return KILN_EUNAVAILABLE;
    }
    char *body = message(a, m);
    struct reader r = { body, strlen(body) };
    struct curl_slist *rcpt = kiln_curl.curl_slist_append(NULL, kiln_arena_sprintf(a, "<%s>", m->to));
    char errbuf[CURL_ERROR_SIZE] = "";
    bool smtps = !strncmp(M.smtp_url, "smtps://", 8);
    CURLcode c = CURLE_OK;
#define SET(opt, val) \
    if (c == CURLE_OK) c = kiln_curl.curl_easy_setopt(h, opt, val)
    SET(CURLOPT_URL, M.smtp_url);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    SET(CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    if (!smtps)
        SET(CURLOPT_USE_SSL, (long)(loopback_url(M.smtp_url) ? CURLUSESSL_TRY : CURLUSESSL_ALL));
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_MAIL_FROM, kiln_arena_sprintf(a, "<%s>", envelope_from(a, M.from)));
    SET(CURLOPT_MAIL_RCPT, rcpt);
    SET(CURLOPT_READFUNCTION, read_cb);
    SET(CURLOPT_READDATA, &r);
    SET(CURLOPT_UPLOAD, 1L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    SET(CURLOPT_TIMEOUT_MS, 30000L);
#undef SET
    if (c == CURLE_OK)
        c = kiln_curl.curl_easy_perform(h);
    long code = 0;
    kiln_curl.curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    kiln_curl.curl_slist_free_all(rcpt);
    kiln_curl.curl_easy_cleanup(h);
    if (c == CURLE_OK)
        return 0;
    /* The error buffer names hosts and replies, never the URL's password. */
    snprintf(err, errlen, "smtp: %s%s%s (reply %ld)", kiln_curl.curl_easy_strerror(c),
             errbuf[0] ? ": " : "", errbuf, code);
    /* A 5xx reply will not change: the address or the message is refused.
     * Anything else (no connection, a timeout, a 4xx) may pass later. */
    return code >= 500 && code < 600 ? KILN_EINVAL : KILN_EUNAVAILABLE;
}

int kiln_mail_send(kiln_arena *a, const struct kiln_mail *m, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!kiln_mail_address_ok(m->to, strlen(m->to))) {
        snprintf(err, errlen, "not a deliverable address");
        return KILN_EINVAL;
    }
    if (!strcmp(M.provider, "smtp") && M.smtp_url && M.from)
        return send_smtp(a, m, err, errlen);
    return send_log(a, m);
}
