"""The change feed (issue 17): GET /api/v1/events (and /api/events), a
Server-Sent Events stream of the caller's own changes to notes, projects
and tasks, read here with the raw-socket client of ssekit.py (chunked
decoding and the WHATWG event stream parser, tested on their own first).

What is checked:
  * the response: 200, text/event-stream, no-store, x-accel-buffering: no,
    chunked, first bytes "retry: 2000\\n: connected\\n\\n"; cookie or Bearer;
    401 without a session; ?resources= (unknown name 400); malformed
    Last-Event-ID / ?last_event_id= 400;
  * every create, update, delete and archive of the caller's notes,
    projects and tasks arrives once, with data equal to the JSON the API
    answered (null for deletes); a project's delete also sends tasks.deleted
    for each of its tasks; another user's changes never arrive; a write
    that failed (422, 404) has no event;
  * resume by Last-Event-ID or ?last_event_id= (the query wins) after a
    disconnect: nothing missed, nothing repeated; an id that is unknown,
    another user's, or pruned starts with one "event: reset";
  * heartbeats (EVENTS_HEARTBEAT_SECONDS=1) and its bounds;
  * logout closes the session's streams within seconds (also on another
    instance, through Valkey);
  * SIGTERM with 500 open streams: each gets "retry:", its chunked body
    ends, the connection closes, the process exits in under 2 s (10 s
    under ASan, KILN_SANITIZED=1);
  * 32 concurrent writers while subscribers disconnect and resume at random
    points: every 2xx write has exactly one event, every subscriber gets
    all of them once, in one order;
  * two instances on one PostgreSQL + Valkey: a write on A reaches B;
  * Valkey stopped and restarted, or paused, under writes (disruptive):
    nothing lost; PostgreSQL stopped and started with streams open
    (disruptive): the feed comes back, nothing lost;
  * also: a client that does not read is closed and resumes; resume after
    more than a batch of missed events; retention; HTTP/1.0; TLS; several
    loops; a draining instance's "retry: 1000"; the outbox row matches the
    event; an unrelated open transaction (xfail: a documented limitation).

KILN_EVENTS_ROUNDS=N makes the concurrent test longer (N creates, updates
and deletes per writer; 3 by default).

What runs where (KILN_STORES): everything but the Valkey tests in every
mode; the two-instance, cross-instance logout and outage tests need
postgres or pgbouncer.
"""

import datetime
import json
import os
import random
import resource
import selectors
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import uuid

import pytest

import authkit as ak
import kilnhttp
import ssekit
from ssekit import ChunkedDecoder, SseParser, SseStream, StreamClosed, StreamTimeout

from kilnhttp import SANITIZED, SERVICE_MODES
from resourcekit import ALIAS, MISSING, V1
needs_valkey = pytest.mark.skipif(
    kilnhttp.STORES not in SERVICE_MODES,
    reason=f"KILN_STORES={kilnhttp.STORES}: needs PostgreSQL + Valkey shared by two instances")

# How long a change may take to reach a subscriber on a healthy instance.
DELIVERY_S = 10.0 if SANITIZED else 5.0


# --------------------------------------------------------------------------
# the client itself: chunked decoding and the WHATWG parser
# --------------------------------------------------------------------------

def parse_all(data, splits=None):
    """Items of ``data`` fed whole, or cut at every offset in ``splits``."""
    p = SseParser()
    items = []
    cuts = [0] + list(splits or []) + [len(data)]
    for a, b in zip(cuts, cuts[1:]):
        items += p.feed(data[a:b])
    items += p.feed(b"", eof=True)
    return items


