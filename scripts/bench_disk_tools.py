#!/usr/bin/env python3
"""Disk tools benchmark, measured side by side in one run (medians), on a stopped workspace whose
/workspace holds a source tree (2000 files, 200 MB of other data):

  disk read   `workspace disk read ID FILE` of the stopped workspace, against
              `workspace start` + `workspace file read` + `workspace stop` (warm)
                                                   target: <= 0.2x
  disk list   `workspace disk list ID --recursive`, reported

Usage: scripts/bench_disk_tools.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import os
import statistics
import tempfile
from pathlib import Path

from benchlib import arguments, pyro, warm_workspace

TREE = ("mkdir -p src && for d in $(seq 20); do mkdir -p src/m$d; for f in $(seq 100); do "
        "echo \"fn f$f() {}\" > src/m$d/f$f.rs; done; done && echo 'needle' > src/m7/f42.rs && "
        "dd if=/dev/urandom of=blob bs=1M count=200 status=none")


def main():
    args = arguments(__doc__, runs=5)
    binary = args.pyro
    with tempfile.TemporaryDirectory(prefix="pyro-bench-disk-") as tmp:
        env = dict(os.environ, PYRO_STATE_DIR=str(Path(tmp) / "state"))
        workspace, sh = warm_workspace(binary, env)
        sh(TREE)
        pyro(binary, env, "workspace", "stop", workspace, "--json")

        offline, live, lists = [], [], []
        for _ in range(args.runs):  # interleaved, so a slow moment hits both
            elapsed, read = pyro(binary, env, "workspace", "disk", "read", workspace, "src/m7/f42.rs", "--json")
            if read["content"] != "needle\n":
                raise SystemExit(f"disk read returned {read}")
            offline.append(elapsed)
            elapsed, _ = pyro(binary, env, "workspace", "disk", "list", workspace, "--recursive", "--json")
            lists.append(elapsed)
            total = 0.0
            for step in (["start", workspace], ["file", "read", workspace, "src/m7/f42.rs"], ["stop", workspace]):
                elapsed, _ = pyro(binary, env, "workspace", *step, "--json")
                total += elapsed
            live.append(total)
        pyro(binary, env, "workspace", "delete", workspace, "--json")

    med = statistics.median
    print(f"runs: {args.runs} (medians)")
    print(f"disk read (stopped)                 {med(offline):6.3f} s")
    print(f"start + file read + stop (warm)     {med(live):6.3f} s")
    print(f"disk list --recursive (2000 files)  {med(lists):6.3f} s")
    print(f"disk read / start+read+stop         {med(offline) / med(live):6.3f}   (target <= 0.2)")


if __name__ == "__main__":
    main()
