// The daily flow with the unmodified e2b JavaScript SDK against `pyro api serve` (same environment as
// flow.py). Prints one line per step; any surprise throws.
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError } from 'e2b'

const sbx = await Sandbox.create({ timeoutMs: 300_000 })
console.log('created:', sbx.sandboxId)

const r = await sbx.commands.run('echo out; echo err >&2')
assert.deepEqual([r.stdout, r.stderr, r.exitCode], ['out\n', 'err\n', 0])
await assert.rejects(sbx.commands.run('exit 4'), (e) => e instanceof CommandExitError && e.exitCode === 4)
console.log('run: ok')

const lines = []
const bg = await sbx.commands.run('for i in $(seq 1 100); do echo tick $i; sleep 0.2; done', {
  background: true,
  onStdout: (line) => lines.push(line),
})
for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
assert.ok(lines.length > 0, 'background output streams')
assert.equal(await bg.kill(), true)
console.log('background: ok')

await sbx.files.write('/workspace/js.txt', 'from js')
assert.equal(await sbx.files.read('/workspace/js.txt'), 'from js')
assert.deepEqual((await sbx.files.list('/workspace')).map((e) => e.name), ['js.txt'])
console.log('files: ok')

const events = []
const watcher = await sbx.files.watchDir('/workspace', (ev) => events.push(`${ev.type}:${ev.name}`))
await sbx.files.write('/workspace/watched.txt', 'x')
for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
await watcher.stop()
assert.ok(events.includes('create:watched.txt'), events.join(','))
console.log('watch: ok')

const chunks = []
const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => chunks.push(Buffer.from(d)) })
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('echo pty-$((40 + 2)); exit 0\n'))
assert.equal((await pty.wait()).exitCode, 0)
assert.ok(Buffer.concat(chunks).toString().includes('pty-42'))
console.log('pty: ok')

await sbx.pause()
const resumed = await Sandbox.connect(sbx.sandboxId)
assert.equal(await resumed.files.read('/workspace/js.txt'), 'from js')
console.log('pause: ok')

await assert.rejects(Sandbox.connect('0123456789ab'), (e) => e.constructor.name === 'SandboxNotFoundError')
assert.equal(await resumed.kill(), true)
console.log('killed:', sbx.sandboxId)
