// The E2B JS SDK's core flow against StacyVM's E2B-compatible API.
//
// Driven by tests/e2e/test_e2b_js.py; runs alone too:
//   E2B_API_URL=http://127.0.0.1:PORT E2B_SANDBOX_URL=http://127.0.0.1:PORT \
//   E2B_API_KEY=e2b_<40 hex> E2B_DOMAIN=localhost node core_flow.mjs
//
// Prints `OK <n checks>` and exits 0 when every check passed; on the first failed check it
// prints `FAIL <check>: <reason>` to stderr and exits 1. The sandbox is killed either way.
// File paths are relative on purpose: the mock provider maps relative paths (and a process's
// working directory) into the sandbox, while absolute ones would be the host's.
import assert from 'node:assert/strict'
import { CommandExitError, NotFoundError, Sandbox } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY', 'E2B_DOMAIN']) {
  if (!process.env[name]) {
    console.error(`FAIL setup: environment variable ${name} is not set`)
    process.exit(2)
  }
}

let checks = 0
let current = 'setup'
let sbx

// Runs one named check; any exception fails the run with the check's name.
async function check(name, fn) {
  current = name
  await fn()
  checks += 1
}

// Collects every page of a paginator (Sandbox.list returns a SandboxPaginator in 2.x).
async function allPages(paginator) {
  const items = []
  while (paginator.hasNext) {
    items.push(...(await paginator.nextItems()))
  }
  return items
}

async function main() {
  await check('Sandbox.create', async () => {
    sbx = await Sandbox.create('base', {
      timeoutMs: 120_000,
      metadata: { t: 'js' },
      envs: { FOO: 'bar' },
    })
    assert.equal(typeof sbx.sandboxId, 'string')
    assert.ok(sbx.sandboxId.length > 0, 'empty sandboxId')
  })
  // Machine-readable for the pytest driver, which checks the sandbox's fate itself.
  console.log(`SANDBOX ${sbx.sandboxId}`)

  await check('commands.run foreground (stdout, stderr, sandbox envs)', async () => {
    const r = await sbx.commands.run('echo hi; echo err >&2; echo $FOO')
    assert.equal(r.stdout, 'hi\nbar\n')
    assert.equal(r.stderr, 'err\n')
    assert.equal(r.exitCode, 0)
  })

  await check('commands.run non-zero exit rejects with CommandExitError', async () => {
    await assert.rejects(sbx.commands.run('exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${err?.name}: ${err?.message}`)
      assert.equal(err.exitCode, 3)
      return true
    })
  })

  await check('commands.run background + wait()', async () => {
    const h = await sbx.commands.run('sleep 1; echo bg', { background: true })
    assert.equal(typeof h.pid, 'number')
    assert.ok(h.pid > 0, `pid ${h.pid}`)
    const r = await h.wait()
    assert.equal(r.stdout, 'bg\n')
    assert.equal(r.exitCode, 0)
  })

  await check('commands.list shows a long background command; commands.kill(pid)', async () => {
    const h = await sbx.commands.run('sleep 30', { background: true, timeoutMs: 0 })
    const procs = await sbx.commands.list()
    const pids = procs.map((p) => p.pid)
    assert.ok(pids.includes(h.pid), `pid ${h.pid} not in commands.list() pids ${JSON.stringify(pids)}`)
    assert.equal(await sbx.commands.kill(h.pid), true)
    // The killed command's stream ends with a non-zero exit, so wait() rejects.
    await assert.rejects(h.wait(), (err) => {
      assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${err?.name}: ${err?.message}`)
      assert.notEqual(err.exitCode, 0)
      return true
    })
  })

  await check('files.write + files.read (text)', async () => {
    const info = await sbx.files.write('a.txt', 'hello')
    assert.equal(info.name, 'a.txt')
    assert.equal(await sbx.files.read('a.txt'), 'hello')
  })

  await check('files.write + files.read (bytes, all 256 values)', async () => {
    const data = new Uint8Array(512)
    for (let i = 0; i < data.length; i++) data[i] = i % 256
    data[0] = 0x00
    data[data.length - 1] = 0xff
    await sbx.files.write('bin.dat', data)
    const back = await sbx.files.read('bin.dat', { format: 'bytes' })
    assert.ok(back instanceof Uint8Array, `expected Uint8Array, got ${Object.prototype.toString.call(back)}`)
    assert.equal(back.length, data.length)
    assert.deepEqual(Buffer.from(back), Buffer.from(data))
  })

  await check('files.list(".") contains a.txt', async () => {
    const entries = await sbx.files.list('.')
    const names = entries.map((e) => e.name)
    assert.ok(names.includes('a.txt'), `a.txt not in ${JSON.stringify(names)}`)
    const a = entries.find((e) => e.name === 'a.txt')
    assert.equal(a.type, 'file')
    assert.equal(a.size, 5)
  })

  await check('files.exists', async () => {
    assert.equal(await sbx.files.exists('a.txt'), true)
    assert.equal(await sbx.files.exists('no-such-file.txt'), false)
  })

  await check('Sandbox.connect of the live sandbox sees its files and envs', async () => {
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(again.sandboxId, sbx.sandboxId)
    const r = await again.commands.run('cat a.txt; echo $FOO')
    assert.equal(r.stdout, 'hellobar\n')
  })

  await check('Sandbox.list with a metadata query contains the sandbox', async () => {
    const listed = await allPages(Sandbox.list({ query: { metadata: { t: 'js' } } }))
    const ids = listed.map((s) => s.sandboxId)
    assert.ok(ids.includes(sbx.sandboxId), `${sbx.sandboxId} not in ${JSON.stringify(ids)}`)
    const mine = listed.find((s) => s.sandboxId === sbx.sandboxId)
    assert.equal(mine.metadata.t, 'js')
    assert.equal(mine.state, 'running')
    const other = await allPages(Sandbox.list({ query: { metadata: { t: 'not-js' } } }))
    assert.ok(!other.map((s) => s.sandboxId).includes(sbx.sandboxId),
      'the sandbox is listed under a metadata filter it does not match')
  })

  await check('sbx.kill()', async () => {
    await sbx.kill()
  })

  await check('Sandbox.connect of a killed sandbox rejects (not found)', async () => {
    await assert.rejects(Sandbox.connect(sbx.sandboxId), (err) => {
      assert.ok(err instanceof NotFoundError, `expected NotFoundError, got ${err?.name}: ${err?.message}`)
      return true
    })
  })

  console.log(`OK ${checks} checks`)
}

try {
  await main()
  process.exit(0)
} catch (err) {
  console.error(`FAIL ${current}: ${err?.stack ?? err}`)
  if (err?.cause) console.error(`  cause: ${err.cause?.stack ?? err.cause}`)
  if (sbx) {
    await Sandbox.kill(sbx.sandboxId).catch((e) => console.error(`  (cleanup kill failed: ${e})`))
  }
  process.exit(1)
}
