"""Configuration from AWS Secrets Manager, end to end against the fakes of
awsfake.py (every request's SigV4 signature verified with botocore):

* NAME_SECRET_ARN=<arn>[#<json field>] sets NAME at start; NAME and
  NAME_SECRET_ARN together are a configuration error (exit 2); a secret
  that cannot be read stops the start (exit 1, a line naming the variable,
  never a value).
* ENABLE_SECRET_RELOAD=true: SIGHUP (and SECRET_RELOAD_INTERVAL_SECONDS)
  re-reads them: a new SECRET_KEY_BASE signs new cookies while the previous
  one still verifies, new DB_USERNAME/DB_PASSWORD and VALKEY_USER/
  VALKEY_PASSWORD apply to new connections, and requests running meanwhile
  do not fail.  A "secrets reloaded" line names what changed, never values.

Real roles in the test services' PostgreSQL (SCRAM passwords) and ACL
users in the TLS Redis: KILN_STORES=postgres (see awskit.py for what also
runs in embedded mode).
"""

import json
import os
import signal
import time

import pytest

import authkit as ak
import awskit
from awskit import (aws_env, db_env, ecs_env, needs_postgres, service_free,  # noqa: F401
                    store, sm, ecs, ecs_token, pg)


def skb():
    return ak.secret_key_base()


# --------------------------------------------------------------------------
# at start
# --------------------------------------------------------------------------

@needs_postgres
def test_secrets_at_start_with_container_credentials(kiln, services, store, sm, ecs, ecs_token,
                                                     pg, tmp_path):
    role, password = pg.login_role("start")
    db_arn = sm.create_secret(f"kiln/{pg.db}/db", {
        "engine": "postgres", "host": services.pg_host, "port": services.pg_port,
        "username": role, "password": password, "dbname": pg.db})
    key = skb()
    key_arn = sm.create_secret(f"kiln/{pg.db}/secret-key-base", key)
    token_file = tmp_path / "ecs-token"
    token_file.write_text(ecs_token)

    srv = ak.start_kiln(
        kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=key_arn,
        DB_PASSWORD_SECRET_ARN=db_arn + "#password",
        **db_env(services, pg, user=role), **aws_env(sm), **ecs_env(ecs, token_file=token_file))

    awskit.assert_healthy(srv)
    assert pg.users_connected() == [role], pg.activity()
    # every Secrets Manager call was signed with what the container endpoint
    # issued, and verified
    assert sm.failures == []
    assert [c for c in sm.calls if c.status != 200] == []
    assert sm.gets(db_arn) and sm.gets(key_arn)
    issued = {c.access_key for c in ecs.issued}
    assert {c.access_key for c in sm.calls} <= issued
    assert ecs.fetches >= 1 and ecs.refused == 0
    assert all(c.header("Authorization") == ecs_token for c in ecs.calls)

    # SECRET_KEY_BASE is the secret's: another instance with that key as a
    # plain variable takes this one's session, one with another key does not
    cookie = ak.session_for(srv)
    ak.assert_me(ak.me(srv, cookie))
    same = ak.start_kiln(kiln, SECRET_KEY_BASE=key, **db_env(services, pg, user=role,
                                                                password=password))
    ak.assert_me(ak.me(same, cookie))
    other = ak.start_kiln(kiln, SECRET_KEY_BASE=skb(), **db_env(services, pg, user=role,
                                                                   password=password))
    ak.assert_unauthenticated(ak.me(other, cookie))

    awskit.assert_no_secrets(srv, *sm.all_values(), *ecs.secrets())


@service_free
def test_plain_string_and_json_field_secrets_in_embedded_config(kiln, store, sm):
    """Any NAME works, from a plain string or a JSON field; two fields of
    one secret take one GetSecretValue."""
    creds = store.static()
    key = skb()
    key_arn = sm.create_secret("kiln/key", key)
    oidc_arn = sm.create_secret("kiln/google", {"client_id": "id-from-secret.apps.example",
                                               "client_secret": "gcs-" + os.urandom(12).hex()})
    srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=key_arn,
                        GOOGLE_CLIENT_ID_SECRET_ARN=oidc_arn + "#client_id",
                        GOOGLE_CLIENT_SECRET_SECRET_ARN=oidc_arn + "#client_secret",
                        **aws_env(sm, creds))
    ak.assert_me(ak.me(srv, ak.session_for(srv)))
    assert sm.failures == []
    assert len(sm.gets(key_arn)) == 1
    assert len(sm.gets(oidc_arn)) == 1, "one GetSecretValue per secret, not per field"
    assert all(c.access_key == creds.access_key for c in sm.calls)
    awskit.assert_no_secrets(srv, *sm.all_values(), *creds.secrets())


