"""Self-tests of the AWS stand-ins in awsfake.py, with botocore (and
psycopg2, redis-cli) as the client: what Kiln's AWS tests rely on must
accept what the AWS SDK sends and refuse what AWS would refuse.

The HTTP fakes need nothing else and run in every store mode; the
PostgreSQL and Valkey proxies need the test services and run with
KILN_STORES=postgres only (they do not depend on the mode, once is enough).
"""

import datetime
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session
import botocore.utils
import psycopg2
import pytest

import awsfake
import kilnhttp

needs_services = pytest.mark.skipif(
    kilnhttp.STORES != "postgres",
    reason="the IAM proxies need the test services; they run with KILN_STORES=postgres")


@pytest.fixture
def store():
    return awsfake.CredentialStore()


@pytest.fixture
def sm(store):
    with awsfake.SecretsManagerFake(store) as fake:
        yield fake


def client(service, creds, endpoint=None, region=awsfake.REGION):
    return botocore.session.get_session().create_client(
        service, region_name=region, endpoint_url=endpoint,
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
        config=botocore.config.Config(retries={"max_attempts": 1}))


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


# --------------------------------------------------------------------------
# botocore's clock
# --------------------------------------------------------------------------

def test_frozen_clock_is_per_thread():
    past = datetime.datetime(2020, 2, 3, 4, 5, 6)
    seen = {}

    def other():
        seen["other"] = botocore.auth.datetime.datetime.utcnow()

    with awsfake.frozen_clock(past):
        assert botocore.auth.datetime.datetime.utcnow() == past
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert abs((seen["other"] - awsfake.utcnow()).total_seconds()) < 5
    assert abs((botocore.auth.datetime.datetime.utcnow() - awsfake.utcnow()).total_seconds()) < 5


# --------------------------------------------------------------------------
# Secrets Manager
# --------------------------------------------------------------------------

def test_secrets_manager_serves_versions_to_botocore(store, sm):
    creds = store.static()
    arn = sm.create_secret("kiln/db", {"username": "a", "password": "pw-a"})
    sm_client = client("secretsmanager", creds, sm.base_url)

    r = sm_client.get_secret_value(SecretId=arn)
    assert json.loads(r["SecretString"]) == {"username": "a", "password": "pw-a"}
    assert r["ARN"] == arn and r["Name"] == "kiln/db" and r["VersionStages"] == ["AWSCURRENT"]
    assert isinstance(r["CreatedDate"], datetime.datetime)
    first_version = r["VersionId"]
    # by name and by partial ARN (no random suffix) too, as AWS allows
    assert sm_client.get_secret_value(SecretId="kiln/db")["VersionId"] == first_version
    assert sm_client.get_secret_value(SecretId=arn[:-7])["VersionId"] == first_version

    sm.put_secret(arn, {"username": "b", "password": "pw-b"})
    cur = sm_client.get_secret_value(SecretId=arn)
    prev = sm_client.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")
    assert json.loads(cur["SecretString"])["username"] == "b"
    assert cur["VersionId"] != first_version and cur["VersionStages"] == ["AWSCURRENT"]
    assert prev["VersionId"] == first_version and prev["VersionStages"] == ["AWSPREVIOUS"]
    by_id = sm_client.get_secret_value(SecretId=arn, VersionId=first_version)
    assert json.loads(by_id["SecretString"])["username"] == "a"

    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm_client.get_secret_value(SecretId=arn + "-missing")
    assert error_code(e) == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["Error"]["Message"] == "Secrets Manager can't find the specified secret."
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith(
        "ResourceNotFoundException")

    sm.denied.add(arn)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm_client.get_secret_value(SecretId=arn)
    assert error_code(e) == "AccessDeniedException"

    assert sm.failures == []
    assert all(c.access_key == creds.access_key for c in sm.gets(arn))
    assert len(sm.gets(arn)) == 6


