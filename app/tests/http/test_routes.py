"""Public routes, 404/405, HEAD, path normalisation, the error envelope and
x-request-id."""

import datetime

import pytest
import requests

from kilnhttp import (REQUEST_ID_RE, RFC3339_UTC_RE, STORES, assert_error,
                      assert_json_content_type, assert_request_id, expected_checks,
                      http_request)


def get(server, path, **kw):
    kw.setdefault("timeout", 5)
    return requests.get(server.url(path), **kw)


# -- the routes ---------------------------------------------------------------

def test_root_describes_the_service(server):
    r = get(server, "/")
    assert r.status_code == 200
    assert_json_content_type(r)
    body = r.json()
    assert body["status"] == "ok"
    assert body["service"] == "kiln"
    assert isinstance(body["version"], str) and body["version"]
    endpoints = body["endpoints"]
    assert endpoints["health"] == "/healthz"
    assert endpoints["me"] == "/api/v1/me"
    assert endpoints["auth"] == "/auth/:provider"
    for key in ("profile", "dashboard", "projects", "tasks"):
        assert isinstance(endpoints.get(key), str) and endpoints[key].startswith("/"), endpoints


def test_livez(server):
    r = get(server, "/livez")
    assert r.status_code == 200
    assert_json_content_type(r)
    assert r.json()["status"] == "ok"


def test_readyz(server):
    r = get(server, "/readyz")
    assert r.status_code == 200
    assert_json_content_type(r)
    assert r.json() == {"status": "ok"}


def test_healthz(server):
    r = get(server, "/healthz")
    assert r.status_code == 200
    assert_json_content_type(r)
    assert r.json() == {"status": "ok"}


def test_healthz_detailed(server):
    r = get(server, "/healthz?detailed=true")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    # embedded: SQLite "connected", kv "not configured"; postgres and
    # pgbouncer modes: both "connected".
    assert body["checks"] == expected_checks(), f"KILN_STORES={STORES}: {body}"
    stamp = body["timestamp"]
    assert RFC3339_UTC_RE.match(stamp), stamp
    when = datetime.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
    assert skew < 60, f"timestamp {stamp} is {skew:.0f} s off"


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/livez/extra", "/_test"])
def test_unknown_path_is_404_not_found(server, path):
    assert_error(get(server, path), 404, "not_found")


@pytest.mark.parametrize("method,path", [("POST", "/livez"), ("DELETE", "/"),
                                         ("PUT", "/healthz"), ("PATCH", "/readyz")])
def test_wrong_method_is_405_with_allow(server, method, path):
    r = requests.request(method, server.url(path), timeout=5)
    assert_error(r, 405, "method_not_allowed")
    allow = {m.strip() for m in r.headers.get("allow", "").split(",")}
    assert {"GET", "HEAD"} <= allow, f"allow: {r.headers.get('allow')!r}"
    assert method not in allow


@pytest.mark.parametrize("path", ["/livez", "/"])
def test_head_has_get_headers_and_no_body(server, path):
    get_body = get(server, path).content
    with server.connect() as conn:
        conn.send(http_request("HEAD", path, request_id="head-1")
                  + http_request("GET", "/livez", request_id="after-head"))
        head = conn.read_response(head=True)
        # If HEAD sent body bytes, they would sit where this status line is.
        nxt = conn.read_response()
    assert head.status == 200
    assert head.headers["x-request-id"] == "head-1"
    assert_json_content_type(head)
    assert int(head.headers["content-length"]) == len(get_body)
    assert nxt.status == 200 and nxt.headers["x-request-id"] == "after-head"


@pytest.mark.parametrize("path", ["/livez/", "//livez", "/livez//", "//livez//"])
def test_trailing_slash_and_empty_segments_are_ignored(server, path):
    resp = server.exchange(http_request("GET", path))[0]
    assert resp.status == 200, resp
    assert resp.json()["status"] == "ok"


def test_trailing_slash_keeps_the_query(server):
    r = get(server, "/healthz/?detailed=true")
    assert r.status_code == 200
    assert "checks" in r.json()


def test_query_string_does_not_affect_matching(server):
    assert get(server, "/livez?x=1&y=2").status_code == 200


def test_absolute_form_target(server):
    resp = server.exchange(http_request("GET", "http://localhost/livez", host="localhost"))[0]
    assert resp.status == 200, resp
    assert resp.json()["status"] == "ok"


# -- x-request-id ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/livez", "/healthz", "/nope"])
def test_every_response_has_a_generated_request_id(server, path):
    assert_request_id(get(server, path))


def test_generated_request_ids_differ(server):
    ids = {assert_request_id(get(server, "/livez")) for _ in range(5)}
    assert len(ids) == 5, ids


@pytest.mark.parametrize("rid", ["abc-DEF_123.x", "a", "Z" * 128,
                                 "00000000-0000-4000-8000-000000000000"])
def test_valid_request_id_is_echoed(server, rid):
    r = get(server, "/livez", headers={"X-Request-ID": rid})
    assert r.headers.get("x-request-id") == rid


def test_request_id_surrounding_whitespace_is_not_part_of_it(server):
    resp = server.exchange(b"GET /livez HTTP/1.1\r\nHost: x\r\nx-request-id: \t ows-id \t\r\n\r\n")[0]
    assert resp.headers["x-request-id"] == "ows-id"


def test_request_id_is_echoed_on_errors(server):
    r = get(server, "/nope", headers={"x-request-id": "err-echo-1"})
    body = assert_error(r, 404, "not_found")
    assert body["request_id"] == "err-echo-1"


@pytest.mark.parametrize("raw", [b"Z" * 129, b"has space", b"a/b", b"caf\xc3\xa9", b"",
                                 b"semi;colon", b"quote\"d"],
                         ids=["129-chars", "space", "slash", "non-ascii", "empty",
                              "semicolon", "quote"])
def test_invalid_request_id_is_replaced(server, raw):
    resp = server.exchange(http_request("GET", "/livez", headers=[("x-request-id", raw)]))[0]
    assert resp.status == 200, resp
    rid = assert_request_id(resp)
    assert rid.encode() != raw.strip()
    assert REQUEST_ID_RE.match(rid)