@service_free
@pytest.mark.parametrize("name", ["SECRET_KEY_BASE", "DB_PASSWORD", "VALKEY_PASSWORD",
                                  "GOOGLE_CLIENT_SECRET"])
def test_name_and_name_secret_arn_together_is_a_config_error(store, sm, name):
    value = "plain-" + os.urandom(12).hex()
    arn = sm.create_secret("kiln/conflict", "from-secret-" + os.urandom(12).hex())
    r = awskit.run_serve(dict({name: value, name + "_SECRET_ARN": arn},
                              **aws_env(sm, store.static())))
    assert r.returncode == 2, (r.returncode, awskit.output_of(r)[-2000:])
    lines = awskit.config_lines(r)
    assert any(name in l and name + "_SECRET_ARN" in l for l in lines), lines
    awskit.assert_no_secrets(awskit.output_of(r), value, *sm.all_values())


@service_free
@pytest.mark.parametrize("case", ["missing-secret", "access-denied", "wrong-secret-key",
                                  "missing-field", "no-credentials"])
def test_a_secret_that_cannot_be_read_stops_the_start(store, sm, case):
    creds = store.static()
    value = {"username": "kiln", "password": "db-pw-" + os.urandom(12).hex()}
    arn = sm.create_secret("kiln/db", value)
    ref = arn + "#password"
    env = aws_env(sm, creds)
    if case == "missing-secret":
        ref = arn[:-7] + "-nope#password"
    elif case == "access-denied":
        sm.denied.add(arn)
    elif case == "wrong-secret-key":
        env["AWS_SECRET_ACCESS_KEY"] = creds.secret_key[::-1]
    elif case == "missing-field":
        ref = arn + "#pass"
    elif case == "no-credentials":
        env.pop("AWS_ACCESS_KEY_ID")
        env.pop("AWS_SECRET_ACCESS_KEY")
    r = awskit.run_serve(dict(env, DB_PASSWORD_SECRET_ARN=ref))
    out = awskit.output_of(r)
    assert r.returncode == 1, (r.returncode, out[-2000:])
    assert "DB_PASSWORD" in out, f"no line names the variable:\n{out[-2000:]}"
    awskit.assert_no_secrets(out, *sm.all_values(), *creds.secrets(),
                             env.get("AWS_SECRET_ACCESS_KEY"))
    if case == "wrong-secret-key":
        assert [c.error for c in sm.failures] and \
            all(c.error == "InvalidSignatureException" for c in sm.failures)
    else:
        assert sm.failures == []
    assert sm.gets(ok=True) == [] or case == "missing-field"


# --------------------------------------------------------------------------
# rotation
# --------------------------------------------------------------------------

@needs_postgres
def test_rotation_on_sighup_keeps_sessions_and_moves_to_the_new_db_user(
        kiln, services, store, sm, ecs, ecs_token, pg):
    role_a, pw_a = pg.login_role("a")
    role_b, pw_b = pg.login_role("b")
    db_arn = sm.create_secret(f"kiln/{pg.db}/db", {"username": role_a, "password": pw_a})
    key1, key2 = skb(), skb()
    key_arn = sm.create_secret(f"kiln/{pg.db}/secret-key-base", key1)

    srv = ak.start_kiln(
        kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=key_arn,
        DB_USERNAME_SECRET_ARN=db_arn + "#username", DB_PASSWORD_SECRET_ARN=db_arn + "#password",
        ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="0",
        **db_env(services, pg), **aws_env(sm), **ecs_env(ecs, token=ecs_token))
    awskit.assert_healthy(srv)
    old_cookie = ak.session_for(srv)
    cookies = [ak.session_for(srv) for _ in range(2)]
    traffic = awskit.Traffic(awskit.user_step(srv, cookies, cookies), threads=2)
    with traffic:
        traffic.wait_count(20)
        assert pg.users_connected() == [role_a], pg.activity()

        sm.put_secret(key_arn, key2)
        sm.put_secret(db_arn, {"username": role_b, "password": pw_b})
        rec = awskit.reload_and_wait(srv)
        awskit.assert_names(rec, "SECRET_KEY_BASE", "DB_USERNAME", "DB_PASSWORD")
        awskit.assert_no_secrets(json.dumps(rec), key1, key2, pw_a, pw_b)
        traffic.wait_count(20)

        # sessions made before the rotation keep working; new ones work
        ak.assert_me(ak.me(srv, old_cookie))
        new_cookie = ak.session_for(srv)
        ak.assert_me(ak.me(srv, new_cookie))

        # open connections still run as A; end them between requests (an
        # in-flight query on a terminated backend would fail by design)
        traffic.pause()
        assert pg.terminate(role_a) >= 1
        deadline = time.monotonic() + 10
        while role_a in pg.users_connected():
            assert time.monotonic() < deadline, pg.activity()
            time.sleep(0.05)
        time.sleep(0.5)           # kiln sees the closed sockets
        traffic.resume()
        traffic.wait_count(30)
        deadline = time.monotonic() + 15
        while pg.users_connected() != [role_b]:
            assert time.monotonic() < deadline, f"still {pg.activity()}"
            time.sleep(0.1)
        traffic.wait_count(20)
    fails = traffic.failures()
    assert fails == [], f"{len(fails)} of {traffic.count()} requests failed: {fails[:10]}"

    # new cookies are signed with the new key only: an instance that knows
    # just key2 takes the new cookie and refuses the old one
    checker = ak.start_kiln(kiln, SECRET_KEY_BASE=key2,
                            **db_env(services, pg, user=role_b, password=pw_b))
    ak.assert_me(ak.me(checker, new_cookie))
    ak.assert_unauthenticated(ak.me(checker, old_cookie))

    assert sm.failures == []
    awskit.assert_no_secrets(srv, *sm.all_values(), *ecs.secrets(), pw_a, pw_b, key1, key2)


