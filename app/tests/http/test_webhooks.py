"""Webhooks: /api/v1/webhooks (and /api/webhooks), and what Kiln POSTs to
the endpoints, received here by a threaded HTTP server on 127.0.0.1 (the
Receiver below: it records method, path, headers and the raw body of every
request and answers each as its path's script says: 200, 500 for the first
N, 429, a slow answer, a hold until the test lets go, a 302, a 410) and
verified by a verifier Kiln did not write: the Standard Webhooks reference
library (npm standardwebhooks, app/tests/webhooks/verify.js, installed by
scripts/npm-deps.sh), given the headers and the raw body exactly as
received.

What is checked:
  * CRUD: create answers 201 with the secret (whsec_ and 32 random bytes),
    which no list, show, PATCH or PUT answer (nor the log) ever shows
    again; list (newest first), show, PATCH and PUT of url, events,
    description (null: empty) and enabled, each alone; DELETE 204, then 404
    everywhere; another user's webhook (or a non-UUID id) is 404
    webhook_not_found on every route and stays as it was; 422
    validation_failed for a missing url or events, ftp://, a user name or
    password, a fragment, a blank or over-long URL, an unknown resource or
    action, no patterns or more than 50, a description over 1000
    characters, a non-boolean enabled (and 400 for bodies that are not
    JSON objects); the limit of 50 webhooks a user; the /api alias; the
    CSRF rules for cookie-authenticated writes;
  * deliveries, each verified with standardwebhooks: a "notes.*" endpoint
    gets notes.created, updated, archived and deleted (not projects), "*"
    gets projects and tasks too, "notes.created" only that; the body is
    {type, timestamp, data} with data exactly the event the change feed's
    stream shows (id, type, resource, action, row_id, data, owner, at);
    webhook-id is msg_<event id>; another user's writes never reach an
    endpoint (also when both write at once); failed writes (422, 404) and
    changes made before the endpoint existed are not delivered (on
    PostgreSQL also when the dispatcher reaches them only after the
    endpoint was made, in one batch with other owners' events: a
    transaction held open in kiln's database holds it back); a tampered
    body, id or timestamp, or another secret, does not verify;
  * rotation: the next delivery carries two signatures and verifies with
    the new secret and with the old one; a second rotation drops the
    oldest;
  * retries: 500, 500 then 200 makes three attempts with one webhook-id,
    spaced by the schedule, logged (status, latency_ms, error) and
    succeeded; 429 is retried; 410 and 400 are not (failed after one
    attempt); a timeout (WEBHOOK_TIMEOUT_SECONDS) is retried;
  * disabling: an endpoint that fails past the whole schedule is disabled
    with a disabled_reason (and logged); nothing is delivered to it while
    off; PATCH enabled: true turns it on, clears the reason and its run of
    failures (a single later failure does not disable it again);
  * manual retry: the same message (same webhook-id, same bytes) goes out
    again; an unknown, non-numeric or another webhook's delivery is 404
    delivery_not_found;
  * the test message: 202, a webhook.test delivery with a msg_test_ id,
    verified, in the delivery log;
  * outbound safety, with WEBHOOK_ALLOW_PRIVATE unset: registering (or
    PATCHing to) loopback, localhost, private, link-local (the metadata
    address) and odd spellings of them is 422; a name that resolves to a
    loopback address at delivery time (an /etc/hosts name; and, on
    PostgreSQL, an endpoint registered by an instance that allows private
    addresses and delivered by one that does not) fails at once with the
    reason, and nothing reaches the receiver; redirects are not followed
    (one request, failed with HTTP 302 or 307);
  * order (webhooks.h, jobs/jobs.h): deliveries are enqueued in the feed's
    commit order and claimed oldest first, so first attempts start in
    outbox order (with JOB_CONCURRENCY=1 they arrive in it); a retried
    delivery waits for its delay without holding back later events (no
    head-of-line blocking); with several runners, deliveries to one
    endpoint are in flight at once (arrival order is not guaranteed);
  * batches (one runner): deliveries queued behind a held one go as one
    batch to two endpoints, in order, once each, each attempt recorded
    with its own answer; an endpoint's failing_since follows its last
    answer in the batch; an endpoint deleted while its batch is out does
    not fail the others' record (nothing is sent twice);
  * two instances on one PostgreSQL (postgres, pgbouncer): an endpoint
    registered on B gets writes made on A and B, each exactly once.

Every instance here runs with WEBHOOK_RETRY_SCHEDULE=200ms,200ms,200ms and
JOB_POLL_MS=100; on PostgreSQL each gets a database of its own (so that no
other instance of the run, with other settings, claims its deliveries).
Runs in every store mode (KILN_STORES), plain and under ASan
(KILN_SANITIZED=1: longer waits); the two-instance tests and the held
batch need postgres or pgbouncer.
"""

import base64
import collections
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import sqlite3
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests

import authkit as ak
import kilnhttp
from ssekit import FeedEvent, SseStream

from kilnhttp import SANITIZED, SERVICE_MODES
from resourcekit import ALIAS, MISSING, V1
needs_shared_db = pytest.mark.skipif(
    kilnhttp.STORES not in SERVICE_MODES,
    reason=f"KILN_STORES={kilnhttp.STORES}: needs two instances on one PostgreSQL")

# How long a delivery may take to arrive on a healthy instance.
WAIT_S = 20.0 if SANITIZED else 10.0
# How long to watch for something that must not happen (a retry, a
# duplicate): several retry delays.
QUIET_S = 1.5 if SANITIZED else 1.0
SCHEDULE = "200ms,200ms,200ms"
RETRY_GAP_S = 0.2
HOOK_ENV = dict(WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_RETRY_SCHEDULE=SCHEDULE, JOB_POLL_MS=100,
                WEBHOOK_TIMEOUT_SECONDS=5)

VERIFY_JS = kilnhttp.REPO_ROOT / "app" / "tests" / "webhooks" / "verify.js"
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
WEBHOOK_KEYS = {"id", "url", "events", "description", "enabled", "disabled_reason", "inserted_at",
                "updated_at"}
DELIVERY_KEYS = {"id", "event_id", "msg_id", "type", "state", "attempts", "inserted_at",
                 "attempt_log"}
ATTEMPT_KEYS = {"at", "status", "latency_ms", "error"}
EVENT_KEYS = {"id", "type", "resource", "action", "row_id", "data", "owner", "at"}


# --------------------------------------------------------------------------
# the receiver
# --------------------------------------------------------------------------

class Sleep:
    """Answer ``status`` after ``seconds``."""

    def __init__(self, seconds, status=200):
        self.seconds, self.status = seconds, status


class Hold:
    """Answer ``status`` once ``event`` is set (or after ``limit`` s)."""

    def __init__(self, event, status=200, limit=30.0):
        self.event, self.status, self.limit = event, status, limit


class Redirect:
    def __init__(self, location, status=302):
        self.location, self.status = location, status


class Big:
    """Answer ``status`` with a body of ``size`` bytes."""

    def __init__(self, size, status=200):
        self.size, self.status = size, status


class Received:
    def __init__(self, method, path, headers, body, peer=None):
        self.method, self.path, self.body = method, path, body
        self.peer = peer                # the client's (address, port): its connection
        self.headers = headers          # lower-case name -> value
        self.at = time.monotonic()
        self.answered_at = None

    @property
    def msg_id(self):
        return self.headers.get("webhook-id")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Received {self.method} {self.path} {self.msg_id} {self.body[:80]!r}>"


class Receiver:
    """A webhook endpoint on 127.0.0.1 (HTTP/1.1, one thread a request).
    Each endpoint of a test gets a path of its own (``new_path``); its
    script (``script(path, *answers)``) says how to answer its requests in
    turn, the last answer repeating: a status, Sleep, Hold or Redirect.
    Unscripted paths answer 200. ``host``: 127.0.0.1 or ::1."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.cond = threading.Condition()
        self.requests = []
        self.scripts = {}
        self.keep_alive = set()         # paths answered without closing
        self.served = collections.Counter()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                got = Received(self.command, self.path,
                               {k.lower(): v for k, v in self.headers.items()}, body,
                               self.client_address)
                keep = self.path in receiver.keep_alive
                with receiver.cond:
                    receiver.requests.append(got)
                    k = receiver.served[self.path]
                    receiver.served[self.path] += 1
                    answers = receiver.scripts.get(self.path) or [200]
                    answer = answers[min(k, len(answers) - 1)]
                    receiver.cond.notify_all()
                headers = []
                status = answer
                body = b"ok"
                if isinstance(answer, Sleep):
                    time.sleep(answer.seconds)
                    status = answer.status
                elif isinstance(answer, Hold):
                    answer.event.wait(answer.limit)
                    status = answer.status
                elif isinstance(answer, Redirect):
                    status = answer.status
                    headers.append(("Location", answer.location))
                elif isinstance(answer, Big):
                    status = answer.status
                    body = b"x" * answer.size
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    if not keep:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    pass  # the client gave up (a timeout)
                got.answered_at = time.monotonic()
                self.close_connection = not keep

            do_POST = do_GET = do_PUT = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path, host=None):
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{host}:{self.port}{path}"

    @staticmethod
    def new_path(tag="hook"):
        return f"/{tag}/{uuid.uuid4().hex}"

    def script(self, path, *answers):
        with self.cond:
            self.scripts[path] = list(answers)

    def got(self, path):
        with self.cond:
            return [r for r in self.requests if r.path == path]

    def wait(self, path, n, timeout=WAIT_S):
        """The first ``n`` requests to ``path``, waiting for them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                mine = [r for r in self.requests if r.path == path]
                if len(mine) >= n:
                    return mine
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: {len(mine)} request(s) within {timeout} s, "
                                         f"want {n}: {mine}")
                self.cond.wait(left)

    def wait_msgs(self, path, msg_ids, timeout=WAIT_S):
        """Requests to ``path`` until every webhook-id of ``msg_ids`` came."""
        deadline = time.monotonic() + timeout
        want = set(msg_ids)
        with self.cond:
            while True:
                mine = [r for r in self.requests if r.path == path]
                if want <= {r.msg_id for r in mine}:
                    return mine
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{path}: missing {sorted(want - {r.msg_id for r in mine})} after "
                        f"{timeout} s; got {mine}")
                self.cond.wait(left)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.close()


