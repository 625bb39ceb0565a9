// Test helpers for the exec-mode log collector (userspace/logs/log_collector.h).
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "logs/log_collector.h"

namespace lbd::test {

// A collector with these options; a test failure (and null) if it cannot be created.
inline std::unique_ptr<logs::LogCollector> make_collector(logs::LogOptions options) {
  auto created = logs::LogCollector::create(std::move(options));
  if (!created) {
    ADD_FAILURE() << created.error().message();
    return nullptr;
  }
  return std::move(*created);
}

}  // namespace lbd::test
