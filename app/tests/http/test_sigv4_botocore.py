"""Kiln's SigV4 signer (app/src/aws/sigv4.c) against botocore.

Each test signs one request twice at the same frozen clock: with botocore
(Debian's python3-botocore) and with build/tests/tools/sigv4_tool, a thin
JSON front end over build/libkiln.a (``make build/tests/tools/sigv4_tool``;
``make blackbox`` builds it; KILN_SIGV4_TOOL names another binary).  What
must match: the canonical request, the string to sign and the Authorization
header (header signing); the signature and the set of query parameters
(presigned URLs, RDS and ElastiCache IAM tokens); the signature of the
base64 policy (S3 POST).

The signer is a pure function of its inputs, so this runs once per
``make test``: in the plain ``embedded`` black-box run, skipped in the other
store modes and under ASan (the unit test build/asan/tests/aws_sigv4 covers
the same code there).  It starts no kiln and needs no services.

botocore 1.29 reads the time as ``datetime.datetime.utcnow()`` through the
module global ``datetime`` of botocore.auth (signing) and botocore.signers
(the POST policy's expiration); the ``frozen_clock`` fixture replaces both
globals with a stub for the duration of each test.
"""

import base64
import calendar
import datetime as _dt
import json
import os
import pathlib
import subprocess
import types
import urllib.parse

import pytest

import botocore.auth
import botocore.session
import botocore.signers
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.hooks import HierarchicalEmitter
from botocore.model import ServiceId
from botocore.signers import RequestSigner

import kilnhttp

pytestmark = pytest.mark.skipif(
    kilnhttp.STORES != "embedded" or bool(os.environ.get("KILN_SANITIZED")),
    reason="pure signing, no server: runs once, in the plain embedded run")

TOOL = pathlib.Path(os.environ.get("KILN_SIGV4_TOOL")
                    or kilnhttp.REPO_ROOT / "build" / "tests" / "tools" / "sigv4_tool")

REGION = "eu-west-3"
NOW = _dt.datetime(2026, 3, 14, 15, 9, 26)          # naive UTC, as botocore uses it
NOW_UNIX = calendar.timegm(NOW.timetuple())
AMZ_DATE = "20260314T150926Z"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
# A session token with the characters that need encoding in a query.
TOKEN = ("IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCWV1LXdlc3QtMyJHMEUCIQD+example/"
         "token+with=padding==")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
Q = "-_.~"     # the unreserved marks botocore keeps when it encodes


# --------------------------------------------------------------------------
# botocore's clock and credentials
# --------------------------------------------------------------------------

class _FrozenDatetime(_dt.datetime):
    @classmethod
    def utcnow(cls):
        return cls(NOW.year, NOW.month, NOW.day, NOW.hour, NOW.minute, NOW.second)


class _DatetimeModule(types.ModuleType):
    """The ``datetime`` module with a frozen ``datetime.utcnow()``."""

    datetime = _FrozenDatetime

    def __getattr__(self, name):
        return getattr(_dt, name)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    stub = _DatetimeModule("datetime")
    monkeypatch.setattr(botocore.auth, "datetime", stub)
    monkeypatch.setattr(botocore.signers, "datetime", stub)
    assert botocore.auth.datetime.datetime.utcnow() == NOW


@pytest.fixture(scope="module", autouse=True)
def sigv4_tool():
    if not (TOOL.is_file() and os.access(TOOL, os.X_OK)):
        pytest.fail(f"{TOOL} not found: make build/tests/tools/sigv4_tool (or set "
                    "KILN_SIGV4_TOOL)", pytrace=False)


def creds(token):
    return Credentials(ACCESS_KEY, SECRET_KEY, TOKEN if token else None)


