#!/usr/bin/env bash
# Kiln footprint: start-to-ready (exec to the first GET /livez 200, median of
# BENCH_START_RUNS starts) and idle RSS with a breakdown by mapping, in two
# modes, both KILN_ENV=production with the database already migrated:
#   embedded   SQLite (DB_PATH) + the in-process memory store, the defaults
#   postgres   PostgreSQL (DATABASE_URL) + Valkey (VALKEY_HOST/VALKEY_PORT)
# See bench/README.md.
#
#   bench/footprint.sh     standalone: measures, prints the footprint report
#                          (build/bench/footprint/results.txt, results.json)
#   (bench/run.sh calls it with BENCH_FOOTPRINT_EMBEDDED=1; the report then
#    comes out of bench/report.py with everything else)
#
# PostgreSQL 15 and Redis 7 (the Valkey stand-in; the plain one) come from
# scripts/test-services.sh, started in build/bench/services-footprint and
# stopped at the end; without them (or with a kiln without PostgreSQL
# support) the postgres mode is skipped. Raw output goes to
# build/bench/footprint/.
#
# Exit status: 0 when every measurement ran (goals may still be MISS) or a
# mode was skipped; non-zero when a kiln did not start, died or never
# answered, or a migration failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_START_RUNS=${BENCH_START_RUNS:-20}
BENCH_START_TIMEOUT_MS=${BENCH_START_TIMEOUT_MS:-10000}
BENCH_FOOTPRINT_MODES=${BENCH_FOOTPRINT_MODES:-embedded postgres}
BENCH_FOOTPRINT_SERVICES=${BENCH_FOOTPRINT_SERVICES:-build/bench/services-footprint}
PYTHON=${PYTHON:-/usr/bin/python3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

out=build/bench/footprint
tool=build/bench/benchtool
host=127.0.0.1

BENCH_TAG="bench footprint"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_START_RUNS BENCH_START_TIMEOUT_MS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for m in $BENCH_FOOTPRINT_MODES; do
    case $m in embedded|postgres) ;; *) die "BENCH_FOOTPRINT_MODES: unknown mode '$m' (embedded, postgres)" ;; esac
done
[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
[ -x "$PYTHON" ] || die "$PYTHON not found"
kiln_abs=$(readlink -f "$KILN_BIN")

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"

# benchtool: rebuilt when bench/benchtool.c is newer (an older one has no
# `start` mode).
if [ ! -x "$tool" ] || [ bench/benchtool.c -nt "$tool" ]; then
    mkdir -p "$(dirname "$tool")"
    cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"
fi

# ---------------------------------------------------------------- cleanup --
# Everything here is stopped by its own pid, never by name: other kilns run
# on this machine.
kiln_pid="" start_pid="" services_up=0
cleanup() {
    trap - EXIT INT TERM
    stop_pid "$start_pid"    # benchtool start stops its own kiln on SIGTERM
    stop_pid "$kiln_pid"
    if [ "$services_up" = 1 ]; then
        scripts/test-services.sh stop "$BENCH_FOOTPRINT_SERVICES" >>"$out/services.log" 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')   # 128 hex chars

# mode_env MODE: the environment of that mode's kiln, one VAR=value per
# line. Kiln runs with only these (env -i): nothing from the caller's
# environment (LOG_LEVEL, HTTP_LOOPS, ...) changes the defaults measured.
mode_env() {
    printf '%s\n' "PATH=$PATH" KILN_ENV=production "SECRET_KEY_BASE=$secret" "BIND_ADDRESS=$host"
    case $1 in
        embedded) printf '%s\n' "DB_PATH=$root/$out/kiln.db" ;;
        postgres) printf '%s\n' "DATABASE_URL=$KILN_TEST_PG_URL" \
                      "VALKEY_HOST=$KILN_TEST_REDIS_HOST" "VALKEY_PORT=$KILN_TEST_REDIS_PORT" ;;
    esac
}

# migrate MODE: `kiln migrate` once, so that every start finds the schema
# (production does not migrate on start).
migrate() {
    local -a envs
    mapfile -t envs < <(mode_env "$1")
    log "$1: kiln migrate"
    env -i "${envs[@]}" "$kiln_abs" migrate >"$out/migrate-$1.log" 2>&1 ||
        { tail -n 20 "$out/migrate-$1.log" >&2; die "$1: kiln migrate failed"; }
}

