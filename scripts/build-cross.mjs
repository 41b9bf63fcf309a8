// `npm run build:linux-arm64-gnu` / `npm run build:linux-x64-musl` (issue 26): cross-build the
// release engine (the napi addon) and the devnet binary on this Linux x64 machine, and put the
// addon in npm/<platform>/blocks-sdk.<platform>.node.
//
// No Rust target can be downloaded here, so the standard library is built from source
// (-Zbuild-std) by the distribution's compiler (Debian rustc-web + rust-web-src, which allows it
// with RUSTC_BOOTSTRAP=1), linked by the distribution's cross gcc. Install them with
// scripts/setup-cross.sh. The build has its own target directory (scripts/platforms.mjs
// crossTargetDir) and holds /tmp/heavy-build.lock while it runs.
//
// node scripts/build-cross.mjs <platform> [--debug]
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { platform, cross, crossArtifacts, crossTargetDir, distRust, root } from './platforms.mjs'

const args = process.argv.slice(2)
const name = args.find((a) => !a.startsWith('--'))
const profile = args.includes('--debug') ? 'debug' : 'release'
if (!name || !cross[name]) {
  console.error(`usage: node scripts/build-cross.mjs <${Object.keys(cross).join('|')}> [--debug]`)
  process.exit(2)
}
const p = platform(name)
const c = cross[name]

function which(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim()
}
const missing = [distRust.cargo, distRust.rustc].filter((f) => !fs.existsSync(f))
if (!which(c.cc)) missing.push(c.cc)
if (!which('flock')) missing.push('flock')
let sysroot = ''
if (fs.existsSync(distRust.rustc)) {
  sysroot = execFileSync(distRust.rustc, ['--print', 'sysroot'], { encoding: 'utf8' }).trim()
  if (!fs.existsSync(path.join(sysroot, 'lib/rustlib/src/rust/library/std'))) missing.push('rust-web-src (the standard library source)')
}
if (missing.length) {
  console.error(`build-cross: missing ${missing.join(', ')}: run scripts/setup-cross.sh (as root) first`)
  process.exit(1)
}

// musl: with a dynamic C runtime (-crt-static) the standard library links the unwinder as
// -lgcc_s, and an Alpine machine has libgcc_s.so.1 (the libgcc package; Node needs it too). Debian
// has no libgcc_s built for musl, and its static libgcc_eh.a needs glibc's _dl_find_object. So the
// link runs against glibc's libgcc_s.so.1 (same soname, same GCC_* symbol versions as Alpine's;
// its own glibc needs are left to the loader: --allow-shlib-undefined), found first through a
// linker wrapper. The wrapper's path never changes (cargo rebuilds everything when the linker does).
let linker = c.cc
if (p.triple.endsWith('-musl')) {
  const dir = path.join(crossTargetDir, 'musl-link')
  fs.mkdirSync(dir, { recursive: true })
  const libgcc = execFileSync('gcc', ['-print-file-name=libgcc_s.so.1'], { encoding: 'utf8' }).trim()
  fs.rmSync(path.join(dir, 'libgcc_s.so'), { force: true })
  fs.symlinkSync(fs.realpathSync(libgcc), path.join(dir, 'libgcc_s.so'))
  linker = path.join(dir, 'musl-gcc-link')
  fs.writeFileSync(linker, `#!/bin/sh\n# scripts/build-cross.mjs: musl-gcc, with libgcc_s found in ${dir}\nexec ${c.cc} -L${dir} -Wl,--allow-shlib-undefined "$@"\n`, { mode: 0o755 })
}

const T = p.triple.toUpperCase().replaceAll('-', '_')
const t = p.triple.replaceAll('-', '_')
const env = {
  ...process.env,
  RUSTC_BOOTSTRAP: '1', // -Zbuild-std on a stable compiler
  RUSTC: distRust.rustc,
  RUSTDOC: distRust.rustdoc,
  [`CARGO_TARGET_${T}_LINKER`]: linker,
  [`CARGO_TARGET_${T}_RUSTFLAGS`]: c.rustflags.join(' '),
  [`CC_${t}`]: c.cc,
  [`AR_${t}`]: c.ar,
}
// rustup's variables must not leak into the distribution's cargo
for (const k of ['RUSTUP_TOOLCHAIN', 'CARGO_BUILD_TARGET', 'RUSTFLAGS', 'CARGO_ENCODED_RUSTFLAGS']) delete env[k]

const cargoArgs = ['build', '--locked', '-Zbuild-std', '--target', p.triple, '--target-dir', crossTargetDir, '-p', 'blocks-sdk-node', '-p', 'blocks-devnet', '--lib', '--bins']
if (profile === 'release') cargoArgs.push('--release')
const rustcVersion = execFileSync(distRust.rustc, ['--version'], { encoding: 'utf8' }).trim()
console.log(`build-cross: ${p.platform} (${p.triple}, ${profile}) with ${rustcVersion}, linked by ${c.cc}; target dir ${crossTargetDir}`)
const started = Date.now()
const r = spawnSync('flock', ['-w', '3600', '/tmp/heavy-build.lock', distRust.cargo, ...cargoArgs], { cwd: root, env, stdio: 'inherit' })
if (r.status !== 0) {
  console.error(`build-cross: cargo failed (${r.status ?? r.signal})`)
  process.exit(1)
}
const seconds = ((Date.now() - started) / 1000).toFixed(0)

const out = crossArtifacts(p, profile)
const dest = path.join(p.dir, p.binary)
fs.copyFileSync(out.addon, dest)
console.log(`build-cross: ${p.platform} built in ${seconds} s (waiting for the build lock included)`)
console.log(execFileSync('file', ['-b', dest], { encoding: 'utf8' }).trim().replace(/^/, `${path.relative(root, dest)}: `))
console.log(execFileSync('file', ['-b', out.devnet], { encoding: 'utf8' }).trim().replace(/^/, `${out.devnet}: `))
