// The figures issue 22 tracks, counted from the tree: `Value` / `json!` / `.get("` per crate,
// `any` in the generated native.d.ts, lines of lib/, the largest Rust file and function, and the
// `use crate::` circles between modules of one crate. Usage: node scripts/arch-figures.mjs
import fs from 'node:fs'
import path from 'node:path'

const root = path.join(import.meta.dirname, '..')
const walk = (dir, ext) =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name)
    return e.isDirectory() ? walk(p, ext) : p.endsWith(ext) ? [p] : []
  })
const count = (text, re) => (text.match(re) ?? []).length
const rel = (p) => path.relative(root, p)

const crates = { 'blocks-core': 'crates/blocks-core/src', 'blocks-devnet': 'crates/blocks-devnet/src', 'blocks-wire': 'crates/blocks-wire/src', binding: 'src' }
const out = []
let largestFile = { lines: 0 }
let largestFn = { lines: 0 }
const longFns = []
for (const [name, dir] of Object.entries(crates)) {
  let value = 0
  let json = 0
  let get = 0
  const uses = new Map()
  for (const f of walk(path.join(root, dir), '.rs')) {
    const text = fs.readFileSync(f, 'utf8')
    value += count(text, /\bValue\b/g)
    json += count(text, /json!\(/g)
    get += count(text, /\.get\("/g)
    const lines = text.split('\n')
    if (lines.length > largestFile.lines) largestFile = { lines: lines.length, file: rel(f) }
    // function lengths: from a `fn` line to the line whose indentation closes it
    lines.forEach((l, i) => {
      const m = /^(\s*)(pub(\([^)]*\))? )?(async )?fn (\w+)/.exec(l)
      if (!m || l.trimEnd().endsWith(';')) return
      const indent = m[1]
      for (let j = i + 1; j < lines.length; j++) {
        if (lines[j] === `${indent}}`) {
          const n = j - i + 1
          if (n > largestFn.lines) largestFn = { lines: n, fn: m[5], file: rel(f) }
          if (n > 80) longFns.push(`${rel(f)}:${m[5]} (${n})`)
          break
        }
      }
    })
    const mod = path.basename(f, '.rs')
    const code = lines.filter((l) => !l.trim().startsWith('//')).join('\n') // doc links are not imports
    // `crate::a::…` and grouped imports `use crate::{a, b::…}`
    const named = [...code.matchAll(/(?:use |\b)crate::(\w+)/g)].map((x) => x[1])
    const grouped = [...code.matchAll(/crate::\{([^}]*)\}/g)].flatMap((x) => [...x[1].matchAll(/(?:^|,)\s*(\w+)/g)].map((y) => y[1]))
    const deps = new Set([...named, ...grouped].filter((d) => d !== mod))
    uses.set(mod, deps)
  }
  // circles of length 2 or 3 between the crate's modules
  const circles = new Set()
  for (const [a, da] of uses) {
    for (const b of da) {
      if (uses.get(b)?.has(a)) circles.add([a, b].sort().join(' <-> '))
    }
  }
  out.push({ crate: name, Value: value, 'json!': json, '.get("': get, circles: [...circles].join(', ') || 'none' })
}
const dts = fs.readFileSync(path.join(root, 'native.d.ts'), 'utf8')
const libLines = walk(path.join(root, 'lib'), '.js').reduce((n, f) => n + fs.readFileSync(f, 'utf8').split('\n').length, 0)
console.table(out)
console.log(`any in native.d.ts: ${count(dts, /\bany\b/g)}`)
console.log(`lib/ lines: ${libLines}`)
console.log(`largest Rust file: ${largestFile.file} (${largestFile.lines} lines)`)
console.log(`largest Rust function: ${largestFn.fn} in ${largestFn.file} (${largestFn.lines} lines)`)
console.log(`functions over 80 lines: ${longFns.length}`)
