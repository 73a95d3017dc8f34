"""Harness for Kiln's black-box HTTP suite.

Run from the repository root with Debian's interpreter:

    /usr/bin/python3 -m pytest -q app/tests/http
    KILN_BIN=build/asan/kiln /usr/bin/python3 -m pytest -q app/tests/http

Fixtures:

* ``server``: one ``kiln serve`` shared by the whole session (default config,
  KILN_ENV=test).  Tests that need no special configuration use it.
* ``kiln``: a factory, ``kiln(ENV_NAME=value, ..., tls=False, wait=True)``,
  that starts a fresh instance for one test; ``module_kiln`` does the same for
  a whole module.  At teardown each instance still running gets SIGTERM
  (kill -9 after 10 s) and its exit code must be ``server.expected_exit``
  (0 unless the test changed it).
* ``tls_files``: a self-signed certificate and key made with the openssl CLI.

Every test runs under a watchdog (SIGALRM) so that a stuck socket fails the
test instead of hanging the suite.

Store modes (KILN_STORES, see kilnhttp.py): ``embedded`` (default: SQLite
and the in-process kv store), ``postgres`` (PostgreSQL direct + plain Redis)
and ``pgbouncer`` (PostgreSQL through pgbouncer + Redis over TLS with a
password); the last two need the services of scripts/test-services.sh:

    scripts/test-services.sh start build/services
    set -a; . build/services/env; set +a
    KILN_STORES=postgres /usr/bin/python3 -m pytest -q app/tests/http
    KILN_STORES=pgbouncer /usr/bin/python3 -m pytest -q app/tests/http
    scripts/test-services.sh stop build/services

* ``services``: the ``kilnhttp.Services`` (skips the test when there are
  none, i.e. in embedded mode without a services environment).
* Tests marked ``disruptive`` (they stop and restart shared services) run
  after all the others.
* At teardown, no instance's stdout or stderr may contain a service
  password.
* Every JSON response received through ``requests`` must match the OpenAPI
  document (openapi_check.py).
"""

import os
import pathlib
import signal
import subprocess

import pytest

import kilnhttp
import openapi_check

TEST_WATCHDOG_SECONDS = 60


@pytest.fixture(scope="session", autouse=True)
def responses_match_the_openapi_document():
    undo = openapi_check.install()
    yield
    undo()


def pytest_configure(config):
    # verify=False against our self-signed certificate is intended.
    config.addinivalue_line("filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")
    config.addinivalue_line("markers", "disruptive: stops shared services; runs last")
    problem = kilnhttp.services_problem()
    if problem:
        raise pytest.UsageError(problem)


def pytest_report_header(config):
    svc = kilnhttp.services()
    where = f" (services in {svc.dir})" if svc is not None else ""
    return f"kiln stores: {kilnhttp.STORES}{where}; binary: {kilnhttp.KILN_BIN}"


def pytest_collection_modifyitems(session, config, items):
    # Tests that stop shared services go last, so that the instances other
    # tests share never see an outage they did not cause.
    calm = [i for i in items if i.get_closest_marker("disruptive") is None]
    rough = [i for i in items if i.get_closest_marker("disruptive") is not None]
    items[:] = calm + rough


@pytest.fixture(scope="session")
def services():
    svc = kilnhttp.services()
    if svc is None:
        pytest.skip("needs the test services (KILN_STORES=postgres or pgbouncer with "
                    "build/services/env loaded)")
    return svc


@pytest.fixture(scope="session", autouse=True)
def kiln_binary():
    path = kilnhttp.KILN_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"kiln binary not found at {path}: build it (make) or set KILN_BIN", pytrace=False)
    return path


@pytest.fixture(autouse=True)
def watchdog():
    def on_alarm(signum, frame):
        pytest.fail(f"test exceeded the {TEST_WATCHDOG_SECONDS} s watchdog", pytrace=True)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_WATCHDOG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


class ServerPool:
    """Starts instances and checks how each one ended."""

    def __init__(self, make_dir):
        self.make_dir = make_dir
        self.servers = []

    def start(self, tls=None, wait=True, args=("serve",), **env):
        """``tls``: a (certfile, keyfile) pair, or None for plain HTTP."""
        if tls is not None:
            env.setdefault("SSL_CERTFILE", str(tls[0]))
            env.setdefault("SSL_KEYFILE", str(tls[1]))
        https = tls is not None or env.get("SSL_SELF_SIGNED") == "true"
        srv = kilnhttp.KilnServer(self.make_dir(), env, tls=https, args=args)
        self.servers.append(srv)
        srv.start(wait=wait)
        return srv

    def close(self):
        problems = kilnhttp.stop_all(self.servers)
        if problems:
            pytest.fail("kiln instance(s) ended badly:\n" + "\n".join(problems), pytrace=False)


def _dir_maker(base):
    counter = iter(range(1_000_000))
    return lambda: pathlib.Path(base) / f"kiln{next(counter)}"


@pytest.fixture
def kiln(tmp_path):
    pool = ServerPool(_dir_maker(tmp_path))
    yield pool.start
    pool.close()


@pytest.fixture(scope="module")
def module_kiln(tmp_path_factory):
    pool = ServerPool(_dir_maker(tmp_path_factory.mktemp("module")))
    yield pool.start
    pool.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    pool = ServerPool(_dir_maker(tmp_path_factory.mktemp("session")))
    srv = pool.start()
    yield srv
    pool.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """Self-signed certificate (CN=localhost, SAN localhost and 127.0.0.1)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def own_db():
    """A function making a fresh database (PostgreSQL modes) for a module's
    instances, returning their DATABASE_URL, or {} on SQLite (each instance
    has its own file there). Any instance runs any queued job: instances
    of other modules on the shared database must not take this module's."""
    made = []
    svc = kilnhttp.services() if kilnhttp.STORES in kilnhttp.SERVICE_MODES else None

    def make():
        if svc is None:
            return {}
        name = svc.create_db("kown")
        made.append(name)
        return {"DATABASE_URL": svc.db_url(name, via=kilnhttp.STORES)}
    yield make
    for name in made:
        svc.drop_db(name)


@pytest.fixture(scope="module")
def smtp():
    """A real SMTP server on loopback (mailkit.py) for a module's mail."""
    import mailkit
    s = mailkit.SmtpServer().start()
    yield s
    s.stop()