# start_to_ready MODE: BENCH_START_RUNS starts through `benchtool start`
# (exec to the first GET /livez 200; SIGTERM and exit before the next).
start_to_ready() {
    local mode=$1 port rc=0
    local -a envs
    mapfile -t envs < <(mode_env "$mode")
    local busy0 busy1 t0 t1
    port=$("$tool" freeport)
    log "$mode: $BENCH_START_RUNS starts on $host:$port (exec to the first GET /livez 200)"
    busy0=$(cpu_busy_ticks); t0=$(date +%s%N)
    # benchtool runs with kiln's environment and execs kiln itself, so no
    # env or shell start-up is inside the interval. In the background (and
    # waited for) so that a Ctrl-C reaches the trap at once.
    env -i "${envs[@]}" PORT="$port" \
        "$tool" start "$port" "$BENCH_START_RUNS" "$BENCH_START_TIMEOUT_MS" -- "$kiln_abs" serve \
        >"$out/start-$mode.txt" 2>"$out/start-$mode.log" &
    start_pid=$!
    wait "$start_pid" || rc=$?
    start_pid=""
    busy1=$(cpu_busy_ticks); t1=$(date +%s%N)
    if [ "$rc" != 0 ] || ! grep -q '^SUMMARY ' "$out/start-$mode.txt"; then
        grep -v '^benchtool' "$out/start-$mode.log" | tail -n 5 >&2 || true
        grep '^benchtool' "$out/start-$mode.log" >&2 || true
        die "$mode: start-to-ready failed (benchtool start exit status $rc; log: $out/start-$mode.log)"
    fi
    log "$mode: $(grep '^SUMMARY ' "$out/start-$mode.txt")"
    meta "${mode}_start_port" "$port"
    # For the share of the CPUs that other processes took meanwhile (the
    # report subtracts the kilns' and benchtool's own CPU time).
    meta "${mode}_start_busy_ms" "$(( (busy1 - busy0) * 1000 / clk ))"
    meta "${mode}_start_wall_ms" "$(( (t1 - t0) / 1000000 ))"
}

# Busy time of all CPUs (user nice system irq softirq steal), in ticks.
clk=$(getconf CLK_TCK)
cpu_busy_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# status_of PORT PATH: the status code of one GET, or "none"
status_of() {
    local resp
    if resp=$("$tool" get "$host" "$1" "$2" 5000 2>/dev/null); then
        echo "${resp%% *}"
    else
        echo none
    fi
}

# idle_rss MODE: start kiln, a few requests, 0.5 s, then copy
# /proc/PID/status and /proc/PID/smaps for bench/report.py.
idle_rss() {
    local mode=$1 port resp="" exe
    local -a envs
    mapfile -t envs < <(mode_env "$mode")
    port=$("$tool" freeport)
    log "$mode: idle RSS (kiln on $host:$port)"
    # setsid: its own process group, so a Ctrl-C reaches only this script,
    # whose trap stops it (setsid execs, so $! is kiln's pid).
    setsid env -i "${envs[@]}" PORT="$port" "$kiln_abs" serve >"$out/kiln-$mode.log" 2>&1 &
    kiln_pid=$!
    local t_end=$((SECONDS + 15))
    while [ "$SECONDS" -lt "$t_end" ]; do
        kill -0 "$kiln_pid" 2>/dev/null || break
        if resp=$("$tool" get "$host" "$port" /livez 500 2>/dev/null) && [ "${resp%% *}" = 200 ]; then
            break
        fi
        resp=""
        sleep 0.1
    done
    if ! kill -0 "$kiln_pid" 2>/dev/null; then
        local rc=0
        wait "$kiln_pid" 2>/dev/null || rc=$?
        kiln_pid=""
        tail -n 20 "$out/kiln-$mode.log" >&2 || true
        die "$mode: kiln is not running (exit status $rc)"
    fi
    [ -n "$resp" ] || die "$mode: kiln did not answer 200 on GET /livez within 15 s"
    exe=$(readlink "/proc/$kiln_pid/exe" 2>/dev/null || true)
    [ "$exe" = "$kiln_abs" ] || die "$mode: pid $kiln_pid is $exe, not $kiln_abs"
    # A few requests: the liveness check, the health check (database and kv
    # store), and one that reads the session store (no cookie: 401).
    local livez="" healthz="" me=""
    for _ in 1 2 3; do
        livez+="$(status_of "$port" /livez) "
        healthz+="$(status_of "$port" /healthz) "
        me+="$(status_of "$port" /api/v1/me) "
    done
    meta "${mode}_livez_statuses" "${livez% }"
    meta "${mode}_healthz_statuses" "${healthz% }"
    meta "${mode}_me_statuses" "${me% }"
    sleep 0.5
    kill -0 "$kiln_pid" 2>/dev/null || die "$mode: kiln exited after the requests"
    cat "/proc/$kiln_pid/status" >"$out/status-$mode.txt"
    cat "/proc/$kiln_pid/smaps" >"$out/smaps-$mode.txt"
    log "$mode: $(grep -E '^(VmRSS|RssAnon|RssFile|Threads):' "$out/status-$mode.txt" |
                  tr -s ' \t' ' ' | tr '\n' ' ')"
    stop_pid "$kiln_pid"
    kiln_pid=""
    # Kiln's "listening" line says what the defaults came to here.
    local listening
    listening=$(grep -m 1 '"message":"listening"' "$out/kiln-$mode.log" || true)
    meta "${mode}_loops" "$(sed -n 's/.*"loops":"\([0-9]*\)".*/\1/p' <<<"$listening")"
    meta "${mode}_workers" "$(sed -n 's/.*"workers":"\([0-9]*\)".*/\1/p' <<<"$listening")"
    meta "${mode}_kiln_log_lines" "$(grep -c . "$out/kiln-$mode.log" || true)"
    meta "${mode}_kiln_log_warnings" \
        "$(grep -E '"level":"(warning|error)"' "$out/kiln-$mode.log" | grep -vc '"message":"request"' || true)"
}

