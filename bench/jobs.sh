#!/usr/bin/env bash
# Kiln background jobs and webhooks benchmark (docs/JOBS.md, docs/WEBHOOKS.md):
#
#   queue     jobs per second through the queue: BENCH_JOBS_COUNT no-op
#             test.record jobs enqueued in chunks of BENCH_JOBS_CHUNK through
#             POST /_test/jobs (all chunks at once, one transaction each,
#             alternating between the instances), from the first enqueue to
#             the last job done (jobs.finished_at); PostgreSQL + Valkey with
#             two kilns on one database, SQLite with one kiln
#   latency   enqueue to done of single no-op jobs on an idle queue, one at a
#             time with BENCH_JOBS_GAP_MS between them (finished_at -
#             inserted_at: p50, p99, max), on the same kilns
#   hooks     webhook deliveries per second to a local nginx answering 204:
#             one user with one webhook for notes.created, BENCH_JOBS_HOOK_NOTES
#             notes written by wrk as fast as it goes, from the first write to
#             the last delivery recorded (webhook_attempts.at); then
#             BENCH_JOBS_HOOK_SPACED notes one at a time (BENCH_JOBS_HOOK_GAP_MS
#             apart): the event's `at` to its delivery's attempt (p50, p99)
#   overhead  POST /api/v1/notes under wrk (64 connections, BENCH_JOBS_WRITERS
#             users cycling) on one kiln (PostgreSQL + Valkey) with (a) no
#             webhook, (b) one webhook of another user, (c) one of one
#             writer matching notes.created, (d) one per writer; interleaved
#             rounds, best of each (goal: b, c, d >= 0.85 x a)
#
#   bench/jobs.sh                                 all parts, both modes
#   BENCH_JOBS_PARTS="queue latency" bench/jobs.sh
#   BENCH_JOBS_MODES=postgres BENCH_JOBS_ROUNDS=3 bench/jobs.sh
#
# Environment (defaults in brackets):
#   BENCH_JOBS_PARTS         parts to run [queue latency hooks overhead]
#   BENCH_JOBS_MODES         queue, latency, hooks on [postgres sqlite];
#                            overhead runs on postgres only
#   BENCH_JOBS_ROUNDS        interleaved rounds, best reported [BENCH_ROUNDS or 2]
#   BENCH_JOBS_COUNT         queue: jobs per round on PostgreSQL [20000]
#   BENCH_JOBS_SQLITE_COUNT  queue: jobs per round on SQLite (a flush per
#                            commit makes it slow: keeps the run short) [5000]
#   BENCH_JOBS_CHUNK         queue: jobs per POST /_test/jobs (at most 5000) [5000]
#   BENCH_JOBS_LATENCY_JOBS  latency: single jobs [300]
#   BENCH_JOBS_GAP_MS        latency: pause after each enqueue's answer [20]
#   BENCH_JOBS_HOOK_NOTES    hooks: notes written per round (a few more may
#                            be written: wrk's requests in flight) [3000]
#   BENCH_JOBS_HOOK_SPACED   hooks: notes written one at a time [200]
#   BENCH_JOBS_HOOK_GAP_MS   hooks: pause after each of those writes [50]
#   BENCH_JOBS_SECONDS       overhead: length of a measured wrk run [BENCH_SECONDS or 10]
#   BENCH_WARMUP_SECONDS     overhead: warmup run per target [2]
#   BENCH_JOBS_WRITERS       overhead: users the POSTs cycle through [4]
#   BENCH_CONNECTIONS, BENCH_THREADS   wrk -c and -t [64, 2]
#   BENCH_JOBS_CONCURRENCY   JOB_CONCURRENCY of every kiln [empty: Kiln's default, 4]
#   BENCH_JOBS_POLL_MS       JOB_POLL_MS of every kiln [empty: Kiln's default, 1000]
#   BENCH_JOBS_BUSY_PERCENT  JOB_BUSY_PERCENT of every kiln [empty: Kiln's default, 10]
#   BENCH_JOBS_TIMEOUT_S     longest wait for a queue to drain [180]
#   BENCH_JOBS_PGSS          1: pg_stat_statements on (PostgreSQL restarted with
#                            it preloaded); the top statements of each part in
#                            $out/pgss-PART.txt [0]
#   BENCH_JOBS_DURABLE       1: PostgreSQL flushes every commit (fsync,
#                            synchronous_commit, full_page_writes on, as SQLite's
#                            synchronous=FULL does); the test services skip
#                            every flush [0]
#   BENCH_JOBS_SERVICES      scripts/test-services.sh folder [build/bench/services-jobs]
#   BENCH_KILN_LOG           kilns' stdout (the request log) [/dev/null]
#   KILN_BIN, HTTP_LOOPS, PYTHON, PG_BIN, NGINX_BIN
#
# Every kiln runs with KILN_ENV=test (POST /_test/jobs and the test.record
# kind exist only there; dev login works as in development),
# WEBHOOK_ALLOW_PRIVATE=true (the receiver is on loopback) and the rate
# limits at 1000000. See bench/README.md ("Jobs and webhooks"). Raw output
# and results.txt / results.json in build/bench/jobs/.
# Exit status: 0 when every measurement ran (goals may still be MISS) or the
# benchmark was skipped (a kiln without the jobs queue); non-zero when a
# server failed to start or died, a queue did not drain in time, or a tool
# failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_JOBS_PARTS=${BENCH_JOBS_PARTS:-queue latency hooks overhead}
BENCH_JOBS_MODES=${BENCH_JOBS_MODES:-postgres sqlite}
BENCH_JOBS_ROUNDS=${BENCH_JOBS_ROUNDS:-${BENCH_ROUNDS:-2}}
BENCH_JOBS_COUNT=${BENCH_JOBS_COUNT:-20000}
BENCH_JOBS_SQLITE_COUNT=${BENCH_JOBS_SQLITE_COUNT:-5000}
BENCH_JOBS_CHUNK=${BENCH_JOBS_CHUNK:-5000}
BENCH_JOBS_LATENCY_JOBS=${BENCH_JOBS_LATENCY_JOBS:-300}
BENCH_JOBS_GAP_MS=${BENCH_JOBS_GAP_MS:-20}
BENCH_JOBS_HOOK_NOTES=${BENCH_JOBS_HOOK_NOTES:-3000}
BENCH_JOBS_HOOK_SPACED=${BENCH_JOBS_HOOK_SPACED:-200}
BENCH_JOBS_HOOK_GAP_MS=${BENCH_JOBS_HOOK_GAP_MS:-50}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_JOBS_SECONDS=${BENCH_JOBS_SECONDS:-$BENCH_SECONDS}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_JOBS_WRITERS=${BENCH_JOBS_WRITERS:-4}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_JOBS_CONCURRENCY=${BENCH_JOBS_CONCURRENCY:-}
BENCH_JOBS_POLL_MS=${BENCH_JOBS_POLL_MS:-}
BENCH_JOBS_BUSY_PERCENT=${BENCH_JOBS_BUSY_PERCENT:-}
BENCH_JOBS_TIMEOUT_S=${BENCH_JOBS_TIMEOUT_S:-180}
BENCH_JOBS_PGSS=${BENCH_JOBS_PGSS:-0}
BENCH_JOBS_DURABLE=${BENCH_JOBS_DURABLE:-0}
BENCH_JOBS_SERVICES=${BENCH_JOBS_SERVICES:-build/bench/services-jobs}
BENCH_KILN_LOG=${BENCH_KILN_LOG:-/dev/null}
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}

out=build/bench/jobs
tool=build/bench/benchtool
host=127.0.0.1

BENCH_TAG="bench jobs"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_JOBS_ROUNDS BENCH_JOBS_COUNT BENCH_JOBS_SQLITE_COUNT BENCH_JOBS_CHUNK BENCH_JOBS_LATENCY_JOBS \
         BENCH_JOBS_HOOK_NOTES BENCH_JOBS_HOOK_SPACED BENCH_JOBS_SECONDS BENCH_WARMUP_SECONDS \
         BENCH_JOBS_WRITERS BENCH_CONNECTIONS BENCH_THREADS BENCH_JOBS_TIMEOUT_S HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for v in BENCH_JOBS_GAP_MS BENCH_JOBS_HOOK_GAP_MS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
for v in BENCH_JOBS_CONCURRENCY BENCH_JOBS_POLL_MS BENCH_JOBS_BUSY_PERCENT; do
    [ -z "${!v}" ] || [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be empty or an integer (got '${!v}')"
done
[ "$BENCH_JOBS_CHUNK" -le 5000 ] || die "BENCH_JOBS_CHUNK must be at most 5000 (POST /_test/jobs takes 5000)"
[ "$BENCH_CONNECTIONS" -ge "$BENCH_THREADS" ] || die "BENCH_CONNECTIONS must be at least BENCH_THREADS"
for p in $BENCH_JOBS_PARTS; do
    case $p in queue|latency|hooks|overhead) ;; *) die "unknown part '$p' in BENCH_JOBS_PARTS" ;; esac
