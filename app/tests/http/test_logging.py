"""Request logs: one JSON object per line on stdout per request; the user's
internal id on every line of an authenticated request (and on the "internal
error" line of a failed one); the rate-limited "dependency unavailable" line
of an outage."""

import json
import sqlite3
import threading
import time

import pytest
import requests

import authkit as ak
import kilnhttp
from kilnhttp import RFC3339_UTC_RE, STORES, http_request

REQUEST_KEYS = {"time", "level", "message", "request_id", "method", "path", "status",
                "duration_ms", "user_agent", "remote_ip"}


def test_request_line_has_every_field(server):
    r = requests.get(server.url("/livez"), headers={"x-request-id": "log-fields",
                                                    "User-Agent": "kiln-tests/1.0"}, timeout=5)
    assert r.status_code == 200
    rec = server.log_for("log-fields")
    assert REQUEST_KEYS <= set(rec), f"missing {REQUEST_KEYS - set(rec)} in {rec}"
    assert RFC3339_UTC_RE.match(rec["time"]), rec["time"]
    assert rec["level"] == "info"
    assert isinstance(rec["message"], str) and rec["message"]
    assert rec["method"] == "GET"
    assert rec["path"] == "/livez"
    assert rec["status"] == 200
    assert isinstance(rec["duration_ms"], (int, float)) and rec["duration_ms"] >= 0
    assert rec["user_agent"] == "kiln-tests/1.0"
    assert rec["remote_ip"] == "127.0.0.1"


def test_one_line_per_request(server):
    for i in range(3):
        requests.get(server.url("/healthz"), headers={"x-request-id": "log-once"}, timeout=5)
    server.log_for("log-once")
    time.sleep(0.3)
    records, _ = server.log_lines()
    assert len([r for r in records if r.get("request_id") == "log-once"]) == 3


def test_duration_covers_the_handler(server):
    requests.get(server.url("/_test/sleep?ms=200"), headers={"x-request-id": "log-slow"}, timeout=5)
    rec = server.log_for("log-slow")
    assert rec["duration_ms"] >= 190, rec


@pytest.mark.parametrize("path,status", [("/nope", 404), ("/livez", 405)])
def test_client_errors_log_as_warning(server, path, status):
    rid = f"log-warn-{status}"
    method = "GET" if status == 404 else "POST"
    r = requests.request(method, server.url(path), headers={"x-request-id": rid}, timeout=5)
    assert r.status_code == status
    rec = server.log_for(rid)
    assert rec["status"] == status and rec["level"] == "warning", rec
    assert rec["method"] == method and rec["path"] == path


def test_bad_request_is_logged(server):
    resp = server.exchange(b"GET /livez HTTP/1.1\r\nx-request-id: log-400\r\n\r\n")[0]
    assert resp.status == 400
    rid = resp.headers["x-request-id"]
    rec = server.log_for(rid)
    assert rec["status"] == 400 and rec["level"] == "warning", rec


@pytest.mark.parametrize("header,value", [
    ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
])
def test_trace_id_from_trace_headers(server, header, value):
    rid = f"log-trace-{header}"
    requests.get(server.url("/livez"), headers={"x-request-id": rid, header: value}, timeout=5)
    rec = server.log_for(rid)
    trace = rec.get("trace_id")
    assert isinstance(trace, str) and trace, rec
    want = "5759e988-bd862e3fe1be46a994272793" if header == "x-amzn-trace-id" \
        else "4bf92f3577b34da6a3ce929d0e0e4736"
    assert want in trace, rec


def test_query_string_is_not_logged(server):
    r = requests.get(server.url("/livez?code=SECRET123&state=xyz"),
                     headers={"x-request-id": "log-query"}, timeout=5)
    assert r.status_code == 200
    rec = server.log_for("log-query")
    assert rec["path"] == "/livez"
    assert "SECRET123" not in server.stdout_text()
    assert "SECRET123" not in server.stderr_text()


def test_user_agent_with_quotes_and_backslashes_round_trips(server):
    ua = 'evil "quoted" \\back\\slash\\ {"json":1} \'single\''
    data = http_request("GET", "/livez", headers=[("User-Agent", ua)], request_id="log-ua-quotes")
    assert server.exchange(data)[0].status == 200
    rec = server.log_for("log-ua-quotes")
    assert rec["user_agent"] == ua


@pytest.mark.parametrize("rid,ua", [
    ("log-ua-utf8", b"agent \xff\xfe\xc3( invalid utf-8 end"),
    ("log-ua-tabs", b"agent\twith\ttabs end"),
    ("log-ua-ctl", b"agent \x01\x1b[31m\x7f control end"),
], ids=["invalid-utf8", "tabs", "control-bytes"])
def test_hostile_user_agent_still_gives_a_valid_json_line(server, rid, ua):
    resp = server.exchange(http_request("GET", "/livez", headers=[("User-Agent", ua)],
                                        request_id=rid))[0]
    # Control bytes may be refused (400); either way the line must be JSON.
    assert resp.status in (200, 400), resp
    rec = server.log_for(resp.headers["x-request-id"])
    assert rec["status"] == resp.status
    _, bad = server.log_lines()
    assert bad == [], f"stdout lines that are not UTF-8 JSON objects: {bad[:3]!r}"


