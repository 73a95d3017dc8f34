"""A Server-Sent Events client for the change-feed tests (test_events.py),
written on raw sockets so that the framing itself is under test:

* ``ChunkedDecoder``: HTTP/1.1 chunked transfer coding, incremental (chunk
  sizes in hex with optional extensions, CRLF after each chunk's data, the
  last chunk ``0`` and trailers); knows whether the body ended cleanly.
* ``SseParser``: the WHATWG "event stream" interpretation
  (html.spec.whatwg.org, "Server-sent events", 9.2.6): UTF-8 with an
  optional leading BOM, lines ended by CRLF, LF or CR, comments (``:``),
  fields ``event``, ``data``, ``id`` (ignored when it contains NUL) and
  ``retry`` (digits only), the value after one optional space, a blank line
  dispatching the event (none when the data buffer is empty), the last
  event id kept across events, an incomplete event at the end discarded.
* ``SseStream``: one ``GET /api/v1/events`` over a socket: the request
  (cookie or Bearer, Last-Event-ID, query), the response head (status,
  headers), then the body decoded and parsed as it arrives; every read has
  a deadline.
* ``FeedEvent``: a dispatched message whose data is the feed's JSON event,
  with its shape checked.

Only the standard library; tests add pytest.
"""

import json
import re
import socket
import ssl
import time
import urllib.parse
import uuid

import kilnhttp
from kilnhttp import http_request

SESSION_COOKIE = "_backend_session"
EVENT_KEYS = {"id", "type", "resource", "action", "row_id", "data", "owner", "at"}
AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


class StreamClosed(AssertionError):
    """The server ended the stream (or the connection) while the test was
    waiting for something more."""


class StreamTimeout(AssertionError):
    """Nothing matching arrived before the deadline."""


# --------------------------------------------------------------------------
# chunked transfer coding
# --------------------------------------------------------------------------

class ChunkedDecoder:
    """Feed raw body bytes; returns the decoded data so far.  ``done`` once
    the last chunk and the trailers have been read; ``rest`` is what came
    after the body (should be nothing)."""

    def __init__(self):
        self.buf = bytearray()
        self.state = "size"      # size, data, crlf, trailers, done
        self.left = 0
        self.done = False
        self.rest = b""
        self.chunks = 0

    def feed(self, data):
        if self.done:
            self.rest += data
            return b""
        self.buf += data
        out = bytearray()
        while True:
            if self.state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > 1024:
                        raise AssertionError(f"chunk-size line too long: {bytes(self.buf[:80])!r}")
                    break
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                size_text = line.split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                    raise AssertionError(f"bad chunk-size line {line!r}")
                self.left = int(size_text, 16)
                self.chunks += 1
                self.state = "data" if self.left else "trailers"
            elif self.state == "data":
                if not self.buf:
                    break
                take = min(self.left, len(self.buf))
                out += self.buf[:take]
                del self.buf[:take]
                self.left -= take
                if self.left == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                if bytes(self.buf[:2]) != b"\r\n":
                    raise AssertionError(f"chunk data not followed by CRLF: {bytes(self.buf[:20])!r}")
                del self.buf[:2]
                self.state = "size"
            elif self.state == "trailers":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                if not line:
                    self.state = "done"
                    self.done = True
                    self.rest = bytes(self.buf)
                    self.buf.clear()
                    break
            else:
                break
        return bytes(out)


# --------------------------------------------------------------------------
# the event stream format
# --------------------------------------------------------------------------

class Message:
    """One dispatched event: ``type`` ("message" unless an event field said
    otherwise), ``data`` (the data lines joined by LF), ``last_event_id``
    (the stream's last event id at dispatch), ``id_field`` (the id field of
    this very message, or None)."""

    def __init__(self, type_, data, last_event_id, id_field):
        self.type = type_
        self.data = data
        self.last_event_id = last_event_id
        self.id_field = id_field

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return f"<Message {self.type} id={self.id_field!r} {self.data[:200]!r}>"


