"""Sessions: dev login, /me by cookie and by Bearer, logout, the cookie's
attributes, tampered / truncated / oversized / foreign cookies, key
rotation (SECRET_KEY_BASE_PREVIOUS), two kiln processes on one Valkey, the
session record in Valkey, and a Valkey outage (503, not 401; back without a
restart).

Tests that need a Valkey shared between instances skip in embedded mode.
"""

import json
import time
import uuid

import pytest

import authkit as ak
from authkit import plain_kiln  # noqa: F401 (fixture)
import kilnhttp


# --------------------------------------------------------------------------
# dev login and /me
# --------------------------------------------------------------------------

def test_dev_login(plain_kiln):
    email = ak.unique_email("dev")
    r, cookie = ak.dev_login(plain_kiln, email=email, name="Dev Person")
    kilnhttp.assert_json_content_type(r)
    body = r.json()
    assert body.get("authenticated") is True and body["user"]["email"] == email, body
    assert body["user"]["name"] == "Dev Person", body
    user = ak.assert_me(ak.me(plain_kiln, cookie), email=email, name="Dev Person")
    assert user == body["user"], (user, body)
    ak.assert_me(ak.me(plain_kiln, cookie, path="/api/me"), email=email)
    ak.assert_me(ak.me(plain_kiln, bearer=cookie), email=email)
    ak.assert_me(ak.me(plain_kiln, bearer=cookie, path="/api/me"), email=email)
    ak.assert_not_in_logs(plain_kiln, cookie, cookie.split(".")[0])


@pytest.mark.parametrize("body", [
    {"name": "No Email"},
    {"email": "", "name": "Empty"},
    {"email": None, "name": "Null"},
    {"email": 42, "name": "Number"},
    {},
], ids=["missing", "empty", "null", "number", "empty-object"])
def test_dev_login_needs_an_email(plain_kiln, body):
    r = ak.call(plain_kiln, "POST", "/auth/dev/login", json_body=body)
    err = kilnhttp.assert_error(r, 422, "validation_failed")
    assert "email" in (err.get("details") or {}), err
    ak.assert_no_session_cookie(r)


@pytest.mark.parametrize("body", ["[]", '"x"', "null", "42",
                                  '{"email": "a@example.com", "name": 42}',
                                  '{"email": "a@example.com", "name": "N", "extra": {"deep": [1, 2]}}',
                                  '{"email": "' + "e" * 5000 + '@example.com", "name": "N"}',
                                  '{"email": "a@example.com", "name": "' + "n" * 20000 + '"}'],
                         ids=["array", "string", "null", "number", "name-number", "extra-fields",
                              "long-email", "long-name"])
def test_dev_login_odd_bodies(plain_kiln, body):
    r = ak.call(plain_kiln, "POST", "/auth/dev/login", body=body,
                headers=[("Content-Type", "application/json")])
    assert r.status in (200, 400, 413, 422), r
    if r.status != 200:
        kilnhttp.assert_error(r, r.status, None)
        ak.assert_no_session_cookie(r)
    assert plain_kiln.running()


@pytest.mark.parametrize("fields,details", [
    ({"name": 42}, {"name": ["is invalid"]}),
    ({"name": True}, {"name": ["is invalid"]}),
    ({"name": ["Ada"]}, {"name": ["is invalid"]}),
    ({"name": {"first": "Ada"}}, {"name": ["is invalid"]}),
    ({"name": "n" * 256}, {"name": ["should be at most 255 character(s)"]}),
    ({"email": 42}, {"email": ["is invalid"]}),
    ({"email": True, "name": 1.5}, {"email": ["is invalid"], "name": ["is invalid"]}),
    ({"email": {"a": "b"}}, {"email": ["is invalid"]}),
    ({"email": None, "name": []}, {"email": ["can't be blank"], "name": ["is invalid"]}),
    ({"email": "   "}, {"email": ["can't be blank"]}),
    ({"email": "e" * 250 + "@x.com"}, {"email": ["should be at most 255 character(s)"]}),
], ids=["name-number", "name-bool", "name-array", "name-object", "name-too-long",
        "email-number", "both", "email-object", "blank-email-and-name-array", "email-spaces",
        "email-too-long"])
