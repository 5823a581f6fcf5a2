// Check and repair of a depthwise convolution by per-row spatial sums.
// For output row h of channel c: sum_w y[h, w] must equal b * W_out plus the filter applied to
// the row sums of the input windows, which strided prefix sums give in one pass over x.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/decode.h"
#include "onnx_ecc/defaults.h"
#include "onnx_ecc/depthwise_math.h"

namespace onnx_ecc {

struct DepthwiseConfig : DepthwiseShape {  // kh, kw, strides, pads, dilations; OutH, OutW
  int64_t channels = 0;
  std::vector<float> weights;      // [C, kh, kw] verified reference copy
  std::vector<float> bias;         // [C]
  std::vector<double> weight_sums; // per channel: sum of weights and bias
  float tolerance = kDefaultTolerance;
  bool correct = true;
  bool relu = false;

  std::string Validate() const;
  // True when channel c's reference weights still match their checksum.
  bool ChannelVerified(int64_t c) const {
    return DepthwiseChannelVerified(weights.data() + c * kh * kw, kh * kw, bias[c], weight_sums[c]);
  }
};

// Planes per thread-pool work item for `planes` planes of H x W: about 16K values per item, at
// least 64 items when there are enough planes, and a multiple of 16 where DepthwiseCheckPlanes
// checks small planes eight or sixteen at once.
int64_t DepthwisePlanesPerItem(const DepthwiseConfig& cfg, int64_t h, int64_t w, int64_t planes);

// Checks (and repairs) planes [p0, p1) of an [N, C, H, W] input x, output y and result z (plane p:
// sample p / C, channel p % C); verified[c]: whether channel c's reference weights verify.
void DepthwiseCheckPlanes(const DepthwiseConfig& cfg, int64_t p0, int64_t p1, const float* x, int64_t h, int64_t w,
                          const float* y, float* z, const char* verified, DecodeCounts& counts);

// Checks (and repairs) channel c of one sample: x is [H, W], y and z are [H_out, W_out].
void DepthwiseCheckChannel(const DepthwiseConfig& cfg, int64_t c, const float* x, int64_t h, int64_t w,
                           const float* y, float* z, bool verified, DecodeCounts& counts);

}  // namespace onnx_ecc
