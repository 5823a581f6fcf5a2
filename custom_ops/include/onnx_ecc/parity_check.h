// Parity check of a layer left untouched, for the rerun strategy: its output Y (channels on one
// axis, in blocks of `block`) against a separately computed parity P = G Y (`parity` checks per
// block). Writes nothing but a flag: a failing vector makes the model recompute through its
// decoding graph. The configuration shared by the CPU and CUDA wrappers and the CPU kernel's entry
// points; the exact test of one block, which the CUDA kernel runs too, is parity_check_math.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/decode.h"
#include "onnx_ecc/defaults.h"
#include "onnx_ecc/parity_check_math.h"

namespace onnx_ecc {

struct ParityCheckConfig {
  CodeLayout layout;             // groups = 1
  std::vector<float> generator;  // per block: parity x size, row-major
  std::vector<float> gain;       // per block and check: rounding bound per unit of the block's scale
  std::vector<float> offset;     // per block and check: rounding bound independent of the values
  float tolerance = kDefaultTolerance;
  // float32 tolerance * eps32 * gain and * offset: the fast check's threshold terms (Prepare()).
  std::vector<float> gain_f, offset_f;
  // False when a float32 threshold could overflow (a huge gain): every block is then tested exactly.
  bool fast = true;
  std::string Validate() const;
  void Prepare();
};

// Checks n vectors in the blocks [block_begin, block_end) (block_end < 0: to the last): value
// (channel c, vector i) of Y is at y[c * ycs + i * yvs], check (k, q) of vector i of P at
// p[(k * parity + q) * pcs + i * pvs]. Counts blocks checked and blocks failing. A float32 sweep
// finds the candidates; a candidate fails when ParityBlockHoldsExact says so (as the oracle
// computes). cfg needs Prepare().
void CheckParity(const ParityCheckConfig& cfg, const float* y, int64_t ycs, int64_t yvs, const float* p, int64_t pcs,
                 int64_t pvs, int64_t n, DecodeCounts& counts, int64_t block_begin = 0, int64_t block_end = -1);

// ParityBlockHoldsExact of block k of cfg.
bool ParityBlockHolds(const ParityCheckConfig& cfg, int64_t k, const float* y, int64_t ycs, const float* p,
                      int64_t pcs);

}  // namespace onnx_ecc