def test_dev_login_field_types(plain_kiln, fields, details):
    """Any JSON type may come in; a field of the wrong type is a 422 that
    names it, all fields in one answer."""
    body = dict({"email": ak.unique_email(), "name": "Typed"}, **fields)
    r = ak.call(plain_kiln, "POST", "/auth/dev/login", json_body=body)
    err = kilnhttp.assert_error(r, 422, "validation_failed")
    assert err.get("details") == details, err
    ak.assert_no_session_cookie(r)


def test_dev_login_name_may_be_null_or_absent(plain_kiln):
    for body in ({"email": ak.unique_email(), "name": None}, {"email": ak.unique_email()}):
        r = ak.call(plain_kiln, "POST", "/auth/dev/login", json_body=body)
        assert r.status == 200, r
        assert r.json()["user"]["name"] is None, r.json()
        ak.assert_me(ak.me(plain_kiln, ak.assert_session_cookie(r)), email=body["email"], name=None)
    # 255 characters (not bytes) is the limit.
    name = "é" * 255
    r = ak.call(plain_kiln, "POST", "/auth/dev/login", json_body={"email": ak.unique_email(),
                                                                  "name": name})
    assert r.status == 200 and r.json()["user"]["name"] == name, r


@pytest.fixture
def broken_identities(kiln, tmp_path, request):
    """A kiln on a database of its own (SQLite file, or a fresh PostgreSQL
    database in the service modes) whose identities table is then renamed
    away: every login query fails as a bug would (SQLite "no such table",
    PostgreSQL 42P01), not as an outage."""
    db = None
    if kilnhttp.STORES == "embedded":
        import sqlite3
        path = str(tmp_path / "broken.db")
        srv = ak.start_kiln(kiln, DB_PATH=path)

        def execute(sql):
            with sqlite3.connect(path, timeout=10) as c:
                c.execute(sql)
    else:
        svc = request.getfixturevalue("services")
        db = svc.create_db()
        srv = ak.start_kiln(kiln, DATABASE_URL=svc.db_url(db, via=kilnhttp.STORES))

        def execute(sql):
            svc.psql(sql, db=db)
    ak.session_for(srv)                      # the schema works before
    execute("ALTER TABLE identities RENAME TO identities_gone")
    yield srv
    srv.stop()
    if db:
        svc.drop_db(db)


def test_dev_login_database_bug_is_a_500(broken_identities):
    """A database error that is not an outage is a bug: 500 with an error
    line naming the dependency, never a 503 that would send clients into
    retries."""
    srv = broken_identities
    offset = len(srv.stdout_bytes())
    rid = "devbug-" + uuid.uuid4().hex
    r = ak.call(srv, "POST", "/auth/dev/login", request_id=rid,
                json_body={"email": ak.unique_email(), "name": "Bug"})
    kilnhttp.assert_error(r, 500, "internal_error")
    assert r.headers.get("retry-after") is None, r
    ak.assert_no_session_cookie(r)
    hits = ak.wait_log(srv, lambda rec: rec.get("request_id") == rid
                       and rec.get("message") == "internal error", offset)
    assert hits and hits[0].get("dependency") == "Database", hits
    assert "identities" in (hits[0].get("error") or ""), hits


def test_dev_login_bad_json(plain_kiln):
    r = ak.call(plain_kiln, "POST", "/auth/dev/login", body="{not json",
                headers=[("Content-Type", "application/json")])
    kilnhttp.assert_error(r, 400, "invalid_json")
    ak.assert_no_session_cookie(r)


