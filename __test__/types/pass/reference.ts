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

// the official SDK's caller surface, as its users write it
import { AgentAuth, StaticAuthProvider, getAgent, fetchAgentRegistry, fetchCdmConfig, channels, taskChannel, isProtocolVersionSupported, CURRENT_PROTOCOL_VERSION, type AuthProvider, type AgentEntry } from '../../../index.js'

export async function ported(): Promise<void> {
  const provider: AuthProvider = { getAuthHeader: () => 'Bearer t', onAuthFailure: async () => false }
  const direct = new TaskClient({ billingMode: 'free', subscribeKey: 'sub', authProvider: provider, defaultOwnerId: 'me' })
  direct.updateKeys('sub2')
  const sub = direct.subscribeToTask('t_1', 'me', { onTerminal: (t) => console.log(t.state), onEvent: (e) => console.log(e.type) })
  sub.unsubscribe()
  const agentAuth = new AgentAuth('bk_x', 'http://127.0.0.1:4700')
  const answer = await agentAuth.init({ agentName: 'a', instanceId: 'AG-a-1' })
  console.log(answer.accessToken, (await agentAuth.authenticatedFetch('http://x')).status)
  const asAgent = new TaskClient({ billingMode: 'paid', subscribeKey: 'sub', agentAuth })
  await asAgent.getAgentCard('echo')
  const entry: AgentEntry | null = await getAgent('echo', { baseUrl: 'http://x', apiKey: 'k' })
  console.log(entry?.billingMode, (await fetchAgentRegistry({ baseUrl: 'http://x', limit: 10 })).totalCount)
  console.log((await fetchCdmConfig()).playground.subscribeKey, channels.registrySkill('x'), taskChannel('o', 't'))
  console.log(isProtocolVersionSupported(CURRENT_PROTOCOL_VERSION), new StaticAuthProvider('t').getAuthHeader())
}

// the official SDK's agent surface
import { startAgentInstance, validateStreamId, type TaskHandler } from '../../../index.js'

export const sharedProducer: TaskHandler = async (task, ctx) => {
  const shared = await ctx.createStream({ declaredStream: 'prices', maxMessageSize: 4096, onActivate: (s) => console.log(s.streamId) })
  console.log(shared.affinity, shared.isActive)
  shared.onEnd(() => console.log('released'))
  const ext = await ctx.createStream({ declaredStream: 'feed', external: true })
  console.log(ext.token, ext.channel)
  await ext.activate({ metadata: { by: 'writer' } })
  validateStreamId(ext.streamId)
  return {}
}

export async function handle(): Promise<void> {
  const h = await startAgentInstance({ agentName: 'a', handler: sharedProducer })
  console.log(h.cdmConfig.playground.subscribeKey)
  await h.failStream('prices', 'upstream_gone')
  await h.publishTerminal('t_1', { state: 'completed' })
}
