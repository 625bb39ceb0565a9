// Shared by the fuzz targets: an input's first bytes choose where the rest is cut, so that one
// input is delivered in the pieces a network might make of it (a byte at a time, or whole).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace lbd::fuzz {

// Splits `data` after its 8-byte header: each header byte is a piece length (0 = the rest).
inline std::vector<std::string_view> pieces(const uint8_t* data, size_t size) {
  constexpr size_t kHeader = 8;
  std::vector<std::string_view> out;
  if (size < kHeader) return out;
  std::string_view rest(reinterpret_cast<const char*>(data + kHeader), size - kHeader);
  for (size_t i = 0; !rest.empty(); i++) {
    size_t length = data[i % kHeader];
    if (length == 0 || length > rest.size()) length = rest.size();
    out.push_back(rest.substr(0, length));
    rest.remove_prefix(length);
  }
  return out;
}

}  // namespace lbd::fuzz
