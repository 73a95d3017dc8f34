#!/usr/bin/env bash
# Kiln drain benchmark: a restart under load loses nothing. wrk keeps 64
# keep-alive connections busy on one port served by two kilns
# (SO_REUSEPORT); every few seconds the older kiln gets SIGTERM and a new one
# starts at the same moment, as a rolling restart on one host does. wrk's
# "Socket errors" and "Non-2xx or 3xx responses" must both stay at zero.
# See bench/README.md.
#
#   bench/drain.sh        runs the scenario with the host's settings, then
#                         (as root, where `unshare -n` works) once more in a
#                         private network namespace with
#                         net.ipv4.tcp_migrate_req=1
#
# Raw output goes to build/bench/drain/. Exit status: 0 when the scenario ran
# (a lost request prints MISS but is still 0, as in bench/run.sh); non-zero
# when a kiln failed to start, exited with an error, or wrk failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_DRAIN_RESTARTS=${BENCH_DRAIN_RESTARTS:-4}
BENCH_DRAIN_INTERVAL=${BENCH_DRAIN_INTERVAL:-3}   # seconds between restarts
BENCH_DRAIN_PATH=${BENCH_DRAIN_PATH:-/livez}
BENCH_DRAIN_MIGRATE=${BENCH_DRAIN_MIGRATE:-auto}  # auto, 0 (skip), 1 (required)
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
# Set by this script when it runs itself inside the private namespace.
BENCH_DRAIN_VARIANT=${BENCH_DRAIN_VARIANT:-host}

out=build/bench/drain/$BENCH_DRAIN_VARIANT
tool=build/bench/benchtool
host=127.0.0.1

