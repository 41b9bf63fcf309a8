// bidi_chat: reads {line} events from the caller and answers each with {line: "AGENT> <LINE>"}
// on the same stream; "bye" ends the conversation.
export default async function bidiChat(task, ctx) {
  if (!ctx.hasStream) throw new Error('no stream negotiated — nothing streamed')
  const stream = await ctx.createStream({ declaredStream: 'chat' })
  let count = 0
  for await (const msg of stream.events()) {
    const line = String(msg.line ?? '')
    stream.write({ line: `AGENT> ${line.toUpperCase()}` })
    count++
    if (line.toLowerCase() === 'bye') break
  }
  return { artifacts: [{ data: { messages: count }, mimeType: 'application/json' }] }
}
