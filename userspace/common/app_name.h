// An app's name: what `lbd run --name` and a config file's `name` accept, the log file's name
// (NAME.log), the control socket's (NAME.sock), and what lbctl takes before a verb's value.
// One rule, here: 1 to 64 of letters, digits, '_', '.', '-', starting with a letter or digit
// (never read as a flag or a hidden file), and not all digits (so `lbctl drain 3` is a slot).
#pragma once

#include <algorithm>
#include <cctype>
#include <string_view>

namespace lbd {

inline constexpr size_t kMaxAppName = 64;
inline constexpr const char* kAppNameRule =
    "letters, digits, '_', '.' and '-', starting with a letter or digit, not all digits, at most 64";

inline bool is_app_name(std::string_view name) {
  auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; };
  return !name.empty() && name.size() <= kMaxAppName && std::isalnum(static_cast<unsigned char>(name[0])) &&
         std::all_of(name.begin(), name.end(), name_char) &&
         !std::all_of(name.begin(), name.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

}  // namespace lbd
