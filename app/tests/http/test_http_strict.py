"""HTTP/1.1, strictly (issue 14, point 5): a bare CR anywhere outside a
body, a line ended by LF alone, a request line other than ``method SP target
SP version``, and over-long chunk extensions are 400 ``invalid_request`` and
close, with nothing answered after the refusal. Each case is something
llhttp's loose build let through (RFC 9112 2.2, 3, 7.1.1); where a proxy in
front reads such bytes differently, the bytes after them can be smuggled in
as a request of their own."""

import pytest

from kilnhttp import assert_error, http_request

# A request the server would answer if it were parsed: a second response
# (or a 404 for /smuggled) shows that it was.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def chunked_request(body, target=b"/livez"):
    """POST with a raw chunked body (405 on /livez if it were accepted)."""
    return (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body)


def assert_refused_alone(server, data):
    """One 400 invalid_request, then the close: no second response."""
    with server.connect() as conn:
        conn.send_quiet(data)
        resp = conn.read_response()
        assert_error(resp, 400, "invalid_request")
        leftover = conn.wait_closed(2)
    assert leftover == b"", f"answered more after the 400: {leftover[:300]!r}"
    alive = server.exchange(http_request("GET", "/livez"))[0]
    assert alive.status == 200, alive


STRICT_400 = {
    # Bare CR. "\r\n\r" plus any byte ended the header section; what came
    # after was read as the next request.
    "bare-cr-ends-header-section-smuggling":
        b"GET / HTTP/1.1\r\nHost: a\r\n\rGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare-cr-ends-header-section-then-request":
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\rX" + SMUGGLED,
    "bare-cr-before-request-line": b"\rGET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare-cr-ends-request-line": b"GET /livez HTTP/1.1\rHost: x\r\n\r\n",
    "bare-cr-in-header-value": b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n",
    "bare-cr-in-chunk-size": chunked_request(b"5\r\rhello\r\n0\r\n\r\n"),
    "bare-cr-then-x-in-chunk-size": chunked_request(b"5\rX\nhello\r\n0\r\n\r\n"),
    "bare-cr-in-chunk-extension": chunked_request(b"5;a=b\r\rhello\r\n0\r\n\r\n"),
    "bare-cr-inside-chunk-extension": chunked_request(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"),
    "bare-cr-ends-last-chunk": chunked_request(b"0\r\r\n" + SMUGGLED),
    "bare-cr-ends-trailers": chunked_request(b"0\r\nX-T: y\r\n\rX" + SMUGGLED),
    "bare-cr-in-trailer-value": chunked_request(b"0\r\nX-T: y\rz\r\n\r\n"),
    "bare-cr-after-chunk-data": chunked_request(b"5\r\nhello\rX0\r\n\r\n"),
    # LF without CR: refused (RFC 9112 2.2 allows either; see parser.c).
    "lf-ends-request-line": b"GET /livez HTTP/1.1\nHost: x\r\n\r\n",
    "lf-ends-header-section": b"GET /livez HTTP/1.1\r\nHost: x\r\n\n",
    "lf-ends-trailers": chunked_request(b"0\r\n\n" + SMUGGLED),
    # The request line is exactly method SP request-target SP HTTP-version.
    "double-space-after-method": b"GET  /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "double-space-before-version": b"GET /livez  HTTP/1.1\r\nHost: x\r\n\r\n",
    "tab-before-version": b"GET /livez\tHTTP/1.1\r\nHost: x\r\n\r\n",
    "tab-after-method": b"GET\t/livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "tab-in-target": b"GET /li\tvez HTTP/1.1\r\nHost: x\r\n\r\n",
    "form-feed-in-target": b"GET /li\x0cvez HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ascii-in-target": b"GET /livez\xa0 HTTP/1.1\r\nHost: x\r\n\r\n",
    "no-version": b"GET /livez\r\n\r\n",
    "not-http": b"GET /livez RTSP/1.0\r\nHost: x\r\n\r\n",
    # Trailers keep the header section's rules.
    "obs-fold-in-trailer": chunked_request(b"0\r\nX-T: y\r\n z\r\n\r\n"),
    # Chunk extensions are bounded: 256 bytes a chunk-size line.
    "over-long-chunk-extension": chunked_request(b"5;" + b"e" * 300 + b"\r\nhello\r\n0\r\n\r\n"),
    "over-long-chunk-extension-value":
        chunked_request(b"5;name=" + b"v" * 1000 + b"\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-with-many-leading-zeros":
        chunked_request(b"0" * 300 + b"5\r\nhello\r\n0\r\n\r\n"),
    # ... and all of a request's extensions weigh no more than a header
    # section (16 KiB), whatever each line holds.
    "chunk-extensions-adding-up-past-16k":
        chunked_request((b"1;n=" + b"v" * 250 + b"\r\nx\r\n") * 70 + b"0\r\n\r\n"),
}


@pytest.mark.parametrize("data", list(STRICT_400.values()), ids=list(STRICT_400))
def test_strict_framing_is_400_and_closed(server, data):
    assert_refused_alone(server, data)


def test_bare_cr_smuggling_gets_one_400_and_nothing_else(server):
    # The case, verbatim: before the fix the first request was
    # answered 200 and the bytes after "\r\n\r" were parsed on.
    with server.connect() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\rGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = conn.read_response()
        assert_error(resp, 400, "invalid_request")
        assert "close" in resp.headers.get("connection", "").lower()
        assert conn.wait_closed(2) == b""


def test_bare_cr_split_across_reads_is_refused(server):
    # The CR ends one read and the byte after it starts the next.
    with server.connect() as conn:
        conn.send(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r")
        conn.expect_silence(0.2)
        conn.send_quiet(b"X" + SMUGGLED)
        assert_error(conn.read_response(), 400, "invalid_request")
        assert conn.wait_closed(2) == b""


def test_bare_cr_in_chunk_size_split_across_reads_is_refused(server):
    with server.connect() as conn:
        conn.send(chunked_request(b"5\r"))
        conn.expect_silence(0.2)
        conn.send_quiet(b"Xhello\r\n0\r\n\r\n")
        assert_error(conn.read_response(), 400, "invalid_request")
        assert conn.wait_closed(2) == b""


def test_refused_after_a_good_pipelined_request(server):
    # The good request is answered; the malformed one after it is refused
    # and nothing after that.
    data = (http_request("GET", "/livez", request_id="good-first")
            + b"GET /livez HTTP/1.1\r\nHost: x\r\n\rX" + SMUGGLED)
    with server.connect() as conn:
        conn.send(data)
        good = conn.read_response()
        assert good.status == 200 and good.headers["x-request-id"] == "good-first"
        assert_error(conn.read_response(), 400, "invalid_request")
        assert conn.wait_closed(2) == b""


# -- what stays accepted --------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"\r\nGET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n\r\nGET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["one-crlf", "two-crlf"])
def test_empty_lines_before_the_request_line_are_ignored(server, data):
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF)
    # before the request line.
    with server.connect() as conn:
        conn.send(data + http_request("GET", "/livez", request_id="after-crlf"))
        first, second = conn.read_responses(2)
    assert first.status == 200 and second.status == 200
    assert second.headers["x-request-id"] == "after-crlf"


@pytest.mark.parametrize("body", [
    b"5;name=value\r\nhello\r\n0\r\n\r\n",
    b"5;a;b\r\nhello\r\n0;last\r\n\r\n",
    b"5;a=\"quoted value\"\r\nhello\r\n0\r\n\r\n",
    b"5;n=" + b"v" * 251 + b"\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n",
    b"3\r\na\rb\r\n0\r\n\r\n",
], ids=["extension", "two-extensions", "quoted-extension", "extension-at-the-limit",
        "trailers", "bare-cr-inside-data"])
def test_well_formed_chunked_bodies_are_accepted(server, body):
    data = (chunked_request(body) + http_request("GET", "/livez", request_id="next"))
    with server.connect() as conn:
        conn.send(data)
        first, second = conn.read_responses(2)
    assert_error(first, 405, "method_not_allowed")
    assert second.status == 200 and second.headers["x-request-id"] == "next"
