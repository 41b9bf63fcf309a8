// Run after `napi build --platform --js native.js` (the package.json build scripts do): the
// napi-generated loader's own error on a platform without a binary is "Cannot find native
// binding. npm has a bug related to optional dependencies…", whatever the platform. This inserts,
// in front of that error, one that names the platform (as the npm packages name it:
// linux-riscv64-gnu, freebsd-x64…) and lists the supported ones (package.json napi.targets), or,
// for a supported platform whose package did not load, names the package to install. The load
// errors stay in `error.cause`. Idempotent; fails if napi's loader no longer has the expected shape.
//
// node scripts/native-loader.mjs [path/to/native.js]
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { platforms, root, pkg } from './platforms.mjs'

export const MARK = '/* @blocks-network/sdk: platform check, inserted by scripts/native-loader.mjs */'

export function patchLoader(source) {
  if (source.includes(MARK)) return source
  // the generated loader's final check: `if (!nativeBinding) {` then `if (loadErrors.length > 0) {`
  const anchor = /\nif \(!nativeBinding\) \{\n\s+if \(loadErrors\.length > 0\) \{/g
  const hits = [...source.matchAll(anchor)]
  if (hits.length !== 1 || !/\nconst isMusl = /.test(source) || !/\nfunction createLoadErrorChain\(/.test(source)) {
    throw new Error(`native-loader: the napi loader has changed shape (${hits.length} final checks found); update scripts/native-loader.mjs`)
  }
  const supported = platforms.map((p) => p.platform)
  const check = `
${MARK}
if (!nativeBinding) {
  const supported = ${JSON.stringify(supported)}
  const abi = process.platform === 'linux' ? (process.arch === 'arm' ? (isMusl() ? '-musleabihf' : '-gnueabihf') : isMusl() ? '-musl' : '-gnu') : process.platform === 'win32' ? '-msvc' : ''
  const platform = \`\${process.platform}-\${process.arch}\${abi}\`
  const packageName = \`${pkg.name}-\${platform}\`
  const error = new Error(
    supported.includes(platform)
      ? \`${pkg.name}: the native engine for \${platform} did not load: the optional dependency \${packageName} is missing or broken (reinstall without --omit=optional / --no-optional, or npm install \${packageName}@${pkg.version}). Supported platforms: \${supported.join(', ')}.\`
      : \`${pkg.name} has no native engine for \${platform} (Node \${process.version}). Supported platforms: \${supported.join(', ')}.\`,
  )
  error.code = supported.includes(platform) ? 'ERR_BLOCKS_NATIVE_MISSING' : 'ERR_BLOCKS_UNSUPPORTED_PLATFORM'
  error.platform = platform
  error.supportedPlatforms = supported
  if (loadErrors.length > 0) error.cause = createLoadErrorChain(loadErrors)
  throw error
}
`
  const at = hits[0].index
  return source.slice(0, at) + check + source.slice(at)
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const file = path.resolve(process.argv[2] ?? path.join(root, 'native.js'))
  const before = fs.readFileSync(file, 'utf8')
  const after = patchLoader(before)
  if (after !== before) fs.writeFileSync(file, after)
  console.log(`native-loader: ${path.relative(process.cwd(), file) || file} ${after !== before ? 'patched' : 'already patched'} (${platforms.length} supported platforms)`)
}
