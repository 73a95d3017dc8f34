"""Local stand-ins for the AWS services Kiln talks to, for the black-box
tests (test_aws_*.py).  Every server runs inside the test process (threads)
on 127.0.0.1 and a port of its own, has start()/stop() (and works as a
context manager), and records what it received so that tests can assert on
it:

* ``EcsCredentialsFake``: the ECS container credentials endpoint
  (AWS_CONTAINER_CREDENTIALS_FULL_URI, optionally with the
  AWS_CONTAINER_AUTHORIZATION_TOKEN check); ``rotate()`` issues a new key
  pair; ``fetches`` counts the credentials it handed out.
* ``ImdsFake``: EC2 instance metadata, IMDSv2 only (token PUT, then the
  role's credentials); a GET without a valid token is 401.
* ``SecretsManagerFake``: GetSecretValue over the awsJson1.1 protocol with
  versions (AWSCURRENT / AWSPREVIOUS) and ``put_secret()`` to rotate; for
  rotation functions also DescribeSecret, PutSecretValue and
  UpdateSecretVersionStage, with ``enable_rotation()`` and
  ``start_rotation()`` (what RotateSecret does before it invokes the
  function: a new version id holding AWSPENDING and no value yet).  Every
  request's SigV4 signature is recomputed with botocore and compared;
  ``failures`` lists every request that did not pass (tests assert it is
  empty).
* ``EcsFake``: ECS UpdateService (awsJson1.1), recording every
  forceNewDeployment.  ``ElastiCacheFake``: ElastiCache ModifyUser (the
  Query protocol, form body, XML answers), handing each user's new password
  list to a callback (the tests apply it to the real Redis with ACL
  SETUSER).  Both SigV4-checked like Secrets Manager.
* ``SesFake``: SES v1 SendEmail (the Query protocol, signing name "ses"),
  SigV4-checked the same way, recording each message (source, recipient,
  subject, text) and answering MessageRejected, Throttling or 503 on
  demand (test_mail_ses.py).
* ``LambdaRuntimeFake``: the Lambda Runtime API a custom runtime polls
  (invocation/next as a long poll, response, error, init/error);
  ``invoke()`` hands it one event and waits for the function's answer.
* ``PgIamProxy``: a PostgreSQL front door that wants TLS and an RDS IAM
  token as the password (verified by regenerating it with botocore's
  ``generate_db_auth_token``), then logs in to the real PostgreSQL of the
  test services with the real role's SCRAM password and splices the bytes.
* ``ValkeyIamProxy``: a TLS Redis front door that wants
  ``AUTH <user> <ElastiCache IAM token>`` (regenerated with botocore's
  SigV4QueryAuth and compared), forwards to the plain Redis of the test
  services, and keeps answering later AUTHs (re-authentication) itself.

All of them share a ``CredentialStore``: the access keys AWS would know
(static ones the tests hand to kiln, and whatever the ECS / IMDS fakes
issued).

Verification freezes botocore's signing clock at the request's own
X-Amz-Date: botocore 1.29 (Debian) reads ``datetime.datetime.utcnow()``
from ``botocore.auth``'s module global ``datetime``; this module replaces
that global, once, with a stub whose ``utcnow()`` answers a per-thread
frozen time (or the real time when none is set), so that fakes verifying in
their threads and botocore clients signing in the test thread do not
disturb each other.
"""

import base64
import collections
import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import os
import pathlib
import select
import socket
import socketserver
import ssl
import string
import struct
import subprocess
import tempfile
import threading
import time
import traceback
import types
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.auth
import botocore.session
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

REGION = "us-east-1"
ACCOUNT = "123456789012"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
# How far a request's X-Amz-Date may be from the server's clock (AWS: 15 min).
CLOCK_SKEW = _dt.timedelta(minutes=15)
TOKEN_EXPIRES = 900   # RDS and ElastiCache IAM tokens: X-Amz-Expires=900


def utcnow():
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def rfc3339(t):
    """UTC datetime (naive) → 2024-01-02T03:04:05Z."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------
# botocore's clock, frozen per thread
# --------------------------------------------------------------------------

_clock = threading.local()


class _ClockDatetime(_dt.datetime):
    """datetime.datetime whose utcnow() is the calling thread's frozen time."""

    @classmethod
    def utcnow(cls):
        frozen = getattr(_clock, "frozen", None)
        return frozen if frozen is not None else utcnow()


class _DatetimeModule(types.ModuleType):
    """Stands in for the ``datetime`` module inside botocore.auth: everything
    is the real module's except ``datetime`` (the class above)."""

    def __getattr__(self, name):
        return getattr(_dt, name)


_stub = _DatetimeModule("datetime")
_stub.datetime = _ClockDatetime
_install_lock = threading.Lock()


def _install_clock():
    with _install_lock:
        if botocore.auth.datetime is not _stub:
            # botocore.auth does `import datetime` and calls
            # datetime.datetime.utcnow() in SigV4Auth.add_auth,
            # SigV4QueryAuth (inherited) and S3SigV4PostAuth.add_auth.
            botocore.auth.datetime = _stub


_install_clock()


@contextlib.contextmanager
def frozen_clock(when):
    """botocore signs at ``when`` (naive UTC datetime) in this thread."""
    _install_clock()
    before = getattr(_clock, "frozen", None)
    _clock.frozen = when
    try:
        yield
    finally:
        _clock.frozen = before


def parse_amz_date(value):
    return _dt.datetime.strptime(value, SIGV4_TIMESTAMP)


# --------------------------------------------------------------------------
# credentials AWS knows
# --------------------------------------------------------------------------

_ALNUM = string.ascii_uppercase + string.digits


def _rand(alphabet, n):
    return "".join(alphabet[b % len(alphabet)] for b in os.urandom(n))


class Creds:
    """One access key: permanent (AKIA…, no token) or temporary (ASIA…, with
    a session token and an expiry)."""

    def __init__(self, access_key, secret_key, token=None, expiration=None, source="static"):
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.expiration = expiration   # naive UTC datetime or None
        self.source = source

    @property
    def botocore(self):
        return Credentials(self.access_key, self.secret_key, self.token)

    def env(self):
        """AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN]."""
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if self.token:
            env["AWS_SESSION_TOKEN"] = self.token
        return env

    def secrets(self):
        """Strings that must never appear in a log."""
        return [s for s in (self.secret_key, self.token) if s]

    def __repr__(self):
        return f"<Creds {self.access_key} ({self.source})>"


