"""Rate limits (API.md): RATE_LIMIT_PUBLIC on /auth/* and public /api
routes per client IP and path, RATE_LIMIT_PROTECTED on guarded routes per
user and path, 60 s windows; x-ratelimit-* headers on every limited
response, 429 rate_limit_exceeded with retry-after over the limit; /, /livez,
/readyz and /healthz never limited; the client IP from X-Forwarded-For only
with TRUSTED_PROXY_HOPS; on Valkey one limit for all instances.

Isolation: on Valkey every instance of the run shares the counters, and
every test client is 127.0.0.1. So tests count public requests under an
X-Forwarded-For address of their own (instances with TRUSTED_PROXY_HOPS=1)
and protected ones under a fresh user; the one test that must use the
socket address only relies on reaching the limit, not on where it starts.
"""

import time

import pytest

import authkit as ak
import kilnhttp

PUBLIC, PROTECTED = 4, 5
PUBLIC_PATH = "/auth/logout"        # public, cheap, no state needed


client_ip = ak.client_ip


@pytest.fixture(scope="module")
def proxied(module_kiln):
    """Behind one trusted proxy: the client is the last X-Forwarded-For entry."""
    return ak.start_kiln(module_kiln, RATE_LIMIT_PUBLIC=PUBLIC, RATE_LIMIT_PROTECTED=PROTECTED,
                         TRUSTED_PROXY_HOPS=1)


@pytest.fixture(scope="module")
def direct(module_kiln):
    """No trusted proxy: the client is the socket peer."""
    return ak.start_kiln(module_kiln, RATE_LIMIT_PUBLIC=PUBLIC, RATE_LIMIT_PROTECTED=PROTECTED)


xff = ak.xff


def new_user(srv):
    """A session made from an address of its own (dev login is limited too)."""
    return ak.session_for(srv, headers=xff(client_ip()))


def limit_headers(r):
    try:
        return (int(r.headers["x-ratelimit-limit"]), int(r.headers["x-ratelimit-remaining"]),
                int(r.headers["x-ratelimit-reset"]))
    except (KeyError, ValueError):
        raise AssertionError(f"missing or malformed x-ratelimit-* headers: {r!r}") from None


def assert_limited(r, limit):
    body = kilnhttp.assert_error(r, 429, "rate_limit_exceeded")
    assert body.get("details") == {"limit": limit, "window_seconds": 60}, body
    lim, remaining, reset = limit_headers(r)
    assert (lim, remaining) == (limit, 0), r
    ra = r.headers.get("retry-after", "")
    assert ra.isdigit() and 0 <= int(ra) <= 60, f"retry-after {ra!r}"
    now = time.time()
    assert now - 2 <= reset <= now + 62, f"x-ratelimit-reset {reset} vs now {now:.0f}"
    assert abs((reset - now) - int(ra)) <= 2, f"retry-after {ra} vs reset in {reset - now:.1f} s"


def run_window(limit, send, fresh_key):
    """Send ``limit`` requests then one more with the same key; retried
    once with a fresh key when a window boundary falls inside.  Returns the
    responses."""
    for attempt in range(2):
        key = fresh_key()
        first = send(key)
        _, _, reset = limit_headers(first)
        if reset - time.time() < 4 and attempt == 0:
            time.sleep(max(0.0, reset - time.time()) + 0.5)
            continue
        rs = [first] + [send(key) for _ in range(limit)]
        return key, rs
    raise AssertionError("unreachable")


def test_public_limit(proxied):
    with proxied.connect() as conn:
        ip, rs = run_window(PUBLIC, lambda ip: ak.call(proxied, "GET", PUBLIC_PATH, headers=xff(ip),
                                                       conn=conn), client_ip)
    for i, r in enumerate(rs[:PUBLIC]):
        assert r.status == 302, r
        lim, remaining, reset = limit_headers(r)
        assert (lim, remaining) == (PUBLIC, PUBLIC - 1 - i), r
    assert_limited(rs[PUBLIC], PUBLIC)
    # Per path: another public route still answers for this client.
    r = ak.call(proxied, "POST", "/auth/dev/login", headers=xff(ip),
                json_body={"email": ak.unique_email(), "name": "x"})
    assert r.status == 200, r
    # Per client: another address is not limited.
    r = ak.call(proxied, "GET", PUBLIC_PATH, headers=xff(client_ip()))
    assert r.status == 302 and limit_headers(r)[1] == PUBLIC - 1, r


def test_dev_login_is_limited(proxied):
    ip = client_ip()
    statuses = []
    for _ in range(PUBLIC + 1):
        r = ak.call(proxied, "POST", "/auth/dev/login", headers=xff(ip),
                    json_body={"email": ak.unique_email(), "name": "x"})
        statuses.append(r.status)
        if r.status == 429:
            assert_limited(r, PUBLIC)
            ak.assert_no_session_cookie(r)
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses


