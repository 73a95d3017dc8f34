/* Outbound address checks for webhook deliveries; see egress.h. */
#include "core/egress.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dl.h"

#include "core/err.h"

/* A host name is at most 253 bytes (RFC 1035), one trailing dot aside. */
#define MAX_HOST 254

/* What the URL names, as libcurl will read it when it connects. */
struct target {
    char host[MAX_HOST + 1]; /* curl's host; an IPv6 literal without brackets */
    bool bracketed;          /* an IPv6 literal ("[…]" in the URL) */
    unsigned port;           /* the URL's, or the scheme's default */
};

/* ---- addresses ---------------------------------------------------------- */

/* IPv4 ranges that no public endpoint lives in; the first match names the
 * reason, so the narrower entries come before the ranges that hold them. */
static const struct {
    uint32_t net;
    unsigned len;
    const char *why;
} v4_refused[] = {
    { 0x00000000, 8, "a \"this network\" address (0.0.0.0/8)" },
    { 0x0a000000, 8, "a private address" },
    { 0x64400000, 10, "a shared address (100.64.0.0/10, carrier-grade NAT)" },
    { 0x7f000000, 8, "a loopback address" },
    { 0xa9fea9fe, 32, "the link-local instance metadata address" },
    { 0xa9fe0000, 16, "a link-local address" },
    { 0xac100000, 12, "a private address" },
    { 0xc0000000, 24, "an IETF protocol assignment (192.0.0.0/24)" },
    { 0xc0000200, 24, "a documentation address" },
    { 0xc0586300, 24, "a 6to4 relay anycast address" },
    { 0xc0a80000, 16, "a private address" },
    { 0xc6120000, 15, "a benchmarking address" },
    { 0xc6336400, 24, "a documentation address" },
    { 0xcb007100, 24, "a documentation address" },
    { 0xe0000000, 4, "a multicast address" },
    { 0xffffffff, 32, "the broadcast address" },
    { 0xf0000000, 4, "a reserved address (240.0.0.0/4)" },
};

/* NULL when a (host order) is public; otherwise why not. */
static const char *v4_reason(uint32_t a)
{
    for (size_t i = 0; i < sizeof v4_refused / sizeof v4_refused[0]; i++) {
        uint32_t mask = v4_refused[i].len ? ~0u << (32 - v4_refused[i].len) : 0;
        if ((a & mask) == v4_refused[i].net)
            return v4_refused[i].why;
    }
    return NULL;
}

enum embed { NONE, LAST32, SIX_TO_FOUR };

/* IPv6 ranges, in the same first-match order. The embedding ones are not
 * refused as such: the IPv4 address they carry is judged instead, since
 * that is where the packets end up (the kernel for mapped addresses, a
 * NAT64 gateway, a 6to4 relay, a sit tunnel for compatible ones). */
static const struct {
    uint8_t p[16];
    unsigned len;
    enum embed embed;
    const char *why;
} v6_ranges[] = {
    { { 0 }, 128, NONE, "the unspecified address" },
    { { [15] = 1 }, 128, NONE, "the loopback address" },
    { { [10] = 0xff, [11] = 0xff }, 96, LAST32, NULL },  /* IPv4-mapped */
    { { 0 }, 96, LAST32, NULL },                         /* IPv4-compatible */
    { { 0x00, 0x64, 0xff, 0x9b }, 96, LAST32, NULL },    /* NAT64, well-known */
    /* Local-use NAT64 (RFC 8215) is refused whole: where in it the IPv4
     * address sits depends on the prefix length the operator chose
     * (RFC 6052 section 2.2), so no one reading of it is safe. */
    { { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 }, 48, NONE, "a local-use NAT64 address" },
    { { 0x01, 0x00 }, 64, NONE, "a discard-only address (100::/64)" },
    { { 0x20, 0x01, 0x00, 0x00 }, 32, NONE, "a Teredo address" },
    { { 0x20, 0x01, 0x00, 0x02, 0x00, 0x00 }, 48, NONE, "a benchmarking address" },
    { { 0x20, 0x01, 0x00, 0x10 }, 28, NONE, "an ORCHID address" },
    { { 0x20, 0x01, 0x00, 0x20 }, 28, NONE, "an ORCHID address" },
    { { 0x20, 0x01, 0x0d, 0xb8 }, 32, NONE, "a documentation address" },
    { { 0x20, 0x02 }, 16, SIX_TO_FOUR, NULL },
    { { 0x3f, 0xff }, 20, NONE, "a documentation address" },
    { { 0xfc }, 7, NONE, "a unique local address" },
    { { 0xfe, 0x80 }, 10, NONE, "a link-local address" },
    { { 0xfe, 0xc0 }, 10, NONE, "a site-local address" },
    { { 0xff }, 8, NONE, "a multicast address" },
};