def test_every_stdout_line_is_a_json_object(server):
    requests.get(server.url("/"), timeout=5)
    time.sleep(0.2)
    records, bad = server.log_lines()
    assert bad == [], f"not JSON objects: {bad[:3]!r}"
    assert records
    for rec in records:
        assert {"time", "level", "message"} <= set(rec), rec


def test_log_level_warning_drops_info_lines(kiln):
    srv = kiln(LOG_LEVEL="warning")
    requests.get(srv.url("/livez"), headers={"x-request-id": "lvl-200"}, timeout=5)
    requests.get(srv.url("/nope"), headers={"x-request-id": "lvl-404"}, timeout=5)
    assert srv.log_for("lvl-404")["level"] == "warning"
    time.sleep(0.2)
    records, _ = srv.log_lines()
    assert not [r for r in records if r.get("request_id") == "lvl-200"]


def test_log_level_error_keeps_only_5xx(kiln):
    srv = kiln(LOG_LEVEL="error", DB_POOL_SIZE="1", WORKER_QUEUE_SIZE="1")
    slow = [threading.Thread(target=requests.get, args=(srv.url("/_test/sleep?ms=800"),),
                             kwargs={"headers": {"x-request-id": f"lvl-slow-{i}"}, "timeout": 10})
            for i in range(2)]
    slow[0].start()
    time.sleep(0.2)
    slow[1].start()
    time.sleep(0.2)
    # The worker pool is full: another worker route is refused with a 503.
    r = requests.get(srv.url("/_test/sleep?ms=1"), headers={"x-request-id": "lvl-503"},
                     timeout=5)
    assert r.status_code == 503
    requests.get(srv.url("/livez"), headers={"x-request-id": "lvl-200"}, timeout=5)
    requests.get(srv.url("/nope"), headers={"x-request-id": "lvl-404"}, timeout=5)
    for t in slow:
        t.join(10)

    rec = srv.log_for("lvl-503")
    assert rec["level"] == "error" and rec["status"] == 503, rec
    time.sleep(0.2)
    records, _ = srv.log_lines()
    logged = {r.get("request_id") for r in records}
    assert not logged & {"lvl-200", "lvl-404", "lvl-slow-0", "lvl-slow-1"}, logged


# --------------------------------------------------------------------------
# user_id: the session's internal user id, on authenticated requests only
# --------------------------------------------------------------------------

class OwnDb:
    """A database of the store mode that this test alone uses, so that it
    can be broken behind kiln's back: a SQLite file in embedded mode, a
    fresh PostgreSQL database (direct or through pgbouncer) otherwise."""

    def __init__(self, tmp_path):
        self.svc = None
        if STORES == "embedded":
            self.path = str(tmp_path / "own.db")
            self.env = {"DB_PATH": self.path, "DATABASE_URL": None}
        else:
            self.svc = kilnhttp.services()
            self.name = self.svc.create_db("klog")
            self.env = {"DATABASE_URL": self.svc.db_url(self.name, via=STORES)}

    def rows(self, sql):
        if self.svc is not None:
            return self.svc.rows(sql, db=self.name)
        con = sqlite3.connect(self.path, timeout=10)
        try:
            return [tuple(str(c) for c in row) for row in con.execute(sql).fetchall()]
        finally:
            con.close()

    def execute(self, sql):
        if self.svc is not None:
            self.svc.psql(sql, db=self.name)
            return
        con = sqlite3.connect(self.path, timeout=10)
        try:
            con.execute(sql)
            con.commit()
        finally:
            con.close()

    def drop(self):
        if self.svc is not None:
            self.svc.drop_db(self.name)


@pytest.fixture
def own_db(tmp_path):
    db = OwnDb(tmp_path)
    yield db
    db.drop()


@pytest.fixture
def logged_in(kiln, own_db):
    """(kiln on own_db, bearer token, the user's internal id from the users
    table)."""
    srv = ak.start_kiln(kiln, DB_QUERY_TIMEOUT_SECONDS=1, **own_db.env)
    email = ak.unique_email("log")
    token = ak.session_for(srv, email=email)
    rows = own_db.rows("SELECT user_id FROM identities WHERE provider = 'dev' AND "
                       f"subject = '{email}'")
    assert len(rows) == 1, rows
    return srv, token, rows[0][0]


def test_authenticated_request_lines_carry_the_internal_user_id(logged_in):
    srv, token, user_id = logged_in
    r = ak.call(srv, "GET", "/api/v1/dashboard", bearer=token, request_id="log-user-dash")
    assert r.status == 200, r
    # The id the API shows as the user's own is the one of the users table.
    assert r.json()["data"]["user"]["id"] == user_id
    assert srv.log_for("log-user-dash")["user_id"] == user_id

    # Also when the handler refuses: a 404 of a protected route.
    r = ak.call(srv, "GET", "/api/v1/notes/00000000-0000-4000-8000-000000000000", bearer=token,
                request_id="log-user-404")
    assert r.status == 404, r
    rec = srv.log_for("log-user-404")
    assert rec["user_id"] == user_id and rec["status"] == 404, rec


