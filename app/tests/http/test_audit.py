"""The audit log (issue 17): GET /api/v1/audit (and /api/audit) lists the
caller's own entries, newest first, limit (default 50, max 200) / offset
with the notes list's meta; rows for every engine write (target
"<resource>/<id>"), login, logout, and login_failed (actor NULL, seen in the
table); another user's entries are never visible; failed writes leave none;
the table refuses UPDATE, and DELETE of rows younger than a day (a trigger:
psql as the PostgreSQL superuser, Python's sqlite3 on DB_PATH).

The list is read through ``requests``, so conftest.py holds its answers to
the OpenAPI document; writes go through authkit.call (raw sockets) with a
known x-request-id and User-Agent, which each entry must carry.

Runs in every store mode (KILN_STORES).
"""

import sqlite3
import time
import urllib.parse
import uuid

import pytest
import requests

import authkit as ak
import kilnhttp
import ssekit

V1, ALIAS = "/api/v1", "/api"
ENTRY_KEYS = {"id", "at", "action", "target", "ip", "user_agent", "request_id"}
META_KEYS = {"count", "total", "limit", "offset"}
UA = "kiln-audit-test/1.0 (+black-box)"


@pytest.fixture(scope="module")
def srv(module_kiln):
    return ak.start_kiln(module_kiln)


def rid(tag="a"):
    return f"{tag}-{uuid.uuid4().hex[:16]}"


class User:
    def __init__(self, srv, tag="audit", email=None):
        self.srv = srv
        self.email = email or ak.unique_email(tag)
        self.login_rid = rid("login")
        r = ak.call(srv, "POST", "/auth/dev/login", json_body={"email": self.email, "name": "A U"},
                    headers=[("User-Agent", UA)], request_id=self.login_rid)
        assert r.status == 200, r
        self.token = ak.assert_session_cookie(r)

    def write(self, method, path, body=None, status=None):
        """(data or None, request id)."""
        request_id = rid("w")
        r = ak.call(self.srv, method, V1 + path, bearer=self.token, json_body=body,
                    headers=[("User-Agent", UA)], request_id=request_id)
        if status is not None:
            assert r.status == status, f"{method} {path}: {r!r}"
        data = r.json().get("data") if r.body and r.status < 300 else None
        return data, request_id

    def audit(self, prefix=V1, expect=200, **params):
        q = urllib.parse.urlencode(params)
        r = requests.get(self.srv.url(f"{prefix}/audit" + (f"?{q}" if q else "")),
                         headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        if expect != 200:
            return r
        assert r.status_code == 200, f"GET {prefix}/audit?{q}: {r.status_code} {r.text[:500]}"
        kilnhttp.assert_json_content_type(r)
        body = r.json()
        assert set(body) == {"data", "meta"}, body
        assert set(body["meta"]) == META_KEYS, body["meta"]
        assert body["meta"]["count"] == len(body["data"]), body["meta"]
        for e in body["data"]:
            assert_entry(e)
        return body

    def all_entries(self):
        out, offset = [], 0
        while True:
            page = self.audit(limit=200, offset=offset)["data"]
            out += page
            if len(page) < 200:
                return out
            offset += 200


def assert_entry(e):
    assert isinstance(e, dict) and set(e) == ENTRY_KEYS, f"entry keys {sorted(e)}: {e}"
    assert isinstance(e["id"], int) and not isinstance(e["id"], bool), e
    assert isinstance(e["at"], str) and kilnhttp.RFC3339_UTC_RE.match(e["at"]), e
    assert isinstance(e["action"], str) and e["action"], e
    for k in ("target", "ip", "user_agent", "request_id"):
        assert e[k] is None or isinstance(e[k], str), e
    return e


def assert_newest_first(entries):
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids), \
        f"entries not newest first: {ids}"
    ats = [e["at"] for e in entries]
    assert ats == sorted(ats, reverse=True), f"times not newest first: {ats}"


def db_rows(srv, sql, params=()):
    """Rows from the instance's database, behind its back."""
    if kilnhttp.STORES == "embedded":
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            return [tuple("" if v is None else str(v) for v in row)
                    for row in con.execute(sql, params).fetchall()]
        finally:
            con.close()
    svc = kilnhttp.services()
    text = sql
    for p in params:
        text = text.replace("?", "'" + str(p).replace("'", "''") + "'", 1)
    return svc.rows(text)


