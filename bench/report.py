#!/usr/bin/python3
"""Turn the raw files bench/run.sh leaves in build/bench into a text report
(stdout) and build/bench/results.json. Standard library only.

usage: report.py OUT_DIR              everything (the database, session,
                                     notes and footprint parts too, when
                                     bench/db.sh, bench/session.sh,
                                     bench/notes.sh and bench/footprint.sh
                                     left OUT_DIR/db/meta.env,
                                     OUT_DIR/session/meta.env,
                                     OUT_DIR/notes/meta.env and
                                     OUT_DIR/footprint/meta.env)
       report.py --db-only OUT_DIR    the database part alone (bench/db.sh);
                                     writes OUT_DIR/db/results.json
       report.py --session-only OUT_DIR
                                     the session part alone (bench/session.sh);
                                     writes OUT_DIR/session/results.json
       report.py --notes-only OUT_DIR
                                     the notes part alone (bench/notes.sh);
                                     writes OUT_DIR/notes/results.json
       report.py --footprint-only OUT_DIR
                                     the footprint part alone
                                     (bench/footprint.sh); writes
                                     OUT_DIR/footprint/results.json
"""
import glob
import json
import os
import re
import sys

GOAL_LIVEZ_RATIO = 0.9
GOAL_DB_RATIO = 0.6
GOAL_SESSION_RATIO = 0.5
GOAL_NOTES_RATIO = 0.5
GOAL_NOTES_P99_MS = 10.0
GOAL_NOTES_HOT_RATIO = 0.9
GOAL_TAIL_RATIO = 1.5
GOAL_IDLE_RSS_MIB = 8.0
GOAL_HOLD_RSS_MIB = 64.0
GOAL_FOOTPRINT_RSS_MIB = 8.0
GOAL_START_MS = 10.0
NOISY_OTHER_CPU_PCT = 10.0

TARGETS = [
    ("kiln-livez", "kiln   GET /livez"),
    ("nginx-livez", "nginx  GET /livez"),
    ("kiln-healthz", "kiln   GET /healthz"),
]

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        return None
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(path):
    text = open(path).read()
    r = {"file": os.path.basename(path)}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    r["rps"] = float(m.group(1)) if m else None
    for pct, key in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        r[key] = to_ms(m.group(1)) if m else None
    m = re.search(r"^\s+(\d+) requests in ([0-9.]+\w+)", text, re.M)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
        if m else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"^other_cpu_pct: ([0-9.]+)", text, re.M)
    r["other_cpu_pct"] = float(m.group(1)) if m else None
    # bench/latency.lua's done(): the same percentiles in µs, unrounded,
    # and the 99.9th and the maximum that --latency does not print.
    m = re.search(r"^latency_us: (.*)$", text, re.M)
    if m:
        kv = parse_kv(m.group(1).replace("p99.9=", "p999="))
        for name, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("p999", "p999_ms"),
                          ("max", "max_ms")):
            if kv.get(name, "").isdigit():
                r[key] = int(kv[name]) / 1000.0
    else:
        r["p999_ms"] = r["max_ms"] = None
    return r


def percentiles_ms(lat_us):
    """p50, p99, p99.9 (nearest rank: the smallest value with at least p % of
    the values at or below it) and max of a list of µs, as ms."""
    r = {}
    if not lat_us:
        return r
    lat_us.sort()
    n = len(lat_us)
    for permille, key in ((500, "p50_ms"), (990, "p99_ms"), (999, "p999_ms")):
        rank = max(1, (n * permille + 999) // 1000)
        r[key] = lat_us[rank - 1] / 1000.0
    r["max_ms"] = lat_us[-1] / 1000.0
    r["logged"] = n
    return r


def read_meta(out):
    meta = {}
    with open(os.path.join(out, "meta.env")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def num(meta, key):
    try:
        return float(meta[key])
    except (KeyError, ValueError):
        return None


def inum(meta, key):
    v = num(meta, key)
    return None if v is None else int(v)


def mib(kib):
    return None if kib is None else kib / 1024.0


def fmt(v, spec, width):
    return ("-" if v is None else format(v, spec)).rjust(width)


def parse_kv(line):
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line or "")}


def hold_result(meta, name, n):
    if meta.get(name + "_hold_ok") != "1":
        return {"ok": False}
    ready = parse_kv(meta.get(name + "_hold_ready"))
    released = parse_kv(meta.get(name + "_hold_released"))
    before, held, after = (num(meta, "%s_rss_%s_kib" % (name, k))
                           for k in ("before_hold", "hold", "after_hold"))
    established = int(ready.get("established", 0))
    per_conn = None
    if held is not None and before is not None and established:
        per_conn = (held - before) / established
    return {
        "ok": established == n,
        "requested": n,
        "established": established,
        "failed": int(ready.get("failed", 0)),
        "connect_seconds": float(ready.get("seconds", 0)),
        "still_open_at_release": int(released["still_open"]) if "still_open" in released else None,
        "closed_by_server": int(released["closed_by_peer"]) if "closed_by_peer" in released else None,
        "rss_before_mib": mib(before),
        "rss_held_mib": mib(held),
        "rss_after_close_mib": mib(after),
        "per_connection_kib": per_conn,
        "fresh_request_status": meta.get(name + "_hold_fresh_status"),
        "fresh_request_ms": inum(meta, name + "_hold_fresh_ms"),
    }


# ------------------------------------------------- tails next to pgbench --

def tail_rows(runs, pairs):
    """p50/p99/p99.9/max of each kiln target next to its pgbench peer (the
    reported round of each: the best by req/s or tps), and the ratios
    kiln p99 / pgbench p99 and kiln p99.9 / pgbench p99.9. pairs:
    (key, workload, kiln target, pgbench target); kiln targets that did not
    run are left out."""
    rows = []
    for key, workload, kt, pt in pairs:
        if kt not in runs or not runs[kt]["runs"]:
            continue
        k = runs[kt]["best"] or {}
        g = (runs.get(pt) or {}).get("best") or {}

        def pick(b):
            return {x: b.get(x) for x in ("p50_ms", "p99_ms", "p999_ms", "max_ms")}

        def ratio(a, b):
            return a / b if a is not None and b else None

        rows.append({"key": key, "workload": workload, "kiln_target": kt, "pgbench_target": pt,
                     "kiln": pick(k), "pgbench": pick(g),
                     "pgbench_all_transactions": g.get("all_transactions"),
                     "p99_ratio": ratio(k.get("p99_ms"), g.get("p99_ms")),
                     "p999_ratio": ratio(k.get("p999_ms"), g.get("p999_ms"))})
    return rows


def tail_goals(rows, prefix, conns, note=""):
    goals = []
    for row in rows:
        for pct, key in (("p99", "p99_ratio"), ("p99.9", "p999_ratio")):
            value = row[key]
            goals.append({"goal": "%s %s: kiln %s / pgbench %s at %d connections" % (
                              prefix, row["workload"], pct, pct, conns),
                          "value": value, "op": "<=", "limit": GOAL_TAIL_RATIO, "unit": "",
                          "pass": value is not None and value <= GOAL_TAIL_RATIO, "note": note})
    return goals


def print_tail(rows, conns, p=print):
    if not rows:
        return
    p("")
    p("tail latency at %d connections, kiln next to pgbench on the same statements "
      "(same run; each its reported round)" % conns)
    p("%-34s %24s  %24s %7s %7s  %s" % ("workload", "kiln p50/p99/p99.9 ms",
                                       "pgbench p50/p99/p99.9", "p99 x", "p99.9 x",
                                       "max ms kiln/pgbench"))

    def three(d):
        return "/".join(fmt(d.get(x), ".2f", 0) for x in ("p50_ms", "p99_ms", "p999_ms"))

    for row in rows:
        p("%-34s %24s  %24s %7s %7s  %s/%s" % (
            row["workload"], three(row["kiln"]), three(row["pgbench"]),
            fmt(row["p99_ratio"], ".2f", 7), fmt(row["p999_ratio"], ".2f", 7),
            fmt(row["kiln"].get("max_ms"), ".1f", 0), fmt(row["pgbench"].get("max_ms"), ".1f", 0)))
    p("(kiln: wrk's latency histogram, printed by bench/latency.lua; pgbench: its "
      "per-transaction log (-l), nearest rank, without each client's first transaction (a new "
      "backend's cold start; with them, p99.9: %s ms); x: kiln / pgbench, goal <= %.1f)" % (
          ", ".join(fmt((row["pgbench_all_transactions"] or {}).get("p999_ms"), ".2f", 0)
                    for row in rows), GOAL_TAIL_RATIO))


