// Sample check of a convolution, for the rerun strategy. A holds the layer's fused output at a
// sample of positions; Y the same positions recomputed by a strided copy of the conv, before the
// conv's residual Add and activation, followed by the copy's parity channels (P = G Y, from
// parity filters) or, for a depthwise conv, with a second copy on doubled filters in D. Per
// sample (first axis) the check holds when act(Y + R) equals A within tolerance * eps32 * the
// largest finite |value| (a non-finite value must be matched exactly), the parity channels hold
// (ParityCheck's rule) and D equals 2 Y by the same rule as A.
#pragma once

#include <cstdint>
#include <string>

#include "onnx_ecc/parity_check.h"

namespace onnx_ecc {

enum class SampleActivation { kNone, kRelu, kClip, kLeakyRelu };

struct SampleCheckConfig {
  int64_t channels = 0;                 // data channels C of the conv
  SampleActivation activation = SampleActivation::kNone;
  float act_lo = 0.f, act_hi = 0.f;     // Clip bounds, or LeakyRelu's alpha in act_lo
  double tolerance = 16;                // in units of eps32 times the sample's largest |value|
  bool has_parity = false;              // Y has parity channels after its data channels
  ParityCheckConfig parity;             // their code (groups = 1, channels C)
  std::string Validate() const;
  int64_t extra_channels() const { return has_parity ? parity.layout.parity * parity.layout.num_blocks() : 0; }
  float Activate(float x) const;
};

// Number of pairs (a[i], f(b[i])) that disagree among n, f(b) = act(b + r) (r may be nullptr)
// or, with doubled, 2 b (then a is the doubled copy and no activation applies).
int64_t SampleMismatches(const SampleCheckConfig& c, const float* a, const float* b, const float* r, int64_t n,
                         bool doubled);

}  // namespace onnx_ecc