def db_try(srv, sql):
    """Run a statement that should be refused; returns the error text ('' if
    it ran)."""
    if kilnhttp.STORES == "embedded":
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            con.execute(sql)
            con.commit()
            return ""
        except sqlite3.DatabaseError as e:
            return str(e) or "error"
        finally:
            con.close()
    svc = kilnhttp.services()
    import subprocess
    r = subprocess.run(
        [svc.psql_bin, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", svc.pg_socket_dir,
         "-p", str(svc.pg_port), "-U", svc.pg_superuser, "-d", svc.pg_db, "-c", sql],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    return r.stderr.decode(errors="replace") if r.returncode != 0 else ""


# --------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_audit_needs_a_session(srv, prefix):
    ak.assert_unauthenticated(ak.call(srv, "GET", prefix + "/audit"))
    ak.assert_unauthenticated(ak.call(srv, "GET", prefix + "/audit", bearer="nope"))


def test_writes_and_login_are_listed_newest_first(srv):
    u = User(srv)
    n, r1 = u.write("POST", "/notes", {"title": "audited", "content": "c"}, 201)
    _, r2 = u.write("PATCH", f"/notes/{n['id']}", {"title": "audited 2"}, 200)
    _, r3 = u.write("POST", f"/notes/{n['id']}/archive", None, 200)
    p, r4 = u.write("POST", "/projects", {"name": "P"}, 201)
    t, r5 = u.write("POST", "/tasks", {"project_id": p["id"], "title": "T"}, 201)
    _, r6 = u.write("DELETE", f"/notes/{n['id']}")
    body = u.audit()
    entries = body["data"]
    assert_newest_first(entries)
    got = [(e["action"], e["target"], e["request_id"]) for e in entries]
    want = [("notes.deleted", f"notes/{n['id']}", r6),
            ("tasks.created", f"tasks/{t['id']}", r5),
            ("projects.created", f"projects/{p['id']}", r4),
            ("notes.archived", f"notes/{n['id']}", r3),
            ("notes.updated", f"notes/{n['id']}", r2),
            ("notes.created", f"notes/{n['id']}", r1)]
    assert got[:6] == want, got
    login = entries[6]
    assert login["action"] == "login", login
    assert login["request_id"] == u.login_rid, login
    # The contract's wording is loose here ("target user/<id>... provider"):
    # the provider's name or the user.
    assert login["target"] == "dev" or (login["target"] or "").startswith("user/"), login
    assert len(entries) == 7, f"only this user's entries expected: {got}"
    assert body["meta"] == {"count": 7, "total": 7, "limit": 50, "offset": 0}, body["meta"]
    for e in entries:
        assert e["ip"] == "127.0.0.1", e
        assert e["user_agent"] == UA, e
    # The alias answers the same.
    assert u.audit(prefix=ALIAS)["data"] == entries


def test_cascade_delete_is_audited(srv):
    u = User(srv)
    p, _ = u.write("POST", "/projects", {"name": "P"}, 201)
    u.write("POST", "/tasks", {"project_id": p["id"], "title": "T"}, 201)
    _, r = u.write("DELETE", f"/projects/{p['id']}")
    newest = u.audit()["data"]
    mine = [e for e in newest if e["request_id"] == r]
    assert ("projects.deleted", f"projects/{p['id']}") in [(e["action"], e["target"]) for e in mine], \
        newest[:5]


def test_the_client_address_behind_a_trusted_proxy(kiln):
    srv = ak.start_kiln(kiln, TRUSTED_PROXY_HOPS=1)
    u = User(srv, "proxied")
    request_id = rid("xff")
    r = ak.call(srv, "POST", V1 + "/notes", bearer=u.token, json_body={"title": "via proxy"},
                headers=[("X-Forwarded-For", "203.0.113.7, 198.51.100.9"), ("User-Agent", UA)],
                request_id=request_id)
    assert r.status == 201, r
    entry = next(e for e in u.audit()["data"] if e["request_id"] == request_id)
    # One trusted hop: the address that hop saw is the last entry.
    assert entry["ip"] == "198.51.100.9", entry


@pytest.mark.parametrize("ua", ["a" * 600, "Mozilla/5.0 (caf\u00e9) \u2603", "tab\there"])
def test_the_user_agent_is_printable_ascii_and_bounded(srv, ua):
    u = User(srv, "ua")
    request_id = rid("ua")
    r = ak.call(srv, "POST", V1 + "/notes", bearer=u.token, json_body={"title": "ua"},
                headers=[("User-Agent", ua.encode("utf-8"))], request_id=request_id)
    assert r.status == 201, r
    entry = next(e for e in u.audit()["data"] if e["request_id"] == request_id)
    got = entry["user_agent"]
    assert got is None or (len(got.encode()) <= 512 and all(0x20 <= ord(c) < 0x7f for c in got)), got
    if ua.isascii() and ua.isprintable():
        assert got == ua[:512], got


def test_logout_and_the_next_login_are_listed(srv):
    u = User(srv)
    logout_rid = rid("logout")
    r = ak.call(srv, "GET", "/auth/logout", cookies={ak.SESSION_COOKIE: u.token},
                headers=[("User-Agent", UA)], request_id=logout_rid)
    assert r.status in (200, 204, 302), r
    ak.assert_unauthenticated(ak.call(srv, "GET", V1 + "/audit", bearer=u.token))
    again = User(srv, email=u.email)
    entries = again.audit()["data"]
    assert [e["action"] for e in entries[:3]] == ["login", "logout", "login"], entries
    assert entries[0]["request_id"] == again.login_rid, entries[0]
    assert entries[1]["request_id"] == logout_rid, entries[1]
    assert entries[2]["request_id"] == u.login_rid, entries[2]
    assert entries[0]["target"] == entries[2]["target"], "the same user"


def test_a_new_login_over_the_old_session_records_session_ended(srv):
    u = User(srv, "relogin")
    request_id = rid("relogin")
    r = ak.call(srv, "POST", "/auth/dev/login", json_body={"email": u.email, "name": "A U"},
                cookies={ak.SESSION_COOKIE: u.token}, headers=[("User-Agent", UA)],
                request_id=request_id)
    assert r.status == 200, r
    u.token = ak.assert_session_cookie(r)
    entries = u.audit()["data"]
    got = [(e["action"], e["request_id"]) for e in entries]
    assert ("session_ended", request_id) in got, got
    assert got[-1] == ("login", u.login_rid), got
    ended = next(e for e in entries if e["action"] == "session_ended")
    login2 = [e for e in entries if e["action"] == "login" and e["request_id"] == request_id]
    assert len(login2) == 1 and login2[0]["id"] > ended["id"], \
        f"want the old session's end, then the new login: {got}"


@ak.needs_valkey("deletes a session in Valkey")
def test_a_session_deleted_behind_kilns_back_is_recorded_as_ended(kiln, services):
    srv = ak.start_kiln(kiln, EVENTS_SESSION_CHECK_SECONDS=1)
    u = User(srv, "vanish")
    # The check looks at the sessions that have streams.
    s = ssekit.SseStream(srv, bearer=u.token)
    other = User(srv, "witness", email=u.email)
    ak.redis_cli(services, "DEL", f"backend_session:{u.token.split('.')[0]}")
    s.wait_closed(timeout=6)
    s.close()
    deadline = time.monotonic() + 5
    while True:
        actions = [e["action"] for e in other.audit()["data"]]
        if "session_ended" in actions or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "session_ended" in actions, actions


def test_failed_writes_leave_no_entry(srv):
    u = User(srv)
    _, r1 = u.write("POST", "/notes", {}, 422)
    _, r2 = u.write("POST", "/tasks", {"project_id": "00000000-0000-4000-8000-000000000000",
                                       "title": "x"}, 404)
    _, r3 = u.write("DELETE", "/notes/00000000-0000-4000-8000-000000000000", None, 404)
    entries = u.audit()["data"]
    assert [e["action"] for e in entries] == ["login"], entries
    assert not db_rows(srv, "SELECT id FROM audit WHERE request_id IN (?, ?, ?)", (r1, r2, r3))


def test_another_users_entries_are_never_visible(srv):
    alice, bob = User(srv, "alice"), User(srv, "bob")
    a_rids, b_rids = {alice.login_rid}, {bob.login_rid}
    for i in range(3):
        _, r = alice.write("POST", "/notes", {"title": f"a{i}"}, 201)
        a_rids.add(r)
        _, r = bob.write("POST", "/notes", {"title": f"b{i}"}, 201)
        b_rids.add(r)
    a = alice.all_entries()
    b = bob.all_entries()
    assert {e["request_id"] for e in a} == a_rids, a
    assert {e["request_id"] for e in b} == b_rids, b
    assert not {e["id"] for e in a} & {e["id"] for e in b}
    for params in ({"offset": 0}, {"limit": 200}, {"offset": 3, "limit": 1}):
        assert all(e["request_id"] in a_rids for e in alice.audit(**params)["data"])


def test_paging(srv):
    u = User(srv)
    rids = [u.write("POST", "/notes", {"title": f"p{i}"}, 201)[1] for i in range(60)]
    full = u.audit(limit=200)
    assert full["meta"] == {"count": 61, "total": 61, "limit": 200, "offset": 0}, full["meta"]
    assert_newest_first(full["data"])
    assert [e["request_id"] for e in full["data"]] == rids[::-1] + [u.login_rid]
    d = u.audit()
    assert d["meta"] == {"count": 50, "total": 61, "limit": 50, "offset": 0}, d["meta"]
    assert d["data"] == full["data"][:50]
    pages = []
    for offset in range(0, 70, 25):
        page = u.audit(limit=25, offset=offset)
        assert page["meta"] == {"count": len(full["data"][offset:offset + 25]), "total": 61,
                                "limit": 25, "offset": offset}, page["meta"]
        pages += page["data"]
    assert pages == full["data"]
    capped = u.audit(limit=1000)
    assert capped["meta"]["limit"] == 200 and capped["meta"]["count"] == 61, capped["meta"]


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=abc", "limit=1.5", "offset=-1",
                                   "offset=abc"])
