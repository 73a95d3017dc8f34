"""The worker pool: the test-only sleep route, back-pressure when the queue
is full, and many concurrent clients."""

import concurrent.futures
import threading
import time

import requests

from kilnhttp import STORES, assert_error


def test_sleep_route_runs_for_the_requested_time(server):
    start = time.monotonic()
    r = requests.get(server.url("/_test/sleep?ms=200"), timeout=5)
    elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert r.json() == {"slept_ms": 200}
    assert elapsed >= 0.19, f"answered after {elapsed:.3f} s"


def test_full_queue_answers_503_at_once_and_livez_still_works(kiln):
    srv = kiln(DB_POOL_SIZE="1", WORKER_QUEUE_SIZE="1")
    results = {}

    def slow(name):
        try:
            results[name] = requests.get(srv.url("/_test/sleep?ms=1500"), timeout=10)
        except Exception as e:                      # reported below
            results[name] = e

    running = threading.Thread(target=slow, args=("running",))
    queued = threading.Thread(target=slow, args=("queued",))
    running.start()
    time.sleep(0.2)                     # the one worker has picked it up
    queued.start()
    time.sleep(0.2)                     # it sits in the one queue slot

    # With SQLite every handler runs on the worker pool; with PostgreSQL
    # /healthz runs on a fiber of its loop and the full pool does not touch
    # it. Either way nothing waits behind the sleepers.
    worker_paths = ["/_test/sleep?ms=1"]
    if STORES == "embedded":
        worker_paths.append("/healthz")
    else:
        start = time.monotonic()
        r = requests.get(srv.url("/healthz"), timeout=5)
        assert r.status_code == 200, r.text
        assert time.monotonic() - start < 0.5, "/healthz waited for the workers"
    for path in worker_paths:
        start = time.monotonic()
        r = requests.get(srv.url(path), timeout=5)
        elapsed = time.monotonic() - start
        assert_error(r, 503, "service_unavailable")
        assert r.headers.get("retry-after") == "1", r.headers
        assert elapsed < 0.5, f"{path}: 503 took {elapsed:.3f} s"

    start = time.monotonic()
    r = requests.get(srv.url("/livez"), timeout=5)
    assert r.status_code == 200
    assert time.monotonic() - start < 0.5, "/livez waited for the workers"

    running.join(10)
    queued.join(10)
    for name in ("running", "queued"):
        r = results[name]
        assert isinstance(r, requests.Response), f"{name}: {r!r}"
        assert r.status_code == 200 and r.json() == {"slept_ms": 1500}, (name, r.text)
    assert requests.get(srv.url("/healthz"), timeout=5).status_code == 200


def test_50_threads_of_20_requests(server):
    def client(n):
        statuses = []
        with requests.Session() as s:
            for _ in range(20):
                r = s.get(server.url("/healthz"), timeout=10)
                statuses.append(r.status_code)
                assert r.json() == {"status": "ok"}
        return statuses

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        statuses = [st for result in pool.map(client, range(50)) for st in result]
    assert len(statuses) == 1000
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
