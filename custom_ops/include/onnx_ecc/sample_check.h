// Sample check of a layer, for the rerun strategy: A holds the layer's outputs at a sample of
// positions (taken from its fused output), B the same positions recomputed by a strided copy of
// the layer. Per sample n (first axis) they must agree within tolerance * eps32 * the largest
// finite |value| of the sample; a value that is not finite must be matched exactly (NaN by NaN).
#pragma once

#include <cstdint>
#include <string>

namespace onnx_ecc {

struct SampleCheckConfig {
  double tolerance = 1;  // in units of eps32 times the sample's largest |value|
  std::string Validate() const;
};

// Number of disagreeing values among n pairs (a[i], b[i]).
int64_t SampleMismatches(const SampleCheckConfig& c, const float* a, const float* b, int64_t n);

}  // namespace onnx_ecc
