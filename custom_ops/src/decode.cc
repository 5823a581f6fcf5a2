// Decoding of the output-channel code: a fast syndrome check, and a small exact solver for
// the rare block whose checks fail.
#include "onnx_ecc/decode.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "sweeps.h"

namespace onnx_ecc {
namespace {

constexpr double kEps32 = FLT_EPSILON;
using sweep::kChunk;
using sweep::kMaxParity;
constexpr double kRoundingFloor = 0x1p-40;  // relative rounding allowance of a residual in double

// Solves the small dense system (a: rows x cols, row-major) in the least-squares sense with
// normal equations and partial pivoting. Returns false when the columns are dependent.
bool LeastSquares(const double* a, const double* rhs, int rows, int cols, double* z) {
  double m[kMaxParity][kMaxParity + 1];
  for (int i = 0; i < cols; ++i) {
    for (int j = 0; j < cols; ++j) {
      double s = 0;
      for (int k = 0; k < rows; ++k) s += a[k * cols + i] * a[k * cols + j];
      m[i][j] = s;
    }
    double s = 0;
    for (int k = 0; k < rows; ++k) s += a[k * cols + i] * rhs[k];
    m[i][cols] = s;
  }
  for (int c = 0; c < cols; ++c) {
    int piv = c;
    for (int i = c + 1; i < cols; ++i)
      if (std::fabs(m[i][c]) > std::fabs(m[piv][c])) piv = i;
    if (std::fabs(m[piv][c]) < 1e-12) return false;
    if (piv != c)
      for (int j = 0; j <= cols; ++j) std::swap(m[c][j], m[piv][j]);
    for (int i = 0; i < cols; ++i) {
      if (i == c) continue;
      double f = m[i][c] / m[c][c];
      for (int j = c; j <= cols; ++j) m[i][j] -= f * m[c][j];
    }
  }
  for (int c = 0; c < cols; ++c) z[c] = m[c][cols] / m[c][c];
  return true;
}

// Tries the hypothesis that exactly the positions in `unknown` (data < b <= parity) are wrong:
// re-solves the wrong data values from the checks whose parity is trusted. Returns the
// normalised residual, or -1 when a remaining check is violated.
double SolveUnknown(const double* values, const float* g, const BlockNoise& noise, int b, int r,
                    const int* unknown, int nu, double* z) {
  bool is_unknown[1024 + kMaxParity] = {};
  int data_u[kMaxParity], ndu = 0;
  for (int i = 0; i < nu; ++i) {
    is_unknown[unknown[i]] = true;
    if (unknown[i] < b) data_u[ndu++] = unknown[i];
  }
  int rows[kMaxParity], nrows = 0;
  for (int k = 0; k < r; ++k)
    if (!is_unknown[b + k]) rows[nrows++] = k;
  if (nrows < ndu) return -1;
  double scale = noise.xscale;
  if (scale < 0) {
    scale = 0;
    for (int i = 0; i < b + r; ++i)
      if (!is_unknown[i] && std::isfinite(values[i])) scale = std::max(scale, std::fabs(values[i]));
  }
  double thr[kMaxParity];
  for (int k = 0; k < r; ++k) thr[k] = noise.tol_eps * (noise.gain[k] * scale + noise.offset[k]);
  double a[kMaxParity * kMaxParity], rhs[kMaxParity], mag[kMaxParity];
  for (int q = 0; q < nrows; ++q) {
    const int k = rows[q];
    double c = values[b + k], m = std::fabs(values[b + k]);
    for (int j = 0; j < b; ++j)
      if (!is_unknown[j]) {
        const double t = static_cast<double>(g[k * b + j]) * values[j];
        c -= t;
        m += std::fabs(t);
      }
    rhs[q] = c;
    mag[q] = m;
    for (int u = 0; u < ndu; ++u) a[q * ndu + u] = g[k * b + data_u[u]];
  }
  if (ndu > 0 && !LeastSquares(a, rhs, nrows, ndu, z)) return -1;
  double norm = 0;
  for (int q = 0; q < nrows; ++q) {
    double res = rhs[q], m = mag[q];
    for (int u = 0; u < ndu; ++u) {
      const double t = a[q * ndu + u] * z[u];
      res -= t;
      m += std::fabs(t);
    }
    // The check's own threshold, plus the double-precision rounding of this residual, so that
    // no decision hinges on rounding when the values are huge.
    const double t = thr[rows[q]] + kRoundingFloor * m;
    if (!(std::fabs(res) <= t)) return -1;
    if (t > 0) norm += (res / t) * (res / t);
  }
  return norm;
}

}  // namespace

std::string CodeLayout::Init(int64_t c, int64_t g, int64_t b, int64_t r) {
  if (c < 1 || g < 1 || b < 1 || r < 1) return "data_channels, groups, block and parity must be >= 1";
  if (c % g) return "data_channels is not a multiple of groups";
  if (r > kMaxParity) return "parity must be <= 16";
  if (b > 1024) return "block must be <= 1024";
  data_channels = c; groups = g; block = b; parity = r;
  data_per_group = c / g;
  block_sizes.clear(); block_starts.clear(); gen_offsets.clear();
  int64_t off = 0;
  for (int64_t s = 0; s < data_per_group; s += b) {
    block_starts.push_back(s);
    block_sizes.push_back(std::min(b, data_per_group - s));
    gen_offsets.push_back(off);
    off += r * block_sizes.back();
  }
  parity_per_group = r * num_blocks();
  total_channels = g * (data_per_group + parity_per_group);
  return "";
}

std::string DecodeConfig::Validate() const {
  const auto& L = layout;
  if (static_cast<int64_t>(generator.size()) != L.parity * L.data_per_group)
    return "generator has " + std::to_string(generator.size()) + " values, expected parity * data_channels / groups = " +
           std::to_string(L.parity * L.data_per_group);
  const size_t n = static_cast<size_t>(L.groups * L.num_blocks() * L.parity);
  if (gain.size() != n || offset.size() != n)
    return "noise_gain and noise_offset must have groups * blocks * parity = " + std::to_string(n) + " values";
  for (float v : generator) if (!std::isfinite(v)) return "generator has non-finite values";
  if (!(tolerance > 0)) return "tolerance must be > 0";
  return "";
}

int DecodeBlock(double* y, const double* p, const float* g, const BlockNoise& noise, int b, int r, bool correct) {
  const int n = b + r;
  double values[1024 + kMaxParity];
  int erased[kMaxParity + 1], ne = 0;
  for (int i = 0; i < n; ++i) {
    values[i] = i < b ? y[i] : p[i - b];
    if (!std::isfinite(values[i])) {
      if (ne == r) return -1;
      erased[ne++] = i;
    }
  }
  double z0[kMaxParity];
  if (ne == 0 && SolveUnknown(values, g, noise, b, r, erased, 0, z0) >= 0) return 0;
  if (!correct) return -1;
  int cand[1024 + kMaxParity], nc = 0;
  for (int i = 0, e = 0; i < n; ++i) {
    if (e < ne && erased[e] == i) { ++e; continue; }
    cand[nc++] = i;
  }
  for (int i = 0; i < ne; ++i) if (erased[i] < b) values[erased[i]] = 0.0;
  const int tmax = (r - ne) / 2;
  int unknown[kMaxParity], best_unknown[kMaxParity], idx[kMaxParity];
  double z[kMaxParity], best_z[kMaxParity];
  for (int t = 0; t <= tmax; ++t) {
    double best = -1;
    int best_nu = 0;
    // Iterate over all t-subsets of the candidate positions.
    for (int i = 0; i < t; ++i) idx[i] = i;
    if (t > nc) break;
    while (true) {
      int nu = 0;
      for (int i = 0; i < ne; ++i) unknown[nu++] = erased[i];
      for (int i = 0; i < t; ++i) unknown[nu++] = cand[idx[i]];
      double res = SolveUnknown(values, g, noise, b, r, unknown, nu, z);
      if (res >= 0 && (best < 0 || res < best)) {
        best = res; best_nu = nu;
        std::copy(unknown, unknown + nu, best_unknown);
        std::copy(z, z + kMaxParity, best_z);
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
        if (best_unknown[i] < b) y[best_unknown[i]] = best_z[u++];
      return best_nu;
    }
  }
  return -1;
}

void ChunkMaxAbs(const float* x, int64_t n, int64_t outer, int64_t chunk_begin, int64_t chunk_end, float* out) {
  const bool chunked = outer > 0 && n % outer == 0;
  const int64_t len = chunked ? n / outer : n;
  for (int64_t o = chunk_begin; o < chunk_end; ++o) {
    const float* __restrict p = x + (chunked ? o * len : 0);
    float lanes[16] = {};
    int64_t i = 0;
    for (; i + 16 <= len; i += 16)
      for (int l = 0; l < 16; ++l) {
        const float a = std::fabs(p[i + l]);
        lanes[l] = a > lanes[l] ? a : lanes[l];  // NaN compares false and is skipped
      }
    float m = 0.f;
    for (int l = 0; l < 16; ++l) m = lanes[l] > m ? lanes[l] : m;
    for (; i < len; ++i) {
      const float a = std::fabs(p[i]);
      m = a > m ? a : m;
    }
    out[o] = std::isfinite(m) ? m : FLT_MAX;
  }
}

namespace {

// The rare path of one flagged vector: recheck in double precision and, if the checks really
// fail, solve and write act(repaired + residual). Channel j of the vector is at y_data[j * ycs],
// check q at y_par[q * ycs], output and residual at z[j * zcs], res[j * zcs].
void RepairVector(const DecodeConfig& cfg, size_t a0, const float* gen, int b, int r, double tol_eps, double xscale,
                  const float* y_data, const float* y_par, int64_t ycs, const float* res, float* z, int64_t zcs,
                  DecodeCounts& counts) {
  double yb[1024], pb[kMaxParity];
  for (int j = 0; j < b; ++j) yb[j] = y_data[j * ycs];
  for (int q = 0; q < r; ++q) pb[q] = y_par[q * ycs];
  const BlockNoise noise{cfg.gain.data() + a0, cfg.offset.data() + a0, tol_eps, cfg.scale_output ? -1.0 : xscale};
  const int fixed = DecodeBlock(yb, pb, gen, noise, b, r, cfg.correct);
  if (fixed == 0) return;  // float rounding of the fast check, not an error
  ++counts.flagged;
  if (fixed < 0) {
    // Beyond correction: pass the values on, but let NaN through the activation, so that a
    // destroyed value stays visible downstream instead of becoming a plausible 0.
    ++counts.uncorrectable;
    if (cfg.relu)
      for (int j = 0; j < b; ++j) {
        float x = y_data[j * ycs];
        if (res) x += res[j * zcs];
        z[j * zcs] = (x > 0.f || x != x) ? x : 0.f;
      }
    return;
  }
  ++counts.corrected_blocks;
  counts.corrected_values += fixed;
  for (int j = 0; j < b; ++j) {
    float x = static_cast<float>(yb[j]);
    if (res) x += res[j * zcs];
    z[j * zcs] = cfg.relu && !(x > 0.f) ? 0.f : x;
  }
}

// Rows layout ([rows, C], channels contiguous): checks as short dot products per row, over the
// blocks [kb0, kb1) of the flattened (group, block) index.
template <int kOut>
ECC_INLINE void DecodeRowsT(const DecodeConfig& cfg, const VectorView& v, int64_t n, int64_t kb0, int64_t kb1,
                 DecodeCounts& counts) {
  const CodeLayout& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  const double tol_eps = cfg.tolerance * kEps32;
  const int64_t nb = L.num_blocks();
  for (int64_t row = 0; row < n; ++row) {
    const float* yrow = v.y + row * v.y_vector_stride;
    const float* rrow = v.residual ? v.residual + row * v.z_vector_stride : nullptr;
    float* zrow = v.z + row * v.z_vector_stride;
    const float xscale = cfg.scale_output ? -1.f : v.xmax[row * v.xmax_stride];
    for (int64_t gk = kb0, g = kb0 / nb, k = kb0 % nb; gk < kb1; ++gk, k = k + 1 < nb ? k + 1 : 0, g += k == 0) {
      const int64_t ybase = g * (L.data_per_group + L.parity_per_group);
      const int64_t zbase = g * L.data_per_group;
      const int b = static_cast<int>(L.block_sizes[k]);
      const float* gen = cfg.generator.data() + L.gen_offsets[k];
      const float* yd = yrow + ybase + L.block_starts[k];
      const float* yp = yrow + ybase + L.data_per_group + k * r;
      float* zd = zrow + zbase + L.block_starts[k];
      const float* rd = rrow ? rrow + zbase + L.block_starts[k] : nullptr;
      const size_t a0 = static_cast<size_t>(gk * r);
      if (r == 2 && b % 8 == 0 && k + 3 < nb && gk + 3 < kb1 && L.block_sizes[k + 3] == b) {
        // Four full blocks at once (their data, checks and generators are adjacent).
        const unsigned bad = sweep::RowQuad2<kOut>(yd, yp, rd, zd, gen, b, cfg.gain_f.data() + a0,
                                                   cfg.offset_f.data() + a0, xscale);
        for (int m = 0; m < 4; ++m)
          if (bad >> m & 1u)
            RepairVector(cfg, a0 + 2 * m, gen + 2 * b * m, b, r, tol_eps, xscale, yd + m * b, yp + 2 * m, 1,
                         rd ? rd + m * b : nullptr, zd + m * b, 1, counts);
        gk += 3;
        k += 3;
        continue;
      }
      const bool bad = sweep::RowBlock<kOut>(yd, yp, rd, zd, gen, b, r, cfg.gain_f.data() + a0,
                                             cfg.offset_f.data() + a0, xscale);
      if (bad) RepairVector(cfg, a0, gen, b, r, tol_eps, xscale, yd, yp, 1, rd, zd, 1, counts);
    }
  }
  counts.vectors += n * (kb1 - kb0);
}

// Planar layout (channels strided, positions contiguous): one sweep per block and chunk of
// positions forms every check, the scale and the output; flagged positions are then repaired.
template <int kOut>
ECC_INLINE void DecodePlanarT(const DecodeConfig& cfg, const VectorView& v, int64_t n, int64_t kb0, int64_t kb1,
                   DecodeCounts& counts) {
  const CodeLayout& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  const double tol_eps = cfg.tolerance * kEps32;
  const int64_t ycs = v.y_channel_stride, zcs = v.z_channel_stride;
  const int64_t nb = L.num_blocks();
  alignas(64) float syn[kMaxParity][kChunk];
  alignas(64) float mag[kChunk];
  alignas(64) unsigned char bad[kChunk];
  for (int64_t gk = kb0; gk < kb1; ++gk) {
    const int64_t g = gk / nb, k = gk % nb;
    const int64_t ybase = g * (L.data_per_group + L.parity_per_group);
    const int64_t zbase = g * L.data_per_group;
    const int b = static_cast<int>(L.block_sizes[k]);
    const float* gen = cfg.generator.data() + L.gen_offsets[k];
    const float* yd = v.y + (ybase + L.block_starts[k]) * ycs;
    const float* yp = v.y + (ybase + L.data_per_group + k * r) * ycs;
    const float* rd = v.residual ? v.residual + (zbase + L.block_starts[k]) * zcs : nullptr;
    float* zd = v.z + (zbase + L.block_starts[k]) * zcs;
    const size_t a0 = static_cast<size_t>(gk * r);
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t len = std::min(kChunk, n - c0);
      sweep::PlanarBlock<kOut>(yd + c0, ycs, yp + c0, ycs, rd ? rd + c0 : nullptr, zd + c0, zcs, gen, b, r, len, syn,
                               mag);
      const float xscale = cfg.scale_output ? -1.f : v.xmax[0];
      if (!sweep::PlanarFailures(syn, mag, xscale, cfg.gain_f.data() + a0, cfg.offset_f.data() + a0, r, len, bad))
        continue;
      for (int64_t i = 0; i < len; ++i) {
        if (!bad[i]) continue;
        const int64_t pos = c0 + i;
        RepairVector(cfg, a0, gen, b, r, tol_eps, cfg.scale_output ? 0.f : v.xmax[0], yd + pos, yp + pos, ycs,
                     rd ? rd + pos : nullptr, zd + pos, zcs, counts);
      }
    }
  }
  counts.vectors += n * (kb1 - kb0);
}

int OutKind(const DecodeConfig& cfg, bool residual) {
  return residual ? (cfg.relu ? sweep::kResRelu : sweep::kRes) : (cfg.relu ? sweep::kRelu : sweep::kCopy);
}

ECC_CLONES
void DecodeRows(const DecodeConfig& cfg, const VectorView& v, int64_t n, int64_t kb0, int64_t kb1,
                DecodeCounts& counts) {
  switch (OutKind(cfg, v.residual != nullptr)) {
    case sweep::kCopy: return DecodeRowsT<sweep::kCopy>(cfg, v, n, kb0, kb1, counts);
    case sweep::kRelu: return DecodeRowsT<sweep::kRelu>(cfg, v, n, kb0, kb1, counts);
    case sweep::kRes: return DecodeRowsT<sweep::kRes>(cfg, v, n, kb0, kb1, counts);
    default: return DecodeRowsT<sweep::kResRelu>(cfg, v, n, kb0, kb1, counts);
  }
}

ECC_CLONES
void DecodePlanar(const DecodeConfig& cfg, const VectorView& v, int64_t n, int64_t kb0, int64_t kb1,
                  DecodeCounts& counts) {
  switch (OutKind(cfg, v.residual != nullptr)) {
    case sweep::kCopy: return DecodePlanarT<sweep::kCopy>(cfg, v, n, kb0, kb1, counts);
    case sweep::kRelu: return DecodePlanarT<sweep::kRelu>(cfg, v, n, kb0, kb1, counts);
    case sweep::kRes: return DecodePlanarT<sweep::kRes>(cfg, v, n, kb0, kb1, counts);
    default: return DecodePlanarT<sweep::kResRelu>(cfg, v, n, kb0, kb1, counts);
  }
}

// Any other strides (not produced by the ORT wrappers today): the plain per-vector loop.
void DecodeStrided(const DecodeConfig& cfg, const VectorView& v, int64_t n, int64_t kb0, int64_t kb1,
                   DecodeCounts& counts) {
  const CodeLayout& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  const double tol_eps = cfg.tolerance * kEps32;
  const int64_t ycs = v.y_channel_stride, yvs = v.y_vector_stride;
  const int64_t zcs = v.z_channel_stride, zvs = v.z_vector_stride;
  const int64_t nb = L.num_blocks();
  for (int64_t gk = kb0; gk < kb1; ++gk) {
    const int64_t g = gk / nb, k = gk % nb;
    const int64_t ybase = g * (L.data_per_group + L.parity_per_group);
    const int64_t zbase = g * L.data_per_group;
    const int b = static_cast<int>(L.block_sizes[k]);
    const float* gen = cfg.generator.data() + L.gen_offsets[k];
    const size_t a0 = static_cast<size_t>(gk * r);
    for (int64_t i = 0; i < n; ++i) {
      const float* yd = v.y + (ybase + L.block_starts[k]) * ycs + i * yvs;
      const float* yp = v.y + (ybase + L.data_per_group + k * r) * ycs + i * yvs;
      const float* rd = v.residual ? v.residual + (zbase + L.block_starts[k]) * zcs + i * zvs : nullptr;
      float* zd = v.z + (zbase + L.block_starts[k]) * zcs + i * zvs;
      float syn[kMaxParity], m = 0.f;
      for (int q = 0; q < r; ++q) {
        syn[q] = -yp[q * ycs];
        m = sweep::MaxFinite(m, yp[q * ycs]);
      }
      for (int j = 0; j < b; ++j) {
        const float x = yd[j * ycs];
        for (int q = 0; q < r; ++q) syn[q] += gen[q * b + j] * x;
        m = sweep::MaxFinite(m, x);
        float o = rd ? x + rd[j * zcs] : x;
        zd[j * zcs] = cfg.relu ? (o > 0.f ? o : 0.f) : o;
      }
      const float xscale = cfg.scale_output ? 0.f : v.xmax[i * v.xmax_stride];
      const float scale = cfg.scale_output ? m : xscale;
      bool bad = false;
      for (int q = 0; q < r; ++q) bad |= !(std::fabs(syn[q]) <= cfg.gain_f[a0 + q] * scale + cfg.offset_f[a0 + q]);
      if (bad) RepairVector(cfg, a0, gen, b, r, tol_eps, xscale, yd, yp, ycs, rd, zd, zcs, counts);
    }
  }
  counts.vectors += n * (kb1 - kb0);
}

}  // namespace

void DecodeConfig::PrepareThresholds() {
  const double tol_eps = tolerance * kEps32;
  gain_f.resize(gain.size());
  offset_f.resize(offset.size());
  for (size_t i = 0; i < gain.size(); ++i) gain_f[i] = static_cast<float>(tol_eps * gain[i]);
  for (size_t i = 0; i < offset.size(); ++i) offset_f[i] = static_cast<float>(tol_eps * offset[i]);
}

void DecodeVectors(const DecodeConfig& cfg, const VectorView& v, int64_t n, DecodeCounts& counts, int64_t block_begin,
                   int64_t block_end) {
  const int64_t blocks = cfg.layout.groups * cfg.layout.num_blocks();
  const int64_t kb0 = std::max<int64_t>(block_begin, 0);
  const int64_t kb1 = block_end < 0 ? blocks : std::min(block_end, blocks);
  if (n <= 0 || kb0 >= kb1) return;
  if (v.y_channel_stride == 1 && v.z_channel_stride == 1)
    DecodeRows(cfg, v, n, kb0, kb1, counts);
  else if (v.y_vector_stride == 1 && v.z_vector_stride == 1 && (cfg.scale_output || v.xmax_stride == 0))
    DecodePlanar(cfg, v, n, kb0, kb1, counts);
  else
    DecodeStrided(cfg, v, n, kb0, kb1, counts);
}

}  // namespace onnx_ecc
