// A typical caller: must compile under --strict.
import {
  TaskClient, textPart, RpcError, BillingModeMismatchError, TimeoutError, LocalNetwork,
  type TerminalEvent, type ArtifactEvent, type TaskSession,
} from '../../../index.js'

export async function call(): Promise<string> {
  const net = await LocalNetwork.start({ port: 0 })
  const client = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
  const session: TaskSession = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('hi')], idempotencyKey: 'k' })
  const off: () => boolean = session.onArtifact((e: ArtifactEvent) => {
    if (e.artifactRef.kind === 'inline') console.log(Buffer.from(e.artifactRef.data, 'base64').toString())
    else console.log(e.artifactRef.fileId)
  })
  off()
  session.onError((err, ctx) => console.warn(ctx.callbackType, err))
  try {
    const t: TerminalEvent = await session.waitForTerminal(1000)
    return t.state
  } catch (e) {
    if (e instanceof BillingModeMismatchError) return `${e.expected}/${e.got}`
    if (e instanceof RpcError) return `${e.code} ${e.rpcMessage}`
    if (e instanceof TimeoutError) return 'timeout'
    throw e
  } finally {
    client.destroy()
    await net.stop()
  }
}
