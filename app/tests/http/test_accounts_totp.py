"""The second factor (docs/AUTHENTICATION.md, "Second factor"): TOTP
enrolment with codes from Debian's oathtool (an implementation Kiln did
not write), recovery codes, and the second step of password and
email-code sign-ins.

What is checked:
  * enrolment answers a 160-bit base32 secret, an otpauth:// URI naming
    the issuer and the address, and a QR code as SVG; a wrong code does
    not confirm, oathtool's does, and ten recovery codes come back once;
  * with TOTP on, a password sign-in answers 202 mfa_required with a
    token and no session; POST /auth/mfa with oathtool's code for the next
    step starts the session; the same code again is refused (single use);
  * a recovery code works once (nine left after);
  * five wrong codes end the pending sign-in (mfa_expired);
  * the token travels in the HttpOnly _kiln_mfa cookie too (browsers);
  * an email-code sign-in needs the second step as well;
  * turning TOTP off needs a code (a recovery code here), after which a
    sign-in starts a session at once;
  * the secret and the codes never reach Kiln's output.
"""

import subprocess
import time
import uuid

import pytest

import authkit as ak
import kilnhttp
import mailkit

SLOW = 3 if kilnhttp.SANITIZED else 1
PASSWORD = "copper-willow-signal"


@pytest.fixture(scope="module")
def srv(own_db, smtp, module_kiln):
    return ak.start_kiln(module_kiln, JOB_POLL_MS=100, **own_db(), **smtp.env())


def oathtool(secret, at):
    out = subprocess.run(["oathtool", "--totp", "-b", "-N", f"@{int(at)}", secret],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert len(out) == 6 and out.isdigit(), out
    return out


def post(srv, path, body=None, cookies=None, headers=()):
    return ak.call(srv, "POST", path, json_body=body if body is not None else {}, cookies=cookies,
                   headers=headers, timeout=30 * SLOW)


def account(srv, smtp):
    email = f"totp-{uuid.uuid4().hex[:10]}@example.com"
    assert post(srv, "/auth/password/register", {"email": email, "password": PASSWORD}).status == 202
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    assert post(srv, "/auth/password/verify", {"token": mailkit.token_of(msg)}).status == 200
    r = post(srv, "/auth/password/login", {"email": email, "password": PASSWORD})
    assert r.status == 200, r
    return email, {ak.SESSION_COOKIE: ak.assert_session_cookie(r)}


def enrolled(srv, smtp):
    email, jar = account(srv, smtp)
    r = post(srv, "/api/v1/me/totp", cookies=jar)
    assert r.status == 201, r
    secret = r.json()["secret"]
    r = post(srv, "/api/v1/me/totp/confirm", {"code": oathtool(secret, time.time())}, cookies=jar)
    assert r.status == 200, r
    return email, jar, secret, r.json()["recovery_codes"]


def first_step(srv, email):
    r = post(srv, "/auth/password/login", {"email": email, "password": PASSWORD})
    assert r.status == 202, r
    body = r.json()
    assert body["status"] == "mfa_required" and body["methods"] == ["totp", "recovery_code"], body
    ak.assert_no_session_cookie(r)
    return body["mfa_token"], r


def test_enrol_confirm_and_sign_in_with_a_code(srv, smtp):
    email, jar = account(srv, smtp)
    r = post(srv, "/api/v1/me/totp", cookies=jar)
    assert r.status == 201, r
    body = r.json()
    secret = body["secret"]
    assert len(secret) == 32 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), body
    assert body["otpauth_uri"].startswith("otpauth://totp/127.0.0.1:" + email.replace("@", "%40"))
    assert f"secret={secret}" in body["otpauth_uri"] and "issuer=127.0.0.1" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg") and "<path" in body["qr_svg"], body["qr_svg"][:80]
    r = post(srv, "/api/v1/me/totp/confirm", {"code": "000000"}, cookies=jar)
    kilnhttp.assert_error(r, 422, "invalid_code")
    now = time.time()
    r = post(srv, "/api/v1/me/totp/confirm", {"code": oathtool(secret, now)}, cookies=jar)
    assert r.status == 200, r
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    assert ak.call(srv, "GET", "/api/v1/me/totp", cookies=jar).json() == {
        "enabled": True, "recovery_codes_left": 10}
    kilnhttp.assert_error(post(srv, "/api/v1/me/totp", cookies=jar), 409, "totp_enabled")

    token, _ = first_step(srv, email)
    kilnhttp.assert_error(post(srv, "/auth/mfa", {"mfa_token": token, "code": "123456"}), 401,
                          "invalid_code")
    code = oathtool(secret, now + 30)  # the next step: the one of confirm is used
    r = post(srv, "/auth/mfa", {"mfa_token": token, "code": code})
    assert r.status == 200, r
    cookie = ak.assert_session_cookie(r)
    assert ak.me(srv, cookie).json()["user"]["provider"] == "password"
    # The same code again, on a new first step: used.
    token2, _ = first_step(srv, email)
    kilnhttp.assert_error(post(srv, "/auth/mfa", {"mfa_token": token2, "code": code}), 401,
                          "invalid_code")
    # The token of a finished sign-in is gone.
    kilnhttp.assert_error(post(srv, "/auth/mfa", {"mfa_token": token, "code": code}), 401,
                          "mfa_expired")
    ak.assert_not_in_logs(srv, secret, code, *codes, token, cookie)