# --------------------------------------------------------------------------
# the verifier: standardwebhooks through app/tests/webhooks/verify.js
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def verifier():
    node = shutil.which("node")
    lib = VERIFY_JS.parent / "node_modules" / "standardwebhooks"
    if node is None or not lib.is_dir():
        pytest.fail("the webhook tests verify with npm standardwebhooks: install it with "
                    "scripts/npm-deps.sh (needs node)", pytrace=False)
    return node


def verify(node, items):
    """[(secret, Received or (headers, body bytes))] -> verify.js's answers."""
    lines = []
    for secret, r in items:
        headers, body = (r.headers, r.body) if isinstance(r, Received) else r
        lines.append(json.dumps({"secret": secret, "headers": headers,
                                 "body_base64": base64.b64encode(body).decode()}))
    out = subprocess.run([node, str(VERIFY_JS)], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"verify.js failed: {out.stderr[-2000:]}"
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(answers) == len(items), f"verify.js answered {len(answers)} of {len(items)}: {out}"
    return answers


def assert_verified(node, secret, reqs):
    """Every request verifies with ``secret``; returns the payloads (what
    the library parsed), which must be the bodies' JSON."""
    answers = verify(node, [(secret, r) for r in reqs])
    for r, a in zip(reqs, answers):
        assert a["ok"] is True, f"standardwebhooks refused {r!r}: {a.get('error')}\n" \
                                f"headers: {r.headers}"
        assert a["payload"] == r.json(), (a, r)
    return [a["payload"] for a in answers]


def assert_not_verified(node, secret, reqs):
    for r, a in zip(reqs, verify(node, [(secret, r) for r in reqs])):
        assert a["ok"] is False, f"standardwebhooks accepted {r!r} with the wrong secret"
        assert "signature" in a["error"].lower(), a


def other_secret():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def signatures(r):
    return r.headers.get("webhook-signature", "").split(" ")


def expected_signature(secret, r):
    """Computed here too (Python's hmac), to say which signature is whose."""
    key = base64.b64decode(secret[len("whsec_"):])
    msg = f"{r.headers['webhook-id']}.{r.headers['webhook-timestamp']}.".encode() + r.body
    return "v1," + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


# --------------------------------------------------------------------------
# instances and databases
# --------------------------------------------------------------------------

def job_rows(srv, sql):
    """Rows of the instance's own database, behind its back."""
    if kilnhttp.STORES not in SERVICE_MODES:
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            return [tuple("" if v is None else str(int(v) if isinstance(v, bool) else v)
                          for v in row) for row in con.execute(sql).fetchall()]
        finally:
            con.close()
    url = srv.env["DATABASE_URL"]
    out = kilnhttp.services().rows(sql, db=url.rsplit("/", 1)[1].split("?")[0])
    return [tuple({"t": "1", "f": "0"}.get(v, v) if i == 2 else v for i, v in enumerate(r))
            for r in out]


class Databases:
    """On PostgreSQL, fresh databases (dropped at the end); in embedded
    mode each instance has its own SQLite file anyway."""

    def __init__(self):
        self.made = []

    def env(self):
        if kilnhttp.STORES not in SERVICE_MODES:
            return {}
        svc = kilnhttp.services()
        assert svc is not None, kilnhttp.services_problem()
        name = svc.create_db("kwh")
        self.made.append(name)
        return {"DATABASE_URL": svc.db_url(name, via=kilnhttp.STORES)}

    @property
    def last(self):
        return self.made[-1]

    def drop(self):
        svc = kilnhttp.services()
        for name in self.made:
            svc.drop_db(name)


@pytest.fixture(scope="module")
def module_dbs():
    d = Databases()
    yield d
    d.drop()


@pytest.fixture(scope="module")
def srv(module_dbs, module_kiln):
    """The module's instance: private addresses allowed (the receiver is on
    127.0.0.1), the short schedule."""
    return ak.start_kiln(module_kiln, **module_dbs.env(), **HOOK_ENV)


@pytest.fixture(scope="module")
def strict(module_dbs, module_kiln):
    """An instance with WEBHOOK_ALLOW_PRIVATE unset (its default, false)."""
    env = dict(HOOK_ENV)
    del env["WEBHOOK_ALLOW_PRIVATE"]
    return ak.start_kiln(module_kiln, **module_dbs.env(), **env)


@pytest.fixture
def start(kiln):
    """start(db_env, **env): a fresh instance with HOOK_ENV and ``env``."""
    def go(db_env, **env):
        return ak.start_kiln(kiln, **db_env, **dict(HOOK_ENV, **env))
    return go


@pytest.fixture
def dbs():
    d = Databases()
    yield d
    d.drop()


# --------------------------------------------------------------------------
# users and calls (through requests: every answer is checked against the
# OpenAPI document, conftest.py)
# --------------------------------------------------------------------------

class User:
    """A dev-login user; calls go with Bearer (no CSRF rules)."""

    def __init__(self, srv, tag="wh", email=None):
        self.srv = srv
        self.email = email or ak.unique_email(tag)
        self.token = ak.session_for(srv, email=self.email)

    def call(self, method, path, body=None, srv=None, prefix=V1, data=None, headers=None):
        hdrs = {"Authorization": f"Bearer {self.token}"}
        hdrs.update(headers or {})
        kw = {}
        if body is not None:
            kw["json"] = body
        elif data is not None:
            kw["data"] = data
            hdrs.setdefault("Content-Type", "application/json")
        return requests.request(method, (srv or self.srv).url(prefix + path), headers=hdrs,
                                timeout=30, **kw)

    def ok(self, method, path, body=None, status=200, **kw):
        r = self.call(method, path, body, **kw)
        assert r.status_code == status, f"{method} {path} {body!r:.300}: {r.status_code} {r.text[:500]}"
        return r.json()["data"] if status != 204 else None

    def hook(self, rx, events=("*",), path=None, **kw):
        """A new endpoint on the receiver: (its data with the secret, path)."""
        path = path or rx.new_path()
        w = self.ok("POST", "/webhooks", {"url": rx.url(path), "events": list(events)}, 201, **kw)
        return w, path

    def note(self, title=None, srv=None):
        return self.ok("POST", "/notes", {"title": title or f"n-{uuid.uuid4().hex[:8]}",
                                          "content": "c"}, 201, srv=srv)

    def deliveries(self, hook_id, **kw):
        return self.ok("GET", f"/webhooks/{hook_id}/deliveries", **kw)

    def wait_deliveries(self, hook_id, done, timeout=WAIT_S, **kw):
        """Poll the delivery log until done(list) is true; returns it."""
        return wait_until(lambda: self.deliveries(hook_id, **kw), done, timeout,
                          f"the delivery log of {hook_id}")


def wait_until(get, done, timeout=WAIT_S, what="it"):
    """get() again and again until done(value); returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        v = get()
        if done(v):
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not as wanted after {timeout} s: {v}")
        time.sleep(0.1)


def assert_error(r, status, code):
    assert r.status_code == status, f"want {status} {code}, got {r.status_code}: {r.text[:500]}"
    body = r.json()
    assert body.get("code") == code, body
    return body


def settled(d):
    return bool(d) and all(x["state"] != "pending" for x in d)


def wait_connected(s):
    deadline = time.monotonic() + WAIT_S
    while True:
        for i, (kind, value) in enumerate(s.pending):
            if kind == "comment" and value == "connected":
                del s.pending[:i + 1]
                return
        s.pump(deadline)


def stream(user):
    s = SseStream(user.srv, bearer=user.token, timeout=WAIT_S)
    wait_connected(s)
    return s


def feed_events(s, n):
    """The next ``n`` change events of a stream, as FeedEvent."""
    out = []
    while len(out) < n:
        m = s.next_message()
        if m.type == "message":
            out.append(FeedEvent(m))
    return out


def check_delivery_request(r, path):
    assert r.method == "POST" and r.path == path, r
    assert r.headers.get("content-type", "").split(";")[0].strip() == "application/json", r.headers
    assert r.headers.get("user-agent", "").startswith("Kiln-Webhooks/"), r.headers
    ts = r.headers.get("webhook-timestamp", "")
    assert re.fullmatch(r"[0-9]+", ts) and abs(int(ts) - time.time()) < 120, r.headers
    for sig in signatures(r):
        assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", sig), r.headers


def check_event_payload(p):
    """{type, timestamp, data}, data an event of the change feed's shape."""
    assert set(p) == {"type", "timestamp", "data"}, p
    d = p["data"]
    assert set(d) == EVENT_KEYS, d
    assert isinstance(d["id"], int) and not isinstance(d["id"], bool), d
    assert d["type"] == f"{d['resource']}.{d['action']}" == p["type"], p
    assert p["timestamp"] == d["at"] and TIME_RE.match(d["at"]), p
    assert str(uuid.UUID(d["row_id"])) == d["row_id"] and str(uuid.UUID(d["owner"])) == d["owner"], d
    if d["action"] == "deleted":
        assert d["data"] is None, d
    else:
        assert isinstance(d["data"], dict) and d["data"]["id"] == d["row_id"], d
    return d


def by_event_id(reqs):
    return sorted(reqs, key=lambda r: r.json()["data"]["id"])


def hosts_loopback_name():
    """A name /etc/hosts maps to a loopback address only, other than
    localhost (which the URL check refuses by name): resolved from the file,
    never through DNS."""
    try:
        lines = open("/etc/hosts").read().splitlines()
    except OSError:
        return None
    names = collections.defaultdict(set)
    for line in lines:
        fields = line.split("#")[0].split()
        for name in fields[1:]:
            names[name.lower()].add(fields[0])
    for name, addrs in sorted(names.items()):
        if name == "localhost" or name.endswith(".localhost") or not re.fullmatch(r"[a-z0-9.-]+", name):
            continue
        if all(a.startswith("127.") or a == "::1" for a in addrs):
            try:
                got = {ai[4][0] for ai in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)}
            except OSError:
                continue
            if got and all(a.startswith("127.") or a == "::1" for a in got):
                return name
    return None


