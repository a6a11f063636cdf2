#!/usr/bin/env bash
# The smoke pack: the five documented use cases (docs/use-cases/*.md), each driven through
# `pyro mcp serve` by a real MCP client, step by step as its doc says (crates/pyro-cli/tests/smoke).
# Runs them one at a time and prints each one's wall time. scripts/test.sh runs it; extra arguments go
# to the test binary (e.g. a case name to run only that case).
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked -p pyro-cli --test smoke -- --nocapture --test-threads=1 "$@" 2>&1 | tee "$log" || status=$?
printf '\n%-22s %s\n' "use case" "wall time"
awk '/^smoke-time / { printf "%-22s %6.1f s\n", $2, $3 }' "$log"
exit "$status"
