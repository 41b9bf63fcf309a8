// node examples/bidi-chat/caller.ts [line...]: without arguments it reads lines from the
// terminal (type `bye` to finish); each line goes to the agent and its answer is printed.
import { createInterface } from 'node:readline'
import { TaskClient } from '../../index.js'

const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const session = await client.sendMessage({ agentName: 'bidi_chat', taskKind: 'pipe', duration: 5, requestParts: [] })
const stream = await (await session.waitForStream('chat')).open()
console.log(`stream ${stream.streamId} as ${stream.uuid}`)
const replies = stream.events<{ line: string }>()
const lines = process.argv.length > 2 ? process.argv.slice(2) : createInterface({ input: process.stdin, prompt: '> ' })
let received = 0
for await (const line of lines) {
  console.log(`[to agent  ] ${line}`)
  stream.write({ line })
  const { value, done } = await replies.next()
  if (done) break
  received++
  console.log(`[from agent] ${value.line}`)
  if (line.toLowerCase() === 'bye') break
}
await replies.return?.()
await session.cancel()
await session.waitForTerminal(30_000)
console.log(`Received ${received} message(s) from agent.`)
client.destroy()
process.exit(received > 0 ? 0 : 2)