def messages(items):
    return [(m.type, m.data, m.last_event_id) for k, m in items if k == "message"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_parser_line_endings_fields_and_dispatch(eol):
    text = eol.join([
        b"\xef\xbb\xbfretry: 2000", b": connected", b"",
        b"id: 7", b"data: {\"a\":1}", b"", b"",
        b"event: reset", b"data:one", b"data:  two", b"data", b"",
        b"id", b"data: after empty id", b"",
        b"retry: 12x", b"retry: 900", b"foo: ignored", b"data: x", b"id: 9\x00", b"",
        b"data: never dispatched"])
    items = parse_all(text)
    assert ("retry", 2000) in items and ("retry", 900) in items and ("retry", 12) not in items
    assert items[1] == ("comment", "connected")
    assert messages(items) == [("message", '{"a":1}', "7"),
                               ("reset", "one\n two\n", "7"),
                               ("message", "after empty id", ""),
                               ("message", "x", "")]
    # Byte by byte (every CRLF, every UTF-8 sequence split) gives the same.
    def flat(its):
        return [(k, (v.type, v.data, v.last_event_id, v.id_field) if k == "message" else v)
                for k, v in its]
    assert flat(parse_all(text, range(1, len(text)))) == flat(items)


def test_parser_empty_data_buffer_dispatches_nothing_but_keeps_the_id():
    items = parse_all(b"id: 5\n\nevent: x\n\ndata: y\n\n")
    assert messages(items) == [("message", "y", "5")]


def test_parser_utf8_split_across_reads():
    text = "data: Grüße ✓ 🎉\n\n".encode()
    for cut in range(1, len(text)):
        assert messages(parse_all(text, [cut])) == [("message", "Grüße ✓ 🎉", "")]


def test_chunked_decoder():
    body = kilnhttp.chunked(b"retry: 2000\n", b": connected\n\n", b"x" * 300) + b""
    for step in (1, 2, 7, len(body)):
        d = ChunkedDecoder()
        out = b""
        for i in range(0, len(body), step):
            out += d.feed(body[i:i + step])
        assert out == b"retry: 2000\n: connected\n\n" + b"x" * 300 and d.done and not d.rest
    d = ChunkedDecoder()
    assert d.feed(b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n") == b"hello" and d.done
    with pytest.raises(AssertionError):
        ChunkedDecoder().feed(b"zz\r\n")
    with pytest.raises(AssertionError):
        ChunkedDecoder().feed(b"2\r\nabXY")


# --------------------------------------------------------------------------
# users, writes, streams
# --------------------------------------------------------------------------

class User:
    """A dev-login user; writes go with Bearer (no CSRF rules)."""

    def __init__(self, srv, tag="ev", email=None):
        self.srv = srv
        self.email = email or ak.unique_email(tag)
        self.token = ak.session_for(srv, email=self.email)

    def call(self, method, path, body=None, srv=None, token=None, timeout=15.0):
        return ak.call(srv or self.srv, method, V1 + path, bearer=token or self.token,
                       json_body=body, timeout=timeout)

    def ok(self, method, path, body=None, status=200, srv=None):
        r = self.call(method, path, body, srv=srv)
        assert r.status == status, f"{method} {path} {body!r:.200}: {r!r}"
        return r.json()["data"] if status != 204 else None

    def note(self, title=None, content="c", srv=None):
        return self.ok("POST", "/notes", {"title": title or f"n-{uuid.uuid4().hex[:8]}",
                                          "content": content}, 201, srv=srv)

    def project(self, name="P"):
        return self.ok("POST", "/projects", {"name": name}, 201)

    def task(self, project_id, title="T"):
        return self.ok("POST", "/tasks", {"project_id": project_id, "title": title}, 201)

    def delete(self, path):
        r = self.call("DELETE", path)
        assert r.status in (200, 204), f"DELETE {path}: {r!r}"

    def stream(self, srv=None, auth="bearer", connected=True, **kw):
        return open_stream(srv or self.srv, self.token, auth=auth, connected=connected, **kw)


def open_stream(srv, token, auth="bearer", connected=True, timeout=None, **kw):
    """An SseStream with the session as Bearer or cookie; ``connected``:
    wait for the ": connected" comment (the headers have been sent, so every
    later write must arrive)."""
    if auth == "bearer":
        kw["bearer"] = token
    else:
        kw["cookie"] = token
    s = SseStream(srv, timeout=timeout or DELIVERY_S, **kw)
    if connected and s.status == 200:
        wait_connected(s)
    return s


def wait_connected(s, timeout=None):
    deadline = time.monotonic() + (timeout or DELIVERY_S)
    while True:
        for i, (kind, value) in enumerate(s.pending):
            if kind == "comment" and value == "connected":
                del s.pending[:i + 1]
                return
        s.pump(deadline)


def expect(ev, type_, row_id, data, owner=None):
    assert ev.type == type_, f"want {type_} of {row_id}, got {ev.type}: {ev.body}"
    assert ev.row_id == row_id, f"{type_}: row_id {ev.row_id}, want {row_id}: {ev.body}"
    assert ev.data == data, f"{type_}: data {ev.data!r}, want what the API answered {data!r}"
    if owner is not None:
        assert ev.owner == owner, ev.body
    return ev


def sentinel(s, user, before=()):
    """Write a note and read up to its event: returns the events before it
    (what the stream had to say about the writes made earlier).  ``before``:
    rows written before the stream opened (without an id, or after a reset,
    "a few from just before may be" delivered too): their events are left
    out."""
    n = user.note(title="sentinel " + uuid.uuid4().hex[:6])
    got = s.until(lambda e: e.type == "notes.created" and e.row_id == n["id"])
    return [e for e in got[:-1] if e.row_id not in set(before)]


def next_new_event(s, before=()):
    """The next event that is not about a row of ``before`` (see sentinel)."""
    while True:
        ev = s.next_event()
        if ev.row_id not in set(before):
            return ev


def db_execute(srv, services, sql, params=()):
    """Run SQL on the instance's database behind its back (sqlite3 on
    DB_PATH; psql as the PostgreSQL superuser).  Returns rows."""
    if kilnhttp.STORES == "embedded":
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            cur = con.execute(sql, params)
            rows = cur.fetchall()
            con.commit()
            return rows
        finally:
            con.close()
    text = sql
    for p in params:
        text = text.replace("?", "'" + str(p).replace("'", "''") + "'", 1)
    return services.rows(text)


@pytest.fixture(scope="module")
def srv(module_kiln):
    return ak.start_kiln(module_kiln)


@pytest.fixture
def alice(srv):
    return User(srv, "alice")


@pytest.fixture
def bob(srv):
    return User(srv, "bob")


@pytest.fixture
def maybe_services():
    return kilnhttp.services() if kilnhttp.STORES != "embedded" else None


# --------------------------------------------------------------------------
# the response
# --------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [V1, ALIAS])
@pytest.mark.parametrize("auth", ["bearer", "cookie"])
def test_stream_head_and_first_bytes(srv, alice, prefix, auth):
    s = open_stream(srv, alice.token, auth=auth, path=prefix + "/events", connected=False)
    with s:
        h = s.headers
        assert h.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream", h
        assert h.get("cache-control", "").lower() == "no-store", h
        assert h.get("x-accel-buffering", "").lower() == "no", h
        assert "chunked" in h.get("transfer-encoding", "").lower(), h
        assert "content-length" not in h, h
        kilnhttp.assert_request_id(s.response)
        deadline = time.monotonic() + DELIVERY_S
        want = b"retry: 2000\n: connected\n\n"
        while len(s.body) < len(want):
            assert s.pump(deadline), f"stream ended early: {bytes(s.body)!r}"
        assert bytes(s.body).startswith(want), f"first bytes {bytes(s.body)[:60]!r}, want {want!r}"
        assert s.items[:2] == [("retry", 2000), ("comment", "connected")], s.items
        # And it is live: a write arrives.
        n = alice.note()
        expect(s.next_event(), "notes.created", n["id"], n)


def test_http_1_0_gets_the_stream_unchunked(srv, alice):
    s = SseStream(srv, bearer=alice.token, version="HTTP/1.0", timeout=DELIVERY_S)
    with s:
        wait_connected(s)
        assert bytes(s.body).startswith(b"retry: 2000\n: connected\n\n"), bytes(s.body)[:60]
        n = alice.note()
        expect(s.next_event(), "notes.created", n["id"], n)


def test_over_tls(kiln):
    srv = ak.start_kiln(kiln, SSL_SELF_SIGNED="true", EVENTS_HEARTBEAT_SECONDS=1)
    assert srv.tls
    u = User(srv, "tls")
    with u.stream() as s:
        n = u.note()
        expect(s.next_event(), "notes.created", n["id"], n)
        kind, value = s.next_item(timeout=3)
        assert (kind, value) == ("comment", "heartbeat"), (kind, value)
        u.delete(f"/notes/{n['id']}")
        expect(s.next_event(), "notes.deleted", n["id"], None)
        r = ak.logout(srv, u.token)
        assert r.status in (200, 204, 302), r
        s.wait_closed(timeout=5)


def test_what_a_client_sends_on_a_stream_is_ignored(srv, alice):
    """A request pipelined behind the stream's is never answered, and bytes
    sent on the stream later change nothing."""
    s = SseStream(srv, bearer=alice.token, timeout=DELIVERY_S,
                  pipelined=kilnhttp.http_request("GET", "/livez"))
    with s:
        wait_connected(s)
        s.conn.send(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(512))
        n = alice.note()
        expect(s.next_event(), "notes.created", n["id"], n)
        assert b"HTTP/1.1" not in bytes(s.body), "a pipelined request was answered inside the stream"


@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_needs_a_session(srv, prefix):
    s = SseStream(srv, path=prefix + "/events", expect=401)
    ak.assert_unauthenticated(s.response)
    s = SseStream(srv, path=prefix + "/events", bearer="not-a-session", expect=401)
    ak.assert_unauthenticated(s.response)
    s = SseStream(srv, path=prefix + "/events", cookie=ak.tamper(ak.session_for(srv), 5),
                  expect=401)
    ak.assert_unauthenticated(s.response)


@pytest.mark.parametrize("query", ["resources=bogus", "resources=notes,bogus", "resources=users",
                                   "resources=audit"])
def test_unknown_resource_is_400(srv, alice, query):
    s = alice.stream(query=query, expect=400, connected=False)
    kilnhttp.assert_error(s.response, 400, "invalid_request")


@pytest.mark.parametrize("value", ["abc", "-1", "+1", "1.5", "1e3", "0x10", " 12x",
                                   "12345678901234567890", "1 2"])
@pytest.mark.parametrize("where", ["header", "query"])
def test_malformed_last_event_id_is_400(srv, alice, value, where):
    if where == "header":
        s = alice.stream(last_event_id=value, expect=400, connected=False)
    else:
        s = alice.stream(query={"last_event_id": value}, expect=400, connected=False)
    kilnhttp.assert_error(s.response, 400, "invalid_request")


def test_empty_last_event_id_query_is_400(srv, alice):
    s = alice.stream(query="last_event_id=", expect=400, connected=False)
    kilnhttp.assert_error(s.response, 400, "invalid_request")


# --------------------------------------------------------------------------
# what arrives
# --------------------------------------------------------------------------

@pytest.mark.parametrize("auth", ["bearer", "cookie"])
def test_own_note_changes_arrive_with_the_answered_json(srv, alice, auth):
    with alice.stream(auth=auth) as s:
        n = alice.note(title="first", content="body")
        created = expect(s.next_event(), "notes.created", n["id"], n)
        owner = created.owner
        u = alice.ok("PATCH", f"/notes/{n['id']}", {"title": "renamed"})
        expect(s.next_event(), "notes.updated", n["id"], u, owner)
        u2 = alice.ok("PUT", f"/notes/{n['id']}", {"title": "put", "content": "x"})
        expect(s.next_event(), "notes.updated", n["id"], u2, owner)
        a = alice.ok("POST", f"/notes/{n['id']}/archive")
        expect(s.next_event(), "notes.archived", n["id"], a, owner)
        ua = alice.ok("POST", f"/notes/{n['id']}/unarchive")
        expect(s.next_event(), "notes.unarchived", n["id"], ua, owner)
        alice.delete(f"/notes/{n['id']}")
        expect(s.next_event(), "notes.deleted", n["id"], None, owner)
        s.expect_no_event(0.5)


def test_text_that_looks_like_framing_stays_inside_the_data(srv, alice):
    """Newlines, CRs, "data:"/"id:" lines and non-ASCII in a row cannot
    break the framing: the event's data is the answered JSON."""
    with alice.stream() as s:
        title = "a\nb\r\nc\rd 🎉 \u2028\u2029 é"
        content = "\n\nid: 1\ndata: {\"forged\": true}\n\nevent: reset\r\n\r\n: comment\n\x7f"
        n = alice.note(title=title, content=content)
        assert n["title"] == title and n["content"] == content, n
        ev = expect(s.next_event(), "notes.created", n["id"], n)
        assert ev.msg.data.count("\n") == 0, "the JSON of an event is one data line"
        assert sentinel(s, alice) == []


def test_the_outbox_row_matches_the_event(srv, alice, maybe_services):
    """What the stream says is what the events table holds (owner = the
    user's id; data = the row's JSON, NULL for a delete)."""
    with alice.stream() as s:
        n = alice.note(title="row")
        created = s.next_event()
        alice.delete(f"/notes/{n['id']}")
        deleted = s.next_event()
    uid = db_execute(srv, maybe_services, "SELECT id FROM users WHERE email = ?", (alice.email,))
    assert [created.owner] == [r[0] for r in uid], (created.owner, uid)
    for ev in (created, deleted):
        rows = db_execute(srv, maybe_services,
                          "SELECT resource, action, row_id, owner, data FROM events WHERE id = ?",
                          (ev.id,))
        assert len(rows) == 1, rows
        resource, action, row_id, owner, data = rows[0]
        assert (resource, action, row_id, owner) == (ev.resource, ev.action, ev.row_id, ev.owner)
        if ev.action == "deleted":
            assert data in (None, ""), data
        else:
            # PostgreSQL stores the written row as row_to_json makes it
            # (timestamps in its own form); the stream shows the API's.
            assert same_row(json.loads(data), ev.data), (data, ev.data)


def same_row(stored, shown):
    def instant(v):
        if isinstance(v, str) and len(v) >= 20 and v[10] == "T":
            return datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return v
    return (list(stored) == list(shown)
            and all(instant(stored[k]) == instant(shown[k]) for k in stored))


def test_projects_and_tasks_and_the_cascade(srv, alice):
    with alice.stream() as s:
        p = alice.project("Launch")
        owner = expect(s.next_event(), "projects.created", p["id"], p).owner
        t1 = alice.task(p["id"], "one")
        expect(s.next_event(), "tasks.created", t1["id"], t1, owner)
        t2 = alice.task(p["id"], "two")
        expect(s.next_event(), "tasks.created", t2["id"], t2, owner)
        t1u = alice.ok("PATCH", f"/tasks/{t1['id']}", {"status": "done"})
        expect(s.next_event(), "tasks.updated", t1["id"], t1u, owner)
        pu = alice.ok("PATCH", f"/projects/{p['id']}", {"description": "soon"})
        expect(s.next_event(), "projects.updated", p["id"], pu, owner)
        alice.delete(f"/tasks/{t2['id']}")
        expect(s.next_event(), "tasks.deleted", t2["id"], None, owner)
        t3 = alice.task(p["id"], "three")
        expect(s.next_event(), "tasks.created", t3["id"], t3, owner)
        alice.delete(f"/projects/{p['id']}")
        got = s.collect(3)
        assert sorted((e.type, e.row_id) for e in got) == sorted(
            [("tasks.deleted", t1["id"]), ("tasks.deleted", t3["id"]),
             ("projects.deleted", p["id"])]), got
        assert all(e.data is None and e.owner == owner for e in got), got
        assert len({e.id for e in got}) == 3, got
        assert sentinel(s, alice) == []


def test_another_users_changes_never_arrive(srv, alice, bob):
    with alice.stream() as sa, bob.stream() as sb:
        a1 = alice.note(title="alice 1")
        b1 = bob.note(title="bob 1")
        bp = bob.project("bob's")
        bob.ok("PATCH", f"/notes/{b1['id']}", {"title": "bob 1b"})
        # bob cannot touch alice's note: 404, and no event for anyone.
        r = bob.call("DELETE", f"/notes/{a1['id']}")
        kilnhttp.assert_error(r, 404, "note_not_found")
        r = bob.call("PATCH", f"/notes/{a1['id']}", {"title": "stolen"})
        kilnhttp.assert_error(r, 404, "note_not_found")
        bob.delete(f"/projects/{bp['id']}")
        a2 = alice.note(title="alice 2")
        got_a = sa.until(lambda e: e.row_id == a2["id"])
        assert [(e.type, e.row_id) for e in got_a] == [("notes.created", a1["id"]),
                                                       ("notes.created", a2["id"])], got_a
        got_b = sentinel(sb, bob)
        assert [(e.type, e.row_id) for e in got_b] == [
            ("notes.created", b1["id"]), ("projects.created", bp["id"]),
            ("notes.updated", b1["id"]), ("projects.deleted", bp["id"])], got_b
        assert got_a[0].owner != got_b[0].owner
        assert sentinel(sa, alice) == []


@pytest.mark.parametrize("resources,kinds", [
    ("notes", {"notes"}), ("tasks", {"tasks"}), ("projects,tasks", {"projects", "tasks"}),
    ("notes,projects,tasks", {"notes", "projects", "tasks"})])
def test_resources_narrows_the_stream(srv, alice, resources, kinds):
    with alice.stream(query={"resources": resources}) as s, alice.stream() as everything:
        n = alice.note()
        p = alice.project()
        t = alice.task(p["id"])
        alice.delete(f"/projects/{p['id']}")
        all_events = everything.collect(5)
        want = [(e.type, e.row_id) for e in all_events if e.resource in kinds]
        # A last change every narrowed stream shows closes the sequence.
        last = alice.project("last")
        alice_last = ("projects.created", last["id"])
        if "projects" in kinds:
            want.append(alice_last)
            got = s.until(lambda e: (e.type, e.row_id) == alice_last)
        else:
            last_t = alice.task(last["id"], "last")
            alice_last = ("tasks.created", last_t["id"])
            if "tasks" in kinds:
                want.append(alice_last)
                got = s.until(lambda e: (e.type, e.row_id) == alice_last)
            else:
                last_n = alice.note(title="last")
                want.append(("notes.created", last_n["id"]))
                got = s.until(lambda e: e.row_id == last_n["id"])
        assert [(e.type, e.row_id) for e in got] == want, got
        assert n["id"] in {e.row_id for e in all_events}


def test_resume_with_resources(srv, alice):
    with alice.stream(query={"resources": "tasks"}) as s:
        p = alice.project()
        t1 = alice.task(p["id"], "t1")
        ev1 = expect(s.next_event(), "tasks.created", t1["id"], t1)
    alice.note()
    t2 = alice.task(p["id"], "t2")
    alice.note()
    with alice.stream(query={"resources": "tasks", "last_event_id": ev1.sse_id},
                      connected=False) as s2:
        expect(s2.next_event(), "tasks.created", t2["id"], t2)
        t3 = alice.task(p["id"], "t3")
        expect(s2.next_event(), "tasks.created", t3["id"], t3)


def test_failed_writes_have_no_event(srv, alice, bob):
    p = alice.project()
    n = alice.note()
    with alice.stream() as s:
        r = alice.call("POST", "/notes", {})
        kilnhttp.assert_error(r, 422, "validation_failed")
        r = alice.call("POST", "/notes", {"title": "x" * 100000})
        assert r.status in (413, 422), r
        r = alice.call("POST", "/tasks", {"project_id": MISSING, "title": "orphan"})
        kilnhttp.assert_error(r, 404, "project_not_found")
        r = alice.call("PATCH", f"/tasks/{MISSING}", {"title": "x"})
        kilnhttp.assert_error(r, 404, "task_not_found")
        r = alice.call("PATCH", f"/notes/{n['id']}", {"title": ""})
        kilnhttp.assert_error(r, 422, "validation_failed")
        r = alice.call("POST", f"/notes/{MISSING}/archive")
        kilnhttp.assert_error(r, 404, "note_not_found")
        r = alice.call("DELETE", f"/projects/{MISSING}")
        kilnhttp.assert_error(r, 404, "project_not_found")
        r = bob.call("POST", "/tasks", {"project_id": p["id"], "title": "into alice's"})
        kilnhttp.assert_error(r, 404, "project_not_found")
        r = bob.call("DELETE", f"/projects/{p['id']}")
        kilnhttp.assert_error(r, 404, "project_not_found")
        assert sentinel(s, alice, [p["id"], n["id"]]) == [], "failed writes produced events"
    shown = alice.ok("GET", f"/projects/{p['id']}")
    assert {k: v for k, v in shown.items() if k in p} == p


# --------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------

def resume(user, last, how, **kw):
    if how == "header":
        return user.stream(last_event_id=last, connected=False, **kw)
    return user.stream(query={"last_event_id": last}, connected=False, **kw)


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_a_disconnect_misses_nothing_and_repeats_nothing(srv, alice, bob, how):
    s = alice.stream()
    made = [alice.note(title=f"before {i}") for i in range(3)]
    got = s.collect(3)
    for ev, n in zip(got, made):
        expect(ev, "notes.created", n["id"], n)
    s.close()
    # While away: creates, an update, a delete, and bob's noise.
    later = [alice.note(title=f"away {i}") for i in range(3)]
    bob.note()
    upd = alice.ok("PATCH", f"/notes/{made[0]['id']}", {"content": "changed"})
    alice.delete(f"/notes/{made[1]['id']}")
    s2 = resume(alice, got[-1].sse_id, how)
    with s2:
        assert s2.status == 200
        missed = s2.collect(5)
        for ev, n in zip(missed, later):
            expect(ev, "notes.created", n["id"], n)
        expect(missed[3], "notes.updated", made[0]["id"], upd)
        expect(missed[4], "notes.deleted", made[1]["id"], None)
        assert not any(m.type == "reset" for k, m in s2.items if k == "message")
        # then live, without a repeat
        assert sentinel(s2, alice) == []
        seen = [e.id for e in got + missed]
        assert len(set(seen)) == len(seen), seen
    # Resuming from the middle of what was received gives the rest again.
    with resume(alice, got[0].sse_id, how) as s3:
        again = s3.collect(7)
        assert [e.id for e in again] == [e.id for e in got[1:] + missed], again


def test_resume_after_more_than_a_batch_of_missed_events(srv):
    """1100 changes while away (the outbox is read in batches of a few
    hundred rows): all of them, once, in commit order, then live."""
    u = User(srv, "away")
    with u.stream() as s:
        first = u.note(title="first")
        ev0 = expect(s.next_event(), "notes.created", first["id"], first)
    made = {}
    lock = threading.Lock()

    def writer(k):
        for i in range(137 if k < 4 else 138):
            r = u.call("POST", "/notes", {"title": f"m{k}-{i}"}, timeout=30)
            assert r.status == 201, r
            with lock:
                made[r.json()["data"]["id"]] = (k, i)

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert len(made) == 1100, len(made)
    with u.stream(last_event_id=ev0.sse_id, connected=False, timeout=30) as s2:
        got = s2.collect(1100, timeout=40)
        assert sentinel(s2, u) == []
    assert len({e.id for e in got}) == 1100
    assert {e.row_id for e in got} == set(made)
    # each writer's creates in the order it made them
    for k in range(8):
        seq = [made[e.row_id][1] for e in got if made[e.row_id][0] == k]
        assert seq == sorted(seq), f"writer {k}'s creates out of order"


def test_the_header_wins_over_the_query(srv, alice):
    """EventSource keeps the URL it was opened with (?last_event_id= of an
    earlier page) and sends its newer id in the header on reconnects."""
    with alice.stream() as s:
        made = [alice.note(title=f"q{i}") for i in range(3)]
        got = s.collect(3)
    with alice.stream(last_event_id=got[1].sse_id, query={"last_event_id": got[0].sse_id},
                      connected=False) as s2:
        ev = s2.next_event()
        expect(ev, "notes.created", made[2]["id"], made[2])
        assert sentinel(s2, alice) == []
    # A malformed query next to a good header: either answer, never a 5xx.
    bad = alice.stream(last_event_id=got[1].sse_id, query={"last_event_id": "x"},
                       connected=False, expect=None)
    assert bad.status in (200, 400), bad.response
    bad.close()


def first_message(s):
    return s.next_message()


@pytest.mark.parametrize("how", ["header", "query"])
def test_unknown_id_starts_with_one_reset(srv, alice, how):
    with resume(alice, "9" * 18, how) as s:
        m = first_message(s)
        assert m.type == "reset", f"want event: reset first, got {m!r}"
        body = m.json()
        assert isinstance(body, dict) and isinstance(body.get("reason"), str) and body["reason"], body
        # then live from now on, and no second reset
        n = alice.note()
        s.until(lambda e: e.row_id == n["id"])
        assert len([m for k, m in s.items if k == "message" and m.type == "reset"]) == 1


@pytest.mark.parametrize("value", ["9223372036854775807", "9" * 19, "0", "0" * 19])
def test_well_formed_unknown_ids_are_a_reset_not_an_error(srv, alice, value):
    """The contract: malformed is "not 1-19 digits"; any 1-19 digits is an
    id, and one not in the caller's outbox is a reset."""
    with alice.stream(last_event_id=value, connected=False, expect=None) as s:
        assert s.status == 200, f"Last-Event-ID: {value}: {s.response!r}"
        assert first_message(s).type == "reset"


def test_another_users_id_is_a_reset_and_shows_nothing_of_theirs(srv, alice, bob):
    with bob.stream() as sb:
        bob_notes = [bob.note(title=f"bob {i}") for i in range(3)]
        bob_events = sb.collect(3)
    before = alice.note(title="alice before")
    with resume(alice, bob_events[0].sse_id, "header") as s:
        m = first_message(s)
        assert m.type == "reset", f"resuming from another user's id must reset: {m!r}"
        assert sentinel(s, alice, [before["id"]]) == []
    assert len(bob_notes) == 3


def test_pruned_id_starts_with_one_reset(srv, alice, maybe_services):
    with alice.stream() as s:
        made = [alice.note(title=f"old {i}") for i in range(3)]
        got = s.collect(3)
    owner = got[0].owner
    # Retention prunes the oldest rows: the caller's first two events go.
    db_execute(srv, maybe_services, "DELETE FROM events WHERE owner = ? AND id <= ?",
               (owner, got[1].id))
    with resume(alice, got[1].sse_id, "header") as s2:
        m = first_message(s2)
        assert m.type == "reset", f"resuming from a pruned id must reset first: {m!r}"
        n = alice.note()
        expect(next_new_event(s2, [m["id"] for m in made]), "notes.created", n["id"], n)
    # The id still there resumes normally.
    with resume(alice, got[2].sse_id, "query") as s3:
        n2 = alice.note()
        expect(s3.next_event(), "notes.created", n["id"], n)
        expect(s3.next_event(), "notes.created", n2["id"], n2)
        assert not [m for k, m in s3.items if k == "message" and m.type == "reset"]


def test_a_client_that_does_not_read_is_closed_and_resumes(srv):
    """Over 1 MiB waiting for a client that does not read: the stream is
    closed; resuming from the last id received gives everything else."""
    u = User(srv, "slow")
    s = u.stream()
    notes = [u.note(title=f"big {k}") for k in range(8)]
    body = "x" * 10000
    answered, unknown, failed = [], set(), []
    lock = threading.Lock()

    def writer(k):
        # one note per writer: no two writes wait on one row's lock
        for i in range(100):
            tail = f"{k}-{i}".rjust(8, "x")
            r = u.call("PATCH", f"/notes/{notes[k]['id']}", {"content": body[:-8] + tail})
            with lock:
                if r.status == 200:
                    answered.append(r.json()["data"]["content"][-8:])
                else:
                    failed.append(r)
                    if r.status >= 500:      # outcome unknown to the client
                        unknown.add(tail)

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert len(answered) >= 790, f"{len(failed)} writes failed: {failed[:3]}"
    # ~8 MB of events for a client that read nothing (more than the
    # kernel's socket buffers, 4 MB at most for the server's send buffer
    # here, and the 1 MiB the server may queue): the stream must have been
    # closed; what it had queued still arrives before the end.
    got = []
    try:
        while True:
            got.append(s.next_event(timeout=5))
    except StreamClosed:
        pass
    s.close()
    assert len(got) >= 8 and {e.type for e in got[:8]} == {"notes.created"}, got[:8]
    assert len(got) < 8 + len(answered), "the stream was not closed although its client read nothing"
    with u.stream(last_event_id=got[-1].sse_id, connected=False) as s2:
        rest = sentinel(s2, u)
    ids = [e.id for e in got + rest]
    assert len(set(ids)) == len(ids), "duplicates across the resume"
    tails = [e.data["content"][-8:] for e in (got + rest)[8:]]
    assert len(set(tails)) == len(tails), "one write, two events"
    missing = set(answered) - set(tails)
    assert not missing, f"{len(missing)} answered writes have no event (e.g. {sorted(missing)[:3]})"
    extra = set(tails) - set(answered) - unknown
    assert not extra, f"events of no write: {sorted(extra)[:3]}"


def test_retention_prunes_and_a_pruned_id_resets(kiln, maybe_services):
    """EVENTS_RETENTION_HOURS=1, pruned every second: events made to look
    two hours old go (the first prune runs a few seconds after start), and
    resuming from one of them is a reset."""
    srv = ak.start_kiln(kiln, EVENTS_RETENTION_HOURS=1, EVENTS_PRUNE_SECONDS=1)
    u = User(srv, "prune")
    with u.stream() as s:
        made = [u.note(title=f"p{i}") for i in range(3)]
        got = s.collect(3)
    old = (got[0].id, got[1].id)
    if kilnhttp.STORES == "embedded":
        db_execute(srv, None, "UPDATE events SET at = '2000-01-01T00:00:00.000000Z' "
                              "WHERE id IN (?, ?)", old)
    else:
        db_execute(srv, maybe_services, "UPDATE events SET at = now() - interval '2 hours' "
                                        "WHERE id IN (?, ?)", old)
    deadline = time.monotonic() + 20
    while True:
        left = db_execute(srv, maybe_services, "SELECT id FROM events WHERE id IN (?, ?, ?)",
                          (old[0], old[1], got[2].id))
        left = sorted(int(r[0]) for r in left)
        if left == [got[2].id]:
            break
        assert time.monotonic() < deadline, f"not pruned within 20 s: ids left {left}"
        time.sleep(0.25)
    with resume(u, got[1].sse_id, "query") as s2:
        assert first_message(s2).type == "reset"
        n = u.note()
        expect(next_new_event(s2, [m["id"] for m in made]), "notes.created", n["id"], n)
    with resume(u, got[2].sse_id, "header") as s3:
        expect(s3.next_event(), "notes.created", n["id"], n)


@needs_valkey
def test_a_deleted_session_is_found_within_the_check_interval(kiln, services):
    srv = ak.start_kiln(kiln, EVENTS_SESSION_CHECK_SECONDS=1)
    u = User(srv, "gone")
    s = u.stream()
    ak.redis_cli(services, "DEL", f"backend_session:{u.token.split('.')[0]}")
    t0 = time.monotonic()
    s.wait_closed(timeout=6)
    s.close()
    assert time.monotonic() - t0 < 6
    ak.assert_unauthenticated(SseStream(srv, bearer=u.token, expect=401).response)


# --------------------------------------------------------------------------
# heartbeats
# --------------------------------------------------------------------------

def test_heartbeat_comments(kiln):
    srv = ak.start_kiln(kiln, EVENTS_HEARTBEAT_SECONDS=1)
    u = User(srv)
    with u.stream() as s:
        t0 = time.monotonic()
        beats = []
        deadline = t0 + 4.5
        while len(beats) < 3:
            kind, value = s.next_item(max(0.0, deadline - time.monotonic()))
            assert kind == "comment", f"only comments expected on an idle stream: {(kind, value)}"
            assert value == "heartbeat", value
            beats.append(time.monotonic() - t0)
        assert beats[-1] > 1.5, f"heartbeats came too fast: {beats}"
        assert b": heartbeat\n\n" in bytes(s.body), bytes(s.body)
        # events and heartbeats interleave
        n = u.note()
        ev = s.next_event()
        expect(ev, "notes.created", n["id"], n)


@pytest.mark.parametrize("value", ["0", "3601", "abc", "-1"])
def test_heartbeat_setting_out_of_range_is_refused(value):
    env = kilnhttp.clean_env(kilnhttp.free_port(), {"EVENTS_HEARTBEAT_SECONDS": value})
    r = kilnhttp.run_kiln(["serve"], env=env, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    lines = [line for line in r.stderr.decode(errors="replace").splitlines()
             if line.startswith("config:")]
    assert any("EVENTS_HEARTBEAT_SECONDS" in line for line in lines), lines


# --------------------------------------------------------------------------
# logout closes the streams
# --------------------------------------------------------------------------

def test_logout_closes_the_sessions_streams(srv):
    u = User(srv)
    other = User(srv)
    s_cookie = u.stream(auth="cookie")
    s_bearer = u.stream(auth="bearer")
    s_other = other.stream()
    t0 = time.monotonic()
    r = ak.logout(srv, u.token)
    assert r.status in (200, 204, 302), r
    for s in (s_cookie, s_bearer):
        s.wait_closed(timeout=5)
        assert time.monotonic() - t0 < 5
        s.close()
    # Another session's stream is untouched.
    n = other.note()
    expect(s_other.next_event(), "notes.created", n["id"], n)
    s_other.close()
    s = SseStream(srv, bearer=u.token, expect=401)
    ak.assert_unauthenticated(s.response)


def test_a_new_login_over_the_old_session_closes_its_streams(srv):
    """Logging in again while carrying a session ends that session (and so
    its streams): the old token is refused from then on."""
    u = User(srv, "relogin")
    s = u.stream(auth="cookie")
    _, fresh = ak.dev_login(srv, email=u.email, cookies={ak.SESSION_COOKIE: u.token})
    assert fresh != u.token
    t0 = time.monotonic()
    s.wait_closed(timeout=5)
    s.close()
    assert time.monotonic() - t0 < 5
    ak.assert_unauthenticated(SseStream(srv, bearer=u.token, expect=401).response)
    u.token = fresh
    with u.stream() as s2:
        n = u.note()
        expect(s2.next_event(), "notes.created", n["id"], n)


def test_logout_closes_every_stream_of_the_session(srv):
    u = User(srv, "many")
    streams = [u.stream(auth="bearer" if i % 2 else "cookie") for i in range(40)]
    r = ak.logout(srv, u.token)
    assert r.status in (200, 204, 302), r
    t0 = time.monotonic()
    for s in streams:
        s.wait_closed(timeout=max(0.5, t0 + 5 - time.monotonic()))
        s.close()


def test_clients_that_vanish_mid_stream_leave_the_server_healthy(srv):
    """Streams reset by their clients (RST, no FIN) while events are being
    written to them; the instance goes on serving, and a new stream works
    (under ASan this is where a use after free would show)."""
    u = User(srv, "vanish")
    streams = [u.stream() for _ in range(30)]
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            r = u.call("POST", "/notes", {"title": f"v{i}", "content": "y" * 2000})
            if r.status != 201:
                errors.append(r)
            i += 1

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    rng = random.Random(3)
    for s in streams:
        time.sleep(rng.random() * 0.05)
        s.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    stop.set()
    w.join(20)
    assert not errors, errors[:3]
    with u.stream() as s:
        n = u.note(title="after")
        s.until(lambda e: e.row_id == n["id"])
    assert ak.call(srv, "GET", "/livez").status == 200


@needs_valkey
def test_logout_on_another_instance_closes_the_stream(kiln):
    skb = ak.secret_key_base()
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=skb)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=skb)
    u = User(a)
    s = open_stream(b, u.token)
    t0 = time.monotonic()
    r = ak.logout(a, u.token)
    assert r.status in (200, 204, 302), r
    # Well within EVENTS_SESSION_CHECK_SECONDS (15 by default): the logout
    # itself was published.
    s.wait_closed(timeout=5)
    took = time.monotonic() - t0
    s.close()
    assert took < 5, took


@needs_valkey
def test_logout_on_another_instance_closes_the_stream_once_subscribed(kiln):
    """As above, after proving B's Valkey subscription is up (B polls the
    outbox only every 10 minutes, yet gets A's write within seconds)."""
    skb = ak.secret_key_base()
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=skb)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=skb, EVENTS_POLL_MS=600000)
    u = User(a)
    s = open_stream(b, u.token)
    n = u.note(srv=a)
    expect(s.next_event(), "notes.created", n["id"], n)
    t0 = time.monotonic()
    r = ak.logout(a, u.token)
    assert r.status in (200, 204, 302), r
    s.wait_closed(timeout=5)
    took = time.monotonic() - t0
    s.close()
    assert took < 5, took


