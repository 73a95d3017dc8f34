#!/usr/bin/env bash
# Real services for Kiln's tests and benchmarks, on loopback, in one folder:
# PostgreSQL 15, pgbouncer (transaction mode, the RDS Proxy stand-in) in
# front of it, Redis 7 plain and Redis 7 with TLS + passwords (the Valkey
# stand-ins).
#
#   scripts/test-services.sh start DIR       stop what runs in DIR, then start
#                                            everything afresh (new data, new
#                                            free ports, new passwords); writes
#                                            DIR/env
#   scripts/test-services.sh stop DIR        stop everything started in DIR
#                                            (safe to repeat)
#   scripts/test-services.sh stop1 DIR SVC   stop one service   } SVC: postgres,
#   scripts/test-services.sh start1 DIR SVC  start it again     } redis, redis-tls,
#   scripts/test-services.sh restart DIR SVC stop + start       } pgbouncer
#   scripts/test-services.sh pause1 DIR SVC  freeze a service (SIGSTOP): it keeps
#   scripts/test-services.sh resume1 DIR SVC its connections but answers nothing
#                                            (redis, redis-tls, pgbouncer only)
#   scripts/test-services.sh status DIR      which services run (exit 1: not all)
#   scripts/test-services.sh run DIR CMD...  start, run CMD with DIR/env
#                                            exported, stop; CMD's exit status
#
# start1/restart keep the ports, passwords and data that `start` made.
#
# DIR/env holds KEY=value lines (no spaces, no quotes): load it with
#   set -a; . DIR/env; set +a
# KILN_TEST_PG_URL, KILN_TEST_PG_HOST, KILN_TEST_PG_PORT, KILN_TEST_PG_USER,
# KILN_TEST_PG_PASSWORD, KILN_TEST_PG_DB, KILN_TEST_PG_SOCKET_DIR,
# KILN_TEST_PG_SUPERUSER, KILN_TEST_PG_BIN, KILN_TEST_PG_BENCH_DB,
# KILN_TEST_PGBOUNCER_URL, KILN_TEST_PGBOUNCER_PORT, KILN_TEST_REDIS_HOST,
# KILN_TEST_REDIS_PORT, KILN_TEST_REDIS_TLS_PORT, KILN_TEST_REDIS_USER,
# KILN_TEST_REDIS_PASSWORD, KILN_TEST_REDIS_CA, KILN_TEST_REDIS_OTHER_CA,
# KILN_TEST_SERVICES_DIR, KILN_TEST_SERVICES=1.
#
# The PostgreSQL superuser `postgres` needs no password over the unix socket
# in DIR/pg-sock:  psql -h DIR/pg-sock -p $KILN_TEST_PG_PORT -U postgres kiln
# Over TCP every role authenticates with SCRAM-SHA-256.
#
# initdb, postgres and pgbouncer refuse to run as root: when run as root this
# script runs them as the `postgres` user (setpriv) and gives it the folders
# they write. Processes are stopped by their own pid files (or pg_ctl), never
# by name: other people's servers may run on this machine.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
REDIS_BIN=${REDIS_BIN:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}
SERVICES=(postgres pgbouncer redis redis-tls)

prog=test-services
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ------------------------------------------------------------------ helpers --

if [ "$(id -u)" = 0 ]; then
    run_user=postgres
    getent passwd postgres >/dev/null || die "no 'postgres' user (install the postgresql package)"
    # as_pg CMD...: run as postgres, with a HOME it may use, from a folder it can read.
    as_pg() { (cd / && setpriv --reuid=postgres --regid=postgres --clear-groups \
                  env HOME="$dir" "$@"); }
    give() { chown -R postgres:postgres "$@"; }
else
    run_user=$(id -un)
    as_pg() { (cd / && env HOME="$dir" "$@"); }
    give() { :; }
fi

# free_ports N: N distinct TCP ports free on 127.0.0.1 (all held at once while
# choosing, so they differ from each other).
free_ports() {
    local py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
            return
        fi
    done
    die "python3 is needed to pick free ports"
}