def test_dev_login_in_development(kiln):
    srv = ak.start_kiln(kiln, KILN_ENV="development")
    cookie = ak.session_for(srv)
    ak.assert_me(ak.me(srv, cookie))


def test_production_has_no_dev_login_nor_test_route(kiln):
    srv = ak.start_kiln(kiln, KILN_ENV="production", BIND_ADDRESS="127.0.0.1",
                        SECRET_KEY_BASE=ak.secret_key_base())
    r = ak.call(srv, "POST", "/auth/dev/login", json_body={"email": ak.unique_email(), "name": "x"})
    kilnhttp.assert_error(r, 404, None)
    ak.assert_no_session_cookie(r)
    r = ak.call(srv, "POST", "/api/v1/_test/protected", json_body={})
    kilnhttp.assert_error(r, 404, None)


def test_secure_cookie_when_public_url_is_https(kiln):
    srv = ak.start_kiln(kiln, PUBLIC_URL="https://kiln.example.com")
    r = ak.call(srv, "POST", "/auth/dev/login", json_body={"email": ak.unique_email(), "name": "S"})
    assert r.status == 200, r
    cookie = ak.assert_session_cookie(r, secure=True)
    ak.assert_me(ak.me(srv, cookie))
    lo = ak.logout(srv, cookie)
    assert ak.set_cookies(lo)[ak.SESSION_COOKIE].attr("secure") is True, lo


def test_me_without_session(plain_kiln):
    for path in ("/api/v1/me", "/api/me"):
        ak.assert_unauthenticated(ak.call(plain_kiln, "GET", path))


def test_new_session_on_every_dev_login(plain_kiln):
    email = ak.unique_email()
    _, a = ak.dev_login(plain_kiln, email=email)
    _, b = ak.dev_login(plain_kiln, email=email)
    assert a != b and a.split(".")[0] != b.split(".")[0]
    # Two browsers, two sessions, one user.
    assert ak.assert_me(ak.me(plain_kiln, a)) == ak.assert_me(ak.me(plain_kiln, b))
    # Logging in while holding a session replaces that session.
    _, c = ak.dev_login(plain_kiln, email=email, cookies={ak.SESSION_COOKIE: b})
    assert c != b
    ak.assert_unauthenticated(ak.me(plain_kiln, b))
    ak.assert_me(ak.me(plain_kiln, c))
    ak.assert_me(ak.me(plain_kiln, a))


# --------------------------------------------------------------------------
# logout
# --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_logout(plain_kiln, method):
    cookie = ak.session_for(plain_kiln)
    r = ak.logout(plain_kiln, cookie, method=method)
    assert r.status == 302, r
    assert r.headers.get("location") == ak.LOGOUT_REDIRECT, r
    c = ak.set_cookies(r).get(ak.SESSION_COOKIE)
    assert c is not None and c.value == "" and c.attr("max-age") == "0", f"cookie not cleared: {r!r}"
    assert c.attr("path") == "/", c
    ak.assert_unauthenticated(ak.me(plain_kiln, cookie))
    ak.assert_unauthenticated(ak.me(plain_kiln, bearer=cookie))
    # Logging out again, or without any session, is harmless.
    for cookie_value in (cookie, None):
        r = ak.logout(plain_kiln, cookie_value, method=method)
        assert r.status == 302 and r.headers.get("location") == ak.LOGOUT_REDIRECT, r


def test_logout_by_bearer(plain_kiln):
    """A mobile client holds the value as a Bearer token."""
    cookie = ak.session_for(plain_kiln)
    r = ak.call(plain_kiln, "DELETE", "/auth/logout", bearer=cookie)
    assert r.status == 302, r
    ak.assert_unauthenticated(ak.me(plain_kiln, bearer=cookie))