# ------------------------------------------------------------- database --

DB_TARGETS = [
    ("kiln-healthz", "kiln GET /healthz (SELECT 1), prepared off"),
    ("kiln-healthz-prepared", "kiln GET /healthz (SELECT 1), prepared on"),
    ("pgbench-select1", "pgbench SELECT 1, -M extended"),
    ("pgbench-select1-prepared", "pgbench SELECT 1, -M prepared"),
    ("pgbench-pk", "pgbench PK SELECT, -M extended"),
    ("pgbench-pk-prepared", "pgbench PK SELECT, -M prepared"),
]


DB_TAIL_PAIRS = [
    ("select1", "SELECT 1, prepared off/-M extended", "kiln-healthz", "pgbench-select1"),
    ("select1_prepared", "SELECT 1, prepared on/-M prepared", "kiln-healthz-prepared",
     "pgbench-select1-prepared"),
]


def parse_pgbench(path):
    text = open(path).read()
    r = {"file": os.path.basename(path)}
    m = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", text, re.M) or \
        re.search(r"^tps = ([0-9.]+)", text, re.M)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"^latency average = ([0-9.]+) ms", text, re.M)
    r["latency_avg_ms"] = float(m.group(1)) if m else None
    m = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    r["failed"] = int(m.group(1)) if m else 0
    # Per-transaction logs (pgbench -l, bench/db.sh and bench/notes.sh):
    # "client xact latency_us script epoch epoch_us" per line, one file per
    # thread (PREFIX.PID, PREFIX.PID.1, ...; a client's lines are in one
    # file, in order); a failed transaction's latency is "failed" and is
    # left out. So is each client's first transaction: the first statement
    # on a new backend, which fills its catalog caches while the other
    # clients still connect (seen here: 64 of them averaging 300 ms against
    # 10 ms after), a cost kiln's pool, connected and warmed up before the
    # measured round, does not pay; with 64 clients they would be the
    # p99.9 of a short run. The figures with them are kept under
    # "all_transactions".
    lat, lat_all, seen = [], [], set()
    for f in glob.glob(path[:-len(".txt")] + ".pglog*") if path.endswith(".txt") else []:
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat_all.append(int(parts[2]))
                    if parts[0] in seen:
                        lat.append(int(parts[2]))
                if parts:
                    seen.add(parts[0])
    r.update(percentiles_ms(lat))
    if lat_all:
        r["first_transactions_left_out"] = len(lat_all) - len(lat)
        r["all_transactions"] = percentiles_ms(lat_all)
    return r


def db_results(out):
    """The database part (bench/db.sh), or None when it did not run."""
    d = os.path.join(out, "db")
    if not os.path.exists(os.path.join(d, "meta.env")):
        return None
    meta = read_meta(d)
    if meta.get("skipped"):
        return {"skipped": meta["skipped"], "goals": []}
    runs = {}
    for key, _ in DB_TARGETS:
        files = sorted(glob.glob(os.path.join(d, "run-%s-r*.txt" % key)))
        parse = parse_wrk if key.startswith("kiln") else parse_pgbench
        rs = [parse(f) for f in files]
        good = [r for r in rs if r["rps"] is not None]
        runs[key] = {"best": max(good, key=lambda r: r["rps"]) if good else None, "runs": rs}

    def rps(key):
        b = runs[key]["best"]
        return b["rps"] if b else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    def gain(a, b):
        r = ratio(a, b)
        return None if r is None else r - 1.0

    res = {
        "config": {
            "postgres_version": meta.get("postgres_version"),
            "pgbench_version": meta.get("pgbench_version"),
            "kiln_has_database": meta.get("kiln_db") == "1",
            "seconds": int(meta["seconds"]),
            "warmup_seconds": int(meta["warmup_seconds"]),
            "rounds": int(meta["rounds"]),
            "connections": int(meta["connections"]),
            "threads": int(meta["threads"]),
            "http_loops": int(meta["http_loops"]),
            "db_pool_size": meta.get("db_pool_size"),
            "wrk": "wrk -t%s -c%s -d%ss --latency" % (meta["threads"], meta["connections"],
                                                     meta["seconds"]),
            "pgbench": "pgbench -n -c %s -j %s -T %s -M extended|prepared -f SCRIPT" % (
                meta["connections"], meta["threads"], meta["seconds"]),
        },
        "throughput": runs,
        "ratios": {
            "kiln_vs_pgbench_select1": ratio(rps("kiln-healthz"), rps("pgbench-select1")),
            "kiln_vs_pgbench_select1_prepared": ratio(rps("kiln-healthz-prepared"),
                                                      rps("pgbench-select1-prepared")),
            "kiln_prepared_gain": gain(rps("kiln-healthz-prepared"), rps("kiln-healthz")),
            "pgbench_select1_prepared_gain": gain(rps("pgbench-select1-prepared"),
                                                  rps("pgbench-select1")),
            "pgbench_pk_prepared_gain": gain(rps("pgbench-pk-prepared"), rps("pgbench-pk")),
        },
        "kiln_healthz_bodies": {k: meta.get(k + "_healthz_body") for k, _ in DB_TARGETS[:2]},
        "kiln_stderr_lines": {k: int(meta.get(k + "_stderr_lines") or 0)
                              for k, _ in DB_TARGETS[:2]},
    }
    res["tail"] = tail_rows(runs, DB_TAIL_PAIRS)
    value = res["ratios"]["kiln_vs_pgbench_select1"]
    res["goals"] = [{
        "goal": "kiln GET /healthz req/s / pgbench SELECT 1 tps (prepared off, -M extended)",
        "value": value, "op": ">=", "limit": GOAL_DB_RATIO, "unit": "",
        "pass": value is not None and value >= GOAL_DB_RATIO,
        "note": "" if res["config"]["kiln_has_database"] else "kiln has no database driver",
    }] + tail_goals(res["tail"], "db", res["config"]["connections"])
    return res


def print_db(db, p=print):
    p("Database: kiln GET /healthz (one SELECT 1 on PostgreSQL per request) vs pgbench")
    if db.get("skipped"):
        p("skipped: " + db["skipped"])
        return
    c = db["config"]
    p("PostgreSQL %s direct (no pooler), %s / %s, %d s warmup, best of %d rounds; "
      "kiln HTTP_LOOPS=%d, DB_POOL_SIZE=%s" % (
          c["postgres_version"], c["wrk"], c["pgbench"], c["warmup_seconds"], c["rounds"],
          c["http_loops"], c["db_pool_size"]))
    p("")
    p("%-46s %11s %9s %9s %9s   %s" % ("target", "req/s|tps", "p50 ms", "p99 ms", "p99.9 ms",
                                        "per round"))
    for key, label in DB_TARGETS:
        t = db["throughput"][key]
        if not t["runs"]:
            p("%-46s %11s" % (label, "not run"))
            continue
        b = t["best"] or {}
        per = "  ".join(fmt(r["rps"], ".0f", 0) for r in t["runs"])
        p50 = b.get("p50_ms", b.get("latency_avg_ms"))
        p("%-46s %11s %9s %9s %9s   %s" % (label, fmt(b.get("rps"), ".0f", 11),
                                            fmt(p50, ".3f", 9), fmt(b.get("p99_ms"), ".3f", 9),
                                            fmt(b.get("p999_ms"), ".3f", 9), per))
    p("(pgbench rows: p50/p99/p99.9 from its per-transaction log (-l), else the p50 column is "
      "its average latency)")
    print_tail(db.get("tail") or [], c["connections"], p)
    r = db["ratios"]
    p("")
    p("ratio kiln/pgbench SELECT 1, prepared off / -M extended:  %s" %
      fmt(r["kiln_vs_pgbench_select1"], ".3f", 0))
    p("ratio kiln/pgbench SELECT 1, prepared on / -M prepared:   %s" %
      fmt(r["kiln_vs_pgbench_select1_prepared"], ".3f", 0))
    pct = lambda v: "-" if v is None else "%+.1f%%" % (v * 100)
    p("prepared statements gain: kiln %s, pgbench SELECT 1 %s, pgbench PK SELECT %s" % (
        pct(r["kiln_prepared_gain"]), pct(r["pgbench_select1_prepared_gain"]),
        pct(r["pgbench_pk_prepared_gain"])))
    for k, body in db["kiln_healthz_bodies"].items():
        if body is not None and '"ok"' not in body:
            p("warning: %s /healthz before the runs: %s" % (k, body))
    for k, n in db["kiln_stderr_lines"].items():
        if n:
            p("warning: %s wrote %d line(s) to stderr (build/bench/db/%s.stderr)" % (k, n, k))
    for key, label in DB_TARGETS:
        for run in db["throughput"][key]["runs"]:
            se = run.get("socket_errors") or {}
            if any(se.values()) or run.get("non_2xx") or run.get("failed"):
                p("warning: %s (%s): socket errors %s, non-2xx %s, failed %s" % (
                    label, run["file"], se or "-", run.get("non_2xx", "-"), run.get("failed", "-")))


