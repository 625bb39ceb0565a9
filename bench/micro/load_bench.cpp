// What the load data behind `least` costs a worker, on a real slot table.
//
// Per connection, a LoadToken (worker/load_token.h) counts the connection into the worker's
// open-connection count when it is accepted and out when it ends: an increment and a decrement of
// a counter private to the worker, no shared memory (Worker::open_connection and release).
//
// Per completion, so several times per request (its recv, its send, and the end of each loop
// turn), Worker::publish() copies the worker's counters into its entry of the shared slot table
// with six relaxed atomic stores (publish_load, steering/slot_table.h), which the steering
// program reads on every decision. Measured on a memfd table (--mode reuseport, shared, handoff)
// and on the mmap of the program's BPF_F_MMAPABLE map (--mode bpf; root). Both must stay a few
// ns: they run on every completion, which is why load is published through shared memory instead
// of a bpf() syscall.
//
// Per request, the worker reads CLOCK_MONOTONIC when the handler starts and when it answers, and
// adds the duration to its stats block's histogram (record_request, metrics/worker_stats.h): two
// vDSO clock reads and two single-writer adds, measured together as Worker::answer and
// Worker::respond do them.
#include <benchmark/benchmark.h>
#include <time.h>

#include <cstdint>

#include "metrics/worker_stats.h"
#include "steering/slot_table.h"
#include "steering/steering.h"
#include "support.h"
#include "worker/load_token.h"

namespace lbd {
namespace {

void BM_LoadTokenOpenClose(benchmark::State& state) {
  uint32_t open = 0;  // Worker::open_
  LoadToken token;    // Connection::token
  for (auto _ : state) {
    token = LoadToken(&open);  // Worker::open_connection
    benchmark::DoNotOptimize(open);
    token.release();           // Worker::release
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_LoadTokenOpenClose);

void publish_loop(benchmark::State& state, SlotTable& table) {
  lbd_slot& slot = table.slot(1);
  WorkerLoad load;
  load.pid = 4242;
  for (auto _ : state) {
    // Values change between publishes, as they do in a worker.
    load.heartbeat_ns++;
    load.requests++;
    load.open ^= 1;
    publish_load(slot, load);
    benchmark::ClobberMemory();
  }
}

void BM_PublishMemfd(benchmark::State& state) {
  auto table = SlotTable::create_memfd();
  if (!table) {
    state.SkipWithError(table.error().message().c_str());
    return;
  }
  publish_loop(state, *table);
}
BENCHMARK(BM_PublishMemfd);

void BM_PublishBpfMap(benchmark::State& state) {
  auto steering = Steering::load(SteeringOptions{});
  if (!steering) return bench::skip(state, steering.error());
  // A worker maps the table from the fd it is handed, as here.
  auto table = SlotTable::map(steering->table().fd());
  if (!table) return bench::skip(state, table.error());
  publish_loop(state, *table);
}
BENCHMARK(BM_PublishBpfMap);

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void BM_RecordRequestDuration(benchmark::State& state) {
  auto block = WorkerStatsBlock::create();
  if (!block) return bench::skip(state, block.error());
  WorkerStats& stats = block->stats();
  for (auto _ : state) {
    const uint64_t started = monotonic_ns();  // Worker::answer
    record_request(stats, monotonic_ns() - started);  // Worker::respond
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_RecordRequestDuration);

}  // namespace
}  // namespace lbd