def test_anonymous_request_lines_carry_no_user_id(logged_in):
    srv, _, _ = logged_in
    assert ak.call(srv, "GET", "/livez", request_id="log-anon-livez").status == 200
    r = ak.call(srv, "GET", "/api/v1/notes", request_id="log-anon-401")
    ak.assert_unauthenticated(r)
    r = ak.call(srv, "GET", "/api/v1/notes", bearer="not-a-session", request_id="log-anon-bad")
    ak.assert_unauthenticated(r)
    for rid in ("log-anon-livez", "log-anon-401", "log-anon-bad"):
        rec = srv.log_for(rid)
        assert "user_id" not in rec, rec


def test_internal_error_line_names_the_request_and_the_user(logged_in, own_db):
    srv, token, user_id = logged_in
    # A bug as the server sees one: a table its statements need is gone.
    own_db.execute("DROP TABLE tasks")
    r = ak.call(srv, "GET", "/api/v1/tasks", bearer=token, request_id="log-bug")
    body = kilnhttp.assert_error(r, 500, "internal_error")
    assert body["message"] == "Internal server error", body
    assert "tasks" not in json.dumps(body), f"the driver's error reached the client: {body}"

    line = srv.wait_log(lambda rec: rec.get("message") == "internal error")
    assert line["level"] == "error", line
    assert line["request_id"] == "log-bug" and line["user_id"] == user_id, line
    assert line["dependency"] == "Database" and line["what"] == "tasks list", line
    assert line["code"] and "tasks" in line["error"], line
    req = srv.wait_log(lambda rec: rec.get("request_id") == "log-bug" and "status" in rec)
    assert req["status"] == 500 and req["level"] == "error" and req["user_id"] == user_id, req


def hold_write_lock(own_db, seconds):
    """Block writers to the notes table for ``seconds`` from another
    connection; returns the thread holding the lock once it holds it."""
    held = threading.Event()

    def sqlite_lock():
        con = sqlite3.connect(own_db.path, timeout=10, isolation_level=None)
        try:
            con.execute("BEGIN EXCLUSIVE")
            held.set()
            time.sleep(seconds)
            con.execute("ROLLBACK")
        finally:
            con.close()

    def postgres_lock():
        own_db.svc.psql("BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE; "
                        f"SELECT pg_sleep({seconds}); COMMIT;", db=own_db.name,
                        timeout=seconds + 30)

    t = threading.Thread(target=sqlite_lock if own_db.svc is None else postgres_lock, daemon=True)
    t.start()
    if own_db.svc is None:
        assert held.wait(10), "could not lock the SQLite file"
    else:
        deadline = time.monotonic() + 10
        while not own_db.svc.rows(
                "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'notes' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                db=own_db.name):
            assert time.monotonic() < deadline, "could not lock the notes table"
            time.sleep(0.05)
    return t


def test_outage_is_one_line_per_second_not_one_per_request(logged_in, own_db):
    srv, token, user_id = logged_in
    # SQLite waits out its busy timeout (5 s), PostgreSQL the query timeout
    # (DB_QUERY_TIMEOUT_SECONDS=1): either way the database is unavailable.
    holder = hold_write_lock(own_db, 8)
    results = {}

    def create(i):
        results[i] = ak.call(srv, "POST", "/api/v1/notes", bearer=token,
                             headers=[("Content-Type", "application/json")],
                             body=json.dumps({"title": f"n{i}"}), request_id=f"log-out-{i}",
                             timeout=20)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    holder.join(30)
    for i in range(3):
        r = results[i]
        body = kilnhttp.assert_error(r, 503, "service_unavailable")
        assert body["message"] == "Database unavailable", body
        assert r.headers.get("retry-after") == "1", r.headers
        req = srv.log_for(f"log-out-{i}")
        assert req["status"] == 503 and req["user_id"] == user_id, req

    time.sleep(0.3)
    records, _ = srv.log_lines()
    # The requests' line; the background threads (jobs, webhooks) keep
    # their own ("Database (jobs)"), since their failures are not requests.
    outage = [rec for rec in records if rec.get("message") == "dependency unavailable"
              and rec.get("dependency") == "Database"]
    assert outage, "no dependency unavailable line"
    # The three failures came within a second or two: at most one line per
    # second, and the counts add up to no more than the failures.
    assert len(outage) <= 2, outage
    for rec in outage:
        assert rec["level"] == "error" and rec["dependency"] == "Database", rec
        assert rec.get("error"), rec
        assert int(rec["failures"]) >= 1, rec
        # One line stands for many requests: it names none of them.
        assert "request_id" not in rec and "user_id" not in rec, rec
    assert sum(int(rec["failures"]) for rec in outage) <= 3, outage
    assert not [rec for rec in records if rec.get("message") == "internal error"], \
        "an outage is not a bug"
