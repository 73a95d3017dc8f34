#!/bin/sh
# Install the npm packages the tests need, from the npm registry, exactly as
# locked in their package-lock.json (`npm ci`):
#
#   app/tests/oidc/   oauth2-mock-server (the OIDC provider of the login
#                     tests, driven by app/tests/oidc/mock.js)
#   app/tests/s3/     s3rver (the S3 of the uploads tests, driven by
#                     app/tests/s3/s3.js)
#   app/tests/openapi/ @redocly/cli 1.34.20 (lints the generated OpenAPI
#                     document: make openapi-lint, redocly.yaml); the 1.x
#                     line because it runs on Node.js 18.17+, Debian 12's
#                     own nodejs (2.x needs 20.19+)
#   app/tests/webhooks/ standardwebhooks 1.3.0 (the Standard Webhooks
#                     reference library: app/tests/webhooks/verify.js checks
#                     every delivery of app/tests/http/test_webhooks.py with
#                     it; plain JavaScript, runs on Node.js 18)
#   infra/tests/      @cdktf/hcl2json (the infra policy suite)
#   app/tests/browser/ playwright-core 1.61 (drives Debian's /usr/bin/chromium
#                     for the browser test of the change feed,
#                     app/tests/http/test_events_browser.py; it downloads no
#                     browser of its own; 1.61 is the last line that runs on
#                     Node.js 18)
#
# node_modules/ is not committed (.gitignore). Quick no-op when the installed
# tree matches the lock file (a stamp holds the lock file's SHA-256), so
# every make target that needs it may call it.
#
# Needs node and npm: Debian 12's `nodejs` (scripts/debian-packages.txt) and
# `npm`. When npm is missing and we run as root, Debian's `npm` is installed
# here (it is not in debian-packages.txt, because a nodejs from NodeSource
# already provides npm and conflicts with Debian's package).
#
#   scripts/npm-deps.sh            install what is missing
#   scripts/npm-deps.sh --check    exit 1 (and say why) if not installed
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dirs="app/tests/oidc app/tests/s3 app/tests/openapi app/tests/browser app/tests/webhooks infra/tests"
check_only=0
[ "${1:-}" = --check ] && check_only=1

log() { printf 'npm-deps: %s\n' "$*" >&2; }
die() { printf 'npm-deps: error: %s\n' "$*" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

up_to_date() {   # up_to_date DIR: node_modules installed from this lock file
    [ -f "$1/node_modules/.kiln-lock-sha256" ] &&
        [ "$(cat "$1/node_modules/.kiln-lock-sha256")" = "$(sha "$1/package-lock.json")" ]
}

todo=""
for d in $dirs; do
    [ -f "$root/$d/package-lock.json" ] || die "$d/package-lock.json is missing"
    up_to_date "$root/$d" || todo="$todo $d"
done
[ -z "$todo" ] && exit 0
if [ "$check_only" = 1 ]; then
    log "not installed (or out of date):$todo; run scripts/npm-deps.sh"
    exit 1
fi

command -v node >/dev/null 2>&1 || die "node not found (Debian package nodejs; scripts/deps.sh)"
if ! command -v npm >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "npm not found: sudo apt-get install -y npm"
    log "installing Debian's npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends npm >/dev/null; } ||
        die "could not install npm"
fi

for d in $todo; do
    log "npm ci in $d"
    # --ignore-scripts: nothing in the tree needs an install script.
    (cd "$root/$d" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed in $d"
    sha "$root/$d/package-lock.json" >"$root/$d/node_modules/.kiln-lock-sha256"
done
log "done"