static bool v6_in(const uint8_t a[16], const uint8_t p[16], unsigned len)
{
    unsigned whole = len / 8, bits = len % 8;
    if (memcmp(a, p, whole) != 0)
        return false;
    if (bits == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (a[whole] & mask) == (p[whole] & mask);
}

/* What judge found: why the address is refused (NULL: it is not), its text,
 * and the IPv4 address it carries when that decided. */
struct verdict {
    const char *why;
    char addr[INET6_ADDRSTRLEN];
    bool embedded;
    char v4[INET_ADDRSTRLEN];
};

static void judge(const struct sockaddr *sa, struct verdict *v)
{
    memset(v, 0, sizeof *v);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, v->addr, sizeof v->addr);
        v->why = v4_reason(ntohl(in->sin_addr.s_addr));
        return;
    }
    if (sa->sa_family != AF_INET6) {
        snprintf(v->addr, sizeof v->addr, "(family %d)", sa->sa_family);
        v->why = "not an internet address";
        return;
    }
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    inet_ntop(AF_INET6, a, v->addr, sizeof v->addr);
    for (size_t i = 0; i < sizeof v6_ranges / sizeof v6_ranges[0]; i++) {
        if (!v6_in(a, v6_ranges[i].p, v6_ranges[i].len))
            continue;
        if (v6_ranges[i].embed == NONE) {
            v->why = v6_ranges[i].why;
            return;
        }
        const uint8_t *e = v6_ranges[i].embed == LAST32 ? a + 12 : a + 2;
        uint32_t v4 = (uint32_t)e[0] << 24 | (uint32_t)e[1] << 16 | (uint32_t)e[2] << 8 | e[3];
        v->why = v4_reason(v4);
        if (v->why) {
            v->embedded = true;
            inet_ntop(AF_INET, e, v->v4, sizeof v->v4);
        }
        return;
    }
    /* Everything public is in 2000::/3 (global unicast); the rest of the
     * space is unassigned or reserved by the IETF. */
    if ((a[0] & 0xe0) != 0x20)
        v->why = "a reserved address (outside 2000::/3)";
}

bool kiln_egress_addr_allowed(const struct sockaddr *sa, bool allow_private)
{
    if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
        return false;
    if (allow_private)
        return true;
    struct verdict v;
    judge(sa, &v);
    return v.why == NULL;
}

/* After a lead ("hook.example resolves to", "the host 0x7f.1 is"): "10.0.0.5,
 * a private address", or "64:ff9b::a00:5, which holds 10.0.0.5, a private
 * address". A literal host that already reads as its address is not
 * repeated ("the host 10.0.0.5 is a private address"). */
static void say_refused(char *why, size_t whylen, const char *lead, const char *host,
                        const struct verdict *v)
{
    if (!why || !whylen)
        return;
    if (host && strcmp(host, v->addr) == 0 && !v->embedded)
        snprintf(why, whylen, "%s %s", lead, v->why);
    else if (v->embedded)
        snprintf(why, whylen, "%s %s, which holds %s, %s", lead, v->addr, v->v4, v->why);
    else
        snprintf(why, whylen, "%s %s, %s", lead, v->addr, v->why);
}

