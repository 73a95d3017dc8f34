"""A property-based run generated from the OpenAPI document that the kiln
under test serves at GET /api/openapi (whatever document that is: the test
reads nothing else about the routes).

For every operation of the document, Hypothesis (Debian's
python3-hypothesis) draws requests from the operation itself: path and
query parameters and JSON bodies from their schemas ($refs resolved; types,
enums, const, minLength/maxLength, minimum/maximum, patterns, required,
formats uuid/date/date-time/email), then, in most examples, breaks one
thing: a value of the wrong type, a string one past its length bounds, a
number out of range, a bad enum value or format, a missing required field,
an unknown field, malformed JSON, invalid UTF-8, a body that is not an
object, an empty or absent body, a wrong Content-Type, deeply nested JSON,
a non-UUID id, a path segment or query that does not decode, an unknown or
repeated query parameter, a Content-Length over MAX_REQUEST_BODY_BYTES, a
header section over 16 KiB. Requests go with user A's session (Bearer, or
the cookie with the CSRF rules' headers), anonymously, or with a token that
is no session. Ids in paths are real rows of A (made through the API, and
every id a response shows is remembered), rows of another user B, or random
values. One request in five for a /api/v1 path goes to its /api alias
(API.md), unless the document lists the alias paths itself (they are then
explored on their own, with a quarter of the examples).

Every response must keep the document:
  * no 5xx, except a 503 that carries `retry-after`;
  * its status is one the operation lists ("404", "4XX" or "default");
  * a JSON body matches the schema of that response (the error envelope
    when the status is not documented), with formats uuid, date and
    date-time checked; a body of a media type the response does not list
    is a mismatch too.
The run does not stop at the first problem: every distinct problem
(operation, kind, status, message) is collected with its first request and
response, written out in full (method, path, query, headers, body, and the
answer with its body), and the test fails with the list at the end. The
server's own log lines of that request (matched by x-request-id) come with
each 5xx.

Hypothesis runs derandomized without a database, so a run is reproducible;
it only generates (no shrinking): the server's state moves under the run,
so replaying an example is not the same experiment, and each problem is
reported with the exact request that showed it instead. Examples per
operation: EXAMPLES (fewer under ASan, KILN_SANITIZED=1).
test_the_run_catches_a_document_that_lies proves the run can fail: against
the served document with a status removed and a schema that lies, it must
report both.

The kiln under test has rate limiting off (RATE_LIMIT_PROTECTED=0,
RATE_LIMIT_PUBLIC=0), the suite's OIDC provider (oauth2-mock-server)
configured as "mock", "google" and "apple", so that /auth/{provider} and
its callbacks run for real (one callback example in ten completes a real
authorization at the provider first), and the suite's S3 (s3rver) with a
bucket, so that the uploads routes reach S3 (a presigned POST the run gets
is completed by uploading a file, so that uploads exist to show, download
and delete). Nothing is skipped.

Runs in every store mode (embedded, postgres, pgbouncer), plain and under
ASan; it needs node and the npm packages of scripts/npm-deps.sh, as the
login and uploads tests do.

For a longer hunt: KILN_PROP_EXAMPLES=N (examples per operation),
KILN_PROP_OPS=REGEX (only the operations "METHOD /path" it matches),
KILN_PROP_REPORT=FILE (the problems, what was accepted that the request
schemas reject, and the statuses seen per operation, written to FILE).
"""

import base64
import collections
import datetime
import json
import os
import re
import signal
import tempfile
import time
import urllib.parse
import uuid

import jsonschema
import pytest
import hypothesis.configuration
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import authkit as ak
import kilnhttp
import openapi_check
import test_uploads as up
from oidcmock import OidcMock, problem as mock_problem

# Hypothesis keeps a cache (the Unicode tables behind st.characters) in
# .hypothesis of the working folder; not in the repository.
hypothesis.configuration.set_hypothesis_home_dir(
    os.path.join(tempfile.gettempdir(), f"kiln-hypothesis-{os.getuid()}"))

SANITIZED = bool(os.environ.get("KILN_SANITIZED"))
EXAMPLES = int(os.environ.get("KILN_PROP_EXAMPLES") or (40 if SANITIZED else 100))
# conftest's watchdog is per test; this test re-arms it per operation.
OP_WATCHDOG_SECONDS = 120 if SANITIZED else 60
REQUEST_TIMEOUT = 30.0 if SANITIZED else 10.0
MAX_BODY = 2000000            # MAX_REQUEST_BODY_BYTES's default (docs/ENVIRONMENT.md)
HEADER_LIMIT = 16 * 1024      # request line + headers (docs/ENVIRONMENT.md)
FOREIGN_ORIGIN = "https://evil.example"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Values a random string would almost never hit, so that valid examples
# reach the success paths too: the content types API.md allows for uploads,
# and the providers this kiln has configured.
HINTS = {
    "content_type": ["text/plain", "image/png", "image/jpeg", "image/gif", "image/webp",
                     "application/pdf"],
    "provider": ["mock", "google", "apple"],
    "filename": ["a.txt", "report.pdf", "photo.png", "../../x.txt", "a b?.txt"],
}


# --------------------------------------------------------------------------
# the document
# --------------------------------------------------------------------------

