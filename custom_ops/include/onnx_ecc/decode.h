// Decoding of the real-number code over a protected layer's output channels.
// Plain C++ over pointers and sizes: no onnxruntime types, so CPU and CUDA wrappers share it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
};

struct DecodeConfig {
  CodeLayout layout;
  std::vector<float> generator;  // per block: parity x size, row-major
  std::vector<float> gain;       // per group, block, check
  std::vector<float> offset;     // per group, block, check
  float tolerance = 64.f;
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

struct DecodeCounts {
  int64_t vectors = 0;           // code blocks checked (block x output vector)
  int64_t flagged = 0;           // blocks whose checks failed (or held non-finite values)
  int64_t corrected_blocks = 0;  // flagged blocks repaired
  int64_t corrected_values = 0;  // values re-solved in repaired blocks
  int64_t uncorrectable = 0;     // flagged blocks left as they were
  void Add(const DecodeCounts& o) {
    vectors += o.vectors; flagged += o.flagged; corrected_blocks += o.corrected_blocks;
    corrected_values += o.corrected_values; uncorrectable += o.uncorrectable;
  }
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
};

// Checks, corrects and writes n output vectors, in the code blocks [block_begin, block_end) of the
// flattened (group, block) index (block_end < 0: to the last). cfg needs PrepareThresholds().
void DecodeVectors(const DecodeConfig& cfg, const VectorView& view, int64_t n, DecodeCounts& counts,
                   int64_t block_begin = 0, int64_t block_end = -1);

// Noise model of one block's checks: threshold_q = tol_eps * (gain[q] * scale + offset[q]), where
// scale is xscale, or (xscale < 0) the largest finite |value| among the values trusted.
struct BlockNoise {
  const float* gain;
  const float* offset;
  double tol_eps;
  double xscale;
};

// Decodes one block given as doubles: data y (b), parity p (r), generator g (r x b, row-major).
// Returns 0 when the checks hold, the number of values re-solved (> 0) after a repair written into
// y, or -1 when the block cannot be corrected (y untouched).
int DecodeBlock(double* y, const double* p, const float* g, const BlockNoise& noise, int b, int r,
                bool correct);

// Largest |x| of each of `outer` equal contiguous chunks of x (or of all of x, if n is not a
// multiple of outer), non-finite values ignored.
void ChunkMaxAbs(const float* x, int64_t n, int64_t outer, int64_t chunk_begin, int64_t chunk_end,
                 float* out);

}  // namespace onnx_ecc
