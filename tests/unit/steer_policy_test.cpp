// The steering policy (bpf/steer_policy.h) compiled on the host: the same C the BPF program runs,
// driven over an array of slots the way the program drives it (a visit per slot, then the walk). What it pins down
// is docs/ARCHITECTURE.md, invariant 2 (a slot that is not ACTIVE is never chosen) and the meaning of each
// policy: rr is exactly even, least follows load and liveness, hash is the flow hash over the
// active slots, sticky keeps a client on its slot and moves only the clients of a slot that
// leaves, and the retry order offers every other active slot once.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "steer_policy.h"

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kNow = 1'000'000 * kMs;  // an arbitrary "now" well past zero
constexpr uint64_t kStaleAfter = 50 * kMs;

// A slot table as the program sees it. Slots are EMPTY unless made otherwise.
struct Table {
  std::array<lbd_slot, LBD_MAX_SLOTS> slots{};

  lbd_slot& active(uint32_t i) {
    slots[i].state = LBD_SLOT_ACTIVE;
    slots[i].heartbeat_ns = kNow;  // live
    return slots[i];
  }
  lbd_slot& with_state(uint32_t i, uint32_t state) {
    slots[i].state = state;
    slots[i].heartbeat_ns = kNow;
    return slots[i];
  }
};

lbd_pick_args args_for(uint32_t policy, uint32_t nr_slots, uint32_t cursor = 0, uint32_t hash = 0) {
  lbd_pick_args a{};
  a.policy = policy;
  a.nr_slots = nr_slots;
  a.cursor = cursor;
  a.hash = hash;
  a.now_ns = kNow;
  a.stale_after_ns = kStaleAfter;
  a.client = lbd_client_key_v4(cursor * 2654435761u ^ hash);  // sticky: a client per ticket
  return a;
}

// One decision, exactly as steer.bpf.c makes it: init, visit [0, nr_slots), then choices.
lbd_scan scan(const Table& table, const lbd_pick_args& a) {
  lbd_scan s;
  lbd_scan_init(&s, &a);
  for (uint32_t i = 0; i < s.args.nr_slots; i++) lbd_scan_visit(&s, i, &table.slots[i]);
  return s;
}

// Every choice the program would try, in order, until LBD_NO_SLOT: its walk.
std::vector<uint32_t> walk(const lbd_scan& s) {
  lbd_walk w;
  std::vector<uint32_t> out;
  for (lbd_walk_start(&s, &w); w.slot != LBD_NO_SLOT; lbd_walk_next(&w)) {
    out.push_back(w.slot);
    if (out.size() > LBD_MAX_SLOTS) break;  // a bug; the comparison will say so
  }
  return out;
}

// The same by the rule as written.
std::vector<uint32_t> rule_choices(const lbd_scan& s) {
  std::vector<uint32_t> out;
  for (uint32_t attempt = 0; attempt <= LBD_MAX_SLOTS; attempt++) {
    uint32_t slot = lbd_scan_choice(&s, attempt);
    if (slot == LBD_NO_SLOT) break;
    out.push_back(slot);
  }
  return out;
}

std::vector<uint32_t> choices(const Table& table, const lbd_pick_args& a) { return walk(scan(table, a)); }

uint32_t pick(const Table& table, const lbd_pick_args& a) {
  std::vector<uint32_t> c = choices(table, a);
  return c.empty() ? static_cast<uint32_t>(LBD_NO_SLOT) : c[0];
}

const uint32_t kAllPolicies[] = {LBD_POLICY_RR, LBD_POLICY_LEAST, LBD_POLICY_HASH, LBD_POLICY_STICKY};

std::string policy_label(uint32_t policy) {
  switch (policy) {
    case LBD_POLICY_RR: return "rr";
    case LBD_POLICY_LEAST: return "least";
    case LBD_POLICY_HASH: return "hash";
    case LBD_POLICY_STICKY: return "sticky";
  }
  return "policy " + std::to_string(policy);
}

// --- every policy -----------------------------------------------------------------------------

