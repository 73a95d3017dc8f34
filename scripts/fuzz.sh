#!/bin/bash
# Run each libFuzzer target for SECONDS on its corpus in the repo
# (app/tests/fuzz/corpus/<target>/). New inputs go to a scratch folder, not
# the repo, so that a test run leaves the tree clean. A crash writes its
# reproducer to build/fuzz/crashes/ and fails the run; commit reproducers
# beside the corpus once fixed (app/tests/fuzz/crashes/<target>/), where
# every run replays them first.
set -euo pipefail
seconds=$1
shift
mkdir -p build/fuzz/crashes
for bin in "$@"; do
    name=$(basename "$bin")
    corpus=app/tests/fuzz/corpus/$name
    scratch=build/fuzz/new/$name
    mkdir -p "$corpus" "$scratch"
    if [ -d "app/tests/fuzz/crashes/$name" ]; then
        echo "== replay fixed crashes of $name"
        "$bin" -runs=1 app/tests/fuzz/crashes/"$name"/* 2>&1 | tail -n 2
    fi
    echo "== fuzz $name for ${seconds}s"
    if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix=build/fuzz/crashes/"$name"- \
        "$scratch" "$corpus" > build/fuzz/"$name".log 2>&1; then
        tail -n 40 build/fuzz/"$name".log
        echo "fuzz: $name failed; reproducer in build/fuzz/crashes/" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|new_units_added)" build/fuzz/"$name".log || true
done
