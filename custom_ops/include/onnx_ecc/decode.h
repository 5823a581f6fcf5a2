// Decoding of the real-number code over a protected layer's output channels: the layout and
// configuration the CPU and CUDA wrappers share, and the CPU kernel's entry points. The maths per
// code vector is decode_math.h, shared with the CUDA kernels.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/decode_math.h"
#include "onnx_ecc/defaults.h"

namespace onnx_ecc {

// How data and parity channels sit along the channel axis (mirror of onnx_ecc.codes.Layout).
struct CodeLayout {
  int64_t data_channels = 0, groups = 1, block = 0, parity = 0;
  int64_t data_per_group = 0, parity_per_group = 0, total_channels = 0;
  std::vector<int64_t> block_sizes;    // per block within one group
  std::vector<int64_t> block_starts;   // first data channel of each block within its group
  std::vector<int64_t> gen_offsets;    // offset of each block's generator in the attribute

  // Fills the derived fields; returns an error message, or "" when consistent.
  std::string Init(int64_t data_channels, int64_t groups, int64_t block, int64_t parity);
  int64_t num_blocks() const { return static_cast<int64_t>(block_sizes.size()); }
  // The channel of Y (data and parity, per group) of position pos (data j < b, check b + q) of
  // flattened block gk = group * num_blocks() + block.
  int64_t Channel(int64_t gk, int pos) const {
    const int64_t g = gk / num_blocks(), k = gk % num_blocks(), b = block_sizes[k];
    const int64_t base = g * (data_per_group + parity_per_group);
    return pos < b ? base + block_starts[k] + pos : base + data_per_group + k * parity + (pos - b);
  }
};

// One run's known erasures and the learner's marks (erasures.h), as the sweeps read them: blocks
// with known erasures skip the fast check and go to the exact step in every vector.
struct RunErasures {
  const int* count = nullptr;  // per flattened (group, block): known erasures; null when none anywhere
  const int* pos = nullptr;    // per block, kMaxParity slots: their positions, sorted
  std::atomic<int64_t>* located = nullptr;   // per channel: the last run that located it wrong
  std::atomic<int64_t>* disagree = nullptr;  // per channel: the last run in which it read wrong as a known erasure
  int64_t run = 0;
};

struct DecodeConfig {
  CodeLayout layout;
  std::vector<float> generator;  // per block: parity x size, row-major
  std::vector<float> gain;       // per group, block, check
  std::vector<float> offset;     // per group, block, check
  float tolerance = kDefaultTolerance;
  bool correct = true;
  bool relu = false;
  // Threshold scale: true = the largest |value| of the block in that output vector (taken in the
  // same sweep as the checks), false = max|X| of the layer input per outer index.
  bool scale_output = true;
  // float32 tolerance * eps32 * gain and * offset, the fast check's threshold terms
  // (PrepareThresholds fills them from gain, offset and tolerance).
  std::vector<float> gain_f, offset_f;

  std::string Validate() const;
  void PrepareThresholds();
};

// A run of output vectors laid out with strides: value (channel c, vector i) of Y is at
// y[c * y_channel_stride + i * y_vector_stride]; Z and the residual R share the z strides.
// NCHW tensors: channel stride = H*W, vector stride = 1; [rows, C] tensors: 1 and C.
struct VectorView {
  const float* y;
  const float* residual;  // or nullptr; added to the decoded data before the activation
  float* z;
  int64_t y_channel_stride, y_vector_stride, z_channel_stride, z_vector_stride;
  const float* xmax;      // scale='input': max|X| for vector i at xmax[i * xmax_stride]
  int64_t xmax_stride;
  const RunErasures* erasures = nullptr;  // known erasures and learning marks, or null
};

// Checks, corrects and writes n output vectors, in the code blocks [block_begin, block_end) of the
// flattened (group, block) index (block_end < 0: to the last). cfg needs PrepareThresholds().
void DecodeVectors(const DecodeConfig& cfg, const VectorView& view, int64_t n, DecodeCounts& counts,
                   int64_t block_begin = 0, int64_t block_end = -1);

// Largest |x| of each of `outer` equal contiguous chunks of x (or of all of x, if n is not a
// multiple of outer), non-finite values ignored.
void ChunkMaxAbs(const float* x, int64_t n, int64_t outer, int64_t chunk_begin, int64_t chunk_end,
                 float* out);

}  // namespace onnx_ecc
