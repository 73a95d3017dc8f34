"""Passkeys (docs/AUTHENTICATION.md, "Passkeys"), black-box, with a software
authenticator (softauthn.py: python3-cryptography keys, "none"
attestation); the browser test (test_passkeys_browser.py) does the same
with Chromium's virtual authenticator.

What is checked:
  * registration: the options (challenge, rp, the user handle = the user
    id's 16 bytes, ES256/EdDSA/RS256, a discoverable credential,
    attestation none); an ES256 and an EdDSA credential are stored and
    listed (no key material in the listing); a second options call
    excludes them;
  * sign-in without an address: the options have no allowCredentials; the
    assertion starts a session for the passkey's user (provider
    "passkey");
  * a challenge works once and for its own ceremony: a replayed assertion,
    a sign-in challenge used to register, another user's registration
    challenge: 400 invalid_challenge;
  * refusals: a counter that does not move forward (a cloned
    authenticator), presence without user verification (at sign-in and at
    registration), a wrong origin, an unknown credential, a user handle
    of another user, a removed passkey: 401/400 invalid_credential;
  * every mode (KILN_STORES).
"""

import uuid

import pytest

import authkit as ak
import kilnhttp
import softauthn


@pytest.fixture(scope="module")
def srv(own_db, module_kiln):
    return ak.start_kiln(module_kiln, **own_db())


def origin(srv):
    return srv.env["PUBLIC_URL"]


def rp_id(srv):
    return "127.0.0.1"


def user(srv):
    email = f"pk-{uuid.uuid4().hex[:10]}@example.com"
    _, cookie = ak.dev_login(srv, email=email)
    return email, {ak.SESSION_COOKIE: cookie}


def post(srv, path, body=None, jar=None):
    return ak.call(srv, "POST", path, json_body=body if body is not None else {}, cookies=jar)


def register(srv, jar, alg=-7, name="laptop"):
    r = post(srv, "/api/v1/me/passkeys/options", jar=jar)
    assert r.status == 200, r
    opts = r.json()
    auth = softauthn.Authenticator(rp_id(srv), alg)
    cred = auth.create(opts, origin(srv))
    r = post(srv, "/api/v1/me/passkeys", dict(cred, name=name), jar)
    assert r.status == 201, r
    return auth, r.json(), opts


def sign_in(srv, auth, **kw):
    r = post(srv, "/auth/passkey/options")
    assert r.status == 200, r
    opts = r.json()
    return post(srv, "/auth/passkey/login", auth.get(opts, origin(srv), **kw)), opts


def test_register_list_and_sign_in(srv):
    email, jar = user(srv)
    auth, pk, opts = register(srv, jar)
    assert opts["rp"] == {"id": "127.0.0.1", "name": "127.0.0.1"}, opts
    assert [p["alg"] for p in opts["pubKeyCredParams"]] == [-7, -8, -257], opts
    assert opts["attestation"] == "none" and opts["authenticatorSelection"]["residentKey"] == "required"
    me = ak.me(srv, jar[ak.SESSION_COOKIE]).json()["user"]
    assert len(softauthn.unb64u(opts["user"]["id"])) == 16 and opts["user"]["name"] == email
    assert pk["name"] == "laptop" and not pk["backed_up"], pk
    ed, _, _ = register(srv, jar, alg=-8, name="phone")
    r = ak.call(srv, "GET", "/api/v1/me/passkeys", cookies=jar)
    listed = r.json()["data"]
    assert [p["name"] for p in listed] == ["phone", "laptop"], listed
    assert all(set(p) == {"id", "name", "created_at", "last_used_at", "backup_eligible",
                          "backed_up"} for p in listed), listed
    again = post(srv, "/api/v1/me/passkeys/options", jar=jar).json()
    assert {c["id"] for c in again["excludeCredentials"]} == {softauthn.b64u(auth.cred_id),
                                                              softauthn.b64u(ed.cred_id)}
    for a in (auth, ed):
        r, login_opts = sign_in(srv, a)
        assert login_opts["allowCredentials"] == [] and login_opts["rpId"] == "127.0.0.1"
        assert r.status == 200, r
        got = ak.me(srv, ak.assert_session_cookie(r)).json()["user"]
        assert got["email"] == me["email"] and got["provider"] == "passkey", got


