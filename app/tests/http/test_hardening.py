"""What the original's clients and hostile clients found (issue 14), each
as a request shaped the way such a client sends it:

* a cookie-authenticated write with no body and no Content-Type passes the
  CSRF check on every protected route; a declared non-JSON type or a body
  without JSON is still 415, and the Origin rule applies to all of them;
* upload keys as one segment with encoded slashes; "." and ".." refused in
  both spellings, before the bucket is even looked at (503 with
  retry-after when there is none);
* a query that does not decode (%00, a broken escape) is 400;
* ``archived`` on create is validated like on update;
* rate limits key on the matched route (every spelling of a path shares
  one bucket; a 16 KiB path leaves no 16 KiB key), anonymous requests to
  protected routes are limited per IP before the 401;
* X-Forwarded-For is one list across its field lines, and the chosen entry
  must be an IP address.
"""

import uuid

import pytest

import authkit as ak
import kilnhttp
import openapi_check

ORIGIN_OK = "https://app.example.com"


@pytest.fixture(scope="module")
def srv(module_kiln):
    return ak.start_kiln(module_kiln, ALLOWED_ORIGINS=ORIGIN_OK)


@pytest.fixture(scope="module")
def cookie(srv):
    return ak.session_for(srv)


def raw(srv, method, path, headers=(), body=None, cookie=None):
    """Exactly these header lines (no Content-Length unless given)."""
    hdrs = list(headers)
    if cookie:
        hdrs.append(("Cookie", f"{ak.SESSION_COOKIE}={cookie}"))
    data = kilnhttp.http_request(method, path, headers=hdrs, body=body,
                                 host=f"127.0.0.1:{srv.port}")
    with srv.connect() as c:
        c.send(data)
        return c.read_final_response(head=(method == "HEAD"))


def create(srv, cookie, path, body):
    r = ak.call(srv, "POST", path, json_body=body, cookies={ak.SESSION_COOKIE: cookie})
    assert r.status == 201, r
    return r.json()["data"]


# --------------------------------------------------------------------------
# 1. bodyless writes
# --------------------------------------------------------------------------

NO_BODY_FRAMINGS = {
    "no length": [],
    "length 0": [("Content-Length", "0")],
}


@pytest.mark.parametrize("framing", NO_BODY_FRAMINGS)
@pytest.mark.parametrize("action", ["archive", "unarchive"])
def test_archive_with_no_body_and_no_type(srv, cookie, framing, action):
    note = create(srv, cookie, "/api/v1/notes", {"title": "t"})
    for prefix in ("/api/v1", "/api"):
        r = raw(srv, "POST", f"{prefix}/notes/{note['id']}/{action}",
                headers=NO_BODY_FRAMINGS[framing], cookie=cookie)
        assert r.status == 200, r
        assert r.json()["data"]["archived"] is (action == "archive"), r


def test_a_bodyless_write_reads_as_an_empty_object(srv, cookie):
    # As Plug's JSON parser reads it: an update that changes nothing, a
    # create that lacks its required field.
    note = create(srv, cookie, "/api/v1/notes", {"title": "kept"})
    for method in ("PUT", "PATCH"):
        r = raw(srv, method, f"/api/v1/notes/{note['id']}", cookie=cookie)
        assert r.status == 200 and r.json()["data"]["title"] == "kept", r
    r = raw(srv, "POST", "/api/v1/notes", cookie=cookie)
    err = kilnhttp.assert_error(r, 422, "validation_failed")
    assert err["details"] == {"title": ["can't be blank"]}, err
    r = raw(srv, "POST", "/api/v1/tasks", cookie=cookie)
    kilnhttp.assert_error(r, 400, "invalid_request")


def test_a_declared_type_other_than_json_is_still_refused(srv, cookie):
    note = create(srv, cookie, "/api/v1/notes", {"title": "t"})
    path = f"/api/v1/notes/{note['id']}/archive"
    # An empty HTML form still declares its type.
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; b=x"):
        r = raw(srv, "POST", path, headers=[("Content-Type", ctype), ("Content-Length", "0")],
                cookie=cookie)
        kilnhttp.assert_error(r, 415, "unsupported_media_type")
    # A body needs a JSON type, whatever it holds.
    r = raw(srv, "POST", path, headers=[("Content-Length", "2")], body="{}", cookie=cookie)
    kilnhttp.assert_error(r, 415, "unsupported_media_type")
    # A chunked body is a body, even an empty one.
    r = raw(srv, "POST", path, headers=[("Transfer-Encoding", "chunked")],
            body=kilnhttp.chunked(), cookie=cookie)
    kilnhttp.assert_error(r, 415, "unsupported_media_type")