@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_bad_paging_parameters_are_400(srv, query, prefix):
    u = User(srv)
    r = requests.get(srv.url(f"{prefix}/audit?{query}"),
                     headers={"Authorization": f"Bearer {u.token}"}, timeout=10)
    kilnhttp.assert_error(r, 400, "invalid_request")


def test_failed_login_is_recorded(kiln):
    # A generic OIDC provider whose issuer nobody serves: the callback fails
    # on its state (no login cookie) before any request to the provider.
    dead = kilnhttp.free_port()
    srv = ak.start_kiln(kiln, OIDC_PROVIDERS="mock", OIDC_MOCK_ISSUER=f"http://127.0.0.1:{dead}",
                        OIDC_MOCK_CLIENT_ID=ak.MOCK_CLIENT_ID,
                        OIDC_MOCK_CLIENT_SECRET=ak.MOCK_CLIENT_SECRET)
    request_id = rid("badlogin")
    r = ak.call(srv, "GET", "/auth/mock/callback?code=abc&state=forged",
                headers=[("User-Agent", UA)], request_id=request_id)
    ak.assert_failure(r, "invalid_state")
    deadline = time.monotonic() + 5
    while True:
        rows = db_rows(srv, "SELECT action, actor, ip, user_agent FROM audit WHERE request_id = ?",
                       (request_id,))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) == 1, f"want one audit row for the failed login, got {rows}"
    action, actor, ip, ua = rows[0]
    assert action == "login_failed", rows
    assert actor == "", f"a failed login has no actor: {rows}"
    assert ip == "127.0.0.1" and ua == UA, rows
    # and nobody sees it in their list
    u = User(srv)
    assert request_id not in {e["request_id"] for e in u.all_entries()}


