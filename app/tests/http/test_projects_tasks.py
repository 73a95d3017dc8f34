"""Profile, dashboard, projects and tasks (API.md, protected routes): shapes,
validation (422 details per field, 400 for bodies that are not JSON
objects), the project_id rules of tasks, due dates that must exist on the
calendar, list filters and order, cascade delete, and ownership: two users
interleaved, each seeing only their own rows and getting 404 (never 403)
for the other's.

Every test logs in users of its own (POST /auth/dev/login), so that tests
sharing an instance, or a PostgreSQL database in the postgres and pgbouncer
store modes, never see each other's rows. Requests carry the session as
Bearer (mobile clients; no CSRF rules), except where a test says otherwise.
"""

import calendar
import json
import time
import uuid

import pytest

import authkit as ak
import kilnhttp

V1 = "/api/v1"
ALIAS = "/api"
MISSING = "00000000-0000-4000-8000-000000000000"

PROJECT_KEYS = {"id", "name", "description", "archived", "inserted_at", "updated_at"}
TASK_KEYS = {"id", "project_id", "title", "details", "status", "due_date", "inserted_at",
             "updated_at"}
NOTE_KEYS = {"id", "title", "content", "archived", "inserted_at", "updated_at"}


@pytest.fixture(scope="module")
def srv(module_kiln):
    return ak.start_kiln(module_kiln)


class User:
    """A signed-in user and the requests it makes."""

    def __init__(self, srv, name="Test User", email=None):
        self.srv = srv
        self.email = email or ak.unique_email("pt")
        self.name = name
        self.token = ak.session_for(srv, email=self.email, name=name)

    def call(self, method, path, body=None, raw=None, prefix=V1, **kw):
        return ak.call(self.srv, method, prefix + path, bearer=self.token, json_body=body,
                       body=raw, headers=[("Content-Type", "application/json")] if raw else (),
                       **kw)

    def ok(self, method, path, body=None, status=200, prefix=V1):
        r = self.call(method, path, body, prefix=prefix)
        assert r.status == status, f"{method} {prefix}{path} {body!r}: {r!r}"
        kilnhttp.assert_json_content_type(r)
        kilnhttp.assert_request_id(r)
        return r.json()["data"]

    def project(self, name="Project", **fields):
        return self.ok("POST", "/projects", dict(fields, name=name), 201)

    def task(self, project_id, title="Task", **fields):
        return self.ok("POST", "/tasks", dict(fields, project_id=project_id, title=title), 201)

    def note(self, title="Note", content="text"):
        return self.ok("POST", "/notes", {"title": title, "content": content}, 201)


@pytest.fixture
def alice(srv):
    return User(srv, "Alice Smith")


@pytest.fixture
def bob(srv):
    return User(srv, "Bob Jones")


def assert_not_found(r, code):
    body = kilnhttp.assert_error(r, 404, code)
    assert "details" not in body, body


def assert_invalid(r, details):
    """422 validation_failed with exactly these details."""
    body = kilnhttp.assert_error(r, 422, "validation_failed")
    assert body.get("details") == details, body


def assert_timestamps(obj):
    for key in ("inserted_at", "updated_at"):
        assert kilnhttp.RFC3339_UTC_RE.match(obj[key]), obj
        assert len(obj[key]) == len("2026-02-13T17:54:34.599935Z"), obj


def assert_project(p, **want):
    assert set(p) == PROJECT_KEYS, p
    assert str(uuid.UUID(p["id"])) == p["id"], p
    assert isinstance(p["archived"], bool), p
    assert_timestamps(p)
    for k, v in want.items():
        assert p[k] == v, (k, p)


def assert_task(t, **want):
    assert set(t) == TASK_KEYS, t
    assert str(uuid.UUID(t["id"])) == t["id"], t
    assert t["status"] in ("todo", "in_progress", "done"), t
    assert_timestamps(t)
    for k, v in want.items():
        assert t[k] == v, (k, t)


def ids(items):
    return [i["id"] for i in items]


# --------------------------------------------------------------------------
# the session is required
# --------------------------------------------------------------------------

ROUTES = [("GET", "/profile"), ("GET", "/dashboard"), ("GET", "/projects"),
          ("POST", "/projects"), ("GET", f"/projects/{MISSING}"),
          ("PUT", f"/projects/{MISSING}"), ("PATCH", f"/projects/{MISSING}"),
          ("DELETE", f"/projects/{MISSING}"), ("GET", "/tasks"), ("POST", "/tasks"),
          ("GET", f"/tasks/{MISSING}"), ("PUT", f"/tasks/{MISSING}"),
          ("PATCH", f"/tasks/{MISSING}"), ("DELETE", f"/tasks/{MISSING}")]


@pytest.mark.parametrize("prefix", [V1, ALIAS])
@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_needs_a_session(srv, prefix, method, path):
    body = {} if method in ("POST", "PUT", "PATCH") else None
    r = ak.call(srv, method, prefix + path, json_body=body)
    ak.assert_unauthenticated(r)


