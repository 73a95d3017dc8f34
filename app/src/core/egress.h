/*
 * Outbound requests to addresses users choose (webhook endpoints): the
 * checks that keep them from reaching what only the instance can reach.
 *
 * - The URL: http or https only (https only unless allow_http), "scheme://"
 *   spelled out, a host, no user name or password (not even an empty
 *   one), at most KILN_EGRESS_MAX_URL bytes, no fragment (not even an
 *   empty "#"), no control characters or spaces, a port from 1 to 65535.
 *   The host: ASCII (an IDN in its xn-- form: libcurl would convert the
 *   name before its lookup, and the pin would not match it), at most 253
 *   bytes, no IPv6 zone id. It is read with libcurl's own URL parser, so
 *   it is the host libcurl will connect to.
 * - The address: the host is resolved once; every address it resolves to
 *   must be public, or the request is refused (a name that resolves to one
 *   public and one private address is refused: the resolver could hand out
 *   either; addresses of every family count, whether or not this machine
 *   has a route for it). Refused unless allow_private: loopback, "this
 *   network" (0.0.0.0/8), private (10/8, 172.16/12, 192.168/16), shared (100.64/10),
 *   link-local (169.254/16, the instance metadata address among them),
 *   IETF protocol assignments (192.0.0/24), documentation ranges,
 *   benchmarking (198.18/15), 6to4 relay anycast (192.88.99/24), multicast,
 *   reserved (240/4) and broadcast; in IPv6 the unspecified and loopback
 *   addresses, IPv4-mapped, -compatible and NAT64 (64:ff9b::/96)
 *   addresses judged by the IPv4 address they hold (the last 32 bits),
 *   6to4 (2002::/16) by its embedded IPv4 address (bits 16-47), local-use
 *   NAT64 (64:ff9b:1::/48) whatever it holds (where the IPv4 address sits
 *   in it depends on the prefix length its operator chose, RFC 6052 2.2),
 *   Teredo (2001::/32), discard (100::/64), benchmarking (2001:2::/48),
 *   ORCHID and documentation ranges (2001:10::/28, 2001:20::/28,
 *   2001:db8::/32, 3fff::/20), unique local (fc00::/7), link-local
 *   (fe80::/10), site-local (fec0::/10), multicast (ff00::/8), and
 *   anything else outside 2000::/3 (global unicast): unassigned or
 *   reserved.
 * - A host that is an address literal is judged as the address it denotes,
 *   in any form libcurl or the C library reads as one ("0x7f.1",
 *   "2130706433", "127.1", "0177.0.0.1", "[::ffff:127.0.0.1]"): libcurl
 *   connects to that address without a lookup.
 * - The connection goes to the address that was checked (a libcurl
 *   CURLOPT_RESOLVE pin, kiln_http_request.resolve_pin), so a second
 *   lookup cannot rebind the name; http_client also refuses a socket to
 *   any other address and turns proxies off for the request.
 *
 * Threads: any (getaddrinfo blocks: call from a worker or job thread,
 * never an event loop).
 */
#ifndef KILN_CORE_EGRESS_H
#define KILN_CORE_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define KILN_EGRESS_MAX_URL 2048
/* "host:port:address" for CURLOPT_RESOLVE: host up to 253, brackets, port. */
#define KILN_EGRESS_PIN_LEN 384

struct kiln_egress_policy {
    bool allow_http;     /* http:// too (development; never in production) */
    bool allow_private;  /* WEBHOOK_ALLOW_PRIVATE: the checks on addresses off */
};

/* The URL's form, without a lookup (for a registration's answer). A host
 * that is an address literal is judged as an address, and "localhost"
 * (and names under .localhost, either with a trailing dot) as loopback.
 * 0, or KILN_EINVAL with a sentence in why ("" on success; why may be NULL
 * with whylen 0), or KILN_EIO when libcurl cannot be loaded to read the
 * URL. */
int kiln_egress_check_url(const char *url, const struct kiln_egress_policy *p, char *why,
                          size_t whylen);

/* Whether an address may be connected to (see above). Only AF_INET and
 * AF_INET6 ever are, allow_private or not. */
bool kiln_egress_addr_allowed(const struct sockaddr *sa, bool allow_private);

/*
 * Check the URL, resolve its host once and check every address; on success
 * write the pin for the first address into pin (KILN_EGRESS_PIN_LEN bytes)
 * and return 0. Otherwise KILN_EINVAL (the URL, or a refused address) or
 * KILN_EIO (the name does not resolve, or libcurl cannot be loaded), with a
 * sentence in why that names the host and the refused address but never
 * the URL's path or query ("hook.example resolves to 10.0.0.5, a private
 * address"); pin is then "".
 *
 * The pin is "host:port:address", the host as libcurl reads it from the URL
 * (odd IPv4 forms already rewritten: "127.0.0.1", not "0x7f.1"), an IPv6
 * address in brackets: "hook.example:443:93.184.216.34",
 * "hook.example:443:[2606:2800::1]". An IPv6 literal host is in brackets
 * too ("[2606:2800::1]:443:[2606:2800::1]"), which CURLOPT_RESOLVE cannot
 * read; http_client then relies on its socket check alone. Address
 * literals and localhost names are not looked up: localhost (only with
 * allow_private) is pinned to 127.0.0.1.
 */
int kiln_egress_resolve(const char *url, const struct kiln_egress_policy *p, char *pin,
                        size_t pinlen, char *why, size_t whylen);

#endif
