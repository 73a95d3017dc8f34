"""The write hooks of a generated resource, in a real build: run by
scripts/gen-check.sh, which generates `clips`, splices
app/tests/gen/clips_hooks.c into its declaration and copies this file into
the scratch tree's app/tests/http/ (it is not part of the main suite).

The refused delete is sent with http.client: its 403 is the hook's own
answer, which the generated OpenAPI document cannot know about, so the
suite's response check (which holds requests' answers to the document)
must not see it.
"""

import http.client
import json
import os
import time
import uuid

import pytest

import authkit as ak
from resourcekit import User, assert_invalid


@pytest.fixture(scope="module")
def jobs_log(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jobs") / "jobs.log")


@pytest.fixture(scope="module")
def server(module_kiln, jobs_log):
    """A kiln of its own, as the generated tests start theirs: with limits
    no test reaches, since on Valkey the counters are shared by the run.
    The hooks enqueue a test.record job with each write (one line per run
    in KILN_TEST_JOBS_LOG)."""
    return ak.start_kiln(module_kiln, KILN_TEST_JOBS_LOG=jobs_log, JOB_POLL_MS=100)


def runs(jobs_log):
    if not os.path.exists(jobs_log):
        return []
    with open(jobs_log) as f:
        return [json.loads(line)["args"] for line in f if line.strip()]


def test_hooks_enqueue_jobs_with_the_write_and_only_when_it_happened(server, jobs_log):
    """kiln_write_enqueue from a before hook: the job is written by the
    change's own statement (transaction), so it runs exactly when the write
    happened: not for a write the hook refused, an update or delete that
    found no row, or a delete another hook refused."""
    u = User(server)
    made = u.ok("POST", "/clips", {"url": "https://example.com/j"}, status=201)
    assert u.call("POST", "/clips", {"url": "ftp://example.com/j"}).status_code == 422
    ghost = str(uuid.uuid4())
    assert u.call("PATCH", f"/clips/{ghost}", {"url": "https://example.com/g"}).status_code == 404
    assert u.call("DELETE", f"/clips/{ghost}").status_code == 404
    u.ok("PATCH", f"/clips/{made['id']}", {"url": "https://example.com/j2"})
    kept = u.ok("POST", "/clips", {"url": "https://example.com/keep-j"}, status=201)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("DELETE", f"/api/v1/clips/{kept['id']}",
                 headers={"Authorization": f"Bearer {u.token}"})
    assert conn.getresponse().status == 403
    conn.close()
    assert u.call("DELETE", f"/clips/{made['id']}").status_code == 204
    want = [{"clip": made["id"], "op": "create"}, {"clip": made["id"], "op": "update"},
            {"clip": kept["id"], "op": "create"}, {"clip": made["id"], "op": "delete"}]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = [r for r in runs(jobs_log) if r.get("clip") in (made["id"], kept["id"], ghost)]
        if len(got) >= len(want):
            break
        time.sleep(0.1)
    time.sleep(0.5)  # a job that should not exist would have run by now too
    got = [r for r in runs(jobs_log) if r.get("clip") in (made["id"], kept["id"], ghost)]
    assert sorted(got, key=json.dumps) == sorted(want, key=json.dumps), got


def test_before_create_refuses_with_its_own_details(server):
    u = User(server)
    r = u.call("POST", "/clips", {"url": "ftp://example.com/x"})
    assert_invalid(r, {"url": ["must start with http:// or https://"]})
    assert u.list("/clips")["data"] == []


def test_before_create_changes_what_is_written_and_after_create_sees_the_row(server):
    u = User(server)
    r = u.call("POST", "/clips", {"url": "https://example.com/a"})
    assert r.status_code == 201, r.text
    row = r.json()["data"]
    assert row["note"] == "noted by a hook"
    assert r.headers["x-clip-created"] == row["id"]
    given = u.ok("POST", "/clips", {"url": "https://example.com/b", "note": "mine"}, status=201)
    assert given["note"] == "mine"


def test_before_update_refuses_and_leaves_the_row(server):
    u = User(server)
    row = u.ok("POST", "/clips", {"url": "https://example.com/c"}, status=201)
    r = u.call("PATCH", f"/clips/{row['id']}", {"url": "mailto:x@example.com"})
    assert_invalid(r, {"url": ["must start with http:// or https://"]})
    assert u.ok("GET", f"/clips/{row['id']}")["url"] == "https://example.com/c"
    # an update does not get the create's default note
    assert u.ok("PATCH", f"/clips/{row['id']}", {"note": None})["note"] is None


def test_before_delete_refuses_and_after_delete_runs(server):
    u = User(server)
    kept = u.ok("POST", "/clips", {"url": "https://example.com/keep"}, status=201)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("DELETE", f"/api/v1/clips/{kept['id']}",
                 headers={"Authorization": f"Bearer {u.token}"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 403 and body["code"] == "forbidden", body
    assert u.ok("GET", f"/clips/{kept['id']}")["id"] == kept["id"]
    gone = u.ok("POST", "/clips", {"url": "https://example.com/go"}, status=201)
    r = u.call("DELETE", f"/clips/{gone['id']}")
    assert r.status_code == 204 and r.headers["x-clip-deleted"] == gone["id"]
    assert u.call("GET", f"/clips/{gone['id']}").status_code == 404
