// The echo agent: one status line, then the text back as a text/plain artifact.
import type { StartTask, TaskContext, HandlerResult } from '../../index.js'

export default async function echo(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  const text = ctx.requestParts.map((p) => p.text ?? '').join(' ').trim()
  ctx.reportStatus(`Echoing ${text.length} characters`)
  return { artifacts: [{ data: `Echo: ${text}`, mimeType: 'text/plain', outputId: 'echo' }] }
}
