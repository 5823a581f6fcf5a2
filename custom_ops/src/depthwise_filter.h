// DepthwiseCheck's float32 pre-filter of eight small planes (CPU only, depthwise_check.cc).
//
// The row test of depthwise_math.h (|actual - expected| <= t * bound, t = tolerance * eps32) is
// formed in double by the kernel, whose double sums cost most of its time on small planes. The
// filter forms the same three sums per output row in float32, lanes = planes as in
// CheckPlanes8, and passes a row only when its float test holds with room for every rounding
// error of both computations (float32 here, the double path's float lanes and doubles there):
//
//   |d| + kM * M + kB * B + kR * R + tiny <= t' * B
//
// d = actual - expected and B = bound as computed here, M = sum |y| of the row, R = the bound
// with whole input rows instead of windows (|b| W_out + sum_i sum_j |w_ij| * row sum of |x|), t'
// = t (1 - 64 u). A passing row then passes the double test too, so the kernel's outcome is the
// double path's, bit for bit; a plane with any row not passing goes to the double path, which
// decides. Error bounds (u = 2^-24; a sum whose every term goes through at most n roundings errs
// by at most gamma_n = n u / (1 - n u) times the sum of the terms' magnitudes, Higham 2002,
// section 4.2; the same for a dot product of n - 1 rounded products):
//
// - here, a window sum of x (or |x|) through at most nA roundings: its error <= gamma_nA * the
//   window's sum of |x|, hence expected and bound err by <= (gamma_{kh kw + 1} + gamma_nA) * B;
//   actual, a sum through at most nY roundings, by <= gamma_nY * M;
// - the double path: its float lanes of m values (RowSums: w - w % 8 values in 8 lanes) err by
//   gamma_{m - 1} * the lane's sum of magnitudes, which is at most the whole row's (R for
//   expected and bound, M for actual); its doubles by < 2^-40 of R, M or B.
//
// kM, kB, kR are those coefficients, doubled (which also covers the second-order terms, the
// errors of M, B and R as computed here and t times the bound's errors) plus one u; tiny =
// 2^-120 covers underflow (each float operation errs by at most 2^-150 absolute). Every term is
// non-negative, and t' leaves 64 u for the float evaluation of the test itself. A NaN or an
// infinity anywhere in a row's sums fails the float test (an infinite B through B - B = NaN).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "onnx_ecc/depthwise.h"
#include "sweeps.h"

