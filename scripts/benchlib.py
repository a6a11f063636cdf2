"""Helpers shared by the benchmark scripts: running pyro, finding its binary, measuring VM memory."""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE_PYRO = ROOT / "target/x86_64-unknown-linux-gnu/release/pyro"


def arguments(doc, runs):
    """Parses --runs and --pyro, and checks that the binary exists."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--pyro", default=str(RELEASE_PYRO))
    args = parser.parse_args()
    if not Path(args.pyro).exists():
        sys.exit(f"{args.pyro} is missing: cargo build --release -p pyro-cli -p pyro-agent")
    return args


def pyro(binary, env, *args):
    """Runs pyro; returns (seconds, parsed JSON or text). Exits on failure."""
    # A background template job started by a cold boot would skew what runs next.
    env = dict(env, PYRO_NO_AUTO_PREPARE=env.get("PYRO_NO_AUTO_PREPARE", "1"))
    start = time.monotonic()
    out = subprocess.run([binary, *args], capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"pyro {' '.join(args)} failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    return elapsed, (json.loads(out.stdout) if out.stdout.strip().startswith("{") else out.stdout)


def warm_workspace(binary, env):
    """Prepares debian:12's templates and creates a workspace from them; returns its id and a function
    that runs a shell script in it (exiting on failure) and returns the exec result."""
    pyro(binary, env, "prepare", "debian:12", "--json")
    _, ws = pyro(binary, env, "workspace", "create", "--json")
    workspace = ws["workspace_id"]
    if ws.get("boot_mode") != "warm":
        print(f"note: the workspace booted {ws.get('boot_mode')}: {ws.get('boot_mode_reason')}")

    def sh(script):
        _, result = pyro(binary, env, "workspace", "exec", workspace, "--json", "--", "sh", "-c", script)
        if result["exit_code"] != 0:
            sys.exit(f"{script}: {result}")
        return result

    return workspace, sh


def vm_memory_kib(state_dir, field="Rss"):
    """Sums `field` (Rss or Pss, from smaps_rollup) of the QEMU and supervisor processes of a state dir."""
    totals = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rollup = (entry / "smaps_rollup").read_text()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        # QEMU gets its files as descriptors, so its command line names no path: it is found by the
        # VM directory it runs in.
        if str(state_dir) not in cmdline and not cwd.startswith(str(state_dir)):
            continue
        kind = "qemu" if "qemu-system" in cmdline else "supervisor" if "__supervise" in cmdline else None
        if kind is None:
            continue
        for line in rollup.splitlines():
            if line.startswith(field + ":"):
                totals[kind] = totals.get(kind, 0) + int(line.split()[1])
    return totals
