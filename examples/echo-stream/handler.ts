// echo_stream: each word of the request goes out live as a {text} event, then the whole text
// comes back as an artifact.
import type { StartTask, TaskContext, HandlerResult } from '../../index.js'

export default async function echoStream(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  const text = ctx.requestParts.map((p) => p.text ?? '').join(' ').trim() || 'hello from the stream'
  if (!ctx.hasStream) return { artifacts: [{ data: text, mimeType: 'text/plain' }] }
  const stream = await ctx.createStream()
  ctx.reportStatus('Streaming echo output...')
  for (const word of text.split(/\s+/)) stream.write({ text: word })
  await stream.end()
  ctx.reportStatus('Streaming complete')
  return { artifacts: [{ data: text, mimeType: 'text/plain' }] }
}
