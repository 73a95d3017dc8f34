"""The secret rotation functions (infra/lambdas/) end to end.

What runs is what ships: the native zips of ``make lambdas``
(build/lambdas/<arch>/rotate-<kind>.zip), unpacked, their ``bootstrap``
started as Lambda's provided.al2023 would (LAMBDA_TASK_ROOT,
AWS_LAMBDA_RUNTIME_API, temporary credentials in AWS_* variables), so the
packed loader and libraries are exercised too.  Around it, in this process:
the Lambda Runtime API (``LambdaRuntimeFake``: one event per step, the
function's answers recorded), Secrets Manager with versions and staging
labels, ECS UpdateService and ElastiCache ModifyUser (awsfake.py; every
request's SigV4 signature verified with botocore).  The database and Valkey
are the real PostgreSQL and TLS Redis of the test services (ModifyUser is
applied to Redis with ACL SETUSER), and a Kiln serves requests throughout.

Proven here: each kind's four steps against Secrets Manager's contract
(stages move pending → current, and only at finishSecret); alternating
database users under traffic with hot reload (SIGHUP), where new connections
log in as the other user, the previous user keeps its password, sessions
survive and no request fails; SECRET_KEY_BASE rotation with hot reload and
with a new deployment (the JSON shape that carries the previous key);
Valkey passwords where both stay valid for a whole rotation period; ECS
UpdateService exactly once after finishSecret when HOT_RELOAD is off (and
again on a retried finishSecret whose deployment failed); failures
reported to the Runtime API with the stages unchanged; createSecret
idempotence; configuration errors through /runtime/init/error; no secret
value in any output.  A last test runs the arm64 zip under qemu-user when
both are present.

KILN_STORES=postgres only (awskit.needs_postgres).
"""

import contextlib
import json
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import time
import zipfile

import psycopg2
import pytest

import authkit as ak
import awsfake
import awskit
import kilnhttp
from awskit import aws_env, db_env, needs_postgres, store, sm  # noqa: F401

pytestmark = needs_postgres

KINDS = ("secret-key-base", "db-user", "valkey-user")
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
NATIVE = {"aarch64": "arm64"}.get(platform.machine(), platform.machine())
# KILN_LAMBDAS_DIR: zips packed elsewhere (a sanitizer build of kiln-rotate).
LAMBDAS = pathlib.Path(os.environ.get("KILN_LAMBDAS_DIR") or
                       kilnhttp.REPO_ROOT / "build" / "lambdas")
CLUSTER, SERVICE = "kiln", "kiln-api"


def skb():
    return ak.secret_key_base()


# --------------------------------------------------------------------------
# the packed function
# --------------------------------------------------------------------------

def unzip(path, dest):
    """Extract with the modes the zip records (zipfile drops them)."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(os.path.join(dest, info.filename), mode)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """kind → the folder of its unpacked native zip (LAMBDA_TASK_ROOT)."""
    out = {}
    for kind in KINDS:
        z = LAMBDAS / NATIVE / f"rotate-{kind}.zip"
        if not z.is_file():
            pytest.fail(f"{z} is missing: build it with `make lambdas`", pytrace=False)
        d = tmp_path_factory.mktemp(f"task-{kind}")
        unzip(z, d)
        out[kind] = d
    return out


class Function:
    """One Lambda execution environment of a rotation function: the
    bootstrap (or ``cmd``) polling ``runtime``; stdout and stderr kept."""

    def __init__(self, root, runtime, env, workdir, cmd=None):
        self.root = pathlib.Path(root)
        self.runtime = runtime
        self.env = dict({k: v for k, v in env.items() if v is not None},
                        LAMBDA_TASK_ROOT=str(self.root),
                        AWS_LAMBDA_RUNTIME_API=runtime.address,
                        AWS_LAMBDA_FUNCTION_NAME="kiln-rotate",
                        PATH=os.environ.get("PATH", "/usr/bin:/bin"))
        self.cmd = cmd or [str(self.root / "bootstrap")]
        self.out = pathlib.Path(workdir) / f"fn-{os.urandom(3).hex()}.out"
        self.err = self.out.with_suffix(".err")
        self.proc = None

    def start(self, wait=True):
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=o, stderr=e,
                                         stdin=subprocess.DEVNULL, cwd=str(self.root))
        if wait:
            self.runtime.wait_polling(timeout=20)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def output(self):
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def records(self):
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line!r}")
        return out

    def step(self, arn, token, step, timeout=40):
        return self.runtime.invoke({"SecretId": arn, "ClientRequestToken": token, "Step": step},
                                   timeout=timeout)

    def steps(self, arn, token, steps=STEPS, after=None):
        """Run ``steps``; each must answer a response.  ``after(step)`` is
        called after each one."""
        for st in steps:
            result = self.step(arn, token, st)
            assert result[0] == "response", (st, result, self.output()[-3000:])
            if after:
                after(st)

    def rotate(self, sm, arn, after=None):
        """A whole rotation, as Secrets Manager's RotateSecret drives it;
        returns the new version's id."""
        token = sm.start_rotation(arn)
        self.steps(arn, token, after=after)
        return token