TEST(SteerPolicy, NeverChoosesASlotThatIsNotActive) {
  // Active slots 3 and 6 carry a heavy load; the idle slots around them are empty, starting or
  // draining. However tempting the idle ones look, only 3 and 6 may come out, on every attempt.
  Table table;
  table.with_state(0, LBD_SLOT_EMPTY);
  table.with_state(1, LBD_SLOT_STARTING);
  table.with_state(2, LBD_SLOT_DRAINING);
  table.active(3).open = 1000;
  table.with_state(4, LBD_SLOT_DRAINING);
  table.with_state(5, LBD_SLOT_STARTING);
  table.active(6).open = 900;
  table.with_state(7, LBD_SLOT_EMPTY);

  for (uint32_t policy : kAllPolicies) {
    for (uint32_t ticket = 0; ticket < 64; ticket++) {
      auto tried = choices(table, args_for(policy, 8, ticket, ticket * 2654435761u));
      ASSERT_EQ(tried.size(), 2u) << policy_label(policy) << " ticket " << ticket;
      for (uint32_t slot : tried) {
        EXPECT_TRUE(slot == 3 || slot == 6)
            << policy_label(policy) << " ticket " << ticket << " chose slot " << slot;
      }
    }
  }
}

TEST(SteerPolicy, ReturnsNoSlotWhenNoSlotIsActive) {
  struct Case {
    const char* description;
    std::vector<uint32_t> states;
  };
  const Case cases[] = {
      {"no slots at all", {}},
      {"all empty", {LBD_SLOT_EMPTY, LBD_SLOT_EMPTY, LBD_SLOT_EMPTY}},
      {"starting and draining only", {LBD_SLOT_STARTING, LBD_SLOT_DRAINING, LBD_SLOT_STARTING}},
      {"an unknown state is not active", {7, 0xFFFFFFFFu}},
  };
  for (const Case& c : cases) {
    Table table;
    for (uint32_t i = 0; i < c.states.size(); i++) table.with_state(i, c.states[i]);
    for (uint32_t policy : kAllPolicies) {
      auto a = args_for(policy, static_cast<uint32_t>(c.states.size()), 5, 77);
      EXPECT_EQ(pick(table, a), static_cast<uint32_t>(LBD_NO_SLOT))
          << c.description << ", " << policy_label(policy);
    }
  }
}

TEST(SteerPolicy, SlotsAtOrBeyondTheSlotCountAreNotConsidered) {
  Table table;
  table.active(0);
  table.active(5);  // outside nr_slots = 4
  for (uint32_t policy : kAllPolicies) {
    for (uint32_t ticket = 0; ticket < 16; ticket++) {
      EXPECT_EQ(choices(table, args_for(policy, 4, ticket, ticket)), std::vector<uint32_t>{0})
          << policy_label(policy);
    }
  }
}

TEST(SteerPolicy, SlotCountAboveTheMaximumIsClampedToLbdMaxSlots) {
  lbd_pick_args a = args_for(LBD_POLICY_RR, LBD_MAX_SLOTS + 1000, LBD_MAX_SLOTS + 5);
  lbd_scan s;
  lbd_scan_init(&s, &a);
  EXPECT_EQ(s.args.nr_slots, static_cast<uint32_t>(LBD_MAX_SLOTS));

  // A visit past the table (the program would never make one, the header still refuses it).
  Table table;
  for (uint32_t i = 0; i < LBD_MAX_SLOTS; i++) table.active(i);
  for (uint32_t i = 0; i < s.args.nr_slots; i++) lbd_scan_visit(&s, i, &table.slots[i]);
  lbd_slot extra{};
  extra.state = LBD_SLOT_ACTIVE;
  lbd_scan_visit(&s, LBD_MAX_SLOTS, &extra);
  EXPECT_EQ(lbd_scan_active_count(&s), static_cast<uint32_t>(LBD_MAX_SLOTS));
  EXPECT_EQ(lbd_scan_choice(&s, 0), 5u);  // ticket 69 over 64 active slots
}

TEST(SteerPolicy, AMissingSlotEntryIsSkipped) {
  // The program passes NULL when a map lookup fails; that slot simply does not count.
  lbd_pick_args a = args_for(LBD_POLICY_RR, 2);
  lbd_scan s;
  lbd_scan_init(&s, &a);
  lbd_slot live{};
  live.state = LBD_SLOT_ACTIVE;
  lbd_scan_visit(&s, 0, nullptr);
  lbd_scan_visit(&s, 1, &live);
  EXPECT_EQ(lbd_scan_choice(&s, 0), 1u);
  EXPECT_EQ(lbd_scan_choice(&s, 1), static_cast<uint32_t>(LBD_NO_SLOT));
}