# --------------------------------------------------------------------------
# SIGTERM with 500 open streams
# --------------------------------------------------------------------------

def test_sigterm_with_500_streams(kiln):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    count = 500
    srv = ak.start_kiln(kiln)
    users = [User(srv) for _ in range(10)]
    streams = []
    try:
        for i in range(count):
            streams.append(open_stream(srv, users[i % len(users)].token, timeout=20,
                                       connected=False))
        for s in streams:
            wait_connected(s, timeout=20)
            s.items.clear()
            s.conn.sock.setblocking(False)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        sel = selectors.DefaultSelector()
        for s in streams:
            sel.register(s.conn.sock, selectors.EVENT_READ, s)
        open_ = len(streams)
        limit = 10.0 if SANITIZED else 5.0
        while open_ and time.monotonic() - t0 < limit:
            for key, _ in sel.select(timeout=0.2):
                s = key.data
                try:
                    data = s.conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except (ConnectionResetError, OSError):
                    data = b""
                    s.reset = True
                if data:
                    s._take(data)
                else:
                    s.eof = True
                    sel.unregister(s.conn.sock)
                    open_ -= 1
        rc = srv.wait_exit(max(0.1, t0 + limit - time.monotonic()))
        took = time.monotonic() - t0
        assert open_ == 0, f"{open_} of {count} streams still open {limit} s after SIGTERM"
        no_retry = [i for i, s in enumerate(streams) if not any(k == "retry" for k, _ in s.items)]
        assert not no_retry, f"{len(no_retry)} streams got no retry: field (e.g. #{no_retry[0]}: " \
                             f"{bytes(streams[no_retry[0]].body)[-200:]!r})"
        retries = {v for s in streams for k, v in s.items if k == "retry"}
        assert retries == {1000}, retries
        unended = [i for i, s in enumerate(streams) if not s.decoder.done]
        assert not unended, f"{len(unended)} streams closed without the last chunk"
        assert rc == 0, f"exit code {rc} (None: still running)"
        print(f"SIGTERM with {count} streams: all closed and exited in {took:.2f} s")
        if not SANITIZED:
            assert took < 2.0, f"exit took {took:.2f} s with {count} streams"
    finally:
        for s in streams:
            s.close()


