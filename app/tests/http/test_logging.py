"""Request logs: one JSON object per line on stdout per request."""

import threading
import time

import pytest
import requests

from kilnhttp import RFC3339_UTC_RE, http_request

REQUEST_KEYS = {"time", "level", "message", "request_id", "method", "path", "status",
                "duration_ms", "user_agent", "remote_ip"}


def test_request_line_has_every_field(server):
    r = requests.get(server.url("/livez"), headers={"x-request-id": "log-fields",
                                                    "User-Agent": "kiln-tests/1.0"}, timeout=5)
    assert r.status_code == 200
    rec = server.log_for("log-fields")
    assert REQUEST_KEYS <= set(rec), f"missing {REQUEST_KEYS - set(rec)} in {rec}"
    assert RFC3339_UTC_RE.match(rec["time"]), rec["time"]
    assert rec["level"] == "info"
    assert isinstance(rec["message"], str) and rec["message"]
    assert rec["method"] == "GET"
    assert rec["path"] == "/livez"
    assert rec["status"] == 200
    assert isinstance(rec["duration_ms"], (int, float)) and rec["duration_ms"] >= 0
    assert rec["user_agent"] == "kiln-tests/1.0"
    assert rec["remote_ip"] == "127.0.0.1"


def test_one_line_per_request(server):
    for i in range(3):
        requests.get(server.url("/healthz"), headers={"x-request-id": "log-once"}, timeout=5)
    server.log_for("log-once")
    time.sleep(0.3)
    records, _ = server.log_lines()
    assert len([r for r in records if r.get("request_id") == "log-once"]) == 3


def test_duration_covers_the_handler(server):
    requests.get(server.url("/_test/sleep?ms=200"), headers={"x-request-id": "log-slow"}, timeout=5)
    rec = server.log_for("log-slow")
    assert rec["duration_ms"] >= 190, rec


@pytest.mark.parametrize("path,status", [("/nope", 404), ("/livez", 405)])
def test_client_errors_log_as_warning(server, path, status):
    rid = f"log-warn-{status}"
    method = "GET" if status == 404 else "POST"
    r = requests.request(method, server.url(path), headers={"x-request-id": rid}, timeout=5)
    assert r.status_code == status
    rec = server.log_for(rid)
    assert rec["status"] == status and rec["level"] == "warning", rec
    assert rec["method"] == method and rec["path"] == path


def test_bad_request_is_logged(server):
    resp = server.exchange(b"GET /livez HTTP/1.1\r\nx-request-id: log-400\r\n\r\n")[0]
    assert resp.status == 400
    rid = resp.headers["x-request-id"]
    rec = server.log_for(rid)
    assert rec["status"] == 400 and rec["level"] == "warning", rec


@pytest.mark.parametrize("header,value", [
    ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
])
def test_trace_id_from_trace_headers(server, header, value):
    rid = f"log-trace-{header}"
    requests.get(server.url("/livez"), headers={"x-request-id": rid, header: value}, timeout=5)
    rec = server.log_for(rid)
    trace = rec.get("trace_id")
    assert isinstance(trace, str) and trace, rec
    want = "5759e988-bd862e3fe1be46a994272793" if header == "x-amzn-trace-id" \
        else "4bf92f3577b34da6a3ce929d0e0e4736"
    assert want in trace, rec


def test_query_string_is_not_logged(server):
    r = requests.get(server.url("/livez?code=SECRET123&state=xyz"),
                     headers={"x-request-id": "log-query"}, timeout=5)
    assert r.status_code == 200
    rec = server.log_for("log-query")
    assert rec["path"] == "/livez"
    assert "SECRET123" not in server.stdout_text()
    assert "SECRET123" not in server.stderr_text()


def test_user_agent_with_quotes_and_backslashes_round_trips(server):
    ua = 'evil "quoted" \\back\\slash\\ {"json":1} \'single\''
    data = http_request("GET", "/livez", headers=[("User-Agent", ua)], request_id="log-ua-quotes")
    assert server.exchange(data)[0].status == 200
    rec = server.log_for("log-ua-quotes")
    assert rec["user_agent"] == ua


@pytest.mark.parametrize("rid,ua", [
    ("log-ua-utf8", b"agent \xff\xfe\xc3( invalid utf-8 end"),
    ("log-ua-tabs", b"agent\twith\ttabs end"),
    ("log-ua-ctl", b"agent \x01\x1b[31m\x7f control end"),
], ids=["invalid-utf8", "tabs", "control-bytes"])
def test_hostile_user_agent_still_gives_a_valid_json_line(server, rid, ua):
    resp = server.exchange(http_request("GET", "/livez", headers=[("User-Agent", ua)],
                                        request_id=rid))[0]
    # Control bytes may be refused (400); either way the line must be JSON.
    assert resp.status in (200, 400), resp
    rec = server.log_for(resp.headers["x-request-id"])
    assert rec["status"] == resp.status
    _, bad = server.log_lines()
    assert bad == [], f"stdout lines that are not UTF-8 JSON objects: {bad[:3]!r}"


def test_every_stdout_line_is_a_json_object(server):
    requests.get(server.url("/"), timeout=5)
    time.sleep(0.2)
    records, bad = server.log_lines()
    assert bad == [], f"not JSON objects: {bad[:3]!r}"
    assert records
    for rec in records:
        assert {"time", "level", "message"} <= set(rec), rec


def test_log_level_warning_drops_info_lines(kiln):
    srv = kiln(LOG_LEVEL="warning")
    requests.get(srv.url("/livez"), headers={"x-request-id": "lvl-200"}, timeout=5)
    requests.get(srv.url("/nope"), headers={"x-request-id": "lvl-404"}, timeout=5)
    assert srv.log_for("lvl-404")["level"] == "warning"
    time.sleep(0.2)
    records, _ = srv.log_lines()
    assert not [r for r in records if r.get("request_id") == "lvl-200"]


def test_log_level_error_keeps_only_5xx(kiln):
    srv = kiln(LOG_LEVEL="error", DB_POOL_SIZE="1", WORKER_QUEUE_SIZE="1")
    slow = [threading.Thread(target=requests.get, args=(srv.url("/_test/sleep?ms=800"),),
                             kwargs={"headers": {"x-request-id": f"lvl-slow-{i}"}, "timeout": 10})
            for i in range(2)]
    slow[0].start()
    time.sleep(0.2)
    slow[1].start()
    time.sleep(0.2)
    # The worker pool is full: another worker route is refused with a 503.
    r = requests.get(srv.url("/_test/sleep?ms=1"), headers={"x-request-id": "lvl-503"},
                     timeout=5)
    assert r.status_code == 503
    requests.get(srv.url("/livez"), headers={"x-request-id": "lvl-200"}, timeout=5)
    requests.get(srv.url("/nope"), headers={"x-request-id": "lvl-404"}, timeout=5)
    for t in slow:
        t.join(10)

    rec = srv.log_for("lvl-503")
    assert rec["level"] == "error" and rec["status"] == 503, rec
    time.sleep(0.2)
    records, _ = srv.log_lines()
    logged = {r.get("request_id") for r in records}
    assert not logged & {"lvl-200", "lvl-404", "lvl-slow-0", "lvl-slow-1"}, logged
