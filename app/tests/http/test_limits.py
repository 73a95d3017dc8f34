"""Fixed header limits (16 KiB, 100 fields), MAX_REQUEST_BODY_BYTES and
MAX_CONNECTIONS."""

import time

import pytest

from kilnhttp import ServerClosed, assert_error, chunked, http_request


def assert_alive(server):
    resp = server.exchange(http_request("GET", "/livez"))[0]
    assert resp.status == 200, resp


# -- header section -------------------------------------------------------------------

def test_one_huge_header_is_431(server):
    data = http_request("GET", "/livez", headers=[("X-Big", "a" * 17000)])
    with server.connect() as conn:
        conn.send(data)
        assert_error(conn.read_response(), 431, "request_header_fields_too_large")
    assert_alive(server)


def test_huge_request_line_is_431(server):
    data = http_request("GET", "/livez?" + "a" * 17000)
    with server.connect() as conn:
        conn.send(data)
        assert_error(conn.read_response(), 431, "request_header_fields_too_large")
    assert_alive(server)


def test_many_headers_adding_up_past_16k_is_431(server):
    headers = [(f"X-Part-{i}", "b" * 400) for i in range(45)]     # ~18.5 KiB
    with server.connect() as conn:
        conn.send(http_request("GET", "/livez", headers=headers))
        assert_error(conn.read_response(), 431, "request_header_fields_too_large")
    assert_alive(server)


def test_header_section_just_under_16k_is_fine(server):
    data = http_request("GET", "/livez", headers=[("X-Big", "a" * 15500)])
    assert len(data) < 16 * 1024
    resp = server.exchange(data)[0]
    assert resp.status == 200, resp


def fields(total):
    """``total`` header fields including Host."""
    return [(f"X-F{i}", "v") for i in range(total - 1)]


def test_100_header_fields_are_fine(server):
    resp = server.exchange(http_request("GET", "/livez", headers=fields(100)))[0]
    assert resp.status == 200, resp


def test_101_header_fields_are_431(server):
    with server.connect() as conn:
        conn.send(http_request("GET", "/livez", headers=fields(101)))
        assert_error(conn.read_response(), 431, "request_header_fields_too_large")
    assert_alive(server)


# -- body size --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_body(module_kiln):
    return module_kiln(MAX_REQUEST_BODY_BYTES="1000")


@pytest.mark.parametrize("length", [5000, 1001])
def test_content_length_over_the_limit_is_413_without_reading_the_body(small_body, length):
    with small_body.connect() as conn:
        # Headers only: the 413 must come without the body ever being sent.
        conn.send(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % length)
        assert_error(conn.read_response(timeout=2), 413, "payload_too_large")
        conn.wait_closed(2)
    assert_alive(small_body)


def test_413_after_a_pipelined_good_request(small_body):
    with small_body.connect() as conn:
        conn.send(http_request("GET", "/livez", request_id="ok-first")
                  + b"POST /livez HTTP/1.1\r\nHost: x\r\nx-request-id: too-big\r\n"
                    b"Content-Length: 5000\r\n\r\n")
        first = conn.read_response()
        assert first.status == 200 and first.headers["x-request-id"] == "ok-first"
        body = assert_error(conn.read_response(), 413, "payload_too_large")
        assert body["request_id"] == "too-big"
        conn.wait_closed(2)


def test_body_at_the_limit_is_accepted(small_body):
    data = http_request("GET", "/livez", body=b"x" * 1000, request_id="at-limit")
    resp = small_body.exchange(data)[0]
    assert resp.status == 200, resp


def test_chunked_body_growing_past_the_limit_is_413(small_body):
    with small_body.connect() as conn:
        conn.send(b"GET /livez HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):                   # 4 x 300 bytes crosses 1000
            if not conn.send_quiet(b"12c\r\n" + b"c" * 300 + b"\r\n"):
                break
        conn.send_quiet(b"0\r\n\r\n")
        assert_error(conn.read_response(), 413, "payload_too_large")
        conn.wait_closed(2)
    assert_alive(small_body)


def test_chunked_body_under_the_limit_is_accepted(small_body):
    data = http_request("GET", "/livez", headers=[("Transfer-Encoding", "chunked")],
                        body=chunked(b"c" * 300, b"c" * 300, b"c" * 300))
    resp = small_body.exchange(data)[0]
    assert resp.status == 200, resp


def test_expect_100_with_a_body_over_the_limit_gets_413_and_no_100(small_body):
    with small_body.connect() as conn:
        conn.send(b"POST /livez HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5000\r\n\r\n")
        resp = conn.read_response(timeout=2)
        assert resp.status != 100, "sent 100 Continue for a body it will refuse"
        assert_error(resp, 413, "payload_too_large")
        conn.wait_closed(2)


def test_expect_100_with_a_small_body_gets_100(small_body):
    with small_body.connect() as conn:
        conn.send(b"GET /livez HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 10\r\n\r\n")
        assert conn.read_response(timeout=2).status == 100
        conn.send(b"0123456789")
        assert conn.read_response().status == 200


def test_default_body_limit_is_2000000(server):
    with server.connect() as conn:
        conn.send(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 2000001\r\n\r\n")
        assert_error(conn.read_response(timeout=2), 413, "payload_too_large")
        conn.wait_closed(2)
    # Exactly the limit is not refused for its size: the route answers (405).
    with server.connect() as conn:
        conn.send(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        conn.send(b"x" * 2000000)
        assert_error(conn.read_response(), 405, "method_not_allowed")


# -- connection cap ---------------------------------------------------------------------

def test_max_connections(kiln):
    srv = kiln(MAX_CONNECTIONS="5")
    time.sleep(0.1)              # let the server see the readiness probe's close
    held = []
    try:
        for i in range(5):
            conn = srv.connect()
            conn.send(http_request("GET", "/livez", request_id=f"held-{i}"))
            resp = conn.read_response()
            assert resp.status == 200, (i, resp)
            held.append(conn)

        # The sixth gets 503 (or is simply closed), and the server survives.
        # Listen first: a server that answers at accept time must not have
        # its 503 destroyed by a reset caused by request bytes it never reads.
        with srv.connect() as extra:
            try:
                extra.expect_silence(0.5)
            except AssertionError:
                pass                             # it spoke (or closed) at once
            else:
                extra.send_quiet(http_request("GET", "/livez"))
            try:
                resp = extra.read_response(timeout=3)
            except ServerClosed:
                resp = None
            if resp is not None:
                assert_error(resp, 503, "service_unavailable")
                extra.wait_closed(2)

        # The held connections are still served.
        held[0].send(http_request("GET", "/livez", request_id="held-again"))
        assert held[0].read_response().status == 200
    finally:
        for conn in held:
            conn.close()

    # Once they are gone, new connections work again.
    deadline = time.monotonic() + 3
    while True:
        try:
            resp = srv.exchange(http_request("GET", "/livez"), timeout=2)[0]
            if resp.status == 200:
                break
        except ServerClosed:
            resp = None
        assert time.monotonic() < deadline, f"no connection accepted after closing the 5: {resp!r}"
        time.sleep(0.05)
