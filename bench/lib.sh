# Helpers shared by the bench/ scripts (sourced
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

# ---- CPU accounting (events.sh, jobs.sh): how much of the machine other
# processes used during a run.
cpu_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
proc_ticks() {   # proc_ticks PID...: utime + stime (all threads)
    local sum=0 pid st fields
    for pid in "$@"; do
        st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -ra fields <<<"${st##*) }"
        sum=$((sum + fields[11] + fields[12]))
    done
    echo "$sum"
}
child_ticks() {   # sets child_ticks_now: user + sys of this shell's reaped children
    times >"$out/.times"
    child_ticks_now=$(tail -n 1 "$out/.times" | awk -v clk="$clk" '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
        printf "%d\n", s * clk }')
}

# ---- the test services' PostgreSQL (events.sh, jobs.sh; PG_BIN and the
# services' env file loaded; have_pg=1 once they run)
psql_su() {   # psql_su DB SQL: as the services' superuser over the unix socket
    "$PG_BIN/psql" -h "$KILN_TEST_PG_SOCKET_DIR" -p "$KILN_TEST_PG_PORT" -U "$KILN_TEST_PG_SUPERUSER" \
        -d "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}
# pg_durable on: flush every commit as a production database does (the
# *_DURABLE=1 knobs); reset: the test services' settings back.
pg_durable() {   # pg_durable on|reset
    [ "$have_pg" = 1 ] || return 0
    local k
    for k in fsync synchronous_commit full_page_writes; do
        if [ "$1" = on ]; then psql_su postgres "ALTER SYSTEM SET $k = on" >/dev/null
        else psql_su postgres "ALTER SYSTEM RESET $k" >/dev/null; fi
    done
    psql_su postgres "SELECT pg_reload_conf()" >/dev/null
}
