// The bundled app's answer to `GET /` (13-byte body "hello, world\n"), from Node.js's own HTTP
// server: what bench/compare runs as "node cluster" (node_cluster.js), under PM2's cluster mode,
// and under `lbd run` (exec mode: each process takes its own listener of lbd's group as fd 3).
// X-Worker carries the pid so the harness can count how requests split across processes.
'use strict';
const http = require('http');

const body = 'hello, world\n';

function serve() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': body.length,
      'X-Worker': String(process.pid),
    });
    res.end(body);
  });
  // Keep idle keep-alive connections as long as the benchmark runs, like nginx and lbd do.
  server.keepAliveTimeout = 60000;
  if (process.env.LISTEN_FDS) {
    server.listen({ fd: 3 });  // under `lbd run`: the listener lbd made for this worker
  } else {
    server.listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1');
  }
}

module.exports = serve;
if (require.main === module) serve();
