"""Configuration validation: bad values make `kiln serve` exit 2 with one
`config:` line per problem on stderr, never echoing a secret; good values
start the server."""

import subprocess

import pytest
import requests

from kilnhttp import clean_env, free_port, run_kiln

# A recognisable secret that must never show up in any output.
SHORT_SECRET = "kiln-test-secret-XYZZY"
SECRET_63 = "S63-" + "q" * 59
SECRET_64 = "S64-" + "k" * 60


def serve_with(overrides, timeout=5):
    """Run `kiln serve` with a clean env (free port unless PORT is given)."""
    env = clean_env(free_port(), overrides)
    return run_kiln(["serve"], env=env, timeout=timeout)


def config_lines(result):
    """The stderr lines that report a problem (they start with 'config:';
    a summary line of another shape may follow)."""
    return [l for l in result.stderr.decode("utf-8", "replace").splitlines()
            if l.startswith("config:")]


def assert_refused(result, problems):
    """Exit 2, exactly one config: line per problem, each naming its variable."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = config_lines(result)
    assert len(lines) == len(problems), f"want {len(problems)} config lines, got {lines}"
    for variable in problems:
        assert any(variable in line for line in lines), f"no line names {variable}: {lines}"
    return lines


@pytest.mark.parametrize("name,value", [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("PORT", "0"),
    ("KILN_ENV", "staging"),
    ("LOG_LEVEL", "loud"),
    ("MAX_REQUEST_BODY_BYTES", "-1"),
    ("MAX_REQUEST_BODY_BYTES", "abc"),
    ("MAX_REQUEST_BODY_BYTES", "0"),
    ("MAX_REQUEST_BODY_BYTES", "1073741825"),
    ("KEEPALIVE_TIMEOUT_SECONDS", "abc"),
    ("HEADER_TIMEOUT_SECONDS", "abc"),
    ("BODY_TIMEOUT_SECONDS", "abc"),
    ("SHUTDOWN_TIMEOUT_SECONDS", "abc"),
    ("MAX_CONNECTIONS", "abc"),
    ("DB_POOL_SIZE", "abc"),
    ("WORKER_QUEUE_SIZE", "abc"),
    ("HTTP_LOOPS", "abc"),
    ("BIND_ADDRESS", "not-an-address"),
])
def test_one_bad_value_gives_one_config_line(name, value):
    assert_refused(serve_with({name: value}), [name])


def test_several_bad_values_give_one_line_each():
    result = serve_with({"PORT": "abc", "LOG_LEVEL": "loud", "MAX_REQUEST_BODY_BYTES": "-1"})
    assert_refused(result, ["PORT", "LOG_LEVEL", "MAX_REQUEST_BODY_BYTES"])


def test_certfile_without_keyfile_is_refused(tls_files):
    lines = assert_refused(serve_with({"SSL_CERTFILE": tls_files[0]}), ["SSL_"])
    assert "SSL_KEYFILE" in lines[0] or "SSL_CERTFILE" in lines[0], lines


def test_keyfile_without_certfile_is_refused(tls_files):
    assert_refused(serve_with({"SSL_KEYFILE": tls_files[1]}), ["SSL_"])


def test_missing_ssl_files_are_refused(tmp_path):
    result = serve_with({"SSL_CERTFILE": tmp_path / "no-cert.pem",
                         "SSL_KEYFILE": tmp_path / "no-key.pem"})
    assert result.returncode == 2, result
    lines = config_lines(result)
    assert 1 <= len(lines) <= 2, lines
    assert any("SSL_CERTFILE" in l or "no-cert.pem" in l for l in lines), lines


def test_ssl_files_that_are_not_pem_are_refused(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("this is not a certificate\n")
    key.write_text("this is not a key\n")
    result = serve_with({"SSL_CERTFILE": cert, "SSL_KEYFILE": key})
    assert result.returncode == 2, result
    assert 1 <= len(config_lines(result)) <= 2


def test_key_that_does_not_match_the_certificate_is_refused(tls_files, tmp_path):
    other_key = tmp_path / "other-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(other_key)],
                   check=True, capture_output=True, timeout=30)
    result = serve_with({"SSL_CERTFILE": tls_files[0], "SSL_KEYFILE": other_key})
    assert result.returncode == 2, result
    assert len(config_lines(result)) == 1


# -- production and SECRET_KEY_BASE -----------------------------------------

PRODUCTION = {"KILN_ENV": "production", "BIND_ADDRESS": "127.0.0.1"}


def assert_secret_not_echoed(result, secret):
    for stream in (result.stdout, result.stderr):
        assert secret.encode() not in stream, "the secret value was echoed"


def test_production_without_secret_is_refused():
    assert_refused(serve_with(dict(PRODUCTION)), ["SECRET_KEY_BASE"])


def test_production_with_empty_secret_is_refused():
    # Empty values count as unset.
    assert_refused(serve_with(dict(PRODUCTION, SECRET_KEY_BASE="")), ["SECRET_KEY_BASE"])


@pytest.mark.parametrize("secret", [SHORT_SECRET, SECRET_63], ids=["short", "63-bytes"])
def test_production_with_short_secret_is_refused_without_echoing_it(secret):
    result = serve_with(dict(PRODUCTION, SECRET_KEY_BASE=secret))
    assert_refused(result, ["SECRET_KEY_BASE"])
    assert_secret_not_echoed(result, secret)


def test_short_secret_among_other_problems_is_not_echoed():
    result = serve_with(dict(PRODUCTION, SECRET_KEY_BASE=SHORT_SECRET, PORT="70000"))
    assert_refused(result, ["SECRET_KEY_BASE", "PORT"])
    assert_secret_not_echoed(result, SHORT_SECRET)


def test_production_with_a_64_byte_secret_starts(kiln):
    assert len(SECRET_64) == 64
    srv = kiln(KILN_ENV="production", BIND_ADDRESS="127.0.0.1", SECRET_KEY_BASE=SECRET_64)
    r = requests.get(srv.url("/livez"), timeout=5)
    assert r.status_code == 200
    # The test-only route exists only with KILN_ENV=test.
    r = requests.get(srv.url("/_test/sleep?ms=1"), timeout=5)
    assert r.status_code == 404, r.text
    assert SECRET_64 not in srv.stdout_text() + srv.stderr_text()


def test_development_starts_without_test_routes(kiln):
    srv = kiln(KILN_ENV="development")
    assert requests.get(srv.url("/livez"), timeout=5).status_code == 200
    assert requests.get(srv.url("/_test/sleep?ms=1"), timeout=5).status_code == 404


@pytest.mark.parametrize("level", ["debug", "warning", "warn", "error"])
def test_every_documented_log_level_starts(kiln, level):
    srv = kiln(LOG_LEVEL=level)
    assert requests.get(srv.url("/livez"), timeout=5).status_code == 200


def test_empty_values_count_as_unset(kiln):
    # An empty SSL_CERTFILE alone is not "cert without key": it is unset.
    srv = kiln(LOG_LEVEL="", MAX_REQUEST_BODY_BYTES="", SSL_CERTFILE="", KILN_ENV="")
    assert requests.get(srv.url("/livez"), timeout=5).status_code == 200
