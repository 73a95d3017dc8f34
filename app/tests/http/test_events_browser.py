"""The change feed in a real browser (docs/REALTIME.md): Chromium's own
``EventSource``, with the session cookie Chromium stored from the dev
login, against a running kiln; app/tests/browser/events.js drives Debian's
/usr/bin/chromium through playwright-core (npm, installed by
scripts/npm-deps.sh; no browser download) and reports what the EventSource
does, one JSON line at a time.

* ``test_browser_resumes_after_the_connection_drops`` (every store mode):
  the page is served through a gate (a TCP relay on its own port, the
  page's origin) in front of kiln. A note created through the API arrives
  as a message whose ``lastEventId`` is the event's id; then the gate drops
  the connection and holds the browser's next one: that request must carry
  ``Last-Event-ID`` with the last id received. A second note is written
  while the browser is away; let through, the browser gets it from the
  catch-up, once, and nothing twice.
* ``test_browser_resumes_across_a_restart`` (PostgreSQL + Valkey modes: the
  session must outlive the process): kiln gets SIGTERM with the stream
  open (the stream ends with ``retry: 1000``); the port is held by the gate
  until the browser's reconnection arrives with ``Last-Event-ID``; a new
  kiln on the same port and database, a note written, the held connection
  closed: the browser reconnects to the new kiln and gets the note.
* ``test_browser_reconnecting_into_a_drain_keeps_trying`` (every mode): the
  browser's reconnection reaches the draining kiln on an idle keep-alive
  connection; the EventSource must not give up (it does on any answer but
  a 200 event stream).
"""

import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import authkit as ak
import kilnhttp
from kilnhttp import STORES

BROWSER_DIR = kilnhttp.REPO_ROOT / "app" / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")


def browser_problem():
    if not (shutil.which("node") or shutil.which("nodejs")):
        return "node not found (Debian packages nodejs and npm; scripts/deps.sh)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (Debian package chromium; scripts/deps.sh)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        return "playwright-core is not installed in app/tests/browser/node_modules: run scripts/npm-deps.sh"
    return None


@pytest.fixture(scope="module", autouse=True)
def browser_tools():
    why = browser_problem()
    if why:
        pytest.fail(why, pytrace=False)


# --------------------------------------------------------------------------
# the gate: a relay in front of kiln that can drop and hold connections
# --------------------------------------------------------------------------

class Gate:
    """A listener on 127.0.0.1:``port``. ``forward``: every connection is
    relayed to ``target`` (kiln's port). ``hold``: connections are accepted
    and their request head read, then kept open, unanswered, in ``held``
    (a queue of (socket, head bytes)) until the test closes them."""

    def __init__(self, port, target=None):
        self.port = port
        self.target = target
        self.mode = "forward" if target else "hold"
        self.held = queue.Queue()
        self.pairs = []
        self.lock = threading.Lock()
        self.closed = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.closed:
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r or self.closed:
                continue
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "hold":
                threading.Thread(target=self._hold, args=(conn,), daemon=True).start()
            else:
                try:
                    up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                except OSError:
                    conn.close()
                    continue
                with self.lock:
                    self.pairs.append((conn, up))
                for a, b in ((conn, up), (up, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _hold(self, conn):
        head = b""
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
        self.held.put((conn, head))

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self):
        """Close every relayed connection, both sides, at once."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def next_held(self, timeout=15.0, browser=None):
        try:
            return self.held.get(timeout=timeout)
        except queue.Empty:
            if browser is not None:
                browser.drain()
            raise AssertionError(f"no connection reached the gate on port {self.port} "
                                 f"within {timeout} s; the browser saw "
                                 f"{browser.log if browser else '?'}") from None

    def close(self):
        self.closed = True
        self.thread.join(timeout=2)
        self.sock.close()
        self.drop()


def header(head, name):
    """A request header's value from raw request bytes (None when absent)."""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name.lower():
            return v.strip()
    return None


# --------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------

class Browser:
    """app/tests/browser/events.js as a child; ``expect`` waits for a
    reported event."""

    def __init__(self, base_url, email):
        node = shutil.which("node") or shutil.which("nodejs")
        self.log = []
        self.lines = queue.Queue()
        env = dict(os.environ, CHROMIUM_BIN=CHROMIUM)
        self.proc = subprocess.Popen([node, str(BROWSER_DIR / "events.js"), base_url, email],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=str(BROWSER_DIR), env=env,
                                     start_new_session=True)
        self.err = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "junk", "line": line.decode(errors="replace")}
            self.lines.put(ev)

    def expect(self, pred, what, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"browser: no {what} within {timeout} s; saw {self.log}; "
                                     f"stderr: {b''.join(self.err)[-2000:]!r}")
            try:
                ev = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.log.append(ev)
            if ev.get("ev") == "fatal":
                raise AssertionError(f"browser failed: {ev['error']}")
            if pred(ev):
                return ev

    def send(self, cmd):
        """A command for events.js (one JSON line on its stdin)."""
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def fetch(self, path):
        """fetch(path) from the page: a request on the browser's own
        connection pool, whose connection then stays there, idle."""
        self.send({"fetch": path})
        return self.expect(lambda e: e["ev"] == "fetched" and e["path"] == path, f"fetch {path}")

    def drain(self):
        """Move what was reported so far into ``log``."""
        while True:
            try:
                self.log.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def browsers():
    made = []

    def make(base_url, email=None):
        b = Browser(base_url, email or ak.unique_email("browser"))
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


