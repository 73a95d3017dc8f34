"""The stores behind the HTTP surface: health checks per store mode, outages
of PostgreSQL, pgbouncer and Redis while serving (stopped, or frozen with
SIGSTOP so that they accept connections and answer nothing), wrong
credentials, passwords with special characters, TLS trust, and migrations
(`kiln migrate`, MIGRATE_ON_START, concurrent migrators, edited migrations).

What runs where (KILN_STORES):
  embedded   health checks and migrations on SQLite
  postgres   + PostgreSQL direct: outages, bad passwords, migrations
  pgbouncer  + the same through pgbouncer (transaction pooling) and Redis
             over TLS with a password
Tests that need the services skip with a reason in embedded mode.

PostgreSQL is inspected as the superuser over the unix socket in
KILN_TEST_SERVICES_DIR/pg-sock (psql); SQLite with Python's sqlite3.
"""

import concurrent.futures
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from kilnhttp import KILN_BIN, STORES, clean_env, expected_checks, free_port, run_kiln

SERVICE_MODES = ("postgres", "pgbouncer")
needs_services = pytest.mark.skipif(
    STORES not in SERVICE_MODES,
    reason=f"KILN_STORES={STORES}: needs PostgreSQL and Redis "
           "(KILN_STORES=postgres or pgbouncer, with scripts/test-services.sh)")

VERSION_RE = re.compile(r"^\d{4}_[a-z0-9_]+$")
NOTHING_PENDING_RE = re.compile(r"nothing|no pending|up to date|already", re.I)
WRONG_PASSWORD = "Wr0ng-Passw0rd-XYZZY-4711"

# How long a store outage may take to show in /healthz, and the recovery to.
DETECT_SECONDS = 15
RECOVER_SECONDS = 10


# -- helpers ---------------------------------------------------------------------

def get(srv, path, timeout=10):
    return requests.get(srv.url(path), timeout=timeout)


def health(srv, path="/healthz"):
    r = get(srv, path + "?detailed=true")
    return r.status_code, r.json()


def wait_health(srv, want_status, timeout, path="/healthz", check=None):
    """Poll ``path?detailed=true`` until it answers ``want_status`` (and
    ``check(body)`` holds); returns (seconds waited, body)."""
    start = time.monotonic()
    last = None
    while True:
        assert srv.running(), (f"kiln exited ({srv.proc.returncode}) during the test\n"
                               f"stderr: {srv.stderr_text()[-2000:]}")
        try:
            status, body = health(srv, path)
            last = (status, body)
            if status == want_status and (check is None or check(body)):
                return time.monotonic() - start, body
        except (requests.RequestException, ValueError) as e:
            last = repr(e)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{path} did not answer {want_status} within {timeout} s; "
                                 f"last: {last}")
        time.sleep(0.1)


def wait_all_healthy(srv, timeout, streak=30):
    """Poll /healthz and /readyz in turn until ``streak`` answers in a row
    are 200. Each worker owns its store connections and backs off on its
    own (up to 2 s) after failed connects, so one 200 does not yet mean
    that every worker has reconnected. Returns the seconds waited."""
    start = time.monotonic()
    ok, last, i = 0, None, 0
    while ok < streak:
        assert srv.running(), f"kiln exited ({srv.proc.returncode})"
        path = ("/healthz", "/readyz")[i % 2]
        i += 1
        try:
            r = get(srv, path + "?detailed=true")
            last = (path, r.status_code, r.text)
            ok = ok + 1 if r.status_code == 200 else 0
        except requests.RequestException as e:
            last, ok = repr(e), 0
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {streak} healthy answers in a row within {timeout} s; "
                                 f"last: {last}")
        if ok == 0:
            time.sleep(0.05)
    return time.monotonic() - start


def output_of(result):
    return (result.stdout + result.stderr).decode("utf-8", "replace")


