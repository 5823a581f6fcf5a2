// Exact sample check of an int8 layer, for the rerun strategy: A holds the fused layer's quantised
// output at a sample of positions (every s-th row and column of a conv, every s-th row of a Gemm /
// MatMul), Y the same positions recomputed by a strided copy of the layer, which onnxruntime fuses
// into the same integer kernel: integer arithmetic is deterministic, so per sample (first axis) A
// and Y must be equal bit for bit (no threshold, no false alarm). W and Bias, when given, are the
// layer's own int8 weights and int32 bias: each output channel's filter plus bias must sum (in
// int64) to its stored filter_sums entry, else every sample fails (this sees a corrupted stored
// weight wherever its inputs are zero or not sampled).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace onnx_ecc {

struct IntSampleCheckConfig {
  int64_t channels = 0;              // output channels C of the layer
  int64_t weight_axis = 0;           // axis of W that holds the output channels (0, or 1 of a 2-D [K, C])
  std::vector<int64_t> filter_sums;  // per output channel: sum of its int8 filter and int32 bias (empty: no W)
  std::string Validate() const;
};

// Whether the n bytes at a and b differ anywhere.
bool SampleBytesDiffer(const uint8_t* a, const uint8_t* b, int64_t n);

// The output channels whose weights (W of `rows` x `cols` values, output channels on c.weight_axis)
// plus bias (may be nullptr) do not sum to c.filter_sums.
int64_t IntFilterMismatches(const IntSampleCheckConfig& c, const int8_t* w, int64_t rows, int64_t cols,
                            const int32_t* bias);

}  // namespace onnx_ecc
