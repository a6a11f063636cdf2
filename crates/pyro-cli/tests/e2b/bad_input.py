"""Bad input through the unmodified e2b SDK (and raw HTTP where the SDK never sends it): each reaches
the caller as the SDK's own error, with pyro's hint. Same environment as flow.py, plus
OTHER_WORKSPACE: the id of a pyro workspace not made through the API.
"""

import json
import os
import time
import urllib.error
import urllib.request

from e2b import (AuthenticationException, FileNotFoundException, InvalidArgumentException,
                 PtySize, Sandbox, SandboxException, SandboxNotFoundException, TimeoutException)

API = os.environ["E2B_API_URL"]
KEY = os.environ["E2B_API_KEY"]


def step(name, value=""):
    print(f"{name}: {value}", flush=True)


def raises(kind, call, words=""):
    try:
        call()
    except kind as e:
        assert words in str(e), f"{kind.__name__} without {words!r}: {e}"
        return str(e)
    raise AssertionError(f"expected {kind.__name__}")


def http(method, path, body=None, key=KEY):
    request = urllib.request.Request(API + path, method=method, data=body,
                                     headers={"X-API-KEY": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# Keys and routes.
raises(AuthenticationException, lambda: Sandbox.create(api_key="wrong"), "API key")
status, body = http("GET", "/v2/sandboxes", key="")
assert status == 401 and json.loads(body)["code"] == 401, (status, body)
status, body = http("GET", "/no/such/route")
assert status == 404 and "/no/such/route" in json.loads(body)["message"], (status, body)
step("keys and routes", "ok")

# Templates and bodies.
message = raises(SandboxException, lambda: Sandbox.create(template="ubuntu"), "debian:12-build")
status, body = http("POST", "/v2/sandboxes", b"{not json")
assert status == 400 and "malformed" in json.loads(body)["message"], (status, body)
status, body = http("POST", "/v2/sandboxes", b'{"templateID": "base", "timeout": 1}')
assert status == 400 and "timeout" in json.loads(body)["message"], (status, body)
step("templates and bodies", message)

# Ids that are not sandboxes.
raises(SandboxNotFoundException, lambda: Sandbox.connect("0123456789ab"))
raises(SandboxNotFoundException, lambda: Sandbox.connect(os.environ["OTHER_WORKSPACE"]))
status, body = http("GET", "/sandboxes/" + os.environ["OTHER_WORKSPACE"])
assert status == 404 and "not made through this API" in json.loads(body)["message"], body
assert Sandbox.kill(os.environ["OTHER_WORKSPACE"]) is False
step("not sandboxes", "ok")

sbx = Sandbox.create()
# Paths that leave the sandbox.
raises(InvalidArgumentException, lambda: sbx.files.read("/etc/passwd"), "/workspace")
raises(InvalidArgumentException, lambda: sbx.files.write("../escape", "x"), "/workspace")
raises(InvalidArgumentException, lambda: sbx.files.list("/workspace/../etc"), "/workspace")
raises(FileNotFoundException, lambda: sbx.files.read("missing.txt"))
sbx.commands.run("ln -s /etc /workspace/etc-link")
raises(SandboxException, lambda: sbx.files.write("etc-link/passwd", "x"), "symlink")
step("paths", "ok")

# A command that outlives its timeout, and one whose client goes away.
def gone(pid):
    deadline = time.time() + 20
    while pid in [p.pid for p in sbx.commands.list()] and time.time() < deadline:
        time.sleep(0.2)
    return pid not in [p.pid for p in sbx.commands.list()]


slow = sbx.commands.run("sleep 30", background=True, timeout=2)
raises(TimeoutException, slow.wait)
assert gone(slow.pid), "a command is killed at its timeout"
left = sbx.commands.run("sleep 300", background=True)
assert left.pid in [p.pid for p in sbx.commands.list()]
left.disconnect()
assert gone(left.pid), "a command its client left is killed"
assert sbx.commands.kill(left.pid) is False


def sleepers():
    script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '^sleep 777' || true"
    return sbx.commands.run(script).stdout.strip()


# A shell's background job is in a group of its own: killing the shell takes it too.
pty = sbx.pty.create(PtySize(rows=24, cols=80))
sbx.pty.send_stdin(pty.pid, b"sleep 777 &\n")
deadline = time.time() + 20
while sleepers() != "1" and time.time() < deadline:
    time.sleep(0.2)
assert sleepers() == "1"
assert sbx.pty.kill(pty.pid) is True
deadline = time.time() + 20
while sleepers() != "0" and time.time() < deadline:
    time.sleep(0.2)
assert sleepers() == "0", "a killed shell's jobs go with it"
step("timeouts and disconnects", "ok")

# A paused sandbox's API says it is not running.
sbx.pause()
raises(SandboxException, lambda: sbx.commands.run("true"), "paused")
assert sbx.pause() is False, "pausing twice reports it"
Sandbox.kill(sbx.sandbox_id)
step("paused", "ok")
