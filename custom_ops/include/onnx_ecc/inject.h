// Seeded fault injection into a float tensor, for campaigns: the same (seed, site) always
// gives the same faults, so one model file serves every trial.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace onnx_ecc {

enum class FaultKind { kBitFlip, kRandom, kZero };

struct InjectConfig {
  FaultKind kind = FaultKind::kBitFlip;
  std::vector<int64_t> bits;  // candidate bit positions for bit flips
  int64_t count = 0;          // > 0: exactly this many faults per run
  int64_t site = 0;

  std::string Validate() const;
};

// splitmix64: the generator behind every draw (mirrored in onnx_ecc.faults for the records).
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Copies x into y (n values) and corrupts elements of y; returns the number of faults.
int64_t InjectFaults(const InjectConfig& cfg, const float* x, float* y, int64_t n, uint64_t seed, double rate);

}  // namespace onnx_ecc