/* ---- the URL ------------------------------------------------------------ */

static void say(char *why, size_t whylen, const char *s)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", s);
}

/* "localhost" and the names under it (RFC 6761 section 6.3), with or
 * without the root's trailing dot: libcurl answers them with loopback
 * without asking the resolver, so no lookup could show otherwise. */
static bool is_localhost(const char *host)
{
    size_t n = strlen(host);
    if (n && host[n - 1] == '.')
        n--;
    static const char name[] = "localhost";
    size_t ln = sizeof name - 1;
    if (n < ln || strncasecmp(host + n - ln, name, ln) != 0)
        return false;
    return n == ln || host[n - ln - 1] == '.';
}

/*
 * The address a host denotes by itself, without a lookup: an IPv6 literal,
 * or IPv4 in any form the C library reads as one. libcurl already rewrites
 * the odd IPv4 forms ("0x7f.1", "2130706433", "127.1", "0177.0.0.1") to
 * dotted quads, but it is loaded at run time and older versions did not;
 * getaddrinfo with AI_NUMERICHOST reads every inet_aton form, which is what
 * the resolver would turn such a name into, so both readings agree here.
 */
static bool literal_addr(const char *host, struct sockaddr_storage *ss)
{
    struct addrinfo hints = { .ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false;
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen < sizeof *ss ? res->ai_addrlen : sizeof *ss);
    freeaddrinfo(res);
    return true;
}

static bool has_part(CURLU *u, CURLUPart part)
{
    char *s = NULL;
    bool has = kiln_curl.curl_url_get(u, part, &s, 0) == CURLUE_OK && s;
    kiln_curl.curl_free(s);
    return has;
}

/*
 * The form checks, and the host and port as libcurl reads them (the same
 * parser, so the pin names the host libcurl will look up). Sentences never
 * quote the URL: its path and query may carry a secret token.
 */
