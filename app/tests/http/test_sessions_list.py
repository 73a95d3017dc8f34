"""The user's sessions: GET /api/v1/sessions lists them, DELETE
/api/v1/sessions/:id ends one, DELETE /api/v1/sessions ends every one but
the caller's (docs/AUTHENTICATION.md, Sessions; the per-user index in
app/src/auth/session.c).

Covered: three logins from three user agents, each listed once with the
current one flagged and no sid or cookie tag anywhere in the answer;
ending one (its cookie is refused at once, the others work, its event
streams close, the audit log has it); ending the caller's own (the cookie
is expired too); ending every other; another user's id and ids that were
never made (404); the CSRF rules on the cookie DELETEs; a logout leaving
the list. With Valkey (postgres and pgbouncer modes): sessions whose
record expired or vanished drop out of the list and out of the index, the
index's TTL, and two instances sharing Valkey (a session made on one is
listed and ended from the other).

Every answer read through ``requests`` is checked against the OpenAPI
document (conftest.py).
"""

import json
import re
import time

import pytest
import requests

import authkit as ak
from authkit import plain_kiln  # noqa: F401 (fixture)
import kilnhttp
from ssekit import SseStream

V1 = "/api/v1"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def login(srv, email, agent=None):
    """A dev login from a client that sends ``agent`` (str or bytes) as its
    User-Agent; the session cookie's value."""
    headers = [("User-Agent", agent)] if agent is not None else []
    return ak.dev_login(srv, email=email, headers=headers)[1]


def cookies(token):
    return {ak.SESSION_COOKIE: token}


