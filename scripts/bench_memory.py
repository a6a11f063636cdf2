#!/usr/bin/env python3
"""Memory per VM, side by side in one run: host memory of QEMU (RSS) for one workspace with 1024 MiB of
guest RAM, idle after a warm start, and after two busy workloads, with pyro's bounded TCG translation
cache (128 MiB) and with QEMU's default (1024 MiB, set through PYRO_TCG_CACHE_MIB):

  code   debian:12-build: gcc and g++ -O2 on a 300-function file, python3 imports, cmake, git, perl
  data   debian:12: 540 MB written to /workspace, /usr read whole, the file sorted three times
                                                   target: busy QEMU RSS <= guest RAM + 200 MiB

Usage: scripts/bench_memory.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import arguments, pyro, vm_memory_kib

WORKLOADS = {
    "code": ("debian:12-build",
             "cd /workspace; for i in $(seq 300); do echo \"int f$i(int x){int s=0; for(int j=0;j<x;j++) "
             "s+=j*$i; return s;}\"; done > a.c; gcc -O2 -c a.c -o a.o; g++ -O2 -x c++ -c a.c -o b.o; "
             "python3 -c 'import json,re,email,http.client,xml.dom.minidom'; cmake --version; git --version; "
             "perl -MPOSIX -e 1"),
    "data": ("debian:12",
             "dd if=/dev/urandom of=/workspace/f bs=1M count=540 status=none; "
             "find /usr -type f -exec cat {} + > /dev/null 2>&1; "
             "for i in 1 2 3; do sort /workspace/f | head -c1 > /dev/null; done"),
}
CACHES = [128, 1024]


def qemu_rss_mib(state):
    return vm_memory_kib(state, "Rss").get("qemu", 0) / 1024


def main():
    args = arguments(__doc__, runs=1)
    binary = args.pyro
    with tempfile.TemporaryDirectory(prefix="pyro-bench-mem-") as tmp:
        state = Path(tmp) / "state"
        base_env = dict(os.environ, PYRO_STATE_DIR=str(state))
        for environment in {e for e, _ in WORKLOADS.values()}:
            pyro(binary, base_env, "prepare", environment, "--json")
        rss = {(w, c): [] for w in WORKLOADS for c in CACHES}
        seconds = {(w, c): [] for w in WORKLOADS for c in CACHES}
        idle = []
        for _ in range(args.runs):
            for workload, (environment, script) in WORKLOADS.items():
                for cache in CACHES:
                    env = dict(base_env, PYRO_TCG_CACHE_MIB=str(cache))
                    _, ws = pyro(binary, env, "workspace", "create", environment, "--json")
                    workspace = ws["workspace_id"]
                    if workload == "code" and cache == CACHES[0]:
                        time.sleep(2)
                        idle.append(qemu_rss_mib(state))
                    start = time.monotonic()
                    _, result = pyro(binary, env, "workspace", "exec", workspace, "--json",
                                     "--timeout-seconds", "900", "--", "sh", "-c", script)
                    seconds[(workload, cache)].append(time.monotonic() - start)
                    if result["exit_code"] != 0:
                        raise SystemExit(f"{workload}: {result['stderr'][-1000:]}")
                    rss[(workload, cache)].append(qemu_rss_mib(state))
                    pyro(binary, env, "workspace", "delete", workspace, "--json")

    med = statistics.median
    print(f"runs: {args.runs} (medians); guest RAM 1024 MiB")
    print(f"idle after a warm start            QEMU RSS {med(idle):6.0f} MiB")
    for workload in WORKLOADS:
        for cache in CACHES:
            print(f"{workload:>4} workload, {cache:>4} MiB cache    QEMU RSS {med(rss[(workload, cache)]):6.0f} MiB"
                  f"   {med(seconds[(workload, cache)]):6.1f} s")


if __name__ == "__main__":
    main()