@pytest.fixture
def runtime():
    with awsfake.LambdaRuntimeFake() as fake:
        yield fake


@pytest.fixture
def ecs(store):
    with awsfake.EcsFake(store, services=[(CLUSTER, SERVICE)]) as fake:
        yield fake


@pytest.fixture
def lambda_creds(store):
    """What Lambda gives a function: a temporary key with a session token."""
    return store.temporary(source="lambda")


def function_env(sm, creds, ecs=None, hot_reload=False, **extra):
    env = {"AWS_REGION": awsfake.REGION, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL_SECRETS_MANAGER": sm.base_url, **creds.env()}
    if ecs is not None:
        env["AWS_ENDPOINT_URL_ECS"] = ecs.base_url
    if hot_reload:
        env["HOT_RELOAD"] = "true"
    else:
        env.update(ECS_CLUSTER=CLUSTER, ECS_SERVICE=SERVICE)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def assert_stages(sm, arn, current, pending=None, previous=None):
    assert sm.version_of(arn, "AWSCURRENT") == current, sm.stages(arn)
    if pending is not None:
        assert sm.version_of(arn, "AWSPENDING") == pending, sm.stages(arn)
    if previous is not None:
        assert sm.version_of(arn, "AWSPREVIOUS") == previous, sm.stages(arn)


# --------------------------------------------------------------------------
# PostgreSQL and Redis helpers
# --------------------------------------------------------------------------

@pytest.fixture
def pg(services):
    setup = awsfake.PgSetup(services, tag="rot")
    yield setup
    setup.drop()


def pg_login(services, db, user, password):
    """Does ``user`` log in with ``password``? (session_user checked)"""
    try:
        with contextlib.closing(psycopg2.connect(
                host=services.pg_host, port=services.pg_port, dbname=db, user=user,
                password=password, connect_timeout=5)) as c:
            with c.cursor() as cur:
                cur.execute("SELECT session_user")
                return cur.fetchone()[0] == user
    except psycopg2.OperationalError:
        return False


def db_secrets(sm, services, pg, app_role, app_pw, managed_master=False):
    """The app user's secret (RDS shape) and the master secret: a
    non-superuser with CREATEROLE, as an RDS master user is.
    ``managed_master``: only username and password in it, as in the secret
    RDS manages for its master user."""
    master = f"rot_master_{pg._suffix}"
    master_pw = "master-" + os.urandom(16).hex()
    services.psql(f"CREATE ROLE \"{master}\" LOGIN CREATEROLE PASSWORD '{master_pw}'",
                  db="postgres")
    pg.roles[master] = master_pw
    pg.roles[app_role + "_clone"] = None      # made by the function; dropped at the end
    common = {"engine": "postgres", "host": services.pg_host, "port": services.pg_port}
    db_arn = sm.create_secret(f"kiln/{pg.db}/db", dict(common, dbname=pg.db, username=app_role,
                                                       password=app_pw))
    master_arn = sm.create_secret(
        f"kiln/{pg.db}/master",
        {"username": master, "password": master_pw} if managed_master else
        dict(common, dbname="postgres", username=master, password=master_pw))
    sm.enable_rotation(db_arn)
    return db_arn, master_arn, master_pw


def redis_auth_ok(services, user, password):
    """AUTH user password + PING on the TLS Redis."""
    r = subprocess.run(["redis-cli", "--tls", "--cacert", services.redis_ca, "-h", "localhost",
                        "-p", str(services.redis_tls_port), "--user", user, "PING"],
                       env=dict(os.environ, REDISCLI_AUTH=password), capture_output=True,
                       timeout=15, stdin=subprocess.DEVNULL)
    return r.stdout.decode().strip() == "PONG"


def wait_users(pg, want, timeout=15):
    deadline = time.monotonic() + timeout
    while pg.users_connected() != want:
        assert time.monotonic() < deadline, f"want {want}, have {pg.activity()}"
        time.sleep(0.1)


def move_connections(traffic, pg, old_role, new_role):
    """End old_role's connections between requests (an in-flight query on a
    terminated backend fails by design), then let traffic reconnect: it must
    come back as new_role."""
    traffic.pause()
    assert pg.terminate(old_role) >= 1, pg.activity()
    deadline = time.monotonic() + 10
    while old_role in pg.users_connected():
        assert time.monotonic() < deadline, pg.activity()
        time.sleep(0.05)
    time.sleep(0.5)           # kiln sees the closed sockets
    traffic.resume()
    traffic.wait_count(30)
    wait_users(pg, [new_role])


# --------------------------------------------------------------------------
# database user: alternating users, hot reload
# --------------------------------------------------------------------------

def test_db_user_rotation_alternates_users_under_traffic(
        kiln, services, store, sm, pg, runtime, ecs, lambda_creds, packed, tmp_path):
    app_role, app_pw = pg.login_role("app")
    clone = app_role + "_clone"
    # per-database settings the clone must get too: a list (quoted elements)
    # and a plain value, besides PgSetup's SET role = owner
    services.psql(f'ALTER ROLE "{app_role}" IN DATABASE "{pg.db}" SET search_path = '
                  '"$user", public, "Odd ""schema"" name"', db="postgres")
    services.psql(f"ALTER ROLE \"{app_role}\" IN DATABASE \"{pg.db}\" SET work_mem = '8MB'",
                  db="postgres")
    db_arn, master_arn, master_pw = db_secrets(sm, services, pg, app_role, app_pw)
    first = sm.version_of(db_arn, "AWSCURRENT")
    key1 = skb()
    key_arn = sm.create_secret(f"kiln/{pg.db}/secret-key-base", key1)
    sm.enable_rotation(key_arn)
    kiln_creds = store.static()
    srv = ak.start_kiln(
        kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=key_arn,
        DB_USERNAME_SECRET_ARN=db_arn + "#username",
        DB_PASSWORD_SECRET_ARN=db_arn + "#password", ENABLE_SECRET_RELOAD="true",
        SECRET_RELOAD_INTERVAL_SECONDS="0", **db_env(services, pg), **aws_env(sm, kiln_creds))
    awskit.assert_healthy(srv)
    old_cookie = ak.session_for(srv)
    cookies = [ak.session_for(srv) for _ in range(2)]
    env = function_env(sm, lambda_creds, ecs, hot_reload=True, MASTER_SECRET_ARN=master_arn,
                       DB_SSLMODE="disable")
    traffic = awskit.Traffic(awskit.user_step(srv, cookies, cookies), threads=2)
    with Function(packed["db-user"], runtime, env, tmp_path) as fn, traffic:
        traffic.wait_count(20)
        assert pg.users_connected() == [app_role], pg.activity()

        def stages_after(step):
            # AWSCURRENT moves at finishSecret and not before
            if step != "finishSecret":
                assert_stages(sm, db_arn, current=first)
        token = fn.rotate(sm, db_arn, after=stages_after)
        assert_stages(sm, db_arn, current=token, previous=first)

        new = sm.json_value(db_arn)
        old = sm.json_value(db_arn, version=first)
        assert new["username"] == clone
        assert len(new["password"]) >= 40 and new["password"] != app_pw
        assert {k: v for k, v in new.items() if k not in ("username", "password")} == \
            {k: v for k, v in old.items() if k not in ("username", "password")}
        # the clone: a member of the app user, with its per-database settings
        # (SET role = owner), a SCRAM verifier computed by the function
        assert services.rows(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            f"JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = '{clone}'",
            db="postgres") == [(app_role,)]
        def settings(role):
            return services.rows(
                "SELECT coalesce(d.datname, ''), c.setting FROM pg_db_role_setting s "
                "LEFT JOIN pg_database d ON d.oid = s.setdatabase "
                "CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting) "
                f"WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = '{role}') "
                "ORDER BY 2", db="postgres")
        assert settings(clone) == settings(app_role) == sorted([
            (pg.db, f"role={pg.owner}"), (pg.db, "work_mem=8MB"),
            (pg.db, 'search_path="$user", public, "Odd ""schema"" name"')], key=lambda r: r[1])
        assert services.rows(f"SELECT rolpassword LIKE 'SCRAM-SHA-256$4096:%' FROM pg_authid "
                             f"WHERE rolname = '{clone}'", db="postgres") == [("t",)]
        # alternating users: both logins work now
        assert pg_login(services, pg.db, clone, new["password"])
        assert pg_login(services, pg.db, app_role, app_pw)

        # SECRET_KEY_BASE too, by its own function (its own environment)
        with awsfake.LambdaRuntimeFake() as rt2, \
                Function(packed["secret-key-base"], rt2, dict(env, MASTER_SECRET_ARN=None),
                         tmp_path) as key_fn:
            key_fn.rotate(sm, key_arn)
        assert sm.value(key_arn) != key1

        # Kiln: SIGHUP (HOT_RELOAD), its open connections stay as they are
        rec = awskit.reload_and_wait(srv)
        awskit.assert_names(rec, "DB_USERNAME", "DB_PASSWORD", "SECRET_KEY_BASE")
        traffic.wait_count(20)
        move_connections(traffic, pg, app_role, clone)
        ak.assert_me(ak.me(srv, old_cookie))
        ak.assert_me(ak.me(srv, ak.session_for(srv)))

        # the next rotation goes back to the app user, with a new password;
        # the clone keeps its own
        token2 = fn.rotate(sm, db_arn)
        assert_stages(sm, db_arn, current=token2, previous=token)
        back = sm.json_value(db_arn)
        assert back["username"] == app_role and back["password"] not in (app_pw, new["password"])
        assert not pg_login(services, pg.db, app_role, app_pw)
        assert pg_login(services, pg.db, app_role, back["password"])
        assert pg_login(services, pg.db, clone, new["password"])
        awskit.reload_and_wait(srv)
        move_connections(traffic, pg, clone, app_role)
        traffic.wait_count(20)
    fails = traffic.failures()
    assert fails == [], f"{len(fails)} of {traffic.count()} requests failed: {fails[:10]}"
    ak.assert_me(ak.me(srv, old_cookie))
    assert ecs.updates == [], "HOT_RELOAD=true: no deployment"
    assert sm.failures == [] and ecs.failures == []
    assert {c.access_key for c in sm.operations("PutSecretValue")} == {lambda_creds.access_key}
    steps = [r for r in fn.records() if r.get("message") == "rotation step done"]
    assert [r["step"] for r in steps] == list(STEPS) * 2
    awskit.assert_no_secrets(fn.output() + key_fn.output() + srv.stdout_text() +
                             srv.stderr_text(), *sm.all_values(), app_pw, master_pw, key1,
                             *lambda_creds.secrets(), *kiln_creds.secrets())


def test_a_failed_test_secret_is_reported_and_moves_no_stage(
        services, store, sm, pg, runtime, ecs, lambda_creds, packed, tmp_path):
    """testSecret logs in for real: a pending password the database does not
    take fails the step (reported to the Runtime API, stages unchanged); a
    setSecret retried afterwards repairs it."""
    app_role, app_pw = pg.login_role("app")
    clone = app_role + "_clone"
    db_arn, master_arn, master_pw = db_secrets(sm, services, pg, app_role, app_pw,
                                               managed_master=True)
    first = sm.version_of(db_arn, "AWSCURRENT")
    env = function_env(sm, lambda_creds, ecs, MASTER_SECRET_ARN=master_arn, DB_SSLMODE="disable")
    with Function(packed["db-user"], runtime, env, tmp_path) as fn:
        token = sm.start_rotation(db_arn)
        fn.steps(db_arn, token, ("createSecret", "setSecret"))
        pending = sm.json_value(db_arn, version=token)
        assert pg_login(services, pg.db, clone, pending["password"])
        wrong = "drifted-" + os.urandom(12).hex()
        services.psql(f"ALTER ROLE \"{clone}\" PASSWORD '{wrong}'", db="postgres")

        kind, body, header = fn.step(db_arn, token, "testSecret")
        assert kind == "error", (kind, body)
        assert body["errorType"] == header == "TestFailed", body
        assert clone in body["errorMessage"] and "password authentication failed" in \
            body["errorMessage"], body
        assert_stages(sm, db_arn, current=first, pending=token)
        assert pg_login(services, pg.db, app_role, app_pw), "the current login is untouched"
        assert ecs.updates == []

        # Secrets Manager retries the rotation: setSecret sets the pending
        # password again, and the rest goes through
        fn.steps(db_arn, token, ("setSecret", "testSecret"))
        assert ecs.updates == []
        fn.steps(db_arn, token, ("finishSecret",))
        assert_stages(sm, db_arn, current=token, previous=first)
        assert [(c, s, f) for c, s, f, _ in ecs.updates] == [(CLUSTER, SERVICE, True)]
        failed = [r for r in fn.records() if r.get("message") == "rotation step failed"]
        assert [(r["step"], r["error_type"]) for r in failed] == [("testSecret", "TestFailed")]
    assert sm.failures == [] and ecs.failures == []
    awskit.assert_no_secrets(fn.output(), *sm.all_values(), app_pw, master_pw, wrong,
                             *lambda_creds.secrets())


def test_first_rotation_creates_the_user_and_a_shared_owner(
        services, store, sm, pg, runtime, ecs, lambda_creds, packed, tmp_path):
    """A new cluster: Terraform wrote the app user's secret, but no such role
    exists. The first setSecret creates it (with the secret's password) under
    a NOLOGIN owner role that both alternating users act as, so that what a
    migration creates under one is the other's too."""
    app_role = f"rot_fresh_{pg._suffix}"
    app_pw = "fresh-" + os.urandom(16).hex()
    db_arn, master_arn, master_pw = db_secrets(sm, services, pg, app_role, app_pw)
    master = f"rot_master_{pg._suffix}"
    # as on RDS, the master user may act for the database's owner
    services.psql(f'GRANT "{pg.owner}" TO "{master}"', db="postgres")
    pg.roles[app_role] = app_pw
    pg.roles[app_role + "_owner"] = None
    env = function_env(sm, lambda_creds, ecs, hot_reload=True, MASTER_SECRET_ARN=master_arn,
                       DB_SSLMODE="disable")
    with Function(packed["db-user"], runtime, env, tmp_path) as fn:
        token = sm.start_rotation(db_arn)
        fn.steps(db_arn, token, ("createSecret", "setSecret", "testSecret", "finishSecret"))
    assert_stages(sm, db_arn, current=token)
    clone_pw = sm.json_value(db_arn, version=token)["password"]
    assert pg_login(services, pg.db, app_role, app_pw), "the first user logs in"
    assert pg_login(services, pg.db, app_role + "_clone", clone_pw)

    def as_user(user, password, sql):
        with contextlib.closing(psycopg2.connect(
                host=services.pg_host, port=services.pg_port, dbname=pg.db, user=user,
                password=password, connect_timeout=5)) as c:
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else None

    owner = app_role + "_owner"
    assert as_user(app_role, app_pw, "SELECT current_user") == [(owner,)]
    as_user(app_role, app_pw, "CREATE TABLE fresh_t (x int); INSERT INTO fresh_t VALUES (1)")
    assert as_user(app_role + "_clone", clone_pw, "SELECT x FROM fresh_t") == [(1,)]
    assert any(r.get("message") == "setSecret: first rotation, created the current user"
               for r in fn.records())
    awskit.assert_no_secrets(fn.output(), app_pw, clone_pw, master_pw)


# --------------------------------------------------------------------------
# SECRET_KEY_BASE
# --------------------------------------------------------------------------

def test_secret_key_base_rotation_with_hot_reload_keeps_sessions(
        kiln, store, sm, runtime, ecs, lambda_creds, packed, tmp_path):
    key1 = skb()
    arn = sm.create_secret("kiln/secret-key-base", key1)
    sm.enable_rotation(arn)
    kiln_creds = store.static()
    srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn,
                        ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="0",
                        **aws_env(sm, kiln_creds))
    old_cookie = ak.session_for(srv)
    cookies = [ak.session_for(srv) for _ in range(2)]
    traffic = awskit.Traffic(awskit.user_step(srv, cookies, cookies), threads=2)
    env = function_env(sm, lambda_creds, ecs, hot_reload=True)
    with Function(packed["secret-key-base"], runtime, env, tmp_path) as fn, traffic:
        traffic.wait_count(10)
        token = fn.rotate(sm, arn)
        key2 = sm.value(arn)
        assert sm.version_of(arn, "AWSCURRENT") == token and key2 != key1
        assert len(key2) >= 64 and set(key2) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        awskit.assert_names(awskit.reload_and_wait(srv), "SECRET_KEY_BASE")
        traffic.wait_count(10)
        ak.assert_me(ak.me(srv, old_cookie))
        new_cookie = ak.session_for(srv)
        ak.assert_me(ak.me(srv, new_cookie))
    fails = traffic.failures()
    assert fails == [], f"{len(fails)} of {traffic.count()} requests failed: {fails[:10]}"
    assert ecs.updates == []
    awskit.assert_no_secrets(fn.output() + srv.stdout_text(), key1, key2,
                             *lambda_creds.secrets(), *kiln_creds.secrets())