# --------------------------------------------------------------------------
# CRUD
# --------------------------------------------------------------------------

def test_create_list_show_update_delete(srv, rx):
    u = User(srv)
    path = rx.new_path()
    r = u.call("POST", "/webhooks", {"url": rx.url(path), "events": ["notes.*"],
                                     "description": "mine", "ignored": 1})
    assert r.status_code == 201, r.text
    w = r.json()["data"]
    assert set(w) == WEBHOOK_KEYS | {"secret"}, w
    secret = w["secret"]
    assert SECRET_RE.match(secret), secret
    assert len(base64.b64decode(secret[len("whsec_"):])) == 32
    assert uuid.UUID(w["id"]) and w["url"] == rx.url(path) and w["events"] == ["notes.*"]
    assert w["description"] == "mine" and w["enabled"] is True and w["disabled_reason"] is None
    assert TIME_RE.match(w["inserted_at"]) and TIME_RE.match(w["updated_at"]), w
    shown = {k: v for k, v in w.items() if k != "secret"}

    r = u.call("GET", "/webhooks")
    assert r.status_code == 200 and secret not in r.text
    assert r.json()["data"] == [shown]
    r = u.call("GET", f"/webhooks/{w['id']}")
    assert r.status_code == 200 and secret not in r.text
    assert r.json()["data"] == shown

    # A second one: the list is newest first; its secret is its own.
    w2, _ = u.hook(rx, ["tasks.created"])
    assert w2["secret"] != secret and w2["id"] != w["id"]
    assert [x["id"] for x in u.ok("GET", "/webhooks")] == [w2["id"], w["id"]]

    # Each member alone, by PATCH and by PUT (a partial update too).
    path2 = rx.new_path()
    changes = [("PATCH", {"url": rx.url(path2)}, {"url": rx.url(path2)}),
               ("PATCH", {"events": ["tasks.*", "notes.created"]},
                {"events": ["tasks.*", "notes.created"]}),
               ("PATCH", {"description": "other"}, {"description": "other"}),
               ("PUT", {"description": None}, {"description": ""}),
               ("PATCH", {"enabled": False}, {"enabled": False}),
               ("PUT", {"enabled": True}, {"enabled": True}),
               ("PUT", {"url": rx.url(path), "events": ["*"], "description": "both"},
                {"url": rx.url(path), "events": ["*"], "description": "both"})]
    for method, body, want in changes:
        r = u.call(method, f"/webhooks/{w['id']}", body)
        assert r.status_code == 200, (method, body, r.text)
        assert secret not in r.text, f"{method} answered the secret"
        got = r.json()["data"]
        assert set(got) == WEBHOOK_KEYS, got
        expect = dict(shown, **want)
        assert {k: v for k, v in got.items() if k != "updated_at"} == \
            {k: v for k, v in expect.items() if k != "updated_at"}, (method, body, got)
        assert got["updated_at"] >= shown["updated_at"], got
        assert got["inserted_at"] == w["inserted_at"]
        shown = got
        assert u.ok("GET", f"/webhooks/{w['id']}") == got

    r = u.call("DELETE", f"/webhooks/{w['id']}")
    assert r.status_code == 204 and r.content == b"", r
    for method, p, body in [("GET", "", None), ("PATCH", "", {"enabled": True}),
                            ("PUT", "", {"enabled": True}), ("DELETE", "", None),
                            ("POST", "/test", None), ("POST", "/rotate-secret", None),
                            ("GET", "/deliveries", None)]:
        assert_error(u.call(method, f"/webhooks/{w['id']}{p}", body), 404, "webhook_not_found")
    assert [x["id"] for x in u.ok("GET", "/webhooks")] == [w2["id"]]
    assert secret not in srv.stdout_text() + srv.stderr_text(), "the secret is in the log"


def test_another_users_webhook_is_not_found_everywhere(srv, rx):
    alice, bob = User(srv, "alice"), User(srv, "bob")
    w, path = alice.hook(rx, ["notes.*"])
    alice.note()
    d = alice.wait_deliveries(w["id"], settled)
    before = alice.ok("GET", f"/webhooks/{w['id']}")
    routes = [("GET", "", None), ("PATCH", "", {"enabled": False}),
              ("PUT", "", {"url": "http://127.0.0.1:1/x"}), ("DELETE", "", None),
              ("POST", "/test", None), ("POST", "/rotate-secret", None),
              ("GET", "/deliveries", None), ("POST", f"/deliveries/{d[0]['id']}/retry", None)]
    for method, p, body in routes:
        assert_error(bob.call(method, f"/webhooks/{w['id']}{p}", body), 404, "webhook_not_found")
        # A random id and something that is not a UUID answer the same.
        for other in (MISSING, str(uuid.uuid4()), "not-a-uuid", w["id"][:-1]):
            assert_error(alice.call(method, f"/webhooks/{other}{p}", body), 404,
                         "webhook_not_found")
    assert bob.ok("GET", "/webhooks") == []
    after = alice.ok("GET", f"/webhooks/{w['id']}")
    assert after == before, "another user's calls changed the webhook"
    assert len(alice.deliveries(w["id"])) == 1, "another user's test or retry was sent"
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 1, rx.got(path)


URL_OK = "http://127.0.0.1:9/hook"
LONG_URL = "http://127.0.0.1:9/" + "a" * 2048