def test_streams_on_several_loops_get_the_same_feed(kiln):
    """HTTP_LOOPS=4: streams spread over the loops (SO_REUSEPORT) all get
    every change, in one order, and a logout ends all of them."""
    srv = ak.start_kiln(kiln, HTTP_LOOPS=4)
    u = User(srv, "loops")
    streams = [u.stream() for _ in range(24)]
    try:
        made = [u.note(title=f"l{i}") for i in range(15)]
        want = [n["id"] for n in made]
        orders = []
        for s in streams:
            orders.append([e.row_id for e in s.collect(15)])
        assert all(o == want for o in orders), "a stream missed or reordered changes"
        r = ak.logout(srv, u.token)
        assert r.status in (200, 204, 302), r
        t0 = time.monotonic()
        for s in streams:
            s.wait_closed(timeout=max(0.5, t0 + 5 - time.monotonic()))
    finally:
        for s in streams:
            s.close()


def test_a_draining_instance_answers_retry_and_ends(kiln):
    """A stream asked for on a keep-alive connection during the drain: 200
    with only "retry: 1000" (EventSource reconnects, elsewhere; a 503 would
    make it give up for good), the body ends, the connection closes."""
    srv = ak.start_kiln(kiln, SHUTDOWN_IDLE_GRACE_MS=3000)
    u = User(srv)
    conn = srv.connect()
    conn.send(kilnhttp.http_request("GET", "/livez"))
    assert conn.read_response().status == 200
    srv.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    s = SseStream(srv, bearer=u.token, conn=conn)
    assert s.headers.get("content-type", "").startswith("text/event-stream"), s.header_list
    s.wait_closed(2)
    s.close()
    items = s.items
    assert bytes(s.body) == b"retry: 1000\n\n", f"want only retry: 1000, got {bytes(s.body)!r}"
    assert items == [("retry", 1000)], items
    assert s.decoder.done if s.chunked else s.length == len(s.body), s.header_list
    assert srv.wait_exit(5) == 0


