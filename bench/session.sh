#!/usr/bin/env bash
# Kiln session benchmark: GET /api/v1/me with valid sessions under wrk, with
# sessions (and rate-limit counters) in Valkey and in the in-process memory
# store, against redis-benchmark GET on the same Redis at the same
# concurrency. See bench/README.md.
#
#   bench/session.sh       standalone: measures, prints the session report
#   (bench/run.sh calls it with BENCH_SESSION_EMBEDDED=1; the report then
#    comes out of bench/report.py with everything else)
#
# Both kilns run on PostgreSQL (DATABASE_URL), the production shape: one is
# PostgreSQL + Valkey, the other PostgreSQL + the memory kv. With PostgreSQL
# kiln runs request handlers on fibers of its event loops (with SQLite they
# would hop to the worker pool), so this measures the path production takes.
# PostgreSQL 15 and Redis 7 (the Valkey stand-in; the plain one) come from
# scripts/test-services.sh, started in build/bench/services (fresh data each
# run; the two kilns share its database, users included) and stopped at the
# end. Raw output goes to build/bench/session/.
#
# Exit status: 0 when every measurement ran (goals may still be MISS), or the
# part was skipped (no redis-server or PostgreSQL to start the services, or
# a kiln without PostgreSQL support or login); non-zero when a server failed
# to start or died, or wrk/redis-benchmark failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_SESSION_SECONDS=${BENCH_SESSION_SECONDS:-$BENCH_SECONDS}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_SESSION_ROUNDS=${BENCH_SESSION_ROUNDS:-${BENCH_ROUNDS:-2}}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_SESSION_USERS=${BENCH_SESSION_USERS:-64}
BENCH_REDIS_REQUESTS=${BENCH_REDIS_REQUESTS:-200000}
BENCH_KILN_LOG=${BENCH_KILN_LOG:-/dev/null}
BENCH_SESSION_SERVICES=${BENCH_SESSION_SERVICES:-build/bench/services}
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

out=build/bench/session
tool=build/bench/benchtool
host=127.0.0.1

BENCH_TAG="bench session"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_SESSION_SECONDS BENCH_WARMUP_SECONDS BENCH_SESSION_ROUNDS BENCH_CONNECTIONS \
         BENCH_THREADS BENCH_SESSION_USERS BENCH_REDIS_REQUESTS HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"

skip() {   # this part cannot run here: say why, exit 0
    log "skipped: $*"
    meta skipped "$*"
    exit 0
}
command -v redis-server >/dev/null || skip "redis-server not found (Debian package redis-server)"
command -v redis-benchmark >/dev/null || skip "redis-benchmark not found (Debian package redis-tools)"
[ -x "$PG_BIN/initdb" ] ||
    skip "PostgreSQL 15 is not installed ($PG_BIN/initdb; Debian package postgresql): the kilns run on it"
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
# A kiln without the database driver ignores DATABASE_URL (and would run on
# SQLite in ./var): not the shape measured here.
"$KILN_BIN" --help 2>&1 | grep -qw migrate ||
    skip "$KILN_BIN has no PostgreSQL support (no 'migrate' command)"
[ -x "$PYTHON" ] || die "$PYTHON not found"
if [ ! -x "$tool" ]; then
    mkdir -p "$(dirname "$tool")"
    cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"
fi