# -------------------------------------------------------------- sessions --

SESSION_TARGETS = [
    ("kiln-me-valkey", "kiln GET /api/v1/me, sessions in Valkey"),
    ("kiln-me-memory", "kiln GET /api/v1/me, memory store"),
    ("redis-get", "redis-benchmark GET"),
]


def parse_redis_benchmark(path):
    """redis-benchmark --csv: "test","rps","avg_latency_ms",...,"p50_latency_ms",..."""
    r = {"file": os.path.basename(path), "rps": None}
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    header = None
    for line in lines:
        cells = [c.strip('"') for c in line.split(",")]
        if cells[0] == "test":
            header = cells
        elif cells[0] == "GET" and header:
            row = dict(zip(header, cells))
            for key, name in (("rps", "rps"), ("avg_latency_ms", "latency_avg_ms"),
                              ("p50_latency_ms", "p50_ms"), ("p99_latency_ms", "p99_ms")):
                try:
                    r[name] = float(row[key])
                except (KeyError, ValueError):
                    r[name] = None
    return r


def session_results(out):
    """The session part (bench/session.sh), or None when it did not run."""
    d = os.path.join(out, "session")
    if not os.path.exists(os.path.join(d, "meta.env")):
        return None
    meta = read_meta(d)
    if meta.get("skipped"):
        return {"skipped": meta["skipped"], "goals": []}
    runs = {}
    for key, _ in SESSION_TARGETS:
        files = sorted(glob.glob(os.path.join(d, "run-%s-r*.txt" % key)))
        parse = parse_wrk if key.startswith("kiln") else parse_redis_benchmark
        rs = [parse(f) for f in files]
        good = [r for r in rs if r["rps"] is not None]
        runs[key] = {"best": max(good, key=lambda r: r["rps"]) if good else None, "runs": rs}

    def rps(key):
        b = runs[key]["best"]
        return b["rps"] if b else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    res = {
        "config": {
            "redis_version": meta.get("redis_version"),
            "postgres_version": meta.get("postgres_version"),
            "seconds": int(meta["seconds"]),
            "warmup_seconds": int(meta["warmup_seconds"]),
            "rounds": int(meta["rounds"]),
            "connections": int(meta["connections"]),
            "threads": int(meta["threads"]),
            "users": int(meta["users"]),
            "http_loops": int(meta["http_loops"]),
            "wrk": "wrk -t%s -c%s -d%ss --latency -s SESSIONS.lua" % (
                meta["threads"], meta["connections"], meta["seconds"]),
            "redis_benchmark": "redis-benchmark -c %s -n %s --threads %s -t get" % (
                meta["connections"], meta["redis_requests"], meta["threads"]),
        },
        "throughput": runs,
        "ratios": {
            "kiln_valkey_vs_redis_get": ratio(rps("kiln-me-valkey"), rps("redis-get")),
            "kiln_memory_vs_redis_get": ratio(rps("kiln-me-memory"), rps("redis-get")),
            "kiln_valkey_vs_memory": ratio(rps("kiln-me-valkey"), rps("kiln-me-memory")),
        },
        "kiln_stderr_lines": {k: int(meta.get(k + "_stderr_lines") or 0)
                              for k, _ in SESSION_TARGETS[:2]},
    }
    value = res["ratios"]["kiln_valkey_vs_redis_get"]
    res["goals"] = [{
        "goal": "kiln GET /api/v1/me (Valkey) req/s / redis-benchmark GET req/s",
        "value": value, "op": ">=", "limit": GOAL_SESSION_RATIO, "unit": "",
        "pass": value is not None and value >= GOAL_SESSION_RATIO, "note": "",
    }]
    return res


def print_session(ss, p=print):
    p("Sessions: kiln GET /api/v1/me with a valid session vs redis-benchmark GET")
    if ss.get("skipped"):
        p("skipped: " + ss["skipped"])
        return
    c = ss["config"]
    p("both kilns on PostgreSQL %s (handlers on loop fibers), one + Valkey, one + memory kv; "
      "Redis %s plain TCP; %s (cycling through %d users' sessions) / %s; %d s warmup, "
      "best of %d rounds; kiln HTTP_LOOPS=%d, rate limiting on" % (
          c.get("postgres_version") or "?", c["redis_version"], c["wrk"], c["users"],
          c["redis_benchmark"], c["warmup_seconds"], c["rounds"], c["http_loops"]))
    p("")
    p("%-42s %11s %9s %9s   %s" % ("target", "req/s", "p50 ms", "p99 ms", "per round"))
    for key, label in SESSION_TARGETS:
        t = ss["throughput"][key]
        if not t["runs"]:
            p("%-42s %11s" % (label, "not run"))
            continue
        b = t["best"] or {}
        per = "  ".join(fmt(r["rps"], ".0f", 0) for r in t["runs"])
        p("%-42s %11s %9s %9s   %s" % (label, fmt(b.get("rps"), ".0f", 11),
                                        fmt(b.get("p50_ms"), ".3f", 9),
                                        fmt(b.get("p99_ms"), ".3f", 9), per))
    r = ss["ratios"]
    p("")
    p("ratio kiln /me on Valkey / redis-benchmark GET:   %s" % fmt(r["kiln_valkey_vs_redis_get"], ".3f", 0))
    p("ratio kiln /me on memory / redis-benchmark GET:   %s" % fmt(r["kiln_memory_vs_redis_get"], ".3f", 0))
    p("ratio kiln /me Valkey / memory store:             %s" % fmt(r["kiln_valkey_vs_memory"], ".3f", 0))
    for k, n in ss["kiln_stderr_lines"].items():
        if n:
            p("warning: %s wrote %d line(s) to stderr (build/bench/session/%s.stderr)" % (k, n, k))
    for key, label in SESSION_TARGETS[:2]:
        for run in ss["throughput"][key]["runs"]:
            se = run.get("socket_errors") or {}
            if any(se.values()) or run.get("non_2xx"):
                p("warning: %s (%s): socket errors %s, non-2xx %s (401: sessions lost; "
                  "429: rate limited)" % (label, run["file"], se or "-", run.get("non_2xx", "-")))


def main_session_only(out):
    ss = session_results(out)
    if ss is None:
        sys.exit("report.py: no %s/session/meta.env (run bench/session.sh)" % out)
    with open(os.path.join(out, "session", "results.json"), "w") as f:
        json.dump(ss, f, indent=2)
        f.write("\n")
    print_session(ss)
    print("")
    print_goals(ss["goals"])


# ----------------------------------------------------------------- notes --

NOTES_TARGETS = [
    ("kiln-list-valkey", "kiln GET /notes?limit=20, cache on (Valkey)"),
    ("kiln-list", "kiln GET /notes?limit=20, cache off"),
    ("kiln-insert", "kiln POST /notes, memory kv"),
    ("kiln-insert-valkey", "kiln POST /notes, Valkey"),
    ("pgbench-list", "pgbench list (page + total), -M extended"),
    ("pgbench-insert", "pgbench INSERT ... RETURNING, -M extended"),
    ("kiln-hot", "kiln GET /notes, one hot user, Valkey, no cache"),
    ("pgbench-hot", "pgbench list, one hot user, -M extended"),
]

