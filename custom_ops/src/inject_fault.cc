// Fault injection: chooses elements by exact count or by a per-element rate (geometric gaps)
// and corrupts them by a bit flip, a random value within the tensor's range, or zero.
#include <cstring>

#include "onnx_ecc/inject.h"

namespace onnx_ecc {

std::string InjectConfig::Validate() const {
  if (kind == FaultKind::kBitFlip) {
    if (bits.empty()) return "bits must name at least one bit position";
    for (auto b : bits)
      if (b < 0 || b > 31) return "bit positions must be in [0, 31]";
    if (bits.size() > static_cast<size_t>(kMaxInjectBits))
      return "at most " + std::to_string(kMaxInjectBits) + " bit positions";
  }
  if (count < 0) return "count must be >= 0";
  return "";
}

InjectParams InjectConfig::Params() const {
  InjectParams p;
  p.kind = static_cast<int>(kind);
  p.nbits = static_cast<int>(bits.size());
  for (int i = 0; i < p.nbits; ++i) p.bits[i] = static_cast<unsigned char>(bits[i]);
  p.count = count;
  p.site = site;
  return p;
}

int64_t InjectFaults(const InjectConfig& cfg, const float* x, float* y, int64_t n, uint64_t seed, double rate) {
  if (x != y) std::memcpy(y, x, sizeof(float) * n);
  return InjectOnHost(cfg.Params(), x, y, n, seed, rate);
}

}  // namespace onnx_ecc
