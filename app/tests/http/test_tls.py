"""HTTPS in-process: SSL_CERTFILE / SSL_KEYFILE, or SSL_SELF_SIGNED."""

import socket
import ssl

import pytest
import requests

from kilnhttp import RawConn, clean_env, http_request, insecure_tls_context, run_kiln


@pytest.fixture(scope="module")
def tls_server(module_kiln, tls_files):
    return module_kiln(tls=tls_files)


def test_https_request(tls_server):
    r = requests.get(f"https://127.0.0.1:{tls_server.port}/livez", verify=False, timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_certificate_verifies_against_itself(tls_server, tls_files):
    r = requests.get(f"https://localhost:{tls_server.port}/healthz",
                     verify=str(tls_files[0]), timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_keep_alive_over_tls_with_a_session(tls_server):
    with requests.Session() as s:
        for _ in range(5):
            r = s.get(tls_server.url("/healthz"), verify=False, timeout=5)
            assert r.status_code == 200


def test_keep_alive_over_one_tls_socket(tls_server):
    with tls_server.connect() as conn:
        for i in range(3):
            conn.send(http_request("GET", "/livez", request_id=f"tls-ka-{i}"))
            resp = conn.read_response()
            assert resp.status == 200 and resp.headers["x-request-id"] == f"tls-ka-{i}"


def test_pipelining_over_tls(tls_server):
    with tls_server.connect() as conn:
        conn.send(http_request("GET", "/healthz", request_id="tls-p1")
                  + http_request("GET", "/livez", request_id="tls-p2"))
        first, second = conn.read_responses(2)
    assert (first.status, first.headers["x-request-id"]) == (200, "tls-p1")
    assert first.json() == {"status": "ok"}
    assert (second.status, second.headers["x-request-id"]) == (200, "tls-p2")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_are_accepted(tls_server, version):
    ctx = insecure_tls_context(minimum=version, maximum=version)
    with RawConn(tls_server.port, tls=True, tls_context=ctx) as conn:
        assert conn.sock.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        conn.send(http_request("GET", "/livez"))
        assert conn.read_response().status == 200


def test_plain_http_to_the_tls_port_gets_no_http_answer(tls_server):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as s:
        s.sendall(http_request("GET", "/livez"))
        s.settimeout(3)
        received = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"connection still open 3 s after a plain-HTTP request; got {received[:200]!r}")
    assert not received.startswith(b"HTTP/1.1 200"), received[:200]
    assert b"\"status\":\"ok\"" not in received
    # The TLS listener is still fine afterwards.
    with tls_server.connect() as conn:
        conn.send(http_request("GET", "/livez"))
        assert conn.read_response().status == 200


def test_tls_handshake_garbage_does_not_crash(tls_server):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 64)
        s.settimeout(3)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    r = requests.get(tls_server.url("/livez"), verify=False, timeout=5)
    assert r.status_code == 200


def test_healthcheck_speaks_tls(tls_server, tls_files):
    env = clean_env(tls_server.port, {"SSL_CERTFILE": tls_files[0], "SSL_KEYFILE": tls_files[1]})
    result = run_kiln(["healthcheck"], env=env)
    assert result.returncode == 0, result


def test_self_signed_certificate(module_kiln):
    """SSL_SELF_SIGNED: HTTPS with a certificate made in memory (the ALB to
    task hop), a fresh key per start; the healthcheck speaks TLS to it."""
    srv = module_kiln(SSL_SELF_SIGNED="true")
    r = requests.get(srv.url("/healthz"), verify=False, timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    ctx = insecure_tls_context()
    with RawConn(srv.port, tls=True, tls_context=ctx) as conn:
        der = conn.sock.getpeercert(binary_form=True)
        assert der and conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    pem = ssl.DER_cert_to_PEM_cert(der)
    assert "BEGIN CERTIFICATE" in pem
    env = clean_env(srv.port, {"SSL_SELF_SIGNED": "true"})
    assert run_kiln(["healthcheck"], env=env).returncode == 0
    # plain HTTP healthcheck against the TLS port fails: it does speak TLS
    assert run_kiln(["healthcheck"], env=clean_env(srv.port)).returncode != 0


def test_self_signed_with_certificate_files_is_a_config_error(tls_files):
    env = clean_env(None, {"SSL_SELF_SIGNED": "true", "SSL_CERTFILE": tls_files[0],
                           "SSL_KEYFILE": tls_files[1]})
    result = run_kiln(["serve"], env=env)
    assert result.returncode == 2
    assert b"SSL_SELF_SIGNED" in result.stderr
