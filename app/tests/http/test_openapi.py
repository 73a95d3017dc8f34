"""GET /api/openapi and /api/docs, and the response check every other test
runs through (openapi_check.py): it must catch a body that breaks the
document, or it proves nothing."""

import json

import pytest
import requests

import openapi_check


@pytest.mark.parametrize("path", ["/api/openapi", "/api/v1/openapi"])
def test_the_document_is_served_as_written(server, path):
    r = requests.get(server.url(path), timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == openapi_check.DOC
    assert r.json()["openapi"] == "3.1.0"


@pytest.mark.parametrize("path", ["/api/docs", "/api/v1/docs"])
def test_the_docs_page_renders_that_document(server, path):
    r = requests.get(server.url(path), timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/api/v1/openapi" in r.text and "<script>" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp


def fake(method, path, status, body):
    r = requests.Response()
    r.status_code = status
    r.headers["content-type"] = "application/json; charset=utf-8"
    r._content = json.dumps(body).encode()
    r.request = requests.Request(method, "http://127.0.0.1:1" + path).prepare()
    r.url = r.request.url
    return r


NOTE = {"id": "0b7e1c2a-9f7e-4c43-9a49-7d5f2f7f1a11", "title": "t", "content": "",
        "archived": False, "inserted_at": "2026-02-13T17:54:34.599935Z",
        "updated_at": "2026-02-13T17:54:34.599935Z"}


def test_the_check_accepts_a_conforming_note_on_both_mounts():
    for prefix in ("/api/v1", "/api"):
        openapi_check.check(fake("GET", prefix + "/notes/" + NOTE["id"], 200, {"data": NOTE}))


@pytest.mark.parametrize("body", [
    {"data": {k: v for k, v in NOTE.items() if k != "archived"}},     # a field missing
    {"data": dict(NOTE, archived="no")},                                # a wrong type
    {"data": dict(NOTE, extra=1)},                                      # an undocumented field
    {"data": dict(NOTE, inserted_at="2026-02-13 17:54:34")},           # not RFC 3339 micro
])
def test_the_check_catches_a_note_that_breaks_the_document(body):
    with pytest.raises(openapi_check.SchemaMismatch):
        openapi_check.check(fake("GET", "/api/v1/notes/" + NOTE["id"], 200, body))


def test_the_check_catches_an_undocumented_status_and_a_bad_error():
    with pytest.raises(openapi_check.SchemaMismatch, match="not documented"):
        openapi_check.check(fake("GET", "/api/v1/notes/" + NOTE["id"], 202, {"data": NOTE}))
    with pytest.raises(openapi_check.SchemaMismatch):
        openapi_check.check(fake("GET", "/nowhere", 404, {"error": "Not found"}))
