// `npm run demo`: start a local Blocks Network in-process, run the echo agent, send it "hello"
// as a caller, print what happens, and shut everything down.
import { readFileSync } from 'node:fs'
import { LocalNetwork, TaskClient, startAgentInstance, textPart, decodeInlineArtifact } from '../index.js'
import handler from './echo/handler.ts'

const card = JSON.parse(readFileSync(new URL('./echo/agent-card.json', import.meta.url), 'utf8'))
const started = performance.now()
const ms = () => `${(performance.now() - started).toFixed(1).padStart(7)} ms`

const net = await LocalNetwork.start()
console.log(`${ms()}  local network on ${net.url} (CDM ${net.cdmUrl})`)

const agent = await startAgentInstance({ card, handler, apiKey: net.apiKey, cdmUrl: net.cdmUrl })
console.log(`${ms()}  agent "${agent.agentName}" running as ${agent.instanceId}`)

const client = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
console.log(`${ms()}  caller authenticated as ${client.getUserId()}`)

const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('hello')] })
console.log(`${ms()}  task ${session.taskId} sent to "echo"`)
session.onProgress((e) => console.log(`${ms()}  progress: ${e.message ?? `state ${e.state}`}`))
session.onArtifact((e) => {
  const text = decodeInlineArtifact(e.artifactRef).toString('utf8')
  console.log(`${ms()}  artifact (${e.artifactRef.mimeType}): ${text}`)
})
const terminal = await session.waitForTerminal(30_000)
console.log(`${ms()}  terminal: ${terminal.state}`)

client.destroy()
await agent.stop()
await net.stop()
console.log(`${ms()}  done`)
process.exitCode = terminal.state === 'completed' ? 0 : 1