static int parse(const char *url, const struct kiln_egress_policy *p, struct target *t, char *why,
                 size_t whylen)
{
    if (!url) {
        say(why, whylen, "no URL");
        return KILN_EINVAL;
    }
    size_t n = strnlen(url, KILN_EGRESS_MAX_URL + 1);
    if (n > KILN_EGRESS_MAX_URL) {
        if (why && whylen)
            snprintf(why, whylen, "the URL is longer than %d bytes", KILN_EGRESS_MAX_URL);
        return KILN_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f) {
            say(why, whylen, "the URL holds a control character or a space");
            return KILN_EINVAL;
        }
    }
    /* The scheme and both slashes spelled out: libcurl would also take
     * "http:/host" and "http:///host", which other parsers read as a path. */
    size_t skip;
    if (strncasecmp(url, "https://", 8) == 0) {
        skip = 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        if (!p->allow_http) {
            say(why, whylen, "the URL is http://; only https:// is allowed");
            return KILN_EINVAL;
        }
        skip = 7;
    } else {
        say(why, whylen, p->allow_http ? "the URL is not http:// or https://"
                                       : "the URL is not https://");
        return KILN_EINVAL;
    }
    if (strchr("/?#", url[skip])) { /* the NUL too */
        say(why, whylen, "the URL has no host");
        return KILN_EINVAL;
    }
    if (strchr(url, '#')) {
        say(why, whylen, "the URL holds a fragment (#)");
        return KILN_EINVAL;
    }

    if (kiln_dl_curl() != 0) {
        say(why, whylen, "cannot load " KILN_CURL_SONAME " to read the URL");
        return KILN_EIO;
    }
    CURLU *u = kiln_curl.curl_url();
    char *host = NULL, *port = NULL;
    int rc = KILN_EINVAL;
    if (!u) {
        say(why, whylen, "out of memory reading the URL");
        return KILN_EIO;
    }
    /* The flags libcurl parses CURLOPT_URL with (but guessing a scheme). */
    CURLUcode uc = kiln_curl.curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc == CURLUE_BAD_PORT_NUMBER) {
        say(why, whylen, "the URL's port is not a number from 1 to 65535");
        goto out;
    }
    if (uc == CURLUE_NO_HOST) {
        say(why, whylen, "the URL has no host");
        goto out;
    }
    if (uc != CURLUE_OK) {
        /* curl's words name the part ("Bad hostname"), never its text. */
        if (why && whylen)
            snprintf(why, whylen, "the URL is malformed (%s)", kiln_curl.curl_url_strerror(uc));
        goto out;
    }
    /* Even an empty one ("https://@host"): the receiver's logs, a proxy's,
     * would keep whatever stands there. */
    if (has_part(u, CURLUPART_USER) || has_part(u, CURLUPART_PASSWORD) ||
        has_part(u, CURLUPART_OPTIONS)) {
        say(why, whylen, "the URL holds a user name or password");
        goto out;
    }
    if (has_part(u, CURLUPART_ZONEID)) {
        say(why, whylen, "the URL's host has an IPv6 zone id");
        goto out;
    }
    if (kiln_curl.curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        say(why, whylen, "the URL has no host");
        goto out;
    }
    size_t hl = strlen(host);
    const char *h = host;
    t->bracketed = h[0] == '[';
    if (t->bracketed) {
        h++;
        hl -= 2;
    }
    if (hl > MAX_HOST || (hl == MAX_HOST && h[hl - 1] != '.')) {
        say(why, whylen, "the URL's host is longer than 253 bytes");
        goto out;
    }
    /* libcurl would convert such a name to punycode (IDNA) before its
     * lookup, and the pin, under the name as written, would not match it. */
    for (size_t i = 0; i < hl; i++) {
        if ((unsigned char)h[i] >= 0x80) {
            say(why, whylen, "the URL's host is not ASCII (write it in its xn-- form)");
            goto out;
        }
    }
    memcpy(t->host, h, hl);
    t->host[hl] = '\0';
    if (kiln_curl.curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        !port || (t->port = (unsigned)strtoul(port, NULL, 10)) == 0 || t->port > 65535) {
        say(why, whylen, "the URL's port is not a number from 1 to 65535");
        goto out;
    }
    rc = 0;
out:
    kiln_curl.curl_free(host);
    kiln_curl.curl_free(port);
    kiln_curl.curl_url_cleanup(u);
    return rc;
}

enum host_kind { NAME, LOOPBACK_NAME, LITERAL };

/* Judge what the host says without a lookup: a loopback name, or an
 * address literal (ss filled). 0, or KILN_EINVAL with the sentence. */
static int judge_host(const struct target *t, bool allow_private, enum host_kind *kind,
                      struct sockaddr_storage *ss, char *why, size_t whylen)
{
    char lead[MAX_HOST + 32];
    if (literal_addr(t->host, ss)) {
        *kind = LITERAL;
        if (allow_private)
            return 0;
        struct verdict v;
        judge((const struct sockaddr *)ss, &v);
        if (!v.why)
            return 0;
        snprintf(lead, sizeof lead, t->bracketed ? "the host [%s] is" : "the host %s is", t->host);
        say_refused(why, whylen, lead, t->host, &v);
        return KILN_EINVAL;
    }
    if (t->bracketed) { /* curl checked it; a C library that disagrees loses */
        say(why, whylen, "the URL's host is not an IPv6 address");
        return KILN_EINVAL;
    }
    if (is_localhost(t->host)) {
        *kind = LOOPBACK_NAME;
        if (allow_private)
            return 0;
        if (why && whylen)
            snprintf(why, whylen, "the host %s is a loopback name (localhost)", t->host);
        return KILN_EINVAL;
    }
    *kind = NAME;
    return 0;
}

