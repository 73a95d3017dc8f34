#!/usr/bin/env bash
# Kiln accounts benchmark (docs/AUTHENTICATION.md, "Email and password";
# bench/README.md, "Accounts"):
#   1. password sign-ins per second (POST /auth/password/login, Argon2id at
#      OWASP's parameters: 19 MiB, 2 passes) under wrk at each concurrency
#      of BENCH_ACCOUNTS_CONCURRENCY, with the process's peak RSS during
#      the run next to the bound the hashing should keep it under
#      (PASSWORD_HASH_CONCURRENCY x 19 MiB over idle);
#   2. GET /api/v1/me with a password session and with a development-login
#      session on the same kiln, interleaved rounds: the ratio should be 1
#      (a session is a session); with KILN_BIN_BEFORE, the same route on
#      the build before (a development-login session there) as well.
# One kiln on embedded defaults (SQLite, sessions in memory), rate limits
# off. Raw output in build/bench/accounts/.
#
#   bench/accounts.sh
#   KILN_BIN_BEFORE=/path/to/old/kiln bench/accounts.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KILN_BIN=${KILN_BIN:-build/kiln}
KILN_BIN_BEFORE=${KILN_BIN_BEFORE:-}
BENCH_ACCOUNTS_SECONDS=${BENCH_ACCOUNTS_SECONDS:-${BENCH_SECONDS:-10}}
BENCH_ACCOUNTS_CONCURRENCY=${BENCH_ACCOUNTS_CONCURRENCY:-"$(nproc) 16 64"}
BENCH_ACCOUNTS_ROUNDS=${BENCH_ACCOUNTS_ROUNDS:-${BENCH_ROUNDS:-2}}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}

out=build/bench/accounts
BENCH_TAG="bench accounts"
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_ACCOUNTS_SECONDS BENCH_ACCOUNTS_ROUNDS BENCH_CONNECTIONS BENCH_THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for c in $BENCH_ACCOUNTS_CONCURRENCY; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "BENCH_ACCOUNTS_CONCURRENCY: '$c' is not a positive integer"
done
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/deps.sh)"
[ -x "$KILN_BIN" ] || die "$KILN_BIN not found or not executable (run: make build/kiln)"
[ -z "$KILN_BIN_BEFORE" ] || [ -x "$KILN_BIN_BEFORE" ] || die "KILN_BIN_BEFORE=$KILN_BIN_BEFORE is not executable"

rm -rf "$out"
mkdir -p "$out"
: >"$out/meta.env"
meta kiln_version "$("$KILN_BIN" version 2>/dev/null | head -n 1)"
meta git_head "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta cpus "$(nproc)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"

pids=()
cleanup() { for p in "${pids[@]}"; do stop_pid "$p"; done; }
trap cleanup EXIT

