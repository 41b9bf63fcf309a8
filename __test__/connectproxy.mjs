// A forward proxy as companies run them: CONNECT tunnels for https:// targets, absolute-form
// requests for http:// ones. It records what it was asked for and relays the bytes.
//   proxy.url          http://127.0.0.1:<port>
//   proxy.connects     the CONNECT targets ("host:port"), in order
//   proxy.forwarded    the absolute-form request URLs, in order
//   proxy.onForward    called with each absolute-form URL as it arrives (set it to watch)
import http from 'node:http'
import net from 'node:net'

export async function startConnectProxy() {
  const sockets = new Set()
  const proxy = { url: '', connects: [], forwarded: [] }
  const server = http.createServer((req, res) => {
    // absolute-form: GET http://host:port/path HTTP/1.1
    proxy.forwarded.push(req.url)
    proxy.onForward?.(req.url)
    const target = new URL(req.url)
    const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: target.pathname + target.search, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers)
      r.pipe(res)
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  server.on('connect', (req, client, head) => {
    proxy.connects.push(req.url)
    const [host, port] = req.url.split(':')
    const up = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length) up.write(head)
      up.pipe(client)
      client.pipe(up)
    })
    for (const s of [up, client]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
    }
    up.on('error', () => client.destroy())
    client.on('error', () => up.destroy())
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  proxy.url = `http://127.0.0.1:${server.address().port}`
  proxy.close = () =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    })
  return proxy
}