TEST(SteerPolicy, RetriesOfferEveryOtherActiveSlotOnceThenGiveUp) {
  // After the pick, attempts 1.. walk the rest of the active list in order, wrapping around.
  Table table;
  table.active(1).open = 9;
  table.active(2).open = 0;  // least's pick
  table.with_state(3, LBD_SLOT_DRAINING);
  table.active(4).open = 5;
  table.active(7).open = 3;

  struct Case {
    const char* description;
    lbd_pick_args args;
    std::vector<uint32_t> expected;
  };
  const Case cases[] = {
      {"rr ticket 0", args_for(LBD_POLICY_RR, 8, 0), {1, 2, 4, 7}},
      {"rr ticket 2", args_for(LBD_POLICY_RR, 8, 2), {4, 7, 1, 2}},
      {"rr ticket 7", args_for(LBD_POLICY_RR, 8, 7), {7, 1, 2, 4}},
      {"least", args_for(LBD_POLICY_LEAST, 8, 0), {2, 4, 7, 1}},
      {"hash 5", args_for(LBD_POLICY_HASH, 8, 0, 5), {2, 4, 7, 1}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(choices(table, c.args), c.expected) << c.description;
  }
}

// --- rr -------------------------------------------------------------------------------------

TEST(SteerPolicyRoundRobin, IsExactlyEvenOverActiveSlotsWithGaps) {
  Table table;
  table.active(0);
  table.active(2);
  table.active(5);
  table.with_state(6, LBD_SLOT_DRAINING);

  std::array<int, LBD_MAX_SLOTS + 1> hits{};
  for (uint32_t ticket = 0; ticket < 300; ticket++) {
    hits[pick(table, args_for(LBD_POLICY_RR, 8, ticket))]++;
  }
  EXPECT_EQ(hits[0], 100);
  EXPECT_EQ(hits[2], 100);
  EXPECT_EQ(hits[5], 100);
  EXPECT_EQ(hits[0] + hits[2] + hits[5], 300) << "some decisions went elsewhere";
}

TEST(SteerPolicyRoundRobin, ConsecutiveTicketsVisitTheActiveSlotsInTurn) {
  Table table;
  table.active(1);
  table.active(3);
  table.active(4);
  std::vector<uint32_t> order;
  for (uint32_t ticket = 0; ticket < 6; ticket++) order.push_back(pick(table, args_for(LBD_POLICY_RR, 6, ticket)));
  EXPECT_EQ(order, (std::vector<uint32_t>{1, 3, 4, 1, 3, 4}));
}

TEST(SteerPolicyRoundRobin, IgnoresLoad) {
  Table table;
  table.active(0).open = 1'000'000;
  table.active(1);
  EXPECT_EQ(pick(table, args_for(LBD_POLICY_RR, 2, 0)), 0u);
  EXPECT_EQ(pick(table, args_for(LBD_POLICY_RR, 2, 1)), 1u);
}

// --- least ----------------------------------------------------------------------------------

struct SlotSpec {
  uint32_t state = LBD_SLOT_ACTIVE;
  uint64_t steered = 0;
  uint64_t accepted = 0;
  uint32_t open = 0;
  uint64_t heartbeat_ns = kNow;
};

TEST(SteerPolicyLeast, ChoosesTheLowestLoad) {
  const uint64_t stale = kNow - kStaleAfter - 1;
  const uint64_t future = kNow + 5 * kMs;
  struct Case {
    const char* description;
    std::vector<SlotSpec> slots;
    uint32_t expected;
  };
  const Case cases[] = {
      {"open connections count",
       {{.open = 4}, {.open = 2}, {.open = 3}}, 1},
      {"steered but not yet accepted counts (a stalled accept queue)",
       {{.steered = 10, .accepted = 2}, {.open = 5}, {.steered = 7, .accepted = 0}}, 1},
      {"load is queued plus open",
       {{.steered = 3, .accepted = 1, .open = 1}, {.steered = 0, .accepted = 0, .open = 2},
        {.steered = 5, .accepted = 5, .open = 1}}, 2},
      {"accepted past steered (reconciliation) counts as an empty queue, not a negative one",
       {{.steered = 3, .accepted = 10, .open = 2}, {.open = 1}}, 1},
      {"accepted past steered does not wrap into a huge load",
       {{.steered = 0, .accepted = 1, .open = 0}, {.open = 1}}, 0},
      {"a non-active slot with no load is passed over",
       {{.state = LBD_SLOT_DRAINING}, {.open = 8}, {.state = LBD_SLOT_STARTING}, {.open = 9}}, 1},
      {"a stalled slot is avoided while a live one exists",
       {{.open = 0, .heartbeat_ns = stale}, {.open = 50}}, 1},
      {"a slot that never beat is stalled",
       {{.open = 0, .heartbeat_ns = 0}, {.open = 50}}, 1},
      {"a heartbeat exactly stale_after old is still live",
       {{.open = 0, .heartbeat_ns = kNow - kStaleAfter}, {.open = 50}}, 0},
      {"a heartbeat from the future counts as live",
       {{.open = 50}, {.open = 0, .heartbeat_ns = future}}, 1},
      {"when every slot is stalled the least loaded stalled one is chosen",
       {{.open = 5, .heartbeat_ns = stale}, {.open = 2, .heartbeat_ns = stale},
        {.open = 7, .heartbeat_ns = 0}}, 1},
  };
  for (const Case& c : cases) {
    Table table;
    for (uint32_t i = 0; i < c.slots.size(); i++) {
      lbd_slot& s = table.slots[i];
      s.state = c.slots[i].state;
      s.steered = c.slots[i].steered;
      s.accepted = c.slots[i].accepted;
      s.open = c.slots[i].open;
      s.heartbeat_ns = c.slots[i].heartbeat_ns;
    }
    auto a = args_for(LBD_POLICY_LEAST, static_cast<uint32_t>(c.slots.size()), 0);
    EXPECT_EQ(pick(table, a), c.expected) << c.description;
  }
}

TEST(SteerPolicyLeast, SlotLoadIsQueuedPlusOpenWithNegativeQueueAsZero) {
  lbd_slot s{};
  s.steered = 10;
  s.accepted = 4;
  s.open = 3;
  EXPECT_EQ(lbd_slot_load(&s), 9u);
  s.accepted = 25;  // the worker's reconciliation ran ahead of the program
  EXPECT_EQ(lbd_slot_load(&s), 3u);
}

TEST(SteerPolicyLeast, TiesRotateWithTheCursor) {
  // Four idle slots: consecutive tickets hand out each slot in turn, like rr.
  Table table;
  for (uint32_t i = 0; i < 4; i++) table.active(i);
  std::vector<uint32_t> order;
  for (uint32_t ticket = 0; ticket < 8; ticket++) {
    order.push_back(pick(table, args_for(LBD_POLICY_LEAST, 4, ticket)));
  }
  EXPECT_EQ(order, (std::vector<uint32_t>{0, 1, 2, 3, 0, 1, 2, 3}));
}

TEST(SteerPolicyLeast, TiesAreSharedAmongTheLeastLoadedSlotsOnly) {
  // Slots 1 and 4 tie at load 2; slot 2 is busier, slot 3 is draining, slot 0 busier still.
  Table table;
  table.active(0).open = 6;
  table.active(1).open = 2;
  table.active(2).open = 3;
  table.with_state(3, LBD_SLOT_DRAINING);
  table.active(4).open = 2;
  std::set<uint32_t> chosen;
  for (uint32_t ticket = 0; ticket < 10; ticket++) {
    uint32_t slot = pick(table, args_for(LBD_POLICY_LEAST, 5, ticket));
    EXPECT_TRUE(slot == 1 || slot == 4) << "ticket " << ticket << " chose slot " << slot;
    chosen.insert(slot);
  }
  EXPECT_EQ(chosen, (std::set<uint32_t>{1, 4})) << "both tied slots get a turn";
}

TEST(SteerPolicyLeast, SharesTiesEvenlyWhenActiveSlotsHaveGaps) {
  // steer_abi.h promises "ties broken round-robin". On an idle server every decision is a tie
  // (each connection is accepted and finished before the next arrives), so the tie-break *is*
  // the distribution. With slot 1 restarting (EMPTY) among four, the three idle active slots
  // should still share the connections evenly.
  Table table;
  table.active(0);
  table.with_state(1, LBD_SLOT_EMPTY);
  table.active(2);
  table.active(3);
  std::array<int, LBD_MAX_SLOTS + 1> hits{};
  for (uint32_t ticket = 0; ticket < 1200; ticket++) {
    hits[pick(table, args_for(LBD_POLICY_LEAST, 4, ticket))]++;
  }
  EXPECT_EQ(hits[0], 400);
  EXPECT_EQ(hits[2], 400) << "the slot after the gap takes the gap's share too";
  EXPECT_EQ(hits[3], 400);
}

TEST(SteerPolicyLeast, StalenessCheckIsOffWhenStaleAfterIsZero) {
  Table table;
  table.active(0).heartbeat_ns = 0;
  table.active(1).open = 1;
  auto a = args_for(LBD_POLICY_LEAST, 2);
  a.stale_after_ns = 0;
  EXPECT_EQ(pick(table, a), 0u);
}

// --- hash -----------------------------------------------------------------------------------

TEST(SteerPolicyHash, MapsTheHashModuloTheActiveCountOntoTheActiveSlots) {
  Table table;
  table.active(1);
  table.with_state(2, LBD_SLOT_DRAINING);
  table.active(4);
  table.active(6);
  const uint32_t active[] = {1, 4, 6};
  for (uint32_t hash : {0u, 1u, 2u, 3u, 4u, 5u, 1000u, 0xFFFFFFFFu, 2654435761u}) {
    EXPECT_EQ(pick(table, args_for(LBD_POLICY_HASH, 8, 0, hash)), active[hash % 3]) << "hash " << hash;
  }
}

TEST(SteerPolicyHash, SameHashSameSlotWhateverTheCursor) {
  Table table;
  table.active(0);
  table.active(1);
  table.active(2);
  for (uint32_t ticket = 0; ticket < 10; ticket++) {
    EXPECT_EQ(pick(table, args_for(LBD_POLICY_HASH, 3, ticket, 7)), 1u);
  }
}

// The branch-free bit arithmetic the program picks with, against the obvious loops, over masks
// from a fixed-seed generator (and the edges: bit 0, bit 63, all 64).
// A worker whose connection table is full has stopped accepting: what is sent there waits in its
// queue while another worker could answer at once.
TEST(SteerPolicy, EveryPolicyPassesOverAFullSlotWhileAnotherHasRoom) {
  for (uint32_t policy : kAllPolicies) {
    Table table;
    table.active(0).full = 1;
    table.active(1);
    table.active(2).full = 1;
    table.active(3);
    for (uint32_t ticket = 0; ticket < 64; ticket++) {
      uint32_t slot = pick(table, args_for(policy, 4, ticket, ticket * 2654435761u));
      EXPECT_TRUE(slot == 1 || slot == 3) << policy_label(policy) << " ticket " << ticket << " chose " << slot;
    }
    EXPECT_EQ(choices(table, args_for(policy, 4)).size(), 2u)
        << policy_label(policy) << ": retries offer only the slots with room";
  }
}

TEST(SteerPolicy, WhenEverySlotIsFullTheyAreChosenAsIfNoneWere) {
  for (uint32_t policy : kAllPolicies) {
    Table table;
    table.active(0).full = 1;
    table.active(1).full = 1;
    std::set<uint32_t> seen;
    for (uint32_t ticket = 0; ticket < 8; ticket++) seen.insert(pick(table, args_for(policy, 2, ticket, ticket)));
    EXPECT_EQ(seen, (std::set<uint32_t>{0, 1})) << policy_label(policy) << ": queueing beats refusing";
  }
}

TEST(SteerPolicyRoundRobin, StaysExactlyEvenOverTheSlotsWithRoom) {
  Table table;
  table.active(0);
  table.active(1).full = 1;
  table.active(2);
  std::array<int, 3> counts{};
  for (uint32_t ticket = 0; ticket < 100; ticket++) counts[pick(table, args_for(LBD_POLICY_RR, 3, ticket))]++;
  EXPECT_EQ(counts[0], 50);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[2], 50);
}

