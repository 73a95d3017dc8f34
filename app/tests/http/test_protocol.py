"""HTTP/1.1 conformance over raw sockets: keep-alive, pipelining, request
bodies, Expect: 100-continue, Connection handling, Host rules, and malformed
input (400 and close, the process survives)."""

import socket

import pytest

from kilnhttp import ServerClosed, assert_error, assert_request_id, chunked, http_request


def assert_alive(server):
    """A fresh connection still gets an answer: the process did not crash."""
    resp = server.exchange(http_request("GET", "/livez"))[0]
    assert resp.status == 200, resp


def connection_tokens(resp):
    return {t.strip().lower() for t in resp.headers.get("connection", "").split(",") if t.strip()}


# -- persistent connections and pipelining ---------------------------------------

def test_keep_alive_serves_several_requests_on_one_socket(server):
    with server.connect() as conn:
        for i, path in enumerate(["/livez", "/healthz", "/", "/nope", "/livez"]):
            conn.send(http_request("GET", path, request_id=f"ka-{i}"))
            resp = conn.read_response()
            assert resp.headers["x-request-id"] == f"ka-{i}"
            assert resp.status == (404 if path == "/nope" else 200), resp
            assert "close" not in connection_tokens(resp)


def test_pipelined_requests_are_answered_in_order_across_loop_and_workers(server):
    # /livez is answered on the event loop, /healthz and /_test/sleep on a
    # worker: a slow worker request first must still be answered first.
    paths = ["/_test/sleep?ms=150", "/livez", "/healthz", "/livez", "/healthz?detailed=true",
             "/livez", "/_test/sleep?ms=20", "/livez", "/healthz", "/nope"]
    data = b"".join(http_request("GET", p, request_id=f"pipe-{i}") for i, p in enumerate(paths))
    with server.connect() as conn:
        conn.send(data)                     # one send() for all ten
        responses = conn.read_responses(len(paths))
    for i, (path, resp) in enumerate(zip(paths, responses)):
        assert resp.headers.get("x-request-id") == f"pipe-{i}", \
            f"response {i} is {resp.headers.get('x-request-id')!r} ({path})"
        if path == "/nope":
            assert resp.status == 404
            continue
        assert resp.status == 200, (path, resp)
        if path.startswith("/_test/sleep"):
            assert resp.json() == {"slept_ms": int(path.split("=")[1])}
        else:
            assert resp.json()["status"] == "ok"


def test_pipelined_heads_and_gets(server):
    reqs = [("GET", "/livez"), ("HEAD", "/healthz"), ("HEAD", "/livez"), ("GET", "/healthz")]
    data = b"".join(http_request(m, p, request_id=f"hp-{i}") for i, (m, p) in enumerate(reqs))
    with server.connect() as conn:
        conn.send(data)
        responses = conn.read_responses(len(reqs), heads=[m == "HEAD" for m, _ in reqs])
    assert [r.headers.get("x-request-id") for r in responses] == [f"hp-{i}" for i in range(4)]
    assert [r.status for r in responses] == [200] * 4
    assert responses[3].json() == {"status": "ok"}


def test_many_pipelined_requests_in_one_send(server):
    paths = ["/livez", "/healthz", "/", "/readyz"] * 16
    data = b"".join(http_request("GET", p, request_id=f"many-{i}") for i, p in enumerate(paths))
    with server.connect() as conn:
        conn.send(data)
        responses = conn.read_responses(len(paths))
    assert [r.headers.get("x-request-id") for r in responses] == \
        [f"many-{i}" for i in range(len(paths))]
    assert {r.status for r in responses} == {200}


def test_request_sent_one_byte_at_a_time(server):
    data = http_request("GET", "/healthz", body=b"abc", request_id="bytewise")
    with server.connect() as conn:
        for byte in data:
            conn.send(bytes([byte]))
        resp = conn.read_response()
    assert resp.status == 200 and resp.headers["x-request-id"] == "bytewise"
    assert resp.json() == {"status": "ok"}


