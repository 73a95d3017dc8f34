"""Login end to end against a real OIDC provider on loopback
(oauth2-mock-server, app/tests/oidc/mock.js): the generic issuer
(OIDC_PROVIDERS=mock) and the Google and Apple code paths pointed at the
same provider; every failure the issue lists (denied consent, bad or
replayed state, replayed code, bad signature, wrong audience, expired
token, wrong nonce, provider unreachable), JWKS rotation, ES256, and a
fresh session on every login.

Every failure must be a 302 to AUTH_FAILURE_REDIRECT?error=<code>, never a
500, with one warning log line naming the reason, and no code, token,
client secret or cookie in kiln's output.

One person, many ways in (the last part): a first login whose address a
user already has joins that user (same notes from either way in) only when
the ID token's email_verified says so (true, or Apple's "true") and the
account's address is verified (a password account through its mailed
link); otherwise account_exists, with an audit row and nothing created. A
fresh address makes a user whose address counts as verified (an email code
then reaches it); racing first logins end in one user; the development
login keeps to its own users. Those tests get an instance with real mail
(aiosmtpd) and, on PostgreSQL, a database of their own.
"""

import base64
import json
import re
import sqlite3
import time
import urllib.parse
import uuid

import pytest

import authkit as ak
from authkit import mock, oidc_kiln, plain_kiln  # noqa: F401 (fixtures)
import kilnhttp
import mailkit


def profile_for(mock, tag="ada", **extra):
    sub = f"{tag}-{uuid.uuid4().hex[:10]}"
    claims = dict(sub=sub, email=f"{sub}@example.com", email_verified=True,
                  name="Ada Lovelace", given_name="Ada", family_name="Lovelace",
                  picture=f"https://img.example.com/{sub}.png")
    claims.update(extra)
    mock.profile(**claims)
    return claims


def secrets_of(flow, cookie=None):
    """Strings that must never reach kiln's output after this login."""
    st = flow.mock.state()
    out = [ak.MOCK_CLIENT_SECRET, ak.GOOGLE_CLIENT_SECRET, flow.login_cookie, cookie,
           flow.callback_params.get("code")]
    tok = st.get("last_id_token") or {}
    if tok.get("raw"):
        out.append(tok["raw"].split(".")[-1] or tok["raw"])
    for t in st["requests"]["token"]:
        out.append(t["form"].get("code_verifier"))
        out.append(t["form"].get("client_secret"))
    if cookie and "." in cookie:
        out.append(cookie.split(".")[0])        # the sid alone
    return [s for s in out if s and len(s) >= 8]


# --------------------------------------------------------------------------
# the redirect to the provider
# --------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["mock", "google", "apple"])
def test_authorize_redirect(oidc_kiln, mock, provider):
    flow = ak.Login(oidc_kiln, mock, provider).start()
    u = urllib.parse.urlsplit(flow.authorize_url)
    assert f"{u.scheme}://{u.netloc}{u.path}" == mock.issuer + "/authorize", flow.authorize_url
    p = flow.authorize_params
    assert p.get("response_type") == "code", p
    assert p.get("client_id") == ak.CLIENT_IDS[provider], p
    assert p.get("redirect_uri") == f"http://127.0.0.1:{oidc_kiln.port}/auth/{provider}/callback", p
    if provider != "apple":
        assert {"openid", "email", "profile"} <= set(p.get("scope", "").split()), p
    else:
        assert p.get("response_mode") == "form_post", p
        assert {"name", "email"} <= set(p["scope"].split()), p
    assert p.get("code_challenge_method") == "S256", p
    assert re.match(r"^[A-Za-z0-9_-]{43}$", p.get("code_challenge", "")), p
    for k in ("state", "nonce"):
        assert len(p.get(k, "")) >= 16, f"{k} too short or missing: {p}"
    assert p["state"] != p["nonce"]
    # The pending login is bound to this browser: a short-lived cookie.
    c = flow.login_cookie_attrs
    assert c.attr("path") == "/auth", c
    assert c.attr("httponly") is True, c
    max_age = c.attr("max-age")
    assert max_age is not None and 0 < int(max_age) <= 3600, f"want a short Max-Age: {c}"
    ak.assert_no_session_cookie(flow.begin)
    # A second attempt gets its own state, nonce and verifier.
    again = ak.Login(oidc_kiln, mock, provider).start()
    for k in ("state", "nonce", "code_challenge"):
        assert again.authorize_params[k] != p[k], k
    assert again.login_cookie != flow.login_cookie


def test_redirect_uri_ignores_host_header(oidc_kiln, mock):
    r = ak.call(oidc_kiln, "GET", "/auth/mock", headers=[("X-Forwarded-Host", "evil.test")])
    assert r.status == 302, r
    # call() sends Host: 127.0.0.1:<port>; send another Host too.
    r2 = oidc_kiln.exchange(kilnhttp.http_request("GET", "/auth/mock", host="evil.test"))[0]
    assert r2.status == 302, r2
    for resp in (r, r2):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["location"]).query))
        assert q["redirect_uri"] == f"http://127.0.0.1:{oidc_kiln.port}/auth/mock/callback", q


def test_unknown_and_unconfigured_providers(oidc_kiln, plain_kiln):
    for srv, path in ((oidc_kiln, "/auth/nosuch"), (oidc_kiln, "/auth/nosuch/callback"),
                      (plain_kiln, "/auth/mock"), (plain_kiln, "/auth/google"),
                      (plain_kiln, "/auth/apple"), (plain_kiln, "/auth/google/callback")):
        r = ak.call(srv, "GET", path)
        kilnhttp.assert_error(r, 404, None)
        assert not ak.set_cookies(r), r