TEST(SteerPolicyLeast, AFullSlotLosesEvenWithTheLowestLoad) {
  Table table;
  table.active(0).open = 100;
  table.active(1).open = 0;
  table.slots[1].full = 1;
  EXPECT_EQ(pick(table, args_for(LBD_POLICY_LEAST, 2)), 0u);
}

// --- sticky ------------------------------------------------------------------------------------

// Client i of a population: 10.0.0.0 + i, as the packet carries it.
uint64_t client_key(uint32_t i) { return lbd_client_key_v4(htonl(0x0a000000u + i)); }

lbd_pick_args sticky_for(uint64_t client, uint32_t nr_slots, uint32_t cursor = 0) {
  lbd_pick_args a = args_for(LBD_POLICY_STICKY, nr_slots, cursor);
  a.client = client;
  return a;
}

// Where each of `clients` clients lands.
std::vector<uint32_t> sticky_placement(const Table& table, uint32_t nr_slots, uint32_t clients) {
  std::vector<uint32_t> placement;
  for (uint32_t i = 0; i < clients; i++) placement.push_back(pick(table, sticky_for(client_key(i), nr_slots)));
  return placement;
}

constexpr uint32_t kClients = 10'000;

TEST(SteerPolicySticky, SameClientSameSlotWhateverTheCursorOrFlow) {
  Table table;
  for (uint32_t i = 0; i < 8; i++) table.active(i);
  for (uint32_t c = 0; c < 100; c++) {
    const uint32_t first = pick(table, sticky_for(client_key(c), 8));
    for (uint32_t ticket = 1; ticket < 20; ticket++) {
      lbd_pick_args a = sticky_for(client_key(c), 8, ticket);
      a.hash = ticket * 2654435761u;  // another connection of the same client: another flow
      ASSERT_EQ(pick(table, a), first) << "client " << c << ", connection " << ticket;
    }
  }
}