def test_logout_ends_only_its_session(plain_kiln):
    email = ak.unique_email()
    a, b = ak.session_for(plain_kiln, email), ak.session_for(plain_kiln, email)
    ak.logout(plain_kiln, a)
    ak.assert_unauthenticated(ak.me(plain_kiln, a))
    ak.assert_me(ak.me(plain_kiln, b), email=email)


# --------------------------------------------------------------------------
# bad cookies and tokens: no session, no crash
# --------------------------------------------------------------------------

def bad_values(good):
    sid, _, tag = good.partition(".")
    assert tag, f"expected sid.tag, got {good!r}"
    return {
        "sid-char": ak.tamper(good, 5),
        "sid-last-char": ak.tamper(good, len(sid) - 2),
        "tag-char": ak.tamper(good, len(good) - 5),
        "tag-first-char": ak.tamper(good, len(sid) + 1),
        "truncated-1": good[:-1],
        "truncated-half": good[:len(good) // 2],
        "sid-only": sid,
        "sid-dot": sid + ".",
        "tag-only": "." + tag,
        "swapped": tag + "." + sid,
        "extra-part": good + ".AAAA",
        "doubled": good + good,
        "empty": "",
        "dot": ".",
        "10kb": "A" * 10240,
        "10kb-with-dot": "A" * 5000 + "." + "B" * 5000,
        "non-base64": "!!!!" + good[4:],
        "quoted": '"' + good[:-2] + '"',
    }


def test_bad_cookies(plain_kiln):
    good = ak.session_for(plain_kiln)
    ak.assert_me(ak.me(plain_kiln, good))
    with plain_kiln.connect() as conn:
        for name, value in bad_values(good).items():
            r = ak.me(plain_kiln, value, conn=conn)
            assert r.status == 401, f"{name}: {r!r}"
            ak.assert_unauthenticated(r)
            r = ak.me(plain_kiln, bearer=value, conn=conn) if value else None
            if r is not None:
                assert r.status == 401, f"bearer {name}: {r!r}"
    assert plain_kiln.running()
    ak.assert_me(ak.me(plain_kiln, good))


def test_many_cookies(plain_kiln):
    good = ak.session_for(plain_kiln)
    junk = [(f"c{i}", uuid.uuid4().hex) for i in range(50)]
    only_junk = "; ".join(f"{k}={v}" for k, v in junk)
    r = ak.call(plain_kiln, "GET", "/api/v1/me", headers=[("Cookie", only_junk)])
    ak.assert_unauthenticated(r)
    for where in (0, 25, 50):
        jar = junk[:where] + [(ak.SESSION_COOKIE, good)] + junk[where:]
        header = "; ".join(f"{k}={v}" for k, v in jar)
        r = ak.call(plain_kiln, "GET", "/api/v1/me", headers=[("Cookie", header)])
        ak.assert_me(r)
    # 50 Cookie header lines, the session in the last one.
    lines = [("Cookie", f"{k}={v}") for k, v in junk] + [("Cookie", f"{ak.SESSION_COOKIE}={good}")]
    r = ak.call(plain_kiln, "GET", "/api/v1/me", headers=lines)
    assert r.status in (200, 401), r
    # 50 junk cookies that look like sessions.
    fakes = "; ".join(f"{ak.SESSION_COOKIE}={ak.tamper(good, 5 + i % 30)}" for i in range(50))
    ak.assert_unauthenticated(ak.call(plain_kiln, "GET", "/api/v1/me", headers=[("Cookie", fakes)]))
    assert plain_kiln.running()


@pytest.mark.parametrize("value", [
    "Bearer", "Bearer ", "Bearer  ", "Bearer x", "Bearer " + "A" * 10240, "Basic dXNlcjpwYXNz",
    "Token abc", "Bearer a.b.c", "Bearer ..",
])
def test_bearer_garbage(plain_kiln, value):
    r = ak.call(plain_kiln, "GET", "/api/v1/me", headers=[("Authorization", value)])
    ak.assert_unauthenticated(r)
    assert plain_kiln.running()


def test_bearer_scheme_is_case_insensitive(plain_kiln):
    good = ak.session_for(plain_kiln)
    for scheme in ("bearer", "BEARER"):
        r = ak.call(plain_kiln, "GET", "/api/v1/me", headers=[("Authorization", f"{scheme} {good}")])
        ak.assert_me(r)


def test_cookie_from_another_secret_is_refused(kiln):
    a = ak.start_kiln(kiln, SECRET_KEY_BASE="a" * 64)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE="b" * 64)
    cookie = ak.session_for(a)
    ak.assert_me(ak.me(a, cookie))
    ak.assert_unauthenticated(ak.me(b, cookie))
    ak.assert_unauthenticated(ak.me(b, bearer=cookie))


