"""Email and password accounts (docs/AUTHENTICATION.md, "Email and
password"), black-box, with a real SMTP server on loopback (aiosmtpd,
mailkit.py) receiving the mail jobs' messages.

What is checked:
  * sign-up answers 202 and mails a verification link; sign-in before the
    address is verified is refused (403 email_not_verified, only for the
    right password); the link's token verifies once (POST, then 400
    invalid_token), the GET form redirects; then sign-in starts a session
    whose /me says provider "password";
  * no enumeration: sign-up of a verified address answers the same 202
    body, changes nothing (the old password still signs in, the new one
    does not) and mails the owner a notice without a link; sign-up of an
    unverified address replaces its password and mails a new link;
    unknown address and wrong password answer the same 401 body, in the
    same time (medians of 12 each, interleaved, from distinct loopback
    source addresses so that throttling stays out of it);
  * the password rules (too short in code points, common in any case, the
    address itself) answer 422 with details.password and create nothing;
  * throttling: the sixth attempt after five failures for one address from
    one IP is 429 with retry-after, even with the right password; the
    owner signs in from another IP;
  * a password change needs the current password; the old one stops
    working; the user's other sessions end, the current one goes on;
  * a reset mails a link to AUTH_RESET_URL; its token sets a new password
    once (rules apply), every session of the user ends, the old password
    stops working; an address without an account answers the same 202 and
    its owner gets a notice without a link;
  * a stored hash made with older parameters (libargon2 through ctypes,
    t=1, 4 MiB) signs in and is replaced by one with today's parameters;
  * secrets (passwords, link tokens, the session cookie) are never in
    Kiln's output; with EMAIL_PROVIDER=log the logged mail has
    token=[redacted].

Every mode (KILN_STORES): embedded, postgres, pgbouncer. On PostgreSQL
the module's instances get a database of their own: any instance runs any
queued mail job, and one of another module (whose mail goes to the log)
must not take these.
"""

import http.client
import json
import statistics
import time
import uuid

import pytest

import authkit as ak
import kilnhttp
import mailkit

SLOW = 3 if kilnhttp.SANITIZED else 1
PASSWORD = "violet-kettle-harbour"


@pytest.fixture(scope="module")
def srv(own_db, smtp, module_kiln):
    return ak.start_kiln(module_kiln, JOB_POLL_MS=100, **own_db(), **smtp.env())


def addr(tag="acct"):
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def post(srv, path, body, source=None, cookies=None):
    if source is None:
        return ak.call(srv, "POST", path, json_body=body, cookies=cookies, timeout=30 * SLOW)
    # From another loopback address: Kiln sees another client IP.
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30 * SLOW,
                                   source_address=(source, 0))
    try:
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null"), dict(r.getheaders())
    finally:
        c.close()


def register(srv, email, password=PASSWORD, name="Ann Example"):
    r = post(srv, "/auth/password/register", {"email": email, "password": password, "name": name})
    assert r.status == 202, r
    return r


def verified_account(srv, smtp, email=None, password=PASSWORD):
    email = email or addr()
    register(srv, email, password)
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    r = post(srv, "/auth/password/verify", {"token": mailkit.token_of(msg)})
    assert r.status == 200, r
    return email


def login(srv, email, password=PASSWORD, **kw):
    return post(srv, "/auth/password/login", {"email": email, "password": password}, **kw)


def test_signup_verify_then_sign_in(srv, smtp):
    email = addr()
    r = register(srv, email)
    body = r.json()
    assert body["status"] == "pending_verification", body
    ak.assert_no_session_cookie(r)
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    assert msg["from"] == "no-reply@kiln.test" and msg["subject"] == "Confirm your email address"
    assert [a.addr_spec for a in msg["headers"]["to"].addresses] == [email]
    token = mailkit.token_of(msg)
    assert f"{srv.env['PUBLIC_URL']}/auth/password/verify?token={token}" in msg["text"]
    # Before verification: the right password is told so; a wrong one is not.
    kilnhttp.assert_error(login(srv, email), 403, "email_not_verified")
    kilnhttp.assert_error(login(srv, email, "wrong-password-here"), 401, "invalid_credentials")
    r = post(srv, "/auth/password/verify", {"token": token})
    assert r.status == 200 and r.json() == {"status": "verified"}, r
    kilnhttp.assert_error(post(srv, "/auth/password/verify", {"token": token}), 400, "invalid_token")
    r = login(srv, email.upper())  # addresses are case-insensitive
    assert r.status == 200, r
    cookie = ak.assert_session_cookie(r)
    me = ak.me(srv, cookie).json()["user"]
    assert me["email"] == email and me["provider"] == "password" and me["name"] == "Ann Example", me
    ak.assert_not_in_logs(srv, PASSWORD, token, cookie, cookie.split(".")[0])


