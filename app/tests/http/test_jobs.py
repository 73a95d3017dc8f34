"""Background jobs (jobs/jobs.h): the queue in the database, driven from
outside through POST /_test/jobs (KILN_ENV=test) and the test job kinds of
jobs/builtin.c, each run of which appends one JSON line to the file named
by KILN_TEST_JOBS_LOG ({"id", "kind", "attempt", "instance", "args"}), so
that runs are counted across instances.

What is checked:
  * a job enqueued in a transaction that rolled back never runs and leaves
    no row (a job enqueued after it does run); a delayed job (delay_ms)
    waits for its time; bad enqueues are 422;
  * committed jobs run exactly once: 2,000 in one transaction on two
    instances sharing PostgreSQL (both run some), 500 on one SQLite
    instance; every row ends done after one attempt;
  * kill -9 of an instance in the middle of a batch of sleeping jobs
    (JOB_LEASE_SECONDS=2): every job completes on the other instance once
    its lease expired, exactly once, with its attempt counted
    (PostgreSQL);
  * lease renewal: a 5 s job under a 2 s lease, with a second instance
    polling every 50 ms (one instance on SQLite: its own sweep), runs once;
  * batches (test.batch, run_batch with batch 8): 400 jobs run once each,
    in batches of at most 8 recorded by each run (size, first job), mostly
    full, on both instances; a batch of 8 that outlasts a 2 s lease keeps
    every job's lease and runs each once;
  * retries: test.fail fail=2 runs three times and ends done (attempts 3,
    last_error cleared), on time although JOB_POLL_MS is long; retry_ms
    spaces the attempts, and two retries pending at once each come on
    time; max_attempts=2 with fail=5 ends dead after two attempts with
    last_error set; {"dead": 1} is dead after one;
  * idempotency keys: a second enqueue with the same (kind, key) answers
    null and nothing runs twice, also after the first one finished; the
    same key with another kind is another job;
  * schedules: KILN_TEST_JOBS_EVERY=1 on three instances (one on SQLite):
    every tick (idempotency key tick:<unix>) has one job that ran once,
    none missing; KILN_TEST_JOBS_CRON="* * * * *" on three instances: the
    minute's tick runs exactly once (postgres mode only: it waits for a
    minute boundary, up to ~70 s);
  * SIGTERM: a running test.sleep with release=1 is released at once
    (queued again, the attempt not counted) and completed by another
    instance; a short running job finishes within the drain before the
    process exits 0; a job that outlasts the drain is released at its end
    and completed elsewhere;
  * JOB_CONCURRENCY=0: the instance enqueues but runs no job;
  * yielding to requests (JOB_BUSY_PERCENT=10): with every CPU kept busy
    (spinning processes at niceness 19) and four requests always in
    progress (GET /_test/sleep?ms=20), a runner pauses nine times as
    long as each job took (20 ms sleeps end at least 150 ms apart, the
    instance counts the pauses in GET /_test/jobs) and still runs every
    job; with the same busy CPUs and no requests nothing pauses;
  * a job of a kind the instance does not know (a row inserted by SQL) is
    never claimed;
  * pruning (EVENTS_PRUNE_SECONDS=1, JOB_RETENTION_HOURS=1,
    JOB_DEAD_RETENTION_DAYS=1): a done job finished two hours ago is
    deleted, a dead one of the same age kept, a dead one three days old
    deleted, a recent done one kept.

What runs where (KILN_STORES): everything in every mode, but the kill -9
and cron tests need PostgreSQL (postgres, pgbouncer; cron: postgres only).
Every test gets a database of its own (a fresh PostgreSQL database, or a
SQLite file shared by the test's instances), so no other instance of the
suite claims its jobs. KILN_SANITIZED=1 (ASan builds) stretches the waits.
"""

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import pytest

import authkit as ak
import kilnhttp

from kilnhttp import SANITIZED, SERVICE_MODES

SLOW = 3 if SANITIZED else 1
PG = kilnhttp.STORES in SERVICE_MODES
needs_postgres = pytest.mark.skipif(
    not PG, reason=f"KILN_STORES={kilnhttp.STORES}: needs PostgreSQL shared by instances")

LITE_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


# --------------------------------------------------------------------------
# a database of the test's own, instances on it, the run log
# --------------------------------------------------------------------------

