"""VALKEY_IAM_AUTH=true: kiln authenticates to ElastiCache with
AUTH <VALKEY_USER> <IAM token for VALKEY_CLUSTER_ID>, over TLS, and sends
AUTH again with a fresh token on open connections every
VALKEY_REAUTH_INTERVAL_SECONDS.  Kiln talks to awsfake.ValkeyIamProxy (TLS
with the test services' certificate, which kiln verifies against
VALKEY_CA_FILE for the name "localhost"), which verifies every token by
regenerating it with botocore and forwards to the plain Redis of the test
services.  Like ElastiCache, the proxy drops a connection whose last AUTH
is too old (there 12 h, here a few seconds).

Needs the test services: KILN_STORES=postgres; the configuration errors
need none and also run in embedded mode.
"""

import collections
import time

import pytest

import authkit as ak
import awsfake
import awskit
import kilnhttp
from awskit import aws_env, ecs_env, needs_postgres, service_free, store, ecs, ecs_token  # noqa: F401

CLUSTER = "kiln-test-cache"
USER = "kiln-iam-user"
REAUTH_S = 2


def valkey_env(services, proxy, **extra):
    env = {"VALKEY_HOST": "localhost", "VALKEY_PORT": str(proxy.port), "VALKEY_SSL": "true",
           "VALKEY_CA_FILE": services.redis_ca, "VALKEY_IAM_AUTH": "true", "VALKEY_USER": USER,
           "VALKEY_CLUSTER_ID": CLUSTER, "VALKEY_PASSWORD": None}
    env.update(extra)
    return env


@needs_postgres
def test_valkey_iam_auth_and_reauth(kiln, services, store, ecs, ecs_token):
    tls = awsfake.services_tls(services.dir)
    # ElastiCache drops IAM connections 12 h after their last AUTH; here 3
    # intervals, so a connection that is not re-authenticated breaks.
    with awsfake.ValkeyIamProxy(store, services.redis_host, services.redis_port, tls, CLUSTER,
                                users={USER}, max_auth_age=3 * REAUTH_S) as proxy:
        srv = ak.start_kiln(kiln, VALKEY_REAUTH_INTERVAL_SECONDS=str(REAUTH_S),
                            **valkey_env(services, proxy), **aws_env(),
                            **ecs_env(ecs, token=ecs_token))
        awskit.assert_healthy(srv)
        cookies = [ak.session_for(srv) for _ in range(2)]

        def step(n, i):
            if i % 4 == 3:
                return "login", ak.call(srv, "POST", "/auth/dev/login", timeout=15,
                                        json_body={"email": ak.unique_email("iam"),
                                                   "name": "x"}).status
            return "me", ak.me(srv, cookies[n], timeout=15).status

        with awskit.Traffic(step, threads=2) as traffic:
            deadline = time.monotonic() + 20
            while True:
                per_conn = collections.Counter(a["conn"] for a in proxy.auths if a["ok"])
                if per_conn and max(per_conn.values()) >= 3:
                    break
                assert time.monotonic() < deadline, \
                    f"no connection re-authenticated twice within 20 s:\n{proxy.summary()}"
                time.sleep(0.1)
            traffic.wait_count(20)
        fails = traffic.failures()
        assert fails == [], f"{len(fails)} of {traffic.count()} requests failed: {fails[:10]}"

        assert proxy.failures == [], [a["error"] for a in proxy.failures]
        firsts = [a for a in proxy.auths if a["first"]]
        assert firsts and all(a["user"] == USER for a in proxy.auths)
        assert {a["access_key"] for a in proxy.auths} <= {c.access_key for c in ecs.issued}
        # a re-AUTH comes on a connection already authenticated, about
        # VALKEY_REAUTH_INTERVAL_SECONDS after the previous one
        by_conn = collections.defaultdict(list)
        for a in proxy.auths:
            by_conn[a["conn"]].append(a["time"])
        gaps = [b - a for times in by_conn.values() for a, b in zip(times, times[1:])]
        assert gaps and min(gaps) >= REAUTH_S * 0.5, proxy.summary()
        assert not any(c.get("expired") for c in proxy.connections), \
            "a connection went 3 intervals without AUTH"
        assert all(c.get("tls") for c in proxy.connections)
        assert not proxy.bugs, [b["error"] for b in proxy.bugs]
        ak.assert_me(ak.me(srv, cookies[0]))
        awskit.assert_no_secrets(srv, *ecs.secrets(), *[a["token"] for a in proxy.auths])


