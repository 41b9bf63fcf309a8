// node examples/file-consumer/caller.ts [file] [outDir]   (BLOCKS_CDM_URL / BLOCKS_API_KEY from `npx blocks-devnet`)
// Sends a file (any size up to 25 MiB: small ones inline, large ones uploaded) to the file_report
// agent, prints the events, then saves the returned report and chart into outDir.
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { TaskClient, filePartFromPath, type ArtifactRef } from '../../index.js'

let [file, outDir]: (string | undefined)[] = process.argv.slice(2)
if (!file) {
  file = path.join(mkdtempSync(path.join(os.tmpdir(), 'file-consumer-')), 'sample.txt')
  writeFileSync(file, 'Hello from the file consumer!\n'.repeat(1000))
}
outDir ??= mkdtempSync(path.join(os.tmpdir(), 'file-report-'))

const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const part = await filePartFromPath(file, 'file')
console.log(`Attaching file: ${part.fileName} (${part.file instanceof Blob ? part.file.size : part.file.byteLength} bytes, ${part.contentType})`)
const session = await client.sendMessage({ agentName: 'file_report', requestParts: [part] })
console.log(`Task created: ${session.taskId}`)
session.onProgress((e) => e.message && console.log(`Progress: ${e.message}`))
let report: ArtifactRef | undefined
session.onArtifact((e) => {
  console.log(`Artifact: ${e.outputId} ${e.artifactRef.kind} ${e.artifactRef.mimeType} ${e.artifactRef.fileName} (${e.artifactRef.size} bytes)`)
  if (e.outputId === 'report') report = e.artifactRef
})
const terminal = await session.waitForTerminal(60_000)
console.log(`Terminal: ${terminal.state}${terminal.error ? ` (${terminal.error})` : ''}`)
for (const saved of await session.saveArtifacts(outDir)) console.log(`Saved: ${saved}`)
if (report) console.log((await session.downloadArtifact(report)).data.toString('utf8'))
client.destroy()
process.exitCode = terminal.state === 'completed' ? 0 : 1