def test_secret_key_base_json_rotation_deploys_and_new_tasks_keep_sessions(
        kiln, store, sm, runtime, ecs, lambda_creds, packed, tmp_path):
    """HOT_RELOAD off: one ecs:UpdateService, right after finishSecret.  The
    JSON shape keeps the replaced key as SECRET_KEY_BASE_PREVIOUS, so a task
    of the new deployment still takes cookies signed before the rotation."""
    key1 = skb()
    arn = sm.create_secret("kiln/secret-key-base",
                           {"SECRET_KEY_BASE": key1, "SECRET_KEY_BASE_PREVIOUS": ""})
    sm.enable_rotation(arn)
    kiln_creds = store.static()
    task_env = dict(SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn + "#SECRET_KEY_BASE",
                    SECRET_KEY_BASE_PREVIOUS_SECRET_ARN=arn + "#SECRET_KEY_BASE_PREVIOUS",
                    **aws_env(sm, kiln_creds))
    old_task = ak.start_kiln(kiln, **task_env)
    cookie = ak.session_for(old_task)
    with Function(packed["secret-key-base"], runtime, function_env(sm, lambda_creds, ecs),
                  tmp_path) as fn:
        def deployed_only_at_finish(step):
            assert len(ecs.updates) == (1 if step == "finishSecret" else 0), (step, ecs.updates)
        fn.rotate(sm, arn, after=deployed_only_at_finish)
    value = sm.json_value(arn)
    assert value["SECRET_KEY_BASE_PREVIOUS"] == key1
    assert value["SECRET_KEY_BASE"] != key1 and len(value["SECRET_KEY_BASE"]) >= 64
    assert [(c, s, f) for c, s, f, _ in ecs.updates] == [(CLUSTER, SERVICE, True)]
    assert all(c.access_key == lambda_creds.access_key for c in ecs.calls)
    assert any(r.get("message") == "ECS deployment forced" and r.get("deployment")
               for r in fn.records())

    new_task = ak.start_kiln(kiln, **task_env)        # what the deployment starts
    ak.assert_me(ak.me(new_task, cookie))
    ak.assert_me(ak.me(old_task, cookie))
    ak.assert_me(ak.me(new_task, ak.session_for(new_task)))
    assert sm.failures == [] and ecs.failures == []
    awskit.assert_no_secrets(fn.output() + old_task.stdout_text() + new_task.stdout_text(),
                             key1, value["SECRET_KEY_BASE"], *sm.all_values(),
                             *lambda_creds.secrets())