meta cpus "$(nproc)"
meta start_runs "$BENCH_START_RUNS"
meta start_timeout_ms "$BENCH_START_TIMEOUT_MS"
meta kiln_bin "$KILN_BIN"
meta kiln_path "$kiln_abs"
meta kiln_version "$("$kiln_abs" version 2>/dev/null | head -n 1 || true)"
meta kernel "$(uname -r)"
meta nofile "$(ulimit -n)"

has_pg=1
"$kiln_abs" --help 2>&1 | grep -qw migrate || has_pg=0

modes_run=()
for mode in $BENCH_FOOTPRINT_MODES; do
    case $mode in
        embedded)
            # Without PostgreSQL support there is no `kiln migrate` either
            # (such a kiln has no migrations to apply).
            if [ "$has_pg" = 1 ]; then migrate embedded; fi ;;
        postgres)
            reason=""
            if [ "$has_pg" != 1 ]; then
                reason="$KILN_BIN has no PostgreSQL support (no 'migrate' command)"
            elif [ ! -x "$PG_BIN/initdb" ]; then
                reason="PostgreSQL 15 is not installed ($PG_BIN/initdb; Debian package postgresql)"
            elif ! command -v redis-server >/dev/null; then
                reason="redis-server not found (Debian package redis-server)"
            fi
            if [ -n "$reason" ]; then
                log "postgres: skipped: $reason"
                meta postgres_skipped "$reason"
                continue
            fi
            log "starting PostgreSQL, Redis (and the other test services) in $BENCH_FOOTPRINT_SERVICES"
            services_up=1
            scripts/test-services.sh start "$BENCH_FOOTPRINT_SERVICES" >"$out/services.log" 2>&1 ||
                { cat "$out/services.log" >&2; die "scripts/test-services.sh start failed"; }
            # shellcheck disable=SC1091
            . "$BENCH_FOOTPRINT_SERVICES/env"
            [ -n "${KILN_TEST_PG_URL:-}" ] || die "$BENCH_FOOTPRINT_SERVICES/env has no KILN_TEST_PG_URL"
            meta postgres_version "$("$PG_BIN/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([^ ]*\).*/\1/p')"
            meta redis_version "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
            migrate postgres ;;
    esac
    start_to_ready "$mode"
    idle_rss "$mode"
    modes_run+=("$mode")
done
meta modes "${modes_run[*]}"

if [ "$services_up" = 1 ]; then
    scripts/test-services.sh stop "$BENCH_FOOTPRINT_SERVICES" >>"$out/services.log" 2>&1 || true
    services_up=0
fi

if [ "${BENCH_FOOTPRINT_EMBEDDED:-0}" != 1 ]; then
    "$PYTHON" bench/report.py --footprint-only build/bench | tee "$out/results.txt"
    log "results: $out/results.txt, $out/results.json (raw output: $out/)"
fi
