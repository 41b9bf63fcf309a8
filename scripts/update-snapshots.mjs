// `npm run update-snapshots`: after reviewing a change to the native binding's generated types,
// copy native.d.ts (written by `napi build`) over the committed snapshot that
// __test__/types.test.mjs compares it with. The test itself never writes the snapshot.
import fs from 'node:fs'
import path from 'node:path'

const root = path.resolve(import.meta.dirname, '..')
const generated = path.join(root, 'native.d.ts')
const snapshot = path.join(root, '__test__', 'snapshots', 'native.d.ts')

if (!fs.existsSync(generated)) {
  console.error(`update-snapshots: ${path.relative(root, generated)} not found: build the addon first (npm run build:debug)`)
  process.exit(1)
}
const norm = (s) => `${s.replace(/\r\n/g, '\n').trim()}\n`
const next = norm(fs.readFileSync(generated, 'utf8'))
const prev = fs.existsSync(snapshot) ? norm(fs.readFileSync(snapshot, 'utf8')) : null
if (prev === next) {
  console.log(`update-snapshots: ${path.relative(root, snapshot)} is up to date`)
} else {
  fs.mkdirSync(path.dirname(snapshot), { recursive: true })
  fs.writeFileSync(snapshot, next)
  console.log(`update-snapshots: wrote ${path.relative(root, snapshot)} from ${path.relative(root, generated)}; review the diff before committing`)
}
