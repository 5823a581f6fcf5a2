// Decoding of the output-channel code on the CPU: the sweeps (sweeps.h) form the fast float
// checks of many vectors at a time, and a vector that fails goes to the exact step of
// decode_math.h, the same per-vector maths the CUDA kernels run.
#include "onnx_ecc/decode.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "sweeps.h"

namespace onnx_ecc {

std::string CodeLayout::Init(int64_t c, int64_t g, int64_t b, int64_t r) {
  if (c < 1 || g < 1 || b < 1 || r < 1) return "data_channels, groups, block and parity must be >= 1";
  if (c % g) return "data_channels is not a multiple of groups";
  if (r > kMaxParity) return "parity must be <= " + std::to_string(kMaxParity);
  if (b > kMaxBlock) return "block must be <= " + std::to_string(kMaxBlock);
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
    out[o] = InputScale(m);
  }
}

namespace {

using sweep::kChunk;

// The exact step of one flagged vector (RepairVector of decode_math.h) in a stack scratch: channel
// j of the vector at y_data[j * ycs], check q at y_par[q * ycs], output and residual at z[j * zcs],
// res[j * zcs]; block thresholds from a0 in cfg's gain and offset. Cold: the sweeps' rare path,
// and the path of every vector of a block with known erasures (er, block gk): then the positions
// located beyond them and the known erasures that read wrong are marked for the learner.
__attribute__((cold, noinline)) void RepairFlagged(const DecodeConfig& cfg, size_t a0, const float* gen, int b, int r,
                                                   double tol_eps, double xscale, const float* y_data,
                                                   const float* y_par, int64_t ycs, const float* res, float* z,
                                                   int64_t zcs, DecodeCounts& counts, const RunErasures* er = nullptr) {
  alignas(16) unsigned char scratch[BlockScratchBytes(kMaxBlock, kMaxParity)];
  const BlockNoise noise{cfg.gain.data() + a0, cfg.offset.data() + a0, tol_eps, cfg.scale_output ? -1.0 : xscale};
  const int64_t gk = static_cast<int64_t>(a0) / r;
  const int nk = er && er->count ? er->count[gk] : 0;
  const int* known = nk ? er->pos + gk * kMaxParity : nullptr;
  BlockOutcome out;
  RepairVector(CarveBlockScratch(scratch, b, r), gen, noise, b, r, cfg.correct, cfg.relu, y_data, y_par, ycs, res, z,
               zcs, counts, known, nk, &out);
  if (!er || !er->located) return;
  for (int i = 0; i < out.located; ++i)
    er->located[cfg.layout.Channel(gk, out.pos[i])].store(er->run, std::memory_order_relaxed);
  for (int i = 0; i < nk; ++i)
    if (!(out.agree >> i & 1u)) er->disagree[cfg.layout.Channel(gk, known[i])].store(er->run, std::memory_order_relaxed);
}

// Whether block gk has known erasures (its every vector then goes to the exact step).
ECC_INLINE bool Erased(const RunErasures* er, int64_t gk) { return er && er->count && er->count[gk] > 0; }

// Rows layout ([rows, C], channels contiguous): checks as short dot products per row, over the
// blocks [kb0, kb1) of the flattened (group, block) index.
template <int kOut>
ECC_INLINE void DecodeRowsT(const DecodeConfig& cfg, const VectorView& v, int64_t n, int64_t kb0, int64_t kb1,
                 DecodeCounts& counts) {
  const CodeLayout& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  const double tol_eps = TolEps(cfg.tolerance);
  const int64_t nb = L.num_blocks();
  const RunErasures* er = v.erasures;
  const bool er_any = er && er->count;
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
      if (er_any && Erased(er, gk)) {
        WriteVector(yd, 1, rd, zd, 1, b, cfg.relu);
        RepairFlagged(cfg, a0, gen, b, r, tol_eps, xscale, yd, yp, 1, rd, zd, 1, counts, er);
        continue;
      }
      if (r == 2 && b % 8 == 0 && k + 3 < nb && gk + 3 < kb1 && L.block_sizes[k + 3] == b &&
          !(er_any && (Erased(er, gk + 1) || Erased(er, gk + 2) || Erased(er, gk + 3)))) {
        // Four full blocks at once (their data, checks and generators are adjacent).
        const unsigned bad = sweep::RowQuad2<kOut>(yd, yp, rd, zd, gen, b, cfg.gain_f.data() + a0,
                                                   cfg.offset_f.data() + a0, xscale);
        for (int m = 0; m < 4; ++m)
          if (bad >> m & 1u)
            RepairFlagged(cfg, a0 + 2 * m, gen + 2 * b * m, b, r, tol_eps, xscale, yd + m * b, yp + 2 * m, 1,
                         rd ? rd + m * b : nullptr, zd + m * b, 1, counts, er);
        gk += 3;
        k += 3;
        continue;
      }
      const bool bad = sweep::RowBlock<kOut>(yd, yp, rd, zd, gen, b, r, cfg.gain_f.data() + a0,
                                             cfg.offset_f.data() + a0, xscale);
      if (bad) RepairFlagged(cfg, a0, gen, b, r, tol_eps, xscale, yd, yp, 1, rd, zd, 1, counts, er);
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
  const double tol_eps = TolEps(cfg.tolerance);
  const int64_t ycs = v.y_channel_stride, zcs = v.z_channel_stride;
  const int64_t nb = L.num_blocks();
  alignas(64) float syn[kMaxParity][kChunk];
  alignas(64) int32_t mag[kChunk];  // the scales' keys (sweep::MagKey)
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
      const bool erased = Erased(v.erasures, gk);
      if (!erased &&
          !sweep::PlanarFailures(syn, mag, xscale, cfg.gain_f.data() + a0, cfg.offset_f.data() + a0, r, len, bad))
        continue;
      for (int64_t i = 0; i < len; ++i) {
        if (!erased && !bad[i]) continue;
        const int64_t pos = c0 + i;
        RepairFlagged(cfg, a0, gen, b, r, tol_eps, cfg.scale_output ? 0.f : v.xmax[0], yd + pos, yp + pos, ycs,
                     rd ? rd + pos : nullptr, zd + pos, zcs, counts, v.erasures);
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
  const double tol_eps = TolEps(cfg.tolerance);
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
      WriteVector(yd, ycs, rd, zd, zcs, b, cfg.relu);
      const BlockNoise noise{cfg.gain.data() + a0, cfg.offset.data() + a0, tol_eps, 0.0};
      const float xscale = cfg.scale_output ? 0.f : v.xmax[i * v.xmax_stride];
      if (Erased(v.erasures, gk) || FastChecksFail(yd, yp, ycs, gen, b, r, noise, cfg.scale_output ? -1.f : xscale, false))
        RepairFlagged(cfg, a0, gen, b, r, tol_eps, xscale, yd, yp, ycs, rd, zd, zcs, counts, v.erasures);
    }
  }
  counts.vectors += n * (kb1 - kb0);
}

}  // namespace

void DecodeConfig::PrepareThresholds() {
  const double tol_eps = TolEps(tolerance);
  gain_f.resize(gain.size());
  offset_f.resize(offset.size());
  for (size_t i = 0; i < gain.size(); ++i) gain_f[i] = FastTerm(tol_eps, gain[i]);
  for (size_t i = 0; i < offset.size(); ++i) offset_f[i] = FastTerm(tol_eps, offset[i]);
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
