#!/usr/bin/env bash
# Kiln notes benchmark: GET /api/v1/notes?limit=20 (the list: one statement
# for a page of notes and their count for meta.total) with the list cache on (Valkey) and
# off (CACHE_TTL_SECONDS=0), and POST /api/v1/notes (one INSERT ...
# RETURNING), under wrk, against pgbench running the same statements with
# the same parameters at the same concurrency; then one hot user: 64
# connections on one session listing GET /api/v1/notes (default limit, cache
# off) against pgbench on that user's list statement. See bench/README.md.
#
#   bench/notes.sh         standalone: measures, prints the notes report
#   (bench/run.sh calls it with BENCH_NOTES_EMBEDDED=1; the report then
#    comes out of bench/report.py with everything else)
#
# PostgreSQL 15 and Redis 7 (the Valkey stand-in; the plain one) come from
# scripts/test-services.sh, started in build/bench/services-notes (fresh data
# each run) and stopped at the end. Two kilns share that database: one with
# Valkey (sessions, rate-limit counters and the list cache in it; the
# default CACHE_TTL_SECONDS), one with the in-process memory store and
# CACHE_TTL_SECONDS=0 (every list runs its statement); a third, for the hot
# user, with Valkey and CACHE_TTL_SECONDS=0. Raw output goes to
# build/bench/notes/.
#
# Exit status: 0 when every measurement ran (goals may still be MISS), or the
# part was skipped (no PostgreSQL, pgbench or Redis to run it with, or a kiln
# without PostgreSQL support or the notes endpoints); non-zero when a server
# failed to start or died, or wrk/pgbench failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_NOTES_SECONDS=${BENCH_NOTES_SECONDS:-$BENCH_SECONDS}
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-2}
BENCH_NOTES_ROUNDS=${BENCH_NOTES_ROUNDS:-${BENCH_ROUNDS:-2}}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_NOTES_USERS=${BENCH_NOTES_USERS:-4}            # users listed (and users inserting)
BENCH_NOTES_PER_USER=${BENCH_NOTES_PER_USER:-200}    # notes each listed user has
BENCH_NOTES_OTHER_USERS=${BENCH_NOTES_OTHER_USERS:-100}  # users whose notes are only there
BENCH_NOTES_HOT_NOTES=${BENCH_NOTES_HOT_NOTES:-100}  # the hot user's notes (0: no hot-user case)
BENCH_NOTES_POOL_SIZE=${BENCH_NOTES_POOL_SIZE:-}     # empty: kiln's default (DB_POOL_SIZE)
BENCH_KILN_LOG=${BENCH_KILN_LOG:-/dev/null}
BENCH_NOTES_SERVICES=${BENCH_NOTES_SERVICES:-build/bench/services-notes}
HTTP_LOOPS=${HTTP_LOOPS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

out=build/bench/notes
tool=build/bench/benchtool
host=127.0.0.1
list_limit=20

BENCH_TAG="bench notes"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_NOTES_SECONDS BENCH_WARMUP_SECONDS BENCH_NOTES_ROUNDS BENCH_CONNECTIONS \
         BENCH_THREADS BENCH_NOTES_USERS BENCH_NOTES_PER_USER HTTP_LOOPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
# pgbench takes at most 128 scripts (-f), one per user here.
[ "$BENCH_NOTES_USERS" -le 64 ] || die "BENCH_NOTES_USERS must be at most 64"
[[ $BENCH_NOTES_OTHER_USERS =~ ^[0-9]+$ ]] ||
    die "BENCH_NOTES_OTHER_USERS must be a non-negative integer (got '$BENCH_NOTES_OTHER_USERS')"
[[ $BENCH_NOTES_HOT_NOTES =~ ^[0-9]+$ ]] ||
    die "BENCH_NOTES_HOT_NOTES must be a non-negative integer (got '$BENCH_NOTES_HOT_NOTES')"
[ -z "$BENCH_NOTES_POOL_SIZE" ] || [[ $BENCH_NOTES_POOL_SIZE =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_NOTES_POOL_SIZE must be a positive integer"

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"

skip() {   # this part cannot run here: say why, exit 0
    log "skipped: $*"
    meta skipped "$*"
    exit 0
}
pgbench_bin=$(command -v pgbench || true)
[ -n "$pgbench_bin" ] || pgbench_bin=$PG_BIN/pgbench
psql_bin=$(command -v psql || true)
[ -n "$psql_bin" ] || psql_bin=$PG_BIN/psql
[ -x "$PG_BIN/initdb" ] ||
    skip "PostgreSQL 15 is not installed ($PG_BIN/initdb; Debian package postgresql): the kilns run on it"
[ -x "$pgbench_bin" ] || skip "pgbench not found (Debian package postgresql-contrib)"
[ -x "$psql_bin" ] || skip "psql not found (Debian package postgresql-client)"
command -v redis-server >/dev/null ||
    skip "redis-server not found (Debian package redis-server): the cached kiln needs it"
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
kiln_pids=() wrk_pid="" pgbench_pid="" services_up=0
cleanup() {
    trap - EXIT INT TERM
    local p
    stop_pid "$wrk_pid"
    stop_pid "$pgbench_pid"
    for p in "${kiln_pids[@]}"; do stop_pid "$p"; done
    if [ "$services_up" = 1 ]; then
        scripts/test-services.sh stop "$BENCH_NOTES_SERVICES" >>"$out/services.log" 2>&1 || true
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
    local pool=()
    [ -z "$BENCH_NOTES_POOL_SIZE" ] || pool=(DB_POOL_SIZE="$BENCH_NOTES_POOL_SIZE")
    log "starting $name on $host:$port"
    # Development: dev login on (how the sessions are made here). PostgreSQL
    # (the services' database; the first kiln applies the migrations, the
    # second finds them applied). Limits high enough that no user reaches
    # them, but on: the limiter's counter is part of every request.
    setsid env -i PATH="$PATH" KILN_ENV=development SECRET_KEY_BASE="$secret" \
        BIND_ADDRESS=$host PORT="$port" PUBLIC_URL="http://$host:$port" HTTP_LOOPS="$HTTP_LOOPS" \
        LOG_LEVEL=info DATABASE_URL="$KILN_TEST_PG_URL" MIGRATE_ON_START=true \
        RATE_LIMIT_PUBLIC=1000000 RATE_LIMIT_PROTECTED=1000000 "${pool[@]}" "$@" \
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

# --------------------------------------------------------------- services --
log "starting PostgreSQL, Redis (and the other test services) in $BENCH_NOTES_SERVICES"
services_up=1
scripts/test-services.sh start "$BENCH_NOTES_SERVICES" >"$out/services.log" 2>&1 ||
    { cat "$out/services.log" >&2; die "scripts/test-services.sh start failed"; }
# shellcheck disable=SC1091
. "$BENCH_NOTES_SERVICES/env"
[ -n "${KILN_TEST_PG_URL:-}" ] || die "$BENCH_NOTES_SERVICES/env has no KILN_TEST_PG_URL"
export PGPASSWORD=$KILN_TEST_PG_PASSWORD PGCONNECT_TIMEOUT=10
pg_args=(-h "$KILN_TEST_PG_HOST" -p "$KILN_TEST_PG_PORT" -U "$KILN_TEST_PG_USER")
pg_db=$KILN_TEST_PG_DB
redis_host=$KILN_TEST_REDIS_HOST
redis_port=$KILN_TEST_REDIS_PORT
psql_q() { "$psql_bin" "${pg_args[@]}" -d "$pg_db" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

# VACUUM ANALYZE notes until the visibility map covers the table, as
# autovacuum leaves a table that is mostly read: a VACUUM right after a bulk
# write can leave every page not all-visible (seen here: relallvisible 0
# after two in a row), and then the list's count(*) reads 200 heap pages
# instead of an index-only scan. Both kiln and pgbench run on the result.
settle_notes() {
    local i vis
    for i in 1 2 3 4 5 6 7 8 9 10; do
        psql_q "VACUUM ANALYZE notes" >/dev/null || return 1
        vis=$(psql_q "SELECT relallvisible >= relpages FROM pg_class WHERE relname = 'notes'") ||
            return 1
        [ "$vis" = t ] && return 0
        sleep 0.3
    done
    log "warning: notes still not all-visible after 10 VACUUMs (an open snapshot?)"
}

# ------------------------------------------------------------------ kilns --
start_kiln kiln-notes CACHE_TTL_SECONDS=0
if ! "$tool" get "$host" "${kiln_port[kiln-notes]}" "/api/v1/notes?limit=$list_limit" 2000 \
        2>/dev/null | head -n 1 | grep -q '^401 '; then
    skip "$KILN_BIN has no GET /api/v1/notes answering 401 without a session (no notes endpoints yet)"
fi
start_kiln kiln-notes-valkey VALKEY_HOST="$redis_host" VALKEY_PORT="$redis_port"
# The hot user's kiln: sessions and rate-limit counters in Valkey, as in
# production, but no list cache, so every list runs its statement.
kilns=(kiln-notes kiln-notes-valkey)
if [ "$BENCH_NOTES_HOT_NOTES" -gt 0 ]; then
    start_kiln kiln-notes-hot VALKEY_HOST="$redis_host" VALKEY_PORT="$redis_port" CACHE_TTL_SECONDS=0
    kilns+=(kiln-notes-hot)
fi

# -------------------------------------------------------- users and notes --
# BENCH_NOTES_USERS users to list (BENCH_NOTES_PER_USER notes each, made
# through the API on the uncached kiln) and as many other users to insert
# as: inserts never grow the lists being measured. Each kiln gets its own
# sessions (dev login finds the users the first one made). Then one wrk
# script per target cycles through its users' cookies (request strings made
# once, in init).
insert_title="Bench note"
insert_content="A note written by bench/notes.sh: about as long as a short note someone types into the app, one line of plain text."
log "making $BENCH_NOTES_USERS users with $BENCH_NOTES_PER_USER notes each, and $BENCH_NOTES_USERS users to insert as"
"$PYTHON" - "$host" "${kiln_port[kiln-notes]}" "${kiln_port[kiln-notes-valkey]}" \
    "$BENCH_NOTES_USERS" "$BENCH_NOTES_PER_USER" "$list_limit" "$out" \
    "$insert_title" "$insert_content" <<'EOF' || die "could not make the users, notes and sessions"
import http.client, json, sys
host, port_plain, port_valkey = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n_users, per_user, limit, out = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
title, content = sys.argv[8], sys.argv[9]
list_path = "/api/v1/notes?limit=%d" % limit

def call(conn, method, path, cookie=None, body=None):
    headers = {}
    if cookie:
        headers["Cookie"] = "_backend_session=" + cookie
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, r.getheaders(), data

def login(conn, email):
    status, headers, _ = call(conn, "POST", "/auth/dev/login",
                              body={"email": email, "name": "Bench " + email.split("@")[0]})
    if status != 200:
        sys.exit("dev login answered %d" % status)
    for k, v in headers:
        if k.lower() == "set-cookie" and v.startswith("_backend_session="):
            return v.split(";", 1)[0].split("=", 1)[1]
    sys.exit("dev login set no _backend_session cookie")

def check_list(conn, cookie, where):
    status, _, data = call(conn, "GET", list_path, cookie)
    if status != 200:
        sys.exit("%s: GET %s answered %d" % (where, list_path, status))
    meta = json.loads(data)["meta"]
    want = min(limit, per_user)
    if meta["total"] != per_user or meta["count"] != want:
        sys.exit("%s: GET %s gave count %s total %s, not %d and %d"
                 % (where, list_path, meta["count"], meta["total"], want, per_user))
    return len(data)

list_emails = ["notes-list-%d@example.com" % i for i in range(n_users)]
insert_emails = ["notes-insert-%d@example.com" % i for i in range(n_users)]
cookies = {}
plain = http.client.HTTPConnection(host, port_plain, timeout=10)
valkey = http.client.HTTPConnection(host, port_valkey, timeout=10)
for name, conn in (("kiln-notes", plain), ("kiln-notes-valkey", valkey)):
    cookies[name] = {"list": [login(conn, e) for e in list_emails],
                     "insert": [login(conn, e) for e in insert_emails]}
for u, cookie in enumerate(cookies["kiln-notes"]["list"]):
    for j in range(per_user):
        status, _, data = call(plain, "POST", "/api/v1/notes", cookie,
                               {"title": "Note %d of list user %d" % (j, u),
                                "content": "Body of note %d of list user %d. " % (j, u) + content})
        if status != 201:
            sys.exit("POST /api/v1/notes answered %d: %s" % (status, data[:200]))
sizes = set()
for u in range(n_users):
    sizes.add(check_list(plain, cookies["kiln-notes"]["list"][u], "kiln-notes"))
    # twice on the cached kiln: the second answer comes from the cache
    for _ in range(2):
        sizes.add(check_list(valkey, cookies["kiln-notes-valkey"]["list"][u], "kiln-notes-valkey"))
with open(out + "/list_body_bytes", "w") as f:
    f.write("%d\n" % max(sizes))

def lua(path, comment, method, url, cookie_list, body=None):
    with open(path, "w") as f:
        f.write("-- written by bench/notes.sh: %s\n" % comment)
        f.write("local cookies = {\n")
        for c in cookie_list:
            f.write('  "%s",\n' % c)
        f.write("}\n")
        if body is not None:
            f.write("local body = %s\n" % json.dumps(json.dumps(body)))
        f.write("local reqs = {}\nlocal i = 0\n")
        f.write("init = function(args)\n  for k, c in ipairs(cookies) do\n")
        if body is None:
            f.write('    reqs[k] = wrk.format("%s", "%s", { ["Cookie"] = "_backend_session=" .. c })\n'
                    % (method, url))
        else:
            f.write('    reqs[k] = wrk.format("%s", "%s", { ["Cookie"] = "_backend_session=" .. c,\n'
                    '                                  ["Content-Type"] = "application/json" }, body)\n'
                    % (method, url))
        f.write("  end\nend\n")
        f.write("request = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
        f.write(open("bench/latency.lua").read())

for name, target in (("kiln-notes", ""), ("kiln-notes-valkey", "-valkey")):
    lua("%s/kiln-list%s.lua" % (out, target), "GET %s, one session per listed user" % list_path,
        "GET", list_path, cookies[name]["list"])
    lua("%s/kiln-insert%s.lua" % (out, target), "POST /api/v1/notes, one session per inserting user",
        "POST", "/api/v1/notes", cookies[name]["insert"], {"title": title, "content": content})
EOF
log "made $((BENCH_NOTES_USERS * BENCH_NOTES_PER_USER)) notes and $((BENCH_NOTES_USERS * 2)) sessions on each kiln"
# Other users' notes, in bulk (as the EXPLAIN test in app/tests/http does):
# the listed users' rows are a small part of the table, as in production,
# so the planner picks the index for the list and the count.
if [ "$BENCH_NOTES_OTHER_USERS" -gt 0 ]; then
    log "adding $BENCH_NOTES_OTHER_USERS other users with $BENCH_NOTES_PER_USER notes each (SQL)"
    psql_q "INSERT INTO users (id, email) SELECT gen_random_uuid(), 'notes-other-' || g || '@example.com'
              FROM generate_series(1, $BENCH_NOTES_OTHER_USERS) g" >/dev/null &&
    psql_q "INSERT INTO notes (id, user_id, title, content, archived, inserted_at, updated_at)
              SELECT gen_random_uuid(), u.id, 'Other note ' || g, 'Body of other note ' || g || '. ' ||
                     '${insert_content//\'/\'\'}', g % 10 = 0, now() - g * interval '1 second',
                     now() - g * interval '1 second'
              FROM users u, generate_series(1, $BENCH_NOTES_PER_USER) g
              WHERE u.email LIKE 'notes-other-%'" >/dev/null ||
        die "could not add the other users' notes"
fi
# Settled statistics and visibility map for both kiln and pgbench.
settle_notes || die "VACUUM ANALYZE notes failed"

# ---------------------------------------------------------- pgbench scripts --
# The statements the engine (app/src/api/engine.c) builds for the notes
# declaration, with $n in its places; checked below against
# app/tests/unit/api_engine.c, which asserts that the engine builds exactly
# these. pgbench -M extended sends them as kiln does
# (unnamed statements, text parameters of unspecified type); each :name
# becomes one parameter. The INSERT's id ($1, a UUID made by kiln) is
# gen_random_uuid(); its timestamp ($3, RFC 3339 text from kiln) is one
# text value per run, and archived ($6) is '0' as kiln sends it.
psql_q "SELECT email || ' ' || id FROM users
        WHERE email LIKE 'notes-list-%' OR email LIKE 'notes-insert-%' ORDER BY email" \
    >"$out/users.txt" || die "cannot read the users' ids"
"$PYTHON" - "$out" "$BENCH_NOTES_USERS" app/tests/unit/api_engine.c <<'EOF' ||
import re, sys
out, n = sys.argv[1], int(sys.argv[2])
COLUMNS = "id, title, content, archived, inserted_at, updated_at"
WHERE = " FROM notes WHERE user_id = $1 AND archived = $2"
ORDER = " ORDER BY inserted_at DESC, id DESC LIMIT $3 OFFSET $4"
INSERT = ("INSERT INTO notes (id, user_id, inserted_at, updated_at, title, content, archived) "
          "VALUES ($1, $2, $3, $3, $4, $5, $6) RETURNING ")
COUNT = "SELECT count(*)" + WHERE
# One statement per list: the page with the total as a subquery.
LIST = "SELECT " + COLUMNS + ", (" + COUNT + ") AS total" + WHERE + ORDER
ADD = INSERT + COLUMNS

# Does the engine still build these? The unit test asserts each exactly;
# join its adjacent C string literals and unescape.
src = open(sys.argv[3]).read()
src = re.sub(r'"\s*"', "", src).replace('\\"', '"').replace("\\\\", "\\")
missing = [f for f in ('"%s"' % LIST, '"%s"' % ADD) if f not in src]

ids = {}
for line in open(out + "/users.txt").read().split("\n"):
    if line.strip():
        email, uid = line.split()
        ids[email] = uid
with open(out + "/pgbench.vars", "w") as v:
    for i in range(n):
        for kind in ("list", "insert"):
            v.write("%s%d=%s\n" % (kind, i, ids["notes-%s-%d@example.com" % (kind, i)]))

def sub(sql, params):   # $n -> params[n], highest first ($1 before $10)
    for k in sorted(params, reverse=True):
        sql = sql.replace("$%d" % k, params[k])
    return sql

for i in range(n):
    p = {1: ":list%d" % i, 2: ":archived", 3: ":limit", 4: ":offset"}
    with open("%s/pgbench-list-%d.sql" % (out, i), "w") as f:
        f.write(sub(LIST, p) + ";\n")
    p = {1: "gen_random_uuid()", 2: ":insert%d" % i, 3: ":now", 4: ":title", 5: ":content",
         6: ":archived"}
    with open("%s/pgbench-insert-%d.sql" % (out, i), "w") as f:
        f.write(sub(ADD, p) + ";\n")
# The hot user's list: the same statement; its id and the default limit
# (from GET /api/v1/notes without ?limit) are -D variables at run time.
p = {1: ":hot", 2: ":archived", 3: ":hotlimit", 4: ":offset"}
with open("%s/pgbench-hot.sql" % out, "w") as f:
    f.write(sub(LIST, p) + ";\n")
with open("%s/explain-hot.sql.in" % out, "w") as f:
    f.write("EXPLAIN (ANALYZE, BUFFERS) " + sub(LIST, {1: "'@HOT@'", 2: "'0'",
                                                      3: "'@LIMIT@'", 4: "'0'"}) + ";\n")
# EXPLAIN of the list's statement for the first listed user, with
# kiln's parameter values as literals (the custom plan an unnamed statement
# gets).
lit = {1: "'%s'" % ids["notes-list-0@example.com"], 2: "'0'", 3: "'20'", 4: "'0'"}
with open(out + "/explain.sql", "w") as f:
    f.write("EXPLAIN " + sub(LIST, lit) + ";\n")
with open(out + "/kiln.sql", "w") as f:
    f.write("-- what the engine sends for GET /api/v1/notes (one statement) and POST:\n")
    f.write(LIST + ";\n" + ADD + ";\n")
with open(out + "/sql_check", "w") as f:
    f.write("ok\n" if not missing else "missing: " + " | ".join(missing) + "\n")
EOF
    die "cannot write the pgbench scripts"
"$psql_bin" "${pg_args[@]}" -d "$pg_db" -X -q -v ON_ERROR_STOP=1 -f "$out/explain.sql" \
    >"$out/explain.txt" 2>&1 || { cat "$out/explain.txt" >&2; die "EXPLAIN of the list failed"; }
# The page and its total should both read the index (Index Scan, Index Only
# Scan or Bitmap Index Scan).
list_plan_index=$(grep -c 'Index.*Scan.*notes_user_archived_inserted_idx' "$out/explain.txt" || true)
[ "$list_plan_index" -ge 2 ] ||
    log "warning: the list does not use notes_user_archived_inserted_idx twice (see $out/explain.txt)"
sql_check=$(cat "$out/sql_check")
if [ "$sql_check" != ok ]; then
    log "warning: app/tests/unit/api_engine.c no longer asserts the statements this script copies ($sql_check); update bench/notes.sh"
fi
pg_vars=(-D archived=0 -D limit="$list_limit" -D offset=0 -D title="$insert_title"
         -D content="$insert_content")
while IFS= read -r line; do pg_vars+=(-D "$line"); done <"$out/pgbench.vars"
list_scripts=() insert_scripts=()
for i in $(seq 0 $((BENCH_NOTES_USERS - 1))); do
    list_scripts+=(-f "$out/pgbench-list-$i.sql")
    insert_scripts+=(-f "$out/pgbench-insert-$i.sql")
done

targets=(kiln-list-valkey kiln-list kiln-insert kiln-insert-valkey pgbench-list pgbench-insert)

# After each insert run: remove what it added, fresh statistics. Every run
# then finds the same table (the list's plans do not drift as the insert
# users' rows pile up, inserts do not slow down round after round).
reset_inserts() {
    local ids
    ids=$(grep '^insert' "$out/pgbench.vars" | sed "s/^[^=]*=\(.*\)$/'\1'/" | paste -sd, -)
    psql_q "DELETE FROM notes WHERE user_id IN ($ids)" >/dev/null &&
        settle_notes || die "cannot remove the inserted notes"
}

run_target() {   # run_target TARGET SECONDS OUTFILE
    local t=$1 secs=$2 file=$3 rc=0 kiln path
    case $t in
        kiln-*)
            kiln="kiln-notes" path="/api/v1/notes"
            case $t in
                *-valkey) kiln="kiln-notes-valkey" ;;
                kiln-hot) kiln="kiln-notes-hot" ;;
            esac
            wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${secs}s" --latency \
                -s "$out/$t.lua" "http://$host:${kiln_port[$kiln]}$path" >"$file" 2>&1 &
            wrk_pid=$!
            wait "$wrk_pid" || rc=$?
            wrk_pid=""
            alive_or_die "$kiln" "${kiln_pid[$kiln]}"
            if [ "$rc" != 0 ] || ! grep -q '^Requests/sec:' "$file"; then
                cat "$file" >&2
                die "wrk failed on $t (exit status $rc)"
            fi ;;
        pgbench-*)
            local scripts=("${list_scripts[@]}")
            [ "$t" = pgbench-insert ] && scripts=("${insert_scripts[@]}")
            [ "$t" = pgbench-hot ] && scripts=(-f "$out/pgbench-hot.sql")
            # -l: one line per transaction (its latency in µs), so the
            # report has pgbench's own p50/p99/p99.9 next to kiln's
            rm -f "${file%.txt}".pglog*
            "$pgbench_bin" -n -c "$BENCH_CONNECTIONS" -j "$BENCH_THREADS" -T "$secs" -M extended \
                -l --log-prefix="${file%.txt}.pglog" \
                "${pg_vars[@]}" -D now="$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" "${scripts[@]}" \
                "${pg_args[@]}" "$pg_db" >"$file" 2>&1 &
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
    case $t in *insert*) reset_inserts ;; esac
}

meta cpus "$(nproc)"
meta http_loops "$HTTP_LOOPS"
meta seconds "$BENCH_NOTES_SECONDS"
meta warmup_seconds "$BENCH_WARMUP_SECONDS"
meta rounds "$BENCH_NOTES_ROUNDS"
meta connections "$BENCH_CONNECTIONS"
meta threads "$BENCH_THREADS"
meta users "$BENCH_NOTES_USERS"
meta notes_per_user "$BENCH_NOTES_PER_USER"
meta other_users "$BENCH_NOTES_OTHER_USERS"
meta hot_notes "$BENCH_NOTES_HOT_NOTES"
meta notes_rows_before "$(psql_q "SELECT count(*) FROM notes")"
meta list_plan_index "$list_plan_index"
meta list_limit "$list_limit"
meta list_body_bytes "$(cat "$out/list_body_bytes")"
meta db_pool_size "${BENCH_NOTES_POOL_SIZE:-default}"
meta sql_check "$sql_check"
meta kiln_bin "$KILN_BIN"
meta redis_version "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
meta postgres_version "$("$PG_BIN/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([^ ]*\).*/\1/p')"
meta pgbench_version "$("$pgbench_bin" --version | awk '{print $3}')"
meta wrk_version "$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')"

for t in "${targets[@]}"; do
    log "warmup $t (${BENCH_WARMUP_SECONDS}s)"
    run_target "$t" "$BENCH_WARMUP_SECONDS" "$out/warmup-$t.txt"
done
for r in $(seq "$BENCH_NOTES_ROUNDS"); do
    for t in "${targets[@]}"; do
        log "round $r/$BENCH_NOTES_ROUNDS: $t (${BENCH_NOTES_SECONDS}s)"
        run_target "$t" "$BENCH_NOTES_SECONDS" "$out/run-$t-r$r.txt"
        case $t in
            kiln-*) log "  $(grep '^Requests/sec:' "$out/run-$t-r$r.txt")" ;;
            *) log "  $(grep '^tps = ' "$out/run-$t-r$r.txt")" ;;
        esac
    done
