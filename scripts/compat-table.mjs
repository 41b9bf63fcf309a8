// The behaviour checklist against the tests and COMPAT.md: which IDs a test names, which COMPAT.md
// lists as deviating or not applicable, and the per-group table. `node scripts/compat-table.mjs`
// prints the table to paste into COMPAT.md; __test__/compat-doc.test.mjs checks it.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const checklist = path.resolve(root, '..', 'shared', 'spec', 'behaviors.md')

/** IDs of the checklist in order, with their group. */
export function checklistIds(file = checklist) {
  const text = fs.readFileSync(file, 'utf8')
  const ids = [...text.matchAll(/^- \*\*([A-Z0-9]+)-(\d+)\*\*/gm)].map((m) => `${m[1]}-${m[2]}`)
  return [...new Set(ids)]
}

function files(dir, exts, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'target' || e.name.startsWith('.')) continue
    const p = path.join(dir, e.name)
    if (e.isDirectory()) files(p, exts, out)
    else if (exts.some((x) => e.name.endsWith(x))) out.push(p)
  }
  return out
}

/** IDs named by a test: in __test__/ (JS and TS) and in the Rust tests (tests/ dirs and #[cfg(test)] modules). */
export function namedByTests() {
  const named = new Map()
  const sources = [
    ...files(path.join(root, '__test__'), ['.mjs', '.ts']),
    ...files(path.join(root, 'crates'), ['.rs']).filter((f) => {
      if (f.includes(`${path.sep}tests${path.sep}`)) return true
      return fs.readFileSync(f, 'utf8').includes('#[cfg(test)]')
    }),
  ]
  for (const f of sources) {
    let text = fs.readFileSync(f, 'utf8')
    // in Rust sources only the test modules count
    if (f.endsWith('.rs') && !f.includes(`${path.sep}tests${path.sep}`)) text = text.slice(text.indexOf('#[cfg(test)]'))
    for (const m of text.matchAll(/\b([A-Z0-9]{2,5})-(\d{2})\b/g)) {
      const id = `${m[1]}-${m[2]}`
      if (!named.has(id)) named.set(id, new Set())
      named.get(id).add(path.relative(root, f))
    }
  }
  return named
}

/** The IDs COMPAT.md lists in its `compat-ids:<kind>` section. */
export function listedIn(kind, text = fs.readFileSync(path.join(root, 'COMPAT.md'), 'utf8')) {
  const start = text.indexOf(`<!-- compat-ids:${kind} -->`)
  if (start < 0) return []
  const end = text.indexOf('<!-- compat-ids:end -->', start)
  return [...text.slice(start, end).matchAll(/^- \*\*([A-Z0-9]+-\d+)\*\*/gm)].map((m) => m[1])
}

/** Status of every checklist ID, and the table. */
export function compute() {
  const ids = checklistIds()
  const named = namedByTests()
  const deviating = new Set(listedIn('deviating'))
  const na = new Set(listedIn('na'))
  const status = new Map()
  for (const id of ids) {
    status.set(id, deviating.has(id) ? 'deviating' : na.has(id) ? 'na' : named.has(id) ? 'covered' : 'missing')
  }
  const groups = [...new Set(ids.map((id) => id.split('-')[0]))]
  const rows = groups.map((g) => {
    const of = ids.filter((id) => id.startsWith(`${g}-`))
    const count = (s) => of.filter((id) => status.get(id) === s).length
    return { group: g, covered: count('covered'), deviating: count('deviating'), na: count('na'), missing: count('missing'), total: of.length }
  })
  return { ids, named, status, rows, deviating, na }
}

export function table(rows) {
  const sum = (k) => rows.reduce((a, r) => a + r[k], 0)
  const lines = ['| group | covered | deviating | not applicable | total |', '|---|---|---|---|---|']
  for (const r of rows) lines.push(`| ${r.group} | ${r.covered} | ${r.deviating} | ${r.na} | ${r.total} |`)
  lines.push(`| **all** | **${sum('covered')}** | **${sum('deviating')}** | **${sum('na')}** | **${sum('total')}** |`)
  return lines.join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { rows, status } = compute()
  console.log(table(rows))
  const missing = [...status].filter(([, s]) => s === 'missing').map(([id]) => id)
  if (missing.length) console.log(`\nnot covered and not listed: ${missing.join(' ')}`)
}