# --------------------------------------------------------------------------
# profile and dashboard
# --------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_profile(srv, prefix):
    u = User(srv, "Ada Lovelace")
    me = ak.assert_me(ak.me(srv, bearer=u.token))
    r = u.call("GET", "/profile", prefix=prefix)
    assert r.status == 200, r
    kilnhttp.assert_json_content_type(r)
    assert r.json() == {"data": {
        "id": me["provider_uid"], "email": u.email, "name": "Ada Lovelace",
        "first_name": "Ada", "last_name": "Lovelace", "avatar_url": me["image"],
        "auth_provider": "dev"}}, r.json()
    assert me["provider"] == "dev" and me["provider_uid"] == u.email, me


def test_profile_of_a_one_word_name(srv):
    u = User(srv, "Plato")
    p = u.ok("GET", "/profile")
    assert (p["name"], p["first_name"], p["last_name"]) == ("Plato", "Plato", None), p


def test_dashboard_of_a_new_user(srv):
    u = User(srv, "New Comer")
    d = u.ok("GET", "/dashboard")
    assert set(d) == {"user", "summary"}, d
    assert set(d["user"]) == {"id", "name", "email"}, d
    assert str(uuid.UUID(d["user"]["id"])) == d["user"]["id"], d
    assert (d["user"]["name"], d["user"]["email"]) == ("New Comer", u.email), d
    assert d["summary"] == {"active_notes": 0, "archived_notes": 0, "recent_notes": []}, d


def test_dashboard_user_id_is_the_users_own(srv):
    """Stable across sessions of one person, different between people."""
    a1 = User(srv)
    a2 = User(srv, email=a1.email)
    b = User(srv)
    ida = a1.ok("GET", "/dashboard")["user"]["id"]
    assert a2.ok("GET", "/dashboard")["user"]["id"] == ida
    assert b.ok("GET", "/dashboard")["user"]["id"] != ida


@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_dashboard_counts_and_recent_notes(srv, prefix):
    u, other = User(srv), User(srv)
    notes = []
    for i in range(4):
        notes.append(u.note(f"note {i}"))
        other.note(f"other {i}")  # interleaved: never counted for u
    u.ok("POST", f"/notes/{notes[1]['id']}/archive")
    d = u.ok("GET", "/dashboard", prefix=prefix)
    s = d["summary"]
    assert (s["active_notes"], s["archived_notes"]) == (3, 1), s
    # Active notes only, newest first, exactly as GET /notes/:id shows them.
    assert ids(s["recent_notes"]) == [notes[3]["id"], notes[2]["id"], notes[0]["id"]], s
    for n in s["recent_notes"]:
        assert set(n) == NOTE_KEYS, n
        assert n == u.ok("GET", f"/notes/{n['id']}"), n
    u.ok("POST", f"/notes/{notes[1]['id']}/unarchive")
    s = u.ok("GET", "/dashboard")["summary"]
    assert (s["active_notes"], s["archived_notes"]) == (4, 0), s
    assert u.call("DELETE", f"/notes/{notes[0]['id']}").status == 204
    s = u.ok("GET", "/dashboard")["summary"]
    assert (s["active_notes"], s["archived_notes"]) == (3, 0), s


def test_dashboard_recent_limit(srv):
    u = User(srv)
    made = [u.note(f"n{i}") for i in range(22)]
    newest = list(reversed(ids(made)))

    def recent(query):
        return ids(u.ok("GET", "/dashboard" + query)["summary"]["recent_notes"])

    assert recent("") == newest[:5]
    assert recent("?recent_limit=") == newest[:5]
    assert recent("?recent_limit=1") == newest[:1]
    assert recent("?recent_limit=20") == newest[:20]
    assert recent("?recent_limit=21") == newest[:20]
    assert recent("?recent_limit=1000000000000") == newest[:20]
    s = u.ok("GET", "/dashboard?recent_limit=3")["summary"]
    assert s["active_notes"] == 22, s


@pytest.mark.parametrize("value", ["0", "abc", "-1", "1.5", "5x", "%20"])
def test_dashboard_bad_recent_limit(srv, value):
    u = User(srv)
    kilnhttp.assert_error(u.call("GET", f"/dashboard?recent_limit={value}"), 400,
                          "invalid_request")


# --------------------------------------------------------------------------
# projects
# --------------------------------------------------------------------------