def test_a_recovery_code_works_once(srv, smtp):
    email, jar, secret, codes = enrolled(srv, smtp)
    token, _ = first_step(srv, email)
    r = post(srv, "/auth/mfa", {"mfa_token": token, "recovery_code": codes[3].upper()})
    assert r.status == 200, r
    token, _ = first_step(srv, email)
    kilnhttp.assert_error(post(srv, "/auth/mfa", {"mfa_token": token, "recovery_code": codes[3]}),
                          401, "invalid_code")
    assert ak.call(srv, "GET", "/api/v1/me/totp", cookies=jar).json()["recovery_codes_left"] == 9


def test_five_wrong_codes_end_the_pending_sign_in(srv, smtp):
    email, jar, secret, codes = enrolled(srv, smtp)
    token, _ = first_step(srv, email)
    for _ in range(5):
        kilnhttp.assert_error(post(srv, "/auth/mfa", {"mfa_token": token, "code": "000001"}), 401,
                              "invalid_code")
    kilnhttp.assert_error(post(srv, "/auth/mfa", {"mfa_token": token, "recovery_code": codes[0]}),
                          401, "mfa_expired")


def test_the_token_travels_in_a_cookie_too(srv, smtp):
    email, jar, secret, codes = enrolled(srv, smtp)
    _, r = first_step(srv, email)
    cookie = [v for v in r.header_all("set-cookie") if v.startswith("_kiln_mfa=")]
    assert cookie and "HttpOnly" in cookie[0] and "Path=/auth" in cookie[0], cookie
    value = cookie[0].split(";")[0].split("=", 1)[1]
    r = post(srv, "/auth/mfa", {"recovery_code": codes[0]}, cookies={"_kiln_mfa": value})
    assert r.status == 200, r
    ak.assert_session_cookie(r)


def test_an_email_code_sign_in_needs_the_second_step_too(srv, smtp):
    email, jar, secret, codes = enrolled(srv, smtp)
    assert post(srv, "/auth/email/code", {"email": email}).status == 202
    msg = [m for m in smtp.wait_for(email, count=2, timeout=15 * SLOW)
           if m["subject"] == "Your sign-in code"][0]
    import re
    code = re.search(r"code is (\d{6})", msg["text"]).group(1)
    r = post(srv, "/auth/email/verify", {"email": email, "code": code})
    assert r.status == 202 and r.json()["status"] == "mfa_required", r
    ak.assert_no_session_cookie(r)
    r = post(srv, "/auth/mfa", {"mfa_token": r.json()["mfa_token"], "recovery_code": codes[1]})
    assert r.status == 200, r
    assert ak.me(srv, ak.assert_session_cookie(r)).json()["user"]["provider"] == "email"


def test_turning_totp_off_needs_a_code(srv, smtp):
    email, jar, secret, codes = enrolled(srv, smtp)
    kilnhttp.assert_error(post(srv, "/api/v1/me/totp/disable", {"code": "000000"}, cookies=jar),
                          403, "invalid_code")
    kilnhttp.assert_error(post(srv, "/api/v1/me/totp/disable", {}, cookies=jar), 422,
                          "validation_failed")
    r = post(srv, "/api/v1/me/totp/disable", {"recovery_code": codes[9]}, cookies=jar)
    assert r.status == 200 and r.json() == {"enabled": False}, r
    r = post(srv, "/auth/password/login", {"email": email, "password": PASSWORD})
    assert r.status == 200, r
    ak.assert_session_cookie(r)
