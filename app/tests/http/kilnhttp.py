"""Helpers for Kiln's black-box tests.

Two things live here:

* ``KilnServer``: one ``kiln serve`` child process on a free loopback port,
  with a clean environment, its stdout (JSON log lines) and stderr captured
  to files, and a stop that reports the exit code.
* ``RawConn``: an HTTP/1.1 client over a plain (or TLS) socket that sends
  exact bytes and parses the responses itself (status line, headers,
  Content-Length / chunked / close-delimited bodies), so that tests can
  pipeline requests, send malformed ones, and watch the server close the
  connection.  Every read has a deadline: no test can hang on a socket.

* The store mode (``KILN_STORES``) and the real services behind it (see
  "stores" below): which database and key-value store every child gets.

Only the standard library is used here; tests add pytest and requests.
"""

import json
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
# Absolute, because servers run with their own temporary folder as cwd
# (`make` passes KILN_BIN=build/kiln, relative to the repository root).
KILN_BIN = os.path.abspath(os.environ.get("KILN_BIN") or str(REPO_ROOT / "build" / "kiln"))

# x-request-id charset and length (API contract).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# RFC 3339, UTC ("Z"), optional fraction.
RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# Sanitizer settings are not Kiln configuration: let them through so that an
# ASan/UBSan run can be tuned from outside.
PASSTHROUGH_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS")


# --------------------------------------------------------------------------
# stores: KILN_STORES and the services of scripts/test-services.sh
# --------------------------------------------------------------------------
#
# KILN_STORES picks what every kiln child (``KilnServer``, ``clean_env``)
# is given unless a test overrides it:
#
#   embedded   (default) no DATABASE_URL / VALKEY_*: SQLite at a DB_PATH of
#              its own per instance, the in-process memory kv store
#   postgres   DATABASE_URL = $KILN_TEST_PG_URL (PostgreSQL, direct) and the
#              plain Redis (VALKEY_HOST, VALKEY_PORT)
#   pgbouncer  DATABASE_URL = $KILN_TEST_PGBOUNCER_URL (transaction pooling,
#              the RDS Proxy stand-in) and the TLS Redis with a user and a
#              password (VALKEY_SSL=true, VALKEY_CA_FILE, VALKEY_USER,
#              VALKEY_PASSWORD)
#
# postgres and pgbouncer need the services' environment: either the
# variables of DIR/env exported (set -a; . build/services/env; set +a) or
# KILN_TEST_SERVICES_ENV=DIR/env naming the file.

STORE_MODES = ("embedded", "postgres", "pgbouncer")
STORES = (os.environ.get("KILN_STORES") or "embedded").strip()
# The modes on the test services (PostgreSQL + Valkey), not in-process.
SERVICE_MODES = STORE_MODES[1:]
# The binary under test is the ASan + UBSan build (slower: longer waits).
SANITIZED = bool(os.environ.get("KILN_SANITIZED"))

SERVICES_SCRIPT = REPO_ROOT / "scripts" / "test-services.sh"
SERVICE_KEYS = (
    "KILN_TEST_SERVICES_DIR", "KILN_TEST_PG_URL", "KILN_TEST_PG_HOST", "KILN_TEST_PG_PORT",
    "KILN_TEST_PG_USER", "KILN_TEST_PG_PASSWORD", "KILN_TEST_PG_DB",
    "KILN_TEST_PGBOUNCER_URL", "KILN_TEST_PGBOUNCER_PORT", "KILN_TEST_REDIS_HOST",
    "KILN_TEST_REDIS_PORT", "KILN_TEST_REDIS_TLS_PORT", "KILN_TEST_REDIS_USER",
    "KILN_TEST_REDIS_PASSWORD", "KILN_TEST_REDIS_CA", "KILN_TEST_REDIS_OTHER_CA",
)


class ServicesError(Exception):
    """The services a store mode needs are not there."""


def _read_env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


