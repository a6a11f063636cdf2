#!/usr/bin/env python3
"""Snapshot benchmark, measured side by side in one run (medians), on a warm workspace:

  create   `workspace snapshot create` after 1 MB and after 200 MB were written to /workspace, against
           `tar` of the same /workspace inside the guest (how a tarball snapshot would begin)
                                                   target: <= 0.5 s, 200 MB / 1 MB <= 1.3
  reset    `workspace reset --snapshot NAME` to those snapshots, against a warm `workspace reset` to the
           baseline                                target: <= 1.2x the baseline reset, 200 MB / 1 MB <= 1.3

Usage: scripts/bench_snapshots.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import os
import statistics
import tempfile
from pathlib import Path

from benchlib import arguments, pyro, warm_workspace

SIZES = {"1 MB": 1, "200 MB": 200}


def main():
    args = arguments(__doc__, runs=5)
    binary = args.pyro
    with tempfile.TemporaryDirectory(prefix="pyro-bench-snap-") as tmp:
        env = dict(os.environ, PYRO_STATE_DIR=str(Path(tmp) / "state"))
        workspace, sh = warm_workspace(binary, env)

        creates = {label: [] for label in SIZES}
        resets = {label: [] for label in SIZES}
        tars = {label: [] for label in SIZES}
        baseline_resets = []
        for i in range(args.runs):
            for label, mib in SIZES.items():  # interleaved, so a slow moment hits both sizes
                elapsed, _ = pyro(binary, env, "workspace", "reset", workspace, "--json")
                baseline_resets.append(elapsed)
                sh(f"dd if=/dev/urandom of=/workspace/blob bs=1M count={mib} status=none")
                name = f"s{mib}-{i}"
                elapsed, _ = pyro(binary, env, "workspace", "snapshot", "create", workspace, name, "--json")
                creates[label].append(elapsed)
                tars[label].append(sh("tar -cf /tmp/snapshot.tar -C /workspace . && rm /tmp/snapshot.tar")["duration_ms"] / 1000)
                sh("rm /workspace/blob")
                elapsed, _ = pyro(binary, env, "workspace", "reset", workspace, "--snapshot", name, "--json")
                resets[label].append(elapsed)
                size = sh("stat -c %s /workspace/blob")["stdout"].strip()
                if int(size) != mib << 20:
                    raise SystemExit(f"reset to {name} did not bring the blob back: {size}")
                pyro(binary, env, "workspace", "snapshot", "delete", workspace, name, "--json")
        pyro(binary, env, "workspace", "delete", workspace, "--json")

    med = statistics.median
    small, large = SIZES
    base = med(baseline_resets)
    print(f"runs: {args.runs} per size (medians)")
    for label in SIZES:
        print(f"{label:>6} changed: snapshot create {med(creates[label]):6.3f} s | guest tar {med(tars[label]):6.3f} s"
              f" | reset to snapshot {med(resets[label]):6.3f} s")
    print(f"baseline reset (warm)                {base:6.3f} s")
    print(f"create 200 MB / 1 MB                 {med(creates[large]) / med(creates[small]):6.2f}   (target <= 1.3)")
    print(f"reset 200 MB / 1 MB                  {med(resets[large]) / med(resets[small]):6.2f}   (target <= 1.3)")
    for label in SIZES:
        print(f"reset to snapshot / baseline, {label:>6} {med(resets[label]) / base:6.2f}   (target <= 1.2)")


if __name__ == "__main__":
    main()
