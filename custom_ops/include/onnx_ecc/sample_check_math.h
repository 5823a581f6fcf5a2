// SampleCheck's maths per element and filter, written once for the CPU kernel (sample_check.cc,
// whose vectorised sweep finds the samples that may fail) and the CUDA kernels
// (custom_ops/cuda/device_math.cuh): the activation, the pair rule and its threshold, and the
// filter sums. Its parity channels are tested with parity_check_math.h.
#pragma once

#include <cstdint>

#include "onnx_ecc/hd.h"

namespace onnx_ecc {

enum class SampleActivation { kNone, kRelu, kClip, kLeakyRelu };  // SampleActivate's act, as an int

// Whether filter row v (row values) plus bias (or none) sums to `sum` within tolerance * eps32 *
// the sum of their magnitudes, in double, in four interleaved chains (the CPU and CUDA kernels
// add in this order, so they agree bit for bit); a non-finite value fails.
ECC_HD inline bool FilterRowHolds(const float* v, int64_t row, const float* bias, float sum, double tolerance) {
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
ECC_HD inline float SampleActivate(int act, float lo, float hi, float x) {
  if (act == 1) return x > 0.f ? x : 0.f;
  if (act == 2) {  // std::min(std::max(x, lo), hi): NaN passes through
    const float t = x < lo ? lo : x;
    return hi < t ? hi : t;
  }
  if (act == 3) return x >= 0.f ? x : lo * x;
  return x;
}
ECC_HD inline bool SamplePairFails(float u, float v, double thr) {
  if (u == v || (u != u && v != v)) return false;
  return !(fabs(static_cast<double>(u) - static_cast<double>(v)) <= thr);
}

// The pair rule's threshold of a sample: tolerance * eps32 * its largest finite |value|.
ECC_HD inline double SampleThreshold(double tolerance, float scale) {
  return DMul(DMul(tolerance, kEps32), static_cast<double>(scale));
}

}  // namespace onnx_ecc
