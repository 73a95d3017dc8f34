"""Helpers and fixtures for the login, session and rate-limit tests
(test_auth*.py): requests with cookies, Set-Cookie parsing, the OIDC login
flow against app/tests/oidc/mock.js, dev login, and kiln instances
configured for all three providers.

Test modules import what they use:

    from authkit import mock, oidc_kiln, ...   # fixtures
    import authkit as ak                       # helpers

Every kiln started here gets PUBLIC_URL=http://127.0.0.1:<its port>, an
explicit SECRET_KEY_BASE (two instances share sessions only when they share
it), AUTH_*_REDIRECT values on http://app.test so that a redirect is easy
to tell apart, and rate limits no test reaches unless it sets its own.
"""

import base64
import hashlib
import json
import os
import pathlib
import random
import re
import subprocess
import tempfile
import time
import urllib.parse
import uuid

import pytest

import kilnhttp
from kilnhttp import http_request
from oidcmock import OidcMock, problem as mock_problem

SESSION_COOKIE = "_backend_session"
LOGIN_COOKIE = "_kiln_login"
SESSION_MAX_AGE = 604800

SUCCESS_REDIRECT = "http://app.test/welcome"
FAILURE_REDIRECT = "http://app.test/login-failed"
LOGOUT_REDIRECT = "http://app.test/bye"

# Client ids and secrets of the three providers (all the same mock).
MOCK_CLIENT_ID = "kiln-mock-client"
MOCK_CLIENT_SECRET = "mock-secret-" + os.urandom(12).hex()
GOOGLE_CLIENT_ID = "kiln-test.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "google-secret-" + os.urandom(12).hex()
APPLE_CLIENT_ID = "test.kiln.signin"
APPLE_TEAM_ID = "TEAMID1234"
APPLE_KEY_ID = "KEYID56789"

FAILURE_CODES = ("access_denied", "invalid_state", "provider_unreachable", "token_exchange_failed",
                 "bad_signature", "wrong_audience", "token_expired", "nonce_mismatch",
                 "invalid_token", "wrong_issuer")

# RFC 6265 cookie-octet
COOKIE_VALUE_RE = re.compile(r'^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+$')


def secret_key_base():
    return os.urandom(64).hex()


def client_ip():
    """A random address for X-Forwarded-For, so that a test's rate-limit
    counters are its own (every test client is 127.0.0.1)."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def xff(ip):
    return [("X-Forwarded-For", ip)]


def unique_email(tag="user"):
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


# --------------------------------------------------------------------------
# Apple's P8 key (P-256, PKCS#8 PEM), made once with the openssl CLI
# --------------------------------------------------------------------------

_apple_key = None


def apple_key():
    """(private PEM text, public PEM path)."""
    global _apple_key
    if _apple_key is None:
        d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-apple-key-"))
        priv, pub = d / "AuthKey.p8", d / "pub.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", str(priv)],
                       check=True, capture_output=True, timeout=30)
        subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)],
                       check=True, capture_output=True, timeout=30)
        _apple_key = (priv.read_text(), str(pub))
    return _apple_key


# --------------------------------------------------------------------------
# kiln instances
# --------------------------------------------------------------------------

def start_kiln(factory, **env):
    """Start a kiln through a conftest factory (``kiln`` or ``module_kiln``)
    with PORT chosen here, so that PUBLIC_URL can name it."""
    port = env.get("PORT") or kilnhttp.free_port()
    env["PORT"] = port
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    env.setdefault("SECRET_KEY_BASE", secret_key_base())
    env.setdefault("AUTH_SUCCESS_REDIRECT", SUCCESS_REDIRECT)
    env.setdefault("AUTH_FAILURE_REDIRECT", FAILURE_REDIRECT)
    env.setdefault("AUTH_LOGOUT_REDIRECT", LOGOUT_REDIRECT)
    # On Valkey the counters are shared by every instance of the run (keyed
    # by client IP, and every test client is 127.0.0.1): instances that do
    # not test rate limits get limits no test reaches.
    env.setdefault("RATE_LIMIT_PUBLIC", 1000000)
    env.setdefault("RATE_LIMIT_PROTECTED", 1000000)
    srv = factory(wait=False, **env)
    srv.port = port
    srv.wait_ready()
    return srv


def provider_env(mock, providers=("mock", "google", "apple")):
    """Configuration for the generic provider "mock", Google and Apple, all
    pointing at the mock provider."""
    env = {}
    if "mock" in providers:
        env.update(OIDC_PROVIDERS="mock", OIDC_MOCK_ISSUER=mock.issuer,
                   OIDC_MOCK_CLIENT_ID=MOCK_CLIENT_ID, OIDC_MOCK_CLIENT_SECRET=MOCK_CLIENT_SECRET)
    if "google" in providers:
        env.update(GOOGLE_ISSUER=mock.issuer, GOOGLE_CLIENT_ID=GOOGLE_CLIENT_ID,
                   GOOGLE_CLIENT_SECRET=GOOGLE_CLIENT_SECRET)
    if "apple" in providers:
        env.update(APPLE_ISSUER=mock.issuer, APPLE_CLIENT_ID=APPLE_CLIENT_ID,
                   APPLE_TEAM_ID=APPLE_TEAM_ID, APPLE_KEY_ID=APPLE_KEY_ID,
                   APPLE_PRIVATE_KEY=apple_key()[0])
    return env


CLIENT_IDS = {"mock": MOCK_CLIENT_ID, "google": GOOGLE_CLIENT_ID, "apple": APPLE_CLIENT_ID}


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def mock():
    """The session's OIDC provider, reset for this test."""
    why = mock_problem()
    if why:
        pytest.fail(why, pytrace=False)
    m = OidcMock.shared()
    m.reset()
    return m