# ---------------------------------------------------------------- cleanup --
kiln_pids=() wrk_pid="" rb_pid="" services_up=0
cleanup() {
    trap - EXIT INT TERM
    local p
    stop_pid "$wrk_pid"
    stop_pid "$rb_pid"
    for p in "${kiln_pids[@]}"; do stop_pid "$p"; done
    if [ "$services_up" = 1 ]; then
        scripts/test-services.sh stop "$BENCH_SESSION_SERVICES" || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ------------------------------------------------------------------- kiln --
declare -A kiln_port kiln_pid
start_kiln() {   # start_kiln NAME [ENV=VALUE...]
    local name=$1 port resp secret
    shift
    port=$("$tool" freeport)
    secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')
    log "starting $name on $host:$port"
    # Development: dev login on (how the sessions are made here). PostgreSQL
    # (the services' database; the first kiln applies the migrations, the
    # second finds them applied). Limits high enough that
    # BENCH_SESSION_USERS users never reach them, but on: the limiter's
    # counter is part of every /me.
    setsid env -i PATH="$PATH" KILN_ENV=development SECRET_KEY_BASE="$secret" \
        BIND_ADDRESS=$host PORT="$port" PUBLIC_URL="http://$host:$port" HTTP_LOOPS="$HTTP_LOOPS" \
        LOG_LEVEL=info DATABASE_URL="$KILN_TEST_PG_URL" MIGRATE_ON_START=true \
        RATE_LIMIT_PUBLIC=1000000 RATE_LIMIT_PROTECTED=1000000 "$@" \
        "$KILN_BIN" serve >"$BENCH_KILN_LOG" 2>"$out/$name.stderr" &
    kiln_pid[$name]=$!
    kiln_pids+=("$!")
    kiln_port[$name]=$port
    for _ in $(seq 150); do
        alive_or_die "$name" "${kiln_pid[$name]}"
        if resp=$("$tool" get "$host" "$port" /healthz 2000 2>/dev/null) && [ "${resp%% *}" = 200 ]; then
            meta "${name}_healthz_body" "$(sed -n 2p <<<"$resp")"
            return 0
        fi
        sleep 0.1
    done
    die "$name: GET /healthz did not answer 200 within 15 s (last: ${resp:-nothing})"
}

# make_sessions NAME: BENCH_SESSION_USERS dev logins; writes a wrk script
# that cycles through their cookies (one request string per user, made once).
make_sessions() {
    local name=$1
    "$PYTHON" - "$host" "${kiln_port[$name]}" "$BENCH_SESSION_USERS" "$out/$name.lua" <<'EOF' ||
import http.client, json, sys
host, port, n, lua = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cookies = []
conn = http.client.HTTPConnection(host, port, timeout=10)
for i in range(n):
    body = json.dumps({"email": f"bench{i}@example.com", "name": f"Bench User {i}"})
    conn.request("POST", "/auth/dev/login", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"dev login answered {r.status}")
    value = None
    for k, v in r.getheaders():
        if k.lower() == "set-cookie" and v.startswith("_backend_session="):
            value = v.split(";", 1)[0].split("=", 1)[1]
    if not value:
        sys.exit("dev login set no _backend_session cookie")
    conn.request("GET", "/api/v1/me", headers={"Cookie": "_backend_session=" + value})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"GET /api/v1/me with a fresh session answered {r.status}")
    cookies.append(value)
with open(lua, "w") as f:
    f.write("-- written by bench/session.sh: GET /api/v1/me, one session per user\n")
    f.write("local cookies = {\n")
    for c in cookies:
        f.write(f'  "{c}",\n')
    f.write("}\nlocal reqs = {}\nlocal i = 0\n")
    f.write("init = function(args)\n  for k, c in ipairs(cookies) do\n"
            '    reqs[k] = wrk.format("GET", "/api/v1/me", { ["Cookie"] = "_backend_session=" .. c })\n'
            "  end\nend\n")
    f.write("request = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
EOF
        die "$name: could not make $BENCH_SESSION_USERS sessions (dev login)"
}

# --------------------------------------------------------------- services --
# Before any kiln: both need PostgreSQL.
log "starting PostgreSQL, Redis (and the other test services) in $BENCH_SESSION_SERVICES"
services_up=1
scripts/test-services.sh start "$BENCH_SESSION_SERVICES" >"$out/services.log" 2>&1 ||
    { cat "$out/services.log" >&2; die "scripts/test-services.sh start failed"; }
# shellcheck disable=SC1091
. "$BENCH_SESSION_SERVICES/env"
[ -n "${KILN_TEST_PG_URL:-}" ] || die "$BENCH_SESSION_SERVICES/env has no KILN_TEST_PG_URL"
redis_host=$KILN_TEST_REDIS_HOST
redis_port=$KILN_TEST_REDIS_PORT

# ------------------------------------------------------------------ kilns --
start_kiln kiln-me-memory
if ! "$tool" get "$host" "${kiln_port[kiln-me-memory]}" /api/v1/me 2000 2>/dev/null | head -n 1 | grep -q '^401 '; then
    skip "$KILN_BIN has no GET /api/v1/me answering 401 without a session (no login support yet)"
fi
start_kiln kiln-me-valkey VALKEY_HOST="$redis_host" VALKEY_PORT="$redis_port"
make_sessions kiln-me-valkey
make_sessions kiln-me-memory
log "made $BENCH_SESSION_USERS sessions on each kiln"

targets=(kiln-me-valkey kiln-me-memory redis-get)

run_target() {   # run_target TARGET SECONDS OUTFILE [REDIS_REQUESTS]
    local t=$1 secs=$2 file=$3 n=${4:-$BENCH_REDIS_REQUESTS} rc=0
    case $t in
        kiln-*)
            wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${secs}s" --latency \
                -s "$out/$t.lua" "http://$host:${kiln_port[$t]}/api/v1/me" >"$file" 2>&1 &
            wrk_pid=$!
            wait "$wrk_pid" || rc=$?
            wrk_pid=""
            alive_or_die "$t" "${kiln_pid[$t]}"
            if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$file"; then
                cat "$file" >&2
                die "wrk failed on $t (exit status $rc)"
            fi ;;
        redis-get)
            redis-benchmark -h "$redis_host" -p "$redis_port" -c "$BENCH_CONNECTIONS" -n "$n" \
                --threads "$BENCH_THREADS" -t get --csv >"$file" 2>&1 &
            rb_pid=$!
            wait "$rb_pid" || rc=$?
            rb_pid=""
            if [ "$rc" != 0 ] || ! grep -q '^"GET"' "$file"; then
                cat "$file" >&2
                die "redis-benchmark failed (exit status $rc)"
            fi ;;
    esac
}