# --------------------------------------------------------------------------
# successful logins
# --------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["mock", "google"])
def test_login_success(oidc_kiln, mock, provider):
    claims = profile_for(mock)
    flow, cookie = ak.login(oidc_kiln, mock, provider)
    r = flow.callback
    # The login cookie is cleared.
    lc = ak.set_cookies(r).get(ak.LOGIN_COOKIE)
    assert lc is not None and lc.cleared, f"login cookie not cleared: {r!r}"
    want = dict(email=claims["email"], name="Ada Lovelace", first_name="Ada", last_name="Lovelace",
                image=claims["picture"], provider=provider, provider_uid=claims["sub"])
    ak.assert_me(ak.me(oidc_kiln, cookie), **want)
    ak.assert_me(ak.me(oidc_kiln, cookie, path="/api/me"), **want)
    ak.assert_me(ak.me(oidc_kiln, bearer=cookie), **want)

    # What kiln sent to the token endpoint: the code, the same redirect_uri,
    # the PKCE verifier of the challenge, its client credentials.
    st = mock.state()
    tok = [t for t in st["requests"]["token"] if t["form"].get("grant_type") == "authorization_code"]
    assert len(tok) == 1, st["requests"]["token"]
    form = tok[0]["form"]
    assert form["code"] == flow.callback_params["code"]
    assert form["redirect_uri"] == flow.redirect_uri
    assert ak.s256(form["code_verifier"]) == flow.authorize_params["code_challenge"]
    secret = ak.MOCK_CLIENT_SECRET if provider == "mock" else ak.GOOGLE_CLIENT_SECRET
    sent = (tok[0].get("basic") or {}).get("client_secret") or form.get("client_secret")
    assert sent == secret, f"client secret not sent (basic or post): {tok[0]}"
    ak.assert_not_in_logs(oidc_kiln, *secrets_of(flow, cookie))


def test_apple_form_post_login(oidc_kiln, mock):
    sub = "001234." + uuid.uuid4().hex
    email = f"{uuid.uuid4().hex[:8]}@privaterelay.appleid.com"
    # Apple's ID token carries sub and email, never the name.
    mock.profile(sub=sub, email=email, email_verified="true", is_private_email="true")
    user = {"name": {"firstName": "Grace", "lastName": "Hopper"}, "email": email}
    flow, cookie = ak.login(oidc_kiln, mock, "apple", user=user)
    assert flow.callback_params.get("code") and flow.callback_params.get("state")
    ak.assert_me(ak.me(oidc_kiln, cookie), email=email, first_name="Grace", last_name="Hopper",
                 name="Grace Hopper", provider="apple", provider_uid=sub)

    # The client secret is an ES256 JWT from team id, key id and the P8 key.
    st = mock.state()
    t = [t for t in st["requests"]["token"] if t["form"].get("grant_type") == "authorization_code"][-1]
    secret = (t.get("basic") or {}).get("client_secret") or t["form"].get("client_secret")
    assert secret and secret.count(".") == 2, f"no client secret JWT: {t}"
    header, claims, _ = ak.jwt_parts(secret)
    assert header.get("alg") == "ES256" and header.get("kid") == ak.APPLE_KEY_ID, header
    assert claims.get("iss") == ak.APPLE_TEAM_ID, claims
    assert claims.get("sub") == ak.APPLE_CLIENT_ID, claims
    assert claims.get("aud") in ("https://appleid.apple.com", mock.issuer), claims
    now = time.time()
    assert claims["iat"] <= now + 60 and claims["exp"] > now, claims
    assert claims["exp"] - claims["iat"] <= 15777000, "Apple allows at most 6 months"
    assert ak.es256_verify(secret, ak.apple_key()[1]), "client secret JWT does not verify with the P8 key"
    ak.assert_not_in_logs(oidc_kiln, secret.split(".")[-1], *secrets_of(flow, cookie))

    # The name arrives only with the first login; later ones keep it (the
    # user record has it; the new session must too).
    flow2, cookie2 = ak.login(oidc_kiln, mock, "apple")
    ak.assert_me(ak.me(oidc_kiln, cookie2), email=email, first_name="Grace", last_name="Hopper",
                 name="Grace Hopper", provider="apple", provider_uid=sub)


def test_apple_login_cookie_survives_the_cross_site_post(kiln, mock):
    """Apple posts the callback from its own site: over HTTPS the pending
    login cookie must be SameSite=None; Secure, or no browser sends it."""
    srv = ak.start_kiln(kiln, PUBLIC_URL="https://kiln.example.com",
                        **ak.provider_env(mock, providers=("apple",)))
    r = ak.call(srv, "GET", "/auth/apple")
    assert r.status == 302, r
    c = ak.set_cookies(r)[ak.LOGIN_COOKIE]
    assert c.attr("secure") is True and str(c.attr("samesite")).lower() == "none", c
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
    assert q["redirect_uri"] == "https://kiln.example.com/auth/apple/callback", q
    # The whole login over "HTTPS": the session cookie is Secure. (An
    # address of its own: on a shared database a fixed one would belong to
    # the previous run's user, unverified, and the login be refused.)
    mock.profile(sub="001.https." + uuid.uuid4().hex, email=ak.unique_email("https"))
    _, cookie = ak.login(srv, mock, "apple")
    ak.assert_me(ak.me(srv, cookie), provider="apple")


def test_default_redirects(kiln, mock):
    """AUTH_*_REDIRECT default to "/"; a failure redirect that has a query
    gets "&error=" appended."""
    srv = ak.start_kiln(kiln, AUTH_SUCCESS_REDIRECT=None, AUTH_FAILURE_REDIRECT=None,
                        AUTH_LOGOUT_REDIRECT=None, **ak.provider_env(mock, providers=("mock",)))
    profile_for(mock)
    _, cookie = ak.login(srv, mock)
    assert ak.logout(srv, cookie).headers.get("location") == "/"
    mock.next(deny=True)
    flow = ak.Login(srv, mock).run()
    assert flow.callback.headers.get("location") == "/?error=access_denied", flow.callback

    srv = ak.start_kiln(kiln, AUTH_FAILURE_REDIRECT="https://app.example.com/login?from=kiln",
                        **ak.provider_env(mock, providers=("mock",)))
    mock.next(deny=True)
    flow = ak.Login(srv, mock).run()
    assert flow.callback.headers.get("location") == \
        "https://app.example.com/login?from=kiln&error=access_denied", flow.callback


