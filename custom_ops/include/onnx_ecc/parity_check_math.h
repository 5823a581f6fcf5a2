// ParityCheck's maths per block, written once for the CPU kernel (parity_check.cc, where a float32
// sweep picks the candidates for it) and the CUDA kernel (custom_ops/cuda/device_math.cuh, which
// tests every vector with it); SampleCheck tests its parity channels with it too.
#pragma once

#include <cstdint>

#include "onnx_ecc/hd.h"

namespace onnx_ecc {

// The exact test of one block, in double precision: data y[j * ys] (j < b), checks p[q * ps]
// (q < r), generator g (r x b, row-major), per check gain and offset. Holds when every value is
// finite and |sum_j g[q, j] y_j - p_q| <= tolerance * eps32 * (gain_q * scale + offset_q) for
// every q, scale = the largest |value| of the block (Decode's scale='output' rule). Products and
// sums are never contracted, so that the device rounds as the CPU.
ECC_HD inline bool ParityBlockHoldsExact(const float* y, int64_t ys, const float* p, int64_t ps, const float* g,
                                         int b, int r, const float* gain, const float* offset, double tolerance) {
  double scale = 0;
  for (int j = 0; j < b; ++j) {
    const double v = fabs(static_cast<double>(y[j * ys]));
    if (!(v <= DBL_MAX)) return false;
    scale = v > scale ? v : scale;
  }
  for (int q = 0; q < r; ++q) {
    const double v = fabs(static_cast<double>(p[q * ps]));
    if (!(v <= DBL_MAX)) return false;
    scale = v > scale ? v : scale;
  }
  for (int q = 0; q < r; ++q) {
    double syn = -static_cast<double>(p[q * ps]);
    for (int j = 0; j < b; ++j) syn = DAdd(syn, DMul(static_cast<double>(g[q * b + j]), static_cast<double>(y[j * ys])));
    const double bound = DMul(kEps32, DAdd(DMul(static_cast<double>(gain[q]), scale), static_cast<double>(offset[q])));
    if (!(fabs(syn) <= DMul(tolerance, bound))) return false;
  }
  return true;
}

}  // namespace onnx_ecc