done

# ------------------------------------------------------------ one hot user --
# One user with BENCH_NOTES_HOT_NOTES notes, all 64 connections on its one
# session (one rate-limit counter, one user's index range): GET
# /api/v1/notes with the default limit on kiln-notes-hot (Valkey, cache
# off), and pgbench on the same statement for that user. The notes are made
# here, after the last VACUUM of the main rounds (the insert runs' clean-up
# vacuums the whole table, hence a phase of its own, after them, with the
# same warmup and rounds, kiln and pgbench interleaved), through POST
# /api/v1/notes as a client makes them, and nothing vacuums the table
# afterwards (100 inserts are far below autovacuum's thresholds; the vacuum
# counts in meta.env say if one ran anyway): the hot user's rows are the
# table's only ones not all-visible, so the count's index-only scan fetches
# their heap tuples, for kiln and pgbench alike (explain-hot.txt).
notes_vacuums() {
    psql_q "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'notes'"
}
# hot_visibility USER_ID: "A/P H/N": A of the table's P pages all-visible in
# the visibility map, H of the user's N notes on pages that are not
# (pg_visibility, as the services' superuser over the unix socket); "-"
# where that cannot be read.
hot_visibility() {
    "$psql_bin" -h "$KILN_TEST_PG_SOCKET_DIR" -p "$KILN_TEST_PG_PORT" -U "$KILN_TEST_PG_SUPERUSER" \
        -d "$pg_db" -X -q -A -t -v ON_ERROR_STOP=1 2>/dev/null <<SQL || echo -
CREATE EXTENSION IF NOT EXISTS pg_visibility;
SELECT (SELECT all_visible || '/' || pg_relation_size('notes') / current_setting('block_size')::int
          FROM pg_visibility_map_summary('notes')) || ' ' ||
       (SELECT count(*) FILTER (WHERE NOT v.all_visible) || '/' || count(*)
          FROM notes n JOIN pg_visibility_map('notes') v
            ON v.blkno = (n.ctid::text::point)[0]::bigint
         WHERE n.user_id = '$1');
SQL
}
if [ "$BENCH_NOTES_HOT_NOTES" -gt 0 ]; then
    log "one hot user: $BENCH_NOTES_HOT_NOTES notes through POST /api/v1/notes on kiln-notes-hot (no VACUUM after)"
    "$PYTHON" - "$host" "${kiln_port[kiln-notes-hot]}" "$BENCH_NOTES_HOT_NOTES" "$out" \
        "$insert_content" <<'PYEOF' || die "could not make the hot user's notes and session"
