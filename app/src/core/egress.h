/*
 * Outbound requests to addresses users choose (webhook endpoints): the
 * checks that keep them from reaching what only the instance can reach.
 *
 * - The URL: http or https only (https only unless allow_http), a host,
 *   no user name or password, at most KILN_EGRESS_MAX_URL bytes, no
 *   fragment, no control characters or spaces.
 * - The address: the host is resolved once; every address it resolves to
 *   must be public, or the request is refused (a name that resolves to one
 *   public and one private address is refused: the resolver could hand out
 *   either). Refused unless allow_private: loopback, "this network"
 *   (0.0.0.0/8), private (10/8, 172.16/12, 192.168/16), shared (100.64/10),
 *   link-local (169.254/16, the instance metadata address among them),
 *   IETF protocol assignments (192.0.0/24), documentation ranges,
 *   benchmarking (198.18/15), 6to4 relay anycast (192.88.99/24), multicast,
 *   reserved (240/4) and broadcast; in IPv6 the unspecified and loopback
 *   addresses, IPv4-mapped, -compatible and NAT64 (64:ff9b::/96,
 *   64:ff9b:1::/48) addresses judged by the IPv4 address they hold, 6to4
 *   (2002::/16) by its embedded IPv4 address, Teredo (2001::/32), discard
 *   (100::/64), ORCHID and documentation ranges (2001:10::/28,
 *   2001:20::/28, 2001:db8::/32, 3fff::/20), unique local (fc00::/7),
 *   link-local (fe80::/10), site-local (fec0::/10) and multicast (ff00::/8).
 * - The connection goes to the address that was checked (a libcurl
 *   CURLOPT_RESOLVE pin), so a second lookup cannot rebind the name.
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
 * (and names under .localhost) as loopback. 0, or KILN_EINVAL with a
 * sentence in why. */
int kiln_egress_check_url(const char *url, const struct kiln_egress_policy *p, char *why,
                          size_t whylen);

/* Whether an address may be connected to (see above). */
bool kiln_egress_addr_allowed(const struct sockaddr *sa, bool allow_private);

/*
 * Check the URL, resolve its host once and check every address; on success
 * write the pin for the first address into pin (KILN_EGRESS_PIN_LEN bytes)
 * and return 0. Otherwise KILN_EINVAL (the URL, or a refused address) or
 * KILN_EIO (the name does not resolve), with a sentence in why that names
 * the host and the refused address but never the URL's path or query.
 */
int kiln_egress_resolve(const char *url, const struct kiln_egress_policy *p, char *pin,
                        size_t pinlen, char *why, size_t whylen);

#endif