def test_project_create_and_show(alice):
    p = alice.project("Roadmap", description="What comes next")
    assert_project(p, name="Roadmap", description="What comes next", archived=False)
    assert p["inserted_at"] == p["updated_at"], p
    stamp = calendar.timegm(time.strptime(p["inserted_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(stamp - time.time()) < 60, p
    shown = alice.ok("GET", f"/projects/{p['id']}")
    assert shown == dict(p, tasks=[]), shown


def test_project_description_is_optional(alice):
    assert alice.project("No description")["description"] is None
    assert alice.project("Null description", description=None)["description"] is None
    assert alice.project("Empty description", description="")["description"] == ""


def test_project_create_ignores_unknown_fields_and_keeps_archived(alice):
    # archived is checked as on update (test_hardening.py) and kept.
    p = alice.ok("POST", "/projects", {"name": "P", "color": "red", "id": MISSING,
                                       "user_id": MISSING, "archived": True}, 201)
    assert_project(p, name="P", archived=True)
    assert p["id"] != MISSING


@pytest.mark.parametrize("body,details", [
    ({}, {"name": ["can't be blank"]}),
    ({"description": "d"}, {"name": ["can't be blank"]}),
    ({"name": None}, {"name": ["can't be blank"]}),
    ({"name": ""}, {"name": ["can't be blank"]}),
    ({"name": "   "}, {"name": ["can't be blank"]}),
    ({"name": "x" * 121}, {"name": ["should be at most 120 character(s)"]}),
    ({"name": 42}, {"name": ["is invalid"]}),
    ({"name": ["a"]}, {"name": ["is invalid"]}),
    ({"name": True}, {"name": ["is invalid"]}),
    ({"name": "ok", "description": "d" * 10001},
     {"description": ["should be at most 10000 character(s)"]}),
    ({"name": "ok", "description": 5}, {"description": ["is invalid"]}),
    ({"name": 1, "description": {}}, {"name": ["is invalid"], "description": ["is invalid"]}),
], ids=["empty", "missing-name", "null", "blank", "spaces", "too-long", "number", "array",
        "bool", "long-description", "description-number", "both"])
def test_project_validation(alice, body, details):
    assert_invalid(alice.call("POST", "/projects", body), details)
    assert alice.ok("GET", "/projects") == []


def test_nul_in_a_string_is_refused_per_field(alice):
    """\\u0000 is valid JSON, but text columns cannot hold it: 422 on the
    field, nothing stored."""
    assert_invalid(alice.call("POST", "/projects", {"name": "a\u0000b"}),
                   {"name": ["is invalid"]})
    p = alice.project()
    assert_invalid(alice.call("POST", "/tasks", {"project_id": p["id"], "title": "\u0000"}),
                   {"title": ["is invalid"]})


def test_project_name_length_counts_characters(alice):
    name = "é" * 120  # 240 bytes, 120 characters
    assert alice.project(name)["name"] == name
    assert alice.project("🦊" * 120)["name"] == "🦊" * 120
    assert_invalid(alice.call("POST", "/projects", {"name": "é" * 121}),
                   {"name": ["should be at most 120 character(s)"]})
    assert alice.project("x", description="é" * 10000)["description"] == "é" * 10000


# A top-level scalar is not a JSON text jansson decodes by default (400
# invalid_json); either 400 code tells the client its body is no object.
SCALAR = ("invalid_json", "invalid_request")


@pytest.mark.parametrize("raw,code", [
    ("{not json", "invalid_json"), ("", "invalid_json"), ('{"name": "a"', "invalid_json"),
    ("[]", "invalid_request"), ('"name"', SCALAR), ("null", SCALAR), ("42", SCALAR),
])
@pytest.mark.parametrize("method,path", [("POST", "/projects"), ("PUT", "/projects/{id}"),
                                         ("PATCH", "/projects/{id}"), ("POST", "/tasks"),
                                         ("PUT", "/tasks/{tid}"), ("PATCH", "/tasks/{tid}")])
def test_bodies_that_are_not_json_objects(alice, raw, code, method, path):
    p = alice.project("Keep")
    t = alice.task(p["id"], "Keep")
    r = alice.call(method, path.format(id=p["id"], tid=t["id"]), raw=raw or " ")
    body = kilnhttp.assert_error(r, 400, None)
    assert body["code"] in (code if code is SCALAR else (code,)), body
    assert alice.ok("GET", f"/projects/{p['id']}") == dict(p, tasks=[t])


def test_projects_list_newest_first(alice):
    made = [alice.project(f"p{i}") for i in range(5)]
    listed = alice.ok("GET", "/projects")
    assert ids(listed) == list(reversed(ids(made))), listed
    for p in listed:
        assert_project(p)
        assert "tasks" not in p


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_project_partial_update(alice, method):
    p = alice.project("Before", description="Keep me")
    time.sleep(0.002)
    u = alice.ok(method, f"/projects/{p['id']}", {"name": "After"})
    assert_project(u, id=p["id"], name="After", description="Keep me", archived=False,
                   inserted_at=p["inserted_at"])
    assert u["updated_at"] > p["updated_at"], (p, u)
    u = alice.ok(method, f"/projects/{p['id']}", {"archived": True})
    assert (u["name"], u["description"], u["archived"]) == ("After", "Keep me", True), u
    u = alice.ok(method, f"/projects/{p['id']}", {"description": None})
    assert (u["name"], u["description"], u["archived"]) == ("After", None, True), u
    u = alice.ok(method, f"/projects/{p['id']}", {"description": "New", "archived": False,
                                                   "unknown": 1})
    assert (u["name"], u["description"], u["archived"]) == ("After", "New", False), u
    u2 = alice.ok(method, f"/projects/{p['id']}", {})
    assert (u2["name"], u2["description"], u2["archived"]) == ("After", "New", False), u2
    assert alice.ok("GET", f"/projects/{p['id']}") == dict(u2, tasks=[])


@pytest.mark.parametrize("body,details", [
    ({"name": None}, {"name": ["can't be blank"]}),
    ({"name": ""}, {"name": ["can't be blank"]}),
    ({"name": "y" * 121}, {"name": ["should be at most 120 character(s)"]}),
    ({"name": 1}, {"name": ["is invalid"]}),
    ({"description": "d" * 10001}, {"description": ["should be at most 10000 character(s)"]}),
    ({"description": []}, {"description": ["is invalid"]}),
    ({"archived": "true"}, {"archived": ["is invalid"]}),
    ({"archived": None}, {"archived": ["is invalid"]}),
    ({"archived": 1}, {"archived": ["is invalid"]}),
    ({"name": "", "archived": 0}, {"name": ["can't be blank"], "archived": ["is invalid"]}),
])
def test_project_update_validation(alice, body, details):
    p = alice.project("Stays", description="Same")
    assert_invalid(alice.call("PATCH", f"/projects/{p['id']}", body), details)
    assert alice.ok("GET", f"/projects/{p['id']}") == dict(p, tasks=[])


@pytest.mark.parametrize("pid", [MISSING, "nope", "123", MISSING[:-1], MISSING + "0",
                                 "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
def test_project_not_found(alice, pid):
    for method, body in (("GET", None), ("PUT", {"name": "x"}), ("PATCH", {"name": "x"}),
                         ("DELETE", None)):
        assert_not_found(alice.call(method, f"/projects/{pid}", body), "project_not_found")


def test_project_not_found_before_body_checks_on_update(alice):
    """A missing project answers 404 even to a body that would not pass."""
    assert_not_found(alice.call("PATCH", f"/projects/{MISSING}", {"name": "ok"}),
                     "project_not_found")
    assert_not_found(alice.call("PATCH", "/projects/nope", raw="{bad"), "project_not_found")


def test_project_id_in_any_case(alice):
    p = alice.project("Case")
    assert alice.ok("GET", f"/projects/{p['id'].upper()}")["id"] == p["id"]


def test_project_delete_cascades_to_its_tasks(alice):
    keep = alice.project("Keep")
    gone = alice.project("Gone")
    kept = alice.task(keep["id"], "stays")
    doomed = [alice.task(gone["id"], f"t{i}") for i in range(3)]
    r = alice.call("DELETE", f"/projects/{gone['id']}")
    assert r.status == 204 and r.body == b"", r
    assert "content-type" not in r.headers or r.body == b"", r
    assert_not_found(alice.call("GET", f"/projects/{gone['id']}"), "project_not_found")
    assert_not_found(alice.call("DELETE", f"/projects/{gone['id']}"), "project_not_found")
    for t in doomed:
        assert_not_found(alice.call("GET", f"/tasks/{t['id']}"), "task_not_found")
    assert alice.ok("GET", f"/tasks?project_id={gone['id']}") == []
    assert alice.ok("GET", "/tasks") == [kept]
    assert ids(alice.ok("GET", "/projects")) == [keep["id"]]
    # Its tasks can no longer be moved into it, nor new ones made there.
    assert_not_found(alice.call("POST", "/tasks", {"project_id": gone["id"], "title": "x"}),
                     "project_not_found")
    assert_not_found(alice.call("PATCH", f"/tasks/{kept['id']}", {"project_id": gone["id"]}),
                     "project_not_found")


# --------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------

def test_task_create_defaults(alice):
    p = alice.project()
    t = alice.task(p["id"], "Write tests")
    assert_task(t, project_id=p["id"], title="Write tests", details=None, status="todo",
                due_date=None)
    assert t["inserted_at"] == t["updated_at"], t
    assert alice.ok("GET", f"/tasks/{t['id']}") == t
    assert alice.ok("GET", f"/projects/{p['id']}")["tasks"] == [t]


def test_task_create_with_every_field(alice):
    p = alice.project()
    t = alice.task(p["id"], "Ship", details="All of it", status="in_progress",
                   due_date="2028-02-29", color="blue")
    assert_task(t, project_id=p["id"], title="Ship", details="All of it",
                status="in_progress", due_date="2028-02-29")
    assert alice.ok("GET", f"/tasks/{t['id']}") == t


@pytest.mark.parametrize("status", ["todo", "in_progress", "done"])
def test_task_statuses(alice, status):
    p = alice.project()
    assert alice.task(p["id"], status=status)["status"] == status


@pytest.mark.parametrize("body", [{"title": "t"}, {"title": "t", "project_id": None}, {}])
def test_task_without_project_is_a_bad_request(alice, body):
    kilnhttp.assert_error(alice.call("POST", "/tasks", body), 400, "invalid_request")
    assert alice.ok("GET", "/tasks") == []


@pytest.mark.parametrize("pid", [MISSING, "nope", "", "123", MISSING + "0"])
def test_task_in_a_project_that_does_not_exist(alice, pid):
    assert_not_found(alice.call("POST", "/tasks", {"project_id": pid, "title": "t"}),
                     "project_not_found")
    assert alice.ok("GET", "/tasks") == []


def test_task_project_id_in_any_case(alice):
    p = alice.project()
    t = alice.task(p["id"].upper())
    assert t["project_id"] == p["id"], t


@pytest.mark.parametrize("body,details", [
    ({}, {"title": ["can't be blank"]}),
    ({"title": None}, {"title": ["can't be blank"]}),
    ({"title": " \t"}, {"title": ["can't be blank"]}),
    ({"title": "t" * 161}, {"title": ["should be at most 160 character(s)"]}),
    ({"title": 7}, {"title": ["is invalid"]}),
    ({"title": "t", "details": "d" * 10001},
     {"details": ["should be at most 10000 character(s)"]}),
    ({"title": "t", "details": 1}, {"details": ["is invalid"]}),
    ({"title": "t", "status": "blocked"}, {"status": ["is invalid"]}),
    ({"title": "t", "status": "TODO"}, {"status": ["is invalid"]}),
    ({"title": "t", "status": "todo "}, {"status": ["is invalid"]}),
    ({"title": "t", "status": ""}, {"status": ["can't be blank"]}),
    ({"title": "t", "status": None}, {"status": ["can't be blank"]}),
    ({"title": "t", "status": 1}, {"status": ["is invalid"]}),
    ({"title": "t", "project_id": 123}, {"project_id": ["is invalid"]}),
    ({"title": "t", "project_id": ["x"]}, {"project_id": ["is invalid"]}),
    ({"title": "", "status": "x", "due_date": 1, "details": False},
     {"title": ["can't be blank"], "status": ["is invalid"], "due_date": ["is invalid"],
      "details": ["is invalid"]}),
], ids=["no-title", "null-title", "blank-title", "long-title", "number-title",
        "long-details", "number-details", "unknown-status", "upper-status", "spaced-status",
        "empty-status", "null-status", "number-status", "number-project", "array-project",
        "all"])
def test_task_validation(alice, body, details):
    p = alice.project()
    body = dict(body)
    body.setdefault("project_id", p["id"])
    assert_invalid(alice.call("POST", "/tasks", body), details)
    assert alice.ok("GET", "/tasks") == []


def test_task_title_length_counts_characters(alice):
    p = alice.project()
    assert alice.task(p["id"], "ü" * 160)["title"] == "ü" * 160
    assert_invalid(alice.call("POST", "/tasks", {"project_id": p["id"], "title": "ü" * 161}),
                   {"title": ["should be at most 160 character(s)"]})
    assert alice.task(p["id"], details="ü" * 10000)["details"] == "ü" * 10000


VALID_DATES = ["2028-02-29", "2000-02-29", "2026-01-31", "2026-12-31", "2026-04-30",
               "0001-01-01", "9999-12-31", "2024-02-29"]
INVALID_DATES = ["2026-02-29", "2026-02-30", "1900-02-29", "2100-02-29", "2026-04-31",
                 "2026-13-01", "2026-00-10", "2026-01-00", "2026-01-32", "0000-01-01",
                 "2026-1-5", "2026-01-5", "26-01-05", "2026/01/05", "2026-01-05T00:00:00Z",
                 "2026-01-05 ", " 2026-01-05", "20260105", "", "today", "２０２６-01-05",
                 "+2026-01-05", "2026-0a-05", "10000-01-01"]


@pytest.mark.parametrize("date", VALID_DATES)
def test_due_date_valid(alice, date):
    p = alice.project()
    t = alice.task(p["id"], due_date=date)
    assert t["due_date"] == date, t
    assert alice.ok("GET", f"/tasks/{t['id']}")["due_date"] == date


@pytest.mark.parametrize("date", INVALID_DATES + [123, 20260105, True, [], {}, 2026.5])
def test_due_date_invalid(alice, date):
    p = alice.project()
    assert_invalid(alice.call("POST", "/tasks", {"project_id": p["id"], "title": "t",
                                                 "due_date": date}),
                   {"due_date": ["is invalid"]})
    t = alice.task(p["id"], due_date="2027-06-15")
    assert_invalid(alice.call("PATCH", f"/tasks/{t['id']}", {"due_date": date}),
                   {"due_date": ["is invalid"]})
    assert alice.ok("GET", f"/tasks/{t['id']}") == t


def test_due_date_null(alice):
    p = alice.project()
    assert alice.task(p["id"], due_date=None)["due_date"] is None


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_task_partial_update(alice, method):
    p = alice.project()
    t = alice.task(p["id"], "Draft", details="Notes", due_date="2027-01-02")
    time.sleep(0.002)
    u = alice.ok(method, f"/tasks/{t['id']}", {"status": "in_progress"})
    assert_task(u, id=t["id"], project_id=p["id"], title="Draft", details="Notes",
                status="in_progress", due_date="2027-01-02", inserted_at=t["inserted_at"])
    assert u["updated_at"] > t["updated_at"], (t, u)
    u = alice.ok(method, f"/tasks/{t['id']}", {"title": "Final", "due_date": "2027-03-04"})
    assert (u["title"], u["details"], u["status"], u["due_date"]) == \
        ("Final", "Notes", "in_progress", "2027-03-04"), u
    u = alice.ok(method, f"/tasks/{t['id']}", {"due_date": None, "details": None})
    assert (u["title"], u["details"], u["status"], u["due_date"]) == \
        ("Final", None, "in_progress", None), u
    u = alice.ok(method, f"/tasks/{t['id']}", {"details": "Back", "status": "done",
                                                "extra": [1]})
    assert (u["details"], u["status"], u["due_date"]) == ("Back", "done", None), u
    same = alice.ok(method, f"/tasks/{t['id']}", {})
    assert dict(same, updated_at=None) == dict(u, updated_at=None)
    assert alice.ok("GET", f"/tasks/{t['id']}") == same


@pytest.mark.parametrize("body,details", [
    ({"title": None}, {"title": ["can't be blank"]}),
    ({"title": ""}, {"title": ["can't be blank"]}),
    ({"title": "t" * 161}, {"title": ["should be at most 160 character(s)"]}),
    ({"status": "blocked"}, {"status": ["is invalid"]}),
    ({"status": None}, {"status": ["can't be blank"]}),
    ({"details": 3}, {"details": ["is invalid"]}),
    ({"project_id": None}, {"project_id": ["is invalid"]}),
    ({"project_id": 5}, {"project_id": ["is invalid"]}),
])
def test_task_update_validation(alice, body, details):
    p = alice.project()
    t = alice.task(p["id"], details="d", due_date="2027-01-01")
    assert_invalid(alice.call("PATCH", f"/tasks/{t['id']}", body), details)
    assert alice.ok("GET", f"/tasks/{t['id']}") == t


def test_task_moves_between_own_projects(alice):
    p1, p2 = alice.project("one"), alice.project("two")
    t = alice.task(p1["id"], "mover")
    u = alice.ok("PATCH", f"/tasks/{t['id']}", {"project_id": p2["id"].upper(),
                                                 "status": "done"})
    assert (u["project_id"], u["status"]) == (p2["id"], "done"), u
    assert alice.ok("GET", f"/projects/{p1['id']}")["tasks"] == []
    assert alice.ok("GET", f"/projects/{p2['id']}")["tasks"] == [u]
    # Naming the project it is already in is fine too.
    assert alice.ok("PUT", f"/tasks/{t['id']}", {"project_id": p2["id"]})["project_id"] == \
        p2["id"]


@pytest.mark.parametrize("pid", [MISSING, "nope", "", MISSING.upper() + "1"])
def test_task_cannot_move_to_a_missing_project(alice, pid):
    p = alice.project()
    t = alice.task(p["id"])
    assert_not_found(alice.call("PATCH", f"/tasks/{t['id']}", {"project_id": pid,
                                                               "title": "changed"}),
                     "project_not_found")
    assert alice.ok("GET", f"/tasks/{t['id']}") == t


def test_task_update_of_a_missing_task(alice):
    """The task in the path is named first, whatever the body says."""
    p = alice.project()
    for pid in (p["id"], MISSING, "nope"):
        assert_not_found(alice.call("PATCH", f"/tasks/{MISSING}", {"project_id": pid}),
                         "task_not_found")
    assert_not_found(alice.call("PUT", f"/tasks/{MISSING}", {"title": "x"}), "task_not_found")


@pytest.mark.parametrize("tid", [MISSING, "nope", "1", MISSING[:-1]])
def test_task_not_found(alice, tid):
    for method, body in (("GET", None), ("PUT", {"title": "x"}), ("PATCH", {"title": "x"}),
                         ("DELETE", None)):
        assert_not_found(alice.call(method, f"/tasks/{tid}", body), "task_not_found")


def test_task_delete(alice):
    p = alice.project()
    t1, t2 = alice.task(p["id"], "one"), alice.task(p["id"], "two")
    r = alice.call("DELETE", f"/tasks/{t1['id']}")
    assert r.status == 204 and r.body == b"", r
    assert_not_found(alice.call("GET", f"/tasks/{t1['id']}"), "task_not_found")
    assert_not_found(alice.call("DELETE", f"/tasks/{t1['id']}"), "task_not_found")
    assert alice.ok("GET", f"/projects/{p['id']}")["tasks"] == [t2]


def test_task_lists_and_filters(alice):
    p1, p2 = alice.project("one"), alice.project("two")
    a = alice.task(p1["id"], "a", status="todo")
    b = alice.task(p2["id"], "b", status="done")
    c = alice.task(p1["id"], "c", status="done")
    d = alice.task(p1["id"], "d", status="in_progress")
    e = alice.task(p2["id"], "e")

    def listed(query=""):
        return ids(alice.ok("GET", "/tasks" + query))

    # Newest first.
    assert listed() == ids([e, d, c, b, a])
    assert listed(f"?project_id={p1['id']}") == ids([d, c, a])
    assert listed(f"?project_id={p2['id'].upper()}") == ids([e, b])
    assert listed("?status=done") == ids([c, b])
    assert listed("?status=todo") == ids([e, a])
    assert listed("?status=in_progress") == ids([d])
    assert listed(f"?project_id={p1['id']}&status=done") == ids([c])
    assert listed(f"?status=todo&project_id={p2['id']}") == ids([e])
    assert listed(f"?project_id={p2['id']}&status=in_progress") == []
    assert listed("?project_id=&status=") == ids([e, d, c, b, a])
    assert listed(f"?project_id={MISSING}") == []
    assert listed("?unknown=1") == ids([e, d, c, b, a])
    for t in alice.ok("GET", "/tasks"):
        assert_task(t)
    # A project's page lists its tasks in the order they were made.
    assert ids(alice.ok("GET", f"/projects/{p1['id']}")["tasks"]) == ids([a, c, d])


@pytest.mark.parametrize("query", ["status=blocked", "status=TODO", "status=done%20",
                                   "project_id=nope", "project_id=123",
                                   f"project_id={MISSING}0", "status=todo&project_id=x"])
def test_task_list_bad_filters(alice, query):
    kilnhttp.assert_error(alice.call("GET", f"/tasks?{query}"), 400, "invalid_request")


# --------------------------------------------------------------------------
# ownership: two users interleaved
# --------------------------------------------------------------------------

def test_two_users_interleaved(srv):
    a, b = User(srv, "Alice A"), User(srv, "Bob B")
    pa1 = a.project("a1")
    pb1 = b.project("b1")
    pa2 = a.project("a2")
    ta1 = a.task(pa1["id"], "ta1")
    tb1 = b.task(pb1["id"], "tb1")
    ta2 = a.task(pa2["id"], "ta2", status="done")
    tb2 = b.task(pb1["id"], "tb2", status="done")

    assert ids(a.ok("GET", "/projects")) == [pa2["id"], pa1["id"]]
    assert ids(b.ok("GET", "/projects")) == [pb1["id"]]
    assert ids(a.ok("GET", "/tasks")) == [ta2["id"], ta1["id"]]
    assert ids(b.ok("GET", "/tasks")) == [tb2["id"], tb1["id"]]
    assert ids(a.ok("GET", "/tasks?status=done")) == [ta2["id"]]
    # Filtering by the other user's project shows nothing of theirs.
    assert a.ok("GET", f"/tasks?project_id={pb1['id']}") == []
    assert b.ok("GET", f"/tasks?project_id={pa1['id']}") == []

    # B sees A's project and task exactly as missing ones.
    for method, body in (("GET", None), ("PUT", {"name": "stolen"}),
                         ("PATCH", {"archived": True}), ("DELETE", None)):
        r = b.call(method, f"/projects/{pa1['id']}", body)
        assert_not_found(r, "project_not_found")
        missing = b.call(method, f"/projects/{MISSING}", body)
        assert (r.status, r.json()["code"], r.json()["message"]) == \
            (missing.status, missing.json()["code"], missing.json()["message"])
    for method, body in (("GET", None), ("PUT", {"title": "stolen"}),
                         ("PATCH", {"status": "done"}), ("DELETE", None)):
        assert_not_found(b.call(method, f"/tasks/{ta1['id']}", body), "task_not_found")
    # B can neither put a task in A's project nor move one there.
    assert_not_found(b.call("POST", "/tasks", {"project_id": pa1["id"], "title": "x"}),
                     "project_not_found")
    assert_not_found(b.call("PATCH", f"/tasks/{tb1['id']}", {"project_id": pa1["id"]}),
                     "project_not_found")

    # Nothing of A's changed, nothing of B's went to A.
    assert a.ok("GET", f"/projects/{pa1['id']}") == dict(pa1, tasks=[ta1])
    assert a.ok("GET", f"/projects/{pa2['id']}") == dict(pa2, tasks=[ta2])
    assert b.ok("GET", f"/projects/{pb1['id']}") == dict(pb1, tasks=[tb1, tb2])
    assert ids(a.ok("GET", "/tasks")) == [ta2["id"], ta1["id"]]

    # A deleting a project touches none of B's tasks.
    assert a.call("DELETE", f"/projects/{pa1['id']}").status == 204
    assert ids(b.ok("GET", "/tasks")) == [tb2["id"], tb1["id"]]
    assert ids(a.ok("GET", "/tasks")) == [ta2["id"]]


def test_dashboards_are_per_user(srv):
    a, b = User(srv), User(srv)
    a.note("a")
    nb = b.note("b")
    b.ok("POST", f"/notes/{nb['id']}/archive")
    sa = a.ok("GET", "/dashboard")["summary"]
    sb = b.ok("GET", "/dashboard")["summary"]
    assert (sa["active_notes"], sa["archived_notes"], len(sa["recent_notes"])) == (1, 0, 1)
    assert (sb["active_notes"], sb["archived_notes"], sb["recent_notes"]) == (0, 1, [])


# --------------------------------------------------------------------------
# the /api alias and cookie sessions
# --------------------------------------------------------------------------

def test_alias_behaves_the_same(alice):
    p = alice.ok("POST", "/projects", {"name": "via alias"}, 201, prefix=ALIAS)
    t = alice.ok("POST", "/tasks", {"project_id": p["id"], "title": "t",
                                    "due_date": "2028-02-29"}, 201, prefix=ALIAS)
    assert alice.ok("GET", f"/projects/{p['id']}", prefix=ALIAS) == \
        alice.ok("GET", f"/projects/{p['id']}") == dict(p, tasks=[t])
    assert alice.ok("GET", "/tasks", prefix=ALIAS) == alice.ok("GET", "/tasks") == [t]
    assert alice.ok("GET", "/projects", prefix=ALIAS) == alice.ok("GET", "/projects") == [p]
    u = alice.ok("PATCH", f"/tasks/{t['id']}", {"status": "done"}, prefix=ALIAS)
    assert alice.ok("GET", f"/tasks/{t['id']}") == u
    assert_invalid(alice.call("POST", "/tasks", {"project_id": p["id"], "title": "t",
                                                 "due_date": "2026-02-30"}, prefix=ALIAS),
                   {"due_date": ["is invalid"]})
    assert_not_found(alice.call("GET", f"/tasks/{MISSING}", prefix=ALIAS), "task_not_found")
    kilnhttp.assert_error(alice.call("POST", "/tasks", {"title": "t"}, prefix=ALIAS), 400,
                          "invalid_request")
    assert alice.call("DELETE", f"/tasks/{t['id']}", prefix=ALIAS).status == 204
    assert alice.call("DELETE", f"/projects/{p['id']}", prefix=ALIAS).status == 204
    assert alice.ok("GET", "/projects") == []


def test_cookie_session_writes(srv):
    """A browser's cookie session works too, JSON bodies only (CSRF)."""
    u = User(srv)
    cookies = {ak.SESSION_COOKIE: u.token}
    r = ak.call(srv, "POST", V1 + "/projects", json_body={"name": "by cookie"},
                cookies=cookies)
    assert r.status == 201, r
    pid = r.json()["data"]["id"]
    r = ak.call(srv, "POST", V1 + "/tasks", body=json.dumps({"project_id": pid, "title": "x"}),
                headers=[("Content-Type", "text/plain")], cookies=cookies)
    assert r.status == 415, r
    r = ak.call(srv, "GET", V1 + f"/projects/{pid}", cookies=cookies)
    assert r.status == 200 and r.json()["data"]["tasks"] == [], r


def test_a_task_racing_its_projects_delete_is_404_never_500(srv):
    """Tasks created in, or moved into, a project that another request is
    deleting at that moment: each answer is 201/200 (it won) or 404
    project_not_found (the delete won), never a foreign-key 500."""
    import threading
    user = User(srv)
    home = user.project("home")
    parked = user.task(home["id"], "parked")
    statuses = []
    lock = threading.Lock()

    def record(r):
        with lock:
            statuses.append((r.status, r.json().get("code") if r.status >= 400 else None))

    for _ in range(24):
        target = user.project("doomed")
        go = threading.Barrier(9)

        def create():
            go.wait()
            for _ in range(4):
                record(user.call("POST", "/tasks", {"project_id": target["id"], "title": "t"}))

        def move():
            go.wait()
            for _ in range(4):
                record(user.call("PATCH", f"/tasks/{parked['id']}", {"project_id": target["id"]}))
                user.call("PATCH", f"/tasks/{parked['id']}", {"project_id": home["id"]})

        def delete():
            go.wait()
            r = user.call("DELETE", f"/projects/{target['id']}")
            assert r.status == 204, r

        threads = [threading.Thread(target=create) for _ in range(5)] + \
            [threading.Thread(target=move) for _ in range(3)] + [threading.Thread(target=delete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    bad = [s for s in statuses if s not in ((201, None), (200, None), (404, "project_not_found"),
                                            (404, "task_not_found"))]
    assert not bad, f"{len(bad)} of {len(statuses)}: {sorted(set(bad))}"
    assert any(s == (404, "project_not_found") for s in statuses), "the race never happened"
