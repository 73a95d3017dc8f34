/*
 * Guards for the route table: what runs before a handler. Each returns 0 to
 * let the request through, or fills the response (401, 403, 415, 429, 503)
 * and returns non-zero. Worker threads (they use the kv store).
 *
 *   kiln_guard_public   rate limit (RATE_LIMIT_PUBLIC per 60 s) by client
 *                       IP and path
 *   kiln_guard_session  a valid session (cookie or Bearer), CSRF checks for
 *                       cookie-authenticated writes, rate limit
 *                       (RATE_LIMIT_PROTECTED) by user id and path
 */
#ifndef KILN_AUTH_GUARD_H
#define KILN_AUTH_GUARD_H

#include "auth/session.h"
#include "http/request.h"
#include "http/response.h"

int kiln_guard_public(struct kiln_req *req, struct kiln_res *res);
int kiln_guard_session(struct kiln_req *req, struct kiln_res *res);

/* The session the guard loaded, or NULL. */
const struct kiln_session *kiln_req_session(const struct kiln_req *req);
/*
 * The client's address: the socket peer, or with TRUSTED_PROXY_HOPS = n > 0
 * the n-th X-Forwarded-For entry from the right (the one our n trusted
 * proxies saw), so that a client cannot choose its own.
 */
const char *kiln_client_ip(const struct kiln_req *req);
/* The session token from the cookie or Authorization: Bearer; p NULL if none.
 * *via_cookie tells which. */
kiln_str kiln_session_token_of(const struct kiln_req *req, bool *via_cookie);

/*
 * The CSRF check kiln_guard_session makes on cookie-authenticated writes,
 * for handlers of public routes that act on cookies: 0, or the 415 or 403
 * answered and non-zero.
 */
int kiln_guard_csrf(struct kiln_req *req, struct kiln_res *res);
/* Is origin (an Origin header's value, or scheme://host[:port]) PUBLIC_URL
 * or one of ALLOWED_ORIGINS? */
bool kiln_origin_allowed(const struct kiln_req *req, kiln_str origin);

#endif