@needs_postgres
def test_a_refused_login_reads_the_secrets_again_at_once(kiln, services, store, sm, ecs,
                                                          ecs_token, pg):
    """Alternating users behind a proxy: once the secret moves to user B,
    user A's logins are refused before kiln's next reload. The first refused
    connect makes kiln read the secrets at once (no SIGHUP, no period), so
    the service heals within a request or two instead of a reload period."""
    role_a, pw_a = pg.login_role("a")
    role_b, pw_b = pg.login_role("b")
    db_arn = sm.create_secret(f"kiln/{pg.db}/db-kick", {"username": role_a, "password": pw_a})
    srv = ak.start_kiln(
        kiln, DB_USERNAME_SECRET_ARN=db_arn + "#username",
        DB_PASSWORD_SECRET_ARN=db_arn + "#password",
        ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="0",
        **db_env(services, pg), **aws_env(sm), **ecs_env(ecs, token=ecs_token))
    awskit.assert_healthy(srv)
    cookies = [ak.session_for(srv) for _ in range(2)]
    traffic = awskit.Traffic(awskit.user_step(srv, cookies, cookies), threads=2, ok=(200, 201, 204, 503))
    with traffic:
        traffic.wait_count(20)
        sm.put_secret(db_arn, {"username": role_b, "password": pw_b})
        traffic.pause()
        # A's login is refused from now on (its password changed: the
        # rotation after this one has begun, or the proxy no longer knows
        # A), and its open connections end
        services.psql(f"ALTER ROLE \"{role_a}\" PASSWORD 'pw-rotated-away'", db="postgres")
        pg.terminate(role_a)
        time.sleep(0.5)
        traffic.resume()
        rec = awskit.wait_log_count(srv, awskit.is_reloaded, 1, timeout=10)[-1]
        awskit.assert_names(rec, "DB_USERNAME", "DB_PASSWORD")
        deadline = time.monotonic() + 15
        while pg.users_connected() != [role_b]:
            assert time.monotonic() < deadline, f"still {pg.activity()}"
            time.sleep(0.1)
        healed = time.time()
        time.sleep(0.5)
        traffic.wait_count(40)
    # refused only while the reload ran (requests that needed a new
    # connection; they fail fast, so count time, not requests): the
    # service healed within 2 s of the first refusal, not after a period
    refused = [r for r in traffic.results if r[4] == 503]
    assert refused and refused[-1][1] - refused[0][0] < 2.0, refused
    # (an attempt that began with A's credentials just before the reload
    # may still end after it: judge what starts half a second later)
    after = [r for r in traffic.results if r[0] > healed + 0.5 and r[4] not in (200, 201, 204)]
    assert after == [], after[:5]
    assert [r for r in traffic.results if r[4] not in (200, 201, 204, 503)] == []
    assert any("credentials refused" in r.get("message", "") for r in awskit.log_records(srv))
    assert sm.failures == []
    awskit.assert_no_secrets(srv, pw_a, pw_b)


