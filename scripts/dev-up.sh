#!/usr/bin/env bash
# PostgreSQL and a Valkey stand-in (Debian's redis-server) on loopback for
# development, with scripts/test-services.sh doing the work, and the
# variables that point Kiln at them.
#
#   scripts/dev-up.sh [--reset] [DIR]      DIR: default build/dev
#   eval "$(scripts/dev-up.sh)"            the same, exporting the variables
#   scripts/dev-down.sh [--purge] [DIR]    stop them (by pid; data kept)
#
# The first run makes a database (role and database `kiln`, a random
# password, free ports); later runs start the same servers again on the
# same ports with the data they had. --reset starts from nothing. Valkey's
# data lives in memory only (sessions and caches: lost at dev-down).
# PostgreSQL runs with fsync off, as in the tests: fast, but a machine crash
# can lose recent writes.
#
# Standard output: `export NAME=value` lines (DATABASE_URL, VALKEY_HOST,
# VALKEY_PORT); DIR/dev.env has the same as NAME=value lines:
#   set -a; . build/dev/dev.env; set +a; build/kiln serve
# Needs the Debian packages postgresql and redis-server (scripts/deps.sh);
# as root, PostgreSQL runs as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."
prog=dev-up
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

reset=false
dir=
while [ $# -gt 0 ]; do
    case $1 in
        --reset) reset=true; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) [ -z "$dir" ] || usage; dir=$1; shift ;;
    esac
done
dir=${dir:-${KILN_DEV_DIR:-build/dev}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
svc=scripts/test-services.sh

if ! $reset && [ -f "$dir/state" ] && [ -d "$dir/pg" ]; then
    log "starting the servers of $dir again (data kept; --reset for a fresh one)"
    "$svc" start1 "$dir" postgres
    "$svc" start1 "$dir" redis
else
    log "creating PostgreSQL and Valkey in $dir"
    "$svc" start "$dir"
    # The tests' extra services (pgbouncer, Redis over TLS) are not needed
    # here; each takes a second or two to stop, so both at once.
    "$svc" stop1 "$dir" pgbouncer & p1=$!
    "$svc" stop1 "$dir" redis-tls & p2=$!
    rc=0
    wait "$p1" || rc=1
    wait "$p2" || rc=1
    [ $rc = 0 ] || die "could not stop the extra services"
fi

# Ports and the password `start` chose (test-services.sh's state file).
# shellcheck disable=SC1091
. "$dir/state"
: "${pg_port:?}" "${redis_port:?}" "${pg_password:?}"
url="postgresql://kiln:$pg_password@127.0.0.1:$pg_port/kiln"
cat >"$dir/dev.env.tmp" <<EOF
DATABASE_URL=$url
VALKEY_HOST=127.0.0.1
VALKEY_PORT=$redis_port
EOF
chmod 600 "$dir/dev.env.tmp"
mv "$dir/dev.env.tmp" "$dir/dev.env"

rel=${dir#"$PWD"/}
down=scripts/dev-down.sh
[ "$rel" = build/dev ] || down="$down $rel"
cat >&2 <<EOF
$prog: PostgreSQL 15 on 127.0.0.1:$pg_port (database kiln, user kiln)
$prog: Valkey stand-in (redis-server) on 127.0.0.1:$redis_port
$prog: use them:
    set -a; . $rel/dev.env; set +a; build/kiln serve
  or set, instead of DATABASE_URL:
    DB_HOST=127.0.0.1 DB_PORT=$pg_port DB_NAME=kiln DB_USERNAME=kiln DB_PASSWORD=$pg_password
  clients:
    psql '$url'
    redis-cli -h 127.0.0.1 -p $redis_port
  stop: $down
EOF
printf 'export DATABASE_URL=%q\n' "$url"
printf 'export VALKEY_HOST=127.0.0.1\n'
printf 'export VALKEY_PORT=%s\n' "$redis_port"