def lit(v):
    """An SQL literal for the few values the tests pass (ints, text)."""
    if v is None:
        return "NULL"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def wait_for(fn, timeout, what):
    """fn()'s first truthy value within ``timeout`` s (polling), else fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class Cluster:
    """Instances sharing one store: a fresh PostgreSQL database (postgres,
    pgbouncer) or a SQLite file (embedded), and one run log."""

    def __init__(self, request, tmp_path):
        self.tmp = pathlib.Path(tmp_path)
        self.log = self.tmp / "jobs.log"
        self.servers = []
        self.counter = 0
        self.svc = None
        self.dbname = None
        if PG:
            self.svc = request.getfixturevalue("services")
            self.dbname = self.svc.create_db("kjobs")
            self.store = {"DATABASE_URL": self.svc.db_url(self.dbname, via=kilnhttp.STORES)}
        else:
            self.store = {"DB_PATH": str(self.tmp / "kiln.db")}

    # -- instances -----------------------------------------------------------
    def start(self, **env):
        env = dict(self.store, **env)
        env.setdefault("JOB_POLL_MS", 100)
        env.setdefault("KILN_TEST_JOBS_LOG", str(self.log))

        def factory(wait=False, **e):
            d = self.tmp / f"kiln{self.counter}"
            self.counter += 1
            srv = kilnhttp.KilnServer(d, e)
            self.servers.append(srv)
            srv.start(wait=wait)
            return srv

        return ak.start_kiln(factory, **env)

    def close(self):
        problems = []
        try:
            problems = kilnhttp.stop_all(self.servers, timeout=10 * SLOW)
        finally:
            if self.dbname:
                self.svc.drop_db(self.dbname)
        if problems:
            pytest.fail("kiln instance(s) ended badly:\n" + "\n".join(problems), pytrace=False)

    # -- the database, behind the instances' backs --------------------------------
    def query(self, sql, lite=None):
        """Rows as dicts. ``lite``: the SQLite text when it differs."""
        if PG:
            out = self.svc.psql(f"SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM ({sql}) q",
                                db=self.dbname)
            return json.loads(out)
        import sqlite3
        con = sqlite3.connect(self.store["DB_PATH"], timeout=10)
        try:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute(lite or sql).fetchall()]
            con.commit()
            return rows
        finally:
            con.close()

    def execute(self, pg, lite):
        if PG:
            self.svc.psql(pg, db=self.dbname)
        else:
            import sqlite3
            con = sqlite3.connect(self.store["DB_PATH"], timeout=10)
            try:
                con.execute(lite)
                con.commit()
            finally:
                con.close()

    def jobs(self, where="true", lite_where=None):
        cols = ("id, kind, args, state, attempts, max_attempts, locked_by, idempotency_key, "
                "last_error, lease_until IS NOT NULL AS leased, "
                "finished_at IS NOT NULL AS finished")
        rows = self.query(f"SELECT {cols} FROM jobs WHERE {where} ORDER BY id",
                          f"SELECT {cols} FROM jobs WHERE {lite_where or where} ORDER BY id")
        for r in rows:
            r["leased"], r["finished"] = bool(r["leased"]), bool(r["finished"])
        return rows

    def job(self, jid):
        rows = self.jobs(f"id = {int(jid)}")
        return rows[0] if rows else None

    def states(self, ids):
        rows = self.jobs("id IN (%s)" % ",".join(str(int(i)) for i in ids))
        return {r["id"]: r for r in rows}

    # -- the run log --------------------------------------------------------------
    def runs(self, kind=None, tag=None):
        if not self.log.exists():
            return []
        data = self.log.read_bytes()
        data = data[:data.rfind(b"\n") + 1]
        out = []
        for line in data.splitlines():
            rec = json.loads(line)
            if kind and rec["kind"] != kind:
                continue
            if tag is not None and (rec.get("args") or {}).get("tag") != tag:
                continue
            out.append(rec)
        return out


@pytest.fixture
def cluster(request, tmp_path):
    c = Cluster(request, tmp_path)
    yield c
    c.close()


def enqueue(srv, kind, args=None, status=201, **opts):
    body = {"kind": kind}
    if args is not None:
        body["args"] = args
    body.update(opts)
    r = ak.call(srv, "POST", "/_test/jobs", json_body=body, timeout=30 * SLOW)
    assert r.status == status, f"POST /_test/jobs {body!r:.200}: {r!r}"
    return r.json()["ids"] if r.status in (200, 201) else r.json()


def pid_of(instance):
    return int(instance.rsplit("/", 1)[1])


def by_id(runs):
    out = {}
    for r in runs:
        out.setdefault(r["id"], []).append(r)
    return out


def tag():
    return uuid.uuid4().hex[:12]


def wait_done(cluster, ids, timeout):
    ids = list(ids)

    def done():
        st = cluster.states(ids)
        return len(st) == len(ids) and all(r["state"] in ("done", "dead") for r in st.values())
    try:
        wait_for(done, timeout, "jobs ended")
    except AssertionError:
        st = cluster.states(ids)
        left = {i: (r["state"], r["attempts"], r["locked_by"]) for i, r in st.items()
                if r["state"] not in ("done", "dead")}
        raise AssertionError(f"{len(left)} of {len(ids)} jobs not ended within {timeout} s: "
                             f"{dict(list(left.items())[:5])}") from None
    return cluster.states(ids)


def running_on(cluster, srv, ids):
    """The ids of ``ids`` that ``srv`` holds (state running, locked_by it)."""
    st = cluster.states(ids)
    return {i for i, r in st.items()
            if r["state"] == "running" and r["locked_by"]
            and pid_of(r["locked_by"]) == srv.proc.pid}


# --------------------------------------------------------------------------
# enqueue: in the caller's transaction
# --------------------------------------------------------------------------

def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs(cluster):
    srv = cluster.start()
    t = tag()
    r = ak.call(srv, "POST", "/_test/jobs", json_body={
        "kind": "test.record", "args": {"tag": t, "what": "rolled back"}, "count": 3,
        "rollback": True})
    assert r.status == 200, r
    body = r.json()
    assert body["rolled_back"] is True and len(body["ids"]) == 3, body
    # Well past a poll (100 ms) and a wake-up, then a committed job: once it
    # ran, anything committed before it would have run too.
    time.sleep(1.0)
    [sentinel] = enqueue(srv, "test.record", {"tag": t, "what": "sentinel"})
    wait_done(cluster, [sentinel], 10 * SLOW)
    time.sleep(0.5)
    runs = cluster.runs(tag=t)
    assert [r["args"]["what"] for r in runs] == ["sentinel"], runs
    assert runs[0]["id"] == sentinel
    rows = cluster.jobs("kind = 'test.record'")
    assert [r["id"] for r in rows] == [sentinel], f"rows of the rolled-back jobs remain: {rows}"
    assert rows[0]["state"] == "done"


def test_enqueue_refuses_bad_input(cluster):
    srv = cluster.start()
    for body in ({"kind": "nobody.knows"}, {"kind": "test.record", "count": 0},
                 {"kind": "test.record", "count": 5001}, {"kind": "test.record", "args": [1]},
                 {"kind": "test.record", "count": 2, "idempotency_key": "k"}):
        r = ak.call(srv, "POST", "/_test/jobs", json_body=body)
        assert r.status == 422, (body, r)
    assert cluster.jobs("kind LIKE 'test.%'") == []


def test_a_delayed_job_waits_for_its_time(cluster):
    srv = cluster.start(JOB_POLL_MS=50)
    t = tag()
    t0 = time.monotonic()
    [jid] = enqueue(srv, "test.record", {"tag": t}, delay_ms=1500)
    time.sleep(0.8)
    assert not cluster.runs(tag=t) and cluster.job(jid)["state"] == "queued", cluster.job(jid)
    wait_for(lambda: cluster.runs(tag=t), 5 * SLOW, "the delayed job ran")
    took = time.monotonic() - t0
    assert 1.4 <= took < 1.5 + 1.5 * SLOW, f"delay_ms=1500 ran after {took:.2f} s"


# --------------------------------------------------------------------------
# exactly once, several instances
# --------------------------------------------------------------------------

def test_committed_jobs_run_exactly_once(cluster):
    count = 2000 if PG else 500
    a = cluster.start(JOB_CONCURRENCY=8)
    srvs = [a, cluster.start(JOB_CONCURRENCY=8)] if PG else [a]
    t = tag()
    ids = enqueue(a, "test.record", {"tag": t}, count=count)
    assert len(ids) == count and all(isinstance(i, int) for i in ids) and len(set(ids)) == count
    wait_for(lambda: len({r["id"] for r in cluster.runs(tag=t)}) >= count, 45 * SLOW,
             f"{count} distinct jobs ran")
    st = wait_done(cluster, ids, 10 * SLOW)
    time.sleep(0.5)  # a second run of any of them would show by now
    runs = by_id(cluster.runs(tag=t))
    assert set(runs) == set(ids), \
        f"ran ids that were not enqueued: {sorted(set(runs) - set(ids))[:5]}"
    twice = {i: rs for i, rs in runs.items() if len(rs) != 1}
    assert not twice, f"{len(twice)} jobs ran more than once, e.g. {list(twice.values())[:2]}"
    assert sorted(rs[0]["args"]["n"] for rs in runs.values()) == list(range(count))
    assert all(rs[0]["attempt"] == 1 for rs in runs.values())
    bad = [r for r in st.values() if (r["state"], r["attempts"]) != ("done", 1)]
    assert len(st) == count and not bad, f"rows not done after one attempt: {bad[:3]}"
    if PG:
        per = {}
        for rs in runs.values():
            per[pid_of(rs[0]["instance"])] = per.get(pid_of(rs[0]["instance"]), 0) + 1
        assert set(per) == {s.proc.pid for s in srvs}, f"runs per instance pid: {per}"


def check_batches(runs, most):
    """The runs of a batch kind, grouped by batch (its first job, "lead"):
    each batch's size is what its runs recorded, at most ``most``, in id
    order from its lead. Returns the sizes."""
    batches = collections.defaultdict(list)
    for r in runs:
        batches[r["lead"]].append(r)
    for lead, rs in batches.items():
        assert all(r["batch"] == len(rs) for r in rs), f"batch {lead}: {rs}"
        assert [r["id"] for r in rs] == sorted(r["id"] for r in rs) and rs[0]["id"] == lead, rs
        assert len({r["instance"] for r in rs}) == 1, rs
    sizes = sorted(len(rs) for rs in batches.values())
    assert sizes and sizes[-1] <= most, sizes
    return sizes


def test_a_batch_kind_runs_each_job_once_in_batches(cluster):
    """test.batch (run_batch, batch 8): 400 jobs in one transaction, on two
    instances sharing PostgreSQL (one on SQLite), each run exactly once,
    in batches of at most 8, most of them full."""
    count = 400
    a = cluster.start(JOB_CONCURRENCY=2)
    srvs = [a, cluster.start(JOB_CONCURRENCY=2)] if PG else [a]
    t = tag()
    ids = enqueue(a, "test.batch", {"tag": t}, count=count)
    wait_for(lambda: len({r["id"] for r in cluster.runs(tag=t)}) >= count, 45 * SLOW,
             f"{count} distinct jobs ran")
    st = wait_done(cluster, ids, 10 * SLOW)
    time.sleep(0.5)
    runs = cluster.runs(tag=t)
    per = by_id(runs)
    assert set(per) == set(ids)
    twice = {i: rs for i, rs in per.items() if len(rs) != 1}
    assert not twice, f"{len(twice)} jobs ran more than once, e.g. {list(twice.values())[:2]}"
    bad = [r for r in st.values() if (r["state"], r["attempts"]) != ("done", 1)]
    assert not bad, f"rows not done after one attempt: {bad[:3]}"
    sizes = check_batches(runs, 8)
    assert sum(1 for n in sizes if n == 8) * 8 >= count // 2, f"batch sizes: {sizes}"
    if PG:
        assert {pid_of(r["instance"]) for r in runs} == {s.proc.pid for s in srvs}


# --------------------------------------------------------------------------
# leases: kill -9, renewal
# --------------------------------------------------------------------------

@needs_postgres
def test_jobs_of_an_instance_killed_mid_job_complete_elsewhere(cluster):
    lease = dict(JOB_LEASE_SECONDS=2, JOB_CONCURRENCY=4)
    a = cluster.start(**lease)
    t = tag()
    ids = enqueue(a, "test.sleep", {"tag": t, "ms": 4000}, count=6)
    # A takes four (its concurrency); B, started after, the other two.
    held_a = wait_for(lambda: (lambda s: s if len(s) == 4 else None)(running_on(cluster, a, ids)),
                      5 * SLOW, "instance A runs four jobs")
    b = cluster.start(**lease)
    wait_for(lambda: len(running_on(cluster, b, ids)) == 2, 5 * SLOW, "instance B runs two jobs")
    assert not cluster.runs(tag=t), "a job ended before the kill: the test is too slow here"
    a.proc.kill()
    a.proc.wait()
    a.expected_exit = -signal.SIGKILL
    # Until their lease runs out, A's jobs stay A's: B does not take them.
    st = cluster.states(held_a)
    assert all(r["state"] == "running" and pid_of(r["locked_by"]) == a.proc.pid
               for r in st.values()), f"taken from A before the lease expired: {st}"
    st = wait_done(cluster, ids, 25 * SLOW)
    assert all(r["state"] == "done" for r in st.values()), st
    runs = by_id(cluster.runs(tag=t))
    assert set(runs) == set(ids), f"jobs that never completed: {set(ids) - set(runs)}"
    twice = {i: rs for i, rs in runs.items() if len(rs) != 1}
    assert not twice, f"jobs that completed more than once: {twice}"
    for i, [run] in runs.items():
        assert pid_of(run["instance"]) == b.proc.pid, run
        want = 2 if i in held_a else 1
        assert run["attempt"] == want and st[i]["attempts"] == want, (run, st[i])
        assert st[i]["last_error"] is None and st[i]["locked_by"] == run["instance"], st[i]
    assert "lease expired" in b.stdout_text()


def test_a_job_longer_than_its_lease_runs_once(cluster):
    """Lease 2 s, job 5 s: renewed while it runs. A second instance polls
    every 50 ms (on SQLite the instance's own sweep and runners would take
    an expired lease)."""
    env = dict(JOB_LEASE_SECONDS=2, JOB_POLL_MS=50)
    a = cluster.start(**env)
    t = tag()
    [jid] = enqueue(a, "test.sleep", {"tag": t, "ms": 5000})
    wait_for(lambda: running_on(cluster, a, [jid]), 5 * SLOW, "A runs the job")
    claimed = time.monotonic()
    if PG:
        cluster.start(**env)
    # Past the first lease: still running on A, under a lease in the future.
    time.sleep(max(0.0, claimed + 3.2 - time.monotonic()))
    now_pg, now_lite = "now()", LITE_NOW
    rows = cluster.query(f"SELECT state, locked_by, lease_until > {now_pg} AS ahead FROM jobs "
                         f"WHERE id = {jid}",
                         f"SELECT state, locked_by, lease_until > {now_lite} AS ahead FROM jobs "
                         f"WHERE id = {jid}")
    assert rows and rows[0]["state"] == "running" and bool(rows[0]["ahead"]), \
        f"3 s into a 5 s job under a 2 s lease: {rows}"
    assert pid_of(rows[0]["locked_by"]) == a.proc.pid
    wait_done(cluster, [jid], 10 * SLOW)
    time.sleep(0.5)
    runs = cluster.runs(tag=t)
    assert len(runs) == 1, f"ran {len(runs)} times: {runs}"
    assert runs[0]["attempt"] == 1 and pid_of(runs[0]["instance"]) == a.proc.pid
    row = cluster.job(jid)
    assert (row["state"], row["attempts"], row["last_error"]) == ("done", 1, None), row


def test_a_batch_longer_than_a_lease_keeps_every_jobs_lease(cluster):
    """A runner holds a whole batch: every job of it keeps its lease
    (renewed with the running ones) while the batch outlasts a lease. One
    runner, a 2 s lease, 8 test.batch jobs of 0.6 s each claimed together
    (the claim takes batch - 1 more of a batch kind for each one it
    found): one batch of 8, 4.8 s. A second instance (PostgreSQL; on
    SQLite the instance's own sweep) would take any lease that ran out:
    each job still runs once, on the first instance, with one attempt."""
    env = dict(JOB_LEASE_SECONDS=2, JOB_POLL_MS=50)
    a = cluster.start(JOB_CONCURRENCY=1, **env)
    t = tag()
    ids = enqueue(a, "test.batch", {"tag": t, "ms": 600}, count=8, delay_ms=1000)
    wait_for(lambda: len(running_on(cluster, a, ids)) == 8, 5 * SLOW, "A claimed all 8")
    if PG:
        cluster.start(**env)
    st = wait_done(cluster, ids, 30 * SLOW)
    time.sleep(0.5)
    runs = cluster.runs(tag=t)
    per = by_id(runs)
    twice = {i: rs for i, rs in per.items() if len(rs) != 1}
    assert set(per) == set(ids) and not twice, f"ran more than once: {twice}"
    assert {pid_of(r["instance"]) for r in runs} == {a.proc.pid}, runs
    bad = [r for r in st.values() if (r["state"], r["attempts"], r["last_error"]) != ("done", 1, None)]
    assert not bad, f"not done after one attempt: {bad[:3]}"
    assert check_batches(runs, 8) == [8]


# --------------------------------------------------------------------------
# retries, dead jobs
# --------------------------------------------------------------------------

def watch_runs(cluster, t, until, timeout, seen=None):
    """Log lines of tag ``t`` with the time each was first seen, until
    ``until(lines)``; ``seen``: the dict of an earlier call, to go on."""
    seen = {} if seen is None else seen
    deadline = time.monotonic() + timeout
    while True:
        for r in cluster.runs(tag=t):
            seen.setdefault((r["id"], r["attempt"]), (time.monotonic(), r))
        lines = [v for _, v in sorted(seen.values(), key=lambda x: x[0])]
        if until(lines):
            return seen
        assert time.monotonic() < deadline, f"runs of {t} after {timeout} s: {lines}"
        time.sleep(0.01)


def test_failures_are_retried_with_backoff_until_done(cluster):
    # A poll far away: the retries are claimed when due, not at a poll.
    srv = cluster.start(JOB_POLL_MS=30000)
    t = tag()
    t0 = time.monotonic()
    [jid] = enqueue(srv, "test.fail", {"tag": t, "fail": 2})
    seen = watch_runs(cluster, t, lambda ls: len(ls) >= 3, 5 * SLOW)
    took = time.monotonic() - t0
    assert sorted(a for _, a in seen) == [1, 2, 3]
    # backoff 100 ms, doubling, jitter x[0.5, 1.5): >= 50 + 100 ms in all
    assert seen[(jid, 3)][0] - seen[(jid, 1)][0] >= 0.12, seen
    assert took < 3 * SLOW, f"three attempts took {took:.2f} s: retries waited for a poll"
    row = wait_done(cluster, [jid], 5 * SLOW)[jid]
    assert (row["state"], row["attempts"], row["last_error"], row["finished"]) == \
        ("done", 3, None, True), row
    time.sleep(0.3)
    assert len(cluster.runs(tag=t)) == 3


def test_retry_ms_spaces_the_attempts_and_every_retry_is_on_time(cluster):
    """Two jobs fail together and ask for retries 300 ms and 1.2 s later:
    each second attempt comes when asked, although the next poll is 30 s
    away (the later retry is not forgotten once the sooner one ran)."""
    srv = cluster.start(JOB_POLL_MS=30000)
    t = tag()
    [soon] = enqueue(srv, "test.fail", {"tag": t, "fail": 1, "retry_ms": 300})
    [late] = enqueue(srv, "test.fail", {"tag": t, "fail": 1, "retry_ms": 1200})
    seen = watch_runs(cluster, t, lambda ls: len(ls) >= 2, 5 * SLOW)
    # between the attempts a job waits, queued, with the error kept (its
    # line is written before its end is)
    row = wait_for(lambda: (lambda r: r if r["state"] != "running" else None)(cluster.job(late)),
                   2 * SLOW, "the first attempt ended")
    assert row["state"] == "queued" and row["attempts"] == 1, row
    assert "attempt 1 fails on purpose" in row["last_error"], row
    seen = watch_runs(cluster, t, lambda ls: len(ls) >= 4, 6 * SLOW, seen)
    for jid, ms in ((soon, 300), (late, 1200)):
        gap = seen[(jid, 2)][0] - seen[(jid, 1)][0]
        assert ms / 1000 - 0.1 <= gap < ms / 1000 + 1.5 * SLOW, \
            f"retry_ms={ms}: the second attempt came after {gap:.2f} s"
    st = wait_done(cluster, [soon, late], 5 * SLOW)
    for row in st.values():
        assert (row["state"], row["attempts"], row["last_error"]) == ("done", 2, None), row


def test_dead_after_max_attempts_and_at_once_when_asked(cluster):
    srv = cluster.start()
    t = tag()
    [spent] = enqueue(srv, "test.fail", {"tag": t, "fail": 5}, max_attempts=2)
    [dead] = enqueue(srv, "test.fail", {"tag": t, "dead": 1})
    st = wait_done(cluster, [spent, dead], 10 * SLOW)
    time.sleep(1.0)  # past the backoff a third attempt would have had
    runs = by_id(cluster.runs(tag=t))
    assert [r["attempt"] for r in runs[spent]] == [1, 2], runs
    assert [r["attempt"] for r in runs[dead]] == [1], runs
    s, d = st[spent], st[dead]
    assert (s["state"], s["attempts"], s["max_attempts"], s["finished"], s["leased"]) == \
        ("dead", 2, 2, True, False), s
    assert "attempt 2 fails on purpose" in s["last_error"], s
    assert (d["state"], d["attempts"], d["max_attempts"], d["finished"]) == \
        ("dead", 1, 10, True), d
    assert d["last_error"] == "test.fail: dead on purpose", d
    assert "a job is dead" in srv.stdout_text()


# --------------------------------------------------------------------------
# idempotency keys
# --------------------------------------------------------------------------

def test_idempotency_key(cluster):
    a = cluster.start()
    b = cluster.start() if PG else a
    t = tag()
    key = f"key-{t}"
    [first] = enqueue(a, "test.record", {"tag": t}, idempotency_key=key)
    assert isinstance(first, int)
    assert enqueue(b, "test.record", {"tag": t, "second": True}, idempotency_key=key) == [None]
    wait_done(cluster, [first], 10 * SLOW)
    # The finished job's row holds the key (JOB_RETENTION_HOURS).
    assert enqueue(a, "test.record", {"tag": t, "third": True}, idempotency_key=key) == [None]
    # (kind, key): another kind with the same key is another job.
    [other] = enqueue(a, "test.fail", {"tag": t}, idempotency_key=key)
    assert isinstance(other, int) and other != first
    wait_done(cluster, [other], 10 * SLOW)
    time.sleep(0.5)
    runs = cluster.runs(tag=t)
    assert sorted((r["id"], r["kind"]) for r in runs) == \
        sorted([(first, "test.record"), (other, "test.fail")]), runs
    assert all(set(r["args"]) == {"tag"} for r in runs), runs
    rows = cluster.jobs(f"idempotency_key = {lit(key)}")
    assert [(r["id"], r["kind"]) for r in rows] == [(first, "test.record"), (other, "test.fail")]


# --------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------

def test_every_tick_runs_exactly_once_across_instances(cluster):
    n = 3 if PG else 1
    first = time.time()
    srvs = [cluster.start(KILN_TEST_JOBS_EVERY=1) for _ in range(n)]
    started = time.time()
    time.sleep(5)
    stop = time.time()

    def by_tick():
        ticks = {}
        for r in cluster.jobs("kind = 'test.every'"):
            assert r["idempotency_key"].startswith("tick:"), r
            ticks.setdefault(int(r["idempotency_key"][5:]), []).append(r)
        return ticks
    ticks = by_tick()
    # every second (UTC) from when all instances were up to the end: no gap
    want = set(range(int(started) + 1, int(stop) + 1))
    assert want <= set(ticks), f"missing ticks {sorted(want - set(ticks))}; have {sorted(ticks)}"
    wait_done(cluster, [ticks[tick][0]["id"] for tick in want], 5 * SLOW)
    time.sleep(0.3)
    ticks = by_tick()
    assert all(len(v) == 1 for v in ticks.values()), f"ticks enqueued twice: {ticks}"
    assert set(ticks) <= set(range(int(first) + 1, int(time.time()) + 1)), \
        f"ticks {sorted(ticks)} outside the test's seconds [{first:.1f}, {time.time():.1f}]"
    runs = by_id(cluster.runs(kind="test.every"))
    for tick in want:
        [row] = ticks[tick]
        assert row["state"] == "done" and row["attempts"] == 1, row
        n_runs = len(runs.get(row["id"], []))
        assert n_runs == 1, f"tick {tick} ran {n_runs} times"
    assert set(runs) <= {v[0]["id"] for v in ticks.values()}
    assert all(len(v) == 1 for v in runs.values()), runs
    if PG:
        pids = {s.proc.pid for s in srvs}
        assert {pid_of(r[0]["instance"]) for r in runs.values()} <= pids


@pytest.mark.skipif(kilnhttp.STORES != "postgres",
                    reason="waits for a minute boundary (up to ~70 s): postgres mode only")
def test_cron_tick_runs_exactly_once_across_three_instances(cluster):
    signal.alarm(150 * SLOW)  # re-arm the conftest watchdog: this one waits for a minute
    now = time.time()
    if 60 - now % 60 < 5:
        time.sleep(60 - now % 60 + 0.5)  # too close to a boundary to start three first
    srvs = [cluster.start(KILN_TEST_JOBS_CRON="* * * * *") for _ in range(3)]
    up = time.time()
    tick = (int(up) // 60 + 1) * 60
    key = f"tick:{tick}"

    def ran():
        rows = cluster.jobs(f"kind = 'test.cron' AND idempotency_key = {lit(key)}")
        return rows if rows and rows[0]["state"] == "done" else None
    rows = wait_for(ran, tick - time.time() + 15 * SLOW, f"the cron tick {tick} ran")
    time.sleep(1.0)
    rows = cluster.jobs(f"kind = 'test.cron' AND idempotency_key = {lit(key)}")
    assert len(rows) == 1 and rows[0]["attempts"] == 1, rows
    runs = [r for r in cluster.runs(kind="test.cron") if r["id"] == rows[0]["id"]]
    assert len(runs) == 1, f"the tick {tick} ran {len(runs)} times: {runs}"
    assert pid_of(runs[0]["instance"]) in {s.proc.pid for s in srvs}
    # and no other tick of this minute
    all_rows = cluster.jobs("kind = 'test.cron'")
    assert all(int(r["idempotency_key"][5:]) % 60 == 0 for r in all_rows), all_rows


# --------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------

def sigterm_and_wait(srv):
    """SIGTERM, then the seconds until srv exited 0."""
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait_exit(10 * SLOW)
    took = time.monotonic() - t0
    assert rc == 0, f"exit code {rc} (None: still running)\n{srv.stderr_text()[-2000:]}"
    return took


def test_sigterm_releases_a_job_that_asks_and_another_instance_completes_it(cluster):
    a = cluster.start(SHUTDOWN_TIMEOUT_SECONDS=10)
    t = tag()
    [jid] = enqueue(a, "test.sleep", {"tag": t, "ms": 3000, "release": 1})
    wait_for(lambda: running_on(cluster, a, [jid]), 5 * SLOW, "A runs the job")
    b = cluster.start() if PG else None
    took = sigterm_and_wait(a)
    # Released when the drain began, not at its end (10 s) nor the job's (3 s).
    assert took < 2.5 * SLOW, f"SIGTERM to exit took {took:.2f} s"
    if b is None:
        row = cluster.job(jid)
        assert (row["state"], row["attempts"], row["locked_by"]) == ("queued", 0, None), row
        b = cluster.start()
    row = wait_done(cluster, [jid], 10 * SLOW)[jid]
    runs = cluster.runs(tag=t)
    assert len(runs) == 1, runs
    assert pid_of(runs[0]["instance"]) == b.proc.pid and runs[0]["attempt"] == 1, runs
    assert (row["state"], row["attempts"]) == ("done", 1), row


def test_sigterm_lets_a_short_running_job_finish_before_exit(cluster):
    a = cluster.start(SHUTDOWN_TIMEOUT_SECONDS=5)
    t = tag()
    [jid] = enqueue(a, "test.sleep", {"tag": t, "ms": 1500})
    wait_for(lambda: running_on(cluster, a, [jid]), 5 * SLOW, "A runs the job")
    took = sigterm_and_wait(a)
    assert took < 5, f"exit {took:.2f} s after SIGTERM: waited past the job"
    runs = cluster.runs(tag=t)
    assert len(runs) == 1 and pid_of(runs[0]["instance"]) == a.proc.pid, runs
    row = cluster.job(jid)
    assert (row["state"], row["attempts"], row["locked_by"] is not None) == ("done", 1, True), row


def test_sigterm_releases_a_job_that_outlasts_the_drain(cluster):
    a = cluster.start(SHUTDOWN_TIMEOUT_SECONDS=2)
    t = tag()
    [jid] = enqueue(a, "test.sleep", {"tag": t, "ms": 4000})
    wait_for(lambda: running_on(cluster, a, [jid]), 5 * SLOW, "A runs the job")
    took = sigterm_and_wait(a)
    assert took < 2 + 0.5 * SLOW, f"exit {took:.2f} s after SIGTERM: past the drain (2 s)"
    assert not cluster.runs(tag=t), "the job finished on A: it outlasts no drain"
    row = cluster.job(jid)
    assert (row["state"], row["attempts"], row["locked_by"]) == ("queued", 0, None), row
    assert "released for another instance" in a.stdout_text()
    b = cluster.start()
    row = wait_done(cluster, [jid], 10 * SLOW)[jid]
    runs = cluster.runs(tag=t)
    assert len(runs) == 1 and pid_of(runs[0]["instance"]) == b.proc.pid, runs
    assert runs[0]["attempt"] == 1 and (row["state"], row["attempts"]) == ("done", 1), row


# --------------------------------------------------------------------------
# JOB_CONCURRENCY=0, unknown kinds, pruning
# --------------------------------------------------------------------------

def test_an_instance_with_job_concurrency_0_runs_no_jobs(cluster):
    """JOB_CONCURRENCY=0 (ENVIRONMENT.md): the instance enqueues but runs
    none; another instance (on SQLite: started after it) runs them."""
    a = cluster.start(JOB_CONCURRENCY=0)
    b = cluster.start() if PG else None
    t = tag()
    ids = enqueue(a, "test.record", {"tag": t}, count=20)
    if b is None:
        time.sleep(1.0)  # ten polls
        assert not cluster.runs(tag=t), cluster.runs(tag=t)[:3]
        assert all(r["state"] == "queued" for r in cluster.states(ids).values())
        a.stop()
        b = cluster.start()
    wait_done(cluster, ids, 10 * SLOW)
    runs = cluster.runs(tag=t)
    assert len(runs) == 20 and {pid_of(r["instance"]) for r in runs} == {b.proc.pid}, \
        f"runs per instance: {[pid_of(r['instance']) for r in runs]} (A is {a.proc.pid})"



def test_runners_and_pumps_run_at_a_lower_priority_than_requests(cluster):
    """Jobs use the CPU that requests leave (docs/JOBS.md): the runners
    (JOB_CONCURRENCY) and the pumps' thread at niceness 10, every other
    thread (the loops, the jobs manager that renews leases) at 0."""
    srv = cluster.start(JOB_CONCURRENCY=3)
    ids = enqueue(srv, "test.record", {"tag": tag()}, count=3)
    wait_done(cluster, ids, 10 * SLOW)

    def nice_of(tid):
        stat = open(f"/proc/{srv.proc.pid}/task/{tid}/stat").read()
        return int(stat[stat.rindex(")") + 2:].split()[16])

    nices = collections.Counter(nice_of(t) for t in os.listdir(f"/proc/{srv.proc.pid}/task"))
    assert nices[10] == 3 + 1, nices
    assert nices[0] >= 3 and set(nices) == {0, 10}, nices


class Load:
    """Every CPU kept busy by a spinning process at niceness 19 (the
    machine reads as saturated, yet every other thread is served first)
    and, with ``requests``, that many requests always in progress on
    ``srv`` (each thread calls GET /_test/sleep?ms=20 in a loop: short
    enough that every 100 ms sample of the instance sees several of them
    end, which is when their time is counted)."""

    def __init__(self, srv, requests=0):
        self.srv, self.requests = srv, requests
        self.stop = threading.Event()
        self.answers, self.failures = 0, []

    def _ask(self):
        while not self.stop.is_set():
            try:
                r = ak.call(self.srv, "GET", "/_test/sleep?ms=20", timeout=10 * SLOW)
                if r.status == 200:
                    self.answers += 1
                else:
                    self.failures.append(r.status)
            except OSError as e:
                self.failures.append(repr(e))

    def __enter__(self):
        spin = "import os\nos.nice(19)\nwhile True: pass"
        self.burners = [subprocess.Popen([sys.executable, "-c", spin])
                        for _ in range(os.cpu_count() or 1)]
        self.threads = [threading.Thread(target=self._ask, daemon=True)
                        for _ in range(self.requests)]
        for t in self.threads:
            t.start()
        time.sleep(0.5)  # a few of the instance's 100 ms samples
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15 * SLOW)
        for p in self.burners:
            p.kill()
            p.wait()


def finish_gaps(cluster, ids):
    """Seconds between the ends of consecutive jobs of ``ids``."""
    rows = cluster.query("SELECT finished_at FROM jobs WHERE id IN (%s)"
                         % ",".join(str(int(i)) for i in ids))
    ends = sorted(datetime.fromisoformat(r["finished_at"]).timestamp() for r in rows)
    return [b - a for a, b in zip(ends, ends[1:])]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def test_jobs_yield_while_requests_keep_the_cpus_busy(cluster):
    """docs/JOBS.md, "Yielding to requests": with JOB_BUSY_PERCENT=10 a
    runner works a tenth of the time while requests keep the instance
    busy: after a 20 ms job it pauses at least 180 ms. Every job still
    runs."""
    srv = cluster.start(JOB_CONCURRENCY=1, JOB_BUSY_PERCENT=10)
    with Load(srv, requests=4) as load:
        ids = enqueue(srv, "test.sleep", {"ms": 20, "tag": tag()}, count=12)
        wait_done(cluster, ids, 40 * SLOW)
        stats = ak.call(srv, "GET", "/_test/jobs").json()
    assert not load.failures and load.answers >= 20, (load.answers, load.failures[:3])
    assert all(r["state"] == "done" for r in cluster.states(ids).values())
    gaps = finish_gaps(cluster, ids)
    assert median(gaps) >= 0.15, f"the jobs ended {gaps} s apart: no pause"
    # Most of the eleven jobs after the first waited (a sample may still
    # miss the load now and then on a loaded machine).
    assert stats["yielded"] >= 6, stats


def test_jobs_do_not_yield_to_busy_cpus_without_requests(cluster):
    """The same busy CPUs with no request in progress: nothing pauses
    (the CPUs may be busy with the jobs themselves, or another process's
    batch work)."""
    srv = cluster.start(JOB_CONCURRENCY=1, JOB_BUSY_PERCENT=10)
    with Load(srv, requests=0):
        ids = enqueue(srv, "test.sleep", {"ms": 20, "tag": tag()}, count=12)
        wait_done(cluster, ids, 20 * SLOW)
        stats = ak.call(srv, "GET", "/_test/jobs").json()
    assert stats["yielded"] == 0 and stats["done"] == 12, stats
    gaps = finish_gaps(cluster, ids)
    assert median(gaps) < 0.15, f"the jobs ended {gaps} s apart"


def test_a_kind_unknown_to_the_instance_is_never_claimed(cluster):
    srv = cluster.start()
    cluster.execute(
        "INSERT INTO jobs (kind, args) VALUES ('nobody.knows', '{}')",
        f"INSERT INTO jobs (kind, args, run_at, inserted_at, updated_at) VALUES "
        f"('nobody.knows', '{{}}', {LITE_NOW}, {LITE_NOW}, {LITE_NOW})")
    [row] = cluster.jobs("kind = 'nobody.knows'")
    t = tag()
    [after] = enqueue(srv, "test.record", {"tag": t})
    wait_done(cluster, [after], 10 * SLOW)
    time.sleep(1.0)  # ten polls
    [now] = cluster.jobs("kind = 'nobody.knows'")
    assert (now["id"], now["state"], now["attempts"], now["locked_by"], now["last_error"]) == \
        (row["id"], "queued", 0, None, None), now


def test_pruning_deletes_old_done_jobs_and_keeps_dead_ones_longer(cluster):
    srv = cluster.start(EVENTS_PRUNE_SECONDS=1, JOB_RETENTION_HOURS=1, JOB_DEAD_RETENTION_DAYS=1)
    t = tag()
    done_old, done_new = enqueue(srv, "test.record", {"tag": t}, count=2)
    dead_old, dead_ancient = enqueue(srv, "test.fail", {"tag": t, "dead": 1}, count=2)
    ids = [done_old, done_new, dead_old, dead_ancient]
    wait_done(cluster, ids, 10 * SLOW)

    def age(jid, pg, lite):
        cluster.execute(f"UPDATE jobs SET finished_at = now() - interval '{pg}' WHERE id = {jid}",
                        f"UPDATE jobs SET finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', "
                        f"'-{lite}') WHERE id = {jid}")
    age(done_old, "2 hours", "2 hours")
    age(dead_old, "2 hours", "2 hours")
    age(dead_ancient, "3 days", "3 days")
    wait_for(lambda: set(cluster.states(ids)) == {done_new, dead_old}, 10 * SLOW,
             "the done job two hours old and the dead one three days old pruned")
    time.sleep(2.5)  # two more prunes
    assert set(cluster.states(ids)) == {done_new, dead_old}
    # the prune jobs themselves are done jobs, one per tick
    prunes = cluster.jobs("kind = 'jobs.prune'")
    assert prunes and all(r["state"] in ("done", "running", "queued") for r in prunes), prunes
