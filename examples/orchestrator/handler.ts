// The orchestrator agent: sends sub-tasks to `echo` and `adder` through ctx.taskClient (agent to
// agent), waits for both, and returns one JSON artifact with both results.
import { decodeInlineArtifact, type StartTask, type TaskContext, type HandlerResult, type TaskClient } from '../../index.js'

const SUBTASK_TIMEOUT_MS = 30_000

type SubResult = { status: string; artifact: string | null; error?: string }

async function call(client: TaskClient, agentName: string, text: string): Promise<SubResult> {
  const session = await client.sendMessage({ agentName, requestParts: [{ partId: 'text', text }] })
  try {
    const t = await session.waitForTerminal(SUBTASK_TIMEOUT_MS)
    const art = session.listArtifacts()[0]
    const artifact = art ? decodeInlineArtifact(art).toString('utf8') : null
    return { status: t.state, artifact, error: t.error }
  } catch (err) {
    session.close()
    return { status: 'timeout', artifact: null, error: err instanceof Error ? err.message : String(err) }
  }
}

export default async function orchestrator(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
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
