// The platform packages (issue 26): one folder under npm/ for every target of package.json
// napi.targets, with the os / cpu / libc fields npm chooses by, and the loader's error on a
// platform we do not build for (scripts/native-loader.mjs, applied after every napi build).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { root, pkg, platforms } from '../../scripts/platforms.mjs'
import { MARK, patchLoader } from '../../scripts/native-loader.mjs'

const supported = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64', 'win32-x64-msvc']

test('napi.targets: the seven platforms of the release matrix', () => {
  assert.deepEqual(platforms.map((p) => p.platform), supported)
})

test('npm/<platform>/package.json for each target: name, version, binary, os, cpu, libc', () => {
  const dirs = fs.readdirSync(path.join(root, 'npm')).sort()
  assert.deepEqual(dirs, [...supported].sort())
  const libc = { gnu: ['glibc'], musl: ['musl'] }
  for (const p of platforms) {
    const j = JSON.parse(fs.readFileSync(path.join(p.dir, 'package.json'), 'utf8'))
    const [o, cpu, abi] = p.platform.split('-')
    assert.equal(j.name, `@blocks-network/sdk-${p.platform}`)
    assert.equal(j.version, pkg.version)
    assert.equal(j.main, `blocks-sdk.${p.platform}.node`)
    assert.deepEqual(j.files, [j.main, 'LICENSE', 'README.md'])
    assert.deepEqual(j.os, [o])
    assert.deepEqual(j.cpu, [cpu])
    if (o === 'linux') assert.deepEqual(j.libc, libc[abi], p.platform)
    else assert.equal(j.libc, undefined, p.platform)
    assert.equal(j.license, pkg.license)
    assert.deepEqual(j.engines, pkg.engines)
    assert.match(fs.readFileSync(path.join(p.dir, 'README.md'), 'utf8'), new RegExp(`^# @blocks-network/sdk-${p.platform}\\n`))
  }
})

test('native.js went through scripts/native-loader.mjs (the build scripts run it)', () => {
  const src = fs.readFileSync(path.join(root, 'native.js'), 'utf8')
  assert.ok(src.includes(MARK), 'run npm run build:debug')
  assert.equal(patchLoader(src), src, 'idempotent')
  assert.throws(() => patchLoader('module.exports = {}'), /napi loader has changed shape/)
  for (const s of ['install', 'build', 'build:debug', 'pack', 'bench']) assert.match(pkg.scripts[s], /napi build .*--js native\.js.* && node scripts\/native-loader\.mjs/, s)
})

/** Load a copy of native.js (no binary beside it, no platform package) as if on another platform. */
function loadAs(platform, arch) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-loader-'))
  try {
    fs.copyFileSync(path.join(root, 'native.js'), path.join(dir, 'native.js'))
    fs.writeFileSync(path.join(dir, 'as.cjs'), `Object.defineProperty(process, 'platform', { value: ${JSON.stringify(platform)} }); Object.defineProperty(process, 'arch', { value: ${JSON.stringify(arch)} })`)
    const script = `try { require('./native.js'); console.log('loaded') } catch (e) { console.log(JSON.stringify({ message: e.message, code: e.code, platform: e.platform, supportedPlatforms: e.supportedPlatforms, cause: !!e.cause })) }`
    const r = spawnSync(process.execPath, ['-r', './as.cjs', '-e', script], { cwd: dir, encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    return JSON.parse(r.stdout.trim().split('\n').pop())
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

test('an unsupported platform: the error names it and lists the supported ones', () => {
  const list = `Supported platforms: ${supported.join(', ')}.`
  for (const [platform, arch, name] of [['linux', 'riscv64', 'linux-riscv64-gnu'], ['freebsd', 'x64', 'freebsd-x64'], ['win32', 'arm64', 'win32-arm64-msvc'], ['linux', 's390x', 'linux-s390x-gnu']]) {
    const e = loadAs(platform, arch)
    assert.equal(e.code, 'ERR_BLOCKS_UNSUPPORTED_PLATFORM', name)
    assert.equal(e.platform, name)
    assert.deepEqual(e.supportedPlatforms, supported)
    assert.equal(e.message, `@blocks-network/sdk has no native engine for ${name} (Node ${process.version}). ${list}`)
    assert.ok(e.cause, 'the load errors stay in cause')
  }
})

test('a supported platform whose package is missing: the error names the package to install', () => {
  for (const [platform, arch, name] of [['linux', 'arm64', 'linux-arm64-gnu'], ['darwin', 'arm64', 'darwin-arm64'], ['linux', 'x64', 'linux-x64-gnu']]) {
    const e = loadAs(platform, arch)
    assert.equal(e.code, 'ERR_BLOCKS_NATIVE_MISSING', name)
    assert.equal(e.platform, name)
    assert.match(e.message, new RegExp(`the native engine for ${name} did not load: the optional dependency @blocks-network/sdk-${name} is missing`))
    assert.match(e.message, new RegExp(`npm install @blocks-network/sdk-${name}@${pkg.version.replaceAll('.', '\\.')}`))
    assert.match(e.message, /Supported platforms: linux-x64-gnu, /)
    assert.ok(e.cause)
  }
})
