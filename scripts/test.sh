#!/usr/bin/env bash
# The whole test suite, VM tests included (the README's second command; CI runs exactly this).
# Installs missing host packages, builds the workspace (the tests need the fresh guest agent), then
# runs `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --deps-only
cargo build --locked --workspace
cargo test --locked --workspace "$@"
