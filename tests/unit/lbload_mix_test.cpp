// lbload's --mix (tools/lbload/mix.h): which specs parse, which are refused with a message, and
// that weighted choice matches the weights.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/result.h"
#include "lbload/mix.h"

namespace lbd::load {
namespace {

TEST(LbloadMix, DefaultIsOnePath) {
  PathMix mix("/hello");
  ASSERT_EQ(mix.size(), 1u);
  EXPECT_EQ(mix.paths()[0].path, "/hello");
  Random random(1);
  for (int i = 0; i < 100; i++) EXPECT_EQ(mix.choose(random.next()), 0u);
}

TEST(LbloadMix, ParsesGoodSpecs) {
  struct Case {
    const char* spec;
    std::vector<WeightedPath> expected;
  };
  const Case cases[] = {
      {"1:/", {{"/", 1}}},
      {"95:/,5:/work?us=5000", {{"/", 95}, {"/work?us=5000", 5}}},
      {"3:/a,2:/b,1:/c", {{"/a", 3}, {"/b", 2}, {"/c", 1}}},
      // A comma not followed by "digits:" belongs to the path.
      {"1:/q?list=a,b,2:/", {{"/q?list=a,b", 1}, {"/", 2}}},
      {"7:/x:y", {{"/x:y", 7}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    PathMix mix = PathMix::parse(c.spec);
    ASSERT_EQ(mix.size(), c.expected.size());
    for (size_t i = 0; i < c.expected.size(); i++) {
      EXPECT_EQ(mix.paths()[i].path, c.expected[i].path);
      EXPECT_EQ(mix.paths()[i].weight, c.expected[i].weight);
    }
  }
}

TEST(LbloadMix, RefusesBadSpecsWithAMessage) {
  struct Case {
    const char* spec;
    const char* says;  // part of the message
  };
  const Case cases[] = {
      {"", "expected WEIGHT:PATH"},
      {"/", "expected WEIGHT:PATH"},
      {"x:/", "whole number"},
      {"-1:/", "whole number"},
      {"1.5:/", "whole number"},
      {"0:/", "weight must be"},
      {"99999999999:/", "weight must be"},
      {"1:", "path must start with '/'"},
      {"1:work", "path must start with '/'"},
      {"1:/a b", "no spaces"},
      {"1:/,", "expected WEIGHT:PATH"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    try {
      (void)PathMix::parse(c.spec);
      ADD_FAILURE() << "accepted";
    } catch (const ConfigError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("bad --mix"), std::string::npos) << message;
      EXPECT_NE(message.find(c.says), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
    }
  }
}

TEST(LbloadMix, WeightedChoiceFollowsTheWeights) {
  PathMix mix = PathMix::parse("95:/,4:/work,1:/sleep");
  Random random(42);
  std::vector<int> counts(mix.size());
  constexpr int kDraws = 100'000;
  for (int i = 0; i < kDraws; i++) counts[mix.choose(random.next())]++;
  // Binomial standard deviations at 100k draws: 69, 62, 31. Allow about five.
  EXPECT_NEAR(counts[0], 95'000, 350);
  EXPECT_NEAR(counts[1], 4'000, 320);
  EXPECT_NEAR(counts[2], 1'000, 160);
}

TEST(LbloadMix, EqualWeightsSplitEvenly) {
  PathMix mix = PathMix::parse("1:/a,1:/b");
  Random random(7);
  int a = 0;
  constexpr int kDraws = 100'000;
  for (int i = 0; i < kDraws; i++) a += mix.choose(random.next()) == 0 ? 1 : 0;
  EXPECT_NEAR(a, kDraws / 2, 800);  // sd 158
}

TEST(LbloadMix, ExtremeDrawsStayInRange) {
  PathMix mix = PathMix::parse("1:/a,1:/b,1:/c");
  EXPECT_EQ(mix.choose(0), 0u);
  EXPECT_EQ(mix.choose(UINT64_MAX), 2u);
}

}  // namespace
}  // namespace lbd::load
