"""Notes (API.md, "Protected routes"): CRUD on /api/v1/notes and the /api
alias, the list (newest first, limit/offset paging, meta, archived filter),
search (case-blind, % _ and \\ literal), validation (422 details per field,
400 for bodies that are not JSON objects), ownership (another user's note is
404 note_not_found, exactly like a missing one), 401 without a session, the
list cache (a write is visible on the very next list, also from a second
instance sharing Valkey; CACHE_TTL_SECONDS=0), 32 concurrent creates, a
kill -9 in the middle of a write burst, and, on PostgreSQL, EXPLAIN of the
list query (it must use notes_user_archived_inserted_idx).

What runs where (KILN_STORES):
  embedded   everything but the two-instance cache test and EXPLAIN; the
             durability test restarts on the same DB_PATH
  postgres   + two instances on one Valkey, EXPLAIN; restarts on the same
  pgbouncer    DATABASE_URL

The cache tests prove the cache is engaged before relying on it: they add a
row behind kiln's back (Python's sqlite3 on DB_PATH, or psql as the
PostgreSQL superuser) and expect a cached list not to show it until the next
write through the API.
"""

import datetime
import json
import re
import sqlite3
import threading
import time
import urllib.parse
import uuid

import pytest

import authkit as ak
import kilnhttp
from kilnhttp import STORES

V1, ALIAS = "/api/v1", "/api"
PREFIXES = (V1, ALIAS)
NOTE_KEYS = {"id", "title", "content", "archived", "inserted_at", "updated_at"}
META_KEYS = {"count", "total", "limit", "offset"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SERVICE_MODES = ("postgres", "pgbouncer")

needs_postgres = pytest.mark.skipif(
    STORES not in SERVICE_MODES,
    reason=f"KILN_STORES={STORES}: needs PostgreSQL (KILN_STORES=postgres or pgbouncer)")
needs_valkey = pytest.mark.skipif(
    STORES not in SERVICE_MODES,
    reason=f"KILN_STORES={STORES}: needs a Valkey shared by two instances")

# The list statement notes.c sends (api_notes_list), copied verbatim.
LIST_WHERE = (" FROM notes WHERE user_id = $1 AND archived = $2 AND (CAST($3 AS TEXT) IS NULL OR "
              "lower(title) LIKE lower(CAST($3 AS TEXT)) ESCAPE '\\' OR "
              "lower(content) LIKE lower(CAST($3 AS TEXT)) ESCAPE '\\')")
LIST_SQL = ("SELECT id, title, content, archived, inserted_at, updated_at, (SELECT count(*)" +
            LIST_WHERE + ") AS total" + LIST_WHERE +
            " ORDER BY inserted_at DESC, id DESC LIMIT $4 OFFSET $5")
INDEX_NAME = "notes_user_archived_inserted_idx"


# --------------------------------------------------------------------------
# clients and assertions
# --------------------------------------------------------------------------

class User:
    """A dev-login user of one kiln; requests go with ``Authorization:
    Bearer`` (no CSRF check) unless ``auth="cookie"``."""

    def __init__(self, srv, email=None):
        self.srv = srv
        self.email = email or ak.unique_email("notes")
        self.token = ak.session_for(srv, email=self.email)

    def call(self, method, path, obj=None, body=None, prefix=V1, auth="bearer", srv=None,
             timeout=10.0, conn=None):
        headers = []
        if obj is not None:
            body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        kw = {}
        if auth == "bearer":
            kw["bearer"] = self.token
        elif auth == "cookie":
            kw["cookies"] = {ak.SESSION_COOKIE: self.token}
            if body is None and method != "DELETE":
                headers.append(("Content-Type", "application/json"))
        return ak.call(srv or self.srv, method, prefix + path, headers=headers, body=body,
                       timeout=timeout, conn=conn, **kw)

    # -- shortcuts that assert success -----------------------------------------
    def create(self, title="a note", content=None, prefix=V1, srv=None, **extra):
        obj = {"title": title}
        if content is not None:
            obj["content"] = content
        obj.update(extra)
        r = self.call("POST", "/notes", obj, prefix=prefix, srv=srv)
        assert r.status == 201, f"create {obj!r:.200}: {r!r}"
        return assert_note_body(r)

    def show(self, note_id, prefix=V1, srv=None):
        r = self.call("GET", f"/notes/{note_id}", prefix=prefix, srv=srv)
        assert r.status == 200, f"show {note_id}: {r!r}"
        return assert_note_body(r)

    def update(self, note_id, obj, method="PATCH", prefix=V1, srv=None):
        r = self.call(method, f"/notes/{note_id}", obj, prefix=prefix, srv=srv)
        assert r.status == 200, f"{method} {note_id} {obj!r:.200}: {r!r}"
        return assert_note_body(r)

    def list(self, prefix=V1, srv=None, **params):
        q = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        r = self.call("GET", "/notes" + (f"?{q}" if q else ""), prefix=prefix, srv=srv)
        assert r.status == 200, f"list {params!r}: {r!r}"
        return assert_list_body(r)

    def list_all(self, srv=None, **params):
        """Every note of the list, paging with limit=100."""
        out, offset = [], 0
        while True:
            body = self.list(srv=srv, limit=100, offset=offset, **params)
            out += body["data"]
            if len(body["data"]) < 100:
                return out, body["meta"]["total"]
            offset += 100


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def assert_note(n, **want):
    assert isinstance(n, dict), n
    assert set(n) == NOTE_KEYS, f"note keys {sorted(n)}, want {sorted(NOTE_KEYS)}: {n}"
    assert isinstance(n["id"], str) and UUID_RE.match(n["id"]), f"id not a lower-case UUID: {n}"
    assert isinstance(n["title"], str) and isinstance(n["content"], str), n
    assert isinstance(n["archived"], bool), n
    for k in ("inserted_at", "updated_at"):
        assert isinstance(n[k], str) and TS_RE.match(n[k]), \
            f"{k} {n[k]!r} is not RFC 3339 UTC with microseconds"
        parse_ts(n[k])
    assert n["updated_at"] >= n["inserted_at"], n
    for k, v in want.items():
        assert n[k] == v, f"note {k} = {n[k]!r:.100}, want {v!r:.100}: {n!r:.400}"
    return n


def assert_note_body(r, **want):
    kilnhttp.assert_json_content_type(r)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"data"}, f"want {{\"data\": note}}: {body}"
    return assert_note(body["data"], **want)


