"""The daily flow of an E2B user, with the unmodified e2b SDK, against `pyro api serve`.

Run by the VM tests with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set, and PYRO_BIN naming the
pyro binary of the same state dir. Prints one line per step; any surprise fails with a traceback.
"""

import json
import os
import subprocess
import time

from e2b import CommandExitException, PtySize, Sandbox


def step(name, value=""):
    print(f"{name}: {value}", flush=True)


def pyro_workspaces():
    out = subprocess.run([os.environ["PYRO_BIN"], "workspace", "list", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return {w["workspace_id"]: w for w in json.loads(out)["workspaces"]}


sbx = Sandbox.create(timeout=300, metadata={"suite": "flow"})
step("created", sbx.sandbox_id)
assert sbx.sandbox_id in pyro_workspaces(), "the sandbox is a pyro workspace"

# A command, its output and exit code.
r = sbx.commands.run("echo out; echo err >&2")
assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0), r
try:
    sbx.commands.run("echo failing; exit 3")
    raise AssertionError("a failing command raises")
except CommandExitException as e:
    assert e.exit_code == 3 and e.stdout == "failing\n", e
step("run", "ok")

# A background command, streamed, then killed.
seen = []
h = sbx.commands.run("for i in $(seq 1 100); do echo tick $i; sleep 0.2; done", background=True)
for stdout, _, _ in h:
    if stdout:
        seen.append(stdout)
        break
assert seen == ["tick 1\n"], "background output streams before the command ends"
assert h.pid in [p.pid for p in sbx.commands.list()]
assert h.kill() is True
try:
    h.wait()
    raise AssertionError("a killed command ends with an error")
except CommandExitException as e:
    assert e.exit_code == -1, e
assert h.pid not in [p.pid for p in sbx.commands.list()]
step("background", f"{len(seen)} lines, then killed")

# stdin.
h = sbx.commands.run("cat", background=True, stdin=True)
sbx.commands.send_stdin(h.pid, "through stdin\n")
sbx.commands.close_stdin(h.pid)
assert h.wait().stdout == "through stdin\n"
step("stdin", "ok")

# Files.
sbx.files.write("notes/hello.txt", "hello\n")
assert sbx.files.read("/workspace/notes/hello.txt") == "hello\n"
sbx.files.write("/workspace/blob.bin", b"\x00\x01\xff")
assert sbx.files.read("blob.bin", format="bytes") == bytearray(b"\x00\x01\xff")
names = sorted(e.name for e in sbx.files.list("/workspace"))
assert names == ["blob.bin", "notes"], names
assert sbx.files.make_dir("/workspace/made/deep") is True
assert sbx.files.make_dir("/workspace/made/deep") is False
sbx.files.rename("/workspace/blob.bin", "/workspace/made/blob.bin")
assert sbx.files.exists("/workspace/made/blob.bin") and not sbx.files.exists("/workspace/blob.bin")
assert sbx.files.get_info("/workspace/notes/hello.txt").size == 6
sbx.files.remove("/workspace/made")
assert not sbx.files.exists("/workspace/made")
step("files", "ok")

# A watched directory.
watcher = sbx.files.watch_dir("/workspace/notes", recursive=True)
sbx.files.write("/workspace/notes/new.txt", "n")
sbx.files.remove("/workspace/notes/hello.txt")
time.sleep(0.5)
events = [(e.name, e.type.name) for e in watcher.get_new_events()]
watcher.stop()
assert ("new.txt", "CREATE") in events and ("hello.txt", "REMOVE") in events, events
step("watch", events)

# A PTY round trip.
pty = sbx.pty.create(PtySize(rows=24, cols=80))
sbx.pty.send_stdin(pty.pid, b"echo pty-$((40 + 2)); stty size\n")
sbx.pty.resize(pty.pid, PtySize(rows=30, cols=100))
sbx.pty.send_stdin(pty.pid, b"stty size; exit 0\n")
chunks = []
assert pty.wait(on_pty=lambda data: chunks.append(bytes(data))).exit_code == 0
text = b"".join(chunks).decode(errors="replace")
assert "pty-42" in text and "30 100" in text, text
step("pty", "ok")

# A port of the sandbox, reached from the host at get_host(port) with the sandbox's traffic token
# (curl resolves *.localhost itself).
HTTP_SERVER = """perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
  LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "$!";
  while ($c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\\r\\nContent-Length: 12\\r\\n\\r\\nfrom the vm\\n"; close $c }'"""
web = sbx.commands.run(HTTP_SERVER, background=True, timeout=0)
host = sbx.get_host(8080)
assert host == f"8080-{sbx.sandbox_id}.localhost:{os.environ['E2B_API_URL'].rsplit(':', 1)[1]}", host


def curl(*headers):
    args = [arg for header in headers for arg in ("-H", header)]
    return subprocess.run(["curl", "-s", "--max-time", "5", *args, f"http://{host}/"],
                          capture_output=True, text=True).stdout


token = f"e2b-traffic-access-token: {sbx.traffic_access_token}"
body = ""
deadline = time.time() + 30
while body != "from the vm\n" and time.time() < deadline:
    body = curl(token)
    time.sleep(0.2)
assert body == "from the vm\n", body
assert "traffic token" in curl(), "a port wants the sandbox's traffic token"
web.kill()
step("port", host)

# Pause and resume keep files and running processes.
sleeper = sbx.commands.run("sleep 600", background=True)
sbx.files.write("kept.txt", "kept")
sbx.pause()
assert sbx.get_info().state.value == "paused"
assert pyro_workspaces()[sbx.sandbox_id]["state"] == "suspended"
resumed = Sandbox.connect(sbx.sandbox_id)
assert resumed.files.read("kept.txt") == "kept"
assert sleeper.pid in [p.pid for p in resumed.commands.list()], "the process survived the pause"
step("pause", "resumed with the file and the process")

# The timeout is the idle TTL.
resumed.set_timeout(120)
assert pyro_workspaces()[sbx.sandbox_id]["ttl_seconds"] == 120
assert sbx.sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()]

assert resumed.kill() is True
assert sbx.sandbox_id not in pyro_workspaces()
step("killed", sbx.sandbox_id)
