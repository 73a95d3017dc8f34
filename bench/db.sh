#!/usr/bin/env bash
# Kiln database benchmark: GET /healthz (one `SELECT 1` on PostgreSQL per
# request) under wrk, against pgbench running the same query at the same
# concurrency, with and without prepared statements. See bench/README.md.
#
#   bench/db.sh            standalone: measures, prints the database report
#   (bench/run.sh calls it with BENCH_DB_EMBEDDED=1; the report then comes
#    out of bench/report.py with everything else)
#
# Services (PostgreSQL 15, ...) are started by scripts/test-services.sh in
# build/bench/services and stopped at the end. Raw output goes to
# build/bench/db/.
#
# Exit status: 0 when every measurement ran (goals may still be MISS), or the
# part was skipped because PostgreSQL is not installed; non-zero when a
# server failed to start or died, or wrk/pgbench failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_DB_SECONDS=${BENCH_DB_SECONDS:-$BENCH_SECONDS}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_DB_ROUNDS=${BENCH_DB_ROUNDS:-${BENCH_ROUNDS:-2}}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_DB_POOL_SIZE=${BENCH_DB_POOL_SIZE:-}          # empty: kiln's default (DB_POOL_SIZE)
BENCH_KILN_LOG=${BENCH_KILN_LOG:-/dev/null}
BENCH_DB_SERVICES=${BENCH_DB_SERVICES:-build/bench/services}
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

out=build/bench/db
tool=build/bench/benchtool
host=127.0.0.1

BENCH_TAG="bench db"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_DB_SECONDS BENCH_WARMUP_SECONDS BENCH_DB_ROUNDS BENCH_CONNECTIONS BENCH_THREADS \
         HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[ -z "$BENCH_DB_POOL_SIZE" ] || [[ $BENCH_DB_POOL_SIZE =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_DB_POOL_SIZE must be a positive integer"

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"

skip() {   # the database part cannot run here: say why, exit 0
    log "skipped: $*"
    meta skipped "$*"
    exit 0
}
pgbench_bin=$(command -v pgbench || true)
[ -n "$pgbench_bin" ] || pgbench_bin=$PG_BIN/pgbench
[ -x "$PG_BIN/initdb" ] || skip "PostgreSQL 15 is not installed ($PG_BIN/initdb; Debian package postgresql)"
[ -x "$pgbench_bin" ] || skip "pgbench not found (Debian package postgresql-contrib)"
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
[ -x "$PYTHON" ] || die "$PYTHON not found"
if [ ! -x "$tool" ]; then
    mkdir -p "$(dirname "$tool")"
    cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"
fi
# A kiln without the database driver ignores DATABASE_URL; its /healthz
# would measure nothing. Then only pgbench runs.
kiln_db=1
"$KILN_BIN" --help 2>&1 | grep -qw migrate || kiln_db=0

# ---------------------------------------------------------------- cleanup --
kiln_pids=() wrk_pid="" pgbench_pid="" services_up=0
cleanup() {
    trap - EXIT INT TERM
    local p
    stop_pid "$wrk_pid"
    stop_pid "$pgbench_pid"
    for p in "${kiln_pids[@]}"; do stop_pid "$p"; done
    if [ "$services_up" = 1 ]; then
        scripts/test-services.sh stop "$BENCH_DB_SERVICES" || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# --------------------------------------------------------------- services --
log "starting PostgreSQL and friends in $BENCH_DB_SERVICES"
services_up=1
scripts/test-services.sh start "$BENCH_DB_SERVICES" >"$out/services.log" 2>&1 ||
    { cat "$out/services.log" >&2; die "scripts/test-services.sh start failed"; }
# shellcheck disable=SC1091
. "$BENCH_DB_SERVICES/env"
export PGPASSWORD=$KILN_TEST_PG_PASSWORD PGCONNECT_TIMEOUT=10
pg_args=(-h "$KILN_TEST_PG_HOST" -p "$KILN_TEST_PG_PORT" -U "$KILN_TEST_PG_USER")
bench_db=${KILN_TEST_PG_BENCH_DB:-kiln_bench}

log "pgbench -i -s 1 in $bench_db"
"$pgbench_bin" -i -s 1 -q "${pg_args[@]}" "$bench_db" >"$out/pgbench-init.txt" 2>&1 ||
    { cat "$out/pgbench-init.txt" >&2; die "pgbench -i failed"; }
printf 'SELECT 1;\n' >"$out/select1.sql"
printf '\\set aid random(1, 100000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' \
    >"$out/pk.sql"

# ------------------------------------------------------------------- kiln --
declare -A kiln_port kiln_pid
start_kiln() {   # start_kiln NAME PREPARED
    local name=$1 prepared=$2 port resp
    port=$("$tool" freeport)
    local secret
    secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')
    local pool=()
    [ -z "$BENCH_DB_POOL_SIZE" ] || pool=(DB_POOL_SIZE="$BENCH_DB_POOL_SIZE")
    log "starting $name (DB_PREPARED_STATEMENTS=$prepared) on $host:$port"
    setsid env -i PATH="$PATH" KILN_ENV=production SECRET_KEY_BASE="$secret" \
        BIND_ADDRESS=$host PORT="$port" HTTP_LOOPS="$HTTP_LOOPS" LOG_LEVEL=info \
        DATABASE_URL="$KILN_TEST_PG_URL" DB_PREPARED_STATEMENTS="$prepared" \
        MIGRATE_ON_START=false HEALTH_CACHE_MS=0 "${pool[@]}" \
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

targets=()
if [ "$kiln_db" = 1 ]; then
    start_kiln kiln-healthz false
    start_kiln kiln-healthz-prepared true
    targets+=(kiln-healthz kiln-healthz-prepared)
else
    log "$KILN_BIN has no database support (no 'migrate' command): measuring pgbench only"
fi
targets+=(pgbench-select1 pgbench-select1-prepared pgbench-pk pgbench-pk-prepared)

run_target() {   # run_target TARGET SECONDS OUTFILE
    local t=$1 secs=$2 file=$3 rc=0
    case $t in
        kiln-*)
            # bench/latency.lua: a done() that prints p50/p99/p99.9/max
            wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${secs}s" --latency \
                -s bench/latency.lua "http://$host:${kiln_port[$t]}/healthz" >"$file" 2>&1 &
            wrk_pid=$!
            wait "$wrk_pid" || rc=$?
            wrk_pid=""
            alive_or_die "$t" "${kiln_pid[$t]}"
            if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$file"; then
                cat "$file" >&2
                die "wrk failed on $t (exit status $rc)"
            fi ;;
        pgbench-*)
            local script=select1 mode=extended
            case $t in *pk*) script=pk ;; esac
            case $t in *-prepared) mode=prepared ;; esac
            # -l: one line per transaction (its latency in µs), so the
            # report has pgbench's own p50/p99/p99.9 next to kiln's
            rm -f "${file%.txt}".pglog*
            "$pgbench_bin" -n -c "$BENCH_CONNECTIONS" -j "$BENCH_THREADS" -T "$secs" \
                -M "$mode" -l --log-prefix="${file%.txt}.pglog" \
                -f "$out/$script.sql" "${pg_args[@]}" "$bench_db" >"$file" 2>&1 &
            pgbench_pid=$!
            wait "$pgbench_pid" || rc=$?
            pgbench_pid=""
            if [ "$rc" != 0 ] || ! grep -q '^tps = ' "$file"; then
                cat "$file" >&2
                # -T counts the 64 connections' set-up (SCRAM): on a busy
                # machine a short warmup can end before any transaction.
                case ${file##*/} in
                    warmup-*) [ "$rc" = 0 ] || die "pgbench failed on $t (exit status $rc)"
                              log "warning: pgbench's warmup of $t processed nothing (its connections took the whole run)" ;;
                    *) die "pgbench failed on $t (exit status $rc)" ;;
                esac
            fi ;;
    esac
}