def test_a_failed_deployment_is_retried_by_the_next_finish_secret(
        store, sm, runtime, ecs, lambda_creds, packed, tmp_path):
    arn = sm.create_secret("kiln/secret-key-base", skb())
    sm.enable_rotation(arn)
    ecs.fail_next = 1
    with Function(packed["secret-key-base"], runtime, function_env(sm, lambda_creds, ecs),
                  tmp_path) as fn:
        token = sm.start_rotation(arn)
        fn.steps(arn, token, STEPS[:3])
        kind, body, _ = fn.step(arn, token, "finishSecret")
        assert kind == "error" and body["errorType"] == "DeploymentFailed", body
        assert "ServerException" in body["errorMessage"], body
        assert sm.version_of(arn, "AWSCURRENT") == token, "the stage moved before the deployment"
        assert ecs.updates == []
        fn.steps(arn, token, ("finishSecret",))      # Secrets Manager's retry
        assert len(ecs.updates) == 1
        # any other step of a finished rotation does nothing
        fn.steps(arn, token, ("createSecret", "testSecret"))
        assert len(ecs.updates) == 1
    assert sm.failures == [] and ecs.failures == []


def test_create_secret_is_idempotent(store, sm, runtime, ecs, lambda_creds, packed, tmp_path):
    key1 = skb()
    arn = sm.create_secret("kiln/secret-key-base", key1)
    sm.enable_rotation(arn)
    with Function(packed["secret-key-base"], runtime,
                  function_env(sm, lambda_creds, ecs, hot_reload=True), tmp_path) as fn:
        token = sm.start_rotation(arn)
        fn.steps(arn, token, ("createSecret",))
        pending = sm.value(arn, version=token)
        fn.steps(arn, token, ("createSecret", "createSecret"))
        assert sm.value(arn, version=token) == pending
        assert len(sm.operations("PutSecretValue", ok=True)) == 1
        assert sm.value(arn) == key1
        assert sm.version_of(arn, "AWSPENDING") == token
        fn.steps(arn, token, ("setSecret", "testSecret", "finishSecret"))
        assert sm.value(arn) == pending
        # a new rotation: a new token, a new value
        token2 = fn.rotate(sm, arn)
        assert token2 != token and sm.value(arn) not in (key1, pending)
    assert sm.failures == []
    awskit.assert_no_secrets(fn.output(), *sm.all_values(), *lambda_creds.secrets())