class SseParser:
    """The WHATWG event stream parser.  ``feed(bytes)`` returns the items
    completed: ("message", Message), ("comment", text), ("retry", ms)."""

    def __init__(self):
        self.raw = bytearray()            # undecoded bytes (a split UTF-8 sequence)
        self.text = ""                    # decoded, not yet split into lines
        self.first = True
        self.data = []
        self.event_type = ""
        self.last_event_id = ""
        self.id_field = None
        self.retry = None

    def feed(self, data, eof=False):
        self.raw += data
        try:
            chunk = bytes(self.raw).decode("utf-8")
            self.raw.clear()
        except UnicodeDecodeError as e:
            # Keep an incomplete sequence at the end for the next feed; a
            # bad byte anywhere else is U+FFFD (the spec's UTF-8 decode).
            if e.start >= len(self.raw) - 3 and not eof and e.reason == "unexpected end of data":
                chunk = bytes(self.raw[:e.start]).decode("utf-8", "replace")
                del self.raw[:e.start]
            else:
                chunk = bytes(self.raw).decode("utf-8", "replace")
                self.raw.clear()
        if self.first and chunk:
            if chunk.startswith("\ufeff"):
                chunk = chunk[1:]
            self.first = False
        self.text += chunk
        items = []
        while True:
            m = re.search(r"\r\n|\n|\r", self.text)
            if not m:
                break
            if m.group() == "\r" and m.end() == len(self.text) and not eof:
                break               # a CR at the end may be the first half of CRLF
            line = self.text[:m.start()]
            self.text = self.text[m.end():]
            items.extend(self._line(line))
        return items

    def _line(self, line):
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            value = line[1:]
            return [("comment", value[1:] if value.startswith(" ") else value)]
        if ":" in line:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            self.event_type = value
        elif field == "data":
            self.data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
                self.id_field = value
        elif field == "retry":
            if value and all(c in "0123456789" for c in value):
                self.retry = int(value)
                return [("retry", self.retry)]
        return []

    def _dispatch(self):
        if not self.data:
            self.event_type = ""
            self.id_field = None
            return []
        msg = Message(self.event_type or "message", "\n".join(self.data), self.last_event_id,
                      self.id_field)
        self.data = []
        self.event_type = ""
        self.id_field = None
        return [("message", msg)]


# --------------------------------------------------------------------------
# the feed's events
# --------------------------------------------------------------------------

class FeedEvent:
    """A change event (a message without an event field)."""

    def __init__(self, msg):
        assert msg.type == "message", f"want a change event, got {msg!r}"
        assert msg.id_field is not None and re.fullmatch(r"[0-9]{1,19}", msg.id_field), \
            f"a change event needs an id field of digits: {msg!r}"
        try:
            body = msg.json()
        except ValueError:
            raise AssertionError(f"event data is not JSON: {msg!r}") from None
        assert isinstance(body, dict) and set(body) == EVENT_KEYS, \
            f"event keys {sorted(body) if isinstance(body, dict) else body!r}, want {sorted(EVENT_KEYS)}"
        assert isinstance(body["id"], int) and not isinstance(body["id"], bool), body
        assert str(body["id"]) == msg.id_field, f"data id {body['id']} != id field {msg.id_field}"
        assert body["type"] == f"{body['resource']}.{body['action']}", body
        assert str(uuid.UUID(body["row_id"])) == body["row_id"], body
        assert str(uuid.UUID(body["owner"])) == body["owner"], body
        assert isinstance(body["at"], str) and AT_RE.match(body["at"]), body
        if body["action"] == "deleted":
            assert body["data"] is None, f"a delete's data must be null: {body}"
        else:
            assert isinstance(body["data"], dict), body
            assert body["data"].get("id") == body["row_id"], body
        self.msg = msg
        self.body = body
        self.id = body["id"]
        self.sse_id = msg.id_field
        self.type = body["type"]
        self.resource = body["resource"]
        self.action = body["action"]
        self.row_id = body["row_id"]
        self.data = body["data"]
        self.owner = body["owner"]

    @property
    def key(self):
        return (self.type, self.row_id)

    def __repr__(self):
        return f"<FeedEvent {self.id} {self.type} {self.row_id}>"