def test_a_challenge_works_once_and_for_its_own_ceremony(srv):
    email, jar = user(srv)
    auth, _, _ = register(srv, jar)
    opts = post(srv, "/auth/passkey/options").json()
    body = auth.get(opts, origin(srv))
    assert post(srv, "/auth/passkey/login", body).status == 200
    kilnhttp.assert_error(post(srv, "/auth/passkey/login", body), 400, "invalid_challenge")
    # A sign-in challenge used to register.
    opts = post(srv, "/auth/passkey/options").json()
    fake = {"challenge": opts["challenge"], "user": {"id": softauthn.b64u(bytes(16))}}
    other = softauthn.Authenticator(rp_id(srv))
    kilnhttp.assert_error(post(srv, "/api/v1/me/passkeys", other.create(fake, origin(srv)), jar),
                          400, "invalid_challenge")
    # Another user's registration challenge.
    _, jar_b = user(srv)
    opts_a = post(srv, "/api/v1/me/passkeys/options", jar=jar).json()
    kilnhttp.assert_error(post(srv, "/api/v1/me/passkeys", other.create(opts_a, origin(srv)),
                               jar_b), 400, "invalid_challenge")


def test_refusals(srv):
    email, jar = user(srv)
    auth, pk, _ = register(srv, jar)
    # A counter that does not move forward: a cloned authenticator.
    r, _ = sign_in(srv, auth, count_step=0)
    kilnhttp.assert_error(r, 401, "invalid_credential")
    # Presence without user verification: not a passkey sign-in.
    r, _ = sign_in(srv, auth, flags=softauthn.UP)
    kilnhttp.assert_error(r, 401, "invalid_credential")
    opts = post(srv, "/api/v1/me/passkeys/options", jar=jar).json()
    assert opts["authenticatorSelection"]["userVerification"] == "required", opts
    r = post(srv, "/api/v1/me/passkeys",
             softauthn.Authenticator(rp_id(srv)).create(opts, origin(srv),
                                                        flags=softauthn.UP | softauthn.AT), jar)
    kilnhttp.assert_error(r, 400, "invalid_credential")
    # Another origin.
    opts = post(srv, "/auth/passkey/options").json()
    r = post(srv, "/auth/passkey/login", auth.get(opts, "https://evil.example"))
    kilnhttp.assert_error(r, 401, "invalid_credential")
    opts = post(srv, "/api/v1/me/passkeys/options", jar=jar).json()
    r = post(srv, "/api/v1/me/passkeys",
             softauthn.Authenticator(rp_id(srv)).create(opts, "https://evil.example"), jar)
    kilnhttp.assert_error(r, 400, "invalid_credential")
    # An unknown credential.
    stranger = softauthn.Authenticator(rp_id(srv))
    stranger.user_handle = bytes(16)
    r, _ = sign_in(srv, stranger)
    kilnhttp.assert_error(r, 401, "invalid_credential")
    # A user handle that is not the passkey's user's.
    real = auth.user_handle
    auth.user_handle = bytes(16)
    r, _ = sign_in(srv, auth)
    kilnhttp.assert_error(r, 401, "invalid_credential")
    auth.user_handle = real
    r, _ = sign_in(srv, auth)
    assert r.status == 200, r
    # Removed: no more sign-ins.
    r = ak.call(srv, "DELETE", f"/api/v1/me/passkeys/{pk['id']}", cookies=jar,
                headers=[("Content-Type", "application/json")], body="{}")
    assert r.status == 204, r
    r, _ = sign_in(srv, auth)
    kilnhttp.assert_error(r, 401, "invalid_credential")
    r = ak.call(srv, "DELETE", f"/api/v1/me/passkeys/{pk['id']}", cookies=jar,
                headers=[("Content-Type", "application/json")], body="{}")
    kilnhttp.assert_error(r, 404, "not_found")