def test_es256_id_token(oidc_kiln, mock):
    claims = profile_for(mock)
    kid = mock.use(alg="ES256")
    flow, cookie = ak.login(oidc_kiln, mock, "mock")
    tok = mock.state()["last_id_token"]
    assert tok["header"]["alg"] == "ES256" and tok["kid"] == kid, tok["header"]
    ak.assert_me(ak.me(oidc_kiln, cookie), provider_uid=claims["sub"])


def test_jwks_rotation(kiln, mock):
    # An instance of its own: kiln may refetch the JWKS only so often, and
    # other tests (unknown kids) must not have used that up.
    srv = ak.start_kiln(kiln, **ak.provider_env(mock, providers=("mock",)))
    profile_for(mock)
    ak.login(srv, mock)                            # kiln has the JWKS cached now
    old = mock.state()["kid"]
    new = mock.rotate()
    assert new != old and new in [k["kid"] for k in mock.jwks()["keys"]]
    claims = profile_for(mock, tag="rotated")
    flow, cookie = ak.login(srv, mock)
    assert mock.state()["last_id_token"]["kid"] == new
    ak.assert_me(ak.me(srv, cookie), provider_uid=claims["sub"])


def test_new_session_on_every_login(oidc_kiln, mock):
    claims = profile_for(mock)
    _, first = ak.login(oidc_kiln, mock)
    _, second = ak.login(oidc_kiln, mock)
    assert first.split(".")[0] != second.split(".")[0] and first != second
    # Same person, same provider identity.
    u1 = ak.assert_me(ak.me(oidc_kiln, first), provider_uid=claims["sub"])
    u2 = ak.assert_me(ak.me(oidc_kiln, second), provider_uid=claims["sub"])
    assert u1 == u2
    # Logging in while holding a session replaces it.
    _, third = ak.login(oidc_kiln, mock, cookies={ak.SESSION_COOKIE: second})
    assert third != second
    ak.assert_unauthenticated(ak.me(oidc_kiln, second))
    ak.assert_me(ak.me(oidc_kiln, third), provider_uid=claims["sub"])
    ak.assert_me(ak.me(oidc_kiln, first), provider_uid=claims["sub"])   # another browser's


# --------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------

def fail(flow, code):
    q = ak.assert_failure(flow, code)
    ak.assert_reason_logged(flow.srv, flow, code)
    ak.assert_not_in_logs(flow.srv, *secrets_of(flow))
    assert flow.srv.running()
    return q


def test_denied_consent(oidc_kiln, mock):
    mock.next(deny=True)
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    assert flow.callback_params.get("error") == "access_denied" and "code" not in flow.callback_params
    flow.finish()
    fail(flow, "access_denied")


def test_wrong_state(oidc_kiln, mock):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    params = dict(flow.callback_params, state=ak.tamper(flow.callback_params["state"], 3))
    flow.finish(params=params)
    fail(flow, "invalid_state")


def test_missing_state(oidc_kiln, mock):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    params = {k: v for k, v in flow.callback_params.items() if k != "state"}
    flow.finish(params=params)
    fail(flow, "invalid_state")


def test_missing_login_cookie(oidc_kiln, mock):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    flow.finish(login_cookie=False)
    fail(flow, "invalid_state")


def test_tampered_login_cookie(oidc_kiln, mock):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    flow.finish(login_cookie=ak.tamper(flow.login_cookie, len(flow.login_cookie) // 2))
    fail(flow, "invalid_state")


def test_login_cookie_of_another_attempt(oidc_kiln, mock):
    other = ak.Login(oidc_kiln, mock).start()
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    flow.finish(login_cookie=other.login_cookie)
    fail(flow, "invalid_state")


def test_login_bound_to_its_provider(oidc_kiln, mock):
    """A pending login made for one provider cannot complete at another's
    callback (a mix-up: here all providers are the same mock, so only the
    binding can tell)."""
    profile_for(mock)
    flow = ak.Login(oidc_kiln, mock, "mock").start().authorize()
    flow.finish(path="/auth/google/callback")
    fail(flow, "invalid_state")


def test_replayed_callback(oidc_kiln, mock):
    profile_for(mock)
    flow, cookie = ak.login(oidc_kiln, mock)
    flow.finish()                               # same URL, same login cookie
    fail(flow, "invalid_state")
    ak.assert_me(ak.me(oidc_kiln, cookie))      # the first session is unharmed


def test_replayed_code(oidc_kiln, mock):
    profile_for(mock)
    first, _ = ak.login(oidc_kiln, mock)
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    flow.finish(params=dict(flow.callback_params, code=first.callback_params["code"]))
    fail(flow, "token_exchange_failed")


def test_token_endpoint_error(oidc_kiln, mock):
    mock.next(token_status=500)
    flow = ak.Login(oidc_kiln, mock).run()
    fail(flow, "token_exchange_failed")


@pytest.mark.parametrize("options,code", [
    ({"bad_signature": True}, "bad_signature"),
    ({"aud": "someone-else"}, "wrong_audience"),
    ({"exp_offset": -600}, "token_expired"),
    ({"nonce": "not-the-nonce-kiln-sent"}, "nonce_mismatch"),
    ({"id_token": "not-a-jwt"}, "invalid_token"),
], ids=["bad-signature", "wrong-aud", "expired", "wrong-nonce", "garbage"])
def test_id_token_refused(oidc_kiln, mock, options, code):
    profile_for(mock)
    mock.next(**options)
    flow = ak.Login(oidc_kiln, mock).run()
    fail(flow, code)


@pytest.mark.parametrize("options,codes", [
    ({"iss": "http://localhost:1"}, ("wrong_issuer", "invalid_token")),
    ({"alg_none": True}, ("invalid_token", "bad_signature")),
    ({"drop_id_token": True}, ("invalid_token", "token_exchange_failed")),
    ({"nonce": None}, ("nonce_mismatch", "invalid_token")),
    ({"id_token": "eyJhbGciOiJSUzI1NiJ9.e30.e30"}, ("invalid_token", "bad_signature")),
], ids=["wrong-iss", "alg-none", "no-id-token", "no-nonce", "no-kid-empty-claims"])
def test_id_token_refused_other(oidc_kiln, mock, options, codes):
    profile_for(mock)
    mock.next(**options)
    flow = ak.Login(oidc_kiln, mock).run()
    r = flow.callback
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers.get("location", "")).query))
    assert q.get("error") in codes, r
    fail(flow, q["error"])


