// The orchestrator agent: sends sub-tasks to `echo` and `adder` through ctx.taskClient (agent to
// agent), waits for both, and returns one JSON artifact with both results.
const SUBTASK_TIMEOUT_MS = 30_000

async function call(client, agentName, text) {
  const session = await client.sendMessage({ agentName, requestParts: [{ partId: 'text', text }] })
  try {
    const t = await session.waitForTerminal(SUBTASK_TIMEOUT_MS)
    const art = session.listArtifacts()[0]
    const artifact = art ? Buffer.from(art.artifactRef.data ?? '', 'base64').toString('utf8') : null
    return { status: t.state, artifact, error: t.error }
  } catch (err) {
    session.close()
    return { status: 'timeout', artifact: null, error: err.message }
  }
}

export default async function orchestrator(task, ctx) {
  const input = JSON.parse(ctx.requestParts.find((p) => p.text)?.text ?? '{}')
  if (!ctx.taskClient) throw new Error('orchestrator needs ctx.taskClient')
  ctx.reportStatus('Dispatching sub-tasks...')
  const [echo, adder] = await Promise.all([
    call(ctx.taskClient, 'echo', String(input.echoText ?? 'hello')),
    call(ctx.taskClient, 'adder', JSON.stringify({ a: input.a ?? 1, b: input.b ?? 2 })),
  ])
  ctx.reportStatus('Compiling results...')
  const summary = `Echo: ${echo.status}, Adder: ${adder.status}`
  return { artifacts: [{ data: { ok: echo.status === 'completed' && adder.status === 'completed', echo, adder, summary }, mimeType: 'application/json' }] }
}