def assert_list_body(r):
    kilnhttp.assert_json_content_type(r)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"data", "meta"}, body
    assert isinstance(body["data"], list), body
    meta = body["meta"]
    assert isinstance(meta, dict) and set(meta) == META_KEYS, f"meta keys: {meta}"
    assert all(isinstance(meta[k], int) and not isinstance(meta[k], bool) for k in META_KEYS), meta
    assert meta["count"] == len(body["data"]), meta
    for n in body["data"]:
        assert_note(n)
    return body


def ids(notes):
    return [n["id"] for n in notes]


def titles(notes):
    return {n["title"] for n in notes}


def not_found(r):
    body = kilnhttp.assert_error(r, 404, "note_not_found")
    return {k: v for k, v in body.items() if k != "request_id"}


def details_of(r, status=422, code="validation_failed"):
    body = kilnhttp.assert_error(r, status, code)
    d = body.get("details")
    assert isinstance(d, dict) and d, f"want details per field: {body}"
    for field, msgs in d.items():
        assert isinstance(msgs, list) and msgs and all(isinstance(m, str) and m for m in msgs), \
            f"details[{field!r}] is not a list of messages: {body}"
    return d


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------
# behind kiln's back: the database itself
# --------------------------------------------------------------------------

def _q(s):
    return "'" + str(s).replace("'", "''") + "'"


def db_user_id(srv, email):
    """users.id of a dev-login user."""
    sql = "SELECT user_id FROM identities WHERE provider = 'dev' AND subject = "
    if STORES == "embedded":
        with sqlite3.connect(srv.env["DB_PATH"], timeout=10) as c:
            rows = c.execute(sql + "?", (email,)).fetchall()
    else:
        rows = kilnhttp.services().rows(sql + _q(email))
    assert len(rows) == 1, f"identity of {email}: {rows}"
    return str(rows[0][0])


def db_insert_note(srv, user_id, title):
    """A note written straight into the database (no cache invalidation)."""
    nid = str(uuid.uuid4())
    ts = now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if STORES == "embedded":
        c = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
        try:
            with c:
                c.execute("INSERT INTO notes (id, user_id, title, content, archived, inserted_at, "
                          "updated_at) VALUES (?, ?, ?, '', 0, ?, ?)", (nid, user_id, title, ts, ts))
        finally:
            c.close()
    else:
        kilnhttp.services().psql(
            "INSERT INTO notes (id, user_id, title, content, archived, inserted_at, updated_at) "
            f"VALUES ({_q(nid)}, {_q(user_id)}, {_q(title)}, '', false, {_q(ts)}, {_q(ts)})")
    return nid


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(module_kiln):
    return ak.start_kiln(module_kiln, CACHE_TTL_SECONDS=300)


@pytest.fixture
def alice(srv):
    return User(srv)


@pytest.fixture
def bob(srv):
    return User(srv)


@pytest.fixture(scope="module")
def many(srv):
    """A user with 105 active notes made one after another, and their ids
    newest first."""
    u = User(srv)
    made = [u.create(title=f"many {i:03d}", content=f"body {i}")["id"] for i in range(105)]
    return u, made[::-1]


# --------------------------------------------------------------------------
# create, show, update, delete, archive
# --------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_answers_201_with_the_note(alice, prefix):
    before = now_utc()
    title, content = "Grüße ☃ \"quoted\" \\ back", "line 1\nline 2\t😀 ünïcödé"
    r = alice.call("POST", "/notes", {"title": title, "content": content}, prefix=prefix)
    assert r.status == 201, r
    kilnhttp.assert_request_id(r)
    n = assert_note_body(r, title=title, content=content, archived=False)
    assert n["inserted_at"] == n["updated_at"], n
    ins = parse_ts(n["inserted_at"])
    assert before - datetime.timedelta(seconds=5) <= ins <= now_utc() + datetime.timedelta(seconds=5), \
        f"inserted_at {n['inserted_at']} is not now ({before.isoformat()}): UTC?"
    # content is optional and defaults to ""
    n2 = alice.create(title="no content", prefix=prefix)
    assert n2["content"] == "" and n2["id"] != n["id"], n2


@pytest.mark.parametrize("prefix", PREFIXES)
def test_show_answers_the_stored_note_on_both_paths(alice, prefix):
    n = alice.create(title="show me", content="c", prefix=prefix)
    assert alice.show(n["id"], prefix=V1) == n
    assert alice.show(n["id"], prefix=ALIAS) == n


