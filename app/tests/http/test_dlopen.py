"""libpq, libcurl and SQLite are loaded when the configuration needs them
(app/src/core/dl.h), not linked: an embedded Kiln never maps libpq's or
libcurl's dependency trees (Kerberos, OpenLDAP, GnuTLS...), and one on
PostgreSQL never maps SQLite. The accounts' libraries (libargon2, libcbor,
libqrencode) are loaded by the first request that needs them. The sonames are one list (core/dl.h, read by
the Makefile's print-dlopen-libs for the image and the Lambda zips).

A library that cannot be loaded (missing, or a different library under
its name) is a logged error naming it and a 503 from what needs it, never a
crash: the tests put an empty shared object under the soname first in
LD_LIBRARY_PATH.
"""

import re
import subprocess

import pytest

import kilnhttp
from kilnhttp import STORES, http_request

ROOT = kilnhttp.REPO_ROOT
SONAMES = re.findall(r'^#define KILN_([A-Z0-9]+)_SONAME "([^"]+)"',
                     (ROOT / "app/src/core/dl.h").read_text(), re.M)
BY_NAME = {name.lower(): so for name, so in SONAMES}
SANITIZED = bool(__import__("os").environ.get("KILN_SANITIZED"))


def mapped(srv):
    """The file names the process has mapped."""
    with open(f"/proc/{srv.proc.pid}/maps") as f:
        return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}


def get(srv, path):
    return srv.exchange(http_request("GET", path))[0]


def warm_up(srv):
    for path in ("/livez", "/healthz", "/api/v1/me", "/healthz"):
        get(srv, path)


def test_the_dlopened_libraries_are_not_linked():
    assert sorted(BY_NAME) == ["argon2", "cbor", "curl", "pq", "qrencode", "sqlite"]
    out = subprocess.run(["make", "-s", "--no-print-directory", "print-dlopen-libs"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    assert sorted(out) == sorted(BY_NAME.values())
    needed = subprocess.run(["readelf", "-d", kilnhttp.KILN_BIN], capture_output=True, text=True,
                            check=True).stdout
    for so in BY_NAME.values():
        assert f"[{so}]" not in needed, f"build/kiln links {so}; it should dlopen it"


def test_gnutls_finds_its_skip_hook_in_the_executable():
    """GnuTLS (under libpq and libcurl) runs its implicit initialisation
    unless the executable exports _gnutls_global_init_skip (core/dl.h)."""
    out = subprocess.run(["nm", "-D", "--defined-only", kilnhttp.KILN_BIN], capture_output=True,
                         text=True, check=True).stdout
    assert re.search(r" T _gnutls_global_init_skip$", out, re.M), "not exported (Makefile EXPORTS)"


@pytest.mark.skipif(STORES != "embedded" or SANITIZED,
                    reason="embedded mode: what the process maps (ASan maps its own)")
def test_embedded_maps_neither_libpq_nor_libcurl(kiln):
    srv = kiln()
    warm_up(srv)
    names = mapped(srv)
    assert any(n.startswith("libsqlite3.so") for n in names), sorted(names)
    for lib in ("libpq.so", "libcurl.so", "libgnutls.so", "libkrb5.so", "libldap", "libssh2.so",
                "libargon2.so", "libcbor.so", "libqrencode.so"):
        assert not any(n.startswith(lib) for n in names), (lib, sorted(names))


@pytest.mark.skipif(STORES != "postgres" or SANITIZED,
                    reason="PostgreSQL mode: what the process maps (ASan maps its own)")
def test_postgres_maps_libpq_but_not_sqlite_or_libcurl(kiln):
    srv = kiln()
    warm_up(srv)
    names = mapped(srv)
    assert any(n.startswith("libpq.so") for n in names), sorted(names)
    for lib in ("libsqlite3.so", "libcurl.so", "libm.so"):
        assert not any(n.startswith(lib) for n in names), (lib, sorted(names))


def fake_library(tmp_path, soname):
    """An empty shared object under soname: dlopen finds it, dlsym nothing."""
    d = tmp_path / "fakelib"
    d.mkdir(exist_ok=True)
    src = d / "empty.c"
    src.write_text("int kiln_test_empty_library;\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / soname), str(src)], check=True)
    return str(d)


def load_errors(srv):
    return [l for l in srv.log_lines()[0] if l.get("message") == "cannot load a shared library"]


@pytest.mark.parametrize("lib", ["sqlite", "pq"])
def test_a_library_that_cannot_load_is_a_503_and_one_log_line(kiln, tmp_path, lib):
    if (lib == "sqlite") != (STORES == "embedded"):
        pytest.skip(f"KILN_STORES={STORES} does not use {BY_NAME[lib]}")
    srv = kiln(LD_LIBRARY_PATH=fake_library(tmp_path, BY_NAME[lib]), MIGRATE_ON_START="false")
    assert get(srv, "/livez").status == 200
    for _ in range(3):
        r = get(srv, "/healthz")
        assert r.status == 503, r
        assert r.json()["status"] == "degraded"
    r = get(srv, "/healthz?detailed=true")
    assert r.status == 503 and r.json()["checks"]["database"]["status"] != "ok", r
    errors = load_errors(srv)
    assert len(errors) == 1, f"logged once, not per attempt: {srv.log_lines()[0][-6:]}"
    assert errors[0]["library"] == BY_NAME[lib]
    assert errors[0]["error"].endswith(" missing"), errors[0]   # a symbol dlsym did not find


@pytest.mark.parametrize("lib", ["sqlite", "pq"])
def test_migrations_on_start_without_the_library_stop_the_start(kiln, tmp_path, lib):
    if (lib == "sqlite") != (STORES == "embedded"):
        pytest.skip(f"KILN_STORES={STORES} does not use {BY_NAME[lib]}")
    srv = kiln(wait=False, LD_LIBRARY_PATH=fake_library(tmp_path, BY_NAME[lib]),
               MIGRATE_ON_START="true")
    srv.expected_exit = 1
    assert srv.wait_exit(10) == 1
    assert load_errors(srv) and load_errors(srv)[0]["library"] == BY_NAME[lib]
    assert any(l.get("message") == "migrations failed" for l in srv.log_lines()[0])