BENCH_TAG="bench drain ($BENCH_DRAIN_VARIANT)"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_CONNECTIONS BENCH_THREADS BENCH_DRAIN_RESTARTS BENCH_DRAIN_INTERVAL HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
command -v ss >/dev/null || die "ss not found (Debian package iproute2)"
[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
KILN_BIN=$(cd "$(dirname "$KILN_BIN")" && pwd)/$(basename "$KILN_BIN")

rm -rf "$out"
mkdir -p "$out" "$(dirname "$tool")"
: >"$out/meta.env"
[ -x "$tool" ] || cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"

# --------------------------------------------------------------- kilns --
pids=()        # running kilns, oldest first
names=()
stopped=()     # "pid name" of the kilns sent SIGTERM
timers=()      # the subshells timing their drains
started=0
wrk_pid=""
cleanup() {
    [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

port=$("$tool" freeport)
secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')

listeners() { ss -Hltnp "sport = :$port" | grep -c "pid=$1," || true; }   # listeners() PID

start_kiln() {   # a new kiln on the shared port; returns when it listens
    local name=kiln$started
    started=$((started + 1))
    setsid env -u SSL_CERTFILE -u SSL_KEYFILE \
        KILN_ENV=production SECRET_KEY_BASE="$secret" BIND_ADDRESS=$host PORT="$port" \
        HTTP_LOOPS="$HTTP_LOOPS" LOG_LEVEL=warning DB_PATH="$root/$out/$name.db" \
        "$KILN_BIN" serve >"$out/$name.log" 2>"$out/$name.stderr" &
    pids+=("$!")
    names+=("$name")
    for _ in $(seq 200); do
        alive_or_die "$name" "$!"
        [ "$(listeners "$!")" -ge "$HTTP_LOOPS" ] && return 0
        sleep 0.05
    done
    die "$name did not listen within 10 s"
}

# SIGTERM the oldest kiln and start a new one at the same moment; the old
# one's drain is timed in the background.
restart_oldest() {
    local pid=${pids[0]} name=${names[0]}
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
    stopped+=("$pid $name")
    kill -TERM "$pid"
    (   # bash reaps its children as they exit, so kill -0 fails once it did
        t0=$(date +%s%N)
        while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
        echo "$name $(( ($(date +%s%N) - t0) / 1000000 ))" >>"$out/drains"
    ) &
    timers+=("$!")
    start_kiln
}

# ------------------------------------------------------------ scenario --
migrate=$(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || echo absent)
meta variant "$BENCH_DRAIN_VARIANT"
meta tcp_migrate_req "$migrate"
meta kernel "$(uname -r)"
log "two kilns (HTTP_LOOPS=$HTTP_LOOPS each) on $host:$port, net.ipv4.tcp_migrate_req=$migrate"
start_kiln
start_kiln
seconds=$((2 + BENCH_DRAIN_RESTARTS * BENCH_DRAIN_INTERVAL + 2))
log "wrk -t$BENCH_THREADS -c$BENCH_CONNECTIONS -d${seconds}s GET $BENCH_DRAIN_PATH, $BENCH_DRAIN_RESTARTS restarts every ${BENCH_DRAIN_INTERVAL}s"
wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${seconds}s" --latency \
    "http://$host:$port$BENCH_DRAIN_PATH" >"$out/wrk.out" 2>&1 &
wrk_pid=$!
sleep 2
for _ in $(seq "$BENCH_DRAIN_RESTARTS"); do
    restart_oldest
    sleep "$BENCH_DRAIN_INTERVAL"
done
rc=0
wait "$wrk_pid" || rc=$?
wrk_pid=""
[ "$rc" = 0 ] || { cat "$out/wrk.out" >&2; die "wrk failed (exit status $rc)"; }
for t in "${timers[@]}"; do wait "$t"; done
bad_exits=0
for entry in "${stopped[@]}"; do
    read -r pid name <<<"$entry"
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" = 0 ] || { log "$name exited with status $rc"; bad_exits=$((bad_exits + 1)); }
done
for pid in "${pids[@]}"; do stop_pid "$pid"; done
pids=()

# ------------------------------------------------------------- report --
requests=$(awk '/requests in/ {print $1}' "$out/wrk.out")
rps=$(awk '/^Requests\/sec/ {print $2}' "$out/wrk.out")
p99=$(awk '$1 == "99%" {print $2}' "$out/wrk.out")
read -r connect read write timeout < <(
    sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' \
        "$out/wrk.out" | grep . || echo "0 0 0 0")
non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$out/wrk.out")
non2xx=${non2xx:-0}
[ -n "$requests" ] || { cat "$out/wrk.out" >&2; die "cannot read wrk's output"; }
drains=$(awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $2 / 1000}' "$out/drains")
for k in requests rps p99 connect read write timeout non2xx drains bad_exits; do meta "$k" "${!k}"; done
[ "$bad_exits" = 0 ] || die "a stopped kiln exited with an error (see $out/*.stderr)"

errors=$((connect + read + write + timeout))
verdict=OK
[ "$errors" = 0 ] && [ "$non2xx" = 0 ] || verdict=MISS
printf 'drain (%s, tcp_migrate_req=%s): %s requests, %s req/s, p99 %s; %d restarts, drains %s s; socket errors %d (connect %s, read %s, write %s, timeout %s); non-2xx %s: %s\n' \
    "$BENCH_DRAIN_VARIANT" "$migrate" "$requests" "$rps" "$p99" "$BENCH_DRAIN_RESTARTS" \
    "$drains" "$errors" "$connect" "$read" "$write" "$timeout" "$non2xx" "$verdict" |
    tee "$out/summary"

# --------------------------------------- again, with the kernel's help --
[ "$BENCH_DRAIN_VARIANT" = host ] || exit 0
case $BENCH_DRAIN_MIGRATE in
0) exit 0 ;;
auto | 1) ;;
*) die "BENCH_DRAIN_MIGRATE must be auto, 0 or 1 (got '$BENCH_DRAIN_MIGRATE')" ;;
esac
trap - EXIT
# A private network namespace: the setting is per namespace, and changing
# the host's own is not this script's business.
if unshare -n true 2>/dev/null; then
    unshare -n env BENCH_DRAIN_VARIANT=migrate KILN_BIN="$KILN_BIN" bash -c \
        'ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && exec bench/drain.sh' ||
        die "the tcp_migrate_req=1 run failed"
elif [ "$BENCH_DRAIN_MIGRATE" = 1 ]; then
    die "cannot create a network namespace (unshare -n needs root) for the tcp_migrate_req=1 run"
else
    log "skipped the tcp_migrate_req=1 run: unshare -n needs root"
fi