def test_the_origin_rule_applies_to_bodyless_writes(srv, cookie):
    note = create(srv, cookie, "/api/v1/notes", {"title": "t"})
    path = f"/api/v1/notes/{note['id']}/archive"
    for origin in ("http://evil.test", "null"):
        r = raw(srv, "POST", path, headers=[("Origin", origin)], cookie=cookie)
        kilnhttp.assert_error(r, 403, "forbidden")
    r = raw(srv, "POST", path, headers=[("Origin", ORIGIN_OK)], cookie=cookie)
    assert r.status == 200, r


def protected_writes():
    """(method, path template) of every documented protected write."""
    out = []
    for path, ops in openapi_check.DOC["paths"].items():
        for method, op in ops.items():
            if method in ("post", "put", "patch", "delete") and op.get("security"):
                out.append((method.upper(), path))
    return out


def test_every_protected_write_takes_a_bodyless_request(srv):
    writes = protected_writes()
    assert len(writes) >= 15, writes
    cookie = ak.session_for(srv)
    me = ak.me(srv, cookie)
    assert me.status == 200
    # Deletes last, so that every other write finds its row.
    writes.sort(key=lambda w: w[0] == "DELETE")
    for method, template in writes:
        project = create(srv, cookie, "/api/v1/projects", {"name": "p"})
        ids = {
            "notes": create(srv, cookie, "/api/v1/notes", {"title": "t"})["id"],
            "projects": project["id"],
            "tasks": create(srv, cookie, "/api/v1/tasks",
                            {"project_id": project["id"], "title": "t"})["id"],
        }
        resource = template.split("/")[3]
        path = template.replace("{id}", ids.get(resource, str(uuid.uuid4())))
        path = path.replace("{key}", f"users%2F{uuid.uuid4()}%2Fuploads%2Fa.txt")
        path = path.replace("{user_id}", str(uuid.uuid4())).replace("{name}", "a.txt")
        for framing in NO_BODY_FRAMINGS.values():
            r = raw(srv, method, path, headers=framing, cookie=cookie)
            assert r.status not in (415, 500), (method, path, r)
            assert r.status < 500 or (r.status == 503 and "/uploads" in path), (method, path, r)
            r = raw(srv, method, path, headers=framing + [("Origin", "http://evil.test")],
                    cookie=cookie)
            kilnhttp.assert_error(r, 403, "forbidden")


# --------------------------------------------------------------------------
# 2 and 4. upload keys, uploads without a bucket
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [".", "..", "a/../b", "./a", "a//b", "a/."])
@pytest.mark.parametrize("spelling", ["encoded", "literal"])
def test_dot_segments_are_refused_before_anything_else(srv, cookie, bad, spelling):
    uid = str(uuid.uuid4())
    key = f"users/{uid}/uploads/{bad}"
    if spelling == "encoded":
        path = "/api/v1/uploads/" + key.replace("/", "%2F")
    else:
        if "/" in bad:
            pytest.skip("a literal '/' in the name makes another path")
        path = f"/api/v1/uploads/users/{uid}/uploads/{bad.replace('.', '%2E')}"
    for suffix, method in (("", "GET"), ("/download", "GET"), ("", "DELETE")):
        r = raw(srv, method, path + suffix, cookie=cookie)
        kilnhttp.assert_error(r, 400, "invalid_request")


def test_uploads_without_a_bucket_are_503_with_retry_after(srv, cookie):
    # Key checks first: another user's key is 403 even with no bucket.
    other = str(uuid.uuid4())
    r = raw(srv, "GET", f"/api/v1/uploads/users%2F{other}%2Fuploads%2Fa.txt", cookie=cookie)
    kilnhttp.assert_error(r, 403, "forbidden")
    for method, path in (("GET", "/api/v1/uploads"), ("GET", "/api/v1/uploads/types")):
        r = raw(srv, method, path, cookie=cookie)
        kilnhttp.assert_error(r, 503, "service_unavailable")
        assert r.headers.get("retry-after", "").isdigit(), r


