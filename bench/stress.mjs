// Load check (was the reproduction of a message-loss bug fixed in session 2): with 64 concurrent callers,
// every task must reach its terminal; a lost one is reported with what the network knows of it.
// Run: LOG_LEVEL=warn node bench/stress.mjs
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { LocalNetwork, TaskClient, startAgentInstance } = require('../index.js')
const net = await LocalNetwork.start()
const opts = { apiKey: net.apiKey, cdmUrl: net.cdmUrl }
const agent = await startAgentInstance({ agentName: 'e', handler: () => ({ artifacts: [{ data: 'x' }] }), concurrency: 64, ...opts })
const client = await TaskClient.create({ billingMode: 'free', ...opts })
let next = 0, lost = 0
await Promise.all(Array.from({ length: 64 }, async () => {
  while (next < 3000) {
    next++
    const s = await client.sendMessage({ agentName: 'e', requestParts: [] })
    try { await s.waitForTerminal(8000) } catch {
      lost++
      const info = await client.getTask(s.taskId)
      const h = await (await fetch(`${net.url}/v3/history/sub-key/sub-c-devnet-free/channel/${s.statusChannel}?auth=${net.serviceToken}`)).json()
      const cc = await (await fetch(`${net.url}/v2/subscribe/sub-c-devnet-free/${agent.controlChannel}/0?tt=1000&uuid=obs&auth=${net.serviceToken}`)).json()
      const starts = cc.m.filter(m => m.d.taskId === s.taskId).length
      console.log('LOST', s.taskId, 'StartTasks in control cache:', starts, 'cache size', cc.m.length, 'backend:', info.state, 'instance:', info.instance, 'history:', h.channels[s.statusChannel].map(m => m.message.type + (m.message.state ? ':' + m.message.state : '')).join(','), 'session state', s.state)
      s.close()
    }
  }
}))
console.log('done, lost', lost)
process.exit(0)
