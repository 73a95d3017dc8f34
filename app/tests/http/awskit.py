"""What the end-to-end AWS tests (test_aws_*.py) share on the kiln side:
the store modes they run in, the AWS_* environment pointing kiln at the
fakes of awsfake.py, fixtures for the fakes, a background request stream
that records every outcome, and the "no secret in the output" check.

Modes: tests that need the test services (PostgreSQL roles, Redis) run
with KILN_STORES=postgres only (``needs_postgres``); tests that need no
service (configuration errors, start-up failures, the credentials chain
with SECRET_KEY_BASE only) also run in embedded mode (``service_free``),
so that the sanitizer runs (blackbox-asan, embedded) cover Kiln's AWS code
too.  pgbouncer mode adds nothing here and skips them all.
"""

import json
import os
import signal
import threading
import time

import pytest

import authkit as ak
import awsfake
import kilnhttp
from kilnhttp import STORES

needs_postgres = pytest.mark.skipif(
    STORES != "postgres",
    reason=f"KILN_STORES={STORES}: the AWS end-to-end tests run with KILN_STORES=postgres")
service_free = pytest.mark.skipif(
    STORES not in ("embedded", "postgres"),
    reason=f"KILN_STORES={STORES}: runs in embedded and postgres modes only")


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def store():
    return awsfake.CredentialStore()


@pytest.fixture
def sm(store):
    with awsfake.SecretsManagerFake(store) as fake:
        yield fake


@pytest.fixture
def ecs_token():
    return "ecs-auth-" + os.urandom(16).hex()


@pytest.fixture
def ecs(store, ecs_token):
    with awsfake.EcsCredentialsFake(store, auth_token=ecs_token) as fake:
        yield fake


@pytest.fixture
def imds(store):
    with awsfake.ImdsFake(store) as fake:
        yield fake


@pytest.fixture
def pg(services):
    setup = awsfake.PgSetup(services, tag="aws")
    yield setup
    setup.drop()


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------

def aws_env(sm=None, creds=None, region=awsfake.REGION, **extra):
    """AWS_REGION, the Secrets Manager endpoint of ``sm``, static keys when
    ``creds``; the EC2 metadata service off (no test may wait on
    169.254.169.254) unless ``extra`` says otherwise."""
    env = {"AWS_REGION": region, "AWS_EC2_METADATA_DISABLED": "true"}
    if sm is not None:
        env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = sm.base_url
    if creds is not None:
        env.update(creds.env())
    env.update(extra)
    return env


def ecs_env(ecs, token=None, token_file=None):
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.url}
    if token is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
    if token_file is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(token_file)
    return env


def db_env(services, pg, port=None, user=None, password=None):
    """DB_HOST/DB_PORT/DB_NAME[/DB_USERNAME/DB_PASSWORD] for ``pg``'s
    database (DATABASE_URL of the store mode removed)."""
    env = {"DATABASE_URL": None, "DB_HOST": services.pg_host,
           "DB_PORT": str(port or services.pg_port), "DB_NAME": pg.db}
    if user is not None:
        env["DB_USERNAME"] = user
    if password is not None:
        env["DB_PASSWORD"] = password
    return env


def run_serve(overrides, timeout=30):
    """``kiln serve`` to completion (a start that must fail)."""
    env = kilnhttp.clean_env(kilnhttp.free_port(), overrides)
    return kilnhttp.run_kiln(["serve"], env=env, timeout=timeout)


def output_of(result):
    return (result.stdout + result.stderr).decode("utf-8", "replace")


def config_lines(result):
    return [l for l in result.stderr.decode("utf-8", "replace").splitlines()
            if l.startswith("config:")]


# --------------------------------------------------------------------------
# assertions
# --------------------------------------------------------------------------

def assert_no_secrets(text_or_srv, *secrets):
    """None of ``secrets`` (strings of 6 characters or more) in the text, or
    in the stdout and stderr of a KilnServer."""
    if isinstance(text_or_srv, kilnhttp.KilnServer):
        text = text_or_srv.stdout_text() + text_or_srv.stderr_text()
    else:
        text = text_or_srv
    leaked = sorted({s for s in secrets if s and len(s) >= 6 and s in text})
    assert not leaked, ("secret values in kiln's output: " +
                        ", ".join(f"{s[:6]}…({len(s)} chars)" for s in leaked))