NOTES_TAIL_PAIRS = [
    ("list", "list, cache off", "kiln-list", "pgbench-list"),
    ("list_cached", "list, cache on (Valkey)", "kiln-list-valkey", "pgbench-list"),
    ("insert", "insert, memory kv", "kiln-insert", "pgbench-insert"),
    ("insert_valkey", "insert, Valkey", "kiln-insert-valkey", "pgbench-insert"),
    ("hot", "one hot user, list", "kiln-hot", "pgbench-hot"),
]


def notes_results(out):
    """The notes part (bench/notes.sh), or None when it did not run."""
    d = os.path.join(out, "notes")
    if not os.path.exists(os.path.join(d, "meta.env")):
        return None
    meta = read_meta(d)
    if meta.get("skipped"):
        return {"skipped": meta["skipped"], "goals": []}
    runs = {}
    for key, _ in NOTES_TARGETS:
        files = sorted(glob.glob(os.path.join(d, "run-%s-r*.txt" % key)))
        parse = parse_wrk if key.startswith("kiln") else parse_pgbench
        rs = [parse(f) for f in files]
        good = [r for r in rs if r["rps"] is not None]
        runs[key] = {"best": max(good, key=lambda r: r["rps"]) if good else None, "runs": rs}

    def rps(key):
        b = runs[key]["best"]
        return b["rps"] if b else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    conns = int(meta["connections"])
    hot_notes = int(meta.get("hot_notes") or 0)
    hot_vac = (inum(meta, "hot_vacuums_before"), inum(meta, "hot_vacuums_after"))
    res = {
        "config": {
            "postgres_version": meta.get("postgres_version"),
            "pgbench_version": meta.get("pgbench_version"),
            "redis_version": meta.get("redis_version"),
            "seconds": int(meta["seconds"]),
            "warmup_seconds": int(meta["warmup_seconds"]),
            "rounds": int(meta["rounds"]),
            "connections": conns,
            "threads": int(meta["threads"]),
            "http_loops": int(meta["http_loops"]),
            "db_pool_size": meta.get("db_pool_size"),
            "users": int(meta["users"]),
            "notes_per_user": int(meta["notes_per_user"]),
            "other_users": int(meta.get("other_users") or 0),
            "list_limit": int(meta["list_limit"]),
            "list_body_bytes": inum(meta, "list_body_bytes"),
            "wrk": "wrk -t%s -c%s -d%ss --latency -s TARGET.lua" % (
                meta["threads"], meta["connections"], meta["seconds"]),
            "pgbench": "pgbench -n -c %s -j %s -T %s -M extended -f SCRIPT" % (
                meta["connections"], meta["threads"], meta["seconds"]),
            "sql_matches_notes_c": meta.get("sql_check") == "ok",
            "sql_check": meta.get("sql_check"),
            "hot_notes": hot_notes,
            "hot_list_limit": inum(meta, "hot_limit"),
            "hot_list_body_bytes": inum(meta, "hot_body_bytes"),
        },
        "throughput": runs,
        "ratios": {
            "kiln_list_vs_pgbench_list": ratio(rps("kiln-list"), rps("pgbench-list")),
            "kiln_list_cached_vs_pgbench_list": ratio(rps("kiln-list-valkey"),
                                                      rps("pgbench-list")),
            "kiln_list_cached_vs_uncached": ratio(rps("kiln-list-valkey"), rps("kiln-list")),
            "kiln_insert_vs_pgbench_insert": ratio(rps("kiln-insert"), rps("pgbench-insert")),
            "kiln_insert_valkey_vs_pgbench_insert": ratio(rps("kiln-insert-valkey"),
                                                          rps("pgbench-insert")),
            "kiln_hot_vs_pgbench_hot": ratio(rps("kiln-hot"), rps("pgbench-hot")),
        },
        # The table as the hot user's runs found it: its notes POSTed after
        # the last VACUUM, the rest all-visible.
        "hot_table": {
            "notes_rows": inum(meta, "hot_notes_rows"),
            # "A/P H/N": A of the table's P pages all-visible, H of the hot
            # user's N notes on pages that are not; before and after its runs
            "visibility_before": meta.get("hot_visibility_before"),
            "visibility_after": meta.get("hot_visibility_after"),
            "vacuums_during_hot_runs": (None if None in hot_vac else hot_vac[1] - hot_vac[0]),
            "heap_fetches_after": meta.get("hot_heap_fetches"),
        } if hot_notes else None,
        "valkey_list_keys": inum(meta, "valkey_list_keys"),
        "notes_rows": inum(meta, "notes_rows_before"),
        "list_uses_index": (inum(meta, "list_plan_index") or 0) >= 2,
        "kiln_healthz_bodies": {k: meta.get(k + "_healthz_body")
                                for k in ("kiln-notes", "kiln-notes-valkey", "kiln-notes-hot")
                                if k + "_healthz_body" in meta},
        "kiln_stderr_lines": {k: int(meta.get(k + "_stderr_lines") or 0)
                              for k in ("kiln-notes", "kiln-notes-valkey", "kiln-notes-hot")
                              if k + "_stderr_lines" in meta},
    }
    res["tail"] = tail_rows(runs, NOTES_TAIL_PAIRS)
    note = "" if res["config"]["sql_matches_notes_c"] else "pgbench SQL differs from the engine's"
    goals = []
    for name, value in (
            ("notes list (cache off) req/s / pgbench list tps", res["ratios"]["kiln_list_vs_pgbench_list"]),
            ("notes insert req/s / pgbench insert tps", res["ratios"]["kiln_insert_vs_pgbench_insert"])):
        goals.append({"goal": name, "value": value, "op": ">=", "limit": GOAL_NOTES_RATIO,
                      "unit": "", "pass": value is not None and value >= GOAL_NOTES_RATIO,
                      "note": note})
    if hot_notes:
        value = res["ratios"]["kiln_hot_vs_pgbench_hot"]
        goals.append({"goal": "notes one hot user: kiln list req/s / pgbench list tps",
                      "value": value, "op": ">=", "limit": GOAL_NOTES_HOT_RATIO, "unit": "",
                      "pass": value is not None and value >= GOAL_NOTES_HOT_RATIO,
                      "note": note})
    for key, label in NOTES_TARGETS:
        if not key.startswith("kiln") or key == "kiln-hot":   # its goals: the ratios
            continue
        b = runs[key]["best"] or {}
        value = b.get("p99_ms")
        goals.append({"goal": "%s p99 at %d connections" % (label, conns), "value": value,
                      "op": "<=", "limit": GOAL_NOTES_P99_MS, "unit": "ms",
                      "pass": value is not None and value <= GOAL_NOTES_P99_MS, "note": ""})
    goals.extend(tail_goals(res["tail"], "notes", conns, note))
    res["goals"] = goals
    return res


