// Sum check of one sample (see sum_check.h), in double precision.
#include <cfloat>
#include <cmath>
#include <limits>

#include "onnx_ecc/sum_check.h"

namespace onnx_ecc {

std::string SumCheckConfig::Validate() const {
  if (weights.empty()) return "weights must not be empty";
  if (taps < 1) return "taps must be >= 1";
  if (!(tolerance > 0)) return "tolerance must be > 0";
  return "";
}

double SumCheckRatio(const SumCheckConfig& c, const float* y_means, const float* x_means, const float* r_means) {
  double lhs = 0, scale = std::fabs(c.offset), rhs = c.offset;
  for (size_t i = 0; i < c.weights.size(); ++i) {
    const double t = c.weights[i] * static_cast<double>(y_means[i]);
    const double r = r_means ? c.weights[i] * static_cast<double>(r_means[i]) : 0.0;
    lhs += t - r;
    scale += std::fabs(t) + std::fabs(r);
  }
  for (int64_t j = 0; j < c.taps; ++j) {
    rhs += x_means[j];
    scale += std::fabs(static_cast<double>(x_means[j]));
  }
  const double syndrome = std::fabs(lhs - rhs);
  if (!std::isfinite(syndrome) || !std::isfinite(scale)) return std::numeric_limits<double>::infinity();
  return syndrome / (static_cast<double>(FLT_EPSILON) * scale + std::numeric_limits<double>::min());
}

}  // namespace onnx_ecc
