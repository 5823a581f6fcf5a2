// Fault injection: chooses elements by exact count or by a per-element rate (geometric gaps)
// and corrupts them by a bit flip, a random value within the tensor's range, or zero.
#include <algorithm>
#include <cmath>
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
  if (n == 0 || !(cfg.count > 0 || rate > 0)) return 0;
  const InjectParams p = cfg.Params();
  const uint64_t state = InjectStartState(seed, p.site);
  float range = 0.f;  // the largest finite |x|
  if (cfg.kind == FaultKind::kRandom)
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(x[i])) range = std::max(range, std::fabs(x[i]));
  if (cfg.count == 0 && rate >= 1) {
    for (int64_t i = 0; i < n; ++i) InjectAllOne(p, y, i, state, &range);
    return n;
  }
  return InjectSequential(p, y, n, state, rate, &range);
}

}  // namespace onnx_ecc
