#!/usr/bin/env bash
# Kiln change-feed benchmark (GET /api/v1/events, docs/REALTIME.md):
#
#   memory      10,000 idle event streams on one kiln: VmRSS per stream, next
#               to 10,000 idle keep-alive connections on the same build (a
#               fresh kiln for each; goal: ≤ 4 KiB per stream)
#   fanout      one POST /api/v1/notes reaching 1,000 streams of the same
#               user on the same kiln: from the write's response to the last
#               stream's receipt, BENCH_EVENTS_WRITES times (p50, p99; goal
#               p99 ≤ 50 ms), embedded (SQLite + memory) and PostgreSQL +
#               Valkey
#   cluster     the same across two kilns on one PostgreSQL + Valkey: the
#               write on A, the 1,000 streams on B
#   throughput  POST /api/v1/notes under wrk (64 connections): this build
#               (with the outbox), this build with one open stream per
#               writing user, and the build before the feature (built from
#               git in a scratch clone), interleaved rounds, best of each
#               (goal: this build ≥ 0.85 × the one before)
#
#   bench/events.sh                      all parts, both modes
#   BENCH_EVENTS_PARTS="memory fanout" bench/events.sh
#   BENCH_EVENTS_MODES=embedded bench/events.sh
#
# See bench/README.md ("Change feed"). Raw output in build/bench/events/.
# Exit status: 0 when every measurement ran (goals may still be MISS) or the
# part was skipped (a kiln without /api/v1/events); non-zero when a server
# failed to start or died, or a tool failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_EVENTS_PARTS=${BENCH_EVENTS_PARTS:-memory fanout cluster throughput}
BENCH_EVENTS_MODES=${BENCH_EVENTS_MODES:-embedded postgres}
BENCH_EVENTS_STREAMS=${BENCH_EVENTS_STREAMS:-10000}         # memory: streams (and keep-alive connections)
BENCH_EVENTS_STREAM_USERS=${BENCH_EVENTS_STREAM_USERS:-10}  # memory: users the streams belong to
BENCH_EVENTS_SUBSCRIBERS=${BENCH_EVENTS_SUBSCRIBERS:-1000}  # fanout, cluster: streams of the one user
BENCH_EVENTS_WRITES=${BENCH_EVENTS_WRITES:-50}              # fanout, cluster: writes
BENCH_EVENTS_GAP_MS=${BENCH_EVENTS_GAP_MS:-20}              # pause after each write's last receipt
BENCH_EVENTS_TIMEOUT_MS=${BENCH_EVENTS_TIMEOUT_MS:-5000}    # a write not everywhere by then: missed
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_EVENTS_SECONDS=${BENCH_EVENTS_SECONDS:-$BENCH_SECONDS}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_EVENTS_ROUNDS=${BENCH_EVENTS_ROUNDS:-${BENCH_ROUNDS:-2}}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_EVENTS_WRITERS=${BENCH_EVENTS_WRITERS:-4}             # throughput: users the POSTs cycle through
BENCH_EVENTS_BASE=${BENCH_EVENTS_BASE:-}                    # throughput: the build before (a commit)
BENCH_EVENTS_BASE_BIN=${BENCH_EVENTS_BASE_BIN:-}            # ... or its binary
BENCH_EVENTS_SERVICES=${BENCH_EVENTS_SERVICES:-build/bench/services-events}
BENCH_EVENTS_DURABLE=${BENCH_EVENTS_DURABLE:-0}             # 1: PostgreSQL flushes every commit (fsync, synchronous_commit, full_page_writes on)
BENCH_KILN_LOG=${BENCH_KILN_LOG:-/dev/null}
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

out=build/bench/events
tool=build/bench/benchtool
etool=build/bench/eventtool
host=127.0.0.1
events_path=/api/v1/events

BENCH_TAG="bench events"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_EVENTS_STREAMS BENCH_EVENTS_STREAM_USERS BENCH_EVENTS_SUBSCRIBERS \
         BENCH_EVENTS_WRITES BENCH_EVENTS_TIMEOUT_MS BENCH_EVENTS_SECONDS BENCH_WARMUP_SECONDS \
         BENCH_EVENTS_ROUNDS BENCH_CONNECTIONS BENCH_THREADS BENCH_EVENTS_WRITERS HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $BENCH_EVENTS_GAP_MS =~ ^[0-9]+$ ]] || die "BENCH_EVENTS_GAP_MS must be a non-negative integer"
for p in $BENCH_EVENTS_PARTS; do
    case $p in memory|fanout|cluster|throughput) ;; *) die "unknown part '$p' in BENCH_EVENTS_PARTS" ;; esac
