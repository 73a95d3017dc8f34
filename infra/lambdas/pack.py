#!/usr/bin/env python3
"""Pack kiln-rotate into a Lambda zip for the provided.al2023 runtime.

    pack.py --binary build/lambdas/arm64/kiln-rotate --kind db-user \\
            --triplet aarch64-linux-gnu [--sysroot DIR] [--strip PROG] \\
            --out build/lambdas/arm64/rotate-db-user.zip

Amazon Linux 2023 has glibc 2.34 and none of Kiln's libraries (libpq,
libcurl, jansson, hiredis…); the binary is built against Debian 12 (glibc
2.36). So the zip carries, in lib/, every shared library the binary needs
(its DT_NEEDED entries, recursively, found in the sysroot's multiarch
folders, or the machine's own for a native build) and Debian's dynamic
loader, and ``bootstrap`` is a small /bin/sh script that runs the binary
through that loader with --library-path lib: nothing of the host's libc is
used.

Dependencies are read with ``readelf`` (binutils), which reads any
architecture, so a cross build is packed like a native one. The zip is
reproducible: entries sorted, timestamps fixed, modes set explicitly.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

BOOTSTRAP = """#!/bin/sh
# Kiln secret rotation, ROTATION_KIND={kind} by default (infra/lambdas/README.md).
# Lambda (provided.al2023) runs this file. It starts kiln-rotate with the
# glibc and libraries packed next to it in lib/ (Debian 12's: Amazon Linux
# 2023 has an older glibc and none of them), through their own loader.
root=${{LAMBDA_TASK_ROOT:-$(cd "$(dirname "$0")" && pwd)}}
export ROTATION_KIND="${{ROTATION_KIND:-{kind}}}"
# HTTPS to AWS: the packed libcurl looks for Debian's CA file; point it (and
# OpenSSL) at this system's bundle.
if [ -z "${{SSL_CERT_FILE:-}}" ]; then
    for f in /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/certs/ca-certificates.crt \\
             /etc/ssl/cert.pem; do
        if [ -r "$f" ]; then
            export SSL_CERT_FILE="$f"
            break
        fi
    done
fi
exec "$root/lib/{loader}" --library-path "$root/lib" "$root/kiln-rotate" "$@"
"""

# 1980-01-01, the earliest time a zip entry can hold.
EPOCH = (1980, 1, 1, 0, 0, 0)


def readelf(args, path):
    r = subprocess.run(["readelf"] + args + [path], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"pack: readelf {' '.join(args)} {path}: {r.stderr.strip()}")
    return r.stdout


def interpreter(binary):
    m = re.search(r"Requesting program interpreter: ([^\]]+)\]", readelf(["-l", "-W"], binary))
    if not m:
        sys.exit(f"pack: {binary} has no program interpreter (static?)")
    return m.group(1)


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf(["-d", "-W"], path))


def search_dirs(sysroot, triplet):
    root = sysroot or "/"
    dirs = [os.path.join(root, d) for d in (f"lib/{triplet}", f"usr/lib/{triplet}", "lib",
                                             "usr/lib", "lib64", "usr/lib64")]
    # Debian's cross toolchain keeps the target's libc here as well.
    dirs.append(f"/usr/{triplet}/lib")
    return [d for d in dirs if os.path.isdir(d)]


def resolve(name, dirs):
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return os.path.realpath(p)
    return None


def closure(binary, dirs, dlopened=()):
    """{soname: real path} of every library the binary needs, recursively,
    and of the libraries it loads with dlopen (Makefile DLOPEN_LIBS)."""
    found, todo = {}, list(needed(binary)) + list(dlopened)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = resolve(name, dirs)
        if path is None:
            sys.exit(f"pack: {name} (needed by {os.path.basename(binary)}) not found in "
                     f"{', '.join(dirs)}")
        found[name] = path
        todo.extend(needed(path))
    return found


def add(z, arcname, data, mode):
    info = zipfile.ZipInfo(arcname, date_time=EPOCH)
    info.external_attr = (0o100000 | mode) << 16    # regular file + permissions
    info.create_system = 3                          # Unix, so the modes count
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data, compresslevel=6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--kind", required=True,
                    choices=["secret-key-base", "db-user", "valkey-user"])
    ap.add_argument("--triplet", required=True)
    ap.add_argument("--sysroot", default="")
    ap.add_argument("--dlopen", default="",
                    help="space-separated sonames the binary loads at run time")
    ap.add_argument("--strip", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    dirs = search_dirs(a.sysroot, a.triplet)
    interp = interpreter(a.binary)
    loader = resolve(os.path.basename(interp), dirs) or (
        os.path.realpath(os.path.join(a.sysroot or "/", interp.lstrip("/"))))
    if not os.path.exists(loader):
        sys.exit(f"pack: the loader {interp} is not in {', '.join(dirs)}")
    libs = closure(a.binary, dirs, a.dlopen.split())
    libs.pop(os.path.basename(interp), None)

    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "kiln-rotate")
        shutil.copyfile(a.binary, exe)
        if a.strip:
            subprocess.run([a.strip, "--strip-unneeded", exe], check=True)
        with open(exe, "rb") as f:
            exe_data = f.read()
    tmp_out = a.out + ".tmp"
    with zipfile.ZipFile(tmp_out, "w") as z:
        add(z, "bootstrap",
            BOOTSTRAP.format(kind=a.kind, loader=os.path.basename(interp)).encode(), 0o755)
        add(z, "kiln-rotate", exe_data, 0o755)
        add(z, "lib/" + os.path.basename(interp), open(loader, "rb").read(), 0o755)
        for name in sorted(libs):
            with open(libs[name], "rb") as f:
                add(z, "lib/" + name, f.read(), 0o755)
    os.replace(tmp_out, a.out)
    size = os.path.getsize(a.out)
    print(f"pack: {a.out}: bootstrap, kiln-rotate, {os.path.basename(interp)} and "
          f"{len(libs)} libraries, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