def test_the_link_opened_in_a_browser_redirects(srv, smtp):
    email = addr()
    register(srv, email)
    [msg] = smtp.wait_for(email, timeout=15 * SLOW)
    token = mailkit.token_of(msg)
    r = ak.call(srv, "GET", f"/auth/password/verify?token={token}")
    assert r.status == 302 and r.headers.get("location") == ak.SUCCESS_REDIRECT + "?verified=true", r
    r = ak.call(srv, "GET", f"/auth/password/verify?token={token}")
    assert r.status == 302 and r.headers.get("location") == ak.FAILURE_REDIRECT + "?error=invalid_token"
    r = ak.call(srv, "GET", "/auth/password/verify")
    assert r.status == 302 and "error=invalid_token" in r.headers.get("location"), r
    assert login(srv, email).status == 200


def test_signup_of_a_verified_address_changes_nothing_and_tells_the_owner(srv, smtp):
    email = verified_account(srv, smtp)
    fresh = register(srv, addr()).json()
    again = register(srv, email, "another-password-entirely").json()
    assert again == fresh, (again, fresh)
    msgs = smtp.wait_for(email, count=2, timeout=15 * SLOW)
    notice = msgs[1]
    assert notice["subject"] == "Someone tried to sign up with your address"
    assert "token=" not in notice["text"], notice["text"]
    assert login(srv, email).status == 200
    kilnhttp.assert_error(login(srv, email, "another-password-entirely"), 401,
                          "invalid_credentials")


def test_signup_of_an_unverified_address_takes_the_new_password(srv, smtp):
    email = addr()
    register(srv, email, "first-password-given")
    register(srv, email, PASSWORD)
    first, second = smtp.wait_for(email, count=2, timeout=15 * SLOW)
    r = post(srv, "/auth/password/verify", {"token": mailkit.token_of(second)})
    assert r.status == 200, r
    assert login(srv, email).status == 200
    kilnhttp.assert_error(login(srv, email, "first-password-given"), 401, "invalid_credentials")


@pytest.mark.parametrize("password,detail", [
    ("Zq7-kw2", "should be at least 8 character(s)"),
    ("\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9", "should be at least 8 character(s)"),
    ("Password1", "is too common: it appears in lists of leaked passwords"),
    ("QWERTYUIOP", "is too common: it appears in lists of leaked passwords"),
    ("k" * 257, "is too long (at most 256 characters)"),
    (None, "can't be blank"),
    (12345678, "is invalid"),
], ids=["short", "short-multibyte", "common", "common-upper", "long", "missing", "number"])
def test_password_rules(srv, smtp, password, detail):
    email = addr("rules")
    body = {"email": email, "name": "R"}
    if password is not None:
        body["password"] = password
    err = kilnhttp.assert_error(post(srv, "/auth/password/register", body), 422,
                                "validation_failed")
    assert err["details"]["password"] == [detail], err
    time.sleep(0.3)
    assert not smtp.messages_to(email)


def test_the_address_itself_is_refused_as_a_password(srv):
    email = addr("self")
    err = kilnhttp.assert_error(
        post(srv, "/auth/password/register", {"email": email, "password": email}), 422,
        "validation_failed")
    assert err["details"]["password"] == ["must not be the email address"], err


@pytest.mark.parametrize("email", ["no-at-sign", "a@b", "two@@example.com", "sp ace@example.com",
                                   "<a@example.com>", "a@example.com\r\nBcc: x@example.com", ""])
