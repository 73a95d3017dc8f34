"""DB_IAM_AUTH=true: every new PostgreSQL connection logs in with an RDS IAM
token as its password, over TLS.  Kiln talks to awsfake.PgIamProxy, which
wants TLS, verifies each token by regenerating it with botocore's
generate_db_auth_token (same credentials, clock frozen at the token's
X-Amz-Date) and then logs in to the real PostgreSQL of the test services
as that role with the role's real SCRAM password, which kiln never sees.
REQUIRE_IAM_AUTH=true forbids password authentication.

The proxy needs the test services: KILN_STORES=postgres; the
configuration errors need none and also run in embedded mode.
"""

import os
import time

import pytest

import authkit as ak
import awsfake
import awskit
from awskit import (aws_env, db_env, ecs_env, needs_postgres, service_free,  # noqa: F401
                    store, ecs, ecs_token, pg)


@pytest.fixture
def proxy(services, store, pg):
    role, password = pg.login_role("iam")
    tls = awsfake.services_tls(services.dir)
    with awsfake.PgIamProxy(store, services.pg_host, services.pg_port, {role: password},
                            tls, token_host=services.pg_host) as p:
        p.role = role
        p.role_password = password
        yield p


def notes_round(srv, bearer, n=5):
    ids = []
    for i in range(n):
        r = ak.call(srv, "POST", "/api/v1/notes", bearer=bearer,
                    json_body={"title": f"iam note {i}", "content": "through an IAM token"})
        assert r.status == 201, (r, srv.stdout_text()[-2000:])
        ids.append(r.json()["data"]["id"])
    r = ak.call(srv, "GET", "/api/v1/notes?limit=100", bearer=bearer)
    assert r.status == 200, r
    listed = [n["id"] for n in r.json()["data"]]
    assert set(ids) <= set(listed), (ids, r.json())
    return ids


@needs_postgres
@pytest.mark.parametrize("creds_from", ["container", "static"])
def test_db_iam_auth_through_the_rds_proxy(kiln, services, store, ecs, ecs_token, pg, proxy,
                                           creds_from):
    if creds_from == "container":
        cenv = ecs_env(ecs, token=ecs_token)
        secrets = ecs.secrets()
    else:
        creds = store.static()
        cenv = creds.env()
        secrets = creds.secrets()
    env = dict(db_env(services, pg, port=proxy.port, user=proxy.role), DB_IAM_AUTH="true",
               **aws_env(), **cenv)
    if creds_from == "static":
        env["REQUIRE_IAM_AUTH"] = "true"     # and it starts: no DB_PASSWORD anywhere
    srv = ak.start_kiln(kiln, **env)
    awskit.assert_healthy(srv)
    bearer = ak.session_for(srv)
    notes_round(srv, bearer)
    ak.assert_me(ak.me(srv, bearer=bearer))

    assert proxy.failures == [], [f["error"] for f in proxy.failures]
    assert proxy.verified, "no connection authenticated with a token"
    keys = {t["access_key"] for t in proxy.verified}
    if creds_from == "container":
        assert keys <= {c.access_key for c in ecs.issued}
        assert all("X-Amz-Security-Token=" in t["token"] for t in proxy.verified)
    else:
        assert keys == {creds.access_key}
    logins = proxy.logged_in()
    assert logins and all(c["tls"] and c.get("token_ok") for c in logins), proxy.connections
    assert all(c.get("tls") for c in proxy.connections if not c.get("cancel")), proxy.connections
    assert all(c["user"] == proxy.role and c["database"] == pg.db for c in logins)
    assert pg.users_connected() == [proxy.role]

    # every new connection gets a token: drop them all between requests,
    # and the next requests reconnect with new verified tokens
    before = len(proxy.verified)
    time.sleep(1.1)               # a new X-Amz-Date, so a new token
    proxy.close_all()
    time.sleep(0.5)
    for _ in range(3):
        notes_round(srv, bearer, n=2)
    assert len(proxy.verified) > before
    assert proxy.failures == [] and not proxy.bugs, [b["error"] for b in proxy.bugs]

    awskit.assert_no_secrets(srv, proxy.role_password, *secrets,
                             *[t["token"] for t in proxy.tokens])


@needs_postgres
def test_db_iam_with_the_wrong_region_degrades_without_leaking(kiln, services, store, pg, proxy):
    """Tokens signed for another region are refused by the database: kiln
    runs, /healthz says the database is down, nothing leaks."""
    creds = store.static()
    srv = ak.start_kiln(kiln, DB_IAM_AUTH="true", MIGRATE_ON_START="false",
                        **db_env(services, pg, port=proxy.port, user=proxy.role),
                        **aws_env(None, creds, region="eu-west-1"))
    status, body = awskit.health(srv)
    assert status == 503 and body["checks"]["database"]["status"] != "ok", body
    assert proxy.failures and proxy.verified == []
    assert all("region" in f["error"] for f in proxy.failures), proxy.failures
    awskit.assert_no_secrets(srv, *creds.secrets(), *[t["token"] for t in proxy.tokens])


@service_free
@pytest.mark.parametrize("case,names", [
    ("require-with-password", ("REQUIRE_IAM_AUTH", "DB_PASSWORD")),
    ("require-without-iam", ("REQUIRE_IAM_AUTH", "DB_IAM_AUTH")),
    ("iam-with-sslmode-disable", ("DB_IAM_AUTH", "DB_SSLMODE")),
    ("iam-with-sslmode-prefer", ("DB_IAM_AUTH", "DB_SSLMODE")),
    ("iam-without-region", ("DB_IAM_AUTH", "AWS_REGION")),
])
def test_iam_configuration_errors(store, case, names):
    creds = store.static()
    password = "db-pw-" + os.urandom(12).hex()
    env = dict(DATABASE_URL=None, DB_PATH=None, DB_HOST="127.0.0.1", DB_PORT="5432",
               DB_NAME="kiln", DB_USERNAME="kiln_iam", DB_IAM_AUTH="true", **aws_env(None, creds))
    if case == "require-with-password":
        env.update(REQUIRE_IAM_AUTH="true", DB_PASSWORD=password)
    elif case == "require-without-iam":
        env.update(REQUIRE_IAM_AUTH="true", DB_IAM_AUTH=None)
    elif case == "iam-with-sslmode-disable":
        env.update(DB_SSLMODE="disable")
    elif case == "iam-with-sslmode-prefer":
        env.update(DB_SSLMODE="prefer")
    elif case == "iam-without-region":
        env.update(AWS_REGION=None)
    r = awskit.run_serve(env)
    assert r.returncode == 2, (r.returncode, awskit.output_of(r)[-2000:])
    lines = awskit.config_lines(r)
    assert lines, awskit.output_of(r)
    for name in names:
        assert any(name in l for l in lines), (name, lines)
    awskit.assert_no_secrets(awskit.output_of(r), password, *creds.secrets())
