#!/usr/bin/env python3
"""Suspend, resume and fork benchmark, measured side by side in one run (medians, interleaved), on
a started workspace running a service (a shell loop writing a counter):

  resume   `workspace resume` of the suspended workspace, against `workspace start --cold` of the
           same workspace stopped                              target: <= 0.2x
  fork     `workspace fork` of the running workspace (until the fork answers), against
           `workspace create --cold`                           target: <= 0.3x
  suspend  `workspace suspend`, and the size of the state it saves, reported
  pause    how long a fork pauses its source, reported

Usage: scripts/bench_suspend.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import os
import statistics
import tempfile
from pathlib import Path

from benchlib import arguments, pyro, warm_workspace

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /workspace/counter; sleep 0.1; done"


def main():
    args = arguments(__doc__, runs=5)
    binary = args.pyro
    with tempfile.TemporaryDirectory(prefix="pyro-bench-suspend-") as tmp:
        env = dict(os.environ, PYRO_STATE_DIR=str(Path(tmp) / "state"))
        workspace, sh = warm_workspace(binary, env)
        pyro(binary, env, "workspace", "service", "start", workspace, "counter", "--ready-file", "counter",
             "--json", "--", "sh", "-c", COUNTER)

        resumes, cold_starts, suspends, forks, cold_creates, pauses, state_mib = [], [], [], [], [], [], []
        for _ in range(args.runs):
            elapsed, suspended = pyro(binary, env, "workspace", "suspend", workspace, "--json")
            suspends.append(elapsed)
            state_mib.append(suspended["workspace_suspend"]["state_bytes"] / (1 << 20))
            elapsed, resumed = pyro(binary, env, "workspace", "resume", workspace, "--json")
            if resumed["boot_mode"] != "resumed":
                raise SystemExit(f"the resume booted instead: {resumed['boot_mode_reason']}")
            resumes.append(elapsed)
            sh("test -s /workspace/counter")

            elapsed, forked = pyro(binary, env, "workspace", "fork", workspace, "--json")
            forks.append(elapsed)
            pauses.append(forked["workspace_fork"]["source_paused_ms"] / 1000)
            pyro(binary, env, "workspace", "delete", forked["workspace_id"], "--json")
            elapsed, created = pyro(binary, env, "workspace", "create", "--cold", "--json")
            cold_creates.append(elapsed)
            pyro(binary, env, "workspace", "delete", created["workspace_id"], "--json")

            pyro(binary, env, "workspace", "stop", workspace, "--json")
            elapsed, _ = pyro(binary, env, "workspace", "start", workspace, "--cold", "--json")
            cold_starts.append(elapsed)
            pyro(binary, env, "workspace", "service", "start", workspace, "counter", "--ready-file", "counter",
                 "--json", "--", "sh", "-c", COUNTER)
        pyro(binary, env, "workspace", "delete", workspace, "--json")

    med = statistics.median
    print(f"runs: {args.runs} (medians)")
    print(f"suspend                      {med(suspends):6.3f} s   ({med(state_mib):.0f} MiB of state)")
    print(f"resume                       {med(resumes):6.3f} s")
    print(f"start --cold                 {med(cold_starts):6.3f} s")
    print(f"fork                         {med(forks):6.3f} s   (source paused {med(pauses):.3f} s)")
    print(f"create --cold                {med(cold_creates):6.3f} s")
    print(f"resume / cold start          {med(resumes) / med(cold_starts):6.3f}   (target <= 0.2)")
    print(f"fork / cold create           {med(forks) / med(cold_creates):6.3f}   (target <= 0.3)")


if __name__ == "__main__":
    main()