import http.client, json, sys
host, port, n, out, content = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
conn = http.client.HTTPConnection(host, port, timeout=10)

def call(method, path, cookie=None, body=None):
    headers = {}
    if cookie:
        headers["Cookie"] = "_backend_session=" + cookie
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.getheaders(), r.read()

status, headers, _ = call("POST", "/auth/dev/login",
                          body={"email": "notes-hot@example.com", "name": "Bench hot user"})
if status != 200:
    sys.exit("dev login answered %d" % status)
cookie = None
for k, v in headers:
    if k.lower() == "set-cookie" and v.startswith("_backend_session="):
        cookie = v.split(";", 1)[0].split("=", 1)[1]
if not cookie:
    sys.exit("dev login set no _backend_session cookie")
for j in range(n):
    status, _, data = call("POST", "/api/v1/notes", cookie,
                           {"title": "Note %d of the hot user" % j,
                            "content": "Body of note %d of the hot user. " % j + content})
    if status != 201:
        sys.exit("POST /api/v1/notes answered %d: %s" % (status, data[:200]))
status, _, data = call("GET", "/api/v1/notes", cookie)
if status != 200:
    sys.exit("GET /api/v1/notes answered %d" % status)
meta = json.loads(data)["meta"]
if meta["total"] != n or meta["count"] != min(meta["limit"], n):
    sys.exit("GET /api/v1/notes gave count %s total %s limit %s for %d notes"
             % (meta["count"], meta["total"], meta["limit"], n))