def test_create_through_the_session_cookie(alice):
    r = alice.call("POST", "/notes", {"title": "by cookie"}, prefix=ALIAS, auth="cookie")
    assert r.status == 201, r
    n = assert_note_body(r, title="by cookie")
    r = alice.call("GET", f"/notes/{n['id']}", auth="cookie")
    assert r.status == 200 and assert_note_body(r) == n, r


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_update_is_partial(alice, method, prefix):
    n0 = alice.create(title="t0", content="c0", prefix=prefix)
    steps = [({"title": "t1"}, {"title": "t1", "content": "c0", "archived": False}),
             ({"content": "c1"}, {"title": "t1", "content": "c1", "archived": False}),
             ({"archived": True}, {"title": "t1", "content": "c1", "archived": True}),
             ({"title": "t2", "content": "c2", "archived": False},
              {"title": "t2", "content": "c2", "archived": False}),
             ({}, {"title": "t2", "content": "c2", "archived": False})]
    prev = n0
    for change, want in steps:
        time.sleep(0.002)
        n = alice.update(n0["id"], change, method=method, prefix=prefix)
        assert_note(n, id=n0["id"], inserted_at=n0["inserted_at"], **want)
        if change:
            assert parse_ts(n["updated_at"]) > parse_ts(prev["updated_at"]), \
                f"updated_at did not move on {method} {change}: {prev['updated_at']} -> {n['updated_at']}"
        assert alice.show(n0["id"]) == n, f"{method} {change} not stored"
        prev = n


@pytest.mark.parametrize("prefix", PREFIXES)
def test_delete_answers_204_then_404(alice, prefix):
    keep = alice.create(title="keep")
    n = alice.create(title="doomed")
    with alice.srv.connect() as conn:
        r = alice.call("DELETE", f"/notes/{n['id']}", prefix=prefix, conn=conn)
        assert r.status == 204, r
        assert r.headers.get("content-length") in (None, "0"), r
        assert "transfer-encoding" not in r.headers, r
        # the next response on the same connection starts right after the
        # 204's head: any body bytes would garble it
        not_found(alice.call("GET", f"/notes/{n['id']}", prefix=prefix, conn=conn))
        assert not conn.buf, f"stray bytes after the 204: {bytes(conn.buf)[:200]!r}"
    not_found(alice.call("DELETE", f"/notes/{n['id']}", prefix=prefix))
    not_found(alice.call("PATCH", f"/notes/{n['id']}", {"title": "x"}, prefix=prefix))
    not_found(alice.call("POST", f"/notes/{n['id']}/archive", prefix=prefix))
    assert ids(alice.list()["data"]) == [keep["id"]]
    assert alice.show(keep["id"]) == keep


@pytest.mark.parametrize("prefix", PREFIXES)
def test_archive_and_unarchive(alice, prefix):
    other = alice.create(title="stays active")
    n = alice.create(title="to archive", content="c")
    for _ in range(2):   # archiving twice is fine
        time.sleep(0.002)
        r = alice.call("POST", f"/notes/{n['id']}/archive", prefix=prefix)
        assert r.status == 200, r
        a = assert_note_body(r, id=n["id"], title=n["title"], content="c", archived=True,
                             inserted_at=n["inserted_at"])
        assert parse_ts(a["updated_at"]) > parse_ts(n["updated_at"]), a
    assert alice.show(n["id"])["archived"] is True
    assert ids(alice.list()["data"]) == [other["id"]]
    assert ids(alice.list(archived="true")["data"]) == [n["id"]]
    r = alice.call("POST", f"/notes/{n['id']}/unarchive", prefix=prefix)
    assert r.status == 200, r
    assert_note_body(r, id=n["id"], archived=False, inserted_at=n["inserted_at"])
    assert alice.show(n["id"])["archived"] is False
    assert ids(alice.list()["data"]) == [n["id"], other["id"]]
    assert alice.list(archived="true")["data"] == []


# --------------------------------------------------------------------------
# list: order, paging, meta, archived
# --------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_is_newest_first_with_meta(alice, prefix):
    assert alice.list(prefix=prefix) == {"data": [], "meta": {"count": 0, "total": 0, "limit": 50,
                                                               "offset": 0}}
    made = []
    for i in range(5):
        made.append(alice.create(title=f"n{i}", content=f"c{i}"))
    body = alice.list(prefix=prefix)
    assert body["data"] == made[::-1], "want the notes, newest first, exactly as created"
    assert body["meta"] == {"count": 5, "total": 5, "limit": 50, "offset": 0}


def test_list_limit_default_and_cap(many):
    u, newest_first = many
    body = u.list()
    assert body["meta"] == {"count": 50, "total": 105, "limit": 50, "offset": 0}
    assert ids(body["data"]) == newest_first[:50]
    for limit, want in (("1", 1), ("7", 7), ("100", 100), ("101", 100), ("500", 100)):
        body = u.list(limit=limit)
        assert body["meta"] == {"count": want, "total": 105, "limit": want, "offset": 0}, limit
        assert ids(body["data"]) == newest_first[:want], limit


def test_list_offset_pages_are_disjoint(many):
    u, newest_first = many
    pages = []
    for offset in (0, 40, 80, 120):
        body = u.list(limit=40, offset=offset)
        want = newest_first[offset:offset + 40]
        assert body["meta"] == {"count": len(want), "total": 105, "limit": 40, "offset": offset}
        pages.append(ids(body["data"]))
        assert pages[-1] == want, f"page at offset {offset}"
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) == 105 and flat == newest_first
    body = u.list(limit=100, offset=100, prefix=ALIAS)
    assert ids(body["data"]) == newest_first[100:]


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=abc", "limit=1.5", "limit=1e2",
                                   "offset=-1", "offset=abc", "archived=maybe", "archived=yes",
                                   "archived=1"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_rejects_bad_parameters(alice, query, prefix):
    r = alice.call("GET", f"/notes?{query}", prefix=prefix)
    kilnhttp.assert_error(r, 400, "invalid_request")


