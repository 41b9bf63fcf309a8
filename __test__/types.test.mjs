// index.d.ts is checked two ways: TypeScript callers that must compile under --strict, and
// callers with mistakes that must not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const dir = fileURLToPath(new URL('./types/', import.meta.url))
const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url))

function compile(args) {
  try {
    execFileSync(process.execPath, [tsc, ...args], { cwd: dir, encoding: 'utf8', stdio: 'pipe' })
    return { ok: true, out: '' }
  } catch (e) {
    return { ok: false, out: `${e.stdout}${e.stderr}` }
  }
}

test('the examples (TypeScript) type-check under --strict', () => {
  const r = compile(['-p', fileURLToPath(new URL('../examples/tsconfig.json', import.meta.url))])
  assert.ok(r.ok, r.out)
})

test('typed callers and agents compile under --strict', () => {
  const r = compile(['-p', 'tsconfig.json'])
  assert.ok(r.ok, r.out)
})

for (const file of readdirSync(path.join(dir, 'fail')).filter((f) => f.endsWith('.ts'))) {
  test(`a caller with a type mistake does not compile: ${file}`, () => {
    const r = compile(['--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', path.join('fail', file)])
    assert.equal(r.ok, false, `${file} compiled but must not`)
    assert.match(r.out, /error TS(2322|2345)/, r.out)
    assert.doesNotMatch(r.out, /error TS(1309|2307|2305)/, r.out)
  })
}

test('the generated native types match the committed snapshot (update: npm run update-snapshots)', async () => {
  // the test only reads: updating the snapshot is a separate, deliberate step
  // (scripts/update-snapshots.mjs), so a run can never pass by comparing a file with itself
  const { readFileSync } = await import('node:fs')
  const generated = readFileSync(new URL('../native.d.ts', import.meta.url), 'utf8')
  const snapshot = readFileSync(new URL('./snapshots/native.d.ts', import.meta.url), 'utf8')
  const norm = (s) => s.replace(/\r\n/g, '\n').trim()
  assert.equal(norm(generated), norm(snapshot), 'native.d.ts changed: review the binding change, then run `npm run update-snapshots` and commit the snapshot')
})