@pytest.mark.parametrize("options,code", [
    ({"bad_signature": True}, "bad_signature"),
    ({"exp_offset": -600}, "token_expired"),
    ({"token_status": 500}, "token_exchange_failed"),
], ids=["bad-signature", "expired", "token-endpoint"])
def test_failure_lines_carry_the_request_id(oidc_kiln, mock, options, code):
    """Every warning line about a failed login names its request: with many
    logins at once, a line without it cannot be traced to one."""
    profile_for(mock)
    mock.next(**options)
    flow = ak.Login(oidc_kiln, mock).run()
    ak.assert_failure(flow, code)
    ak.assert_reason_logged(oidc_kiln, flow, code, traceable=True)


def test_bad_signature_es256(oidc_kiln, mock):
    profile_for(mock)
    mock.use(alg="ES256")
    mock.next(bad_signature=True)
    flow = ak.Login(oidc_kiln, mock).run()
    fail(flow, "bad_signature")


def test_callback_without_code(oidc_kiln, mock):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    flow.finish(params={"state": flow.callback_params["state"]})
    r = flow.callback
    assert r.status == 302 and r.headers["location"].startswith(ak.FAILURE_REDIRECT + "?error="), r
    ak.assert_no_session_cookie(r)


def test_provider_unreachable_at_token_exchange(oidc_kiln, mock):
    profile_for(mock)
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    mock.stop_provider()
    try:
        t0 = time.monotonic()
        flow.finish(timeout=30)
        took = time.monotonic() - t0
    finally:
        mock.start_provider()
    fail(flow, "provider_unreachable")
    assert took < 15, f"the callback took {took:.1f} s"
    ak.login(oidc_kiln, mock)                   # and it comes back


def test_provider_down_at_start(kiln, mock):
    """kiln starts while its provider is down; GET /auth/<p> fails cleanly
    and login works once the provider is back (no failure cached)."""
    mock.stop_provider()
    try:
        srv = ak.start_kiln(kiln, **ak.provider_env(mock, providers=("mock",)))
        r = ak.call(srv, "GET", "/auth/mock", request_id="down-" + uuid.uuid4().hex)
        assert r.status in (302, 503), r
        if r.status == 302:
            ak.assert_failure(r, "provider_unreachable")
        else:
            kilnhttp.assert_error(r, 503, "service_unavailable")
    finally:
        mock.start_provider()
    profile_for(mock)
    ak.login(srv, mock)


# --------------------------------------------------------------------------
# more claims: audiences, clock skew, subjects per provider
# --------------------------------------------------------------------------

@pytest.mark.parametrize("claims,ok", [
    ({"aud": [ak.MOCK_CLIENT_ID, "other-client"], "azp": ak.MOCK_CLIENT_ID}, True),
    ({"aud": [ak.MOCK_CLIENT_ID]}, True),
    ({"aud": [ak.MOCK_CLIENT_ID, "other-client"], "azp": "other-client"}, False),
    ({"aud": ["other-1", "other-2"]}, False),
    ({"aud": ""}, False),
], ids=["two-aud-azp-us", "one-aud-array", "two-aud-azp-other", "none-of-ours", "empty"])
def test_audiences(oidc_kiln, mock, claims, ok):
    profile_for(mock)
    mock.next(claims=claims)
    flow = ak.Login(oidc_kiln, mock).run()
    if ok:
        assert flow.callback.headers.get("location") == ak.SUCCESS_REDIRECT, flow.callback
    else:
        fail(flow, "wrong_audience")


def test_clock_skew(oidc_kiln, mock):
    # Expired 20 s ago: within a small skew.
    profile_for(mock)
    mock.next(exp_offset=-20)
    flow = ak.Login(oidc_kiln, mock).run()
    assert flow.callback.headers.get("location") == ak.SUCCESS_REDIRECT, flow.callback
    # Issued an hour from now: refused.
    mock.next(claims={"iat": int(time.time()) + 3600})
    flow = ak.Login(oidc_kiln, mock).run()
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(flow.callback.headers.get("location", "")).query))
    assert q.get("error") in ("invalid_token", "token_expired"), flow.callback
    fail(flow, q["error"])


def login_user_id(srv, flow):
    """The user id kiln's "login" log line gives this callback."""
    rec = srv.wait_log(lambda r: r.get("request_id") == flow.request_id and r.get("user_id")
                       and r.get("message") != "request")
    return rec["user_id"]


def test_same_subject_at_two_providers_is_two_people(oidc_kiln, mock):
    """Subjects are the provider's own: the same one at two providers is
    no evidence of one person (an address both vouch for would be: see the
    linking tests below, so here the addresses differ)."""
    sub = "shared-" + uuid.uuid4().hex[:8]
    profile_for(mock, sub=sub)
    f1, c1 = ak.login(oidc_kiln, mock, "mock")
    profile_for(mock, sub=sub, email=ak.unique_email("other"))
    f2, c2 = ak.login(oidc_kiln, mock, "google")
    ak.assert_me(ak.me(oidc_kiln, c1), provider="mock", provider_uid=sub)
    ak.assert_me(ak.me(oidc_kiln, c2), provider="google", provider_uid=sub)
    assert login_user_id(oidc_kiln, f1) != login_user_id(oidc_kiln, f2)
    profile_for(mock, sub=sub)
    f3, _ = ak.login(oidc_kiln, mock, "mock")
    assert login_user_id(oidc_kiln, f3) == login_user_id(oidc_kiln, f1)


# --------------------------------------------------------------------------
# hostile callbacks
# --------------------------------------------------------------------------

