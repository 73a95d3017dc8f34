#!/bin/bash
# `kiln gen resource` end to end, a step of `make test` (scripts/test.sh):
# copy this tree's files into a scratch folder (tracked ones, and untracked
# ones git does not ignore: the tree as it is being tested; no build/),
# generate two resources there with the kiln just built, build that copy
# once (with the unit tests that read every declaration), check that its
# OpenAPI document lists the new routes, and run the generated tests
# against its kiln (every answer goes through conftest's check against
# that document) on SQLite (embedded) and, when the test services'
# environment is loaded (scripts/test-services.sh), on PostgreSQL + Redis,
# in a database of its own that is dropped afterwards.
#
# The two resources cover every type and the flags: bookmarks (paged and
# cached; text bounds and search, bounded integer, boolean, enum, date,
# timestamp, uuid, json, a nullable reference to projects) and labels
# (unpaged; a required reference to tasks, whose rows need a project
# first, a reference to labels itself, and fields named like parameters of
# the generated tests' helpers).
#
# Usage: scripts/gen-check.sh [KILN_BIN]   (default: build/kiln)
set -euo pipefail
case "${1:-}" in
-h | --help | -*)
    echo "usage: scripts/gen-check.sh [KILN_BIN]   (default: build/kiln)" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")/.."
kiln=$(realpath "${1:-build/kiln}")
python=${PYTHON:-/usr/bin/python3}
[ -x "$kiln" ] || { echo "gen-check: $kiln is not built" >&2; exit 1; }

started=$(date +%s)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/kiln-gen-check.XXXXXX")
db=
psql_super() {
    "${KILN_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$KILN_TEST_PG_SOCKET_DIR" -p "$KILN_TEST_PG_PORT" -U "$KILN_TEST_PG_SUPERUSER" \
        -d postgres -c "$1"
}
cleanup() {
    if [ -n "$db" ]; then
        psql_super "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# Files deleted in the work tree but still tracked are left out.
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done | xargs -0 cp -P --parents -t "$scratch"
cd "$scratch"

"$kiln" gen resource bookmarks title:text:required:max=200:search url:text:required \
    rating:integer:min=1:max=5:default=3:sort read:boolean:default=false:filter \
    'kind:enum:values=article|video|podcast:default=article:filter:sort' \
    published_on:date:nullable:sort seen_at:timestamp:nullable:sort \
    ext_id:uuid:nullable:filter project_id:reference:projects:nullable:filter \
    meta:json:nullable --cache >/dev/null
"$kiln" gen resource labels task_id:reference:tasks:filter \
    parent_id:reference:labels:nullable:filter name:text:required:min=2:max=40:sort:search \
    'color:enum:values=red|green|blue:default=red' weight:integer:min=-5:default=0:sort \
    prefix:text:nullable:filter path:text:default=/:sort --unpaged >/dev/null

# A user's `make`: none of the flags of the make that runs this script.
# With it, the unit tests that read every declaration: the engine's checks
# and SQL, and the OpenAPI document against the route table.
# A third resource gets hooks of every kind (app/tests/gen/clips_hooks.c,
# spliced in before its fields and named in its declaration) and their test
# (app/tests/gen/test_clips_hooks.py), in place of its generated one.
"$kiln" gen resource clips url:text:required note:text:nullable >/dev/null
"$python" - app/src/api/resources/clips.c app/tests/gen/clips_hooks.c <<'PY'
import sys
path, hooks = sys.argv[1], open(sys.argv[2]).read()
src = open(path).read()
src = src.replace("static const struct kiln_field fields[]",
                  hooks + "\nstatic const struct kiln_field fields[]", 1)
names = ("    .before_create = clip_before_write,\n    .before_update = clip_before_write,\n"
         "    .after_create = clip_after_create,\n    .before_delete = clip_before_delete,\n"
         "    .after_delete = clip_after_delete,\n")
head, sep, tail = src.rpartition("};")
open(path, "w").write(head + names + sep + tail)
PY
cp app/tests/gen/test_clips_hooks.py app/tests/http/test_clips_hooks.py

if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -j2 build/kiln build/tests/api_engine \
        build/tests/api_openapi >build.log 2>&1; then
    tail -n 40 build.log >&2
    echo "gen-check: the generated resources do not build" >&2
    exit 1
fi
built=$(date +%s)
for t in api_engine api_openapi; do
    if ! "build/tests/$t" >"$t.log" 2>&1; then
        cat "$t.log" >&2
        echo "gen-check: unit test $t fails with the generated resources" >&2
        exit 1
    fi
done
build/kiln openapi >openapi.json
for p in /api/v1/bookmarks '/api/v1/bookmarks/{id}' /api/v1/labels '/api/v1/labels/{id}'; do
    grep -qF "\"$p\"" openapi.json || { echo "gen-check: kiln openapi lacks $p" >&2; exit 1; }
done

tests=(app/tests/http/test_bookmarks.py app/tests/http/test_labels.py
       app/tests/http/test_clips_hooks.py)
echo "gen-check: stores embedded (SQLite)"
KILN_STORES=embedded KILN_BIN=build/kiln "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
if [ "${KILN_TEST_SERVICES:-}" = 1 ] && [ -n "${KILN_TEST_PG_URL:-}" ]; then
    db="kiln_gen_check_$$"
    psql_super "CREATE DATABASE \"$db\" OWNER \"$KILN_TEST_PG_USER\""
    echo "gen-check: stores postgres (PostgreSQL database $db, Redis)"
    KILN_STORES=postgres KILN_TEST_PG_DB=$db KILN_TEST_PG_URL="${KILN_TEST_PG_URL%/*}/$db" \
        KILN_BIN=build/kiln "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
else
    echo "gen-check: no test services in the environment: PostgreSQL + Redis not run"
fi
now=$(date +%s)
echo "gen-check: passed in $((now - started)) s (build $((built - started)) s)"
