// Sum check of a convolution, for the rerun strategy: per sample, a weighted sum over output
// channels of the spatial means of Y must equal the spatial means of the projected input taps
// (the same weighted sum of the filters, applied to X) plus the weighted bias. A mismatch raises
// a flag that makes the model recompute through its decoding graph.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/defaults.h"

namespace onnx_ecc {

struct SumCheckConfig {
  std::vector<double> weights;  // a_c, one per output channel of the checked layer
  int64_t taps = 0;             // leading channels of X that hold the projected filter taps
  double offset = 0;            // sum_c a_c * bias_c
  double tolerance = kDefaultTolerance;  // threshold = tolerance * eps32 * (sum of |terms|)
  std::string Validate() const;
};

// |syndrome| / (eps32 * sum of |terms|) of one sample (infinity when a value is not finite).
// r_means (or nullptr): means of a residual added to the layer's output before Y was pooled.
double SumCheckRatio(const SumCheckConfig& c, const float* y_means, const float* x_means, const float* r_means);

}  // namespace onnx_ecc
