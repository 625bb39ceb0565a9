// A socket.io server under lbd, one copy per worker:
//
//   lbd run -i 4 --policy sticky -- node server.js
//
// socket.io keeps each connection's state in the worker that opened it. Its HTTP long-polling
// transport sends every poll and every message as a request of its own, often on a new TCP
// connection, and the upgrade to WebSocket is one more; a worker that did not open the session
// answers 400 {"code":1,"message":"Session ID unknown"}. `--policy sticky` makes every
// connection of one client address reach the same worker, so a session's requests all find it.
//
// Events:
//   'hello'   sent to each new connection: { worker, pid, id, address } (the client's address)
//   'echo'    (message, ack): ack({ message, worker, pid, transport }), to the sender only
//   'join'    (room, ack): joins a room of this worker; ack({ room, worker, members })
//   'chat'    ({ room, text }): sent to every member of the room *on this worker*. Workers share
//             no memory: a room spanning workers needs a socket.io adapter that carries messages
//             between them (such as @socket.io/redis-adapter); this example has none.
//
// Environment: LB_WORKER_ID is set by lbd for each worker (0..N-1); the listener is fd 3.
const http = require('http');
const { Server } = require('socket.io');

const worker = Number(process.env.LB_WORKER_ID ?? 0);
const server = http.createServer((req, res) => {
  res.setHeader('X-Worker', String(worker));
  res.writeHead(404, { 'Content-Type': 'text/plain' }).end('socket.io lives at /socket.io/\n');
});
const io = new Server(server, { cors: { origin: false } });

// Every engine.io answer (the handshake, each poll, the upgrade) names the worker: `curl -i` shows
// which worker a request reached.
io.engine.on('initial_headers', (headers) => { headers['X-Worker'] = String(worker); });
io.engine.on('headers', (headers) => { headers['X-Worker'] = String(worker); });

io.on('connection', (socket) => {
  socket.emit('hello', { worker, pid: process.pid, id: socket.id, address: socket.handshake.address });
  socket.on('echo', (message, ack) => {
    if (typeof ack !== 'function') return;
    ack({ message, worker, pid: process.pid, transport: socket.conn.transport.name });
  });
  socket.on('join', async (room, ack) => {
    if (typeof room !== 'string' || typeof ack !== 'function') return;
    await socket.join(room);
    ack({ room, worker, members: (await io.in(room).fetchSockets()).length });
  });
  socket.on('chat', (message) => {
    if (!message || typeof message.room !== 'string' || !socket.rooms.has(message.room)) return;
    io.to(message.room).emit('chat', { room: message.room, text: String(message.text), from: socket.id, worker });
  });
});

// Under lbd the listener is fd 3 (LISTEN_FDS is set); alone, `PORT=3000 node server.js`.
const where = process.env.LISTEN_FDS ? { fd: 3 } : { port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' };
server.listen(where, () => console.log(`socket.io worker ${worker} (pid ${process.pid}) listening on ${where.fd ? 'fd 3' : `port ${where.port}`}`));

// lbd drains a worker with SIGTERM: io.close() stops accepting (lbd moves the queue to another
// worker) and closes every connection; socket.io clients reconnect by themselves, and with
// --policy sticky they reach the worker that now serves their slot.
process.on('SIGTERM', () => {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();  // a connection that will not close
});
