// What the supervisor publishes for a program's slot (supervisor/program_load.h): the
// connections it has taken, and whether it makes progress (its heartbeat under `least`).
#include <gtest/gtest.h>

#include "supervisor/program_load.h"

namespace lbd {
namespace {

TEST(ProgramLoad, AProgramThatStartsServingHasTakenEverythingButItsQueue) {
  ProgramLoadEstimate load(/*steered=*/100, /*queued=*/2);
  EXPECT_EQ(load.accepted(), 98u);
}

TEST(ProgramLoad, TheFirstLookIsProgressEvenWithAQueue) {
  // It just started serving: a queue it has not had 10 ms to take from is no sign of a stall.
  ProgramLoadEstimate load(100, 5);
  EXPECT_TRUE(load.look(100, 5).progress);
  EXPECT_FALSE(load.look(100, 5).progress);
}

TEST(ProgramLoad, WhatItTakesIsCountedOneLookLater) {
  ProgramLoadEstimate load(10, 0);
  auto look = load.look(/*steered=*/15, /*queued=*/0);
  EXPECT_EQ(look.accepted, 10u) << "the 5 sent since the last look may still be in their handshake";
  EXPECT_TRUE(look.progress);
  look = load.look(15, 0);
  EXPECT_EQ(look.accepted, 15u);
  EXPECT_TRUE(look.progress);
}

TEST(ProgramLoad, AConnectionStillInItsHandshakeDoesNotPassForTaken) {
  // The program is stopped. One SYN was steered to it just before this look: its handshake is
  // not complete, so it is in no queue yet. It must not count as taken, or the stopped program
  // would look less loaded by one, forever.
  ProgramLoadEstimate load(10, 0);
  auto look = load.look(/*steered=*/11, /*queued=*/0);
  EXPECT_EQ(look.accepted, 10u);
  look = load.look(11, /*queued=*/1);  // the handshake completed: it waits in the queue
  EXPECT_EQ(look.accepted, 10u);
  EXPECT_FALSE(look.progress) << "a queue that does not move is no progress";
}

TEST(ProgramLoad, AStoppedProgramMakesNoProgressWhileItsQueueGrows) {
  // One connection is steered to it between looks; each waits in the queue from the next look.
  ProgramLoadEstimate load(50, 0);
  for (uint64_t k = 1; k <= 20; k++) {
    const auto look = load.look(/*steered=*/50 + k, /*queued=*/k - 1);
    EXPECT_EQ(look.accepted, 50u) << "look " << k;
    if (k > 1) {
      EXPECT_FALSE(look.progress) << "look " << k;
    }
  }
}

TEST(ProgramLoad, TakingFromAQueueIsProgressEvenIfTheQueueIsNotEmpty) {
  ProgramLoadEstimate load(0, 0);
  load.look(100, 60);
  auto look = load.look(100, 40);
  EXPECT_EQ(look.accepted, 60u);
  EXPECT_TRUE(look.progress);
  look = load.look(100, 40);
  EXPECT_FALSE(look.progress) << "the same 40 still waiting";
}

TEST(ProgramLoad, AcceptedNeverGoesBackwards) {
  // A burst arrives between two looks and is already queued at the second: steered minus queued
  // dips below what was taken before. The count holds.
  ProgramLoadEstimate load(100, 0);
  load.look(100, 0);
  const auto look = load.look(130, 25);
  EXPECT_EQ(look.accepted, 100u);
  EXPECT_EQ(load.look(130, 0).accepted, 130u);
}

TEST(ProgramLoad, QuietMeansNothingSteeredSinceTheLastLookAndNothingQueued) {
  ProgramLoadEstimate load(10, 0);
  EXPECT_TRUE(load.look(10, 0).quiet);
  EXPECT_FALSE(load.look(11, 0).quiet) << "a connection steered since the last look (maybe in its handshake)";
  EXPECT_FALSE(load.look(11, 1).quiet) << "it waits in the queue";
  EXPECT_FALSE(load.look(11, 1).quiet) << "still waiting: the look that would stop its heartbeat must come soon";
  const auto look = load.look(11, 0);
  EXPECT_TRUE(look.quiet);
  EXPECT_EQ(look.accepted, 11u) << "a quiet look has counted everything steered";
}

TEST(ProgramLoad, LooksComeEvery10MsWhileAnythingMoves) {
  EXPECT_EQ(look_interval(false, std::chrono::milliseconds(50)), std::chrono::milliseconds(10));
  EXPECT_EQ(look_interval(false, std::chrono::milliseconds(1000)), std::chrono::milliseconds(10));
}

TEST(ProgramLoad, QuietLooksComeAtHalfTheStallBound) {
  using std::chrono::milliseconds;
  // Half of --stale-after: a live program's stamp is never older than that at the next look.
  EXPECT_EQ(look_interval(true, milliseconds(50)), milliseconds(25));
  EXPECT_EQ(look_interval(true, milliseconds(20)), milliseconds(10)) << "the shortest --stale-after";
  EXPECT_EQ(look_interval(true, milliseconds(1000)), milliseconds(100)) << "bounded, for the load's sake";
  for (int bound = 20; bound <= 5000; bound++) {
    const auto interval = look_interval(true, milliseconds(bound));
    EXPECT_LE(interval * 2, milliseconds(bound)) << bound;
    EXPECT_GE(interval, milliseconds(10)) << bound;
  }
}

}  // namespace
}  // namespace lbd
