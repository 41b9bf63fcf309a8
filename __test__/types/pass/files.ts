// File inputs and artifacts, typed.
import {
  TaskClient, filePart, filePartFromPath, downloadArtifact, decodeInlineArtifact, buildArtifactRef,
  FileUploadError, BLOCKS_MAX_UPLOAD_BYTES, type ArtifactRef, type DownloadedArtifact, type TaskContext,
} from '../../../index.js'

export async function send(client: TaskClient): Promise<string[]> {
  const parts = [filePart(new Uint8Array(3), { partId: 'img', contentType: 'image/png' }), await filePartFromPath('./report.pdf', 'doc')]
  const session = await client.sendMessage({ agentName: 'files', requestParts: parts })
  await session.waitForTerminal()
  const first = session.listArtifacts()[0]
  const got: DownloadedArtifact = await session.downloadArtifact(first)
  const again = await downloadArtifact(first, session)
  const n: number = got.data.length + again.data.byteLength + BLOCKS_MAX_UPLOAD_BYTES
  const ref: ArtifactRef = buildArtifactRef({ data: 'x', mimeType: 'text/plain' })
  if (ref.kind === 'inline') decodeInlineArtifact(ref).toString('utf8')
  void n
  return session.saveArtifacts('./out')
}

export async function handler(_task: unknown, ctx: TaskContext) {
  for (const part of ctx.requestParts) {
    if (part.artifactRef) {
      const bytes: Buffer = await ctx.downloadInputArtifact(part)
      await ctx.publishArtifact(bytes, { mimeType: 'application/octet-stream', fileName: 'copy.bin' })
    }
  }
  return { artifacts: [] }
}

export function isUploadError(e: unknown): number | undefined {
  return e instanceof FileUploadError ? e.status : undefined
}
