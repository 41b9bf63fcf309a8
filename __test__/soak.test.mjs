// Issue 10 (part): a reduced soak (`npm run soak` runs the full one): 400 tasks through 4
// instances with random cancels, terminates, pauses, failures and streams, on a devnet process
// with a database. The child must report no problem and exit by itself (nothing left open).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { runNodeArgs } from './helpers.mjs'

test('soak (reduced): every task ends as its operation implies, one terminal each, nothing left open', { timeout: 120_000 }, async () => {
  const script = path.join(import.meta.dirname, '..', 'bench', 'soak.mjs')
  const r = await runNodeArgs(['--expose-gc', script, '--tasks', '400', '--warmup', '0', '--seed', String(Date.now() % 100_000)], { timeoutMs: 100_000 })
  const report = JSON.parse(r.stdout.trim().split('\n').pop())
  assert.deepEqual(report.problems, [], `seed ${report.seed}`)
  assert.equal(report.tasks, 400)
  assert.ok(Object.values(report.ops).every((n) => n > 0), `every operation ran: ${JSON.stringify(report.ops)}`)
  assert.equal(r.code, 0, r.stderr)
})