def test_nothing_is_answered_after_a_connection_close_request(server):
    data = (http_request("GET", "/livez", headers=[("Connection", "close")], request_id="last")
            + http_request("GET", "/livez", request_id="ignored"))
    with server.connect() as conn:
        conn.send(data)
        resp = conn.read_response()
        assert resp.headers["x-request-id"] == "last"
        leftover = conn.wait_closed(2)
    assert leftover == b"", f"answered a request sent after Connection: close: {leftover[:200]!r}"


def test_connection_close_after_a_pipelined_worker_request(server):
    # The close must wait for the earlier (slower, worker-side) response.
    data = (http_request("GET", "/_test/sleep?ms=150", request_id="w-first")
            + http_request("GET", "/livez", headers=[("Connection", "close")], request_id="w-last")
            + http_request("GET", "/livez", request_id="w-ignored"))
    with server.connect() as conn:
        conn.send(data)
        first, last = conn.read_responses(2)
        assert first.headers["x-request-id"] == "w-first" and first.json() == {"slept_ms": 150}
        assert last.headers["x-request-id"] == "w-last" and "close" in connection_tokens(last)
        assert conn.wait_closed(2) == b""


def test_half_closed_client_still_gets_its_answer(server):
    with server.connect() as conn:
        conn.send(http_request("GET", "/_test/sleep?ms=50", request_id="half"))
        conn.sock.shutdown(socket.SHUT_WR)
        resp = conn.read_response()
    assert resp.status == 200 and resp.headers["x-request-id"] == "half"


def test_header_names_and_transfer_coding_are_case_insensitive(server):
    data = (b"GET /livez HTTP/1.1\r\nHOST: x\r\ncOnTeNt-LeNgTh: 3\r\nX-REQUEST-ID: ci-1\r\n\r\nabc"
            b"GET /livez HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: CHUNKED\r\nx-request-id: ci-2\r\n\r\n"
            + chunked(b"abc") + http_request("GET", "/livez", request_id="ci-3"))
    with server.connect() as conn:
        conn.send(data)
        responses = conn.read_responses(3)
    assert [(r.status, r.headers["x-request-id"]) for r in responses] == \
        [(200, "ci-1"), (200, "ci-2"), (200, "ci-3")]


# -- request bodies are consumed ---------------------------------------------------

# A body that looks like a request: if the server parsed it as one, a 404
# would show up in the second response.
DECOY = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"


def test_content_length_body_is_consumed_before_the_next_request(server):
    data = (http_request("POST", "/livez", body=DECOY, request_id="body-1")
            + http_request("GET", "/livez", request_id="body-2"))
    with server.connect() as conn:
        conn.send(data)
        first, second = conn.read_responses(2)
        conn.expect_silence(0.2)
    assert_error(first, 405, "method_not_allowed")
    assert first.headers["x-request-id"] == "body-1"
    assert second.status == 200 and second.headers["x-request-id"] == "body-2"


@pytest.mark.parametrize("body", [
    chunked(b"hello", b" ", DECOY),
    chunked(b"hello") .replace(b"5\r\n", b"5;name=value\r\n", 1),
    chunked(b"hello", trailers=b"X-Trailer: yes\r\n"),
], ids=["plain", "chunk-extension", "trailer"])
def test_chunked_body_is_consumed_before_the_next_request(server, body):
    data = (http_request("POST", "/livez", headers=[("Transfer-Encoding", "chunked")],
                         body=body, request_id="chunk-1")
            + http_request("GET", "/livez", request_id="chunk-2"))
    with server.connect() as conn:
        conn.send(data)
        first, second = conn.read_responses(2)
    assert_error(first, 405, "method_not_allowed")
    assert first.headers["x-request-id"] == "chunk-1"
    assert second.status == 200 and second.headers["x-request-id"] == "chunk-2"


