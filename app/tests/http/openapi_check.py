"""Every JSON response the black-box suite receives through ``requests`` is
checked against the OpenAPI document kiln generates (``$KILN_BIN openapi``,
the bytes it serves at /api/openapi; app/src/api/openapi.c): the status must
be one the operation lists (the document lists every status an operation
can answer), and the body must match that response's schema; any error
(4xx/5xx) must match the error envelope. conftest.py installs the check for
the whole session.
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

_ops = []   # (regex, {method: operation})
for template, ops in DOC["paths"].items():
    pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
    _ops.append((re.compile(pattern), ops))

_validators = {}


def _validator(schema):
    key = json.dumps(schema, sort_keys=True)
    v = _validators.get(key)
    if v is None:
        # Root-relative $refs (#/components/...) resolve inside this wrapper.
        v = jsonschema.Draft202012Validator(dict(schema, components=COMPONENTS))
        _validators[key] = v
    return v


def _normalize(path):
    path = "/" + "/".join(seg for seg in path.split("/") if seg)
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        path = "/api/v1/" + path[len("/api/"):]        # the /api alias
    return path


def operation(method, path):
    path = _normalize(path)
    for regex, ops in _ops:
        if regex.match(path):
            return ops.get(method.lower())
    return None


def _resolve(response):
    """A response, through its $ref to components/responses if it has one."""
    ref = (response or {}).get("$ref")
    if ref:
        return COMPONENTS["responses"][ref.rsplit("/", 1)[1]]
    return response


class SchemaMismatch(AssertionError):
    pass


def check(response):
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
    op = operation(req.method, path)
    status = str(response.status_code)
    schema = None
    if op is not None:
        doc_resp = _resolve(op["responses"].get(status))
        if doc_resp is None:
            raise SchemaMismatch(f"{req.method} {path}: status {status} is not documented")
        schema = doc_resp.get("content", {}).get("application/json", {}).get("schema")
    if schema is None and response.status_code >= 400:
        schema = {"$ref": "#/components/schemas/Error"}
    if schema is None:
        return
    errors = sorted(_validator(schema).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise SchemaMismatch(f"{req.method} {path} -> {status}: {e.message} "
                             f"at {'/'.join(map(str, e.path)) or '(root)'}: {body!r:.300}")


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