@pytest.fixture
def session(monkeypatch, tmp_path):
    """A botocore session that reads nothing of this machine's AWS setup."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return botocore.session.get_session()


def client(session, service, token):
    return session.create_client(
        service, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, aws_session_token=TOKEN if token else None)


# --------------------------------------------------------------------------
# the two signers
# --------------------------------------------------------------------------

def kiln(mode, **fields):
    """Run sigv4_tool; its JSON answer."""
    req = {"mode": mode, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
           "region": REGION, "time": NOW_UNIX}
    req.update(fields)
    done = subprocess.run([str(TOOL)], input=json.dumps(req).encode(), capture_output=True,
                          timeout=30)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def capturing(auth_class):
    """auth_class, keeping the canonical request and string to sign it made."""

    class Capturing(auth_class):
        def canonical_request(self, request):
            self.creq = super().canonical_request(request)
            return self.creq

        def string_to_sign(self, request, canonical_request):
            self.sts = super().string_to_sign(request, canonical_request)
            return self.sts

    return Capturing


def boto_sign(auth_class, service, method, url, headers=(), body=b"", params=None,
              token=False, context=None, **kwargs):
    h = HTTPHeaders()
    for name, value in headers:
        h[name] = value
    request = AWSRequest(method=method, url=url, headers=h, data=body, params=params or {})
    if context:
        request.context.update(context)
    auth = capturing(auth_class)(creds(token), service, REGION, **kwargs)
    auth.add_auth(request)
    return request, auth


def query_of(url):
    return urllib.parse.urlsplit(url).query


def params_of(query):
    """Parameters as a sorted list of (name, value), decoded."""
    return sorted(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True))


def encode(params, safe=Q):
    return "&".join(f"{urllib.parse.quote(k, safe=safe)}={urllib.parse.quote(v, safe=safe)}"
                    for k, v in params)


# --------------------------------------------------------------------------
# (a) header signing
# --------------------------------------------------------------------------

SECRET_ARN = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:kiln/db-AbCdEf"


@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
def test_secrets_manager_post_json(token):
    host = f"secretsmanager.{REGION}.amazonaws.com"
    body = json.dumps({"SecretId": SECRET_ARN, "VersionStage": "AWSCURRENT"})
    headers = [("X-Amz-Target", "secretsmanager.GetSecretValue"),
               ("Content-Type", "application/x-amz-json-1.1")]
    request, auth = boto_sign(botocore.auth.SigV4Auth, "secretsmanager", "POST",
                              f"https://{host}/", headers, body.encode(), token=token)
    ours = kiln("sign", token=TOKEN if token else "", service="secretsmanager",
                method="POST", host=host, path="/", headers=headers, body=body)
    assert ours["canonical_request"] == auth.creq
    assert ours["string_to_sign"] == auth.sts
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["amz_date"] == request.headers["X-Amz-Date"] == AMZ_DATE
    signed = request.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    want = "content-type;host;x-amz-date;x-amz-target"
    if token:
        want = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
    assert signed == want


QUERY = [
    ("zeta", "1"),
    ("Alpha", "two words"),
    ("\u00fcn\u00efcode", "\u00e7\u00f6d\u00e9 \u2603"),
    ("reserved", "!*'();:@&=+$,/?#[]%"),
    ("empty", ""),
    ("alpha", "b"),
    ("alpha", "a"),
    ("tilde~dash-under_dot.", "~-_."),
]


@pytest.mark.parametrize("spelling", ["canonical", "loose"])
def test_get_with_unsorted_query(spelling):
    """Query parameters out of order, with spaces, non-ASCII and reserved
    characters; a path with dot segments, an escaped space and UTF-8.  Our
    signer takes the query as sent, in any valid spelling (here: the
    canonical one, and one that leaves sub-delimiters unencoded and uses
    lower-case escapes)."""
    host = "api.example.amazonaws.com"
    path = "/v1/caf%C3%A9/a%20b/./x/../items"
    request, auth = boto_sign(botocore.auth.SigV4Auth, "execute-api", "GET",
                              f"https://{host}{path}", [("X-Custom", "  a   b  ")],
                              params=QUERY)
    query = encode(QUERY)
    if spelling == "loose":
        query = encode(QUERY, safe=Q + "!*'(),;:@$").replace("%E2%98%83", "%e2%98%83")
    ours = kiln("sign", service="execute-api", method="GET", host=host, path=path,
                query=query, headers=[["X-Custom", "  a   b  "]])
    assert ours["canonical_request"].split("\n")[1] == "/v1/caf%25C3%25A9/a%2520b/items"
    assert ours["canonical_request"] == auth.creq
    assert ours["string_to_sign"] == auth.sts
    assert ours["authorization"] == request.headers["Authorization"]


def test_repeated_header_values_keep_their_order():
    host = "example.amazonaws.com"
    headers = [("X-Dup", "second"), ("x-dup", "first"), ("X-Other", "\tx\ty ")]
    request, auth = boto_sign(botocore.auth.SigV4Auth, "service", "GET", f"https://{host}/",
                              headers)
    ours = kiln("sign", service="service", method="GET", host=host, path="/",
                headers=[list(h) for h in headers])
    assert "x-dup:second,first\n" in ours["canonical_request"]
    assert ours["canonical_request"] == auth.creq
    assert ours["authorization"] == request.headers["Authorization"]


S3_HOST = f"kiln-uploads.s3.{REGION}.amazonaws.com"
S3_KEY = "photos/2026 03/caf\u00e9 \u2615 (1)+final.jpg"
S3_PATH = "/" + urllib.parse.quote(S3_KEY, safe="/~")


@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
def test_s3_get(token):
    """S3 signs the path as sent (no second encoding, no dot removal)."""
    params = [("versionId", "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"), ("partNumber", "2")]
    request, auth = boto_sign(botocore.auth.S3SigV4Auth, "s3", "GET",
                              f"https://{S3_HOST}{S3_PATH}", [("Range", "bytes=0-1023")],
                              params=params, token=token)
    ours = kiln("sign", token=TOKEN if token else "", service="s3", s3=True, method="GET",
                host=S3_HOST, path=S3_PATH, query=encode(params),
                headers=[["Range", "bytes=0-1023"]])
    assert ours["canonical_request"].split("\n")[1] == S3_PATH
    assert ours["canonical_request"] == auth.creq
    assert ours["string_to_sign"] == auth.sts
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["payload_hash"] == request.headers["X-Amz-Content-SHA256"] == EMPTY_SHA256


@pytest.mark.parametrize("unsigned", [False, True], ids=["body-hash", "unsigned-payload"])
def test_s3_put(unsigned):
    body = "caf\u00e9 \u2603\nsecond line\n"
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("x-amz-meta-note", "  spaced   out  "),
               ("x-amz-server-side-encryption", "AES256")]
    context = None
    if unsigned:
        context = {"client_config": Config(s3={"payload_signing_enabled": False})}
    request, auth = boto_sign(botocore.auth.S3SigV4Auth, "s3", "PUT",
                              f"https://{S3_HOST}{S3_PATH}", headers, body.encode(),
                              context=context)
    ours = kiln("sign", service="s3", s3=True, method="PUT", host=S3_HOST, path=S3_PATH,
                headers=[list(h) for h in headers], body=body,
                **({"unsigned_payload": True} if unsigned else {}))
    assert ours["canonical_request"] == auth.creq
    assert ours["string_to_sign"] == auth.sts
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["payload_hash"] == request.headers["X-Amz-Content-SHA256"]
    assert (ours["payload_hash"] == "UNSIGNED-PAYLOAD") == unsigned


# --------------------------------------------------------------------------
# (b) presigned S3 GET
# --------------------------------------------------------------------------

@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
def test_s3_presigned_get(token):
    params = [("response-content-disposition", 'attachment; filename="a b.jpg"'),
              ("versionId", "v1")]
    request, auth = boto_sign(botocore.auth.S3SigV4QueryAuth, "s3", "GET",
                              f"https://{S3_HOST}{S3_PATH}", params=params, token=token,
                              expires=3600)
    ours = kiln("presign", token=TOKEN if token else "", service="s3", s3=True,
                method="GET", host=S3_HOST, path=S3_PATH, query=encode(params), expires=3600)
    boto_query = query_of(request.url)
    assert ours["canonical_request"] == auth.creq
    assert ours["string_to_sign"] == auth.sts
    theirs = dict(params_of(boto_query))
    assert ours["signature"] == theirs["X-Amz-Signature"]
    assert params_of(ours["query"]) == params_of(boto_query)
    assert ours["query"].endswith("&X-Amz-Signature=" + ours["signature"])
    assert theirs["X-Amz-Expires"] == "3600" and theirs["X-Amz-SignedHeaders"] == "host"
    assert ("X-Amz-Security-Token" in theirs) == token


# --------------------------------------------------------------------------
# (c) RDS IAM auth token, (d) ElastiCache IAM auth token
# --------------------------------------------------------------------------

DB_HOST = "kiln-db.cluster-c9akciq32.eu-west-3.rds.amazonaws.com"
DB_USERS = ["kiln_app", "app+ro@corp.example"]
CACHE_ID = "kiln-cache-001"
CACHE_USERS = ["kiln-app", "iam user/1"]


def rds_boto(session, token, user, port=5432):
    return client(session, "rds", token).generate_db_auth_token(
        DBHostname=DB_HOST, Port=port, DBUsername=user, Region=REGION)


def elasticache_boto(token, user):
    """How AWS's samples (and redis-py's docs) build the ElastiCache token."""
    events = HierarchicalEmitter()      # RequestSigner keeps only a weak reference
    signer = RequestSigner(ServiceId("elasticache"), REGION, "elasticache", "v4",
                           creds(token), events)
    url = f"http://{CACHE_ID}/?" + urllib.parse.urlencode({"Action": "connect", "User": user})
    signed = signer.generate_presigned_url(
        {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
        operation_name="connect", expires_in=900, region_name=REGION)
    return signed[len("http://"):]


def assert_same_token(ours, theirs, token):
    """Same host and path, same parameters, same signature; without a session
    token the very same string (with one, botocore puts X-Amz-Security-Token
    after X-Amz-SignedHeaders where we keep the canonical order)."""
    o_where, _, o_query = ours.partition("?")
    t_where, _, t_query = theirs.partition("?")
    assert o_where == t_where
    assert params_of(o_query) == params_of(t_query)
    if not token:
        assert ours == theirs


@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
@pytest.mark.parametrize("user", DB_USERS)
def test_rds_auth_token_presign(session, token, user):
    """Our presign of GET host:port/?Action=connect&DBUser=user (rds-db, 900 s)
    with the empty body's hash as payload hash, as botocore signs it."""
    theirs = rds_boto(session, token, user)
    ours = kiln("presign", token=TOKEN if token else "", service="rds-db", method="GET",
                host=f"{DB_HOST}:5432", path="/",
                query=encode([("Action", "connect"), ("DBUser", user)]), expires=900,
                unsigned_payload=False)
    assert ours["payload_hash"] == EMPTY_SHA256
    assert_same_token(f"{DB_HOST}:5432/?" + ours["query"], theirs, token)