done
for m in $BENCH_JOBS_MODES; do
    case $m in postgres|sqlite) ;; *) die "unknown mode '$m' in BENCH_JOBS_MODES" ;; esac
done
part() { [[ " $BENCH_JOBS_PARTS " == *" $1 "* ]]; }
mode() { [[ " $BENCH_JOBS_MODES " == *" $1 "* ]]; }

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"

[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
[ -x "$PYTHON" ] || die "$PYTHON not found"
command -v curl >/dev/null || die "curl not found"
if part hooks || part overhead; then
    command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
    [ -x "$NGINX_BIN" ] || die "$NGINX_BIN not found (Debian package nginx-light; scripts/deps.sh)"
fi
if mode sqlite; then command -v sqlite3 >/dev/null || die "sqlite3 not found (Debian package sqlite3)"; fi
mkdir -p build/bench
cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"

# --------------------------------------------------------------- cleanup --
pids=() services_up=0 wrk_pid="" nginx_pid=""
cleanup() {
    trap - EXIT INT TERM
    local p
    stop_pid "$wrk_pid"
    for p in "${pids[@]}"; do stop_pid "$p"; done
    stop_pid "$nginx_pid"
    [ "$BENCH_JOBS_DURABLE" != 1 ] || pg_durable reset 2>/dev/null || true
    if [ "$services_up" = 1 ]; then
        scripts/test-services.sh stop "$BENCH_JOBS_SERVICES" >>"$out/services.log" 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

now_ms() { date +%s%3N; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# CPU used by other processes during a run, as a share of all CPUs (as in
# bench/events.sh): busy time of all CPUs minus what the measured processes
# used (the kilns, the receiver nginx, PostgreSQL and Redis with their
# children, and the reaped children of this shell: wrk, curl, psql, python).
clk=$(getconf CLK_TCK)
service_pids() {   # the services' postgres (and its backends) and redis, the receiver nginx
    local f p
    {
        if [ "$services_up" = 1 ]; then
            for f in "$BENCH_JOBS_SERVICES"/pg/postmaster.pid "$BENCH_JOBS_SERVICES"/*/redis.pid; do
                [ -f "$f" ] || continue
                p=$(head -n 1 "$f")
                [[ $p =~ ^[0-9]+$ ]] || continue
                echo "$p"
                pgrep -P "$p" 2>/dev/null || true
            done
        fi
        if [ -n "$nginx_pid" ]; then
            echo "$nginx_pid"
            pgrep -P "$nginx_pid" 2>/dev/null || true
        fi
    } | sort -u | tr '\n' ' '
}
other_start() {   # other_start KILN_PID...
    local svc
    read -ra svc <<<"$(service_pids)"
    child_ticks
    o_kilns=("$@")
    o_busy0=$(cpu_busy_ticks) o_ours0=$(( $(proc_ticks "$@" "${svc[@]}") + child_ticks_now )) o_t0=$(date +%s%N)
    o_svc=("${svc[@]}")
}
other_end() {   # other_end: sets other_pct, the other processes' share of all CPUs, %
    # (not in a $(...): `times` there would see the subshell's children)
    local busy ours t1 svc now_svc
    # Processes the services started meanwhile (a backend, an autovacuum
    # worker) count whole: they had nothing at the start.
    read -ra now_svc <<<"$(service_pids)"
    read -ra svc <<<"$(printf '%s\n' "${o_svc[@]}" "${now_svc[@]}" | sort -u | tr '\n' ' ')"
    child_ticks
    busy=$(cpu_busy_ticks) ours=$(( $(proc_ticks "${o_kilns[@]}" "${svc[@]}") + child_ticks_now )) t1=$(date +%s%N)
    other_pct=$(awk -v b=$((busy - o_busy0)) -v o=$((ours - o_ours0)) -v w=$(( (t1 - o_t0) / 1000000 )) \
        -v clk="$clk" -v n="$(nproc)" \
        'BEGIN { x = (b - o) * 100 / (w / 1000 * clk * n); printf "%.1f\n", x < 0 ? 0 : x }')
}

# ------------------------------------------------------------- services --
have_pg=0
pg_reason=""
need_pg=0
if mode postgres || part overhead; then need_pg=1; fi
if [ "$need_pg" = 1 ]; then
    if [ ! -x "$PG_BIN/initdb" ]; then
        pg_reason="PostgreSQL 15 is not installed ($PG_BIN/initdb)"
    elif ! command -v redis-server >/dev/null; then
        pg_reason="redis-server not found"
    elif ! "$KILN_BIN" --help 2>&1 | grep -qw migrate; then
        pg_reason="$KILN_BIN has no PostgreSQL support"
    else
        log "starting PostgreSQL and Redis (the test services) in $BENCH_JOBS_SERVICES"
        services_up=1
        scripts/test-services.sh start "$BENCH_JOBS_SERVICES" >"$out/services.log" 2>&1 ||
            { cat "$out/services.log" >&2; die "scripts/test-services.sh start failed"; }
        # shellcheck disable=SC1091
        . "$BENCH_JOBS_SERVICES/env"
        have_pg=1
    fi
    [ -z "$pg_reason" ] || log "PostgreSQL parts skipped: $pg_reason"
fi
meta pg_skipped "${pg_reason:-no}"

new_db() {   # new_db NAME: a fresh database owned by the kiln role; prints its URL
    psql_su postgres "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
    psql_su postgres "CREATE DATABASE \"$1\" OWNER \"$KILN_TEST_PG_USER\"" >/dev/null
    if [ "$BENCH_JOBS_PGSS" = 1 ]; then
        psql_su "$1" "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    fi
    echo "postgresql://$KILN_TEST_PG_USER:$KILN_TEST_PG_PASSWORD@$KILN_TEST_PG_HOST:$KILN_TEST_PG_PORT/$1"
}
if [ "$have_pg" = 1 ] && [ "$BENCH_JOBS_PGSS" = 1 ]; then
    log "restarting PostgreSQL with pg_stat_statements (BENCH_JOBS_PGSS=1)"
    psql_su postgres "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null
    scripts/test-services.sh restart "$BENCH_JOBS_SERVICES" postgres >>"$out/services.log" 2>&1 ||
        die "cannot restart PostgreSQL with pg_stat_statements"
fi
# The test services skip every flush (fast tests); a production database
# waits for storage at each commit, and so does Kiln's SQLite
# (synchronous=FULL). BENCH_JOBS_DURABLE=1 measures PostgreSQL that way; the
# settings are put back when the script ends.
if [ "$BENCH_JOBS_DURABLE" = 1 ]; then
    pg_durable on
    log "PostgreSQL flushes every commit (BENCH_JOBS_DURABLE=1): fsync $(psql_su postgres "SHOW fsync"), synchronous_commit $(psql_su postgres "SHOW synchronous_commit")"
fi
meta pg_durable "$BENCH_JOBS_DURABLE"
pgss_reset() {   # pgss_reset DB
    [ "$have_pg" = 1 ] && [ "$BENCH_JOBS_PGSS" = 1 ] || return 0
    psql_su "$1" "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 || true
}
pgss_dump() {   # pgss_dump DB PART: the statements that took the most time, into $out/pgss-PART.txt
    [ "$have_pg" = 1 ] && [ "$BENCH_JOBS_PGSS" = 1 ] || return 0
    "$PG_BIN/psql" -h "$KILN_TEST_PG_SOCKET_DIR" -p "$KILN_TEST_PG_PORT" -U "$KILN_TEST_PG_SUPERUSER" \
        -d "$1" -X -q -v ON_ERROR_STOP=1 -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
            round(mean_exec_time::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 160) AS query
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = current_database() ORDER BY total_exec_time DESC LIMIT 25" \
        >"$out/pgss-$2.txt" 2>&1 || true
}

# sql MODE DB SQL: one statement, its rows as text ('|' between columns).
# postgres: DB is a database name (as the superuser); sqlite: the file.
sql() {
    if [ "$1" = postgres ]; then
        psql_su "$2" "$3"
    else
        sqlite3 -cmd '.timeout 10000' "$2" "$3"
    fi
}
# ms_of MODE EXPR: an SQL expression for EXPR (a timestamp column) in ms since the epoch
ms_of() {
    if [ "$1" = postgres ]; then echo "(extract(epoch FROM $2) * 1000)::bigint"
    else echo "CAST(round((julianday($2) - 2440587.5) * 86400000) AS INTEGER)"; fi
}
# ms_between MODE A B: A - B in ms (fractional)
ms_between() {
    if [ "$1" = postgres ]; then echo "round((extract(epoch FROM $2 - $3) * 1000)::numeric, 3)"
    else echo "round((julianday($2) - julianday($3)) * 86400000, 3)"; fi
}
# after_ms MODE COL MS: COL is later than MS (ms since the epoch)
after_ms() {
    if [ "$1" = postgres ]; then echo "$2 > to_timestamp($3 / 1000.0)"
    else echo "$(ms_of sqlite "$2") > $3"; fi
}

# wait_count MODE DB SQL N: poll SQL (a count) every 0.5 s until it is >= N,
# at most BENCH_JOBS_TIMEOUT_S; prints the last count; status 1 on timeout.
# The figures come from the tables' own timestamps, so the poll only says
# when to stop; each psql is a new PostgreSQL backend (a fork and a few ms
# of CPU), hence not more often.
wait_count() {
    local c=0 end=$(( $(now_ms) + BENCH_JOBS_TIMEOUT_S * 1000 ))
    while :; do
        c=$(sql "$1" "$2" "$3")
        [ "$c" -ge "$4" ] && { echo "$c"; return 0; }
        [ "$(now_ms)" -lt "$end" ] || { echo "$c"; return 1; }
        sleep 0.5
    done
}

# ------------------------------------------------------------------- kiln --
# start_kiln NAME MODE DB [ENV=VALUE...]: MODE sqlite (DB: a file under $out,
# the in-process memory store) or postgres (DB: a URL; Valkey on the
# services' Redis).
declare -A kiln_port kiln_pid
secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')
jobs_env=()
[ -z "$BENCH_JOBS_CONCURRENCY" ] || jobs_env+=(JOB_CONCURRENCY="$BENCH_JOBS_CONCURRENCY")
[ -z "$BENCH_JOBS_POLL_MS" ] || jobs_env+=(JOB_POLL_MS="$BENCH_JOBS_POLL_MS")
[ -z "$BENCH_JOBS_BUSY_PERCENT" ] || jobs_env+=(JOB_BUSY_PERCENT="$BENCH_JOBS_BUSY_PERCENT")
start_kiln() {
    local name=$1 m=$2 db=$3 port resp
    shift 3
    local stores=()
    if [ "$m" = sqlite ]; then
        stores=(DB_PATH="$root/$out/$db")
    else
        stores=(DATABASE_URL="$db" VALKEY_HOST="$KILN_TEST_REDIS_HOST" VALKEY_PORT="$KILN_TEST_REDIS_PORT")
    fi
    port=$("$tool" freeport)
    log "starting $name ($m) on $host:$port"
    # Test: POST /_test/jobs and test.record exist only there; dev login too.
    # One secret for every kiln, so a session made on one is good on another.
    setsid env -i PATH="$PATH" KILN_ENV=test SECRET_KEY_BASE="$secret" \
        BIND_ADDRESS=$host PORT="$port" PUBLIC_URL="http://$host:$port" HTTP_LOOPS="$HTTP_LOOPS" \
        LOG_LEVEL=info MIGRATE_ON_START=true HEALTH_CACHE_MS=0 WEBHOOK_ALLOW_PRIVATE=true \
        RATE_LIMIT_PUBLIC=1000000 RATE_LIMIT_PROTECTED=1000000 "${stores[@]}" "${jobs_env[@]}" "$@" \
        "$KILN_BIN" serve >"$BENCH_KILN_LOG" 2>"$out/$name.stderr" &
    kiln_pid[$name]=$!
    pids+=("$!")
    kiln_port[$name]=$port
    for _ in $(seq 150); do
        alive_or_die "$name" "${kiln_pid[$name]}"
        if resp=$("$tool" get "$host" "$port" /healthz 2000 2>/dev/null) && [ "${resp%% *}" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name: GET /healthz did not answer 200 within 15 s (last: ${resp:-nothing})"
}
stop_kiln() {
    local name=$1
    alive_or_die "$name" "${kiln_pid[$name]}"
    meta "${name}_stderr_lines" "$(grep -c . "$out/$name.stderr" 2>/dev/null || true)"
    stop_pid "${kiln_pid[$name]}"
}

# login PORT EMAIL: dev login, prints the session cookie's value
login() {
    "$PYTHON" - "$host" "$1" "$2" <<'EOF'
import http.client, json, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
c.request("POST", "/auth/dev/login", body=json.dumps({"email": sys.argv[3], "name": "Bench"}),
          headers={"Content-Type": "application/json"})
r = c.getresponse(); r.read()
if r.status != 200:
    sys.exit("dev login answered %d" % r.status)
for k, v in r.getheaders():
    if k.lower() == "set-cookie" and v.startswith("_backend_session="):
        print(v.split(";", 1)[0].split("=", 1)[1]); sys.exit(0)
sys.exit("dev login set no _backend_session cookie")
EOF
}

# new_webhook PORT COOKIE: POST /api/v1/webhooks for notes.created to the
# receiver; prints the webhook's id
new_webhook() {
    local resp
    resp=$(curl -s -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
        -b "_backend_session=$2" \
        --data "{\"url\":\"http://$host:$recv_port/hook\",\"events\":[\"notes.created\"],\"description\":\"bench\"}" \
        "http://$host:$1/api/v1/webhooks") || die "POST /api/v1/webhooks failed"
    [ "$(tail -n 1 <<<"$resp")" = 201 ] || die "POST /api/v1/webhooks answered: $resp"
    head -n 1 <<<"$resp" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])'
}

# The client for single writes, one after the other on keep-alive
# connections (taken in turn when several ports are given):
#   spaced.py jobs|notes HOST PORT[,PORT] N GAP_MS [COOKIE]
# jobs: POST /_test/jobs {"kind":"test.record"}; notes: POST /api/v1/notes.
# Prints: posts=N bad=B post_p50_ms=.. post_p99_ms=..
cat >"$out/spaced.py" <<'EOF'
import http.client, json, sys, time
what, host, ports, n, gap = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]), int(sys.argv[5]) / 1000.0
cookie = sys.argv[6] if len(sys.argv) > 6 else ""
conns = [http.client.HTTPConnection(host, int(p), timeout=30) for p in ports]
if what == "jobs":
    path, body = "/_test/jobs", json.dumps({"kind": "test.record", "args": {"single": 1}})
else:
    path, body = "/api/v1/notes", json.dumps({"title": "Spaced note", "content": "One note at a time."})
headers = {"Content-Type": "application/json"}
if cookie:
    headers["Cookie"] = "_backend_session=" + cookie
times, bad = [], 0
for i in range(n):
    c = conns[i % len(conns)]
    t = time.monotonic()
    c.request("POST", path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    times.append((time.monotonic() - t) * 1000)
    if r.status != 201:
        bad += 1
    time.sleep(gap)
times.sort()
rank = lambda p: times[max(0, min(len(times) - 1, -(-len(times) * p // 100) - 1))]
print("posts=%d bad=%d post_p50_ms=%.2f post_p99_ms=%.2f" % (n, bad, rank(50), rank(99)))
EOF

# -------------------------------------------------------------- receiver --
# nginx answering 204 to anything on a loopback port, one worker, with an
# access log (a write per request) so the report can count what it received.
recv_port=""
recv_log=""
start_receiver() {
    local ngx=$root/$out/receiver user_line
    rm -rf "$ngx"
    mkdir -p "$ngx/conf" "$ngx/logs" "$ngx/tmp"
    recv_port=$("$tool" freeport)
    recv_log=$ngx/logs/access.log
    if [ "$(id -u)" = 0 ]; then user_line='user root;'; else user_line='# (not root: no user directive)'; fi
    cat >"$ngx/conf/nginx.conf" <<EOF
# The webhook receiver of bench/jobs.sh: 204 to every request.
$user_line
worker_processes 1;
daemon off;
master_process on;
pid logs/nginx.pid;
lock_file logs/nginx.lock;
error_log logs/error.log warn;
events {
    worker_connections 4096;
    use epoll;
}
http {
    log_format short '\$msec \$request_method \$status \$http_webhook_id';
    access_log logs/access.log short;
    keepalive_requests 1000000;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server {
        listen 127.0.0.1:$recv_port backlog=4096;
        location / {
            return 204;
        }
    }
}
EOF
    log "starting the receiver (nginx, 204) on $host:$recv_port"
    setsid "$NGINX_BIN" -p "$ngx/" -c conf/nginx.conf -e logs/error.log >"$ngx/logs/stdout.log" 2>&1 &
    nginx_pid=$!
    local code=""
    for _ in $(seq 50); do
        kill -0 "$nginx_pid" 2>/dev/null || { cat "$ngx/logs/error.log" >&2 2>/dev/null; die "the receiver nginx did not start"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data x "http://$host:$recv_port/hook" || true)
        [ "$code" = 204 ] && break
        sleep 0.1
    done
    [ "$code" = 204 ] || die "the receiver answered ${code:-nothing}, not 204"
    meta nginx_version "$("$NGINX_BIN" -v 2>&1 | sed 's|.*/||')"
}
recv_lines() { wc -l <"$recv_log" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- meta --
meta cpus "$(nproc)"
meta http_loops "$HTTP_LOOPS"
meta kiln_bin "$KILN_BIN"
meta kiln_version "$("$KILN_BIN" version 2>/dev/null | head -n 1)"
meta git_head "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta job_concurrency "${BENCH_JOBS_CONCURRENCY:-default}"
meta job_poll_ms "${BENCH_JOBS_POLL_MS:-default}"
meta job_busy_percent "${BENCH_JOBS_BUSY_PERCENT:-default}"
meta rounds "$BENCH_JOBS_ROUNDS"
meta jobs_count "$BENCH_JOBS_COUNT"
meta jobs_sqlite_count "$BENCH_JOBS_SQLITE_COUNT"
meta jobs_chunk "$BENCH_JOBS_CHUNK"
meta pgss "$BENCH_JOBS_PGSS"
meta connections "$BENCH_CONNECTIONS"
meta threads "$BENCH_THREADS"
meta writers "$BENCH_JOBS_WRITERS"
meta gap_ms "$BENCH_JOBS_GAP_MS"
meta hook_gap_ms "$BENCH_JOBS_HOOK_GAP_MS"
meta seconds "$BENCH_JOBS_SECONDS"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
[ "$have_pg" = 0 ] || meta pg_version "$(psql_su postgres 'SHOW server_version')"
modes_run=()
for m in $BENCH_JOBS_MODES; do
    if [ "$m" = postgres ] && [ "$have_pg" = 0 ]; then continue; fi
    modes_run+=("$m")
done

# A mode's kilns: postgres two on one database, sqlite one. Names in
# mkilns[MODE] (the first takes the writes), the database in mdb[MODE].
declare -A mkilns mdb
start_mode() {   # start_mode PART MODE
    local p=$1 m=$2 url
    if [ "$m" = postgres ]; then
        mdb[$m]=kiln_jobs_$p
        url=$(new_db "${mdb[$m]}")
        start_kiln "$p-pg-a" postgres "$url"
        start_kiln "$p-pg-b" postgres "$url"
        mkilns[$m]="$p-pg-a $p-pg-b"
    else
        mdb[$m]=$out/$p.db
        start_kiln "$p-sqlite" sqlite "$p.db"
        mkilns[$m]="$p-sqlite"
    fi
}
stop_mode() {   # stop_mode MODE
    local n names
    read -ra names <<<"${mkilns[$1]}"
    for n in "${names[@]}"; do stop_kiln "$n"; done
}
mode_pids() {   # mode_pids MODE: its kilns' pids
    local n names r=()
    read -ra names <<<"${mkilns[$1]}"
    for n in "${names[@]}"; do r+=("${kiln_pid[$n]}"); done
    echo "${r[@]}"
}
mode_ports() {   # mode_ports MODE: its kilns' ports, comma-separated
    local n names s=""
    read -ra names <<<"${mkilns[$1]}"
    for n in "${names[@]}"; do s+="${s:+,}${kiln_port[$n]}"; done
    echo "$s"
}
mode_alive() {
    local n names
    read -ra names <<<"${mkilns[$1]}"
    for n in "${names[@]}"; do alive_or_die "$n" "${kiln_pid[$n]}"; done
}
vacuum() {   # vacuum MODE DB [TABLE...]
    local m=$1 db=$2
    shift 2
    if [ "$m" = postgres ]; then psql_su "$db" "VACUUM ANALYZE $*" >/dev/null 2>&1 || true; fi
}
# per_instance MODE DB WHERE: "N,N" jobs done per instance (locked_by), largest first
per_instance() {
    sql "$1" "$2" "SELECT count(*) FROM jobs WHERE $3 GROUP BY locked_by ORDER BY 1 DESC" | paste -sd, -
}

# ----------------------------------------------------------------- queue --
# The test jobs of the previous run removed (the kilns idle by then).
queue_clean() {   # queue_clean MODE
    sql "$1" "${mdb[$1]}" "DELETE FROM jobs WHERE kind = 'test.record'" >/dev/null
    vacuum "$1" "${mdb[$1]}" jobs
}
queue_run() {   # queue_run MODE N FILE
    local m=$1 n=$2 f=$3 db=${mdb[$1]} ports left chunk i=0 t0 tenq c rc=0 l0 code
    local cpids=() kp
    IFS=, read -ra ports <<<"$(mode_ports "$m")"
    read -ra kp <<<"$(mode_pids "$m")"
    queue_clean "$m"
    l0=$(load1)
    other_start "${kp[@]}"
    t0=$(now_ms)
    left=$n
    while [ "$left" -gt 0 ]; do
        chunk=$(( left < BENCH_JOBS_CHUNK ? left : BENCH_JOBS_CHUNK ))
        curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H 'Content-Type: application/json' \
            --data "{\"kind\":\"test.record\",\"count\":$chunk}" \
            "http://$host:${ports[i % ${#ports[@]}]}/_test/jobs" >"$f.enqueue-$i" &
        cpids+=("$!")
        left=$((left - chunk))
        i=$((i + 1))
    done
    for c in "${cpids[@]}"; do wait "$c" || rc=$?; done
    tenq=$(now_ms)
    [ "$rc" = 0 ] || die "queue $m: curl failed (exit status $rc)"
    for c in $(seq 0 $((i - 1))); do
        code=$(cut -d' ' -f1 "$f.enqueue-$c")
        [ "$code" = 201 ] || die "queue $m: POST /_test/jobs answered $code"
    done
    wait_count "$m" "$db" "SELECT count(*) FROM jobs WHERE kind = 'test.record' AND state IN ('done', 'dead')" "$n" >/dev/null ||
        die "queue $m: the $n jobs were not done within ${BENCH_JOBS_TIMEOUT_S} s"
    other_end
    mode_alive "$m"
    local stats
    stats=$(sql "$m" "$db" "SELECT count(*), sum(CASE WHEN state = 'dead' THEN 1 ELSE 0 END),
        $(ms_of "$m" 'min(inserted_at)'), $(ms_of "$m" 'max(inserted_at)'), $(ms_of "$m" 'min(finished_at)'),
        $(ms_of "$m" 'max(finished_at)'), sum(CASE WHEN $(after_ms "$m" finished_at "$tenq") THEN 1 ELSE 0 END),
        max(attempts) FROM jobs WHERE kind = 'test.record'")
    local cnt dead ins0 ins1 fin0 fin1 after maxatt
    IFS='|' read -r cnt dead ins0 ins1 fin0 fin1 after maxatt <<<"$stats"
    {
        echo "jobs: $cnt"
        echo "dead: $dead"
        echo "max_attempts: $maxatt"
        echo "t0_ms: $t0"
        echo "enqueued_ms: $tenq"
        echo "inserted_first_ms: $ins0"
        echo "inserted_last_ms: $ins1"
        echo "done_first_ms: $fin0"
        echo "done_last_ms: $fin1"
        echo "done_after_enqueue: $after"
        echo "per_instance: $(per_instance "$m" "$db" "kind = 'test.record'")"
        echo "enqueue_answers: $(cat "$f".enqueue-* | tr '\n' ' ')"
        echo "other_cpu_pct: $other_pct"
        echo "load1: $l0 $(load1)"
    } >"$f"
    rm -f "$f".enqueue-*
    log "  $m: $cnt jobs in $(( fin1 - t0 )) ms from the first enqueue ($(( cnt * 1000 / (fin1 - t0 > 0 ? fin1 - t0 : 1) )) jobs/s; enqueue took $(( tenq - t0 )) ms), load $l0, CPU used by other processes: $other_pct%"
}

latency_run() {   # latency_run MODE FILE: single jobs, one at a time
    local m=$1 f=$2 db=${mdb[$1]} l0 kp
    read -ra kp <<<"$(mode_pids "$m")"
    queue_clean "$m"
    sleep 1   # nothing left from the clean-up
    l0=$(load1)
    other_start "${kp[@]}"
    "$PYTHON" "$out/spaced.py" jobs "$host" "$(mode_ports "$m")" "$BENCH_JOBS_LATENCY_JOBS" \
        "$BENCH_JOBS_GAP_MS" >"$f.client" || die "latency $m: the client failed"
    wait_count "$m" "$db" "SELECT count(*) FROM jobs WHERE kind = 'test.record' AND state IN ('done', 'dead')" \
        "$BENCH_JOBS_LATENCY_JOBS" >/dev/null || die "latency $m: the jobs were not done within ${BENCH_JOBS_TIMEOUT_S} s"
    other_end
    mode_alive "$m"
    sql "$m" "$db" "SELECT $(ms_between "$m" finished_at inserted_at) FROM jobs
        WHERE kind = 'test.record' AND state = 'done' ORDER BY id" >"$f.values"
    {
        echo "client: $(cat "$f.client")"
        echo "per_instance: $(per_instance "$m" "$db" "kind = 'test.record'")"
        echo "other_cpu_pct: $other_pct"
        echo "load1: $l0 $(load1)"
    } >"$f"
    rm -f "$f.client"
    log "  $m: $(wc -l <"$f.values") single jobs; median $(sort -n "$f.values" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms, load $l0, CPU used by other processes: $other_pct%"
}

# ------------------------------------------------------------------ hooks --
# The writer's notes, the events, deliveries and ended jobs of the previous
# run removed (the kilns idle by then).
hooks_clean() {   # hooks_clean MODE
    local m=$1 db=${mdb[$1]}
    # (sqlite3 does not cascade: foreign keys are off in its connection)
    sql "$m" "$db" "DELETE FROM webhook_attempts" >/dev/null
    sql "$m" "$db" "DELETE FROM webhook_deliveries" >/dev/null
    sql "$m" "$db" "DELETE FROM notes" >/dev/null
    sql "$m" "$db" "DELETE FROM events" >/dev/null
    sql "$m" "$db" "DELETE FROM jobs WHERE state IN ('done', 'dead') AND kind = 'webhooks.deliver'" >/dev/null
    vacuum "$m" "$db"
}
# wrk until each thread has had LIMIT answers: the Lua script appends a line
# to MARKER and stops its thread; wrk itself only ends at -d or SIGINT, so
# the script sends SIGINT once every thread has stopped.
burst_lua() {   # burst_lua FILE COOKIE LIMIT MARKER
    cat >"$1" <<EOF
-- written by bench/jobs.sh: POST /api/v1/notes as one user, $3 answers per thread, then stop
local cookie = "$2"
local limit = $3
local marker = "$4"
EOF
    cat >>"$1" <<'EOF'
local body = '{"title":"Hooked note","content":"A note written by bench/jobs.sh: about as long as a short note someone types into the app, one line of plain text."}'
local req
local n = 0
function init(args)
  req = wrk.format("POST", "/api/v1/notes", {["Cookie"] = "_backend_session=" .. cookie,
    ["Content-Type"] = "application/json"}, body)
end
function request()
  return req
end
function response(status, headers, b)
  n = n + 1
  if n == limit then
    local f = io.open(marker, "a")
    f:write("stopped\n")
    f:close()
    wrk.thread:stop()
  end
end
EOF
    cat bench/latency.lua >>"$1"
}
declare -A hook_cookie hook_id
hooks_run() {   # hooks_run MODE FILE
    local m=$1 f=$2 db=${mdb[$1]} a l0 kp t0 tw rc=0 marker lines deadline
    read -ra kp <<<"$(mode_pids "$m")"
    a=${mkilns[$m]%% *}
    hooks_clean "$m"
    sleep 1
    marker=$root/$f.marker
    rm -f "$marker"
    burst_lua "$f.lua" "${hook_cookie[$m]}" $(( (BENCH_JOBS_HOOK_NOTES + BENCH_THREADS - 1) / BENCH_THREADS )) "$marker"
    local r0
    r0=$(recv_lines)
    l0=$(load1)
    other_start "${kp[@]}"
    t0=$(now_ms)
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${BENCH_JOBS_TIMEOUT_S}s" --latency -s "$f.lua" \
        "http://$host:${kiln_port[$a]}/api/v1/notes" >"$f.wrk" 2>&1 &
    wrk_pid=$!
    deadline=$(( $(now_ms) + BENCH_JOBS_TIMEOUT_S * 1000 ))
    while kill -0 "$wrk_pid" 2>/dev/null; do
        lines=$(grep -c stopped "$marker" 2>/dev/null || true)
        [ "${lines:-0}" -ge "$BENCH_THREADS" ] && break
        [ "$(now_ms)" -lt "$deadline" ] || break
        sleep 0.02
    done
    tw=$(now_ms)
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" || rc=$?
    wrk_pid=""
    if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$f.wrk"; then
        cat "$f.wrk" >&2
        die "hooks $m: wrk failed (exit status $rc)"
    fi
    rm -f "$marker"
    # The requests wrk had in flight when it stopped are still answered
    # (SQLite's writers may queue a while): the count once it holds still.
    local notes prev=-1
    for _ in $(seq 40); do
        sleep 0.5
        notes=$(sql "$m" "$db" "SELECT count(*) FROM notes")
        [ "$notes" = "$prev" ] && break
        prev=$notes
    done
    wait_count "$m" "$db" "SELECT count(*) FROM webhook_deliveries WHERE state <> 'pending'" "$notes" >/dev/null ||
        die "hooks $m: the $notes deliveries were not made within ${BENCH_JOBS_TIMEOUT_S} s"
    other_end
    mode_alive "$m"
    local stats
    stats=$(sql "$m" "$db" "SELECT (SELECT count(*) FROM webhook_deliveries),
        (SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'),
        (SELECT count(*) FROM webhook_attempts), $(ms_of "$m" 'min(e.at)'), $(ms_of "$m" 'max(e.at)'), $(ms_of "$m" 'max(d.inserted_at)'),
        $(ms_of "$m" 'min(a.at)'), $(ms_of "$m" 'max(a.at)'), sum(CASE WHEN $(after_ms "$m" a.at "$tw") THEN 1 ELSE 0 END)
        FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
        JOIN webhook_attempts a ON a.delivery_id = d.id")
    local cnt ok att ev0 ev1 disp1 at0 at1 after
    IFS='|' read -r cnt ok att ev0 ev1 disp1 at0 at1 after <<<"$stats"
    {
        echo "notes: $notes"
        echo "notes_at_end: $(sql "$m" "$db" "SELECT count(*) FROM notes")"
        echo "deliveries: $cnt"
        echo "succeeded: $ok"
        echo "attempts: $att"
        echo "t0_ms: $t0"
        echo "writes_end_ms: $tw"
        echo "event_first_ms: $ev0"
        echo "event_last_ms: $ev1"
        echo "dispatched_last_ms: $disp1"
        echo "delivered_first_ms: $at0"
        echo "delivered_last_ms: $at1"
        echo "delivered_after_writes: $after"
        echo "received: $(( $(recv_lines) - r0 ))"
        echo "per_instance: $(per_instance "$m" "$db" "kind = 'webhooks.deliver'")"
        echo "other_cpu_pct: $other_pct"
        echo "load1: $l0 $(load1)"
        grep -E '^(Requests/sec:|latency_us:|  Non-2xx|  Socket errors)' "$f.wrk" || true
    } >"$f"
    log "  $m: $ok of $notes deliveries in $(( at1 - t0 )) ms from the first write ($(( ok * 1000 / (at1 - t0 > 0 ? at1 - t0 : 1) )) deliveries/s; writes $(( tw - t0 )) ms, last dispatched at $(( disp1 - t0 )) ms), load $l0, CPU used by other processes: $other_pct%"
}
hooks_spaced() {   # hooks_spaced MODE FILE: single writes, each note's event to its delivery
    local m=$1 f=$2 db=${mdb[$1]} a l0 kp
    read -ra kp <<<"$(mode_pids "$m")"
    a=${mkilns[$m]%% *}
    hooks_clean "$m"
    sleep 1
    l0=$(load1)
    other_start "${kp[@]}"
    "$PYTHON" "$out/spaced.py" notes "$host" "${kiln_port[$a]}" "$BENCH_JOBS_HOOK_SPACED" \
        "$BENCH_JOBS_HOOK_GAP_MS" "${hook_cookie[$m]}" >"$f.client" || die "hooks $m: the spaced client failed"
    wait_count "$m" "$db" "SELECT count(*) FROM webhook_deliveries WHERE state <> 'pending'" \
        "$BENCH_JOBS_HOOK_SPACED" >/dev/null || die "hooks $m: the spaced deliveries were not made in time"
    other_end
    mode_alive "$m"
    # event's at -> first attempt's at (the delivery), and -> the delivery's row (the dispatch)
    sql "$m" "$db" "SELECT $(ms_between "$m" a.at e.at), $(ms_between "$m" d.inserted_at e.at)
        FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
        JOIN webhook_attempts a ON a.delivery_id = d.id
        WHERE d.state = 'succeeded' AND a.id = (SELECT min(id) FROM webhook_attempts WHERE delivery_id = d.id)
        ORDER BY d.id" >"$f.values"
    {
        echo "client: $(cat "$f.client")"
        echo "per_instance: $(per_instance "$m" "$db" "kind = 'webhooks.deliver'")"
        echo "other_cpu_pct: $other_pct"
        echo "load1: $l0 $(load1)"
    } >"$f"
    rm -f "$f.client"
    log "  $m: $(wc -l <"$f.values") spaced deliveries; median $(cut -d'|' -f1 "$f.values" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms from the event to the delivery, load $l0, CPU used by other processes: $other_pct%"
}

# --------------------------------------------------------------- overhead --
ov_db=kiln_jobs_overhead
declare -A ov_hooks
ov_lua() {   # ov_lua FILE COOKIE...: POST /api/v1/notes, cycling the writers' cookies
    local f=$1 c
    shift
    {
        echo "-- written by bench/jobs.sh: POST /api/v1/notes, cycling the writers' sessions"
        echo "local cookies = {"
        for c in "$@"; do echo "  \"$c\","; done
        echo "}"
        cat <<'EOF'
local body = '{"title":"Bench note","content":"A note written by bench/jobs.sh: about as long as a short note someone types into the app, one line of plain text."}'
local reqs = {}
local i = 0
function init(args)
  for k, c in ipairs(cookies) do
    reqs[k] = wrk.format("POST", "/api/v1/notes", {["Cookie"] = "_backend_session=" .. c,
      ["Content-Type"] = "application/json"}, body)
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
EOF
        cat bench/latency.lua
    } >"$f"
}
# Between runs: every endpoint off (the dispatcher then moves its cursor to
# the head without reading), the deliveries still queued dropped, the
# running ones left to end, then the notes, events, deliveries and ended
# jobs removed and the tables vacuumed, so every run finds the same tables.
ov_clean() {
    local q
    psql_su "$ov_db" "UPDATE webhooks SET enabled = false" >/dev/null
    # A dispatcher batch that read the endpoints before they were turned off
    # holds the cursor's row until it commits: wait for it (the batches
    # after it find no endpoint and only move the cursor).
    psql_su "$ov_db" "SELECT tx FROM webhook_cursor WHERE id = 1 FOR UPDATE" >/dev/null
    for _ in $(seq 100); do
        psql_su "$ov_db" "DELETE FROM jobs WHERE kind = 'webhooks.deliver' AND state = 'queued'" >/dev/null
        q=$(psql_su "$ov_db" "SELECT count(*) FROM jobs WHERE state = 'running' OR (state = 'queued' AND kind = 'webhooks.deliver')")
        [ "$q" = 0 ] && break
        sleep 0.1
    done
    psql_su "$ov_db" "DELETE FROM webhook_deliveries" >/dev/null
    psql_su "$ov_db" "DELETE FROM notes" >/dev/null
    psql_su "$ov_db" "DELETE FROM events" >/dev/null
    psql_su "$ov_db" "DELETE FROM jobs WHERE state IN ('done', 'dead')" >/dev/null
    psql_su "$ov_db" "UPDATE webhooks SET failing_since = NULL, disabled_reason = NULL" >/dev/null
    vacuum postgres "$ov_db"
}
ov_set() {   # ov_set TARGET: the endpoints of that target on, the others off
    local ids="" k
    case $1 in
        a) ;;
        b) ids="'${ov_hooks[other]}'" ;;
        c) ids="'${ov_hooks[1]}'" ;;
        d) for k in $(seq "$BENCH_JOBS_WRITERS"); do ids+="${ids:+,}'${ov_hooks[$k]}'"; done ;;
    esac
    psql_su "$ov_db" "UPDATE webhooks SET enabled = $( [ -n "$ids" ] && echo "id IN ($ids)" || echo false )" >/dev/null
}
ov_run() {   # ov_run TARGET SECONDS FILE
    local t=$1 f=$3 rc=0 l0 pid=${kiln_pid[ov]}
    ov_clean
    ov_set "$t"
    sleep 0.5
    local r0
    r0=$(recv_lines)
    l0=$(load1)
    other_start "$pid"
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$2s" --latency -s "$out/ov.lua" \
        "http://$host:${kiln_port[ov]}/api/v1/notes" >"$f" 2>&1 &
    wrk_pid=$!
    wait "$wrk_pid" || rc=$?
    wrk_pid=""
    other_end
    alive_or_die ov "$pid"
    if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$f"; then
        cat "$f" >&2
        die "wrk failed on overhead $t (exit status $rc)"
    fi
    local st
    # due: the notes of users with an endpoint on (one delivery each)
    st=$(psql_su "$ov_db" "SELECT (SELECT count(*) FROM notes), (SELECT count(*) FROM events),
        (SELECT count(*) FROM notes n WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.enabled AND w.user_id = n.user_id)),
        (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded')")
    {
        echo "other_cpu_pct: $other_pct"
        echo "load1: $l0 $(load1)"
        echo "counts (notes|events|due|deliveries|succeeded): $st"
        echo "received: $(( $(recv_lines) - r0 ))"
    } >>"$f"
}

# ------------------------------------------------------------------- runs --
# A kiln without the queue (no POST /_test/jobs in test): nothing to measure.
probe_mode=sqlite
[ "${#modes_run[@]}" = 0 ] || probe_mode=${modes_run[0]}
if [ "$probe_mode" = postgres ]; then probe_db=$(new_db kiln_jobs_probe); else probe_db=probe.db; fi
start_kiln probe "$probe_mode" "$probe_db"
probe=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '{"kind":"no.such.kind"}' "http://$host:${kiln_port[probe]}/_test/jobs" || true)
stop_kiln probe
if [ "$probe" != 422 ]; then
    log "skipped: $KILN_BIN answers ${probe:-nothing} (not 422) to POST /_test/jobs with an unknown kind: no jobs queue"
    meta skipped "no jobs queue in $KILN_BIN (POST /_test/jobs answered ${probe:-nothing})"
    exit 0
fi

if part hooks || part overhead; then start_receiver; fi

if part queue || part latency; then
    for m in "${modes_run[@]}"; do start_mode queue "$m"; done
    # The runners' connections open at their first job: a small batch first.
    for m in "${modes_run[@]}"; do
        log "queue $m: warmup (1000 jobs)"
        queue_run "$m" 1000 "$out/warmup-queue-$m.txt"
    done
    rm -f "$out"/warmup-queue-*
    pgss_reset "${mdb[postgres]:-postgres}"
    if part queue; then
        for r in $(seq "$BENCH_JOBS_ROUNDS"); do
            for m in "${modes_run[@]}"; do
                n=$BENCH_JOBS_COUNT
                [ "$m" = postgres ] || n=$BENCH_JOBS_SQLITE_COUNT
                log "queue: round $r/$BENCH_JOBS_ROUNDS: $m ($n jobs)"
                queue_run "$m" "$n" "$out/run-queue-$m-r$r.txt"
            done
        done
        pgss_dump "${mdb[postgres]:-postgres}" queue
    fi
    if part latency; then
        pgss_reset "${mdb[postgres]:-postgres}"
        for m in "${modes_run[@]}"; do
            log "latency: $m ($BENCH_JOBS_LATENCY_JOBS single jobs, ${BENCH_JOBS_GAP_MS} ms apart)"
            latency_run "$m" "$out/latency-$m.txt"
        done
        pgss_dump "${mdb[postgres]:-postgres}" latency
    fi
    for m in "${modes_run[@]}"; do stop_mode "$m"; done
fi

if part hooks; then
    for m in "${modes_run[@]}"; do
        start_mode hooks "$m"
        a=${mkilns[$m]%% *}
        hook_cookie[$m]=$(login "${kiln_port[$a]}" "hooked-$m@example.com") || die "dev login failed on $a"
        hook_id[$m]=$(new_webhook "${kiln_port[$a]}" "${hook_cookie[$m]}")
        meta "hooks_${m}_webhook" "${hook_id[$m]}"
    done
    for m in "${modes_run[@]}"; do
        log "hooks $m: warmup (200 notes)"
        saved=$BENCH_JOBS_HOOK_NOTES
        BENCH_JOBS_HOOK_NOTES=200
        hooks_run "$m" "$out/warmup-hooks-$m.txt"
        BENCH_JOBS_HOOK_NOTES=$saved
    done
    rm -f "$out"/warmup-hooks-*
    pgss_reset "${mdb[postgres]:-postgres}"
    for r in $(seq "$BENCH_JOBS_ROUNDS"); do
        for m in "${modes_run[@]}"; do
            log "hooks: round $r/$BENCH_JOBS_ROUNDS: $m ($BENCH_JOBS_HOOK_NOTES notes, one delivery each)"
            hooks_run "$m" "$out/run-hooks-$m-r$r.txt"
        done
    done
    pgss_dump "${mdb[postgres]:-postgres}" hooks
    for m in "${modes_run[@]}"; do
        log "hooks: $m: $BENCH_JOBS_HOOK_SPACED notes one at a time, ${BENCH_JOBS_HOOK_GAP_MS} ms apart"
        hooks_spaced "$m" "$out/spaced-hooks-$m.txt"
    done
    for m in "${modes_run[@]}"; do stop_mode "$m"; done
fi

if part overhead; then
    if [ "$have_pg" = 1 ]; then
        url=$(new_db "$ov_db")
        start_kiln ov postgres "$url"
        cs=()
        for k in $(seq "$BENCH_JOBS_WRITERS"); do
            c=$(login "${kiln_port[ov]}" "writer-$k@example.com") || die "dev login failed on ov"
            cs+=("$c")
            ov_hooks[$k]=$(new_webhook "${kiln_port[ov]}" "$c")
        done
        c=$(login "${kiln_port[ov]}" "other@example.com") || die "dev login failed on ov"
        ov_hooks[other]=$(new_webhook "${kiln_port[ov]}" "$c")
        ov_lua "$out/ov.lua" "${cs[@]}"
        targets=(a b c d)
        for t in "${targets[@]}"; do
            log "overhead: warmup $t (${BENCH_WARMUP_SECONDS}s)"
            ov_run "$t" "$BENCH_WARMUP_SECONDS" "$out/warmup-ov-$t.txt"
        done
        rm -f "$out"/warmup-ov-*
        pgss_reset "$ov_db"
        for r in $(seq "$BENCH_JOBS_ROUNDS"); do
            for t in "${targets[@]}"; do
                log "overhead: round $r/$BENCH_JOBS_ROUNDS: $t (${BENCH_JOBS_SECONDS}s)"
                f=$out/run-ov-$t-r$r.txt
                ov_run "$t" "$BENCH_JOBS_SECONDS" "$f"
                log "  $(grep '^Requests/sec:' "$f"), $(sed -n 's/^counts.*: //p' "$f" | awk -F'|' '{printf "deliveries due %s, made %s, succeeded %s during the run", $3, $4, $5}'), load $(sed -n 's/^load1: //p' "$f"), CPU used by other processes: $(sed -n 's/^other_cpu_pct: //p' "$f")%"
            done
        done
        pgss_dump "$ov_db" overhead
        ov_clean
        stop_kiln ov
    else
        meta overhead_skipped "${pg_reason:-no PostgreSQL}"
    fi
fi
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ----------------------------------------------------------------- report --
"$PYTHON" - "$out" <<'EOF' | tee "$out/results.txt"
import glob, json, os, re, sys
out = sys.argv[1]
def env(path):
    d = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                d[k] = v.strip('"')
    return d
def colon(path):
    d = {}
    for line in open(path):
        if ": " in line:
            k, v = line.rstrip("\n").split(": ", 1)
            d[k.strip()] = v.strip()
    return d
def kv(s):
    return dict(x.split("=", 1) for x in s.split() if "=" in x)
def rank(vals, p):   # nearest rank
    if not vals:
        return None
    v = sorted(vals)
    k = -(-len(v) * p // 100)
    return v[max(0, min(len(v) - 1, int(k) - 1))]
def num(s):
    try:
        return int(s)
    except (TypeError, ValueError):
        return None
meta = env(out + "/meta.env")
results = {"meta": meta, "queue": {}, "latency": {}, "hooks": {}, "hooks_spaced": {}, "overhead": {}}
lines = []
P = lines.append
P("Kiln jobs and webhooks (%s, tree %s, %s CPUs, HTTP_LOOPS=%s, JOB_CONCURRENCY %s, JOB_POLL_MS %s, JOB_BUSY_PERCENT %s)" % (
    meta.get("kiln_version", "?"), meta.get("git_head", "?"), meta.get("cpus"), meta.get("http_loops"),
    meta.get("job_concurrency"), meta.get("job_poll_ms"), meta.get("job_busy_percent", "default")))
P("load average at start: %s, at end: %s" % (meta.get("load_start"), meta.get("load_end")))
P("PostgreSQL %s (%s); SQLite: synchronous=FULL, a flush per commit" % (meta.get("pg_version", "-"),
  "flushes every commit (BENCH_JOBS_DURABLE=1)" if meta.get("pg_durable") == "1" else "the test services: fsync and synchronous_commit off"))
def goal(ok):
    return "PASS" if ok else "MISS"
names = {"postgres": "PostgreSQL + Valkey, 2 kilns", "sqlite": "SQLite, 1 kiln"}
noisy = []
def note_noise(label, rs):
    busy = [r for r in rs if float(r.get("other_cpu_pct") or 0) > 10]
    if busy:
        noisy.append("%s: %d of %d runs with other processes above 10%% of the CPUs" % (label, len(busy), len(rs)))
def rounds_text(rs, key):
    return ", ".join("%s (%s%%, load %s)" % (("%.0f" % r[key]) if r.get(key) is not None else "-",
                                             "%.0f" % float(r.get("other_cpu_pct") or 0),
                                             (r.get("load1") or "?").split()[0]) for r in rs)

# queue
rows = []
for m in ("postgres", "sqlite"):
    rs = []
    for f in sorted(glob.glob("%s/run-queue-%s-r*.txt" % (out, m))):
        d = colon(f)
        n, t0, enq, last = num(d["jobs"]), num(d["t0_ms"]), num(d["enqueued_ms"]), num(d["done_last_ms"])
        after = num(d.get("done_after_enqueue")) or 0
        r = {"jobs": n, "dead": num(d.get("dead")) or 0, "enqueue_ms": enq - t0, "total_ms": last - t0,
             "jobs_per_s": n * 1000.0 / max(1, last - t0),
             "drain_jobs_per_s": after * 1000.0 / max(1, last - enq) if last > enq else None,
             "done_after_enqueue": after, "per_instance": d.get("per_instance"),
             "first_done_ms": num(d["done_first_ms"]) - t0, "max_attempts": num(d.get("max_attempts")),
             "other_cpu_pct": d.get("other_cpu_pct"), "load1": d.get("load1"), "file": os.path.basename(f)}
        rs.append(r)
    if rs:
        best = max(rs, key=lambda r: r["jobs_per_s"])
        results["queue"][m] = {"best": best, "rounds": rs}
        note_noise("queue " + m, rs)
        rows.append((m, best, rs))
if rows:
    P("")
    P("1. Jobs through the queue: no-op test.record jobs, enqueued in chunks of %s (all POSTs at once);"
      " first enqueue to last done (best round; every round's jobs/s with the share of the CPUs other"
      " processes used and the 1-min load)" % meta.get("jobs_chunk"))
    P("| setup | jobs | enqueue s | first done s | last done s | jobs/s | after the enqueue, jobs/s | per instance | rounds |")
    P("|---|---|---|---|---|---|---|---|---|")
    for m, b, rs in rows:
        P("| %s | %d | %.2f | %.2f | %.2f | **%.0f** | %s | %s | %s |" % (
            names[m], b["jobs"], b["enqueue_ms"] / 1000, b["first_done_ms"] / 1000, b["total_ms"] / 1000,
            b["jobs_per_s"], "%.0f (%d jobs)" % (b["drain_jobs_per_s"], b["done_after_enqueue"])
            if b["drain_jobs_per_s"] else "-", b["per_instance"], rounds_text(rs, "jobs_per_s")))
    for m, b, rs in rows:
        for r in rs:
            if r["dead"] or (r["max_attempts"] or 1) > 1:
                P("  warning: queue %s %s: %d dead, max attempts %s" % (m, r["file"], r["dead"], r["max_attempts"]))

# latency
lat = []
for m in ("postgres", "sqlite"):
    f = "%s/latency-%s.txt" % (out, m)
    if not os.path.exists(f):
        continue
    d = colon(f)
    vals = [float(x) for x in open(f + ".values").read().split()]
    c = kv(d.get("client", ""))
    r = {"jobs": len(vals), "p50_ms": rank(vals, 50), "p99_ms": rank(vals, 99), "max_ms": max(vals) if vals else None,
         "min_ms": min(vals) if vals else None, "post_p50_ms": float(c.get("post_p50_ms", 0)),
         "bad": int(c.get("bad", 0)), "per_instance": d.get("per_instance"),
         "other_cpu_pct": d.get("other_cpu_pct"), "load1": d.get("load1")}
    results["latency"][m] = r
    lat.append((m, r))
if lat:
    P("")
    P("2. Enqueue to done, single no-op jobs on an idle queue, one at a time %s ms apart (jobs.finished_at - inserted_at)"
      % meta.get("gap_ms"))
    P("| setup | jobs | p50 ms | p99 ms | max ms | min ms | POST p50 ms | per instance | other CPU %, load |")
    P("|---|---|---|---|---|---|---|---|---|")
    for m, r in lat:
        P("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s%%, %s |" % (
            names[m], r["jobs"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["min_ms"], r["post_p50_ms"],
            r["per_instance"], r["other_cpu_pct"], r["load1"]))
        if r["bad"]:
            P("  warning: latency %s: %d enqueues not answered 201" % (m, r["bad"]))

# hooks
rows = []
for m in ("postgres", "sqlite"):
    rs = []
    for f in sorted(glob.glob("%s/run-hooks-%s-r*.txt" % (out, m))):
        d = colon(f)
        t0, tw = num(d["t0_ms"]), num(d["writes_end_ms"])
        ok, last = num(d["succeeded"]), num(d["delivered_last_ms"])
        after = num(d.get("delivered_after_writes")) or 0
        lu = kv(d.get("latency_us", ""))
        r = {"notes": num(d.get("notes_at_end") or d["notes"]), "deliveries": num(d["deliveries"]), "succeeded": ok,
             "attempts": num(d["attempts"]), "writes_ms": tw - t0, "write_rps": float(d.get("Requests/sec", 0)),
             "dispatched_ms": num(d["dispatched_last_ms"]) - t0, "first_delivery_ms": num(d["delivered_first_ms"]) - t0,
             "total_ms": last - t0, "deliveries_per_s": ok * 1000.0 / max(1, last - t0),
             "after_writes_per_s": after * 1000.0 / max(1, last - tw) if last > tw else None,
             "delivered_after_writes": after, "received": num(d.get("received")),
             "per_instance": d.get("per_instance"), "other_cpu_pct": d.get("other_cpu_pct"),
             "load1": d.get("load1"), "file": os.path.basename(f)}
        rs.append(r)
    if rs:
        best = max(rs, key=lambda r: r["deliveries_per_s"])
        results["hooks"][m] = {"best": best, "rounds": rs}
        note_noise("hooks " + m, rs)
        rows.append((m, best, rs))
if rows:
    P("")
    P("3. Webhook deliveries to nginx (204) on loopback: one user, one webhook (notes.created), notes written by wrk"
      " -c%s; first write to last delivery recorded (best round)" % meta.get("connections"))
    P("| setup | deliveries | writes s (req/s) | last dispatched s | last delivered s | deliveries/s | after the writes, deliveries/s | per instance | rounds |")
    P("|---|---|---|---|---|---|---|---|---|")
    for m, b, rs in rows:
        P("| %s | %d | %.2f (%.0f) | %.2f | %.2f | **%.0f** | %s | %s | %s |" % (
            names[m], b["succeeded"], b["writes_ms"] / 1000, b["write_rps"], b["dispatched_ms"] / 1000,
            b["total_ms"] / 1000, b["deliveries_per_s"],
            "%.0f (%d)" % (b["after_writes_per_s"], b["delivered_after_writes"]) if b["after_writes_per_s"] else "-",
            b["per_instance"], rounds_text(rs, "deliveries_per_s")))
    for m, b, rs in rows:
        for r in rs:
            w = []
            if r["succeeded"] != r["notes"]:
                w.append("%d notes, %d deliveries succeeded" % (r["notes"], r["succeeded"]))
            if r["attempts"] != r["deliveries"]:
                w.append("%d attempts for %d deliveries (retries)" % (r["attempts"], r["deliveries"]))
            if r["received"] is not None and r["received"] < r["succeeded"]:
                w.append("the receiver logged %d requests" % r["received"])
            for x in w:
                P("  warning: hooks %s %s: %s" % (m, r["file"], x))
sp = []
for m in ("postgres", "sqlite"):
    f = "%s/spaced-hooks-%s.txt" % (out, m)
    if not os.path.exists(f):
        continue
    d = colon(f)
    pairs = [l.split("|") for l in open(f + ".values").read().split()]
    tot = [float(p[0]) for p in pairs]
    disp = [float(p[1]) for p in pairs]
    c = kv(d.get("client", ""))
    r = {"deliveries": len(tot), "p50_ms": rank(tot, 50), "p99_ms": rank(tot, 99), "max_ms": max(tot) if tot else None,
         "dispatch_p50_ms": rank(disp, 50), "dispatch_p99_ms": rank(disp, 99),
         "post_p50_ms": float(c.get("post_p50_ms", 0)), "bad": int(c.get("bad", 0)),
         "per_instance": d.get("per_instance"), "other_cpu_pct": d.get("other_cpu_pct"), "load1": d.get("load1")}
    results["hooks_spaced"][m] = r
    sp.append((m, r))
if sp:
    P("")
    P("   A note's event to its delivery, notes written one at a time %s ms apart (webhook_attempts.at - events.at;"
      " dispatch: webhook_deliveries.inserted_at - events.at)" % meta.get("hook_gap_ms"))
    P("| setup | deliveries | p50 ms | p99 ms | max ms | dispatch p50 ms | dispatch p99 ms | POST p50 ms | per instance | other CPU %, load |")
    P("|---|---|---|---|---|---|---|---|---|---|")
    for m, r in sp:
        P("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %s | %s%%, %s |" % (
            names[m], r["deliveries"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["dispatch_p50_ms"],
            r["dispatch_p99_ms"], r["post_p50_ms"], r["per_instance"], r["other_cpu_pct"], r["load1"]))
        if r["bad"]:
            P("  warning: hooks %s: %d writes not answered 201" % (m, r["bad"]))

# overhead
def wrk_file(path):
    t = open(path).read()
    m = re.search(r"^Requests/sec:\s*([\d.]+)", t, re.M)
    lat = re.search(r"^latency_us: (.*)$", t, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    errs = re.search(r"Socket errors: (.*)$", t, re.M)
    load = re.search(r"^load1: (.*)$", t, re.M)
    other = re.search(r"^other_cpu_pct: ([\d.]+)", t, re.M)
    cnt = re.search(r"^counts \(notes\|events\|due\|deliveries\|succeeded\): (.*)$", t, re.M)
    d = {"rps": float(m.group(1)) if m else 0.0, "non2xx": int(non2xx.group(1)) if non2xx else 0,
         "socket_errors": errs.group(1) if errs else "", "load1": load.group(1) if load else "",
         "other_cpu_pct": float(other.group(1)) if other else None}
    if cnt:
        c = [int(x) for x in cnt.group(1).split("|")]
        d.update(notes=c[0], events=c[1], due=c[2], deliveries=c[3], succeeded=c[4])
    if lat:
        for k, v in kv(lat.group(1)).items():
            d[k] = int(v)
    return d
labels = {"a": "(a) no webhook", "b": "(b) one webhook of another user", "c": "(c) one writer's webhook (1 write in 4 delivered)",
          "d": "(d) every writer's webhook (every write delivered)"}
best, rounds = {}, {}
for t in "abcd":
    runs = sorted(glob.glob("%s/run-ov-%s-r*.txt" % (out, t)))
    if not runs:
        continue
    rs = [wrk_file(f) for f in runs]
    note_noise("overhead " + t, rs)
    rounds[t] = rs
    best[t] = max(rs, key=lambda r: r["rps"])
if "a" in best:
    P("")
    P("4. POST /api/v1/notes, wrk -c%s, one kiln (PostgreSQL + Valkey), %s writers cycling (best round; every round's req/s"
      " with the share of the CPUs other processes used and the 1-min load; deliveries: due (notes of users with a webhook)"
      " / made by the dispatcher / succeeded, by the end of the run)"
      % (meta.get("connections"), meta.get("writers")))
    P("| webhooks | req/s | p50 ms | p99 ms | deliveries | ÷ (a) | goal | rounds |")
    P("|---|---|---|---|---|---|---|---|")
    ratios = {}
    for t in "abcd":
        if t not in best:
            continue
        b = best[t]
        ratio = b["rps"] / best["a"]["rps"] if best["a"]["rps"] else 0
        ratios[t] = ratio
        P("| %s | %.0f | %s | %s | %s | %s | %s | %s |" % (
            labels[t], b["rps"], "%.2f" % (b["p50"] / 1000) if "p50" in b else "-",
            "%.2f" % (b["p99"] / 1000) if "p99" in b else "-",
            "%d / %d / %d" % (b.get("due", 0), b.get("deliveries", 0), b.get("succeeded", 0)),
            "%.3f" % ratio if t != "a" else "1", "%s (>= 0.85)" % goal(ratio >= 0.85) if t != "a" else "",
            rounds_text(rounds[t], "rps")))
    results["overhead"] = {"best": best, "rounds": rounds, "ratios": ratios}
    for t in "cd":
        if t in best and best[t].get("due"):
            b = best[t]
            P("  %s: by the end of the run %.0f%% of the due deliveries were made by the dispatcher and %.0f%% delivered"
              " (the rest is a backlog the kiln works off after the run)" % (
                  labels[t].split(")")[0] + ")", b["deliveries"] * 100.0 / b["due"], b["succeeded"] * 100.0 / b["due"]))
    for t, b in best.items():
        if b["non2xx"] or b["socket_errors"]:
            P("  warning: overhead %s: non-2xx %d, socket errors %s" % (t, b["non2xx"], b["socket_errors"] or "0"))
for n in noisy:
    P("  warning: %s: the machine was busy, the figures are unreliable" % n)
if meta.get("pgss") == "1":
    P("pg_stat_statements per part: %s" % ", ".join(sorted(os.path.basename(p) for p in glob.glob(out + "/pgss-*.txt"))))
for k, v in sorted(meta.items()):
    if k.endswith("_stderr_lines") and v not in ("0", ""):
        P("warning: %s: %s lines on stderr (%s/%s.stderr)" % (k[:-13], v, out, k[:-13]))
print("\n".join(lines))
json.dump(results, open(out + "/results.json", "w"), indent=2)
EOF
log "results: $out/results.txt, $out/results.json (raw output: $out/)"
