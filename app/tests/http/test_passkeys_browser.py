"""Passkeys in a real browser (docs/AUTHENTICATION.md, "Passkeys"):
Debian's Chromium driven by playwright-core (app/tests/browser/passkeys.js)
with the DevTools protocol's virtual authenticator, on the page Kiln serves
for tests (GET /_test/passkeys). The browser signs in, registers a passkey
(navigator.credentials.create with Kiln's options), signs out (DELETE
/auth/logout: the session ends, the cookie goes), and signs
in again with the passkey alone (navigator.credentials.get with no
allowCredentials: a discoverable credential, no address typed); /me is the
same user. Every store mode.

WebAuthn needs a secure context and a relying party id that is a domain:
the page is on http://localhost:PORT (a secure context for Chromium), so
PUBLIC_URL is that and the relying party is "localhost".
"""

import json
import os
import shutil
import subprocess
import uuid

import pytest

import authkit as ak
import kilnhttp

BROWSER_DIR = kilnhttp.REPO_ROOT / "app" / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")


def browser_problem():
    if not (shutil.which("node") or shutil.which("nodejs")):
        return "node not found (Debian packages nodejs and npm; scripts/deps.sh)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (Debian package chromium; scripts/deps.sh)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        return "playwright-core is not installed in app/tests/browser/node_modules: run scripts/npm-deps.sh"
    return None


def test_a_passkey_registered_in_chromium_signs_in_without_an_address(own_db, module_kiln):
    why = browser_problem()
    if why:
        pytest.fail(why, pytrace=False)
    port = kilnhttp.free_port()
    base = f"http://localhost:{port}"
    srv = ak.start_kiln(module_kiln, PORT=port, PUBLIC_URL=base, **own_db())
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    node = shutil.which("node") or shutil.which("nodejs")
    p = subprocess.run([node, str(BROWSER_DIR / "passkeys.js"), base, email], cwd=BROWSER_DIR,
                       capture_output=True, text=True, timeout=120)
    events = {}
    for line in p.stdout.splitlines():
        e = json.loads(line)
        events[e["ev"]] = e
    assert p.returncode == 0 and "fatal" not in events, (p.stdout, p.stderr[-2000:])
    assert "pageerror" not in events, events
    assert events["login"]["status"] == 200, events
    reg = events["register"]
    assert reg["status"] == 201 and reg["body"]["name"] == "chromium", reg
    out = events["signed_out"]
    assert out["logout"] == 302 and out["me"] == 401 and out["cookies"] == 0, out
    assert events["signin"]["status"] == 200, events["signin"]
    assert events["signin"]["body"]["user"]["provider"] == "passkey", events["signin"]
    me = events["me"]
    assert me["status"] == 200 and me["body"]["user"]["email"] == email, me
    assert events["credentials"]["n"] == 1 and events["credentials"]["resident"], events
    r = ak.call(srv, "GET", "/_test/passkeys")
    assert r.status == 200 and "kilnSignIn" in r.body.decode(), r
