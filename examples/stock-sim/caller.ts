// node examples/stock-sim/caller.ts [SYMBOL...]: a one-minute pipe task; prints quotes as they
// arrive until the stream ends, then the summary.
import { TaskClient, textPart, decodeInlineArtifact } from '../../index.js'

type Quote = { at: string; symbol: string; price: number; change: number }

const symbols = process.argv.slice(2).length ? process.argv.slice(2) : ['AAPL', 'MSFT', 'NVDA']
const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
console.log(`Requesting ${symbols.join(', ')} from stock_sim for 1 minute...`)
const session = await client.sendMessage({ agentName: 'stock_sim', taskKind: 'pipe', duration: 1, requestParts: [textPart(JSON.stringify({ symbols }))] })
const stream = await (await session.waitForStream('prices')).open()
console.log(`Opened stream ${stream.streamId}`)
for await (const q of stream.events<Quote>()) {
  console.log(`[${q.at}] ${q.symbol} $${q.price.toFixed(2)} (${q.change >= 0 ? '+' : ''}${q.change.toFixed(2)})`)
}
await session.waitForTerminal(90_000)
console.log('Final summary:', JSON.parse(decodeInlineArtifact(session.listArtifacts().at(-1)!).toString()))
client.destroy()