def test_list_archived_flag_and_totals(alice, bob):
    active = [alice.create(title=f"active {i}") for i in range(3)]
    archived = [alice.create(title=f"archived {i}") for i in range(2)]
    for n in archived:
        assert alice.call("POST", f"/notes/{n['id']}/archive").status == 200
    bob.create(title="bob's active")
    bob_arch = bob.create(title="bob's archived")
    bob.call("POST", f"/notes/{bob_arch['id']}/archive")

    body = alice.list()
    assert ids(body["data"]) == ids(active[::-1]) and body["meta"]["total"] == 3, body
    assert alice.list(archived="false") == body
    body = alice.list(archived="true")
    assert ids(body["data"]) == ids(archived[::-1]) and body["meta"]["total"] == 2, body
    assert all(n["archived"] for n in body["data"]), body
    body = alice.list(archived="true", limit=1, offset=1)
    assert body["meta"] == {"count": 1, "total": 2, "limit": 1, "offset": 1}
    assert ids(body["data"]) == [archived[0]["id"]]


# --------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------

def test_search_is_case_insensitive_on_title_and_content(alice, bob):
    t = alice.create(title="Hello World", content="nothing here")
    c = alice.create(title="greeting", content="and then she said hello to me")
    alice.create(title="unrelated", content="hell no")
    arch = alice.create(title="old HELLO", content="")
    alice.call("POST", f"/notes/{arch['id']}/archive")
    bob.create(title="hello from bob")

    for term in ("HELLO", "hello", "Hello", "hElLO"):
        body = alice.list(search=term)
        assert ids(body["data"]) == [c["id"], t["id"]], term
        assert body["meta"]["total"] == 2, f"total must count the matches: {body['meta']}"
    assert ids(alice.list(search="WORLD")["data"]) == [t["id"]]       # title only
    assert ids(alice.list(search="SHE SAID")["data"]) == [c["id"]]    # content only
    body = alice.list(search="hello", archived="true")
    assert ids(body["data"]) == [arch["id"]] and body["meta"]["total"] == 1
    body = alice.list(search="HELLO", limit=1, offset=1)
    assert body["meta"] == {"count": 1, "total": 2, "limit": 1, "offset": 1}
    assert ids(body["data"]) == [t["id"]]
    assert alice.list(search="absent term")["meta"]["total"] == 0
    assert alice.list(search="")["meta"]["total"] == 3   # an empty term filters nothing


def test_search_folds_case_beyond_ascii(alice):
    """On SQLite too, whose own LIKE folds ASCII only."""
    n = alice.create(title="École d'été", content="Ωmega ÇA")
    for term in ("ÉCOLE", "école", "D'ÉTÉ", "ωMEGA", "ça"):
        ids = [x["id"] for x in alice.list(search=term)["data"]]
        assert ids == [n["id"]], (term, ids)
    assert alice.list(search="ecole")["data"] == [], "é must not match e"


def test_search_wildcards_are_literal(alice):
    made = ["100%", "1000", "a_c", "abc", "back\\slash", "backslash", "x\\%y", "x%y", "it's"]
    for title in made:
        alice.create(title=title)
    alice.create(title="plain", content="50% OFF_now")
    cases = {
        "100%": {"100%"},
        "1000": {"1000"},
        "a_c": {"a_c"},
        "abc": {"abc"},
        "ac": {"back\\slash", "backslash"},
        "a%c": set(),
        "%": {"100%", "x\\%y", "x%y", "plain"},
        "_": {"a_c", "plain"},
        "%%": set(),
        "__": set(),
        "\\": {"back\\slash", "x\\%y"},
        "k\\s": {"back\\slash"},
        "\\%": {"x\\%y"},
        "x%y": {"x%y"},
        "0% off_": {"plain"},
        "it's": {"it's"},
        "'": {"it's"},
    }
    for term, want in cases.items():
        body = alice.list(search=term)
        assert titles(body["data"]) == want, f"search {term!r}: {titles(body['data'])}, want {want}"
        assert body["meta"]["total"] == len(want), term


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

BLANK_TITLES = {"absent": None, "empty": "", "spaces": "   ", "whitespace": " \t\n ", "null": "null",
                # Unicode-only whitespace: no-break, em and ideographic spaces.
                "unicode": "\u00a0\u2003\u3000"}


@pytest.mark.parametrize("case", list(BLANK_TITLES))
def test_title_is_required_on_create(alice, case):
    obj = {"content": "c"}
    if case != "absent":
        obj["title"] = None if case == "null" else BLANK_TITLES[case]
    d = details_of(alice.call("POST", "/notes", obj))
    assert d.get("title") == ["can't be blank"], d
    assert alice.list()["meta"]["total"] == 0, "a refused note was stored"


def test_a_title_with_unicode_spaces_and_text_is_kept(alice):
    n = alice.create(title="\u3000hello\u00a0")
    assert n["title"] == "\u3000hello\u00a0"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_title_cannot_be_blanked_on_update(alice, method):
    n = alice.create(title="keep me", content="c")
    for value in ("", "   ", None):
        d = details_of(alice.call(method, f"/notes/{n['id']}", {"title": value, "content": "new"}))
        assert d.get("title") == ["can't be blank"], (value, d)
    assert alice.show(n["id"]) == n, "a refused update changed the note"