def test_an_encoded_slash_elsewhere_is_still_400(srv, cookie):
    r = raw(srv, "GET", "/api/v1/notes/a%2Fb", cookie=cookie)
    kilnhttp.assert_error(r, 400, "invalid_request")


# --------------------------------------------------------------------------
# 4. queries and create bodies
# --------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["search=a%00zzz", "search=a%", "search=%zz", "limit=%001",
                                   "x=%0"])
def test_a_query_that_does_not_decode_is_400(srv, cookie, query):
    r = raw(srv, "GET", f"/api/v1/notes?{query}", cookie=cookie)
    body = kilnhttp.assert_error(r, 400, "invalid_request")
    assert "query" in body["message"], body
    # Public routes too.
    kilnhttp.assert_error(raw(srv, "GET", f"/healthz?{query}"), 400, "invalid_request")


@pytest.mark.parametrize("resource,body", [("notes", {"title": "t"}),
                                           ("projects", {"name": "p"})])
@pytest.mark.parametrize("archived", [123, {}, [], "true", None, "x" * (1 << 20)])
def test_archived_on_create_is_validated(srv, cookie, resource, body, archived):
    r = ak.call(srv, "POST", f"/api/v1/{resource}", json_body=dict(body, archived=archived),
                cookies={ak.SESSION_COOKIE: cookie})
    err = kilnhttp.assert_error(r, 422, "validation_failed")
    assert err["details"] == {"archived": ["is invalid"]}, err


@pytest.mark.parametrize("resource,body", [("notes", {"title": "t"}),
                                           ("projects", {"name": "p"})])
def test_archived_on_create_is_kept(srv, cookie, resource, body):
    for archived in (True, False):
        row = create(srv, cookie, f"/api/v1/{resource}", dict(body, archived=archived))
        assert row["archived"] is archived, row


# --------------------------------------------------------------------------
# 6 and 7. rate limits
# --------------------------------------------------------------------------

LIMIT = 4


client_ip = ak.client_ip


@pytest.fixture(scope="module")
def limited(module_kiln):
    return ak.start_kiln(module_kiln, RATE_LIMIT_PUBLIC=LIMIT, RATE_LIMIT_PROTECTED=LIMIT,
                         TRUSTED_PROXY_HOPS=1)


xff = ak.xff


def test_every_spelling_of_a_route_shares_one_bucket(limited):
    ip = client_ip()
    cookie = ak.session_for(limited, headers=xff(client_ip()))
    spellings = ["/api/v1/notes", "/api/notes", "//api/v1/notes", "/api/v1/notes/",
                 "/api/v1//notes", "/api/v1/%6eotes", "/api//notes//"]
    statuses = [raw(limited, "GET", p, headers=xff(ip), cookie=cookie).status
                for p in spellings]
    assert statuses == [200] * LIMIT + [429] * (len(spellings) - LIMIT), statuses
    # HEAD counts with GET; another route has a bucket of its own.
    assert raw(limited, "HEAD", "/api/v1/notes", headers=xff(ip), cookie=cookie).status == 429
    assert raw(limited, "GET", "/api/v1/projects", headers=xff(ip), cookie=cookie).status == 200


def test_every_spelling_of_a_public_route_shares_one_bucket(limited):
    ip = client_ip()
    spellings = ["/auth/logout", "//auth/logout", "/auth/logout/", "/auth//logout",
                 "/%61uth/logout", "/auth/log%6Fut"]
    statuses = [raw(limited, "GET", p, headers=xff(ip)).status for p in spellings]
    assert statuses == [302] * LIMIT + [429] * (len(spellings) - LIMIT), statuses


def test_anonymous_requests_to_protected_routes_are_limited_before_the_401(limited):
    ip = client_ip()
    statuses = []
    for i in range(LIMIT + 2):
        # A forged cookie, a missing one, a Bearer that is not a session.
        kind = i % 3
        r = raw(limited, "GET", "/api/v1/me", headers=xff(ip) + (
            [("Cookie", f"{ak.SESSION_COOKIE}=forged{i}")] if kind == 0 else
            [("Authorization", f"Bearer nope{i}")] if kind == 1 else []))
        statuses.append(r.status)
        assert "x-ratelimit-limit" in r.headers, r
    assert statuses == [401] * LIMIT + [429, 429], statuses
    # Another address is not affected.
    assert raw(limited, "GET", "/api/v1/me", headers=xff(client_ip())).status == 401