def test_events_the_contract_refuses(store, sm, runtime, ecs, lambda_creds, packed, tmp_path):
    arn = sm.create_secret("kiln/secret-key-base", skb())
    with Function(packed["secret-key-base"], runtime,
                  function_env(sm, lambda_creds, ecs, hot_reload=True), tmp_path) as fn:
        token = sm.start_rotation(arn)

        def refused(event, error_type, words):
            kind, body, header = runtime.invoke(event)
            assert kind == "error", (event, kind, body)
            assert body["errorType"] == header == error_type, body
            assert words in body["errorMessage"], body

        step = {"SecretId": arn, "ClientRequestToken": token, "Step": "createSecret"}
        refused(step, "InvalidState", "not enabled for rotation")
        sm.enable_rotation(arn)
        refused(dict(step, ClientRequestToken="f" * 36), "InvalidState", "has no stage")
        refused(dict(step, Step="rotateEverything"), "InvalidEvent", "unknown Step")
        refused({"SecretId": arn, "Step": "createSecret"}, "InvalidEvent", "ClientRequestToken")
        refused(dict(step, SecretId=arn + "-gone"), "SecretsManagerError",
                "ResourceNotFoundException")
        # a version that lost AWSPENDING (another rotation started since)
        token2 = sm.start_rotation(arn)
        refused(step, "InvalidState", "has no stage")
        fn.steps(arn, token2)            # still serving
        assert fn.proc.poll() is None
    assert sm.failures == []


