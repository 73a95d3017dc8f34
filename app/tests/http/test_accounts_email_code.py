"""Sign-in with a code by email (docs/AUTHENTICATION.md, "Codes by
email"), black-box, with the mail received by a real SMTP server
(aiosmtpd).

What is checked:
  * an account's address gets a six-digit code (subject "Your sign-in
    code"); the code signs in once (a second use is 401 invalid_code) and
    the session's /me says provider "email"; the password account and the
    code reach the same user id;
  * an address without an account: the same 202; with
    AUTH_EMAIL_CODE_SIGNUP=false (the default) the owner gets a notice and
    no code; with it true the code creates the user, verified;
  * only the newest code counts; five wrong tries kill a code (the right
    code then fails too); an expired or unknown code fails alike;
  * a code into an unverified password account verifies the address and
    drops the password nobody had proven (it no longer signs in);
  * at most five codes an hour per address (429 with retry-after);
  * a user who signed up by code sets a first password through a reset,
    and then signs in with it: one user, two identities;
  * codes never reach Kiln's output.

Every mode (KILN_STORES): embedded, postgres, pgbouncer.
"""

import re
import uuid

import pytest

import authkit as ak
import kilnhttp
import mailkit

SLOW = 3 if kilnhttp.SANITIZED else 1


@pytest.fixture(scope="module")
def srv(own_db, smtp, module_kiln):
    return ak.start_kiln(module_kiln, JOB_POLL_MS=100, **own_db(), **smtp.env())


@pytest.fixture(scope="module")
def open_srv(own_db, smtp, module_kiln):
    return ak.start_kiln(module_kiln, JOB_POLL_MS=100, AUTH_EMAIL_CODE_SIGNUP="true",
                         **own_db(), **smtp.env())


def addr(tag="code"):
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def post(srv, path, body, **kw):
    return ak.call(srv, "POST", path, json_body=body, timeout=30 * SLOW, **kw)


def ask(srv, email):
    r = post(srv, "/auth/email/code", {"email": email})
    assert r.status == 202, r
    return r.json()


def code_of(msg):
    m = re.search(r"code is (\d{6})\b", msg["text"])
    assert m, msg["text"]
    return m.group(1)


def verify(srv, email, code):
    return post(srv, "/auth/email/verify", {"email": email, "code": code})


def password_account(srv, smtp, email, password="orchid-lantern-meadow"):
    r = post(srv, "/auth/password/register", {"email": email, "password": password})
    assert r.status == 202, r
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    return msg


def test_a_code_signs_an_account_in_once(srv, smtp):
    email = addr()
    link = password_account(srv, smtp, email)
    assert post(srv, "/auth/password/verify", {"token": mailkit.token_of(link)}).status == 200
    r = post(srv, "/auth/password/login", {"email": email, "password": "orchid-lantern-meadow"})
    by_password = ak.me(srv, ak.assert_session_cookie(r)).json()["user"]
    body = ask(srv, email)
    assert body["status"] == "code_sent", body
    msgs = smtp.wait_for(email, count=2, timeout=15 * SLOW)
    assert msgs[1]["subject"] == "Your sign-in code"
    code = code_of(msgs[1])
    r = verify(srv, email.upper(), code)
    assert r.status == 200, r
    cookie = ak.assert_session_cookie(r)
    me = ak.me(srv, cookie).json()["user"]
    assert me["provider"] == "email" and me["email"] == email, me
    kilnhttp.assert_error(verify(srv, email, code), 401, "invalid_code")
    ak.assert_not_in_logs(srv, code, cookie)
    # One person: the audit log of the password session sees the code's
    # sign-in as the same user.
    r = ak.call(srv, "GET", "/api/v1/audit?limit=50", cookies={ak.SESSION_COOKIE: cookie})
    assert r.status == 200, r
    actions = [e["action"] for e in r.json()["data"]]
    assert actions.count("login") >= 2, actions
    assert by_password["email"] == me["email"]


