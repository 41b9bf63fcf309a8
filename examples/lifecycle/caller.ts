// node examples/lifecycle/caller.ts: start a pipe task, pause, resume, then cancel it.
import { TaskClient, textPart, decodeInlineArtifact } from '../../index.js'

const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const session = await client.sendMessage({ agentName: 'lifecycle', taskKind: 'pipe', duration: 1, requestParts: [textPart(JSON.stringify({ tickMs: 200 }))] })
session.onEvent((e) => {
  if (e.type === 'system') console.log(`--- ${e.status} ---`)
  if (e.type === 'progress' && e.message) console.log(`[${e.message}]`)
})
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms))
await wait(700)
await client.pauseTask(session.taskId)
await client.resumeTask(session.taskId)
await wait(500)
console.log('--- canceling ---')
await session.cancel()
const t = await session.waitForTerminal(30_000)
console.log(`Terminal: ${t.state}; summary: ${decodeInlineArtifact(session.listArtifacts().at(-1)!)}`)
client.destroy()
