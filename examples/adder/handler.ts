// The adder agent: parses {a, b} from the request, answers {ok, a, b, sum}. Bad input fails the
// task with a message that says what was wrong.
import type { RequestPart, StartTask, TaskContext, HandlerResult } from '../../index.js'

type Numbers = { a: unknown; b: unknown }

function numbersOf(parts: RequestPart[]): Numbers | null {
  for (const p of parts) {
    if (typeof p.text !== 'string') continue
    try {
      const v = JSON.parse(p.text)
      if (v && typeof v === 'object' && 'a' in v && 'b' in v) return v
    } catch {
      // not JSON: try the next part
    }
  }
  const nums = parts.map((p) => p.text).filter((t): t is string => typeof t === 'string' && t.trim() !== '')
  if (nums.length === 2) return { a: Number(nums[0]), b: Number(nums[1]) }
  return null
}

export default async function adder(task: StartTask, ctx: TaskContext): Promise<HandlerResult> {
  const input = numbersOf(ctx.requestParts)
  if (!input) throw new Error('adder needs {"a": <number>, "b": <number>} as JSON text, or two number parts')
  const { a, b } = input
  if (typeof a !== 'number' || typeof b !== 'number' || !Number.isFinite(a) || !Number.isFinite(b)) {
    throw new Error(`adder needs two finite numbers, got a=${JSON.stringify(a)} b=${JSON.stringify(b)}`)
  }
  ctx.reportStatus(`Adding ${a} + ${b}`)
  return { artifacts: [{ data: { ok: true, a, b, sum: a + b }, mimeType: 'application/json', outputId: 'sum' }] }
}
