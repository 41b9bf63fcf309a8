// The SDK reference's own snippets (issue 17): they must compile under --strict as written.
import { TaskClient, downloadArtifact, filePart, textPart, buildArtifactRef, BLOCKS_MAX_UPLOAD_BYTES, StreamRef, type ArtifactRef } from '../../../index.js'

export async function reference(client: TaskClient): Promise<void> {
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('hi'), filePart(new Uint8Array([1]), 'notes.txt')] })
  session.onStream(async (streamRef) => {
    const streamClient = streamRef.open()
    for await (const chunk of streamClient.bytes()) console.log(chunk.length)
  })
  session.onStream((ref) => ref.declaredStream === 'tokens', (ref: StreamRef) => console.log(ref.streamId))
  const where: StreamRef = await session.waitForStreamWhere((ref) => ref.format === 'bytes')
  console.log(where.channel)
  session.onArtifact(async ({ artifactRef }) => {
    const { data, mimeType } = await downloadArtifact(artifactRef, fetch)
    console.log(mimeType, data.length)
  })
  const refs: ArtifactRef[] = session.listArtifacts()
  console.log(refs.length, BLOCKS_MAX_UPLOAD_BYTES, buildArtifactRef({ data: 'x', mimeType: 'text/plain' }).kind)
  const closed: Promise<void> = session.close()
  await closed
}
