// Many socket.io clients against server.js, each from a source address of its own in 127/8
// (Linux routes all of 127.0.0.0/8 to lo), so that an address-keyed policy such as
// `--policy sticky` spreads them over the workers as it would spread real clients.
//
//   node client.js --url http://127.0.0.1:3000 --clients 100 [--first-address 127.1.0.1]
//                  [--messages 3] [--phases 2] [--phase-timeout 30]
//
// Each phase: every client is connected (polling first, as socket.io starts), has upgraded to
// WebSocket, sends --messages 'echo' messages and gets each one back from the worker it is
// connected to, joins the room 'lobby' there and receives its own 'chat' message in it. A phase
// ends when every client has done so or failed, or at --phase-timeout; then one line goes to
// stdout, `phase N {json}`, with what happened: which workers (LB_WORKER_ID) and processes served
// how many clients, the errors seen (with the server's answer, such as {"code":1,"message":
// "Session ID unknown"}), clients served by another worker than in the phase before (moved_worker)
// and clients the server saw coming from another address than theirs (wrong_source_address).
//
// Between phases the client waits for SIGUSR2 (the test reloads lbd meanwhile); in the next phase
// each client must be served by a new process (it reconnects by itself when its worker drains).
// A client's phase ends at its first error (it tries again in the next phase); every error counts,
// those between phases (during the reload) in the next phase's report.
// Exits 0 after the last phase (whatever it found: the caller judges the report), 2 on bad usage.
const http = require('http');
const { io } = require('socket.io-client');

function parseArgs(argv) {
  const options = { url: null, clients: 100, firstAddress: '127.1.0.1', messages: 3, phases: 2, phaseTimeout: 30 };
  const names = { '--url': 'url', '--clients': 'clients', '--first-address': 'firstAddress',
    '--messages': 'messages', '--phases': 'phases', '--phase-timeout': 'phaseTimeout' };
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) usage(`unknown or incomplete option ${argv[i]}`);
    options[key] = key === 'url' || key === 'firstAddress' ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!options.url) usage('--url is required');
  return options;
}

function usage(problem) {
  console.error(`client.js: ${problem}`);
  process.exit(2);
}

