// The file_report agent: for every file input, a Markdown report (size, type, SHA-256, text
// statistics) and a generated SVG bar chart of its byte distribution. Small inputs arrive inline,
// large ones were uploaded by the caller; ctx.downloadInputArtifact() handles both.
import { createHash } from 'node:crypto'
import type { StartTask, TaskContext, HandlerResult, HandlerArtifact, ArtifactRef } from '../../index.js'

function chart(hist: number[], title: string): string {
  const max = Math.max(1, ...hist)
  const bars = hist
    .map((n, b) => {
      const h = Math.round((n / max) * 200)
      return `<rect x="${20 + b * 3}" y="${230 - h}" width="2" height="${h}" fill="#3b82f6"><title>byte 0x${b.toString(16).padStart(2, '0')}: ${n}</title></rect>`
    })
    .join('\n')
  return `<svg xmlns="http://www.w3.org/2000/svg" width="808" height="260" viewBox="0 0 808 260">
<text x="20" y="20" font-family="sans-serif" font-size="14">${title.replace(/[<&>]/g, '_')}</text>
<line x1="20" y1="231" x2="788" y2="231" stroke="#999"/>
${bars}
</svg>
`
}

export default async function fileReport(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  const files = ctx.requestParts.filter((p) => p.artifactRef)
  if (files.length === 0) throw new Error('file_report needs at least one file part (use filePart() or filePartFromPath())')
  const artifacts: HandlerArtifact[] = []
  for (const part of files) {
    const ref = part.artifactRef as ArtifactRef
    ctx.reportStatus(`Reading ${ref.fileName ?? part.partId} (${ref.size} bytes, ${ref.kind})`)
    const data = await ctx.downloadInputArtifact(part)
    const hist: number[] = new Array(256).fill(0)
    for (const b of data) hist[b]++
    const printable = data.filter((b) => b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127)).length
    const isText = data.length > 0 && printable / data.length > 0.95
    const lines = isText ? data.toString('utf8').split('\n').length : undefined
    const name = ref.fileName ?? part.partId
    const report = [
      `# ${name}`,
      '',
      `- size: ${data.length} bytes`,
      `- type: ${ref.mimeType}`,
      `- sha256: ${createHash('sha256').update(data).digest('hex')}`,
      `- text: ${isText ? `yes, ${lines} lines` : 'no'}`,
      `- distinct byte values: ${hist.filter((n) => n > 0).length}`,
      '',
    ].join('\n')
    artifacts.push({ data: report, mimeType: 'text/markdown', fileName: `${name}.report.md`, outputId: 'report' })
    artifacts.push({ data: chart(hist, `Byte distribution of ${name}`), mimeType: 'image/svg+xml', fileName: `${name}.bytes.svg`, outputId: 'chart' })
  }
  ctx.reportStatus(`Reported on ${files.length} file(s)`)
  return { artifacts }
}
