"""The original's ECS task definition starts Kiln (issue 14, point 3).

Its container environment is used as it is: DB_IAM_AUTH=true with
DB_HOST/DB_PORT/DB_NAME/DB_USERNAME and no DB_SSLMODE, VALKEY_IAM_AUTH=true
with VALKEY_USER and VALKEY_CLUSTER_ID and no VALKEY_SSL,
REQUIRE_IAM_AUTH=true, the UPLOADS_* variables, MIX_ENV=prod instead of
KILN_ENV, PORT=443, SECRET_KEY_BASE; plus what ECS adds to every container
(AWS_REGION, AWS_DEFAULT_REGION, AWS_EXECUTION_ENV,
ECS_CONTAINER_METADATA_URI_V4 and the credentials URI). Only what must
point at the local stand-ins differs:

* PORT: a free port instead of 443 (the image smoke test, scripts/image.sh,
  serves 443 as uid 10001);
* the credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI of
  awsfake.EcsCredentialsFake instead of the RELATIVE_URI of
  169.254.170.2;
* DB_HOST/DB_PORT: awsfake.PgIamProxy (TLS, every token checked with
  botocore) in front of the test services' PostgreSQL;
* VALKEY_HOST/VALKEY_PORT: awsfake.ValkeyIamProxy, which speaks TLS only,
  in front of their Redis; SSL_CERT_FILE names the services' CA as
  OpenSSL's default trust store, standing for the system store that
  trusts ElastiCache's certificate (no VALKEY_CA_FILE: the original sets
  none).

Kiln must start, become ready and answer as production; it must talk TLS
to Valkey although nothing said VALKEY_SSL, and sign S3 requests for
UPLOADS_REGION. `kiln migrate` (the same task definition's one-off
command) must work with the same environment.

Needs the test services: KILN_STORES=postgres.
"""

import os

import pytest

import authkit as ak
import awsfake
import awskit
import kilnhttp
from awskit import needs_postgres, store, pg  # noqa: F401

CLUSTER = "kiln-original-cache"
VALKEY_USER = "kiln-original-app"
UPLOADS_REGION = "eu-west-1"       # not awsfake.REGION: the bucket's own region


@pytest.fixture
def ecs_creds(store):
    # ECS's RELATIVE_URI needs no Authorization header; neither does this.
    with awsfake.EcsCredentialsFake(store) as fake:
        yield fake


@pytest.fixture
def pg_proxy(services, store, pg):
    role, password = pg.login_role("orig")
    tls = awsfake.services_tls(services.dir)
    with awsfake.PgIamProxy(store, services.pg_host, services.pg_port, {role: password},
                            tls, token_host=services.pg_host) as p:
        p.role = role
        p.role_password = password
        yield p


@pytest.fixture
def valkey_proxy(services, store):
    tls = awsfake.services_tls(services.dir)
    with awsfake.ValkeyIamProxy(store, services.redis_host, services.redis_port, tls, CLUSTER,
                                users={VALKEY_USER}) as p:
        yield p


def original_env(port, services, pg, pg_proxy, valkey_proxy, ecs_creds, secret_key_base):
    """The original's container environment, with the endpoints of the
    stand-ins (see the module's text); every other name exactly as there."""
    return {
        # the task definition's environment
        "MIX_ENV": "prod",
        "PORT": str(port),                      # 443 there
        "SECRET_KEY_BASE": secret_key_base,     # from Secrets Manager there
        "DB_HOST": services.pg_host,
        "DB_PORT": str(pg_proxy.port),
        "DB_NAME": pg.db,
        "DB_USERNAME": pg_proxy.role,
        "DB_IAM_AUTH": "true",
        "REQUIRE_IAM_AUTH": "true",
        "VALKEY_HOST": "localhost",             # the name in the stand-in's certificate
        "VALKEY_PORT": str(valkey_proxy.port),
        "VALKEY_IAM_AUTH": "true",
        "VALKEY_CLUSTER_ID": CLUSTER,
        "VALKEY_USER": VALKEY_USER,
        "UPLOADS_BUCKET": "kiln-original-uploads",
        "UPLOADS_REGION": UPLOADS_REGION,
        "UPLOADS_MAX_SIZE_MB": "25",
        "UPLOADS_PRESIGNED_URL_EXPIRY": "900",
        # what ECS adds to every container
        "AWS_REGION": awsfake.REGION,
        "AWS_DEFAULT_REGION": awsfake.REGION,
        "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
        "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/kiln-task",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs_creds.url,   # RELATIVE_URI there
        # the stand-in's CA as OpenSSL's default trust store
        "SSL_CERT_FILE": services.redis_ca,
    }


# Names the harness adds that are not the original's: removed.
NOT_ORIGINAL = {"KILN_ENV": None, "LOG_LEVEL": None, "DATABASE_URL": None, "DB_PATH": None,
                "VALKEY_SSL": None, "VALKEY_CA_FILE": None, "VALKEY_PASSWORD": None}