class CredentialStore:
    """The access keys the fakes accept, shared by all of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_id = {}

    def add(self, creds):
        with self._lock:
            self._by_id[creds.access_key] = creds
        return creds

    def static(self):
        """A new permanent key pair (AKIA…)."""
        return self.add(Creds("AKIA" + _rand(_ALNUM, 16),
                              _rand(string.ascii_letters + string.digits + "+/", 40)))

    def temporary(self, lifetime=3600, source="sts"):
        """A new temporary key pair (ASIA…) with a session token."""
        token = "IQoJb3JpZ2luX2VjE" + base64.b64encode(os.urandom(96)).decode()
        return self.add(Creds("ASIA" + _rand(_ALNUM, 16),
                              _rand(string.ascii_letters + string.digits + "+/", 40),
                              token=token, expiration=utcnow() + _dt.timedelta(seconds=lifetime),
                              source=source))

    def revoke(self, access_key):
        with self._lock:
            self._by_id.pop(access_key, None)

    def get(self, access_key):
        with self._lock:
            return self._by_id.get(access_key)

    def all(self):
        with self._lock:
            return list(self._by_id.values())


class AuthError(Exception):
    """A request or token AWS would refuse: ``code`` is the error type."""

    def __init__(self, code, message, status=400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _lookup_creds(store, access_key, token, when=None):
    """The Creds for ``access_key`` after the session-token checks AWS makes."""
    creds = store.get(access_key)
    if creds is None:
        raise AuthError("UnrecognizedClientException",
                        "The security token included in the request is invalid.")
    if creds.token is None and token:
        raise AuthError("UnrecognizedClientException",
                        "The security token included in the request is invalid. "
                        "(a session token was sent with a permanent key)")
    if creds.token is not None:
        if not token:
            raise AuthError("UnrecognizedClientException",
                            "The security token included in the request is invalid. "
                            "(temporary key without its session token)")
        if not hmac.compare_digest(token, creds.token):
            raise AuthError("UnrecognizedClientException",
                            "The security token included in the request is invalid.")
        if creds.expiration is not None and (when or utcnow()) > creds.expiration:
            raise AuthError("ExpiredTokenException",
                            "The security token included in the request is expired")
    return creds


def _check_time(amz_date, now=None, expires=None):
    """X-Amz-Date within the skew AWS allows; a presigned token not expired."""
    try:
        when = parse_amz_date(amz_date)
    except (TypeError, ValueError):
        raise AuthError("IncompleteSignatureException",
                        f"X-Amz-Date {amz_date!r} is not YYYYMMDD'T'HHMMSS'Z'") from None
    now = now or utcnow()
    if when - now > CLOCK_SKEW:
        raise AuthError("InvalidSignatureException",
                        f"Signature not yet current: {amz_date} is still later than "
                        f"{(now + CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)}")
    if expires is None:
        if now - when > CLOCK_SKEW:
            raise AuthError("InvalidSignatureException",
                            f"Signature expired: {amz_date} is now earlier than "
                            f"{(now - CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)}")
    elif now > when + _dt.timedelta(seconds=expires):
        raise AuthError("InvalidSignatureException",
                        f"Signature expired: {amz_date} + {expires} s is before now")
    return when


# --------------------------------------------------------------------------
# SigV4, header-signed requests (Secrets Manager)
# --------------------------------------------------------------------------

class _SignedHeadersSigV4(botocore.auth.SigV4Auth):
    """botocore's SigV4Auth over exactly the headers the client listed in
    SignedHeaders (what AWS does: it trusts the client's list, provided it
    has host and the date)."""

    def __init__(self, credentials, service, region, signed):
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request):
        out = HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in self._signed:
                out[name.lower()] = value
        return out


def parse_authorization(value):
    """'AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…' →
    dict(credential=[akid, date, region, service, term], signed=[…], signature)."""
    if not value or not value.startswith("AWS4-HMAC-SHA256 "):
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires the AWS4-HMAC-SHA256 algorithm")
    parts = {}
    for item in value[len("AWS4-HMAC-SHA256 "):].split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            raise AuthError("IncompleteSignatureException", f"malformed Authorization item {item!r}")
        parts[k] = v
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
    if missing:
        raise AuthError("IncompleteSignatureException",
                        f"Authorization header lacks {', '.join(missing)}")
    cred = parts["Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise AuthError("IncompleteSignatureException",
                        f"Credential {parts['Credential']!r} is not AKID/date/region/service/aws4_request")
    return {"credential": cred, "signed": parts["SignedHeaders"].split(";"),
            "signature": parts["Signature"]}


def verify_sigv4_request(store, service, region, method, url, headers, body):
    """Check one header-signed request as AWS would; returns the Creds or
    raises AuthError.  ``headers``: list of (name, value) as received."""
    def header(name):
        vals = [v for n, v in headers if n.lower() == name]
        return vals[0] if vals else None

    auth = header("authorization")
    if auth is None:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token",
                        status=403)
    a = parse_authorization(auth)
    akid, scope_date, scope_region, scope_service, _ = a["credential"]
    signed = a["signed"]
    if signed != sorted(signed) or len(set(signed)) != len(signed) or \
            any(s != s.lower() for s in signed):
        raise AuthError("IncompleteSignatureException",
                        f"SignedHeaders {';'.join(signed)!r} not lower-case, sorted and unique")
    if "host" not in signed:
        raise AuthError("IncompleteSignatureException", "'Host' must be a signed header")
    amz_date = header("x-amz-date")
    if amz_date is None or "x-amz-date" not in signed:
        raise AuthError("IncompleteSignatureException",
                        "X-Amz-Date must be sent and signed (Date is not accepted here)")
    for name in signed:
        if header(name) is None:
            raise AuthError("IncompleteSignatureException", f"signed header {name!r} was not sent")
    when = _check_time(amz_date)
    if scope_date != amz_date[:8]:
        raise AuthError("InvalidSignatureException",
                        f"credential scope date {scope_date} is not the X-Amz-Date's {amz_date[:8]}")
    if scope_region != region:
        raise AuthError("InvalidSignatureException",
                        f"Credential should be scoped to a valid region, not '{scope_region}' "
                        f"(want {region})")
    if scope_service != service:
        raise AuthError("InvalidSignatureException",
                        f"Credential should be scoped to correct service: '{service}' "
                        f"(got '{scope_service}')")
    token = header("x-amz-security-token")
    creds = _lookup_creds(store, akid, token)
    sha = header("x-amz-content-sha256")
    if sha is not None and sha != hashlib.sha256(body).hexdigest():
        raise AuthError("InvalidSignatureException",
                        "x-amz-content-sha256 is not the SHA-256 of the body")
    if creds.token is not None and "x-amz-security-token" not in signed:
        # AWS itself accepts an unsigned token header on some services; the
        # SDKs all sign it, and so must Kiln.
        raise AuthError("InvalidSignatureException",
                        "X-Amz-Security-Token was sent but not signed")

    req = AWSRequest(method=method, url=url, data=body,
                     headers={n: header(n) for n in signed})
    signer = _SignedHeadersSigV4(creds.botocore, service, region, set(signed))
    with frozen_clock(when):
        signer.add_auth(req)
    mine = parse_authorization(req.headers["Authorization"])
    if mine["signed"] != signed:
        raise AuthError("InvalidSignatureException",
                        f"signed headers differ: client {signed}, botocore {mine['signed']}")
    if not hmac.compare_digest(mine["signature"], a["signature"]):
        raise AuthError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you "
                        "provided. Check your AWS Secret Access Key and signing method.")
    return creds


# --------------------------------------------------------------------------
# HTTP servers
# --------------------------------------------------------------------------

class Call:
    """One HTTP request a fake received."""

    def __init__(self, method, path, headers, body):
        self.time = time.time()
        self.method = method
        self.path = path
        self.headers = headers       # [(name, value)]
        self.body = body
        self.status = None
        self.error = None            # error type when refused
        self.detail = None
        self.access_key = None

    def header(self, name):
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def __repr__(self):
        extra = f" {self.error}: {self.detail}" if self.error else ""
        return f"<Call {self.method} {self.path} -> {self.status}{extra}>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client gone mid-answer (a process stopped while it waited in a
        # long poll) is not a fake's error; anything else is printed.
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None   # set per server class

    def log_message(self, fmt, *args):   # quiet
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        call = Call(self.command, self.path, list(self.headers.items()), body)
        call.sock = self.connection      # for fakes that hold a call open (long polls)
        try:
            status, headers, out = self.server.fake.handle(call)
        except Exception as e:   # a bug in the fake: answer 500 and remember it
            status, headers, out = 500, {"Content-Type": "text/plain"}, f"fake error: {e!r}".encode()
            call.error, call.detail = "FakeError", repr(e)
        call.status = status
        self.server.fake._record(call)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve


class HttpFake:
    """Base: a threaded HTTP server on 127.0.0.1:<free port>."""

    def __init__(self):
        self._lock = threading.Lock()
        self.calls = []
        self._server = None
        self._thread = None
        self.tls = None        # an ssl.SSLContext set before start(): HTTPS

    def _record(self, call):
        with self._lock:
            self.calls.append(call)

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def base_url(self):
        if self.tls is not None:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def handle(self, call):
        raise NotImplementedError


def _json(status, obj, headers=None, ctype="application/json"):
    h = {"Content-Type": ctype}
    h.update(headers or {})
    return status, h, json.dumps(obj).encode()


# --------------------------------------------------------------------------
# ECS container credentials
# --------------------------------------------------------------------------

class EcsCredentialsFake(HttpFake):
    """GET <path> → the task role's credentials.  ``auth_token``: the
    Authorization header value required (FULL_URI mode with
    AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]); missing → 401, wrong → 403."""

    def __init__(self, store, auth_token=None, path=None, lifetime=3600,
                 role_arn=f"arn:aws:iam::{ACCOUNT}:role/kiln-task"):
        super().__init__()
        self.store = store
        self.auth_token = auth_token
        self.path = path or f"/v2/credentials/{uuid.uuid4()}"
        self.lifetime = lifetime
        self.role_arn = role_arn
        self.fetches = 0           # credentials handed out (200 answers)
        self.refused = 0           # 401/403/404 answers
        self.issued = []
        self.current = None
        self.rotate()

    @property
    def url(self):
        return self.base_url + self.path

    def rotate(self, revoke_old=False):
        """A new key pair from now on; the old one stays valid unless
        ``revoke_old`` (STS credentials live until they expire)."""
        old = self.current
        self.current = self.store.temporary(self.lifetime, source="ecs")
        self.issued.append(self.current)
        if revoke_old and old is not None:
            self.store.revoke(old.access_key)
        return self.current

    def handle(self, call):
        if call.method != "GET" or urllib.parse.urlsplit(call.path).path != self.path:
            self.refused += 1
            call.error = "NotFound"
            return _json(404, {"message": "not found"})
        if self.auth_token is not None:
            got = call.header("Authorization")
            if got is None:
                self.refused += 1
                call.error = "Unauthorized"
                return _json(401, {"message": "missing Authorization header"})
            if not hmac.compare_digest(got, self.auth_token):
                self.refused += 1
                call.error = "Forbidden"
                return _json(403, {"message": "invalid Authorization token"})
        c = self.current
        with self._lock:
            self.fetches += 1
        return _json(200, {"AccessKeyId": c.access_key, "SecretAccessKey": c.secret_key,
                           "Token": c.token, "Expiration": rfc3339(c.expiration),
                           "RoleArn": self.role_arn})

    def secrets(self):
        out = [self.auth_token] if self.auth_token else []
        for c in self.issued:
            out += c.secrets()
        return out


# --------------------------------------------------------------------------
# EC2 instance metadata, IMDSv2
# --------------------------------------------------------------------------

class ImdsFake(HttpFake):
    """IMDSv2: PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds
    1..21600) → token; GET /latest/meta-data/iam/security-credentials/ →
    the role name; GET …/<role> → the credentials.  Every GET needs a live
    X-aws-ec2-metadata-token (else 401); IMDSv1 (no token) is refused."""

    CRED_PATH = "/latest/meta-data/iam/security-credentials/"

    def __init__(self, store, role="kiln-instance-role", lifetime=3600):
        super().__init__()
        self.store = store
        self.role = role
        self.lifetime = lifetime
        self.tokens = {}          # token → expiry (monotonic)
        self.token_puts = 0
        self.fetches = 0          # credentials handed out
        self.unauthorized = 0     # GETs refused for lack of a valid token
        self.issued = []
        self.current = None
        self.rotate()

    def rotate(self):
        self.current = self.store.temporary(self.lifetime, source="imds")
        self.issued.append(self.current)
        return self.current

    def handle(self, call):
        path = urllib.parse.urlsplit(call.path).path
        if path == "/latest/api/token":
            if call.method != "PUT":
                call.error = "MethodNotAllowed"
                return 405, {"Content-Type": "text/plain"}, b"Method Not Allowed"
            if call.header("X-Forwarded-For") is not None:
                call.error = "Forbidden"
                return 403, {"Content-Type": "text/plain"}, b"Forbidden"
            ttl = call.header("X-aws-ec2-metadata-token-ttl-seconds")
            try:
                ttl = int(ttl)
                if not 1 <= ttl <= 21600:
                    raise ValueError
            except (TypeError, ValueError):
                call.error = "BadRequest"
                return 400, {"Content-Type": "text/plain"}, b"Bad Request"
            token = base64.b64encode(os.urandom(42)).decode()
            with self._lock:
                self.tokens[token] = time.monotonic() + ttl
                self.token_puts += 1
            return 200, {"Content-Type": "text/plain",
                         "X-aws-ec2-metadata-token-ttl-seconds": str(ttl)}, token.encode()
        if call.method not in ("GET", "HEAD"):
            call.error = "MethodNotAllowed"
            return 405, {"Content-Type": "text/plain"}, b"Method Not Allowed"
        token = call.header("X-aws-ec2-metadata-token")
        with self._lock:
            exp = self.tokens.get(token) if token else None
        if exp is None or exp < time.monotonic():
            with self._lock:
                self.unauthorized += 1
            call.error = "Unauthorized"
            return 401, {"Content-Type": "text/plain"}, b"Unauthorized"
        if path == self.CRED_PATH:
            return 200, {"Content-Type": "text/plain"}, self.role.encode()
        if path == self.CRED_PATH + self.role:
            c = self.current
            with self._lock:
                self.fetches += 1
            return _json(200, {"Code": "Success", "LastUpdated": rfc3339(utcnow()),
                               "Type": "AWS-HMAC", "AccessKeyId": c.access_key,
                               "SecretAccessKey": c.secret_key, "Token": c.token,
                               "Expiration": rfc3339(c.expiration)}, ctype="text/plain")
        call.error = "NotFound"
        return 404, {"Content-Type": "text/plain"}, b"Not Found"

    def secrets(self):
        out = []
        for c in self.issued:
            out += c.secrets()
        return out


# --------------------------------------------------------------------------
# Secrets Manager
# --------------------------------------------------------------------------

class Secret:
    def __init__(self, arn, name):
        self.arn = arn
        self.name = name
        # version id → (value, created); value None: a version RotateSecret
        # made that has no value yet (GetSecretValue cannot find it)
        self.versions = collections.OrderedDict()
        self.stages = {}                            # stage → version id
        self.rotation_enabled = False

    def stages_of(self, vid):
        return sorted(st for st, v in self.stages.items() if v == vid)


class SecretsManagerFake(HttpFake):
    """GetSecretValue (awsJson1.1).  ``create_secret``/``put_secret`` set
    values (a dict is stored as its JSON text); every request must carry a
    valid SigV4 signature of a key in ``store`` for service
    "secretsmanager" and ``region``.  ``failures``: the calls refused for
    authentication (signature, key, token, clock) reasons."""

    SERVICE = "secretsmanager"
    AUTH_ERRORS = ("MissingAuthenticationTokenException", "IncompleteSignatureException",
                   "InvalidSignatureException", "UnrecognizedClientException",
                   "ExpiredTokenException")

    def __init__(self, store, region=REGION, account=ACCOUNT):
        super().__init__()
        self.store = store
        self.region = region
        self.account = account
        self.secrets_by_arn = collections.OrderedDict()
        self.denied = set()     # ARNs whose GetSecretValue answers AccessDeniedException

    # -- managing secrets ------------------------------------------------------
    def create_secret(self, name, value):
        arn = (f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{name}-"
               f"{_rand(string.ascii_letters + string.digits, 6)}")
        with self._lock:
            self.secrets_by_arn[arn] = Secret(arn, name)
        self.put_secret(arn, value)
        return arn

    def put_secret(self, secret_id, value):
        """A new AWSCURRENT version; the old current becomes AWSPREVIOUS.
        Returns the new version id."""
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        with self._lock:
            s = self._find(secret_id)
            if s is None:
                raise KeyError(secret_id)
            vid = str(uuid.uuid4())
            s.versions[vid] = (value, time.time())
            if "AWSCURRENT" in s.stages:
                s.stages["AWSPREVIOUS"] = s.stages["AWSCURRENT"]
            s.stages["AWSCURRENT"] = vid
            return vid

    def value(self, secret_id, stage="AWSCURRENT", version=None):
        with self._lock:
            s = self._find(secret_id)
            return s.versions[version or s.stages[stage]][0]

    def json_value(self, secret_id, stage="AWSCURRENT", version=None):
        return json.loads(self.value(secret_id, stage, version))

    # -- rotation ----------------------------------------------------------------
    def enable_rotation(self, secret_id, enabled=True):
        with self._lock:
            self._find(secret_id).rotation_enabled = enabled

    def start_rotation(self, secret_id, token=None):
        """What RotateSecret does before invoking the rotation function: a new
        version id (the ClientRequestToken) holding AWSPENDING, no value
        yet.  Returns the token."""
        token = token or str(uuid.uuid4())
        with self._lock:
            s = self._find(secret_id)
            s.versions[token] = (None, time.time())
            s.stages["AWSPENDING"] = token
        return token

    def stages(self, secret_id):
        """{version id: [stages]} of the versions that hold any stage."""
        with self._lock:
            s = self._find(secret_id)
            return {vid: s.stages_of(vid) for vid in s.versions if s.stages_of(vid)}

    def version_of(self, secret_id, stage):
        with self._lock:
            return self._find(secret_id).stages.get(stage)

    def operations(self, op, ok=None):
        """The calls of one operation ("PutSecretValue"…), in order; only
        those answered 200 when ``ok`` is True, only refused ones when False."""
        with self._lock:
            calls = list(self.calls)
        return [c for c in calls if c.header("X-Amz-Target") == f"secretsmanager.{op}" and
                (ok is None or (c.status == 200) == ok)]

    def all_values(self):
        """Every value of every version (for "not in the logs" checks): the
        SecretString itself and, of a JSON object, the fields that hold
        secrets (password, secret, key, token in the name), not user or
        host names, which a log may name."""
        out = []
        with self._lock:
            for s in self.secrets_by_arn.values():
                for value, _ in s.versions.values():
                    if value is None:
                        continue
                    out.append(value)
                    try:
                        obj = json.loads(value)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        out += [v for k, v in obj.items() if isinstance(v, str) and v and
                                any(w in k.lower() for w in ("password", "secret", "key", "token"))]
        return out

    def _find(self, secret_id):
        if secret_id in self.secrets_by_arn:
            return self.secrets_by_arn[secret_id]
        for s in self.secrets_by_arn.values():
            # a name, or a partial ARN (no random suffix)
            if secret_id == s.name or secret_id == s.arn[:-7]:
                return s
        return None

    # -- what the tests look at ------------------------------------------------
    @property
    def failures(self):
        with self._lock:
            return [c for c in self.calls if c.error in self.AUTH_ERRORS or c.error == "FakeError"]

    def gets(self, secret_id=None, ok=True):
        """GetSecretValue calls (answered 200 when ``ok``), of one secret."""
        with self._lock:
            calls = list(self.calls)
        out = []
        for c in calls:
            if c.header("X-Amz-Target") != "secretsmanager.GetSecretValue":
                continue
            if ok and c.status != 200:
                continue
            if secret_id is not None:
                try:
                    sid = json.loads(c.body).get("SecretId")
                except ValueError:
                    continue
                s = self._find(sid)
                if s is None or (secret_id != s.arn and secret_id != s.name):
                    continue
            out.append(c)
        return out

    # -- the protocol ------------------------------------------------------------
    def _error(self, call, status, code, message):
        call.error, call.detail = code, message
        return _json(status, {"__type": code, "Message": message},
                     headers={"x-amzn-ErrorType": f"{code}:", "x-amzn-RequestId": str(uuid.uuid4())},
                     ctype="application/x-amz-json-1.1")

    def handle(self, call):
        if call.method != "POST" or urllib.parse.urlsplit(call.path).path != "/":
            return self._error(call, 404, "UnknownOperationException", "not found")
        host = call.header("Host") or f"127.0.0.1:{self.port}"
        url = f"http://{host}{call.path}"
        try:
            creds = verify_sigv4_request(self.store, self.SERVICE, self.region, call.method, url,
                                         call.headers, call.body)
        except AuthError as e:
            return self._error(call, e.status, e.code, e.message)
        call.access_key = creds.access_key
        ctype = (call.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-amz-json-1.1":
            return self._error(call, 400, "SerializationException",
                               f"Content-Type {ctype!r} is not application/x-amz-json-1.1")
        target = call.header("X-Amz-Target") or ""
        op = target[len("secretsmanager."):] if target.startswith("secretsmanager.") else None
        handler = {"GetSecretValue": self._get_secret_value,
                   "DescribeSecret": self._describe_secret,
                   "PutSecretValue": self._put_secret_value,
                   "UpdateSecretVersionStage": self._update_secret_version_stage}.get(op)
        if handler is None:
            return self._error(call, 400, "UnknownOperationException",
                               f"operation {target!r} is not served by this fake")
        try:
            req = json.loads(call.body or b"{}")
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            return self._error(call, 400, "SerializationException", "body is not a JSON object")
        sid = req.get("SecretId")
        if not isinstance(sid, str) or not sid:
            return self._error(call, 400, "ValidationException",
                               "1 validation error detected: Value null at 'secretId' failed to "
                               "satisfy constraint: Member must not be null")
        return handler(call, creds, req, sid)

    def _ok(self, obj):
        return _json(200, obj, headers={"x-amzn-RequestId": str(uuid.uuid4())},
                     ctype="application/x-amz-json-1.1")

    def _not_found(self, call):
        return self._error(call, 400, "ResourceNotFoundException",
                           "Secrets Manager can't find the specified secret.")

    def _get_secret_value(self, call, creds, req, sid):
        with self._lock:
            s = self._find(sid)
            if s is None:
                pass
            else:
                stage = req.get("VersionStage")
                vid = req.get("VersionId")
                if vid is None:
                    vid = s.stages.get(stage or "AWSCURRENT")
                elif stage is not None and s.stages.get(stage) != vid:
                    vid = None
                found = vid in s.versions and s.versions[vid][0] is not None if vid else False
                if found:
                    value, created = s.versions[vid]
                    stages = s.stages_of(vid)
                denied = s.arn in self.denied
        if s is None:
            return self._not_found(call)
        if denied:
            return self._error(call, 400, "AccessDeniedException",
                               f"User: {creds.access_key} is not authorized to perform: "
                               f"secretsmanager:GetSecretValue on resource: {sid}")
        if not found:
            return self._error(call, 400, "ResourceNotFoundException",
                               "Secrets Manager can't find the specified secret value for "
                               "staging label: " + str(req.get("VersionStage") or "AWSCURRENT"))
        return self._ok({"ARN": s.arn, "Name": s.name, "VersionId": vid, "SecretString": value,
                         "VersionStages": stages, "CreatedDate": round(created, 3)})

    def _describe_secret(self, call, creds, req, sid):
        with self._lock:
            s = self._find(sid)
            if s is not None:
                out = {"ARN": s.arn, "Name": s.name, "RotationEnabled": s.rotation_enabled,
                       "VersionIdsToStages": {vid: s.stages_of(vid) for vid in s.versions
                                              if s.stages_of(vid)}}
                if s.rotation_enabled:
                    out["RotationLambdaARN"] = (f"arn:aws:lambda:{self.region}:{self.account}:"
                                                "function:kiln-rotate")
        if s is None:
            return self._not_found(call)
        return self._ok(out)

    def _put_secret_value(self, call, creds, req, sid):
        """A new version with the token as its id (an existing id: the same
        value again is fine, another one is ResourceExistsException); the
        stages given (default AWSCURRENT) move onto it."""
        token = req.get("ClientRequestToken")
        value = req.get("SecretString")
        stages = req.get("VersionStages", ["AWSCURRENT"])
        if not isinstance(token, str) or not 32 <= len(token) <= 64:
            return self._error(call, 400, "ValidationException",
                               "ClientRequestToken must be 32 to 64 characters")
        if not isinstance(value, str):
            return self._error(call, 400, "InvalidParameterException",
                               "You must provide either SecretString or SecretBinary.")
        if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages):
            return self._error(call, 400, "ValidationException", "VersionStages is a list")
        with self._lock:
            s = self._find(sid)
            exists = s is not None and s.versions.get(token, (None,))[0]
            if s is not None and exists is None:
                s.versions[token] = (value, time.time())
                for st in stages:
                    if st == "AWSCURRENT" and s.stages.get("AWSCURRENT") not in (None, token):
                        s.stages["AWSPREVIOUS"] = s.stages["AWSCURRENT"]
                    s.stages[st] = token
            out = s and {"ARN": s.arn, "Name": s.name, "VersionId": token,
                         "VersionStages": s.stages_of(token)}
        if s is None:
            return self._not_found(call)
        if exists is not None and exists != value:
            return self._error(call, 400, "ResourceExistsException",
                               f"A resource with the ID you requested already exists: version "
                               f"{token} has another value.")
        return self._ok(out)

    def _update_secret_version_stage(self, call, creds, req, sid):
        stage = req.get("VersionStage")
        to = req.get("MoveToVersionId")
        frm = req.get("RemoveFromVersionId")
        if not isinstance(stage, str) or not stage:
            return self._error(call, 400, "ValidationException", "VersionStage is required")
        with self._lock:
            s = self._find(sid)
            problem = None
            if s is not None:
                holder = s.stages.get(stage)
                if to is not None and to not in s.versions:
                    problem = f"version {to} does not exist"
                elif frm is not None and holder != frm:
                    problem = f"the staging label {stage} is not attached to version {frm}"
                elif to is not None and holder not in (None, to) and frm is None:
                    problem = (f"the staging label {stage} is attached to version {holder}: "
                               "name it in RemoveFromVersionId")
                else:
                    if frm is not None:
                        del s.stages[stage]
                    if to is not None:
                        s.stages[stage] = to
                    if stage == "AWSCURRENT" and holder not in (None, to):
                        s.stages["AWSPREVIOUS"] = holder
                out = {"ARN": s.arn, "Name": s.name}
        if s is None:
            return self._not_found(call)
        if problem:
            return self._error(call, 400, "InvalidParameterException", problem)
        return self._ok(out)


# --------------------------------------------------------------------------
# ECS (UpdateService) and ElastiCache (ModifyUser)
# --------------------------------------------------------------------------

class _SignedFake(HttpFake):
    """Base of the fakes below: every request SigV4-checked for SERVICE."""

    SERVICE = None
    AUTH_ERRORS = SecretsManagerFake.AUTH_ERRORS

    def __init__(self, store, region=REGION, account=ACCOUNT):
        super().__init__()
        self.store = store
        self.region = region
        self.account = account

    @property
    def failures(self):
        with self._lock:
            return [c for c in self.calls if c.error in self.AUTH_ERRORS or c.error == "FakeError"]

    def _verify(self, call):
        host = call.header("Host") or f"127.0.0.1:{self.port}"
        creds = verify_sigv4_request(self.store, self.SERVICE, self.region, call.method,
                                     f"http://{host}{call.path}", call.headers, call.body)
        call.access_key = creds.access_key
        return creds


class EcsFake(_SignedFake):
    """ECS UpdateService.  ``updates``: [(cluster, service, forceNewDeployment,
    time)] of the accepted calls; ``services``: the (cluster, service) pairs
    that exist (others answer ServiceNotFoundException); ``fail_next``: that
    many calls answer ServerException first."""

    SERVICE = "ecs"
    TARGET = "AmazonEC2ContainerServiceV20141113.UpdateService"

    def __init__(self, store, services=(("kiln", "kiln-api"),), **kw):
        super().__init__(store, **kw)
        self.services = set(services)
        self.updates = []
        self.fail_next = 0

    def _error(self, call, status, code, message):
        call.error, call.detail = code, message
        return _json(status, {"__type": code, "message": message},
                     ctype="application/x-amz-json-1.1")

    def handle(self, call):
        if call.method != "POST" or urllib.parse.urlsplit(call.path).path != "/":
            return self._error(call, 404, "UnknownOperationException", "not found")
        try:
            self._verify(call)
        except AuthError as e:
            return self._error(call, e.status, e.code, e.message)
        if call.header("X-Amz-Target") != self.TARGET:
            return self._error(call, 400, "UnknownOperationException",
                               f"operation {call.header('X-Amz-Target')!r} is not served here")
        ctype = (call.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-amz-json-1.1":
            return self._error(call, 400, "SerializationException", f"Content-Type {ctype!r}")
        try:
            req = json.loads(call.body)
        except ValueError:
            return self._error(call, 400, "SerializationException", "body is not JSON")
        cluster, service = req.get("cluster"), req.get("service")
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                return self._error(call, 500, "ServerException", "try again")
            if (cluster, service) not in self.services:
                return self._error(call, 400, "ServiceNotFoundException",
                                   f"Service {service} not found in cluster {cluster}")
            self.updates.append((cluster, service, req.get("forceNewDeployment") is True,
                                 time.time()))
            dep = f"ecs-svc/{len(self.updates):019d}"
        arn = f"arn:aws:ecs:{self.region}:{self.account}:service/{cluster}/{service}"
        return _json(200, {"service": {
            "serviceArn": arn, "serviceName": service, "status": "ACTIVE",
            "deployments": [{"id": dep, "status": "PRIMARY", "rolloutState": "IN_PROGRESS"}]}},
            ctype="application/x-amz-json-1.1")


class ElastiCacheFake(_SignedFake):
    """ElastiCache ModifyUser with Passwords.member.N.  ``users``: user id →
    user name of the users that exist; ``on_modify(user_name, passwords)``
    applies the new password list (to the real Redis: ACL SETUSER);
    ``modifications``: [(user id, number of passwords, time)];
    ``busy_next``: that many calls answer InvalidUserState first (a
    modification still being applied)."""

    SERVICE = "elasticache"
    XMLNS = "http://elasticache.amazonaws.com/doc/2015-02-02/"

    def __init__(self, store, on_modify=None, **kw):
        super().__init__(store, **kw)
        self.users = {}
        self.on_modify = on_modify
        self.modifications = []
        self.passwords_seen = []
        self.busy_next = 0

    def _error(self, call, status, code, message, kind="Sender"):
        call.error, call.detail = code, message
        body = (f'<ErrorResponse xmlns="{self.XMLNS}"><Error><Type>{kind}</Type>'
                f"<Code>{code}</Code><Message>{message}</Message></Error>"
                f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
        return status, {"Content-Type": "text/xml"}, body.encode()

    def handle(self, call):
        if call.method != "POST" or urllib.parse.urlsplit(call.path).path != "/":
            return self._error(call, 404, "UnknownOperation", "not found")
        try:
            self._verify(call)
        except AuthError as e:
            return self._error(call, e.status, e.code, e.message)
        ctype = (call.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._error(call, 400, "InvalidParameterValue", f"Content-Type {ctype!r}")
        form = dict(urllib.parse.parse_qsl(call.body.decode(), keep_blank_values=True))
        if form.get("Action") != "ModifyUser" or form.get("Version") != "2015-02-02":
            return self._error(call, 400, "InvalidAction",
                               f"{form.get('Action')!r} (version {form.get('Version')!r})")
        user_id = form.get("UserId", "")
        pws = [form[k] for k in sorted(k for k in form if k.startswith("Passwords.member."))]
        with self._lock:
            self.passwords_seen += pws
            if self.busy_next:
                self.busy_next -= 1
                return self._error(call, 400, "InvalidUserState",
                                   f"User {user_id} is not in active state.")
            name = self.users.get(user_id)
        if name is None:
            return self._error(call, 404, "UserNotFound", f"User {user_id} not found.")
        if not 1 <= len(pws) <= 2 or any(not 16 <= len(p) <= 128 for p in pws):
            return self._error(call, 400, "InvalidParameterValue",
                               "Passwords: one or two, 16 to 128 characters each")
        if self.on_modify is not None:
            self.on_modify(name, pws)
        with self._lock:
            self.modifications.append((user_id, len(pws), time.time()))
        body = (f'<ModifyUserResponse xmlns="{self.XMLNS}"><ModifyUserResult>'
                f"<UserId>{user_id}</UserId><UserName>{name}</UserName>"
                f"<Status>modifying</Status><Engine>valkey</Engine>"
                f"<Authentication><Type>password</Type><PasswordCount>{len(pws)}</PasswordCount>"
                f"</Authentication></ModifyUserResult><ResponseMetadata><RequestId>"
                f"{uuid.uuid4()}</RequestId></ResponseMetadata></ModifyUserResponse>")
        return 200, {"Content-Type": "text/xml"}, body.encode()


# --------------------------------------------------------------------------
# SES (SendEmail)
# --------------------------------------------------------------------------

class SesFake(_SignedFake):
    """Amazon SES v1 SendEmail (the Query protocol: a form POST to /,
    Version 2010-12-01, signing name "ses"; XML answers), SigV4-checked like
    the others.  Every accepted message goes to ``messages`` as a dict
    (source, to: [addresses], subject, text, subject_charset, text_charset,
    message_id, access_key, time); ``wait_for(addr)`` waits for them.  A
    form missing a required field, or with fields SendEmail does not take
    or that this fake does not expect of Kiln (CC, BCC, HTML, reply-to…),
    answers InvalidParameterValue and is recorded in ``bad_forms``.
    ``fail_next(status, code, message, times=1, to=None)`` queues refusals
    answered (in order) before a message (to ``to``, or any) is accepted:
    ``reject()`` (400 MessageRejected), ``throttle()`` (400 Throttling, what
    SES answers past the sending rate), ``unavailable()`` (503
    ServiceUnavailable).
    ``sends``: (to, status, error code or None, time) of every SendEmail call
    that passed the signature check, refused or not."""

    SERVICE = "ses"
    XMLNS = "http://ses.amazonaws.com/doc/2010-12-01/"
    REQUIRED = ("Action", "Version", "Source", "Destination.ToAddresses.member.1",
                "Message.Subject.Data", "Message.Body.Text.Data")
    OPTIONAL = ("Message.Subject.Charset", "Message.Body.Text.Charset")

    def __init__(self, store, **kw):
        super().__init__(store, **kw)
        self.messages = []
        self.sends = []
        self.bad_forms = []
        self._failures_queued = collections.deque()
        self._cv = threading.Condition(self._lock)

    # -- steering ------------------------------------------------------------------
    def fail_next(self, status, code, message, times=1, to=None):
        """The next ``times`` sends (to ``to`` only, when given) answer
        ``status`` with this error."""
        with self._lock:
            self._failures_queued.extend([(to, status, code, message)] * times)

    def reject(self, to=None, times=1,
               message="Email address is not verified. The following identities failed the "
                       "check in region US-EAST-1: no-reply@kiln.test"):
        self.fail_next(400, "MessageRejected", message, times, to)

    def throttle(self, to=None, times=1):
        self.fail_next(400, "Throttling", "Maximum sending rate exceeded.", times, to)

    def unavailable(self, to=None, times=1):
        self.fail_next(503, "ServiceUnavailable", "Service is unavailable. Try again later.",
                       times, to)

    def _take_failure(self, to):
        for i, f in enumerate(self._failures_queued):
            if f[0] is None or f[0] == to:
                del self._failures_queued[i]
                return f[1:]
        return None

    # -- reading -------------------------------------------------------------------
    def messages_to(self, addr):
        with self._lock:
            return [m for m in self.messages if addr in m["to"]]

    def sends_to(self, addr):
        """The SendEmail calls to ``addr`` that passed the signature check,
        answered: [(status, error code or None, time)]."""
        with self._lock:
            return [(st, code, t) for to, st, code, t in self.sends if to == addr]

    def wait_for(self, addr, count=1, timeout=15.0):
        """The first ``count`` messages accepted for ``addr``, waiting for them."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                got = [m for m in self.messages if addr in m["to"]]
                if len(got) >= count:
                    return got[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SES: no message #{count} to {addr} within {timeout} s "
                                         f"(got {len(got)}; calls: {self.calls[-5:]})")
                self._cv.wait(left)

    def wait_sends(self, addr, count, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.sends_to(addr)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"SES: {len(got)} SendEmail calls to {addr} within "
                                     f"{timeout} s, want {count}")
            time.sleep(0.05)

    # -- the protocol ----------------------------------------------------------------
    def _error(self, call, status, code, message, kind="Sender"):
        call.error, call.detail = code, message
        body = (f'<ErrorResponse xmlns="{self.XMLNS}"><Error><Type>{kind}</Type>'
                f"<Code>{code}</Code><Message>{message}</Message></Error>"
                f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
        return status, {"Content-Type": "text/xml"}, body.encode()

    def handle(self, call):
        if call.method != "POST" or urllib.parse.urlsplit(call.path).path != "/":
            return self._error(call, 404, "UnknownOperation", "not found")
        try:
            creds = self._verify(call)
        except AuthError as e:
            return self._error(call, e.status, e.code, e.message)
        ctype = (call.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._error(call, 400, "InvalidParameterValue", f"Content-Type {ctype!r}")
        try:
            pairs = urllib.parse.parse_qsl(call.body.decode("utf-8"), keep_blank_values=True,
                                           strict_parsing=True, errors="strict")
        except (UnicodeDecodeError, ValueError) as e:
            return self._error(call, 400, "InvalidParameterValue", f"form: {e}")
        form = dict(pairs)
        if form.get("Action") != "SendEmail" or form.get("Version") != "2010-12-01":
            return self._error(call, 400, "InvalidAction",
                               f"{form.get('Action')!r} (version {form.get('Version')!r})")
        problems = []
        if len(form) != len(pairs):
            problems.append("a field given twice")
        problems += [f"{k} missing" for k in self.REQUIRED if not form.get(k)]
        problems += [f"{k} not expected" for k in form if k not in self.REQUIRED + self.OPTIONAL]
        problems += [f"{k} is {form[k]!r}" for k in self.OPTIONAL
                     if k in form and form[k].upper() != "UTF-8"]
        to = form.get("Destination.ToAddresses.member.1")
        failure = None
        with self._lock:
            if problems:
                self.bad_forms.append((call, form, problems))
                failure = (400, "InvalidParameterValue", "; ".join(problems))
            else:
                failure = self._take_failure(to)
            if failure is not None:
                self.sends.append((to, failure[0], failure[1], call.time))
        if failure is not None:
            status, code, message = failure
            return self._error(call, status, code, message,
                               kind="Receiver" if status >= 500 else "Sender")
        msg_id = f"0100{uuid.uuid4().hex}-{uuid.uuid4()}-000000"
        with self._cv:
            self.sends.append((to, 200, None, call.time))
            self.messages.append({
                "source": form["Source"], "to": [form["Destination.ToAddresses.member.1"]],
                "subject": form["Message.Subject.Data"], "text": form["Message.Body.Text.Data"],
                "subject_charset": form.get("Message.Subject.Charset"),
                "text_charset": form.get("Message.Body.Text.Charset"),
                "message_id": msg_id, "access_key": creds.access_key, "time": time.time()})
            self._cv.notify_all()
        body = (f'<SendEmailResponse xmlns="{self.XMLNS}"><SendEmailResult>'
                f"<MessageId>{msg_id}</MessageId></SendEmailResult><ResponseMetadata>"
                f"<RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></SendEmailResponse>")
        return 200, {"Content-Type": "text/xml"}, body.encode()


# --------------------------------------------------------------------------
# Lambda Runtime API
# --------------------------------------------------------------------------

def _peer_gone(sock):
    """Has the client of an open request closed its end?"""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class LambdaRuntimeFake(HttpFake):
    """The Runtime API (2018-06-01) of one execution environment.
    ``invoke(event)`` queues an event for the next GET …/invocation/next (a
    long poll: it waits for one) and returns the function's answer:
    ("response", body) or ("error", {"errorType","errorMessage"}, the
    Lambda-Runtime-Function-Error-Type header).  ``init_errors``: what
    /runtime/init/error received; ``polls``: the GET next calls answered."""

    PREFIX = "/2018-06-01/runtime/"

    def __init__(self, function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:kiln-rotate",
                 deadline_s=60):
        super().__init__()
        self.function_arn = function_arn
        self.deadline_s = deadline_s
        self._cond = threading.Condition(self._lock)
        self._queue = collections.deque()
        self._results = {}
        self._stopping = False
        self.init_errors = []
        self.polls = 0
        self.waiting = 0

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        super().stop()

    def wait_polling(self, timeout=10):
        """Until the function waits in GET next (its init is done)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.waiting and not self.init_errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the function never asked for an invocation")
                self._cond.wait(left)

    def invoke(self, event, timeout=30):
        rid = str(uuid.uuid4())
        with self._cond:
            self._queue.append((rid, json.dumps(event).encode()))
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while rid not in self._results:
                left = deadline - time.monotonic()
                if left <= 0 or self.init_errors:
                    raise AssertionError(f"no answer to invocation {rid} ({event.get('Step')}) "
                                         f"within {timeout} s; init errors: {self.init_errors}")
                self._cond.wait(left)
            return self._results.pop(rid)

    def handle(self, call):
        path = urllib.parse.urlsplit(call.path).path
        if not path.startswith(self.PREFIX):
            return _json(404, {"errorMessage": "not found", "errorType": "NotFound"})
        rest = path[len(self.PREFIX):]
        if call.method == "GET" and rest == "invocation/next":
            with self._cond:
                self.waiting += 1
                self._cond.notify_all()
                try:
                    # A poll whose function is gone (stopped while it
                    # waited) must not take the next event.
                    while not self._stopping and not _peer_gone(call.sock) and \
                            not self._queue:
                        self._cond.wait(0.1)
                    if self._stopping or _peer_gone(call.sock):
                        return _json(500, {"errorMessage": "shutting down or caller gone",
                                           "errorType": "Runtime.Stopped"})
                    rid, body = self._queue.popleft()
                    self.polls += 1
                finally:
                    self.waiting -= 1
            return 200, {"Content-Type": "application/json",
                         "Lambda-Runtime-Aws-Request-Id": rid,
                         "Lambda-Runtime-Deadline-Ms": str(int((time.time() + self.deadline_s)
                                                               * 1000)),
                         "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
                         "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000"
                         }, body
        if call.method == "POST" and rest == "init/error":
            with self._cond:
                self.init_errors.append((json.loads(call.body or b"null"),
                                         call.header("Lambda-Runtime-Function-Error-Type")))
                self._cond.notify_all()
            return _json(202, {"status": "OK"})
        parts = rest.split("/")
        if call.method == "POST" and len(parts) == 3 and parts[0] == "invocation" and \
                parts[2] in ("response", "error"):
            rid = parts[1]
            if parts[2] == "response":
                result = ("response", json.loads(call.body or b"null"))
            else:
                result = ("error", json.loads(call.body or b"null"),
                          call.header("Lambda-Runtime-Function-Error-Type"))
            with self._cond:
                self._results[rid] = result
                self._cond.notify_all()
            return _json(202, {"status": "OK"})
        return _json(404, {"errorMessage": f"{call.method} {path}", "errorType": "NotFound"})


# --------------------------------------------------------------------------
# TLS material for the proxies
# --------------------------------------------------------------------------

class TlsFiles:
    def __init__(self, ca, cert, key):
        self.ca, self.cert, self.key = str(ca), str(cert), str(key)

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def services_tls(services_dir):
    """The certificates scripts/test-services.sh made for the TLS Redis
    (server cert for localhost and 127.0.0.1, signed by ca.crt)."""
    d = pathlib.Path(services_dir) / "tls"
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key")


def make_tls(directory=None):
    """A CA and a server certificate for localhost / 127.0.0.1 (openssl CLI)."""
    d = pathlib.Path(directory or tempfile.mkdtemp(prefix="kiln-awsfake-tls-"))
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=awsfake CA", "-keyout", "ca.key", "-out", "ca.crt",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "basicConstraints=CA:FALSE\n"
                                  "extendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt")
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key")


# --------------------------------------------------------------------------
# TCP proxies: common machinery
# --------------------------------------------------------------------------

class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.proxy._connection(self.request, self.client_address)


class TcpProxy:
    """Base: a threaded TCP server on 127.0.0.1:<free port>; subclasses
    implement ``_serve(sock, conn_record)``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self._ids = iter(range(1, 1 << 30))
        self._open = set()
        self._socks = {}          # connection id → its sockets (client TLS, backend)
        self.connections = []     # dicts, one per accepted connection

    def start(self):
        self._server = _TcpServer(("127.0.0.1", 0), _TcpHandler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    def _track(self, sock, rec=None):
        """Remember an open socket: stop() and close_all() shut it down, and
        the end of connection ``rec`` closes it."""
        with self._lock:
            self._open.add(sock)
            if rec is not None:
                self._socks.setdefault(rec["id"], []).append(sock)

    def _untrack(self, sock):
        with self._lock:
            self._open.discard(sock)

    def close_all(self):
        """Drop every open connection (client and backend sides)."""
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connection(self, sock, addr):
        with self._lock:
            rec = {"id": next(self._ids), "peer": addr, "opened": time.time(), "closed": None,
                   "error": None}
            self.connections.append(rec)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(sock)
        try:
            self._serve(sock, rec)
        except (OSError, ssl.SSLError, EOFError) as e:
            if rec["error"] is None:
                rec["error"] = f"closed: {e!r}"
        except Exception as e:   # a bug in the proxy: keep it visible
            rec["error"] = f"proxy error: {e!r}\n{traceback.format_exc()}"
            rec["bug"] = True
        finally:
            rec["closed"] = time.time()
            with self._lock:
                socks = [sock] + self._socks.pop(rec["id"], [])
            for s in socks:
                self._untrack(s)
                try:
                    s.close()
                except OSError:
                    pass

    @property
    def bugs(self):
        with self._lock:
            return [r for r in self.connections if r.get("bug")]


def _recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"peer closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def _readable(socks, timeout):
    """The sockets with data to read (TLS sockets with buffered bytes count)."""
    ready = [s for s in socks if isinstance(s, ssl.SSLSocket) and s.pending()]
    if ready:
        return ready
    r, _, _ = select.select(socks, [], [], timeout)
    return r


_RESP2_PUSHES = (b"*3\r\n$7\r\nmessage\r\n", b"*4\r\n$8\r\npmessage\r\n",
                 b"*3\r\n$8\r\nsmessage\r\n")


def _resp2_push(reply):
    """Whether a RESP2 reply on a subscribed connection is a published
    message (sent whenever someone publishes, not in answer to a command)."""
    return reply.startswith(_RESP2_PUSHES)


def _splice(a, b, stop):
    """Copy bytes both ways until either side closes or ``stop`` is set."""
    while not stop.is_set():
        for s in _readable([a, b], 0.2):
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


# --------------------------------------------------------------------------
# PostgreSQL with RDS IAM authentication
# --------------------------------------------------------------------------

PG_SSL_REQUEST = 80877103
PG_GSSENC_REQUEST = 80877104
PG_CANCEL_REQUEST = 80877102
PG_PROTOCOL_3 = 196608


def pg_error(code, message, severity="FATAL"):
    """An ErrorResponse message."""
    fields = b""
    for k, v in (("S", severity), ("V", severity), ("C", code), ("M", message)):
        fields += k.encode() + v.encode() + b"\0"
    fields += b"\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


def _pg_read_msg(sock):
    """(type byte, payload) of one backend/frontend message."""
    head = _recv_exact(sock, 5)
    n = struct.unpack("!I", head[1:])[0]
    if n < 4 or n > 1 << 24:
        raise EOFError(f"bad message length {n}")
    return head[:1], _recv_exact(sock, n - 4)


def _pg_msg(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _pg_error_fields(payload):
    out = {}
    for f in payload.split(b"\0"):
        if f:
            out[chr(f[0])] = f[1:].decode("utf-8", "replace")
    return out


def scram_sha256_login(sock, password):
    """Run the SCRAM-SHA-256 exchange on ``sock`` after the server asked for
    SASL (AuthenticationSASL already read); returns when the server sent
    AuthenticationSASLFinal and verified its signature.  Raises AuthError
    on an ErrorResponse."""
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = "n,," + first_bare
    sock.sendall(_pg_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first.encode()))
    kind, payload = _pg_read_msg(sock)
    if kind == b"E":
        raise AuthError("backend", _pg_error_fields(payload).get("M", "error"))
    if kind != b"R" or struct.unpack("!I", payload[:4])[0] != 11:
        raise AuthError("backend", f"want AuthenticationSASLContinue, got {kind!r}")
    server_first = payload[4:].decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    if not attrs["r"].startswith(nonce):
        raise AuthError("backend", "server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_wo_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_wo_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = f"{final_wo_proof},p={base64.b64encode(proof).decode()}"
    sock.sendall(_pg_msg(b"p", final.encode()))
    kind, payload = _pg_read_msg(sock)
    if kind == b"E":
        raise AuthError("backend", _pg_error_fields(payload).get("M", "error"))
    if kind != b"R" or struct.unpack("!I", payload[:4])[0] != 12:
        raise AuthError("backend", f"want AuthenticationSASLFinal, got {kind!r}")
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    want = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode()
    got = dict(item.split("=", 1) for item in payload[4:].decode().split(","))
    if got.get("v") != want:
        raise AuthError("backend", "server signature does not verify")


def _pg_backend_login(host, port, params, password, timeout=10):
    """Connect to the real PostgreSQL (plain TCP), log in with ``params``
    (user, database, …) and ``password``; returns (socket, the
    AuthenticationOk message bytes).  AuthError with the server's message on
    failure."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = struct.pack("!I", PG_PROTOCOL_3)
        for k, v in params.items():
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, payload = _pg_read_msg(sock)
            if kind == b"E":
                f = _pg_error_fields(payload)
                raise AuthError(f.get("C", "backend"), f.get("M", "error"))
            if kind != b"R":
                raise AuthError("backend", f"unexpected message {kind!r} during login")
            code = struct.unpack("!I", payload[:4])[0]
            if code == 0:
                sock.settimeout(None)
                return sock, _pg_msg(b"R", payload)
            if code == 10:
                mechs = payload[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechs:
                    raise AuthError("backend", f"no SCRAM-SHA-256 among {mechs}")
                scram_sha256_login(sock, password)
            elif code == 3:
                sock.sendall(_pg_msg(b"p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5(password.encode() + params["user"].encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                sock.sendall(_pg_msg(b"p", b"md5" + outer.encode() + b"\0"))
            else:
                raise AuthError("backend", f"authentication method {code} not supported")
    except BaseException:
        sock.close()
        raise


def parse_presigned_token(token):
    """'host[:port]/?Action=…&…' → (host part, dict of decoded query)."""
    hostport, sep, query = token.partition("/?")
    if not sep or not hostport:
        raise AuthError("MalformedToken", "token is not <host>/?<query>")
    params = {}
    for pair in query.split("&"):
        k, eq, v = pair.partition("=")
        if not eq:
            raise AuthError("MalformedToken", f"query item {pair[:40]!r} has no '='")
        k = urllib.parse.unquote(k)
        if k in params:
            raise AuthError("MalformedToken", f"{k} appears twice")
        params[k] = urllib.parse.unquote(v)
    return hostport, params


def _check_presigned_params(params, service, region, action_params):
    """The X-Amz-* of an IAM auth token; returns (signing time, access key,
    session token)."""
    for k, v in action_params.items():
        if params.get(k) != v:
            raise AuthError("InvalidToken", f"{k}={params.get(k)!r}, want {v!r}")
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise AuthError("InvalidToken", f"X-Amz-Algorithm={params.get('X-Amz-Algorithm')!r}")
    if params.get("X-Amz-Expires") != str(TOKEN_EXPIRES):
        raise AuthError("InvalidToken", f"X-Amz-Expires={params.get('X-Amz-Expires')!r}, "
                                        f"want {TOKEN_EXPIRES}")
    if params.get("X-Amz-SignedHeaders") != "host":
        raise AuthError("InvalidToken",
                        f"X-Amz-SignedHeaders={params.get('X-Amz-SignedHeaders')!r}, want 'host'")
    if not params.get("X-Amz-Signature"):
        raise AuthError("InvalidToken", "no X-Amz-Signature")
    want = set(action_params) | {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                                 "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature",
                                 "X-Amz-Security-Token"}
    extra = set(params) - want
    if extra:
        raise AuthError("InvalidToken", f"unexpected parameters {sorted(extra)}")
    cred = (params.get("X-Amz-Credential") or "").split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise AuthError("InvalidToken", "X-Amz-Credential is not AKID/date/region/service/aws4_request")
    akid, scope_date, scope_region, scope_service, _ = cred
    amz_date = params.get("X-Amz-Date") or ""
    when = _check_time(amz_date, expires=TOKEN_EXPIRES)
    if scope_date != amz_date[:8]:
        raise AuthError("InvalidToken", "credential scope date is not the X-Amz-Date's")
    if scope_region != region:
        raise AuthError("InvalidToken", f"token scoped to region {scope_region}, want {region}")
    if scope_service != service:
        raise AuthError("InvalidToken", f"token scoped to service {scope_service}, want {service}")
    return when, akid, params.get("X-Amz-Security-Token")


_rds_clients = {}
_rds_lock = threading.Lock()


def rds_auth_token(creds, host, port, user, region, when=None):
    """botocore's generate_db_auth_token, signed at ``when`` (default now)."""
    key = (creds.access_key, creds.secret_key, creds.token, region)
    with _rds_lock:
        client = _rds_clients.get(key)
        if client is None:
            session = botocore.session.get_session()
            client = session.create_client(
                "rds", region_name=region, aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)
            _rds_clients[key] = client
        with frozen_clock(when):
            return client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user,
                                                 Region=region)


def verify_rds_token(store, token, host, port, user, region=REGION):
    """Check an RDS IAM token for user@host:port; returns the Creds or
    raises AuthError."""
    hostport, params = parse_presigned_token(token)
    if hostport != f"{host}:{port}":
        raise AuthError("InvalidToken", f"token is for {hostport!r}, want {host}:{port}")
    when, akid, session_token = _check_presigned_params(
        params, "rds-db", region, {"Action": "connect", "DBUser": user})
    creds = _lookup_creds(store, akid, session_token, when=utcnow())
    mine = rds_auth_token(creds, host, port, user, region, when)
    _, my_params = parse_presigned_token(mine)
    if not hmac.compare_digest(my_params["X-Amz-Signature"], params["X-Amz-Signature"]):
        raise AuthError("SignatureMismatch", "X-Amz-Signature differs from botocore's")
    if my_params != params:
        raise AuthError("InvalidToken", "parameters differ from botocore's token")
    return creds


class PgIamProxy(TcpProxy):
    """PostgreSQL with IAM authentication, in front of the real PostgreSQL.

    ``backend_passwords``: role → its real (SCRAM) password in the real
    server; a client authenticated as role R by a valid IAM token for R is
    logged in there as R.  ``token_host``: the host name the tokens must
    name (what Kiln's DB_HOST is).  Records: ``connections`` (one dict per
    TCP connection: tls, user, database, token_ok, error), ``tokens`` (every
    password seen, with its verdict), ``failures`` (tokens refused)."""

    def __init__(self, store, backend_host, backend_port, backend_passwords, tls,
                 region=REGION, token_host="127.0.0.1"):
        super().__init__()
        self.store = store
        self.backend_host = backend_host
        self.backend_port = backend_port
        self.backend_passwords = dict(backend_passwords)
        self.tls = tls
        self.region = region
        self.token_host = token_host
        self.tokens = []
        self._ctx = tls.server_context()
        self._stop = threading.Event()

    def stop(self):
        self._stop.set()
        super().stop()

    @property
    def failures(self):
        with self._lock:
            return [t for t in self.tokens if not t["ok"]]

    @property
    def verified(self):
        with self._lock:
            return [t for t in self.tokens if t["ok"]]

    def logged_in(self):
        """Connections that reached the real server."""
        with self._lock:
            return [c for c in self.connections if c.get("backend")]

    def _read_startup(self, sock):
        head = _recv_exact(sock, 8)
        n, code = struct.unpack("!II", head)
        if n < 8 or n > 10000:
            raise EOFError(f"bad startup length {n}")
        return code, _recv_exact(sock, n - 8), head

    def _serve(self, sock, rec):
        rec["tls"] = False
        while True:
            code, rest, head = self._read_startup(sock)
            if code == PG_SSL_REQUEST and not rec["tls"]:
                sock.sendall(b"S")
                sock = self._ctx.wrap_socket(sock, server_side=True)
                self._track(sock, rec)
                rec["tls"] = True
                continue
            if code == PG_GSSENC_REQUEST and not rec["tls"]:
                sock.sendall(b"N")
                continue
            if code == PG_CANCEL_REQUEST:
                rec["cancel"] = True
                with socket.create_connection((self.backend_host, self.backend_port), 5) as b:
                    b.sendall(head + rest)
                return
            break
        if code != PG_PROTOCOL_3:
            sock.sendall(pg_error("08P01", f"unsupported frontend protocol {code >> 16}.{code & 0xffff}"))
            rec["error"] = "bad protocol"
            return
        items = rest.split(b"\0")
        params = {}
        for k, v in zip(items[0::2], items[1::2]):
            if k:
                params[k.decode()] = v.decode()
        user = params.get("user", "")
        rec["user"] = user
        rec["database"] = params.get("database", user)
        rec["params"] = params
        if not rec["tls"]:
            # rds.force_ssl=1 (and IAM authentication) refuse plain connections.
            sock.sendall(pg_error("28000", f'no pg_hba.conf entry for host "{rec["peer"][0]}", '
                                           f'user "{user}", database "{rec["database"]}", no encryption'))
            rec["error"] = "no TLS"
            return
        sock.sendall(_pg_msg(b"R", struct.pack("!I", 3)))   # AuthenticationCleartextPassword
        kind, payload = _pg_read_msg(sock)
        if kind != b"p":
            sock.sendall(pg_error("08P01", f"expected a password message, got {kind!r}"))
            rec["error"] = "no password"
            return
        token = payload.rstrip(b"\0").decode("utf-8", "replace")
        entry = {"conn": rec["id"], "time": time.time(), "user": user, "token": token,
                 "ok": False, "error": None, "access_key": None}
        try:
            creds = verify_rds_token(self.store, token, self.token_host, self.port, user, self.region)
            entry["ok"] = True
            entry["access_key"] = creds.access_key
        except AuthError as e:
            entry["error"] = f"{e.code}: {e.message}"
        with self._lock:
            self.tokens.append(entry)
        rec["token_ok"] = entry["ok"]
        if not entry["ok"]:
            sock.sendall(pg_error("28P01", f'PAM authentication failed for user "{user}"'))
            rec["error"] = entry["error"]
            return
        password = self.backend_passwords.get(user)
        if password is None:
            sock.sendall(pg_error("28P01", f'PAM authentication failed for user "{user}"'))
            rec["error"] = f"no backend password for {user}"
            return
        try:
            backend, ok_msg = _pg_backend_login(self.backend_host, self.backend_port, params, password)
        except AuthError as e:
            sock.sendall(pg_error(e.code if len(e.code) == 5 else "08006", e.message))
            rec["error"] = f"backend: {e.message}"
            return
        rec["backend"] = True
        self._track(backend, rec)
        sock.sendall(ok_msg)
        _splice(sock, backend, self._stop)


# --------------------------------------------------------------------------
# Valkey / ElastiCache with IAM authentication
# --------------------------------------------------------------------------

class RespError(Exception):
    pass


def parse_command(buf):
    """One client command from the start of ``buf``: (args as bytes, bytes
    consumed) or None when incomplete.  Arrays of bulk strings, or an
    inline command line."""
    if not buf:
        return None
    if buf[:1] != b"*":
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > 65536:
                raise RespError("inline command too long")
            return None
        return bytes(buf[:end]).split(), end + 2
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    n = int(buf[1:end])
    pos = end + 2
    args = []
    for _ in range(max(n, 0)):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        if buf[pos:pos + 1] != b"$":
            raise RespError(f"expected a bulk string, got {bytes(buf[pos:pos + 10])!r}")
        ln = int(buf[pos + 1:end])
        start = end + 2
        if len(buf) < start + ln + 2:
            return None
        args.append(bytes(buf[start:start + ln]))
        pos = start + ln + 2
    return args, pos


def parse_reply(buf, pos=0):
    """End offset of one complete RESP2/RESP3 reply starting at ``pos``, or
    None when incomplete."""
    if pos >= len(buf):
        return None
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    t = buf[pos:pos + 1]
    head = buf[pos + 1:end]
    nxt = end + 2
    if t in (b"+", b"-", b":", b"_", b"#", b",", b"("):
        return nxt
    if t in (b"$", b"!", b"="):
        n = int(head)
        if n < 0:
            return nxt
        return nxt + n + 2 if len(buf) >= nxt + n + 2 else None
    if t in (b"*", b"~", b">", b"%", b"|"):
        n = int(head)
        if n < 0:
            return nxt
        if t in (b"%", b"|"):
            n *= 2
        for _ in range(n):
            nxt = parse_reply(buf, nxt)
            if nxt is None:
                return None
        if t == b"|":   # an attribute precedes the reply it annotates
            return parse_reply(buf, nxt)
        return nxt
    raise RespError(f"unknown RESP type {bytes(t)!r}")


def resp_command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


_elasticache_signers_lock = threading.Lock()


def elasticache_auth_token(creds, cluster_id, user, region, when=None):
    """The ElastiCache IAM auth token botocore makes: a presigned GET of
    http://<cluster_id>/?Action=connect&User=<user> (service elasticache,
    900 s), without the scheme."""
    req = AWSRequest(method="GET", url=f"http://{cluster_id}/",
                     params={"Action": "connect", "User": user})
    signer = botocore.auth.SigV4QueryAuth(creds.botocore, "elasticache", region,
                                          expires=TOKEN_EXPIRES)
    with frozen_clock(when):
        signer.add_auth(req)
    url = req.url
    return url[len("http://"):]


def verify_elasticache_token(store, token, cluster_id, user, region=REGION):
    hostport, params = parse_presigned_token(token)
    if hostport != cluster_id:
        raise AuthError("InvalidToken", f"token is for cluster {hostport!r}, want {cluster_id!r}")
    when, akid, session_token = _check_presigned_params(
        params, "elasticache", region, {"Action": "connect", "User": user})
    creds = _lookup_creds(store, akid, session_token, when=utcnow())
    mine = elasticache_auth_token(creds, cluster_id, user, region, when)
    _, my_params = parse_presigned_token(mine)
    if not hmac.compare_digest(my_params["X-Amz-Signature"], params["X-Amz-Signature"]):
        raise AuthError("SignatureMismatch", "X-Amz-Signature differs from botocore's")
    if my_params != params:
        raise AuthError("InvalidToken", "parameters differ from botocore's token")
    return creds


WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"


class ValkeyIamProxy(TcpProxy):
    """ElastiCache (Valkey/Redis OSS) with IAM authentication in front of
    the plain Redis of the test services.

    TLS only.  The first command must be ``AUTH <user> <token>`` (or
    ``HELLO <proto> AUTH <user> <token> …``), the token valid for
    ``cluster_id``; later AUTHs on the same connection are verified and
    answered here (never forwarded), in order with the replies of the
    commands before them.  ``users``: the IAM-enabled user ids (None: any).
    ``max_auth_age``: close a connection whose last AUTH is older than this
    many seconds when it sends a command (ElastiCache drops IAM connections
    12 h after their last AUTH).  Records: ``connections``, ``auths``
    (conn, time, user, first, ok, error), ``failures`` (refused AUTHs)."""

    def __init__(self, store, backend_host, backend_port, tls, cluster_id, region=REGION,
                 users=None, backend_user=None, backend_password=None, max_auth_age=None):
        super().__init__()
        self.store = store
        self.backend_host = backend_host
        self.backend_port = backend_port
        self.tls = tls
        self.cluster_id = cluster_id
        self.region = region
        self.users = set(users) if users is not None else None
        self.backend_user = backend_user
        self.backend_password = backend_password
        self.max_auth_age = max_auth_age
        self.auths = []
        self.commands = 0
        self._ctx = tls.server_context()
        self._stop = threading.Event()

    def stop(self):
        self._stop.set()
        super().stop()

    @property
    def failures(self):
        with self._lock:
            return [a for a in self.auths if not a["ok"]]

    def summary(self):
        """The AUTHs, one short line each (no tokens), for assertion messages."""
        with self._lock:
            auths = list(self.auths)
        t0 = auths[0]["time"] if auths else 0
        return "\n".join(f"conn {a['conn']} +{a['time'] - t0:.2f}s {'first' if a['first'] else 're'}"
                         f"-AUTH {a['user']}: {'ok' if a['ok'] else a['error']}" for a in auths)

    def reauths(self):
        """Successful AUTHs that were not a connection's first."""
        with self._lock:
            return [a for a in self.auths if a["ok"] and not a["first"]]

    def _verify(self, rec, user, token):
        entry = {"conn": rec["id"], "time": time.time(), "user": user, "token": token,
                 "first": not rec.get("authed"), "ok": False, "error": None, "access_key": None}
        try:
            if self.users is not None and user not in self.users:
                raise AuthError("UnknownUser", f"user {user!r} is not an IAM-enabled user")
            creds = verify_elasticache_token(self.store, token, self.cluster_id, user, self.region)
            entry["ok"] = True
            entry["access_key"] = creds.access_key
        except AuthError as e:
            entry["error"] = f"{e.code}: {e.message}"
        with self._lock:
            self.auths.append(entry)
        if entry["ok"]:
            rec["authed"] = True
            rec["user"] = user
            rec["auth_time"] = time.monotonic()
        return entry["ok"]

    def _backend(self):
        b = socket.create_connection((self.backend_host, self.backend_port), timeout=5)
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.backend_password is not None:
            args = ["AUTH"] + ([self.backend_user] if self.backend_user else []) + [self.backend_password]
            b.sendall(resp_command(*args))
            buf = bytearray()
            while parse_reply(buf) is None:
                chunk = b.recv(4096)
                if not chunk:
                    raise EOFError("backend closed during AUTH")
                buf += chunk
            if not buf.startswith(b"+OK"):
                raise AuthError("backend", bytes(buf).decode(errors="replace").strip())
        b.settimeout(None)
        return b

    def _serve(self, sock, rec):
        sock = self._ctx.wrap_socket(sock, server_side=True)
        self._track(sock, rec)
        rec["tls"] = True
        rec["authed"] = False
        backend = None
        cbuf = bytearray()   # client → proxy, unparsed
        sbuf = bytearray()   # backend → proxy, unparsed
        pending = collections.deque()   # None: a backend reply is due; bytes: our own reply
        while not self._stop.is_set():
                socks = [sock] + ([backend] if backend is not None else [])
                for s in _readable(socks, 0.2):
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is sock:
                        cbuf += data
                    else:
                        sbuf += data
                # replies from the backend, in order, with our own in between
                while True:
                    end = parse_reply(sbuf)
                    if end is None:
                        break
                    reply = bytes(sbuf[:end])
                    del sbuf[:end]
                    if reply[:1] == b">" or (rec.get("subscribed") and _resp2_push(reply)):
                        sock.sendall(reply)    # a push: out of band
                        continue
                    if not pending or pending[0] is not None:
                        raise RespError("a backend reply nobody asked for")
                    pending.popleft()
                    out = reply
                    while pending and pending[0] is not None:
                        out += pending.popleft()
                    sock.sendall(out)
                # commands from the client
                while True:
                    parsed = parse_command(cbuf)
                    if parsed is None:
                        break
                    args, used = parsed
                    raw = bytes(cbuf[:used])
                    del cbuf[:used]
                    if not args:
                        continue
                    backend = self._command(rec, sock, backend, args, raw, pending)
                    if backend is False:
                        return

    def _local(self, sock, pending, reply):
        if pending:
            pending.append(reply)
        else:
            sock.sendall(reply)

    def _command(self, rec, sock, backend, args, raw, pending):
        """Handle one client command; returns the backend socket (opened on
        the first successful AUTH), or False to close the connection."""
        name = args[0].upper()
        with self._lock:
            self.commands += 1
        if name == b"AUTH":
            if len(args) != 3:
                self._local(sock, pending, WRONGPASS)
                with self._lock:
                    self.auths.append({"conn": rec["id"], "time": time.time(), "user": None,
                                       "token": None, "first": not rec["authed"], "ok": False,
                                       "error": f"AUTH with {len(args) - 1} argument(s)",
                                       "access_key": None})
                return backend
            ok = self._verify(rec, args[1].decode(errors="replace"), args[2].decode(errors="replace"))
            if ok and backend is None:
                backend = self._open_backend(rec)
                if backend is None:
                    self._local(sock, pending, b"-ERR backend unavailable\r\n")
                    return False
            self._local(sock, pending, b"+OK\r\n" if ok else WRONGPASS)
            return backend
        if name == b"HELLO" and len(args) >= 2 and b"AUTH" in [a.upper() for a in args[2:]]:
            up = [a.upper() for a in args]
            i = up.index(b"AUTH", 2)
            if len(args) < i + 3:
                self._local(sock, pending, b"-ERR Syntax error in HELLO option 'auth'\r\n")
                return backend
            ok = self._verify(rec, args[i + 1].decode(errors="replace"),
                              args[i + 2].decode(errors="replace"))
            if not ok:
                self._local(sock, pending, WRONGPASS)
                return backend
            if backend is None:
                backend = self._open_backend(rec)
                if backend is None:
                    self._local(sock, pending, b"-ERR backend unavailable\r\n")
                    return False
            raw = resp_command(*(args[:i] + args[i + 3:]))
        elif name == b"QUIT":
            self._local(sock, pending, b"+OK\r\n")
            return False
        elif not rec["authed"]:
            self._local(sock, pending, NOAUTH)
            return backend
        elif self.max_auth_age is not None and \
                time.monotonic() - rec["auth_time"] > self.max_auth_age:
            rec["error"] = "authentication expired (no AUTH within max_auth_age)"
            rec["expired"] = True
            return False
        if name in (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"):
            # RESP2: from now on the backend also pushes messages as plain
            # arrays; the command itself has one confirmation per channel
            rec["subscribed"] = True
            pending.extend([None] * max(1, len(args) - 1))
        else:
            pending.append(None)
        backend.sendall(raw)
        return backend

    def _open_backend(self, rec):
        try:
            b = self._backend()
        except (OSError, AuthError, EOFError) as e:
            rec["error"] = f"backend: {e!r}"
            return None
        self._track(b, rec)
        rec["backend"] = True
        return b


# --------------------------------------------------------------------------
# helpers for the tests
# --------------------------------------------------------------------------

def http_call(method, url, headers=None, body=None, timeout=10):
    """A plain HTTP request with http.client (not requests: conftest checks
    every JSON answer requests receives against Kiln's OpenAPI document).
    Returns (status, {lower-case header: value}, body bytes)."""
    import http.client
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        target = u.path or "/"
        if u.query:
            target += "?" + u.query
        conn.request(method, target, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def sign_headers(creds, method, url, headers=None, body=b"", service="secretsmanager",
                 region=REGION, when=None):
    """The headers of a request signed by botocore's SigV4Auth (Host,
    X-Amz-Date, X-Amz-Security-Token, Authorization added)."""
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    with frozen_clock(when):
        botocore.auth.SigV4Auth(creds.botocore, service, region).add_auth(req)
    out = dict(req.headers.items())
    out.setdefault("Host", urllib.parse.urlsplit(url).netloc)
    return out


def get_secret_value_request(secret_id, **extra):
    """(headers, body) of a GetSecretValue call, before signing."""
    body = json.dumps(dict({"SecretId": secret_id}, **extra)).encode()
    return {"Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "secretsmanager.GetSecretValue"}, body


class PgSetup:
    """Roles and a database of one test in the real PostgreSQL of the test
    services (created as the superuser over the unix socket; drop() removes
    them).

    The database belongs to a NOLOGIN owner role; every login role made by
    ``login_role()`` is a member and starts its sessions as the owner
    (ALTER ROLE … IN DATABASE … SET role), so that objects created by
    migrations under one role are usable under the next one after a
    credentials rotation, while pg_stat_activity.usename still shows which
    login role a connection used.  Passwords are stored as SCRAM-SHA-256
    (the cluster's password_encryption)."""

    def __init__(self, services, tag="aws"):
        self.svc = services
        suffix = f"{os.getpid()}_{os.urandom(3).hex()}"
        self.owner = f"{tag}_owner_{suffix}"
        self.db = f"kt_{tag}_{suffix}"
        self.roles = {}
        self._tag, self._suffix = tag, suffix
        services.psql(f'CREATE ROLE "{self.owner}" NOLOGIN', db="postgres")
        services.psql(f'CREATE DATABASE "{self.db}" OWNER "{self.owner}"', db="postgres")

    def login_role(self, name):
        """A new login role ``<tag>_<name>_<suffix>``; returns (role, password)."""
        role = f"{self._tag}_{name}_{self._suffix}"
        password = "pw-" + os.urandom(16).hex()
        self.svc.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' IN ROLE \"{self.owner}\"",
                      db="postgres")
        self.svc.psql(f'ALTER ROLE "{role}" IN DATABASE "{self.db}" SET role = "{self.owner}"',
                      db="postgres")
        self.roles[role] = password
        return role, password

    def activity(self):
        """[(usename, application_name, state)] of the other sessions on the
        database."""
        return self.svc.rows(
            "SELECT usename, application_name, coalesce(state, '') FROM pg_stat_activity "
            f"WHERE datname = '{self.db}' AND pid <> pg_backend_pid()", db="postgres")

    def users_connected(self):
        return sorted({r[0] for r in self.activity()})

    def terminate(self, role):
        """pg_terminate_backend for every session of ``role`` on the
        database; returns how many."""
        out = self.svc.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{self.db}' AND usename = '{role}'", db="postgres")
        return int(out.strip() or 0)

    def drop(self):
        self.svc.drop_db(self.db)
        for role in list(self.roles) + [self.owner]:
            self.svc.psql(f'DROP ROLE IF EXISTS "{role}"', db="postgres", check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.drop()