TEST(SteerPolicySticky, SpreadsTenThousandClientsEvenly) {
  for (uint32_t n : {2u, 4u, 8u}) {
    Table table;
    for (uint32_t i = 0; i < n; i++) table.active(i);
    std::vector<uint32_t> per_slot(n, 0);
    for (uint32_t slot : sticky_placement(table, n, kClients)) per_slot.at(slot)++;
    const double mean = static_cast<double>(kClients) / n;
    for (uint32_t i = 0; i < n; i++) {
      // a fair coin's spread is about sqrt(mean); 7% is more than 3.5 of it for n = 8
      EXPECT_NEAR(per_slot[i], mean, mean * 0.07) << n << " slots, slot " << i;
    }
  }
}

TEST(SteerPolicySticky, ADrainedSlotsClientsMoveAndNoOthersThenComeBack) {
  Table table;
  for (uint32_t i = 0; i < 4; i++) table.active(i);
  const auto before = sticky_placement(table, 4, kClients);

  table.with_state(2, LBD_SLOT_DRAINING);
  const auto drained = sticky_placement(table, 4, kClients);
  uint32_t moved = 0;
  for (uint32_t c = 0; c < kClients; c++) {
    if (before[c] == 2) {
      EXPECT_NE(drained[c], 2u) << "client " << c;
      moved++;
    } else {
      ASSERT_EQ(drained[c], before[c]) << "client " << c << " was not on the drained slot, yet moved";
    }
  }
  EXPECT_GT(moved, kClients / 5) << "slot 2 had about a quarter of the clients";
  // The moved clients spread over the other slots, not onto one of them.
  std::set<uint32_t> new_homes;
  for (uint32_t c = 0; c < kClients; c++) {
    if (before[c] == 2) new_homes.insert(drained[c]);
  }
  EXPECT_EQ(new_homes, (std::set<uint32_t>{0, 1, 3}));

  table.active(2);  // back (an undrain, or its replacement after a reload)
  EXPECT_EQ(sticky_placement(table, 4, kClients), before);
}

