// Seeded fault injection into a float tensor, for campaigns: the same (seed, site) always
// gives the same faults, so one model file serves every trial.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/inject_math.h"

namespace onnx_ecc {

enum class FaultKind { kBitFlip, kRandom, kZero };
static_assert(static_cast<int>(FaultKind::kBitFlip) == 0 && static_cast<int>(FaultKind::kRandom) == 1 &&
                  static_cast<int>(FaultKind::kZero) == 2,
              "InjectParams::kind follows FaultKind");

struct InjectConfig {
  FaultKind kind = FaultKind::kBitFlip;
  std::vector<int64_t> bits;  // candidate bit positions for bit flips
  int64_t count = 0;          // > 0: exactly this many faults per run
  int64_t site = 0;

  std::string Validate() const;
  InjectParams Params() const;  // the kernels' form (inject_math.h); after Validate
};

// Copies x into y (n values) and corrupts elements of y; returns the number of faults.
int64_t InjectFaults(const InjectConfig& cfg, const float* x, float* y, int64_t n, uint64_t seed, double rate);

}  // namespace onnx_ecc
