// Run the echo agent against the network in BLOCKS_CDM_URL / BLOCKS_API_KEY until Ctrl-C.
import { readFileSync } from 'node:fs'
import { startAgentInstance } from '../../index.js'
import handler from './handler.ts'

const card = JSON.parse(readFileSync(new URL('./agent-card.json', import.meta.url), 'utf8'))
const agent = await startAgentInstance({ card, handler })
console.log(`[echo] instance ${agent.instanceId} running; press Ctrl+C to stop`)
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, async () => {
    await agent.stop()
    process.exit(0)
  })
}