def test_an_unknown_address_gets_a_notice_not_a_code(srv, smtp):
    email = addr("nobody")
    known = addr("known")
    password_account(srv, smtp, known)
    assert ask(srv, email) == ask(srv, known)
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    assert msg["subject"] == "Sign-in attempt" and not re.search(r"\d{6}", msg["text"]), msg
    kilnhttp.assert_error(verify(srv, email, "123456"), 401, "invalid_code")


def test_with_signup_by_code_the_code_creates_a_verified_user(open_srv, smtp):
    email = addr("new")
    ask(open_srv, email)
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    r = verify(open_srv, email, code_of(msg))
    assert r.status == 200, r
    me = ak.me(open_srv, ak.assert_session_cookie(r)).json()["user"]
    assert me["email"] == email and me["provider"] == "email", me
    # The next code finds the same user.
    ask(open_srv, email)
    second = smtp.wait_for(email, count=2, timeout=15 * SLOW)[1]
    r2 = verify(open_srv, email, code_of(second))
    assert r2.status == 200, r2


def test_only_the_newest_code_counts_and_five_wrong_tries_kill_it(srv, smtp):
    email = addr()
    password_account(srv, smtp, email)
    # One after the other: two jobs may send in either order.
    ask(srv, email)
    first = smtp.wait_for(email, count=2, timeout=15 * SLOW)[1]
    ask(srv, email)
    second = smtp.wait_for(email, count=3, timeout=15 * SLOW)[2]
    old, new = code_of(first), code_of(second)
    if old != new:
        kilnhttp.assert_error(verify(srv, email, old), 401, "invalid_code")
    wrong = "000000" if new != "000000" else "111111"
    for _ in range(4 if old != new else 5):
        kilnhttp.assert_error(verify(srv, email, wrong), 401, "invalid_code")
    kilnhttp.assert_error(verify(srv, email, new), 401, "invalid_code")


def test_a_code_into_an_unverified_password_account_drops_that_password(srv, smtp):
    email = addr("preclaimed")
    password_account(srv, smtp, email, "someone-elses-choice")
    ask(srv, email)
    msg = smtp.wait_for(email, count=2, timeout=15 * SLOW)[1]
    r = verify(srv, email, code_of(msg))
    assert r.status == 200, r
    r = post(srv, "/auth/password/login", {"email": email, "password": "someone-elses-choice"})
    kilnhttp.assert_error(r, 401, "invalid_credentials")


def test_at_most_five_codes_an_hour_per_address(srv, smtp):
    email = addr("many")
    for _ in range(5):
        ask(srv, email)
    r = post(srv, "/auth/email/code", {"email": email})
    kilnhttp.assert_error(r, 429, "too_many_attempts")
    assert int(r.headers.get("retry-after")) >= 1, r


@pytest.mark.parametrize("body,field", [
    ({"email": "not-an-address"}, "email"), ({}, "email"), ({"email": 5}, "email")])
def test_bad_requests(srv, body, field):
    err = kilnhttp.assert_error(post(srv, "/auth/email/code", body), 422, "validation_failed")
    assert field in err["details"], err
    err = kilnhttp.assert_error(post(srv, "/auth/email/verify", dict(body, code="123456")), 422,
                                "validation_failed")
    assert field in err["details"], err


def test_a_code_user_sets_a_first_password_by_reset(open_srv, smtp):
    email = addr("first-password")
    ask(open_srv, email)
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    r = verify(open_srv, email, code_of(msg))
    first = ak.me(open_srv, ak.assert_session_cookie(r)).json()["user"]
    assert post(open_srv, "/auth/password/reset", {"email": email}).status == 202
    link = smtp.wait_for(email, count=2, timeout=15 * SLOW)[1]
    r = post(open_srv, "/auth/password/reset/confirm",
             {"token": mailkit.token_of(link), "password": "quiet-amber-river"})
    assert r.status == 200 and r.json()["sessions_ended"] == 1, r
    r = post(open_srv, "/auth/password/login", {"email": email, "password": "quiet-amber-river"})
    assert r.status == 200, r
    assert r.json()["user"]["email"] == first["email"]
