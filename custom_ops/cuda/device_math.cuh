// The per-item maths of the CUDA kernels, as __host__ __device__ functions: kernels.cu maps
// device threads to items, and host_emulation.cc runs the same functions item by item on the
// host, so that a test without a GPU (tests/custom_ops/test_cuda_maths_on_host.py) compares them with the
// CPU kernels and the numpy oracles. Plain C++ when not compiled by nvcc.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernel_params.h"
#include "onnx_ecc/parity_check.h"
#include "onnx_ecc/sample_check.h"

#if defined(__CUDACC__)
#define HD __host__ __device__
#else
#define HD
#endif

namespace onnx_ecc {
namespace cuda {
namespace device {

#if !defined(__CUDACC__)
using std::isfinite;  // the host compiler's; nvcc's device one is global
#endif

constexpr int kMaxParity = 16;
constexpr double kEps32 = FLT_EPSILON;

HD inline unsigned long long AtomicAdd64(unsigned long long* p, unsigned long long v) {
#ifdef __CUDA_ARCH__
  return atomicAdd(p, v);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

HD inline bool Finite(double v) { return isfinite(v); }
HD inline double Abs(double v) { return fabs(v); }

HD inline unsigned int FloatBits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  unsigned int u;
  memcpy(&u, &f, 4);
  return u;
#endif
}

HD inline float BitsFloat(unsigned int u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

// Arithmetic that nvcc may not contract into FMAs, so that the device rounds every product and
// sum as the CPU build does (x86-64-v2, no FMA): the checks then agree bit for bit.
HD inline float FMul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
HD inline float FAdd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
HD inline double DMul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
HD inline double DAdd(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
HD inline double DSub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

struct Vec {  // one code vector: where its data, parity, residual and output live
  int64_t o, i, g, k;
  int b, r;
  const float* gen;
  const float* yd;  // data channel j at yd[j * inner]
  const float* yp;  // parity q at yp[q * inner]
  const float* rd;  // residual of data channel j at rd[j * inner], or null
  float* zd;
  const float* gain;
  const float* offset;
};

HD inline Vec Locate(const DecodeParams& p, const float* y, const float* res, float* z, int64_t u) {
  Vec v;
  v.i = u % p.inner;
  int64_t rest = u / p.inner;
  v.k = rest % p.num_blocks;
  rest /= p.num_blocks;
  v.g = rest % p.groups;
  v.o = rest / p.groups;
  const int64_t left = p.data_per_group - v.k * p.block;
  v.b = static_cast<int>(left < p.block ? left : p.block);
  v.r = static_cast<int>(p.parity);
  v.gen = p.generator + v.k * p.block * p.parity;  // every earlier block is full
  const int64_t ybase = v.o * p.total_channels + v.g * (p.data_per_group + p.parity_per_group);
  v.yd = y + (ybase + v.k * p.block) * p.inner + v.i;
  v.yp = y + (ybase + p.data_per_group + v.k * p.parity) * p.inner + v.i;
  const int64_t zoff = (v.o * p.data_channels + v.g * p.data_per_group + v.k * p.block) * p.inner + v.i;
  v.zd = z + zoff;
  v.rd = res ? res + zoff : nullptr;
  const int64_t a = (v.g * p.num_blocks + v.k) * p.parity;
  v.gain = p.gain + a;
  v.offset = p.offset + a;
  return v;
}

// scale='input': max|X| of outer index o (FLT_MAX when infinite, as ChunkMaxAbs).
HD inline float XMax(const float* xmax, bool per_outer, int64_t o) {
  if (!xmax) return 1.f;
  const float m = xmax[per_outer ? o : 0];
  return isfinite(m) ? m : FLT_MAX;
}

HD inline double TolEps(const DecodeParams& p) { return static_cast<double>(p.tolerance) * kEps32; }

// decode.cc's BlockNoise: threshold_q = tol_eps * (gain[q] * scale + offset[q]), scale = xscale,
// or (xscale < 0) the largest finite |value| among the values trusted.
struct NoiseDev {
  const float* gain;
  const float* offset;
  double tol_eps;
  double xscale;
};

HD inline double ThresholdD(const NoiseDev& n, int q, double scale) {
  return DMul(n.tol_eps, DAdd(DMul(static_cast<double>(n.gain[q]), scale), static_cast<double>(n.offset[q])));
}

// The activation of a value written to Z (decode.cc: Relu maps NaN to 0).
HD inline float Activate(const DecodeParams& p, float v) { return p.relu && !(v > 0.f) ? 0.f : v; }

// The fast check of one vector (decode.cc's DecodeVectors sweep, or DecodeRows when inner == 1):
// writes act(data + R) into Z and returns true when the vector must go to the exact step, that
// is when a float check fails and either a value is not finite or the double recheck
// (DecodeBlock without unknowns) fails too.
HD inline bool CheckVector(const DecodeParams& p, const Vec& v, float xm) {
  const int64_t inner = p.inner;
  float mag = 0.f;  // the largest finite |value| of the block (non-finite values never raise it)
  for (int q = 0; q < v.r; ++q) {
    const float av = fabsf(v.yp[q * inner]);
    mag = (av > mag && av <= FLT_MAX) ? av : mag;
  }
  for (int j = 0; j < v.b; ++j) {
    const float av = fabsf(v.yd[j * inner]);
    mag = (av > mag && av <= FLT_MAX) ? av : mag;
  }
  const float scale = p.scale_output ? mag : xm;
  const double tol_eps = TolEps(p);
  bool bad = false;
  for (int q = 0; q < v.r; ++q) {
    const float* gq = v.gen + q * v.b;
    float s = -v.yp[q * inner];
    int j = 0;
    if (inner == 1) {
      // [rows, C] (DecodeRows): eight partial sums over j mod 8, added to -parity in lane order,
      // then the tail, so that every check rounds as on the CPU.
      float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (; j + 8 <= v.b; j += 8)
        for (int l = 0; l < 8; ++l) lanes[l] = FAdd(lanes[l], FMul(gq[j + l], v.yd[j + l]));
      for (int l = 0; l < 8; ++l) s = FAdd(s, lanes[l]);
    }
    for (; j < v.b; ++j) s = FAdd(s, FMul(gq[j], v.yd[j * inner]));
    const float gain_f = static_cast<float>(DMul(tol_eps, static_cast<double>(v.gain[q])));
    const float offset_f = static_cast<float>(DMul(tol_eps, static_cast<double>(v.offset[q])));
    bad |= !(fabsf(s) <= FAdd(FMul(gain_f, scale), offset_f));
  }
  for (int j = 0; j < v.b; ++j) {
    float val = v.yd[j * inner];
    if (v.rd) val = FAdd(val, v.rd[j * inner]);
    v.zd[j * inner] = Activate(p, val);
  }
  if (!bad) return false;
  // DecodeBlock's first step: with every value finite, the checks in double with the same scale
  // (all values are trusted). Passing means float rounding, not an error: nothing is counted.
  for (int j = 0; j < v.b; ++j)
    if (!Finite(v.yd[j * inner])) return true;
  for (int q = 0; q < v.r; ++q)
    if (!Finite(v.yp[q * inner])) return true;
  const NoiseDev noise{v.gain, v.offset, tol_eps, p.scale_output ? -1.0 : static_cast<double>(xm)};
  const double dscale = p.scale_output ? static_cast<double>(mag) : noise.xscale;
  for (int q = 0; q < v.r; ++q) {
    double c = v.yp[q * inner];
    for (int j = 0; j < v.b; ++j) c = DSub(c, DMul(static_cast<double>(v.gen[q * v.b + j]), v.yd[j * inner]));
    if (!(Abs(c) <= ThresholdD(noise, q, dscale))) return true;
  }
  return false;
}

// Per-thread scratch of the exact step, carved from global memory.
struct Scratch {
  double *values, *yb, *pb, *thr, *a, *m, *rhs, *z, *best_z;
  int* cand;
  unsigned char* is_unknown;
};

HD inline size_t SlotDoubles(int64_t b, int64_t r) {
  return (b + r) + b + r + r + kMaxParity * kMaxParity + kMaxParity * (kMaxParity + 1) + 3 * kMaxParity;
}
HD inline size_t SlotBytes(int64_t b, int64_t r) {
  const size_t bytes = SlotDoubles(b, r) * 8 + (b + r) * 4 + (b + r);
  return (bytes + 15) / 16 * 16;
}

HD inline Scratch CarveScratch(void* base, int64_t b, int64_t r) {
  Scratch s;
  double* d = static_cast<double*>(base);
  s.values = d; d += b + r;
  s.yb = d; d += b;
  s.pb = d; d += r;
  s.thr = d; d += r;
  s.a = d; d += kMaxParity * kMaxParity;
  s.m = d; d += kMaxParity * (kMaxParity + 1);
  s.rhs = d; d += kMaxParity;
  s.z = d; d += kMaxParity;
  s.best_z = d; d += kMaxParity;
  s.cand = reinterpret_cast<int*>(d);
  s.is_unknown = reinterpret_cast<unsigned char*>(s.cand + b + r);
  return s;
}

// decode.cc's LeastSquares with m in scratch ([cols][cols + 1]).
HD inline bool LeastSquares(const double* a, const double* rhs, int rows, int cols, double* m, double* z) {
  const int w = kMaxParity + 1;
  for (int i = 0; i < cols; ++i) {
    for (int j = 0; j < cols; ++j) {
      double s = 0;
      for (int k = 0; k < rows; ++k) s = DAdd(s, DMul(a[k * cols + i], a[k * cols + j]));
      m[i * w + j] = s;
    }
    double s = 0;
    for (int k = 0; k < rows; ++k) s = DAdd(s, DMul(a[k * cols + i], rhs[k]));
    m[i * w + cols] = s;
  }
  for (int c = 0; c < cols; ++c) {
    int piv = c;
    for (int i = c + 1; i < cols; ++i)
      if (Abs(m[i * w + c]) > Abs(m[piv * w + c])) piv = i;
    if (Abs(m[piv * w + c]) < 1e-12) return false;
    if (piv != c)
      for (int j = 0; j <= cols; ++j) {
        const double t = m[c * w + j];
        m[c * w + j] = m[piv * w + j];
        m[piv * w + j] = t;
      }
    for (int i = 0; i < cols; ++i) {
      if (i == c) continue;
      const double f = m[i * w + c] / m[c * w + c];
      for (int j = c; j <= cols; ++j) m[i * w + j] = DSub(m[i * w + j], DMul(f, m[c * w + j]));
    }
  }
  for (int c = 0; c < cols; ++c) z[c] = m[c * w + cols] / m[c * w + c];
  return true;
}

// decode.cc's SolveUnknown: the hypothesis that exactly `unknown` are wrong. The thresholds are
// recomputed per hypothesis: with scale='output' from the values it trusts. Returns the
// normalised residual (solution in s.z), or -1.
HD inline double SolveUnknown(const Scratch& s, const float* g, const NoiseDev& noise, int b, int r,
                              const int* unknown, int nu) {
  const double* values = s.values;
  for (int i = 0; i < b + r; ++i) s.is_unknown[i] = 0;
  int data_u[kMaxParity], ndu = 0;
  for (int i = 0; i < nu; ++i) {
    s.is_unknown[unknown[i]] = 1;
    if (unknown[i] < b) data_u[ndu++] = unknown[i];
  }
  int rows[kMaxParity], nrows = 0;
  for (int k = 0; k < r; ++k)
    if (!s.is_unknown[b + k]) rows[nrows++] = k;
  if (nrows < ndu) return -1;
  double scale = noise.xscale;
  if (scale < 0) {
    scale = 0;
    for (int i = 0; i < b + r; ++i) {
      const double av = Abs(values[i]);
      if (!s.is_unknown[i] && Finite(values[i]) && av > scale) scale = av;
    }
  }
  for (int k = 0; k < r; ++k) s.thr[k] = ThresholdD(noise, k, scale);
  double mag[kMaxParity];
  for (int q = 0; q < nrows; ++q) {
    const int k = rows[q];
    double c = values[b + k], m = Abs(values[b + k]);
    for (int j = 0; j < b; ++j)
      if (!s.is_unknown[j]) {
        const double t = DMul(static_cast<double>(g[k * b + j]), values[j]);
        c = DSub(c, t);
        m = DAdd(m, Abs(t));
      }
    s.rhs[q] = c;
    mag[q] = m;
    for (int u = 0; u < ndu; ++u) s.a[q * ndu + u] = g[k * b + data_u[u]];
  }
  if (ndu > 0 && !LeastSquares(s.a, s.rhs, nrows, ndu, s.m, s.z)) return -1;
  double norm = 0;
  for (int q = 0; q < nrows; ++q) {
    double res = s.rhs[q], m = mag[q];
    for (int u = 0; u < ndu; ++u) {
      const double t = DMul(s.a[q * ndu + u], s.z[u]);
      res = DSub(res, t);
      m = DAdd(m, Abs(t));
    }
    // As on the CPU: the threshold plus the double rounding of this residual.
    const double t = DAdd(s.thr[rows[q]], DMul(0x1p-40, m));
    if (!(Abs(res) <= t)) return -1;
    if (t > 0) {
      const double e = res / t;
      norm = DAdd(norm, DMul(e, e));
    }
  }
  return norm;
}

// decode.cc's DecodeBlock on s.yb (b) and s.pb (r): returns 0 when the checks hold in double,
// the number of values re-solved (> 0, s.yb repaired), or -1 when uncorrectable.
HD inline int DecodeBlockDev(const Scratch& s, const float* g, const NoiseDev& noise, int b, int r, bool correct) {
  const int n = b + r;
  double* values = s.values;
  int erased[kMaxParity + 1], ne = 0;
  for (int i = 0; i < n; ++i) {
    values[i] = i < b ? s.yb[i] : s.pb[i - b];
    if (!Finite(values[i])) {
      if (ne == r) return -1;
      erased[ne++] = i;
    }
  }
  if (ne == 0 && SolveUnknown(s, g, noise, b, r, erased, 0) >= 0) return 0;
  if (!correct) return -1;
  int nc = 0;
  for (int i = 0, e = 0; i < n; ++i) {
    if (e < ne && erased[e] == i) { ++e; continue; }
    s.cand[nc++] = i;
  }
  for (int i = 0; i < ne; ++i)
    if (erased[i] < b) values[erased[i]] = 0.0;
  const int tmax = (r - ne) / 2;
  int unknown[kMaxParity], best_unknown[kMaxParity], idx[kMaxParity];
  for (int t = 0; t <= tmax; ++t) {
    double best = -1;
    int best_nu = 0;
    // Every t-subset of the candidate positions.
    for (int i = 0; i < t; ++i) idx[i] = i;
    if (t > nc) break;
    while (true) {
      int nu = 0;
      for (int i = 0; i < ne; ++i) unknown[nu++] = erased[i];
      for (int i = 0; i < t; ++i) unknown[nu++] = s.cand[idx[i]];
      const double res = SolveUnknown(s, g, noise, b, r, unknown, nu);
      if (res >= 0 && (best < 0 || res < best)) {
        best = res;
        best_nu = nu;
        for (int i = 0; i < nu; ++i) best_unknown[i] = unknown[i];
        for (int i = 0; i < kMaxParity; ++i) s.best_z[i] = s.z[i];
      }
      int i = t - 1;
      while (i >= 0 && idx[i] == nc - t + i) --i;
      if (i < 0) break;
      ++idx[i];
      for (int j = i + 1; j < t; ++j) idx[j] = idx[j - 1] + 1;
    }
    if (best >= 0) {
      int u = 0;
      for (int i = 0; i < best_nu; ++i)
        if (best_unknown[i] < b) s.yb[best_unknown[i]] = s.best_z[u++];
      return best_nu;
    }
  }
  return -1;
}

struct LocalCounts {
  unsigned long long flagged = 0, corrected_blocks = 0, corrected_values = 0, uncorrectable = 0;
};

// The exact step for one flagged vector (DecodeVectors' rare path): counts it unless the double
// recheck passes, and rewrites act(repaired data + R) into Z after a repair.
HD inline void CorrectVector(const DecodeParams& p, const float* y, const float* res, float* z, const float* xmax,
                             bool per_outer, int64_t u, const Scratch& s, LocalCounts& c) {
  const Vec v = Locate(p, y, res, z, u);
  const NoiseDev noise{v.gain, v.offset, TolEps(p),
                       p.scale_output ? -1.0 : static_cast<double>(XMax(xmax, per_outer, v.o))};
  for (int j = 0; j < v.b; ++j) s.yb[j] = v.yd[j * p.inner];
  for (int q = 0; q < v.r; ++q) s.pb[q] = v.yp[q * p.inner];
  const int fixed = DecodeBlockDev(s, v.gen, noise, v.b, v.r, p.correct != 0);
  if (fixed == 0) return;  // float rounding of the fast check, not an error
  ++c.flagged;
  if (fixed < 0) {
    // Beyond correction: as on the CPU, NaN passes the activation so it stays visible.
    ++c.uncorrectable;
    if (p.relu)
      for (int j = 0; j < v.b; ++j) {
        float val = v.yd[j * p.inner];
        if (v.rd) val = FAdd(val, v.rd[j * p.inner]);
        v.zd[j * p.inner] = (val > 0.f || val != val) ? val : 0.f;
      }
    return;
  }
  ++c.corrected_blocks;
  c.corrected_values += static_cast<unsigned long long>(fixed);
  for (int j = 0; j < v.b; ++j) {
    float val = static_cast<float>(s.yb[j]);
    if (v.rd) val = FAdd(val, v.rd[j * p.inner]);
    v.zd[j * p.inner] = Activate(p, val);
  }
}

HD inline void AddCounts(const LocalCounts& c, unsigned long long* totals, unsigned long long* run_unc) {
  if (c.flagged) AtomicAdd64(totals + kFlagged, c.flagged);
  if (c.corrected_blocks) AtomicAdd64(totals + kCorrectedBlocks, c.corrected_blocks);
  if (c.corrected_values) AtomicAdd64(totals + kCorrectedValues, c.corrected_values);
  if (c.uncorrectable) {
    AtomicAdd64(totals + kUncorrectable, c.uncorrectable);
    if (run_unc) AtomicAdd64(run_unc, c.uncorrectable);
  }
}

// A[n, c, padded row ip, tap column j] (and the same of |x|): the sum over output columns of
// the padded input row at the columns filter tap j reads.
HD inline void RowSums(const DepthwiseParams& p, const float* x, int64_t unit, double* a, double* aabs) {
  const int64_t hp = p.h + p.pad_t + p.pad_b;
  const int64_t j = unit % p.kw;
  const int64_t ip = (unit / p.kw) % hp;
  const int64_t nc = unit / (p.kw * hp);
  double s = 0, sa = 0;
  const int64_t i = ip - p.pad_t;
  if (i >= 0 && i < p.h) {
    const float* row = x + (nc * p.h + i) * p.w;
    for (int64_t ow = 0; ow < p.wout; ++ow) {
      const int64_t src = j * p.dil_w + ow * p.stride_w - p.pad_l;
      if (src < 0 || src >= p.w) continue;
      const double v = row[src];
      s += v;
      sa += Abs(v);
    }
  }
  a[unit] = s;
  aabs[unit] = sa;
}

HD inline bool ChannelVerified(const DepthwiseParams& p, int64_t c) {
  double s = p.bias[c];
  for (int64_t k = 0; k < p.kh * p.kw; ++k) s += p.weights[c * p.kh * p.kw + k];
  const double scale = Abs(p.weight_sums[c]) + 1e-30;
  return Finite(s) && Abs(s - p.weight_sums[c]) <= 1e-6 * scale + 1e-30;
}

// Checks (and repairs) output row oh of (n, c): depthwise_check.cc's per-row loop.
HD inline void CheckRow(const DepthwiseParams& p, const float* x, const float* y, float* z, const double* a,
                        const double* aabs, int64_t unit, LocalCounts& cnt) {
  const int64_t oh = unit % p.hout;
  const int64_t nc = unit / p.hout;
  const int64_t c = nc % p.channels;
  const int64_t hp = p.h + p.pad_t + p.pad_b;
  const float* yrow = y + unit * p.wout;
  float* zrow = z + unit * p.wout;
  const double* an = a + nc * hp * p.kw;
  const double* aan = aabs + nc * hp * p.kw;
  const float* wt = p.weights + c * p.kh * p.kw;
  const double bias = p.bias[c];
  double actual = 0.0;
  for (int64_t ow = 0; ow < p.wout; ++ow) actual += yrow[ow];
  double expected = bias * p.wout, bound = Abs(bias) * p.wout;
  for (int64_t i = 0; i < p.kh; ++i) {
    const int64_t r = oh * p.stride_h + i * p.dil_h;
    for (int64_t j = 0; j < p.kw; ++j) {
      expected += wt[i * p.kw + j] * an[r * p.kw + j];
      bound += Abs(wt[i * p.kw + j]) * aan[r * p.kw + j];
    }
  }
  const bool ok = Abs(actual - expected) <= p.tolerance * FLT_EPSILON * bound;
  if (ok || !p.correct || !ChannelVerified(p, c)) {
    if (!ok) { ++cnt.flagged; ++cnt.uncorrectable; }
    for (int64_t ow = 0; ow < p.wout; ++ow) zrow[ow] = p.relu ? (yrow[ow] > 0.f ? yrow[ow] : 0.f) : yrow[ow];
    return;
  }
  ++cnt.flagged;
  const float* xs = x + nc * p.h * p.w;
  for (int64_t ow = 0; ow < p.wout; ++ow) {
    double acc = bias;
    for (int64_t i = 0; i < p.kh; ++i) {
      const int64_t ih = oh * p.stride_h - p.pad_t + i * p.dil_h;
      if (ih < 0 || ih >= p.h) continue;
      for (int64_t j = 0; j < p.kw; ++j) {
        const int64_t iw = ow * p.stride_w - p.pad_l + j * p.dil_w;
        if (iw < 0 || iw >= p.w) continue;
        acc += static_cast<double>(wt[i * p.kw + j]) * xs[ih * p.w + iw];
      }
    }
    const float v = static_cast<float>(acc);
    zrow[ow] = p.relu && v < 0.f ? 0.f : v;
  }
  ++cnt.corrected_blocks;
  cnt.corrected_values += static_cast<unsigned long long>(p.wout);
}

// ParityCheck: vector u = (outer, block, inner position), inner fastest, holds by
// ParityBlockHoldsExact (parity_check.h, the CPU kernel's exact test).
HD inline bool ParityVectorHolds(const ParityCheckParams& p, const float* y, const float* pp, int64_t u) {
  const int r = static_cast<int>(p.parity);
  const int64_t i = u % p.inner, t = u / p.inner;
  const int64_t k = t % p.num_blocks, o = t / p.num_blocks;
  const int64_t start = k * p.block;
  const int b = static_cast<int>(p.data_channels - start < p.block ? p.data_channels - start : p.block);
  const float* yk = y + (o * p.y_row_stride * p.data_channels + start) * p.inner + i;
  const float* pk = pp + (o * p.num_blocks * p.parity + k * r) * p.inner + i;
  return ParityBlockHoldsExact(yk, p.inner, pk, p.inner, p.generator + start * r, b, r, p.gain + k * r,
                               p.offset + k * r, p.tolerance);
}

// ---- SampleCheck: element u of [samples, channels, hw] ------------------------------------------

// The compared pair of element u: A's value and act(Y + R).
HD inline void SamplePair(const SampleCheckParams& p, const float* a, const float* y, const float* r, int64_t u,
                          float* av, float* yv) {
  const int64_t per = p.channels * p.hw, n = u / per, e = u % per;
  *av = a[u];
  const float b = y[n * (p.channels + p.extra) * p.hw + e];
  *yv = SampleActivate(p.act, p.act_lo, p.act_hi, r ? FAdd(b, r[u]) : b);
}

// The larger finite |value| of the pair (the sample's scale is the largest over its elements).
HD inline float SampleMagnitude(const SampleCheckParams& p, const float* a, const float* y, const float* r, int64_t u) {
  float av, yv;
  SamplePair(p, a, y, r, u, &av, &yv);
  float m = 0.f;
  const float fa = fabsf(av), fy = fabsf(yv);
  m = (fa > m && fa <= FLT_MAX) ? fa : m;
  return (fy > m && fy <= FLT_MAX) ? fy : m;
}

// Whether element u's pair fails, given its sample's scale (SampleMismatches' exact rule).
HD inline bool SampleElementFails(const SampleCheckParams& p, const float* a, const float* y, const float* r, int64_t u,
                                  float scale) {
  float av, yv;
  SamplePair(p, a, y, r, u, &av, &yv);
  return SamplePairFails(av, yv, p.tolerance * kEps32 * scale);
}

// Whether parity vector u = (sample, block, position) of Y holds (ParityBlockHoldsExact).
HD inline bool SampleParityHolds(const SampleCheckParams& p, const float* y, int64_t u) {
  const int r = static_cast<int>(p.parity);
  const int64_t i = u % p.hw, t = u / p.hw;
  const int64_t k = t % p.num_blocks, n = t / p.num_blocks;
  const int64_t start = k * p.block;
  const int b = static_cast<int>(p.channels - start < p.block ? p.channels - start : p.block);
  const float* yn = y + n * (p.channels + p.extra) * p.hw;
  return ParityBlockHoldsExact(yn + start * p.hw + i, p.hw, yn + (p.channels + k * r) * p.hw + i, p.hw,
                               p.generator + start * r, b, r, p.gain + k * r, p.offset + k * r, p.parity_tolerance);
}

// Whether output channel c's filter and bias still sum to the stored filter sum.
HD inline bool SampleFilterHolds(const SampleCheckParams& p, const float* w, const float* bias, int64_t c) {
  return FilterRowHolds(w + c * p.row, p.row, bias ? bias + c : nullptr, p.filter_sums[c], p.filter_tolerance);
}

}  // namespace device
}  // namespace cuda
}  // namespace onnx_ecc
