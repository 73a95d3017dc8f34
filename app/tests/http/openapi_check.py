"""Every JSON response the black-box suite receives through ``requests`` is
checked against the OpenAPI document kiln generates (``$KILN_BIN openapi``,
the bytes it serves at /api/openapi; app/src/api/openapi.c): the status must
be one the operation lists (the document lists every status an operation
can answer), and the body must match that response's schema; any error
(4xx/5xx) must match the error envelope. conftest.py installs the check for
the whole session.

``Document`` holds the logic for any document (the property-based run,
test_openapi_properties.py, uses it on the document the server under test
serves); the module-level ``operation`` and ``check`` use the binary's.
"""

import json
import re
import subprocess

import jsonschema
import requests

import kilnhttp


def _generated():
    """The document, from the binary under test: no configuration, no
    database (`kiln openapi`)."""
    out = subprocess.run([kilnhttp.KILN_BIN, "openapi"], capture_output=True, timeout=60,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kilnhttp.KILN_BIN} openapi failed: {out.stderr.decode()!r}")
    return json.loads(out.stdout)


DOC = _generated()
COMPONENTS = DOC["components"]


class SchemaMismatch(AssertionError):
    pass


def media_type(content_type):
    """'application/json; charset=utf-8' -> 'application/json'."""
    return (content_type or "").split(";")[0].strip().lower()


class Document:
    """One OpenAPI document: operations by request path, the documented
    response of a status, and schema validation with root-relative $refs
    (#/components/...) resolved inside the document."""

    def __init__(self, doc, format_checker=None):
        self.doc = doc
        self.components = doc.get("components", {})
        self.format_checker = format_checker
        self._ops = []   # (regex, {method: operation}, literal segments)
        for template, ops in doc.get("paths", {}).items():
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            literal = sum(1 for seg in template.split("/") if seg and "{" not in seg)
            self._ops.append((re.compile(pattern), ops, literal))
        # A literal segment wins over a parameter (/uploads/types, not /uploads/{key}).
        self._ops.sort(key=lambda entry: -entry[2])
        self._validators = {}

    def validator(self, schema):
        key = json.dumps(schema, sort_keys=True)
        v = self._validators.get(key)
        if v is None:
            # Root-relative $refs (#/components/...) resolve inside this wrapper.
            v = jsonschema.Draft202012Validator(dict(schema, components=self.components),
                                                format_checker=self.format_checker)
            self._validators[key] = v
        return v

    def errors(self, schema, body):
        """What ``schema`` rejects in ``body``, as sorted jsonschema errors."""
        return sorted(self.validator(schema).iter_errors(body), key=lambda e: list(e.path))

    def operation(self, method, path):
        path = _normalize(path)
        for regex, ops, _ in self._ops:
            if regex.match(path):
                return ops.get(method.lower())
        return None

    def documented_response(self, op, status):
        """The operation's response object for ``status`` ("404", then
        "4XX", then "default"), through its $ref to components/responses if
        it has one; or None."""
        responses = op.get("responses", {})
        status = str(status)
        for key in (status, status[0] + "XX", status[0] + "xx", "default"):
            if key in responses:
                resp = responses[key]
                ref = (resp or {}).get("$ref")
                if ref:
                    resp = self.components.get("responses", {}).get(ref.rsplit("/", 1)[1])
                return resp
        return None

    @staticmethod
    def json_schema_of(doc_resp):
        for mtype, content in (doc_resp or {}).get("content", {}).items():
            if media_type(mtype) == "application/json":
                return content.get("schema")
        return None

    def check(self, response):
        """Raise SchemaMismatch when a JSON response breaks the document."""
        ctype = response.headers.get("content-type", "")
        if not ctype.startswith("application/json") or not response.content:
            return
        try:
            body = json.loads(response.content)
        except ValueError as e:
            raise SchemaMismatch(f"{response.request.method} {response.url}: "
                                 f"{response.status_code} body is not JSON: {e}")
        req = response.request
        path = requests.utils.urlparse(req.url).path
        op = self.operation(req.method, path)
        status = str(response.status_code)
        schema = None
        if op is not None:
            doc_resp = self.documented_response(op, status)
            if doc_resp is None:
                raise SchemaMismatch(f"{req.method} {path}: status {status} is not documented")
            if doc_resp is not None:
                schema = self.json_schema_of(doc_resp)
        if schema is None and response.status_code >= 400:
            schema = {"$ref": "#/components/schemas/Error"}
        if schema is None:
            return
        errors = self.errors(schema, body)
        if errors:
            e = errors[0]
            raise SchemaMismatch(f"{req.method} {path} -> {status}: {e.message} "
                                 f"at {'/'.join(map(str, e.path)) or '(root)'}: {body!r:.300}")


def _normalize(path):
    path = "/" + "/".join(seg for seg in path.split("/") if seg)
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        path = "/api/v1/" + path[len("/api/"):]        # the /api alias
    return path


FILE_DOCUMENT = Document(DOC)


def operation(method, path):
    return FILE_DOCUMENT.operation(method, path)


def check(response):
    """Raise SchemaMismatch when a JSON response breaks the document."""
    FILE_DOCUMENT.check(response)


def install():
    """Check every response requests.Session receives (requests.get and
    friends go through it); returns a function that undoes it."""
    original = requests.Session.send

    def send(self, request, **kwargs):
        response = original(self, request, **kwargs)
        if not kwargs.get("stream"):
            check(response)
        return response

    requests.Session.send = send
    return lambda: setattr(requests.Session, "send", original)