def test_protected_limit(proxied):
    ip = client_ip()
    with proxied.connect() as conn:
        cookie, rs = run_window(PROTECTED, lambda c: ak.me(proxied, c, conn=conn, headers=xff(ip)),
                                lambda: new_user(proxied))
    for i, r in enumerate(rs[:PROTECTED]):
        ak.assert_me(r)
        assert limit_headers(r)[:2] == (PROTECTED, PROTECTED - 1 - i), r
    assert_limited(rs[PROTECTED], PROTECTED)
    # By Bearer it is the same user.
    assert_limited(ak.me(proxied, bearer=cookie, headers=xff(ip)), PROTECTED)
    # Another address does not escape a per-user limit.
    assert_limited(ak.me(proxied, cookie, headers=xff(client_ip())), PROTECTED)
    # Another user is not limited; another guarded path neither.
    r = ak.me(proxied, new_user(proxied), headers=xff(ip))
    ak.assert_me(r)
    assert limit_headers(r)[:2] == (PROTECTED, PROTECTED - 1), r
    r = ak.call(proxied, "POST", "/api/v1/_test/protected", json_body={},
                cookies={ak.SESSION_COOKIE: cookie}, headers=xff(ip))
    assert r.status == 200, r
    assert limit_headers(r)[0] == PROTECTED, r


def test_unlimited_routes(proxied):
    ip = client_ip()
    with proxied.connect() as conn:
        for path in ("/", "/livez", "/readyz", "/healthz"):
            for _ in range(PUBLIC + 2):
                r = ak.call(proxied, "GET", path, headers=xff(ip), conn=conn)
                assert r.status == 200, (path, r)
                assert "x-ratelimit-limit" not in r.headers, (path, r)


def test_forwarded_for_with_one_trusted_hop(proxied):
    # A different client per request: never limited.
    for _ in range(PUBLIC * 2):
        r = ak.call(proxied, "GET", PUBLIC_PATH, headers=xff(client_ip()))
        assert r.status == 302, r
    # The client cannot choose: only the entry our proxy added counts.
    _, rs = run_window(PUBLIC, lambda real: ak.call(proxied, "GET", PUBLIC_PATH,
                                                    headers=xff(f"{client_ip()}, {real}")), client_ip)
    assert [r.status for r in rs] == [302] * PUBLIC + [429], rs
    assert_limited(rs[-1], PUBLIC)


def test_forwarded_for_ignored_without_trusted_hops(direct):
    statuses = []
    for _ in range(PUBLIC + 1):
        r = ak.call(direct, "GET", PUBLIC_PATH, headers=xff(client_ip()))
        statuses.append(r.status)
        if r.status == 429:
            break
    assert statuses[-1] == 429, f"X-Forwarded-For escaped the limit: {statuses}"
    assert_limited(r, PUBLIC)
    for _ in range(3):
        assert_limited(ak.call(direct, "GET", PUBLIC_PATH, headers=xff(client_ip())), PUBLIC)


def test_default_limits(plain_kiln_defaults):
    srv = plain_kiln_defaults
    r = ak.call(srv, "GET", PUBLIC_PATH, headers=xff(client_ip()))
    assert r.status == 302, r
    assert limit_headers(r)[:2] == (180, 179), r
    cookie = new_user(srv)
    r = ak.me(srv, cookie)
    ak.assert_me(r)
    assert limit_headers(r)[:2] == (120, 119), r


@pytest.fixture(scope="module")
def plain_kiln_defaults(module_kiln):
    return ak.start_kiln(module_kiln, RATE_LIMIT_PUBLIC=None, RATE_LIMIT_PROTECTED=None,
                         TRUSTED_PROXY_HOPS=1)


@ak.needs_valkey("the limit is shared through Valkey")
def test_limit_shared_by_instances(kiln):
    key = ak.secret_key_base()
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=key, RATE_LIMIT_PROTECTED=PROTECTED)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=key, RATE_LIMIT_PROTECTED=PROTECTED)
    for attempt in range(2):
        cookie = ak.session_for(a)
        rs = [ak.me(a if i % 2 == 0 else b, cookie) for i in range(PROTECTED)]
        if limit_headers(rs[-1])[2] - time.time() >= 2 or attempt:
            break
        time.sleep(3)
    for i, r in enumerate(rs):
        ak.assert_me(r)
        assert limit_headers(r)[:2] == (PROTECTED, PROTECTED - 1 - i), (i, r)
    assert_limited(ak.me(a, cookie), PROTECTED)
    assert_limited(ak.me(b, cookie), PROTECTED)