def test_secrets_manager_takes_temporary_credentials(store, sm):
    arn = sm.create_secret("kiln/key", "s3cr3t-value")
    tmp = store.temporary()
    assert client("secretsmanager", tmp, sm.base_url).get_secret_value(
        SecretId=arn)["SecretString"] == "s3cr3t-value"
    assert sm.failures == []

    # the key without its session token, or with another token
    for token in (None, tmp.token[:-4] + "AAAA"):
        bad = awsfake.Creds(tmp.access_key, tmp.secret_key, token)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client("secretsmanager", bad, sm.base_url).get_secret_value(SecretId=arn)
        assert error_code(e) == "UnrecognizedClientException"
    # expired
    tmp.expiration = awsfake.utcnow() - datetime.timedelta(seconds=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client("secretsmanager", tmp, sm.base_url).get_secret_value(SecretId=arn)
    assert error_code(e) == "ExpiredTokenException"
    assert [c.error for c in sm.failures] == ["UnrecognizedClientException"] * 2 + \
        ["ExpiredTokenException"]


def test_secrets_manager_refuses_what_aws_refuses(store, sm):
    creds = store.static()
    arn = sm.create_secret("kiln/other", "value-1")
    url = sm.base_url + "/"
    headers, body = awsfake.get_secret_value_request(arn)

    # a correctly signed raw request passes, and passes again (AWS accepts a
    # replay within the clock skew)
    signed = awsfake.sign_headers(creds, "POST", url, headers, body)
    for _ in range(2):
        status, _, out = awsfake.http_call("POST", url, signed, body)
        assert status == 200, out
        assert json.loads(out)["SecretString"] == "value-1"

    def refused(hdrs, data, want):
        status, h, out = awsfake.http_call("POST", url, hdrs, data)
        assert status in (400, 403), (status, out)
        assert json.loads(out)["__type"] == want, out
        assert h["x-amzn-errortype"].startswith(want)

    # another body under the same signature
    _, other_body = awsfake.get_secret_value_request(arn, VersionStage="AWSPREVIOUS")
    refused(signed, other_body, "InvalidSignatureException")
    # a signed header changed after signing
    refused(dict(signed, **{"X-Amz-Target": "secretsmanager.ListSecrets"}), body,
            "InvalidSignatureException")
    # the wrong secret key
    # (its last character changed: a key that already ends in "x" would
    # otherwise stay right, one run in 64)
    wrong = awsfake.Creds(creds.access_key,
                          creds.secret_key[:-1] + ("y" if creds.secret_key.endswith("x") else "x"))
    refused(awsfake.sign_headers(wrong, "POST", url, headers, body), body, "InvalidSignatureException")
    # another region or service in the scope
    refused(awsfake.sign_headers(creds, "POST", url, headers, body, region="eu-west-1"), body,
            "InvalidSignatureException")
    refused(awsfake.sign_headers(creds, "POST", url, headers, body, service="kms"), body,
            "InvalidSignatureException")
    # signed 20 minutes ago, or 20 minutes ahead
    for minutes in (-20, 20):
        when = awsfake.utcnow() + datetime.timedelta(minutes=minutes)
        refused(awsfake.sign_headers(creds, "POST", url, headers, body, when=when), body,
                "InvalidSignatureException")
    # an unknown key id
    stranger = awsfake.Creds("AKIAUNKNOWNUNKNOWN00", creds.secret_key)
    refused(awsfake.sign_headers(stranger, "POST", url, headers, body), body,
            "UnrecognizedClientException")
    # no signature at all
    refused(headers, body, "MissingAuthenticationTokenException")

    assert len(sm.failures) == 9
    assert [c.status for c in sm.calls[:2]] == [200, 200]


def test_secrets_manager_signed_ten_minutes_ago_still_passes(store, sm):
    """Within the 15 minutes of skew AWS allows: botocore signing at a
    frozen past time (this thread) while the fake verifies in its own."""
    creds = store.static()
    arn = sm.create_secret("kiln/skew", "v")
    c = client("secretsmanager", creds, sm.base_url)
    with awsfake.frozen_clock(awsfake.utcnow() - datetime.timedelta(minutes=10)):
        assert c.get_secret_value(SecretId=arn)["SecretString"] == "v"
    with awsfake.frozen_clock(awsfake.utcnow() - datetime.timedelta(minutes=16)):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.get_secret_value(SecretId=arn)
    assert error_code(e) == "InvalidSignatureException"
    assert len(sm.failures) == 1


# --------------------------------------------------------------------------
# ECS container credentials and IMDSv2
# --------------------------------------------------------------------------

def test_ecs_endpoint_serves_botocore_container_provider(store, sm):
    token = "ecs-auth-" + os.urandom(8).hex()
    with awsfake.EcsCredentialsFake(store, auth_token=token) as ecs:
        provider = botocore.credentials.ContainerProvider(environ={
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token})
        got = provider.load().get_frozen_credentials()
        assert (got.access_key, got.secret_key, got.token) == \
            (ecs.current.access_key, ecs.current.secret_key, ecs.current.token)
        assert ecs.fetches == 1

        status, _, out = awsfake.http_call("GET", ecs.url)
        assert status == 401, out
        status, _, out = awsfake.http_call("GET", ecs.url, {"Authorization": token + "x"})
        assert status == 403, out
        status, _, out = awsfake.http_call("GET", ecs.base_url + "/v2/credentials/other",
                                           {"Authorization": token})
        assert status == 404, out
        assert ecs.refused == 3 and ecs.fetches == 1

        status, _, out = awsfake.http_call("GET", ecs.url, {"Authorization": token})
        doc = json.loads(out)
        assert status == 200 and set(doc) == {"AccessKeyId", "SecretAccessKey", "Token",
                                              "Expiration", "RoleArn"}
        exp = datetime.datetime.strptime(doc["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
        assert 3500 < (exp - awsfake.utcnow()).total_seconds() <= 3600

        # what it issued signs Secrets Manager calls; after a rotation, the
        # new pair does too
        arn = sm.create_secret("kiln/ecs", "v")
        old = ecs.current
        new = ecs.rotate()
        assert new.access_key != old.access_key
        for c in (old, new):
            assert client("secretsmanager", c, sm.base_url).get_secret_value(
                SecretId=arn)["SecretString"] == "v"
        assert sm.failures == []


def test_imds_v2_serves_botocore_instance_provider(store):
    with awsfake.ImdsFake(store) as imds:
        fetcher = botocore.utils.InstanceMetadataFetcher(
            timeout=2, num_attempts=1, base_url=imds.base_url)
        got = botocore.credentials.InstanceMetadataProvider(
            iam_role_fetcher=fetcher).load().get_frozen_credentials()
        assert got.access_key == imds.current.access_key and got.token == imds.current.token
        assert imds.token_puts >= 1 and imds.fetches == 1 and imds.unauthorized == 0

        # IMDSv1 (no token) is refused; so are a token PUT without a TTL and a
        # made-up token
        status, _, _ = awsfake.http_call("GET", imds.base_url + imds.CRED_PATH)
        assert status == 401
        status, _, _ = awsfake.http_call("PUT", imds.base_url + "/latest/api/token")
        assert status == 400
        status, _, _ = awsfake.http_call("GET", imds.base_url + imds.CRED_PATH,
                                         {"X-aws-ec2-metadata-token": "made-up"})
        assert status == 401
        status, _, tok = awsfake.http_call("PUT", imds.base_url + "/latest/api/token",
                                           {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        assert status == 200
        h = {"X-aws-ec2-metadata-token": tok.decode()}
        status, _, role = awsfake.http_call("GET", imds.base_url + imds.CRED_PATH, h)
        assert (status, role.decode()) == (200, imds.role)
        status, _, out = awsfake.http_call("GET", imds.base_url + imds.CRED_PATH + imds.role, h)
        doc = json.loads(out)
        assert status == 200 and doc["Code"] == "Success" and doc["Type"] == "AWS-HMAC"
        status, _, _ = awsfake.http_call("GET", imds.base_url + imds.CRED_PATH + "other-role", h)
        assert status == 404
        assert imds.unauthorized == 2


# --------------------------------------------------------------------------
# PostgreSQL with RDS IAM tokens
# --------------------------------------------------------------------------

@pytest.fixture
def pg(services):
    setup = awsfake.PgSetup(services, tag="fake")
    yield setup
    setup.drop()


@needs_services
def test_pg_proxy_takes_botocore_tokens_and_reaches_the_real_server(services, store, pg):
    role, password = pg.login_role("iam")
    creds = store.temporary()
    tls = awsfake.services_tls(services.dir)
    with awsfake.PgIamProxy(store, services.pg_host, services.pg_port, {role: password},
                            tls) as proxy:
        rds = client("rds", creds)
        token = rds.generate_db_auth_token(DBHostname="127.0.0.1", Port=proxy.port,
                                           DBUsername=role)
        conn = psycopg2.connect(host="127.0.0.1", port=proxy.port, user=role, password=token,
                                dbname=pg.db, sslmode="require", connect_timeout=5,
                                application_name="awsfake-selftest")
        try:
            cur = conn.cursor()
            cur.execute("SELECT session_user, current_user, current_database()")
            assert cur.fetchone() == (role, pg.owner, pg.db)
            cur.execute("CREATE TABLE t (x int)")
            cur.execute("INSERT INTO t SELECT generate_series(1, 5000)")
            cur.execute("SELECT sum(x) FROM t")
            assert cur.fetchone() == (5000 * 5001 // 2,)
            conn.commit()
            assert pg.users_connected() == [role]
        finally:
            conn.close()
        assert len(proxy.verified) == 1 and proxy.failures == []
        assert proxy.verified[0]["access_key"] == creds.access_key

        def refused(sslmode="require", user=role, password=token, want="PAM authentication failed"):
            with pytest.raises(psycopg2.OperationalError) as e:
                psycopg2.connect(host="127.0.0.1", port=proxy.port, user=user, password=password,
                                 dbname=pg.db, sslmode=sslmode, connect_timeout=5)
            assert want in str(e.value), str(e.value)

        refused(sslmode="disable", want="no encryption")       # TLS is a must
        refused(password=password)                              # the real password is no token
        refused(password=token.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
        other, _ = pg.login_role("other")
        refused(user=other)                                     # token names another DBUser
        refused(password=rds.generate_db_auth_token(            # another port
            DBHostname="127.0.0.1", Port=proxy.port + 1, DBUsername=role))
        with awsfake.frozen_clock(awsfake.utcnow() - datetime.timedelta(minutes=16)):
            expired = rds.generate_db_auth_token(DBHostname="127.0.0.1", Port=proxy.port,
                                                 DBUsername=role)
        refused(password=expired)
        refused(password=client("rds", awsfake.Creds(creds.access_key, creds.secret_key + "x",
                                                      creds.token)).generate_db_auth_token(
            DBHostname="127.0.0.1", Port=proxy.port, DBUsername=role))
        # a token ten minutes old is still good (900 s)
        with awsfake.frozen_clock(awsfake.utcnow() - datetime.timedelta(minutes=10)):
            older = rds.generate_db_auth_token(DBHostname="127.0.0.1", Port=proxy.port,
                                               DBUsername=role)
        psycopg2.connect(host="127.0.0.1", port=proxy.port, user=role, password=older,
                         dbname=pg.db, sslmode="require", connect_timeout=5).close()

        errors = [f["error"] for f in proxy.failures]
        assert len(errors) == 6, errors
        assert any("SignatureMismatch" in e for e in errors)
        assert any("expired" in e for e in errors)
        assert any("DBUser" in e for e in errors)
        assert len(proxy.verified) == 2
        assert not proxy.bugs, [b["error"] for b in proxy.bugs]


@needs_services
def test_scram_login_helper_against_the_real_server(services, pg):
    role, password = pg.login_role("scram")
    sock, ok = awsfake._pg_backend_login(services.pg_host, services.pg_port,
                                         {"user": role, "database": pg.db}, password)
    sock.close()
    assert ok[:1] == b"R"
    with pytest.raises(awsfake.AuthError) as e:
        awsfake._pg_backend_login(services.pg_host, services.pg_port,
                                  {"user": role, "database": pg.db}, password + "x")
    assert "password authentication failed" in e.value.message


# --------------------------------------------------------------------------
# Valkey with ElastiCache IAM tokens
# --------------------------------------------------------------------------

CLUSTER = "kiln-selftest-cache"
IAM_USER = "kiln-iam-user"


def redis_cli(tls, port, token, *args, user=IAM_USER):
    env = dict(os.environ, REDISCLI_AUTH=token)
    r = subprocess.run(["redis-cli", "--tls", "--cacert", tls.ca, "-h", "localhost", "-p", str(port),
                        "--user", user, *args], capture_output=True, env=env, timeout=15,
                       stdin=subprocess.DEVNULL)
    return r.stdout.decode().strip(), r.stderr.decode().strip()


class RespConn:
    """A TLS RESP client that verifies the server certificate and its name."""

    def __init__(self, port, ca):
        ctx = ssl.create_default_context(cafile=ca)
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname="localhost")
        self.buf = bytearray()

    def send(self, *commands):
        self.sock.sendall(b"".join(awsfake.resp_command(*c) for c in commands))

    def replies(self, n):
        out = []
        while len(out) < n:
            end = awsfake.parse_reply(self.buf)
            if end is None:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError(f"closed after {out}")
                self.buf += data
                continue
            out.append(bytes(self.buf[:end]))
            del self.buf[:end]
        return out

    def close(self):
        self.sock.close()


@needs_services
def test_valkey_proxy_takes_botocore_tokens_and_reauth(services, store):
    creds = store.temporary()
    tls = awsfake.services_tls(services.dir)
    with awsfake.ValkeyIamProxy(store, services.redis_host, services.redis_port, tls, CLUSTER,
                                users={IAM_USER}) as proxy:
        token = awsfake.elasticache_auth_token(creds, CLUSTER, IAM_USER, awsfake.REGION)
        assert token.startswith(f"{CLUSTER}/?Action=connect&User={IAM_USER}&X-Amz-Algorithm=")
        key = "awsfake:selftest:" + os.urandom(4).hex()
        assert redis_cli(tls, proxy.port, token, "SET", key, "v1", "EX", "60") == ("OK", "")
        assert redis_cli(tls, proxy.port, token, "GET", key) == ("v1", "")
        assert len(proxy.auths) == 2 and proxy.failures == []

        out, err = redis_cli(tls, proxy.port, token.replace("X-Amz-Signature=", "X-Amz-Signature=0"),
                             "GET", key)
        assert "WRONGPASS" in err, (out, err)
        out, err = redis_cli(tls, proxy.port, token, "GET", key, user="someone-else")
        assert "WRONGPASS" in err, (out, err)
        wrong_cluster = awsfake.elasticache_auth_token(creds, "other-cache", IAM_USER, awsfake.REGION)
        out, err = redis_cli(tls, proxy.port, wrong_cluster, "GET", key)
        assert "WRONGPASS" in err, (out, err)
        assert len(proxy.failures) == 3

        # pipelined: commands before AUTH are refused; replies keep their
        # order around AUTHs answered by the proxy itself; HELLO … AUTH works
        c = RespConn(proxy.port, tls.ca)
        try:
            c.send(("GET", key), ("AUTH", IAM_USER, token), ("GET", key), ("SET", key, "v2"),
                   ("AUTH", IAM_USER, token), ("GET", key), ("AUTH", IAM_USER, "nope"),
                   ("PING",))
            assert c.replies(8) == [b"-NOAUTH Authentication required.\r\n", b"+OK\r\n",
                                    b"$2\r\nv1\r\n", b"+OK\r\n", b"+OK\r\n", b"$2\r\nv2\r\n",
                                    awsfake.WRONGPASS, b"+PONG\r\n"]
        finally:
            c.close()
        c = RespConn(proxy.port, tls.ca)
        try:
            c.send(("HELLO", "3", "AUTH", IAM_USER, token, "SETNAME", "selftest"), ("CLIENT", "GETNAME"))
            hello, name = c.replies(2)
            assert hello.startswith(b"%") and b"proto" in hello, hello
            assert name == b"$8\r\nselftest\r\n"
        finally:
            c.close()
        conns = {a["conn"] for a in proxy.reauths()}
        assert len(conns) == 1, proxy.auths
        assert not proxy.bugs, [b["error"] for b in proxy.bugs]


@needs_services
def test_valkey_proxy_passes_messages_to_a_subscriber(services, store):
    """A subscribed RESP2 connection receives published messages whenever
    someone publishes: the proxy passes them through, and still answers
    the subscriber's own commands in order."""
    creds = store.temporary()
    tls = awsfake.services_tls(services.dir)
    with awsfake.ValkeyIamProxy(store, services.redis_host, services.redis_port, tls, CLUSTER,
                                users={IAM_USER}) as proxy:
        token = awsfake.elasticache_auth_token(creds, CLUSTER, IAM_USER, awsfake.REGION)
        chan = "awsfake:selftest:" + os.urandom(4).hex()
        sub, pub = RespConn(proxy.port, tls.ca), RespConn(proxy.port, tls.ca)
        try:
            sub.send(("AUTH", IAM_USER, token), ("SUBSCRIBE", chan, chan + ":2"))
            assert sub.replies(3)[0] == b"+OK\r\n"
            pub.send(("AUTH", IAM_USER, token), ("PUBLISH", chan, "one"), ("PUBLISH", chan, "two"))
            assert pub.replies(3) == [b"+OK\r\n", b":1\r\n", b":1\r\n"]
            sub.send(("PING",))
            got = sub.replies(3)
            assert got[:2] == [awsfake.resp_command("message", chan, "one"),
                               awsfake.resp_command("message", chan, "two")], got
            assert got[2].startswith(b"*2\r\n$4\r\npong"), got
        finally:
            sub.close()
            pub.close()
        assert proxy.failures == []
        assert not proxy.bugs, [b["error"] for b in proxy.bugs]


@needs_services
def test_valkey_proxy_drops_connections_without_reauth(services, store):
    creds = store.static()
    tls = awsfake.services_tls(services.dir)
    with awsfake.ValkeyIamProxy(store, services.redis_host, services.redis_port, tls, CLUSTER,
                                max_auth_age=0.5) as proxy:
        token = awsfake.elasticache_auth_token(creds, CLUSTER, IAM_USER, awsfake.REGION)
        c = RespConn(proxy.port, tls.ca)
        try:
            c.send(("AUTH", IAM_USER, token), ("PING",))
            assert c.replies(2) == [b"+OK\r\n", b"+PONG\r\n"]
            time.sleep(0.3)
            c.send(("AUTH", IAM_USER, token))
            assert c.replies(1) == [b"+OK\r\n"]
            time.sleep(0.3)
            c.send(("PING",))             # 0.3 s after the last AUTH: fine
            assert c.replies(1) == [b"+PONG\r\n"]
            time.sleep(0.6)
            c.send(("PING",))             # 0.9 s: dropped
            with pytest.raises((EOFError, OSError)):
                c.replies(1)
        finally:
            c.close()
        assert any(r.get("expired") for r in proxy.connections)
