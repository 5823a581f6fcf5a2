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

  std::string Validate() const;
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

// Decodes the inner positions [inner_begin, inner_end) of one outer index:
// y points at that outer index's [total_channels, inner] slab, z at its [data_channels, inner]
// slab; xmax bounds |x| of the layer input for that outer index.
void DecodeSlab(const DecodeConfig& cfg, const float* y, float* z, int64_t inner,
                int64_t inner_begin, int64_t inner_end, float xmax, DecodeCounts& counts);

// Decodes one block given as doubles: data y (b), parity p (r), generator g (r x b, row-major),
// thresholds thr (r). On success writes the repaired data into y and returns the number of
// values re-solved (>= 0); returns -1 when the block cannot be corrected (y untouched).
int DecodeBlock(double* y, const double* p, const float* g, const double* thr, int b, int r,
                bool correct);

// Largest |x| of each of `outer` equal contiguous chunks of x (or of all of x, if n is not a
// multiple of outer), non-finite values ignored.
void ChunkMaxAbs(const float* x, int64_t n, int64_t outer, int64_t chunk_begin, int64_t chunk_end,
                 float* out);

}  // namespace onnx_ecc