@pytest.mark.parametrize("ch", ["a", "é", "😀"], ids=["ascii", "e-acute", "emoji"])
def test_title_length_counts_characters(alice, ch):
    n = alice.create(title=ch * 255)
    assert n["title"] == ch * 255 and alice.show(n["id"])["title"] == ch * 255
    d = details_of(alice.call("POST", "/notes", {"title": ch * 256}))
    assert d.get("title") == ["should be at most 255 character(s)"], d
    d = details_of(alice.call("PATCH", f"/notes/{n['id']}", {"title": ch * 256}))
    assert d.get("title") == ["should be at most 255 character(s)"], d
    assert alice.update(n["id"], {"title": "x" + ch * 254}, method="PUT")["title"] == "x" + ch * 254
    assert alice.list()["meta"]["total"] == 1


@pytest.mark.parametrize("ch", ["a", "é"], ids=["ascii", "e-acute"])
def test_content_length_limit(alice, ch):
    n = alice.create(title="long", content=ch * 10000)
    assert alice.show(n["id"])["content"] == ch * 10000
    d = details_of(alice.call("POST", "/notes", {"title": "too long", "content": ch * 10001}))
    assert d.get("content") == ["should be at most 10000 character(s)"], d
    assert "title" not in d, d
    d = details_of(alice.call("PUT", f"/notes/{n['id']}", {"content": ch * 10001}))
    assert set(d) == {"content"}, d
    assert alice.list()["meta"]["total"] == 1


def test_wrong_json_types_are_422_per_field(alice):
    d = details_of(alice.call("POST", "/notes", {"title": 5, "content": []}))
    assert set(d) == {"title", "content"}, d
    for obj in ({"title": True}, {"title": {"a": 1}}, {"title": ["t"]}, {"title": 1.5}):
        assert "title" in details_of(alice.call("POST", "/notes", obj)), obj
    for obj in ({"title": "t", "content": 7}, {"title": "t", "content": {"x": "y"}},
                {"title": "t", "content": False}):
        assert set(details_of(alice.call("POST", "/notes", obj))) == {"content"}, obj
    assert alice.list()["meta"]["total"] == 0, "a refused note was stored"

    n = alice.create(title="typed", content="c")
    d = details_of(alice.call("PATCH", f"/notes/{n['id']}",
                              {"title": 5, "content": [], "archived": "yes"}))
    assert set(d) == {"title", "content", "archived"}, d
    for obj in ({"archived": "true"}, {"archived": 1}, {"archived": None}):
        assert set(details_of(alice.call("PUT", f"/notes/{n['id']}", obj))) == {"archived"}, obj
    # one bad field spoils the whole update
    d = details_of(alice.call("PUT", f"/notes/{n['id']}", {"title": "fine", "archived": "no"}))
    assert set(d) == {"archived"}, d
    assert alice.show(n["id"]) == n


def test_nul_characters_are_refused(alice):
    """Text columns cannot hold U+0000: a 422 for that field (valid JSON,
    so not invalid_json), never a 500, nothing stored."""
    n = alice.create(title="target", content="c")
    for method, path, obj, field in (("POST", "/notes", {"title": "a\u0000b"}, "title"),
                                     ("POST", "/notes", {"title": "t", "content": "x\u0000"},
                                      "content"),
                                     ("PATCH", f"/notes/{n['id']}", {"title": "\u0000"}, "title"),
                                     ("PUT", f"/notes/{n['id']}", {"content": "a\u0000"},
                                      "content")):
        assert set(details_of(alice.call(method, path, obj))) == {field}, (method, obj)
    assert alice.list()["data"] == [n]


@pytest.mark.parametrize("body", [b"{not json", b'{"title": "x"', b"{'title': 'x'}",
                                  b'{"title": "x"} trailing', b"\xff\xfe{}"],
                         ids=["garbage", "truncated", "single-quotes", "trailing", "bad-utf8"])
def test_invalid_json_is_400(alice, body):
    kilnhttp.assert_error(alice.call("POST", "/notes", body=body), 400, "invalid_json")
    n = alice.create(title="target")
    kilnhttp.assert_error(alice.call("PUT", f"/notes/{n['id']}", body=body), 400, "invalid_json")
    kilnhttp.assert_error(alice.call("PATCH", f"/notes/{n['id']}", body=body, prefix=ALIAS), 400,
                          "invalid_json")
    assert alice.show(n["id"]) == n
    assert alice.list()["meta"]["total"] == 1


@pytest.mark.parametrize("body", [b"[]", b'[{"title": "x"}]', b'"x"', b"42", b"true", b"null"],
                         ids=["array", "array-of-object", "string", "number", "bool", "null"])
def test_body_must_be_a_json_object(alice, body):
    kilnhttp.assert_error(alice.call("POST", "/notes", body=body), 400, "invalid_request")
    n = alice.create(title="target")
    kilnhttp.assert_error(alice.call("PATCH", f"/notes/{n['id']}", body=body), 400,
                          "invalid_request")
    assert alice.show(n["id"]) == n
    assert alice.list()["meta"]["total"] == 1


def test_unknown_fields_are_ignored(alice, bob):
    fake_id = str(uuid.uuid4())
    n = alice.create(title="t", content="c", id=fake_id, user_id=fake_id, foo={"bar": [1]},
                     inserted_at="2000-01-01T00:00:00.000000Z",
                     updated_at="2000-01-01T00:00:00.000000Z")
    assert n["id"] != fake_id and n["inserted_at"] > "2001", n
    assert alice.show(n["id"]) == n
    not_found(alice.call("GET", f"/notes/{fake_id}"))
    time.sleep(0.002)
    u = alice.update(n["id"], {"title": "t2", "id": fake_id, "user_id": fake_id, "x": None,
                               "inserted_at": "2000-01-01T00:00:00.000000Z"})
    assert_note(u, id=n["id"], title="t2", content="c", inserted_at=n["inserted_at"])
    assert alice.show(n["id"]) == u and ids(alice.list()["data"]) == [n["id"]]
    assert bob.list()["meta"]["total"] == 0


