"""docs/RESOURCES.md stays true: its command blocks run (the generator in a
copy of this tree's declarations and migrations, the API calls against a
live kiln), its C blocks compile, and every file and function it names
exists."""

import os
import pathlib
import re
import shutil
import subprocess
import uuid

import pytest

import authkit as ak
from kilnhttp import KILN_BIN

ROOT = pathlib.Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "RESOURCES.md").read_text()
# Placeholders in a named path: NAME (a resource), NNNN (a migration's
# number), <dialect>.
PLACEHOLDER = re.compile(r"NAME|NNNN|<[a-z]+>")


def test_its_commands_work(kiln, tmp_path):
    # Its own instance: on Valkey, rate-limit counters are shared by every
    # instance of the run (authkit.start_kiln sets limits no test reaches).
    server = ak.start_kiln(kiln)
    blocks = re.findall(r"```sh\n(.*?)```", DOC, re.S)
    assert len(blocks) >= 4, "the walk-through lost its command blocks"
    assert any("build/kiln gen resource" in b for b in blocks), "no generator run"
    # The commands run at the root of a tree with this one's declarations
    # and migrations, its kiln as build/kiln: the generator writes there.
    tree = tmp_path / "repo"
    for rel in ("app/src/api/resources", "app/migrations"):
        shutil.copytree(ROOT / rel, tree / rel)
    (tree / "app/tests/http").mkdir(parents=True)
    (tree / "build").mkdir()
    (tree / "build/kiln").symlink_to(KILN_BIN)
    # A fresh user per run: the database may be shared with earlier runs.
    script = "\n".join(blocks).replace("you@example.com", f"you-{uuid.uuid4().hex}@example.com")
    env = {"PATH": "/usr/bin:/bin", "KILN_URL": server.url("")}
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if name in os.environ:
            env[name] = os.environ[name]
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"docs/RESOURCES.md commands failed:\n{r.stdout}\n{r.stderr}"
    assert (tree / "app/src/api/resources/bookmarks.c").exists()


def test_its_c_blocks_compile(tmp_path):
    blocks = re.findall(r"```c\n(.*?)```", DOC, re.S)
    assert blocks, "the hook example is gone"
    cc = shutil.which("cc")
    if cc is None or shutil.which("pkg-config") is None:
        pytest.skip("no cc or pkg-config")
    flags = subprocess.run(["pkg-config", "--cflags", "jansson", "libuv", "openssl"],
                           capture_output=True, text=True, check=True).stdout.split()
    for i, block in enumerate(blocks):
        src = tmp_path / f"block{i}.c"
        src.write_text(block)
        r = subprocess.run([cc, "-std=c17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                            "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes",
                            "-D_GNU_SOURCE", "-iquote", str(ROOT / "app/src"), *flags, str(src)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"C block {i} of docs/RESOURCES.md:\n{r.stderr}"


def test_every_file_it_names_exists():
    paths = set(re.findall(r"`((?:app|docs|scripts|bench)/[^`\s]+)`", DOC))
    assert paths
    for p in paths:
        if PLACEHOLDER.search(p):
            # a path of the generator's: its folder exists
            folder = PLACEHOLDER.split(p)[0].rsplit("/", 1)[0]
            assert (ROOT / folder).is_dir(), f"docs/RESOURCES.md names {p}: no {folder}/"
        else:
            assert (ROOT / p).exists(), f"docs/RESOURCES.md names {p}, which does not exist"


def test_every_function_it_names_exists():
    source = "\n".join(p.read_text() for p in (ROOT / "app" / "src").rglob("*.[ch]"))
    names = set(re.findall(r"`((?:res|api|kiln)_[a-z0-9_]+|cache_invalidate)`", DOC))
    assert len(names) > 10
    for name in names:
        assert re.search(r"\b" + name + r"\b", source), \
            f"docs/RESOURCES.md names {name}, which app/src does not define"
