// Seeded fault injection into a float tensor, for campaigns: the same (seed, site) always gives
// the same faults, so one model file serves every trial. The per-element maths, written once for
// the CPU kernel (inject_fault.cc) and the CUDA kernel (custom_ops/cuda/kernels.cu).
#pragma once

#include <cmath>
#include <cstdint>

#include "onnx_ecc/hd.h"

namespace onnx_ecc {

constexpr int kMaxInjectBits = 256;

struct InjectParams {
  int kind = 0;  // 0 bit flip, 1 random, 2 zero (FaultKind's order)
  int nbits = 0;
  unsigned char bits[kMaxInjectBits] = {};
  int64_t count = 0;
  int64_t site = 0;
};

// The generator's state of a run: the seed mixed with the injection site.
ECC_HD inline uint64_t InjectStartState(uint64_t seed, int64_t site) {
  return seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(site + 1));
}

ECC_HD inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;
// splitmix64: the generator behind every draw (mirrored in onnx_ecc.faults for the records).
ECC_HD inline uint64_t SplitMix(uint64_t& state) { return Mix(state += kGamma); }
ECC_HD inline double Uniform(uint64_t draw) { return (draw >> 11) * (1.0 / 9007199254740992.0); }

// A random value's range: the largest finite |x| (1 when there is none).
ECC_HD inline float RangeOf(const float* range_ws) {
  const float r = *range_ws;
  return r == 0.f ? 1.f : r;
}

// One fault at y[i]: a bit flip and a random value consume one draw, zero none.
ECC_HD inline void Corrupt(const InjectParams& p, float* y, int64_t i, uint64_t& state, float range) {
  if (p.kind == 0) {
    const unsigned int bit = p.bits[SplitMix(state) % static_cast<uint64_t>(p.nbits)];
    y[i] = BitsFloat(FloatBits(y[i]) ^ (1u << bit));
  } else if (p.kind == 1) {
    y[i] = static_cast<float>((2.0 * Uniform(SplitMix(state)) - 1.0) * range);
  } else {
    y[i] = 0.f;
  }
}

// The sequential modes (exact count, or geometric gaps for 0 < rate < 1): one thread.
ECC_HD inline int64_t InjectSequential(const InjectParams& p, float* y, int64_t n, uint64_t state, double rate,
                                       const float* range_ws) {
  const float range = p.kind == 1 ? RangeOf(range_ws) : 0.f;
  int64_t faults = 0;
  if (p.count > 0) {
    for (int64_t k = 0; k < p.count; ++k) {
      const int64_t i = static_cast<int64_t>(SplitMix(state) % static_cast<uint64_t>(n));
      Corrupt(p, y, i, state, range);
      ++faults;
    }
    return faults;
  }
  const double log1m = log1p(-rate);
  int64_t i = -1;
  while (true) {
    const double u = 1.0 - Uniform(SplitMix(state));  // in (0, 1]
    const double gap = floor(log(u) / log1m);
    if (gap >= static_cast<double>(n - i - 1)) break;
    i += static_cast<int64_t>(gap) + 1;
    Corrupt(p, y, i, state, range);
    ++faults;
  }
  return faults;
}

// rate >= 1: element i is corrupted with the state after i draws (one draw per element for
// bit flips and random values), which splitmix64 gives directly: state0 + (i + 1) * gamma.
ECC_HD inline void InjectAllOne(const InjectParams& p, float* y, int64_t i, uint64_t state0, const float* range_ws) {
  uint64_t state = state0 + static_cast<uint64_t>(i) * (p.kind == 2 ? 0 : kGamma);
  Corrupt(p, y, i, state, p.kind == 1 ? RangeOf(range_ws) : 0.f);
}

// One run in host loops, in the order of the CUDA launches (LaunchInject): the CPU kernel, and
// the emulation of those launches. Corrupts y (n values, already a copy of x, whose largest finite
// |value| is a random value's range) and returns the number of faults.
inline int64_t InjectOnHost(const InjectParams& p, const float* x, float* y, int64_t n, uint64_t seed, double rate) {
  if (n == 0 || !(p.count > 0 || rate > 0)) return 0;
  const uint64_t state = InjectStartState(seed, p.site);
  float range = 0.f;
  if (p.kind == 1)
    for (int64_t i = 0; i < n; ++i) range = MaxFinite(range, x[i]);
  if (p.count == 0 && rate >= 1) {
    for (int64_t i = 0; i < n; ++i) InjectAllOne(p, y, i, state, &range);
    return n;
  }
  return InjectSequential(p, y, n, state, rate, &range);
}

}  // namespace onnx_ecc
