// The configurations of the CUDA kernels: small POD structs with raw pointers, no CUDA or
// onnxruntime types, shared by kernels.cu, its onnxruntime wrapper and the host emulation.
#pragma once

#include <cstdint>

#include "onnx_ecc/defaults.h"
#include "onnx_ecc/depthwise_math.h"
#include "onnx_ecc/inject_math.h"
#include "onnx_ecc/int_decode_math.h"

namespace onnx_ecc {
namespace cuda {

enum TotalIndex { kFlagged = 0, kCorrectedBlocks = 1, kCorrectedValues = 2, kUncorrectable = 3, kNumTotals = 4 };

struct DecodeParams {
  int64_t outer = 0, inner = 0;                  // Y is [outer, total_channels, inner]
  int64_t groups = 1, data_per_group = 0, parity_per_group = 0, total_channels = 0, data_channels = 0;
  int64_t num_blocks = 0, block = 0, parity = 0;  // blocks of a group: all `block` wide but the last
  float tolerance = kDefaultTolerance;
  int correct = 1, relu = 0;
  // Threshold scale: 1 = the largest finite |value| among the block's data and parity values of
  // that vector (per hypothesis in the exact step: of the values it trusts), 0 = max|X| per
  // outer index (xmax).
  int scale_output = 1;
  const float* generator = nullptr;  // device: per block of a group, parity x size, row-major
  const float* gain = nullptr;       // device: per group, block, check
  const float* offset = nullptr;     // device: per group, block, check
  // Known erasures (erasures.h: ErasureSet), or null when none: per flattened (group, block) their
  // count, and kMaxParity slots of positions (data j, check b + q); such blocks go to the exact
  // step in every vector.
  const int* er_count = nullptr;
  const int* er_pos = nullptr;
  // Learning marks, or null: [0, total_channels) channels located wrong, [total_channels, 2 *
  // total_channels) known erasures that read wrong, set to 1 by the exact step.
  unsigned int* marks = nullptr;
};

// Number of (outer, inner, group, block) code vectors: the capacity the flag list needs.
inline int64_t DecodeVectors(const DecodeParams& p) { return p.outer * p.inner * p.groups * p.num_blocks; }

struct DepthwiseParams : DepthwiseShape {  // kh, kw, strides, pads, dilations
  int64_t n = 0, channels = 0, h = 0, w = 0, hout = 0, wout = 0;
  float tolerance = kDefaultTolerance;
  int correct = 1, relu = 0;
  const float* weights = nullptr;       // device [C, kh, kw], the verified reference copy
  const float* bias = nullptr;          // device [C]
  const double* weight_sums = nullptr;  // device [C]
};

struct ParityCheckParams {
  int64_t outer = 0, inner = 0;                  // Y is [outer, data_channels, inner]
  int64_t y_row_stride = 1;                      // inner == 1: rows of Y between checked vectors
  int64_t data_channels = 0, num_blocks = 0, block = 0, parity = 0;  // P is [outer, num_blocks * parity, inner]
  float tolerance = kDefaultTolerance;
  const float* generator = nullptr;  // device: per block, parity x size, row-major
  const float* gain = nullptr;       // device: per block and check
  const float* offset = nullptr;     // device: per block and check
};

struct SampleCheckParams {
  int64_t samples = 0, channels = 0, extra = 0, hw = 1;  // A [samples, channels, hw], Y [samples, channels + extra, hw]
  int64_t row = 0;                                       // values per filter of W (0: no W)
  int act = 0;                                           // SampleActivation as an int
  float act_lo = 0.f, act_hi = 0.f;
  double tolerance = kSampleTolerance;
  int64_t num_blocks = 0, block = 0, parity = 0;         // Y's parity code (parity 0: none)
  float parity_tolerance = kDefaultTolerance;
  float filter_tolerance = kFilterTolerance;
  const float* generator = nullptr;    // device: per block, parity x size, row-major
  const float* gain = nullptr;         // device: per block and check
  const float* offset = nullptr;       // device: per block and check
  const float* filter_sums = nullptr;  // device [channels]
};

// IntDecode (requantise: uint8 out, channels last, inner 1) and Int32Decode (int32 out): Y is
// [outer, code.channels, inner], Z [outer, code.data_channels, inner]; code's pointers are device
// copies (code.bias the one the bias check repairs).
struct IntDecodeParams {
  IntCode code;
  int64_t outer = 0, inner = 1, channels = 0;  // channels: data and digit columns of Y
  int requantise = 1;
};

// Item counts: code blocks of Y (IntDecode / Int32Decode).
inline int64_t IntDecodeVectors(const IntDecodeParams& p) { return p.outer * p.inner * p.code.blocks(); }

// IntSampleCheck: A [outer, a_rows, row], Y [outer, y_rows, row] bytes; W [w_rows, w_cols] int8 with
// the output channels on axis 0 (by_columns 0) or 1; filter_sums device [channels].
struct IntSampleParams {
  int64_t outer = 0, a_rows = 0, y_rows = 0, row = 0, stride = 1;
  int64_t channels = 0, w_rows = 0, w_cols = 0;
  int by_columns = 0;
  const int64_t* filter_sums = nullptr;
};

using onnx_ecc::Im2ColShape;
using onnx_ecc::InjectParams;
using onnx_ecc::kMaxInjectBits;

}  // namespace cuda
}  // namespace onnx_ecc
