// IntSampleCheck's per-item maths, written once for the CPU kernel (src/int_sample_check.cc, whose
// memcmp and psadbw loops do the same over many values at a time) and the CUDA kernels
// (custom_ops/cuda/device_math.cuh): ECC_HD (hd.h). Exact integer comparisons, no threshold.
#pragma once

#include <cstdint>

#include "onnx_ecc/hd.h"

namespace onnx_ecc {

// Whether row i of Y ([outer, y_rows, row] bytes) differs from its row of A ([outer, a_rows, row]):
// Y's row i against A's row (i % y_rows) * stride of the same outer index (i / y_rows).
ECC_HD inline bool IntSampleRowDiffers(const uint8_t* a, const uint8_t* y, int64_t a_rows, int64_t y_rows, int64_t row,
                                       int64_t stride, int64_t i) {
  const uint8_t* yr = y + i * row;
  const uint8_t* ar = a + ((i / y_rows) * a_rows + (i % y_rows) * stride) * row;
  unsigned diff = 0;
  for (int64_t j = 0; j < row; ++j) diff |= static_cast<unsigned>(yr[j] ^ ar[j]);
  return diff != 0;
}

// Sum (int64, exact) of output channel ch's int8 weights: W [rows, cols] with the output channels
// on axis 0 (one row each) or, by_columns, on axis 1 of a 2-D [K, C] (one column each).
ECC_HD inline int64_t IntFilterSum(const int8_t* w, int64_t rows, int64_t cols, bool by_columns, int64_t ch) {
  int64_t s = 0;
  if (by_columns) {
    for (int64_t k = 0; k < rows; ++k) s += w[k * cols + ch];
  } else {
    for (int64_t j = 0; j < cols; ++j) s += w[ch * cols + j];
  }
  return s;
}

// Whether a channel's weight sum plus its bias (bias: null without one) equals its stored filter sum.
ECC_HD inline bool IntFilterHolds(int64_t weight_sum, const int32_t* bias, int64_t ch, int64_t stored) {
  return weight_sum + (bias ? bias[ch] : 0) == stored;
}

}  // namespace onnx_ecc
