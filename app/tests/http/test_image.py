"""The container image's recipe, checked statically (no registry, no build).

Building and smoke-testing the image takes a minute or two and needs
buildah, so it is `make image` (scripts/image.sh), run by hand. These tests
hold the Dockerfile to what the deployment relies on: build and staging
stages from a BASE build argument and a final stage FROM scratch that only
copies the staged filesystem (no shell, no package manager), the non-root
user the ECS task names (10001), port 8443, the HEALTHCHECK and ENTRYPOINT,
no architecture-specific line (the same file builds amd64 and arm64), a
staging package list that covers every shared library build/kiln links or
loads with dlopen() (app/src/core/dl.h), and a build context limited by
.dockerignore to what the build stage copies.
"""

import os
import pathlib
import re
import shlex
import subprocess

import pytest

import kilnhttp

pytestmark = pytest.mark.skipif(
    kilnhttp.STORES != "embedded" or bool(os.environ.get("KILN_SANITIZED")),
    reason="static checks, no server: runs once, in the plain embedded run")

ROOT = kilnhttp.REPO_ROOT
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path=DOCKERFILE):
    """[(KEYWORD, arguments)] with continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages():
    """[(FROM arguments, [instructions of the stage])]; ([], ...) for the preamble."""
    result = [(None, [])]
    for kw, args in instructions():
        if kw == "FROM":
            result.append((args, []))
        else:
            result[-1][1].append((kw, args))
    return result


def exec_form(args):
    """The JSON array of an exec-form instruction, as a list of strings."""
    import json
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_base_is_a_build_argument_declared_before_the_first_from():
    preamble = stages()[0][1]
    args = [a for kw, a in preamble if kw == "ARG"]
    base = [a for a in args if a.startswith("BASE=")]
    assert base, f"no `ARG BASE=...` before the first FROM (preamble: {preamble})"
    default = base[0].split("=", 1)[1]
    assert "debian" in default and "bookworm" in default, \
        f"BASE should default to a Debian 12 (bookworm) image, not {default!r}"


def _stage_name(from_args):
    m = re.search(r"\bAS\s+(\S+)", from_args, re.I)
    return m.group(1) if m else None


def staging():
    """The instructions of the stage the final one copies its filesystem from."""
    final = stages()[-1][1]
    copies = [a for kw, a in final if kw == "COPY"]
    assert len(copies) == 1, f"the final stage should be one COPY of the staged filesystem: {copies}"
    m = re.fullmatch(r"--from=(\S+)\s+(\S+)\s+/", copies[0])
    assert m, f"the final stage's COPY should be `COPY --from=<stage> /<dir>/ /`: {copies[0]}"
    name, src = m.groups()
    found = [body for f, body in stages()[1:-1] if f and _stage_name(f) == name]
    assert found, f"COPY --from={name}: no stage `AS {name}`"
    return found[0], src.rstrip("/")


def test_multi_stage_build_staging_then_scratch():
    froms = [f for f, _ in stages()[1:]]
    assert len(froms) >= 3, f"build, staging and final stages: three FROM lines, got {froms}"
    for f in froms[:-1]:
        assert f.split()[0] in ("${BASE}", "$BASE"), f"FROM {f}: the build and staging stages start from ${{BASE}}"
    assert re.search(r"\bAS\s+build\b", froms[0], re.I), f"the first stage should be `AS build`: {froms[0]}"
    assert froms[-1].split()[0] == "scratch", \
        f"the final stage is FROM scratch (no shell, no package manager, no Debian base): FROM {froms[-1]}"
    final = stages()[-1][1]
    assert not [a for kw, a in final if kw in ("RUN", "ADD")], \
        "the final stage has no shell to RUN anything: everything happens in the staging stage"
    body, root = staging()
    copies = [a for kw, a in body if kw == "COPY"]
    assert any("--from=build" in c and c.split()[-1] == f"{root}/usr/local/bin/kiln" for c in copies), \
        f"the staging stage must copy the binary from the build stage to {root}/usr/local/bin/kiln: {copies}"
    for kw, a in body:
        assert not (kw == "COPY" and "--from" not in a), \
            "the staging stage copies nothing from the context (sources stay in the build stage)"
    build = stages()[1][1]
    runs = " ".join(a for kw, a in build if kw == "RUN")
    assert re.search(r"\bstrip\b[^;&|]*build/kiln", runs), \
        "the image gets a stripped copy of build/kiln (the build stage keeps the unstripped one)"


def test_build_stage_runs_make_build_kiln():
    build = stages()[1][1]
    runs = " ".join(a for kw, a in build if kw == "RUN")
    assert re.search(r"\bmake\b[^;&|]*\bbuild/kiln\b", runs), "the build stage must run `make build/kiln`"
    assert "debian-packages.txt" in runs, \
        "the build stage installs its packages from scripts/debian-packages.txt (one list)"


def test_build_section_of_the_package_list_has_the_toolchain():
    # The Dockerfile installs the "# build" section (to the first blank line).
    text = (ROOT / "scripts" / "debian-packages.txt").read_text().splitlines()
    start = text.index("# build")
    section = []
    for line in text[start + 1:]:
        if not line.strip():
            break
        section.append(line.split("#", 1)[0].strip())
    pkgs = {p for p in section if p}
    for need in ("make", "gcc", "pkg-config", "libuv1-dev", "libssl-dev", "libpq-dev",
                 "libcurl4-openssl-dev", "node-llhttp"):
        assert need in pkgs, f"{need} is not in the build section of debian-packages.txt: {sorted(pkgs)}"


def _staging_runs():
    body, root = staging()
    return " ".join(a for kw, a in body if kw == "RUN"), root


def test_runtime_runs_as_non_root_user_10001():
    final = stages()[-1][1]
    users = [a for kw, a in final if kw == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    user = users[-1]
    uid = user.split(":")[0]
    assert uid not in ("0", "root"), f"USER {user} is root"
    assert uid == "10001", f"USER {user}: the ECS task definition runs as 10001:10001"
    runs, _ = _staging_runs()
    assert re.search(r"useradd\b[^;]*--uid 10001\b", runs), "the kiln user (uid 10001) is not created"
    assert re.search(r"groupadd\b[^;]*--gid 10001\b", runs), "the kiln group (gid 10001) is not created"
    assert "nologin" in runs, "the kiln user needs no shell"
    assert re.search(r"/etc/passwd\s*>\s*\S*/etc/passwd", runs) and \
        re.search(r"/etc/group\s*>\s*\S*/etc/group", runs), \
        "the staged tree's /etc/passwd and /etc/group carry the kiln entries"


def test_exposes_8443_with_https_production_defaults():
    final = stages()[-1][1]
    exposed = " ".join(a for kw, a in final if kw == "EXPOSE").split()
    assert "8443" in exposed or "8443/tcp" in exposed, f"EXPOSE 8443 missing: {exposed}"
    env = {}
    for kw, a in final:
        if kw == "ENV":
            for item in shlex.split(a):
                k, _, v = item.partition("=")
                env[k] = v
    assert env.get("PORT") == "8443", env
    assert env.get("BIND_ADDRESS") == "0.0.0.0", env
    assert env.get("SSL_SELF_SIGNED") == "true", env
    assert env.get("KILN_ENV") == "production", env
    assert "SECRET_KEY_BASE" not in env, "a secret must never be baked into the image"
    assert not any(k.endswith(("PASSWORD", "SECRET")) for k in env), env


def test_healthcheck_entrypoint_and_cmd():
    final = stages()[-1][1]
    hc = [a for kw, a in final if kw == "HEALTHCHECK"]
    assert hc, "no HEALTHCHECK"
    cmd = hc[-1].split("CMD", 1)
    assert len(cmd) == 2, f"HEALTHCHECK without CMD: {hc[-1]}"
    assert exec_form(cmd[1].strip()) == ["/usr/local/bin/kiln", "healthcheck"], hc[-1]
    entry = [a for kw, a in final if kw == "ENTRYPOINT"]
    assert entry and exec_form(entry[-1]) == ["/usr/local/bin/kiln"], entry
    cmds = [a for kw, a in final if kw == "CMD"]
    assert cmds and exec_form(cmds[-1]) == ["serve"], cmds


def test_no_architecture_specific_line():
    text = "\n".join(f"{kw} {a}" for kw, a in instructions())   # comments may name them
    for word in ("amd64", "x86_64", "x86-64", "arm64", "aarch64", "TARGETARCH", "--platform"):
        assert word not in text, f"the Dockerfile mentions {word!r}: it must build any architecture"


def test_sqlite_volume_directory_belongs_to_kiln():
    runs, _ = _staging_runs()
    assert re.search(r"install -d -o 10001 -g 10001\b[^;]*/var/lib/kiln", runs), \
        "/var/lib/kiln (DB_PATH's folder, the volume for SQLite) must belong to kiln"
    assert re.search(r"install -d -m 1777 \S*/tmp\b", runs), "an empty /tmp, mode 1777"


def test_binary_may_bind_port_443_as_uid_10001():
    """PORT=443 (the original's task definitions) as the non-root user: the
    file capability cap_net_bind_service, set on the staged binary (the
    scratch stage has no setcap to run; buildah's COPY --from keeps the
    security.capability attribute, which scripts/image.sh's smoke test
    checks in the built image), permitted only: with the effective bit
    execve fails wherever the container drops the capability (ECS "drop
    ALL"), and Kiln raises it itself for the bind (app/src/core/caps.c)."""
    body, root = staging()
    copy_at = next(i for i, (kw, a) in enumerate(body)
                   if kw == "COPY" and "--from=build" in a and a.endswith("/usr/local/bin/kiln"))
    setcap = [(i, a) for i, (kw, a) in enumerate(body) if kw == "RUN" and "setcap" in a]
    assert setcap, "no RUN setcap in the staging stage"
    at, run = setcap[-1]
    assert at > copy_at, "setcap must run after the binary is copied into the staged tree"
    assert not any(kw == "USER" for kw, _ in body[:at]), "setcap needs root: before any USER"
    assert re.search(r"setcap\s+cap_net_bind_service=\+p\s+\S*/usr/local/bin/kiln\b", run), run
    text = " ".join(a for _, a in instructions())
    assert not re.search(r"cap_net_bind_service[=+]*\+?e", text), \
        "an effective bit on the file capability makes execve fail where it is dropped"
    assert "getcap" in run, "the build should check that the capability is there"
    assert "libcap2-bin" in _runtime_packages(), "setcap comes from libcap2-bin (staging stage only)"
    script = (ROOT / "scripts" / "image.sh").read_text()
    assert "PORT=443" in script and "getcap" in script, \
        "scripts/image.sh smoke should serve PORT=443 as uid 10001 and check the capability"


def _runtime_packages():
    runs, _ = _staging_runs()
    m = re.search(r"apt-get install ([^;]*)", runs)
    assert m, "no apt-get install in the staging stage"
    return {w for w in m.group(1).split() if not w.startswith("-") and not w.startswith(">")}


def _owner_package(path):
    for candidate in {path, os.path.realpath(path), re.sub(r"^/usr/lib/", "/lib/", path),
                      re.sub(r"^/lib/", "/usr/lib/", path)}:
        r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].strip()
    return None


DL_HEADER = ROOT / "app" / "src" / "core" / "dl.h"


def dlopened_sonames():
    """The sonames app/src/core/dl.h defines (#define KILN_PQ_SONAME
    "libpq.so.5"): the libraries build/kiln loads with dlopen()."""
    return sorted(set(re.findall(r'^#define KILN_[A-Z0-9]+_SONAME "(lib[A-Za-z0-9_.+-]+\.so\.[0-9][0-9.]*)"',
                                 DL_HEADER.read_text(), re.M)))


def test_make_prints_the_dlopened_sonames():
    out = subprocess.run(["make", "-s", "--no-print-directory", "print-dlopen-libs"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out and sorted(out) == dlopened_sonames(), (out, dlopened_sonames())
    assert {"libpq.so.5", "libcurl.so.4", "libsqlite3.so.0"} <= set(out)


def _ldconfig_path(soname):
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == soname:
            return parts[-1]
    return None


def test_staging_copies_the_closure_of_every_dlopened_library():
    runs, _ = _staging_runs()
    assert "make -s print-dlopen-libs > /out/dlopen-libs" in DOCKERFILE.read_text(), (
        "the build stage should write the dlopen()ed sonames from the Makefile")
    assert re.search(r"for so in \$\(cat /tmp/dlopen-libs\); do", runs), (
        "the staging stage should resolve every dlopen()ed soname (`for so in $(cat /tmp/dlopen-libs)`)")
    assert "ldd" in runs, "the closures come from the dynamic loader (ldd)"


def test_runtime_packages_cover_every_library_kiln_links():
    binary = ROOT / "build" / "kiln"
    if not binary.exists():
        pytest.skip("build/kiln not built")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", str(binary)], capture_output=True,
                                       text=True, check=True).stdout)
    assert needed, "readelf found no NEEDED entries"
    resolved = {}
    for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            resolved[m.group(1)] = m.group(2)
    for so in dlopened_sonames():
        if so not in needed:
            needed.append(so)
            path = _ldconfig_path(so)
            assert path, f"{so} (app/src/core/dl.h) is not installed on this machine (ldconfig -p)"
            resolved[so] = path
    installed = _runtime_packages()
    in_every_debian = {"libc6", "libgcc-s1"}
    missing = []
    for soname in needed:
        assert soname in resolved, f"ldd cannot resolve {soname}"
        pkg = _owner_package(resolved[soname])
        assert pkg, f"no Debian package owns {resolved[soname]}"
        if pkg not in installed and pkg not in in_every_debian:
            missing.append(f"{soname} ({pkg})")
    assert not missing, (f"build/kiln links or loads libraries whose packages the staging stage does not "
                         f"install: {missing}; it installs {sorted(installed)}")


def _context_allowed(rel, allow):
    return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allow)