def login(browser):
    ev = browser.expect(lambda e: e["ev"] == "login", "dev login")
    assert ev["status"] == 200 and ev["cookie"], ev
    assert ev["httpOnly"] is True, ev
    opened(browser, "EventSource open")
    return ev["cookie"]


def opened(browser, what):
    """The next open; an EventSource closed for good (readyState 2: the
    stream answered something else than 200 text/event-stream) fails at once."""
    ev = browser.expect(lambda e: e["ev"] == "open" or (e["ev"] == "error" and e["readyState"] == 2),
                        what)
    assert ev["ev"] == "open", f"the EventSource gave up (readyState 2): {browser.log}"


def create_note(srv, cookie, title):
    r = ak.call(srv, "POST", "/api/v1/notes", cookies={ak.SESSION_COOKIE: cookie},
                json_body={"title": title, "content": "written by test_events_browser.py"})
    assert r.status == 201, r
    return r.json()["data"]["id"]


def note_message(browser, note_id, what):
    """The message for note ``note_id`` (its payload parsed)."""
    ev = browser.expect(lambda e: e["ev"] == "message" and json.loads(e["data"]).get("row_id") == note_id,
                        what)
    data = json.loads(ev["data"])
    assert data["type"] == "notes.created" and data["resource"] == "notes", data
    assert data["action"] == "created" and data["data"]["id"] == note_id, data
    # The SSE id line is the event's id: what EventSource resumes with.
    assert ev["lastEventId"] == str(data["id"]), ev
    return ev, data


def test_browser_resumes_after_the_connection_drops(kiln, browsers):
    gate_port = kilnhttp.free_port()
    # The page's origin is the gate's: PUBLIC_URL says so (the dev login's
    # Origin check), kiln itself listens on its own port behind it.
    srv = ak.start_kiln(kiln, PUBLIC_URL=f"http://127.0.0.1:{gate_port}")
    gate = Gate(gate_port, target=srv.port)
    try:
        b = browsers(f"http://127.0.0.1:{gate_port}")
        cookie = login(b)

        first = create_note(srv, cookie, "before the drop")
        ev1, data1 = note_message(b, first, "message for the first note")

        # Drop the stream and hold the browser's reconnection.
        gate.mode = "hold"
        gate.drop()
        b.expect(lambda e: e["ev"] == "error" and e["readyState"] == 0, "error (reconnecting)")
        conn, head = gate.next_held(browser=b)
        assert head.startswith(b"GET /api/v1/events "), head
        assert header(head, "Last-Event-ID") == ev1["lastEventId"], head

        # Written while the browser is away; then let it through.
        second = create_note(srv, cookie, "while away")
        gate.mode = "forward"
        conn.close()
        opened(b, "EventSource open again")
        ev2, data2 = note_message(b, second, "the note written while away (catch-up)")
        assert int(ev2["lastEventId"]) != int(ev1["lastEventId"]), (ev1, ev2)

        # Nothing twice, no reset: a third note arrives live after it.
        third = create_note(srv, cookie, "after the resume")
        note_message(b, third, "message for the third note")
        ids = [json.loads(e["data"])["id"] for e in b.log if e["ev"] == "message"]
        assert len(ids) == len(set(ids)) == 3, b.log
        assert not [e for e in b.log if e["ev"] == "reset"], b.log
    finally:
        gate.close()


