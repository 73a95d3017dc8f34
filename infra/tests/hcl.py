"""Parse Terraform files with @cdktf/hcl2json and give the policy checks a
model of each stack.

One node process (hcl2json.js) serves the whole pytest run; parses are
cached by file content, so re-loading a mutated copy of infra/ only parses
the file that changed.
"""

import atexit
import hashlib
import json
import os
import re
import subprocess
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
INFRA = os.path.dirname(HERE)

# Folders under infra/ that are not Terraform of ours.
SKIP_DIRS = {"tests", "lambdas", ".terraform", "node_modules"}


class ParseError(Exception):
    pass


class _Hcl2Json:
    """The hcl2json.js process: one JSON request and one answer per line."""

    def __init__(self):
        node = os.environ.get("NODE", "node")
        if not os.path.isdir(os.path.join(HERE, "node_modules", "@cdktf", "hcl2json")):
            raise ParseError("@cdktf/hcl2json is not installed: run scripts/npm-deps.sh")
        self.proc = subprocess.Popen(
            [node, os.path.join(HERE, "hcl2json.js")],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lock = threading.Lock()
        self.seq = 0
        atexit.register(self.close)

    def parse(self, name, text):
        with self.lock:
            self.seq += 1
            self.proc.stdin.write(json.dumps({"id": self.seq, "name": name, "text": text}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise ParseError("hcl2json.js exited")
        answer = json.loads(line)
        if "error" in answer:
            raise ParseError(f"{name}: {answer['error']}")
        return answer["json"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_parser = None
_cache = {}
stats = {"parsed": 0, "cached": 0}


def parse_text(name, text):
    global _parser
    key = hashlib.sha256(text.encode()).hexdigest()
    if key in _cache:
        stats["cached"] += 1
        return _cache[key]
    if _parser is None:
        _parser = _Hcl2Json()
    result = _parser.parse(name, text)
    _cache[key] = result
    stats["parsed"] += 1
    return result


# --------------------------------------------------------------------------
# Model


class Block:
    """A resource, data source, variable, output or provider block."""

    def __init__(self, kind, type_, name, body, file):
        self.kind = kind  # "resource", "data", ...
        self.type = type_
        self.name = name
        self.body = body
        self.file = file

    @property
    def addr(self):
        if self.kind == "resource":
            return f"{self.type}.{self.name}"
        if self.kind == "data":
            return f"data.{self.type}.{self.name}"
        return f"{self.kind}.{self.name}"

    def get(self, path, default=None):
        return get(self.body, path, default)

    def blocks(self, path):
        return blocks(self.body, path)

    def __repr__(self):
        return f"<{self.addr} in {self.file}>"


def get(body, path, default=None):
    """body["a"]["b"]…, taking the first element of nested block lists."""
    cur = body
    for part in path.split("."):
        if isinstance(cur, list):
            if not cur:
                return default
            cur = cur[0]
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def blocks(body, path):
    """All nested blocks at path (each level may hold several)."""
    cur = [body]
    for part in path.split("."):
        nxt = []
        for b in cur:
            if isinstance(b, dict) and part in b:
                v = b[part]
                nxt.extend(v if isinstance(v, list) else [v])
        cur = nxt
    return [b for b in cur if isinstance(b, dict)]


class Module:
    """The .tf files of one folder (one Terraform root module)."""

    def __init__(self, folder, files):
        self.folder = folder
        self.files = files  # {relative path: parsed json}
        self.resources = []
        self.data_sources = []
        self.variables = {}
        self.outputs = {}
        self.providers = []
        self.terraform = []
        self.locals = {}
        self.local_files = {}
        self.modules = []
        for fname, doc in sorted(files.items()):
            for type_, named in doc.get("resource", {}).items():
                for name, bodies in named.items():
                    for body in bodies:
                        self.resources.append(Block("resource", type_, name, body, fname))
            for type_, named in doc.get("data", {}).items():
                for name, bodies in named.items():
                    for body in bodies:
                        self.data_sources.append(Block("data", type_, name, body, fname))
            for name, bodies in doc.get("variable", {}).items():
                for body in bodies:
                    self.variables[name] = Block("variable", "variable", name, body, fname)
            for name, bodies in doc.get("output", {}).items():
                for body in bodies:
                    self.outputs[name] = Block("output", "output", name, body, fname)
            for name, bodies in doc.get("provider", {}).items():
                for body in bodies:
                    self.providers.append(Block("provider", name, name, body, fname))
            for body in doc.get("terraform", []):
                self.terraform.append((fname, body))
            for body in doc.get("locals", []):
                for k, v in body.items():
                    self.locals[k] = v
                    self.local_files[k] = fname
            for name, bodies in doc.get("module", {}).items():
                for body in bodies:
                    self.modules.append(Block("module", "module", name, body, fname))

    def all(self, type_):
        return [b for b in self.resources if b.type == type_]

    def resource(self, type_, name):
        for b in self.resources:
            if b.type == type_ and b.name == name:
                return b
        return None

    def data(self, type_, name=None):
        found = [b for b in self.data_sources if b.type == type_ and (name is None or b.name == name)]
        if name is not None:
            return found[0] if found else None
        return found

    def by_addr(self, addr):
        """The block an address such as aws_kms_key.data or
        data.aws_iam_policy_document.x names."""
        parts = (addr or "").split(".")
        if len(parts) < 2 or (parts[0] == "data" and len(parts) < 3):
            return None
        if parts[0] == "data":
            return self.data(parts[1], parts[2])
        return self.resource(parts[0], parts[1])

    # ---- text-level reference analysis ----

    def expand(self, value, _seen=None):
        """The text of a value plus, recursively, of every local it uses:
        what a reference check must search."""
        seen = _seen if _seen is not None else set()
        text = value if isinstance(value, str) else json.dumps(value)
        out = [text]
        for name in re.findall(r"\blocal\.([A-Za-z0-9_]+)", text):
            if name in seen or name not in self.locals:
                continue
            seen.add(name)
            out.append(self.expand(self.locals[name], seen))
        return "\n".join(out)


REF = re.compile(
    r"\b(?:data\.[a-z0-9_]+\.[A-Za-z0-9_-]+|(?:aws|random)_[a-z0-9_]+\.[A-Za-z0-9_-]+|var\.[A-Za-z0-9_]+|local\.[A-Za-z0-9_]+)"
)


def refs(text):
    """Every reference (resource address, data address, var, local) in text."""
    if not isinstance(text, str):
        text = json.dumps(text)
    return set(REF.findall(text))


class Tree:
    """infra/ as the policy checks see it: the main stack, the state backend
    stack, and the backend configuration example."""

    def __init__(self, root, repo=None):
        self.root = root
        # The repository around infra/: the Makefile and infra/lambdas/ that
        # some checks compare against (a mutated copy of infra/ still points
        # at the real ones).
        self.repo = repo or os.path.dirname(root)
        self.errors = []
        self.main = Module(root, self._parse_folder(root))
        backend_dir = os.path.join(root, "state-backend")
        self.backend = Module(backend_dir, self._parse_folder(backend_dir)) if os.path.isdir(backend_dir) else None
        example = os.path.join(root, "backend.hcl.example")
        self.backend_example = self._parse_file(example, "backend.hcl.example") if os.path.exists(example) else None
        self.tfvars_examples = {}
        for fname in sorted(os.listdir(root)):
            if fname.endswith(".tfvars.example"):
                self.tfvars_examples[fname] = self._parse_file(os.path.join(root, fname), fname)

    def _parse_file(self, path, name):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            return parse_text(name, text)
        except ParseError as e:
            self.errors.append(str(e))
            return {}

    def _parse_folder(self, folder):
        files = {}
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".tf") and os.path.isfile(os.path.join(folder, fname)):
                rel = os.path.relpath(os.path.join(folder, fname), self.root)
                files[rel] = self._parse_file(os.path.join(folder, fname), rel)
        return files

    def modules(self):
        return [m for m in (self.main, self.backend) if m is not None]

    def all_tf_files(self):
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            out.extend(os.path.relpath(os.path.join(dirpath, f), self.root) for f in filenames if f.endswith(".tf"))
        return sorted(out)


_trees = {}


def load(root=INFRA, repo=None):
    """The Tree of a folder; cached per folder and content."""
    root = os.path.abspath(root)
    sig = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in sorted(filenames):
            if f.endswith(".tf") or f.endswith(".example"):
                p = os.path.join(dirpath, f)
                st = os.stat(p)
                sig.append((p, st.st_mtime_ns, st.st_size))
    key = (root, repo, tuple(sig))
    if key not in _trees:
        _trees[key] = Tree(root, repo)
    return _trees[key]
