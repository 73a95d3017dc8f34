"""Uploads (API.md, "Uploads") against a real S3 stand-in: s3rver from the
npm registry (app/tests/s3/s3.js, installed by scripts/npm-deps.sh) on a
random loopback port, with kiln pointed at it through AWS_ENDPOINT_URL_S3
and s3rver's one key pair (S3RVER / S3RVER).

What is covered: presign → the browser's multipart POST straight to S3 (the
returned fields, the file last) → list (paged with limit/next_token) →
metadata → download through the presigned URL (bytes compared) → delete
(then 404), on /api/v1 and the /api alias; validation (disallowed type 422,
file names sanitised); the size limit (s3rver does not enforce POST
policies, so the policy's content-length-range is asserted instead);
another user's key (403 before any S3 call); path tricks (.., %2e%2e,
backslash, control characters, %2F, over-long keys) answered 400/403 with
s3rver's request log unchanged; no bucket → 503 on every route; S3 failing
or unreachable → 503 without S3's text; configuration errors.

s3rver does not check signatures, so the POST policy signature and the
presigned GET URL are checked here against botocore (Debian's 1.29), with
its clock frozen at the X-Amz-Date kiln signed with.

Runs only with KILN_STORES=embedded (plain and ASan runs of make test): the
routes store nothing in the database, so the other store modes would repeat
the same S3 calls.
"""

import base64
import datetime
import json
import os
import pathlib
import select
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import requests

import authkit as ak
import kilnhttp
from kilnhttp import STORES, assert_error

pytestmark = pytest.mark.skipif(
    STORES != "embedded",
    reason=f"KILN_STORES={STORES}: the uploads routes use no store; run with embedded only")

V1, ALIAS = "/api/v1", "/api"
BUCKET = "kiln-uploads"
REGION = "us-east-1"
ACCESS_KEY = SECRET_KEY = "S3RVER"
DEFAULT_TYPES = ["image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf",
                 "text/plain"]
MAX_BYTES = 10 * 1024 * 1024
FILE_KEYS = {"key", "filename", "size", "content_type", "last_modified"}
S3_DIR = kilnhttp.REPO_ROOT / "app" / "tests" / "s3"


# --------------------------------------------------------------------------
# s3rver
# --------------------------------------------------------------------------

def s3_problem():
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        return "node not found (Debian packages nodejs and npm; scripts/deps.sh)"
    if not (S3_DIR / "node_modules" / "s3rver" / "package.json").is_file():
        return "s3rver is not installed in app/tests/s3/node_modules: run scripts/npm-deps.sh"
    return None


class S3:
    """app/tests/s3/s3.js as a child process, and its control API."""

    def __init__(self, buckets=(BUCKET,)):
        self.port = kilnhttp.free_port()
        self.dir = tempfile.mkdtemp(prefix="kiln-s3rver-")
        self.buckets = buckets
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=20.0):
        node = shutil.which("node") or shutil.which("nodejs")
        self.err_path = pathlib.Path(self.dir) / "stderr.log"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [node, str(S3_DIR / "s3.js"), str(self.port), str(pathlib.Path(self.dir) / "data"),
                 ",".join(self.buckets)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=str(S3_DIR),
                start_new_session=True)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line += os.read(self.proc.stdout.fileno(), 4096)
                if b"\n" in line:
                    break
        if not line.startswith(b"READY "):
            self.stop()
            raise AssertionError(f"s3rver did not start (got {line[:300]!r}): "
                                 f"{self.err_path.read_text(errors='replace')[-2000:]}")
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _control(self, method, path, body=None):
        r = requests.request(method, f"{self.endpoint}/__kiln/{path}", json=body, timeout=10)
        assert r.status_code == 200, f"s3 control {path}: {r.status_code} {r.text[:300]}"
        return r.json()

    def requests(self):
        """What S3 received so far: [{"method","path","query"}]."""
        return self._control("GET", "requests")["requests"]

    def fail_next(self, status=500, code="InternalError", count=1):
        self._control("POST", "fail", {"status": status, "code": code, "count": count})

    def clear_failures(self):
        self._control("POST", "fail", {"count": 0})


@pytest.fixture(scope="module")
def s3():
    why = s3_problem()
    if why:
        pytest.fail(why, pytrace=False)
    srv = S3().start()
    yield srv
    srv.stop()


