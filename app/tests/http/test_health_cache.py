"""/healthz and /readyz cannot be used to load the stores (issue 14, point
9): concurrent checks share one in-flight SELECT 1 + PING, and a finished
result answers for HEALTH_CACHE_MS (1000 by default; 0: every request
checks for itself, the per-request path bench/ measures). A store outage still shows within
that time plus the check's own, and draining answers 503 at once
(test_shutdown.py: a readyz answered 200 just before SIGTERM does not
keep answering 200 from the cache).

What the stores see is counted on Redis: INFO commandstats' cmdstat_ping
calls, exact and kiln's only (each run has its own services), since the
valkey check is the only PING kiln sends. Embedded mode has no Redis: there
the concurrency tests only check that every request is answered (the
waiters are worker threads there, fibers with PostgreSQL).
"""

import os
import subprocess
import time

import pytest

from kilnhttp import STORES, expected_checks, http_request

WITH_REDIS = STORES in ("postgres", "pgbouncer")
needs_redis = pytest.mark.skipif(
    not WITH_REDIS, reason=f"KILN_STORES={STORES}: counts PINGs on the test services' Redis")

CONCURRENT = 200
SLOW = bool(os.environ.get("KILN_SANITIZED"))


# -- Redis, as kiln's store of the mode ------------------------------------------------

def redis_service():
    return "redis" if STORES == "postgres" else "redis-tls"


def redis_cli(services, *args):
    if STORES == "postgres":
        cmd = ["redis-cli", "-h", services.redis_host, "-p", str(services.redis_port)]
        env = None
    else:
        cmd = ["redis-cli", "--tls", "--cacert", services.redis_ca, "-h", "localhost",
               "-p", str(services.redis_tls_port), "--user", services.redis_user]
        env = dict(os.environ, REDISCLI_AUTH=services.redis_password)
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout


def pings(services):
    """PING commands the Redis of the mode has run (redis-cli's own INFO is
    not a PING)."""
    for line in redis_cli(services, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_ping:"):
            fields = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(","))
            return int(fields["calls"])
    return 0


# -- requests ---------------------------------------------------------------------------

def burst(srv, n, path="/healthz"):
    """``n`` requests at once: every connection is opened first, then every
    request sent, then every answer read. Returns [(status, body)]."""
    conns = [srv.connect(timeout=30) for _ in range(n)]
    try:
        for i, c in enumerate(conns):
            c.send(http_request("GET", path, request_id=f"burst-{i}"))
        out = []
        for c in conns:
            r = c.read_response(timeout=30)
            out.append((r.status, r.json()))
        return out
    finally:
        for c in conns:
            c.close()


def get(srv, path):
    with srv.connect(timeout=10) as c:
        c.send(http_request("GET", path, headers=[("Connection", "close")]))
        r = c.read_response(timeout=10)
        return r.status, r.json()


def start(kiln, **env):
    # Several loops, so that waiters on other loops than the leader's are
    # part of every burst.
    env.setdefault("HTTP_LOOPS", "3")
    env.setdefault("RATE_LIMIT_PUBLIC", "0")
    return kiln(**env)


# -- tests ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/healthz?detailed=true"])
def test_concurrent_checks_all_answered(kiln, path):
    srv = start(kiln)
    answers = burst(srv, CONCURRENT, path)
    assert [s for s, _ in answers] == [200] * CONCURRENT, answers[:5]
    want = {"status": "ok"} if "detailed" not in path else None
    for _, body in answers:
        if want is not None:
            assert body == want, body
        else:
            assert body["checks"] == expected_checks(), body


@needs_redis
def test_concurrent_checks_share_one_ping(kiln, services):
    srv = start(kiln)
    assert get(srv, "/livez")[0] == 200
    before = pings(services)
    t0 = time.monotonic()
    answers = burst(srv, CONCURRENT)
    took = time.monotonic() - t0
    ran = pings(services) - before
    assert [s for s, _ in answers] == [200] * CONCURRENT
    # One check per HEALTH_CACHE_MS (1 s), two where one starts as the
    # previous result expires; the first check of the burst is one more.
    bound = 2 * int(took + 1) + 1
    assert 1 <= ran <= bound, (f"{CONCURRENT} concurrent /healthz in {took:.2f} s made Redis "
                               f"run {ran} PINGs (want at most {bound})")


@needs_redis
def test_a_result_answers_for_health_cache_ms(kiln, services):
    srv = start(kiln, HEALTH_CACHE_MS="500")
    before = pings(services)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 2.0:
        assert get(srv, "/readyz")[0] == 200
        n += 1
    took = time.monotonic() - t0
    ran = pings(services) - before
    bound = 2 * int(took / 0.5 + 1)
    assert n > ran and 1 <= ran <= bound, \
        f"{n} sequential /readyz in {took:.2f} s: {ran} PINGs (want at most {bound})"


@needs_redis
def test_health_cache_ms_0_checks_every_request(kiln, services):
    """0 turns the reuse off: one request after another, one PING each."""
    srv = start(kiln, HEALTH_CACHE_MS="0")
    before = pings(services)
    for _ in range(20):
        assert get(srv, "/healthz") == (200, {"status": "ok"})
    ran = pings(services) - before
    assert ran == 20, f"20 sequential /healthz with HEALTH_CACHE_MS=0: {ran} PINGs"


def outage_logged(srv):
    records = srv.log_lines()[0]
    outages = [r for r in records if r.get("message") == "dependency unavailable"
               and r.get("dependency") == "Session store"]
    per_request = [r for r in records if r.get("message") == "health check failed"]
    return outages, per_request


@needs_redis
@pytest.mark.disruptive
def test_an_outage_shows_within_the_cache_time(kiln, services):
    srv = start(kiln)
    service = redis_service()
    # A fresh ok result in the cache, then the store goes away.
    assert get(srv, "/readyz") == (200, {"status": "ok"})
    services.ctl("stop1", service)
    stopped = time.monotonic()
    try:
        first_503 = None
        statuses = []
        while time.monotonic() - stopped < 4.0:
            status, body = get(srv, "/readyz")
            at = time.monotonic() - stopped
            statuses.append((round(at, 2), status))
            if status == 503 and first_503 is None:
                first_503 = at
                assert body == {"status": "degraded"}, body
            time.sleep(0.02)
        # The cached ok result may answer for up to 1 s after the stop
        # (plus the time the stop itself took to show); a refused
        # connection makes the next check fail at once.
        limit = 1.0 + (2.0 if SLOW else 1.0)
        assert first_503 is not None and first_503 <= limit, statuses
        late_ok = [s for s in statuses if s[0] > limit and s[1] == 200]
        assert not late_ok, f"200 after the outage had shown: {statuses}"
        status, body = get(srv, "/healthz?detailed=true")
        assert status == 503 and body["checks"]["valkey"]["status"] == "error", body
        assert body["checks"]["database"]["status"] == "ok", body
        # Hundreds of failed checks' requests, a handful of log lines: one
        # per dependency per second, none per request.
        burst(srv, 50, "/readyz")
        outages, per_request = outage_logged(srv)
        assert not per_request, per_request[:3]
        assert 1 <= len(outages) <= int(time.monotonic() - stopped) + 2, outages
    finally:
        services.ctl("start1", service)
    services.wait_up(service)
    deadline = time.monotonic() + 15
    while get(srv, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "not ready 15 s after Redis came back"
        time.sleep(0.1)