@pytest.fixture(scope="module")
def oidc_kiln(module_kiln):
    """One kiln per module with the three providers configured."""
    why = mock_problem()
    if why:
        pytest.fail(why, pytrace=False)
    return start_kiln(module_kiln, **provider_env(OidcMock.shared()))


@pytest.fixture(scope="module")
def plain_kiln(module_kiln):
    """One kiln per module without providers."""
    return start_kiln(module_kiln)


# --------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------

def cookie_header(cookies):
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def call(srv, method, path, headers=(), body=None, cookies=None, bearer=None,
         json_body=None, request_id=None, conn=None, timeout=10.0):
    """One request to a kiln; returns kilnhttp.Response.  ``conn``: reuse
    a keep-alive RawConn."""
    hdrs = list(headers)
    if cookies:
        hdrs.append(("Cookie", cookie_header(cookies)))
    if bearer is not None:
        hdrs.append(("Authorization", f"Bearer {bearer}"))
    if json_body is not None:
        body = json.dumps(json_body)
        hdrs.append(("Content-Type", "application/json"))
    if body is not None and not any(n.lower() == "content-length" for n, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body.encode() if isinstance(body, str) else body))))
    data = http_request(method, path, headers=hdrs, body=body, host=f"127.0.0.1:{srv.port}",
                        request_id=request_id)
    if conn is not None:
        conn.send(data)
        return conn.read_final_response(head=(method == "HEAD"), timeout=timeout)
    with srv.connect(timeout=timeout) as c:
        c.send(data)
        return c.read_final_response(head=(method == "HEAD"), timeout=timeout)


class SetCookie:
    def __init__(self, line):
        self.line = line
        parts = [p.strip() for p in line.split(";")]
        self.name, _, self.value = parts[0].partition("=")
        self.attrs = {}
        for p in parts[1:]:
            if not p:
                continue
            k, sep, v = p.partition("=")
            self.attrs[k.strip().lower()] = v.strip() if sep else True

    def attr(self, name):
        return self.attrs.get(name.lower())

    @property
    def cleared(self):
        return self.value == "" or self.attrs.get("max-age") == "0" or \
            "1970" in str(self.attrs.get("expires", ""))

    def __repr__(self):
        return f"<Set-Cookie {self.line!r}>"


def set_cookies(resp):
    """name → SetCookie (the last one of each name)."""
    out = {}
    for line in resp.header_all("set-cookie"):
        c = SetCookie(line)
        out[c.name] = c
    return out