@pytest.mark.skipif(STORES == "embedded",
                    reason="sessions live in the process's memory in embedded mode: a restart ends them")
def test_browser_resumes_across_a_restart(kiln, browsers):
    port = kilnhttp.free_port()
    # The default idle grace (1 s, as long as the stream's retry: 1000):
    # the first reconnection may still reach the draining kiln on an idle
    # keep-alive connection and be told to retry; the gate takes the next.
    env = {"PUBLIC_URL": f"http://127.0.0.1:{port}", "SECRET_KEY_BASE": ak.secret_key_base(),
           "RATE_LIMIT_PUBLIC": 1000000, "RATE_LIMIT_PROTECTED": 1000000}
    srv = kiln(wait=False, PORT=port, **env)
    srv.port = port
    srv.wait_ready()
    b = browsers(f"http://127.0.0.1:{port}")
    cookie = login(b)
    first = create_note(srv, cookie, "before the restart")
    ev1, _ = note_message(b, first, "message for the first note")

    # SIGTERM with the stream open: it ends at once (retry: 1000), kiln exits.
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(10) == 0, srv.stderr_text()[-2000:]
    b.expect(lambda e: e["ev"] == "error" and e["readyState"] == 0, "error (reconnecting)")

    gate = Gate(port)   # holds the port until the browser knocks
    try:
        conn, head = gate.next_held(browser=b)
        assert head.startswith(b"GET /api/v1/events "), head
        assert header(head, "Last-Event-ID") == ev1["lastEventId"], head
        gate.close()
        srv2 = kiln(wait=False, PORT=port, **env)
        srv2.port = port
        srv2.wait_ready()
        second = create_note(srv2, cookie, "written on the new kiln")
        conn.close()
        opened(b, "EventSource open on the new kiln")
        note_message(b, second, "the note written while away (catch-up on the new kiln)")
        ids = [json.loads(e["data"])["id"] for e in b.log if e["ev"] == "message"]
        assert len(ids) == len(set(ids)) == 2, b.log
    finally:
        gate.close()


def test_browser_reconnecting_into_a_drain_keeps_trying(kiln, browsers):
    """SIGTERM ends the stream with retry: 1000, but the browser still holds
    an idle keep-alive connection to the same kiln, which the drain keeps
    open for SHUTDOWN_IDLE_GRACE_MS (3 s here, so the reconnection always
    takes it; 1 s by default, a race). The reconnection goes out on it a
    second later and reaches the draining kiln. Whatever that kiln answers,
    the browser must not give up (readyState 2): a client of a rolling
    deploy would stop receiving events until the page is reloaded. (A 503
    did that; the draining kiln now answers a 200 stream that only says
    retry, and ends.)"""
    srv = ak.start_kiln(kiln, SHUTDOWN_IDLE_GRACE_MS=3000)
    b = browsers(f"http://127.0.0.1:{srv.port}")
    login(b)
    # A request besides the stream: its connection stays in Chromium's pool.
    assert b.fetch("/livez")["status"] == 200
    srv.send_signal(signal.SIGTERM)
    b.expect(lambda e: e["ev"] == "error" and e["readyState"] == 0, "error (reconnecting)")
    assert srv.wait_exit(10) == 0, srv.stderr_text()[-2000:]
    time.sleep(0.5)
    b.drain()
    closed = [e for e in b.log if e["ev"] == "error" and e["readyState"] == 2]
    assert not closed, f"EventSource gave up during the drain: {b.log}"