def test_redirect_target_only_from_configuration(oidc_kiln, mock):
    profile_for(mock)
    flow = ak.Login(oidc_kiln, mock)
    r = ak.call(oidc_kiln, "GET", "/auth/mock?redirect=http://evil.test/&return_to=http://evil.test/"
                "&redirect_uri=http://evil.test/cb")
    assert r.status == 302, r
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
    assert q["redirect_uri"] == flow.redirect_uri, q
    flow.start().authorize()
    params = dict(flow.callback_params, redirect="http://evil.test/", return_to="http://evil.test/")
    r = flow.finish(params=params)
    assert r.headers.get("location") == ak.SUCCESS_REDIRECT, r


def test_provider_error_other_than_denied(oidc_kiln, mock):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    flow.finish(params={"error": "temporarily_unavailable", "error_description": "x" * 2000,
                        "state": flow.callback_params["state"]})
    r = flow.callback
    assert r.status == 302 and r.headers["location"].startswith(ak.FAILURE_REDIRECT + "?error="), r
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))["error"]
    assert code != "access_denied" and re.match(r"^[a-z_]{1,40}$", code), code
    ak.assert_no_session_cookie(r)


@pytest.mark.parametrize("params", [
    {"code": "c" * 8000, "state": "STATE"},
    {"code": "CODE", "state": "s" * 8000},
    {"code": "CODE", "state": "STATE%00tail"},
    {"code": "CODE%00", "state": "STATE"},
    {"code": "%ff%fe", "state": "STATE"},
    {"code": "CODE", "state": "%"},
], ids=["long-code", "long-state", "nul-in-state", "nul-in-code", "bad-utf8", "bad-escape"])
def test_junk_callback_params(oidc_kiln, mock, params):
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    real = flow.callback_params
    q = "&".join(f"{k}={v.replace('STATE', real['state']).replace('CODE', real['code'])}"
                 for k, v in params.items())
    r = ak.call(oidc_kiln, "GET", f"/auth/mock/callback?{q}",
                cookies={ak.LOGIN_COOKIE: flow.login_cookie})
    assert r.status in (302, 400, 414, 431), r
    if r.status == 302:
        assert r.headers["location"].startswith(ak.FAILURE_REDIRECT + "?error="), r
    ak.assert_no_session_cookie(r)
    assert oidc_kiln.running()


def test_state_appears_twice(oidc_kiln, mock):
    other = ak.Login(oidc_kiln, mock).start()
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    p = flow.callback_params
    q = urllib.parse.urlencode([("code", p["code"]), ("state", other.authorize_params["state"]),
                                ("state", p["state"])])
    r = ak.call(oidc_kiln, "GET", f"/auth/mock/callback?{q}",
                cookies={ak.LOGIN_COOKIE: flow.login_cookie})
    assert r.status == 302, r
    # Whichever state kiln reads, a second value is no way around the check
    # (either it is refused, or it read this attempt's own state).
    if r.headers["location"] != ak.SUCCESS_REDIRECT:
        ak.assert_failure(r, "invalid_state")


def test_unknown_kids_do_not_hammer_the_jwks(kiln, mock):
    """Tokens under kids nobody knows: refused, and kiln refetches the JWKS
    at most once for them all (not once per token)."""
    oidc_kiln = ak.start_kiln(kiln, **ak.provider_env(mock, providers=("mock",)))
    profile_for(mock)
    ak.login(oidc_kiln, mock)                  # JWKS cached
    before = sum(1 for h in mock.state()["requests"]["http"] if h["path"] == "/jwks")
    codes = []
    for _ in range(5):
        mock.next(unknown_kid=True)
        flow = ak.Login(oidc_kiln, mock).run()
        codes.append(dict(urllib.parse.parse_qsl(
            urllib.parse.urlsplit(flow.callback.headers.get("location", "")).query)).get("error"))
    assert set(codes) <= {"bad_signature", "invalid_token"} and None not in codes, codes
    fetches = sum(1 for h in mock.state()["requests"]["http"] if h["path"] == "/jwks") - before
    assert fetches <= 1, f"{fetches} JWKS fetches for 5 tokens with unknown kids"


def test_concurrent_logins(oidc_kiln, mock):
    import concurrent.futures
    profile_for(mock)

    def one(_):
        return ak.login(oidc_kiln, mock)[1]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        cookies = list(pool.map(one, range(16)))
    assert len(set(cookies)) == 16
    for c in cookies:
        ak.assert_me(ak.me(oidc_kiln, c))


# --------------------------------------------------------------------------
# what the browser holds, single use, and the session store failing
# --------------------------------------------------------------------------

def login_cookie_payload(value):
    """The JSON inside a _kiln_login value: base64url(payload) "." tag
    (kiln_login_cookie_seal)."""
    body = value.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_login_cookie_holds_no_verifier_nor_nonce(oidc_kiln, mock):
    """The PKCE verifier and the nonce stay on the server: the signed login
    cookie only binds the attempt (provider, state, expiry) to the browser.
    Someone who reads the cookie and the code still cannot redeem it."""
    profile_for(mock)
    flow, cookie = ak.login(oidc_kiln, mock)
    payload = login_cookie_payload(flow.login_cookie)
    assert set(payload) <= {"p", "s", "e"}, payload
    assert payload["p"] == "mock" and payload["s"] == flow.authorize_params["state"], payload
    nonce = flow.authorize_params["nonce"]
    verifier = [t["form"]["code_verifier"] for t in mock.state()["requests"]["token"]][-1]
    assert ak.s256(verifier) == flow.authorize_params["code_challenge"]
    text = json.dumps(payload)
    for secret, what in ((nonce, "nonce"), (verifier, "verifier")):
        assert secret not in text and secret not in flow.login_cookie, f"the {what} is in the cookie"
    ak.assert_not_in_logs(oidc_kiln, verifier, nonce)


