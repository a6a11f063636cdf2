#!/usr/bin/env python3
"""Trust-boundary benchmark: this pyro against a baseline pyro, side by side in one run (medians).

  egress   a 50 MB download by a guest from an HTTP server in a network namespace of the benchmark's own
           (joined to the host by a veth pair), timed inside the guest: this pyro's gateway (with
           --allow-host) against the baseline's QEMU user-mode networking        target: ratio >= 1.0
  exec     `pyro workspace exec ID -- true` round trip through the CLI, and the overhead over the guest's
           own process time: commands with the reduced capability set against the baseline's
                                                                                  target: overhead <= 15 ms

The baseline is the last release before the trust boundary (git revision 25495fd by default), built
into target/bench-baseline unless --baseline names a pyro binary (its pyro-agent must sit beside it).
Needs root (for the namespace) and iproute2.

Usage: scripts/bench_trust.py [--runs N] [--pyro PATH] [--baseline PATH] [--baseline-rev REV]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import RELEASE_PYRO, ROOT, pyro

NS = "pyro-bench-egress"
HOST_IP, GUEST_SIDE_IP, PORT = "10.214.0.1", "10.214.0.2", 8000
BLOB_BYTES = 50 * 1000 * 1000


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def build_baseline(rev):
    tree = ROOT / "target/bench-baseline"
    if not (tree / ".git").exists():
        sh("git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev)
    print(f"building the baseline ({rev}) in {tree} ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "pyro-cli", "-p", "pyro-agent"],
                   cwd=tree, check=True)
    return tree / "target/x86_64-unknown-linux-gnu/release/pyro"


class TestHost:
    """A network namespace with an HTTP server holding one 50 MB blob."""

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="pyro-bench-blob-")
        Path(self.dir.name, "blob").write_bytes(os.urandom(BLOB_BYTES))
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "link", "del", "pybh", check=False)
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", "pybh", "type", "veth", "peer", "name", "pybn")
        sh("ip", "link", "set", "pybn", "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", "pybh")
        sh("ip", "link", "set", "pybh", "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{GUEST_SIDE_IP}/30", "dev", "pybn")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "pybn", "up")
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, "-m", "http.server", str(PORT),
             "--bind", GUEST_SIDE_IP, "--directory", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        return self

    def __exit__(self, *_):
        self.server.kill()
        self.server.wait()
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "link", "del", "pybh", check=False)
        self.dir.cleanup()


DOWNLOAD = (f"exec 3<>/dev/tcp/{GUEST_SIDE_IP}/{PORT} && printf 'GET /blob HTTP/1.0\\r\\n\\r\\n' >&3 "
            "&& cat <&3 | wc -c")


class Side:
    def __init__(self, name, binary, tmp, network_args):
        self.name, self.binary = name, binary
        self.env = dict(os.environ, PYRO_STATE_DIR=str(tmp / name))
        self.env.pop("PYRO_AGENT", None)
        _, ws = pyro(binary, self.env, "workspace", "create", *network_args, "--json")
        self.workspace = ws["workspace_id"]
        self.mbps, self.exec_ms, self.overhead_ms = [], [], []

    def download(self):
        _, result = pyro(self.binary, self.env, "workspace", "exec", self.workspace, "--json",
                         "--timeout-seconds", "600", "--", "bash", "-c", DOWNLOAD)
        received = int(result["stdout"].strip() or 0)
        if received < BLOB_BYTES:
            sys.exit(f"{self.name}: the guest received {received} bytes: {result}")
        self.mbps.append(BLOB_BYTES / 1e6 / (result["duration_ms"] / 1000))

    def exec_true(self):
        elapsed, result = pyro(self.binary, self.env, "workspace", "exec", self.workspace, "--json", "--", "true")
        self.exec_ms.append(elapsed * 1000)
        self.overhead_ms.append(elapsed * 1000 - result["duration_ms"])

    def close(self):
        pyro(self.binary, self.env, "workspace", "delete", self.workspace, "--json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pyro", default=str(RELEASE_PYRO))
    parser.add_argument("--baseline")
    parser.add_argument("--baseline-rev", default="25495fd")
    args = parser.parse_args()
    if not Path(args.pyro).exists():
        sys.exit(f"{args.pyro} is missing: cargo build --release -p pyro-cli -p pyro-agent")
    if os.geteuid() != 0:
        sys.exit("the benchmark makes a network namespace: run it as root")
    baseline = Path(args.baseline) if args.baseline else build_baseline(args.baseline_rev)
    with tempfile.TemporaryDirectory(prefix="pyro-bench-trust-") as tmp, TestHost():
        tmp = Path(tmp)
        new = Side("this", args.pyro, tmp, ["--allow-host", f"{GUEST_SIDE_IP}:{PORT}"])
        old = Side("baseline", str(baseline), tmp, ["--network"])
        try:
            for side in (new, old):  # warm-up: first connection, page cache
                side.download()
                side.exec_true()
            for side in (new, old):
                side.mbps.clear()
            for _ in range(args.runs):
                for side in (new, old):
                    side.download()
            for _ in range(args.runs * 4):
                for side in (new, old):
                    side.exec_true()
        finally:
            new.close()
            old.close()
    med = statistics.median
    print(f"| measure | this pyro | baseline | ratio |")
    print(f"|---|---|---|---|")
    print(f"| egress, 50 MB download (MB/s, in the guest) | {med(new.mbps):.1f} | {med(old.mbps):.1f} | "
          f"**{med(new.mbps) / med(old.mbps):.2f}** |")
    print(f"| `workspace exec -- true` round trip (ms) | {med(new.exec_ms):.1f} | {med(old.exec_ms):.1f} | "
          f"{med(new.exec_ms) / med(old.exec_ms):.2f} |")
    print(f"| exec overhead over the guest's process time (ms) | {med(new.overhead_ms):.1f} | "
          f"{med(old.overhead_ms):.1f} | |")


if __name__ == "__main__":
    main()