start_kiln() {   # start_kiln NAME BIN: sets port, pid
    local name=$1 bin=$2
    [[ $bin == /* ]] || bin=$root/$bin
    port=$(free_port)
    mkdir -p "$out/$name"
    (cd "$out/$name" && exec env -i PATH="$PATH" KILN_ENV=test PORT="$port" \
        SECRET_KEY_BASE="$(head -c 48 /dev/urandom | base64 -w0)" \
        PUBLIC_URL="http://127.0.0.1:$port" DB_PATH="$root/$out/$name/kiln.db" \
        RATE_LIMIT_PUBLIC=0 RATE_LIMIT_PROTECTED=0 LOG_LEVEL=warning \
        "$bin" serve) >"$out/$name.stdout" 2>"$out/$name.stderr" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/livez" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    alive_or_die "$name" "$pid"
    die "$name did not answer /livez"
}

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

post() {   # post PORT PATH JSON: prints the body; the headers to $out/headers
    curl -s -D "$out/headers" -H 'Content-Type: application/json' -X POST \
        --data "$3" "http://127.0.0.1:$1$2"
}
cookie_of() { sed -n 's/^set-cookie: _backend_session=\([^;]*\);.*/\1/ip' "$out/headers" | tail -n 1; }

start_kiln now "$KILN_BIN"
now_port=$port now_pid=$pid
email="bench-$$@example.com"
password="violet-kettle-harbour-bench"
post "$now_port" /auth/password/register "{\"email\":\"$email\",\"password\":\"$password\"}" >/dev/null
# The verification mail goes to the log (redacted): verify in the database.
"$PYTHON" - "$out/now/kiln.db" <<'PY'
import sqlite3, sys, time
for _ in range(50):
    try:
        con = sqlite3.connect(sys.argv[1], timeout=10)
        n = con.execute("UPDATE users SET email_verified_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                        "WHERE email LIKE 'bench-%'").rowcount
        con.commit()
        if n:
            break
    except sqlite3.OperationalError:
        pass
    time.sleep(0.1)
PY
post "$now_port" /auth/password/login "{\"email\":\"$email\",\"password\":\"$password\"}" >/dev/null
pw_cookie=$(cookie_of)
[ -n "$pw_cookie" ] || die "the password sign-in did not start a session ($(head -n 1 "$out/headers"))"
post "$now_port" /auth/dev/login '{"email":"dev-bench@example.com","name":"Dev"}' >/dev/null
dev_cookie=$(cookie_of)
idle_kib=$(rss_kib "$now_pid")
meta idle_rss_kib "$idle_kib"

# 1. sign-ins
export BENCH_LOGIN_EMAIL=$email BENCH_LOGIN_PASSWORD=$password
for c in $BENCH_ACCOUNTS_CONCURRENCY; do
    t=$((c < BENCH_THREADS ? c : BENCH_THREADS))
    log "sign-ins: wrk -c$c -t$t -d${BENCH_ACCOUNTS_SECONDS}s"
    peak=$idle_kib
    wrk -t"$t" -c"$c" -d"${BENCH_ACCOUNTS_SECONDS}s" --timeout 30s -s bench/login.lua \
        "http://127.0.0.1:$now_port/auth/password/login" >"$out/login-c$c.txt" &
    wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        r=$(rss_kib "$now_pid" 2>/dev/null || echo 0)
        [ "$r" -gt "$peak" ] && peak=$r
        sleep 0.05
    done
    wait "$wrk_pid"
    echo "peak_rss_kib: $peak" >>"$out/login-c$c.txt"
done

# 2. /api/v1/me
if [ -n "$KILN_BIN_BEFORE" ]; then
    start_kiln before "$KILN_BIN_BEFORE"
    before_port=$port
    post "$before_port" /auth/dev/login '{"email":"dev-bench@example.com","name":"Dev"}' >/dev/null
    before_cookie=$(cookie_of)
fi
me() {   # me NAME PORT COOKIE ROUND
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d2s -H "Cookie: _backend_session=$3" \
        "http://127.0.0.1:$2/api/v1/me" >/dev/null
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${BENCH_ACCOUNTS_SECONDS}s" --latency \
        -H "Cookie: _backend_session=$3" "http://127.0.0.1:$2/api/v1/me" >"$out/me-$1-r$4.txt"
}
for r in $(seq "$BENCH_ACCOUNTS_ROUNDS"); do
    log "/api/v1/me round $r"
    me password "$now_port" "$pw_cookie" "$r"
    me dev "$now_port" "$dev_cookie" "$r"
    [ -z "$KILN_BIN_BEFORE" ] || me before "$before_port" "$before_cookie" "$r"
done
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

"$PYTHON" - "$out" "$BENCH_ACCOUNTS_CONCURRENCY" "$BENCH_ACCOUNTS_ROUNDS" <<'PY' | tee "$out/results.txt"
import json, re, sys, os
out, conc, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
meta = dict(l.rstrip("\n").split("=", 1) for l in open(f"{out}/meta.env") if "=" in l)
cpus = int(meta["cpus"])
idle = int(meta["idle_rss_kib"])
def num(pat, text, cast=float):
    m = re.search(pat, text)
    return cast(m.group(1)) if m else None
print(f"Kiln accounts ({meta.get('kiln_version')}, tree {meta.get('git_head')}, {cpus} CPUs; "
      f"load {meta.get('load_start')} -> {meta.get('load_end')})")
print(f"Argon2id m=19456 KiB t=2 p=1; PASSWORD_HASH_CONCURRENCY default ({cpus}: the CPUs)")
print()
print("1. POST /auth/password/login (embedded defaults), wrk")
print("| connections | sign-ins/s | p50 ms | p99 ms | answers | peak RSS MiB | over idle MiB | bound (hashes x 19 MiB) |")
print("|---|---|---|---|---|---|---|---|")
for c in conc:
    t = open(f"{out}/login-c{c}.txt").read()
    rps = num(r"Requests/sec:\s+([\d.]+)", t)
    p50 = num(r"p50=(\d+)", t, int)
    p99 = num(r"p99=(\d+)", t, int)
    st = num(r"statuses: (\{.*\})", t, lambda s: json.loads(s))
    peak = num(r"peak_rss_kib: (\d+)", t, int)
    print(f"| {c} | {rps:.1f} | {p50/1000:.1f} | {p99/1000:.1f} | {st} | {peak/1024:.1f} | "
          f"{(peak-idle)/1024:.1f} | {cpus * 19} |")
print()
print(f"idle RSS before the runs: {idle/1024:.1f} MiB")
print()
print("2. GET /api/v1/me, wrk -c64 (best of the rounds)")
best = {}
for name in ("password", "dev", "before"):
    vals = []
    for r in range(1, rounds + 1):
        f = f"{out}/me-{name}-r{r}.txt"
        if os.path.exists(f):
            vals.append(num(r"Requests/sec:\s+([\d.]+)", open(f).read()))
    if vals:
        best[name] = (max(vals), vals)
for name, (b, vals) in best.items():
    print(f"| {name} session | {b:.0f} req/s | rounds {', '.join(f'{v:.0f}' for v in vals)} |")
if "password" in best and "dev" in best:
    print(f"password session / development session: {best['password'][0] / best['dev'][0]:.3f}")
if "before" in best:
    print(f"this build (password session) / the build before (dev session): "
          f"{best['password'][0] / best['before'][0]:.3f}")
PY