# --------------------------------------------------------------------------
# many instances on one Valkey
# --------------------------------------------------------------------------

@ak.needs_valkey("sessions made by one instance are looked up by another")
def test_key_rotation(kiln):
    key_a, key_b = "A" * 64 + uuid.uuid4().hex, "B" * 64 + uuid.uuid4().hex
    old = ak.start_kiln(kiln, SECRET_KEY_BASE=key_a)
    rotating = ak.start_kiln(kiln, SECRET_KEY_BASE=key_b, SECRET_KEY_BASE_PREVIOUS=key_a)
    rotated = ak.start_kiln(kiln, SECRET_KEY_BASE=key_b)
    email = ak.unique_email("rot")
    cookie = ak.session_for(old, email)
    ak.assert_me(ak.me(rotating, cookie), email=email)
    ak.assert_me(ak.me(rotating, bearer=cookie), email=email)
    ak.assert_unauthenticated(ak.me(rotated, cookie))
    # New sessions are signed with the new key.
    fresh = ak.session_for(rotating, email)
    ak.assert_me(ak.me(rotated, fresh), email=email)
    ak.assert_unauthenticated(ak.me(old, fresh))


@ak.needs_valkey("two instances share sessions through Valkey")
def test_two_instances_share_sessions(kiln):
    key = ak.secret_key_base()
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=key)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=key)
    email = ak.unique_email("two")
    cookie = ak.session_for(a, email)
    ak.assert_me(ak.me(b, cookie), email=email)
    ak.assert_me(ak.me(b, bearer=cookie), email=email)
    other = ak.session_for(b, email)
    ak.assert_me(ak.me(a, other), email=email)
    # Logout on one ends the session on both.
    r = ak.logout(b, cookie)
    assert r.status == 302, r
    ak.assert_unauthenticated(ak.me(a, cookie))
    ak.assert_unauthenticated(ak.me(b, cookie))
    ak.assert_me(ak.me(a, other), email=email)


@ak.needs_valkey("looks at the session record in Valkey")
def test_session_record_in_valkey(plain_kiln, services):
    email = ak.unique_email("rec")
    cookie = ak.session_for(plain_kiln, email)
    sid = cookie.split(".")[0]
    assert len(sid) == 43, f"sid should be 32 bytes base64url: {sid!r}"
    key = f"backend_session:{sid}"
    ttl = int(ak.redis_cli(services, "TTL", key))
    assert ak.SESSION_MAX_AGE - 120 <= ttl <= ak.SESSION_MAX_AGE, f"TTL of {key}: {ttl}"
    record = json.loads(ak.redis_cli(services, "GET", key))
    assert email in json.dumps(record), record
    # Rolling: an expiring session is refreshed on use (at most once a minute,
    # so this only checks that use never shortens it).
    ak.assert_me(ak.me(plain_kiln, cookie))
    assert int(ak.redis_cli(services, "TTL", key)) >= ttl - 5
    ak.logout(plain_kiln, cookie)
    assert ak.redis_cli(services, "EXISTS", key) == "0", "logout left the session in Valkey"