def uploads_env(s3, **extra):
    env = dict(AWS_ENDPOINT_URL_S3=s3.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY,
               AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION, UPLOADS_BUCKET=BUCKET,
               # never reach for an instance role from a test
               AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def up_kiln(module_kiln, s3):
    return ak.start_kiln(module_kiln, **uploads_env(s3))


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------

class User:
    """A dev-login user; API calls go through requests (so every answer is
    checked against the OpenAPI document) with a Bearer session."""

    def __init__(self, srv):
        self.srv = srv
        self.token = ak.session_for(srv, email=ak.unique_email("uploads"))
        self._id = None

    def call(self, method, path, prefix=V1, headers=None, **kw):
        headers = dict(headers or {}, Authorization=f"Bearer {self.token}")
        return requests.request(method, self.srv.url(prefix + path), headers=headers,
                                timeout=15, **kw)

    def raw(self, method, target):
        """A request with the target exactly as written (no client-side
        normalisation of dot segments or escapes)."""
        return ak.call(self.srv, method, target, bearer=self.token)

    @property
    def id(self):
        if self._id is None:
            self._id = self.presign("whoami.txt")["key"].split("/")[1]
        return self._id

    @property
    def prefix(self):
        return f"users/{self.id}/uploads/"

    def presign(self, filename="a.txt", content_type="text/plain", prefix=V1):
        r = self.call("POST", "/uploads/presign", prefix=prefix,
                      json={"filename": filename, "content_type": content_type})
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self, data, filename="a.txt", content_type="text/plain"):
        p = self.presign(filename, content_type)
        r = post_form(p, data, content_type)
        assert r.status_code in (200, 201, 204), f"S3 POST: {r.status_code} {r.text[:300]}"
        return p["key"]

    def list(self, prefix=V1, **params):
        r = self.call("GET", "/uploads", prefix=prefix, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"files", "next_token"}
        return body

    def list_all(self, limit=1000):
        files, token = [], None
        while True:
            params = {"limit": limit}
            if token:
                params["next_token"] = token
            page = self.list(**params)
            files += page["files"]
            token = page["next_token"]
            if token is None:
                return files


def post_form(presigned, data, content_type, filename="upload.bin"):
    """What a browser's HTML form does: multipart/form-data with the fields
    first, in order, and the file last."""
    fields = list(presigned["fields"].items())
    return requests.post(presigned["url"], data=fields,
                         files={"file": (filename, data, content_type)}, timeout=15)


def s3_count(s3):
    return len(s3.requests())


def policy_of(presigned):
    return json.loads(base64.b64decode(presigned["fields"]["policy"]))


# --------------------------------------------------------------------------
# botocore, with its clock frozen at kiln's signing time
# --------------------------------------------------------------------------

