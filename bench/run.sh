#!/usr/bin/env bash
# Kiln benchmark: throughput and latency against nginx on the same machine,
# idle memory, and memory with 10,000 idle keep-alive connections; then
# (bench/db.sh, unless BENCH_DB=0) GET /healthz on PostgreSQL against pgbench,
# (bench/session.sh, unless BENCH_SESSION=0) GET /api/v1/me with a
# session in Valkey and in memory against redis-benchmark GET, and
# (bench/notes.sh, unless BENCH_NOTES=0) the notes list (cache on and off),
# insert and one hot user's list against pgbench running the same
# statements (p50/p99/p99.9 next to pgbench's in the database and notes
# parts), and (bench/footprint.sh, unless BENCH_FOOTPRINT=0) start-to-ready
# and idle RSS on SQLite + memory store and on PostgreSQL + Valkey.
# See bench/README.md. Run through `make bench`, or directly from anywhere.
#
# Exit status: 0 when every measurement ran (goals may still be MISS);
# non-zero when a server failed to start or died, or wrk failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_IDLE_CONNECTIONS=${BENCH_IDLE_CONNECTIONS:-10000}
BENCH_KILN_LOG=${BENCH_KILN_LOG:-/dev/null}   # where kiln's request log (stdout) goes
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}

out=build/bench
tool=$out/benchtool
host=127.0.0.1

BENCH_TAG="bench"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_SECONDS BENCH_WARMUP_SECONDS BENCH_ROUNDS BENCH_CONNECTIONS BENCH_THREADS \
         BENCH_IDLE_CONNECTIONS HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
[ -x "$NGINX_BIN" ] || die "$NGINX_BIN not found (Debian package nginx-light; scripts/deps.sh)"
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
[ -x "$PYTHON" ] || die "$PYTHON not found"

mkdir -p "$out"
rm -f "$out"/wrk-*.txt "$out"/hold-*.out "$out"/hold-*.err "$out"/meta.env \
      "$out"/results.json "$out"/results.txt
rm -rf "$out/db" "$out/session" "$out/notes" "$out/footprint"

# ---------------------------------------------------------------- cleanup --
kiln_pid="" nginx_pid="" wrk_pid="" hold_pid=""
cleanup() {
    trap - EXIT INT TERM
    stop_pid "$hold_pid"
    stop_pid "$wrk_pid"
    stop_pid "$nginx_pid"
    stop_pid "$kiln_pid"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ------------------------------------------------------------------ setup --
cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"

# Both servers and the connection holder inherit this open-file limit.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then want=1048576; else want=$hard; fi
ulimit -n "$want" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((BENCH_IDLE_CONNECTIONS + 100)) ]; then
    log "warning: open-file limit is $nofile; $BENCH_IDLE_CONNECTIONS idle connections will not fit"
fi
[ "$nofile" = unlimited ] && nofile=1048576

