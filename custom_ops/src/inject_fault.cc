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
  }
  if (count < 0) return "count must be >= 0";
  return "";
}

namespace {

double Uniform01(uint64_t& state) { return (SplitMix64(state) >> 11) * (1.0 / 9007199254740992.0); }

void Corrupt(const InjectConfig& cfg, float* y, int64_t i, uint64_t& state, float range) {
  switch (cfg.kind) {
    case FaultKind::kBitFlip: {
      const int64_t bit = cfg.bits[SplitMix64(state) % cfg.bits.size()];
      uint32_t u;
      std::memcpy(&u, &y[i], 4);
      u ^= (1u << bit);
      std::memcpy(&y[i], &u, 4);
      break;
    }
    case FaultKind::kRandom:
      y[i] = static_cast<float>((2.0 * Uniform01(state) - 1.0) * range);
      break;
    case FaultKind::kZero:
      y[i] = 0.f;
      break;
  }
}

}  // namespace

int64_t InjectFaults(const InjectConfig& cfg, const float* x, float* y, int64_t n, uint64_t seed, double rate) {
  if (x != y) std::memcpy(y, x, sizeof(float) * n);
  if (n == 0) return 0;
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(cfg.site + 1));
  float range = 0.f;
  if (cfg.kind == FaultKind::kRandom) {
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(x[i])) range = std::max(range, std::fabs(x[i]));
    if (range == 0.f) range = 1.f;
  }
  int64_t faults = 0;
  if (cfg.count > 0) {
    for (int64_t k = 0; k < cfg.count; ++k) {
      const int64_t i = static_cast<int64_t>(SplitMix64(state) % static_cast<uint64_t>(n));
      Corrupt(cfg, y, i, state, range);
      ++faults;
    }
    return faults;
  }
  if (!(rate > 0)) return 0;
  if (rate >= 1) {
    for (int64_t i = 0; i < n; ++i) Corrupt(cfg, y, i, state, range);
    return n;
  }
  const double log1m = std::log1p(-rate);
  int64_t i = -1;
  while (true) {
    const double u = 1.0 - Uniform01(state);  // in (0, 1]
    const double gap = std::floor(std::log(u) / log1m);
    if (gap >= static_cast<double>(n - i - 1)) break;
    i += static_cast<int64_t>(gap) + 1;
    Corrupt(cfg, y, i, state, range);
    ++faults;
  }
  return faults;
}

}  // namespace onnx_ecc
