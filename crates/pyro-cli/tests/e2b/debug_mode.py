"""The SDK's debug mode: only E2B_DEBUG=true and E2B_SANDBOX_URL set, no key, no control plane.

`python debug_mode.py refused` expects a server without --debug-sandbox (the calls carry no
credential, so they are refused); `served` expects one with it (one shared sandbox).
"""

import sys

from e2b import AuthenticationException, Sandbox

sbx = Sandbox.create()
assert sbx.sandbox_id == "debug_sandbox_id", sbx.sandbox_id
if sys.argv[1] == "refused":
    try:
        sbx.commands.run("true")
        raise AssertionError("a debug-mode call without --debug-sandbox is refused")
    except AuthenticationException as e:
        assert "access token" in str(e), e
    print("refused: ok")
    sys.exit(0)

r = sbx.commands.run("echo debug")
assert (r.stdout, r.exit_code) == ("debug\n", 0), r
sbx.files.write("shared.txt", "kept")
sbx.kill()  # the SDK does nothing in debug mode
again = Sandbox.create()
assert again.files.read("shared.txt") == "kept", "debug mode shares one sandbox"
print("served: ok")