def test_null_content(alice):
    n = alice.create(title="t", content=None)
    assert n["content"] == ""
    r = alice.call("POST", "/notes", {"title": "explicit null", "content": None})
    assert r.status == 201 and assert_note_body(r)["content"] == "", r
    n = alice.create(title="full", content="something")
    for method in ("PATCH", "PUT"):
        alice.update(n["id"], {"content": "again"}, method=method)
        u = alice.update(n["id"], {"content": None}, method=method)
        assert_note(u, title="full", content="", archived=False)
        assert alice.show(n["id"])["content"] == ""


# --------------------------------------------------------------------------
# ownership and ids
# --------------------------------------------------------------------------

def test_another_users_note_is_not_found(srv):
    a, b = User(srv), User(srv)
    na = a.create(title="alice's", content="secret")
    nb = b.create(title="bob's")
    na2 = a.create(title="alice's second")
    nb2 = b.create(title="bob's second")
    missing = str(uuid.uuid4())

    def all_ops(user, note_id):
        return [user.call("GET", f"/notes/{note_id}"),
                user.call("PUT", f"/notes/{note_id}", {"title": "pwned"}),
                user.call("PATCH", f"/notes/{note_id}", {"content": "pwned", "archived": True},
                          prefix=ALIAS),
                user.call("POST", f"/notes/{note_id}/archive"),
                user.call("POST", f"/notes/{note_id}/unarchive", prefix=ALIAS),
                user.call("DELETE", f"/notes/{note_id}")]

    want = [not_found(r) for r in all_ops(b, missing)]
    got = [not_found(r) for r in all_ops(b, na["id"])]
    assert got == want, "another user's note must answer exactly like a missing one"
    # a body that fails validation: same answer for a missing and a foreign id
    r_missing = b.call("PATCH", f"/notes/{missing}", {"title": ""})
    r_foreign = b.call("PATCH", f"/notes/{na['id']}", {"title": ""})
    assert (r_missing.status, r_missing.json().get("details")) == \
        (r_foreign.status, r_foreign.json().get("details"))
    # nothing of alice's changed, and each list holds its owner's notes only
    assert a.show(na["id"]) == na
    assert ids(a.list()["data"]) == [na2["id"], na["id"]]
    assert ids(b.list()["data"]) == [nb2["id"], nb["id"]]
    assert a.list(search="bob")["meta"]["total"] == 0
    assert a.list(archived="true")["meta"]["total"] == 0
    # and alice cannot touch bob's
    not_found(a.call("DELETE", f"/notes/{nb['id']}"))
    assert b.show(nb["id"]) == nb


@pytest.mark.parametrize("bad_id", [
    "nope", "123", "00000000000000000000000000000000",
    "0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0",        # one short
    "0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a0",      # one long
    "0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0g",       # not hex
    "0a0a0a0a+0a0a-4a0a-8a0a-0a0a0a0a0a0a",       # wrong separator
    "%27%20OR%20%271%27%3D%271",                   # ' OR '1'='1
    "%7B0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a%7D",  # {uuid}
])
def test_non_uuid_id_is_note_not_found(alice, bad_id):
    alice.create(title="exists")
    for method, path, obj in (("GET", "", None), ("PUT", "", {"title": "x"}),
                              ("PATCH", "", {"title": "x"}), ("DELETE", "", None),
                              ("POST", "/archive", None), ("POST", "/unarchive", None)):
        not_found(alice.call(method, f"/notes/{bad_id}{path}", obj))
    assert alice.list()["meta"]["total"] == 1


def test_upper_case_id_works(alice):
    n = alice.create(title="case", content="c")
    up = n["id"].upper()
    assert up != n["id"]
    assert alice.show(up) == n
    u = alice.update(up, {"title": "CASE"})
    assert u["id"] == n["id"] and u["title"] == "CASE"
    r = alice.call("POST", f"/notes/{up}/archive")
    assert r.status == 200 and assert_note_body(r, id=n["id"], archived=True), r
    r = alice.call("POST", f"/notes/{up}/unarchive", prefix=ALIAS)
    assert r.status == 200 and assert_note_body(r, id=n["id"], archived=False), r
    r = alice.call("DELETE", f"/notes/{up}")
    assert r.status == 204, r
    not_found(alice.call("GET", f"/notes/{n['id']}"))


# --------------------------------------------------------------------------
# without a session
# --------------------------------------------------------------------------

ROUTES = [("GET", "/notes"), ("POST", "/notes"), ("GET", "/notes/{id}"), ("PUT", "/notes/{id}"),
          ("PATCH", "/notes/{id}"), ("DELETE", "/notes/{id}"), ("POST", "/notes/{id}/archive"),
          ("POST", "/notes/{id}/unarchive")]


@pytest.fixture(scope="module")
def someones_note(srv):
    u = User(srv)
    return u, u.create(title="guarded", content="c")