def assert_session_cookie(resp, secure=False):
    """The Set-Cookie of a new session: value and attributes per API.md."""
    cookies = set_cookies(resp)
    assert SESSION_COOKIE in cookies, f"no {SESSION_COOKIE} Set-Cookie in {resp!r}"
    c = cookies[SESSION_COOKIE]
    assert c.value and not c.cleared, c
    assert COOKIE_VALUE_RE.match(c.value), f"cookie value has characters outside cookie-octet: {c}"
    assert len(c.value) < 200, c
    assert c.attr("path") == "/", c
    assert c.attr("httponly") is True, c
    assert str(c.attr("samesite")).lower() == "lax", c
    assert c.attr("max-age") == str(SESSION_MAX_AGE), c
    if secure:
        assert c.attr("secure") is True, f"want Secure: {c}"
    else:
        assert c.attr("secure") is None, f"no Secure on plain HTTP: {c}"
    assert c.attr("domain") is None, f"host-only cookie expected: {c}"
    return c.value


def assert_no_session_cookie(resp):
    c = set_cookies(resp).get(SESSION_COOKIE)
    assert c is None or c.cleared, f"a session cookie was set: {c}"


def tamper(value, index):
    """``value`` with the character at ``index`` replaced by another of the
    same alphabet."""
    ch = value[index]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    repl = next(c for c in alphabet if c != ch and c.isalpha() == ch.isalpha())
    return value[:index] + repl + value[index + 1:]


# --------------------------------------------------------------------------
# /me, dev login, logout
# --------------------------------------------------------------------------

USER_FIELDS = ("email", "name", "first_name", "last_name", "image", "provider", "provider_uid")


def me(srv, cookie=None, bearer=None, path="/api/v1/me", **kw):
    cookies = dict(kw.pop("cookies", {}) or {})
    if cookie is not None:
        cookies[SESSION_COOKIE] = cookie
    return call(srv, "GET", path, cookies=cookies or None, bearer=bearer, **kw)


def assert_me(resp, **want):
    """200 with the /me body; ``want``: user fields to compare.  Returns
    the user object."""
    assert resp.status == 200, resp
    kilnhttp.assert_json_content_type(resp)
    body = resp.json()
    assert body.get("authenticated") is True, body
    user = body.get("user")
    assert isinstance(user, dict), body
    missing = [f for f in USER_FIELDS if f not in user]
    assert not missing, f"/me user lacks {missing}: {body}"
    for k, v in want.items():
        assert user.get(k) == v, f"user.{k} = {user.get(k)!r}, want {v!r}: {body}"
    return user


def assert_unauthenticated(resp):
    return kilnhttp.assert_error(resp, 401, "authentication_required")


def dev_login(srv, email=None, name="Test User", cookies=None, **kw):
    """POST /auth/dev/login; returns (response, session cookie value)."""
    email = email or unique_email()
    resp = call(srv, "POST", "/auth/dev/login", json_body={"email": email, "name": name},
                cookies=cookies, **kw)
    assert resp.status == 200, f"dev login: {resp!r}"
    return resp, assert_session_cookie(resp, secure=srv.env.get("PUBLIC_URL", "").startswith("https"))


def session_for(srv, email=None, name="Test User", **kw):
    return dev_login(srv, email=email, name=name, **kw)[1]


def logout(srv, cookie, method="GET", **kw):
    return call(srv, method, "/auth/logout", cookies={SESSION_COOKIE: cookie} if cookie else None, **kw)


# --------------------------------------------------------------------------
# the OIDC login flow
# --------------------------------------------------------------------------

