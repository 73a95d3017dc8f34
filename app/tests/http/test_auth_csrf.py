"""CSRF protection of cookie-authenticated writes under /api, on the
test-only guarded route POST /api/v1/_test/protected (KILN_ENV=test; it
answers 200 {"ok":true}): the body must be declared JSON, and an Origin,
when present, must be PUBLIC_URL or one of ALLOWED_ORIGINS. Bearer
authentication (mobile clients) is not subject to either check.

The same rules on the public routes that act on cookies: POST
/auth/dev/login (a login CSRF would sign the victim in as someone else),
and logout, which another site must not be able to trigger: GET
/auth/logout from another site (Sec-Fetch-Site, Origin, Referer) still
redirects but ends nothing; DELETE /auth/logout from a foreign Origin is a
403.
"""

import time
import uuid

import pytest

import authkit as ak
import kilnhttp

ROUTE = "/api/v1/_test/protected"
ALLOWED = ("https://app.example.com", "https://admin.example.com:8443")


@pytest.fixture(scope="module")
def srv(module_kiln):
    return ak.start_kiln(module_kiln, ALLOWED_ORIGINS=",".join(ALLOWED))


@pytest.fixture(scope="module")
def cookie(srv):
    return ak.session_for(srv)


def post(srv, cookie=None, bearer=None, ctype="application/json", origin=None, body="{}"):
    headers = []
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    if origin is not None:
        headers.append(("Origin", origin))
    return ak.call(srv, "POST", ROUTE, headers=headers, body=body,
                   cookies={ak.SESSION_COOKIE: cookie} if cookie else None, bearer=bearer)


def assert_ok(r):
    assert r.status == 200, r
    assert r.json() == {"ok": True}, r


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8",
                                   "Application/JSON"])
def test_json_with_cookie(srv, cookie, ctype):
    assert_ok(post(srv, cookie, ctype=ctype))


@pytest.mark.parametrize("ctype", [None, "text/plain", "text/plain; charset=utf-8",
                                   "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x",
                                   "text/plain; a=application/json", "text/json"])
def test_cookie_write_must_be_json(srv, cookie, ctype):
    kilnhttp.assert_error(post(srv, cookie, ctype=ctype), 415, "unsupported_media_type")


@pytest.mark.parametrize("origin", ["http://evil.test", "null", "https://app.example.com.evil.test",
                                    "https://app.example.co", "http://app.example.com",
                                    "https://admin.example.com", "PUBLIC_URL:1", "PUBLIC_URL.evil.test"])
def test_foreign_origin(srv, cookie, origin):
    origin = origin.replace("PUBLIC_URL", srv.env["PUBLIC_URL"])
    kilnhttp.assert_error(post(srv, cookie, origin=origin), 403, "forbidden")


@pytest.mark.parametrize("origin", ["PUBLIC_URL", *ALLOWED])
def test_allowed_origin(srv, cookie, origin):
    origin = origin.replace("PUBLIC_URL", srv.env["PUBLIC_URL"])
    assert_ok(post(srv, cookie, origin=origin))


def test_no_csrf_check_for_bearer(srv, cookie):
    assert_ok(post(srv, bearer=cookie, ctype="text/plain", origin="http://evil.test"))
    assert_ok(post(srv, bearer=cookie, ctype=None, origin="null"))


def test_reads_are_not_csrf_checked(srv, cookie):
    r = ak.me(srv, cookie, headers=[("Origin", "http://evil.test")])
    ak.assert_me(r)


def test_guarded_route_needs_a_session(srv, cookie):
    ak.assert_unauthenticated(post(srv))
    ak.assert_unauthenticated(post(srv, cookie=ak.tamper(cookie, 5)))


# --------------------------------------------------------------------------
# dev login: the JSON and Origin rules of cookie-authenticated writes
# --------------------------------------------------------------------------

def dev_login(srv, ctype="application/json", origin=None, body=None):
    headers = []
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    if origin is not None:
        headers.append(("Origin", origin.replace("PUBLIC_URL", srv.env["PUBLIC_URL"])))
    if body is None:
        body = '{"email": "%s", "name": "CSRF Test"}' % ak.unique_email("csrf")
    return ak.call(srv, "POST", "/auth/dev/login", headers=headers, body=body)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "text/json"])
def test_dev_login_must_be_json(srv, ctype):
    r = dev_login(srv, ctype=ctype)
    kilnhttp.assert_error(r, 415, "unsupported_media_type")
    ak.assert_no_session_cookie(r)


@pytest.mark.parametrize("origin", ["http://evil.test", "null", "https://app.example.com.evil.test",
                                    "PUBLIC_URL.evil.test"])
def test_dev_login_from_a_foreign_origin(srv, origin):
    r = dev_login(srv, origin=origin)
    kilnhttp.assert_error(r, 403, "forbidden")
    ak.assert_no_session_cookie(r)


@pytest.mark.parametrize("origin", [None, "PUBLIC_URL", *ALLOWED])
def test_dev_login_from_an_allowed_origin(srv, origin):
    r = dev_login(srv, origin=origin, ctype="application/json; charset=utf-8")
    assert r.status == 200, r
    ak.assert_me(ak.me(srv, ak.assert_session_cookie(r)))


def test_dev_login_without_a_body(srv):
    # No body reads as {} (as on every other write): no email.
    r = dev_login(srv, body="")
    err = kilnhttp.assert_error(r, 422, "validation_failed")
    assert "email" in err["details"], err
    ak.assert_no_session_cookie(r)


