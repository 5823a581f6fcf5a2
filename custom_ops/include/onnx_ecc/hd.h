// What the per-op maths headers (decode_math.h, depthwise_math.h, parity_check.h, sample_check.h,
// inject_math.h) share: the one macro that makes a function __host__ __device__ under nvcc (plain
// C++ for the host compiler), and the float primitives both builds must round alike.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ECC_HD __host__ __device__
#else
#define ECC_HD
#endif

namespace onnx_ecc {

#if !defined(__CUDACC__)
using std::isfinite;  // the host compiler's; nvcc's device one is global
#endif

constexpr double kEps32 = FLT_EPSILON;

ECC_HD inline bool Finite(double v) { return isfinite(v); }

// Arithmetic that nvcc may not contract into FMAs, so that the device rounds every product and
// sum as the CPU build does (x86-64-v2, -ffp-contract=off): the checks then agree bit for bit.
// Plain operators on the host. FloatBits and BitsFloat reinterpret a float's bits.
#if defined(__CUDA_ARCH__)
ECC_HD inline float FMul(float a, float b) { return __fmul_rn(a, b); }
ECC_HD inline float FAdd(float a, float b) { return __fadd_rn(a, b); }
ECC_HD inline double DMul(double a, double b) { return __dmul_rn(a, b); }
ECC_HD inline double DAdd(double a, double b) { return __dadd_rn(a, b); }
ECC_HD inline double DSub(double a, double b) { return __dsub_rn(a, b); }
ECC_HD inline uint32_t FloatBits(float f) { return __float_as_uint(f); }
ECC_HD inline float BitsFloat(uint32_t u) { return __uint_as_float(u); }
#else
ECC_HD inline float FMul(float a, float b) { return a * b; }
ECC_HD inline float FAdd(float a, float b) { return a + b; }
ECC_HD inline double DMul(double a, double b) { return a * b; }
ECC_HD inline double DAdd(double a, double b) { return a + b; }
ECC_HD inline double DSub(double a, double b) { return a - b; }
ECC_HD inline uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
ECC_HD inline float BitsFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
#endif

// max(m, |x|) over finite x (m >= 0): a non-finite value counts as 0, so never raises a scale.
// Written as a select and a max so that the CPU sweeps compile it without branches.
ECC_HD inline float MaxFinite(float m, float x) {
  float a = fabsf(x);
  a = a <= FLT_MAX ? a : 0.f;
  return a > m ? a : m;
}

}  // namespace onnx_ecc
