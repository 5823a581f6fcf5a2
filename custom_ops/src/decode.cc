// Decoding of the output-channel code: a fast syndrome check, and a small exact solver for
// the rare block whose checks fail.
#include "onnx_ecc/decode.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

namespace onnx_ecc {
namespace {

constexpr double kEps32 = FLT_EPSILON;
constexpr int kMaxParity = 16;
constexpr int64_t kChunk = 256;
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

// Rows layout ([rows, C], channels contiguous): checks as short dot products per row.
void DecodeRows(const DecodeConfig& cfg, const VectorView& v, int64_t n, DecodeCounts& counts) {
  const CodeLayout& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  const double tol_eps = cfg.tolerance * kEps32;
  for (int64_t row = 0; row < n; ++row) {
    const float* yrow = v.y + row * v.y_vector_stride;
    const float* rrow = v.residual ? v.residual + row * v.z_vector_stride : nullptr;
    float* zrow = v.z + row * v.z_vector_stride;
    for (int64_t g = 0; g < L.groups; ++g) {
      const int64_t ybase = g * (L.data_per_group + L.parity_per_group);
      const int64_t zbase = g * L.data_per_group;
      for (int64_t k = 0; k < L.num_blocks(); ++k) {
        const int b = static_cast<int>(L.block_sizes[k]);
        const float* __restrict gen = cfg.generator.data() + L.gen_offsets[k];
        const float* __restrict yd = yrow + ybase + L.block_starts[k];
        const float* __restrict yp = yrow + ybase + L.data_per_group + k * r;
        float* __restrict zd = zrow + zbase + L.block_starts[k];
        const float* __restrict rd = rrow ? rrow + zbase + L.block_starts[k] : nullptr;
        const size_t a0 = static_cast<size_t>((g * L.num_blocks() + k) * r);
        float m = 0.f;
        for (int j = 0; j < b; ++j) {
          const float av = std::fabs(yd[j]);
          m = (av > m && av <= FLT_MAX) ? av : m;
        }
        for (int q = 0; q < r; ++q) {
          const float av = std::fabs(yp[q]);
          m = (av > m && av <= FLT_MAX) ? av : m;
        }
        const float scale = cfg.scale_output ? m : v.xmax[row * v.xmax_stride];
        bool bad = false;
        for (int q = 0; q < r; ++q) {
          float lanes[8] = {};
          const float* gq = gen + q * b;
          int j = 0;
          for (; j + 8 <= b; j += 8)
            for (int l = 0; l < 8; ++l) lanes[l] += gq[j + l] * yd[j + l];
          float acc = -yp[q];
          for (int l = 0; l < 8; ++l) acc += lanes[l];
          for (; j < b; ++j) acc += gq[j] * yd[j];
          const float thr = static_cast<float>(tol_eps * cfg.gain[a0 + q]) * scale + static_cast<float>(tol_eps * cfg.offset[a0 + q]);
          bad |= !(std::fabs(acc) <= thr);
        }
        if (rd && cfg.relu) {
          for (int j = 0; j < b; ++j) { const float x = yd[j] + rd[j]; zd[j] = x > 0.f ? x : 0.f; }
        } else if (rd) {
          for (int j = 0; j < b; ++j) zd[j] = yd[j] + rd[j];
        } else if (cfg.relu) {
          for (int j = 0; j < b; ++j) zd[j] = yd[j] > 0.f ? yd[j] : 0.f;
        } else {
          std::memcpy(zd, yd, sizeof(float) * b);
        }
        ++counts.vectors;
        if (bad) RepairVector(cfg, a0, gen, b, r, tol_eps, scale, yd, yp, 1, rd, zd, 1, counts);
      }
    }
  }
}

}  // namespace

void DecodeVectors(const DecodeConfig& cfg, const VectorView& v, int64_t n, DecodeCounts& counts) {
  if (v.y_channel_stride == 1 && v.z_channel_stride == 1) {
    DecodeRows(cfg, v, n, counts);
    return;
  }
  const CodeLayout& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  const double tol_eps = cfg.tolerance * kEps32;
  const int64_t ycs = v.y_channel_stride, yvs = v.y_vector_stride;
  const int64_t zcs = v.z_channel_stride, zvs = v.z_vector_stride;
  float syn[kMaxParity][kChunk];
  float mag[kChunk];
  float gain_f[kMaxParity], offset_f[kMaxParity];
  for (int64_t g = 0; g < L.groups; ++g) {
    const int64_t ybase = g * (L.data_per_group + L.parity_per_group);
    const int64_t zbase = g * L.data_per_group;
    for (int64_t k = 0; k < L.num_blocks(); ++k) {
      const int b = static_cast<int>(L.block_sizes[k]);
      const float* gen = cfg.generator.data() + L.gen_offsets[k];
      const float* yd = v.y + (ybase + L.block_starts[k]) * ycs;
      const float* yp = v.y + (ybase + L.data_per_group + k * r) * ycs;
      const float* rd = v.residual ? v.residual + (zbase + L.block_starts[k]) * zcs : nullptr;
      float* zd = v.z + (zbase + L.block_starts[k]) * zcs;
      const size_t a0 = static_cast<size_t>((g * L.num_blocks() + k) * r);
      for (int q = 0; q < r; ++q) {
        gain_f[q] = static_cast<float>(tol_eps * cfg.gain[a0 + q]);
        offset_f[q] = static_cast<float>(tol_eps * cfg.offset[a0 + q]);
      }
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t len = std::min(kChunk, n - c0);
        // One sweep over the block's channels: every check, the magnitude, and the output.
        for (int64_t i = 0; i < len; ++i) mag[i] = 0.f;
        for (int q = 0; q < r; ++q) {
          float* __restrict s = syn[q];
          const float* __restrict pq = yp + q * ycs + c0 * yvs;
          for (int64_t i = 0; i < len; ++i) {
            const float pv = pq[i * yvs];
            s[i] = -pv;
            const float av = std::fabs(pv);
            mag[i] = (av > mag[i] && av <= FLT_MAX) ? av : mag[i];  // non-finite values never raise it
          }
        }
        for (int j = 0; j < b; ++j) {
          const float* __restrict src = yd + j * ycs + c0 * yvs;
          const float* __restrict res = rd ? rd + j * zcs + c0 * zvs : nullptr;
          float* __restrict dst = zd + j * zcs + c0 * zvs;
          float* __restrict m = mag;
          if (r == 2) {
            const float w0 = gen[j], w1 = gen[b + j];
            float* __restrict s0 = syn[0];
            float* __restrict s1 = syn[1];
            for (int64_t i = 0; i < len; ++i) {
              const float x = src[i * yvs];
              s0[i] += w0 * x;
              s1[i] += w1 * x;
              const float av = std::fabs(x);
              m[i] = (av > m[i] && av <= FLT_MAX) ? av : m[i];
            }
          } else {
            for (int q = 0; q < r; ++q) {
              const float w = gen[q * b + j];
              float* __restrict s = syn[q];
              for (int64_t i = 0; i < len; ++i) s[i] += w * src[i * yvs];
            }
            for (int64_t i = 0; i < len; ++i) {
              const float av = std::fabs(src[i * yvs]);
              m[i] = (av > m[i] && av <= FLT_MAX) ? av : m[i];
            }
          }
          if (res && cfg.relu) {
            for (int64_t i = 0; i < len; ++i) { const float x = src[i * yvs] + res[i * zvs]; dst[i * zvs] = x > 0.f ? x : 0.f; }
          } else if (res) {
            for (int64_t i = 0; i < len; ++i) dst[i * zvs] = src[i * yvs] + res[i * zvs];
          } else if (cfg.relu) {
            for (int64_t i = 0; i < len; ++i) { const float x = src[i * yvs]; dst[i * zvs] = x > 0.f ? x : 0.f; }
          } else if (yvs == 1 && zvs == 1) {
            std::memcpy(dst, src, sizeof(float) * len);
          } else {
            for (int64_t i = 0; i < len; ++i) dst[i * zvs] = src[i * yvs];
          }
        }
        counts.vectors += len;
        for (int64_t i = 0; i < len; ++i) {
          const int64_t pos = c0 + i;
          const float xscale = cfg.scale_output ? 0.f : v.xmax[pos * v.xmax_stride];
          const float scale = cfg.scale_output ? mag[i] : xscale;
          bool bad = false;
          for (int q = 0; q < r; ++q) bad |= !(std::fabs(syn[q][i]) <= gain_f[q] * scale + offset_f[q]);
          if (bad)
            RepairVector(cfg, a0, gen, b, r, tol_eps, xscale, yd + pos * yvs, yp + pos * yvs, ycs,
                         rd ? rd + pos * zvs : nullptr, zd + pos * zvs, zcs, counts);
        }
      }
    }
  }
}

}  // namespace onnx_ecc