@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
@pytest.mark.parametrize("user", CACHE_USERS)
def test_elasticache_auth_token_presign(token, user):
    theirs = elasticache_boto(token, user)
    ours = kiln("presign", token=TOKEN if token else "", service="elasticache",
                method="GET", host=CACHE_ID, path="/",
                query=encode([("Action", "connect"), ("User", user)]), expires=900,
                unsigned_payload=False)
    assert_same_token(f"{CACHE_ID}/?" + ours["query"], theirs, token)


# RDS and ElastiCache tokens sign the empty body's SHA-256 (not S3's
# UNSIGNED-PAYLOAD), as botocore and the AWS SDKs do; these compare the
# tokens aws/iam.c makes with botocore's.
@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
def test_rds_auth_token_of_iam_c(session, token):
    theirs = rds_boto(session, token, "kiln_app")
    ours = kiln("rds_token", token=TOKEN if token else "", db_host=DB_HOST, port=5432,
                user="kiln_app")["token"]
    assert_same_token(ours, theirs, token)


@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
def test_elasticache_auth_token_of_iam_c(token):
    theirs = elasticache_boto(token, "kiln-app")
    ours = kiln("elasticache_token", token=TOKEN if token else "", cluster_id=CACHE_ID,
                user="kiln-app")["token"]
    assert_same_token(ours, theirs, token)


# --------------------------------------------------------------------------
# (e) S3 POST policy
# --------------------------------------------------------------------------

@pytest.mark.parametrize("token", [False, True], ids=["static", "session-token"])
def test_s3_post_policy_signature(session, token):
    post = client(session, "s3", token).generate_presigned_post(
        Bucket="kiln-uploads", Key="u/42/${filename}",
        Fields={"acl": "private", "Content-Type": "image/png"},
        Conditions=[{"acl": "private"}, ["starts-with", "$Content-Type", "image/"],
                    ["content-length-range", 1, 10485760]],
        ExpiresIn=600)
    fields = post["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert policy["expiration"] == "2026-03-14T15:19:26Z"
    assert fields["x-amz-date"] == AMZ_DATE
    assert fields["x-amz-credential"] == f"{ACCESS_KEY}/20260314/{REGION}/s3/aws4_request"
    assert ("x-amz-security-token" in fields) == token
    ours = kiln("policy", service="s3", policy_b64=fields["policy"])
    assert ours["signature"] == fields["x-amz-signature"]
    assert ours["amz_date"] == fields["x-amz-date"]
