// COMPAT.md against the behaviour checklist (shared/spec/behaviors.md, beside the repository) and
// the tests: every ID is named by a test or listed in COMPAT.md with its reason, and the page's
// table is what the tree says (regenerate it with `node scripts/compat-table.mjs`).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { compute, table, root, checklist } from '../scripts/compat-table.mjs'

test('the behaviour checklist is readable beside the repository', () => {
  assert.ok(fs.existsSync(checklist), `expected the checklist at ${checklist}`)
})

test('issues 17 and 18: every behaviour ID is named by a test or listed in COMPAT.md', () => {
  const { status, ids } = compute()
  assert.ok(ids.length >= 200, `read ${ids.length} IDs from the checklist`)
  const missing = [...status].filter(([, s]) => s === 'missing').map(([id]) => id)
  assert.deepEqual(missing, [], `not named by any test and not in COMPAT.md: ${missing.join(' ')}`)
})

test('COMPAT.md lists only checklist IDs, none in both lists, and at most ~15 % of the checklist', () => {
  const { ids, deviating, na } = compute()
  for (const id of [...deviating, ...na]) assert.ok(ids.includes(id), `${id} is not in the checklist`)
  for (const id of deviating) assert.ok(!na.has(id), `${id} is both deviating and not applicable`)
  const share = (deviating.size + na.size) / ids.length
  assert.ok(share <= 0.15, `deviating + not applicable is ${(share * 100).toFixed(1)} % of the checklist (at most ~15 %)`)
})

test("COMPAT.md's table is the tree's", () => {
  const text = fs.readFileSync(path.join(root, 'COMPAT.md'), 'utf8')
  const start = text.indexOf('<!-- compat-table:start -->')
  const end = text.indexOf('<!-- compat-table:end -->')
  assert.ok(start >= 0 && end > start, 'COMPAT.md has the table markers')
  const shown = text.slice(start + '<!-- compat-table:start -->'.length, end).trim()
  assert.equal(shown, table(compute().rows), 'run `node scripts/compat-table.mjs` and paste the table into COMPAT.md')
})
