// A typical agent: must compile under --strict.
import { startAgentInstance, type TaskHandler, type HandlerResult } from '../../../index.js'

const handler: TaskHandler = async (task, ctx): Promise<HandlerResult> => {
  ctx.reportStatus(`working on ${task.taskId}`)
  ctx.cancelSignal.addEventListener('abort', () => console.log('canceled'))
  await ctx.publishArtifact({ partial: true }, { mimeType: 'application/json', outputId: 'out' })
  const text = ctx.requestParts.map((p) => p.text ?? '').join(' ')
  return { artifacts: [{ data: `Echo: ${text}`, mimeType: 'text/plain' }] }
}

export async function run(): Promise<void> {
  const agent = await startAgentInstance({ card: { identity: { agentName: 'echo' }, runtime: { concurrency: 2 } }, handler })
  console.log(agent.instanceId, agent.activeTasks)
  await agent.stop(500)
}
