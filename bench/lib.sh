# Helpers shared by bench/run.sh, bench/db.sh and bench/session.sh (sourced
# after they cd to the repository root). Set BENCH_TAG ("bench",
# "bench db", ...) and out (the part's output folder) before sourcing.

log() { printf '%s: %s\n' "$BENCH_TAG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$BENCH_TAG" "$*" >&2; exit 1; }
meta() { printf '%s=%s\n' "$1" "$2" >>"$out/meta.env"; }

stop_pid() {   # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

alive_or_die() {   # alive_or_die NAME PID: its stderr is $out/NAME.stderr
    kill -0 "$2" 2>/dev/null && return 0
    local rc=0
    wait "$2" 2>/dev/null || rc=$?
    tail -n 20 "$out/$1.stderr" >&2 2>/dev/null || true
    die "$1 is not running (exit status $rc)"
}