def error_lines(stdout, stderr):
    """Lines that report a problem: every non-empty stderr line and every
    stdout JSON log line of level error (or above)."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    for l in stdout.splitlines():
        try:
            rec = json.loads(l)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("level") in ("error", "fatal", "critical"):
            lines.append(l)
    return lines


def assert_no_secret(text, *secrets):
    for s in secrets:
        assert s not in text, f"a password ({s[:3]}…) appears in the output:\n{text[-2000:]}"


class Traffic:
    """Background clients on /healthz and /livez; every request must get an
    HTTP answer (200 or 503), never a refused or dropped connection."""

    def __init__(self, srv, threads=4):
        self.srv = srv
        self.stop_flag = threading.Event()
        self.statuses = {}
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def run(self, i):
        path = "/livez" if i % 2 else "/healthz"
        with requests.Session() as s:
            while not self.stop_flag.is_set():
                try:
                    r = s.get(self.srv.url(path), timeout=20)
                    with self.lock:
                        key = (path, r.status_code)
                        self.statuses[key] = self.statuses.get(key, 0) + 1
                except requests.RequestException as e:
                    with self.lock:
                        self.errors.append(f"{path}: {e!r}")
                time.sleep(0.01)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(25)

    def check(self):
        bad = {k: v for k, v in self.statuses.items()
               if k[1] not in (200, 503) or (k[0] == "/livez" and k[1] != 200)}
        assert not self.errors, f"requests failed during the outage: {self.errors[:5]}"
        assert not bad, f"unexpected statuses: {bad} (all: {self.statuses})"
        assert self.statuses, "no traffic went through"


# -- a database of the current mode, fresh per test ------------------------------

class SqliteDb:
    kind = "sqlite"

    def __init__(self, path):
        self.path = str(path)

    def env(self):
        return {"DB_PATH": self.path, "DATABASE_URL": None}

    def rows(self, sql):
        con = sqlite3.connect(self.path, timeout=10)
        try:
            return [tuple(str(c) if c is not None else None for c in row)
                    for row in con.execute(sql).fetchall()]
        finally:
            con.close()

    def execute(self, sql):
        con = sqlite3.connect(self.path, timeout=10)
        try:
            con.execute(sql)
            con.commit()
        finally:
            con.close()

    def tables(self):
        return {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table):
        return {r[1] for r in self.rows(f"PRAGMA table_info({table})")}

    def unique_column_sets(self, table):
        sets = []
        for idx in self.rows(f"PRAGMA index_list({table})"):
            # seq, name, unique, origin, partial
            if idx[2] == "1":
                cols = frozenset(r[2] for r in self.rows(f"PRAGMA index_info('{idx[1]}')"))
                sets.append(cols)
        return sets


class PostgresDb:
    kind = "postgres"

    def __init__(self, services, name, via):
        self.services = services
        self.name = name
        self.via = via

    def url(self, password=None):
        return self.services.db_url(self.name, via=self.via, password=password)

    def env(self):
        return {"DATABASE_URL": self.url()}

    def rows(self, sql):
        return self.services.rows(sql, db=self.name)

    def execute(self, sql):
        self.services.psql(sql, db=self.name)

    def tables(self):
        return {r[0] for r in self.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}

    def columns(self, table):
        return {r[0] for r in self.rows(
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = 'public' AND table_name = '{table}'")}

    def unique_column_sets(self, table):
        out = self.rows(
            "SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            f"WHERE i.indrelid = 'public.{table}'::regclass AND i.indisunique "
            "GROUP BY i.indexrelid")
        return [frozenset(r[0].split(",")) for r in out]


@pytest.fixture
def fresh_db(request, tmp_path):
    """A factory of empty databases of the mode's kind: SQLite files in
    embedded mode; PostgreSQL databases (owned by kiln) reached directly in
    postgres mode and through pgbouncer in pgbouncer mode."""
    made = []
    svc = None
    if STORES in SERVICE_MODES:
        svc = request.getfixturevalue("services")
    counter = iter(range(1000))

    def make():
        if svc is None:
            return SqliteDb(tmp_path / f"fresh{next(counter)}.db")
        name = svc.create_db()
        made.append(name)
        return PostgresDb(svc, name, via=STORES)

    yield make
    for name in made:
        svc.drop_db(name)


def migrate(db, timeout=60, **extra):
    env = clean_env(overrides=dict(db.env(), **extra))
    return run_kiln(["migrate"], env=env, timeout=timeout)


def applied_versions(db):
    return sorted(r[0] for r in db.rows("SELECT version FROM schema_migrations"))


# -- health per mode ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_detailed_health_reports_the_stores_of_the_mode(server, path):
    status, body = health(server, path)
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["checks"] == expected_checks(), f"KILN_STORES={STORES}: {body}"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_plain_health_is_just_ok(server, path):
    r = get(server, path)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


# -- outages under traffic ---------------------------------------------------------

def outage_services():
    if STORES == "postgres":
        return [("postgres", "database")]
    if STORES == "pgbouncer":
        return [("postgres", "database"), ("pgbouncer", "database")]
    return []


def kv_outage_services():
    return {"postgres": ["redis"], "pgbouncer": ["redis-tls"]}.get(STORES, [])


def check_degraded(body, check):
    c = body.get("checks", {}).get(check, {})
    return body.get("status") == "degraded" and c.get("status") == "error"


def run_outage(kiln, services, service, check, **env):
    other = "valkey" if check == "database" else "database"
    srv = kiln(**env)
    wait_health(srv, 200, 10)
    with Traffic(srv) as traffic:
        time.sleep(0.5)
        services.ctl("stop1", service)
        try:
            took, body = wait_health(srv, 503, DETECT_SECONDS,
                                     check=lambda b: check_degraded(b, check))
            c = body["checks"][check]
            assert isinstance(c.get("message"), str) and c["message"].strip(), body
            assert c["message"] not in ("connected", "ok"), body
            assert body["checks"][other]["status"] == "ok", body
            # plain bodies and the other probes
            r = get(srv, "/healthz")
            assert r.status_code == 503 and r.json() == {"status": "degraded"}, r.text
            r = get(srv, "/readyz")
            assert r.status_code == 503 and r.json()["status"] == "degraded", r.text
            r = get(srv, "/livez")
            assert r.status_code == 200, r.text
            # it stays degraded (no crash, no flapping to ok) while down
            time.sleep(1)
            status, body = health(srv)
            assert status == 503 and check_degraded(body, check), body
        finally:
            services.ctl("start1", service)
        services.wait_up(service)
        took = wait_all_healthy(srv, RECOVER_SECONDS)
        status, body = health(srv)
        assert status == 200 and body["checks"] == expected_checks(), body
        time.sleep(0.3)
    traffic.check()
    assert srv.running()
    return took


@needs_services
@pytest.mark.disruptive
@pytest.mark.parametrize("service,check", outage_services() or [("postgres", "database")])
def test_database_outage_degrades_and_recovers_without_restart(kiln, services, service, check):
    run_outage(kiln, services, service, check)


@pytest.mark.skipif(STORES != "postgres", reason="named prepared statements need a direct "
                    "PostgreSQL connection (KILN_STORES=postgres)")
@pytest.mark.disruptive
def test_database_restart_with_prepared_statements(kiln, services):
    # The statements prepared on the old connections are gone after the
    # restart: the driver must prepare them again on the new ones.
    run_outage(kiln, services, "postgres", "database", DB_PREPARED_STATEMENTS="true")


@needs_services
@pytest.mark.disruptive
@pytest.mark.parametrize("service", kv_outage_services() or ["redis"])
def test_valkey_outage_degrades_and_recovers_without_restart(kiln, services, service):
    run_outage(kiln, services, service, "valkey")


def hang_services():
    return {"postgres": ["redis"], "pgbouncer": ["pgbouncer", "redis-tls"]}.get(STORES, [])


@needs_services
@pytest.mark.disruptive
@pytest.mark.parametrize("service", hang_services() or ["redis"])
def test_frozen_store_answers_503_within_the_check_timeout(kiln, services, service):
    """A store that accepts connections but never answers (SIGSTOP: a hung
    server, a black-holed network) must not hang the health checks: each
    check waits 2 s at most, /livez stays instant, and when the store
    thaws kiln recovers without a restart."""
    check = "database" if service == "pgbouncer" else "valkey"
    srv = kiln(DB_POOL_SIZE="4")
    wait_health(srv, 200, 10)
    # Give every worker its store connections (they open lazily).
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: get(srv, "/healthz").status_code, range(40))) == {200}
    services.ctl("pause1", service)
    # The last check's result answers for HEALTH_CACHE_MS (1 s) more.
    time.sleep(1.2)
    try:
        for i in range(4):
            start = time.monotonic()
            try:
                status, body = health(srv)
            except requests.Timeout:
                raise AssertionError(f"GET /healthz #{i + 1} got no answer within 10 s while "
                                     f"{service} was frozen") from None
            elapsed = time.monotonic() - start
            assert status == 503 and check_degraded(body, check), body
            assert elapsed < 4, f"GET /healthz #{i + 1} took {elapsed:.1f} s with {service} frozen"
        start = time.monotonic()
        assert get(srv, "/livez").status_code == 200
        assert time.monotonic() - start < 1, "/livez waited for the frozen store"
    finally:
        services.ctl("resume1", service)
    wait_all_healthy(srv, RECOVER_SECONDS + 15)
    assert srv.running()


# -- wrong credentials and TLS trust -------------------------------------------------

def mode_db_url(services, password=None, db=None):
    return services.db_url(db, via=STORES, password=password)


@needs_services
def test_wrong_database_password_degrades_without_leaking_it(kiln, services):
    srv = kiln(DATABASE_URL=mode_db_url(services, WRONG_PASSWORD), MIGRATE_ON_START="false")
    took, body = wait_health(srv, 503, DETECT_SECONDS,
                             check=lambda b: check_degraded(b, "database"))
    msg = body["checks"]["database"]["message"]
    assert isinstance(msg, str) and msg.strip(), body
    assert_no_secret(msg, WRONG_PASSWORD)
    assert body["checks"]["valkey"]["status"] == "ok", body
    r = get(srv, "/healthz")
    assert r.status_code == 503 and r.json() == {"status": "degraded"}
    assert get(srv, "/readyz").status_code == 503
    assert get(srv, "/livez").status_code == 200
    time.sleep(0.3)
    assert_no_secret(srv.stdout_text() + srv.stderr_text(), WRONG_PASSWORD)


@needs_services
def test_wrong_database_password_with_migrate_on_start_exits_with_one_line(services, tmp_path):
    env = clean_env(overrides={"DATABASE_URL": mode_db_url(services, WRONG_PASSWORD),
                               "MIGRATE_ON_START": "true"}, workdir=tmp_path)
    env["PORT"] = str(free_port())
    result = run_kiln(["serve"], env=env, timeout=40)
    out = output_of(result)
    assert result.returncode != 0, f"serve started with a wrong password:\n{out[-2000:]}"
    assert_no_secret(out, WRONG_PASSWORD, services.pg_password)
    lines = error_lines(result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"))
    assert len(lines) == 1, f"want one error line, got {len(lines)}:\n" + "\n".join(lines)
    assert re.search(r"authenticat|password|migrat|database|connect", lines[0], re.I), lines[0]


@needs_services
def test_migrate_with_wrong_password_fails_without_leaking_it(services):
    env = clean_env(overrides={"DATABASE_URL": mode_db_url(services, WRONG_PASSWORD)})
    result = run_kiln(["migrate"], env=env, timeout=40)
    out = output_of(result)
    assert result.returncode != 0, out
    assert_no_secret(out, WRONG_PASSWORD, services.pg_password)
    assert re.search(r"authenticat|password", out, re.I), out


SPECIAL_PASSWORD = "p@ss:w/rd?#% q'uo\\te\"x"


@pytest.fixture
def special_role(services):
    """A role whose password has every character that URLs and libpq
    key=value strings treat specially; owner of a database of its own."""
    role = f"kt_role_{os.getpid()}_{os.urandom(3).hex()}"
    sql_pw = SPECIAL_PASSWORD.replace("'", "''")
    services.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{sql_pw}'", db="postgres")
    services.psql(f'CREATE DATABASE "{role}" OWNER "{role}"', db="postgres")
    yield role
    services.drop_db(role)
    services.psql(f'DROP ROLE IF EXISTS "{role}"', db="postgres", check=False)


@needs_services
@pytest.mark.parametrize("style", ["DB_HOST", "DATABASE_URL"])
def test_database_password_with_special_characters(kiln, services, special_role, style):
    if style == "DB_HOST":
        env = {"DATABASE_URL": None, "DB_HOST": services.pg_host, "DB_PORT": str(services.pg_port),
               "DB_NAME": special_role, "DB_USERNAME": special_role,
               "DB_PASSWORD": SPECIAL_PASSWORD}
    else:
        env = {"DATABASE_URL": "postgresql://%s:%s@%s:%d/%s" % (
            special_role, urllib.parse.quote(SPECIAL_PASSWORD, safe=""), services.pg_host,
            services.pg_port, special_role)}
    srv = kiln(MIGRATE_ON_START="true", **env)
    took, body = wait_health(srv, 200, 10)
    assert body["checks"]["database"] == {"status": "ok", "message": "connected"}, body
    tables = {r[0] for r in services.rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        db=special_role)}
    assert {"users", "identities", "schema_migrations"} <= tables, tables
    time.sleep(0.2)
    out = srv.stdout_text() + srv.stderr_text()
    assert SPECIAL_PASSWORD not in out
    assert urllib.parse.quote(SPECIAL_PASSWORD, safe="") not in out


def valkey_env(services, **changes):
    """The TLS Redis (whatever the mode) with ``changes``."""
    return services.valkey_tls_env(**changes)


@needs_services
@pytest.mark.parametrize("changes", [
    {"VALKEY_PASSWORD": WRONG_PASSWORD},
    {"VALKEY_USER": "nobody"},
], ids=["wrong-password", "unknown-user"])
def test_wrong_valkey_credentials_degrade_without_leaking(kiln, services, changes):
    srv = kiln(**valkey_env(services, **changes))
    took, body = wait_health(srv, 503, DETECT_SECONDS, check=lambda b: check_degraded(b, "valkey"))
    msg = body["checks"]["valkey"]["message"]
    assert isinstance(msg, str) and msg.strip(), body
    assert_no_secret(msg, WRONG_PASSWORD, services.redis_password)
    assert body["checks"]["database"]["status"] == "ok", body
    assert get(srv, "/readyz").status_code == 503
    assert get(srv, "/livez").status_code == 200
    time.sleep(0.3)
    assert_no_secret(srv.stdout_text() + srv.stderr_text(), WRONG_PASSWORD)


@needs_services
@pytest.mark.parametrize("how", ["other-ca", "tls-to-plain-port", "plain-to-tls-port"])
def test_valkey_tls_mismatch_degrades_without_crashing(kiln, services, how):
    if how == "other-ca":
        env = valkey_env(services, VALKEY_CA_FILE=services.redis_other_ca)
    elif how == "tls-to-plain-port":
        env = valkey_env(services, VALKEY_HOST="127.0.0.1", VALKEY_PORT=str(services.redis_port))
    else:
        env = valkey_env(services, VALKEY_SSL="false", VALKEY_CA_FILE=None)
    srv = kiln(**env)
    for _ in range(3):     # repeated failures (reconnects) must not crash it either
        start = time.monotonic()
        took, body = wait_health(srv, 503, DETECT_SECONDS,
                                 check=lambda b: check_degraded(b, "valkey"))
        assert time.monotonic() - start < DETECT_SECONDS
    assert body["checks"]["database"]["status"] == "ok", body
    assert body["checks"]["valkey"]["message"].strip(), body
    assert get(srv, "/livez").status_code == 200
    assert srv.running()


@needs_services
def test_valkey_tls_by_ip_address_verifies_the_ip_san(kiln, services):
    srv = kiln(**valkey_env(services, VALKEY_HOST="127.0.0.1"))
    took, body = wait_health(srv, 200, 10)
    assert body["checks"]["valkey"] == {"status": "ok", "message": "connected"}, body


@needs_services
def test_valkey_password_without_user_uses_the_default_user(kiln, services):
    srv = kiln(**valkey_env(services, VALKEY_USER=None))
    took, body = wait_health(srv, 200, 10)
    assert body["checks"]["valkey"]["status"] == "ok", body


# -- migrations ----------------------------------------------------------------------

def test_migrate_applies_then_has_nothing_pending(fresh_db):
    db = fresh_db()
    first = migrate(db)
    out1 = output_of(first)
    assert first.returncode == 0, out1
    versions = applied_versions(db)
    assert versions, f"schema_migrations is empty after `kiln migrate`:\n{out1}"
    for v in versions:
        assert VERSION_RE.match(v), f"version {v!r} is not like 0001_users"
        assert v in first.stdout.decode(), f"`kiln migrate` did not say it applied {v}:\n{out1}"
    assert {"version", "checksum", "applied_at"} <= db.columns("schema_migrations")

    second = migrate(db)
    out2 = output_of(second)
    assert second.returncode == 0, out2
    assert NOTHING_PENDING_RE.search(second.stdout.decode()), \
        f"second `kiln migrate` does not say nothing was pending:\n{out2}"
    for v in versions:
        assert f"applied {v}" not in second.stdout.decode(), out2
    assert applied_versions(db) == versions


def test_migrations_create_users_and_identities(fresh_db):
    db = fresh_db()
    result = migrate(db)
    assert result.returncode == 0, output_of(result)
    tables = db.tables()
    assert {"users", "identities", "schema_migrations"} <= tables, tables
    assert {"id", "email", "name"} <= db.columns("users")
    assert {"provider", "subject", "user_id"} <= db.columns("identities")
    uniques = db.unique_column_sets("identities")
    assert frozenset({"provider", "subject"}) in uniques, \
        f"no unique constraint on identities (provider, subject): {uniques}"


def test_identities_reject_a_second_row_for_one_provider_subject(fresh_db):
    db = fresh_db()
    assert migrate(db).returncode == 0
    if db.kind == "postgres":
        db.execute("INSERT INTO users (id, email) VALUES "
                   "('00000000-0000-4000-8000-000000000001', 'a@example.com'), "
                   "('00000000-0000-4000-8000-000000000002', 'b@example.com')")
        db.execute("INSERT INTO identities (provider, subject, user_id) VALUES "
                   "('google', 'sub-1', '00000000-0000-4000-8000-000000000001')")
        with pytest.raises(AssertionError, match="duplicate key|unique"):
            db.execute("INSERT INTO identities (provider, subject, user_id) VALUES "
                       "('google', 'sub-1', '00000000-0000-4000-8000-000000000002')")
        # the same subject at another provider is another person
        db.execute("INSERT INTO identities (provider, subject, user_id) VALUES "
                   "('apple', 'sub-1', '00000000-0000-4000-8000-000000000002')")
    else:
        db.execute("INSERT INTO users (id, email) VALUES ('u1', 'a@example.com'), "
                   "('u2', 'b@example.com')")
        db.execute("INSERT INTO identities (id, provider, subject, user_id) "
                   "VALUES ('i1', 'google', 'sub-1', 'u1')")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO identities (id, provider, subject, user_id) "
                       "VALUES ('i2', 'google', 'sub-1', 'u2')")
        db.execute("INSERT INTO identities (id, provider, subject, user_id) "
                   "VALUES ('i3', 'apple', 'sub-1', 'u2')")


def test_five_concurrent_migrations_apply_each_version_once(fresh_db):
    db = fresh_db()
    env = clean_env(overrides=db.env())
    procs = [subprocess.Popen([KILN_BIN, "migrate"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(5)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a concurrent `kiln migrate` did not finish in 60 s")
        results.append((p.returncode, out.decode(errors="replace"), err.decode(errors="replace")))
    failed = [r for r in results if r[0] != 0]
    assert not failed, "some `kiln migrate` failed:\n" + "\n---\n".join(
        f"exit {rc}\n{o}{e}" for rc, o, e in failed)
    counts = db.rows("SELECT version, count(*) FROM schema_migrations GROUP BY version")
    assert counts and all(c == "1" for _, c in counts), counts
    versions = sorted(v for v, _ in counts)
    # Each version was applied by exactly one of them; the rest had nothing to do.
    applied_by = {v: sum(f"applied {v}" in o for _, o, _ in results) for v in versions}
    assert all(n == 1 for n in applied_by.values()), applied_by
    assert {"users", "identities"} <= db.tables()


@pytest.mark.parametrize("migrate_on_start", ["true", "false"])
def test_serve_migrates_at_start_only_when_asked(kiln, fresh_db, migrate_on_start):
    db = fresh_db()
    srv = kiln(MIGRATE_ON_START=migrate_on_start, **db.env())
    took, body = wait_health(srv, 200, 10)
    if migrate_on_start == "true":
        assert {"users", "identities", "schema_migrations"} <= db.tables()
        versions = applied_versions(db)
        assert versions and all(VERSION_RE.match(v) for v in versions), versions
    else:
        assert "schema_migrations" not in db.tables()
        assert "users" not in db.tables()


def test_migrate_on_start_is_the_default_outside_production(kiln, fresh_db):
    db = fresh_db()
    srv = kiln(MIGRATE_ON_START=None, **db.env())
    wait_health(srv, 200, 10)
    assert {"users", "identities"} <= db.tables()


def test_concurrent_serves_migrate_once(kiln, fresh_db):
    db = fresh_db()
    srvs = [kiln(wait=False, MIGRATE_ON_START="true", **db.env()) for _ in range(3)]
    for s in srvs:
        s.wait_ready(30)
    counts = db.rows("SELECT version, count(*) FROM schema_migrations GROUP BY version")
    assert counts and all(c == "1" for _, c in counts), counts


def tamper_first_migration(db):
    version = applied_versions(db)[0]
    db.execute(f"UPDATE schema_migrations SET checksum = 'x' WHERE version = '{version}'")
    return version


def test_edited_applied_migration_stops_migrate(fresh_db):
    db = fresh_db()
    assert migrate(db).returncode == 0
    version = tamper_first_migration(db)
    result = migrate(db)
    out = output_of(result)
    assert result.returncode != 0, f"`kiln migrate` accepted an edited migration:\n{out}"
    assert version in out, f"the error does not name {version}:\n{out}"


def test_edited_applied_migration_stops_serve(fresh_db, tmp_path):
    db = fresh_db()
    assert migrate(db).returncode == 0
    version = tamper_first_migration(db)
    env = clean_env(free_port(), dict(db.env(), MIGRATE_ON_START="true"), workdir=tmp_path)
    result = run_kiln(["serve"], env=env, timeout=30)
    out = output_of(result)
    assert result.returncode != 0, f"serve started on an edited migration:\n{out}"
    assert version in out, f"the error does not name {version}:\n{out}"
    lines = error_lines(result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"))
    assert len(lines) == 1, "want one error line:\n" + "\n".join(lines)


# -- declared resources against the database's columns (api/engine.h) ------------

def drop_column(db, table, column):
    db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def check_migrate(db):
    env = clean_env(overrides=db.env())
    return run_kiln(["migrate", "--check"], env=env, timeout=60)


def test_migrate_check_passes_on_the_migrated_schema(fresh_db):
    db = fresh_db()
    assert migrate(db).returncode == 0
    result = check_migrate(db)
    assert result.returncode == 0, output_of(result)
    assert "match" in output_of(result)


def test_migrate_check_applies_nothing(fresh_db):
    db = fresh_db()
    result = check_migrate(db)
    out = output_of(result)
    assert result.returncode == 1, out
    assert "no migrations applied (run kiln migrate)" in out, out
    assert "schema_migrations" not in db.tables()


@pytest.mark.parametrize("table,column", [("tasks", "due_date"), ("notes", "title"),
                                          ("projects", "updated_at")])
def test_a_missing_column_fails_migrate_check_and_migrate_naming_it(fresh_db, table, column):
    db = fresh_db()
    assert migrate(db).returncode == 0
    drop_column(db, table, column)
    for result in (check_migrate(db), migrate(db)):
        out = output_of(result)
        assert result.returncode == 1, out
        assert f"resource {table}: column {table}.{column} does not exist" in out, out


def test_a_column_of_the_wrong_type_is_named(fresh_db):
    db = fresh_db()
    assert migrate(db).returncode == 0
    drop_column(db, "tasks", "due_date")
    db.execute("ALTER TABLE tasks ADD COLUMN due_date "
               + ("integer" if db.kind == "postgres" else "INTEGER"))
    result = check_migrate(db)
    out = output_of(result)
    assert result.returncode == 1, out
    assert "resource tasks: column tasks.due_date is" in out and "date" in out, out


@pytest.mark.parametrize("migrate_on_start", ["true", "false"])
def test_serve_exits_with_one_line_on_a_mismatch(fresh_db, tmp_path, migrate_on_start):
    """Never a 500 at the first request: the start stops, naming the
    resource and the column (with PostgreSQL and migrations off, the first
    loop's warm-up compares them, right after the listeners open)."""
    db = fresh_db()
    assert migrate(db).returncode == 0
    drop_column(db, "notes", "content")
    env = clean_env(free_port(), dict(db.env(), MIGRATE_ON_START=migrate_on_start),
                    workdir=tmp_path)
    result = run_kiln(["serve"], env=env, timeout=30)
    out = output_of(result)
    assert result.returncode == 1, out
    lines = error_lines(result.stdout.decode(errors="replace"),
                        result.stderr.decode(errors="replace"))
    assert len(lines) == 1, "want one error line:\n" + "\n".join(lines)
    assert "resource notes: column notes.content does not exist" in lines[0], lines


def test_serve_on_a_database_not_migrated_yet_waits_for_kiln_migrate(kiln, fresh_db):
    """A database with no migrations at all is not code and schema that
    disagree: serve stays up (its resources answer 503 meanwhile), and once
    `kiln migrate` has run, the declarations are compared and the
    resources work, without a restart."""
    import authkit
    db = fresh_db()
    # the dev login's limit counts per client IP in the Valkey every test
    # of the mode shares: off here
    srv = kiln(MIGRATE_ON_START="false", RATE_LIMIT_PUBLIC="0", **db.env())
    wait_health(srv, 200, 10)
    assert migrate(db).returncode == 0
    cookie = authkit.session_for(srv)
    r = requests.post(srv.url("/api/v1/notes"), json={"title": "after migrate"},
                      headers={"authorization": f"Bearer {cookie}"}, timeout=10)
    assert r.status_code == 201, r.text
    assert srv.running()
