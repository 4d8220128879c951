// The unmodified E2B JS SDK (npm `e2b`, pinned by package-lock.json) against a real sbx
// daemon: the core of what an application does. Run by crates/sbx/tests/e2e/e2b.rs with
// E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (alice) and SBX_TEST_BOB_KEY (bob).
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError } from 'e2b'

const sandbox = await Sandbox.create({ metadata: { lang: 'js' }, timeoutMs: 120_000 })
try {
  // Commands: output, exit codes, env, cwd, user, background and kill.
  const run = await sandbox.commands.run('echo out; echo err >&2')
  assert.equal(run.stdout, 'out\n')
  assert.equal(run.stderr, 'err\n')
  assert.equal(run.exitCode, 0)
  await assert.rejects(sandbox.commands.run('exit 5'), (e) => e instanceof CommandExitError && e.exitCode === 5)
  const env = await sandbox.commands.run('echo $A; pwd; whoami', { envs: { A: 'js' }, cwd: '/tmp' })
  assert.equal(env.stdout, 'js\n/tmp\nuser\n')
  assert.equal((await sandbox.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
  const background = await sandbox.commands.run('sleep 60', { background: true, timeoutMs: 0 })
  assert.ok((await sandbox.commands.list()).some((p) => p.pid === background.pid))
  assert.equal(await sandbox.commands.kill(background.pid), true)

  // Files.
  await sandbox.files.write('/home/user/js.txt', 'from node')
  assert.equal(await sandbox.files.read('/home/user/js.txt'), 'from node')
  await sandbox.files.write([
    { path: '/home/user/multi/a.txt', data: 'A' },
    { path: '/home/user/multi/b.txt', data: 'B' },
  ])
  const names = (await sandbox.files.list('/home/user/multi')).map((e) => e.name).sort()
  assert.deepEqual(names, ['a.txt', 'b.txt'])
  assert.equal(await sandbox.files.exists('/home/user/multi/b.txt'), true)
  assert.equal(await sandbox.files.exists('/home/user/none'), false)
  assert.equal(await sandbox.files.makeDir('/home/user/d'), true)
  await sandbox.files.rename('/home/user/js.txt', '/home/user/d/moved.txt')
  assert.equal(await sandbox.files.read('/home/user/d/moved.txt'), 'from node')
  await sandbox.files.remove('/home/user/d')
  await assert.rejects(sandbox.files.read('/home/user/d/moved.txt'), (e) => e instanceof NotFoundError)

  // Lifecycle: info, list, timeout, connect, pause and resume.
  const info = await sandbox.getInfo()
  assert.equal(info.sandboxId, sandbox.sandboxId)
  assert.deepEqual(info.metadata, { lang: 'js' })
  const listed = await Sandbox.list({ query: { metadata: { lang: 'js' } } }).nextItems()
  assert.ok(listed.some((s) => s.sandboxId === sandbox.sandboxId))
  await sandbox.setTimeout(200_000)
  const again = await Sandbox.connect(sandbox.sandboxId)
  assert.equal((await again.commands.run('echo connected')).stdout, 'connected\n')
  await sandbox.pause()
  assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).state, 'paused')
  const resumed = await Sandbox.connect(sandbox.sandboxId)
  assert.equal((await resumed.commands.run('echo resumed')).stdout, 'resumed\n')
  assert.equal(await sandbox.isRunning(), true)

  // Ownership: bob's key sees nothing of alice's sandbox.
  const bob = { apiKey: process.env.SBX_TEST_BOB_KEY }
  assert.equal(await Sandbox.kill(sandbox.sandboxId, bob), false)
  await assert.rejects(Sandbox.getInfo(sandbox.sandboxId, bob))
} finally {
  await sandbox.kill()
}
assert.equal(await sandbox.isRunning(), false)
assert.equal(await Sandbox.kill(sandbox.sandboxId), false)
console.log('all ok js')