def test_dockerignore_allows_only_what_the_build_copies():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    assert lines[0] == "*", ".dockerignore should start with `*` (an allow-list)"
    allow = [l[1:] for l in lines[1:] if l.startswith("!")]
    for bad in ("build", "var", ".git", "infra", "app/tests"):
        assert not any(_context_allowed(a, [bad]) or a == bad for a in allow), \
            f".dockerignore lets {bad!r} into the build context"
    # Every COPY from the context names an allowed path, and exists.
    for kw, args in instructions():
        if kw != "COPY" or "--from" in args:
            continue
        sources = args.split()[:-1]
        for src in sources:
            assert _context_allowed(src.rstrip("/"), allow), \
                f"COPY {src}: not allowed by .dockerignore ({allow})"
            assert (ROOT / src).exists(), f"COPY {src}: no such path"


def test_make_image_target_runs_the_image_script():
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^image:.*\n((?:\t.*\n)+)", text, re.M)
    assert m, "no `image:` target in the Makefile"
    assert "scripts/image.sh" in m.group(1)
    script = ROOT / "scripts" / "image.sh"
    assert os.access(script, os.X_OK)
    body = script.read_text()
    for needle in ("--isolation chroot", "BASE=", "--variant=minbase", "kiln version",
                   "kiln healthcheck", "healthz?detailed=true", "--platform", "qemu-user-static",
                   "goal <= 30 MB"):
        assert needle in body, f"scripts/image.sh no longer does {needle!r}"
