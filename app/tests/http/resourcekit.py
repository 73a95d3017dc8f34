"""Helpers for the tests of declared resources (app/src/api/resources/*.c):
the files `kiln gen resource` writes (app/tests/http/test_<name>.py) import
them. A signed-in user and its requests, the checks of a row's shape and of
error answers, and the orders the engine lists rows in.

Requests go through ``requests`` with the session as Bearer (no CSRF
rules), so that conftest.py's check holds every answer to the OpenAPI
document kiln generates (openapi_check.py): a generated resource's tests
test its document too.
"""

import json
import urllib.parse
import uuid

import requests

import authkit as ak
import kilnhttp

V1, ALIAS = "/api/v1", "/api"
PREFIXES = (V1, ALIAS)
MISSING = "00000000-0000-4000-8000-000000000000"
TIMESTAMP_LEN = len("2026-02-13T17:54:34.599935Z")


class User:
    """A dev-login user of one kiln (a fresh email each time, so that tests
    sharing an instance or a PostgreSQL database never see each other's
    rows)."""

    def __init__(self, srv, tag="user"):
        self.srv = srv
        self.email = ak.unique_email(tag)
        self.token = ak.session_for(srv, email=self.email)

    def call(self, method, path, body=None, raw=None, prefix=V1):
        """One request (a requests.Response); ``body`` is sent as JSON,
        ``raw`` as it is."""
        if body is not None:
            raw = json.dumps(body)
        headers = {"Authorization": f"Bearer {self.token}"}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        return requests.request(method, self.srv.url(prefix + path), headers=headers,
                                data=None if raw is None else raw.encode("utf-8"),
                                timeout=10)

    def ok(self, method, path, body=None, status=200, prefix=V1):
        """The answer's "data", after checking status and headers."""
        r = self.call(method, path, body, prefix=prefix)
        assert r.status_code == status, \
            f"{method} {prefix}{path} {body!r:.300}: {r.status_code} {r.text:.500}"
        kilnhttp.assert_json_content_type(r)
        kilnhttp.assert_request_id(r)
        return r.json()["data"]

    def list(self, path, query=None, prefix=V1):
        """The whole answer of GET path?query (data, and meta when paged);
        query is a dict (not keyword arguments: a field may be called
        path or prefix)."""
        q = urllib.parse.urlencode(query or {}, quote_via=urllib.parse.quote)
        r = self.call("GET", path + (f"?{q}" if q else ""), prefix=prefix)
        assert r.status_code == 200, f"GET {prefix}{path}?{q}: {r.status_code} {r.text:.500}"
        kilnhttp.assert_json_content_type(r)
        return r.json()


def assert_row(row, keys, want=None):
    """A row as the engine shows it: exactly ``keys`` in that order (id
    first, inserted_at and updated_at last), a lower-case UUID id, RFC 3339
    UTC timestamps with microseconds, and the values of the dict ``want``;
    returns the row."""
    assert isinstance(row, dict), row
    assert list(row) == list(keys), f"keys {list(row)}, want {list(keys)}"
    assert str(uuid.UUID(row["id"])) == row["id"], row
    for key in ("inserted_at", "updated_at"):
        assert kilnhttp.RFC3339_UTC_RE.match(row[key]), row
        assert len(row[key]) == TIMESTAMP_LEN, row
    assert row["updated_at"] >= row["inserted_at"], row
    for key, value in (want or {}).items():
        assert row[key] == value, f"{key} = {row[key]!r:.200}, want {value!r:.200}"
    return row


def assert_not_found(r, code):
    body = kilnhttp.assert_error(r, 404, code)
    assert "details" not in body, body


def assert_invalid(r, details):
    """422 validation_failed with exactly these details."""
    body = kilnhttp.assert_error(r, 422, "validation_failed")
    assert body.get("details") == details, body


def assert_bad_request(r, code="invalid_request", message=None):
    body = kilnhttp.assert_error(r, 400, code)
    if message is not None:
        assert body["message"] == message, body
    return body


def ids(rows):
    return [r["id"] for r in rows]


def ordered(rows, field, desc=False):
    """rows in the engine's order: by field, ties by id, in one direction
    (ORDER BY field DESC, id DESC is the exact reverse of ASC)."""
    return sorted(rows, key=lambda r: (r[field], r["id"]), reverse=desc)


def query_text(value):
    """A field's value as a filter's query text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
