// linux-arm64-gnu (issue 26): the binary cross-built by `npm run build:linux-arm64-gnu`, packed,
// installed as npm does on an arm64 Linux machine, and used by an arm64 Node 22 under qemu
// (qemu-aarch64-static -L /usr/aarch64-linux-gnu): the echo task and a stream task end to end
// against an embedded devnet, and against the cross-built devnet binary (also under qemu).
// Needs scripts/setup-cross.sh; every missing tool or binary fails the test.
// Run: npm run build:linux-arm64-gnu && npm run test:linux-arm64-gnu
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { platform, cross, crossArtifacts } from '../../scripts/platforms.mjs'
import { env, lastJson, packAndInstall, requireFile, requireTool, run, start, stop } from './helpers.mjs'

const p = platform('linux-arm64-gnu')
const c = cross['linux-arm64-gnu']
const addon = path.join(p.dir, p.binary)
const built = 'run npm run build:linux-arm64-gnu'
let project
let devnet

before(() => {
  requireTool('qemu-aarch64-static')
  requireTool('file')
  requireTool('readelf')
  requireFile(path.join(c.sysroot, 'lib/ld-linux-aarch64.so.1'), 'the arm64 sysroot (libc6-arm64-cross): run scripts/setup-cross.sh')
  requireFile(c.node, 'the arm64 Node: run scripts/setup-cross.sh')
  requireFile(addon, built)
  requireFile(crossArtifacts(p).devnet, built)
})

after(async () => {
  await stop(devnet)
  project?.cleanup()
})

test('the addon and the devnet binary are ARM aarch64 ELF files that link no OpenSSL', () => {
  for (const f of [addon, crossArtifacts(p).devnet]) {
    const what = run('file', ['-b', f])
    assert.match(what, /ELF 64-bit LSB .*ARM aarch64/, `${f}: ${what}`)
    const needed = run('readelf', ['-d', f]).split('\n').filter((l) => l.includes('(NEEDED)')).join('\n')
    assert.doesNotMatch(needed, /libssl|libcrypto/)
    assert.match(needed, /libc\.so\.6/)
  }
  assert.match(run('file', ['-b', addon]), /shared object/)
})

test('the arm64 Node runs under qemu', () => {
  const out = run(...splitArgv([...c.run(c.node), '-p', 'process.arch + " " + process.version + " " + process.versions.napi']))
  assert.match(out, /^arm64 v22\./)
})

test('the packed tarball installs the arm64 package on an arm64 machine (npm --cpu=arm64)', () => {
  project = packAndInstall(['linux-x64-gnu', 'linux-arm64-gnu'], ['--os=linux', '--cpu=arm64', '--libc=glibc'])
  assert.deepEqual(project.installed, ['sdk', 'sdk-linux-arm64-gnu'])
  const installed = path.join(project.dir, 'node_modules/@blocks-network/sdk-linux-arm64-gnu', p.binary)
  assert.equal(fs.readFileSync(installed).compare(fs.readFileSync(addon)), 0)
})

test('arm64 Node under qemu: echo x20 and a stream task against an embedded devnet', { timeout: 600_000 }, () => {
  assert.ok(project, 'the install test must pass first')
  const started = Date.now()
  const out = run(...splitArgv([...c.run(c.node), 'e2e.mjs']), { cwd: project.dir, env: { ...env, ROUNDS: '20' } })
  const r = lastJson(out)
  console.log(`arm64 under qemu, embedded devnet: ${JSON.stringify(r)} (${((Date.now() - started) / 1000).toFixed(1)} s)`)
  assert.equal(r.arch, 'arm64')
  assert.ok(r.glibc, 'glibc Node')
  assert.deepEqual(r.bindings, [path.join(project.dir, 'node_modules/@blocks-network/sdk-linux-arm64-gnu', p.binary)])
  assert.equal(r.echoRounds, 20)
  assert.ok(r.echoMedianMs > 0)
  assert.deepEqual(r.words, ['one', 'two', 'three', 'four', 'five'])
  assert.equal(r.streamState, 'completed')
  assert.equal(r.streamArtifact, 'one two three four five')
})

test('the cross-built devnet binary under qemu serves the arm64 caller and agents', { timeout: 600_000 }, async () => {
  assert.ok(project, 'the install test must pass first')
  const d = await start(c.run(crossArtifacts(p).devnet).concat(['--port', '0', '--in-memory']), /listening on/)
  devnet = d.child
  const exports = Object.fromEntries([...d.out().matchAll(/export (\w+)=(\S+)/g)].map((m) => [m[1], m[2]]))
  assert.ok(exports.BLOCKS_CDM_URL && exports.BLOCKS_API_KEY, d.out())
  const out = run(...splitArgv([...c.run(c.node), 'e2e.mjs']), { cwd: project.dir, env: { ...env, ...exports, ROUNDS: '5' } })
  const r = lastJson(out)
  console.log(`arm64 under qemu, devnet binary under qemu: ${JSON.stringify(r)}`)
  assert.equal(r.devnet, 'external')
  assert.equal(r.echoRounds, 5)
  assert.deepEqual(r.words, ['one', 'two', 'three', 'four', 'five'])
  assert.equal(r.streamState, 'completed')
})

function splitArgv(argv) {
  return [argv[0], argv.slice(1)]
}
