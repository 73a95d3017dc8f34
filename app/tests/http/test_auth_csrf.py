"""CSRF protection of cookie-authenticated writes under /api, on the
test-only guarded route POST /api/v1/_test/protected (KILN_ENV=test; it
answers 200 {"ok":true}): the body must be declared JSON, and an Origin,
when present, must be PUBLIC_URL or one of ALLOWED_ORIGINS. Bearer
authentication (mobile clients) is not subject to either check.
"""

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
