// Decode's maths per code vector, written once for the CPU kernel (decode.cc, whose sweeps.h
// loops form the same float checks for many vectors at a time) and the CUDA kernels
// (custom_ops/cuda/device_math.cuh): the thresholds, the float check of one vector, the double
// recheck, and the exact step (the subset search over wrong positions, least squares, the repair
// and its output). No onnxruntime or standard-library containers: nvcc compiles it for the device.
#pragma once

#include <cstddef>
#include <cstdint>

#include "onnx_ecc/hd.h"

namespace onnx_ecc {

constexpr int kMaxParity = 16;   // checks per block
constexpr int kMaxBlock = 1024;  // data values per block
constexpr double kRoundingFloor = 0x1p-40;  // relative rounding allowance of a residual in double

struct DecodeCounts {
  int64_t vectors = 0;           // code blocks checked (block x output vector)
  int64_t flagged = 0;           // blocks whose checks failed (or held non-finite values)
  int64_t corrected_blocks = 0;  // flagged blocks repaired
  int64_t corrected_values = 0;  // values re-solved in repaired blocks
  int64_t uncorrectable = 0;     // flagged blocks left as they were
  ECC_HD void Add(const DecodeCounts& o) {
    vectors += o.vectors; flagged += o.flagged; corrected_blocks += o.corrected_blocks;
    corrected_values += o.corrected_values; uncorrectable += o.uncorrectable;
  }
};

// Noise model of one block's checks: threshold_q = tol_eps * (gain[q] * scale + offset[q]), where
// scale is xscale, or (xscale < 0) the largest finite |value| among the values trusted.
struct BlockNoise {
  const float* gain;
  const float* offset;
  double tol_eps;
  double xscale;
};

ECC_HD inline double TolEps(float tolerance) { return DMul(static_cast<double>(tolerance), kEps32); }

ECC_HD inline double Threshold(const BlockNoise& n, int q, double scale) {
  return DMul(n.tol_eps, DAdd(DMul(static_cast<double>(n.gain[q]), scale), static_cast<double>(n.offset[q])));
}

// The fast check's threshold terms in float32: tol_eps * gain (or * offset), rounded once.
ECC_HD inline float FastTerm(double tol_eps, float gain) {
  return static_cast<float>(DMul(tol_eps, static_cast<double>(gain)));
}

// scale='input': the threshold scale of a max|X| (FLT_MAX when infinite).
ECC_HD inline float InputScale(float max_abs) { return isfinite(max_abs) ? max_abs : FLT_MAX; }

// The activation of a value written to Z: Relu maps NaN to 0.
ECC_HD inline float Activate(bool relu, float v) { return relu && !(v > 0.f) ? 0.f : v; }

// act(data + R) of one vector's data yd[j * ycs] into zd[j * zcs] (residual rd[j * zcs], or null).
ECC_HD inline void WriteVector(const float* yd, int64_t ycs, const float* rd, float* zd, int64_t zcs, int b,
                               bool relu) {
  for (int j = 0; j < b; ++j) {
    float v = yd[j * ycs];
    if (rd) v = FAdd(v, rd[j * zcs]);
    zd[j * zcs] = Activate(relu, v);
  }
}

// The float checks of one vector: data yd[j * cs] (j < b), parity yp[q * cs] (q < r), generator g
// (r x b, row-major). Syndrome q is -p_q + sum_j g[q, j] y_j in j order or, with lanes8 (cs == 1),
// as the CPU's row sweeps add it: eight partial sums over j mod 8, added to -p_q in lane order,
// then the tail. Fails when |s_q| > FastTerm(gain_q) * scale + FastTerm(offset_q) for some q,
// scale = xscale, or (xscale < 0) the largest finite |value| of the vector.
ECC_HD inline bool FastChecksFail(const float* yd, const float* yp, int64_t cs, const float* g, int b, int r,
                                  const BlockNoise& noise, float xscale, bool lanes8) {
  float scale = xscale;
  if (xscale < 0) {
    scale = 0.f;
    for (int q = 0; q < r; ++q) scale = MaxFinite(scale, yp[q * cs]);
    for (int j = 0; j < b; ++j) scale = MaxFinite(scale, yd[j * cs]);
  }
  bool bad = false;
  for (int q = 0; q < r; ++q) {
    const float* gq = g + q * b;
    float s = -yp[q * cs];
    int j = 0;
    if (lanes8) {
      float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (; j + 8 <= b; j += 8)
        for (int l = 0; l < 8; ++l) lanes[l] = FAdd(lanes[l], FMul(gq[j + l], yd[j + l]));
      for (int l = 0; l < 8; ++l) s = FAdd(s, lanes[l]);
    }
    for (; j < b; ++j) s = FAdd(s, FMul(gq[j], yd[j * cs]));
    bad |= !(fabsf(s) <= FAdd(FMul(FastTerm(noise.tol_eps, noise.gain[q]), scale),
                              FastTerm(noise.tol_eps, noise.offset[q])));
  }
  return bad;
}

// Whether one block's checks hold in double: every value finite and, for every q,
// |p_q - sum_j g[q, j] y_j| <= Threshold(q, scale) + kRoundingFloor * (|p_q| + sum_j |g[q, j] y_j|),
// scale as BlockNoise says (all values trusted). Data y[j * ys], checks p[q * ps]. A vector whose
// float check fails but whose checks hold here is float rounding, not an error.
template <typename T>
ECC_HD inline bool ChecksHold(const T* y, int64_t ys, const T* p, int64_t ps, const float* g, int b, int r,
                              const BlockNoise& noise) {
  double scale = noise.xscale < 0 ? 0.0 : noise.xscale;
  for (int j = 0; j < b; ++j) {
    const double v = static_cast<double>(y[j * ys]);
    if (!Finite(v)) return false;
    if (noise.xscale < 0 && fabs(v) > scale) scale = fabs(v);
  }
  for (int q = 0; q < r; ++q) {
    const double v = static_cast<double>(p[q * ps]);
    if (!Finite(v)) return false;
    if (noise.xscale < 0 && fabs(v) > scale) scale = fabs(v);
  }
  for (int q = 0; q < r; ++q) {
    double c = static_cast<double>(p[q * ps]), m = fabs(c);
    for (int j = 0; j < b; ++j) {
      const double t = DMul(static_cast<double>(g[q * b + j]), static_cast<double>(y[j * ys]));
      c = DSub(c, t);
      m = DAdd(m, fabs(t));
    }
    if (!(fabs(c) <= DAdd(Threshold(noise, q, scale), DMul(kRoundingFloor, m)))) return false;
  }
  return true;
}

// The exact step's working memory for one block of b data values and r checks: on the CPU a
// stack buffer of BlockScratchBytes(kMaxBlock, kMaxParity), on the device a slot of global memory
// per thread (so that no thread needs a large stack).
struct BlockScratch {
  double *values, *yb, *pb, *thr, *a, *m, *rhs, *z, *best_z;
  int* cand;
  unsigned char* is_unknown;
};

ECC_HD constexpr size_t BlockScratchBytes(int64_t b, int64_t r) {
  const int64_t doubles =
      (b + r) + b + r + r + kMaxParity * kMaxParity + kMaxParity * (kMaxParity + 1) + 3 * kMaxParity;
  return static_cast<size_t>((doubles * 8 + (b + r) * 4 + (b + r) + 15) / 16 * 16);
}

// Lays BlockScratch over base (8-byte aligned, BlockScratchBytes(b, r) bytes).
ECC_HD inline BlockScratch CarveBlockScratch(void* base, int64_t b, int64_t r) {
  BlockScratch s;
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

// Solves the small dense system (a: rows x cols, row-major) in the least-squares sense with
// normal equations and partial pivoting; m: [cols][kMaxParity + 1] scratch. Returns false when
// the columns are dependent.
ECC_HD inline bool LeastSquares(const double* a, const double* rhs, int rows, int cols, double* m, double* z) {
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
      if (fabs(m[i * w + c]) > fabs(m[piv * w + c])) piv = i;
    if (fabs(m[piv * w + c]) < 1e-12) return false;
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

// The hypothesis that exactly the positions in `unknown` (data < b <= parity) of s.values are
// wrong: re-solves the wrong data values from the checks whose parity is trusted (into s.z). The
// thresholds are recomputed per hypothesis, with scale='output' from the values it trusts.
// Returns the normalised residual, or -1 when a remaining check is violated.
ECC_HD inline double SolveUnknown(const BlockScratch& s, const float* g, const BlockNoise& noise, int b, int r,
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
    for (int i = 0; i < b + r; ++i)
      if (!s.is_unknown[i] && Finite(values[i]) && fabs(values[i]) > scale) scale = fabs(values[i]);
  }
  for (int k = 0; k < r; ++k) s.thr[k] = Threshold(noise, k, scale);
  double mag[kMaxParity];
  for (int q = 0; q < nrows; ++q) {
    const int k = rows[q];
    double c = values[b + k], m = fabs(values[b + k]);
    for (int j = 0; j < b; ++j)
      if (!s.is_unknown[j]) {
        const double t = DMul(static_cast<double>(g[k * b + j]), values[j]);
        c = DSub(c, t);
        m = DAdd(m, fabs(t));
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
      m = DAdd(m, fabs(t));
    }
    // The check's own threshold, plus the double-precision rounding of this residual, so that
    // no decision hinges on rounding when the values are huge.
    const double t = DAdd(s.thr[rows[q]], DMul(kRoundingFloor, m));
    if (!(fabs(res) <= t)) return -1;
    if (t > 0) {
      const double e = res / t;
      norm = DAdd(norm, DMul(e, e));
    }
  }
  return norm;
}

// What the exact step found in one vector beyond its block's known erasures (learned by the
// kernels' ErasureLearner, erasures.h): the positions it re-solved that were not known erasures
// (data j < b, check q at b + q), and which known erasures read right (their value as received
// agrees with the one the checks give).
struct BlockOutcome {
  int located = 0;
  int pos[kMaxParity];
  unsigned agree = 0;  // bit i: known erasure i reads right in this vector
};

// Whether known erasure u (data u < b, check u - b) reads right under the solved hypothesis in s
// (s.z, s.thr, s.is_unknown from SolveUnknown; z_u its solved value when u < b): data: for every
// check k whose parity is trusted, |g[k, u] (y_u - z_u)| <= thr_k + rounding; check q: the parity
// recomputed from the repaired data agrees with the one received within thr_q + rounding.
ECC_HD inline bool ErasureAgrees(const BlockScratch& s, const float* g, int b, int r, int u, double z_u,
                                 const int* data_u, int ndu) {
  if (u < b) {
    const double held = s.yb[u];
    if (!Finite(held)) return false;
    const double d = DSub(held, z_u);
    for (int k = 0; k < r; ++k) {
      if (s.is_unknown[b + k]) continue;
      const double gk = static_cast<double>(g[k * b + u]);
      const double m = DMul(fabs(gk), DAdd(fabs(held), fabs(z_u)));
      if (!(fabs(DMul(gk, d)) <= DAdd(s.thr[k], DMul(kRoundingFloor, m)))) return false;
    }
    return true;
  }
  const int q = u - b;
  const double held = s.pb[q];
  if (!Finite(held)) return false;
  double c = held, m = fabs(held);
  for (int j = 0; j < b; ++j) {
    double v = s.values[j];
    if (s.is_unknown[j])
      for (int i = 0; i < ndu; ++i)
        if (data_u[i] == j) v = s.z[i];
    const double t = DMul(static_cast<double>(g[q * b + j]), v);
    c = DSub(c, t);
    m = DAdd(m, fabs(t));
  }
  return fabs(c) <= DAdd(s.thr[q], DMul(kRoundingFloor, m));
}

// Decodes one block: data s.yb (b), parity s.pb (r), generator g (r x b, row-major). Returns 0
// when the checks hold (ChecksHold), the number of values re-solved (> 0) after a repair written
// into s.yb, or -1 when the block cannot be corrected (s.yb untouched). Erasures are the known
// ones (known[0..nk), sorted positions: data j, check b + q) and the non-finite values (at most r
// in all); they are solved first, from the parity equations (least squares), and then every
// t-subset of the other positions, t = 0, 1, ... up to (r - erasures) / 2, is tried; the
// hypothesis with the smallest normalised residual of the first t that has one wins, verified
// by the checks left over. out (if given): the positions located beyond the known erasures and
// which known erasures read right.
ECC_HD inline int DecodeBlock(const BlockScratch& s, const float* g, const BlockNoise& noise, int b, int r,
                              bool correct, const int* known = nullptr, int nk = 0, BlockOutcome* out = nullptr) {
  const int n = b + r;
  double* values = s.values;
  int erased[kMaxParity + 1], ne = 0, nonfinite = 0;
  if (out) {
    out->located = 0;
    out->agree = 0;
  }
  for (int i = 0, e = 0; i < n; ++i) {
    values[i] = i < b ? s.yb[i] : s.pb[i - b];
    const bool is_known = e < nk && known[e] == i;
    if (is_known) ++e;
    const bool finite = Finite(values[i]);
    if (is_known || !finite) {
      if (ne == r) return -1;
      erased[ne++] = i;
      nonfinite += !finite;
    }
  }
  if (nonfinite == 0 && ChecksHold(values, 1, values + b, 1, g, b, r, noise)) {
    if (out) out->agree = nk >= 32 ? ~0u : (1u << nk) - 1u;
    return 0;
  }
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
      if (out) {
        int data_u[kMaxParity], ndu = 0;
        for (int i = 0; i < best_nu; ++i)
          if (best_unknown[i] < b) data_u[ndu++] = best_unknown[i];
        for (int i = 0, e = 0; i < best_nu; ++i) {
          const int u = best_unknown[i];
          while (e < nk && known[e] < u) ++e;
          if (!(e < nk && known[e] == u)) out->pos[out->located++] = u;
        }
        if (nk > 0) {
          // The winner's thresholds and solution again (later hypotheses overwrote s.thr).
          SolveUnknown(s, g, noise, b, r, best_unknown, best_nu);
          for (int e = 0; e < nk; ++e) {
            double z_u = 0;
            for (int i = 0; i < ndu; ++i)
              if (data_u[i] == known[e]) z_u = s.z[i];
            if (ErasureAgrees(s, g, b, r, known[e], z_u, data_u, ndu)) out->agree |= 1u << e;
          }
        }
      }
      int u = 0;
      for (int i = 0; i < best_nu; ++i)
        if (best_unknown[i] < b) s.yb[best_unknown[i]] = s.best_z[u++];
      return best_nu;
    }
  }
  return -1;
}

