"""A small evaluator for the Terraform expressions this stack uses in names,
validations and settings, so that the policy suite can compute values
(resource names for the longest allowed inputs, the task's environment,
whether a validation accepts a value) instead of pattern-matching text.

hcl2json gives every attribute either as a JSON literal or as a string:
a template such as "${var.project}-${var.environment}", or a whole
expression wrapped as "${substr(...)}". `evaluate(value, ctx)` takes either.

What is supported: string templates ("$${" and "%%{" escapes; no %{ }
directives), numbers, bools, null, lists, objects, for expressions,
references (var.*, local.*, data.*, each.*, count.*; any other reference
is a resource attribute and evaluates to UNKNOWN, as it is at plan time),
indexing and attribute access, the operators (! - * / % + - < <= > >= ==
!= && || ?:) and the functions listed in FUNCTIONS. Anything else raises
EvalError, so a name the suite cannot compute is reported, never passed.
"""

import hashlib
import json
import math
import re


class EvalError(Exception):
    pass


class _Unknown:
    """A value known only after apply (a resource attribute)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "UNKNOWN"


UNKNOWN = _Unknown()


def is_unknown(v):
    if v is UNKNOWN:
        return True
    if isinstance(v, list):
        return any(is_unknown(x) for x in v)
    if isinstance(v, dict):
        return any(is_unknown(x) for x in v.values())
    return False


class Context:
    """Where references resolve.

    vars:   {name: value}
    locals: {name: raw hcl2json value}, evaluated lazily (and memoised)
    data:   {"aws_region.current.name": value, ...} for data sources
    each / count: the iteration of a for_each / count resource
    """

    def __init__(self, vars=None, locals=None, data=None, each=None, count_index=None, path=None):
        self.vars = dict(vars or {})
        self.locals_raw = dict(locals or {})
        self.data = dict(data or {})
        self.each = each
        self.count_index = count_index
        self.path = dict(path or {"module": ".", "root": ".", "cwd": "."})
        self._locals_cache = {}
        self._locals_busy = set()
        self.scopes = []  # for-expression variables, innermost last
        self.keep_json = False  # jsonencode(x) returns x itself

    def child(self, **kw):
        c = Context(self.vars, self.locals_raw, self.data, self.each, self.count_index, self.path)
        c._locals_cache = self._locals_cache
        c._locals_busy = self._locals_busy
        c.keep_json = self.keep_json
        for k, v in kw.items():
            setattr(c, k, v)
        return c

    def local(self, name):
        if name in self._locals_cache:
            return self._locals_cache[name]
        if name not in self.locals_raw:
            raise EvalError(f"local.{name} is not defined")
        if name in self._locals_busy:
            raise EvalError(f"local.{name} refers to itself")
        self._locals_busy.add(name)
        try:
            # Locals never see an iteration's each/count.
            base = Context(self.vars, self.locals_raw, self.data, path=self.path)
            base._locals_cache = self._locals_cache
            base._locals_busy = self._locals_busy
            base.keep_json = self.keep_json
            v = evaluate(self.locals_raw[name], base)
        finally:
            self._locals_busy.discard(name)
        self._locals_cache[name] = v
        return v


# --------------------------------------------------------------------------
# Templates


def _skip_string(s, i):
    """s[i] is '"'; return the index just past the closing quote."""
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        if s.startswith("$${", i):
            i += 3
            continue
        if s.startswith("${", i):
            i = _match_brace(s, i + 2) + 1
            continue
        i += 1
    raise EvalError("unterminated string")


def _match_brace(s, i):
    """Index of the '}' closing a '${' or '{' whose body starts at s[i]."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == '"':
            i = _skip_string(s, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise EvalError("unbalanced braces in " + s)


def template_parts(s):
    """Split a template into ("lit", text) and ("expr", source) parts."""
    parts = []
    buf = []
    i = 0
    while i < len(s):
        if s.startswith("$${", i):
            buf.append("${")
            i += 3
        elif s.startswith("%%{", i):
            buf.append("%{")
            i += 3
        elif s.startswith("%{", i):
            raise EvalError("template directives (%{ }) are not supported")
        elif s.startswith("${", i):
            end = _match_brace(s, i + 2)
            if buf:
                parts.append(("lit", "".join(buf)))
                buf = []
            src = s[i + 2:end].strip()
            # "~" strip markers
            src = src.lstrip("~").rstrip("~").strip()
            parts.append(("expr", src))
            i = end + 1
        else:
            buf.append(s[i])
            i += 1
    if buf:
        parts.append(("lit", "".join(buf)))
    return parts


def _tostr(v):
    if v is UNKNOWN:
        return UNKNOWN
    if v is None:
        raise EvalError("null value in a string template")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _num_str(v)
    if isinstance(v, str):
        return v
    raise EvalError(f"cannot use {type(v).__name__} in a string template")


def _num_str(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def eval_template(s, ctx):
    parts = template_parts(s)
    if len(parts) == 1 and parts[0][0] == "expr":
        return eval_expr(parts[0][1], ctx)
    out = []
    for kind, text in parts:
        if kind == "lit":
            out.append(text)
        else:
            v = _tostr(eval_expr(text, ctx))
            if v is UNKNOWN:
                return UNKNOWN
            out.append(v)
    return "".join(out)


def evaluate(value, ctx):
    """Evaluate an hcl2json value (literal, template string, list, object)."""
    if isinstance(value, str):
        return eval_template(value, ctx)
    if isinstance(value, list):
        return [evaluate(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, ctx) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------
# Expressions: tokenizer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<op>=>|==|!=|<=|>=|&&|\|\||\.\.\.|[-+*/%<>!?:.,()\[\]{}=])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(src):
    toks = []
    i = 0
    while i < len(src):
        c = src[i]
        if c == '"':
            end = _skip_string(src, i)
            toks.append(("str", src[i + 1:end - 1]))
            i = end
            continue
        m = _TOKEN.match(src, i)
        if not m:
            raise EvalError(f"cannot tokenize {src[i:i+20]!r}")
        kind = m.lastgroup
        if kind != "ws":
            toks.append((kind, m.group()))
        i = m.end()
    toks.append(("eof", ""))
    return toks


def _unescape(raw):
    """HCL string escapes, leaving template sequences to template_parts."""
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            n = raw[i + 1]
            mapping = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
            if n in mapping:
                out.append(mapping[n])
                i += 2
                continue
            if n == "u":
                out.append(chr(int(raw[i + 2:i + 6], 16)))
                i += 6
                continue
        out.append(c)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------
# Expressions: parser (to a small AST of tuples) and evaluation


class _Parser:
    def __init__(self, src):
        self.toks = tokenize(src)
        self.i = 0

    def peek(self, k=0):
        return self.toks[self.i + k]

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, kind, text=None):
        t = self.peek()
        if t[0] == kind and (text is None or t[1] == text):
            self.i += 1
            return t
        return None

    def expect(self, kind, text=None):
        t = self.accept(kind, text)
        if not t:
            raise EvalError(f"expected {text or kind}, got {self.peek()[1]!r}")
        return t

    def parse(self):
        e = self.ternary()
        self.expect("eof")
        return e

    def ternary(self):
        c = self.binary(0)
        if self.accept("op", "?"):
            a = self.ternary()
            self.expect("op", ":")
            b = self.ternary()
            return ("cond", c, a, b)
        return c

    _LEVELS = [["||"], ["&&"], ["==", "!="], ["<", "<=", ">", ">="], ["+", "-"], ["*", "/", "%"]]

    def binary(self, level):
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            t = self.peek()
            if t[0] == "op" and t[1] in self._LEVELS[level]:
                self.next()
                right = self.binary(level + 1)
                left = ("bin", t[1], left, right)
            else:
                return left

    def unary(self):
        if self.accept("op", "!"):
            return ("not", self.unary())
        if self.accept("op", "-"):
            return ("neg", self.unary())
        return self.postfix(self.primary())

    def postfix(self, e):
        while True:
            if self.accept("op", "."):
                t = self.next()
                if t[0] == "op" and t[1] == "*":
                    e = ("splat", e, [])
                    continue
                if t[0] not in ("ident", "num"):
                    raise EvalError("bad attribute access")
                e = ("attr", e, t[1])
            elif self.peek() == ("op", "[") and self.peek(1) == ("op", "*") and self.peek(2) == ("op", "]"):
                self.i += 3
                attrs = []
                while self.peek() == ("op", ".") and self.peek(1)[0] == "ident":
                    self.i += 1
                    attrs.append(self.next()[1])
                e = ("splat", e, attrs)
            elif self.accept("op", "["):
                idx = self.ternary()
                self.expect("op", "]")
                e = ("index", e, idx)
            else:
                return e

    def primary(self):
        t = self.next()
        kind, text = t
        if kind == "num":
            return ("lit", float(text) if ("." in text or "e" in text.lower()) else int(text))
        if kind == "str":
            return ("tmpl", text)
        if kind == "op" and text == "(":
            e = self.ternary()
            self.expect("op", ")")
            return e
        if kind == "op" and text == "[":
            if self.peek() == ("ident", "for"):
                return self.for_expr("]")
            items = []
            while not self.accept("op", "]"):
                items.append(self.ternary())
                if not self.accept("op", ","):
                    self.expect("op", "]")
                    break
            return ("list", items)
        if kind == "op" and text == "{":
            if self.peek() == ("ident", "for"):
                return self.for_expr("}")
            items = []
            while not self.accept("op", "}"):
                kt = self.peek()
                if kt[0] == "ident" and self.peek(1)[1] in ("=", ":"):
                    self.next()
                    key = ("lit", kt[1])
                else:
                    key = self.ternary()
                if not (self.accept("op", "=") or self.accept("op", ":")):
                    raise EvalError("expected = in object")
                items.append((key, self.ternary()))
                self.accept("op", ",")
            return ("obj", items)
        if kind == "ident":
            if text in ("true", "false"):
                return ("lit", text == "true")
            if text == "null":
                return ("lit", None)
            if self.accept("op", "("):
                args = []
                expand = False
                while not self.accept("op", ")"):
                    args.append(self.ternary())
                    if self.accept("op", "..."):
                        expand = True
                    if not self.accept("op", ","):
                        self.expect("op", ")")
                        break
                return ("call", text, args, expand)
            return ("ref", text)
        raise EvalError(f"unexpected {text!r}")

    def for_expr(self, close):
        self.expect("ident", "for")
        names = [self.expect("ident")[1]]
        if self.accept("op", ","):
            names.append(self.expect("ident")[1])
        self.expect("ident", "in")
        coll = self.ternary()
        self.expect("op", ":")
        first = self.ternary()
        second = None
        group = False
        if close == "}":
            self.expect("op", "=>")
            second = self.ternary()
            if self.accept("op", "..."):
                group = True
        cond = None
        if self.accept("ident", "if"):
            cond = self.ternary()
        self.expect("op", close)
        return ("for", close, names, coll, first, second, cond, group)


_AST_CACHE = {}


def parse_expr(src):
    ast = _AST_CACHE.get(src)
    if ast is None:
        ast = _Parser(src).parse()
        _AST_CACHE[src] = ast
    return ast


def eval_expr(src, ctx):
    return _eval(parse_expr(src), ctx)


def _truthy(v):
    if v is UNKNOWN:
        return UNKNOWN
    if not isinstance(v, bool):
        if v in ("true", "false"):
            return v == "true"
        raise EvalError(f"condition is not a bool: {v!r}")
    return v


def _num(v):
    if isinstance(v, bool):
        raise EvalError("bool used as a number")
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return float(v)
    raise EvalError(f"not a number: {v!r}")


def _eq(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return type(a) == type(b) and a == b


def _eval(node, ctx):
    op = node[0]
    if op == "lit":
        return node[1]
    if op == "tmpl":
        return eval_template(_unescape(node[1]), ctx)
    if op == "list":
        return [_eval(x, ctx) for x in node[1]]
    if op == "obj":
        out = {}
        for k, v in node[1]:
            key = _eval(k, ctx)
            if key is UNKNOWN:
                raise EvalError("unknown object key")
            out[_tostr(key)] = _eval(v, ctx)
        return out
    if op == "ref":
        return _ref_root(node[1], ctx)
    if op == "attr":
        # references are resolved as whole traversals where possible
        path = _traversal(node)
        if path is not None:
            return _resolve_traversal(path, ctx)
        base = _eval(node[1], ctx)
        return _get(base, node[2])
    if op == "index":
        path = _traversal(node)
        if path is not None:
            return _resolve_traversal(path, ctx)
        base = _eval(node[1], ctx)
        idx = _eval(node[2], ctx)
        return _get(base, idx)
    if op == "splat":
        base = _eval(node[1], ctx)
        if base is UNKNOWN:
            return UNKNOWN
        if base is None:
            return []
        if not isinstance(base, list):
            base = [base]
        out = []
        for item in base:
            for a in node[2]:
                item = _get(item, a)
            out.append(item)
        return out
    if op == "not":
        v = _truthy(_eval(node[1], ctx))
        return UNKNOWN if v is UNKNOWN else (not v)
    if op == "neg":
        v = _eval(node[1], ctx)
        return UNKNOWN if v is UNKNOWN else -_num(v)
    if op == "cond":
        c = _truthy(_eval(node[1], ctx))
        if c is UNKNOWN:
            return UNKNOWN
        return _eval(node[2] if c else node[3], ctx)
    if op == "bin":
        o = node[1]
        if o in ("&&", "||"):
            a = _truthy(_eval(node[2], ctx))
            if a is not UNKNOWN:
                if o == "&&" and not a:
                    return False
                if o == "||" and a:
                    return True
            b = _truthy(_eval(node[3], ctx))
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            return b
        a = _eval(node[2], ctx)
        b = _eval(node[3], ctx)
        if o in ("==", "!=") and ((a is UNKNOWN and b is None) or (b is UNKNOWN and a is None)):
            # Resource attributes the stack compares with null (ARNs, ids)
            # are never null once known.
            return o == "!="
        if a is UNKNOWN or b is UNKNOWN:
            return UNKNOWN
        if o == "==":
            return _eq(a, b)
        if o == "!=":
            return not _eq(a, b)
        a, b = _num(a), _num(b)
        if o == "+":
            return a + b
        if o == "-":
            return a - b
        if o == "*":
            return a * b
        if o == "/":
            return a / b
        if o == "%":
            return a % b
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[o]
    if op == "call":
        return _call(node[1], node[2], node[3], ctx)
    if op == "for":
        return _for(node, ctx)
    raise EvalError(f"cannot evaluate {op}")


def _traversal(node):
    """(root, [steps]) for a reference traversal, or None."""
    steps = []
    while node[0] in ("attr", "index"):
        if node[0] == "attr":
            steps.append(("attr", node[2]))
        else:
            if node[2][0] != "lit":
                return None
            steps.append(("index", node[2][1]))
        node = node[1]
    if node[0] != "ref":
        return None
    steps.reverse()
    return node[1], steps


def _ref_root(name, ctx):
    for scope in reversed(ctx.scopes):
        if name in scope:
            return scope[name]
    raise EvalError(f"bare reference {name}")


def _resolve_traversal(path, ctx):
    root, steps = path
    for scope in reversed(ctx.scopes):
        if root in scope:
            v = scope[root]
            for _, s in steps:
                v = _get(v, s)
            return v
    if not steps or steps[0][0] != "attr":
        raise EvalError(f"bad reference {root}")
    first = steps[0][1]
    rest = steps[1:]
    if root == "var":
        if first not in ctx.vars:
            raise EvalError(f"var.{first} has no value")
        v = ctx.vars[first]
    elif root == "local":
        v = ctx.local(first)
    elif root == "each":
        if ctx.each is None:
            raise EvalError("each.* outside for_each")
        v = ctx.each[first]
    elif root == "count":
        if ctx.count_index is None:
            raise EvalError("count.index outside count")
        v = ctx.count_index
    elif root == "path":
        v = ctx.path.get(first, ".")
    elif root == "data":
        # data.TYPE.NAME.attr...
        names = [first] + [s for k, s in rest if k == "attr"]
        for n in range(len(names), 0, -1):
            key = ".".join(names[:n])
            if key in ctx.data:
                v = ctx.data[key]
                for _, s in rest[n - 1:]:
                    v = _get(v, s)
                return v
        return UNKNOWN
    else:
        # A resource attribute: known only after apply.
        return UNKNOWN
    for _, s in rest:
        v = _get(v, s)
    return v


def _get(base, key):
    if base is UNKNOWN or key is UNKNOWN:
        return UNKNOWN
    if isinstance(base, dict):
        if key not in base:
            raise EvalError(f"no key {key!r}")
        return base[key]
    if isinstance(base, (list, tuple)):
        return base[int(_num(key))]
    raise EvalError(f"cannot index {type(base).__name__}")


def _iter_items(coll):
    if isinstance(coll, dict):
        return list(coll.items())
    if isinstance(coll, (list, tuple)):
        return list(enumerate(coll))
    raise EvalError("for over a non-collection")


def _for(node, ctx):
    _, close, names, coll_node, first, second, cond, group = node
    coll = _eval(coll_node, ctx)
    if coll is UNKNOWN:
        return UNKNOWN
    out_list = []
    out_obj = {}
    for k, v in _iter_items(coll):
        scope = {names[0]: v} if len(names) == 1 else {names[0]: k, names[1]: v}
        ctx.scopes.append(scope)
        try:
            if cond is not None:
                c = _truthy(_eval(cond, ctx))
                if c is UNKNOWN:
                    return UNKNOWN
                if not c:
                    continue
            a = _eval(first, ctx)
            if close == "]":
                out_list.append(a)
            else:
                b = _eval(second, ctx)
                key = _tostr(a)
                if group:
                    out_obj.setdefault(key, []).append(b)
                else:
                    out_obj[key] = b
        finally:
            ctx.scopes.pop()
    return out_list if close == "]" else out_obj


# --------------------------------------------------------------------------
# Functions


def _tf_format(fmt, *args):
    out = []
    i = 0
    ai = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if fmt[i + 1] == "%":
            out.append("%")
            i += 2
            continue
        m = re.match(r"%([-+ #0]*)(\d*)(?:\.(\d+))?([sdfvqtbxXeEgGo])", fmt[i:])
        if not m:
            raise EvalError(f"unsupported format verb in {fmt!r}")
        verb = m.group(4)
        arg = args[ai]
        ai += 1
        if arg is UNKNOWN:
            return UNKNOWN
        if verb in ("s", "v"):
            s = _tostr(arg)
        elif verb == "q":
            s = json.dumps(_tostr(arg))
        elif verb == "d":
            s = str(int(_num(arg)))
        elif verb == "t":
            s = "true" if arg else "false"
        else:
            s = ("%" + m.group(0)[1:]) % _num(arg)
        width = m.group(2)
        if width:
            s = s.rjust(int(width)) if "-" not in m.group(1) else s.ljust(int(width))
        out.append(s)
        i += len(m.group(0))
    return "".join(out)


def _substr(s, offset, length):
    offset, length = int(_num(offset)), int(_num(length))
    if offset < 0:
        offset = max(0, len(s) + offset)
    if length < 0:
        return s[offset:]
    return s[offset:offset + length]


def _regex(pattern, s):
    m = re.search(_re2_to_py(pattern), s)
    if not m:
        raise EvalError(f"regex {pattern!r} does not match {s!r}")
    if m.groupdict():
        return m.groupdict()
    if m.groups():
        return list(m.groups())
    return m.group()


def _re2_to_py(p):
    # The subset used here is the same in RE2 and Python.
    return p


def _element(lst, i):
    if lst is UNKNOWN:
        return UNKNOWN
    return lst[int(_num(i)) % len(lst)]


def _merge(*maps):
    out = {}
    for m in maps:
        if m is None:
            continue
        if m is UNKNOWN:
            return UNKNOWN
        out.update(m)
    return out


def _coalesce(*args):
    for a in args:
        if a is UNKNOWN:
            return UNKNOWN
        if a is not None and a != "":
            return a
    raise EvalError("coalesce: no non-null argument")


def _sha1(s):
    return hashlib.sha1(s.encode()).hexdigest()


def _lookup(m, k, *default):
    if k in m:
        return m[k]
    if default:
        return default[0]
    raise EvalError(f"lookup: no key {k!r}")


def _tostring(v):
    if v is None:
        return None
    return _tostr(v)


def _distinct(lst):
    out = []
    for x in lst:
        if x not in out:
            out.append(x)
    return out


FUNCTIONS = {
    "substr": _substr,
    "format": _tf_format,
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "sha1": _sha1,
    "sha256": lambda s: hashlib.sha256(s.encode()).hexdigest(),
    "md5": lambda s: hashlib.md5(s.encode()).hexdigest(),
    "length": lambda v: len(v),
    "trimsuffix": lambda s, x: s[: -len(x)] if x and s.endswith(x) else s,
    "trimprefix": lambda s, x: s[len(x):] if x and s.startswith(x) else s,
    "trimspace": lambda s: s.strip(),
    "trim": lambda s, chars: s.strip(chars),
    "replace": lambda s, a, b: re.sub(a[1:-1], b, s) if len(a) > 1 and a.startswith("/") and a.endswith("/") else s.replace(a, b),
    "join": lambda sep, lst: sep.join(_tostr(x) for x in lst),
    "split": lambda sep, s: s.split(sep),
    "element": _element,
    "tostring": _tostring,
    "tonumber": lambda v: None if v is None else _num(v),
    "tobool": lambda v: v if isinstance(v, bool) else v == "true",
    "tolist": list,
    "toset": lambda v: _distinct(list(v)),
    "min": lambda *a: min(_num(x) for x in a),
    "max": lambda *a: max(_num(x) for x in a),
    "floor": lambda v: math.floor(_num(v)),
    "ceil": lambda v: math.ceil(_num(v)),
    "abs": lambda v: abs(_num(v)),
    "concat": lambda *ls: [x for l in ls for x in l],
    "merge": _merge,
    "coalesce": _coalesce,
    "compact": lambda lst: [x for x in lst if x is not None and x != ""],
    "distinct": _distinct,
    "flatten": lambda lst: [y for x in lst for y in (x if isinstance(x, list) else [x])],
    "keys": lambda m: sorted(m.keys()),
    "values": lambda m: [m[k] for k in sorted(m.keys())],
    "lookup": _lookup,
    "contains": lambda lst, v: any(_eq(x, v) for x in lst),
    "regex": _regex,
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "alltrue": lambda lst: all(_truthy(x) for x in lst),
    "anytrue": lambda lst: any(_truthy(x) for x in lst),
    "one": lambda lst: _one(lst),
    "slice": lambda lst, a, b: lst[int(_num(a)):int(_num(b))],
    "jsonencode": lambda v: json.dumps(v, separators=(",", ":")),
    "cidrhost": lambda prefix, n: _cidrhost(prefix, n),
    "cidrsubnet": lambda prefix, bits, n: _cidrsubnet(prefix, bits, n),
    "cidrnetmask": lambda prefix: str(__import__("ipaddress").ip_network(prefix, strict=False).netmask),
}


def _one(lst):
    if len(lst) > 1:
        raise EvalError("one(): more than one element")
    return lst[0] if lst else None


def _cidrhost(prefix, n):
    import ipaddress

    net = ipaddress.ip_network(prefix, strict=False)
    return str(net.network_address + int(_num(n)))


def _cidrsubnet(prefix, bits, n):
    import ipaddress

    net = ipaddress.ip_network(prefix, strict=False)
    subs = list(net.subnets(prefixlen_diff=int(_num(bits))))
    return str(subs[int(_num(n))])


# Functions whose arguments are evaluated lazily.
def _call(name, args, expand, ctx):
    if name == "can":
        try:
            v = _eval(args[0], ctx)
        except (EvalError, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, re.error):
            return False
        return UNKNOWN if v is UNKNOWN else True
    if name == "try":
        for a in args:
            try:
                return _eval(a, ctx)
            except (EvalError, KeyError, IndexError, TypeError, ValueError):
                continue
        raise EvalError("try: no argument evaluated")
    if name == "jsonencode" and ctx.keep_json:
        # Checks inspect the structure (container definitions, policies).
        return _eval(args[0], ctx)
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise EvalError(f"function {name}() is not supported")
    vals = [_eval(a, ctx) for a in args]
    if expand:
        vals = vals[:-1] + list(vals[-1])
    if name not in ("merge", "coalesce", "compact", "tostring", "format", "concat", "length", "keys") and any(
        v is UNKNOWN for v in vals
    ):
        return UNKNOWN
    if name in ("length", "keys") and any(v is UNKNOWN for v in vals):
        return UNKNOWN
    try:
        return fn(*vals)
    except EvalError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
        raise EvalError(f"{name}(): {e}") from e
