// DepthwiseCheck's maths per channel and row, written once for the CPU kernel
// (depthwise_check.cc, whose sweeps form the window and row sums of many rows and planes at a
// time) and the CUDA kernels (custom_ops/cuda/device_math.cuh): the conv's geometry, the check of
// the reference weights, the row test and the recomputation of a wrong row.
#pragma once

#include <cstdint>

#include "onnx_ecc/hd.h"

namespace onnx_ecc {

// The filter size and the conv's strides, pads (top, left, bottom, right) and dilations.
struct DepthwiseShape {
  int64_t kh = 0, kw = 0;
  int64_t stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0, dil_h = 1, dil_w = 1;
  ECC_HD int64_t OutH(int64_t h) const { return (h + pad_t + pad_b - dil_h * (kh - 1) - 1) / stride_h + 1; }
  ECC_HD int64_t OutW(int64_t w) const { return (w + pad_l + pad_r - dil_w * (kw - 1) - 1) / stride_w + 1; }
};

// Whether a channel's reference weights wt[0 .. taps) and bias still sum to its checksum.
ECC_HD inline bool DepthwiseChannelVerified(const float* wt, int64_t taps, float bias, double sum) {
  double s = bias;
  for (int64_t k = 0; k < taps; ++k) s = DAdd(s, static_cast<double>(wt[k]));
  const double scale = DAdd(fabs(sum), 1e-30);
  return Finite(s) && fabs(DSub(s, sum)) <= DAdd(DMul(1e-6, scale), 1e-30);
}

// The row test's threshold per unit of the row's bound: tolerance * eps32, a float product.
ECC_HD inline double DepthwiseTolEps(float tolerance) { return static_cast<double>(FMul(tolerance, FLT_EPSILON)); }

// Whether an output row's sum matches the filter applied to its input windows' sums (expected),
// within tolerance * eps32 * bound (the same sums of magnitudes).
ECC_HD inline bool DepthwiseRowHolds(double actual, double expected, double bound, float tolerance) {
  return fabs(DSub(actual, expected)) <= DMul(DepthwiseTolEps(tolerance), bound);
}

// Recomputes output row oh (wout values into zrow) of one channel in double precision from its
// reference weights wt [kh, kw] and bias; x is the channel's [h, w] input. Relu keeps NaN.
ECC_HD inline void DepthwiseRecomputeRow(const DepthwiseShape& s, const float* wt, float bias, const float* x,
                                         int64_t h, int64_t w, int64_t oh, int64_t wout, bool relu, float* zrow) {
  for (int64_t ow = 0; ow < wout; ++ow) {
    double acc = bias;
    for (int64_t i = 0; i < s.kh; ++i) {
      const int64_t ih = oh * s.stride_h - s.pad_t + i * s.dil_h;
      if (ih < 0 || ih >= h) continue;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t iw = ow * s.stride_w - s.pad_l + j * s.dil_w;
        if (iw < 0 || iw >= w) continue;
        acc = DAdd(acc, DMul(static_cast<double>(wt[i * s.kw + j]), static_cast<double>(x[ih * w + iw])));
      }
    }
    const float v = static_cast<float>(acc);
    zrow[ow] = relu && v < 0.f ? 0.f : v;
  }
}

}  // namespace onnx_ecc