@pytest.mark.parametrize("body,field", [
    ({"events": ["*"]}, "url"),
    ({"url": URL_OK}, "events"),
    ({"url": None, "events": ["*"]}, "url"),
    ({"url": "", "events": ["*"]}, "url"),
    ({"url": 5, "events": ["*"]}, "url"),
    ({"url": "ftp://127.0.0.1/hook", "events": ["*"]}, "url"),
    ({"url": "file:///etc/passwd", "events": ["*"]}, "url"),
    ({"url": "http://user:pw@127.0.0.1:9/hook", "events": ["*"]}, "url"),
    ({"url": "http://user@127.0.0.1:9/hook", "events": ["*"]}, "url"),
    ({"url": "http://127.0.0.1:9/hook#frag", "events": ["*"]}, "url"),
    ({"url": "not a url", "events": ["*"]}, "url"),
    ({"url": "http:///hook", "events": ["*"]}, "url"),
    ({"url": LONG_URL, "events": ["*"]}, "url"),
    ({"url": URL_OK, "events": []}, "events"),
    ({"url": URL_OK, "events": "notes.*"}, "events"),
    ({"url": URL_OK, "events": None}, "events"),
    ({"url": URL_OK, "events": ["bogus.created"]}, "events"),
    ({"url": URL_OK, "events": ["notes.bogus"]}, "events"),
    ({"url": URL_OK, "events": ["notes"]}, "events"),
    ({"url": URL_OK, "events": ["notes.*", 5]}, "events"),
    ({"url": URL_OK, "events": ["users.created"]}, "events"),
    ({"url": URL_OK, "events": ["notes.created"] * 51}, "events"),
    ({"url": URL_OK, "events": ["*"], "description": "d" * 1001}, "description"),
    ({"url": URL_OK, "events": ["*"], "description": 5}, "description"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_create_validation_is_422(srv, body, field):
    u = User(srv)
    r = u.call("POST", "/webhooks", body)
    err = assert_error(r, 422, "validation_failed")
    assert field in err.get("details", {}), err
    assert u.ok("GET", "/webhooks") == [], "a refused webhook was created"


def test_bounds_are_inclusive_and_every_action_is_a_pattern(srv):
    u = User(srv)
    patterns = ["*", "notes.*", "notes.created", "notes.updated", "notes.deleted", "notes.archived",
                "notes.unarchived", "projects.*", "tasks.created"]
    w = u.ok("POST", "/webhooks", {"url": URL_OK, "events": patterns, "description": "é" * 1000},
             201)
    assert w["events"] == patterns and len(w["description"]) == 1000
    fifty = (patterns * 6)[:50]
    w2 = u.ok("POST", "/webhooks", {"url": URL_OK[:-4] + "x" * 10, "events": fifty}, 201)
    assert w2["events"] == fifty


@pytest.mark.parametrize("body,field", [
    ({"url": "ftp://127.0.0.1/x"}, "url"),
    ({"url": None}, "url"),
    ({"url": "http://a:b@127.0.0.1/x"}, "url"),
    ({"events": []}, "events"),
    ({"events": ["notes.nope"]}, "events"),
    ({"description": "x" * 1001}, "description"),
    ({"enabled": "yes"}, "enabled"),
    ({"enabled": 1}, "enabled"),
])
def test_update_validation_is_422_and_changes_nothing(srv, body, field):
    u = User(srv)
    w = u.ok("POST", "/webhooks", {"url": URL_OK, "events": ["notes.*"]}, 201)
    before = u.ok("GET", f"/webhooks/{w['id']}")
    # Valid members beside the bad one are not written either.
    good = {"events": ["tasks.*"]} if field != "events" else {"description": "new"}
    for method in ("PATCH", "PUT"):
        err = assert_error(u.call(method, f"/webhooks/{w['id']}", dict(good, **body)), 422,
                           "validation_failed")
        assert field in err.get("details", {}), err
    assert u.ok("GET", f"/webhooks/{w['id']}") == before


@pytest.mark.parametrize("data", ["{", "[1]", "\"x\"", "null", "{\"url\": \"a\",}"])
def test_bodies_that_are_not_objects_are_400(srv, data):
    u = User(srv)
    w = u.ok("POST", "/webhooks", {"url": URL_OK, "events": ["*"]}, 201)
    for method, path in (("POST", "/webhooks"), ("PATCH", f"/webhooks/{w['id']}")):
        r = u.call(method, path, data=data)
        assert r.status_code == 400, (method, data, r.text)
        assert r.json()["code"] in ("invalid_json", "invalid_request"), r.text
    assert len(u.ok("GET", "/webhooks")) == 1


def test_a_user_has_at_most_50_webhooks(srv):
    u, other = User(srv), User(srv)
    made = [u.ok("POST", "/webhooks", {"url": f"{URL_OK}/{i}", "events": ["*"]}, 201)
            for i in range(50)]
    err = assert_error(u.call("POST", "/webhooks", {"url": URL_OK, "events": ["*"]}), 422,
                       "validation_failed")
    assert "base" in err.get("details", {}) and "50" in json.dumps(err["details"]), err
    assert len(u.ok("GET", "/webhooks")) == 50
    # Per user: another still may; after a delete, this one may again.
    other.ok("POST", "/webhooks", {"url": URL_OK, "events": ["*"]}, 201)
    u.ok("DELETE", f"/webhooks/{made[7]['id']}", status=204)
    u.ok("POST", "/webhooks", {"url": URL_OK, "events": ["*"]}, 201)
    assert_error(u.call("POST", "/webhooks", {"url": URL_OK, "events": ["*"]}), 422,
                 "validation_failed")


def test_the_api_alias_serves_every_route(srv, rx, verifier):
    u = User(srv)
    path = rx.new_path()
    w = u.ok("POST", "/webhooks", {"url": rx.url(path), "events": ["notes.created"]}, 201,
             prefix=ALIAS)
    assert u.ok("GET", f"/webhooks/{w['id']}", prefix=ALIAS) == \
        u.ok("GET", f"/webhooks/{w['id']}") == u.ok("GET", "/webhooks", prefix=ALIAS)[0]
    u.ok("PATCH", f"/webhooks/{w['id']}", {"description": "alias"}, prefix=ALIAS)
    u.ok("PUT", f"/webhooks/{w['id']}", {"description": "alias2"}, prefix=ALIAS)
    assert u.ok("GET", f"/webhooks/{w['id']}")["description"] == "alias2"
    rot = u.ok("POST", f"/webhooks/{w['id']}/rotate-secret", prefix=ALIAS)
    q = u.ok("POST", f"/webhooks/{w['id']}/test", status=202, prefix=ALIAS)
    (req,) = rx.wait(path, 1)
    assert_verified(verifier, rot["secret"], [req])
    d = u.wait_deliveries(w["id"], settled)
    assert u.ok("GET", f"/webhooks/{w['id']}/deliveries", prefix=ALIAS) == d
    assert d[0]["id"] == q["id"]
    u.ok("POST", f"/webhooks/{w['id']}/deliveries/{q['id']}/retry", status=202, prefix=ALIAS)
    rx.wait(path, 2)
    u.ok("DELETE", f"/webhooks/{w['id']}", status=204, prefix=ALIAS)
    assert_error(u.call("GET", f"/webhooks/{w['id']}"), 404, "webhook_not_found")


def test_cookie_writes_follow_the_csrf_rules(srv):
    u = User(srv)
    origin = srv.env["PUBLIC_URL"]
    cookie = {"Cookie": f"{ak.SESSION_COOKIE}={u.token}"}
    url = srv.url(V1 + "/webhooks")
    body = json.dumps({"url": URL_OK, "events": ["*"]})
    r = requests.post(url, data=body, headers=dict(cookie, **{"Content-Type": "application/json",
                                                               "Origin": origin}), timeout=10)
    assert r.status_code == 201, r.text
    w = r.json()["data"]
    r = requests.post(url, data=body, headers=dict(cookie, **{"Content-Type": "application/json",
                                                              "Origin": "https://evil.example"}),
                      timeout=10)
    assert_error(r, 403, "forbidden")
    r = requests.post(url, data=body, headers=dict(cookie, **{"Content-Type": "text/plain"}),
                      timeout=10)
    assert_error(r, 415, "unsupported_media_type")
    r = requests.delete(f"{url}/{w['id']}", headers=dict(cookie, Origin="https://evil.example"),
                        timeout=10)
    assert_error(r, 403, "forbidden")
    r = requests.get(url, headers=cookie, timeout=10)
    assert [x["id"] for x in r.json()["data"]] == [w["id"]]
    assert_error(requests.get(url, timeout=10), 401, "authentication_required")


# --------------------------------------------------------------------------
# deliveries
# --------------------------------------------------------------------------

def test_note_changes_reach_a_notes_endpoint_signed_with_the_feeds_events(srv, rx, verifier):
    u = User(srv)
    w, path = u.hook(rx, ["notes.*"])
    with stream(u) as s:
        p = u.ok("POST", "/projects", {"name": "not a note"}, 201)
        n = u.note(title="first")
        upd = u.ok("PATCH", f"/notes/{n['id']}", {"title": "renamed"})
        arch = u.ok("POST", f"/notes/{n['id']}/archive")
        u.ok("DELETE", f"/notes/{n['id']}", status=204)
        events = feed_events(s, 5)
    assert [e.type for e in events] == ["projects.created", "notes.created", "notes.updated",
                                        "notes.archived", "notes.deleted"], events
    note_events = events[1:]
    reqs = by_event_id(rx.wait_msgs(path, [f"msg_{e.id}" for e in note_events]))
    assert len(reqs) == 4, reqs
    payloads = assert_verified(verifier, w["secret"], reqs)
    for r, pl, ev, answered in zip(reqs, payloads, note_events, [n, upd, arch, None]):
        check_delivery_request(r, path)
        assert len(signatures(r)) == 1, r.headers
        d = check_event_payload(pl)
        assert d == ev.body, f"the delivery's data is not the stream's event:\n{d}\n{ev.body}"
        assert r.msg_id == f"msg_{ev.id}"
        assert d["data"] == answered, (d, answered)
        assert d["row_id"] == n["id"]
    # Nothing about the project, nothing twice.
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 4, rx.got(path)
    assert p["id"] not in b"".join(r.body for r in rx.got(path)).decode()
    log = u.wait_deliveries(w["id"], lambda d: len(d) == 4 and settled(d))
    assert [x["event_id"] for x in log] == [e.id for e in reversed(note_events)], log
    for x, ev in zip(log, reversed(note_events)):
        assert set(x) == DELIVERY_KEYS and x["msg_id"] == f"msg_{ev.id}" and x["type"] == ev.type
        assert x["state"] == "succeeded" and x["attempts"] == 1, x
        (a,) = x["attempt_log"]
        assert set(a) == ATTEMPT_KEYS and a["status"] == 200 and a["error"] is None, a
        assert isinstance(a["latency_ms"], int) and a["latency_ms"] >= 0 and TIME_RE.match(a["at"])
    # The verifier can fail: another secret, a changed body, a changed id.
    assert_not_verified(verifier, other_secret(), reqs[:1])
    r0 = reqs[0]
    tampered = [(w["secret"], (r0.headers, r0.body.replace(b"first", b"forst"))),
                (w["secret"], (dict(r0.headers, **{"webhook-id": "msg_1"}), r0.body)),
                (w["secret"], (dict(r0.headers, **{"webhook-timestamp":
                                                   str(int(r0.headers["webhook-timestamp"]) + 1)}),
                               r0.body))]
    for a in verify(verifier, tampered):
        assert a["ok"] is False, a


def test_star_gets_everything_and_a_type_only_itself(srv, rx, verifier):
    u = User(srv)
    star, star_path = u.hook(rx, ["*"])
    only, only_path = u.hook(rx, ["notes.created"])
    tasks, tasks_path = u.hook(rx, ["tasks.*", "projects.deleted"])
    with stream(u) as s:
        p = u.ok("POST", "/projects", {"name": "P"}, 201)
        t = u.ok("POST", "/tasks", {"project_id": p["id"], "title": "T"}, 201)
        u.ok("PATCH", f"/tasks/{t['id']}", {"title": "T2"})
        n = u.note()
        u.ok("PATCH", f"/notes/{n['id']}", {"title": "x"})
        n2 = u.note()
        u.ok("DELETE", f"/notes/{n['id']}", status=204)
        u.ok("DELETE", f"/projects/{p['id']}", status=204)   # and its task
        events = feed_events(s, 9)
    types = [e.type for e in events]
    assert sorted(types) == sorted(["projects.created", "tasks.created", "tasks.updated",
                                    "notes.created", "notes.updated", "notes.created",
                                    "notes.deleted", "tasks.deleted", "projects.deleted"]), types
    reqs = rx.wait_msgs(star_path, [f"msg_{e.id}" for e in events])
    # Every event's rows were made in the dispatch that made the star's:
    # the other endpoints' logs are complete now.
    u.wait_deliveries(star["id"], lambda d: len(d) == 9 and settled(d))
    want_only = [e for e in events if e.type == "notes.created"]
    want_tasks = [e for e in events if e.resource == "tasks" or e.type == "projects.deleted"]
    only_log = u.wait_deliveries(only["id"], lambda d: len(d) == len(want_only) and settled(d))
    tasks_log = u.wait_deliveries(tasks["id"], lambda d: len(d) == len(want_tasks) and settled(d))
    assert sorted(x["event_id"] for x in only_log) == sorted(e.id for e in want_only), only_log
    assert sorted(x["event_id"] for x in tasks_log) == sorted(e.id for e in want_tasks), tasks_log
    only_reqs = rx.wait_msgs(only_path, [f"msg_{e.id}" for e in want_only])
    tasks_reqs = rx.wait_msgs(tasks_path, [f"msg_{e.id}" for e in want_tasks])
    time.sleep(QUIET_S)
    assert len(rx.got(star_path)) == 9 and len(rx.got(only_path)) == 2 and \
        len(rx.got(tasks_path)) == len(want_tasks), rx.requests
    for secret, rs in ((star["secret"], reqs), (only["secret"], only_reqs),
                       (tasks["secret"], tasks_reqs)):
        by_id = {e.id: e.body for e in events}
        for pl in assert_verified(verifier, secret, rs):
            assert check_event_payload(pl) == by_id[pl["data"]["id"]]
    # One endpoint's secret does not verify another's deliveries.
    assert_not_verified(verifier, only["secret"], reqs[:2])
    assert {r.json()["data"]["row_id"] for r in only_reqs} == {n["id"], n2["id"]}


def test_another_users_writes_never_arrive(srv, rx, verifier):
    """Both write at once (so that the dispatcher's batches hold both
    owners' events); each endpoint gets its owner's only."""
    alice, bob = User(srv, "alice"), User(srv, "bob")
    wa, pa = alice.hook(rx, ["*"])
    wb, pb = bob.hook(rx, ["*"])
    made = {"alice": [], "bob": []}

    def writer(user, who):
        for i in range(6):
            made[who].append(user.note(title=f"{who} {i}")["id"])
    threads = [threading.Thread(target=writer, args=(alice, "alice")),
               threading.Thread(target=writer, args=(bob, "bob"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bob.ok("POST", "/projects", {"name": "bob's"}, 201)
    an = alice.note(title="alice's sentinel")
    ra = rx.wait(pa, 7)
    rb = rx.wait(pb, 7)
    pas = assert_verified(verifier, wa["secret"], ra)
    pbs = assert_verified(verifier, wb["secret"], rb)
    assert {p["data"]["row_id"] for p in pas} == set(made["alice"]) | {an["id"]}, pas
    assert {p["data"]["row_id"] for p in pbs} >= set(made["bob"]), pbs
    owners_a = {p["data"]["owner"] for p in pas}
    owners_b = {p["data"]["owner"] for p in pbs}
    assert len(owners_a) == 1 and len(owners_b) == 1 and owners_a != owners_b
    # Bob's events were dispatched before alice's sentinel (commit order):
    # alice's log is complete and holds only hers.
    log = alice.wait_deliveries(wa["id"], lambda d: len(d) == 7 and settled(d))
    assert {x["event_id"] for x in log} == {p["data"]["id"] for p in pas}, log
    time.sleep(QUIET_S)
    assert len(rx.got(pa)) == 7 and len(rx.got(pb)) == 7, rx.requests


class HeldTransaction:
    """psql holding a transaction with an xid open in a database: the
    change feed's horizon (and so the dispatcher) stops before every event
    committed after it began, until it ends."""

    def __init__(self, db):
        svc = kilnhttp.services()
        self.proc = subprocess.Popen(
            [svc.psql_bin, "-X", "-q", "-At", "-h", svc.pg_socket_dir, "-p", str(svc.pg_port),
             "-U", svc.pg_superuser, "-d", db],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.proc.stdin.write(b"BEGIN;\nSELECT pg_current_xact_id();\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip().isdigit(), "the transaction has no xid"

    def end(self):
        if self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write(b"COMMIT;\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@needs_shared_db
def test_one_batch_of_several_owners_and_an_endpoint_made_meanwhile(dbs, start, rx, verifier):
    """The dispatcher held back (an open transaction in kiln's database)
    while alice changes a note, then makes her endpoint, and both write
    again: released, one batch holds all of it. Alice's endpoint gets her
    change made after it existed only; bob's gets his only."""
    srv = start(dbs.env())
    db = dbs.last
    alice, bob = User(srv, "alice"), User(srv, "bob")
    wb, pb = bob.hook(rx, ["*"])
    held = HeldTransaction(db)
    try:
        early = alice.note(title="before alice's endpoint")
        time.sleep(0.05)
        wa, pa = alice.hook(rx, ["*"])
        b1 = bob.note(title="bob's")
        a1 = alice.note(title="alice's, after her endpoint")
        time.sleep(0.5)
        assert rx.requests == [], "delivered past an open transaction"
    finally:
        held.end()
    (ra,) = rx.wait(pa, 1)
    (rb,) = rx.wait(pb, 1)
    assert assert_verified(verifier, wa["secret"], [ra])[0]["data"]["row_id"] == a1["id"]
    assert assert_verified(verifier, wb["secret"], [rb])[0]["data"]["row_id"] == b1["id"]
    alice.wait_deliveries(wa["id"], lambda d: len(d) == 1 and settled(d))
    bob.wait_deliveries(wb["id"], lambda d: len(d) == 1 and settled(d))
    time.sleep(QUIET_S)
    assert len(rx.got(pa)) == 1 and len(rx.got(pb)) == 1, rx.requests
    assert early["id"] not in b"".join(r.body for r in rx.requests).decode()


def test_failed_writes_and_earlier_changes_are_not_delivered(srv, rx, verifier):
    u = User(srv)
    earlier = u.note(title="before the endpoint")
    w, path = u.hook(rx, ["*"])
    assert_error(u.call("POST", "/notes", {}), 422, "validation_failed")
    assert_error(u.call("PATCH", f"/notes/{earlier['id']}", {"title": ""}), 422,
                 "validation_failed")
    assert_error(u.call("POST", "/tasks", {"project_id": MISSING, "title": "orphan"}), 404,
                 "project_not_found")
    assert_error(u.call("POST", f"/notes/{MISSING}/archive"), 404, "note_not_found")
    assert_error(u.call("DELETE", f"/projects/{MISSING}"), 404, "project_not_found")
    sentinel = u.note(title="sentinel")
    (r,) = rx.wait(path, 1)
    (pl,) = assert_verified(verifier, w["secret"], [r])
    assert pl["type"] == "notes.created" and pl["data"]["row_id"] == sentinel["id"], pl
    log = u.wait_deliveries(w["id"], settled)
    assert len(log) == 1 and log[0]["event_id"] == pl["data"]["id"], log
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 1, rx.got(path)


# --------------------------------------------------------------------------
# rotation
# --------------------------------------------------------------------------

def test_rotation_signs_with_the_new_and_the_old_secret(srv, rx, verifier):
    u = User(srv)
    w, path = u.hook(rx, ["notes.created"])
    s1 = w["secret"]
    u.note()
    (r1,) = rx.wait(path, 1)
    assert_verified(verifier, s1, [r1])
    assert signatures(r1) == [expected_signature(s1, r1)]

    r = u.call("POST", f"/webhooks/{w['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    rot = r.json()["data"]
    s2 = rot["secret"]
    assert SECRET_RE.match(s2) and s2 != s1
    assert set(rot) == WEBHOOK_KEYS | {"secret", "previous_secret_expires_at"}, rot
    until = datetime.datetime.fromisoformat(rot["previous_secret_expires_at"].replace("Z", "+00:00"))
    left = (until - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert abs(left - 86400) < 120, rot
    r = u.call("GET", f"/webhooks/{w['id']}")
    assert s2 not in r.text and s1 not in r.text and "secret" not in r.json()["data"]

    u.note()
    r2 = rx.wait(path, 2)[1]
    sigs = signatures(r2)
    assert len(sigs) == 2, f"want two signatures after a rotation: {r2.headers}"
    assert sigs == [expected_signature(s2, r2), expected_signature(s1, r2)], sigs
    assert_verified(verifier, s2, [r2])
    assert_verified(verifier, s1, [r2])
    assert_not_verified(verifier, other_secret(), [r2])
    # The old secret verifies nothing signed before the rotation with s2,
    # and a second rotation drops the oldest.
    s3 = u.ok("POST", f"/webhooks/{w['id']}/rotate-secret")["secret"]
    u.note()
    r3 = rx.wait(path, 3)[2]
    assert signatures(r3) == [expected_signature(s3, r3), expected_signature(s2, r3)]
    assert_verified(verifier, s3, [r3])
    assert_verified(verifier, s2, [r3])
    assert_not_verified(verifier, s1, [r3])
    log = srv.stdout_text() + srv.stderr_text()
    for s in (s1, s2, s3):
        assert s not in log and s[6:] not in log, "a secret is in the log"


# --------------------------------------------------------------------------
# retries
# --------------------------------------------------------------------------

def test_deliveries_to_an_endpoint_reuse_connections(srv, rx, verifier):
    """An endpoint that keeps connections open gets deliveries on a few of
    them (a runner keeps its connection), not a TCP handshake each; an
    endpoint that closes them gets each on a new one, and both are
    answered."""
    u = User(srv)
    path = rx.new_path("keep")
    rx.keep_alive.add(path)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    for i in range(4):
        for j in range(6):
            u.note(title=f"kept {i}.{j}")
        rx.wait(path, 6 * (i + 1))
    reqs = rx.wait(path, 24)
    assert_verified(verifier, w["secret"], reqs)
    conns = {r.peer for r in reqs}
    # JOB_CONCURRENCY runners (4) each keep one; a few more if the
    # receiver timed one out meanwhile.
    assert len(conns) <= 8, f"{len(conns)} connections for {len(reqs)} deliveries: {conns}"
    log = u.wait_deliveries(w["id"], lambda d: len(d) == 24 and settled(d))
    assert all(d["state"] == "succeeded" and d["attempts"] == 1 for d in log), log
    # Each delivery's job ended done, once (on PostgreSQL by the statement
    # that records the attempt: jobs.h, kiln_job_done_sql).
    jobs = job_rows(srv, "SELECT j.state, j.attempts, j.finished_at IS NOT NULL FROM jobs j "
                         "JOIN webhook_deliveries d ON j.args = '{\"delivery\":' || d.id || '}' "
                         f"WHERE j.kind = 'webhooks.deliver' AND d.webhook_id = '{w['id']}'")
    assert len(jobs) == 24 and all(j == ("done", "1", "1") for j in jobs), jobs
    # A receiver that closes after each answer: a fresh connection each time.
    closing = rx.new_path("close")
    w2, _ = u.hook(rx, ["notes.created"], path=closing)
    u.note(title="after")
    u.note(title="after again")
    got = rx.wait(closing, 2)
    assert len({r.peer for r in got}) == 2, got


def test_two_500s_then_200_is_three_attempts_of_one_message(srv, rx, verifier):
    u = User(srv)
    path = rx.new_path()
    rx.script(path, 500, 500, 200)
    w, _ = u.hook(rx, ["notes.*"], path=path)
    u.note()
    reqs = rx.wait(path, 3)
    assert len({r.msg_id for r in reqs}) == 1 and reqs[0].msg_id.startswith("msg_"), reqs
    assert len({r.body for r in reqs}) == 1, "a retry sent another body"
    assert_verified(verifier, w["secret"], reqs)
    for a, b in zip(reqs, reqs[1:]):
        assert b.at - a.answered_at >= RETRY_GAP_S * 0.9, \
            f"a retry came {b.at - a.answered_at:.3f} s after the failure; the schedule says 0.2 s"
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "succeeded" and d["attempts"] == 3 and d["msg_id"] == reqs[0].msg_id, d
    log = d["attempt_log"]
    assert [a["status"] for a in log] == [500, 500, 200], log
    assert [a["error"] for a in log] == ["HTTP 500", "HTTP 500", None], log
    assert all(isinstance(a["latency_ms"], int) and a["latency_ms"] >= 0 for a in log), log
    assert [a["at"] for a in log] == sorted(a["at"] for a in log), log
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 3
    # A success clears the run of failures: the endpoint is on, no reason.
    shown = u.ok("GET", f"/webhooks/{w['id']}")
    assert shown["enabled"] is True and shown["disabled_reason"] is None


def test_429_is_retried(srv, rx, verifier):
    u = User(srv)
    path = rx.new_path()
    rx.script(path, 429, 200)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    u.note()
    reqs = rx.wait(path, 2)
    assert reqs[0].msg_id == reqs[1].msg_id
    assert_verified(verifier, w["secret"], reqs)
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "succeeded" and [a["status"] for a in d["attempt_log"]] == [429, 200], d


@pytest.mark.parametrize("status", [410, 400, 404])
def test_a_client_error_is_not_retried(srv, rx, status):
    u = User(srv)
    path = rx.new_path()
    rx.script(path, status, 200)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    u.note()
    rx.wait(path, 1)
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed" and d["attempts"] == 1, d
    assert d["attempt_log"] == [dict(d["attempt_log"][0], status=status, error=f"HTTP {status}")]
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 1, f"HTTP {status} was retried: {rx.got(path)}"
    assert u.deliveries(w["id"])[0]["state"] == "failed"
    # One failure is not a reason to turn the endpoint off.
    assert u.ok("GET", f"/webhooks/{w['id']}")["enabled"] is True


def test_a_timeout_is_retried(dbs, start, rx, verifier):
    srv = start(dbs.env(), WEBHOOK_TIMEOUT_SECONDS=1)
    u = User(srv)
    path = rx.new_path()
    rx.script(path, Sleep(2.5), 200)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    u.note()
    reqs = rx.wait(path, 2, timeout=WAIT_S + 3)
    assert reqs[0].msg_id == reqs[1].msg_id
    assert reqs[1].at - reqs[0].at < 2.4, "the second attempt waited for the slow answer"
    assert_verified(verifier, w["secret"], reqs)
    (d,) = u.wait_deliveries(w["id"], settled)
    first, second = d["attempt_log"]
    assert d["state"] == "succeeded" and d["attempts"] == 2, d
    assert first["status"] is None and re.search(r"time", first["error"] or "", re.I), first
    assert 900 <= first["latency_ms"] < 2400, first
    assert second["status"] == 200 and second["error"] is None, second


def test_connection_errors_are_retried_until_the_schedule_is_spent(srv, rx):
    u = User(srv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed when the block ends: nothing listens
    w = u.ok("POST", "/webhooks", {"url": f"http://127.0.0.1:{port}/gone", "events": ["*"]}, 201)
    u.note()
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed" and d["attempts"] == 4, d      # 1 + 3 retries
    for a in d["attempt_log"]:
        assert a["status"] is None and a["error"], a


def test_a_big_answer_is_read_in_part_and_ignored(srv, rx):
    u = User(srv)
    path = rx.new_path()
    rx.script(path, Big(1_000_000))
    w, _ = u.hook(rx, ["notes.created"], path=path)
    u.note()
    rx.wait(path, 1)
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "succeeded" and d["attempts"] == 1, d
    assert d["attempt_log"][0]["status"] == 200 and d["attempt_log"][0]["error"] is None, d


def test_localhost_and_ipv6_loopback_when_private_addresses_are_allowed(srv, rx, verifier):
    """WEBHOOK_ALLOW_PRIVATE=true: localhost (pinned to 127.0.0.1) and an
    IPv6 literal (which the resolve pin cannot carry: the socket check
    alone) are delivered to."""
    rx6 = Receiver("::1")
    try:
        u = User(srv)
        p4, p6 = rx.new_path(), rx6.new_path()
        w4 = u.ok("POST", "/webhooks", {"url": rx.url(p4, host="localhost"),
                                        "events": ["notes.created"]}, 201)
        w6 = u.ok("POST", "/webhooks", {"url": rx6.url(p6), "events": ["notes.created"]}, 201)
        assert w6["url"].startswith("http://[::1]:"), w6
        n = u.note()
        (r4,) = rx.wait(p4, 1)
        (r6,) = rx6.wait(p6, 1)
        for w, r in ((w4, r4), (w6, r6)):
            (pl,) = assert_verified(verifier, w["secret"], [r])
            assert pl["data"]["row_id"] == n["id"]
            assert r.headers.get("host", "").startswith("localhost:" if w is w4 else "[::1]:"), \
                r.headers
    finally:
        rx6.close()


# --------------------------------------------------------------------------
# disabling
# --------------------------------------------------------------------------

def test_an_endpoint_failing_past_the_schedule_is_disabled_and_can_be_enabled(srv, rx, verifier):
    u = User(srv)
    path = rx.new_path()
    rx.script(path, 500)
    w, _ = u.hook(rx, ["notes.*"], path=path)
    healthy, hpath = u.hook(rx, ["notes.*"])
    offset = len(srv.stdout_bytes())
    u.note()
    reqs = rx.wait(path, 4)
    assert len({r.msg_id for r in reqs}) == 1
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed" and d["attempts"] == 4, d
    shown = wait_until(lambda: u.ok("GET", f"/webhooks/{w['id']}"), lambda x: not x["enabled"],
                       what="the failing endpoint disabled")
    why = shown["disabled_reason"]
    assert isinstance(why, str) and "HTTP 500" in why and "isabled" in why, shown
    assert "(600 ms)" in why, f"the reason should name the schedule's span: {why}"
    logged = ak.wait_log(srv, lambda rec: rec.get("message") == "webhooks: an endpoint was disabled"
                         and rec.get("webhook") == w["id"], offset)
    assert logged, "the disabling was not logged"
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 4, "attempts after the schedule was spent"

    # Off: a later change is not delivered to it (the healthy endpoint of
    # the same user shows when the dispatcher has passed it).
    n2 = u.note()
    rx.wait(hpath, 2)
    u.wait_deliveries(healthy["id"], lambda x: len(x) == 2 and settled(x))
    assert len(u.deliveries(w["id"])) == 1
    # Another PATCH leaves the reason; enabled: true clears it.
    assert u.ok("PATCH", f"/webhooks/{w['id']}", {"description": "x"})["disabled_reason"] == why
    on = u.ok("PATCH", f"/webhooks/{w['id']}", {"enabled": True})
    assert on["enabled"] is True and on["disabled_reason"] is None, on
    assert u.ok("GET", f"/webhooks/{w['id']}") == on
    rx.script(path, 200)
    u.ok("PATCH", f"/notes/{n2['id']}", {"title": "after"})
    r = rx.wait(path, 5)[4]
    (pl,) = assert_verified(verifier, w["secret"], [r])
    assert pl["type"] == "notes.updated" and pl["data"]["row_id"] == n2["id"]
    # Its run of failures was cleared too: one failure now does not turn
    # it off again.
    rx.script(path, 410)
    u.note()
    rx.wait(path, 6)
    log = u.wait_deliveries(w["id"], lambda x: len(x) == 3 and settled(x))
    assert log[0]["state"] == "failed", log
    shown = u.ok("GET", f"/webhooks/{w['id']}")
    assert shown["enabled"] is True and shown["disabled_reason"] is None, shown


# --------------------------------------------------------------------------
# manual retry and the test message
# --------------------------------------------------------------------------

def test_a_retry_by_hand_sends_the_same_message(srv, rx, verifier):
    u = User(srv)
    path = rx.new_path()
    rx.script(path, 410, 200)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    u.note()
    (first,) = rx.wait(path, 1)
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed"
    r = u.call("POST", f"/webhooks/{w['id']}/deliveries/{d['id']}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["data"] == {"id": d["id"], "state": "pending"}
    again = rx.wait(path, 2)[1]
    assert again.msg_id == first.msg_id == d["msg_id"] and again.body == first.body
    assert_verified(verifier, w["secret"], [first, again])
    (d2,) = u.wait_deliveries(w["id"], lambda x: x[0]["state"] == "succeeded")
    assert d2["id"] == d["id"] and d2["attempts"] == 2, d2
    assert [a["status"] for a in d2["attempt_log"]] == [410, 200], d2
    # A succeeded delivery may be sent again too.
    u.ok("POST", f"/webhooks/{w['id']}/deliveries/{d['id']}/retry", status=202)
    assert rx.wait(path, 3)[2].msg_id == first.msg_id

    other, _ = u.hook(rx, ["notes.created"])
    for bad in ("999999999", "0", "abc", "-1", "1.5", str(d["id"]) + "0"):
        assert_error(u.call("POST", f"/webhooks/{w['id']}/deliveries/{bad}/retry"), 404,
                     "delivery_not_found")
    # Another webhook's delivery (the same user's): not this one's.
    assert_error(u.call("POST", f"/webhooks/{other['id']}/deliveries/{d['id']}/retry"), 404,
                 "delivery_not_found")
    assert_error(u.call("POST", f"/webhooks/{MISSING}/deliveries/{d['id']}/retry"), 404,
                 "webhook_not_found")
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 3


def test_the_test_message(srv, rx, verifier):
    u = User(srv)
    w, path = u.hook(rx, ["notes.created"])   # a test goes whatever the patterns
    r = u.call("POST", f"/webhooks/{w['id']}/test")
    assert r.status_code == 202, r.text
    q = r.json()["data"]
    assert q["state"] == "pending" and isinstance(q["id"], int), q
    (req,) = rx.wait(path, 1)
    check_delivery_request(req, path)
    assert re.fullmatch(r"msg_test_[0-9a-f]{24}", req.msg_id), req.headers
    (pl,) = assert_verified(verifier, w["secret"], [req])
    assert set(pl) == {"type", "timestamp", "data"} and pl["type"] == "webhook.test", pl
    assert TIME_RE.match(pl["timestamp"]) and pl["data"]["webhook_id"] == w["id"], pl
    assert isinstance(pl["data"]["message"], str) and pl["data"]["message"], pl
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["id"] == q["id"] and d["type"] == "webhook.test" and d["event_id"] is None, d
    assert d["msg_id"] == req.msg_id and d["state"] == "succeeded" and d["attempts"] == 1, d
    u.ok("POST", f"/webhooks/{w['id']}/test", status=202)
    second = rx.wait(path, 2)[1]
    assert second.msg_id != req.msg_id, "two tests share a webhook-id"
    assert_verified(verifier, w["secret"], [second])


# --------------------------------------------------------------------------
# outbound safety
# --------------------------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost/",
    "http://localhost:{port}/hook",
    "http://LOCALHOST./",
    "http://hooks.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]/",
    "http://0x7f.1/",
    "http://2130706433/",
    "http://127.1/",
    "http://0177.0.0.1/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_addresses_are_refused_at_registration(strict, rx, url):
    u = User(strict)
    url = url.format(port=rx.port)
    err = assert_error(u.call("POST", "/webhooks", {"url": url, "events": ["*"]}), 422,
                       "validation_failed")
    assert "url" in err.get("details", {}), err
    assert u.ok("GET", "/webhooks") == []
    # Nor may an endpoint be moved there. (A public name: registering does
    # not look it up; this user writes nothing, so nothing is delivered.)
    w = u.ok("POST", "/webhooks", {"url": "https://receiver.example/hook", "events": ["*"]}, 201)
    err = assert_error(u.call("PATCH", f"/webhooks/{w['id']}", {"url": url}), 422,
                       "validation_failed")
    assert "url" in err.get("details", {}), err
    assert u.ok("GET", f"/webhooks/{w['id']}")["url"] == "https://receiver.example/hook"
    u.ok("DELETE", f"/webhooks/{w['id']}", status=204)
    assert rx.requests == []


def test_a_name_that_resolves_to_loopback_fails_at_delivery(strict, rx):
    name = hosts_loopback_name()
    if name is None:
        pytest.skip("no name in /etc/hosts maps to loopback only (besides localhost)")
    u = User(strict)
    path = rx.new_path()
    w = u.ok("POST", "/webhooks", {"url": rx.url(path, host=name), "events": ["notes.*"]}, 201)
    u.note()
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed" and d["attempts"] == 1, d   # refused: not retried
    (a,) = d["attempt_log"]
    assert a["status"] is None and name in a["error"] and "127." in a["error"], a
    assert "loopback" in a["error"], a
    assert path not in a["error"], "the error shows the URL's path"
    time.sleep(QUIET_S)
    assert rx.requests == [], "a request reached the loopback receiver"


@needs_shared_db
def test_an_endpoint_allowed_elsewhere_is_refused_by_a_strict_instance(dbs, kiln, rx):
    """Registered through an instance with WEBHOOK_ALLOW_PRIVATE=true,
    delivered by one without it (one database): refused at delivery."""
    db = dbs.env()
    skb = ak.secret_key_base()
    lax = ak.start_kiln(kiln, **db, **dict(HOOK_ENV, SECRET_KEY_BASE=skb))
    u = User(lax)
    path = rx.new_path()
    w = u.ok("POST", "/webhooks", {"url": rx.url(path), "events": ["notes.*"]}, 201)
    assert lax.stop() == 0
    env = dict(HOOK_ENV, SECRET_KEY_BASE=skb)
    del env["WEBHOOK_ALLOW_PRIVATE"]
    tight = ak.start_kiln(kiln, **db, **env)
    u.srv = tight
    u.note()
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed" and d["attempts"] == 1, d
    (a,) = d["attempt_log"]
    assert a["status"] is None and "127.0.0.1" in a["error"] and "loopback" in a["error"], a
    time.sleep(QUIET_S)
    assert rx.requests == []


@pytest.mark.parametrize("status", [302, 307])
def test_redirects_are_not_followed(srv, rx, status):
    u = User(srv)
    path, elsewhere = rx.new_path(), rx.new_path("elsewhere")
    rx.script(path, Redirect(elsewhere, status))
    w, _ = u.hook(rx, ["notes.created"], path=path)
    u.note()
    rx.wait(path, 1)
    (d,) = u.wait_deliveries(w["id"], settled)
    assert d["state"] == "failed" and d["attempts"] == 1, d
    (a,) = d["attempt_log"]
    assert a["status"] == status and a["error"] == f"HTTP {status}", a
    time.sleep(QUIET_S)
    assert len(rx.got(path)) == 1 and rx.got(elsewhere) == [], rx.requests


# --------------------------------------------------------------------------
# order
# --------------------------------------------------------------------------

def test_first_attempts_in_outbox_order_and_a_retry_does_not_hold_back_later_events(dbs, start, rx,
                                                                                    verifier):
    """One runner (JOB_CONCURRENCY=1): deliveries arrive in the feed's
    order; the first one fails and waits out its retry delay while the
    later ones go (no head-of-line blocking)."""
    delay = 4 if SANITIZED else 2
    srv = start(dbs.env(), JOB_CONCURRENCY=1, WEBHOOK_RETRY_SCHEDULE=f"{delay}s,200ms")
    u = User(srv)
    path = rx.new_path()
    rx.script(path, 500, 200)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    notes = [u.note(title=f"n{i}") for i in range(5)]
    reqs = rx.wait(path, 6, timeout=WAIT_S + delay)
    rows = [r.json()["data"]["row_id"] for r in reqs]
    ids = [n["id"] for n in notes]
    assert rows == ids + [ids[0]], \
        f"want n0 (failed), n1..n4, then n0's retry; got {[ids.index(x) for x in rows]}"
    event_ids = [r.json()["data"]["id"] for r in reqs[:5]]
    assert event_ids == sorted(event_ids), event_ids
    assert reqs[5].msg_id == reqs[0].msg_id
    assert_verified(verifier, w["secret"], reqs)
    assert reqs[5].at - reqs[0].answered_at >= delay * 0.9


def test_deliveries_to_one_endpoint_are_in_flight_at_once(srv, rx, verifier):
    """With several runners (JOB_CONCURRENCY's default, 4) a slow answer
    does not hold back the next events to the same endpoint: they arrive
    while it is still being answered."""
    u = User(srv)
    path = rx.new_path()
    release = threading.Event()
    rx.script(path, Hold(release, 200, limit=4.0), 200)
    w, _ = u.hook(rx, ["notes.created"], path=path)
    try:
        n0 = u.note()
        (first,) = rx.wait(path, 1)
        later = [u.note(), u.note()]
        reqs = rx.wait(path, 3, timeout=3.5)
        assert first.answered_at is None, "the first answer was sent before the later ones came"
    finally:
        release.set()
    assert first.json()["data"]["row_id"] == n0["id"]
    assert {r.json()["data"]["row_id"] for r in reqs[1:]} == {n["id"] for n in later}
    assert_verified(verifier, w["secret"], reqs)
    log = u.wait_deliveries(w["id"], lambda d: len(d) == 3 and settled(d))
    assert all(x["state"] == "succeeded" and x["attempts"] == 1 for x in log), log


def test_one_batch_delivers_several_and_records_each(dbs, start, rx, verifier):
    """One runner (JOB_CONCURRENCY=1) takes the queued deliveries as one
    batch (KILN_WEBHOOK_BATCH, 16): writes held back behind a first
    delivery go to two endpoints in order, each exactly once, and each
    attempt is recorded with its own answer. A 500 among them is retried;
    an endpoint's failing_since follows its last answer in the batch: P's
    500 came before its successes (cleared), Q's was its last (set) until
    its retry succeeds."""
    retry = 6 if SANITIZED else 3
    srv = start(dbs.env(), JOB_CONCURRENCY=1, WEBHOOK_RETRY_SCHEDULE=f"{retry}s,200ms")
    u = User(srv)
    p_path, q_path = rx.new_path(), rx.new_path()
    release = threading.Event()
    rx.script(p_path, Hold(release, 200, limit=8.0), 200, 500, 200, 200, 200, 200, 200)
    rx.script(q_path, 200, 200, 200, 200, 200, 200, 500, 200)
    p, _ = u.hook(rx, ["notes.created"], path=p_path)
    q, _ = u.hook(rx, ["notes.created"], path=q_path)
    try:
        first = u.note(title="first")
        rx.wait(p_path, 1)
        # the one runner is held: these wait in the queue, then go as one batch
        notes = [u.note(title=f"n{i}") for i in range(6)]
        time.sleep(0.5)
    finally:
        release.set()
    ids = [first["id"]] + [n["id"] for n in notes]

    def log_of(w):
        return u.wait_deliveries(w["id"], lambda d: len(d) == 7 and all(x["attempts"] >= 1
                                                                          for x in d))
    p_log, q_log = log_of(p), log_of(q)
    fs = dict(job_rows(srv, "SELECT id, failing_since FROM webhooks"))
    assert fs[p["id"]] == "" and fs[q["id"]] != "", fs
    assert sorted(d["state"] for d in q_log) == ["pending"] + ["succeeded"] * 6, q_log
    reqs = {path: rx.wait(path, 8, timeout=WAIT_S + retry) for path in (p_path, q_path)}
    for path, w in ((p_path, p), (q_path, q)):
        assert_verified(verifier, w["secret"], reqs[path])
        rows = [r.json()["data"]["row_id"] for r in reqs[path]]
        retried = ids[2] if path == p_path else ids[6]
        assert rows == ids + [retried], (path, [ids.index(x) for x in rows])
        log = u.wait_deliveries(w["id"], lambda d: len(d) == 7 and settled(d))
        assert all(d["state"] == "succeeded" for d in log), log
        assert sorted(d["attempts"] for d in log) == [1] * 6 + [2], log
    assert len(p_log) == len(q_log) == 7
    time.sleep(QUIET_S)
    assert len(rx.got(p_path)) == len(rx.got(q_path)) == 8, "a delivery went out twice"
    fs = dict(job_rows(srv, "SELECT id, failing_since FROM webhooks"))
    assert fs[p["id"]] == fs[q["id"]] == "", fs


def test_an_endpoint_deleted_during_a_batch_does_not_fail_the_others_record(dbs, start, rx,
                                                                            verifier):
    """Two endpoints' deliveries in one batch (one runner); the second
    endpoint is deleted (its deliveries with it) while the batch is out:
    the first one's attempt is still recorded, so it is not sent again."""
    srv = start(dbs.env(), JOB_CONCURRENCY=1)
    u = User(srv)
    held, other = rx.new_path(), rx.new_path()
    release = threading.Event()
    rx.script(held, Hold(release, 200, limit=8.0))
    a, _ = u.hook(rx, ["notes.created"], path=held)
    b, _ = u.hook(rx, ["notes.created"], path=other)
    try:
        u.note()
        rx.wait(held, 1)
        u.ok("DELETE", f"/webhooks/{b['id']}", status=204)
    finally:
        release.set()
    (d,) = u.wait_deliveries(a["id"], settled)
    assert d["state"] == "succeeded" and d["attempts"] == 1, d
    time.sleep(QUIET_S)
    reqs = rx.got(held)
    assert len(reqs) == 1, f"the held endpoint got {len(reqs)} requests: its record failed"
    assert_verified(verifier, a["secret"], reqs)


# --------------------------------------------------------------------------
# two instances
# --------------------------------------------------------------------------

@needs_shared_db
def test_writes_on_either_instance_are_delivered_once(dbs, kiln, rx, verifier):
    db = dbs.env()
    skb = ak.secret_key_base()
    a = ak.start_kiln(kiln, **db, **dict(HOOK_ENV, SECRET_KEY_BASE=skb))
    b = ak.start_kiln(kiln, **db, **dict(HOOK_ENV, SECRET_KEY_BASE=skb))
    u = User(a)
    w, path = u.hook(rx, ["notes.*"], srv=b)
    notes = [u.note(srv=(a if i % 2 == 0 else b)) for i in range(8)]
    log = u.wait_deliveries(w["id"], lambda d: len(d) == 8 and settled(d), srv=a)
    reqs = rx.wait_msgs(path, [x["msg_id"] for x in log])
    time.sleep(QUIET_S)
    reqs = rx.got(path)
    assert len(reqs) == 8, f"{len(reqs)} requests for 8 events: {reqs}"
    assert len({r.msg_id for r in reqs}) == 8
    assert {r.json()["data"]["row_id"] for r in reqs} == {n["id"] for n in notes}
    assert_verified(verifier, w["secret"], reqs)
    assert all(x["attempts"] == 1 and x["state"] == "succeeded" for x in log), log
    assert u.ok("GET", f"/webhooks/{w['id']}/deliveries", srv=b) == log