def _pointer(doc, ref):
    if not ref.startswith("#/"):
        raise AssertionError(f"only document-local $refs are supported, got {ref!r}")
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(doc, node):
    """``node`` with its $ref followed (siblings of the $ref win)."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        seen += 1
        if seen > 50:
            raise AssertionError(f"$ref loop at {node['$ref']}")
        target = _pointer(doc, node["$ref"])
        node = dict(target, **{k: v for k, v in node.items() if k != "$ref"})
    return node


def flatten(doc, schema, depth=0):
    """A schema with $refs followed and allOf merged (shallowly), enough
    to draw values from."""
    s = deref(doc, schema) if isinstance(schema, dict) else {}
    if "allOf" in s and depth < 10:
        merged = {k: v for k, v in s.items() if k != "allOf"}
        for part in s["allOf"]:
            p = flatten(doc, part, depth + 1)
            for k, v in p.items():
                if k == "properties":
                    merged.setdefault("properties", {}).update(v)
                elif k == "required":
                    merged["required"] = sorted(set(merged.get("required", [])) | set(v))
                else:
                    merged.setdefault(k, v)
        s = merged
    return s


class Op:
    """One operation of the document."""

    def __init__(self, doc, path, method, item, op):
        self.doc, self.path, self.method = doc, path, method.upper()
        self.raw = op
        params = {}
        for p in list(item.get("parameters", [])) + list(op.get("parameters", [])):
            p = deref(doc, p)
            params[(p["name"], p.get("in"))] = p
        self.params = list(params.values())
        self.path_params = [p for p in self.params if p.get("in") == "path"]
        self.query_params = [p for p in self.params if p.get("in") == "query"]
        self.header_params = [p for p in self.params if p.get("in") == "header"]
        self.responses = {k: deref(doc, v) for k, v in op.get("responses", {}).items()}
        rb = deref(doc, op.get("requestBody")) if op.get("requestBody") else None
        self.body_required = bool(rb and rb.get("required"))
        self.body_media, self.body_schema = None, None
        if rb:
            content = rb.get("content", {})
            for mtype in content:
                if openapi_check.media_type(mtype) == "application/json":
                    self.body_media, self.body_schema = mtype, content[mtype].get("schema", {})
                    break
            else:
                if content:
                    self.body_media = next(iter(content))
                    self.body_schema = content[self.body_media].get("schema", {})
        security = op.get("security", doc.get("security", []))
        # [] or a requirement list with an empty alternative: no session needed.
        self.secured = bool(security) and all(req for req in security)
        names = re.findall(r"\{([^/}]+)\}", path)
        self.param_names = names
        # The literal part before the first parameter, and the template up
        # to its last parameter (what a remembered value has to fill).
        cut = path.find("{")
        self.prefix = path.rstrip("/") if cut < 0 else path[:cut].rstrip("/")
        last = path.rfind("}")
        self.stem = path if last < 0 else path[:last + 1]
        self.stem_regex = re.compile(
            "^" + re.sub(r"\\\{([^/]+?)\\\}", lambda m: f"(?P<{_group(m.group(1))}>[^/]+)",
                         re.escape(self.stem)) + "$")

    @property
    def name(self):
        return f"{self.method} {self.path}"

    @property
    def has_json_body(self):
        return self.body_media is not None and \
            openapi_check.media_type(self.body_media) == "application/json"

    def __repr__(self):
        return f"<Op {self.name}>"


def _group(name):
    return "p_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def operations(doc):
    out = []
    for path, item in doc.get("paths", {}).items():
        item = deref(doc, item)
        for method in METHODS:
            if method in item:
                out.append(Op(doc, path, method, item, deref(doc, item[method])))
    return out


# --------------------------------------------------------------------------
# values from schemas
# --------------------------------------------------------------------------

RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value):
    if not isinstance(value, str):
        return True
    if not RFC3339_RE.match(value):
        return False
    datetime.datetime.fromisoformat(value[:19])
    return True


@FORMATS.checks("date", raises=ValueError)
def _is_date(value):
    if not isinstance(value, str):
        return True
    if not re.match(r"^\d{4}-\d{2}-\d{2}$", value):
        return False
    datetime.date.fromisoformat(value)
    return True


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value):
    if not isinstance(value, str):
        return True
    return bool(re.match(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                         r"[0-9a-fA-F]{12}$", value))


JSON_TYPES = ("string", "integer", "number", "boolean", "null", "array", "object")
SAMPLE_OF_TYPE = {"string": "x", "integer": 7, "number": 1.5, "boolean": True, "null": None,
                  "array": [1, "a"], "object": {"a": 1}}

printable = st.characters(min_codepoint=0x20, max_codepoint=0x7e)
# Everything but surrogates (not encodable in UTF-8): NUL, controls,
# combining marks, astral characters.
anychar = st.characters(blacklist_categories=("Cs",))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                    allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def types_of(s):
    t = s.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return list(t)
    if "properties" in s or "required" in s or "additionalProperties" in s:
        return ["object"]
    if "items" in s:
        return ["array"]
    if any(k in s for k in ("minLength", "maxLength", "pattern", "format")):
        return ["string"]
    if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return ["number"]
    return None


class Values:
    """Strategies for values a schema accepts (``valid``) and for values it
    rejects (``invalid``), with the run's remembered ids for fields named
    ``<thing>_id`` and HINTS for a few names."""

    def __init__(self, doc, run):
        self.doc = doc
        self.run = run

    def schema_errors(self, schema, value):
        return self.run.document.errors(schema, value)

    # -- valid -----------------------------------------------------------------
    def valid(self, schema, name=None, depth=0):
        s = flatten(self.doc, schema)
        base = self._valid(s, name, depth)
        extra = []
        for key in ("examples",):
            if isinstance(s.get(key), list) and s[key]:
                extra.append(st.sampled_from(s[key]))
        if "example" in s:
            extra.append(st.just(s["example"]))
        if name in HINTS and "enum" not in s and "string" in (types_of(s) or ["string"]):
            extra.append(st.sampled_from(HINTS[name]))
        if name and name.endswith("_id") and "string" in (types_of(s) or ["string"]):
            extra.append(self.run.remembered_id_strategy(name))
        if extra:
            return st.one_of(st.one_of(*extra), base)
        return base

    def _valid(self, s, name, depth):
        if "const" in s:
            return st.just(s["const"])
        if "enum" in s:
            return st.sampled_from(s["enum"])
        if depth < 6:
            for key in ("oneOf", "anyOf"):
                if key in s and s[key]:
                    return st.one_of(*[self.valid(b, name, depth + 1) for b in s[key]])
        types = types_of(s)
        if types is None:
            return json_values
        return st.one_of(*[self._of_type(s, t, name, depth) for t in types if t in JSON_TYPES])

    def _of_type(self, s, t, name, depth):
        if t == "null":
            return st.none()
        if t == "boolean":
            return st.booleans()
        if t == "integer":
            lo = s.get("minimum")
            hi = s.get("maximum")
            if isinstance(s.get("exclusiveMinimum"), (int, float)):
                lo = int(s["exclusiveMinimum"]) + 1
            if isinstance(s.get("exclusiveMaximum"), (int, float)):
                hi = int(s["exclusiveMaximum"]) - 1
            lo = None if lo is None else int(lo)
            hi = None if hi is None else int(hi)
            return st.integers(min_value=lo, max_value=hi)
        if t == "number":
            return st.floats(min_value=s.get("minimum"), max_value=s.get("maximum"),
                             allow_nan=False, allow_infinity=False)
        if t == "string":
            return self._string(s)
        if t == "array":
            lo = s.get("minItems", 0)
            hi = min(s.get("maxItems", lo + 3), lo + 3)
            items = self.valid(s.get("items", {}), None, depth + 1) if depth < 6 else scalars
            return st.lists(items, min_size=lo, max_size=hi)
        if t == "object":
            return self._object(s, depth)
        return json_values

    def _string(self, s):
        fmt, pattern = s.get("format"), s.get("pattern")
        lo, hi = s.get("minLength", 0), s.get("maxLength")
        if fmt == "uuid":
            return st.uuids().map(str)
        if fmt == "date":
            return st.dates().map(lambda d: d.isoformat())
        if fmt == "date-time":
            return st.datetimes(timezones=st.just(datetime.timezone.utc)).map(
                lambda d: d.isoformat().replace("+00:00", "Z"))
        if fmt == "email":
            return st.emails()
        if pattern:
            strat = st.from_regex(pattern, fullmatch=True)
            if lo or hi is not None:
                strat = strat.filter(lambda v: len(v) >= lo and (hi is None or len(v) <= hi))
            return strat
        cap = lo + 40 if hi is None else min(hi, lo + 40)
        options = [st.text(printable, min_size=lo, max_size=cap),
                   st.text(anychar, min_size=lo, max_size=cap)]
        # The bounds themselves, in one character repeated (an astral
        # character is one character and four UTF-8 bytes).
        bounds = sorted({n for n in (lo, hi, (hi or 0) - 1) if n is not None and n >= lo
                         and (hi is None or n <= hi)})
        if bounds:
            options.append(st.builds(lambda c, n: c * n, st.one_of(printable, anychar),
                                     st.sampled_from(bounds)))
        return st.one_of(*options)

    def _object(self, s, depth):
        props = s.get("properties", {})
        required = set(s.get("required", []))

        @st.composite
        def obj(draw):
            out = {}
            for key, sub in props.items():
                if key in required or draw(st.integers(0, 9)) < 7:
                    out[key] = draw(self.valid(sub, key, depth + 1) if depth < 6 else scalars)
            for key in required - set(out):
                out[key] = draw(json_values)    # required but not described
            extra = s.get("additionalProperties")
            if isinstance(extra, dict) and extra and depth < 6:
                for key in draw(st.lists(st.text(printable, min_size=1, max_size=8),
                                         max_size=2)):
                    if key not in props:
                        out[key] = draw(self.valid(extra, key, depth + 1))
            return out
        return obj()

    # -- invalid ---------------------------------------------------------------
    def invalid(self, schema):
        """A strategy of (what, value) that ``schema`` rejects, or None."""
        s = flatten(self.doc, schema)
        options = []
        types = types_of(s)
        if "const" in s or "enum" in s:
            allowed = [s["const"]] if "const" in s else list(s["enum"])
            options.append(st.sampled_from(["bogus", "", "TODO", "Todo", 0, None, True]).filter(
                lambda v: v not in allowed).map(lambda v: ("bad enum value", v)))
        if types is not None:
            wrong = [SAMPLE_OF_TYPE[t] for t in JSON_TYPES
                     if t not in types and not (t == "integer" and "number" in types)]
            if "number" in types:
                wrong = [v for v in wrong if v != 7]
            if wrong:
                options.append(st.sampled_from(wrong).map(lambda v: ("wrong type", v)))
        if "string" in (types or []):
            hi, lo = s.get("maxLength"), s.get("minLength", 0)
            if hi is not None:
                options.append(st.builds(lambda c, n: ("too long", c * n),
                                         st.sampled_from(["a", "é", "\U0001F600", " "]),
                                         st.integers(hi + 1, hi + 5)))
            if lo > 0:
                options.append(st.builds(lambda c: ("too short", c * (lo - 1)),
                                         st.sampled_from(["a", "é"])))
            if s.get("format") or s.get("pattern"):
                options.append(st.sampled_from(
                    ["not-a-uuid", "2024-13-45", "2024-02-30", "yesterday", "",
                     "0B7E1C2A-9F7E-4C43-9A49-7D5F2F7F1A11",
                     "0b7e1c2a-9f7e-4c43-9a49-7d5f2f7f1a110",
                     "0b7e1c2a9f7e4c439a497d5f2f7f1a11", "2024-01-01T00:00:00",
                     "0000-00-00", "\u0661\u0662\u0663\u0664-01-01"]).map(
                    lambda v: ("bad format", v)))
        if types and ("integer" in types or "number" in types):
            bad = []
            if s.get("minimum") is not None:
                bad += [s["minimum"] - 1, s["minimum"] - 1000]
            if s.get("maximum") is not None:
                bad += [s["maximum"] + 1, s["maximum"] + 1000]
            bad += [10 ** 20, -10 ** 20, 2 ** 63]
            options.append(st.sampled_from(bad).map(lambda v: ("out of range", v)))
        if not options:
            return None
        # Keep only what the schema really rejects (a bound may not exist,
        # a type list may take the value after all).
        return st.one_of(*options).filter(lambda wv: self.schema_errors(s, wv[1]))


# --------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------

class Req:
    def __init__(self, op, method, path, query, headers, body, what, who, real=()):
        self.op = op
        self.method = method
        self.path = path              # as sent (percent-encoded)
        self.query = query            # as sent, without "?", or ""
        self.headers = headers        # [(name, value)]
        self.body = body              # bytes or None
        self.what = what              # ["what was broken", ...] ([] for a valid request)
        self.who = who
        self.real = real              # [(pool, value, owner)] remembered values in the path
        self.request_id = None
        self.json_body = None         # the body as Python data when it is JSON

    @property
    def target(self):
        return self.path + ("?" + self.query if self.query else "")

    def label(self):
        return "valid" if not self.what else "; ".join(self.what)

    def render(self):
        lines = [f"{self.method} {self.target}    [{self.label()}; session: {self.who}]"]
        for name, value in self.headers:
            if name.lower() in ("authorization", "cookie"):
                value = value[:24] + "…" if len(value) > 24 else value
            lines.append(f"  {name}: {value[:200]}{'…' if len(value) > 200 else ''}")
        if self.body is not None:
            shown = self.body[:1500]
            lines.append(f"  body ({len(self.body)} bytes): {shown!r}"
                         f"{'…' if len(self.body) > 1500 else ''}")
        return "\n".join(lines)


def render_response(resp):
    if resp is None:
        return "  (no response)"
    lines = [f"  -> {resp.status} {resp.reason}"]
    for name, value in resp.header_list:
        if name in ("set-cookie",):
            value = value[:40] + "…"
        lines.append(f"     {name}: {value}")
    if resp.body:
        lines.append(f"     body: {resp.body[:1500]!r}{'…' if len(resp.body) > 1500 else ''}")
    return "\n".join(lines)


def encode_segment(value):
    """One path segment or query component, percent-encoded; a segment of
    dots only is encoded too, so that it reaches the router as a value and
    not as a dot segment."""
    text = urllib.parse.quote(str(value), safe="")
    return text.replace(".", "%2E") if text and set(text) == {"."} else text


def query_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


BAD_ESCAPES = ["%zz", "%", "%0", "%00", "%2F", "%c3%28", "%ff", "a%2Fb", "%2e%2e", ".."]
MALFORMED_BODIES = [b"{", b"{\"a\":", b"nul", b"{'a': 1}", b"{\"a\" 1}", b"[1,]", b"\xff\xfe{}",
                    b"{\"title\": \"\xc3\x28\"}", b"{\"a\":1}{\"b\":2}", b"{\"a\":1} x",
                    b"\x00", b"{\"a\":\"\\ud800\"}", b"{\"a\": 1e999999}", b"{\"a\":01}"]
NON_OBJECTS = ["[]", "[{}]", "\"text\"", "42", "null", "true", "-0.5"]


class Exploration:
    """One run: the server, its document, the sessions, what the run
    remembers (ids, keys), the connection, and what it found."""

    def __init__(self, srv, mock, doc, s3):
        self.srv, self.mock, self.s3 = srv, mock, s3
        self.doc = doc
        self.document = openapi_check.Document(doc, format_checker=FORMATS)
        self.ops = operations(doc)
        self.values = Values(doc, self)
        self.error_schema = ({"$ref": "#/components/schemas/Error"}
                             if "Error" in doc.get("components", {}).get("schemas", {}) else None)
        self.conn = None
        self.sent = 0
        self.tokens = {}
        # pool (a path prefix) -> {value: owner}; values known to be gone
        self.pools = collections.defaultdict(dict)
        self.gone = set()
        self.problems = collections.OrderedDict()    # key -> dict
        self.observations = collections.OrderedDict()
        self.statuses = collections.defaultdict(collections.Counter)
        self.replenish_failures = collections.Counter()
        self.fatal = None

    # -- sessions --------------------------------------------------------------
    def login(self, who):
        self.tokens[who] = ak.session_for(self.srv, email=ak.unique_email(f"prop-{who}"))
        return self.tokens[who]

    # -- the connection ------------------------------------------------------------
    def send(self, req, fresh=False):
        self.sent += 1
        req.request_id = f"prop-{os.getpid()}-{self.sent}"
        data = kilnhttp.http_request(req.method, req.target, headers=req.headers, body=req.body,
                                     host=f"127.0.0.1:{self.srv.port}",
                                     request_id=req.request_id)
        for attempt in (1, 2):
            reused = self.conn is not None and not fresh
            if fresh or self.conn is None:
                self.close()
                self.conn = self.srv.connect(timeout=REQUEST_TIMEOUT)
            try:
                self.conn.send_quiet(data)
                resp = self.conn.read_final_response(timeout=REQUEST_TIMEOUT)
            except kilnhttp.ServerClosed:
                self.close()
                if reused and attempt == 1 and self.srv.running():
                    continue        # an idle keep-alive connection closed under us
                raise
            except (AssertionError, OSError):
                self.close()
                raise
            if (resp.headers.get("connection", "").lower() == "close" or fresh
                    or getattr(resp, "stream", False)):
                self.close()
            return resp

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- remembered ids ----------------------------------------------------------
    def remember(self, op, body, owner):
        """Ids and keys a 2xx body shows, under the operation's prefix and
        each prefix above it."""
        found = []
        if isinstance(body, dict):
            data = body.get("data")
            for item in ([data] if isinstance(data, dict) else
                         data if isinstance(data, list) else []):
                # Not the caller's own session (GET /sessions marks it
                # current): ending it is allowed, and would turn the rest
                # of the run into 401s.
                if isinstance(item, dict) and isinstance(item.get("id"), str) and \
                        item.get("current") is not True:
                    found.append(item["id"])
            if isinstance(body.get("key"), str):
                found.append(body["key"])
            for f in body.get("files", []) if isinstance(body.get("files"), list) else []:
                if isinstance(f, dict) and isinstance(f.get("key"), str):
                    found.append(f["key"])
        prefix = op.prefix
        while prefix:
            for v in found:
                if v not in self.gone:
                    self.pools[prefix][v] = owner
            prefix = prefix.rsplit("/", 1)[0]

    def forget(self, req):
        for _, value, _ in req.real:
            self.gone.add(value)

    def real_params(self, op, owner):
        """[(param values, [(pool, value, owner)])] that fill the
        operation's path from remembered values of ``owner``."""
        out = []
        prefix = op.prefix
        while prefix:
            for value, who in list(self.pools.get(prefix, {}).items()):
                if who != owner or value in self.gone:
                    continue
                m = op.stem_regex.match(prefix + "/" + value)
                if m:
                    vals = {n: urllib.parse.unquote(m.group(_group(n))) for n in op.param_names}
                    out.append((vals, [(prefix, value, owner)]))
                elif op.stem == prefix + "/{" + op.param_names[0] + "}" and \
                        len(op.param_names) == 1:
                    out.append(({op.param_names[0]: value}, [(prefix, value, owner)]))
            prefix = prefix.rsplit("/", 1)[0]
        return out

    def remembered_id_strategy(self, field):
        """For a field ``project_id``: ids remembered under .../projects."""
        @st.composite
        def pick(draw):
            plural = field[:-3] + "s"
            # Draw first, whatever the pool holds: what Hypothesis draws
            # may not depend on the server's state.
            index = draw(st.integers(0, 2 ** 16))
            ids = sorted({v for pool, vals in self.pools.items() if pool.endswith("/" + plural)
                          for v, who in vals.items() if who == "A" and v not in self.gone})
            if not ids:
                return str(uuid.uuid4())
            return ids[index % len(ids)]
        return pick()

    # -- seeding: rows through the API -----------------------------------------
    def seed_value(self, schema, name, who):
        s = flatten(self.doc, schema)
        if "const" in s:
            return s["const"]
        if "enum" in s:
            return s["enum"][0]
        types = types_of(s) or ["string"]
        if "string" in types:
            if name and name.endswith("_id"):
                plural = name[:-3] + "s"
                for pool, vals in self.pools.items():
                    if pool.endswith("/" + plural):
                        for v, owner in vals.items():
                            if owner == who and v not in self.gone:
                                return v
            if name in HINTS:
                return HINTS[name][0]
            fmt = s.get("format")
            if fmt == "uuid" or (s.get("pattern") and "0-9a-f" in s["pattern"]):
                return str(uuid.uuid4())
            if fmt == "date":
                return "2030-01-31"
            if fmt == "date-time":
                return "2030-01-31T12:00:00Z"
            if fmt == "email":
                return ak.unique_email("seed")
            text = "seed " + uuid.uuid4().hex[:8]
            lo, hi = s.get("minLength", 0), s.get("maxLength")
            text = text.ljust(lo, "x")
            return text[:hi] if hi is not None else text
        if "integer" in types or "number" in types:
            return s.get("minimum", 1)
        if "boolean" in types:
            return False
        if "object" in types:
            return {k: self.seed_value(v, k, who) for k, v in s.get("properties", {}).items()}
        if "array" in types:
            return []
        return None

    def seed(self, op, who, count=2, nested=False):
        """Up to ``count`` rows of ``who`` made with ``op`` (a POST without
        path parameters); each answer is checked like any other. A field
        ``<thing>_id`` takes a row of .../<thing>s, made first if need be."""
        schema = flatten(self.doc, op.body_schema)
        for field in schema.get("properties", {}):
            plural = field[:-3] + "s" if field.endswith("_id") else None
            if plural and not nested and not any(
                    pool.endswith("/" + plural) and who in vals.values()
                    for pool, vals in self.pools.items()):
                for other in self.seed_ops():
                    if other.prefix.endswith("/" + plural):
                        self.seed(other, who, count=1, nested=True)
        made = 0
        for _ in range(count):
            body = self.seed_value(op.body_schema, None, who)
            raw = json.dumps(body).encode()
            req = Req(op, "POST", op.path, "", [("Authorization", f"Bearer {self.tokens[who]}"),
                                                ("Content-Type", "application/json")],
                      raw, [], f"{who} (seeding)")
            req.json_body = body
            resp = self.exchange(req, owner=who)
            if resp is not None and 200 <= resp.status < 300:
                made += 1
        return made

    def seed_ops(self):
        return [op for op in self.ops if op.method == "POST" and op.secured and op.has_json_body
                and not op.param_names]

    def seed_all(self):
        for _ in range(3):            # a row may need another's id (a task, its project)
            for op in self.seed_ops():
                for who in ("A", "B"):
                    have = sum(1 for v, o in self.pools.get(op.prefix, {}).items()
                               if o == who and v not in self.gone)
                    if have < 2:
                        self.seed(op, who)

    def seed_ops_for(self, prefix):
        """The seeding operations that make rows for paths under ``prefix``:
        those at the prefix itself (POST /notes for /notes/{id}), else
        those under its parent (POST /uploads/presign for
        /uploads/users/{user_id}/uploads/{name})."""
        ops = self.seed_ops()
        exact = [o for o in ops if o.prefix == prefix or o.prefix.startswith(prefix + "/")]
        if exact:
            return exact
        return [o for o in ops if prefix.startswith(o.prefix.rsplit("/", 1)[0] + "/")
                and o.prefix.rsplit("/", 1)[0].count("/") > 1]

    def replenish(self, op):
        """Before an example on a path with ids: rows of A and B to use
        (the DELETE examples use them up)."""
        if not op.param_names or not op.secured:
            return
        for who in ("A", "B"):
            if self.real_params(op, who):
                self.replenish_failures[(op.name, who)] = 0
                continue
            if self.replenish_failures[(op.name, who)] >= 3:
                continue            # this path cannot be filled from what the run makes
            for seed_op in self.seed_ops_for(op.prefix):
                self.seed(seed_op, who, count=1)
            if not self.real_params(op, who):
                self.replenish_failures[(op.name, who)] += 1

    # -- one exchange, checked -----------------------------------------------------
    def exchange(self, req, owner=None, fresh=False):
        if self.fatal:
            return None
        try:
            resp = self.send(req, fresh=fresh)
        except (AssertionError, OSError) as e:
            if not self.srv.running():
                self.fatal = (f"kiln died (exit {self.srv.proc.poll()}) on this request:\n"
                              f"{req.render()}\nstderr tail:\n{self.srv.stderr_text()[-3000:]}")
                self.record(req, None, "crash", "server died", f"{type(e).__name__}: {e}")
            else:
                self.record(req, None, "no-response", type(e).__name__, str(e)[:300])
            return None
        self.statuses[req.op.name][resp.status] += 1
        for kind, key, message in self.check(req, resp):
            self.record(req, resp, kind, key, message)
        if 200 <= resp.status < 300:
            body = self._json(resp)
            self.remember(req.op, body, owner or self._owner(req))
            if isinstance(body, dict) and isinstance(body.get("fields"), dict) and \
                    isinstance(body.get("url"), str) and self.s3 is not None:
                self.complete_upload(body)
            if req.method == "DELETE":
                self.forget(req)
            if req.op.has_json_body and req.json_body is not None and req.body is not None and \
                    req.what and self.document.errors(req.op.body_schema, req.json_body):
                self.observe(req, resp, "accepted-invalid",
                             f"2xx for a body the requestBody schema rejects ({req.label()})")
        elif resp.status == 404 and req.real and req.real[0][2] == self._owner(req) \
                and not req.what:
            self.forget(req)
        return resp

    def _owner(self, req):
        return {"A": "A", "A-cookie": "A", "A-cookie+origin": "A",
                "A-cookie+foreign-origin": "A"}.get(req.who, req.who)

    @staticmethod
    def _json(resp):
        if not openapi_check.media_type(resp.headers.get("content-type")) == "application/json":
            return None
        try:
            return json.loads(resp.body)
        except ValueError:
            return None

    def complete_upload(self, presigned):
        """A presigned POST: send the file to S3 as a browser would, so
        that the key exists for the show/download/delete examples."""
        ctype = presigned["fields"].get("Content-Type") or "text/plain"
        try:
            up.post_form(presigned, b"property run\n", ctype)
        except Exception as e:         # S3 is not what is tested here
            print(f"uploading to S3 failed: {e}")

    # -- the checks ----------------------------------------------------------------
    def check(self, req, resp):
        """[(kind, key, message)] of what ``resp`` breaks."""
        out = []
        op, status = req.op, resp.status
        if status >= 500 and not (status == 503 and "retry-after" in resp.headers):
            out.append(("5xx", str(status), f"{status} "
                        + ("without retry-after" if status == 503 else "from the server")))
        doc_resp = self.document.documented_response(op.raw, status)
        if doc_resp is None:
            out.append(("undocumented-status", str(status),
                        f"status {status} is not among {sorted(op.responses)}"))
        mtype = openapi_check.media_type(resp.headers.get("content-type"))
        documented_types = [openapi_check.media_type(m)
                            for m in (doc_resp or {}).get("content", {})]
        if resp.body and doc_resp is not None and documented_types and \
                mtype not in documented_types and "*/*" not in documented_types:
            out.append(("content-type", f"{status} {mtype}",
                        f"{status} answered {mtype!r}, the document lists {documented_types}"))
        if mtype == "application/json" and resp.body:
            try:
                body = json.loads(resp.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                out.append(("schema", f"{status} not JSON", f"{status} body is not JSON: {e}"))
                return out
            schema = self.document.json_schema_of(doc_resp) if doc_resp is not None else None
            if schema is None and status >= 400:
                schema = self.error_schema
            if schema is None and doc_resp is not None and not documented_types:
                out.append(("schema", f"{status} undocumented body",
                            f"{status} has a JSON body the document does not describe"))
            if schema is not None:
                errors = self.document.errors(schema, body)
                if errors:
                    e = errors[0]
                    where = "/".join(map(str, e.path)) or "(root)"
                    key = re.sub(r"'[^']*'", "'…'", e.message)[:120]
                    out.append(("schema", f"{status} at {_generic_path(where)}: {key}",
                                f"{status} body breaks the schema at {where}: {e.message[:300]}"))
        return out

    def record(self, req, resp, kind, key, message):
        k = (req.op.name, kind, key)
        entry = self.problems.get(k)
        if entry is None:
            logs = ""
            if kind in ("5xx", "crash", "no-response"):
                logs = self.server_log(req.request_id)
            self.problems[k] = entry = {
                "op": req.op.name, "kind": kind, "message": message, "count": 0,
                "whats": collections.Counter(), "example": req.render(),
                "response": render_response(resp), "logs": logs}
        entry["count"] += 1
        entry["whats"][req.label()] += 1

    def observe(self, req, resp, kind, message):
        k = (req.op.name, kind, req.label())
        if k not in self.observations:
            self.observations[k] = {"op": req.op.name, "kind": kind, "message": message,
                                    "example": req.render(), "response": render_response(resp)}

    def server_log(self, request_id, timeout=1.0):
        deadline = time.monotonic() + timeout
        while True:
            recs, _ = self.srv.log_lines()
            mine = [r for r in recs if r.get("request_id") == request_id]
            if any(r.get("message") == "request" for r in mine) or time.monotonic() > deadline:
                return "\n".join("     log: " + json.dumps(r)[:600] for r in mine)
            time.sleep(0.05)

    # -- reporting -----------------------------------------------------------------
    def report(self):
        lines = []
        for e in self.problems.values():
            whats = ", ".join(f"{w} ×{n}" for w, n in e["whats"].most_common(4))
            lines.append(f"[{e['kind']}] {e['op']}: {e['message']} ({e['count']}×; {whats})")
            lines.append(e["example"])
            lines.append(e["response"])
            if e["logs"]:
                lines.append(e["logs"])
            lines.append("")
        return "\n".join(lines)

    def summary(self):
        return "\n".join(f"[{e['kind']}] {e['op']}: {e['message']} ({e['count']}×)"
                         for e in self.problems.values())

    def coverage(self):
        return "\n".join(f"  {name}: " + ", ".join(f"{s}×{n}" for s, n in sorted(c.items()))
                         for name, c in self.statuses.items())


def _generic_path(where):
    return re.sub(r"/\d+(?=/|$)", "/N", "/" + where)[1:] if where != "(root)" else where


# --------------------------------------------------------------------------
# drawing one request
# --------------------------------------------------------------------------

def request_strategy(run, op):
    values = run.values
    query_invalid = [(p, values.invalid(p.get("schema", {}))) for p in op.query_params]
    query_invalid = [(p, s) for p, s in query_invalid if s is not None]
    # An empty path parameter is another path (/notes/{id} with "" is /notes):
    # path values are never empty.
    path_valid = {p["name"]: values.valid(p.get("schema", {}), p["name"]).filter(
        lambda v: query_text(v) != "") for p in op.path_params}
    path_invalid = [(p, values.invalid(p.get("schema", {}))) for p in op.path_params]
    path_invalid = [(p, s.filter(lambda wv: query_text(wv[1]) != ""))
                    for p, s in path_invalid if s is not None]
    body_schema = flatten(run.doc, op.body_schema) if op.has_json_body else None
    props = body_schema.get("properties", {}) if body_schema else {}
    prop_invalid = [(k, values.invalid(v)) for k, v in props.items()]
    prop_invalid = [(k, s) for k, s in prop_invalid if s is not None]
    required = list(body_schema.get("required", [])) if body_schema else []

    # What one example may break (equal chances per entry; the limits, the
    # same for every operation, once among the others repeated).
    breaks = []
    if op.path_params:
        breaks += ["path: random text", "path: bad escape"]
        if path_invalid:
            breaks += ["path: invalid value", "path: invalid value"]
    # A query that does not decode is refused before any handler runs, on
    # every route: tried everywhere.
    breaks += ["query: unknown parameter", "query: bad escape"]
    if op.query_params:
        breaks += ["query: repeated parameter", "query: empty value"]
        if query_invalid:
            breaks += ["query: invalid value"] * 3
    if op.has_json_body:
        breaks += ["body: malformed JSON", "body: not an object", "body: unknown field",
                   "body: empty", "body: absent", "body: wrong content type",
                   "body: deeply nested"]
        if prop_invalid:
            breaks += ["body: invalid field"] * 4
        if required:
            breaks += ["body: missing required field"] * 2
    elif op.body_media is None:
        breaks += ["body: unexpected body"]
    breaks = breaks * 3 + ["limit: content-length", "limit: header section"]

    # The contract's compatibility alias (API.md: /api/... is /api/v1/...),
    # unless the document describes the alias paths itself.
    alias = op.path.startswith("/api/v1/") and not any(
        o.path.startswith("/api/") and not o.path.startswith("/api/v1") for o in run.ops)

    if op.secured:
        sessions = ["A"] * 5 + ["A-cookie", "A-cookie+origin", "A-cookie+foreign-origin",
                                "anonymous", "not a session"]
    else:
        sessions = ["anonymous"] * 4 + ["fresh session", "not a session"]

    @st.composite
    def draw_request(draw):
        who = draw(st.sampled_from(sessions))
        nbreaks = draw(st.sampled_from([0, 0, 1, 1, 1, 2]))
        what = [draw(st.sampled_from(breaks)) for _ in range(nbreaks)]
        what = sorted(set(what), key=what.index)

        # -- path ----------------------------------------------------------------
        real = []
        path_values = None
        if op.param_names and op.secured:
            choice = draw(st.sampled_from(["own", "own", "own", "other", "random uuid",
                                           "generated", "generated"]))
            # Draw first, whatever the pools hold: what Hypothesis draws may
            # not depend on the server's state.
            index = draw(st.integers(0, 2 ** 16))
            if choice in ("own", "other"):
                owner = "A" if choice == "own" else "B"
                fills = run.real_params(op, owner)
                if fills:
                    path_values, real = fills[index % len(fills)]
                    if choice == "other":
                        what.append("path: another user's id")
            elif choice == "random uuid":
                path_values = {name: str(draw(st.uuids())) for name in op.param_names}
        elif op.param_names:
            fills = [({op.param_names[0]: v}, []) for v in
                     HINTS.get(op.param_names[0], [])]
            if fills and draw(st.booleans()):
                path_values = fills[draw(st.integers(0, len(fills) - 1))][0]
        if path_values is None:
            path_values = {}
            for p in op.path_params:
                path_values[p["name"]] = draw(path_valid[p["name"]])
        segments = {name: encode_segment(query_text(v)) for name, v in path_values.items()}
        if "path: invalid value" in what and path_invalid:
            p, strat = path_invalid[draw(st.integers(0, len(path_invalid) - 1))]
            _, v = draw(strat)
            segments[p["name"]] = encode_segment(query_text(v))
            real = []
        if "path: random text" in what and op.path_params:
            p = op.path_params[draw(st.integers(0, len(op.path_params) - 1))]
            segments[p["name"]] = encode_segment(draw(st.text(anychar, min_size=1, max_size=30)))
            real = []
        if "path: bad escape" in what and op.path_params:
            p = op.path_params[draw(st.integers(0, len(op.path_params) - 1))]
            segments[p["name"]] = (segments.get(p["name"], "") +
                                   draw(st.sampled_from(BAD_ESCAPES)))
            real = []
        path = op.path
        for p in op.param_names:
            path = path.replace("{" + p + "}", segments.get(p, "x"))
        if alias and draw(st.integers(0, 4)) == 0:
            path = "/api/" + path[len("/api/v1/"):]

        # -- query ---------------------------------------------------------------
        query = []
        for p in op.query_params:
            if p.get("required") or draw(st.booleans()):
                v = draw(values.valid(p.get("schema", {}), p["name"]))
                query.append((p["name"], query_text(v)))
        if "query: invalid value" in what and query_invalid:
            p, strat = query_invalid[draw(st.integers(0, len(query_invalid) - 1))]
            _, v = draw(strat)
            query = [(k, x) for k, x in query if k != p["name"]] + [(p["name"], query_text(v))]
        if "query: unknown parameter" in what:
            query.append((draw(st.sampled_from(["x", "page", "sort", "__proto__", "limit[]",
                                                "LIMIT", "q"])),
                          draw(st.text(printable, max_size=10))))
        if "query: repeated parameter" in what and op.query_params:
            p = op.query_params[draw(st.integers(0, len(op.query_params) - 1))]
            for _ in range(2):
                query.append((p["name"], query_text(draw(values.valid(p.get("schema", {}),
                                                                       p["name"])))))
        if "query: empty value" in what and op.query_params:
            p = op.query_params[draw(st.integers(0, len(op.query_params) - 1))]
            query = [(k, x) for k, x in query if k != p["name"]] + [(p["name"], "")]
        qtext = "&".join(f"{encode_segment(k)}={encode_segment(v)}" for k, v in query)
        if "query: bad escape" in what:
            bad = draw(st.sampled_from(["%zz", "%", "%0", "%00", "%c3%28", "%ff"]))
            name = op.query_params[0]["name"] if op.query_params else "x"
            qtext = (qtext + "&" if qtext else "") + f"{name}=a{bad}"

        # -- body ----------------------------------------------------------------
        headers = []
        body = None
        json_body = None
        content_type = op.body_media
        if op.body_media is not None and (op.body_required or draw(st.integers(0, 4)) > 0) \
                and "body: absent" not in what:
            json_body = draw(values.valid(op.body_schema or {}))
            if "body: invalid field" in what and prop_invalid:
                k, strat = prop_invalid[draw(st.integers(0, len(prop_invalid) - 1))]
                _, v = draw(strat)
                json_body = dict(json_body) if isinstance(json_body, dict) else {}
                json_body[k] = v
            if "body: missing required field" in what and required:
                json_body = dict(json_body) if isinstance(json_body, dict) else {}
                json_body.pop(draw(st.sampled_from(required)), None)
            if "body: unknown field" in what:
                json_body = dict(json_body) if isinstance(json_body, dict) else {}
                key = draw(st.text(printable, min_size=1, max_size=12).filter(
                    lambda k: k not in props))
                json_body[key] = draw(json_values)
            if op.has_json_body:
                body = json.dumps(json_body, ensure_ascii=draw(st.booleans())).encode("utf-8")
            else:
                body = urllib.parse.urlencode(json_body if isinstance(json_body, dict) else
                                              {"value": json_body}).encode()
            if "body: malformed JSON" in what:
                body, json_body = draw(st.sampled_from(MALFORMED_BODIES)), None
            if "body: not an object" in what:
                text = draw(st.sampled_from(NON_OBJECTS))
                body, json_body = text.encode(), json.loads(text)
            if "body: deeply nested" in what:
                depth = draw(st.sampled_from([64, 1000, 100000]))
                body, json_body = b"[" * depth + b"]" * depth, None
            if "body: empty" in what:
                body, json_body = b"", None
            if "body: wrong content type" in what:
                content_type = draw(st.sampled_from(
                    ["text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                     "json"]))
        elif "body: unexpected body" in what:
            body = json.dumps(draw(json_values)).encode()
            content_type = "application/json"
        if body is not None:
            headers.append(("Content-Type", content_type))
            if body == b"":
                headers.append(("Content-Length", "0"))

        # -- session -------------------------------------------------------------
        if who == "A":
            headers.append(("Authorization", f"Bearer {run.tokens['A']}"))
        elif who.startswith("A-cookie"):
            headers.append(("Cookie", f"{ak.SESSION_COOKIE}={run.tokens['A']}"))
            if body is None and op.method in ("POST", "PUT", "PATCH"):
                headers.append(("Content-Type", "application/json"))
            if who == "A-cookie+origin":
                headers.append(("Origin", run.srv.env["PUBLIC_URL"]))
            elif who == "A-cookie+foreign-origin":
                headers.append(("Origin", FOREIGN_ORIGIN))
        elif who == "fresh session":
            # Public routes (login, logout) may end the session they get:
            # never A's or B's.
            token = ak.session_for(run.srv, email=ak.unique_email("prop-fresh"))
            if draw(st.booleans()):
                headers.append(("Authorization", f"Bearer {token}"))
            else:
                headers.append(("Cookie", f"{ak.SESSION_COOKIE}={token}"))
        elif who == "not a session":
            token = draw(st.sampled_from([
                base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="),
                ak.tamper(run.tokens["A"], 5), "", "null", "a.b.c"]))
            headers.append(("Authorization", f"Bearer {token}"))

        # -- limits --------------------------------------------------------------
        if "limit: header section" in what:
            headers.append(("X-Padding", "p" * (HEADER_LIMIT + 100)))
        if "limit: content-length" in what:
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
            headers.append(("Content-Length", str(MAX_BODY + 1)))
            body = None    # the server must answer from the headers alone

        req = Req(op, op.method, path, qtext, headers, body, what, who, real)
        req.json_body = json_body
        return req

    return draw_request()


def run_operation(run, op, examples=EXAMPLES):
    strategy = request_strategy(run, op)

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              # Every example is a round trip to a server (and some to S3 or
              # the OIDC provider): slow by Hypothesis's measure.
              suppress_health_check=[HealthCheck.too_slow],
              phases=[Phase.explicit, Phase.generate])
    @given(data=st.data())
    def example(data):
        if run.fatal:
            return
        run.replenish(op)
        req = data.draw(strategy, label=op.name)
        fresh = any(w.startswith("limit:") for w in req.what)
        if op.path.endswith("/callback") and op.path.startswith("/auth/") and \
                data.draw(st.integers(0, 9), label="real authorization") == 0:
            req = real_callback(run, op, req)
        run.exchange(req, fresh=fresh)

    example()


def real_callback(run, op, req):
    """The callback of an authorization the provider really granted: the
    provider's own redirect (GET with code and state; Apple's form POST),
    with the login cookie of GET /auth/{provider}."""
    provider = "apple" if op.method == "POST" else "mock"
    flow = ak.Login(run.srv, run.mock, provider)
    flow.start().authorize()
    path = op.path.replace("{" + op.param_names[0] + "}", provider)
    cookie = f"{ak.LOGIN_COOKIE}={flow.login_cookie}"
    if op.method == "POST":
        body = urllib.parse.urlencode(flow.callback_params).encode()
        headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", cookie),
                   ("Origin", run.mock.issuer)]
        out = Req(op, "POST", path, "", headers, body, [], "login cookie")
    else:
        out = Req(op, "GET", path, urllib.parse.urlencode(flow.callback_params),
                  [("Cookie", cookie)], None, [], "login cookie")
    out.what = []
    return out


# --------------------------------------------------------------------------
# fixtures and the test
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3():
    why = up.s3_problem()
    if why:
        pytest.fail(why, pytrace=False)
    srv = up.S3().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def target(module_kiln, s3):
    why = mock_problem()
    if why:
        pytest.fail(why, pytrace=False)
    mock = OidcMock.shared()
    mock.reset()
    env = dict(ak.provider_env(mock), **up.uploads_env(s3))
    env.update(RATE_LIMIT_PROTECTED=0, RATE_LIMIT_PUBLIC=0)
    return ak.start_kiln(module_kiln, **env), mock


def served_document(srv):
    r = ak.call(srv, "GET", "/api/openapi")
    assert r.status == 200, f"GET /api/openapi: {r!r}"
    return r.json()


def explore(srv, mock, s3, doc, ops=None, seed=True, examples=EXAMPLES):
    run = Exploration(srv, mock, doc, s3)
    run.login("A")
    run.login("B")
    if seed:
        run.seed_all()
    timings = []
    only = os.environ.get("KILN_PROP_OPS")
    for op in run.ops:
        if ops is not None and op.name not in ops:
            continue
        if ops is None and only and not re.search(only, op.name):
            continue
        signal.alarm(OP_WATCHDOG_SECONDS)
        started = time.monotonic()
        # A document that lists the /api alias of a /api/v1 path as an
        # operation of its own: the same handler (API.md), explored lightly.
        alias_of = "/api/v1/" + op.path[len("/api/"):] if op.path.startswith("/api/") else None
        light = alias_of is not None and not op.path.startswith("/api/v1/") and any(
            o.path == alias_of and o.method == op.method for o in run.ops)
        run_operation(run, op, max(10, examples // 4) if light else examples)
        timings.append((time.monotonic() - started, op.name))
        if run.fatal:
            break
    run.close()
    return run, timings


def test_every_operation_keeps_the_served_document(target, s3, tmp_path):
    srv, mock = target
    doc = served_document(srv)
    started = time.monotonic()
    run, timings = explore(srv, mock, s3, doc)
    elapsed = time.monotonic() - started
    # The run must not have lost its session on the way (a public route
    # that ended A's session would have turned the rest into 401s).
    me = ak.me(srv, bearer=run.tokens["A"])
    assert me.status == 200, f"user A's session did not survive the run: {me!r}"
    report = run.report()
    (tmp_path / "findings.txt").write_text(report)
    out = os.environ.get("KILN_PROP_REPORT")
    if out:
        with open(out, "w") as f:
            f.write(report + "\n\nobservations (not failures):\n")
            for o in run.observations.values():
                f.write(f"[{o['kind']}] {o['op']}: {o['message']}\n{o['example']}\n"
                        f"{o['response']}\n\n")
            f.write("\nstatuses per operation:\n" + run.coverage() + "\n")
    print(f"{len(run.ops)} operations, {run.sent} requests in {elapsed:.1f} s "
          f"({EXAMPLES} examples each); slowest: "
          + ", ".join(f"{name} {t:.1f} s" for t, name in sorted(timings, reverse=True)[:3]))
    print("statuses per operation:\n" + run.coverage())
    if run.fatal:
        pytest.fail(run.fatal + "\n\n" + report, pytrace=False)
    if run.problems:
        print(report)
        pytest.fail(f"{len(run.problems)} distinct problems; each one's request and response "
                    f"are printed above (and in {tmp_path / 'findings.txt'}):\n"
                    + run.summary(), pytrace=False)


def test_the_run_catches_a_document_that_lies(target, s3):
    """The run proves something only if it can fail: against the served
    document with the success status of GET /api/v1/me (or the first GET
    without parameters) removed, and the schema of its 401 replaced by one
    no error envelope matches, both must be reported."""
    srv, mock = target
    doc = json.loads(json.dumps(served_document(srv)))
    path = "/api/v1/me" if "/api/v1/me" in doc["paths"] else next(
        p for p, item in doc["paths"].items() if "get" in item and "{" not in p)
    op = deref(doc, doc["paths"][path]["get"])
    doc["paths"][path]["get"] = op
    ok = next(k for k in op["responses"] if k.startswith("2"))
    op["responses"] = {k: v for k, v in op["responses"].items() if k != ok}
    op["responses"]["401"] = {"description": "a lie", "content": {"application/json": {
        "schema": {"type": "object", "required": ["no_such_field"]}}}}
    run, _ = explore(srv, mock, s3, doc, ops={f"GET {path}"}, seed=False, examples=40)
    found = {(e["kind"], e["message"].split()[0 if e["kind"] == "schema" else 1])
             for e in run.problems.values()}
    assert ("undocumented-status", ok) in found, run.summary()
    assert ("schema", "401") in found, run.summary()
