#!/bin/sh
# make infra-check: the infrastructure policy suite (infra/README.md).
#
# Parses every .tf file of infra/ and infra/state-backend/ with
# @cdktf/hcl2json (HashiCorp's HCL parser, from the npm registry, installed
# by scripts/npm-deps.sh into infra/tests/node_modules) and runs the pytest
# suite in infra/tests: one test per property of the stack, plus mutation
# tests that break each key property in a copy of infra/ and show that its
# check reports it. Needs node and Debian's python3-pytest; no Terraform
# binary and no AWS account. Takes a few seconds.
#
#   scripts/infra-check.sh            the whole suite
#   scripts/infra-check.sh -k budget  pytest arguments pass through
set -eu
cd "$(dirname "$0")/.."
scripts/npm-deps.sh
exec "${PYTHON:-/usr/bin/python3}" -m pytest -q -p no:cacheprovider infra/tests "$@"