# --------------------------------------------------------------------------
# one stream
# --------------------------------------------------------------------------

def events_request(srv, path="/api/v1/events", query=None, cookie=None, bearer=None,
                   last_event_id=None, headers=(), request_id=None, version="HTTP/1.1"):
    hdrs = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
    if cookie is not None:
        hdrs.append(("Cookie", f"{SESSION_COOKIE}={cookie}"))
    if bearer is not None:
        hdrs.append(("Authorization", f"Bearer {bearer}"))
    if last_event_id is not None:
        hdrs.append(("Last-Event-ID", str(last_event_id)))
    hdrs.extend(headers)
    target = path
    if query:
        q = query if isinstance(query, str) else urllib.parse.urlencode(query)
        target += "?" + q
    return http_request("GET", target, headers=hdrs, host=f"127.0.0.1:{srv.port}",
                        request_id=request_id, version=version)


class SseStream:
    """``GET /api/v1/events`` on a socket of its own.  After construction
    ``status``, ``headers`` (lower-case name → value), ``header_list``; for
    a non-200 answer ``response`` is the whole kilnhttp.Response.  Then
    ``next_event``, ``next_message``, ``collect``, ``wait_closed``."""

    def __init__(self, srv, path="/api/v1/events", query=None, cookie=None, bearer=None,
                 last_event_id=None, headers=(), timeout=5.0, request_id=None, expect=200,
                 version="HTTP/1.1", pipelined=b"", conn=None):
        """``pipelined``: bytes sent right behind the request (say, another
        request); ``conn``: a kilnhttp.RawConn to send it on (a keep-alive
        connection) instead of a new one."""
        self.srv = srv
        self.timeout = timeout
        self.decoder = ChunkedDecoder()
        self.chunked = version == "HTTP/1.1"   # HTTP/1.0: the body ends at the close
        self.length = None                     # a Content-Length body
        self.parser = SseParser()
        self.items = []          # every parsed item, in order
        self.pending = []        # parsed items not yet handed to the test
        self.body = bytearray()  # decoded body bytes
        self.eof = False
        self.reset = False
        self.response = None
        self.conn = conn or kilnhttp.RawConn(srv.port, tls=srv.tls, timeout=timeout)
        self.conn.send(events_request(srv, path, query, cookie, bearer, last_event_id, headers,
                                      request_id, version) + pipelined)
        self._read_head()
        if expect is not None:
            assert self.status == expect, \
                f"GET {path} ({query!r}): status {self.status}, want {expect}: {self.response!r}"

    # -- the head ----------------------------------------------------------

    def _read_head(self):
        conn = self.conn
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in conn.buf:
            if not conn._fill(deadline):
                raise kilnhttp.ServerClosed(f"closed before a response head: {bytes(conn.buf)!r}")
        i = conn.buf.index(b"\r\n\r\n")
        head = bytes(conn.buf[:i]).split(b"\r\n")
        m = re.match(rb"^HTTP/1\.[01] (\d{3})", head[0])
        assert m, f"bad status line {head[0]!r}"
        self.status = int(m.group(1))
        if self.status != 200:
            self.response = conn.read_final_response()
            self.headers = self.response.headers
            self.header_list = self.response.header_list
            conn.close()
            return
        self.header_list = []
        for line in head[1:]:
            name, sep, value = line.partition(b":")
            assert sep and name == name.strip(), f"bad header line {line!r}"
            self.header_list.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        self.headers = kilnhttp.Headers()
        for n, v in self.header_list:
            self.headers.setdefault(n, v)
        self.response = kilnhttp.Response("HTTP/1.1", 200, "", self.header_list, b"")
        if "content-length" in self.headers:
            # a complete answer shaped like a stream (a draining instance's
            # "retry: 1000"): the body is exactly that long
            assert "transfer-encoding" not in self.headers, self.header_list
            self.chunked = False
            self.length = int(self.headers["content-length"])
        elif self.chunked:
            assert "chunked" in self.headers.get("transfer-encoding", "").lower(), \
                f"an event stream on HTTP/1.1 must be chunked: {self.header_list}"
        else:
            assert "transfer-encoding" not in self.headers, \
                f"no transfer coding on HTTP/1.0: {self.header_list}"
        rest = bytes(conn.buf[i + 4:])
        conn.buf.clear()
        if rest:
            self._take(rest)

    # -- the body ----------------------------------------------------------

    def _take(self, data):
        decoded = self.decoder.feed(data) if self.chunked else data
        if self.length is not None:
            assert len(self.body) + len(decoded) <= self.length, \
                f"more than Content-Length ({self.length}) bytes: {bytes(self.body) + decoded!r}"
        if self.decoder.rest:
            raise AssertionError(f"bytes after the end of the chunked body: {self.decoder.rest[:100]!r}")
        if decoded:
            self.body += decoded
            got = self.parser.feed(decoded)
            self.items.extend(got)
            self.pending.extend(got)

    def pump(self, deadline):
        """Read once (until ``deadline``); False at the end of the stream."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StreamTimeout("deadline")
        self.conn.sock.settimeout(remaining)
        try:
            data = self.conn.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise StreamTimeout("deadline") from None
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self._take(data)
        return True

    def next_item(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            try:
                more = self.pump(deadline)
            except StreamTimeout:
                raise StreamTimeout(f"nothing more within {timeout} s; received so far "
                                    f"{bytes(self.body)[-600:]!r}") from None
            if not more:
                raise StreamClosed(f"stream ended (clean end: {self.decoder.done}); received "
                                   f"{bytes(self.body)[-600:]!r}")
        return self.pending.pop(0)

    def next_message(self, timeout=None):
        """The next dispatched message of any type (comments and retry skipped)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            kind, value = self.next_item(max(0.0, deadline - time.monotonic()))
            if kind == "message":
                return value

    def next_event(self, timeout=None):
        """The next change event (a reset or any other typed message fails)."""
        return FeedEvent(self.next_message(timeout))

    def collect(self, count, timeout=None):
        """The next ``count`` change events."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = []
        while len(out) < count:
            try:
                out.append(self.next_event(max(0.0, deadline - time.monotonic())))
            except (StreamTimeout, StreamClosed) as e:
                raise type(e)(f"got {len(out)} of {count} events {out}: {e}") from None
        return out

    def until(self, predicate, timeout=None):
        """Change events up to and including the first for which
        ``predicate(event)`` is true."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = []
        while True:
            try:
                ev = self.next_event(max(0.0, deadline - time.monotonic()))
            except (StreamTimeout, StreamClosed) as e:
                raise type(e)(f"after {out}: {e}") from None
            out.append(ev)
            if predicate(ev):
                return out

    def expect_no_event(self, seconds):
        """Nothing but comments for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                kind, value = self.next_item(max(0.0, deadline - time.monotonic()))
            except StreamTimeout:
                return
            assert kind != "message", f"unexpected message {value!r}"

    def wait_closed(self, timeout=5.0):
        """Read to the end of the stream (within ``timeout``); returns the
        items that arrived meanwhile."""
        deadline = time.monotonic() + timeout
        start = len(self.items)
        try:
            while self.pump(deadline):
                pass
        except StreamTimeout:
            raise AssertionError(f"the stream stayed open for {timeout} s; last bytes "
                                 f"{bytes(self.body)[-300:]!r}") from None
        self.pending.clear()
        return self.items[start:]

    def comments(self):
        return [v for k, v in self.items if k == "comment"]

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
