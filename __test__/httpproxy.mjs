// An HTTP proxy for tests that must see or shape what goes on the wire between the SDK and the
// devnet: every request is recorded ({ method, path, query, headers, body }) and forwarded.
//   proxy.requests            what was sent, in order
//   proxy.find(pred)          the requests matching pred
//   proxy.intercept = (r) => ({ status, json }) | undefined   answer a request instead of forwarding it
//   proxy.resetNext(n, pred)  close the connection of the next n requests matching pred without an answer
//   proxy.rewrite = (r, { status, headers, json }) => ({ status, headers, json }) | undefined
//                             change the devnet's JSON answer to a request before the SDK sees it
import http from 'node:http'
import https from 'node:https'

export async function startHttpProxy(targetUrl) {
  const target = new URL(targetUrl)
  const resets = []
  const proxy = {
    requests: [],
    intercept: null,
    rewrite: null,
    url: '',
    find(pred) {
      return this.requests.filter(pred)
    },
    resetNext(n, pred = () => true) {
      resets.push({ n, pred })
    },
    close() {
      return new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
    },
  }
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const u = new URL(req.url, 'http://proxy')
      const record = { method: req.method, path: u.pathname, query: Object.fromEntries(u.searchParams), headers: req.headers, body: body.toString('utf8') }
      try {
        record.json = JSON.parse(record.body)
      } catch {
        record.json = undefined
      }
      proxy.requests.push(record)
      const reset = resets.find((r) => r.n > 0 && r.pred(record))
      if (reset) {
        reset.n--
        req.socket.resetAndDestroy()
        return
      }
      const answer = proxy.intercept && proxy.intercept(record)
      if (answer) {
        res.writeHead(answer.status, { 'content-type': 'application/json' })
        res.end(JSON.stringify(answer.json ?? {}))
        return
      }
      const headers = { ...req.headers, host: target.host }
      const rewrite = proxy.rewrite
      // the SDK talks plain HTTP to the proxy (loopback); a TLS devnet behind it is reached over TLS
      // (NODE_EXTRA_CA_CERTS names its CA in the TLS runs)
      const up = (target.protocol === 'https:' ? https : http).request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (r) => {
        if (!rewrite || !/json/.test(r.headers['content-type'] ?? '')) {
          res.writeHead(r.statusCode, r.headers)
          r.pipe(res)
          return
        }
        const parts = []
        r.on('data', (c) => parts.push(c))
        r.on('end', () => {
          let json
          try {
            json = JSON.parse(Buffer.concat(parts).toString('utf8'))
          } catch {
            json = undefined
          }
          const { 'content-length': _len, 'transfer-encoding': _te, ...rest } = r.headers
          const out = rewrite(record, { status: r.statusCode, headers: rest, json }) ?? { status: r.statusCode, headers: rest, json }
          const text = out.json === undefined ? Buffer.concat(parts) : JSON.stringify(out.json)
          res.writeHead(out.status ?? r.statusCode, { ...(out.headers ?? rest), 'content-type': 'application/json' })
          res.end(text)
        })
      })
      up.on('error', () => res.destroy())
      res.on('close', () => up.destroy())
      up.end(body)
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  proxy.url = `http://127.0.0.1:${server.address().port}`
  return proxy
}
