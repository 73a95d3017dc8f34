"""Keep-alive, header and body timeouts (all 1 s here)."""

import time

import pytest

from kilnhttp import assert_error, http_request


@pytest.fixture(scope="module")
def quick(module_kiln):
    return module_kiln(KEEPALIVE_TIMEOUT_SECONDS="1", HEADER_TIMEOUT_SECONDS="1",
                       BODY_TIMEOUT_SECONDS="1")


def test_idle_keep_alive_connection_is_closed_silently(quick):
    with quick.connect() as conn:
        conn.send(http_request("GET", "/livez"))
        assert conn.read_response().status == 200
        start = time.monotonic()
        leftover = conn.wait_closed(3.5)
        elapsed = time.monotonic() - start
    assert leftover == b"", f"idle close sent bytes: {leftover[:200]!r}"
    assert elapsed >= 0.5, f"closed after {elapsed:.2f} s, before the 1 s keep-alive timeout"


def test_keep_alive_timer_restarts_after_each_request(quick):
    with quick.connect() as conn:
        for i in range(3):                  # 3 x 0.6 s > 1 s in total
            conn.send(http_request("GET", "/livez", request_id=f"again-{i}"))
            resp = conn.read_response()
            assert resp.status == 200 and resp.headers["x-request-id"] == f"again-{i}"
            time.sleep(0.6)


def test_connection_without_any_bytes_is_closed(quick):
    with quick.connect() as conn:
        start = time.monotonic()
        conn.wait_closed(3.5)
        assert time.monotonic() - start >= 0.5


def test_trickling_headers_get_408(quick):
    with quick.connect() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        assert_error(conn.read_response(timeout=3.5), 408, "request_timeout")
        conn.wait_closed(2)
        assert time.monotonic() - start >= 0.5


def test_slowloris_header_timeout_counts_from_the_first_byte(quick):
    # One byte every 0.2 s keeps the socket busy but the headers never end:
    # the 1 s header timeout must still fire.
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    with quick.connect() as conn:
        start = time.monotonic()
        for byte in data:
            if time.monotonic() - start > 4:
                break
            if not conn.send_quiet(bytes([byte])):
                break
            try:
                conn.expect_silence(0.2)
            except AssertionError:
                break                         # the server answered or closed
        assert_error(conn.read_response(timeout=1), 408, "request_timeout")
        assert time.monotonic() - start < 3.5
        conn.wait_closed(2)


def test_trickling_body_gets_408(quick):
    with quick.connect() as conn:
        conn.send(b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        start = time.monotonic()
        assert_error(conn.read_response(timeout=3.5), 408, "request_timeout")
        conn.wait_closed(2)
        assert time.monotonic() - start >= 0.5


def test_server_still_serves_after_timeouts(quick):
    resp = quick.exchange(http_request("GET", "/healthz"))[0]
    assert resp.status == 200
