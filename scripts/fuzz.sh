#!/bin/sh
# Run each libFuzzer target for SECONDS on its corpus in the repo
# (app/tests/fuzz/corpus/<target>/). New inputs go to a scratch folder, not
# the repo, so that a test run leaves the tree clean; crash reproducers are
# written to build/fuzz/crashes/ and fail the run.
set -eu
seconds=$1
shift
mkdir -p build/fuzz/crashes
for bin in "$@"; do
    name=$(basename "$bin")
    corpus=app/tests/fuzz/corpus/$name
    scratch=build/fuzz/new/$name
    mkdir -p "$corpus" "$scratch"
    echo "== fuzz $name for ${seconds}s"
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=build/fuzz/crashes/"$name"- "$scratch" "$corpus" 2>&1 | tail -n 12
done