TEST(SteerPolicySticky, ANewSlotTakesAboutOneInNOfTheClientsFromEveryOtherSlot) {
  Table table;
  for (uint32_t i = 0; i < 4; i++) table.active(i);
  const auto before = sticky_placement(table, 4, kClients);
  table.active(4);
  const auto after = sticky_placement(table, 5, kClients);
  uint32_t moved = 0;
  for (uint32_t c = 0; c < kClients; c++) {
    if (after[c] == before[c]) continue;
    ASSERT_EQ(after[c], 4u) << "client " << c << " moved between two old slots";
    moved++;
  }
  EXPECT_NEAR(moved, kClients / 5.0, kClients * 0.02);
}

TEST(SteerPolicySticky, AStalledOrFullSlotsClientsGoToTheirNextChoiceMeanwhile) {
  for (const char* what : {"stalled", "full"}) {
    Table table;
    for (uint32_t i = 0; i < 4; i++) table.active(i);
    const auto before = sticky_placement(table, 4, kClients);
    // Their next choice: where they go if slot 1 leaves altogether.
    table.with_state(1, LBD_SLOT_DRAINING);
    const auto next_choice = sticky_placement(table, 4, kClients);

    table.active(1);
    if (std::string(what) == "stalled") {
      table.slots[1].heartbeat_ns = kNow - kStaleAfter - 1;
    } else {
      table.slots[1].full = 1;
    }
    EXPECT_EQ(sticky_placement(table, 4, kClients), next_choice) << what;

    table.active(1).full = 0;  // live and with room again
    EXPECT_EQ(sticky_placement(table, 4, kClients), before) << what;
  }
}