@pytest.mark.parametrize("kind, env, words", [
    ("secret-key-base", {"ROTATION_KIND": "everything"}, "ROTATION_KIND must be"),
    ("db-user", {}, "MASTER_SECRET_ARN"),
    ("valkey-user", {"HOT_RELOAD": None}, "ECS_CLUSTER and ECS_SERVICE"),
])
def test_configuration_problems_go_to_init_error(store, sm, runtime, lambda_creds, packed,
                                                 tmp_path, kind, env, words):
    base = function_env(sm, lambda_creds, hot_reload=True, VALKEY_HOST="localhost")
    base.update(env)
    base = {k: v for k, v in base.items() if v is not None}
    fn = Function(packed[kind], runtime, base, tmp_path).start(wait=False)
    try:
        assert fn.proc.wait(15) == 1
    finally:
        fn.stop()
    [(body, header)] = runtime.init_errors
    assert body["errorType"] == header == "Runtime.ConfigurationError", body
    assert words in body["errorMessage"], body
    assert runtime.polls == 0
    assert any(r.get("message") == "configuration problem" and words in r.get("problem", "")
               for r in fn.records()), fn.output()


# --------------------------------------------------------------------------
# Valkey user (ElastiCache ModifyUser, applied to the real Redis)
# --------------------------------------------------------------------------

