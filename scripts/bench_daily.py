#!/usr/bin/env python3
"""Daily-loop benchmark, side by side in one run (medians of at least 5, interleaved):

  floor    bare QEMU booting the environment's kernel with a tiny init that powers off (bench_boot.py)
  run      `pyro run debian:12 -- true`, warm (restored from a template) against cold    target: <= 0.3
           and against the floor, with the warm run's phases (`phases_ms`)
  pooled   the same run taken from the pool `prepare --pool 1` keeps, against the floor  target: <= 0.15
           (each measured run waits until the pool is refilled), a pooled `workspace create` until
           its first `exec` answered, and one pooled VM's idle memory
  reset    `workspace reset` (warm) against `workspace create --cold`                    target: <= 0.3
           and the same reset taken from the pool (a pooled VM takes the reverted disk over)
  create   warm `workspace create` until its first `exec` has answered
  memory   host memory of 10 idle warm workspaces (QEMU + supervisor), per workspace: RSS, and PSS, which
           shares the template's RAM pages fairly among the VMs that map them

Usage: scripts/bench_daily.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_boot import build_tiny_initramfs, floor_command, timed
from benchlib import arguments, pyro, vm_memory_kib

PHASES = ["prepare", "disk", "spawn", "restore", "activate", "exec", "teardown"]


def main():
    args = arguments(__doc__, runs=5)
    binary = args.pyro
    with tempfile.TemporaryDirectory(prefix="pyro-bench-daily-") as tmp:
        env = dict(os.environ, PYRO_STATE_DIR=str(Path(tmp) / "state"))
        pyro(binary, env, "prepare", "debian:12", "--json")
        _, info = pyro(binary, env, "env", "inspect", "debian:12", "--json")
        _, doctor = pyro(binary, env, "doctor", "--json")
        floor_cmd = floor_command(str(Path(info["install_dir"]) / "vmlinuz"), build_tiny_initramfs(Path(tmp)),
                                  doctor["accelerator"]["accelerator"], doctor.get("tsc_khz"))

        floors, warm_runs, cold_runs = [], [], []
        phases = {phase: [] for phase in PHASES}
        for _ in range(args.runs):
            floors.append(timed(floor_cmd)[0])
            elapsed, result = pyro(binary, env, "run", "debian:12", "--json", "--", "true")
            assert result["boot_mode"] == "warm", result["boot_mode_reason"]
            warm_runs.append(elapsed)
            for phase in PHASES:
                phases[phase].append(result["phases_ms"][phase])
            elapsed, result = pyro(binary, env, "run", "debian:12", "--cold", "--json", "--", "true")
            cold_runs.append(elapsed)

        pyro(binary, env, "prepare", "debian:12", "--pool", "1", "--json")
        pooled_runs, pooled_floors = [], []
        pooled_phases = {phase: [] for phase in PHASES}
        for _ in range(args.runs):
            wait_for_pool(binary, env)
            pooled_floors.append(timed(floor_cmd)[0])
            wait_for_pool(binary, env)
            elapsed, result = pyro(binary, env, "run", "debian:12", "--json", "--", "true")
            assert result["boot_mode"] == "pooled", result["boot_mode_reason"]
            pooled_runs.append(elapsed)
            for phase in PHASES:
                pooled_phases[phase].append(result["phases_ms"][phase])
        pooled_first_execs = []
        for _ in range(args.runs):
            wait_for_pool(binary, env)
            start = time.monotonic()
            _, pooled_ws = pyro(binary, env, "workspace", "create", "--json")
            assert pooled_ws["boot_mode"] == "pooled", pooled_ws["boot_mode_reason"]
            pyro(binary, env, "workspace", "exec", pooled_ws["workspace_id"], "--json", "--", "true")
            pooled_first_execs.append(time.monotonic() - start)
            pyro(binary, env, "workspace", "delete", pooled_ws["workspace_id"], "--json")
        pooled_resets = []
        wait_for_pool(binary, env)
        _, pooled_ws = pyro(binary, env, "workspace", "create", "--json")
        for _ in range(args.runs):
            wait_for_pool(binary, env)
            elapsed, result = pyro(binary, env, "workspace", "reset", pooled_ws["workspace_id"], "--json")
            assert result["boot_mode"] == "pooled", result["boot_mode_reason"]
            pooled_resets.append(elapsed)
        pyro(binary, env, "workspace", "delete", pooled_ws["workspace_id"], "--json")
        wait_for_pool(binary, env)
        time.sleep(2)
        pool_rss = sum(vm_memory_kib(Path(env["PYRO_STATE_DIR"]) / "pool", "Rss").values())
        pool_pss = sum(vm_memory_kib(Path(env["PYRO_STATE_DIR"]) / "pool", "Pss").values())
        pyro(binary, env, "prepare", "debian:12", "--pool", "0", "--json")

        resets, cold_creates, first_execs = [], [], []
        _, ws = pyro(binary, env, "workspace", "create", "--json")
        for _ in range(args.runs):
            elapsed, result = pyro(binary, env, "workspace", "reset", ws["workspace_id"], "--json")
            assert result["boot_mode"] == "warm", result["boot_mode_reason"]
            resets.append(elapsed)
            elapsed, cold = pyro(binary, env, "workspace", "create", "--cold", "--json")
            cold_creates.append(elapsed)
            pyro(binary, env, "workspace", "delete", cold["workspace_id"], "--json")
            start = time.monotonic()
            _, warm = pyro(binary, env, "workspace", "create", "--json")
            pyro(binary, env, "workspace", "exec", warm["workspace_id"], "--json", "--", "true")
            first_execs.append(time.monotonic() - start)
            pyro(binary, env, "workspace", "delete", warm["workspace_id"], "--json")
        pyro(binary, env, "workspace", "delete", ws["workspace_id"], "--json")

        idle = [pyro(binary, env, "workspace", "create", "--json")[1]["workspace_id"] for _ in range(10)]
        time.sleep(3)
        rss = sum(vm_memory_kib(env["PYRO_STATE_DIR"], "Rss").values())
        pss = sum(vm_memory_kib(env["PYRO_STATE_DIR"], "Pss").values())
        for workspace in idle:
            pyro(binary, env, "workspace", "delete", workspace, "--json")

    med = statistics.median
    print(f"runs: {args.runs} of each (medians)")
    print(f"floor (bare QEMU, tiny init, power-off)     {med(floors):6.2f} s")
    print(f"  ratio warm run / floor                    {med(warm_runs) / med(floors):6.2f}")
    print("warm run phases (ms): " + ", ".join(f"{phase} {med(phases[phase]):.0f}" for phase in PHASES))
    print(f"pyro run -- true, warm                      {med(warm_runs):6.2f} s")
    print(f"pyro run -- true, cold                      {med(cold_runs):6.2f} s")
    print(f"  ratio warm / cold                         {med(warm_runs) / med(cold_runs):6.2f}   (target <= 0.3)")
    print(f"pyro run -- true, pooled                    {med(pooled_runs):6.2f} s")
    print(f"  ratio pooled run / floor                  {med(pooled_runs) / med(pooled_floors):6.2f}   (target <= 0.15)")
    print("pooled run phases (ms): " + ", ".join(f"{p} {med(pooled_phases[p]):.0f}" for p in PHASES))
    print(f"one idle pooled VM                          RSS {pool_rss / 1024:5.0f} MiB, PSS {pool_pss / 1024:5.0f} MiB")
    print(f"workspace reset (warm)                      {med(resets):6.2f} s")
    print(f"workspace reset, pooled                     {med(pooled_resets):6.2f} s")
    print(f"workspace create --cold                     {med(cold_creates):6.2f} s")
    print(f"  ratio reset / cold create                 {med(resets) / med(cold_creates):6.2f}   (target <= 0.3)")
    print(f"warm workspace create to first exec         {med(first_execs):6.2f} s")
    print(f"pooled workspace create to first exec       {med(pooled_first_execs):6.2f} s")
    print(f"10 idle warm workspaces, per workspace      RSS {rss / 10 / 1024:5.0f} MiB, PSS {pss / 10 / 1024:5.0f} MiB")


def wait_for_pool(binary, env, limit=120):
    """Waits until every pool has its VMs ready (a claim starts a refill in the background)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, doctor = pyro(binary, env, "doctor", "--json")
        if all(p["ready"] >= p["size"] for p in doctor["pools"]):
            # The refill job exits just after its VM is ready.
            time.sleep(0.5)
            return
        time.sleep(0.5)
    raise SystemExit("the pool was not refilled in time")


if __name__ == "__main__":
    main()