@needs_postgres
def test_rotation_of_the_valkey_user_and_password(kiln, services, store, sm):
    """VALKEY_USER/VALKEY_PASSWORD from one secret, on the TLS Redis with an
    ACL user of this test: after a reload, new connections use the new user
    (CLIENT LIST), requests meanwhile do not fail."""
    creds = store.static()
    new_user, new_pw = f"kiln_rot_{os.urandom(4).hex()}", "vk-" + os.urandom(16).hex()
    ak.redis_cli(services, "ACL", "SETUSER", new_user, "on", ">" + new_pw, "~*", "&*", "+@all",
                 mode="pgbouncer")
    try:
        arn = sm.create_secret("kiln/valkey", {"username": services.redis_user,
                                               "password": services.redis_password})
        env = services.valkey_tls_env(VALKEY_USER=None, VALKEY_PASSWORD=None)
        srv = ak.start_kiln(kiln, VALKEY_USER_SECRET_ARN=arn + "#username",
                            VALKEY_PASSWORD_SECRET_ARN=arn + "#password",
                            ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="0",
                            **env, **aws_env(sm, creds))
        awskit.assert_healthy(srv)

        def users():
            out = ak.redis_cli(services, "CLIENT", "LIST", mode="pgbouncer")
            return sorted({f.split("=", 1)[1] for line in out.splitlines()
                           for f in line.split() if f.startswith("user=")})

        cookies = [ak.session_for(srv) for _ in range(2)]
        traffic = awskit.Traffic(awskit.user_step(srv, cookies, cookies), threads=2)
        with traffic:
            traffic.wait_count(20)
            sm.put_secret(arn, {"username": new_user, "password": new_pw})
            rec = awskit.reload_and_wait(srv)
            awskit.assert_names(rec, "VALKEY_USER", "VALKEY_PASSWORD")
            traffic.wait_count(20)
            traffic.pause()
            ak.redis_cli(services, "CLIENT", "KILL", "USER", services.redis_user, mode="pgbouncer")
            time.sleep(0.5)
            traffic.resume()
            traffic.wait_count(30)
            deadline = time.monotonic() + 15
            while new_user not in users():
                assert time.monotonic() < deadline, users()
                time.sleep(0.1)
            # the only connections of the old user left are redis-cli's own
            traffic.wait_count(20)
        fails = traffic.failures()
        assert fails == [], f"{len(fails)} of {traffic.count()} requests failed: {fails[:10]}"
        ak.assert_me(ak.me(srv, ak.session_for(srv)))
        assert sm.failures == []
        awskit.assert_no_secrets(srv, new_pw, *sm.all_values(), *creds.secrets())
    finally:
        ak.redis_cli(services, "ACL", "DELUSER", new_user, mode="pgbouncer")


@service_free
def test_reload_on_an_interval(kiln, store, sm):
    creds = store.static()
    key1, key2 = skb(), skb()
    arn = sm.create_secret("kiln/key", key1)
    srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn,
                        ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="1",
                        **aws_env(sm, creds))
    old = ak.session_for(srv)
    sm.put_secret(arn, key2)
    rec = awskit.wait_log_count(srv, awskit.is_reloaded, 1, timeout=10)[0]
    awskit.assert_names(rec, "SECRET_KEY_BASE")
    ak.assert_me(ak.me(srv, old))
    ak.assert_me(ak.me(srv, ak.session_for(srv)))
    assert len(sm.gets(arn)) >= 2 and sm.failures == []
    awskit.assert_no_secrets(srv, key1, key2, *creds.secrets())


@service_free
def test_a_failed_reload_keeps_the_current_values(kiln, store, sm):
    creds = store.static()
    key1, key2 = skb(), skb()
    arn = sm.create_secret("kiln/key", key1)
    srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn,
                        ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="0",
                        **aws_env(sm, creds))
    cookie = ak.session_for(srv)
    sm.denied.add(arn)
    sm.put_secret(arn, key2)
    calls = len(sm.calls)
    srv.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not any(c.error == "AccessDeniedException" for c in sm.calls[calls:]):
        assert time.monotonic() < deadline, "no GetSecretValue after SIGHUP"
        time.sleep(0.05)
    time.sleep(0.3)
    assert srv.running()
    assert not any(awskit.is_reloaded(r) for r in awskit.log_records(srv))
    ak.assert_me(ak.me(srv, cookie))
    # once readable again, the next reload applies it
    sm.denied.clear()
    awskit.assert_names(awskit.reload_and_wait(srv), "SECRET_KEY_BASE")
    ak.assert_me(ak.me(srv, cookie))
    awskit.assert_no_secrets(srv, key1, key2, *creds.secrets())


@service_free
def test_sighup_without_reload_enabled_is_harmless(kiln, store, sm):
    creds = store.static()
    arn = sm.create_secret("kiln/key", skb())
    srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn,
                        **aws_env(sm, creds))
    cookie = ak.session_for(srv)
    calls = len(sm.calls)
    srv.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert srv.running(), "SIGHUP ended kiln"
    ak.assert_me(ak.me(srv, cookie))
    assert len(sm.calls) == calls