class frozen_botocore_clock:
    """Replace botocore.auth.datetime (Debian's 1.29 reads
    datetime.datetime.utcnow() there) for the duration of a with block."""

    def __init__(self, amz_date):
        self.at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")

    def __enter__(self):
        import botocore.auth
        at = self.at

        class FrozenDatetime(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return at

        class Module:
            datetime = FrozenDatetime

        self.auth = botocore.auth
        self.saved = botocore.auth.datetime
        botocore.auth.datetime = Module
        return self

    def __exit__(self, *exc):
        self.auth.datetime = self.saved


def botocore_credentials():
    from botocore.credentials import Credentials
    return Credentials(ACCESS_KEY, SECRET_KEY)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

def test_types(up_kiln):
    u = User(up_kiln)
    for prefix in (V1, ALIAS):
        r = u.call("GET", "/uploads/types", prefix=prefix)
        assert r.status_code == 200, r.text
        assert r.json() == {"types": DEFAULT_TYPES, "max_size_bytes": MAX_BYTES}


def test_round_trip(up_kiln, s3):
    """presign → POST to S3 → list → metadata → download → delete → 404."""
    u = User(up_kiln)
    data = os.urandom(3000) + b"\x00end"
    for prefix in (V1, ALIAS):
        p = u.presign("holiday photo.png", "image/png", prefix=prefix)
        assert set(p) == {"url", "key", "fields"}
        assert p["url"] == f"{s3.endpoint}/{BUCKET}"
        key = p["key"]
        assert key.startswith(u.prefix) and key.endswith("-holiday_photo.png"), key
        assert list(p["fields"]) == ["key", "Content-Type", "x-amz-algorithm", "x-amz-credential",
                                     "x-amz-date", "policy", "x-amz-signature"]
        assert p["fields"]["key"] == key
        assert p["fields"]["Content-Type"] == "image/png"

        r = post_form(p, data, "image/png")
        assert r.status_code == 204, r.text

        listed = {f["key"]: f for f in u.list(prefix=prefix)["files"]}
        f = listed[key]
        assert set(f) == FILE_KEYS
        assert f["size"] == len(data)
        assert f["filename"] == "holiday_photo.png"
        assert f["content_type"] == "image/png"          # from the extension
        assert f["last_modified"].endswith("Z") and len(f["last_modified"]) == 27

        r = u.call("GET", f"/uploads/{key}", prefix=prefix)
        assert r.status_code == 200, r.text
        meta = r.json()
        # HeadObject's Last-Modified has whole seconds; the listing may not.
        assert meta["last_modified"][:19] == f["last_modified"][:19]
        assert meta["last_modified"][19:] == ".000000Z"
        assert dict(meta, last_modified=None) == dict(f, last_modified=None)

        r = u.call("GET", f"/uploads/{key}/download", prefix=prefix)
        assert r.status_code == 200, r.text
        dl = r.json()
        assert dl["key"] == key and set(dl) == {"url", "key"}
        assert dl["url"].startswith(f"{s3.endpoint}/{BUCKET}/{key}?")
        got = requests.get(dl["url"], timeout=15)
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-disposition"] == 'attachment; filename="holiday_photo.png"'

        r = u.call("DELETE", f"/uploads/{key}", prefix=prefix)
        assert r.status_code == 204, r.text
        assert r.content == b""
        for method, path in (("GET", f"/uploads/{key}"), ("GET", f"/uploads/{key}/download"),
                             ("DELETE", f"/uploads/{key}")):
            assert_error(u.call(method, path, prefix=prefix), 404, "upload_not_found")
        assert key not in {f["key"] for f in u.list(prefix=prefix)["files"]}


def test_list_pages_with_next_token(up_kiln, s3):
    u = User(up_kiln)
    keys = sorted(u.upload(b"x" * (i + 1), filename=f"f{i}.txt") for i in range(5))
    # The user's listing holds exactly these (the id-probing presign made no object).
    assert [f["key"] for f in u.list_all()] == keys
    seen, token, pages = [], None, 0
    while True:
        params = {"limit": 2}
        if token:
            params["next_token"] = token
        page = u.list(**params)
        pages += 1
        assert len(page["files"]) <= 2
        seen += [f["key"] for f in page["files"]]
        token = page["next_token"]
        if token is None:
            break
        assert isinstance(token, str) and token
    assert seen == keys
    assert pages == 3
    # A token pasted into a query unencoded ('+' reads as a space in a
    # query, '/' and '=' pass as they are) gives the same page.
    first = u.list(limit=2)
    r = u.raw("GET", f"/api/v1/uploads?limit=2&next_token={first['next_token']}")
    assert r.status == 200, r
    assert [f["key"] for f in r.json()["files"]] == keys[2:4]
    one_by_one = u.list_all(limit=1)
    assert [f["key"] for f in one_by_one] == keys
    assert sorted(f["size"] for f in one_by_one) == [1, 2, 3, 4, 5]
    # Another user sees none of them.
    assert User(up_kiln).list()["files"] == []
    # "abc": a token S3 never made (s3rver refuses it with 400 as S3 does;
    # some other garbage makes s3rver fail with 500, which is a 503 here).
    for bad in ({"limit": "0"}, {"limit": "x"}, {"next_token": "abc"},
                {"next_token": "a b"}, {"next_token": "\u00e9t\u00e9"}):
        assert_error(u.call("GET", "/uploads", params=bad), 400, "invalid_request")


def test_presign_validation(up_kiln, s3):
    u = User(up_kiln)
    before = s3_count(s3)
    body = assert_error(u.call("POST", "/uploads/presign",
                               json={"filename": "a.html", "content_type": "text/html"}),
                        422, "validation_failed")
    assert list(body["details"]) == ["content_type"]
    body = assert_error(u.call("POST", "/uploads/presign", json={}), 422, "validation_failed")
    assert set(body["details"]) == {"filename", "content_type"}
    for bad_name in ("", "   ", "..", "../..", "/", "\\\\", "\x01\x02", 7, None,
                     "x" * 252 + ".pdf"):
        body = assert_error(u.call("POST", "/uploads/presign",
                                   json={"filename": bad_name, "content_type": "text/plain"}),
                            422, "validation_failed")
        assert list(body["details"]) == ["filename"], (bad_name, body)
    assert_error(u.call("POST", "/uploads/presign", data=b"{nope",
                        headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert_error(u.call("POST", "/uploads/presign", json=["a"]), 400, "invalid_request")
    # None of that reached S3 (presigning never does).
    assert s3_count(s3) == before

    names = {
        "../../etc/passwd": "passwd",
        "C:\\Users\\me\\My Report (final).PDF": "My_Report_final_.PDF",
        "a\x01b\x7f.txt": "ab.txt",
        ".hidden..txt": "hidden.txt",
        "résumé.txt": "r_sum_.txt",
        "x" * 251 + ".pdf": "x" * 96 + ".pdf",
    }
    for given, want in names.items():
        key = u.presign(given, "application/pdf")["key"]
        name = key.rsplit("/", 1)[1]
        assert name[36] == "-" and name[37:] == want, (given, key)
    # Types are matched case-blind and sent in their configured spelling.
    p = u.presign("a.png", "IMAGE/PNG")
    assert p["fields"]["Content-Type"] == "image/png"
    assert {"Content-Type": "image/png"} in policy_of(p)["conditions"]


def test_policy_pins_key_type_and_size(module_kiln, s3):
    """s3rver accepts any POST (it does not enforce policies): the limits
    are in the signed policy, which is what S3 enforces."""
    srv = ak.start_kiln(module_kiln, **uploads_env(s3, UPLOADS_MAX_SIZE_MB="1",
                                                   UPLOADS_PRESIGNED_URL_EXPIRY="600"))
    u = User(srv)
    p = u.presign("big.pdf", "application/pdf")
    f = p["fields"]
    policy = policy_of(p)
    signed_at = datetime.datetime.strptime(f["x-amz-date"], "%Y%m%dT%H%M%SZ")
    expires = datetime.datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%S.000Z")
    assert expires - signed_at == datetime.timedelta(seconds=600)
    assert policy["conditions"] == [
        {"bucket": BUCKET},
        ["eq", "$key", p["key"]],
        {"Content-Type": "application/pdf"},
        ["content-length-range", 1, 1048576],
        {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
        {"x-amz-credential": f"{ACCESS_KEY}/{f['x-amz-date'][:8]}/{REGION}/s3/aws4_request"},
        {"x-amz-date": f["x-amz-date"]},
    ]
    r = u.call("GET", "/uploads/types")
    assert r.json()["max_size_bytes"] == 1048576
    # What s3rver does with a file over the limit, for the record: it
    # stores it (real S3 answers 400 EntityTooLarge).
    r = post_form(p, b"z" * (1048576 + 1), "application/pdf")
    assert r.status_code in (204, 400), r.text


def test_signatures_match_botocore(up_kiln, s3):
    from botocore.auth import S3SigV4QueryAuth, SigV4Auth
    from botocore.awsrequest import AWSRequest

    u = User(up_kiln)
    p = u.presign("sig.txt", "text/plain")
    f = p["fields"]
    # POST policy: the signature is HMAC(signing key of that date, base64 policy).
    req = AWSRequest(method="POST", url=p["url"])
    req.context["timestamp"] = f["x-amz-date"]
    want = SigV4Auth(botocore_credentials(), "s3", REGION).signature(f["policy"], req)
    assert f["x-amz-signature"] == want

    key = u.upload(b"signed bytes", filename="sig.txt")
    url = u.call("GET", f"/uploads/{key}/download").json()["url"]
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    amz = {k: v for k, v in query if k.startswith("X-Amz-")}
    assert amz["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert amz["X-Amz-Expires"] == "3600"
    assert amz["X-Amz-SignedHeaders"] == "host"
    assert amz["X-Amz-Credential"] == \
        f"{ACCESS_KEY}/{amz['X-Amz-Date'][:8]}/{REGION}/s3/aws4_request"
    others = [(k, v) for k, v in query if not k.startswith("X-Amz-")]
    assert others == [("response-content-disposition", 'attachment; filename="sig.txt"')]
    unsigned = urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path,
         urllib.parse.urlencode(others, quote_via=urllib.parse.quote), ""))
    with frozen_botocore_clock(amz["X-Amz-Date"]):
        breq = AWSRequest(method="GET", url=unsigned)
        S3SigV4QueryAuth(botocore_credentials(), "s3", REGION, expires=3600).add_auth(breq)
    theirs = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(breq.url).query))
    assert theirs["X-Amz-Signature"] == amz["X-Amz-Signature"]


def test_another_users_key_is_forbidden(up_kiln, s3):
    alice, bob = User(up_kiln), User(up_kiln)
    key = alice.upload(b"alice's", filename="private.txt")
    before = s3_count(s3)
    for method, path in (("GET", f"/uploads/{key}"), ("GET", f"/uploads/{key}/download"),
                         ("DELETE", f"/uploads/{key}")):
        for prefix in (V1, ALIAS):
            assert_error(bob.call(method, path, prefix=prefix), 403, "forbidden")
    # A user that does not exist at all is someone else too.
    assert_error(bob.call("GET", "/uploads/users/nobody/uploads/x.txt"), 403, "forbidden")
    assert s3_count(s3) == before, "a forbidden key reached S3"
    assert key in {f["key"] for f in alice.list()["files"]}


def test_path_tricks_never_reach_s3(up_kiln, s3):
    u = User(up_kiln)
    me = u.id
    base = f"/api/v1/uploads/users/{me}/uploads"
    tricks = {
        f"{base}/..": 400,
        f"{base}/%2e%2e": 400,
        f"{base}/%2E%2E/download": 400,
        f"{base}/a..b": 400,
        f"{base}/a%5cb": 400,
        f"{base}/a\\b": 400,
        f"{base}/a%01b": 400,
        f"{base}/a%7fb": 400,
        f"{base}/a%00b": 400,
        f"{base}/a%0d%0ab": 400,
        f"{base}/..%2f..%2fx": 400,
        f"{base}/a%2Fb": 400,
        f"{base}/.": 400,
        f"{base}/%2e": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2F..": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2F.": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2Fa%2F..%2Fb": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2F%2Fb": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2F": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads": 400,
        f"/api/v1/uploads/users%2F{me}": 400,
        f"/api/v1/uploads/%2Fusers%2F{me}%2Fuploads%2Fx": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2Fx%2F": 400,
        f"/api/v1/uploads/users%2F{me}%2Fuploads%2Fa%5cb": 400,
        f"/api/v1/uploads/users%2F{me}x%2Fuploads%2Fx": 403,
        f"/api/v1/uploads/users%2F..%2Fuploads%2Fx": 400,
        f"{base}/a%zz": 400,
        f"{base}/" + "k" * 1100: 400,
        f"/api/v1/uploads/users/%2e%2e/uploads/x": 400,
        f"/api/v1/uploads/users/..%5c{me}/uploads/x": 400,
        f"/api/v1/uploads/users/{me}x/uploads/x": 403,
        f"/api/v1/uploads/users/{me.upper()}/uploads/x": 403,
        f"/api/uploads/users/{me}%20/uploads/x": 403,
    }
    before = s3_count(s3)
    for target, status in tricks.items():
        for method in ("GET",) if target.endswith("/download") else ("GET", "DELETE"):
            r = u.raw(method, target)
            assert r.status == status, f"{method} {target[:120]}: {r!r}"
            assert_error(r, status, "forbidden" if status == 403 else "invalid_request")
    assert s3_count(s3) == before, [x for x in s3.requests()[before:]]


def test_without_a_session(up_kiln):
    for method, path in (("GET", "/uploads"), ("GET", "/uploads/types"),
                         ("POST", "/uploads/presign"),
                         ("GET", "/uploads/users/x/uploads/y"),
                         ("GET", "/uploads/users/x/uploads/y/download"),
                         ("DELETE", "/uploads/users/x/uploads/y")):
        r = requests.request(method, up_kiln.url(V1 + path), json={} if method == "POST" else None,
                             timeout=10)
        assert_error(r, 401, "authentication_required")


def test_no_bucket_is_503_everywhere(module_kiln, s3):
    srv = ak.start_kiln(module_kiln, **uploads_env(s3, UPLOADS_BUCKET=None))
    u = User(srv)
    me = "0b7e1c2a-9f7e-4c43-9a49-7d5f2f7f1a11"  # not this session's id
    before = s3_count(s3)
    # With no bucket the session's own prefix is unknown to the test, so the
    # key routes are checked with another user's key: the key check comes
    # first (403), then the bucket (503 with retry-after).
    for method, path, kw in (("GET", "/uploads", {}), ("GET", "/uploads/types", {}),
                             ("POST", "/uploads/presign",
                              {"json": {"filename": "a.txt", "content_type": "text/plain"}})):
        for prefix in (V1, ALIAS):
            r = u.call(method, path, prefix=prefix, **kw)
            assert_error(r, 503, "service_unavailable")
            assert r.headers.get("retry-after") == "1", r.headers
    for method, path in (("GET", f"/uploads/users/{me}/uploads/y"),
                         ("GET", f"/uploads/users%2F{me}%2Fuploads%2Fy/download"),
                         ("DELETE", f"/uploads/users/{me}/uploads/y"),
                         ("GET", "/uploads/users/x/uploads/..")):
        r = u.raw(method, V1 + path)
        assert r.status in (400, 403), (method, path, r)
    line = srv.wait_log(lambda l: l.get("message") == "dependency unavailable")
    assert line["dependency"] == "File storage" and "UPLOADS_BUCKET" in line["error"], line
    assert s3_count(s3) == before


def test_s3_failures_are_503_without_s3s_words(up_kiln, s3):
    u = User(up_kiln)
    key = u.upload(b"data", filename="f.txt")
    # This instance is shared by the module: an S3 failure of another test
    # in the last second would make this test's first one only counted.
    time.sleep(1.1)
    try:
        for method, path in (("GET", "/uploads"), ("GET", f"/uploads/{key}"),
                             ("GET", f"/uploads/{key}/download"), ("DELETE", f"/uploads/{key}")):
            s3.fail_next(status=500, code="InternalError")
            r = u.call(method, path)
            body = assert_error(r, 503, "service_unavailable")
            assert r.headers.get("retry-after") == "1"
            assert "SECRET-S3-DETAIL" not in r.text and "InternalError" not in r.text
            assert "<" not in json.dumps(body)
        # S3 refusing kiln's credentials is kiln's outage, not the client's fault.
        s3.fail_next(status=403, code="SignatureDoesNotMatch")
        assert_error(u.call("GET", "/uploads"), 503, "service_unavailable")
    finally:
        s3.clear_failures()
    line = up_kiln.wait_log(lambda l: l.get("message") == "dependency unavailable" and
                            "InternalError" in l.get("error", ""))
    assert line["dependency"] == "File storage", line
    assert "SECRET-S3-DETAIL" not in line["error"], line
    # The object is still there: the failed DELETE deleted nothing.
    assert u.call("GET", f"/uploads/{key}").status_code == 200


def test_s3_unreachable_or_bucket_missing(module_kiln, s3):
    down = ak.start_kiln(module_kiln, **uploads_env(
        s3, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{kilnhttp.free_port()}"))
    u = User(down)
    t0 = time.monotonic()
    assert_error(u.call("GET", "/uploads"), 503, "service_unavailable")
    assert time.monotonic() - t0 < 10
    # Presigning needs no network: it still works with S3 down.
    assert u.call("POST", "/uploads/presign",
                  json={"filename": "a.txt", "content_type": "text/plain"}).status_code == 200

    nobucket = ak.start_kiln(module_kiln, **uploads_env(s3, UPLOADS_BUCKET="no-such-bucket"))
    v = User(nobucket)
    # A missing bucket is a broken deployment: 503, not an empty list.
    assert_error(v.call("GET", "/uploads"), 503, "service_unavailable")


@pytest.mark.parametrize("env,needle", [
    ({"UPLOADS_BUCKET": "Not_A_Bucket"}, "UPLOADS_BUCKET"),
    ({"AWS_REGION": None}, "AWS_REGION"),
    ({"AWS_REGION": None}, "UPLOADS_REGION"),
    ({"UPLOADS_REGION": "eu west 1"}, "UPLOADS_REGION"),
    ({"UPLOADS_REGION": "s3.evil.example/x"}, "UPLOADS_REGION"),
    ({"UPLOADS_MAX_SIZE_MB": "0"}, "UPLOADS_MAX_SIZE_MB"),
    ({"UPLOADS_MAX_SIZE_MB": "10MB"}, "UPLOADS_MAX_SIZE_MB"),
    ({"UPLOADS_PRESIGNED_URL_EXPIRY": "604801"}, "UPLOADS_PRESIGNED_URL_EXPIRY"),
    ({"UPLOADS_ALLOWED_TYPES": "image/png,text"}, "UPLOADS_ALLOWED_TYPES"),
    ({"UPLOADS_ALLOWED_TYPES": " , "}, "UPLOADS_ALLOWED_TYPES"),
])
def test_configuration_errors(s3, env, needle):
    overrides = uploads_env(s3)
    overrides.update(env)
    res = kilnhttp.run_kiln(["serve"], env=kilnhttp.clean_env(kilnhttp.free_port(), overrides))
    assert res.returncode == 2, res
    lines = [l for l in res.stderr.decode().splitlines() if l.startswith("config:")]
    assert any(needle in l for l in lines), res.stderr
    assert SECRET_KEY not in res.stderr.decode().replace("S3RVER/", "")


def test_uploads_region_wins_over_aws_region(module_kiln, s3):
    """UPLOADS_REGION (the original's variable) is the bucket's region: the
    POST policy and download URLs are signed for it, not for the task's
    AWS_REGION."""
    srv = ak.start_kiln(module_kiln, **uploads_env(s3, UPLOADS_REGION="eu-west-2"))
    rec = srv.wait_log(lambda r: r.get("message") == "uploads: S3 bucket configured")
    assert rec.get("region") == "eu-west-2", rec
    u = User(srv)
    f = u.presign()["fields"]
    assert f["x-amz-credential"] == f"{ACCESS_KEY}/{f['x-amz-date'][:8]}/eu-west-2/s3/aws4_request"


def test_allowed_types_configurable(module_kiln, s3):
    srv = ak.start_kiln(module_kiln, **uploads_env(
        s3, UPLOADS_ALLOWED_TYPES=" Text/CSV , image/png,text/csv"))
    u = User(srv)
    assert u.call("GET", "/uploads/types").json()["types"] == ["text/csv", "image/png"]
    assert u.presign("t.csv", "text/csv")["fields"]["Content-Type"] == "text/csv"
    assert_error(u.call("POST", "/uploads/presign",
                        json={"filename": "a.txt", "content_type": "text/plain"}),
                 422, "validation_failed")


def encoded(key):
    """A key as the original's clients send it: one segment, '/' as %2F."""
    return urllib.parse.quote(key, safe="")


def test_a_key_as_one_encoded_segment(up_kiln, s3):
    u = User(up_kiln)
    key = u.upload(b"hello", filename="greeting.txt")
    for prefix in (V1, ALIAS):
        for spelling in (encoded(key), encoded(key).replace("%2F", "%2f")):
            r = u.raw("GET", f"{prefix}/uploads/{spelling}")
            assert r.status == 200, r
            assert r.json()["key"] == key and r.json()["size"] == 5, r
            r = u.raw("GET", f"{prefix}/uploads/{spelling}/download")
            assert r.status == 200, r
            assert r.json()["key"] == key, r
            assert requests.get(r.json()["url"], timeout=10).content == b"hello"
    # The same object in both spellings; delete it through the encoded one.
    assert u.raw("GET", f"{V1}/uploads/{key}").status == 200
    r = u.raw("DELETE", f"{V1}/uploads/{encoded(key)}")
    assert r.status == 204, r
    assert_error(u.call("GET", f"/uploads/{key}"), 404, "upload_not_found")
    assert u.raw("GET", f"{V1}/uploads/{encoded(key)}").status == 404


def test_an_encoded_key_of_another_user_is_403(up_kiln, s3):
    alice, bob = User(up_kiln), User(up_kiln)
    key = alice.upload(b"secret", filename="s.txt")
    before = s3_count(s3)
    for method, suffix in (("GET", ""), ("GET", "/download"), ("DELETE", "")):
        r = bob.raw(method, f"{V1}/uploads/{encoded(key)}{suffix}")
        assert_error(r, 403, "forbidden")
    assert s3_count(s3) == before
    assert alice.raw("GET", f"{V1}/uploads/{encoded(key)}").status == 200