# --------------------------------------------------------------------------
# many writers, subscribers that come and go
# --------------------------------------------------------------------------

class Resumer(threading.Thread):
    """A subscriber that reads, disconnects at random points and resumes
    with the last id it received (header or query, alternately), until told
    to stop and it has all of ``want`` (a set of (type, row_id, data-json))."""

    def __init__(self, srv_for, token_for, seed, resume_every=(5, 40)):
        super().__init__(daemon=True)
        self.srv_for = srv_for           # () -> srv to connect to
        self.token_for = token_for       # () -> a valid token
        self.rng = random.Random(seed)
        self.resume_every = resume_every
        self.events = []
        self.last = None
        self.resumes = 0
        self.resets = []
        self.errors = []
        self.want = None
        self.stop_at = None
        self.ready = threading.Event()

    def have_all(self):
        if self.want is None:
            return False
        got = {e.key for e in self.events}
        return self.want <= got

    def run(self):
        try:
            self._run()
        except Exception as e:   # noqa: BLE001 (reported by the test)
            self.errors.append(repr(e))
        finally:
            self.ready.set()

    def _run(self):
        how = 0
        while True:
            if self.stop_at is not None and (self.have_all() or time.monotonic() > self.stop_at):
                return
            kw = {}
            if self.last is not None:
                if how % 2:
                    kw["query"] = {"last_event_id": self.last}
                else:
                    kw["last_event_id"] = self.last
                how += 1
            try:
                s = SseStream(self.srv_for(), bearer=self.token_for(), timeout=5, expect=None,
                              **kw)
            except (OSError, AssertionError) as e:
                self.errors.append(f"connect: {e!r:.200}")
                time.sleep(0.2)
                continue
            if s.status != 200:
                s.close()
                time.sleep(0.2)
                continue
            if self.last is not None:
                self.resumes += 1
            budget = self.rng.randint(*self.resume_every)
            try:
                wait_connected(s, timeout=10)
                self.ready.set()
                while budget > 0:
                    if self.stop_at is not None and (self.have_all() or
                                                     time.monotonic() > self.stop_at):
                        return
                    try:
                        m = s.next_message(timeout=1.0)
                    except StreamTimeout:
                        continue
                    if m.type == "reset":
                        self.resets.append(m.data)
                        continue
                    ev = ssekit.FeedEvent(m)
                    self.events.append(ev)
                    self.last = ev.sse_id
                    budget -= 1
            except StreamClosed:
                pass
            finally:
                s.close()


