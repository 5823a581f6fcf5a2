// Parity check of a layer left untouched, for the rerun strategy: its output Y (channels on one
// axis, in blocks of `block`) against a separately computed parity P = G Y (`parity` checks per
// block). Writes nothing but a flag: a failing vector makes the model recompute through its
// decoding graph. Plain C++ over pointers and strides, shared by the CPU and CUDA wrappers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/decode.h"

namespace onnx_ecc {

struct ParityCheckConfig {
  CodeLayout layout;             // groups = 1
  std::vector<float> generator;  // per block: parity x size, row-major
  std::vector<float> gain;       // per block and check: rounding bound per unit of the block's scale
  std::vector<float> offset;     // per block and check: rounding bound independent of the values
  float tolerance = 64.f;
  std::string Validate() const;
};

// Checks n vectors: value (channel c, vector i) of Y is at y[c * ycs + i * yvs], check (k, q) of
// vector i of P at p[(k * parity + q) * pcs + i * pvs]. Counts blocks checked and blocks failing.
// A block fails when a value is not finite or |G y - p| exceeds the threshold of Decode's
// scale='output' rule; a float32 failure is rechecked in double precision, as the oracle computes.
void CheckParity(const ParityCheckConfig& cfg, const float* y, int64_t ycs, int64_t yvs, const float* p, int64_t pcs,
                 int64_t pvs, int64_t n, DecodeCounts& counts);

// The same check of one block in double precision: true when it holds.
bool ParityBlockHolds(const ParityCheckConfig& cfg, int64_t k, const float* y, int64_t ycs, const float* p,
                      int64_t pcs);

}  // namespace onnx_ecc
