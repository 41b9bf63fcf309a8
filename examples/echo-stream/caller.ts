// node examples/echo-stream/caller.ts "some words to echo"
import { TaskClient, textPart, decodeInlineArtifact } from '../../index.js'

const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const session = await client.sendMessage({ agentName: 'echo_stream', requestParts: [textPart(process.argv[2] ?? 'the quick brown fox')], stream: true })
console.log(`Task created: ${session.taskId}`)
const ref = await session.waitForStream()
console.log(`Stream discovered: ${ref.descriptor.streamId} (${ref.descriptor.localDirection})`)
let n = 0
for await (const e of (await ref.open()).events<{ text: string }>()) console.log(`[chunk ${++n}] ${e.text}`)
console.log('--- Stream ended ---')
const t = await session.waitForTerminal(30_000)
console.log(`Artifact: ${decodeInlineArtifact(session.listArtifacts()[0])}`)
console.log(`Terminal: ${t.state}`)
client.destroy()
