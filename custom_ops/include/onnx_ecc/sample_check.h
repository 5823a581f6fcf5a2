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

#include "onnx_ecc/parity_check.h"

#if defined(__CUDACC__)
#define ECC_SAMPLE_HD __host__ __device__
#else
#define ECC_SAMPLE_HD
#endif

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
  std::vector<float> filter_sums;       // per output channel: sum of its filter and bias (empty: no W)
  double filter_tolerance = 8;          // in units of eps32 times the sum of their magnitudes
  float Activate(float x) const;
};

// Number of pairs (a[i], f(b[i])) that disagree among n, f(b) = act(b + r) (r may be nullptr).
int64_t SampleMismatches(const SampleCheckConfig& c, const float* a, const float* b, const float* r, int64_t n);

// Output channels c in [begin, end) whose row w[c * row : (c + 1) * row] plus bias[c] (bias may be
// nullptr) does not sum to c.filter_sums[c]; a non-finite value always fails.
int64_t FilterMismatches(const SampleCheckConfig& c, const float* w, int64_t row, const float* bias, int64_t begin,
                         int64_t end);

// Whether filter row v (row values) plus bias (or none) sums to `sum` within tolerance * eps32 *
// the sum of their magnitudes, in double, in four interleaved chains (the CPU and CUDA kernels
// add in this order, so they agree bit for bit); a non-finite value fails.
ECC_SAMPLE_HD inline bool FilterRowHolds(const float* v, int64_t row, const float* bias, float sum, double tolerance) {
  double s[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= row; i += 4)
    for (int k = 0; k < 4; ++k) {
      s[k] += v[i + k];
      m[k] += fabs(static_cast<double>(v[i + k]));
    }
  for (; i < row; ++i) {
    s[0] += v[i];
    m[0] += fabs(static_cast<double>(v[i]));
  }
  double total = (s[0] + s[1]) + (s[2] + s[3]), mag = (m[0] + m[1]) + (m[2] + m[3]);
  if (bias) {
    total += *bias;
    mag += fabs(static_cast<double>(*bias));
  }
  // a finite magnitude sum means every value is finite
  return mag <= DBL_MAX && fabs(total - static_cast<double>(sum)) <= tolerance * FLT_EPSILON * mag;
}

// One pair of the sample comparison: u against v = act(b + r) (SampleCheckConfig::Activate, with
// the activation as an int of SampleActivation), failing unless equal (or both NaN) or within thr.
ECC_SAMPLE_HD inline float SampleActivate(int act, float lo, float hi, float x) {
  if (act == 1) return x > 0.f ? x : 0.f;
  if (act == 2) {  // std::min(std::max(x, lo), hi): NaN passes through
    const float t = x < lo ? lo : x;
    return hi < t ? hi : t;
  }
  if (act == 3) return x >= 0.f ? x : lo * x;
  return x;
}
ECC_SAMPLE_HD inline bool SamplePairFails(float u, float v, double thr) {
  if (u == v || (u != u && v != v)) return false;
  return !(fabs(static_cast<double>(u) - static_cast<double>(v)) <= thr);
}

}  // namespace onnx_ecc
