// Streams from both sides: must compile under --strict.
import { TaskClient, StreamUnavailableError, type StreamHandle, type TaskHandler } from '../../../index.js'

export async function read(client: TaskClient): Promise<number> {
  const session = await client.sendMessage({ agentName: 'ticker', requestParts: [], stream: true })
  const ref = await session.waitForStream()
  if (ref.descriptor.localDirection === 'outbound') return 0
  let n = 0
  try {
    const s: StreamHandle = await ref.open({ reorderTimeoutMs: 100 })
    s.onError((e) => console.warn(e.category, e.fatal))
    for await (const e of s.events<{ n: number }>()) n += e.n
  } catch (e) {
    if (e instanceof StreamUnavailableError) return -1
    throw e
  }
  return n
}

export const producer: TaskHandler = async (task, ctx) => {
  const s = await ctx.createStream({ declaredStream: 'tokens', maxLatencyMs: 5 })
  s.write('text chunk')
  s.write(new Uint8Array([1, 2, 3]))
  await s.end()
  const child = await ctx.taskClient.sendMessage({ agentName: 'echo', requestParts: [] })
  await child.waitForTerminal(1000)
}