rss_kib() {   # rss_kib PID...: sum of VmRSS in KiB
    local sum=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
nginx_pids() {   # master and workers, on one line
    echo "$nginx_pid" "$(pgrep -P "$nginx_pid" 2>/dev/null | tr '\n' ' ' || true)"
}
nginx_rss_kib() { local pids; read -ra pids <<<"$(nginx_pids)"; rss_kib "${pids[@]}"; }
alive_or_die() {   # alive_or_die NAME PID
    kill -0 "$2" 2>/dev/null && return 0
    local rc=0
    wait "$2" 2>/dev/null || rc=$?
    case $1 in
        kiln) tail -n 20 "$out/kiln.stderr" >&2 2>/dev/null || true; kiln_pid="" ;;
        nginx) tail -n 20 "$out/nginx/logs/error.log" >&2 2>/dev/null || true; nginx_pid="" ;;
    esac
    if [ "$rc" = 0 ]; then
        die "$1 exited with status 0, a clean shutdown: did something else send it SIGTERM or SIGINT?"
    fi
    die "$1 is not running (exit status $rc)"
}
wait_ready() {   # wait_ready NAME PID PORT PATH
    local resp
    for _ in $(seq 150); do
        alive_or_die "$1" "$2"
        if resp=$("$tool" get "$host" "$3" "$4" 500 2>/dev/null) && [ "${resp%% *}" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    die "$1 did not answer 200 on GET $4 within 15 s"
}


# ------------------------------------------------------------------- kiln --
kiln_port=$("$tool" freeport)
secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')   # 128 hex chars
log "starting kiln ($KILN_BIN, HTTP_LOOPS=$HTTP_LOOPS) on $host:$kiln_port"
# setsid: the servers get their own process group, so a Ctrl-C reaches only
# this script, whose trap stops them in order (setsid execs, so $! is the pid).
setsid env -u SSL_CERTFILE -u SSL_KEYFILE \
    KILN_ENV=production SECRET_KEY_BASE="$secret" BIND_ADDRESS=$host PORT="$kiln_port" \
    HTTP_LOOPS="$HTTP_LOOPS" LOG_LEVEL=info MAX_CONNECTIONS=20000 \
    KEEPALIVE_TIMEOUT_SECONDS=300 DB_PATH="$root/$out/kiln.db" HEALTH_CACHE_MS=0 \
    "$KILN_BIN" serve >"$BENCH_KILN_LOG" 2>"$out/kiln.stderr" &
kiln_pid=$!
wait_ready kiln "$kiln_pid" "$kiln_port" /livez

# nginx answers with kiln's own /livez body, so both send the same bytes.
kiln_livez=$("$tool" get "$host" "$kiln_port" /livez) || die "GET /livez on kiln failed"
read -r _ kiln_livez_hdr kiln_livez_len <<<"$(head -n 1 <<<"$kiln_livez")"
body=$(sed -n 2p <<<"$kiln_livez")
if [ "${#body}" != "$kiln_livez_len" ] || ! [[ $body =~ ^[][A-Za-z0-9{}\":,._\ -]*$ ]]; then
    log "kiln's /livez body is not a simple one-line JSON; nginx returns {\"status\":\"ok\"}"
    body='{"status":"ok"}'
fi

# ------------------------------------------------------------------ nginx --
ngx=$root/$out/nginx
rm -rf "$ngx"
mkdir -p "$ngx/conf" "$ngx/logs" "$ngx/tmp"
nginx_port=$("$tool" freeport)
if [ "$(id -u)" = 0 ]; then user_line='user root;'; else user_line='# (not root: no user directive)'; fi
sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|$HTTP_LOOPS|" -e "s|@NOFILE@|$nofile|" \
    -e "s|@PORT@|$nginx_port|" -e "s|@BODY@|$body|" bench/nginx.conf.in >"$ngx/conf/nginx.conf"
log "starting nginx (worker_processes $HTTP_LOOPS) on $host:$nginx_port"
setsid "$NGINX_BIN" -p "$ngx/" -c conf/nginx.conf -e logs/error.log >"$ngx/logs/stdout.log" 2>&1 &
nginx_pid=$!
wait_ready nginx "$nginx_pid" "$nginx_port" /livez
nginx_livez=$("$tool" get "$host" "$nginx_port" /livez) || die "GET /livez on nginx failed"
read -r _ nginx_livez_hdr nginx_livez_len <<<"$(head -n 1 <<<"$nginx_livez")"

# ------------------------------------------------------------- idle memory --
for _ in $(seq 20); do
    "$tool" get "$host" "$kiln_port" /livez >/dev/null || die "GET /livez on kiln failed"
    "$tool" get "$host" "$nginx_port" /livez >/dev/null || die "GET /livez on nginx failed"
done
"$tool" get "$host" "$kiln_port" /healthz >/dev/null || die "GET /healthz on kiln failed"
sleep 1
kiln_rss_idle=$(rss_kib "$kiln_pid")
nginx_rss_idle=$(nginx_rss_kib)
log "idle VmRSS: kiln $kiln_rss_idle KiB, nginx (master + workers) $nginx_rss_idle KiB"

healthz_status=$("$tool" get "$host" "$kiln_port" /healthz | head -n 1 | cut -d' ' -f1) || true
[ "$healthz_status" = 200 ] || log "warning: kiln GET /healthz answered ${healthz_status:-nothing}, not 200"

meta cpus "$(nproc)"
meta http_loops "$HTTP_LOOPS"
meta seconds "$BENCH_SECONDS"
meta warmup_seconds "$BENCH_WARMUP_SECONDS"
meta rounds "$BENCH_ROUNDS"
meta connections "$BENCH_CONNECTIONS"
meta threads "$BENCH_THREADS"
meta idle_connections "$BENCH_IDLE_CONNECTIONS"
meta nofile "$nofile"
meta kiln_bin "$KILN_BIN"
meta nginx_version "$("$NGINX_BIN" -v 2>&1 | sed 's|.*/||')"
meta wrk_version "$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')"
meta livez_body "$body"
meta kiln_livez_header_bytes "$kiln_livez_hdr"
meta kiln_livez_body_bytes "$kiln_livez_len"
meta nginx_livez_header_bytes "$nginx_livez_hdr"
meta nginx_livez_body_bytes "$nginx_livez_len"
meta kiln_healthz_status "${healthz_status:-none}"
meta kiln_rss_idle_kib "$kiln_rss_idle"
meta nginx_rss_idle_kib "$nginx_rss_idle"

# ------------------------------------------------------------- throughput --
targets=(kiln-livez nginx-livez kiln-healthz)
target_url() {
    case $1 in
        kiln-livez) echo "http://$host:$kiln_port/livez" ;;
        nginx-livez) echo "http://$host:$nginx_port/livez" ;;
        kiln-healthz) echo "http://$host:$kiln_port/healthz" ;;
    esac
}
# CPU used by anything else on the machine during a run, as a share of all
# CPUs: (non-idle time of all CPUs, steal included) - (kiln + nginx + wrk).
# Loopback softirq work is charged to the process it runs in, so on a quiet
# machine this shows a few percent (kernel workers) at most.
clk=$(getconf CLK_TCK)
ncpu=$(nproc)
cpu_busy_ticks() {   # user nice system irq softirq steal
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}
proc_ticks() {   # proc_ticks PID...: utime + stime (all threads)
    local sum=0 pid st f
    for pid in "$@"; do
        st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -ra f <<<"${st##*) }"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}
child_ticks() {   # user + sys of this shell's reaped children (wrk), in ticks
    # `times` must run in this shell, not in a $(...) subshell.
    times >"$out/.times"
    child_ticks_now=$(tail -n 1 "$out/.times" | awk -v clk="$clk" '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
        printf "%d\n", s * clk }')
}
ours_ticks() {   # sets ours_ticks_now: kiln + nginx + reaped children
    local pids
    read -ra pids <<<"$(nginx_pids)"
    child_ticks
    ours_ticks_now=$(( $(proc_ticks "$kiln_pid" "${pids[@]}") + child_ticks_now ))
}

run_wrk() {   # run_wrk TARGET SECONDS OUTFILE
    local rc=0 busy0 ours0 t0 busy1 ours1 t1
    busy0=$(cpu_busy_ticks); ours_ticks; ours0=$ours_ticks_now; t0=$(date +%s%N)
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$2"s --latency "$(target_url "$1")" \
        >"$3" 2>&1 &
    wrk_pid=$!
    wait "$wrk_pid" || rc=$?
    wrk_pid=""
    busy1=$(cpu_busy_ticks); ours_ticks; ours1=$ours_ticks_now; t1=$(date +%s%N)
    alive_or_die kiln "$kiln_pid"
    alive_or_die nginx "$nginx_pid"
    if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$3"; then
        cat "$3" >&2
        die "wrk failed on $1 (exit status $rc)"
    fi
    other_cpu_pct=$(awk -v b=$((busy1 - busy0)) -v o=$((ours1 - ours0)) \
        -v w=$(( (t1 - t0) / 1000000 )) -v clk="$clk" -v n="$ncpu" \
        'BEGIN { x = (b - o) * 100 / (w / 1000 * clk * n); printf "%.1f\n", x < 0 ? 0 : x }')
    printf 'other_cpu_pct: %s\n' "$other_cpu_pct" >>"$3"
}

for t in "${targets[@]}"; do
    log "warmup $t (${BENCH_WARMUP_SECONDS}s)"
    run_wrk "$t" "$BENCH_WARMUP_SECONDS" "$out/wrk-warmup-$t.txt"
done
for r in $(seq "$BENCH_ROUNDS"); do
    for t in "${targets[@]}"; do
        log "round $r/$BENCH_ROUNDS: $t (${BENCH_SECONDS}s)"
        run_wrk "$t" "$BENCH_SECONDS" "$out/wrk-$t-r$r.txt"
        log "  $(grep '^Requests/sec:' "$out/wrk-$t-r$r.txt"), CPU used by other processes: $other_cpu_pct%"
    done
done
rm -f "$out"/wrk-warmup-*.txt "$out/.times"
sleep 1
meta kiln_rss_after_load_kib "$(rss_kib "$kiln_pid")"
meta nginx_rss_after_load_kib "$(nginx_rss_kib)"

# ------------------------------------------- idle keep-alive connections --
hold_test() {   # hold_test NAME PORT PID...
    local name=$1 port=$2 rc=0 ready="" released="" fresh t0 t1
    shift 2
    local before held after
    before=$(rss_kib "$@")
    log "$name: opening $BENCH_IDLE_CONNECTIONS keep-alive connections"
    "$tool" hold "$host" "$port" /livez "$BENCH_IDLE_CONNECTIONS" 200 120 \
        >"$out/hold-$name.out" 2>"$out/hold-$name.err" &
    hold_pid=$!
    for _ in $(seq 1500); do
        ready=$(grep '^READY' "$out/hold-$name.out" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$hold_pid" 2>/dev/null || break
        sleep 0.1
    done
    alive_or_die "$name" "$1"
    if [ -z "$ready" ]; then
        log "$name: connection holder failed: $(tail -n 3 "$out/hold-$name.err" | tr '\n' ' ')"
        stop_pid "$hold_pid"; hold_pid=""
        meta "${name}_hold_ok" 0
        return 0
    fi
    [ -s "$out/hold-$name.err" ] && log "$name: $(tail -n 3 "$out/hold-$name.err" | tr '\n' ' ')"
    sleep 1
    held=$(rss_kib "$@")
    # A fresh request on a new connection must still be served.
    t0=$(date +%s%N)
    fresh=$("$tool" get "$host" "$port" /livez 5000 2>/dev/null | head -n 1 | cut -d' ' -f1) || true
    t1=$(date +%s%N)
    kill -USR1 "$hold_pid" 2>/dev/null || true
    wait "$hold_pid" || rc=$?
    hold_pid=""
    released=$(grep '^RELEASED' "$out/hold-$name.out" || true)
    alive_or_die "$name" "$1"
    sleep 1
    after=$(rss_kib "$@")
    log "$name: $ready; VmRSS $before -> $held -> $after KiB; fresh GET: ${fresh:-failed}"
    log "$name: $released"
    meta "${name}_hold_ok" 1
    meta "${name}_hold_ready" "$ready"
    meta "${name}_hold_released" "$released"
    meta "${name}_hold_exit" "$rc"
    meta "${name}_rss_before_hold_kib" "$before"
    meta "${name}_rss_hold_kib" "$held"
    meta "${name}_rss_after_hold_kib" "$after"
    meta "${name}_hold_fresh_status" "${fresh:-none}"
    meta "${name}_hold_fresh_ms" "$(( (t1 - t0) / 1000000 ))"
}
hold_test kiln "$kiln_port" "$kiln_pid"
read -ra nginx_all_pids <<<"$(nginx_pids)"
hold_test nginx "$nginx_port" "${nginx_all_pids[@]}"

# Still serving after everything?
"$tool" get "$host" "$kiln_port" /livez >/dev/null || die "kiln stopped answering GET /livez"
kiln_errors=$(grep -c . "$out/kiln.stderr" 2>/dev/null || true)
meta kiln_stderr_lines "${kiln_errors:-0}"

# --------------------------------------------------------------- database --
# The HTTP servers are done: stop them so that they take no CPU from the
# database part.
if [ "${BENCH_DB:-1}" != 0 ]; then
    stop_pid "$nginx_pid"; nginx_pid=""
    stop_pid "$kiln_pid"; kiln_pid=""
    BENCH_DB_EMBEDDED=1 KILN_BIN="$KILN_BIN" bench/db.sh || die "the database part failed (bench/db.sh)"
fi

# --------------------------------------------------------------- sessions --
if [ "${BENCH_SESSION:-1}" != 0 ]; then
    stop_pid "$nginx_pid"; nginx_pid=""
    stop_pid "$kiln_pid"; kiln_pid=""
    BENCH_SESSION_EMBEDDED=1 KILN_BIN="$KILN_BIN" bench/session.sh ||
        die "the session part failed (bench/session.sh)"
fi

# ------------------------------------------------------------------ notes --
if [ "${BENCH_NOTES:-1}" != 0 ]; then
    stop_pid "$nginx_pid"; nginx_pid=""
    stop_pid "$kiln_pid"; kiln_pid=""
    BENCH_NOTES_EMBEDDED=1 KILN_BIN="$KILN_BIN" bench/notes.sh ||
        die "the notes part failed (bench/notes.sh)"
fi

# -------------------------------------------------------------- footprint --
if [ "${BENCH_FOOTPRINT:-1}" != 0 ]; then
    stop_pid "$nginx_pid"; nginx_pid=""
    stop_pid "$kiln_pid"; kiln_pid=""
    BENCH_FOOTPRINT_EMBEDDED=1 KILN_BIN="$KILN_BIN" bench/footprint.sh ||
        die "the footprint part failed (bench/footprint.sh)"
fi

# ----------------------------------------------------------------- report --
"$PYTHON" bench/report.py "$out" | tee "$out/results.txt"
log "results: $out/results.txt, $out/results.json (raw wrk output: $out/wrk-*.txt)"