def print_notes(nt, p=print):
    p("Notes: kiln GET /api/v1/notes?limit=20 and POST /api/v1/notes vs pgbench running "
      "the same statements")
    if nt.get("skipped"):
        p("skipped: " + nt["skipped"])
        return
    c = nt["config"]
    p("both kilns on PostgreSQL %s direct (handlers on loop fibers, prepared statements off), "
      "one + Valkey (Redis %s; list cache on, default CACHE_TTL_SECONDS), one + memory kv "
      "(CACHE_TTL_SECONDS=0); %d users with %d notes each listed (a page of %d, %s bytes), "
      "%d other users insert (their notes removed after each insert run), %s notes in the "
      "table; %s / %s; %d s warmup, best of %d rounds; kiln HTTP_LOOPS=%d, "
      "DB_POOL_SIZE=%s, rate limiting on" % (
          c.get("postgres_version") or "?", c.get("redis_version") or "?", c["users"],
          c["notes_per_user"], c["list_limit"],
          "-" if c["list_body_bytes"] is None else c["list_body_bytes"], c["users"],
          "-" if nt.get("notes_rows") is None else nt["notes_rows"], c["wrk"],
          c["pgbench"], c["warmup_seconds"], c["rounds"], c["http_loops"], c["db_pool_size"]))
    p("")
    p("%-48s %11s %9s %9s %9s   %s" % ("target", "req/s|tps", "p50 ms", "p99 ms", "p99.9 ms",
                                        "per round"))
    for key, label in NOTES_TARGETS:
        t = nt["throughput"][key]
        if not t["runs"]:
            p("%-48s %11s" % (label, "not run"))
            continue
        b = t["best"] or {}
        per = "  ".join(fmt(r["rps"], ".0f", 0) for r in t["runs"])
        p50 = b.get("p50_ms", b.get("latency_avg_ms"))
        p("%-48s %11s %9s %9s %9s   %s" % (label, fmt(b.get("rps"), ".0f", 11),
                                            fmt(p50, ".3f", 9), fmt(b.get("p99_ms"), ".3f", 9),
                                            fmt(b.get("p999_ms"), ".3f", 9), per))
    p("(pgbench rows: p50/p99/p99.9 from its per-transaction log (-l), else the p50 column is "
      "its average latency; one list transaction is the statement of the page with its total)")
    r = nt["ratios"]
    p("")
    p("ratio kiln list, cache off / pgbench list:        %s" %
      fmt(r["kiln_list_vs_pgbench_list"], ".3f", 0))
    p("ratio kiln list, cache on / pgbench list:         %s" %
      fmt(r["kiln_list_cached_vs_pgbench_list"], ".3f", 0))
    p("ratio kiln list, cache on / cache off:            %s" %
      fmt(r["kiln_list_cached_vs_uncached"], ".3f", 0))
    p("ratio kiln insert, memory kv / pgbench insert:    %s" %
      fmt(r["kiln_insert_vs_pgbench_insert"], ".3f", 0))
    p("ratio kiln insert, Valkey / pgbench insert:       %s" %
      fmt(r["kiln_insert_valkey_vs_pgbench_insert"], ".3f", 0))
    if c.get("hot_notes"):
        p("ratio kiln list, one hot user / pgbench:          %s" %
          fmt(r.get("kiln_hot_vs_pgbench_hot"), ".3f", 0))
    pg_p99 = {k: (nt["throughput"][k]["best"] or {}).get("p99_ms")
              for k in ("pgbench-list", "pgbench-insert")}
    p("p99 of pgbench on the same statements: list %s ms, insert %s ms" % (
        fmt(pg_p99["pgbench-list"], ".2f", 0), fmt(pg_p99["pgbench-insert"], ".2f", 0)))
    kl = (nt["throughput"]["kiln-list"]["best"] or {}).get("p99_ms")
    ki = (nt["throughput"]["kiln-insert"]["best"] or {}).get("p99_ms")
    p("p99 ratio kiln / pgbench (same run): list, cache off %s; insert, memory kv %s" % (
        fmt(kl / pg_p99["pgbench-list"] if kl and pg_p99["pgbench-list"] else None, ".2f", 0),
        fmt(ki / pg_p99["pgbench-insert"] if ki and pg_p99["pgbench-insert"] else None, ".2f", 0)))
    p("p99 of the kiln targets: " + ", ".join(
        "%s %s ms" % (key, fmt((nt["throughput"][key]["best"] or {}).get("p99_ms"), ".2f", 0))
        for key, _ in NOTES_TARGETS if key.startswith("kiln") and nt["throughput"][key]["runs"]))
    print_tail(nt.get("tail") or [], c["connections"], p)
    ht = nt.get("hot_table")
    if ht:
        p("one hot user: %d notes made by POST /api/v1/notes after the last VACUUM, all %d "
          "connections on its session, GET /api/v1/notes (default limit %s, %s bytes) on a kiln "
          "with Valkey and CACHE_TTL_SECONDS=0" % (
              c["hot_notes"], c["connections"], fmt(c.get("hot_list_limit"), "d", 0),
              fmt(c.get("hot_list_body_bytes"), "d", 0)))

        def vis(v):
            a, _, h = (v or "-").partition(" ")
            return "%s pages all-visible, %s of its notes on pages that are not" % (a, h or "-")
        p("one hot user's table: %s rows; before its runs %s; after them %s; vacuums during "
          "its runs %s; Heap Fetches in its list's plan after them (EXPLAIN ANALYZE) %s" % (
              fmt(ht["notes_rows"], "d", 0), vis(ht["visibility_before"]),
              vis(ht["visibility_after"]), fmt(ht["vacuums_during_hot_runs"], "d", 0),
              ht["heap_fetches_after"] or "-"))
        if ht["vacuums_during_hot_runs"]:
            p("warning: the notes table was vacuumed during the hot user's runs: its notes "
              "were not all measured as unvacuumed")
    if not c["sql_matches_notes_c"]:
        p("warning: the pgbench statements no longer match the engine's (app/tests/unit/api_engine.c: %s); "
          "update bench/notes.sh" % c["sql_check"])
    if not nt.get("list_uses_index"):
        p("warning: the list's statements do not both use notes_user_archived_inserted_idx "
          "(build/bench/notes/explain.txt)")
    if not nt.get("valkey_list_keys"):
        p("warning: Valkey held no notes list after the runs: the cached kiln did not cache")
    for k, body in nt["kiln_healthz_bodies"].items():
        if body is not None and '"ok"' not in body:
            p("warning: %s /healthz before the runs: %s" % (k, body))
    for k, n in nt["kiln_stderr_lines"].items():
        if n:
            p("warning: %s wrote %d line(s) to stderr (build/bench/notes/%s.stderr)" % (k, n, k))
    for key, label in NOTES_TARGETS:
        for run in nt["throughput"][key]["runs"]:
            se = run.get("socket_errors") or {}
            if any(se.values()) or run.get("non_2xx") or run.get("failed"):
                p("warning: %s (%s): socket errors %s, non-2xx %s, failed %s (401: sessions "
                  "lost; 429: rate limited)" % (label, run["file"], se or "-",
                                                run.get("non_2xx", "-"), run.get("failed", "-")))


def main_notes_only(out):
    nt = notes_results(out)
    if nt is None:
        sys.exit("report.py: no %s/notes/meta.env (run bench/notes.sh)" % out)
    with open(os.path.join(out, "notes", "results.json"), "w") as f:
        json.dump(nt, f, indent=2)
        f.write("\n")
    print_notes(nt)
    print("")
    print_goals(nt["goals"])


# ------------------------------------------------------------- footprint --

FOOTPRINT_MODES = [
    ("embedded", "embedded (SQLite + memory store)"),
    ("postgres", "production (PostgreSQL + Valkey)"),
]
FOOTPRINT_TOP = 12
HEAP_MAX = 64 << 20   # glibc's per-thread malloc arenas: 64 MiB aligned reservations


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def parse_start(path):
    """benchtool start output: START lines, then SUMMARY."""
    runs, summary = [], {}
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            kv = parse_kv(line)
            if line.startswith("START "):
                run = {"run": int(line.split()[1])}
                for key in ("ready_ms", "listen_ms", "stop_ms", "cpu_ms"):
                    run[key] = float(kv[key]) if key in kv else None
                for key in ("attempts", "minflt", "majflt"):
                    run[key] = int(kv[key]) if key in kv else None
                run["exit"] = kv.get("exit")
                runs.append(run)
            elif line.startswith("SUMMARY "):
                summary = {k: float(v) for k, v in kv.items()}
    if not runs:
        return None
    return {
        "n": len(runs),
        "median_ms": summary.get("median_ms", median(r["ready_ms"] for r in runs)),
        "min_ms": summary.get("min_ms"),
        "max_ms": summary.get("max_ms"),
        "listen_median_ms": median(r["listen_ms"] for r in runs),
        "minflt_median": median(r["minflt"] for r in runs),
        "majflt_total": sum(r["majflt"] or 0 for r in runs),
        "cpu_ms_median": median(r["cpu_ms"] for r in runs),
        "children_cpu_ms": summary.get("children_cpu_ms"),
        "self_cpu_ms": summary.get("self_cpu_ms"),
        "stop_ms_max": max((r["stop_ms"] for r in runs if r["stop_ms"] is not None), default=None),
        "unclean_exits": sum(1 for r in runs if r["exit"] != "0"),
        "runs": runs,
    }


def parse_proc_status(path):
    if not os.path.exists(path):
        return None
    st = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.strip()

    def kib(key):
        v = st.get(key, "").split()
        return int(v[0]) if v and v[0].isdigit() else None
    return {
        "vmrss_kib": kib("VmRSS"),
        "rss_anon_kib": kib("RssAnon"),
        "rss_file_kib": kib("RssFile"),
        "rss_shmem_kib": kib("RssShmem"),
        "vmhwm_kib": kib("VmHWM"),
        "vmsize_kib": kib("VmSize"),
        "threads": int(st["Threads"]) if st.get("Threads", "").isdigit() else None,
    }


SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


def parse_smaps(path, kiln_path):
    """Rss, Pss and private KiB per mapping group: the kiln binary, each
    file (shared libraries by name), [heap], [stack], and the anonymous
    mappings split by a heuristic into stacks (right after a PROT_NONE
    guard page: threads and fibers), malloc arenas (64 MiB aligned, followed
    by their PROT_NONE reserve) and the rest."""
    if not os.path.exists(path):
        return None
    maps = []
    with open(path) as f:
        for line in f:
            m = SMAPS_HEADER.match(line)
            if m:
                maps.append({"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                             "perms": m.group(3), "path": m.group(4).strip(),
                             "rss": 0, "pss": 0, "private": 0})
                continue
            if not maps:
                continue
            k, _, v = line.partition(":")
            v = v.split()
            if not v or not v[0].isdigit():
                continue
            if k == "Rss":
                maps[-1]["rss"] = int(v[0])
            elif k == "Pss":
                maps[-1]["pss"] = int(v[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                maps[-1]["private"] += int(v[0])

    def anon_none(mp):
        return mp is not None and mp["path"] == "" and mp["perms"].startswith("---")

    groups = {}
    for i, mp in enumerate(maps):
        p = mp["path"]
        prev = maps[i - 1] if i > 0 and maps[i - 1]["end"] == mp["start"] else None
        nxt = maps[i + 1] if i + 1 < len(maps) and maps[i + 1]["start"] == mp["end"] else None
        if p.endswith(" (deleted)"):
            p = p[:-len(" (deleted)")]
        if p and (p == kiln_path or os.path.basename(p) == "kiln" and not kiln_path):
            name, kind = "kiln binary", "kiln"
        elif p.startswith("/"):
            base = os.path.basename(p)
            if re.search(r"\.so(\.|$)", base):
                name, kind = base, "library"
            else:
                name, kind = p, "file"
        elif p == "[heap]":
            name, kind = "[heap] (brk: main malloc arena)", "heap"
        elif p == "[stack]":
            name, kind = "[stack] (main thread)", "stack"
        elif p in ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]"):
            name, kind = "[vdso], [vvar]", "kernel"
        elif p:
            name, kind = p, "other"
        elif mp["perms"].startswith("---"):
            name, kind = "anonymous: guard pages and reservations", "anon"
        elif mp["start"] % HEAP_MAX == 0 and anon_none(nxt):
            name, kind = "anonymous: malloc arenas of other threads", "anon"
        elif anon_none(prev):
            name, kind = "anonymous: stacks (after a guard page)", "anon"
        else:
            name, kind = "anonymous: other mmaps", "anon"
        g = groups.setdefault(name, {"name": name, "kind": kind, "rss_kib": 0, "pss_kib": 0,
                                     "private_kib": 0, "mappings": 0})
        g["rss_kib"] += mp["rss"]
        g["pss_kib"] += mp["pss"]
        g["private_kib"] += mp["private"]
        g["mappings"] += 1
    glist = sorted(groups.values(), key=lambda g: (-g["rss_kib"], g["name"]))
    by_kind = {}
    for g in glist:
        k = by_kind.setdefault(g["kind"], {"rss_kib": 0, "groups": 0})
        k["rss_kib"] += g["rss_kib"]
        k["groups"] += 1
    return {
        "mappings": len(maps),
        "rss_kib": sum(m["rss"] for m in maps),
        "pss_kib": sum(m["pss"] for m in maps),
        "private_kib": sum(m["private"] for m in maps),
        "by_kind": by_kind,
        "groups": glist,
    }


def footprint_results(out):
    """The footprint part (bench/footprint.sh), or None when it did not run."""
    d = os.path.join(out, "footprint")
    if not os.path.exists(os.path.join(d, "meta.env")):
        return None
    meta = read_meta(d)
    res = {
        "config": {
            "cpus": inum(meta, "cpus"),
            "start_runs": inum(meta, "start_runs"),
            "start_timeout_ms": inum(meta, "start_timeout_ms"),
            "kiln_bin": meta.get("kiln_bin"),
            "kiln_version": meta.get("kiln_version"),
            "kernel": meta.get("kernel"),
            "open_file_limit": inum(meta, "nofile") if (meta.get("nofile") or "").isdigit() else meta.get("nofile"),
            "postgres_version": meta.get("postgres_version"),
            "redis_version": meta.get("redis_version"),
        },
        "modes": {},
        "skipped": {},
    }
    if meta.get("postgres_skipped"):
        res["skipped"]["postgres"] = meta["postgres_skipped"]
    goals = []
    for mode, label in FOOTPRINT_MODES:
        start = parse_start(os.path.join(d, "start-%s.txt" % mode))
        status = parse_proc_status(os.path.join(d, "status-%s.txt" % mode))
        smaps = parse_smaps(os.path.join(d, "smaps-%s.txt" % mode), meta.get("kiln_path", ""))
        if start is None and status is None:
            continue
        if start is not None:
            # Share of all CPUs other processes used during the starts: busy
            # time from /proc/stat minus the kilns' and benchtool's own.
            busy, wall = num(meta, mode + "_start_busy_ms"), num(meta, mode + "_start_wall_ms")
            ours = (start.get("children_cpu_ms") or 0) + (start.get("self_cpu_ms") or 0)
            cpus = inum(meta, "cpus") or 1
            start["other_cpu_pct"] = (max(0.0, (busy - ours) * 100.0 / (wall * cpus))
                                      if busy is not None and wall else None)
        res["modes"][mode] = {
            "label": label,
            "start": start,
            "memory": status,
            "smaps": smaps,
            "statuses": {k: meta.get("%s_%s_statuses" % (mode, k)) for k in
                         ("livez", "healthz", "me")},
            "kiln_log_warnings": inum(meta, mode + "_kiln_log_warnings") or 0,
            "http_loops": inum(meta, mode + "_loops"),
            "workers": inum(meta, mode + "_workers"),
        }
        value = (start or {}).get("median_ms")
        goals.append({"goal": "start to ready (median of %d), %s" % (
                          (start or {}).get("n", 0), label),
                      "value": value, "op": "<=", "limit": GOAL_START_MS, "unit": "ms",
                      "pass": value is not None and value <= GOAL_START_MS, "note": ""})
        value = mib((status or {}).get("vmrss_kib"))
        goals.append({"goal": "idle RSS, %s" % label, "value": value, "op": "<=",
                      "limit": GOAL_FOOTPRINT_RSS_MIB, "unit": "MiB",
                      "pass": value is not None and value <= GOAL_FOOTPRINT_RSS_MIB, "note": ""})
    res["goals"] = goals
    return res


def print_footprint(fp, p=print):
    c = fp["config"]
    p("Footprint: %s, KILN_ENV=production, migrations applied before, otherwise kiln's "
      "defaults (%s CPUs)" % (c.get("kiln_version") or "?", c.get("cpus") or "?"))
    p("start to ready: exec to the first GET /livez 200 (a connect tried every ~0.1 ms), "
      "%s starts per mode, each stopped (SIGTERM) before the next" % (c.get("start_runs") or "?"))
    p("")
    p("%-34s %8s %8s %8s %10s %8s %8s %7s" % ("mode", "median", "min", "max", "listening",
                                              "faults", "CPU", "others"))
    p("%-34s %8s %8s %8s %10s %8s %8s %7s" % ("", "ms", "ms", "ms", "ms (med)", "(med)",
                                              "ms (med)", "CPU %"))
    for mode, label in FOOTPRINT_MODES:
        m = fp["modes"].get(mode)
        if m is None:
            if mode in fp["skipped"]:
                p("%-34s skipped: %s" % (label, fp["skipped"][mode]))
            continue
        s = m["start"] or {}
        p("%-34s %8s %8s %8s %10s %8s %8s %7s" % (
            label, fmt(s.get("median_ms"), ".1f", 8), fmt(s.get("min_ms"), ".1f", 8),
            fmt(s.get("max_ms"), ".1f", 8), fmt(s.get("listen_median_ms"), ".1f", 10),
            fmt(s.get("minflt_median"), ".0f", 8), fmt(s.get("cpu_ms_median"), ".1f", 8),
            fmt(s.get("other_cpu_pct"), ".0f", 7)))
    p("(listening: exec to the first accepted connect; faults: minor page faults and CPU: "
      "user + system, all threads, of a whole run from exec to exit after SIGTERM; others: "
      "the share of all CPUs that other processes used during the starts)")
    for mode, label in FOOTPRINT_MODES:
        m = fp["modes"].get(mode)
        if m and m["start"]:
            p("%s, every start (ms): %s" % (mode, " ".join(
                fmt(r["ready_ms"], ".1f", 0) for r in m["start"]["runs"])))
    p("")
    p("idle memory (/proc/PID/status) after GET /livez, /healthz, /api/v1/me three times each "
      "and 0.5 s:")
    p("%-34s %9s %9s %9s %9s %8s  %s" % ("mode", "VmRSS MiB", "RssAnon", "RssFile", "RssShmem",
                                         "threads", "(loops, workers)"))
    for mode, label in FOOTPRINT_MODES:
        m = fp["modes"].get(mode)
        if m is None:
            continue
        r = m["memory"] or {}
        p("%-34s %9s %9s %9s %9s %8s  (%s, %s)" % (
            label, fmt(mib(r.get("vmrss_kib")), ".2f", 9), fmt(mib(r.get("rss_anon_kib")), ".2f", 9),
            fmt(mib(r.get("rss_file_kib")), ".2f", 9), fmt(mib(r.get("rss_shmem_kib")), ".2f", 9),
            fmt(r.get("threads"), "d", 8), fmt(m["http_loops"], "d", 0), fmt(m["workers"], "d", 0)))
    for mode, label in FOOTPRINT_MODES:
        m = fp["modes"].get(mode)
        if m is None or not m["smaps"]:
            continue
        sm = m["smaps"]
        p("")
        p("where the RSS goes, %s (/proc/PID/smaps, KiB; Pss shares each page among the "
          "processes mapping it):" % label)
        p("  %-46s %7s %7s %8s %5s" % ("mapping", "Rss", "Pss", "private", "maps"))
        for g in sm["groups"][:FOOTPRINT_TOP]:
            p("  %-46s %7d %7d %8d %5d" % (g["name"][:46], g["rss_kib"], g["pss_kib"],
                                          g["private_kib"], g["mappings"]))
        rest = sm["groups"][FOOTPRINT_TOP:]
        if rest:
            p("  %-46s %7d %7d %8d %5d" % (
                "(%d more)" % len(rest), sum(g["rss_kib"] for g in rest),
                sum(g["pss_kib"] for g in rest), sum(g["private_kib"] for g in rest),
                sum(g["mappings"] for g in rest)))
        p("  %-46s %7d %7d %8d %5d" % ("total", sm["rss_kib"], sm["pss_kib"], sm["private_kib"],
                                      sm["mappings"]))
        bk = sm["by_kind"]
        parts = []
        for kind, name in (("kiln", "kiln binary"), ("library", "shared libraries"),
                           ("heap", "[heap]"), ("anon", "anonymous"), ("stack", "[stack]"),
                           ("file", "other files"), ("kernel", "vdso"), ("other", "other")):
            if kind in bk:
                k = bk[kind]
                label_k = name + (" (%d)" % k["groups"] if kind == "library" else "")
                parts.append("%s %.2f" % (label_k, k["rss_kib"] / 1024.0))
        p("  by kind (MiB): " + ", ".join(parts))
    for mode, label in FOOTPRINT_MODES:
        m = fp["modes"].get(mode)
        if m is None:
            continue
        st = m["statuses"]
        if st.get("healthz") and set(st["healthz"].split()) != {"200"}:
            p("warning: %s: GET /healthz answered %s (not all 200)" % (mode, st["healthz"]))
        if st.get("me") and set(st["me"].split()) != {"401"}:
            p("warning: %s: GET /api/v1/me without a session answered %s (not all 401)" % (
                mode, st["me"]))
        if m["kiln_log_warnings"]:
            p("warning: %s: kiln logged %d warning or error line(s) (build/bench/footprint/"
              "kiln-%s.log)" % (mode, m["kiln_log_warnings"], mode))
        s = m["start"] or {}
        if s.get("unclean_exits"):
            p("warning: %s: %d of %d starts did not exit with status 0 after SIGTERM "
              "(build/bench/footprint/start-%s.txt)" % (mode, s["unclean_exits"], s["n"], mode))
        if s.get("other_cpu_pct") is not None and s["other_cpu_pct"] > NOISY_OTHER_CPU_PCT:
            p("warning: %s: other processes used %.0f%% of the CPUs during the starts; the "
              "start times are unreliable (rerun on a quiet machine)" % (mode, s["other_cpu_pct"]))
        if s.get("majflt_total"):
            p("note: %s: %d major page faults over the starts (files read from disk, not the "
              "page cache)" % (mode, s["majflt_total"]))


def main_footprint_only(out):
    fp = footprint_results(out)
    if fp is None:
        sys.exit("report.py: no %s/footprint/meta.env (run bench/footprint.sh)" % out)
    with open(os.path.join(out, "footprint", "results.json"), "w") as f:
        json.dump(fp, f, indent=2)
        f.write("\n")
    print_footprint(fp)
    print("")
    print_goals(fp["goals"])


def print_goals(goals, p=print):
    for g in goals:
        unit = (" " + g["unit"]) if g["unit"] else ""
        spec = ".3f" if not g["unit"] else ".1f"
        p("%s  %s: %s%s %s %s%s%s" % (
            "PASS" if g["pass"] else "MISS", g["goal"], fmt(g["value"], spec, 0), unit,
            g["op"], format(g["limit"], ".2f" if not g["unit"] else ".0f"), unit,
            " (" + g["note"] + ")" if g["note"] else ""))


def main_db_only(out):
    db = db_results(out)
    if db is None:
        sys.exit("report.py: no %s/db/meta.env (run bench/db.sh)" % out)
    with open(os.path.join(out, "db", "results.json"), "w") as f:
        json.dump(db, f, indent=2)
        f.write("\n")
    print_db(db)
    print("")
    print_goals(db["goals"])


def main():
    if sys.argv[1] == "--db-only":
        main_db_only(sys.argv[2])
        return
    if sys.argv[1] == "--session-only":
        main_session_only(sys.argv[2])
        return
    if sys.argv[1] == "--notes-only":
        main_notes_only(sys.argv[2])
        return
    if sys.argv[1] == "--footprint-only":
        main_footprint_only(sys.argv[2])
        return
    out = sys.argv[1]
    meta = read_meta(out)
    rounds = int(meta["rounds"])
    n_idle = int(meta["idle_connections"])

    throughput = {}
    for key, _ in TARGETS:
        runs = [parse_wrk(p) for p in
                sorted(glob.glob(os.path.join(out, "wrk-%s-r*.txt" % key)))]
        good = [r for r in runs if r["rps"] is not None]
        best = max(good, key=lambda r: r["rps"]) if good else None
        throughput[key] = {"best": best, "runs": runs}

    def rps(key):
        b = throughput[key]["best"]
        return b["rps"] if b else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    livez_ratio = ratio(rps("kiln-livez"), rps("nginx-livez"))
    healthz_ratio = ratio(rps("kiln-healthz"), rps("nginx-livez"))

    kiln_hold = hold_result(meta, "kiln", n_idle)
    nginx_hold = hold_result(meta, "nginx", n_idle)
    kiln_idle = mib(num(meta, "kiln_rss_idle_kib"))

    goals = []

    def goal(name, value, op, limit, unit, ok_extra=True, note=""):
        if value is None:
            passed = False
        else:
            passed = (value >= limit if op == ">=" else value <= limit) and ok_extra
        goals.append({"goal": name, "value": value, "op": op, "limit": limit,
                      "unit": unit, "pass": passed, "note": note})

    goal("kiln/nginx req/s on /livez", livez_ratio, ">=", GOAL_LIVEZ_RATIO, "")
    goal("kiln idle RSS", kiln_idle, "<=", GOAL_IDLE_RSS_MIB, "MiB")
    hold_note = ""
    if not kiln_hold["ok"]:
        hold_note = "only %s of %d connections held" % (kiln_hold.get("established", 0), n_idle)
    elif kiln_hold["fresh_request_status"] != "200":
        hold_note = "fresh request while held answered %s" % kiln_hold["fresh_request_status"]
    elif kiln_hold["closed_by_server"]:
        hold_note = "server closed %d held connections" % kiln_hold["closed_by_server"]
    goal("kiln RSS with %d idle connections" % n_idle, kiln_hold.get("rss_held_mib"), "<=",
         GOAL_HOLD_RSS_MIB, "MiB", ok_extra=not hold_note, note=hold_note)

    results = {
        "config": {
            "cpus": int(meta["cpus"]),
            "http_loops": int(meta["http_loops"]),
            "nginx_worker_processes": int(meta["http_loops"]),
            "wrk": "wrk -t%s -c%s -d%ss --latency" % (meta["threads"], meta["connections"],
                                                     meta["seconds"]),
            "wrk_version": meta.get("wrk_version"),
            "seconds": int(meta["seconds"]),
            "warmup_seconds": int(meta["warmup_seconds"]),
            "rounds": rounds,
            "connections": int(meta["connections"]),
            "threads": int(meta["threads"]),
            "open_file_limit": int(meta["nofile"]),
            "kiln_bin": meta.get("kiln_bin"),
            "nginx_version": meta.get("nginx_version"),
            "livez_body": meta.get("livez_body"),
            "response_bytes": {
                "kiln_livez": {"header": inum(meta, "kiln_livez_header_bytes"),
                               "body": inum(meta, "kiln_livez_body_bytes")},
                "nginx_livez": {"header": inum(meta, "nginx_livez_header_bytes"),
                                "body": inum(meta, "nginx_livez_body_bytes")},
            },
        },
        "throughput": throughput,
        "ratios": {"kiln_livez_vs_nginx": livez_ratio, "kiln_healthz_vs_nginx": healthz_ratio},
        "memory": {
            "kiln_rss_idle_mib": kiln_idle,
            "kiln_rss_after_load_mib": mib(num(meta, "kiln_rss_after_load_kib")),
            "nginx_rss_idle_mib": mib(num(meta, "nginx_rss_idle_kib")),
            "nginx_rss_after_load_mib": mib(num(meta, "nginx_rss_after_load_kib")),
            "kiln_idle_connections": kiln_hold,
            "nginx_idle_connections": nginx_hold,
        },
        "kiln_healthz_status": meta.get("kiln_healthz_status"),
        "kiln_stderr_lines": int(meta.get("kiln_stderr_lines") or 0),
        "goals": goals,
    }
    db = db_results(out)
    if db is not None:
        results["database"] = db
        goals.extend(db["goals"])
    ss = session_results(out)
    if ss is not None:
        results["sessions"] = ss
        goals.extend(ss["goals"])
    nt = notes_results(out)
    if nt is not None:
        results["notes"] = nt
        goals.extend(nt["goals"])
    fp = footprint_results(out)
    if fp is not None:
        results["footprint"] = fp
        goals.extend(fp["goals"])
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    # ------------------------------------------------------------- text --
    c = results["config"]
    p = print
    p("Kiln benchmark: %d CPUs shared by wrk and the server; HTTP_LOOPS=%d, nginx "
      "worker_processes %d" % (c["cpus"], c["http_loops"], c["nginx_worker_processes"]))
    p("%s, keep-alive, %d s warmup, best of %d interleaved rounds" %
      (c["wrk"], c["warmup_seconds"], rounds))
    p("response bytes (header+body): kiln /livez %s+%s, nginx /livez %s+%s" % tuple(
        "-" if v is None else "%d" % v for v in (
            c["response_bytes"]["kiln_livez"]["header"], c["response_bytes"]["kiln_livez"]["body"],
            c["response_bytes"]["nginx_livez"]["header"], c["response_bytes"]["nginx_livez"]["body"])))
    p("")
    p("%-20s %11s %9s %9s   %s" % ("target", "req/s", "p50 ms", "p99 ms",
                                    "per round: req/s (CPU % used by other processes)"))
    for key, label in TARGETS:
        b = throughput[key]["best"] or {}
        per = "  ".join("%s (%s%%)" % (fmt(r["rps"], ".0f", 0), fmt(r["other_cpu_pct"], ".0f", 0))
                        for r in throughput[key]["runs"])
        p("%-20s %11s %9s %9s   %s" % (label, fmt(b.get("rps"), ".0f", 11),
                                        fmt(b.get("p50_ms"), ".3f", 9),
                                        fmt(b.get("p99_ms"), ".3f", 9), per))
    p("")
    p("%-34s %10s %10s" % ("memory (VmRSS)", "kiln MiB", "nginx MiB"))
    m = results["memory"]
    p("%-34s %10s %10s" % ("idle", fmt(m["kiln_rss_idle_mib"], ".1f", 10),
                            fmt(m["nginx_rss_idle_mib"], ".1f", 10)))
    p("%-34s %10s %10s" % ("after the wrk runs", fmt(m["kiln_rss_after_load_mib"], ".1f", 10),
                            fmt(m["nginx_rss_after_load_mib"], ".1f", 10)))
    kh, nh = kiln_hold, nginx_hold
    p("%-34s %10s %10s" % ("with %d idle keep-alive conns" % n_idle,
                            fmt(kh.get("rss_held_mib"), ".1f", 10),
                            fmt(nh.get("rss_held_mib"), ".1f", 10)))
    p("%-34s %10s %10s" % ("  per connection (KiB)", fmt(kh.get("per_connection_kib"), ".2f", 10),
                            fmt(nh.get("per_connection_kib"), ".2f", 10)))
    p("%-34s %10s %10s" % ("after closing them", fmt(kh.get("rss_after_close_mib"), ".1f", 10),
                            fmt(nh.get("rss_after_close_mib"), ".1f", 10)))
    p("(nginx: VmRSS of master + %d workers summed, so pages they share count more than once)"
      % c["nginx_worker_processes"])
    for name, h in (("kiln", kh), ("nginx", nh)):
        if h.get("established") is None:
            p("%s idle connections: the holder failed (see build/bench/hold-%s.err)" % (name, name))
        else:
            p("%s idle connections: %d/%d held (opened in %.1f s), %s closed by the server, "
              "fresh request meanwhile: %s in %s ms" % (
                  name, h["established"], n_idle, h["connect_seconds"],
                  "-" if h["closed_by_server"] is None else h["closed_by_server"],
                  h["fresh_request_status"], fmt(h["fresh_request_ms"], ".0f", 0)))
    p("")
    p("ratio kiln/nginx req/s, GET /livez:           %s" % fmt(livez_ratio, ".3f", 0))
    p("ratio kiln GET /healthz / nginx GET /livez:   %s" % fmt(healthz_ratio, ".3f", 0))
    if db is not None:
        p("")
        print_db(db)
    if ss is not None:
        p("")
        print_session(ss)
    if nt is not None:
        p("")
        print_notes(nt)
    if fp is not None:
        p("")
        print_footprint(fp)
    p("")
    print_goals(goals)

    warnings = []
    for key, label in TARGETS:
        for r in throughput[key]["runs"]:
            se = r["socket_errors"]
            if any(se.values()) or r["non_2xx"]:
                warnings.append("%s (%s): socket errors connect %d read %d write %d timeout %d, "
                                "non-2xx %d" % (label.split()[0] + " " + label.split()[-1],
                                                r["file"], se["connect"], se["read"],
                                                se["write"], se["timeout"], r["non_2xx"]))
    for key, label in TARGETS:
        b = throughput[key]["best"]
        if b and b["other_cpu_pct"] is not None and b["other_cpu_pct"] > NOISY_OTHER_CPU_PCT:
            warnings.append("%s: other processes used %.0f%% of the CPUs during the reported "
                            "round; its req/s and the ratios are unreliable (rerun on a quiet "
                            "machine)" % (" ".join(label.split()), b["other_cpu_pct"]))
    if results["kiln_healthz_status"] != "200":
        warnings.append("kiln GET /healthz answered %s before the runs" % results["kiln_healthz_status"])
    if results["kiln_stderr_lines"]:
        warnings.append("kiln wrote %d line(s) to stderr (build/bench/kiln.stderr)"
                        % results["kiln_stderr_lines"])
    if warnings:
        p("")
        for w in warnings:
            p("warning: " + w)


if __name__ == "__main__":
    main()
