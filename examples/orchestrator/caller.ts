// node examples/orchestrator/caller.ts   (needs the echo and adder agents running too)
import { TaskClient, textPart, decodeInlineArtifact } from '../../index.js'

const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const session = await client.sendMessage({ agentName: 'orchestrator', requestParts: [textPart(JSON.stringify({ echoText: 'hi', a: 2, b: 40 }))] })
session.onProgress((e) => e.message && console.log(`Progress: ${e.message}`))
await session.waitForTerminal(60_000)
console.log(JSON.parse(decodeInlineArtifact(session.listArtifacts()[0]).toString()))
client.destroy()