def test_get_with_a_body_is_answered(server):
    resp = server.exchange(http_request("GET", "/livez", body=b"0123456789"))[0]
    assert resp.status == 200, resp


# -- Expect: 100-continue -----------------------------------------------------------

def test_expect_100_continue(server):
    with server.connect() as conn:
        conn.send(b"GET /livez HTTP/1.1\r\nHost: x\r\nx-request-id: exp-1\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = conn.read_response(timeout=2)
        assert interim.status == 100, interim
        assert interim.version == "HTTP/1.1"
        conn.expect_silence(0.3)            # no final answer before the body
        conn.send(b"hello")
        final = conn.read_response()
    assert final.status == 200, final
    assert final.headers["x-request-id"] == "exp-1"


# -- Connection management ----------------------------------------------------------

def test_connection_close_is_honoured(server):
    with server.connect() as conn:
        conn.send(http_request("GET", "/livez", headers=[("Connection", "close")]))
        resp = conn.read_response()
        assert resp.status == 200
        assert "close" in connection_tokens(resp)
        assert conn.wait_closed(2) == b""


def test_http10_without_keep_alive_is_closed_after_the_response(server):
    with server.connect() as conn:
        conn.send(b"GET /livez HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 200
        assert "chunked" not in resp.headers.get("transfer-encoding", "").lower()
        assert resp.json()["status"] == "ok"
        assert conn.wait_closed(2) == b""


def test_http10_keep_alive_is_kept_alive(server):
    with server.connect() as conn:
        for i in range(3):
            conn.send(b"GET /livez HTTP/1.0\r\nConnection: keep-alive\r\nx-request-id: k10-%d\r\n\r\n" % i)
            resp = conn.read_response()
            assert resp.status == 200
            assert resp.headers["x-request-id"] == f"k10-{i}"
            assert "content-length" in resp.headers, "a kept-alive 1.0 response needs Content-Length"
            assert "chunked" not in resp.headers.get("transfer-encoding", "").lower()
            assert "keep-alive" in connection_tokens(resp)


def test_http11_without_host_is_400(server):
    resp = server.exchange(b"GET /livez HTTP/1.1\r\n\r\n")[0]
    assert_error(resp, 400, "invalid_request")


def test_http11_with_two_host_headers_is_400(server):
    resp = server.exchange(b"GET /livez HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")[0]
    assert_error(resp, 400, "invalid_request")


def test_http10_without_host_is_fine(server):
    resp = server.exchange(b"GET /healthz HTTP/1.0\r\n\r\n")[0]
    assert resp.status == 200


# -- malformed input: 400 (or the named status), envelope, close, still alive ------

def H(*header_lines, method=b"GET", target=b"/livez", version=b"HTTP/1.1", body=b""):
    """A request with a Host header and extra raw header lines."""
    head = method + b" " + target + b" " + version + b"\r\nHost: x\r\n"
    return head + b"".join(l + b"\r\n" for l in header_lines) + b"\r\n" + body


BAD_400 = {
    "garbage-request-line": b"HELLO\r\n\r\n",
    "garbage-binary": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "bad-version-token": b"GET /livez HTTX/1.1\r\nHost: x\r\n\r\n",
    "invalid-method-token": b"G(T /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-char-in-target": b"GET /li\x01vez HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-header-name": H(b"Bad Name: v"),
    "at-sign-in-header-name": H(b"Bad@Name: v"),
    "space-before-colon": H(b"X-Thing : v"),
    "header-without-colon": H(b"NoColonHere"),
    "nul-in-header-value": H(b"X-Thing: a\x00b"),
    "nul-in-header-name": H(b"X-Th\x00ing: v"),
    "obs-fold-space": H(b"X-Thing: a", b" continued"),
    "obs-fold-tab": H(b"X-Thing: a", b"\tcontinued"),
    "cl-and-te-chunked": H(b"Content-Length: 5", b"Transfer-Encoding: chunked",
                           body=b"0\r\n\r\n"),
    "te-chunked-and-cl": H(b"Transfer-Encoding: chunked", b"Content-Length: 5",
                           body=b"0\r\n\r\n"),
    "two-different-content-lengths": H(b"Content-Length: 5", b"Content-Length: 6",
                                       body=b"hello!"),
    "content-length-not-a-number": H(b"Content-Length: abc"),
    "content-length-negative": H(b"Content-Length: -1"),
    "invalid-chunk-size": H(b"Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-overflow": H(b"Transfer-Encoding: chunked",
                             body=b"ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "chunk-without-crlf": H(b"Transfer-Encoding: chunked", body=b"5\r\nhelloXX0\r\n\r\n"),
    "chunk-size-0x-prefix": H(b"Transfer-Encoding: chunked", body=b"0x5\r\nhello\r\n0\r\n\r\n"),
    "content-length-plus-sign": H(b"Content-Length: +5", body=b"hello"),
    "content-length-list-differing": H(b"Content-Length: 5, 6", body=b"hello!"),
    "non-ascii-header-name": H(b"X-\xc3\x9c: v"),
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase-http-name": b"GET /livez http/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("data", list(BAD_400.values()), ids=list(BAD_400))
def test_malformed_request_is_400_and_closed(server, data):
    with server.connect() as conn:
        conn.send(data)
        resp = conn.read_response()
        assert_error(resp, 400, "invalid_request")
        conn.wait_closed(2)
    assert_alive(server)


@pytest.mark.parametrize("te", [b"gzip", b"chunked, gzip", b"identity", b"chunked, chunked"])
def test_unsupported_transfer_encoding_is_refused_and_closed(server, te):
    data = H(b"Transfer-Encoding: " + te, body=b"0\r\n\r\n")
    with server.connect() as conn:
        conn.send(data)
        resp = conn.read_response()
        assert_error(resp, {400, 501}, {400: "invalid_request", 501: None})
        conn.wait_closed(2)
    assert_alive(server)


@pytest.mark.parametrize("data", [
    b"GET /livez HTTP/2.0\r\nHost: x\r\n\r\n",
    b"GET /livez HTTP/3.0\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /livez\r\nHost: x\r\n\r\n",
], ids=["http2", "http3", "h2-preface", "no-version"])
def test_unsupported_http_version_is_refused_and_closed(server, data):
    with server.connect() as conn:
        conn.send(data)
        resp = conn.read_response()
        assert_error(resp, {505, 400}, {505: "http_version_not_supported", 400: "invalid_request"})
        conn.wait_closed(2)
    assert_alive(server)


def test_worker_request_then_garbage_on_one_connection(server):
    # The 400 and the close wait until the earlier worker response is out.
    with server.connect() as conn:
        conn.send(http_request("GET", "/_test/sleep?ms=150", request_id="slow-then-bad")
                  + b"HELLO\r\n\r\n")
        first = conn.read_response()
        assert first.status == 200 and first.headers["x-request-id"] == "slow-then-bad"
        assert_error(conn.read_response(), 400, "invalid_request")
        conn.wait_closed(2)


def test_good_request_then_garbage_on_one_connection(server):
    with server.connect() as conn:
        conn.send(http_request("GET", "/livez", request_id="before-bad") + b"HELLO\r\n\r\n")
        good = conn.read_response()
        assert good.status == 200 and good.headers["x-request-id"] == "before-bad"
        assert_error(conn.read_response(), 400, "invalid_request")
        conn.wait_closed(2)
    assert_alive(server)


def test_bare_lf_line_endings_do_not_hurt_the_server(server):
    # RFC 9112 lets a server accept or reject bare LF; either is fine here,
    # but the answer must be an HTTP response or a close, and no crash.
    with server.connect() as conn:
        conn.send(b"GET /livez HTTP/1.1\nHost: x\n\n")
        try:
            resp = conn.read_response(timeout=3)
            assert resp.status in (200, 400), resp
            assert_request_id(resp)
        except ServerClosed:
            pass
    assert_alive(server)
