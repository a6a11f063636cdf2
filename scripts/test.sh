#!/usr/bin/env bash
# The whole test suite, VM tests included (the README's second command; CI runs exactly this).
# Installs missing host packages, builds the workspace (the tests need the fresh guest agent), then
# runs `cargo test`, then the use-case smoke pack, and prints the totals. Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --deps-only
cargo build --locked --workspace
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace "$@" 2>&1 | tee "$log" || status=$?
# The five use cases, each as its doc says (not part of `cargo test --workspace`: they run one at a time).
scripts/smoke-use-cases.sh 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\n%d passed, %d failed\n", p, f }' "$log"
exit "$status"
