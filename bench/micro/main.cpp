// lbd_micro's main: Google Benchmark's, with lbd's logging cut to errors. The output is the
// table; libbpf's warnings about a program that cannot load without root would only repeat
// what each skipped benchmark already says.
#include <benchmark/benchmark.h>

#include "common/log.h"

int main(int argc, char** argv) {
  lbd::init_logging("lbd_micro", "error");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
