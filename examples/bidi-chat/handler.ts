// bidi_chat: reads {line} events from the caller and answers each with {line: "AGENT> <LINE>"}
// on the same stream; "bye" ends the conversation.
import type { StartTask, TaskContext, HandlerResult } from '../../index.js'

export default async function bidiChat(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  if (!ctx.hasStream) throw new Error('no stream negotiated — nothing streamed')
  const stream = await ctx.createStream({ declaredStream: 'chat' })
  let count = 0
  for await (const msg of stream.events<{ line?: unknown }>()) {
    const line = String(msg.line ?? '')
    stream.write({ line: `AGENT> ${line.toUpperCase()}` })
    count++
    if (line.toLowerCase() === 'bye') break
  }
  return { artifacts: [{ data: { messages: count }, mimeType: 'application/json' }] }
}
