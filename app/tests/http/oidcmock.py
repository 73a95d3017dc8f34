"""The OIDC provider of the login tests: ``app/tests/oidc/mock.js``
(oauth2-mock-server from the npm registry, installed by scripts/npm-deps.sh)
as a child process, and a client for its control API.

One provider serves the whole pytest session (``OidcMock.shared()``); each
test that uses it starts with ``reset()``.  The provider announces
``http://localhost:<port>`` as its issuer; kiln instances are configured
with that exact string (no trailing slash).

Only the standard library is used here.
"""

import atexit
import http.client
import json
import os
import pathlib
import select
import shutil
import subprocess
import time
import urllib.parse

import kilnhttp

OIDC_DIR = kilnhttp.REPO_ROOT / "app" / "tests" / "oidc"
MOCK_JS = OIDC_DIR / "mock.js"
NODE_MODULES = OIDC_DIR / "node_modules"


def node_binary():
    return os.environ.get("NODE_BIN") or shutil.which("node") or shutil.which("nodejs")


def problem():
    """Why the mock cannot run here, or None."""
    if not node_binary():
        return "node not found (Debian packages nodejs and npm; scripts/deps.sh)"
    if not (NODE_MODULES / "oauth2-mock-server" / "package.json").is_file():
        return ("oauth2-mock-server is not installed in app/tests/oidc/node_modules: "
                "run scripts/npm-deps.sh")
    return None


class OidcMock:
    _shared = None

    def __init__(self, es256=True):
        self.port = kilnhttp.free_port()
        self.control_port = kilnhttp.free_port()
        while self.control_port == self.port:
            self.control_port = kilnhttp.free_port()
        self.issuer = f"http://localhost:{self.port}"
        self.es256 = es256
        self.proc = None
        self.log_path = None

    # -- process ---------------------------------------------------------------
    @classmethod
    def shared(cls):
        """The provider of this pytest session (started on first use)."""
        if cls._shared is None or not cls._shared.running():
            why = problem()
            if why:
                raise AssertionError(why)
            mock = cls()
            mock.start()
            cls._shared = mock
            atexit.register(mock.stop)
        return cls._shared

    def start(self, timeout=20.0):
        import tempfile
        fd, self.log_path = tempfile.mkstemp(prefix="kiln-oidc-mock-", suffix=".log")
        os.close(fd)
        args = [node_binary(), str(MOCK_JS), str(self.port), str(self.control_port)]
        if self.es256:
            args.append("--es256")
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, cwd=str(OIDC_DIR), start_new_session=True)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line += os.read(self.proc.stdout.fileno(), 4096)
                if b"\n" in line:
                    break
        if not line.startswith(b"READY "):
            self.stop()
            raise AssertionError(f"oidc mock did not start (got {line[:300]!r}): {self.stderr()[-2000:]}")
        info = json.loads(line[6:].split(b"\n", 1)[0])
        assert info["issuer"] == self.issuer, info
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def stderr(self):
        try:
            return pathlib.Path(self.log_path).read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    # -- control API -----------------------------------------------------------
    def _control(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"content-type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise AssertionError(f"oidc mock control {method} {path}: {resp.status} {payload[:500]!r}")
        return json.loads(payload)

    def state(self):
        return self._control("GET", "/state")

    def reset(self):
        return self._control("POST", "/reset", {})

    def profile(self, **claims):
        return self._control("POST", "/profile", claims)

    def next(self, **options):
        """One-shot options for the next login (see mock.js)."""
        return self._control("POST", "/next", options)

    def rotate(self, alg="RS256"):
        """A new signing key; returns its kid."""
        return self._control("POST", "/rotate", {"alg": alg})["kid"]

    def use(self, alg=None, kid=None):
        body = {"kid": kid} if kid else {"alg": alg}
        return self._control("POST", "/use", body)["kid"]

    def stop_provider(self):
        return self._control("POST", "/stop", {})

    def start_provider(self):
        return self._control("POST", "/start", {})

    # -- the provider, as a browser sees it -----------------------------------
    def get(self, url, headers=None):
        """GET an absolute URL on the provider without following redirects:
        (status, headers dict lower-cased, body bytes)."""
        u = urllib.parse.urlsplit(url)
        assert u.scheme == "http" and u.port == self.port, f"not the mock's URL: {url}"
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            target = u.path + (f"?{u.query}" if u.query else "")
            conn.request("GET", target, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def jwks(self):
        status, _, body = self.get(self.issuer + "/jwks")
        assert status == 200, status
        return json.loads(body)