@needs_postgres
def test_the_original_task_definition_starts_kiln(kiln, services, store, pg, pg_proxy,
                                                  valkey_proxy, ecs_creds):
    port = kilnhttp.free_port()
    env = original_env(port, services, pg, pg_proxy, valkey_proxy, ecs_creds,
                       ak.secret_key_base())
    want = dict(env)
    env.update(NOT_ORIGINAL)

    # kiln migrate: the same task definition, command "migrate"
    r = kilnhttp.run_kiln(["migrate"], env=kilnhttp.clean_env(overrides=env), timeout=60)
    assert r.returncode == 0, awskit.output_of(r)[-3000:]

    srv = kiln(wait=False, **env)
    srv.port = port
    extra = sorted(set(srv.env) - set(want) - {"PATH"} -
                   set(n for n in kilnhttp.PASSTHROUGH_ENV))
    assert not extra and all(srv.env[k] == v for k, v in want.items()), (extra, srv.env)
    srv.wait_ready(30)

    # ready, both stores reached through their IAM stand-ins
    assert ak.call(srv, "GET", "/readyz", timeout=15).status == 200
    status, body = awskit.health(srv)
    assert status == 200, (status, body, srv.stdout_text()[-3000:])
    assert body["checks"] == kilnhttp.expected_checks("postgres"), body

    # production, as MIX_ENV=prod says: all interfaces, no development login
    records = srv.log_lines()[0]
    listening = [x for x in records if x.get("message") == "listening"]
    assert listening and listening[0]["env"] == "production", listening
    assert listening[0]["address"] == "0.0.0.0", listening
    r = ak.call(srv, "POST", "/auth/dev/login",
                json_body={"email": ak.unique_email(), "name": "x"})
    kilnhttp.assert_error(r, 404, None)
    r = ak.call(srv, "GET", "/api/v1/me")
    kilnhttp.assert_error(r, 401, None)
    root = ak.call(srv, "GET", "/")
    assert root.status == 200 and root.json()["status"] == "ok", root

    # uploads signed for UPLOADS_REGION, not the task's AWS_REGION
    up = [x for x in records if x.get("message") == "uploads: S3 bucket configured"]
    assert up and up[0]["region"] == UPLOADS_REGION and \
        up[0]["max_size_bytes"] == str(25 * 1024 * 1024), up

    # TLS to Valkey although VALKEY_SSL is unset: the stand-in speaks
    # nothing else, and saw only TLS connections with valid IAM tokens
    assert valkey_proxy.connections and all(c.get("tls") for c in valkey_proxy.connections)
    assert valkey_proxy.auths and valkey_proxy.failures == [], valkey_proxy.summary()
    assert {a["user"] for a in valkey_proxy.auths} == {VALKEY_USER}
    # TLS and IAM tokens to PostgreSQL although DB_SSLMODE is unset
    assert pg_proxy.failures == [] and pg_proxy.verified, pg_proxy.connections
    logins = pg_proxy.logged_in()
    assert logins and all(c["tls"] and c.get("token_ok") for c in logins)
    # the task role's credentials from the container endpoint
    keys = {a["access_key"] for a in valkey_proxy.auths} | \
        {t["access_key"] for t in pg_proxy.verified}
    assert keys <= {c.access_key for c in ecs_creds.issued}, keys
    assert not valkey_proxy.bugs and not pg_proxy.bugs, \
        [b["error"] for b in valkey_proxy.bugs + pg_proxy.bugs]

    awskit.assert_no_secrets(srv, pg_proxy.role_password, *ecs_creds.secrets(),
                             *[t["token"] for t in pg_proxy.tokens],
                             *[a["token"] for a in valkey_proxy.auths], env["SECRET_KEY_BASE"])


@awskit.service_free
@pytest.mark.parametrize("change,names", [
    # IAM implies TLS; saying VALKEY_SSL=false contradicts it
    ({"VALKEY_SSL": "false"}, ("VALKEY_IAM_AUTH", "VALKEY_SSL")),
    # an unknown Mix environment is not guessed
    ({"MIX_ENV": "staging"}, ("MIX_ENV",)),
    # production by MIX_ENV: the secret is required
    ({"SECRET_KEY_BASE": None}, ("SECRET_KEY_BASE",)),
    ({"UPLOADS_REGION": "Europe"}, ("UPLOADS_REGION",)),
])
def test_the_original_environment_with_a_mistake_exits_2(store, change, names):
    env = {"MIX_ENV": "prod", "SECRET_KEY_BASE": ak.secret_key_base(), "KILN_ENV": None,
           "DATABASE_URL": None, "DB_PATH": None, "DB_HOST": "127.0.0.1", "DB_PORT": "5432",
           "DB_NAME": "kiln", "DB_USERNAME": "kiln_app", "DB_IAM_AUTH": "true",
           "REQUIRE_IAM_AUTH": "true", "VALKEY_HOST": "localhost", "VALKEY_PORT": "6379",
           "VALKEY_IAM_AUTH": "true", "VALKEY_CLUSTER_ID": CLUSTER, "VALKEY_USER": VALKEY_USER,
           "VALKEY_PASSWORD": None, "VALKEY_SSL": None, "UPLOADS_BUCKET": "kiln-original-uploads",
           "UPLOADS_REGION": UPLOADS_REGION, "UPLOADS_MAX_SIZE_MB": "25",
           "UPLOADS_PRESIGNED_URL_EXPIRY": "900", "AWS_REGION": awsfake.REGION,
           "AWS_EC2_METADATA_DISABLED": "true"}
    env.update(store.static().env())
    env.update(change)
    r = awskit.run_serve(env)
    assert r.returncode == 2, (r.returncode, awskit.output_of(r)[-2000:])
    lines = awskit.config_lines(r)
    assert len(lines) == 1, lines
    for name in names:
        assert name in lines[0], (name, lines)
