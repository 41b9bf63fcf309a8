// node examples/adder/caller.ts 5 3   (BLOCKS_CDM_URL / BLOCKS_API_KEY from `npx blocks-devnet`)
import { TaskClient, textPart, decodeInlineArtifact } from '../../index.js'

const [a = '5', b = '3'] = process.argv.slice(2)
const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const session = await client.sendMessage({ agentName: 'adder', requestParts: [textPart(JSON.stringify({ a: Number(a), b: Number(b) }), 'numbers')] })
session.onProgress((e) => e.message && console.log(`Progress: ${e.message}`))
const t = await session.waitForTerminal(30_000)
if (t.state === 'completed') console.log(`Sum: ${JSON.parse(decodeInlineArtifact(session.listArtifacts()[0]).toString()).sum}`)
else console.log(`Failed: ${t.error}`)
client.destroy()