@pytest.fixture
def valkey_user(services):
    """An ACL user of this test on the TLS Redis: (name, password)."""
    name, pw = f"kiln_rot_{os.urandom(4).hex()}", "vk0-" + os.urandom(16).hex()
    ak.redis_cli(services, "ACL", "SETUSER", name, "on", ">" + pw, "~*", "&*", "+@all",
                 mode="pgbouncer")
    yield name, pw
    ak.redis_cli(services, "ACL", "DELUSER", name, mode="pgbouncer")


@pytest.fixture
def elasticache(services, store):
    def apply(name, passwords):
        ak.redis_cli(services, "ACL", "SETUSER", name, "resetpass",
                     *[">" + p for p in passwords], mode="pgbouncer")
    with awsfake.ElastiCacheFake(store, on_modify=apply) as fake:
        yield fake


def valkey_function_env(services, sm, creds, ecs, elasticache, **extra):
    return function_env(sm, creds, ecs, AWS_ENDPOINT_URL_ELASTICACHE=elasticache.base_url,
                        VALKEY_HOST="localhost", VALKEY_PORT=services.redis_tls_port,
                        VALKEY_SSL="true", VALKEY_CA_FILE=services.redis_ca,
                        ELASTICACHE_USER_ID="kiln-app-user", **extra)


def test_valkey_rotation_keeps_the_previous_password_for_a_whole_period(
        kiln, services, store, sm, runtime, ecs, elasticache, valkey_user, lambda_creds, packed,
        tmp_path):
    user, pw0 = valkey_user
    elasticache.users["kiln-app-user"] = user
    elasticache.busy_next = 1          # a modification still being applied: retried
    arn = sm.create_secret("kiln/valkey", {"username": user, "password": pw0})
    sm.enable_rotation(arn)
    kiln_creds = store.static()
    task_env = dict(SECRET_KEY_BASE=skb(), VALKEY_USER_SECRET_ARN=arn + "#username",
                    VALKEY_PASSWORD_SECRET_ARN=arn + "#password",
                    **services.valkey_tls_env(VALKEY_USER=None, VALKEY_PASSWORD=None),
                    **aws_env(sm, kiln_creds))
    old_task = ak.start_kiln(kiln, **task_env)
    awskit.assert_healthy(old_task)
    cookies = [ak.session_for(old_task) for _ in range(2)]
    traffic = awskit.Traffic(awskit.user_step(old_task, cookies, cookies), threads=2)
    env = valkey_function_env(services, sm, lambda_creds, ecs, elasticache)
    with Function(packed["valkey-user"], runtime, env, tmp_path) as fn:
        with traffic:
            traffic.wait_count(20)

            def check(step):
                if step == "setSecret":
                    assert len(elasticache.modifications) == 1
                assert len(ecs.updates) == (1 if step == "finishSecret" else 0)
            token = fn.rotate(sm, arn, after=check)
            pw1 = sm.json_value(arn)["password"]
            assert sm.json_value(arn)["username"] == user and pw1 != pw0
            assert_stages(sm, arn, current=token)
            # both passwords work: the old task, which has not reloaded, opens
            # new connections with pw0 and they still authenticate
            assert redis_auth_ok(services, user, pw0) and redis_auth_ok(services, user, pw1)
            traffic.pause()
            ak.redis_cli(services, "CLIENT", "KILL", "USER", user, mode="pgbouncer")
            time.sleep(0.5)
            traffic.resume()
            traffic.wait_count(30)
        fails = traffic.failures()
        assert fails == [], f"{len(fails)} of {traffic.count()} requests failed: {fails[:10]}"
        assert [(u, n) for u, n, _ in elasticache.modifications] == [("kiln-app-user", 2)]

        # the new deployment's task reads pw1
        new_task = ak.start_kiln(kiln, **task_env)
        awskit.assert_healthy(new_task)
        ak.assert_me(ak.me(new_task, cookies[0]))

        # the next rotation retires pw0 and keeps pw1 (the new task's)
        fn.rotate(sm, arn)
        pw2 = sm.json_value(arn)["password"]
        assert not redis_auth_ok(services, user, pw0)
        assert redis_auth_ok(services, user, pw1) and redis_auth_ok(services, user, pw2)
        ak.redis_cli(services, "CLIENT", "KILL", "USER", user, mode="pgbouncer")
        awskit.wait_healthy(new_task)
        ak.assert_me(ak.me(new_task, cookies[1]))
    assert len(ecs.updates) == 2
    assert sm.failures == [] and ecs.failures == [] and elasticache.failures == []
    awskit.assert_no_secrets(fn.output() + old_task.stdout_text() + new_task.stdout_text(),
                             pw0, pw1, pw2, *sm.all_values(), *elasticache.passwords_seen,
                             *lambda_creds.secrets(), *kiln_creds.secrets())