class Login:
    """One login attempt, step by step."""

    def __init__(self, srv, mock, provider="mock"):
        self.srv, self.mock, self.provider = srv, mock, provider
        self.begin = None            # kiln's answer to GET /auth/<provider>
        self.authorize_url = None
        self.authorize_params = None
        self.login_cookie = None
        self.callback_url = None     # where the provider sent the browser back
        self.callback_params = None
        self.callback = None         # kiln's answer to the callback

    @property
    def redirect_uri(self):
        return f"{self.srv.env['PUBLIC_URL']}/auth/{self.provider}/callback"

    def start(self, cookies=None, **kw):
        r = call(self.srv, "GET", f"/auth/{self.provider}", cookies=cookies, **kw)
        self.begin = r
        assert r.status == 302, f"GET /auth/{self.provider}: {r!r}"
        self.authorize_url = r.headers.get("location")
        assert self.authorize_url, r
        u = urllib.parse.urlsplit(self.authorize_url)
        self.authorize_params = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        c = set_cookies(r).get(LOGIN_COOKIE)
        assert c is not None and c.value, f"no {LOGIN_COOKIE} cookie set: {r!r}"
        self.login_cookie_attrs = c
        self.login_cookie = c.value
        return self

    def authorize(self):
        """The browser at the provider: it redirects back to redirect_uri."""
        status, headers, body = self.mock.get(self.authorize_url)
        assert status in (302, 303), f"mock authorize: {status} {body[:300]!r}"
        self.callback_url = headers["location"]
        u = urllib.parse.urlsplit(self.callback_url)
        self.callback_params = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        base = f"{u.scheme}://{u.netloc}{u.path}"
        assert base == self.redirect_uri, f"provider sent the browser to {base}, want {self.redirect_uri}"
        return self

    def finish(self, params=None, login_cookie=True, cookies=None, form=None, user=None,
               request_id=None, path=None, **kw):
        """Call kiln's callback: GET with the query, or (Apple, or form=True)
        POST application/x-www-form-urlencoded.  ``login_cookie``: True (this
        attempt's), False (none) or a value."""
        params = dict(self.callback_params if params is None else params)
        jar = dict(cookies or {})
        if login_cookie is True:
            jar[LOGIN_COOKIE] = self.login_cookie
        elif login_cookie:
            jar[LOGIN_COOKIE] = login_cookie
        if form is None:
            form = self.provider == "apple"
        path = path or f"/auth/{self.provider}/callback"
        if request_id is None:
            request_id = "cb-" + uuid.uuid4().hex
        self.request_id = request_id
        self.log_offset = len(self.srv.stdout_bytes())
        if form:
            if user is not None:
                params["user"] = json.dumps(user)
            body = urllib.parse.urlencode(params)
            # A browser posts the provider's form cross-site: Origin is the
            # provider's.
            r = call(self.srv, "POST", path, cookies=jar or None, request_id=request_id,
                     headers=[("Content-Type", "application/x-www-form-urlencoded"),
                              ("Origin", self.mock.issuer)], body=body, **kw)
        else:
            q = urllib.parse.urlencode(params)
            r = call(self.srv, "GET", f"{path}?{q}" if q else path, cookies=jar or None,
                     request_id=request_id, **kw)
        self.callback = r
        return r

    def run(self, **finish_kw):
        start_kw = {}
        if "cookies" in finish_kw:
            start_kw["cookies"] = finish_kw["cookies"]
        self.start(**start_kw).authorize()
        self.finish(**finish_kw)
        return self


def login(srv, mock, provider="mock", **kw):
    """A successful login; returns (Login, session cookie value)."""
    flow = Login(srv, mock, provider)
    r = flow.run(**kw).callback
    want = srv.env.get("AUTH_SUCCESS_REDIRECT", "/")
    assert r.status == 302, f"callback: {r!r}\nkiln log tail: {srv.stdout_text()[-1500:]}"
    assert r.headers.get("location") == want, \
        f"callback redirected to {r.headers.get('location')!r}, want {want!r}" \
        f"\nkiln log tail: {srv.stdout_text()[-1500:]}"
    cookie = assert_session_cookie(r, secure=srv.env.get("PUBLIC_URL", "").startswith("https:"))
    return flow, cookie


def assert_failure(flow_or_resp, code):
    """302 to AUTH_FAILURE_REDIRECT?error=<code>, no session."""
    r = flow_or_resp.callback if isinstance(flow_or_resp, Login) else flow_or_resp
    assert r.status == 302, f"want a 302 to the failure page, got {r!r}"
    loc = r.headers.get("location", "")
    u = urllib.parse.urlsplit(loc)
    base = f"{u.scheme}://{u.netloc}{u.path}"
    q = dict(urllib.parse.parse_qsl(u.query))
    assert base == FAILURE_REDIRECT, f"redirected to {loc!r}, want {FAILURE_REDIRECT}?error={code}"
    assert q.get("error") == code, f"error={q.get('error')!r}, want {code!r} (Location {loc!r})"
    assert_no_session_cookie(r)
    return q


