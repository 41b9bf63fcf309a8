// stock_sim: streams one quote per symbol per tick on the `prices` stream until the task's
// cancel signal fires (cancel, terminate, or the pipe duration running out), then returns a
// summary artifact. Prices follow a deterministic random walk per symbol.
import type { StartTask, TaskContext, HandlerResult } from '../../index.js'

function walk(symbol: string): () => { price: number; change: number } {
  let seed = [...symbol].reduce((a, c) => a * 31 + c.charCodeAt(0), 7) >>> 0
  let price = 50 + (seed % 400)
  return () => {
    seed = (seed * 1103515245 + 12345) >>> 0
    const change = Math.round(((seed / 2 ** 32) - 0.5) * 200) / 100
    price = Math.max(1, Math.round((price + change) * 100) / 100)
    return { price, change }
  }
}

export default async function stockSim(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  const input = JSON.parse(ctx.requestParts.find((p) => p.text)?.text ?? '{}')
  const symbols: string[] = Array.isArray(input.symbols) && input.symbols.length ? input.symbols.map(String) : ['AAPL', 'MSFT', 'NVDA']
  const tickMs = Number(input.tickMs ?? 1000)
  const stream = await ctx.createStream({ declaredStream: 'prices' })
  const walks = Object.fromEntries(symbols.map((s) => [s, walk(s)]))
  ctx.reportStatus(`Streaming ${symbols.join(', ')} for ${task.duration} minute(s)...`)
  let tick = 0
  let quotes = 0
  while (!ctx.cancelSignal.aborted) {
    tick++
    for (const symbol of symbols) {
      stream.write({ type: 'quote', symbol, ...walks[symbol](), tick, at: new Date().toISOString() })
      quotes++
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, tickMs)
      ctx.cancelSignal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
    })
  }
  const completionReason = ctx.isExpired ? 'duration_expired' : 'canceled'
  ctx.reportStatus(ctx.isExpired ? 'Streaming complete (duration expired)' : 'Streaming stopped')
  return { artifacts: [{ data: { symbols, ticks: tick, quotes, completionReason }, mimeType: 'application/json' }] }
}