def test_valkey_test_secret_fails_when_the_pending_password_is_refused(
        services, store, sm, runtime, ecs, elasticache, valkey_user, lambda_creds, packed,
        tmp_path):
    user, pw0 = valkey_user
    elasticache.users["kiln-app-user"] = user
    arn = sm.create_secret("kiln/valkey", {"username": user, "password": pw0})
    sm.enable_rotation(arn)
    first = sm.version_of(arn, "AWSCURRENT")
    env = valkey_function_env(services, sm, lambda_creds, ecs, elasticache,
                              VALKEY_TEST_TIMEOUT_SECONDS=2)
    with Function(packed["valkey-user"], runtime, env, tmp_path) as fn:
        token = sm.start_rotation(arn)
        fn.steps(arn, token, ("createSecret", "setSecret"))
        # the user loses the pending password (someone else's ModifyUser)
        ak.redis_cli(services, "ACL", "SETUSER", user, "resetpass", ">" + pw0, mode="pgbouncer")
        t0 = time.monotonic()
        kind, body, _ = fn.step(arn, token, "testSecret")
        assert kind == "error" and body["errorType"] == "TestFailed", body
        assert "WRONGPASS" in body["errorMessage"] or "auth" in body["errorMessage"].lower(), body
        assert time.monotonic() - t0 < 15, "retried for VALKEY_TEST_TIMEOUT_SECONDS only"
        assert_stages(sm, arn, current=first, pending=token)
        assert redis_auth_ok(services, user, pw0)
        assert ecs.updates == []
    assert elasticache.failures == []
    awskit.assert_no_secrets(fn.output(), pw0, *sm.all_values(), *elasticache.passwords_seen)


# --------------------------------------------------------------------------
# HTTPS trust on Amazon Linux 2023
# --------------------------------------------------------------------------

def test_https_calls_trust_ssl_cert_file(services, store, lambda_creds, runtime, packed,
                                         tmp_path):
    """The packed libcurl (Debian's) looks for /etc/ssl/certs/ca-certificates.crt,
    which Amazon Linux 2023 lacks; the bootstrap exports the system bundle as
    SSL_CERT_FILE and kiln-rotate gives it to every HTTPS request.  Here:
    Secrets Manager over HTTPS with a certificate of the services' own CA,
    refused with the system bundle, accepted once SSL_CERT_FILE names that
    CA."""
    tls = awsfake.services_tls(services.dir)
    fake = awsfake.SecretsManagerFake(store)
    fake.tls = tls.server_context()
    with fake:
        arn = fake.create_secret("kiln/secret-key-base", skb())
        fake.enable_rotation(arn)
        token = fake.start_rotation(arn)
        env = function_env(fake, lambda_creds, hot_reload=True)
        assert env["AWS_ENDPOINT_URL_SECRETS_MANAGER"].startswith("https://localhost:")
        with Function(packed["secret-key-base"], runtime, env, tmp_path) as fn:
            kind, body, _ = fn.step(arn, token, "createSecret")
            assert kind == "error" and body["errorType"] == "SecretsManagerError", body
            assert "certificate" in body["errorMessage"].lower(), body
        assert fake.calls == []
        with Function(packed["secret-key-base"], runtime,
                      dict(env, SSL_CERT_FILE=tls.ca), tmp_path) as fn:
            fn.steps(arn, token)
        assert fake.version_of(arn, "AWSCURRENT") == token
        assert fake.failures == []


# --------------------------------------------------------------------------
# arm64 (qemu-user)
# --------------------------------------------------------------------------

def test_arm64_zip_rotates_under_qemu(store, sm, runtime, ecs, lambda_creds, tmp_path):
    """The Graviton zip (LAMBDA_ARCH=arm64 make lambdas), run by qemu-aarch64
    through its packed loader (no binfmt_misc needed), does a whole
    SECRET_KEY_BASE rotation."""
    z = LAMBDAS / "arm64" / "rotate-secret-key-base.zip"
    qemu = shutil.which("qemu-aarch64")
    if NATIVE == "arm64" or not z.is_file() or not qemu:
        pytest.skip("needs build/lambdas/arm64/rotate-secret-key-base.zip and qemu-aarch64 "
                    "on a non-arm64 machine")
    root = tmp_path / "task-arm64"
    unzip(z, root)
    boot = (root / "bootstrap").read_text()
    assert "lib/ld-linux-aarch64.so.1" in boot and "ROTATION_KIND:-secret-key-base" in boot
    cmd = [qemu, str(root / "lib/ld-linux-aarch64.so.1"), "--library-path", str(root / "lib"),
           str(root / "kiln-rotate")]
    arn = sm.create_secret("kiln/secret-key-base", skb())
    sm.enable_rotation(arn)
    env = function_env(sm, lambda_creds, ecs, ROTATION_KIND="secret-key-base")
    with Function(root, runtime, env, tmp_path, cmd=cmd) as fn:
        token = fn.rotate(sm, arn)
    assert sm.version_of(arn, "AWSCURRENT") == token
    assert len(ecs.updates) == 1
    assert sm.failures == [] and ecs.failures == []
    awskit.assert_no_secrets(fn.output(), *sm.all_values(), *lambda_creds.secrets())
