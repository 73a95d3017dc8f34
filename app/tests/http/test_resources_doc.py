"""docs/RESOURCES.md stays true: its command blocks run against a live kiln,
and every file and function it names exists."""

import pathlib
import re
import subprocess
import uuid

import authkit

ROOT = pathlib.Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "RESOURCES.md").read_text()


def test_its_commands_work(kiln, tmp_path):
    # Its own instance: on Valkey, rate-limit counters are shared by every
    # instance of the run (authkit.start_kiln sets limits no test reaches).
    server = authkit.start_kiln(kiln)
    blocks = re.findall(r"```sh\n(.*?)```", DOC, re.S)
    assert len(blocks) >= 3, "the walk-through lost its command blocks"
    # A fresh user per run: the database may be shared with earlier runs.
    script = "\n".join(blocks).replace("you@example.com", f"you-{uuid.uuid4().hex}@example.com")
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "KILN_URL": server.url("")},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"docs/RESOURCES.md commands failed:\n{r.stdout}\n{r.stderr}"


def test_every_file_it_names_exists():
    paths = set(re.findall(r"`((?:app|docs|scripts|bench)/[^`\s]+)`", DOC))
    assert paths
    for p in paths:
        assert (ROOT / p).exists(), f"docs/RESOURCES.md names {p}, which does not exist"


def test_every_function_it_names_exists():
    source = "\n".join(p.read_text() for p in (ROOT / "app" / "src").rglob("*.[ch]"))
    names = set(re.findall(r"`((?:res|api|kiln)_[a-z0-9_]+|cache_invalidate)`", DOC))
    assert len(names) > 10
    for name in names:
        assert re.search(r"\b" + name + r"\b", source), \
            f"docs/RESOURCES.md names {name}, which app/src does not define"