// The exact step of one vector whose float check failed, or whose block holds known erasures
// (known[0..nk), as DecodeBlock): its data yd[j * ycs], checks yp[q * ycs]; Z and the residual at
// zd/rd[j * zcs], rd may be null; the fast path wrote act(data + R). Nothing more when its checks
// hold in double (float rounding, not counted); otherwise it is repaired (act(repaired data + R)
// rewritten), counted as flagged and corrected when values beyond the known erasures were
// re-solved (a vector whose only wrong values are known erasures is expected and not counted),
// or beyond correction (flagged, uncorrectable), when with Relu NaN passes the activation, so that
// a destroyed value stays visible downstream instead of becoming a plausible 0. out (if given):
// what DecodeBlock found.
ECC_HD inline void RepairVector(const BlockScratch& s, const float* g, const BlockNoise& noise, int b, int r,
                                bool correct, bool relu, const float* yd, const float* yp, int64_t ycs,
                                const float* rd, float* zd, int64_t zcs, DecodeCounts& counts,
                                const int* known = nullptr, int nk = 0, BlockOutcome* out = nullptr) {
  for (int j = 0; j < b; ++j) s.yb[j] = yd[j * ycs];
  for (int q = 0; q < r; ++q) s.pb[q] = yp[q * ycs];
  BlockOutcome local;
  BlockOutcome* o = out ? out : &local;
  const int fixed = DecodeBlock(s, g, noise, b, r, correct, known, nk, o);
  if (fixed == 0) return;
  if (fixed < 0) {
    ++counts.flagged;
    ++counts.uncorrectable;
    if (relu)
      for (int j = 0; j < b; ++j) {
        float v = yd[j * ycs];
        if (rd) v = FAdd(v, rd[j * zcs]);
        zd[j * zcs] = (v > 0.f || v != v) ? v : 0.f;
      }
    return;
  }
  if (o->located > 0) {
    ++counts.flagged;
    ++counts.corrected_blocks;
    counts.corrected_values += o->located;
  }
  for (int j = 0; j < b; ++j) {
    float v = static_cast<float>(s.yb[j]);
    if (rd) v = FAdd(v, rd[j * zcs]);
    zd[j * zcs] = Activate(relu, v);
  }
}

}  // namespace onnx_ecc
