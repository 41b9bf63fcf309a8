// The devnet suites over TLS: the same test files with BLOCKS_DEVNET_TLS=1, so every devnet serves
// HTTPS signed by the test CA of __test__/fixtures/ (the helpers make the process trust it).
// Usage: node scripts/test-tls.mjs [test files…] (default: foundation, streams, files).
import { spawnSync } from 'node:child_process'
import path from 'node:path'

const root = path.join(import.meta.dirname, '..')
const files = process.argv.slice(2)
const suites = files.length ? files : ['foundation', 'streams', 'files'].map((n) => `__test__/${n}.test.mjs`)
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=120000', ...suites], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, BLOCKS_DEVNET_TLS: '1' },
})
process.exit(r.status ?? 1)
