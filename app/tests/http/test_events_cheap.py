"""Open event streams hold no fiber, worker or database connection
(docs/ARCHITECTURE.md, Change feed): with far more streams open than the
instance has fibers per loop and workers, every other request is still
answered, and a write still reaches every stream.

Raw sockets: the stream's bytes are read as they come, the way a client
that is not a browser reads them.
"""

import json
import socket
import time

import pytest

import authkit as ak
import kilnhttp

STREAMS = 120


def open_stream(srv, token):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, f"stream closed before its headers: {head!r}"
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 200"), head
    return s, head.split(b"\r\n\r\n", 1)[1]


def read_until(s, have, needle, timeout=10.0):
    deadline = time.time() + timeout
    while needle not in have:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        have += chunk
    return have


@pytest.fixture
def small(kiln):
    # Two loops with at most 4 fibers each (PostgreSQL) or 2 workers
    # (SQLite): STREAMS is many times that.
    return ak.start_kiln(kiln, HTTP_LOOPS=2, WORKER_QUEUE_SIZE=4, DB_POOL_SIZE=2)


def test_streams_hold_no_fiber_worker_or_connection(small):
    token = ak.session_for(small)
    streams = [open_stream(small, token) for _ in range(STREAMS)]
    try:
        # Every other request is still served, many times over the fibers
        # and workers there are.
        for _ in range(20):
            r = ak.call(small, "GET", "/api/v1/notes", bearer=token)
            assert r.status == 200, r
        r = ak.call(small, "POST", "/api/v1/notes", bearer=token,
                    json_body={"title": "to every stream"})
        assert r.status == 201, r
        note = json.loads(r.body)["data"]
        for s, have in streams:
            got = read_until(s, have, note["id"].encode())
            assert note["id"].encode() in got, f"a stream did not get the write: {got[-300:]!r}"
    finally:
        for s, _ in streams:
            s.close()


def test_head_answers_without_opening_a_stream(small):
    token = ak.session_for(small)
    r = ak.call(small, "HEAD", "/api/v1/events", bearer=token)
    assert r.status == 200, r
    assert r.headers.get("content-type") == "text/event-stream"
    # An ordinary answer: the connection goes on.
    assert "transfer-encoding" not in r.headers