@ak.needs_valkey("reads the pending login in Valkey")
def test_pending_login_lives_in_valkey(oidc_kiln, mock, services):
    flow = ak.Login(oidc_kiln, mock).start()
    key = f"login_state:{flow.authorize_params['state']}"
    ttl = int(ak.redis_cli(services, "TTL", key))
    assert 590 <= ttl <= 600, f"TTL of {key}: {ttl}"
    pending = json.loads(ak.redis_cli(services, "GET", key))
    assert pending.get("p") == "mock" and pending.get("n") == flow.authorize_params["nonce"], pending
    assert ak.s256(pending["v"]) == flow.authorize_params["code_challenge"], pending
    profile_for(mock)
    flow.authorize().finish()
    assert flow.callback.headers.get("location") == ak.SUCCESS_REDIRECT, flow.callback
    assert ak.redis_cli(services, "EXISTS", key) == "0", "the pending login outlived its callback"


def test_concurrent_replays_have_one_winner(oidc_kiln, mock):
    """The same callback (URL and login cookie) sent many times at once:
    the pending login is taken atomically, so exactly one completes."""
    import concurrent.futures
    profile_for(mock)
    flow = ak.Login(oidc_kiln, mock).start().authorize()
    q = urllib.parse.urlencode(flow.callback_params)

    def one(_):
        return ak.call(oidc_kiln, "GET", f"/auth/mock/callback?{q}",
                       cookies={ak.LOGIN_COOKIE: flow.login_cookie}, timeout=20)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    wins = [r for r in answers if r.headers.get("location") == ak.SUCCESS_REDIRECT]
    assert len(wins) == 1, [r.headers.get("location") for r in answers]
    ak.assert_me(ak.me(oidc_kiln, ak.assert_session_cookie(wins[0])))
    for r in answers:
        if r is not wins[0]:
            ak.assert_failure(r, "invalid_state")


@pytest.mark.disruptive
@ak.needs_valkey("stops the Redis that kiln uses")
def test_session_store_outage_during_login(kiln, mock, services):
    """GET /auth/<p> answers 503 with retry-after; a callback redirects to
    the failure page (a browser flow) with service_unavailable. Both log
    which dependency failed."""
    srv = ak.start_kiln(kiln, VALKEY_CONNECT_TIMEOUT_MS=500, VALKEY_COMMAND_TIMEOUT_MS=1000,
                        **ak.provider_env(mock, providers=("mock",)))
    profile_for(mock)
    flow = ak.Login(srv, mock).start().authorize()
    name = ak.redis_service_name()
    services.ctl("stop1", name)
    try:
        offset = len(srv.stdout_bytes())
        r = ak.call(srv, "GET", "/auth/mock", timeout=15)
        kilnhttp.assert_error(r, 503, "service_unavailable")
        assert r.headers.get("retry-after") == "1", r
        assert ak.outage_logged(srv, "Session store", offset), "no outage line at login start"
        time.sleep(1.1)                          # outage lines: one a second
        flow.finish(timeout=15)
        ak.assert_failure(flow, "service_unavailable")
        assert ak.outage_logged(srv, "Session store", flow.log_offset), \
            "no outage line at the callback"
    finally:
        services.ctl("start1", name)


# --------------------------------------------------------------------------
# one person, many ways in: a first login joins the account that has its
# address only when the provider and the account have both verified it
# --------------------------------------------------------------------------

SLOW = 3 if kilnhttp.SANITIZED else 1
PASSWORD = "copper-lantern-orchard"


@pytest.fixture(scope="module")
def link_kiln(own_db, smtp, module_kiln):
    """Providers and accounts together, with real mail. On PostgreSQL a
    database of its own: any instance runs any queued mail job, and one of
    another module must not take this module's."""
    why = ak.mock_problem()
    if why:
        pytest.fail(why, pytrace=False)
    return ak.start_kiln(module_kiln, JOB_POLL_MS=100, **own_db(), **smtp.env(),
                         **ak.provider_env(ak.OidcMock.shared()))


def post_json(srv, path, body, cookie=None):
    return ak.call(srv, "POST", path, json_body=body, timeout=30 * SLOW,
                   cookies={ak.SESSION_COOKIE: cookie} if cookie else None)


def password_account(srv, smtp, email, verify=True):
    """Sign-up through POST /auth/password/register; with verify, the
    mailed link's token proves the address. Returns the token."""
    r = post_json(srv, "/auth/password/register",
                  {"email": email, "password": PASSWORD, "name": "Ann Account"})
    assert r.status == 202, r
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    token = mailkit.token_of(msg)
    if verify:
        r = post_json(srv, "/auth/password/verify", {"token": token})
        assert r.status == 200, r
    return token


def password_session(srv, email):
    r = post_json(srv, "/auth/password/login", {"email": email, "password": PASSWORD})
    assert r.status == 200, r
    return ak.assert_session_cookie(r)


def write_note(srv, cookie, title):
    r = post_json(srv, "/api/v1/notes", {"title": title, "content": "one person"}, cookie)
    assert r.status == 201, r
    return r.json()["data"]["id"]


def note_ids(srv, cookie):
    r = ak.call(srv, "GET", "/api/v1/notes?limit=100", cookies={ak.SESSION_COOKIE: cookie})
    assert r.status == 200, r
    return {n["id"] for n in r.json()["data"]}


def vouching(mock, email, verified=True, tag="link"):
    """The provider's next ID tokens: a new subject with this address;
    ``verified`` is the email_verified claim (None: no claim at all)."""
    sub = f"{tag}-{uuid.uuid4().hex[:12]}"
    claims = dict(sub=sub, email=email, name="Ann Provider", given_name="Ann",
                  family_name="Provider")
    if verified is not None:
        claims["email_verified"] = verified
    mock.profile(**claims)
    return sub


def login_line(srv, flow):
    """kiln's "login" log line for this callback."""
    return srv.wait_log(lambda r: r.get("request_id") == flow.request_id
                        and r.get("message") == "login")