def event_keys(events):
    return [e.key for e in events]


def test_concurrent_writers_and_resuming_subscribers(srv):
    run_concurrent([srv])


@needs_valkey
def test_concurrent_writers_and_resuming_subscribers_on_two_instances(kiln):
    """The same with writes spread over two instances and each resume on
    either: every instance hands out the feed in the same (commit) order."""
    skb = ak.secret_key_base()
    run_concurrent([ak.start_kiln(kiln, SECRET_KEY_BASE=skb),
                    ak.start_kiln(kiln, SECRET_KEY_BASE=skb)])


def run_concurrent(srvs):
    srv = srvs[0]
    u = User(srv, "busy")
    other = User(srv, "quiet")
    rngs = [random.Random(100 + seed) for seed in range(4)]
    subs = [Resumer((lambda rng=rng: rng.choice(srvs)), lambda: u.token, seed)
            for seed, rng in enumerate(rngs)]
    for r in subs:
        r.start()
    for r in subs:
        assert r.ready.wait(15), "a subscriber did not connect"
    quiet = other.stream()
    writers, rounds = 32, int(os.environ.get("KILN_EVENTS_ROUNDS", "3"))   # more for a longer hunt
    outcomes = []            # (key, data or None) of every 2xx write
    failures = []
    unknown = set()          # keys (or created titles) of writes answered 5xx: outcome unknown
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def writer(i):
        barrier.wait(timeout=15)
        for k in range(rounds):
            at = srvs[(i + k) % len(srvs)]
            r = u.call("POST", "/notes", {"title": f"w{i}-{k}", "content": "x"}, timeout=30,
                       srv=at)
            if r.status != 201:
                with lock:
                    failures.append(("create", i, k, r.status))
                    if r.status >= 500:
                        unknown.add(f"w{i}-{k}")
                continue
            n = r.json()["data"]
            with lock:
                outcomes.append((("notes.created", n["id"]), n))
            r = u.call("PATCH", f"/notes/{n['id']}", {"content": f"y{k}"}, timeout=30,
                       srv=srvs[(i + k + 1) % len(srvs)])
            if r.status == 200:
                with lock:
                    outcomes.append((("notes.updated", n["id"]), r.json()["data"]))
            else:
                with lock:
                    failures.append(("update", i, k, r.status))
                    if r.status >= 500:
                        unknown.add(("notes.updated", n["id"]))
            r = u.call("DELETE", f"/notes/{n['id']}", timeout=30, srv=at)
            if r.status in (200, 204):
                with lock:
                    outcomes.append((("notes.deleted", n["id"]), None))
            else:
                with lock:
                    failures.append(("delete", i, k, r.status))
                    if r.status >= 500:
                        unknown.add(("notes.deleted", n["id"]))

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "writers stuck"
    want = {k for k, _ in outcomes}
    assert len(want) == len(outcomes), "a key answered twice?"
    for r in subs:
        r.want = want
        r.stop_at = time.monotonic() + (20 if SANITIZED else 10)
    for r in subs:
        r.join(30)
    data_of = dict(outcomes)
    problems = []
    orders = []
    for n, r in enumerate(subs):
        keys = event_keys(r.events)
        ids = [e.id for e in r.events]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            problems.append(f"subscriber {n}: {len(ids) - len(set(ids))} duplicate events "
                            f"(ids {dup[:10]}) over {r.resumes} resumes")
        missing = want - set(keys)
        extra = {e.key for e in r.events if e.key not in want and e.key not in unknown
                 and not (e.type == "notes.created" and e.data["title"] in unknown)}
        if missing:
            problems.append(f"subscriber {n}: {len(missing)} of {len(want)} events missing after "
                            f"{r.resumes} resumes, e.g. {sorted(missing)[:3]}")
        if extra:
            problems.append(f"subscriber {n}: {len(extra)} events of no 2xx write, "
                            f"e.g. {sorted(extra)[:3]}")
        if r.resets:
            problems.append(f"subscriber {n}: reset(s) on resume: {r.resets[:3]}")
        if r.errors:
            problems.append(f"subscriber {n}: errors {r.errors[:3]}")
        for e in r.events:
            if e.key in data_of and e.data != data_of[e.key]:
                problems.append(f"subscriber {n}: {e.key} data {e.data} != answered "
                                f"{data_of[e.key]}")
                break
        # per row: created, then updated, then deleted
        pos = {k: i for i, k in enumerate(keys)}
        for (t, row), _ in outcomes:
            if t == "notes.updated" and ("notes.created", row) in pos and (t, row) in pos:
                if pos[("notes.created", row)] > pos[(t, row)]:
                    problems.append(f"subscriber {n}: update of {row} before its create")
                    break
            if t == "notes.deleted" and ("notes.updated", row) in pos and (t, row) in pos:
                if pos[("notes.updated", row)] > pos[(t, row)]:
                    problems.append(f"subscriber {n}: delete of {row} before its update")
                    break
        orders.append([k for k in keys if k in want])
    assert not problems, "\n".join(problems) + f"\nwrite failures: {failures[:5]}"
    assert sum(r.resumes for r in subs) >= 4, [r.resumes for r in subs]
    for n, o in enumerate(orders[1:], 1):
        assert o == orders[0], f"subscriber {n} saw another order than subscriber 0 " \
                               f"(the feed's order is commit order)"
    assert sentinel(quiet, other) == [], "another user's stream got the busy user's events"
    quiet.close()


