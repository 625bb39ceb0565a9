// Node.js `cluster` as its docs show it: the primary accepts every connection and hands it to a
// worker round-robin (SCHED_RR, the default on Linux, set explicitly here). WORKERS processes.
'use strict';
const cluster = require('cluster');

cluster.schedulingPolicy = cluster.SCHED_RR;

if (cluster.isPrimary) {
  const workers = Number(process.env.WORKERS || 2);
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.error(`node_cluster: worker ${worker.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  require('./hello.js')();
}