def listing(srv, token, path=V1 + "/sessions", **kw):
    r = requests.get(srv.url(path), cookies=cookies(token), timeout=10, **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["data"]


def end(srv, token, session_id="", **kw):
    path = V1 + "/sessions" + (f"/{session_id}" if session_id else "")
    return requests.delete(srv.url(path), cookies=cookies(token), timeout=10, **kw)


def current(data):
    mine = [s for s in data if s["current"]]
    assert len(mine) == 1, data
    return mine[0]


def id_of(srv, token):
    """The public id of the session behind ``token``, from its own list."""
    return current(listing(srv, token))["id"]


def works(srv, token):
    return ak.me(srv, token).status == 200


def assert_refused(srv, token):
    ak.assert_unauthenticated(ak.me(srv, token))
    ak.assert_unauthenticated(ak.me(srv, bearer=token))


# --------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------

def test_three_logins_are_listed_once_each(plain_kiln):
    email = ak.unique_email("list")
    agents = ["Agent/1 (first)", "Agent/2 (second)", "Agent/3 (third)"]
    tokens = [login(plain_kiln, email, a) for a in agents]
    r = requests.get(plain_kiln.url(V1 + "/sessions"), cookies=cookies(tokens[1]), timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert sorted(s["user_agent"] for s in data) == sorted(agents), data
    assert current(data)["user_agent"] == agents[1], data
    for s in data:
        assert ID_RE.match(s["id"]), s
        assert RFC3339_RE.match(s["created_at"]) and RFC3339_RE.match(s["last_seen_at"]), s
        assert s["method"] == "dev" and s["ip"] == "127.0.0.1", s
    assert len({s["id"] for s in data}) == 3, data
    created = [s["created_at"] for s in data]
    assert created == sorted(created, reverse=True), f"not newest first: {data}"
    # No sid, no cookie tag, not even a part of one.
    for t in tokens:
        sid, tag = t.split(".")
        for secret in (sid, tag):
            for i in range(0, len(secret) - 12):
                assert secret[i:i + 12] not in r.text, f"part of a token in {r.text}"
    # Every way of asking gives the same list, current as seen from there.
    by_bearer = requests.get(plain_kiln.url(V1 + "/sessions"), timeout=10,
                             headers={"Authorization": f"Bearer {tokens[2]}"}).json()["data"]
    assert {s["id"] for s in by_bearer} == {s["id"] for s in data}
    assert current(by_bearer)["user_agent"] == agents[2]
    alias = listing(plain_kiln, tokens[0], path="/api/sessions")
    assert current(alias)["user_agent"] == agents[0]


def test_a_user_sees_only_their_own_sessions(plain_kiln):
    a = login(plain_kiln, ak.unique_email("own-a"), "A's browser")
    b = login(plain_kiln, ak.unique_email("own-b"), "B's browser")
    assert [s["user_agent"] for s in listing(plain_kiln, a)] == ["A's browser"]
    assert [s["user_agent"] for s in listing(plain_kiln, b)] == ["B's browser"]


def test_no_user_agent_and_odd_ones(plain_kiln):
    email = ak.unique_email("ua")
    plain = login(plain_kiln, email)                       # no User-Agent at all
    login(plain_kiln, email, "x" * 1000)
    login(plain_kiln, email, b"caf\xe9 \xffbrowser")         # obs-text: bytes past ASCII
    agents = sorted((s["user_agent"] for s in listing(plain_kiln, plain)), key=str)
    assert None in agents, agents
    assert "x" * 256 in agents, "a long User-Agent is kept as its first 256 bytes"
    assert "caf? ?browser" in agents, agents


def test_listing_needs_a_session(plain_kiln):
    r = requests.get(plain_kiln.url(V1 + "/sessions"), timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "authentication_required", r.text
    for path in (V1 + "/sessions", V1 + "/sessions/" + "A" * 22):
        r = requests.delete(plain_kiln.url(path), timeout=10)
        assert r.status_code == 401, (path, r.text)


def test_logout_leaves_the_list(plain_kiln):
    email = ak.unique_email("logout")
    first, second = login(plain_kiln, email, "first"), login(plain_kiln, email, "second")
    assert ak.logout(plain_kiln, first).status == 302
    assert [s["user_agent"] for s in listing(plain_kiln, second)] == ["second"]


# --------------------------------------------------------------------------
# ending one
# --------------------------------------------------------------------------

def test_ending_one_session(plain_kiln):
    email = ak.unique_email("end-one")
    one, two, three = (login(plain_kiln, email, f"agent {i}") for i in (1, 2, 3))
    target = id_of(plain_kiln, two)
    stream = SseStream(plain_kiln, bearer=two)
    r = end(plain_kiln, one, target)
    assert r.status_code == 204 and r.content == b"", (r.status_code, r.text)
    assert ak.SESSION_COOKIE not in r.headers.get("set-cookie", ""), \
        "ending another session must not touch the caller's cookie"
    assert_refused(plain_kiln, two)
    assert works(plain_kiln, one) and works(plain_kiln, three)
    # Its event stream closes, as after a logout.
    stream.wait_closed(timeout=5)
    stream.close()
    left = listing(plain_kiln, one)
    assert len(left) == 2 and target not in {s["id"] for s in left}, left
    # Once ended, it is not there to end again.
    r = end(plain_kiln, one, target)
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    # The audit log says which session, and that the user ended it.
    audit = requests.get(plain_kiln.url(V1 + "/audit"), cookies=cookies(one), timeout=10).json()
    ended = [e for e in audit["data"] if e["action"] == "session_ended"]
    assert any(target in (e["target"] or "") for e in ended), audit


def test_ending_the_callers_own_session(plain_kiln):
    email = ak.unique_email("end-self")
    mine, other = login(plain_kiln, email, "mine"), login(plain_kiln, email, "other")
    r = end(plain_kiln, mine, id_of(plain_kiln, mine))
    assert r.status_code == 204, r.text
    c = ak.SetCookie(r.headers["set-cookie"])
    assert c.name == ak.SESSION_COOKIE and c.cleared, c
    assert_refused(plain_kiln, mine)
    assert works(plain_kiln, other)


def test_another_users_session_is_not_found(plain_kiln):
    alice = login(plain_kiln, ak.unique_email("alice"), "alice")
    bob = login(plain_kiln, ak.unique_email("bob"), "bob")
    bobs = id_of(plain_kiln, bob)
    r = end(plain_kiln, alice, bobs)
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    assert works(plain_kiln, bob)
    # Ids that were never made answer the same, whatever they look like.
    sid = alice.split(".")[0]
    for bogus in ("A" * 22, "x", "A" * 23, sid[:22], sid, "..%2e", "%00"):
        r = end(plain_kiln, alice, bogus)
        assert r.status_code in (400, 404), (bogus, r.status_code, r.text)
    assert works(plain_kiln, alice)


def test_cookie_deletes_follow_the_csrf_rules(plain_kiln):
    email = ak.unique_email("csrf")
    mine, other = login(plain_kiln, email, "mine"), login(plain_kiln, email, "other")
    target = id_of(plain_kiln, other)
    for path in (target, ""):
        r = end(plain_kiln, mine, path, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
        r = end(plain_kiln, mine, path, data="ended=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415, r.text
    assert works(plain_kiln, other)
    # From our own origin, or with the token as Bearer, it goes through.
    r = end(plain_kiln, mine, target, headers={"Origin": plain_kiln.env["PUBLIC_URL"]})
    assert r.status_code == 204, r.text
    assert_refused(plain_kiln, other)
    third = login(plain_kiln, email, "third")
    r = requests.delete(plain_kiln.url(V1 + "/sessions/" + id_of(plain_kiln, third)),
                        headers={"Authorization": f"Bearer {mine}",
                                 "Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 204, r.text
    assert_refused(plain_kiln, third)


# --------------------------------------------------------------------------
# ending all but the current one
# --------------------------------------------------------------------------

def test_ending_every_other_session(plain_kiln):
    email = ak.unique_email("end-all")
    tokens = [login(plain_kiln, email, f"device {i}") for i in range(4)]
    bystander = login(plain_kiln, ak.unique_email("bystander"), "elsewhere")
    streams = [SseStream(plain_kiln, bearer=t) for t in (tokens[0], tokens[3])]
    r = end(plain_kiln, tokens[2])
    assert r.status_code == 200 and r.json() == {"ended": 3}, r.text
    for i, t in enumerate(tokens):
        if i == 2:
            assert works(plain_kiln, t)
        else:
            assert_refused(plain_kiln, t)
    assert works(plain_kiln, bystander)
    for s in streams:
        s.wait_closed(timeout=5)
        s.close()
    left = listing(plain_kiln, tokens[2])
    assert [s["user_agent"] for s in left] == ["device 2"] and left[0]["current"], left
    r = end(plain_kiln, tokens[2])
    assert r.status_code == 200 and r.json() == {"ended": 0}, r.text


# --------------------------------------------------------------------------
# Valkey: expiry and lazy cleanup, two instances
# --------------------------------------------------------------------------

def user_id_of(services, token):
    record = json.loads(ak.redis_cli(services, "GET", f"backend_session:{token.split('.')[0]}"))
    return record["user_id"]


@ak.needs_valkey("expires and deletes session records behind kiln's back")
def test_sessions_whose_record_is_gone_leave_the_list(plain_kiln, services):
    email = ak.unique_email("expiry")
    tokens = [login(plain_kiln, email, f"agent {i}") for i in range(3)]
    sids = [t.split(".")[0] for t in tokens]
    index = f"user_sessions:{user_id_of(services, tokens[2])}"
    assert sorted(ak.redis_cli(services, "SMEMBERS", index).split()) == sorted(sids)
    ttl = int(ak.redis_cli(services, "TTL", index))
    assert ak.SESSION_MAX_AGE - 120 <= ttl <= ak.SESSION_MAX_AGE, f"TTL of {index}: {ttl}"
    # One expires, one is deleted without the index knowing.
    ak.redis_cli(services, "PEXPIRE", f"backend_session:{sids[0]}", 50)
    ak.redis_cli(services, "DEL", f"backend_session:{sids[1]}")
    time.sleep(0.2)
    left = listing(plain_kiln, tokens[2])
    assert [s["user_agent"] for s in left] == ["agent 2"], left
    # The listing took them out of the index as it found them.
    assert ak.redis_cli(services, "SMEMBERS", index).split() == [sids[2]]
    # Ending everything else finds nothing more to end.
    r = end(plain_kiln, tokens[2])
    assert r.status_code == 200 and r.json() == {"ended": 0}, r.text
    # And the last session's end takes the index with it.
    assert ak.logout(plain_kiln, tokens[2]).status == 302
    assert ak.redis_cli(services, "EXISTS", index) == "0"


@ak.needs_valkey("two instances share sessions through Valkey")
def test_a_session_made_on_one_instance_is_ended_from_another(kiln):
    key = ak.secret_key_base()
    a = ak.start_kiln(kiln, SECRET_KEY_BASE=key)
    b = ak.start_kiln(kiln, SECRET_KEY_BASE=key)
    email = ak.unique_email("two")
    on_a = login(a, email, "made on A")
    on_b = login(b, email, "made on B")
    seen_from_b = listing(b, on_b)
    assert sorted(s["user_agent"] for s in seen_from_b) == ["made on A", "made on B"]
    assert current(seen_from_b)["user_agent"] == "made on B"
    # Both instances name a session by the same id.
    assert {s["id"] for s in listing(a, on_a)} == {s["id"] for s in seen_from_b}
    stream = SseStream(a, bearer=on_a)
    target = next(s["id"] for s in seen_from_b if s["user_agent"] == "made on A")
    r = end(b, on_b, target)
    assert r.status_code == 204, r.text
    assert_refused(a, on_a)
    assert_refused(b, on_a)
    stream.wait_closed(timeout=5)
    stream.close()
    # And every other one, from A.
    again = login(b, email, "again on B")
    r = end(a, on_b)
    assert r.status_code == 200 and r.json() == {"ended": 1}, r.text
    assert_refused(b, again)
    assert works(a, on_b)