def test_addresses_that_are_not_mailable_are_refused(srv, email):
    err = kilnhttp.assert_error(
        post(srv, "/auth/password/register", {"email": email, "password": PASSWORD}), 422,
        "validation_failed")
    assert "email" in err["details"], err


def test_unknown_address_and_wrong_password_answer_alike(srv, smtp):
    email = verified_account(srv, smtp)
    wrong, unknown = [], []
    for i in range(12):
        for kind in ("wrong", "unknown"):
            src = f"127.0.{1 if kind == 'wrong' else 2}.{10 + i}"
            who = email if kind == "wrong" else addr("nobody")
            t0 = time.monotonic()
            status, body, _ = post(srv, "/auth/password/login",
                                   {"email": who, "password": "not-the-password-1"}, source=src)
            took = time.monotonic() - t0
            assert status == 401 and body["code"] == "invalid_credentials", body
            body.pop("request_id")
            (wrong if kind == "wrong" else unknown).append((took, json.dumps(body, sort_keys=True)))
    # The same body (but for its request id)...
    assert {b for _, b in wrong} == {b for _, b in unknown}
    # ...and the same time: both pay one Argon2id check. Without the check
    # against the unknown hash, an unknown address answers 20-50 times
    # faster.
    mw = statistics.median(t for t, _ in wrong)
    mu = statistics.median(t for t, _ in unknown)
    assert 0.6 < mu / mw < 1.6, (mw, mu)


def test_failures_throttle_one_address_from_one_ip_only(srv, smtp):
    email = verified_account(srv, smtp)
    for _ in range(5):
        status, body, _ = login(srv, email, "wrong-wrong-wrong", source="127.0.3.1")
        assert status == 401, body
    status, body, headers = login(srv, email, source="127.0.3.1")
    assert status == 429 and body["code"] == "too_many_attempts", body
    assert int(headers["retry-after"]) >= 1, headers
    # The owner, elsewhere, is not locked out.
    status, body, _ = login(srv, email, source="127.0.3.2")
    assert status == 200, body


def test_change_password(srv, smtp):
    email = verified_account(srv, smtp)
    r = login(srv, email)
    cookie = ak.assert_session_cookie(r)
    jar = {ak.SESSION_COOKIE: cookie}
    r = post(srv, "/auth/password/change", {"current_password": "not-it-at-all",
                                             "password": "a-brand-new-secret"}, cookies=jar)
    kilnhttp.assert_error(r, 403, "invalid_credentials")
    r = post(srv, "/auth/password/change", {"current_password": PASSWORD, "password": "short"},
             cookies=jar)
    kilnhttp.assert_error(r, 422, "validation_failed")
    other = ak.assert_session_cookie(login(srv, email))
    r = post(srv, "/auth/password/change", {"current_password": PASSWORD,
                                             "password": "a-brand-new-secret"}, cookies=jar)
    assert r.status == 200 and r.json() == {"status": "changed", "sessions_ended": 1}, r
    # The other session ended; this one goes on.
    ak.assert_unauthenticated(ak.me(srv, other))
    assert ak.me(srv, cookie).status == 200
    kilnhttp.assert_error(login(srv, email), 401, "invalid_credentials")
    assert login(srv, email, "a-brand-new-secret").status == 200
    r = post(srv, "/auth/password/change", {"current_password": "a-brand-new-secret",
                                             "password": "another-one-again"})
    assert r.status == 401, r
    ak.assert_not_in_logs(srv, PASSWORD, "a-brand-new-secret")


def test_the_log_provider_redacts_the_link(own_db, module_kiln):
    srv = ak.start_kiln(module_kiln, JOB_POLL_MS=100, **own_db())
    email = addr("log")
    register(srv, email)
    deadline = time.monotonic() + 15 * SLOW
    while time.monotonic() < deadline:
        lines = [l for l in srv.log_lines()[0] if l.get("message", "").startswith("mail not sent")]
        if lines:
            break
        time.sleep(0.1)
    assert lines, "no mail log line"
    line = lines[0]
    assert line["to"] == email and line["subject"] == "Confirm your email address", line
    assert "token=[redacted]" in line["text"], line