meta cpus "$(nproc)"
meta http_loops "$HTTP_LOOPS"
meta seconds "$BENCH_SESSION_SECONDS"
meta warmup_seconds "$BENCH_WARMUP_SECONDS"
meta rounds "$BENCH_SESSION_ROUNDS"
meta connections "$BENCH_CONNECTIONS"
meta threads "$BENCH_THREADS"
meta users "$BENCH_SESSION_USERS"
meta redis_requests "$BENCH_REDIS_REQUESTS"
meta kiln_bin "$KILN_BIN"
meta redis_version "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
meta postgres_version "$("$PG_BIN/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([^ ]*\).*/\1/p')"
meta wrk_version "$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')"

for t in "${targets[@]}"; do
    log "warmup $t (${BENCH_WARMUP_SECONDS}s)"
    run_target "$t" "$BENCH_WARMUP_SECONDS" "$out/warmup-$t.txt" $((BENCH_REDIS_REQUESTS / 4))
done
for r in $(seq "$BENCH_SESSION_ROUNDS"); do
    for t in "${targets[@]}"; do
        log "round $r/$BENCH_SESSION_ROUNDS: $t"
        run_target "$t" "$BENCH_SESSION_SECONDS" "$out/run-$t-r$r.txt"
        case $t in
            kiln-*) log "  $(grep '^Requests/sec:' "$out/run-$t-r$r.txt")" ;;
            *) log "  $(grep '^"GET"' "$out/run-$t-r$r.txt" | cut -d, -f2 | tr -d '"') requests/s" ;;
        esac
    done
done
rm -f "$out"/warmup-*.txt

for t in kiln-me-valkey kiln-me-memory; do
    alive_or_die "$t" "${kiln_pid[$t]}"
    meta "${t}_stderr_lines" "$(grep -c . "$out/$t.stderr" 2>/dev/null || true)"
done

if [ "${BENCH_SESSION_EMBEDDED:-0}" != 1 ]; then
    "$PYTHON" bench/report.py --session-only build/bench | tee "$out/results.txt"
    log "results: $out/results.txt, $out/results.json (raw output: $out/run-*.txt)"
fi
