// The vectorisable inner loops of the fast checks (Decode's fast path and ParityCheck), CPU only.
//
// Each loop sweeps one code block once: it forms the block's syndromes in float32 (s_q = -p_q,
// then + G[q, j] * y_j for j in order, or in 8 interleaved lanes along a row as Decode's row path
// always did), the largest finite |value| (the threshold scale), and optionally writes the output
// (copy, Relu, + residual). The float operations and their order are those of the scalar code
// they replaced, and the library is built with -ffp-contract=off, so that every ISA clone
// (ECC_CLONES: AVX-512, AVX2 and the x86-64-v2 baseline, chosen at load time) gives the same bits.
// ParityCheck's rows of 32-value blocks also have an AVX-512-only test (Quad512, chosen at run
// time), which passes exactly the blocks RowQuad2 passes and sends the rest back to it.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "onnx_ecc/decode_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(ONNX_ECC_NO_CLONES)
#define ECC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ECC_CLONES
#endif
#if defined(__clang__)
#define ECC_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define ECC_IVDEP _Pragma("GCC ivdep")
#else
#define ECC_IVDEP
#endif
#define ECC_INLINE inline __attribute__((always_inline))

namespace onnx_ecc {
namespace sweep {

using onnx_ecc::kMaxParity;
constexpr int64_t kChunk = 256;  // positions per planar sweep: syndromes and scales stay in L1

// What a sweep writes per data value x: nothing, x, relu(x), x + r, relu(x + r).
enum Out { kNone, kCopy, kRelu, kRes, kResRelu };

using onnx_ecc::MaxFinite;  // hd.h: max(m, |x|) over finite x, branch-free

// The scale as a max of int32 keys: key(x) = bits(|x|) + 2^23, so that a finite |x| (bits below
// 0x7f800000) maps to a positive key in the order of its value and Inf or NaN to a negative one,
// which a max starting from key(0) never takes. The max of the keys is then the key of
// MaxFinite's result, exactly, in three integer operations per value (and, add, max) instead of
// MaxFinite's two compares and selects, which the compilers turn into mask shuffles.
constexpr int32_t kKeyZero = 0x00800000;  // key(0.f)
ECC_INLINE int32_t MagKey(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return static_cast<int32_t>((u & 0x7fffffffu) + 0x00800000u);
}
ECC_INLINE int32_t MaxKey(int32_t m, int32_t k) { return k > m ? k : m; }
ECC_INLINE float KeyMag(int32_t k) {  // the |value| of a key >= kKeyZero
  const uint32_t u = static_cast<uint32_t>(k) - 0x00800000u;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

template <int kOut>
ECC_INLINE void Emit(float* dst, const float* res, int64_t i, float x) {
  if constexpr (kOut == kCopy) {
    dst[i] = x;
  } else if constexpr (kOut == kRelu) {
    dst[i] = x > 0.f ? x : 0.f;
  } else if constexpr (kOut == kRes) {
    dst[i] = x + res[i];
  } else if constexpr (kOut == kResRelu) {
    const float v = x + res[i];
    dst[i] = v > 0.f ? v : 0.f;
  }
}

// Planar block (NCHW): data channel j at yd[j * ycs + i], check q at yp[q * pcs + i], output
// and residual at zd/rd[j * zcs + i], for positions i < len <= kChunk. Leaves the syndromes in
// syn[q][i] and the scale's key (MagKey) in mag[i].
template <int kOut>
ECC_INLINE void PlanarBlock(const float* yd, int64_t ycs, const float* yp, int64_t pcs, const float* rd, float* zd,
                            int64_t zcs, const float* gen, int b, int r, int64_t len, float (*syn)[kChunk],
                            int32_t* mag) {
  ECC_IVDEP
  for (int64_t i = 0; i < len; ++i) mag[i] = kKeyZero;
  for (int q = 0; q < r; ++q) {
    float* s = syn[q];
    const float* pq = yp + q * pcs;
    ECC_IVDEP
    for (int64_t i = 0; i < len; ++i) {
      s[i] = -pq[i];
      mag[i] = MaxKey(mag[i], MagKey(pq[i]));
    }
  }
  int j = 0;
  if (r == 2) {
    float* s0 = syn[0];
    float* s1 = syn[1];
    for (; j + 4 <= b; j += 4) {
      const float* x0 = yd + j * ycs;
      const float* x1 = x0 + ycs;
      const float* x2 = x1 + ycs;
      const float* x3 = x2 + ycs;
      float* d0 = zd + j * zcs;
      float* d1 = d0 + zcs;
      float* d2 = d1 + zcs;
      float* d3 = d2 + zcs;
      const float* r0 = rd ? rd + j * zcs : nullptr;
      const float* r1 = rd ? r0 + zcs : nullptr;
      const float* r2 = rd ? r1 + zcs : nullptr;
      const float* r3 = rd ? r2 + zcs : nullptr;
      const float w00 = gen[j], w01 = gen[j + 1], w02 = gen[j + 2], w03 = gen[j + 3];
      const float w10 = gen[b + j], w11 = gen[b + j + 1], w12 = gen[b + j + 2], w13 = gen[b + j + 3];
      ECC_IVDEP
      for (int64_t i = 0; i < len; ++i) {
        const float a0 = x0[i], a1 = x1[i], a2 = x2[i], a3 = x3[i];
        float t0 = s0[i];
        t0 += w00 * a0; t0 += w01 * a1; t0 += w02 * a2; t0 += w03 * a3;
        s0[i] = t0;
        float t1 = s1[i];
        t1 += w10 * a0; t1 += w11 * a1; t1 += w12 * a2; t1 += w13 * a3;
        s1[i] = t1;
        int32_t m = mag[i];
        m = MaxKey(m, MagKey(a0)); m = MaxKey(m, MagKey(a1)); m = MaxKey(m, MagKey(a2)); m = MaxKey(m, MagKey(a3));
        mag[i] = m;
        Emit<kOut>(d0, r0, i, a0);
        Emit<kOut>(d1, r1, i, a1);
        Emit<kOut>(d2, r2, i, a2);
        Emit<kOut>(d3, r3, i, a3);
      }
    }
  }
  for (; j < b; ++j) {
    const float* x = yd + j * ycs;
    float* d = zd + j * zcs;
    const float* rr = rd ? rd + j * zcs : nullptr;
    for (int q = 0; q < r; ++q) {
      const float w = gen[q * b + j];
      float* s = syn[q];
      ECC_IVDEP
      for (int64_t i = 0; i < len; ++i) s[i] += w * x[i];
    }
    ECC_IVDEP
    for (int64_t i = 0; i < len; ++i) {
      mag[i] = MaxKey(mag[i], MagKey(x[i]));
      Emit<kOut>(d, rr, i, x[i]);
    }
  }
}

// Marks bad[i] = 1 where a check of position i fails (threshold gain_f[q] * scale + offset_f[q],
// scale = KeyMag(mag[i]), or xscale when xscale >= 0); returns whether any does.
ECC_INLINE bool PlanarFailures(const float (*syn)[kChunk], const int32_t* mag, float xscale, const float* gain_f,
                               const float* offset_f, int r, int64_t len, unsigned char* bad) {
  ECC_IVDEP
  for (int64_t i = 0; i < len; ++i) bad[i] = 0;
  for (int q = 0; q < r; ++q) {
    const float g = gain_f[q], o = offset_f[q];
    const float* s = syn[q];
    if (xscale >= 0) {
      const float thr = g * xscale + o;
      ECC_IVDEP
      for (int64_t i = 0; i < len; ++i) bad[i] |= !(std::fabs(s[i]) <= thr);
    } else {
      ECC_IVDEP
      for (int64_t i = 0; i < len; ++i) bad[i] |= !(std::fabs(s[i]) <= g * KeyMag(mag[i]) + o);
    }
  }
  unsigned any = 0;
  for (int64_t i = 0; i < len; ++i) any |= bad[i];
  return any != 0;
}

// Eight floats as one value (GCC/Clang vector extension): one AVX register in the AVX2 and
// AVX-512 clones, two SSE registers in the baseline; the row sweeps use it explicitly since
// their 8 interleaved lanes are what the compilers do not vectorise well by themselves.
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));

ECC_INLINE F8 Load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
ECC_INLINE void Store8(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }
// MagKey, MaxKey and KeyMag on eight lanes.
ECC_INLINE I8 MagKeys8(F8 x) {
  typedef uint32_t U8 __attribute__((vector_size(32)));
  return reinterpret_cast<I8>((reinterpret_cast<U8>(x) & 0x7fffffffu) + 0x00800000u);
}
ECC_INLINE I8 MaxKey8(I8 m, I8 k) { return k > m ? k : m; }
ECC_INLINE F8 KeyMags8(I8 k) {
  typedef uint32_t U8 __attribute__((vector_size(32)));
  return reinterpret_cast<F8>(reinterpret_cast<U8>(k) - 0x00800000u);
}
constexpr I8 kKeyZero8 = {kKeyZero, kKeyZero, kKeyZero, kKeyZero, kKeyZero, kKeyZero, kKeyZero, kKeyZero};
// Largest lane (exact in any order): three shuffle-and-max steps.
ECC_INLINE float ReduceMax8(F8 v) {
#if defined(__clang__)
  F8 h = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = v > h ? v : h;
  h = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v = v > h ? v : h;
  h = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#else
  F8 h = __builtin_shuffle(v, I8{4, 5, 6, 7, 0, 1, 2, 3});
  v = v > h ? v : h;
  h = __builtin_shuffle(v, I8{2, 3, 0, 1, 6, 7, 4, 5});
  v = v > h ? v : h;
  h = __builtin_shuffle(v, I8{1, 0, 3, 2, 5, 4, 7, 6});
#endif
  v = v > h ? v : h;
  return v[0];
}

template <int kOut>
ECC_INLINE void Emit8(float* dst, const float* res, F8 x) {
  const F8 zero = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if constexpr (kOut == kCopy) {
    Store8(dst, x);
  } else if constexpr (kOut == kRelu) {
    Store8(dst, x > 0.f ? x : zero);
  } else if constexpr (kOut == kRes) {
    Store8(dst, x + Load8(res));
  } else if constexpr (kOut == kResRelu) {
    const F8 v = x + Load8(res);
    Store8(dst, v > 0.f ? v : zero);
  }
}

// Row block ([rows, C]): data yd[0..b), checks yp[0..r), output and residual zd/rd[0..b).
// Syndromes in 8 lanes per check (lane l sums j = l mod 8), then -p_q + lane 0 + ... + lane 7,
// then the tail. Returns whether a check fails (scale: the block's values, or xscale >= 0).
template <int kOut>
ECC_INLINE bool RowBlock(const float* yd, const float* yp, const float* rd, float* zd, const float* gen, int b, int r,
                         const float* gain_f, const float* offset_f, float xscale) {
  const F8 zero = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  I8 ml = kKeyZero8;
  float acc[kMaxParity];
  int j = 0;
  if (r == 2) {
    F8 l0 = zero, l1 = zero;
    const float* g0 = gen;
    const float* g1 = gen + b;
    for (; j + 8 <= b; j += 8) {
      const F8 a = Load8(yd + j);
      l0 += Load8(g0 + j) * a;
      l1 += Load8(g1 + j) * a;
      ml = MaxKey8(ml, MagKeys8(a));
      Emit8<kOut>(zd + j, rd ? rd + j : nullptr, a);
    }
    float c0 = -yp[0], c1 = -yp[1];
    for (int l = 0; l < 8; ++l) { c0 += l0[l]; c1 += l1[l]; }
    for (int t = j; t < b; ++t) { c0 += g0[t] * yd[t]; c1 += g1[t] * yd[t]; }
    acc[0] = c0;
    acc[1] = c1;
  } else {
    for (int q = 0; q < r; ++q) {
      F8 lanes = zero;
      const float* gq = gen + q * b;
      int t = 0;
      for (; t + 8 <= b; t += 8) lanes += Load8(gq + t) * Load8(yd + t);
      float c = -yp[q];
      for (int l = 0; l < 8; ++l) c += lanes[l];
      for (; t < b; ++t) c += gq[t] * yd[t];
      acc[q] = c;
    }
    for (; j + 8 <= b; j += 8) {
      const F8 a = Load8(yd + j);
      ml = MaxKey8(ml, MagKeys8(a));
      Emit8<kOut>(zd + j, rd ? rd + j : nullptr, a);
    }
  }
  float m = ReduceMax8(KeyMags8(ml));
  for (; j < b; ++j) {
    m = MaxFinite(m, yd[j]);
    Emit<kOut>(zd, rd, j, yd[j]);
  }
  for (int q = 0; q < r; ++q) m = MaxFinite(m, yp[q]);
  const float scale = xscale >= 0 ? xscale : m;
  bool bad = false;
  for (int q = 0; q < r; ++q) bad |= !(std::fabs(acc[q]) <= gain_f[q] * scale + offset_f[q]);
  return bad;
}

#if defined(__clang__)
#define ECC_SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define ECC_SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, I8{__VA_ARGS__})
#endif

// In-place transpose of 8 rows of 8 lanes (unpack, shuffle, 128-bit permute: 24 shuffles).
ECC_INLINE void Transpose8(F8* r) {
  F8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = ECC_SHUFFLE2(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = ECC_SHUFFLE2(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = ECC_SHUFFLE2(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = ECC_SHUFFLE2(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = ECC_SHUFFLE2(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = ECC_SHUFFLE2(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = ECC_SHUFFLE2(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = ECC_SHUFFLE2(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Four consecutive row blocks of one group at once, for parity 2 and full blocks of b = 8n:
// block m's data at yd[m * b ..], its two checks at yp[2m], 2m + 1 (the checks of consecutive
// blocks are adjacent), its generator at gen + 2 b m, thresholds gain_f/offset_f[2m + q]. The
// same float operations per block as RowBlock (lane sums -p_q + lane 0 + ... + lane 7, the scale
// as an exact max), but the eight lane sums and scales are formed as vectors after a transpose
// instead of one lane at a time. Returns the failing blocks as bits 0..3.
template <int kOut, int kB = 0>
ECC_INLINE unsigned RowQuad2(const float* yd, const float* yp, const float* rd, float* zd, const float* gen, int b_,
                             const float* gain_f, const float* offset_f, float xscale) {
  const int b = kB ? kB : b_;  // kB: the block size when known at compile time (loops unrolled)
  const F8 zero = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  F8 lanes[8];
  I8 keys[4];  // per block: its scale's key in 8 lanes
  for (int m = 0; m < 4; ++m) {
    const float* x = yd + m * b;
    const float* g0 = gen + 2 * b * m;
    const float* g1 = g0 + b;
    F8 l0 = zero, l1 = zero;
    I8 ml = kKeyZero8;
    for (int j = 0; j < b; j += 8) {
      const F8 a = Load8(x + j);
      l0 += Load8(g0 + j) * a;
      l1 += Load8(g1 + j) * a;
      ml = MaxKey8(ml, MagKeys8(a));
      Emit8<kOut>(zd + m * b + j, rd ? rd + m * b + j : nullptr, a);
    }
    lanes[2 * m] = l0;
    lanes[2 * m + 1] = l1;
    keys[m] = ml;
  }
  Transpose8(lanes);
  const F8 p = Load8(yp);
  F8 c = -p;
  for (int l = 0; l < 8; ++l) c += lanes[l];
  F8 scale;
  if (xscale >= 0) {
    scale = zero + xscale;
  } else {
    // Each block's largest key in lanes 2m and 2m + 1 (a max is exact in any order): pairs of
    // blocks interleaved and folded, then the halves, 7 shuffles instead of a transpose's 24.
    const I8 k01 = MaxKey8(ECC_SHUFFLE2(keys[0], keys[1], 0, 8, 1, 9, 4, 12, 5, 13),
                           ECC_SHUFFLE2(keys[0], keys[1], 2, 10, 3, 11, 6, 14, 7, 15));
    const I8 k23 = MaxKey8(ECC_SHUFFLE2(keys[2], keys[3], 0, 8, 1, 9, 4, 12, 5, 13),
                           ECC_SHUFFLE2(keys[2], keys[3], 2, 10, 3, 11, 6, 14, 7, 15));
    I8 k = MaxKey8(ECC_SHUFFLE2(k01, k23, 0, 1, 8, 9, 4, 5, 12, 13),
                   ECC_SHUFFLE2(k01, k23, 2, 3, 10, 11, 6, 7, 14, 15));
    k = MaxKey8(k, ECC_SHUFFLE2(k, k, 4, 5, 6, 7, 0, 1, 2, 3));  // blocks 0..3 in lanes 0..3 and 4..7
    k = ECC_SHUFFLE2(k, k, 0, 0, 1, 1, 2, 2, 3, 3);
    const I8 pk = MagKeys8(p);  // and both checks of the block
    k = MaxKey8(k, pk);
    k = MaxKey8(k, ECC_SHUFFLE2(pk, pk, 1, 0, 3, 2, 5, 4, 7, 6));
    scale = KeyMags8(k);
  }
  const F8 thr = Load8(gain_f) * scale + Load8(offset_f);
  const F8 ac = reinterpret_cast<F8>(reinterpret_cast<I8>(c) & 0x7fffffff);
  const I8 bad = ~(ac <= thr);
  unsigned mask = 0;
  for (int m = 0; m < 4; ++m) mask |= static_cast<unsigned>((bad[2 * m] | bad[2 * m + 1]) != 0) << m;
  return mask;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(ONNX_ECC_NO_CLONES)
#define ECC_ROWS512 1
// Functions compiled for AVX-512 only, called after a run-time check (Has512()).
#define ECC_AVX512 __attribute__((target("avx512f")))
#define ECC_AVX512_INLINE inline __attribute__((always_inline, target("avx512f")))

// Whether this CPU runs the AVX-512 row sweeps.
inline bool Has512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// RowQuad2's generator for blocks of 32, reordered for Quad512: per quad of blocks, per step s
// of 8 values, per pair of blocks (2h, 2h + 1) and check q, 16 floats: g_q of block 2h at values
// 8s..8s+7, then g_q of block 2h + 1 at the same values (one 512-bit load each). Copies of 8
// floats: a work item reorders its blocks' generators once, in well under a row's time.
constexpr int kQuadGenFloats = 256;
inline void PackQuadGen(const float* gen, float* out) {
  for (int s = 0; s < 4; ++s)
    for (int h = 0; h < 2; ++h)
      for (int q = 0; q < 2; ++q)
        for (int half = 0; half < 2; ++half, out += 8) std::memcpy(out, gen + 64 * (2 * h + half) + 32 * q + 8 * s, 32);
}

// Sixteen floats (one AVX-512 register) and their loads.
typedef float F16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));
ECC_AVX512_INLINE F16 Load16(const float* p) {
  F16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
ECC_AVX512_INLINE I16 Max16(I16 a, I16 b) { return a > b ? a : b; }  // MaxKey8 on 16 lanes

// RowQuad2<kNone, 32>'s float test of four row blocks in 512-bit registers: lanes 0..7 of a
// register hold block 2h's eight lane sums and lanes 8..15 block 2h + 1's, so one multiply and
// one add serve two blocks. Each lane sum takes the same products in the same order (its first
// product is not added to 0, which can only change the sign of a zero sum, and |s| is what is
// tested); the eight sums of each check are transposed with 2-source permutes and added to -p_q
// in lane order as RowQuad2 does; the scale is the same exact max, taken over |bits| and failed
// (not used) when any value is Inf or NaN. So with finite values a block passes here exactly when
// it passes RowQuad2, and a quad holding Inf or NaN fails: a quad with a failure is tested again
// by RowQuad2, whose bits decide (the caller's job). gp: the quad's PackQuadGen. Returns the
// failing blocks as bits 0..3.
ECC_AVX512_INLINE unsigned Quad512(const float* yd, const float* yp, const float* gp, const float* gain_f,
                                   const float* offset_f) {
  F16 acc[2][2];
  I16 key[2];
  for (int h = 0; h < 2; ++h) {
    const float* x = yd + 64 * h;
    const float* g = gp + 32 * h;
    for (int s = 0; s < 4; ++s, g += 64) {
      const F16 a = __builtin_shufflevector(Load8(x + 8 * s), Load8(x + 32 + 8 * s), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                            10, 11, 12, 13, 14, 15);
      const F16 p0 = a * Load16(g);
      const F16 p1 = a * Load16(g + 16);
      const I16 k = reinterpret_cast<I16>(a) & 0x7fffffff;
      if (s == 0) {
        acc[h][0] = p0;
        acc[h][1] = p1;
        key[h] = k;
      } else {
        acc[h][0] += p0;
        acc[h][1] += p1;
        key[h] = Max16(key[h], k);
      }
    }
  }
  // Rows r = 2m + q (p's order): acc[h][q] holds rows 4h + q (lanes 0..7) and 4h + 2 + q (8..15).
  // Stage 1: rows 0..3 (or 4..7) of lanes 0..3 and of lanes 4..7, element 4 l + r.
#define ECC_LO4 0, 16, 8, 24, 1, 17, 9, 25, 2, 18, 10, 26, 3, 19, 11, 27
#define ECC_HI4 4, 20, 12, 28, 5, 21, 13, 29, 6, 22, 14, 30, 7, 23, 15, 31
  const F16 m0 = __builtin_shufflevector(acc[0][0], acc[0][1], ECC_LO4);
  const F16 m1 = __builtin_shufflevector(acc[0][0], acc[0][1], ECC_HI4);
  const F16 m2 = __builtin_shufflevector(acc[1][0], acc[1][1], ECC_LO4);
  const F16 m3 = __builtin_shufflevector(acc[1][0], acc[1][1], ECC_HI4);
  // Stage 2: lanes l and l + 1 of rows 0..7 as [lane l | lane l + 1].
#define ECC_L01 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23
#define ECC_L23 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31
  const F16 t[4] = {__builtin_shufflevector(m0, m2, ECC_L01), __builtin_shufflevector(m0, m2, ECC_L23),
                    __builtin_shufflevector(m1, m3, ECC_L01), __builtin_shufflevector(m1, m3, ECC_L23)};
#undef ECC_LO4
#undef ECC_HI4
#undef ECC_L01
#undef ECC_L23
  const F8 p = Load8(yp);
  F8 c = -p;
  for (int i = 0; i < 4; ++i) {
    c += __builtin_shufflevector(t[i], t[i], 0, 1, 2, 3, 4, 5, 6, 7);
    c += __builtin_shufflevector(t[i], t[i], 8, 9, 10, 11, 12, 13, 14, 15);
  }
  // Scale: block m's largest |bits| in lanes 4m..4m+3, then in lanes 2m, 2m + 1 with its checks'.
  I16 w = Max16(__builtin_shufflevector(key[0], key[1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
                __builtin_shufflevector(key[0], key[1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31));
  w = Max16(w, __builtin_shufflevector(w, w, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  w = Max16(w, __builtin_shufflevector(w, w, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  const I8 pk = reinterpret_cast<I8>(p) & 0x7fffffff;
  const I8 k = MaxKey8(__builtin_shufflevector(w, w, 0, 1, 4, 5, 8, 9, 12, 13),
                      MaxKey8(pk, __builtin_shufflevector(pk, pk, 1, 0, 3, 2, 5, 4, 7, 6)));
  const F8 thr = Load8(gain_f) * reinterpret_cast<F8>(k) + Load8(offset_f);
  const F8 ac = reinterpret_cast<F8>(reinterpret_cast<I8>(c) & 0x7fffffff);
  const __m256 bad = _mm256_or_ps(_mm256_cmp_ps(reinterpret_cast<__m256>(ac), reinterpret_cast<__m256>(thr), _CMP_NLE_UQ),
                                  reinterpret_cast<__m256>(k > 0x7f7fffff));  // Inf or NaN: fail
  const unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(bad));
  if (!bits) return 0;
  const unsigned pairs = (bits | bits >> 1) & 0x55u;  // block m fails when check 2m or 2m + 1 does
  return (pairs & 1u) | (pairs >> 1 & 2u) | (pairs >> 2 & 4u) | (pairs >> 3 & 8u);
}
#endif

}  // namespace sweep
}  // namespace onnx_ecc
