// `npm run pack`: stage and pack the npm packages into dist/:
//   @blocks-network/sdk                 JS entry (CJS + ESM), loader, types, bins — no binary, no build step
//   @blocks-network/sdk-linux-x64-gnu   the release .node (built by `napi build --release` first)
// Checks that the binaries link no OpenSSL. Prints the tarball paths, one per line, last.
//
// node scripts/pack.mjs [--out DIR] [--platforms linux-x64-gnu,linux-arm64-gnu,…|all]
// packs the platform packages named (default: linux-x64-gnu) and lists exactly those as the main
// package's optionalDependencies. A binary is taken from npm/<platform>/ (the cross builds, CI's
// artifacts), else from the root (napi's own output).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { platform as platformOf, platforms as allPlatforms, binaryPath } from './platforms.mjs'
import { MARK } from './native-loader.mjs'

const root = path.resolve(import.meta.dirname, '..')
const argv = process.argv.slice(2)
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt)
const dist = path.resolve(opt('--out', path.join(root, 'dist')))
const wanted = opt('--platforms', 'linux-x64-gnu')
const targets = wanted === 'all' ? allPlatforms : wanted.split(',').map((n) => platformOf(n.trim()))
fs.rmSync(dist, { recursive: true, force: true })
fs.mkdirSync(dist, { recursive: true })

const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
if (!fs.readFileSync(path.join(root, 'native.js'), 'utf8').includes(MARK)) {
  throw new Error('native.js lacks the platform check: run node scripts/native-loader.mjs after napi build')
}
for (const t of targets) {
  const platform = JSON.parse(fs.readFileSync(path.join(t.dir, 'package.json'), 'utf8'))
  if (platform.version !== pkg.version) throw new Error(`version mismatch: sdk ${pkg.version}, ${platform.name} ${platform.version}`)
  const bin = binaryPath(t)
  if (!fs.existsSync(bin)) throw new Error(`${t.platform}: no binary ${t.binary} in ${path.relative(root, t.dir)}/ or at the root`)
  // the binary: no OpenSSL, only libc-level libraries
  if (t.platform === 'linux-x64-gnu' && process.platform === 'linux' && process.arch === 'x64') {
    const ldd = execFileSync('ldd', [bin], { encoding: 'utf8' })
    if (/libssl|libcrypto/.test(ldd)) throw new Error(`the binary links OpenSSL:\n${ldd}`)
    console.log(`ldd ${t.binary}:\n${ldd.trim()}`)
  } else if (t.os === 'linux') {
    const needed = execFileSync('readelf', ['-d', bin], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('(NEEDED)'))
    if (needed.some((l) => /libssl|libcrypto/.test(l))) throw new Error(`${t.binary} links OpenSSL:\n${needed.join('\n')}`)
    console.log(`readelf -d ${t.binary}:\n${needed.join('\n')}`)
  }
}

function copy(rel, to) {
  fs.cpSync(path.join(root, rel), path.join(to, rel), { recursive: true })
}

// main package: published files, a package.json without the from-source build
const main = path.join(dist, 'sdk')
for (const f of pkg.files) if (!f.includes('*')) copy(f.replace(/\/$/, ''), main)
const published = { ...pkg }
delete published.devDependencies
delete published.allowScripts
published.scripts = {}
published.files = pkg.files.filter((f) => !f.includes('*'))
published.optionalDependencies = Object.fromEntries(targets.map((t) => [t.packageName, pkg.version]))
fs.writeFileSync(path.join(main, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)

// platform packages
const staged = targets.map((t) => {
  const plat = path.join(dist, t.platform)
  fs.mkdirSync(plat)
  fs.copyFileSync(binaryPath(t), path.join(plat, t.binary))
  fs.copyFileSync(path.join(root, 'LICENSE'), path.join(plat, 'LICENSE'))
  fs.copyFileSync(path.join(t.dir, 'package.json'), path.join(plat, 'package.json'))
  fs.copyFileSync(path.join(t.dir, 'README.md'), path.join(plat, 'README.md'))
  return plat
})

const tarballs = [...staged, main].map((dir) => {
  const out = execFileSync('npm', ['pack', '--pack-destination', dist, '--silent'], { cwd: dir, encoding: 'utf8' }).trim().split('\n').pop()
  return path.join(dist, out)
})
for (const t of tarballs) console.log(t)
