#!/usr/bin/env python3
"""E2B API benchmark, measured side by side in one run (medians):

  create   `Sandbox.create()` to the first `commands.run("true")` result, through the e2b SDK against
           `pyro api serve`, against `pyro workspace create` then `pyro workspace exec` of the same
           command (the SDK runs `/bin/bash -l -c true`: a login shell, most of the time under TCG)
  run      one `commands.run("true")` round trip, against one such `pyro workspace exec`

  target: the API adds <= 10 ms median per call (SDK time minus pyro CLI time)

The unmodified e2b SDK (pinned, from PyPI) runs in the venv the VM tests use (made here if missing).

Usage: scripts/bench_e2b.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, arguments, pyro

SDK = "e2b==2.63.0"
VENV = ROOT / "target/pyro-test-e2b/venv"
# What `commands.run("true")` asks the sandbox to run.
SAME_COMMAND = ["/bin/bash", "-l", "-c", "true"]

# The SDK side runs in a child process with the venv's Python (this script's part below).
SDK_SIDE = r'''
import json, sys, time
from e2b import Sandbox
rounds, calls = int(sys.argv[1]), int(sys.argv[2])
out = {"create": [], "run": []}
for _ in range(rounds):
    start = time.monotonic()
    sbx = Sandbox.create()
    sbx.commands.run("true")
    out["create"].append(time.monotonic() - start)
    for _ in range(calls):
        start = time.monotonic()
        sbx.commands.run("true")
        out["run"].append(time.monotonic() - start)
    sbx.kill()
print(json.dumps(out))
'''


def venv_python():
    python = VENV / "bin/python"
    marker = VENV / f"{SDK}.installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", SDK], check=True)
        marker.touch()
    return python


def serve(binary, env):
    """Starts `pyro api serve` on a free port; returns the process and the SDK's variables."""
    server = subprocess.Popen([binary, "api", "serve", "--port", "0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sdk_env = {}
    while len(sdk_env) < 3:
        line = server.stderr.readline()
        if not line:
            sys.exit("pyro api serve ended before it printed its variables")
        if line.startswith("export "):
            key, value = line[len("export "):].strip().split("=", 1)
            sdk_env[key] = value
    return server, sdk_env


def main():
    args = arguments(__doc__, runs=5)
    binary = args.pyro
    calls = 10
    python = venv_python()
    with tempfile.TemporaryDirectory(prefix="pyro-bench-e2b-") as tmp:
        env = dict(os.environ, PYRO_STATE_DIR=str(Path(tmp) / "state"), PYRO_NO_AUTO_PREPARE="1")
        pyro(binary, env, "prepare", "debian:12", "--json")
        server, sdk_env = serve(binary, env)
        try:
            sdk = {"create": [], "run": []}
            cli = {"create": [], "run": []}
            for _ in range(args.runs):
                # One round of each, interleaved, so both see the same machine.
                out = subprocess.run([str(python), "-c", SDK_SIDE, "1", str(calls)],
                                     env=dict(env, **sdk_env), check=True, capture_output=True, text=True)
                measured = json.loads(out.stdout)
                for key in sdk:
                    sdk[key] += measured[key]
                start = time.monotonic()
                _, ws = pyro(binary, env, "workspace", "create", "--json")
                pyro(binary, env, "workspace", "exec", ws["workspace_id"], "--json", "--", *SAME_COMMAND)
                cli["create"].append(time.monotonic() - start)
                for _ in range(calls):
                    elapsed, _ = pyro(binary, env, "workspace", "exec", ws["workspace_id"], "--json", "--",
                                      *SAME_COMMAND)
                    cli["run"].append(elapsed)
                pyro(binary, env, "workspace", "delete", ws["workspace_id"], "--json")
        finally:
            server.terminate()
            server.wait()
    print(f"{'measure':46} {'SDK via API':>12} {'pyro CLI':>10} {'added':>9}")
    for key, label in [("create", "Sandbox.create() to first run('true') result"),
                       ("run", "commands.run('true') round trip")]:
        a, b = statistics.median(sdk[key]), statistics.median(cli[key])
        print(f"{label:46} {a * 1000:10.1f}ms {b * 1000:8.1f}ms {(a - b) * 1000:7.1f}ms")
    print(f"({args.runs} rounds; {args.runs * calls} round trips each; target: added <= 10 ms)")


if __name__ == "__main__":
    main()