# --------------------------------------------------------------------------
# logout from another site
# --------------------------------------------------------------------------

def logout(srv, cookie, method="GET", bearer=False, **headers):
    """/auth/logout with headers given as keyword arguments
    (Sec_Fetch_Site="cross-site")."""
    hdrs = [(k.replace("_", "-"), v.replace("PUBLIC_URL", srv.env["PUBLIC_URL"]))
            for k, v in headers.items()]
    if bearer:
        return ak.call(srv, method, "/auth/logout", headers=hdrs, bearer=cookie)
    return ak.logout(srv, cookie, method=method, headers=hdrs)


def assert_logged_out(srv, r, cookie):
    assert r.status == 302 and r.headers.get("location") == ak.LOGOUT_REDIRECT, r
    c = ak.set_cookies(r).get(ak.SESSION_COOKIE)
    assert c is not None and c.cleared, f"cookie not cleared: {r!r}"
    ak.assert_unauthenticated(ak.me(srv, cookie))


def assert_still_logged_in(srv, r, cookie):
    """The browser is sent on as usual, but the session lives and its
    cookie is left alone."""
    assert r.status == 302 and r.headers.get("location") == ak.LOGOUT_REDIRECT, r
    assert ak.SESSION_COOKIE not in ak.set_cookies(r), f"cookie touched: {r!r}"
    ak.assert_me(ak.me(srv, cookie))


@pytest.mark.parametrize("headers", [
    {"Sec_Fetch_Site": "cross-site"},
    {"Sec_Fetch_Site": "cross-site", "Referer": "http://evil.test/page"},
    {"Sec_Fetch_Site": "same-site"},
    {"Sec_Fetch_Site": "same-site", "Referer": "https://user-content.example.com/x"},
    {"Origin": "http://evil.test"},
    {"Origin": "null"},
    {"Origin": "http://evil.test", "Sec_Fetch_Site": "same-origin"},
    {"Referer": "http://evil.test/page"},
    {"Referer": "PUBLIC_URL.evil.test/"},
], ids=["cross-site", "cross-site-referer", "same-site", "same-site-unknown-referer",
        "foreign-origin", "null-origin", "foreign-origin-same-origin", "old-browser-foreign-referer",
        "old-browser-lookalike-referer"])
def test_get_logout_from_another_site_ends_nothing(srv, headers):
    cookie = ak.session_for(srv)
    assert_still_logged_in(srv, logout(srv, cookie, **headers), cookie)


@pytest.mark.parametrize("headers", [
    {},
    {"Sec_Fetch_Site": "same-origin"},
    {"Sec_Fetch_Site": "none"},
    {"Origin": "PUBLIC_URL"},
    {"Sec_Fetch_Site": "same-origin", "Origin": "PUBLIC_URL"},
    {"Sec_Fetch_Site": "same-site", "Referer": "https://app.example.com/account"},
    {"Sec_Fetch_Site": "cross-site", "Referer": "https://admin.example.com:8443/"},
    {"Sec_Fetch_Site": "cross-site", "Origin": "https://app.example.com"},
    {"Referer": "PUBLIC_URL/settings?tab=1"},
], ids=["plain", "same-origin", "typed-url", "own-origin", "same-origin-own-origin",
        "same-site-allowed-referer", "cross-site-allowed-referer", "cross-site-allowed-origin",
        "old-browser-own-referer"])
def test_get_logout_from_here_or_an_allowed_origin(srv, headers):
    cookie = ak.session_for(srv)
    assert_logged_out(srv, logout(srv, cookie, **headers), cookie)


def test_get_logout_by_bearer_is_not_a_browser_request(srv):
    cookie = ak.session_for(srv)
    r = logout(srv, cookie, bearer=True, Sec_Fetch_Site="cross-site", Origin="http://evil.test")
    assert r.status == 302, r
    ak.assert_unauthenticated(ak.me(srv, cookie))


def test_logout_from_another_site_is_logged(srv):
    cookie = ak.session_for(srv)
    rid = "logout-x-" + uuid.uuid4().hex
    r = ak.call(srv, "GET", "/auth/logout", cookies={ak.SESSION_COOKIE: cookie},
                headers=[("Sec-Fetch-Site", "cross-site")], request_id=rid)
    assert_still_logged_in(srv, r, cookie)
    deadline = time.monotonic() + 5
    while True:
        lines = [ln for ln in srv.log_lines()[0]
                 if ln.get("request_id") == rid and "logout" in ln.get("message", "")]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines, "no log line says the logout was ignored"


@pytest.mark.parametrize("origin", ["http://evil.test", "null", "PUBLIC_URL.evil.test"])
def test_delete_logout_from_a_foreign_origin(srv, origin):
    cookie = ak.session_for(srv)
    r = logout(srv, cookie, method="DELETE", Origin=origin)
    kilnhttp.assert_error(r, 403, "forbidden")
    assert ak.SESSION_COOKIE not in ak.set_cookies(r), r
    ak.assert_me(ak.me(srv, cookie))


@pytest.mark.parametrize("origin", [None, "PUBLIC_URL", *ALLOWED])
def test_delete_logout_from_an_allowed_origin(srv, origin):
    cookie = ak.session_for(srv)
    r = logout(srv, cookie, method="DELETE", **({"Origin": origin} if origin else {}))
    assert_logged_out(srv, r, cookie)
