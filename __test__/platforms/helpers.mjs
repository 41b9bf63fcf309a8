// Shared by the platform tests (issue 26): pack the tarballs for some platforms, install them
// into a fresh project as npm would on another platform, run programs with a timeout.
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { root, platform, pkg } from '../../scripts/platforms.mjs'

export { root }
const nodeDir = path.dirname(process.execPath)
// node 22 first; no ~/.cargo/bin: nothing here may build Rust
export const env = { ...process.env, PATH: [nodeDir, '/usr/local/bin', '/usr/bin', '/bin'].join(':'), npm_config_audit: 'false', npm_config_fund: 'false' }
delete env.CARGO_TARGET_DIR

/** A tool the test needs: a missing one fails the test (scripts/setup-cross.sh installs them). */
export function requireTool(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  assert.equal(r.status, 0, `${cmd} is missing: run scripts/setup-cross.sh (npm run setup:cross)`)
  return r.stdout.trim()
}

export function requireFile(file, hint) {
  assert.ok(fs.existsSync(file), `${file} is missing: ${hint}`)
  return file
}

export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000, maxBuffer: 64 << 20, ...opts })
}

/**
 * `node scripts/pack.mjs` for these platforms into a temporary directory, then a fresh project
 * depending on the main tarball, the platform packages resolved to their tarballs (overrides), and
 * `npm install` with the given npm platform flags (--cpu, --os, --libc), as npm on that machine
 * would choose. Returns { dir, tarballs, installed }.
 */
export function packAndInstall(platforms, npmFlags = []) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-platform-dist-'))
  const printed = run(process.execPath, [path.join(root, 'scripts/pack.mjs'), '--out', out, '--platforms', platforms.join(',')], { cwd: root })
  const tarballs = printed.trim().split('\n').filter((l) => l.endsWith('.tgz'))
  assert.equal(tarballs.length, platforms.length + 1, printed)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-platform-'))
  const main = tarballs.find((t) => path.basename(t) === `blocks-network-sdk-${pkg.version}.tgz`)
  const overrides = Object.fromEntries(platforms.map((p) => {
    const pl = platform(p)
    return [pl.packageName, `file:${tarballs.find((t) => path.basename(t).startsWith(`blocks-network-sdk-${p}-`))}`]
  }))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'platform-test', version: '1.0.0', private: true, type: 'module', dependencies: { [pkg.name]: `file:${main}` }, overrides }, null, 2))
  run('npm', ['install', '--no-package-lock', ...npmFlags], { cwd: dir })
  const installed = fs.readdirSync(path.join(dir, 'node_modules/@blocks-network')).sort()
  for (const f of ['e2e.mjs']) fs.copyFileSync(path.join(import.meta.dirname, f), path.join(dir, f))
  fs.copyFileSync(path.join(root, 'examples/echo/agent-card.json'), path.join(dir, 'echo-card.json'))
  fs.copyFileSync(path.join(root, 'examples/echo-stream/agent-card.json'), path.join(dir, 'echo-stream-card.json'))
  return { dir, out, tarballs, installed, cleanup: () => [dir, out].forEach((d) => fs.rmSync(d, { recursive: true, force: true })) }
}

/** Start a long-running program; resolve with { child, out } once `pattern` is on its stdout. */
export function start(argv, pattern, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts })
    let out = ''
    let err = ''
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')}: no ${pattern} within 120 s\n${out}\n${err}`)), 120_000)
    child.stdout.on('data', (d) => {
      out += d
      if (pattern.test(out)) {
        clearTimeout(timer)
        resolve({ child, out: () => out })
      }
    })
    child.stderr.on('data', (d) => (err += d))
    child.once('exit', (code) => reject(new Error(`${argv.join(' ')} exited with ${code}\n${out}\n${err}`)))
  })
}

export async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  try {
    process.kill(-child.pid, 'SIGTERM')
  } catch {
    child.kill('SIGTERM')
  }
  await exited
}

/** The last line of a program's output, as JSON (e2e.mjs prints its result so). */
export function lastJson(out) {
  return JSON.parse(out.trim().split('\n').pop())
}