def test_the_audit_table_is_append_only(srv):
    u = User(srv)
    u.write("POST", "/notes", {"title": "keep me"}, 201)
    entry = u.audit()["data"][0]
    before = db_rows(srv, "SELECT action, target FROM audit WHERE id = ?", (entry["id"],))
    assert before == [(entry["action"], entry["target"])], before
    err = db_try(srv, f"UPDATE audit SET action = 'forged' WHERE id = {int(entry['id'])}")
    assert err, "UPDATE of an audit row was accepted"
    err = db_try(srv, f"DELETE FROM audit WHERE id = {int(entry['id'])}")
    assert err, "DELETE of an audit row younger than a day was accepted"
    assert db_rows(srv, "SELECT action, target FROM audit WHERE id = ?", (entry["id"],)) == before
    assert u.audit()["data"][0] == entry


def test_retention_prunes_old_audit_rows(kiln):
    """AUDIT_RETENTION_DAYS=1, pruned every second: a row from long ago
    (inserted behind kiln's back: INSERT is allowed) goes; today's stay."""
    srv = ak.start_kiln(kiln, AUDIT_RETENTION_DAYS=1, EVENTS_PRUNE_SECONDS=1)
    u = User(srv, "retention")
    marker = rid("old")
    old_at = "2000-01-01T00:00:00.000000Z"
    # The insert itself says it wrote the row: the prune runs every second
    # and may take it before a separate SELECT could see it.
    if kilnhttp.STORES == "embedded":
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        with con:
            cur = con.execute("INSERT INTO audit (at, actor, action, target, request_id) "
                              "VALUES (?, NULL, 'test_old', 'x', ?)", (old_at, marker))
            assert cur.rowcount == 1
        con.close()
    else:
        out = kilnhttp.services().psql(
            f"INSERT INTO audit (at, actor, action, target, request_id) "
            f"VALUES ('{old_at}', NULL, 'test_old', 'x', '{marker}') RETURNING id")
        assert out.strip().isdigit(), out
    deadline = time.monotonic() + 20
    while db_rows(srv, "SELECT id FROM audit WHERE request_id = ?", (marker,)):
        assert time.monotonic() < deadline, "an audit row from 2000 was not pruned within 20 s"
        time.sleep(0.25)
    assert [e["request_id"] for e in u.audit()["data"]] == [u.login_rid]
