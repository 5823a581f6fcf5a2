// Exact sample check of an int8 layer, for the rerun strategy: A holds the fused layer's quantised
// output (a conv's at every s-th row and column; a Gemm / MatMul's whole output), Y a strided copy
// of the layer at sampled positions (every row_stride-th row on A's axis -2 of a Gemm / MatMul),
// which onnxruntime fuses into the same integer kernel: integer arithmetic is deterministic, so
// every row of Y (its last axis) must equal its row of A bit for bit (no threshold, no false alarm). W and Bias, when given, are the
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
  int64_t row_stride = 1;            // Y's rows are A's rows 0, row_stride, ... on axis -2
  std::vector<int64_t> filter_sums;  // per output channel: sum of its int8 filter and int32 bias (empty: no W)
  std::string Validate() const;
};

// Rows of Y ([outer, y_rows, row] bytes) that differ from their row of A ([outer, a_rows, row]):
// Y's row i against A's row i * stride of the same outer index.
int64_t SampleRowMismatches(const uint8_t* a, const uint8_t* y, int64_t outer, int64_t a_rows, int64_t y_rows,
                            int64_t row, int64_t stride);

// The output channels in [begin, end) whose weights (W of `rows` x `cols` values, output channels on
// c.weight_axis) plus bias (may be nullptr) do not sum to c.filter_sums.
int64_t IntFilterMismatches(const IntSampleCheckConfig& c, const int8_t* w, int64_t rows, int64_t cols,
                            const int32_t* bias, int64_t begin, int64_t end);

}  // namespace onnx_ecc