def log_records(srv):
    return srv.log_lines()[0]


def wait_log_count(srv, predicate, count, timeout=10.0):
    """Wait until ``count`` records match; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [r for r in log_records(srv) if predicate(r)]
        if len(hits) >= count:
            return hits
        if time.monotonic() > deadline:
            raise AssertionError(f"want {count} matching log records within {timeout} s, got "
                                 f"{len(hits)}; last lines:\n{srv.stdout_text()[-3000:]}")
        time.sleep(0.05)


def is_reloaded(rec):
    return rec.get("message") == "secrets reloaded"


def reload_and_wait(srv, timeout=10.0):
    """SIGHUP, then the next "secrets reloaded" record."""
    before = len([r for r in log_records(srv) if is_reloaded(r)])
    srv.send_signal(signal.SIGHUP)
    return wait_log_count(srv, is_reloaded, before + 1, timeout)[-1]


def assert_names(rec, *names):
    text = json.dumps(rec)
    missing = [n for n in names if n not in text]
    assert not missing, f"log record does not name {missing}: {rec}"


def health(srv):
    r = ak.call(srv, "GET", "/healthz?detailed=true", timeout=15)
    return r.status, (r.json() if r.body else None)


def assert_healthy(srv, mode=None):
    status, body = health(srv)
    assert status == 200, (status, body, srv.stdout_text()[-2000:])
    assert body["checks"] == kilnhttp.expected_checks(mode), body


def wait_healthy(srv, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        status, body = health(srv)
        if status == 200:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy within {timeout} s: {status} {body}\n"
                                 f"{srv.stdout_text()[-2000:]}")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# a stream of requests
# --------------------------------------------------------------------------

class Traffic:
    """``threads`` threads each calling ``step(thread, i)`` in a loop until
    stopped; ``step`` returns (name, status) or raises.  Every outcome is
    kept with its time; ``failures()`` lists the unexpected ones (status not
    in ``ok`` or an exception).  ``pause()`` returns once no step is in
    flight and none starts until ``resume()``."""

    def __init__(self, step, threads=2, ok=(200, 201, 204)):
        self.step = step
        self.ok = set(ok)
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def _run(self, n):
        i = 0
        while not self._stop.is_set():
            if not self._gate.wait(0.1):
                continue
            with self._lock:
                if not self._gate.is_set():
                    continue
                self._inflight += 1
            t0 = time.time()
            try:
                name, status = self.step(n, i)
            except Exception as e:   # recorded, judged by failures()
                name, status = "exception", repr(e)[:300]
            finally:
                with self._lock:
                    self._inflight -= 1
                    self._idle.notify_all()
            with self._lock:
                self.results.append((t0, time.time(), n, name, status))
            i += 1

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._gate.set()
        for t in self._threads:
            t.join(20)

    def pause(self, timeout=20):
        self._gate.clear()
        with self._lock:
            if not self._idle.wait_for(lambda: self._inflight == 0, timeout):
                raise AssertionError("requests still in flight after pause()")

    def resume(self):
        self._gate.set()

    def count(self):
        with self._lock:
            return len(self.results)

    def failures(self):
        with self._lock:
            return [r for r in self.results if r[4] not in self.ok]

    def wait_count(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        start = self.count()
        while self.count() < start + n:
            if time.monotonic() > deadline:
                raise AssertionError(f"traffic made {self.count() - start} of {n} requests "
                                     f"in {timeout} s")
            time.sleep(0.02)


def user_step(srv, cookies, bearers):
    """A Traffic step: thread n alternates GET /api/v1/me with cookie n,
    POST /api/v1/notes and GET /api/v1/notes with bearer n."""
    def step(n, i):
        kind = i % 3
        if kind == 0:
            r = ak.me(srv, cookies[n], timeout=15)
            return "me", r.status
        if kind == 1:
            r = ak.call(srv, "POST", "/api/v1/notes", bearer=bearers[n], timeout=15,
                        json_body={"title": f"note {n}-{i}", "content": "traffic"})
            return "create", r.status
        r = ak.call(srv, "GET", "/api/v1/notes?limit=5", bearer=bearers[n], timeout=15)
        return "list", r.status
    return step
