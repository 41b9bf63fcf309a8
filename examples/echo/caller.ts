// Send one text to the echo agent and print what comes back.
// Usage: BLOCKS_CDM_URL=... BLOCKS_API_KEY=... node examples/echo/caller.ts "some text"
import { TaskClient, textPart, decodeInlineArtifact } from '../../index.js'

const text = process.argv[2] ?? 'hello'
if (!process.env.BLOCKS_API_KEY) {
  console.error('Set BLOCKS_API_KEY (and BLOCKS_CDM_URL for a local network, see `npx blocks-devnet`).')
  process.exit(1)
}
const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart(text)] })
console.log(`Task created: ${session.taskId}`)
session.onProgress((e) => console.log(`Progress: ${e.message ?? e.state}`))
session.onArtifact((e) => console.log(`Artifact: ${decodeInlineArtifact(e.artifactRef).toString()}`))
const terminal = await session.waitForTerminal(60_000)
console.log(`Terminal: ${terminal.state}${terminal.error ? ` (${terminal.error})` : ''}`)
client.destroy()