# --------------------------------------------------------------------------
# two instances on one PostgreSQL + Valkey
# --------------------------------------------------------------------------

@needs_valkey
def test_write_on_one_instance_reaches_a_subscriber_on_another(kiln):
    skb = ak.secret_key_base()
    # Polling the outbox every 10 minutes: what arrives within seconds came
    # through Valkey.
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=skb, EVENTS_POLL_MS=600000)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=skb, EVENTS_POLL_MS=600000)
    u = User(a)
    with u.stream(srv=b) as sb, u.stream(srv=a) as sa:
        n = u.note(srv=a)
        t0 = time.monotonic()
        expect(sb.next_event(), "notes.created", n["id"], n)
        took_b = time.monotonic() - t0
        expect(sa.next_event(), "notes.created", n["id"], n)
        upd = u.ok("PATCH", f"/notes/{n['id']}", {"title": "from b"}, srv=b)
        expect(sa.next_event(), "notes.updated", n["id"], upd)
        expect(sb.next_event(), "notes.updated", n["id"], upd)
        # and a resume on the other instance
        last = sb.items and [m for k, m in sb.items if k == "message"][-1].last_event_id
    u.note(srv=b)
    with u.stream(srv=a, last_event_id=last, connected=False) as s2:
        ev = s2.next_event()
        assert ev.type == "notes.created", ev
    assert took_b < DELIVERY_S


needs_postgres = pytest.mark.skipif(
    kilnhttp.STORES not in SERVICE_MODES,
    reason=f"KILN_STORES={kilnhttp.STORES}: needs PostgreSQL")