done
for m in $BENCH_EVENTS_MODES; do
    case $m in embedded|postgres) ;; *) die "unknown mode '$m' in BENCH_EVENTS_MODES" ;; esac
done
part() { [[ " $BENCH_EVENTS_PARTS " == *" $1 "* ]]; }
mode() { [[ " $BENCH_EVENTS_MODES " == *" $1 "* ]]; }

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"
: >"$out/results.env"
result() { printf '%s=%s\n' "$1" "$2" >>"$out/results.env"; }

[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
[ -x "$PYTHON" ] || die "$PYTHON not found"
mkdir -p build/bench
cc -O2 -Wall -o "$tool" bench/benchtool.c || die "cannot compile bench/benchtool.c"
cc -O2 -Wall -o "$etool" bench/eventtool.c || die "cannot compile bench/eventtool.c"

# Open files: kiln and the tools each hold one descriptor per connection.
# As root the hard limit itself can be raised.
need=$(( (BENCH_EVENTS_STREAMS > BENCH_EVENTS_SUBSCRIBERS ? BENCH_EVENTS_STREAMS : BENCH_EVENTS_SUBSCRIBERS) + 1000 ))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ] && [ "$(id -u)" = 0 ]; then
    if ulimit -Hn "$need" 2>/dev/null; then hard=$need; fi
fi
if [ "$hard" = unlimited ]; then ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
else ulimit -n "$hard" 2>/dev/null || true; fi
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$nofile" -lt "$need" ]; then
    die "open-file limit is $nofile (hard $hard), $need needed: run as root or raise it (ulimit -Hn)"
fi
max_conn=$(( need * 2 ))
[ "$max_conn" -le 1000000 ] || max_conn=1000000