def log_records_since(srv, offset):
    data = srv.stdout_bytes()[offset:]
    data = data[:data.rfind(b"\n") + 1]
    out = []
    for line in data.split(b"\n"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def is_warning(rec):
    return str(rec.get("level", "")).lower() in ("warning", "warn")


def assert_reason_logged(srv, flow, reason, timeout=3.0, traceable=False):
    """One warning line of this callback names the reason.  ``traceable``:
    and every other warning line naming it that appeared meanwhile carries
    the request id too (tests run one at a time, so it can only be this
    request's)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = log_records_since(srv, flow.log_offset)
        mine = [r for r in recs if r.get("request_id") == flow.request_id]
        hits = [r for r in mine if is_warning(r) and r.get("message") != "request"
                and reason in json.dumps(r)]
        done = any(r.get("message") == "request" for r in mine)
        if (hits and done) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(hits) == 1, (f"want one warning line naming {reason!r} for request "
                            f"{flow.request_id}, got {len(hits)}; that request's lines: {mine}")
    if not traceable:
        return
    orphans = [r for r in recs if is_warning(r) and reason in json.dumps(r)
               and r.get("request_id") != flow.request_id]
    assert not orphans, (f"warning lines naming {reason!r} without this request's id "
                         f"({flow.request_id}), so they cannot be traced to it: {orphans}")


def wait_log(srv, match, offset=0, timeout=5.0):
    """The log records (from byte ``offset`` of stdout on) for which
    ``match(record)`` is true, waiting up to ``timeout`` for one."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [r for r in log_records_since(srv, offset) if match(r)]
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.05)


def outage_logged(srv, dependency, offset=0, timeout=5.0):
    """kiln_log_outage's line for this dependency (at most one a second)."""
    return wait_log(srv, lambda r: r.get("message") == "dependency unavailable"
                    and r.get("dependency") == dependency, offset, timeout)


def assert_not_in_logs(srv, *secrets):
    out = srv.stdout_text() + srv.stderr_text()
    leaked = [s for s in secrets if s and s in out]
    assert not leaked, f"kiln's output contains secrets/tokens: {[s[:12] + '…' for s in leaked]}"


def s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------
# JWT helpers (no verification library: openssl for the one signature
# check the tests make themselves)
# --------------------------------------------------------------------------

def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


def _der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b


def es256_verify(token, public_pem_path):
    """Check an ES256 JWS with openssl; True when valid."""
    h, p, s = token.split(".")
    sig = b64url_decode(s)
    if len(sig) != 64:
        return False
    der = _der_int(sig[:32]) + _der_int(sig[32:])
    der = b"\x30" + bytes([len(der)]) + der
    with tempfile.TemporaryDirectory() as d:
        sig_path, data_path = os.path.join(d, "sig"), os.path.join(d, "data")
        with open(sig_path, "wb") as f:
            f.write(der)
        with open(data_path, "wb") as f:
            f.write(f"{h}.{p}".encode())
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", public_pem_path,
                            "-signature", sig_path, data_path], capture_output=True, timeout=30)
        return r.returncode == 0


# --------------------------------------------------------------------------
# the kv store (Valkey modes): look at sessions from outside
# --------------------------------------------------------------------------

def redis_cli(svc, *args, mode=None):
    """redis-cli against the Redis that kiln uses in this store mode."""
    mode = mode or kilnhttp.STORES
    if mode == "postgres":
        cmd = ["redis-cli", "-h", svc.redis_host, "-p", str(svc.redis_port)]
        env = None
    else:
        cmd = ["redis-cli", "--tls", "--cacert", svc.redis_ca, "-h", "localhost",
               "-p", str(svc.redis_tls_port), "--user", svc.redis_user]
        env = dict(os.environ, REDISCLI_AUTH=svc.redis_password)
    r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, timeout=15, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


def redis_service_name(mode=None):
    """The test-services.sh name of the Redis kiln uses in this mode."""
    return "redis" if (mode or kilnhttp.STORES) == "postgres" else "redis-tls"


def needs_valkey(reason):
    return pytest.mark.skipif(kilnhttp.STORES == "embedded",
                              reason=f"embedded mode has no shared Valkey: {reason}")