with open(out + "/hot_limit", "w") as f:
    f.write("%d\n" % meta["limit"])
with open(out + "/hot_body_bytes", "w") as f:
    f.write("%d\n" % len(data))
# One session on every connection: a static request (wrk.headers), and the
# latency line of bench/latency.lua.
with open(out + "/kiln-hot.lua", "w") as f:
    f.write("-- written by bench/notes.sh: GET /api/v1/notes, the one hot user's session\n")
    f.write('wrk.headers["Cookie"] = "_backend_session=%s"\n' % cookie)
    f.write(open("bench/latency.lua").read())
PYEOF
    hot_id=$(psql_q "SELECT id FROM users WHERE email = 'notes-hot@example.com'") ||
        die "cannot read the hot user's id"
    [ -n "$hot_id" ] || die "no hot user in the database"
    hot_limit=$(cat "$out/hot_limit")
    pg_vars+=(-D hot="$hot_id" -D hotlimit="$hot_limit")
    meta hot_user_id "$hot_id"
    meta hot_limit "$hot_limit"
    meta hot_body_bytes "$(cat "$out/hot_body_bytes")"
    meta hot_notes_rows "$(psql_q "SELECT count(*) FROM notes")"
    meta hot_visibility_before "$(hot_visibility "$hot_id")"
    meta hot_vacuums_before "$(notes_vacuums)"
    for t in kiln-hot pgbench-hot; do
        log "warmup $t (${BENCH_WARMUP_SECONDS}s)"
        run_target "$t" "$BENCH_WARMUP_SECONDS" "$out/warmup-$t.txt"
    done
    for r in $(seq "$BENCH_NOTES_ROUNDS"); do
        for t in kiln-hot pgbench-hot; do
            log "round $r/$BENCH_NOTES_ROUNDS: $t (${BENCH_NOTES_SECONDS}s)"
            run_target "$t" "$BENCH_NOTES_SECONDS" "$out/run-$t-r$r.txt"
            case $t in
                kiln-*) log "  $(grep '^Requests/sec:' "$out/run-$t-r$r.txt")" ;;
                *) log "  $(grep '^tps = ' "$out/run-$t-r$r.txt")" ;;
            esac
        done
    done
    meta hot_vacuums_after "$(notes_vacuums)"
    meta hot_visibility_after "$(hot_visibility "$hot_id")"
    # The hot list's plan as it ran (Heap Fetches: its rows not all-visible).
    sed "s/@HOT@/$hot_id/g; s/@LIMIT@/$hot_limit/g" "$out/explain-hot.sql.in" >"$out/explain-hot.sql"
    "$psql_bin" "${pg_args[@]}" -d "$pg_db" -X -q -v ON_ERROR_STOP=1 -f "$out/explain-hot.sql" \
        >"$out/explain-hot.txt" 2>&1 ||
        log "warning: EXPLAIN ANALYZE of the hot list failed (see $out/explain-hot.txt)"
    meta hot_heap_fetches "$(sed -n 's/.*Heap Fetches: \([0-9]*\).*/\1/p' "$out/explain-hot.txt" | paste -sd' ' -)"
fi
rm -f "$out"/warmup-*

# The cached kiln did cache: its lists are in Valkey.
meta valkey_list_keys "$(redis-cli -h "$redis_host" -p "$redis_port" --scan --pattern '*notes:*' 2>/dev/null |
                         grep -vc 'notes_gen:' || true)"
for k in "${kilns[@]}"; do
    alive_or_die "$k" "${kiln_pid[$k]}"
    meta "${k}_stderr_lines" "$(grep -c . "$out/$k.stderr" 2>/dev/null || true)"
done

if [ "${BENCH_NOTES_EMBEDDED:-0}" != 1 ]; then
    "$PYTHON" bench/report.py --notes-only build/bench | tee "$out/results.txt"
    log "results: $out/results.txt, $out/results.json (raw output: $out/run-*.txt)"
fi