@needs_postgres
def test_valkey_iam_token_for_another_cluster_answers_503(kiln, services, store):
    """The cache refuses kiln's tokens (they name another cluster): kiln's
    protected routes answer 503 service_unavailable, not 401: the session
    may be fine, the store is not reachable."""
    creds = store.static()
    key = ak.secret_key_base()
    # a session made by an instance on the same Redis, directly
    good = ak.start_kiln(kiln, SECRET_KEY_BASE=key)
    cookie = ak.session_for(good)
    ak.assert_me(ak.me(good, cookie))
    tls = awsfake.services_tls(services.dir)
    with awsfake.ValkeyIamProxy(store, services.redis_host, services.redis_port, tls,
                                "another-cache", users={USER}) as proxy:
        srv = ak.start_kiln(kiln, SECRET_KEY_BASE=key, VALKEY_CONNECT_TIMEOUT_MS="1000",
                            VALKEY_COMMAND_TIMEOUT_MS="1000", **valkey_env(services, proxy),
                            **aws_env(None, creds))
        kilnhttp.assert_error(ak.me(srv, cookie, timeout=15), 503, "service_unavailable")
        kilnhttp.assert_error(ak.me(srv, bearer=cookie, timeout=15), 503, "service_unavailable")
        r = ak.call(srv, "POST", "/auth/dev/login", timeout=15,
                    json_body={"email": ak.unique_email(), "name": "x"})
        kilnhttp.assert_error(r, 503, "service_unavailable")
        status, body = awskit.health(srv)
        assert status == 503 and body["checks"]["valkey"]["status"] != "ok", body
        assert srv.running()
        assert proxy.failures and all("another-cache" in a["error"] for a in proxy.failures)
        assert not any(c.get("backend") for c in proxy.connections), "a refused AUTH got through"
        awskit.assert_no_secrets(srv, *creds.secrets(), *[a["token"] for a in proxy.auths])


@service_free
@pytest.mark.parametrize("change,names", [
    ({"VALKEY_USER": None}, ("VALKEY_IAM_AUTH", "VALKEY_USER")),
    ({"VALKEY_CLUSTER_ID": None}, ("VALKEY_IAM_AUTH", "VALKEY_CLUSTER_ID")),
    # IAM implies TLS when VALKEY_SSL is unset (test_original_taskdef.py);
    # saying false contradicts it
    ({"VALKEY_SSL": "false"}, ("VALKEY_IAM_AUTH", "VALKEY_SSL", "TLS")),
])
def test_valkey_iam_configuration_errors(store, change, names):
    creds = store.static()
    env = {"VALKEY_HOST": "localhost", "VALKEY_PORT": "6379", "VALKEY_SSL": "true",
           "VALKEY_IAM_AUTH": "true", "VALKEY_USER": USER, "VALKEY_CLUSTER_ID": CLUSTER,
           "VALKEY_PASSWORD": None}
    env.update(aws_env(None, creds))
    env.update(change)
    r = awskit.run_serve(env)
    assert r.returncode == 2, (r.returncode, awskit.output_of(r)[-2000:])
    lines = awskit.config_lines(r)
    for name in names:
        assert any(name in l for l in lines), (name, lines)
    awskit.assert_no_secrets(awskit.output_of(r), *creds.secrets())
