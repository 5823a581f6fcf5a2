// Parity check of a layer left untouched, for the rerun strategy: its output Y (channels on one
// axis, in blocks of `block`) against a separately computed parity P = G Y (`parity` checks per
// block). Writes nothing but a flag: a failing vector makes the model recompute through its
// decoding graph. Plain C++ over pointers and strides, shared by the CPU and CUDA wrappers: the
// exact test of one block (ParityBlockHoldsExact) compiles for the device too.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "onnx_ecc/decode.h"

#if defined(__CUDACC__)
#define ECC_PARITY_HD __host__ __device__
#else
#define ECC_PARITY_HD
#endif

namespace onnx_ecc {

struct ParityCheckConfig {
  CodeLayout layout;             // groups = 1
  std::vector<float> generator;  // per block: parity x size, row-major
  std::vector<float> gain;       // per block and check: rounding bound per unit of the block's scale
  std::vector<float> offset;     // per block and check: rounding bound independent of the values
  float tolerance = 64.f;
  // float32 tolerance * eps32 * gain and * offset: the fast check's threshold terms (Prepare()).
  std::vector<float> gain_f, offset_f;
  // False when a float32 threshold could overflow (a huge gain): every block is then tested exactly.
  bool fast = true;
  std::string Validate() const;
  void Prepare();
};

// The exact test of one block, in double precision: data y[j * ys] (j < b), checks p[q * ps]
// (q < r), generator g (r x b, row-major), per check gain and offset. Holds when every value is
// finite and |sum_j g[q, j] y_j - p_q| <= tolerance * eps32 * (gain_q * scale + offset_q) for
// every q, scale = the largest |value| of the block (Decode's scale='output' rule).
ECC_PARITY_HD inline bool ParityBlockHoldsExact(const float* y, int64_t ys, const float* p, int64_t ps, const float* g,
                                                int b, int r, const float* gain, const float* offset,
                                                double tolerance) {
  double scale = 0;
  for (int j = 0; j < b; ++j) {
    const double v = fabs(static_cast<double>(y[j * ys]));
    if (!(v <= DBL_MAX)) return false;
    scale = v > scale ? v : scale;
  }
  for (int q = 0; q < r; ++q) {
    const double v = fabs(static_cast<double>(p[q * ps]));
    if (!(v <= DBL_MAX)) return false;
    scale = v > scale ? v : scale;
  }
  for (int q = 0; q < r; ++q) {
    double syn = -static_cast<double>(p[q * ps]);
    for (int j = 0; j < b; ++j) syn += static_cast<double>(g[q * b + j]) * y[j * ys];
    const double bound = static_cast<double>(FLT_EPSILON) * (gain[q] * scale + offset[q]);
    if (!(fabs(syn) <= tolerance * bound)) return false;
  }
  return true;
}

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