meta kiln_db "$kiln_db"
meta cpus "$(nproc)"
meta http_loops "$HTTP_LOOPS"
meta seconds "$BENCH_DB_SECONDS"
meta warmup_seconds "$BENCH_WARMUP_SECONDS"
meta rounds "$BENCH_DB_ROUNDS"
meta connections "$BENCH_CONNECTIONS"
meta threads "$BENCH_THREADS"
meta db_pool_size "${BENCH_DB_POOL_SIZE:-default}"
meta kiln_bin "$KILN_BIN"
meta postgres_version "$("$PG_BIN/postgres" --version | awk '{print $3}')"
meta pgbench_version "$("$pgbench_bin" --version | awk '{print $3}')"
meta wrk_version "$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')"

for t in "${targets[@]}"; do
    log "warmup $t (${BENCH_WARMUP_SECONDS}s)"
    run_target "$t" "$BENCH_WARMUP_SECONDS" "$out/warmup-$t.txt"
done
for r in $(seq "$BENCH_DB_ROUNDS"); do
    for t in "${targets[@]}"; do
        log "round $r/$BENCH_DB_ROUNDS: $t (${BENCH_DB_SECONDS}s)"
        run_target "$t" "$BENCH_DB_SECONDS" "$out/run-$t-r$r.txt"
        case $t in
            kiln-*) log "  $(grep '^Requests/sec:' "$out/run-$t-r$r.txt")" ;;
            *) log "  $(grep '^tps = ' "$out/run-$t-r$r.txt")" ;;
        esac
    done
done
rm -f "$out"/warmup-*

for t in "${targets[@]}"; do
    case $t in
        kiln-*)
            alive_or_die "$t" "${kiln_pid[$t]}"
            meta "${t}_stderr_lines" "$(grep -c . "$out/$t.stderr" 2>/dev/null || true)" ;;
    esac
done

if [ "${BENCH_DB_EMBEDDED:-0}" != 1 ]; then
    "$PYTHON" bench/report.py --db-only build/bench | tee "$out/results.txt"
    log "results: $out/results.txt, $out/results.json (raw output: $out/run-*.txt)"
fi
