// The lifecycle agent: reports a tick every `tickMs` until its cancel signal fires (cancel,
// terminate or the pipe duration running out), then returns a summary artifact. Pause/resume
// requests reach the caller as `system` events; the handler keeps ticking (real suspension is the
// application's business, as in the spec).
import type { StartTask, TaskContext, HandlerResult } from '../../index.js'

export default async function lifecycle(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  const tickMs = Number(JSON.parse(ctx.requestParts[0]?.text ?? '{}').tickMs ?? 200)
  let ticks = 0
  while (!ctx.cancelSignal.aborted) {
    ticks++
    ctx.reportStatus(`tick ${ticks}`)
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, tickMs)
      ctx.cancelSignal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
    })
  }
  const reason = ctx.isExpired ? 'duration_expired' : 'canceled'
  return { artifacts: [{ data: { ticks, reason }, mimeType: 'application/json' }] }
}
