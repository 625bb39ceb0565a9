// The worker's connection table (worker/connection.h): connections built on first use in one
// mapping, taken down again after a wave so the memory returns, and generations that survive a
// rebuild so a completion meant for an earlier connection never matches a later one.
#include <gtest/gtest.h>

#include "supervisor/process_stats.h"
#include "worker/connection.h"

namespace lbd {
namespace {

uint64_t resident_kib() { return read_process_usage(getpid()).value_or(ProcessUsage{}).rss_bytes / 1024; }

TEST(ConnectionTable, BuildsOnFirstUseOnly) {
  auto table = ConnectionTable::create(1000);
  ASSERT_TRUE(table) << table.error().message();
  EXPECT_FALSE(table->built(7));
  EXPECT_TRUE(table->build(7));
  EXPECT_TRUE(table->built(7));
  EXPECT_FALSE(table->build(7)) << "built once";
  EXPECT_FALSE(table->built(1000)) << "out of range is never built";
}

TEST(ConnectionTable, AGenerationSurvivesTakingTheConnectionDown) {
  auto table = ConnectionTable::create(16);
  ASSERT_TRUE(table);
  table->build(3);
  (*table)[3].generation = 41;
  table->release_unused();
  EXPECT_FALSE(table->built(3));
  table->build(3);
  EXPECT_EQ((*table)[3].generation, 42u);
}

TEST(ConnectionTable, ReleasingKeepsConnectionsInUseAndReturnsTheRest) {
  constexpr uint32_t kSlots = 65536;
  auto table = ConnectionTable::create(kSlots);
  ASSERT_TRUE(table);
  const uint64_t before = resident_kib();
  for (uint32_t i = 0; i < kSlots; i++) {
    table->build(i);
    // Short enough to stay inside the string (no heap): what is measured is the table's own
    // pages, which a sanitizer's allocator would not hide (freed heap stays in its quarantine).
    (*table)[i].input.assign(10, 'x');
  }
  (*table)[123].in_use = true;
  (*table)[123].input = "kept";
  const uint64_t full = resident_kib();
  EXPECT_GT(full - before, uint64_t{kSlots} * sizeof(Connection) / 1024 / 2) << "building touches the pages";
  const size_t returned = table->release_unused();
  EXPECT_GE(returned, (uint64_t{kSlots} - 16) * sizeof(Connection) - 8192);
  EXPECT_TRUE(table->built(123));
  EXPECT_EQ((*table)[123].input, "kept");
  EXPECT_LT(resident_kib() - before, (full - before) / 4) << "before " << before << " KiB, full " << full << " KiB";
}

}  // namespace
}  // namespace lbd