@ak.needs_valkey("edits the session record in Valkey")
@pytest.mark.parametrize("record", [None, "", "garbage", "[]", "{}", '{"user":"x"}', "\xff\xfe"],
                         ids=["deleted", "empty", "garbage", "array", "empty-object", "wrong-types",
                              "binary"])
def test_damaged_session_record(plain_kiln, services, record):
    """A session whose record expired, vanished or is damaged is no session
    (401), never a 500."""
    cookie = ak.session_for(plain_kiln)
    key = f"backend_session:{cookie.split('.')[0]}"
    if record is None:
        ak.redis_cli(services, "DEL", key)
    else:
        ak.redis_cli(services, "SET", key, record)
    r = ak.me(plain_kiln, cookie)
    ak.assert_unauthenticated(r)
    assert plain_kiln.running()


@pytest.mark.disruptive
@ak.needs_valkey("stops the Redis that kiln uses")
def test_valkey_outage(kiln, services):
    srv = ak.start_kiln(kiln, VALKEY_CONNECT_TIMEOUT_MS=500, VALKEY_COMMAND_TIMEOUT_MS=1000)
    good = ak.session_for(srv)
    tampered = ak.tamper(good, 5)
    name = ak.redis_service_name()
    services.ctl("stop1", name)
    try:
        t0 = time.monotonic()
        r = ak.me(srv, good, timeout=15)
        took = time.monotonic() - t0
        kilnhttp.assert_error(r, 503, "service_unavailable")
        assert took < 5, f"503 took {took:.1f} s"
        kilnhttp.assert_error(ak.me(srv, bearer=good, timeout=15), 503, "service_unavailable")
        kilnhttp.assert_error(ak.me(srv, good, path="/api/me", timeout=15), 503, "service_unavailable")
        # A forged cookie is refused before any lookup; no cookie is no session.
        ak.assert_unauthenticated(ak.me(srv, tampered, timeout=15))
        ak.assert_unauthenticated(ak.call(srv, "GET", "/api/v1/me", timeout=15))
        for path in ("/", "/livez"):
            r = ak.call(srv, "GET", path, timeout=15)
            assert r.status == 200, (path, r)
        # The 503s above logged the session store's outage line already:
        # the next one comes in another second (one a second, with a count).
        time.sleep(1.1)
        offset = len(srv.stdout_bytes())
        r = ak.call(srv, "POST", "/auth/dev/login", timeout=15,
                    json_body={"email": ak.unique_email(), "name": "x"})
        kilnhttp.assert_error(r, 503, "service_unavailable")
        assert r.headers.get("retry-after") == "1", r
        ak.assert_no_session_cookie(r)
        assert ak.outage_logged(srv, "Session store", offset), "no outage line for the session store"
        # Logout cannot say the session is gone: 503, cookie kept.
        time.sleep(1.1)                          # outage lines: one a second
        offset = len(srv.stdout_bytes())
        for method in ("GET", "DELETE"):
            r = ak.logout(srv, good, method=method, timeout=15)
            kilnhttp.assert_error(r, 503, "service_unavailable")
            assert r.headers.get("retry-after") == "1", r
            assert ak.SESSION_COOKIE not in ak.set_cookies(r), r
        assert ak.outage_logged(srv, "Session store", offset), "no outage line for logout"
        assert srv.running()
    finally:
        services.ctl("start1", name)
    # Back without a restart (the old session went with Redis's memory).
    deadline = time.monotonic() + 15
    while True:
        r = ak.call(srv, "POST", "/auth/dev/login", json_body={"email": ak.unique_email(), "name": "x"})
        if r.status == 200:
            break
        assert r.status == 503 and time.monotonic() < deadline, f"not back after 15 s: {r!r}"
        time.sleep(0.2)
    cookie = ak.assert_session_cookie(r)
    ak.assert_me(ak.me(srv, cookie))
    assert ak.me(srv, good).status in (200, 401)
