// io_uring user_data in a worker: operation, 24-bit connection generation and a 32-bit index
// packed into 64 bits (worker/user_data.h). A completion must decode to exactly what was submitted
// so that a stale completion (older generation) is recognised.
#include <gtest/gtest.h>

#include <cstdint>

#include "worker/user_data.h"

namespace lbd {
namespace {

static_assert(unpack_user_data(pack_user_data(Op::kRecv, 7, 9)).index == 7,
              "packing is usable at compile time");

const Op kAllOps[] = {Op::kAccept,  Op::kRecv,   Op::kSend,      Op::kClose,
                      Op::kTimer,   Op::kCancel, Op::kShutdown,  Op::kSignal,
                      Op::kInboxPoll, Op::kInstall, Op::kStatusPoll, Op::kExport,
                      Op::kHandoverWritable};

TEST(UserData, RoundTripsEveryOpIndexAndGeneration) {
  const uint32_t indexes[] = {0, 1, 4095, 0x7FFFFFFFu, 0xFFFFFFFFu};
  const uint32_t generations[] = {0, 1, 0x123456, 0xFFFFFE, 0xFFFFFF};
  for (Op op : kAllOps) {
    for (uint32_t index : indexes) {
      for (uint32_t generation : generations) {
        UserData d = unpack_user_data(pack_user_data(op, index, generation));
        EXPECT_EQ(d.op, op);
        EXPECT_EQ(d.index, index);
        EXPECT_EQ(d.generation, generation);
      }
    }
  }
}

TEST(UserData, GenerationWrapsAt24Bits) {
  struct Case {
    uint32_t generation;
    uint32_t decoded;
  };
  const Case cases[] = {
      {0x1000000, 0},
      {0x1000001, 1},
      {0x1234567, 0x234567},
      {0xFFFFFFFF, 0xFFFFFF},
  };
  for (const Case& c : cases) {
    UserData d = unpack_user_data(pack_user_data(Op::kSend, 42, c.generation));
    EXPECT_EQ(d.generation, c.decoded) << std::hex << c.generation;
    EXPECT_EQ(d.op, Op::kSend) << "the generation must not spill into the op";
    EXPECT_EQ(d.index, 42u) << "the generation must not spill into the index";
  }
}

TEST(UserData, ConsecutiveGenerationsOfOneSlotDiffer) {
  // The point of the generation: the same fixed-file slot reused by the next connection.
  EXPECT_NE(pack_user_data(Op::kRecv, 5, 10), pack_user_data(Op::kRecv, 5, 11));
  EXPECT_NE(pack_user_data(Op::kRecv, 5, 0xFFFFFF), pack_user_data(Op::kRecv, 5, 0xFFFFFF + 1));
  EXPECT_NE(pack_user_data(Op::kRecv, 5, 10), pack_user_data(Op::kSend, 5, 10));
}

TEST(UserData, NeverEncodesZero) {
  // Zero is what an unset user_data looks like; no real operation encodes to it.
  for (Op op : kAllOps) EXPECT_NE(pack_user_data(op, 0, 0), 0u);
}

}  // namespace
}  // namespace lbd
