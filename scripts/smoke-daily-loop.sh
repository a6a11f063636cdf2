#!/usr/bin/env bash
# The daily loop, end to end through the CLI, in a temporary HOME:
#   doctor -> prepare -> host connect -> a repro-fix workspace -> patch -> the check passes -> reset
#   -> the diff is clean
# and every VM start must have taken the warm path. Part of the test suite (tests/vm/daily.rs); run it by
# hand with: scripts/smoke-daily-loop.sh   (PYRO picks the binary; SMOKE_DIR keeps the files)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYRO=${PYRO:-$root/target/x86_64-unknown-linux-gnu/debug/pyro}
work=${SMOKE_DIR:-$(mktemp -d)}
mkdir -p "$work/home" "$work/project"
export HOME=$work/home PYRO_STATE_DIR=$work/state
step() { printf '== %s\n' "$*"; }
fail() { printf 'daily loop: FAILED: %s\n' "$*"; exit 1; }
cleanup() { "$PYRO" workspace delete smoke >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "doctor"
"$PYRO" doctor >/dev/null || fail "pyro doctor reports a broken host"

step "prepare"
"$PYRO" prepare debian:12 >/dev/null
"$PYRO" doctor --environment debian:12 --json | grep -q '"state": "warm"' || fail "debian:12 is not warm after prepare"

step "host connect claude-code"
"$PYRO" host connect claude-code >/dev/null
grep -q '"pyro"' "$HOME/.claude.json" || fail "no pyro entry in the temporary HOME"

step "a repro-fix workspace"
printf 'def add(a, b):\n    return a - b\n' > "$work/project/calc.py"
printf "grep -q 'a + b' calc.py && echo PASS || { echo FAIL; exit 1; }\n" > "$work/project/check.sh"
"$PYRO" workspace create debian:12 --seed-path "$work/project" --name smoke --json > "$work/create.json"
grep -q '"boot_mode": "warm"' "$work/create.json" || fail "create did not start warm"
if "$PYRO" workspace exec smoke -- sh check.sh >/dev/null 2>&1; then fail "the check passed before the fix"; fi

step "patch, then the check passes"
"$PYRO" workspace patch apply smoke --patch "$(printf -- '--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n')" >/dev/null
"$PYRO" workspace exec smoke -- sh check.sh >/dev/null || fail "the check still fails after the patch"

step "reset, then the diff is clean"
"$PYRO" workspace reset smoke --json > "$work/reset.json"
grep -q '"boot_mode": "warm"' "$work/reset.json" || fail "reset did not start warm"
"$PYRO" workspace diff smoke --json | grep -q '"changed": false' || fail "the diff is not clean after reset"
echo "daily loop: ok"