def db_rows(srv, sql, params=()):
    """Rows of the instance's own database, behind its back (``?``
    placeholders), as tuples of text ('' for NULL)."""
    if kilnhttp.STORES == "embedded":
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            return [tuple("" if v is None else str(v) for v in row)
                    for row in con.execute(sql, params).fetchall()]
        finally:
            con.close()
    text = sql
    for p in params:
        text = text.replace("?", "'" + str(p).replace("'", "''") + "'", 1)
    name = urllib.parse.urlsplit(srv.env["DATABASE_URL"]).path.lstrip("/")
    return kilnhttp.services().rows(text, db=name)


def identities_of(srv, provider, sub):
    return db_rows(srv, "SELECT user_id FROM identities WHERE provider = ? AND subject = ?",
                   (provider, sub))


def users_with(srv, email):
    return db_rows(srv, "SELECT id FROM users WHERE lower(email) = ?", (email.lower(),))


def refused(flow, provider, sub, email):
    """account_exists: the failure page, one warning line, an audit row
    without the address, and nothing written for the identity."""
    fail(flow, "account_exists")
    rows = db_rows(flow.srv, "SELECT actor, target FROM audit WHERE request_id = ? AND "
                   "action = 'login_failed'", (flow.request_id,))
    assert rows == [("", f"{provider}: account_exists")], rows
    assert email.lower() not in json.dumps(rows).lower()
    mine = [r for r in ak.log_records_since(flow.srv, flow.log_offset)
            if r.get("request_id") == flow.request_id]
    assert email.lower() not in json.dumps(mine).lower(), f"the address is in the log: {mine}"
    assert identities_of(flow.srv, provider, sub) == [], "a refused login left an identity"


@pytest.mark.parametrize("provider,claim", [("mock", True), ("google", True), ("apple", "true")],
                         ids=["generic", "google", "apple-string"])
def test_provider_login_joins_the_verified_password_account(link_kiln, mock, smtp, provider, claim):
    email = ak.unique_email("joined")
    password_account(link_kiln, smtp, email)
    by_password = password_session(link_kiln, email)
    before = write_note(link_kiln, by_password, "written with the password")
    # The provider's address in other letters: addresses compare without case.
    sub = vouching(mock, email.upper(), claim)
    flow, by_provider = ak.login(link_kiln, mock, provider)
    assert login_line(link_kiln, flow).get("identity") == "linked"
    ak.assert_me(ak.me(link_kiln, by_provider), provider=provider, provider_uid=sub)
    # One user id: each way in sees what the other wrote.
    assert before in note_ids(link_kiln, by_provider)
    after = write_note(link_kiln, by_provider, f"written through {provider}")
    assert {before, after} <= note_ids(link_kiln, by_password)
    [(user_id,)] = identities_of(link_kiln, provider, sub)
    assert login_line(link_kiln, flow)["user_id"] == user_id
    assert [r[0] for r in users_with(link_kiln, email)] == [user_id]
    # The next login is a known identity of the same user; the password
    # still signs in.
    again, cookie = ak.login(link_kiln, mock, provider)
    assert login_line(link_kiln, again).get("identity") == "known"
    assert {before, after} <= note_ids(link_kiln, cookie)
    assert {before, after} <= note_ids(link_kiln, password_session(link_kiln, email))


@pytest.mark.parametrize("provider,claim", [("mock", False), ("mock", None), ("mock", "false"),
                                            ("google", False), ("apple", "false")],
                         ids=["false", "missing", "string-false", "google-false", "apple-false"])
def test_provider_that_does_not_vouch_for_the_address_is_refused(link_kiln, mock, smtp,
                                                                 provider, claim):
    email = ak.unique_email("owner")
    password_account(link_kiln, smtp, email)
    by_password = password_session(link_kiln, email)
    note = write_note(link_kiln, by_password, "the owner's")
    sub = vouching(mock, email, claim)
    flow = ak.Login(link_kiln, mock, provider).run()
    refused(flow, provider, sub, email)
    assert len(users_with(link_kiln, email)) == 1
    # The account is as it was.
    assert note in note_ids(link_kiln, password_session(link_kiln, email))
    # Nothing was created: once the provider vouches, the same identity
    # joins the account (a user made by the refused login would be found
    # instead, with none of the owner's notes).
    mock.profile(sub=sub, email=email, email_verified=True, name="Ann Provider")
    flow, cookie = ak.login(link_kiln, mock, provider)
    assert login_line(link_kiln, flow).get("identity") == "linked"
    assert note in note_ids(link_kiln, cookie)


def test_an_account_nobody_verified_is_not_joined(link_kiln, mock, smtp):
    email = ak.unique_email("unproven")
    token = password_account(link_kiln, smtp, email, verify=False)
    sub = vouching(mock, email, True)
    flow = ak.Login(link_kiln, mock, "mock").run()
    refused(flow, "mock", sub, email)
    assert len(users_with(link_kiln, email)) == 1
    r = post_json(link_kiln, "/auth/password/login", {"email": email, "password": PASSWORD})
    kilnhttp.assert_error(r, 403, "email_not_verified")
    # Once the owner proves the address, the same login joins.
    assert post_json(link_kiln, "/auth/password/verify", {"token": token}).status == 200
    note = write_note(link_kiln, password_session(link_kiln, email), "proven now")
    flow, cookie = ak.login(link_kiln, mock, "mock")
    assert login_line(link_kiln, flow).get("identity") == "linked"
    assert note in note_ids(link_kiln, cookie)


def test_a_fresh_address_makes_a_user_whose_address_is_verified(link_kiln, mock, smtp):
    email = ak.unique_email("fresh")
    sub = vouching(mock, email, True)
    flow, by_provider = ak.login(link_kiln, mock, "google")
    assert login_line(link_kiln, flow).get("identity") == "created"
    ak.assert_me(ak.me(link_kiln, by_provider), email=email, provider="google", provider_uid=sub)
    note = write_note(link_kiln, by_provider, "from google")
    # The address counts as proven: a code by mail signs in (without
    # AUTH_EMAIL_CODE_SIGNUP only an account's address gets one) as the
    # same user.
    assert post_json(link_kiln, "/auth/email/code", {"email": email}).status == 202
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    code = re.search(r"code is (\d{6})\b", msg["text"])
    assert code, f"no code mailed to a provider-verified address: {msg['subject']!r}"
    r = post_json(link_kiln, "/auth/email/verify", {"email": email, "code": code.group(1)})
    assert r.status == 200, r
    assert note in note_ids(link_kiln, ak.assert_session_cookie(r))
    # And another provider that vouches for it joins the same user.
    vouching(mock, email, True)
    flow, by_other = ak.login(link_kiln, mock, "mock")
    assert login_line(link_kiln, flow).get("identity") == "linked"
    assert note in note_ids(link_kiln, by_other)


