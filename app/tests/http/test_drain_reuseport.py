"""A restart drops nothing: two kilns share one port (SO_REUSEPORT), one gets
SIGTERM while a new one starts, and clients hammering the port see neither a
socket error nor a non-2xx answer.

What can go wrong in a restart, and what each part of the load exercises:

* keep-alive connections that sit idle on the stopping instance when the
  signal comes: their next request is already on the wire (or is sent a
  moment later); it must be answered (with ``connection: close``), not met
  by EOF.  The first restart puts every keep-alive connection on the
  stopping instance.
* fresh connections that the kernel queued on the stopping instance's
  listeners: they must be accepted and answered, or handed to a sibling,
  not reset when the listeners close.
* requests in flight on a worker (``/_test/sleep``) and large answers
  (``/api/v1/openapi``) when the signal comes: they finish.

The load runs on plain threads with blocking sockets (RawConn): every
exception is a socket error, every status outside 2xx a failure, and both
counts must be zero for every restart.
"""

import random
import signal
import threading
import time

import kilnhttp
from kilnhttp import http_request

# Routes that stay 200 while an instance drains (/readyz and /healthz turn
# 503 on purpose): two loop routes, one of them a large answer, and one on
# the worker pool that holds requests in flight.
PATHS = ("/livez", "/api/v1/openapi", "/_test/sleep?ms=5")
KEEPALIVE_CLIENTS = 16
FRESH_CLIENTS = 6
RESTARTS = 3
# The idle grace of the instances. Every client here sends its next request
# within 0.2 s of the last answer, but on a loaded 2-core machine a Python
# thread can wait long for its turn; a client that stays silent for the
# whole grace meets the close it was warned of (the race no server avoids),
# so the grace is twice the default.
IDLE_GRACE_MS = 2000
# How long the load goes on after each restart's signal; the stopping
# instance has exited by then or soon after (its drain takes the grace).
AFTER_SIGNAL_S = 3.0
# Per request: covers a SYN retransmitted once (1 s) on a slow machine.
REQUEST_TIMEOUT_S = 10.0


class Load:
    """Client threads and what they saw, by restart ("epoch")."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.epoch = 0
        self.ok = {}
        self.closes = {}       # 2xx answers that carried connection: close
        self.errors = {}       # epoch -> [description]
        self.threads = []

    def _count(self, table, item=None):
        with self.lock:
            if item is None:
                table[self.epoch] = table.get(self.epoch, 0) + 1
            else:
                table.setdefault(self.epoch, []).append(item)

    def _one(self, conn, rng, fresh):
        path = rng.choice(PATHS)
        if conn is None:
            conn = kilnhttp.RawConn(self.port, timeout=REQUEST_TIMEOUT_S)
        headers = [("Connection", "close")] if fresh else []
        conn.send(http_request("GET", path, headers=headers))
        resp = conn.read_response(timeout=REQUEST_TIMEOUT_S)
        closing = "close" in resp.headers.get("connection", "").lower()
        if not 200 <= resp.status < 300:
            self._count(self.errors, f"{path}: status {resp.status} {resp.body[:200]!r}")
        else:
            self._count(self.ok)
            if closing and not fresh:
                self._count(self.closes)
        if fresh or closing:
            conn.close()
            return None
        return conn

    def _client(self, seed, fresh):
        rng = random.Random(seed)
        conn = None
        while not self.stop.is_set():
            try:
                conn = self._one(conn, rng, fresh)
            except (OSError, AssertionError) as e:
                self._count(self.errors, f"{'fresh' if fresh else 'keep-alive'}: "
                                         f"{type(e).__name__}: {e}"[:300])
                if conn is not None:
                    conn.close()
                conn = None
            # Keep-alive clients pause now and then (but well within the
            # idle grace), so that some connections are idle at the signal.
            if not fresh and rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 0.2))
        if conn is not None:
            conn.close()

    def start(self):
        for i in range(KEEPALIVE_CLIENTS):
            self.threads.append(threading.Thread(target=self._client, args=(i, False), daemon=True))
        for i in range(FRESH_CLIENTS):
            self.threads.append(threading.Thread(target=self._client, args=(100 + i, True),
                                                 daemon=True))
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(REQUEST_TIMEOUT_S + 5)
        assert not any(t.is_alive() for t in self.threads), "a client thread is stuck"

    def next_epoch(self):
        with self.lock:
            self.epoch += 1
            return self.epoch


def start_on(kiln, port, **env):
    """A kiln on the shared port; ready when it logged "listening" (its
    /livez cannot tell: the port answers from the other instance too)."""
    srv = kiln(wait=False, PORT=port, HTTP_LOOPS=2, SHUTDOWN_IDLE_GRACE_MS=IDLE_GRACE_MS, **env)
    srv.port = port
    srv.wait_log(lambda r: r.get("message") == "listening", timeout=10)
    return srv


def test_restart_with_a_sibling_on_the_port_loses_nothing(kiln):
    port = kilnhttp.free_port()
    a = start_on(kiln, port)
    load = Load(port)
    # Every keep-alive connection opens while A is alone: at the first
    # restart they all sit on the stopping instance.
    load.start()
    time.sleep(1.0)
    running = [a, start_on(kiln, port)]
    time.sleep(1.0)

    report = []
    for _ in range(RESTARTS):
        epoch = load.next_epoch()
        old = running.pop(0)
        old.send_signal(signal.SIGTERM)
        running.append(start_on(kiln, port))
        time.sleep(AFTER_SIGNAL_S)
        rc = old.wait_exit(5)
        assert rc == 0, f"restart {epoch}: the stopped instance exited with {rc} (None: running)"
        with load.lock:
            report.append((epoch, load.ok.get(epoch, 0), load.closes.get(epoch, 0),
                           load.errors.get(epoch, [])))
    load.finish()

    summary = "; ".join(f"restart {e}: {ok} ok, {closes} told to close, {len(errs)} failed"
                        for e, ok, closes, errs in report)
    failures = [f"restart {e}: {msg}" for e, _, _, errs in report for msg in errs[:10]]
    print(summary)
    warmup = load.errors.get(0, [])
    assert not warmup, f"failures before any restart: {warmup[:10]}"
    assert not failures, summary + "\n" + "\n".join(failures)
    for e, ok, closes, _ in report:
        # The drain was exercised: keep-alive requests were answered by the
        # stopping instance with connection: close, and the load went on.
        assert ok > 50 and closes > 0, summary
