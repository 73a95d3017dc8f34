#!/bin/bash
# The whole test run behind `make test` (the binaries are built already):
# start the real services (PostgreSQL, Redis plain and TLS, pgbouncer) on
# loopback, run the C unit tests and the black-box suite in every store
# mode, plain and under ASan+UBSan, the end-to-end check of `kiln gen
# resource` (scripts/gen-check.sh), then a short fuzz run; stop the
# services whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
# The OIDC provider of the login tests and the S3 of the uploads tests come
# from the npm registry.
scripts/npm-deps.sh
svc=${KILN_SERVICES_DIR:-$PWD/build/services}
scripts/test-services.sh start "$svc"
trap 'scripts/test-services.sh stop "$svc"' EXIT
set -a
# shellcheck disable=SC1091
. "$svc/env"
set +a

step() { printf '\n=== %s\n' "$*"; }

step "unit tests (gcc), against SQLite, PostgreSQL, pgbouncer, Redis"
make --no-print-directory unit
step "unit tests (clang ASan+UBSan)"
make --no-print-directory unit-asan

for mode in embedded postgres pgbouncer; do
    step "black-box suite, stores: $mode"
    KILN_STORES=$mode make --no-print-directory blackbox
done
for mode in embedded pgbouncer; do
    step "black-box suite under ASan+UBSan, stores: $mode"
    KILN_STORES=$mode make --no-print-directory blackbox-asan
done

step "kiln gen resource: three generated resources (one with hooks) build and pass their tests (scratch copy; SQLite, PostgreSQL + Redis)"
scripts/gen-check.sh build/kiln

step "OpenAPI document: Redocly's recommended rules (offline)"
make --no-print-directory openapi-lint

step "infrastructure policy suite (Terraform parsed with hcl2json, no AWS needed)"
make --no-print-directory infra-check

step "fuzz smoke run"
make --no-print-directory fuzz-smoke
echo
echo "make test: all suites passed"
