/* Outgoing mail; see mail.h. */
#include "mail/mail.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aws/aws.h"
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

/* text with every occurrence of secret (NULL or "": none) replaced by
 * [redacted], so that a link or code never reaches the log, wherever the
 * template (or an error a server sent back) put it. In a. */
static const char *redacted(kiln_arena *a, const char *text, const char *secret)
{
    if (!secret || !*secret || !strstr(text, secret))
        return text;
    size_t sl = strlen(secret);
    kiln_buf b;
    /* Each occurrence grows by at most strlen("[redacted]"). */
    kiln_buf_init(&b, strlen(text) / sl * 10 + strlen(text) + 1);
    for (const char *p = text, *hit; *p; p = hit + sl) {
        hit = strstr(p, secret);
        if (!hit) {
            kiln_buf_append_c(&b, p);
            break;
        }
        kiln_buf_append(&b, p, (size_t)(hit - p));
        kiln_buf_append_c(&b, "[redacted]");
    }
    const char *out = kiln_arena_strndup(a, b.p ? b.p : "", b.len);
    kiln_buf_free(&b);
    return out;
}

static int send_log(kiln_arena *a, const struct kiln_mail *m)
{
    kiln_log(KILN_LOG_INFO, "mail not sent (EMAIL_PROVIDER=log)", "to", m->to, "subject",
             m->subject, "text", redacted(a, m->text, m->secret), NULL);
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

/* ---- Amazon SES --------------------------------------------------------------- */

#define SES_TIMEOUT_MS 15000
#define SES_MAX_ANSWER (64 * 1024)

/* &name=value, the value percent-encoded (application/x-www-form-urlencoded
 * as AWS's Query protocol reads it: RFC 3986 unreserved kept). */
static void form_field(kiln_buf *b, const char *name, const char *value)
{
    kiln_buf_printf(b, "&%s=", name);
    kiln_uri_encode(b, value, strlen(value), false);
}

/* The text of the first <tag>…</tag> of an SES answer into out (cap bytes,
 * control characters made spaces: it goes into a log line); "" when
 * absent. Errors: <ErrorResponse><Error><Type/><Code/><Message/></Error>. */
static void xml_text(const char *xml, const char *tag, char *out, size_t cap)
{
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    out[0] = '\0';
    const char *p = strstr(xml, open);
    if (!p)
        return;
    p += strlen(open);
    const char *e = strstr(p, close);
    if (!e)
        return;
    snprintf(out, cap, "%.*s", (int)(e - p), p);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
}

/* SES's verdict on a refused send: throttling (the sending rate or the
 * daily quota: 400 Throttling in the Query API; 429 in front of it) and
 * any 5xx pass later, so the job retries; everything else (MessageRejected:
 * an unverified identity, the sandbox; a suppressed address; a refused
 * signature or permission) will not until someone changes something, so
 * the job ends dead with the reason. */
static int ses_verdict(long status, const char *code)
{
    if (status >= 500 || status == 429 || !strcmp(code, "Throttling") ||
        !strcmp(code, "ThrottlingException"))
        return KILN_EUNAVAILABLE;
    return KILN_EINVAL;
}

/*
 * SES v1 SendEmail (Query protocol, Version 2010-12-01, signing name "ses")
 * to kiln_aws_endpoint("SES", "email"): AWS_ENDPOINT_URL_SES,
 * AWS_ENDPOINT_URL or https://email.<region>.amazonaws.com. The form body
 * holds the text (its link or code): wiped after sending and never logged.
 */
static int send_ses(kiln_arena *a, const struct kiln_mail *m, char *err, size_t errlen)
{
    const char *region = kiln_aws_region();
    char url[512];
    if (kiln_aws_endpoint("SES", "email", region, url, sizeof url - 1) != 0) {
        snprintf(err, errlen, "ses: no region (AWS_REGION) and no endpoint");
        return KILN_EINVAL;
    }
    strcat(url, "/");

    /* Percent-encoding at most triples each byte. */
    size_t max = 3 * (strlen(M.from) + strlen(m->to) + strlen(m->subject) + strlen(m->text)) + 512;
    kiln_buf body;
    kiln_buf_init(&body, max);
    kiln_buf_append_c(&body, "Action=SendEmail&Version=2010-12-01");
    form_field(&body, "Source", M.from);
    form_field(&body, "Destination.ToAddresses.member.1", m->to);
    form_field(&body, "Message.Subject.Data", m->subject);
    form_field(&body, "Message.Subject.Charset", "UTF-8");
    form_field(&body, "Message.Body.Text.Data", m->text);
    form_field(&body, "Message.Body.Text.Charset", "UTF-8");

    struct kiln_aws_call call = {
        .service = "ses", .region = region, .method = "POST", .url = url,
        .body = body.p, .body_len = body.len,
        .content_type = "application/x-www-form-urlencoded; charset=utf-8",
        .timeout_ms = SES_TIMEOUT_MS, .max_body = SES_MAX_ANSWER,
    };
    struct kiln_http_response res;
    char why[256];
    int rc = kiln_aws_request(&call, &res, why, sizeof why);
    explicit_bzero(body.p, body.len);
    kiln_buf_free(&body);
    if (rc) {
        /* No credentials yet, no connection, a timeout: all may pass. A
         * URL that cannot be parsed will not. */
        snprintf(err, errlen, "ses: %s", why);
        rc = rc == KILN_EINVAL ? KILN_EINVAL : KILN_EUNAVAILABLE;
    } else if (res.status != 200) {
        char code[64], msg[256];
        const char *xml = res.body.p ? res.body.p : "";
        xml_text(xml, "Code", code, sizeof code);
        xml_text(xml, "Message", msg, sizeof msg);
        /* SES's message may quote the request (an address, a parameter):
         * never the secret. */
        snprintf(err, errlen, "ses: SendEmail answered %ld%s%s%s%s", res.status,
                 code[0] ? " " : "", code, msg[0] ? ": " : "",
                 redacted(a, msg, m->secret));
        rc = ses_verdict(res.status, code);
    }
    kiln_http_response_free(&res);
    return rc;
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
    if (!strcmp(M.provider, "ses") && M.from)
        return send_ses(a, m, err, errlen);
    return send_log(a, m);
}