class Services:
    """The services started by ``scripts/test-services.sh start DIR``."""

    def __init__(self, env):
        missing = [k for k in SERVICE_KEYS if not env.get(k)]
        if missing:
            raise ServicesError("the services environment lacks " + ", ".join(missing))
        self.env = dict(env)
        self.dir = pathlib.Path(env["KILN_TEST_SERVICES_DIR"])
        self.pg_host = env["KILN_TEST_PG_HOST"]
        self.pg_port = int(env["KILN_TEST_PG_PORT"])
        self.pg_user = env["KILN_TEST_PG_USER"]
        self.pg_password = env["KILN_TEST_PG_PASSWORD"]
        self.pg_db = env["KILN_TEST_PG_DB"]
        self.pg_url = env["KILN_TEST_PG_URL"]
        self.pgbouncer_url = env["KILN_TEST_PGBOUNCER_URL"]
        self.pgbouncer_port = int(env["KILN_TEST_PGBOUNCER_PORT"])
        self.pg_socket_dir = env.get("KILN_TEST_PG_SOCKET_DIR") or str(self.dir / "pg-sock")
        self.pg_superuser = env.get("KILN_TEST_PG_SUPERUSER") or "postgres"
        pg_bin = env.get("KILN_TEST_PG_BIN") or "/usr/lib/postgresql/15/bin"
        self.psql_bin = os.path.join(pg_bin, "psql") if os.path.exists(
            os.path.join(pg_bin, "psql")) else "psql"
        self.redis_host = env["KILN_TEST_REDIS_HOST"]
        self.redis_port = int(env["KILN_TEST_REDIS_PORT"])
        self.redis_tls_port = int(env["KILN_TEST_REDIS_TLS_PORT"])
        self.redis_user = env["KILN_TEST_REDIS_USER"]
        self.redis_password = env["KILN_TEST_REDIS_PASSWORD"]
        self.redis_ca = env["KILN_TEST_REDIS_CA"]
        self.redis_other_ca = env["KILN_TEST_REDIS_OTHER_CA"]
        self._lock = threading.Lock()

    # -- the secrets no kiln output may contain ------------------------------
    @property
    def secrets(self):
        return [self.pg_password, self.redis_password]

    # -- reachability ----------------------------------------------------------
    def ports(self):
        return {"postgres": self.pg_port, "pgbouncer": self.pgbouncer_port,
                "redis": self.redis_port, "redis-tls": self.redis_tls_port}

    def unreachable(self):
        """Names of the services that do not accept a TCP connection."""
        down = []
        for name, port in self.ports().items():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                down.append(f"{name} (127.0.0.1:{port})")
        return down

    def wait_up(self, service, timeout=15.0):
        port = self.ports()[service]
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{service} not accepting on port {port} after {timeout} s")
                time.sleep(0.05)

    # -- scripts/test-services.sh ------------------------------------------
    def ctl(self, action, service, timeout=60):
        """``stop1``, ``start1`` or ``restart`` one service."""
        r = subprocess.run([str(SERVICES_SCRIPT), action, str(self.dir), service],
                           capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"test-services.sh {action} {service} failed ({r.returncode}): "
                                 f"{r.stderr.decode(errors='replace')[-2000:]}")

    # -- PostgreSQL as the superuser over the unix socket ------------------------
    def psql(self, sql, db=None, check=True, timeout=30):
        """Run SQL as the superuser; stdout as text (unaligned, tuples only,
        fields separated by '|')."""
        r = subprocess.run(
            [self.psql_bin, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
             "-h", self.pg_socket_dir, "-p", str(self.pg_port), "-U", self.pg_superuser,
             "-d", db or self.pg_db, "-c", sql],
            capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"})
        if check and r.returncode != 0:
            raise AssertionError(f"psql {sql!r} on {db}: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode()

    def rows(self, sql, db=None):
        out = self.psql(sql, db)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def create_db(self, prefix="kt"):
        """A fresh database owned by the kiln role; returns its name."""
        with self._lock:
            name = f"{prefix}_{os.getpid()}_{int(time.time() * 1000) % 10**9}_{os.urandom(3).hex()}"
        self.psql(f'CREATE DATABASE "{name}" OWNER "{self.pg_user}"', db="postgres")
        return name

    def drop_db(self, name):
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', db="postgres", check=False)

    def db_url(self, db=None, via="postgres", password=None, user=None):
        """postgresql://kiln:PW@127.0.0.1:PORT/DB, direct or through pgbouncer."""
        port = self.pg_port if via == "postgres" else self.pgbouncer_port
        return (f"postgresql://{user or self.pg_user}:{password or self.pg_password}"
                f"@{self.pg_host}:{port}/{db or self.pg_db}")

    # -- kv ---------------------------------------------------------------------
    def valkey_plain_env(self):
        return {"VALKEY_HOST": self.redis_host, "VALKEY_PORT": str(self.redis_port)}

    def valkey_tls_env(self, **changes):
        env = {"VALKEY_HOST": "localhost", "VALKEY_PORT": str(self.redis_tls_port),
               "VALKEY_SSL": "true", "VALKEY_CA_FILE": self.redis_ca,
               "VALKEY_USER": self.redis_user, "VALKEY_PASSWORD": self.redis_password}
        env.update(changes)
        return env


_services = None
_services_error = None


def services():
    """The ``Services``, or None when no services environment is set."""
    global _services, _services_error
    if _services is not None or _services_error is not None:
        return _services
    env = None
    path = os.environ.get("KILN_TEST_SERVICES_ENV")
    try:
        if path:
            env = _read_env_file(path)
        elif os.environ.get("KILN_TEST_SERVICES") == "1":
            env = {k: v for k, v in os.environ.items() if k.startswith("KILN_TEST_")}
        if env is not None:
            _services = Services(env)
    except (OSError, ServicesError) as e:
        _services_error = f"{path or 'environment'}: {e}"
    return _services


def services_problem():
    """Why the store mode cannot run, or None."""
    if STORES not in STORE_MODES:
        return f"KILN_STORES={STORES!r}: want one of {', '.join(STORE_MODES)}"
    if STORES == "embedded":
        return None
    how = ("start them with `scripts/test-services.sh start build/services`, then "
           "`set -a; . build/services/env; set +a` or KILN_TEST_SERVICES_ENV=build/services/env")
    svc = services()
    if svc is None:
        return (f"KILN_STORES={STORES} needs the test services "
                f"({_services_error or 'no KILN_TEST_SERVICES=1 in the environment'}): {how}")
    down = svc.unreachable()
    if down:
        return (f"KILN_STORES={STORES}: services not reachable: {', '.join(down)} "
                f"(dir {svc.dir}); {how}")
    return None


_embedded_tmp = None
_embedded_counter = iter(range(1_000_000_000))


def _embedded_db_path():
    """A DB_PATH of its own for a child started without a work folder."""
    global _embedded_tmp
    if _embedded_tmp is None:
        _embedded_tmp = tempfile.TemporaryDirectory(prefix="kiln-test-db-")
    return os.path.join(_embedded_tmp.name, f"kiln{next(_embedded_counter)}.db")


def store_env(workdir=None, mode=None):
    """The store variables a child gets in ``mode`` (default: KILN_STORES)."""
    mode = mode or STORES
    if mode == "embedded":
        path = os.path.join(str(workdir), "kiln.db") if workdir is not None else _embedded_db_path()
        return {"DB_PATH": path}
    svc = services()
    if svc is None:
        raise AssertionError(services_problem() or f"KILN_STORES={mode}: no services")
    if mode == "postgres":
        return dict({"DATABASE_URL": svc.pg_url}, **svc.valkey_plain_env())
    if mode == "pgbouncer":
        # pgbouncer hands a server to another client at a ReadyForQuery
        # while a pipelined statement is only partly through it: through a
        # transaction-mode pooler kiln runs with DB_PIPELINE=false, as a
        # deployment would (docs/ENVIRONMENT.md).
        return dict({"DATABASE_URL": svc.pgbouncer_url, "DB_PIPELINE": "false"},
                    **svc.valkey_tls_env())
    raise AssertionError(f"unknown store mode {mode!r}")


def expected_checks(mode=None):
    """``checks`` of /healthz?detailed=true on a healthy instance."""
    mode = mode or STORES
    if mode == "embedded":
        return {"database": {"status": "ok", "message": "connected"},
                "valkey": {"status": "ok", "message": "not configured"}}
    return {"database": {"status": "ok", "message": "connected"},
            "valkey": {"status": "ok", "message": "connected"}}


def secrets_in(text):
    """The service passwords that occur in ``text`` (should be none)."""
    svc = services()
    if svc is None:
        return []
    return [s for s in svc.secrets if s and s in text]


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(port=None, overrides=None, base=True, workdir=None, stores=True):
    """The environment a Kiln child gets: PATH, KILN_ENV=test, PORT,
    LOG_LEVEL=info, the store variables of the KILN_STORES mode (DB_PATH in
    ``workdir``, or in a temporary folder, in embedded mode), then
    ``overrides`` (a value of None removes the name)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for name in PASSTHROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    if base:
        env["KILN_ENV"] = "test"
        env["LOG_LEVEL"] = "info"
    if base and stores:
        env.update(store_env(workdir))
    if port is not None:
        env["PORT"] = str(port)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def run_kiln(args, env=None, timeout=10, cwd=None):
    """Run ``kiln ARGS`` to completion with exactly ``env``; returns
    CompletedProcess with text stdout/stderr.  A process that does not exit
    within ``timeout`` (say, a serve that should have refused its config) is
    killed and reported as a test failure."""
    if env is None:
        env = clean_env()
    try:
        return subprocess.run([KILN_BIN] + list(args), env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"`kiln {' '.join(args)}` did not exit within {timeout} s "
            f"(stdout={e.stdout!r:.300} stderr={e.stderr!r:.300})") from None


class KilnServer:
    """One ``kiln serve`` child.  ``expected_exit`` is what the harness
    asserts at teardown (None: do not check)."""

    def __init__(self, workdir, env_overrides=None, tls=False, args=("serve",)):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.env = clean_env(self.port, env_overrides, workdir=self.workdir)
        self.args = list(args)
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.proc = None
        self.expected_exit = 0
        self.returncode = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, wait=True, ready_timeout=10.0):
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Own session: a Ctrl-C aimed at pytest does not hit the server
            # behind the harness's back (teardown stops it and checks it).
            self.proc = subprocess.Popen([KILN_BIN] + self.args, env=self.env,
                                         cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True)
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout=10.0):
        """Poll GET /livez until it answers 200 (or the process dies)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"kiln serve exited with {self.proc.returncode} before it was ready\n"
                    f"stderr: {self.stderr_text()[-2000:]}\nstdout: {self.stdout_text()[-2000:]}")
            try:
                with self.connect(timeout=1.0) as conn:
                    conn.send(http_request("GET", "/livez", headers=[("Connection", "close")]))
                    resp = conn.read_response(timeout=1.0)
                    if resp.status == 200:
                        return
                    last = f"status {resp.status}"
            except (OSError, AssertionError) as e:
                last = repr(e)
            time.sleep(0.02)
        raise AssertionError(f"kiln serve not ready after {timeout} s on port {self.port}: {last}\n"
                             f"stderr: {self.stderr_text()[-2000:]}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Exit code, or None if still running after ``timeout`` seconds."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send ``sig``, wait up to ``timeout`` s, kill -9 after that.
        Returns the exit code (negative: killed by a signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.wait_exit(timeout) is None:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                raise AssertionError(f"kiln did not exit within {timeout} s of {sig!r}; killed\n"
                                     f"last log lines:\n{self.stdout_text()[-2000:]}")
        self.returncode = self.proc.returncode
        return self.returncode

    # -- clients -----------------------------------------------------------

    @property
    def base_url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base_url + path

    def connect(self, timeout=5.0):
        return RawConn(self.port, tls=self.tls, timeout=timeout)

    def exchange(self, data, count=1, heads=None, timeout=5.0):
        """Open a connection, send ``data``, read ``count`` responses."""
        with self.connect(timeout=timeout) as conn:
            conn.send(data)
            return conn.read_responses(count, heads=heads)

    # -- output ------------------------------------------------------------

    def stdout_bytes(self):
        return self.stdout_path.read_bytes() if self.stdout_path.exists() else b""

    def stdout_text(self):
        return self.stdout_bytes().decode("utf-8", "replace")

    def stderr_text(self):
        return self.stderr_path.read_bytes().decode("utf-8", "replace") if self.stderr_path.exists() else ""

    def log_lines(self):
        """(records, bad): complete stdout lines parsed as JSON objects, and
        the lines that are not valid UTF-8 JSON objects."""
        data = self.stdout_bytes()
        if not data.endswith(b"\n"):
            data = data[:data.rfind(b"\n") + 1]    # last line may be mid-write
        records, bad = [], []
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                bad.append(line)
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                bad.append(line)
        return records, bad

    def wait_log(self, predicate, timeout=2.0):
        """The first log record matching ``predicate``, polling the file for
        up to ``timeout`` s (log lines may be flushed after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            records, _ = self.log_lines()
            for rec in records:
                if predicate(rec):
                    return rec
            if time.monotonic() > deadline:
                raise AssertionError("no matching log line within %.1f s; last lines:\n%s"
                                     % (timeout, self.stdout_text()[-3000:]))
            time.sleep(0.05)

    def log_for(self, request_id, timeout=2.0):
        return self.wait_log(lambda r: r.get("request_id") == request_id, timeout)


# --------------------------------------------------------------------------
# raw HTTP/1.1
# --------------------------------------------------------------------------

def _b(value):
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def http_request(method="GET", target="/livez", headers=(), body=None,
                 version="HTTP/1.1", host="kiln.test", request_id=None):
    """Bytes of one request.  ``host=None`` sends no Host header; a body gets
    a Content-Length unless ``headers`` already frame it."""
    lines = [_b(method) + b" " + _b(target) + b" " + _b(version)]
    if host is not None:
        lines.append(b"Host: " + _b(host))
    if request_id is not None:
        lines.append(b"x-request-id: " + _b(request_id))
    names = set()
    for name, value in headers:
        lines.append(_b(name) + b": " + _b(value))
        names.add(_b(name).lower())
    body = _b(body) if body is not None else b""
    if body and b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*parts, trailers=b""):
    """A chunked message body made of ``parts``."""
    out = b""
    for part in parts:
        part = _b(part)
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n" + _b(trailers) + b"\r\n"


class ServerClosed(AssertionError):
    """The server closed the connection before sending any of the response."""


class IncompleteResponse(AssertionError):
    """The server closed the connection in the middle of a response (a
    truncated head, or fewer body bytes than Content-Length said)."""


class ReadTimeout(AssertionError):
    """No complete response before the deadline."""


class Headers(dict):
    """Lower-cased header name → first value (what requests' headers give
    for a single header, so helpers work on both)."""


class Response:
    def __init__(self, version, status, reason, header_list, body):
        self.version = version
        self.status = status
        self.status_code = status
        self.reason = reason
        self.header_list = header_list            # [(lower name, value)] in order
        self.headers = Headers()
        for name, value in header_list:
            self.headers.setdefault(name, value)
        self.body = body
        self.content = body

    def header_all(self, name):
        name = name.lower()
        return [v for n, v in self.header_list if n == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"<Response {self.status} {self.header_list!r} {self.body[:300]!r}>"


class RawConn:
    def __init__(self, port, tls=False, timeout=5.0, host="127.0.0.1", tls_context=None):
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = tls_context or insecure_tls_context()
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending -----------------------------------------------------------

    def send(self, data):
        self.sock.sendall(_b(data))

    def send_quiet(self, data):
        """Send, tolerating a server that already closed (it may have
        answered and closed before reading everything).  True if all sent."""
        try:
            self.sock.sendall(_b(data))
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            return False

    # -- receiving ---------------------------------------------------------

    def _fill(self, deadline):
        """Read more bytes into the buffer.  False on EOF or reset."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReadTimeout(f"timed out; buffered {bytes(self.buf)[:500]!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise ReadTimeout(f"timed out; buffered {bytes(self.buf)[:500]!r}") from None
        except (ConnectionResetError, ConnectionAbortedError):
            self.eof = self.reset = True
            return False
        except ssl.SSLError:
            # TLS alert or unclean shutdown: the connection is over.
            self.eof = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise IncompleteResponse(f"closed after {len(self.buf)} of {n} body bytes: "
                                         f"{bytes(self.buf)[:300]!r}")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise IncompleteResponse(f"closed inside a chunked body: {bytes(self.buf)[:200]!r}")
        i = self.buf.index(b"\r\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def _read_chunked(self, deadline):
        body = b""
        while True:
            size_line = self._read_line(deadline)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while self._read_line(deadline):   # trailers, then the empty line
                    pass
                return body
            body += self._read_exact(size, deadline)
            if self._read_exact(2, deadline) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")

    def read_response(self, head=False, timeout=None):
        """The next response on the connection (1xx included).  ``head``:
        the request was HEAD, so no body follows whatever the headers say."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                if not self.buf:
                    raise ServerClosed("server closed the connection without a response"
                                       + (" (reset)" if self.reset else ""))
                raise IncompleteResponse(f"closed inside a response head: {bytes(self.buf)[:300]!r}")
        i = self.buf.index(b"\r\n\r\n")
        head_bytes = bytes(self.buf[:i])
        del self.buf[:i + 4]
        lines = head_bytes.split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError(f"bad status line {lines[0]!r} (head {head_bytes[:300]!r})")
        header_list = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise AssertionError(f"bad response header line {line!r}")
            header_list.append((name.decode("latin-1").lower(),
                                value.strip(b" \t").decode("latin-1")))
        status = int(m.group(2))
        resp = Response(m.group(1).decode(), status, (m.group(3) or b"").decode("latin-1"),
                        header_list, b"")
        te = resp.headers.get("transfer-encoding", "").lower()
        if head or 100 <= status < 200 or status in (204, 304):
            return resp
        resp.stream = False
        if (resp.headers.get("content-type", "").startswith("text/event-stream")
                and "content-length" not in resp.headers):
            # An event stream does not end: the response carries what the
            # first read brings (the stream's opening), and the connection
            # cannot be used for another request.
            if not self.buf:
                self._fill(deadline)
            resp.body = resp.content = bytes(self.buf)
            self.buf.clear()
            resp.stream = True
            return resp
        if "chunked" in te:
            resp.body = self._read_chunked(deadline)
        elif "content-length" in resp.headers:
            lengths = set(resp.header_all("content-length"))
            if len(lengths) != 1:
                raise AssertionError(f"conflicting Content-Length in response: {lengths}")
            resp.body = self._read_exact(int(resp.headers["content-length"]), deadline)
        else:
            while self._fill(deadline):
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        resp.content = resp.body
        return resp

    def read_final_response(self, head=False, timeout=None):
        """Skip interim (1xx) responses."""
        while True:
            resp = self.read_response(head=head, timeout=timeout)
            if resp.status >= 200:
                return resp

    def read_responses(self, count, heads=None, timeout=None):
        heads = heads or [False] * count
        return [self.read_final_response(head=heads[i], timeout=timeout) for i in range(count)]

    def wait_closed(self, timeout=2.0):
        """Assert the server closes the connection within ``timeout`` s;
        returns whatever bytes arrived before the close."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except ReadTimeout:
            raise AssertionError(f"server kept the connection open for {timeout} s "
                                 f"(received {bytes(self.buf)[:300]!r})") from None
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def expect_silence(self, seconds):
        """Assert nothing arrives (and no close) for ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            got = self._fill(deadline)
        except ReadTimeout:
            return
        if got:
            raise AssertionError(f"unexpected bytes from server: {bytes(self.buf)[:300]!r}")
        raise AssertionError("server closed the connection unexpectedly")


def insecure_tls_context(minimum=None, maximum=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


# --------------------------------------------------------------------------
# assertions shared by the test files
# --------------------------------------------------------------------------

def assert_json_content_type(resp):
    ctype = resp.headers.get("content-type", "")
    assert ctype.lower().replace(" ", "") == JSON_CONTENT_TYPE.replace(" ", ""), \
        f"content-type {ctype!r}, want {JSON_CONTENT_TYPE!r}"


def assert_request_id(resp):
    """x-request-id present exactly once and well-formed; returns it."""
    if isinstance(resp, Response):
        ids = resp.header_all("x-request-id")
        assert len(ids) == 1, f"want one x-request-id header, got {ids!r} in {resp!r}"
    rid = resp.headers.get("x-request-id")
    assert rid is not None, f"no x-request-id header in {resp!r}"
    assert REQUEST_ID_RE.match(rid), f"malformed x-request-id {rid!r}"
    return rid


def assert_error(resp, status, code):
    """The error envelope: status, content type, error/code/message strings
    and request_id equal to the x-request-id header.  ``status`` may be a
    collection of allowed statuses; ``code`` may be a dict status → code."""
    allowed = status if isinstance(status, (set, tuple, list, frozenset)) else {status}
    got = getattr(resp, "status_code")
    assert got in allowed, f"status {got}, want {sorted(allowed)}: {resp!r}"
    rid = assert_request_id(resp)
    assert_json_content_type(resp)
    body = json.loads(resp.content.decode("utf-8"))
    assert isinstance(body, dict), body
    want_code = code[got] if isinstance(code, dict) else code
    if want_code is not None:
        assert body.get("code") == want_code, f"code {body.get('code')!r}, want {want_code!r}: {body}"
    for key in ("error", "message", "code"):
        assert isinstance(body.get(key), str) and body[key], f"{key!r} missing or empty in {body}"
    assert body.get("request_id") == rid, f"request_id {body.get('request_id')!r} != header {rid!r}"
    return body


def stop_all(servers, timeout=10.0):
    """SIGTERM every running instance of ``servers`` and say what went
    wrong: one line per instance that did not exit in ``timeout`` s, exited
    with another code than it should, or printed a service password."""
    problems = []
    for srv in servers:
        if srv.proc is None:
            continue
        try:
            rc = srv.stop(timeout=timeout)
        except AssertionError as e:
            problems.append(f"port {srv.port}: {e}")
            continue
        if srv.expected_exit is not None and rc != srv.expected_exit:
            problems.append(f"port {srv.port}: exit code {rc}, want {srv.expected_exit}\n"
                            f"stderr tail:\n{srv.stderr_text()[-3000:]}")
        leaked = secrets_in(srv.stdout_text() + srv.stderr_text())
        if leaked:
            problems.append(f"port {srv.port}: a service password appears in its output "
                            f"({len(leaked)} of them)")
    return problems
