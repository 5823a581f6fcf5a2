// Sample check of a convolution, for the rerun strategy. A holds the layer's fused output at a
// sample of positions; Y the same positions recomputed by a strided copy of the conv, before the
// conv's residual Add and activation, followed by the copy's parity channels (P = G Y, from
// parity filters). Per sample (first axis) the check holds when act(Y + R) equals A within
// tolerance * eps32 * the largest finite |value| (a non-finite value must be matched exactly) and
// the parity channels hold (ParityCheck's rule). W and Bias, when given, are the layer's own
// filters: every output channel's sum of its filter and bias must equal its stored filter_sums
// entry within filter_tolerance * eps32 * the sum of their magnitudes (what sees a corrupted weight
// of a depthwise conv, whose parity filters would be a dense conv, wherever its inputs are zero).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/defaults.h"
#include "onnx_ecc/parity_check.h"
#include "onnx_ecc/sample_check_math.h"

namespace onnx_ecc {

struct SampleCheckConfig {
  int64_t channels = 0;                 // data channels C of the conv
  SampleActivation activation = SampleActivation::kNone;
  float act_lo = 0.f, act_hi = 0.f;     // Clip bounds, or LeakyRelu's alpha in act_lo
  double tolerance = kSampleTolerance;  // in units of eps32 times the sample's largest |value|
  bool has_parity = false;              // Y has parity channels after its data channels
  ParityCheckConfig parity;             // their code (groups = 1, channels C)
  std::string Validate() const;
  int64_t extra_channels() const { return has_parity ? parity.layout.parity * parity.layout.num_blocks() : 0; }
  std::vector<float> filter_sums;       // per output channel: sum of its filter and bias (empty: no W)
  double filter_tolerance = kFilterTolerance;  // in units of eps32 times the sum of their magnitudes
  float Activate(float x) const;
};

// Number of pairs (a[i], f(b[i])) that disagree among n, f(b) = act(b + r) (r may be nullptr).
int64_t SampleMismatches(const SampleCheckConfig& c, const float* a, const float* b, const float* r, int64_t n);

// Output channels c in [begin, end) whose row w[c * row : (c + 1) * row] plus bias[c] (bias may be
// nullptr) does not sum to c.filter_sums[c]; a non-finite value always fails.
int64_t FilterMismatches(const SampleCheckConfig& c, const float* w, int64_t row, const float* bias, int64_t begin,
                         int64_t end);

}  // namespace onnx_ecc