def test_an_address_no_provider_vouched_for_stays_unproven(link_kiln, mock, smtp):
    email = ak.unique_email("unvouched")
    vouching(mock, email, False)
    flow, _ = ak.login(link_kiln, mock, "mock")
    assert login_line(link_kiln, flow).get("identity") == "created"
    # Not an account's proven address: a code request gets the notice.
    assert post_json(link_kiln, "/auth/email/code", {"email": email}).status == 202
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    assert msg["subject"] == "Sign-in attempt" and not re.search(r"\b\d{6}\b", msg["text"]), msg
    # And a provider that does vouch cannot join that unverified user.
    sub = vouching(mock, email, True)
    flow = ak.Login(link_kiln, mock, "google").run()
    refused(flow, "google", sub, email)


def test_a_later_unvouched_address_does_not_inherit_the_proof(link_kiln, mock, smtp):
    """A provider account whose address changes, unverified, to someone
    else's: the stored, verified address stays, so that person's later
    first login elsewhere does not join this user."""
    mine, theirs = ak.unique_email("mine"), ak.unique_email("theirs")
    sub = vouching(mock, mine, True)
    flow, _ = ak.login(link_kiln, mock, "mock")
    mock.profile(sub=sub, email=theirs, email_verified=False, name="Ann Provider")
    _, cookie = ak.login(link_kiln, mock, "mock")
    ak.assert_me(ak.me(link_kiln, cookie), email=mine, provider_uid=sub)
    # The owner of the other address signs in through another provider
    # that vouches for it: a user of their own.
    vouching(mock, theirs, True)
    other, _ = ak.login(link_kiln, mock, "google")
    assert login_line(link_kiln, other).get("identity") == "created"
    assert login_line(link_kiln, other)["user_id"] != login_line(link_kiln, flow)["user_id"]
    # A changed address the provider vouches for replaces the stored one.
    newer = ak.unique_email("newer")
    mock.profile(sub=sub, email=newer, email_verified=True, name="Ann Provider")
    _, cookie = ak.login(link_kiln, mock, "mock")
    ak.assert_me(ak.me(link_kiln, cookie), email=newer, provider_uid=sub)


def finish_together(flows):
    """Every prepared callback at once (threads released together)."""
    import concurrent.futures
    import threading
    gate = threading.Barrier(len(flows))

    def one(flow):
        gate.wait(timeout=30)
        return flow.finish(timeout=30 * SLOW)

    with concurrent.futures.ThreadPoolExecutor(len(flows)) as pool:
        return list(pool.map(one, flows))


def test_racing_first_logins_end_in_one_user(link_kiln, mock, smtp):
    # One identity, many first logins at once, joining a verified account.
    email = ak.unique_email("race")
    password_account(link_kiln, smtp, email)
    note = write_note(link_kiln, password_session(link_kiln, email), "before the race")
    sub = vouching(mock, email, True)
    flows = [ak.Login(link_kiln, mock, "mock").start().authorize() for _ in range(6)]
    for r in finish_together(flows):
        assert r.status == 302 and r.headers.get("location") == ak.SUCCESS_REDIRECT, r
        assert note in note_ids(link_kiln, ak.assert_session_cookie(r))
    assert len(identities_of(link_kiln, "mock", sub)) == 1
    assert len(users_with(link_kiln, email)) == 1

    # A fresh address, first logins through two providers at once: one
    # creates the user, the other joins it (they take turns on the address).
    for _ in range(5):
        email = ak.unique_email("race-fresh")
        vouching(mock, email, True)
        flows = [ak.Login(link_kiln, mock, p).start().authorize()
                 for p in ("mock", "google", "mock", "google")]
        answers = finish_together(flows)
        for r in answers:
            assert r.status == 302 and r.headers.get("location") == ak.SUCCESS_REDIRECT, r
        assert len(users_with(link_kiln, email)) == 1, users_with(link_kiln, email)
        ids = {login_line(link_kiln, f)["user_id"] for f in flows}
        assert len(ids) == 1, ids

    # One identity whose address the provider does not vouch for: the
    # first creates the user, the others find it (not a user with that
    # address to refuse).
    email = ak.unique_email("race-unvouched")
    sub = vouching(mock, email, False)
    flows = [ak.Login(link_kiln, mock, "mock").start().authorize() for _ in range(6)]
    for r in finish_together(flows):
        assert r.status == 302 and r.headers.get("location") == ak.SUCCESS_REDIRECT, r
    assert len(identities_of(link_kiln, "mock", sub)) == 1
    assert len(users_with(link_kiln, email)) == 1


def test_dev_login_keeps_to_its_own_users(link_kiln, mock, smtp):
    """POST /auth/dev/login (development only) joins no account and proves
    no address: with a verified account's address it is a user of its own,
    and a provider login with a dev user's address is refused."""
    email = ak.unique_email("devowner")
    password_account(link_kiln, smtp, email)
    note = write_note(link_kiln, password_session(link_kiln, email), "the owner's")
    _, dev = ak.dev_login(link_kiln, email=email)
    assert note not in note_ids(link_kiln, dev)
    _, dev_again = ak.dev_login(link_kiln, email=email)
    assert note_ids(link_kiln, dev_again) == note_ids(link_kiln, dev)

    only_dev = ak.unique_email("devonly")
    ak.dev_login(link_kiln, email=only_dev)
    sub = vouching(mock, only_dev, True)
    flow = ak.Login(link_kiln, mock, "mock").run()
    refused(flow, "mock", sub, only_dev)
