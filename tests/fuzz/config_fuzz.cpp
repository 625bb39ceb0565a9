// The TOML config checker (`lbd start FILE.toml`, `lbd check`) on hostile text: a file is either
// a valid config or one ConfigError with a message; any other exception or a crash is a bug.
#include <string>

#include "config/app_config.h"
#include "config/values.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    lbd::config::FileConfig file = lbd::config::parse_config(text, "fuzz.toml", std::string("/nonexistent"));
    if (file.apps.empty()) __builtin_trap();  // a valid file has at least one app
    for (const auto& app : file.apps) (void)lbd::config::lbd_run_arguments(app, file);
  } catch (const lbd::ConfigError& e) {
    if (std::string(e.what()).empty()) __builtin_trap();
  }
  return 0;
}