namespace onnx_ecc {
namespace dwfilter {

// The filter's vectors: one lane per plane, 8 or 16 planes at a time (16: one AVX-512 register,
// two AVX2 ones), each lane computing exactly what a scalar loop would for its plane.
template <int kLanes>
struct Lanes {
  typedef float F __attribute__((vector_size(4 * kLanes)));
  typedef int32_t I __attribute__((vector_size(4 * kLanes)));
};
template <typename V>
ECC_INLINE V Load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V>
ECC_INLINE void Store(float* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename V>
ECC_INLINE V Abs(V v) {
  typedef int32_t I __attribute__((vector_size(sizeof(V))));
  return reinterpret_cast<V>(reinterpret_cast<I>(v) & 0x7fffffff);
}

// Roundings a term of a 4-chain sum of n values goes through (chains of floor(n / 4) + 3 values
// at most, then two levels combining them).
constexpr int64_t ChainDepth(int64_t n) { return n / 4 + 5; }

// The filter's constants for one geometry (stride_w 1): the window of each filter tap j (input
// columns [lo[j], hi[j])), their common core [core_lo, core_hi), and the test's coefficients.
struct Filter {
  bool on = false;  // false: the margin is too thin for the filter to ever help, every plane goes to the double path
  int64_t core_lo = 0, core_hi = 0;
  int64_t lo[64], hi[64];
  float km = 0, kb = 0, kr = 0, t = 0, tiny = 0;
};

inline Filter MakeFilter(const DepthwiseConfig& cfg, int64_t w) {
  Filter f;
  const int64_t wout = cfg.OutW(w), K = cfg.kh * cfg.kw;
  if (cfg.stride_w != 1 || cfg.kw > 64 || wout < 1) return f;
  f.core_lo = 0;
  f.core_hi = w;
  for (int64_t j = 0; j < cfg.kw; ++j) {
    const int64_t first = j * cfg.dil_w - cfg.pad_l;
    f.lo[j] = std::clamp<int64_t>(first, 0, w);
    f.hi[j] = std::clamp<int64_t>(first + wout, 0, w);
    f.core_lo = std::max(f.core_lo, f.lo[j]);
    f.core_hi = std::min(f.core_hi, f.hi[j]);
  }
  if (f.core_lo >= f.core_hi) f.core_lo = f.core_hi = 0;  // no common core: each window summed whole
  const int64_t core = f.core_hi - f.core_lo;
  int64_t edges = 0;
  for (int64_t j = 0; j < cfg.kw; ++j) edges = std::max(edges, (f.hi[j] - f.lo[j]) - core);
  const double u = std::ldexp(1.0, -24);
  const double t = DepthwiseTolEps(cfg.tolerance);
  const int64_t n_a = ChainDepth(core) + edges;           // a window sum here
  const int64_t n_y = ChainDepth(wout);                   // actual here
  const int64_t m_x = (w - w % 8) / 8, m_y = (wout - wout % 8) / 8;  // the double path's float lanes
  const double c_b = static_cast<double>(K + 1 + n_a);
  const double c_m = static_cast<double>(n_y + std::max<int64_t>(m_y - 1, 0));
  const double c_r = static_cast<double>(std::max<int64_t>(m_x - 1, 0));
  const double kb = (2 * c_b * (1 + t) + 1) * u, km = (2 * c_m + 1) * u, kr = (2 * c_r * (1 + t) + 1) * u;
  // Rounded up to float: the coefficients may only grow.
  f.kb = std::nextafter(static_cast<float>(kb), FLT_MAX);
  f.km = std::nextafter(static_cast<float>(km), FLT_MAX);
  f.kr = std::nextafter(static_cast<float>(kr), FLT_MAX);
  f.t = static_cast<float>(t * (1 - 64 * u));
  if (static_cast<double>(f.t) > t * (1 - 63 * u)) f.t = std::nextafter(f.t, 0.f);
  f.tiny = std::ldexp(1.f, -120);
  // Worth running only when a fault-free row (|d| a few u * B) can pass: when the rows' and
  // windows' magnitudes are alike (M ~ B ~ R) the coefficients must leave a quarter of t.
  // t < 1/2 keeps t' * B finite for every finite B (a huge tolerance could overflow it and pass anything).
  f.on = cfg.kh * cfg.kw <= 64 && t < 0.5 && km + kb + kr <= 0.75 * t;
  return f;
}

// Sum of the lanes v[q * L ..] for q in [lo, hi) in four chains (ChainDepth roundings), and of |v|.
// From four values on, each chain starts at its first value (no add to zero) and the last one to
// three values go to different chains: a term goes through at most n / 4 + 2 roundings.
template <typename FV, int64_t L>
ECC_INLINE void ChainSums(const float* v, int64_t lo, int64_t hi, FV* s, FV* sabs) {
  const FV z = {};
  if (hi - lo < 4) {
    FV c = z, a = z;
    for (int64_t q = lo; q < hi; ++q) {
      const FV x0 = Load<FV>(v + q * L);
      c += x0;
      a += Abs(x0);
    }
    *s = c;
    *sabs = a;
    return;
  }
  FV c0 = Load<FV>(v + lo * L), c1 = Load<FV>(v + (lo + 1) * L), c2 = Load<FV>(v + (lo + 2) * L),
     c3 = Load<FV>(v + (lo + 3) * L);
  FV a0 = Abs(c0), a1 = Abs(c1), a2 = Abs(c2), a3 = Abs(c3);
  int64_t q = lo + 4;
  for (; q + 4 <= hi; q += 4) {
    const FV x0 = Load<FV>(v + q * L), x1 = Load<FV>(v + (q + 1) * L), x2 = Load<FV>(v + (q + 2) * L),
             x3 = Load<FV>(v + (q + 3) * L);
    c0 += x0; c1 += x1; c2 += x2; c3 += x3;
    a0 += Abs(x0); a1 += Abs(x1); a2 += Abs(x2); a3 += Abs(x3);
  }
  if (q < hi) {
    const FV x0 = Load<FV>(v + q * L);
    c0 += x0;
    a0 += Abs(x0);
  }
  if (q + 1 < hi) {
    const FV x1 = Load<FV>(v + (q + 1) * L);
    c1 += x1;
    a1 += Abs(x1);
  }
  if (q + 2 < hi) {
    const FV x2 = Load<FV>(v + (q + 2) * L);
    c2 += x2;
    a2 += Abs(x2);
  }
  *s = (c0 + c1) + (c2 + c3);
  *sabs = (a0 + a1) + (a2 + a3);
}

// Planes p .. p + kLanes - 1 (their weights and biases by lane in wl, bl: wl[t * kLanes + l] is
// tap t of lane l), transposed (xt: value e of plane p + l at xt[e * kLanes + l], yt likewise):
// returns a bit per plane with a row that does not pass (those go to the double path).
// Scratch: a and aabs hold kw * hp * kLanes floats, tabs hp * kLanes (hp = padded input rows).
template <int kLanes>
ECC_INLINE unsigned FilterPlanes(const DepthwiseConfig& cfg, const Filter& f, const float* wl, const float* bl,
                                 const float* xt, const float* yt, int64_t h, int64_t w, float* a, float* aabs, float* tabs) {
  typedef typename Lanes<kLanes>::F FV;
  constexpr int64_t L = kLanes;
  const int64_t hout = cfg.OutH(h), wout = cfg.OutW(w);
  const int64_t hp = h + cfg.pad_t + cfg.pad_b;
  const int64_t kh = cfg.kh, kw = cfg.kw;
  const FV z = {};
  for (int64_t i = 0; i < cfg.pad_t; ++i) {  // padded rows sum to 0
    Store<FV>(tabs + i * L, z);
    for (int64_t j = 0; j < kw; ++j) Store<FV>(a + (j * hp + i) * L, z), Store<FV>(aabs + (j * hp + i) * L, z);
  }
  for (int64_t i = h + cfg.pad_t; i < hp; ++i) {
    Store<FV>(tabs + i * L, z);
    for (int64_t j = 0; j < kw; ++j) Store<FV>(a + (j * hp + i) * L, z), Store<FV>(aabs + (j * hp + i) * L, z);
  }
  for (int64_t i = 0; i < h; ++i) {
    const float* row = xt + i * w * L;
    const int64_t r = i + cfg.pad_t;
    FV c, cabs;
    ChainSums<FV, L>(row, f.core_lo, f.core_hi, &c, &cabs);
    FV t = cabs;  // the whole row's |x| (for R): the core, then every column outside it
    for (int64_t q = 0; q < f.core_lo; ++q) t += Abs(Load<FV>(row + q * L));
    for (int64_t q = f.core_hi; q < w; ++q) t += Abs(Load<FV>(row + q * L));
    Store<FV>(tabs + r * L, t);
    for (int64_t j = 0; j < kw; ++j) {
      FV v = c, va = cabs;
      const int64_t lo = f.lo[j], hi = f.hi[j];
      for (int64_t q = lo; q < std::min(hi, f.core_lo); ++q) {
        const FV xq = Load<FV>(row + q * L);
        v += xq;
        va += Abs(xq);
      }
      for (int64_t q = std::max(lo, f.core_hi); q < hi; ++q) {
        const FV xq = Load<FV>(row + q * L);
        v += xq;
        va += Abs(xq);
      }
      Store<FV>(a + (j * hp + r) * L, v);
      Store<FV>(aabs + (j * hp + r) * L, va);
    }
  }
  // Weights, their magnitudes and their rows' sums of magnitudes (for R; a float sum of kw
  // values, whose relative error the doubled kR covers) per lane.
  FV wv[64], wa[64], wrow[64];
  for (int64_t t = 0; t < kh * kw; ++t) wv[t] = Load<FV>(wl + t * L);
  const FV bias = Load<FV>(bl);
  for (int64_t i = 0; i < kh; ++i) {
    FV s = z;
    for (int64_t j = 0; j < kw; ++j) {
      wa[i * kw + j] = Abs(wv[i * kw + j]);
      s += wa[i * kw + j];
    }
    wrow[i] = s;
  }
  const float fw = static_cast<float>(wout);
  const FV e0 = bias * fw, b0 = Abs(bias) * fw;
  const int64_t sh = cfg.stride_h, dh = cfg.dil_h;
  FV fail = z;  // per lane: rows that do not pass
  for (int64_t oh = 0; oh < hout; ++oh) {
    FV actual, mag;
    ChainSums<FV, L>(yt + oh * wout * L, 0, wout, &actual, &mag);
    FV expected = e0, bound = b0, whole = b0;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t at = oh * sh + i * dh;
      for (int64_t j = 0; j < kw; ++j) {
        expected += wv[i * kw + j] * Load<FV>(a + (j * hp + at) * L);
        bound += wa[i * kw + j] * Load<FV>(aabs + (j * hp + at) * L);
      }
      whole += wrow[i] * Load<FV>(tabs + at * L);
    }
    const FV lhs = Abs(actual - expected) + f.km * mag + f.kb * bound + f.kr * whole + f.tiny;
    // bound - bound is NaN when the bound is infinite (0 otherwise), which then fails too: one
    // compare and select per row (two compares ANDed move masks around in the AVX-512F clone).
    const FV held = lhs + (bound - bound);
    fail += held <= f.t * bound ? z : z + 1.f;
  }
  unsigned mask = 0;
  for (int l = 0; l < kLanes; ++l) mask |= static_cast<unsigned>(fail[l] != 0.f) << l;
  return mask;
}


}  // namespace dwfilter
}  // namespace onnx_ecc