@needs_postgres
def test_an_unrelated_open_transaction_does_not_stall_the_feed(srv, alice, services):
    """A session of some other program, in another database of the same
    cluster, that wrote something and sits idle in its transaction (a stuck
    client, a long batch job): the feed must not wait for it to end (it may
    never end) before handing out committed events."""
    other_db = services.create_db("stall")
    holder = subprocess.Popen(
        [services.psql_bin, "-X", "-q", "-At", "-h", services.pg_socket_dir,
         "-p", str(services.pg_port), "-U", services.pg_superuser, "-d", other_db],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        holder.stdin.write(b"BEGIN;\nSELECT pg_current_xact_id();\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip().isdigit(), "the other transaction has no xid"
        with alice.stream() as s:
            n = alice.note(title="while another transaction is open")
            t0 = time.monotonic()
            try:
                ev = s.next_event(timeout=DELIVERY_S)
            except StreamTimeout:
                raise AssertionError(
                    f"a committed write was not delivered within {DELIVERY_S} s while an "
                    f"unrelated transaction (database {other_db}) was open") from None
            expect(ev, "notes.created", n["id"], n)
            assert time.monotonic() - t0 < DELIVERY_S
    finally:
        try:
            holder.stdin.write(b"COMMIT;\n")
            holder.stdin.close()
        except OSError:
            pass
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        services.drop_db(other_db)


# --------------------------------------------------------------------------
# Valkey down and back under writes
# --------------------------------------------------------------------------

@pytest.mark.disruptive
@needs_valkey
@pytest.mark.parametrize("how", ["stop", "pause"])
def test_valkey_outage_under_writes_loses_nothing(kiln, services, how):
    """Valkey stopped (connections refused; its memory, so the sessions, gone
    when it is back) or paused (SIGSTOP: connections hang) for 3 s while a
    writer writes on A and a subscriber reads on B."""
    skb = ak.secret_key_base()
    common = dict(SECRET_KEY_BASE=skb, VALKEY_CONNECT_TIMEOUT_MS=500,
                  VALKEY_COMMAND_TIMEOUT_MS=1000, EVENTS_POLL_MS=200,
                  EVENTS_SESSION_CHECK_SECONDS=1)
    a = ak.start_kiln(kiln, **common)
    b = ak.start_kiln(kiln, **common)
    email = ak.unique_email("outage")
    token = {"v": ak.session_for(a, email=email)}
    token_lock = threading.Lock()

    def fresh_token(srv):
        """Sessions live in Valkey: after its restart they are gone; log in
        again (same email, same user)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = ak.call(srv, "POST", "/auth/dev/login", json_body={"email": email, "name": "x"},
                        timeout=15)
            if r.status == 200:
                return ak.assert_session_cookie(r)
            time.sleep(0.2)
        raise AssertionError("cannot log in again after the outage")

    def current_token():
        with token_lock:
            t = token["v"]
        if ak.me(b, bearer=t, timeout=15).status == 401:
            with token_lock:
                if token["v"] == t:
                    token["v"] = fresh_token(b)
                t = token["v"]
        return t

    sub = Resumer(lambda: b, current_token, 7, resume_every=(10 ** 6, 10 ** 6))
    sub.start()
    assert sub.ready.wait(15)
    done = threading.Event()
    written = []      # (title, status)

    def writer():
        i = 0
        while not done.is_set():
            with token_lock:
                t = token["v"]
            try:
                r = ak.call(a, "POST", V1 + "/notes", bearer=t,
                            json_body={"title": f"o{i}", "content": "x"}, timeout=15)
                status = r.status
                data = r.json()["data"] if status == 201 else None
            except (OSError, AssertionError) as e:
                status, data = repr(e)[:80], None
            written.append((f"o{i}", status, data))
            if status == 401:
                with token_lock:
                    if token["v"] == t:
                        try:
                            token["v"] = fresh_token(a)
                        except AssertionError:
                            pass
            i += 1
            time.sleep(0.02)

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    time.sleep(1.5)
    name = ak.redis_service_name()
    services.ctl("stop1" if how == "stop" else "pause1", name)
    try:
        time.sleep(3)
    finally:
        services.ctl("start1" if how == "stop" else "resume1", name)
    services.wait_up("redis" if name == "redis" else "redis-tls")
    time.sleep(3)
    done.set()
    w.join(20)
    ok = [(t, d) for t, s, d in written if s == 201]
    assert len(ok) >= 20, f"too few writes succeeded: {written[:5]} ... {written[-5:]}"
    sub.want = {("notes.created", d["id"]) for _, d in ok}
    sub.stop_at = time.monotonic() + 15
    sub.join(25)
    got = [e for e in sub.events if e.type == "notes.created"]
    ids = [e.id for e in sub.events]
    assert len(ids) == len(set(ids)), "duplicate events after the outage"
    got_titles = [e.data["title"] for e in got]
    want_titles = [t for t, _ in ok]
    # A write answered 5xx (or not at all) may or may not have committed.
    unknown = {t for t, st, _ in written if not isinstance(st, int) or st >= 500}
    not_2xx = sorted(set(got_titles) - set(want_titles) - unknown)
    missing = [t for t in want_titles if t not in set(got_titles)]
    assert not missing, f"{len(missing)} of {len(want_titles)} 2xx writes never arrived: " \
                        f"{missing[:10]} (resumes {sub.resumes}, errors {sub.errors[:3]})"
    assert not not_2xx, f"events for writes not answered 201: " \
                        f"{[x for x in written if x[0] in not_2xx][:5]}"
    assert [t for t in got_titles if t not in unknown] == want_titles, \
        "events out of commit order"
    assert not sub.resets, sub.resets
    failed = [x for x in written if x[1] != 201]
    assert failed, "no write failed: was Valkey really down?"
    print(f"outage: {len(ok)} writes answered 201, {len(failed)} not "
          f"({sorted({str(x[1]) for x in failed})}); subscriber resumed {sub.resumes} times")


# --------------------------------------------------------------------------
# PostgreSQL down and back with streams open
# --------------------------------------------------------------------------

@pytest.mark.disruptive
@pytest.mark.skipif(
    kilnhttp.STORES != "postgres",
    reason="PostgreSQL direct only: through pgbouncer a query waits in pgbouncer's queue for "
           "the whole outage instead of failing, which is pgbouncer's behaviour, not the feed's")
def test_database_outage_with_open_streams_loses_nothing(kiln, services):
    """PostgreSQL stopped for 3 s and started again while streams are open
    on two instances: the feed comes back by itself (the subscriber resumes
    if its stream was closed meanwhile), and every write answered 201,
    before and after, arrives once."""
    skb = ak.secret_key_base()
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=skb)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=skb)
    u = User(a, "pgdown")
    subs = [Resumer(lambda: b, lambda: u.token, 11, resume_every=(10 ** 6, 10 ** 6)),
            Resumer(lambda: a, lambda: u.token, 12, resume_every=(10 ** 6, 10 ** 6))]
    for r in subs:
        r.start()
    for r in subs:
        assert r.ready.wait(15)
    ok = []
    before = [u.note(title=f"before {i}") for i in range(3)]
    ok += before
    service = "postgres"
    services.ctl("stop1", service)
    try:
        for i in range(3):
            r = u.call("POST", "/notes", {"title": f"during {i}"}, timeout=15)
            assert r.status in (201, 503), r
            if r.status == 201:
                ok.append(r.json()["data"])
        time.sleep(2)
    finally:
        services.ctl("start1", service)
        # Accepting connections is not yet accepting logins: the tests
        # after this one start kilns that migrate at once.
        services.wait_up(service)
        up = time.monotonic() + 20
        while services.psql("SELECT 1", check=False, timeout=5).strip() != "1":
            assert time.monotonic() < up, "PostgreSQL not answering 20 s after its start"
            time.sleep(0.2)
    deadline = time.monotonic() + 20
    after = []
    while len(after) < 3:
        r = u.call("POST", "/notes", {"title": f"after {len(after)}"}, srv=a if len(after) % 2 else b,
                   timeout=15)
        if r.status == 201:
            after.append(r.json()["data"])
        else:
            assert r.status == 503 and time.monotonic() < deadline, f"not back after 20 s: {r!r}"
            time.sleep(0.3)
    ok += after
    want = {("notes.created", n["id"]) for n in ok}
    for r in subs:
        r.want = want
        r.stop_at = time.monotonic() + 15
    for r in subs:
        r.join(20)
    for n, r in enumerate(subs):
        keys = [e.key for e in r.events]
        assert len(keys) == len(set(keys)), f"subscriber {n}: duplicates"
        missing = want - set(keys)
        assert not missing, (f"subscriber {n} ({'B' if n == 0 else 'A'}): {len(missing)} of "
                             f"{len(want)} events missing after the database came back "
                             f"(resumes {r.resumes}, errors {r.errors[:3]})")
