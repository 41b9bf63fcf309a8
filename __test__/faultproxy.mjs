// A fault-injecting TCP proxy for tests: sits between the SDK and the devnet.
//   proxy.reset()        resets every open connection (the network drops)
//   proxy.delayMs = n    delays every chunk in both directions by n ms
//   proxy.refuse = true  new connections are closed at once (the link is down) until set back
//   proxy.blackhole()    silently swallow everything on every open connection, for good, and on
//                        new connections until proxy.restore(): no reset, no FIN, just silence
import net from 'node:net'

export async function startFaultProxy(targetUrl) {
  const target = new URL(targetUrl)
  const sockets = new Set()
  const pairs = new Set()
  let holing = false
  const proxy = {
    delayMs: 0,
    refuse: false,
    connections: 0,
    url: '',
    blackhole() {
      holing = true
      for (const p of pairs) p.swallowed = true
    },
    restore() {
      holing = false
    },
    reset() {
      for (const s of sockets) (s.resetAndDestroy ? s.resetAndDestroy() : s.destroy())
      sockets.clear()
    },
    close() {
      this.reset()
      return new Promise((r) => server.close(r))
    },
  }
  const forward = (from, to, pair) => {
    from.on('data', (chunk) => {
      if (pair.swallowed) return
      if (proxy.delayMs > 0) {
        from.pause()
        setTimeout(() => {
          if (!to.destroyed) to.write(chunk)
          from.resume()
        }, proxy.delayMs)
      } else if (!to.destroyed) to.write(chunk)
    })
  }
  const server = net.createServer((client) => {
    if (proxy.refuse) return client.resetAndDestroy ? client.resetAndDestroy() : client.destroy()
    proxy.connections++
    const upstream = net.connect(Number(target.port), target.hostname)
    sockets.add(client)
    sockets.add(upstream)
    const pair = { swallowed: holing }
    pairs.add(pair)
    forward(client, upstream, pair)
    forward(upstream, client, pair)
    const drop = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    for (const s of [client, upstream]) {
      s.on('error', drop)
      s.on('close', drop)
      s.on('end', drop)
    }
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  // bytes pass through untouched: a TLS devnet is reached over TLS through it (same certificate)
  proxy.url = `${target.protocol}//127.0.0.1:${server.address().port}`
  return proxy
}
