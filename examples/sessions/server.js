// Sessions that survive any worker: the session lives in Redis, not in the worker's memory, so
// whichever lbd worker a request reaches can continue it.
//
//   lbd run -i 2 --policy rr -- node server.js     (REDIS_URL=redis://127.0.0.1:6379 by default)
//
// GET / counts the requests of the caller's session: the first answer sets a cookie
// `sid=<random id>`, and each request that sends it back gets the next number, whichever worker
// answers (X-Worker names it). The count is a field of the Redis hash `session:<sid>`, which
// expires after SESSION_TTL seconds without a request. Only the server makes session ids: a sid
// the client sends counts only while its session exists in Redis; any other (forged, or expired)
// gets a new session with a fresh id, so nobody can fix a session id on someone else's browser.
//
// Environment: REDIS_URL (redis://host:port) or REDIS_SOCKET (a Unix socket's path) says where
// Redis is; LB_WORKER_ID is set by lbd for each worker (0..N-1); the listener is fd 3 (LISTEN_FDS).
const http = require('http');
const crypto = require('crypto');
const { createClient } = require('redis');

const worker = process.env.LB_WORKER_ID ?? '0';
const ttl = Number(process.env.SESSION_TTL ?? 1800);
const redis = createClient(process.env.REDIS_SOCKET
  ? { socket: { path: process.env.REDIS_SOCKET } }
  : { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
redis.on('error', (err) => console.error(`redis: ${err.message}`));

// The session id from the request's cookie, if it sent one that looks like ours (whether that
// session exists is for Redis to say: see continueSession).
function sessionId(req) {
  const match = /(?:^|;\s*)sid=([0-9a-f-]{36})(?:;|$)/.exec(req.headers.cookie ?? '');
  return match ? match[1] : null;
}

// Counts a request of an existing session and pushes its expiry back, atomically; 0 if there is no
// such session (never issued, or expired), which it then does not create.
const COUNT_IF_EXISTS = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count`;

async function continueSession(sid) {
  return Number(await redis.eval(COUNT_IF_EXISTS, { keys: [`session:${sid}`], arguments: [String(ttl)] }));
}

// A new session, under a fresh random id of the server's own.
async function newSession(res) {
  const sid = crypto.randomUUID();
  const key = `session:${sid}`;
  // One round trip: count, then set the expiry.
  const [count] = await redis.multi().hIncrBy(key, 'count', 1).expire(key, ttl).exec();
  res.setHeader('Set-Cookie', `sid=${sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${ttl}`);
  return { sid, count };
}

// One whole answer with its length (not chunked): simple clients read it easily.
function reply(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) }).end(body);
}

async function handle(req, res) {
  res.setHeader('X-Worker', worker);
  res.setHeader('X-Worker-Pid', String(process.pid));
  if (req.method !== 'GET' || req.url !== '/') {
    reply(res, 404, 'text/plain', 'not found\n');
    return;
  }
  let sid = sessionId(req);
  let count = sid ? await continueSession(sid) : 0;
  if (count === 0) ({ sid, count } = await newSession(res));
  reply(res, 200, 'application/json', JSON.stringify({ session: sid, count, worker: Number(worker), pid: process.pid }) + '\n');
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(`request failed: ${err.message}`);
    if (res.headersSent) res.end();
    else reply(res, 503, 'text/plain', 'session store unavailable\n');
  });
});

// Listen only once Redis answers: lbd counts a program ready when it accepts, so a worker that
// cannot reach its session store never takes a client (a reload to it fails instead).
// Under lbd the listener is fd 3 (LISTEN_FDS is set); alone, `PORT=3000 node server.js`.
const where = process.env.LISTEN_FDS ? { fd: 3 } : { port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' };
redis.connect().then(() => {
  server.listen(where, () => console.log(`sessions worker ${worker} (pid ${process.pid}) listening on ${where.fd ? 'fd 3' : `port ${where.port}`}`));
}, (err) => {
  console.error(`cannot connect to redis: ${err.message}`);
  process.exit(1);
});

// lbd drains a worker with SIGTERM: stop accepting (lbd moves the queue to another worker),
// finish the requests in flight, then let go of Redis and exit.
process.on('SIGTERM', () => {
  server.close(() => redis.quit().finally(() => process.exit(0)));
  server.closeIdleConnections();
});