TEST(SteerPolicySticky, WhenEveryActiveSlotIsStalledTheClientStaysOnItsSlot) {
  Table table;
  for (uint32_t i = 0; i < 4; i++) table.active(i);
  const auto before = sticky_placement(table, 4, 1000);
  for (uint32_t i = 0; i < 4; i++) table.slots[i].heartbeat_ns = kNow - kStaleAfter - 1;
  EXPECT_EQ(sticky_placement(table, 4, 1000), before);
}

TEST(SteerPolicySticky, AnIpv4ClientSeenThroughAnIpv6SocketIsTheSameClient) {
  const uint32_t v4 = htonl(0xc0000201u);  // 192.0.2.1
  const uint32_t mapped[4] = {0, 0, htonl(0x0000ffffu), v4};
  EXPECT_EQ(lbd_client_key_v6(mapped), lbd_client_key_v4(v4));
  const uint32_t v6[4] = {htonl(0x20010db8u), 0, 0, htonl(1u)};  // 2001:db8::1
  const uint32_t v6_other[4] = {htonl(0x20010db8u), 0, 0, htonl(2u)};
  EXPECT_NE(lbd_client_key_v6(v6), lbd_client_key_v6(v6_other));
  EXPECT_NE(lbd_client_key_v6(v6), lbd_client_key_v4(v4));
}

TEST(SteerPolicy, TheProgramsWalkMakesTheRulesChoices) {
  // Random tables: states, full flags, loads, stalls and slot counts, every policy, many tickets.
  uint64_t x = 0x2545F4914F6CDD1DULL;  // xorshift64
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  int compared = 0;
  for (int round = 0; round < 3000; round++) {
    Table table;
    const uint32_t nr_slots = 1 + next() % LBD_MAX_SLOTS;
    const uint64_t states = next(), fulls = next() & next(), stalls = next() & next() & next();
    for (uint32_t i = 0; i < nr_slots; i++) {
      const uint32_t state = (states >> (i % 32 * 2)) & 3;
      lbd_slot& slot = state == LBD_SLOT_ACTIVE && round % 4 ? table.active(i) : table.with_state(i, state);
      slot.open = next() % (round % 3 ? 4 : 1000);  // many ties, or few
      slot.full = (fulls >> i) & 1;
      if ((stalls >> i) & 1) slot.heartbeat_ns = kNow - 2 * kStaleAfter;
    }
    for (uint32_t policy : kAllPolicies) {
      lbd_pick_args a = args_for(policy, nr_slots, static_cast<uint32_t>(next()), static_cast<uint32_t>(next()));
      lbd_scan s = scan(table, a);
      ASSERT_EQ(walk(s), rule_choices(s)) << policy_label(policy) << " round " << round;
      compared++;
    }
  }
  EXPECT_EQ(compared, 3000 * 4);
}

TEST(SteerPolicy, BitCountAndNthBitAgreeWithASimpleLoop) {
  std::vector<uint64_t> masks = {1, 1ULL << 63, ~0ULL, 0x8000000000000001ULL, 0x5555555555555555ULL};
  uint64_t x = 0x9E3779B97F4A7C15ULL;  // xorshift64
  for (int i = 0; i < 2000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    masks.push_back(x & (i % 2 ? x >> 11 : ~0ULL));  // sparse and dense
  }
  for (uint64_t mask : masks) {
    std::vector<uint32_t> set_bits;
    for (uint32_t b = 0; b < 64; b++) {
      if (mask & (1ULL << b)) set_bits.push_back(b);
    }
    ASSERT_EQ(lbd_bits(mask), set_bits.size()) << std::hex << mask;
    for (uint32_t n = 0; n < set_bits.size(); n++) {
      ASSERT_EQ(lbd_nth_bit(mask, n), set_bits[n]) << std::hex << mask << " n=" << std::dec << n;
    }
  }
  EXPECT_EQ(lbd_bits(0), 0u);
}

}  // namespace