def test_forwarded_for_field_lines_are_one_list(limited):
    real = client_ip()
    statuses = []
    for _ in range(LIMIT + 2):
        # The client sends its own line first; the proxy adds a line.
        r = raw(limited, "GET", "/auth/logout",
                headers=[("X-Forwarded-For", client_ip()), ("X-Forwarded-For", real)])
        statuses.append(r.status)
    assert statuses == [302] * LIMIT + [429, 429], statuses


def test_a_forwarded_entry_that_is_not_an_address_is_not_an_identity(limited):
    # Garbage in the proxy's slot: the socket peer counts, so new garbage
    # each time does not escape the limit.
    statuses = []
    for i in range(LIMIT * 3):
        r = raw(limited, "GET", "/auth/logout",
                headers=[("X-Forwarded-For", f"not-an-ip-{uuid.uuid4().hex}")])
        statuses.append(r.status)
        if r.status == 429:
            break
    assert statuses[-1] == 429, statuses


@ak.needs_valkey("the keys are inspected in Valkey")
def test_a_long_path_leaves_a_short_key(kiln, services):
    srv = ak.start_kiln(kiln, RATE_LIMIT_PUBLIC=LIMIT, RATE_LIMIT_PROTECTED=LIMIT)
    marker = "k" * 40
    long_path = "/auth" + "/" * 8000 + "logout" + "/" * 8000
    r = raw(srv, "GET", long_path + f"?{marker}")
    assert r.status in (302, 429), r
    r = raw(srv, "GET", "/api/v1/" + "/" * 16000 + "me")
    assert r.status in (401, 429), r
    keys = ak.redis_cli(services, "--scan", "--pattern", "rate:*").split()
    assert keys, "no rate-limit keys at all"
    assert max(len(k) for k in keys) < 200, max(keys, key=len)


# --------------------------------------------------------------------------
# 11. one map from errors to answers; an outage logs once a second
# --------------------------------------------------------------------------

@pytest.mark.skipif(kilnhttp.STORES == "embedded", reason="needs PostgreSQL to stop")
@pytest.mark.disruptive
def test_a_database_outage_logs_once_a_second_with_a_count(kiln, services):
    import time
    srv = ak.start_kiln(kiln)
    cookie = ak.session_for(srv)
    assert ak.call(srv, "GET", "/api/v1/projects", cookies={ak.SESSION_COOKIE: cookie}).status == 200
    # Through pgbouncer, a stopped PostgreSQL makes queries wait in the
    # pooler (its query_wait_timeout); the pooler itself going away is the
    # outage kiln sees at once.
    service = "pgbouncer" if kilnhttp.STORES == "pgbouncer" else "postgres"
    services.ctl("stop1", service)
    try:
        refused = 0
        t0 = time.monotonic()
        with srv.connect() as conn:
            while time.monotonic() - t0 < 2.5:
                r = ak.call(srv, "GET", "/api/v1/projects", cookies={ak.SESSION_COOKIE: cookie},
                            conn=conn)
                body = kilnhttp.assert_error(r, 503, "service_unavailable")
                assert r.headers.get("retry-after") == "1", r
                assert body["message"] == "Database unavailable", body
                refused += 1
        elapsed = time.monotonic() - t0
    finally:
        services.ctl("start1", service)
        services.wait_up(service)
    assert refused >= 50, f"only {refused} requests in {elapsed:.1f} s"
    time.sleep(0.3)
    records, _ = srv.log_lines()
    # The background threads (jobs, webhooks) keep their own outage lines
    # ("Database (jobs)"): their failures are not requests.
    others = [r for r in records if r.get("message") not in ("request",) and
              r.get("level") in ("warning", "error") and
              not str(r.get("dependency", "")).endswith(("(jobs)", "(webhooks)"))]
    outage = [r for r in others if r.get("message") == "dependency unavailable"]
    # One line per second (a second boundary may split the first one).
    assert 1 <= len(outage) <= elapsed + 2, outage
    assert all(r["dependency"] == "Database" for r in outage), outage
    counted = sum(int(r["failures"]) for r in outage)
    assert counted <= refused and counted >= refused - refused // 2, (counted, refused)
    # Nothing else is logged per refused request.
    assert len(others) - len(outage) <= 3, others