@pytest.mark.parametrize("method,route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_route_needs_a_session(srv, someones_note, method, route, prefix):
    owner, note = someones_note
    forged = owner.token[:-4] + ("AAAA" if not owner.token.endswith("AAAA") else "BBBB")
    for note_id in (note["id"], "not-a-uuid"):
        path = prefix + route.format(id=note_id)
        body = json.dumps({"title": "x"}) if method in ("POST", "PUT", "PATCH") else None
        headers = [("Content-Type", "application/json")] if body else []
        for auth in ({}, {"bearer": "nope"}, {"bearer": forged},
                     {"cookies": {ak.SESSION_COOKIE: forged}}, {"cookies": {"other": owner.token}}):
            r = ak.call(srv, method, path, headers=headers, body=body, **auth)
            kilnhttp.assert_error(r, 401, "authentication_required")
    assert owner.show(note["id"]) == note
    assert owner.list()["meta"]["total"] == 1


# --------------------------------------------------------------------------
# the list cache
# --------------------------------------------------------------------------

def prime(u, srv=None):
    """Fill the cache for a few list variants (each asked twice)."""
    out = {}
    for params in ({}, {"archived": "true"}, {"search": "cache"}, {"limit": 3}):
        u.list(srv=srv, **params)
        out[json.dumps(params, sort_keys=True)] = u.list(srv=srv, **params)
    return out


def assert_cache_engaged(reader, writer_srv, srv=None):
    """A row added behind kiln's back is not in a cached list (so the
    checks that follow can fail); returns its id."""
    uid = db_user_id(writer_srv, reader.email)
    before = prime(reader, srv=srv)
    hidden = db_insert_note(writer_srv, uid, "cache: added behind kiln's back")
    after = prime(reader, srv=srv)
    assert after == before, ("the cached list already shows a row added behind kiln's back: "
                             "the list is not cached, so this test proves nothing")
    return hidden


def check_writes_visible(writer, reader, reader_srv=None, writer_srv=None):
    """Every kind of write through ``writer_srv`` shows in ``reader``'s very
    next list through ``reader_srv``."""
    w = dict(srv=writer_srv)
    r = dict(srv=reader_srv)
    prime(reader, **r)
    n = writer.create(title="cache one", content="x", **w)
    assert ids(reader.list(**r, search="cache")["data"])[0] == n["id"]
    assert n["id"] in ids(reader.list(**r)["data"])
    assert ids(reader.list(**r, limit=3)["data"])[0] == n["id"]

    prime(reader, **r)
    writer.update(n["id"], {"title": "cache one renamed"}, method="PUT", **w)
    assert reader.list(**r, search="cache")["data"][0]["title"] == "cache one renamed"
    prime(reader, **r)
    writer.update(n["id"], {"content": "patched"}, method="PATCH", **w)
    assert reader.list(**r)["data"][0]["content"] == "patched"

    prime(reader, **r)
    a = writer.call("POST", f"/notes/{n['id']}/archive", **w)
    assert a.status == 200, a
    assert n["id"] not in ids(reader.list(**r)["data"])
    assert ids(reader.list(**r, archived="true")["data"]) == [n["id"]]
    prime(reader, **r)
    a = writer.call("POST", f"/notes/{n['id']}/unarchive", **w)
    assert a.status == 200, a
    assert n["id"] in ids(reader.list(**r)["data"])
    assert reader.list(**r, archived="true")["data"] == []

    prime(reader, **r)
    d = writer.call("DELETE", f"/notes/{n['id']}", **w)
    assert d.status == 204, d
    assert n["id"] not in ids(reader.list(**r)["data"])
    assert n["id"] not in ids(reader.list(**r, search="cache")["data"])


def test_write_is_visible_on_the_very_next_list(srv, alice):
    alice.create(title="cache seed")
    hidden = assert_cache_engaged(alice, srv)
    check_writes_visible(alice, alice)
    # after writes the row added behind kiln's back shows too
    assert hidden in ids(alice.list()["data"])


@needs_valkey
def test_write_on_one_instance_is_visible_on_another(kiln):
    skb = ak.secret_key_base()
    a_srv = ak.start_kiln(kiln, SECRET_KEY_BASE=skb, CACHE_TTL_SECONDS=300)
    b_srv = ak.start_kiln(kiln, SECRET_KEY_BASE=skb, CACHE_TTL_SECONDS=300)
    u = User(a_srv)
    u.create(title="cache seed", srv=a_srv)
    # B's cache is filled, and is really used
    hidden = assert_cache_engaged(u, a_srv, srv=b_srv)
    # list on B, write on A, list on B
    before = u.list(srv=b_srv)
    n = u.create(title="written on A", srv=a_srv)
    after = u.list(srv=b_srv)
    assert ids(after["data"])[0] == n["id"], "B served a stale cached list after a write on A"
    assert after["meta"]["total"] == before["meta"]["total"] + 2   # n and the hidden row
    assert hidden in ids(after["data"])
    check_writes_visible(u, u, reader_srv=b_srv, writer_srv=a_srv)
    check_writes_visible(u, u, reader_srv=a_srv, writer_srv=b_srv)


def test_cache_ttl_zero_means_no_cache(kiln):
    srv0 = ak.start_kiln(kiln, CACHE_TTL_SECONDS=0)
    u = User(srv0)
    assert u.list()["meta"]["total"] == 0
    made = [u.create(title=f"ttl0 {i}") for i in range(3)]
    assert ids(u.list()["data"]) == ids(made[::-1])
    uid = db_user_id(srv0, u.email)
    hidden = db_insert_note(srv0, uid, "ttl0 behind kiln's back")
    body = u.list()
    assert body["data"][0]["id"] == hidden and body["meta"]["total"] == 4, \
        "CACHE_TTL_SECONDS=0 still served a cached list"
    check_writes_visible(u, u)
    assert u.list()["meta"]["total"] == 4


# --------------------------------------------------------------------------
# data safety: concurrency, kill -9
# --------------------------------------------------------------------------

def test_concurrent_creates_all_land(srv):
    u = User(srv)
    n = 32
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        try:
            barrier.wait(timeout=10)
            results[i] = u.call("POST", "/notes", {"title": f"concurrent {i}", "content": str(i)},
                                timeout=20)
        except Exception as e:   # noqa: BLE001 (reported below)
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    bad = [(i, r) for i, r in enumerate(results) if not isinstance(r, kilnhttp.Response)
           or r.status != 201]
    assert not bad, f"{len(bad)} of {n} concurrent creates did not answer 201: {bad[:5]}"
    notes = [assert_note_body(r, title=f"concurrent {i}", content=str(i))
             for i, r in enumerate(results)]
    assert len(set(ids(notes))) == n, "duplicate ids"
    for note in notes:
        assert u.show(note["id"]) == note
    listed, total = u.list_all()
    assert total == n and len(listed) == n, f"total {total}, listed {len(listed)}, want {n}"
    assert sorted(ids(listed)) == sorted(ids(notes))
    key = [(x["inserted_at"], x["id"]) for x in listed]
    assert key == sorted(key, reverse=True), "list not ordered newest first (ties by id)"


def test_kill_9_mid_burst_loses_no_acknowledged_note(kiln):
    skb = ak.secret_key_base()
    first = ak.start_kiln(kiln, SECRET_KEY_BASE=skb)
    email = ak.unique_email("durable")
    u = User(first, email=email)
    acked, failures, lock, stop = [], [], threading.Lock(), threading.Event()

    def writer(w):
        i = 0
        while not stop.is_set():
            try:
                r = u.call("POST", "/notes", {"title": f"burst {w}-{i}", "content": "x" * 200},
                           timeout=5)
            except (OSError, AssertionError):
                return   # the server is gone
            with lock:
                (acked if r.status == 201 else failures).append(r)
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.running(), "kiln died during the burst"
    first.proc.kill()   # SIGKILL to the child this test started
    first.proc.wait(10)
    first.expected_exit = -9
    stop.set()
    for t in threads:
        t.join(15)
    assert not failures, f"writes refused during the burst: {failures[:3]}"
    assert len(acked) >= 100, f"only {len(acked)} notes acknowledged before the kill"
    notes = {}
    for r in acked:
        n = assert_note_body(r)
        notes[n["id"]] = n

    env = {"SECRET_KEY_BASE": skb}
    if STORES == "embedded":
        env["DB_PATH"] = first.env["DB_PATH"]
    second = ak.start_kiln(kiln, **env)
    u2 = User(second, email=email)    # same user (dev identity), new session
    listed, total = u2.list_all()
    listed_ids = set(ids(listed))
    lost = [i for i in notes if i not in listed_ids]
    assert not lost, f"{len(lost)} of {len(notes)} acknowledged notes are gone after kill -9"
    assert total == len(listed) >= len(notes)
    for nid in list(notes)[:: max(1, len(notes) // 20)] + list(notes)[-5:]:
        assert u2.show(nid) == notes[nid]
    # and the restarted instance writes as usual
    n = u2.create(title="after restart")
    assert u2.list(limit=1)["data"] == [n]


# --------------------------------------------------------------------------
# PostgreSQL: the list query uses its index
# --------------------------------------------------------------------------

@needs_postgres
def test_list_query_uses_the_index(services):
    uid = str(uuid.uuid4())
    others = [str(uuid.uuid4()) for _ in range(20)]
    begin, end = "----8<----", "---->8----"
    sql = ["BEGIN;",
           f"INSERT INTO users (id, email) VALUES ({_q(uid)}, 'explain@example.com');",
           "INSERT INTO users (id, email) SELECT u::uuid, 'other-' || u || '@example.com' "
           f"FROM unnest(ARRAY[{', '.join(_q(o) for o in others)}]) u;",
           # 4000 notes of one user, written oldest first (one in four
           # archived, so both lists are long), 100 of each other user
           "INSERT INTO notes (id, user_id, title, content, archived, inserted_at, updated_at) "
           f"SELECT gen_random_uuid(), {_q(uid)}, 'note ' || g, 'content ' || g, g % 4 = 0, "
           "now() - (4000 - g) * interval '1 second', now() - (4000 - g) * interval '1 second' "
           "FROM generate_series(1, 4000) g;",
           "INSERT INTO notes (id, user_id, title, content, archived, inserted_at, updated_at) "
           "SELECT gen_random_uuid(), u::uuid, 'other ' || g, '', g % 10 = 0, "
           "now() - g * interval '1 second', now() - g * interval '1 second' "
           f"FROM unnest(ARRAY[{', '.join(_q(o) for o in others)}]) u, generate_series(1, 100) g;",
           "ANALYZE notes;"]
    # Parameters go as kiln sends them: text, typed by the server, in an
    # unnamed statement (DB_PREPARED_STATEMENTS is off by default), so the
    # plan is made for these values. No search: the index must give both
    # the rows and their order.
    plans = ["0", "1"]
    sql.append(f"PREPARE kiln_notes_list AS {LIST_SQL};")
    for archived in plans:
        sql += [f"SELECT '{begin}';",
                f"EXPLAIN EXECUTE kiln_notes_list({_q(uid)}, '{archived}', NULL, '50', '0');",
                f"SELECT '{end}';"]
    sql.append("ROLLBACK;")
    out = services.psql("\n".join(sql))
    parts = [p.split(end)[0] for p in out.split(begin)[1:]]
    assert len(parts) == len(plans), out
    for archived, plan in zip(plans, parts):
        where = f"archived={archived}:\n{plan}"
        # The page (table "notes") comes from the index, in order. The
        # total (the subquery, "notes_1") may be counted either way: here the
        # user owns most of the table, where a sequential count is cheaper.
        page = re.search(r"-> +(\S.*?) on notes +\(", plan)
        assert page and INDEX_NAME in page.group(0) and "Index" in page.group(1), \
            f"the page does not come from {INDEX_NAME}; {where}"
        assert "Sort" not in plan, f"the index does not give the order, a Sort remains; {where}"
