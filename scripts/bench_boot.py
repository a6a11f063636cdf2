#!/usr/bin/env python3
"""Cold-start benchmark, measured side by side in one run (medians, interleaved):

  floor  bare QEMU booting the environment's kernel with a tiny initramfs whose init powers off at once
  run    `pyro run ENV --cold -- true` (the whole create, boot, exec, collect, delete path)

plus the host memory (RSS of QEMU and the supervisor) of one idle VM with the default 1024 MiB guest.

Usage: scripts/bench_boot.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import arguments, vm_memory_kib
TINY_INIT_C = r"""
#include <sys/reboot.h>
#include <unistd.h>
int main(void) { sync(); reboot(RB_POWER_OFF); return 0; }
"""


def cpio_newc(entries):
    """entries: list of (name, mode, data, (major, minor))."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        out += b"070701" + "".join(f"{f:08x}" for f in fields).encode() + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_tiny_initramfs(workdir: Path) -> Path:
    src = workdir / "init.c"
    src.write_text(TINY_INIT_C)
    binary = workdir / "init"
    subprocess.run(["cc", "-static", "-Os", "-o", str(binary), str(src)], check=True)
    image = workdir / "tiny.cpio"
    image.write_bytes(cpio_newc([
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),
        ("init", 0o100755, binary.read_bytes(), (0, 0)),
    ]))
    return image


def pyro_json(pyro, *args, env=None):
    out = subprocess.run([pyro, *args, "--json"], capture_output=True, text=True, env=env)
    return json.loads(out.stdout), out.returncode


def floor_command(kernel, initramfs, accel, tsc_khz):
    cmdline = "console=ttyS0 quiet panic=-1 reboot=t"
    if tsc_khz:
        cmdline += f" tsc_early_khz={tsc_khz} tsc=reliable"
    return ["qemu-system-x86_64", "-M", f"microvm,accel={accel},acpi=on", "-smp", "1", "-m", "1024M",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", kernel, "-initrd", str(initramfs), "-append", cmdline]


def timed(cmd, env=None):
    start = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed, proc.stdout


def idle_vm_memory(pyro, environment, env):
    """RSS of QEMU + supervisor of one idle VM (default shape), in MiB."""
    state = Path(env["PYRO_STATE_DIR"])
    proc = subprocess.Popen([pyro, "run", environment, "--cold", "--", "sh", "-c", "echo up; sleep 60"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout.readline().strip() == b"up", "the idle VM did not start"
    time.sleep(2)  # let the guest settle after the command started
    total = vm_memory_kib(state, "Rss")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    return {k: v / 1024 for k, v in total.items()}


def main():
    args = arguments(__doc__, runs=7)
    args.environment = "debian:12"
    pyro = args.pyro

    with tempfile.TemporaryDirectory(prefix="pyro-bench-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, PYRO_STATE_DIR=str(tmp / "state"))
        subprocess.run([pyro, "env", "pull", args.environment], check=True, env=env, stdout=subprocess.DEVNULL)
        info, _ = pyro_json(pyro, "env", "inspect", args.environment, env=env)
        doctor, _ = pyro_json(pyro, "doctor", env=env)
        accel = doctor["accelerator"]["accelerator"]
        kernel = str(Path(info["install_dir"]) / "vmlinuz")
        floor_cmd = floor_command(kernel, build_tiny_initramfs(tmp), accel, doctor.get("tsc_khz"))
        run_cmd = [pyro, "run", args.environment, "--cold", "--json", "--", "true"]

        timed(run_cmd, env)  # warm the page cache and the initramfs cache once
        floors, runs, boots, execs = [], [], [], []
        for i in range(args.runs):
            floors.append(timed(floor_cmd)[0])
            elapsed, out = timed(run_cmd, env)
            runs.append(elapsed)
            result = json.loads(out)
            boots.append(result["boot_ms"])
            execs.append(result["exec_ms"])
            print(f"  round {i + 1}: floor {floors[-1]:.3f} s, pyro run {runs[-1]:.3f} s", file=sys.stderr)
        memory = idle_vm_memory(pyro, args.environment, env)

    floor_med, run_med = statistics.median(floors), statistics.median(runs)
    print(f"accelerator: {accel}; runs: {args.runs} (medians)")
    print(f"floor (bare QEMU, tiny init, power-off)   {floor_med:.3f} s")
    print(f"pyro run {args.environment} -- true (cold)     {run_med:.3f} s"
          f"  (boot {statistics.median(boots):.0f} ms, exec {statistics.median(execs):.0f} ms)")
    print(f"ratio cold run / floor                     {run_med / floor_med:.2f}  (target <= 1.5)")
    print("idle VM host memory (RSS)                  "
          + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(memory.items()))
          + f", total {sum(memory.values()):.0f} MiB")


if __name__ == "__main__":
    main()