// The i-th address after `first` (127.1.0.1 + 300 = 127.1.1.45).
function addressAt(first, i) {
  const n = first.split('.').reduce((acc, part) => acc * 256 + Number(part), 0) + i;
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

const options = parseArgs(process.argv);
const started = Date.now();

// What one failure looked like, with the server's answer when there was one (engine.io puts the
// request in err.context).
function describeError(err) {
  const text = err && err.context && typeof err.context.responseText === 'string' ? err.context.responseText : '';
  return {
    message: String(err && err.message ? err.message : err),
    description: err && err.description !== undefined ? String(err.description && err.description.message
      ? err.description.message : err.description) : undefined,
    response: text ? text.slice(0, 200) : undefined,
  };
}

class Client {
  constructor(index) {
    this.index = index;
    this.address = addressAt(options.firstAddress, index);
    this.errors = [];
    this.connections = [];   // one 'hello' per connection: { worker, pid, address }
    this.disconnects = [];
    this.phase = 0;
    this.waiters = [];
    // The polling transport's requests go through this agent, the WebSocket through localAddress.
    this.agent = new http.Agent({ keepAlive: true, localAddress: this.address });
    this.socket = io(options.url, {
      transports: ['polling', 'websocket'],
      upgrade: true,
      forceNew: true,            // a connection of its own, not one shared by every client
      agent: this.agent,
      localAddress: this.address,
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      timeout: 5000,
    });
    this.socket.on('hello', (hello) => { this.connections.push(hello); this.wake(); });
    this.socket.on('connect_error', (err) => this.fail('connect_error', err));
    this.socket.io.on('error', (err) => this.fail('error', err));
    this.socket.on('disconnect', (reason) => { this.disconnects.push({ phase: this.phase, reason }); this.wake(); });
    this.socket.io.on('open', () => {
      this.socket.io.engine.on('upgrade', () => this.wake());
      this.socket.io.engine.on('upgradeError', (err) => this.fail('upgradeError', err));
    });
    this.chats = [];
    this.socket.on('chat', (message) => { this.chats.push(message); this.wake(); });
  }

  fail(kind, err) {
    // One failure reaches both the socket (connect_error) and its manager (error): count it once.
    if (err === this.lastError) return;
    this.lastError = err;
    this.errors.push({ phase: this.phase, kind, ...describeError(err) });
    this.wake();
  }

  // Resolves once `condition()` holds; rejects at `deadline` or at an error since run() began.
  // Looks every 10 ms, and at once when an event comes in.
  until(condition, deadline, what) {
    const errorsBefore = this.errorsBeforeRun;
    return new Promise((resolve, reject) => {
      let timer = null;
      const check = () => {
        let outcome = null;
        if (this.errors.filter((e) => e.phase === this.phase).length > errorsBefore) {
          outcome = () => reject(new Error(`an error while waiting for ${what}`));
        } else if (condition()) {
          outcome = resolve;
        } else if (Date.now() >= deadline) {
          outcome = () => reject(new Error(`timed out waiting for ${what}`));
        }
        if (!outcome) return;
        clearInterval(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        outcome();
      };
      timer = setInterval(check, 10);
      this.waiters.push(check);
      check();
    });
  }

  wake() {
    [...this.waiters].forEach((w) => w());
  }

  // One phase: connected (to a process other than `notPid`), upgraded, messages echoed.
  async run(phase, deadline, notPid) {
    this.phase = phase;
    this.errorsBeforeRun = this.errors.filter((e) => e.phase === this.phase).length;
    const current = () => this.connections[this.connections.length - 1];
    await this.until(() => this.socket.connected && current() && current().pid !== notPid &&
                     current().id === this.socket.id, deadline, 'a connection');
    await this.until(() => this.socket.io.engine && this.socket.io.engine.transport.name === 'websocket',
                     deadline, 'the upgrade to WebSocket');
    const hello = current();
    for (let m = 0; m < options.messages; m++) {
      const message = `client ${this.index} phase ${phase} message ${m}`;
      const reply = await this.socket.timeout(Math.max(1, deadline - Date.now())).emitWithAck('echo', message);
      if (reply.message !== message || reply.pid !== hello.pid || reply.transport !== 'websocket') {
        throw new Error(`echo of "${message}" came back as ${JSON.stringify(reply)} (connected to pid ${hello.pid})`);
      }
    }
    const joined = await this.socket.timeout(Math.max(1, deadline - Date.now())).emitWithAck('join', 'lobby');
    if (joined.worker !== hello.worker) throw new Error(`joined the lobby of worker ${joined.worker}, not ${hello.worker}`);
    const text = `client ${this.index} phase ${phase} in the lobby`;
    this.socket.emit('chat', { room: 'lobby', text });
    await this.until(() => this.chats.some((c) => c.text === text && c.from === this.socket.id), deadline,
                     'its own chat message');
    return hello;
  }
}

async function phase(clients, n, previous) {
  const phaseStarted = Date.now();
  const deadline = phaseStarted + options.phaseTimeout * 1000;
  const results = await Promise.allSettled(clients.map((c) => c.run(n, deadline, previous.get(c)?.pid)));
  const served = new Map();
  const workers = {};
  const pids = {};
  const failures = [];
  const wrongAddress = [];
  let moved = 0;
  results.forEach((r, i) => {
    const client = clients[i];
    if (r.status === 'fulfilled') {
      served.set(client, r.value);
      workers[r.value.worker] = (workers[r.value.worker] ?? 0) + 1;
      pids[r.value.pid] = (pids[r.value.pid] ?? 0) + 1;
      if (r.value.address.replace(/^::ffff:/, '') !== client.address) wrongAddress.push(client.index);
      if (previous.has(client) && previous.get(client).worker !== r.value.worker) moved++;
    } else {
      failures.push({ client: client.index, reason: r.reason.message });
    }
  });
  const errors = clients.flatMap((c) => c.errors.filter((e) => e.phase === n).map((e) => ({ client: c.index, ...e })));
  const report = {
    phase: n,
    clients: clients.length,
    completed: served.size,
    seconds: (Date.now() - phaseStarted) / 1000,
    workers,
    pids,
    errors: errors.length,
    session_unknown: errors.filter((e) => (e.response ?? '').includes('Session ID unknown')).length,
    first_errors: errors.slice(0, 5),
    failures: failures.length,
    first_failures: failures.slice(0, 5),
    wrong_source_address: wrongAddress.length,
    moved_worker: moved,
    disconnects: clients.reduce((sum, c) => sum + c.disconnects.filter((d) => d.phase === n).length, 0),
  };
  console.log(`phase ${n} ${JSON.stringify(report)}`);
  return served;
}

async function main() {
  const clients = Array.from({ length: options.clients }, (_, i) => new Client(i));
  let previous = new Map();
  for (let n = 1; n <= options.phases; n++) {
    if (n > 1) {
      console.log(`waiting for SIGUSR2 before phase ${n}`);
      await new Promise((resolve) => process.once('SIGUSR2', resolve));
    }
    previous = await phase(clients, n, previous);
    // What happens from now on (the reload: disconnects, reconnects, any error) is the next phase's.
    clients.forEach((c) => { c.phase = n + 1; });
  }
  clients.forEach((c) => { c.socket.close(); c.agent.destroy(); });
  console.log(`done in ${(Date.now() - started) / 1000} s`);
  process.exit(0);
}

// Waiting for SIGUSR2 must not kill the client if it arrives early.
process.on('SIGUSR2', () => {});
main().catch((err) => {
  console.error(`client.js: ${err.stack}`);
  process.exit(1);
});
