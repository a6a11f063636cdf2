#!/usr/bin/env python3
"""Workspace benchmark, measured side by side in one run (medians):

  exec     `pyro workspace exec ID -- true` through the CLI, against the guest's own measured process time
           for the same command (the overhead pyro adds)            target: overhead <= 15 ms
  create   `workspace create` with no seed, and with a 2,000-file / 50 MB seed
  seeding  pushing that seed into /workspace, against the guest extracting the same archive from its own
           tmpfs into /workspace with tar                            target: <= 2x

Usage: scripts/bench_workspace.py [--runs N] [--pyro PATH]
Build first: cargo build --release -p pyro-cli -p pyro-agent
"""
import os
import statistics
import tarfile
import tempfile
from pathlib import Path

from benchlib import arguments, pyro


def make_seed(root: Path, files=2000, total_bytes=50 * 1024 * 1024):
    per_file = total_bytes // files
    block = os.urandom(per_file)  # incompressible, so no layer can cheat
    for i in range(files):
        directory = root / f"dir{i % 40:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"file{i:04d}.bin").write_bytes(block[i % 7:] + block[:i % 7])


def main():
    args = arguments(__doc__, runs=15)
    binary = args.pyro
    with tempfile.TemporaryDirectory(prefix="pyro-bench-ws-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, PYRO_STATE_DIR=str(tmp / "state"))
        seed = tmp / "seed"
        make_seed(seed)
        seed_tar = tmp / "carrier" / "seed.tar"
        seed_tar.parent.mkdir()
        with tarfile.open(seed_tar, "w") as archive:
            archive.add(seed, arcname=".")

        # Create: no seed, then the 2,000-file / 50 MB seed (three of each, interleaved).
        empty_creates, seeded_creates, ids = [], [], []
        for _ in range(3):
            elapsed, ws = pyro(binary, env, "workspace", "create", "--json")
            empty_creates.append(elapsed)
            ids.append(ws["workspace_id"])
            elapsed, ws = pyro(binary, env, "workspace", "create", "--seed-path", str(seed), "--json")
            seeded_creates.append(elapsed)
            ids.append(ws["workspace_id"])
            for workspace in ids[-2:]:
                pyro(binary, env, "workspace", "delete", workspace, "--json")

        _, ws = pyro(binary, env, "workspace", "create", "--json")
        workspace = ws["workspace_id"]

        # Exec round trip against the guest's own process time.
        pyro(binary, env, "workspace", "exec", workspace, "--json", "--", "true")
        walls, guests = [], []
        for _ in range(args.runs):
            elapsed, result = pyro(binary, env, "workspace", "exec", workspace, "--json", "--", "true")
            walls.append(elapsed * 1000)
            guests.append(result["duration_ms"])
        overheads = [w - g for w, g in zip(walls, guests)]

        # Seeding against the guest extracting the same archive from its own tmpfs.
        pyro(binary, env, "workspace", "sync", "push", workspace, str(seed_tar.parent), "--dest", "/workspace/carrier", "--json")
        pushes, extracts = [], []
        for i in range(3):
            elapsed, _ = pyro(binary, env, "workspace", "sync", "push", workspace, str(seed), "--dest", f"/workspace/push{i}", "--json")
            pushes.append(elapsed)
            pyro(binary, env, "workspace", "exec", workspace, "--json", "--", "sh", "-c", "cp /workspace/carrier/seed.tar /tmp/s.tar")
            _, result = pyro(binary, env, "workspace", "exec", workspace, "--json", "--", "sh", "-c", f"mkdir /workspace/x{i} && tar -xf /tmp/s.tar -C /workspace/x{i}")
            extracts.append(result["duration_ms"] / 1000)
        pyro(binary, env, "workspace", "delete", workspace, "--json")

    med = statistics.median
    print(f"runs: exec {args.runs}, create 3 of each, seeding 3 (medians)")
    print(f"workspace exec -- true, CLI round trip       {med(walls):7.1f} ms")
    print(f"  guest process time for the same command    {med(guests):7.1f} ms")
    print(f"  overhead added by pyro                     {med(overheads):7.1f} ms   (target <= 15 ms)")
    print(f"workspace create, no seed                    {med(empty_creates):7.2f} s")
    print(f"workspace create, 2,000 files / 50 MB seed   {med(seeded_creates):7.2f} s")
    print(f"sync push of that seed                       {med(pushes):7.2f} s")
    print(f"  guest extracting the same tar from tmpfs   {med(extracts):7.2f} s")
    print(f"  ratio                                      {med(pushes) / med(extracts):7.2f}     (target <= 2)")


if __name__ == "__main__":
    main()