port_open() {   # port_open PORT: something accepts TCP on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE NAME: the pid in PIDFILE runs and its program is NAME
# (so that a recycled pid of someone else's process is never signalled).
pid_of() {
    local pidfile=$1 name=$2 pid comm
    [ -s "$pidfile" ] || return 1
    pid=$(head -n 1 "$pidfile" | tr -dc 0-9)
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # comm: the program's name as exec'd (redis-server is a symlink).
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [ "$comm" = "$name" ] || return 1
    echo "$pid"
}

# stop_pid PIDFILE NAME [SIGNAL]: signal, wait up to 10 s, then KILL.
stop_pid() {
    local pidfile=$1 name=$2 sig=${3:-TERM} pid
    pid=$(pid_of "$pidfile" "$name") || { rm -f "$pidfile"; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true   # a paused (pause1) one must run to exit
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$name (pid $pid) did not stop within 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.1
    rm -f "$pidfile"
}

wait_for() {   # wait_for SECONDS WHAT CMD...: poll CMD every 0.05 s
    local secs=$1 i   # $2: what is awaited (for the reader)
    shift 2
    for ((i = 0; i < secs * 20; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}

load_state() {   # the ports and passwords `start` chose
    [ -f "$dir/state" ] || die "$dir/state not found: run '$0 start $dir' first"
    # shellcheck disable=SC1091
    . "$dir/state"
}

# ---------------------------------------------------------------- postgres --

pg_running() { [ -f "$dir/pg/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" status -D "$dir/pg" >/dev/null 2>&1; }

pg_init() {
    rm -rf "$dir/pg" "$dir/pg-sock" "$dir/pg.log"
    mkdir -p "$dir/pg" "$dir/pg-sock"
    chmod 700 "$dir/pg"
    give "$dir/pg" "$dir/pg-sock"
    printf '%s\n' "$pg_superpass" >"$dir/.pwfile"
    give "$dir/.pwfile"
    # A superuser `postgres`; local (unix socket, in DIR/pg-sock only) is
    # trusted, TCP needs SCRAM.
    if ! as_pg "$PG_BIN/initdb" -D "$dir/pg" -U postgres --pwfile="$dir/.pwfile" \
            -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
            --no-sync --no-instructions >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        rm -f "$dir/.pwfile"
        die "initdb failed"
    fi
    rm -f "$dir/.pwfile"
    cat >>"$dir/pg/postgresql.conf" <<EOF

# --- test-services.sh ---
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir/pg-sock'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
log_min_messages = warning
log_connections = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

pg_start() {
    [ -d "$dir/pg" ] || die "no PostgreSQL data folder in $dir: run '$0 start $dir'"
    if pg_running; then return 0; fi
    touch "$dir/pg.log" && give "$dir/pg.log"
    if ! as_pg "$PG_BIN/pg_ctl" start -w -t 30 -D "$dir/pg" -l "$dir/pg.log" >/dev/null; then
        tail -n 20 "$dir/pg.log" >&2
        die "PostgreSQL did not start"
    fi
}

pg_stop() {
    [ -d "$dir/pg" ] || return 0
    if [ -f "$dir/pg/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" stop -w -t 30 -m fast -D "$dir/pg" >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/pg/postmaster.pid" ]; then   # stale or stubborn
        stop_pid "$dir/pg/postmaster.pid" postgres QUIT
    fi
}

pg_psql() {   # pg_psql DB SQL: as the superuser over the unix socket
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/pg-sock" -p "$pg_port" \
        -U postgres -d "$1" -c "$2"
}

pg_setup() {
    pg_psql postgres "CREATE ROLE kiln LOGIN PASSWORD '$pg_password'" >/dev/null
    pg_psql postgres "CREATE DATABASE kiln OWNER kiln" >/dev/null
    pg_psql postgres "CREATE DATABASE kiln_bench OWNER kiln" >/dev/null
}

# --------------------------------------------------------------- pgbouncer --

pgb_write_config() {
    mkdir -p "$dir/pgbouncer"
    # Plain password in the userlist: pgbouncer then speaks SCRAM to both
    # the client and PostgreSQL.
    printf '"kiln" "%s"\n' "$pg_password" >"$dir/pgbouncer/userlist.txt"
    chmod 600 "$dir/pgbouncer/userlist.txt"
    cat >"$dir/pgbouncer/pgbouncer.ini" <<EOF
; written by scripts/test-services.sh
[databases]
; any database name maps to the same name on the PostgreSQL above
* = host=127.0.0.1 port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/pgbouncer/userlist.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
max_db_connections = 0
; come back quickly after PostgreSQL restarts (tests stop it on purpose)
server_login_retry = 1
query_wait_timeout = 30
logfile = $dir/pgbouncer/pgbouncer.log
pidfile = $dir/pgbouncer/pgbouncer.pid
admin_users = kiln
stats_users = kiln
EOF
    give "$dir/pgbouncer"
}

pgb_running() { pid_of "$dir/pgbouncer/pgbouncer.pid" pgbouncer >/dev/null; }

pgb_start() {
    [ -f "$dir/pgbouncer/pgbouncer.ini" ] || die "no pgbouncer config in $dir: run '$0 start $dir'"
    if pgb_running; then return 0; fi
    rm -f "$dir/pgbouncer/pgbouncer.pid"
    if ! as_pg "$PGBOUNCER_BIN" -d -q "$dir/pgbouncer/pgbouncer.ini" 2>>"$dir/pgbouncer/start.err"; then
        tail -n 20 "$dir/pgbouncer/start.err" "$dir/pgbouncer/pgbouncer.log" >&2 2>/dev/null || true
        die "pgbouncer did not start"
    fi
    if ! wait_for 10 pgbouncer port_open "$pgb_port"; then
        tail -n 20 "$dir/pgbouncer/pgbouncer.log" >&2 2>/dev/null || true
        die "pgbouncer does not listen on 127.0.0.1:$pgb_port"
    fi
    wait_for 5 "pgbouncer pid file" pgb_running || die "pgbouncer wrote no pid file"
}

pgb_stop() { stop_pid "$dir/pgbouncer/pgbouncer.pid" pgbouncer TERM; }

# ------------------------------------------------------------------- redis --

make_tls() {
    local t=$dir/tls
    rm -rf "$t"
    mkdir -p "$t"
    (
        cd "$t"
        ossl() { openssl "$@" >/dev/null 2>>"$t/openssl.err"; }
        for ca in ca other-ca; do
            ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
                -subj "/CN=Kiln test $ca" -keyout "$ca.key" -out "$ca.crt" \
                -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign
        done
        ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=localhost -keyout server.key -out server.csr
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" >server.ext
        ossl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
            -extfile server.ext -out server.crt
        rm -f server.csr server.ext ca.srl
    ) || { cat "$t/openssl.err" >&2; die "openssl could not make the test certificates"; }
    chmod 644 "$t"/*.crt
    chmod 600 "$t"/*.key
}

redis_write_config() {   # redis_write_config NAME
    local name=$1 d=$dir/$1
    mkdir -p "$d"
    {
        echo "# written by scripts/test-services.sh"
        echo "bind 127.0.0.1"
        echo "protected-mode yes"
        echo "daemonize yes"
        echo "pidfile $d/redis.pid"
        echo "logfile $d/redis.log"
        echo "dir $d"
        echo "save \"\""
        echo "appendonly no"
        echo "databases 16"
        if [ "$name" = redis ]; then
            echo "port $redis_port"
        else
            echo "port 0"
            echo "tls-port $redis_tls_port"
            echo "tls-cert-file $dir/tls/server.crt"
            echo "tls-key-file $dir/tls/server.key"
            echo "tls-ca-cert-file $dir/tls/ca.crt"
            echo "tls-auth-clients no"
            echo "user kiln on >$redis_password ~* &* +@all"
            echo "requirepass $redis_password"
        fi
    } >"$d/redis.conf"
    chmod 600 "$d/redis.conf"
}

redis_ping() {   # redis_ping NAME
    if [ "$1" = redis ]; then
        [ "$("$REDIS_CLI" -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
    else
        [ "$(REDISCLI_AUTH=$redis_password "$REDIS_CLI" --tls --cacert "$dir/tls/ca.crt" \
                -h localhost -p "$redis_tls_port" --user kiln ping 2>/dev/null)" = PONG ]
    fi
}

redis_running() { pid_of "$dir/$1/redis.pid" redis-server >/dev/null; }

redis_start() {   # redis_start NAME
    local name=$1
    [ -f "$dir/$name/redis.conf" ] || die "no $name config in $dir: run '$0 start $dir'"
    if redis_running "$name"; then return 0; fi
    rm -f "$dir/$name/redis.pid"
    "$REDIS_BIN" "$dir/$name/redis.conf" >>"$dir/$name/start.err" 2>&1 ||
        { tail -n 20 "$dir/$name/start.err" "$dir/$name/redis.log" >&2 2>/dev/null; die "$name did not start"; }
    if ! wait_for 10 "$name" redis_ping "$name"; then
        tail -n 20 "$dir/$name/redis.log" >&2 2>/dev/null || true
        die "$name does not answer PING"
    fi
    wait_for 5 "$name pid file" redis_running "$name" || die "$name wrote no pid file"
}

redis_stop() { stop_pid "$dir/$1/redis.pid" redis-server TERM; }

# ----------------------------------------------------------------- service --

svc_start() {
    case $1 in
        postgres) pg_start ;;
        pgbouncer) pgb_start ;;
        redis|redis-tls) redis_start "$1" ;;
        *) die "unknown service '$1' (postgres, pgbouncer, redis, redis-tls)" ;;
    esac
}

svc_stop() {
    case $1 in
        postgres) pg_stop ;;
        pgbouncer) pgb_stop ;;
        redis|redis-tls) redis_stop "$1" ;;
        *) die "unknown service '$1' (postgres, pgbouncer, redis, redis-tls)" ;;
    esac
}

svc_signal() {   # svc_signal SERVICE SIGNAL: single-process services only
    local pid
    case $1 in
        pgbouncer) pid=$(pid_of "$dir/pgbouncer/pgbouncer.pid" pgbouncer) ;;
        redis|redis-tls) pid=$(pid_of "$dir/$1/redis.pid" redis-server) ;;
        *) die "pause1/resume1: only redis, redis-tls and pgbouncer (got '$1')" ;;
    esac || die "$1 is not running"
    kill "-$2" "$pid"
}

svc_running() {
    case $1 in
        postgres) pg_running ;;
        pgbouncer) pgb_running ;;
        redis|redis-tls) redis_running "$1" ;;
    esac
}

stop_all() {
    # pgbouncer first (it holds connections to PostgreSQL); the others at
    # once (each may take a second or two to exit).
    local pids=() p rc=0
    pgb_stop &
    pids+=($!)
    redis_stop redis-tls &
    pids+=($!)
    redis_stop redis &
    pids+=($!)
    wait "${pids[0]}" || rc=1
    pg_stop || rc=1
    for p in "${pids[@]:1}"; do wait "$p" || rc=1; done
    return $rc
}

write_env() {
    local tmp=$dir/env.tmp
    cat >"$tmp" <<EOF
KILN_TEST_SERVICES=1
KILN_TEST_SERVICES_DIR=$dir
KILN_TEST_PG_URL=postgresql://kiln:$pg_password@127.0.0.1:$pg_port/kiln
KILN_TEST_PG_HOST=127.0.0.1
KILN_TEST_PG_PORT=$pg_port
KILN_TEST_PG_USER=kiln
KILN_TEST_PG_PASSWORD=$pg_password
KILN_TEST_PG_DB=kiln
KILN_TEST_PG_BENCH_DB=kiln_bench
KILN_TEST_PG_SOCKET_DIR=$dir/pg-sock
KILN_TEST_PG_SUPERUSER=postgres
KILN_TEST_PG_BIN=$PG_BIN
KILN_TEST_PGBOUNCER_URL=postgresql://kiln:$pg_password@127.0.0.1:$pgb_port/kiln
KILN_TEST_PGBOUNCER_HOST=127.0.0.1
KILN_TEST_PGBOUNCER_PORT=$pgb_port
KILN_TEST_REDIS_HOST=127.0.0.1
KILN_TEST_REDIS_PORT=$redis_port
KILN_TEST_REDIS_TLS_PORT=$redis_tls_port
KILN_TEST_REDIS_USER=kiln
KILN_TEST_REDIS_PASSWORD=$redis_password
KILN_TEST_REDIS_CA=$dir/tls/ca.crt
KILN_TEST_REDIS_OTHER_CA=$dir/tls/other-ca.crt
EOF
    chmod 644 "$tmp"
    mv "$tmp" "$dir/env"
}

cmd_start() {
    local t0
    t0=$(date +%s%N)
    [ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb not found (Debian package postgresql)"
    [ -x "$PGBOUNCER_BIN" ] || die "$PGBOUNCER_BIN not found (Debian package pgbouncer)"
    [ -x "$REDIS_BIN" ] || die "$REDIS_BIN not found (Debian package redis-server)"
    command -v openssl >/dev/null || die "openssl not found"
    command -v setpriv >/dev/null || [ "$(id -u)" != 0 ] || die "setpriv not found (util-linux)"
    # The unix socket path must fit in sun_path (107 bytes).
    [ $(( ${#dir} + 22 )) -le 107 ] || die "folder path too long for a unix socket: $dir"

    if [ -f "$dir/state" ]; then
        # shellcheck disable=SC1091
        . "$dir/state" 2>/dev/null || true
        stop_all
    fi
    rm -rf "$dir/pg" "$dir/pg-sock" "$dir/pgbouncer" "$dir/redis" "$dir/redis-tls" "$dir/tls" \
           "$dir/env" "$dir/state" "$dir/pg.log" "$dir/initdb.log"
    mkdir -p "$dir"
    # The postgres user must reach DIR (and write its own subfolders).
    chmod 755 "$dir"
    as_pg test -x "$dir" ||
        die "user $run_user cannot reach $dir (a parent folder is not searchable for it)"

    read -r pg_port pgb_port redis_port redis_tls_port <<<"$(free_ports 4)"
    pg_password=$(openssl rand -hex 16)
    pg_superpass=$(openssl rand -hex 16)
    redis_password=$(openssl rand -hex 16)
    cat >"$dir/state" <<EOF
pg_port=$pg_port
pgb_port=$pgb_port
redis_port=$redis_port
redis_tls_port=$redis_tls_port
pg_password=$pg_password
redis_password=$redis_password
EOF
    chmod 600 "$dir/state"

    make_tls
    pg_init
    pgb_write_config
    redis_write_config redis
    redis_write_config redis-tls

    pg_start
    pg_setup
    redis_start redis
    redis_start redis-tls
    pgb_start
    # End to end: the kiln role through pgbouncer (SCRAM both ways).
    if ! PGPASSWORD=$pg_password PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -At \
            -h 127.0.0.1 -p "$pgb_port" -U kiln -d kiln -c 'SELECT 1' >/dev/null 2>"$dir/pgbouncer/check.err"; then
        cat "$dir/pgbouncer/check.err" >&2
        die "cannot query PostgreSQL through pgbouncer as kiln"
    fi
    write_env
    log "started in $(( ($(date +%s%N) - t0) / 1000000 )) ms: postgres :$pg_port, pgbouncer :$pgb_port," \
        "redis :$redis_port, redis-tls :$redis_tls_port (env: $dir/env)"
}

cmd_stop() {
    [ -d "$dir" ] || return 0
    if [ -f "$dir/state" ]; then
        # shellcheck disable=SC1091
        . "$dir/state"
    fi
    stop_all
    rm -f "$dir/env"
}

cmd_status() {
    local s rc=0
    load_state
    for s in "${SERVICES[@]}"; do
        if svc_running "$s"; then echo "$s: running"; else echo "$s: stopped"; rc=1; fi
    done
    return $rc
}

cmd_run() {
    local rc=0
    cmd_start
    (
        set -a
        # shellcheck disable=SC1091
        . "$dir/env"
        set +a
        exec "$@"
    ) || rc=$?
    cmd_stop
    return $rc
}

# -------------------------------------------------------------------- main --

[ $# -ge 2 ] || usage
action=$1
dir=$2
shift 2
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
dir=${dir%/}

case $action in
    start) [ $# = 0 ] || usage; mkdir -p "$dir"; dir=$(cd "$dir" && pwd -P); cmd_start ;;
    stop) [ $# = 0 ] || usage; cmd_stop ;;
    status) [ $# = 0 ] || usage; cmd_status ;;
    run) [ $# -ge 1 ] || usage; mkdir -p "$dir"; dir=$(cd "$dir" && pwd -P); cmd_run "$@" ;;
    stop1|start1|restart|pause1|resume1)
        [ $# = 1 ] || usage
        load_state
        case $action in
            stop1) svc_stop "$1" ;;
            start1) svc_start "$1" ;;
            restart) svc_stop "$1"; svc_start "$1" ;;
            pause1) svc_signal "$1" STOP ;;
            resume1) svc_signal "$1" CONT ;;
        esac ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