def test_reset_sets_a_new_password_and_ends_every_session(srv, smtp):
    email = verified_account(srv, smtp)
    sessions = [ak.assert_session_cookie(login(srv, email)) for _ in range(2)]
    r = post(srv, "/auth/password/reset", {"email": email})
    assert r.status == 202 and r.json()["status"] == "reset_sent", r
    msg = smtp.wait_for(email, count=2, timeout=15 * SLOW)[1]
    assert msg["subject"] == "Reset your password", msg
    token = mailkit.token_of(msg)
    assert f"{srv.env['PUBLIC_URL']}/auth/password/reset?token={token}" in msg["text"]
    r = post(srv, "/auth/password/reset/confirm", {"token": token, "password": "Password1"})
    err = kilnhttp.assert_error(r, 422, "validation_failed")
    assert "password" in err["details"], err
    r = post(srv, "/auth/password/reset/confirm", {"token": token, "password": "fresh-lilac-stone"})
    assert r.status == 200 and r.json() == {"status": "reset", "sessions_ended": 2}, r
    for cookie in sessions:
        ak.assert_unauthenticated(ak.me(srv, cookie))
    kilnhttp.assert_error(login(srv, email), 401, "invalid_credentials")
    assert login(srv, email, "fresh-lilac-stone").status == 200
    r = post(srv, "/auth/password/reset/confirm", {"token": token, "password": "another-lilac-stone"})
    kilnhttp.assert_error(r, 400, "invalid_token")
    ak.assert_not_in_logs(srv, token, "fresh-lilac-stone")


def test_reset_of_an_address_without_an_account_answers_alike(srv, smtp):
    known = verified_account(srv, smtp)
    nobody = addr("nobody")
    a = post(srv, "/auth/password/reset", {"email": nobody})
    b = post(srv, "/auth/password/reset", {"email": known})
    assert a.status == b.status == 202 and a.json() == b.json(), (a, b)
    [msg] = smtp.wait_for(nobody, timeout=15 * SLOW)
    assert msg["subject"] == "Password reset attempt" and "token=" not in msg["text"], msg
    kilnhttp.assert_error(post(srv, "/auth/password/reset/confirm",
                               {"token": "x" * 43, "password": "fresh-lilac-stone"}), 400,
                          "invalid_token")


def db_execute(srv, sql):
    """Run SQL on srv's database (SQLite file or PostgreSQL); rows."""
    url = srv.env.get("DATABASE_URL")
    if not url:
        import sqlite3
        con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            rows = con.execute(sql).fetchall()
            con.commit()
            return rows
        finally:
            con.close()
    out = kilnhttp.services().psql(sql, db=url.rsplit("/", 1)[1].split("?")[0])
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def old_hash(password):
    """An Argon2id hash with parameters below today's (t=1, 4 MiB), from
    Debian's libargon2 directly."""
    import ctypes
    import os
    lib = ctypes.CDLL("libargon2.so.1")
    out = ctypes.create_string_buffer(256)
    pw, salt = password.encode(), os.urandom(16)
    rc = lib.argon2id_hash_encoded(ctypes.c_uint32(1), ctypes.c_uint32(4096), ctypes.c_uint32(1),
                                   pw, ctypes.c_size_t(len(pw)), salt, ctypes.c_size_t(16),
                                   ctypes.c_size_t(32), out, ctypes.c_size_t(256))
    assert rc == 0, rc
    return out.value.decode()


def test_a_hash_with_older_parameters_is_upgraded_at_sign_in(srv, smtp):
    email = verified_account(srv, smtp)
    old = old_hash(PASSWORD)
    assert old.startswith("$argon2id$v=19$m=4096,t=1,p=1$")
    db_execute(srv, "UPDATE passwords SET hash = '%s' WHERE user_id = (SELECT user_id FROM "
                    "identities WHERE provider = 'password' AND subject = '%s')" % (old, email))
    assert login(srv, email).status == 200
    [(stored,)] = db_execute(srv, "SELECT hash FROM passwords WHERE user_id = (SELECT user_id FROM "
                                  "identities WHERE provider = 'password' AND subject = '%s')" % email)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and stored != old, stored
    assert login(srv, email).status == 200
    kilnhttp.assert_error(login(srv, email, "not-" + PASSWORD), 401, "invalid_credentials")