int kiln_egress_check_url(const char *url, const struct kiln_egress_policy *p, char *why,
                          size_t whylen)
{
    struct target t;
    enum host_kind kind;
    struct sockaddr_storage ss;
    say(why, whylen, "");
    int rc = parse(url, p, &t, why, whylen);
    if (rc == 0)
        rc = judge_host(&t, p->allow_private, &kind, &ss, why, whylen);
    return rc;
}

/* "host:port:address" as CURLOPT_RESOLVE reads it, an IPv6 address in
 * brackets. An IPv6 literal host is written in brackets too: libcurl's
 * entry cannot name such a host (it splits at the first colon) and never
 * looks one up, and http_client knows to only hold the connection to the
 * address then. */
static int write_pin(char *pin, size_t pinlen, const struct target *t,
                     const struct sockaddr *sa, char *why, size_t whylen)
{
    char addr[INET6_ADDRSTRLEN];
    const void *src = sa->sa_family == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    inet_ntop(sa->sa_family, src, addr, sizeof addr);
    bool v6 = sa->sa_family == AF_INET6;
    int n = snprintf(pin, pinlen, "%s%s%s:%u:%s%s%s", t->bracketed ? "[" : "", t->host,
                     t->bracketed ? "]" : "", t->port, v6 ? "[" : "", addr, v6 ? "]" : "");
    if (n < 0 || (size_t)n >= pinlen) {
        say(why, whylen, "the pin does not fit its buffer");
        return KILN_EINVAL;
    }
    return 0;
}

int kiln_egress_resolve(const char *url, const struct kiln_egress_policy *p, char *pin,
                        size_t pinlen, char *why, size_t whylen)
{
    struct target t;
    enum host_kind kind;
    struct sockaddr_storage ss;
    say(why, whylen, "");
    if (pin && pinlen)
        pin[0] = '\0';
    int rc = parse(url, p, &t, why, whylen);
    if (rc == 0)
        rc = judge_host(&t, p->allow_private, &kind, &ss, why, whylen);
    if (rc != 0)
        return rc;
    if (!pin || !pinlen) {
        say(why, whylen, "no buffer for the pin");
        return KILN_EINVAL;
    }

    if (kind == LITERAL)
        return write_pin(pin, pinlen, &t, (const struct sockaddr *)&ss, why, whylen);
    if (kind == LOOPBACK_NAME) {
        /* Only with allow_private (judge_host). libcurl answers these names
         * with ::1 and 127.0.0.1 without a lookup; the pin keeps the one
         * every local server listens on. */
        struct sockaddr_in lo = { .sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        return write_pin(pin, pinlen, &t, (const struct sockaddr *)&lo, why, whylen);
    }

    /* Every family: a private AAAA record refuses the name even on a
     * machine with no IPv6 route today (AI_ADDRCONFIG would hide it). The
     * C library sorts reachable addresses first (RFC 6724), so the pin's,
     * the first, is one this machine can reach. */
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(t.host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        if (why && whylen)
            snprintf(why, whylen, "%s does not resolve (%s)", t.host,
                     gai ? gai_strerror(gai) : "no address");
        if (res)
            freeaddrinfo(res);
        return KILN_EIO;
    }
    const struct addrinfo *first = NULL;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (!p->allow_private) {
            struct verdict v;
            judge(ai->ai_addr, &v);
            if (v.why) {
                char lead[MAX_HOST + 32];
                snprintf(lead, sizeof lead, "%s resolves to", t.host);
                say_refused(why, whylen, lead, NULL, &v);
                freeaddrinfo(res);
                return KILN_EINVAL;
            }
        }
        if (!first)
            first = ai;
    }
    if (!first) {
        if (why && whylen)
            snprintf(why, whylen, "%s resolves to no internet address", t.host);
        freeaddrinfo(res);
        return KILN_EIO;
    }
    rc = write_pin(pin, pinlen, &t, first->ai_addr, why, whylen);
    freeaddrinfo(res);
    return rc;
}
