// `npm run pack`: stage and pack the two npm packages into dist/:
//   @blocks-network/sdk                 JS entry (CJS + ESM), loader, types, bins — no binary, no build step
//   @blocks-network/sdk-linux-x64-gnu   the release .node (built by `napi build --release` first)
// Checks that the binary links no OpenSSL. Prints the tarball paths, one per line, last.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

const root = path.resolve(import.meta.dirname, '..')
const dist = path.join(root, 'dist')
const binary = 'blocks-sdk.linux-x64-gnu.node'
fs.rmSync(dist, { recursive: true, force: true })
fs.mkdirSync(dist)

const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const platform = JSON.parse(fs.readFileSync(path.join(root, 'npm/linux-x64-gnu/package.json'), 'utf8'))
if (platform.version !== pkg.version) throw new Error(`version mismatch: sdk ${pkg.version}, platform package ${platform.version}`)

// the binary: no OpenSSL, only libc-level libraries
const ldd = execFileSync('ldd', [path.join(root, binary)], { encoding: 'utf8' })
if (/libssl|libcrypto/.test(ldd)) throw new Error(`the binary links OpenSSL:\n${ldd}`)
console.log(`ldd ${binary}:\n${ldd.trim()}`)

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
published.optionalDependencies = { [platform.name]: pkg.version }
fs.writeFileSync(path.join(main, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)

// platform package
const plat = path.join(dist, 'linux-x64-gnu')
fs.mkdirSync(plat)
fs.copyFileSync(path.join(root, binary), path.join(plat, binary))
fs.copyFileSync(path.join(root, 'LICENSE'), path.join(plat, 'LICENSE'))
fs.copyFileSync(path.join(root, 'npm/linux-x64-gnu/package.json'), path.join(plat, 'package.json'))
fs.copyFileSync(path.join(root, 'npm/linux-x64-gnu/README.md'), path.join(plat, 'README.md'))

const tarballs = [plat, main].map((dir) => {
  const out = execFileSync('npm', ['pack', '--pack-destination', dist, '--silent'], { cwd: dir, encoding: 'utf8' }).trim().split('\n').pop()
  return path.join(dist, out)
})
for (const t of tarballs) console.log(t)