# --------------------------------------------------------------- cleanup --
pids=() services_up=0 wrk_pid=""
cleanup() {
    trap - EXIT INT TERM
    local p
    stop_pid "$wrk_pid"
    for p in "${pids[@]}"; do stop_pid "$p"; done
    [ "$BENCH_EVENTS_DURABLE" != 1 ] || pg_durable reset 2>/dev/null || true
    if [ "$services_up" = 1 ]; then
        scripts/test-services.sh stop "$BENCH_EVENTS_SERVICES" >>"$out/services.log" 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU used by other processes during a run, as a share of all CPUs (as in
# bench/run.sh): busy time of all CPUs minus what the measured processes
# used (kiln, its PostgreSQL and Redis with their children, and the reaped
# children of this shell: wrk, eventtool).
clk=$(getconf CLK_TCK)
service_pids() {   # the services' postgres (and its backends) and redis processes
    local f p
    [ "$services_up" = 1 ] || return 0
    for f in "$BENCH_EVENTS_SERVICES"/pg/postmaster.pid "$BENCH_EVENTS_SERVICES"/*/redis.pid; do
        [ -f "$f" ] || continue
        p=$(head -n 1 "$f")
        [[ $p =~ ^[0-9]+$ ]] || continue
        echo "$p"
        pgrep -P "$p" 2>/dev/null || true
    done | sort -u | tr '\n' ' '
}
other_start() {   # other_start KILN_PID
    local svc
    read -ra svc <<<"$(service_pids)"
    child_ticks
    o_busy0=$(cpu_busy_ticks) o_ours0=$(( $(proc_ticks "$1" "${svc[@]}") + child_ticks_now )) o_t0=$(date +%s%N)
    o_svc=("${svc[@]}")
}
other_end() {   # other_end KILN_PID: sets other_pct, the other processes' share of all CPUs, %
    # (not in a $(...): `times` there would see the subshell's children)
    local busy ours t1 svc now_svc
    # Processes the services started meanwhile (a backend, an autovacuum
    # worker) count whole: they had nothing at the start.
    read -ra now_svc <<<"$(service_pids)"
    read -ra svc <<<"$(printf '%s\n' "${o_svc[@]}" "${now_svc[@]}" | sort -u | tr '\n' ' ')"
    child_ticks
    busy=$(cpu_busy_ticks) ours=$(( $(proc_ticks "$1" "${svc[@]}") + child_ticks_now )) t1=$(date +%s%N)
    other_pct=$(awk -v b=$((busy - o_busy0)) -v o=$((ours - o_ours0)) -v w=$(( (t1 - o_t0) / 1000000 )) \
        -v clk="$clk" -v n="$(nproc)" \
        'BEGIN { x = (b - o) * 100 / (w / 1000 * clk * n); printf "%.1f\n", x < 0 ? 0 : x }')
}
load1() { cut -d' ' -f1 /proc/loadavg; }

# ------------------------------------------------------------- services --
have_pg=0
pg_reason=""
if mode postgres || part cluster; then
    if [ ! -x "$PG_BIN/initdb" ]; then
        pg_reason="PostgreSQL 15 is not installed ($PG_BIN/initdb)"
    elif ! command -v redis-server >/dev/null; then
        pg_reason="redis-server not found"
    elif ! "$KILN_BIN" --help 2>&1 | grep -qw migrate; then
        pg_reason="$KILN_BIN has no PostgreSQL support"
    else
        log "starting PostgreSQL and Redis (the test services) in $BENCH_EVENTS_SERVICES"
        services_up=1
        scripts/test-services.sh start "$BENCH_EVENTS_SERVICES" >"$out/services.log" 2>&1 ||
            { cat "$out/services.log" >&2; die "scripts/test-services.sh start failed"; }
        # shellcheck disable=SC1091
        . "$BENCH_EVENTS_SERVICES/env"
        have_pg=1
    fi
    [ -z "$pg_reason" ] || log "PostgreSQL parts skipped: $pg_reason"
fi
meta pg_skipped "${pg_reason:-no}"
meta pg_durable "$BENCH_EVENTS_DURABLE"

new_db() {   # new_db NAME: a fresh database owned by the kiln role; prints its URL
    psql_su postgres "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
    psql_su postgres "CREATE DATABASE \"$1\" OWNER \"$KILN_TEST_PG_USER\"" >/dev/null
    echo "postgresql://$KILN_TEST_PG_USER:$KILN_TEST_PG_PASSWORD@$KILN_TEST_PG_HOST:$KILN_TEST_PG_PORT/$1"
}
# The test services skip every flush (fast tests); a production database
# (Aurora, or any PostgreSQL left at its defaults) waits for storage at each
# commit. BENCH_EVENTS_DURABLE=1 measures that way; the settings are put back
# when the script ends.
if [ "$BENCH_EVENTS_DURABLE" = 1 ]; then
    pg_durable on
    log "PostgreSQL flushes every commit (BENCH_EVENTS_DURABLE=1): $(psql_su postgres "SHOW fsync"), synchronous_commit $(psql_su postgres "SHOW synchronous_commit")"
fi

# ------------------------------------------------------------------- kiln --
# start_kiln NAME BIN MODE DB [ENV=VALUE...]: MODE embedded (DB: a file name
# under $out) or postgres (DB: a URL; Valkey on the services' Redis).
declare -A kiln_port kiln_pid
secret=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')
start_kiln() {
    local name=$1 bin=$2 m=$3 db=$4 port resp
    shift 4
    local stores=()
    if [ "$m" = embedded ]; then
        stores=(DB_PATH="$root/$out/$db")
    else
        stores=(DATABASE_URL="$db" VALKEY_HOST="$KILN_TEST_REDIS_HOST" VALKEY_PORT="$KILN_TEST_REDIS_PORT")
    fi
    port=$("$tool" freeport)
    log "starting $name ($bin, $m) on $host:$port"
    # Development: dev login (how the sessions are made here). One secret
    # for every kiln, so a session made on one is good on another (cluster).
    setsid env -i PATH="$PATH" KILN_ENV=development SECRET_KEY_BASE="$secret" \
        BIND_ADDRESS=$host PORT="$port" PUBLIC_URL="http://$host:$port" HTTP_LOOPS="$HTTP_LOOPS" \
        LOG_LEVEL=info MIGRATE_ON_START=true MAX_CONNECTIONS="$max_conn" \
        KEEPALIVE_TIMEOUT_SECONDS=300 HEALTH_CACHE_MS=0 \
        RATE_LIMIT_PUBLIC=1000000 RATE_LIMIT_PROTECTED=1000000 "${stores[@]}" "$@" \
        "$bin" serve >"$BENCH_KILN_LOG" 2>"$out/$name.stderr" &
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

# post_note PORT COOKIE: one POST /api/v1/notes, prints the status
post_note() {
    curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -b "_backend_session=$2" --data '{"title":"t","content":"c"}' "http://$host:$1/api/v1/notes"
}

# A kiln without the feed: nothing to measure here.
probe_mode=embedded
mode embedded || probe_mode=postgres
if [ "$probe_mode" = postgres ] && [ "$have_pg" = 1 ]; then probe_db=$(new_db kiln_events_probe); else probe_mode=embedded probe_db=probe.db; fi
start_kiln probe "$KILN_BIN" "$probe_mode" "$probe_db"
probe=$("$tool" get "$host" "${kiln_port[probe]}" "$events_path" 2000 2>/dev/null | head -n 1 | cut -d' ' -f1 || true)
stop_kiln probe
if [ "$probe" != 401 ]; then
    log "skipped: $KILN_BIN answers ${probe:-nothing} (not 401) to GET $events_path without a session: no change feed yet"
    meta skipped "no change feed in $KILN_BIN (GET $events_path answered ${probe:-nothing})"
    exit 0
fi

meta cpus "$(nproc)"
meta http_loops "$HTTP_LOOPS"
meta kiln_bin "$KILN_BIN"
meta kiln_version "$("$KILN_BIN" version 2>/dev/null | head -n 1)"
meta git_head "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta nofile "$nofile"
meta stream_users "$BENCH_EVENTS_STREAM_USERS"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
modes_run=()
for m in $BENCH_EVENTS_MODES; do
    if [ "$m" = postgres ] && [ "$have_pg" = 0 ]; then continue; fi
    modes_run+=("$m")
done

# ------------------------------------------------------------------ memory --
# Each figure from a fresh kiln: the same start, a few requests, 1 s idle,
# then VmRSS before, N connections held, VmRSS again. Keep-alive: benchtool
# hold (GET /livez, then idle). Streams: eventtool hold (GET /api/v1/events,
# `: connected`, then idle; heartbeats read as they come); while they are
# held one note is written for the first user, and each of that user's
# streams must get it; a fresh GET /livez must still answer 200.
mem_test() {   # mem_test MODE KIND(keepalive|streams)
    local m=$1 kind=$2 name="mem-$1-$2" db before held after fresh ready released rc=0 hpid
    if [ "$m" = embedded ]; then db="$name.db"; else db=$(new_db "kiln_events_${name//-/_}"); fi
    start_kiln "$name" "$KILN_BIN" "$m" "$db"
    local port=${kiln_port[$name]} pid=${kiln_pid[$name]}
    local cookies=$out/$name.cookies
    : >"$cookies"
    if [ "$kind" = streams ]; then
        for u in $(seq "$BENCH_EVENTS_STREAM_USERS"); do
            login "$port" "mem-$u@example.com" >>"$cookies" || die "dev login failed on $name"
        done
    fi
    for _ in $(seq 10); do "$tool" get "$host" "$port" /livez >/dev/null; done
    sleep 1
    before=$(rss_kib "$pid")
    log "$name: opening $BENCH_EVENTS_STREAMS $kind (VmRSS $before KiB)"
    if [ "$kind" = keepalive ]; then
        "$tool" hold "$host" "$port" /livez "$BENCH_EVENTS_STREAMS" 200 120 \
            >"$out/$name.out" 2>"$out/$name.err" &
    else
        "$etool" hold "$host" "$port" "$events_path" "$BENCH_EVENTS_STREAMS" "$cookies" 200 120 \
            >"$out/$name.out" 2>"$out/$name.err" &
    fi
    hpid=$!
    pids+=("$hpid")
    ready=""
    for _ in $(seq 1500); do
        ready=$(grep '^READY' "$out/$name.out" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.1
    done
    alive_or_die "$name" "$pid"
    [ -n "$ready" ] || { tail -n 5 "$out/$name.err" >&2; die "$name: the holder failed"; }
    sleep 1
    held=$(rss_kib "$pid")
    fresh=$("$tool" get "$host" "$port" /livez 5000 2>/dev/null | head -n 1 | cut -d' ' -f1 || true)
    local posted=-
    if [ "$kind" = streams ]; then
        posted=$(post_note "$port" "$(head -n 1 "$cookies")")
        sleep 1
    fi
    kill -USR1 "$hpid" 2>/dev/null || true
    wait "$hpid" || rc=$?
    released=$(grep '^RELEASED' "$out/$name.out" || true)
    sleep 1
    alive_or_die "$name" "$pid"
    after=$(rss_kib "$pid")
    log "$name: $ready; VmRSS $before -> $held -> $after KiB; fresh GET /livez: ${fresh:-failed}; POST: $posted"
    log "$name: $released"
    local est
    est=$(sed -n 's/.*established=\([0-9]*\).*/\1/p' <<<"$ready")
    result "mem_${m}_${kind}_established" "${est:-0}"
    result "mem_${m}_${kind}_rss_before_kib" "$before"
    result "mem_${m}_${kind}_rss_held_kib" "$held"
    result "mem_${m}_${kind}_rss_after_kib" "$after"
    result "mem_${m}_${kind}_fresh" "${fresh:-none}"
    result "mem_${m}_${kind}_released" "\"$released\""
    result "mem_${m}_${kind}_post" "$posted"
    result "mem_${m}_${kind}_threads" "$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")"
    stop_kiln "$name"
}

# ------------------------------------------------------------ fan-out ----
fanout_test() {   # fanout_test LABEL SUB_KILN WRITE_KILN
    local label=$1 sub=$2 wr=$3 cookie rc=0
    cookie=$(login "${kiln_port[$wr]}" "fanout-$label@example.com") || die "dev login failed on $wr"
    log "$label: $BENCH_EVENTS_SUBSCRIBERS streams on $sub, $BENCH_EVENTS_WRITES writes on $wr"
    local l0
    l0=$(load1)
    other_start "${kiln_pid[$sub]}"
    "$etool" fanout "$host" "${kiln_port[$sub]}" "$events_path" "$BENCH_EVENTS_SUBSCRIBERS" "$cookie" \
        "$host" "${kiln_port[$wr]}" "$BENCH_EVENTS_WRITES" "$BENCH_EVENTS_GAP_MS" \
        "$BENCH_EVENTS_TIMEOUT_MS" >"$out/fanout-$label.out" 2>"$out/fanout-$label.err" || rc=$?
    other_end "${kiln_pid[$sub]}"
    alive_or_die "$sub" "${kiln_pid[$sub]}"
    alive_or_die "$wr" "${kiln_pid[$wr]}"
    result "fanout_${label}_other_cpu_pct" "$other_pct"
    local summary
    summary=$(grep '^SUMMARY' "$out/fanout-$label.out" || true)
    [ -n "$summary" ] || { cat "$out/fanout-$label.out" "$out/fanout-$label.err" >&2; die "$label: eventtool fanout failed"; }
    [ "$rc" = 0 ] || log "warning: $label: not every write reached every stream (see $out/fanout-$label.out)"
    log "$label: $summary"
    result "fanout_${label}_summary" "\"$summary\""
    result "fanout_${label}_exit" "$rc"
    result "fanout_${label}_load" "$l0 $(load1)"
}

# ------------------------------------------------------------- throughput --
# The build before the feature: BENCH_EVENTS_BASE_BIN, or built from
# BENCH_EVENTS_BASE (default: the parent of the first commit whose message
# says "outbox", else d0a9149) in a scratch clone, kept in
# build/bench/base/COMMIT/.
base_bin() {
    if [ -n "$BENCH_EVENTS_BASE_BIN" ]; then echo "$BENCH_EVENTS_BASE_BIN"; return; fi
    local base=$BENCH_EVENTS_BASE first
    if [ -z "$base" ]; then
        first=$(git log --reverse --format=%H -i --grep=outbox HEAD 2>/dev/null | head -n 1)
        if [ -n "$first" ]; then base=$(git rev-parse "$first^"); else base=d0a9149; fi
    fi
    base=$(git rev-parse --verify "$base^{commit}") || die "no commit $base"
    local dir=build/bench/base/$base
    if [ ! -x "$dir/src/build/kiln" ]; then
        log "building the base $base in $dir/src (scratch clone)"
        rm -rf "$dir"
        mkdir -p "$dir"
        git clone -q --no-checkout "$root" "$dir/src" >&2 || die "cannot clone into $dir/src"
        git -C "$dir/src" checkout -q "$base" >&2 || die "cannot check out $base"
        make -C "$dir/src" -j"$(nproc)" build/kiln >"$dir/build.log" 2>&1 ||
            { tail -n 20 "$dir/build.log" >&2; die "the base $base did not build"; }
    fi
    echo "$root/$dir/src/build/kiln"
}

# one wrk Lua script per kiln: POST /api/v1/notes, cycling the writers' cookies
write_lua() {   # write_lua FILE COOKIE...
    local f=$1
    shift
    {
        echo "-- written by bench/events.sh: POST /api/v1/notes, cycling the writers' sessions"
        echo "local cookies = {"
        for c in "$@"; do echo "  \"$c\","; done
        echo "}"
        cat <<'EOF'
local body = '{"title":"Bench note","content":"A note written by bench/events.sh: about as long as a short note someone types into the app, one line of plain text."}'
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

throughput_mode() {   # throughput_mode MODE BASE_BIN
    local m=$1 bbin=$2 t k c
    local targets=(old new new-streams)
    local -A tkiln
    for t in old new; do
        local bin=$KILN_BIN name="tp-$m-$t" db
        [ "$t" = old ] && bin=$bbin
        if [ "$m" = embedded ]; then db="$name.db"; else db=$(new_db "kiln_events_tp_$t"); fi
        start_kiln "$name" "$bin" "$m" "$db"
        tkiln[$t]=$name
        local cs=()
        for k in $(seq "$BENCH_EVENTS_WRITERS"); do
            c=$(login "${kiln_port[$name]}" "writer-$k@example.com") || die "dev login failed on $name"
            cs+=("$c")
        done
        write_lua "$out/$name.lua" "${cs[@]}"
        [ "$t" = new ] && printf '%s\n' "${cs[@]}" >"$out/$name.cookies"
        result "tp_${m}_${t}_bin" "$bin"
    done
    tkiln[new-streams]=${tkiln[new]}
    local spid=""
    run_one() {   # run_one TARGET SECONDS FILE
        local t=$1 name=${tkiln[$1]} rc=0
        if [ "$t" = new-streams ]; then
            "$etool" hold "$host" "${kiln_port[$name]}" "$events_path" "$BENCH_EVENTS_WRITERS" \
                "$out/$name.cookies" 50 30 >"$3.hold" 2>&1 &
            spid=$!
            pids+=("$spid")
            for _ in $(seq 100); do grep -q '^READY' "$3.hold" 2>/dev/null && break; sleep 0.1; done
        fi
        other_start "${kiln_pid[$name]}"
        wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$2s" --latency -s "$out/$name.lua" \
            "http://$host:${kiln_port[$name]}/api/v1/notes" >"$3" 2>&1 &
        wrk_pid=$!
        wait "$wrk_pid" || rc=$?
        wrk_pid=""
        other_end "${kiln_pid[$name]}"
        echo "other_cpu_pct: $other_pct" >>"$3"
        if [ -n "$spid" ]; then
            kill -USR1 "$spid" 2>/dev/null || true
            wait "$spid" 2>/dev/null || true
            spid=""
        fi
        alive_or_die "$name" "${kiln_pid[$name]}"
        if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$3"; then
            cat "$3" >&2
            die "wrk failed on $m $t (exit status $rc)"
        fi
        # Every run starts from the same tables: the writers' notes (and on
        # PostgreSQL the feed's rows) removed.
        if [ "$m" = postgres ]; then
            local dbn
            dbn=$([ "$t" = old ] && echo kiln_events_tp_old || echo kiln_events_tp_new)
            psql_su "$dbn" "DELETE FROM notes" >/dev/null
            [ "$t" = old ] || psql_su "$dbn" "DELETE FROM events" >/dev/null
            psql_su "$dbn" "VACUUM ANALYZE" >/dev/null 2>&1 || true
        fi
    }
    for t in "${targets[@]}"; do
        log "throughput $m: warmup $t (${BENCH_WARMUP_SECONDS}s)"
        run_one "$t" "$BENCH_WARMUP_SECONDS" "$out/warmup-tp-$m-$t.txt"
    done
    for r in $(seq "$BENCH_EVENTS_ROUNDS"); do
        for t in "${targets[@]}"; do
            log "throughput $m: round $r/$BENCH_EVENTS_ROUNDS: $t (${BENCH_EVENTS_SECONDS}s)"
            local f=$out/run-tp-$m-$t-r$r.txt l0
            l0=$(load1)
            run_one "$t" "$BENCH_EVENTS_SECONDS" "$f"
            echo "load1: $l0 $(load1)" >>"$f"
            log "  $(grep '^Requests/sec:' "$f"), load $l0, CPU used by other processes: $(sed -n 's/^other_cpu_pct: //p' "$f")%"
        done
    done
    rm -f "$out"/warmup-tp-*
    for t in old new; do stop_kiln "${tkiln[$t]}"; done
}

# ------------------------------------------------------------------- runs --
if part memory; then
    for m in "${modes_run[@]}"; do
        mem_test "$m" keepalive
        mem_test "$m" streams
    done
fi
if part fanout; then
    for m in "${modes_run[@]}"; do
        if [ "$m" = embedded ]; then db=fanout.db; else db=$(new_db kiln_events_fanout); fi
        start_kiln "fanout-$m" "$KILN_BIN" "$m" "$db"
        fanout_test "$m" "fanout-$m" "fanout-$m"
        stop_kiln "fanout-$m"
    done
fi
if part cluster; then
    if [ "$have_pg" = 1 ]; then
        db=$(new_db kiln_events_cluster)
        start_kiln cluster-a "$KILN_BIN" postgres "$db"
        start_kiln cluster-b "$KILN_BIN" postgres "$db"
        fanout_test cluster cluster-b cluster-a
        stop_kiln cluster-a
        stop_kiln cluster-b
    else
        meta cluster_skipped "${pg_reason:-no PostgreSQL}"
    fi
fi
if part throughput; then
    command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
    bbin=$(base_bin)
    meta base_bin "$bbin"
    meta base_version "$("$bbin" version 2>/dev/null | head -n 1)"
    for m in "${modes_run[@]}"; do
        throughput_mode "$m" "$bbin"
    done
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
meta, res = env(out + "/meta.env"), env(out + "/results.env")
def kv(s):
    return dict(x.split("=", 1) for x in s.split() if "=" in x)
results = {"meta": meta, "memory": {}, "fanout": {}, "throughput": {}}
lines = []
P = lines.append
P("Kiln change feed (%s, tree %s, %s CPUs, HTTP_LOOPS=%s)" % (meta.get("kiln_version", "?"), meta.get("git_head", "?"),
                                                              meta.get("cpus"), meta.get("http_loops")))
P("load average at start: %s, at end: %s" % (meta.get("load_start"), meta.get("load_end")))
def goal(ok):
    return "PASS" if ok else "MISS"

mem_rows = []
for m in ("embedded", "postgres"):
    row = {}
    for kind in ("keepalive", "streams"):
        p = "mem_%s_%s_" % (m, kind)
        if p + "rss_held_kib" not in res:
            continue
        n = int(res[p + "established"] or 0)
        before, held = int(res[p + "rss_before_kib"]), int(res[p + "rss_held_kib"])
        row[kind] = {"established": n, "rss_before_kib": before, "rss_held_kib": held,
                     "rss_after_kib": int(res[p + "rss_after_kib"]),
                     "per_connection_kib": round((held - before) / n, 2) if n else None,
                     "fresh_livez": res[p + "fresh"], "released": res[p + "released"],
                     "post_status": res[p + "post"]}
    if row:
        results["memory"][m] = row
        mem_rows.append((m, row))
if mem_rows:
    P("")
    P("Idle connections (VmRSS of a fresh kiln before and while held; per connection = delta / N)")
    P("| mode | kind | held | VmRSS before | held | after | KiB per conn | goal |")
    P("|---|---|---|---|---|---|---|---|")
    for m, row in mem_rows:
        for kind in ("keepalive", "streams"):
            if kind not in row:
                continue
            r = row[kind]
            g = ""
            if kind == "streams":
                g = "%s (<= 4 KiB)" % goal(r["per_connection_kib"] is not None and r["per_connection_kib"] <= 4
                                          and r["established"] > 0)
            P("| %s | %s | %d | %d KiB | %d KiB | %d KiB | %s | %s |" % (
                m, "keep-alive" if kind == "keepalive" else "event streams", r["established"],
                r["rss_before_kib"], r["rss_held_kib"], r["rss_after_kib"],
                r["per_connection_kib"], g))
    for m, row in mem_rows:
        for kind, r in row.items():
            rel = kv(r["released"])
            warn = []
            if r["fresh_livez"] != "200":
                warn.append("fresh GET /livez answered %s" % r["fresh_livez"])
            if rel.get("closed_by_peer", "0") != "0":
                warn.append("%s closed by the server while held" % rel["closed_by_peer"])
            if kind == "streams":
                if r["post_status"] != "201":
                    warn.append("the POST while held answered %s" % r["post_status"])
                elif rel.get("events") is not None:
                    want = r["established"] // int(meta.get("stream_users", "1") or 1)
                    P("  %s streams: the note written while held reached %s streams (the writer's: %d); "
                      "%s heartbeats while held" % (m, rel.get("events"), want, rel.get("heartbeats")))
                    if int(rel.get("events", 0)) != want:
                        warn.append("the note reached %s streams, not %d" % (rel.get("events"), want))
            for w in warn:
                P("  warning: %s %s: %s" % (m, kind, w))

fan = []
for label in ("embedded", "postgres", "cluster"):
    s = res.get("fanout_%s_summary" % label)
    if not s:
        continue
    d = kv(s)
    d = {k: (float(v) if "." in v else int(v)) for k, v in d.items()}
    d["exit"] = int(res.get("fanout_%s_exit" % label, 1))
    d["load"] = res.get("fanout_%s_load" % label)
    d["other_cpu_pct"] = res.get("fanout_%s_other_cpu_pct" % label)
    results["fanout"][label] = d
    fan.append((label, d))
if fan:
    P("")
    P("Fan-out: one POST /api/v1/notes to N streams of its owner; ms from the POST's response to the last stream's receipt")
    P("| setup | streams | writes (complete) | p50 | p99 | max | first p50 | POST p50 | POST p99 | goal |")
    P("|---|---|---|---|---|---|---|---|---|---|")
    names = {"embedded": "embedded (SQLite), one kiln", "postgres": "PostgreSQL + Valkey, one kiln",
             "cluster": "PostgreSQL + Valkey, write on A, streams on B"}
    for label, d in fan:
        ok = d["complete"] == d["writes"] and d["last_p99_ms"] >= 0 and d["last_p99_ms"] <= 50
        P("| %s | %d | %d (%d) | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %s (p99 <= 50 ms) |" % (
            names[label], d["subscribers"], d["writes"], d["complete"], d["last_p50_ms"],
            d["last_p99_ms"], d["last_max_ms"], d["first_p50_ms"], d["write_p50_ms"],
            d["write_p99_ms"], goal(ok)))
    for label, d in fan:
        for k in ("mismatched", "resets", "closed"):
            if d.get(k):
                P("  warning: %s: %s=%s" % (label, k, d[k]))
        P("  %s: load average (1 min) before/after: %s; CPU used by other processes: %s%%%s" % (
            label, d["load"], d["other_cpu_pct"],
            " (busy machine: unreliable)" if float(d["other_cpu_pct"] or 0) > 10 else ""))

def wrk_file(path):
    t = open(path).read()
    m = re.search(r"^Requests/sec:\s*([\d.]+)", t, re.M)
    lat = re.search(r"^latency_us: (.*)$", t, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    errs = re.search(r"Socket errors: (.*)$", t, re.M)
    load = re.search(r"^load1: (.*)$", t, re.M)
    other = re.search(r"^other_cpu_pct: ([\d.]+)", t, re.M)
    d = {"rps": float(m.group(1)) if m else 0.0, "non2xx": int(non2xx.group(1)) if non2xx else 0,
         "socket_errors": errs.group(1) if errs else "", "load1": load.group(1) if load else "",
         "other_cpu_pct": float(other.group(1)) if other else None}
    if lat:
        for k, v in kv(lat.group(1)).items():
            d[k] = int(v)
    return d
tp_rows = []
noisy = []
for m in ("embedded", "postgres"):
    best = {}
    rounds = {}
    for t in ("old", "new", "new-streams"):
        runs = sorted(glob.glob("%s/run-tp-%s-%s-r*.txt" % (out, m, t)))
        if not runs:
            continue
        rs = [wrk_file(f) for f in runs]
        rounds[t] = ["%d (%s%%)" % (r["rps"], "?" if r["other_cpu_pct"] is None else "%.0f" % r["other_cpu_pct"])
                     for r in rs]
        busy = [r for r in rs if (r["other_cpu_pct"] or 0) > 10]
        if busy:
            noisy.append("%s %s: %d of %d rounds with other processes above 10%% of the CPUs"
                         % (m, t, len(busy), len(rs)))
        best[t] = max(rs, key=lambda r: r["rps"])
    if "old" in best and "new" in best:
        results["throughput"][m] = {"best": best, "rounds": rounds,
                                    "ratio_new_old": best["new"]["rps"] / best["old"]["rps"] if best["old"]["rps"] else None}
        if "new-streams" in best:
            results["throughput"][m]["ratio_new_streams_old"] = best["new-streams"]["rps"] / best["old"]["rps"]
        tp_rows.append((m, best, rounds))
if tp_rows:
    P("")
    P("POST /api/v1/notes, wrk -c%s (best round of each; every round's req/s in brackets, with the share"
      " of the CPUs other processes used)" % os.environ.get("BENCH_CONNECTIONS", "64"))
    P("| mode | build | req/s | p50 ms | p99 ms | rounds |")
    P("|---|---|---|---|---|---|")
    labels = {"old": "before the feature", "new": "this build (outbox)", "new-streams": "this build, a stream open per writer"}
    for m, best, rounds in tp_rows:
        for t in ("old", "new", "new-streams"):
            if t not in best:
                continue
            b = best[t]
            P("| %s | %s | %.0f | %s | %s | %s |" % (m, labels[t], b["rps"],
              "%.2f" % (b["p50"] / 1000) if "p50" in b else "-",
              "%.2f" % (b["p99"] / 1000) if "p99" in b else "-", ", ".join(rounds[t])))
    for m, best, rounds in tp_rows:
        r = best["new"]["rps"] / best["old"]["rps"]
        P("%s: this build / before = %.3f: %s (>= 0.85)" % (m, r, goal(r >= 0.85)))
        if "new-streams" in best:
            P("%s: with streams open / before = %.3f" % (m, best["new-streams"]["rps"] / best["old"]["rps"]))
        for t, b in best.items():
            if b["non2xx"] or b["socket_errors"]:
                P("  warning: %s %s: non-2xx %d, socket errors %s" % (m, t, b["non2xx"], b["socket_errors"] or "0"))
    for n in noisy:
        P("  warning: %s: the machine was busy, the ratios are unreliable" % n)
    P("base: %s" % meta.get("base_version", "?"))
for k, v in sorted(meta.items()):
    if k.endswith("_stderr_lines") and v not in ("0", ""):
        P("warning: %s: %s lines on stderr (%s/%s.stderr)" % (k[:-13], v, out, k[:-13]))
print("\n".join(lines))
json.dump(results, open(out + "/results.json", "w"), indent=2)
EOF
log "results: $out/results.txt, $out/results.json (raw output: $out/)"
