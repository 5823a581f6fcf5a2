// ParityCheck: the maths (parity_check.h) and its onnxruntime CPU kernel.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "onnx_ecc/parity_check.h"
#include "cpu_work.h"
#include "sweeps.h"

namespace onnx_ecc {

std::string ParityCheckConfig::Validate() const {
  const auto& L = layout;
  if (L.groups != 1) return "ParityCheck has no groups";
  if (static_cast<int64_t>(generator.size()) != L.parity * L.data_channels)
    return "generator has " + std::to_string(generator.size()) + " values, expected parity * data_channels = " +
           std::to_string(L.parity * L.data_channels);
  const size_t n = static_cast<size_t>(L.num_blocks() * L.parity);
  if (gain.size() != n || offset.size() != n)
    return "noise_gain and noise_offset must have blocks * parity = " + std::to_string(n) + " values";
  for (float v : generator) if (!std::isfinite(v)) return "generator has non-finite values";
  if (!(tolerance > 0)) return "tolerance must be > 0";
  return "";
}

void ParityCheckConfig::Prepare() {
  gain_f.resize(gain.size());
  offset_f.resize(offset.size());
  fast = true;
  const double tol_eps = TolEps(tolerance);
  for (size_t a = 0; a < gain.size(); ++a) {
    gain_f[a] = FastTerm(tol_eps, gain[a]);
    offset_f[a] = FastTerm(tol_eps, offset[a]);
    // gain_f * scale + offset_f must stay finite for every finite scale, or an infinite
    // syndrome could pass the float test.
    if (!(std::fabs(gain_f[a]) <= 0.5f) || !(std::fabs(offset_f[a]) <= FLT_MAX / 4)) fast = false;
  }
}

bool ParityBlockHolds(const ParityCheckConfig& cfg, int64_t k, const float* y, int64_t ycs, const float* p,
                      int64_t pcs) {
  const auto& L = cfg.layout;
  const size_t a = static_cast<size_t>(k * L.parity);
  return ParityBlockHoldsExact(y, ycs, p, pcs, cfg.generator.data() + L.gen_offsets[k], static_cast<int>(L.block_sizes[k]),
                               static_cast<int>(L.parity), cfg.gain.data() + a, cfg.offset.data() + a, cfg.tolerance);
}

namespace {

using sweep::kChunk;

// Channels contiguous ([rows, C]): per row and block, one pass over the block's values.
ECC_INLINE void CheckRows(const ParityCheckConfig& cfg, const float* y, int64_t yvs, const float* p, int64_t pvs,
                          int64_t n, int64_t kb0, int64_t kb1, DecodeCounts& counts) {
  const auto& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  for (int64_t row = 0; row < n; ++row) {
    const float* yr = y + row * yvs;
    const float* pr = p + row * pvs;
    for (int64_t k = kb0; k < kb1; ++k) {
      const int b = static_cast<int>(L.block_sizes[k]);
      const float* yk = yr + L.block_starts[k];
      const float* pk = pr + k * r;
      if (cfg.fast && r == 2 && b % 8 == 0 && k + 3 < kb1 && L.block_sizes[k + 3] == b) {
        // Four full blocks at once (their data, checks and generators are adjacent); blocks of 32,
        // the default, with the loops unrolled (30% faster at 1024x1024 on one thread).
        const unsigned bad = (b == 32 ? sweep::RowQuad2<sweep::kNone, 32>(yk, pk, nullptr, nullptr,
                                                           cfg.generator.data() + L.gen_offsets[k], b,
                                                           cfg.gain_f.data() + k * r, cfg.offset_f.data() + k * r, -1.f)
                            : sweep::RowQuad2<sweep::kNone>(yk, pk, nullptr, nullptr,
                                                           cfg.generator.data() + L.gen_offsets[k], b,
                                                           cfg.gain_f.data() + k * r, cfg.offset_f.data() + k * r, -1.f));
        for (int m = 0; m < 4; ++m)
          if ((bad >> m & 1u) && !ParityBlockHolds(cfg, k + m, yk + m * b, 1, pk + 2 * m, 1)) ++counts.flagged;
        k += 3;
        continue;
      }
      const bool bad = !cfg.fast || sweep::RowBlock<sweep::kNone>(yk, pk, nullptr, nullptr,
                                                                   cfg.generator.data() + L.gen_offsets[k], b, r,
                                                                   cfg.gain_f.data() + k * r, cfg.offset_f.data() + k * r, -1.f);
      if (bad && !ParityBlockHolds(cfg, k, yk, 1, pk, 1)) ++counts.flagged;
    }
  }
  counts.vectors += n * (kb1 - kb0);
}

// Channels strided, positions contiguous (NCHW): one sweep per block and chunk of positions.
ECC_INLINE void CheckPlanar(const ParityCheckConfig& cfg, const float* y, int64_t ycs, const float* p, int64_t pcs,
                            int64_t n, int64_t kb0, int64_t kb1, DecodeCounts& counts) {
  const auto& L = cfg.layout;
  const int r = static_cast<int>(L.parity);
  alignas(64) float syn[sweep::kMaxParity][kChunk];
  alignas(64) int32_t mag[kChunk];  // the scales' keys (sweep::MagKey)
  alignas(64) unsigned char bad[kChunk];
  for (int64_t k = kb0; k < kb1; ++k) {
    const int b = static_cast<int>(L.block_sizes[k]);
    const float* g = cfg.generator.data() + L.gen_offsets[k];
    const float* yk = y + L.block_starts[k] * ycs;
    const float* pk = p + k * r * pcs;
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t len = std::min(kChunk, n - i0);
      if (cfg.fast) {
        sweep::PlanarBlock<sweep::kNone>(yk + i0, ycs, pk + i0, pcs, nullptr, nullptr, 0, g, b, r, len, syn, mag);
        if (!sweep::PlanarFailures(syn, mag, -1.f, cfg.gain_f.data() + k * r, cfg.offset_f.data() + k * r, r, len, bad))
          continue;
      } else {
        for (int64_t i = 0; i < len; ++i) bad[i] = 1;
      }
      for (int64_t i = 0; i < len; ++i)
        if (bad[i] && !ParityBlockHolds(cfg, k, yk + i0 + i, ycs, pk + i0 + i, pcs)) ++counts.flagged;
    }
  }
  counts.vectors += n * (kb1 - kb0);
}

// Any other strides: the exact test of every block.
void CheckStrided(const ParityCheckConfig& cfg, const float* y, int64_t ycs, int64_t yvs, const float* p, int64_t pcs,
                  int64_t pvs, int64_t n, int64_t kb0, int64_t kb1, DecodeCounts& counts) {
  const auto& L = cfg.layout;
  for (int64_t k = kb0; k < kb1; ++k)
    for (int64_t i = 0; i < n; ++i)
      if (!ParityBlockHolds(cfg, k, y + L.block_starts[k] * ycs + i * yvs, ycs, p + k * L.parity * pcs + i * pvs, pcs))
        ++counts.flagged;
  counts.vectors += n * (kb1 - kb0);
}

ECC_CLONES
void CheckParityFast(const ParityCheckConfig& cfg, const float* y, int64_t ycs, int64_t yvs, const float* p, int64_t pcs,
                     int64_t pvs, int64_t n, int64_t kb0, int64_t kb1, DecodeCounts& counts) {
  if (ycs == 1 && pcs == 1)
    CheckRows(cfg, y, yvs, p, pvs, n, kb0, kb1, counts);
  else
    CheckPlanar(cfg, y, ycs, p, pcs, n, kb0, kb1, counts);
}

#if ECC_ROWS512
// The end of the run of quads of 32-value blocks from kb0 that CheckRows would form (its test
// k + 3 < kb1 and size[k + 3] == b, with b == 32).
int64_t QuadRowsEnd(const CodeLayout& L, int64_t kb0, int64_t kb1) {
  int64_t k = kb0;
  while (k + 3 < kb1 && L.block_sizes[k] == 32 && L.block_sizes[k + 3] == 32) k += 4;
  return k;
}

// CheckRows over blocks [kb0, kb1), all in quads of 32 (QuadRowsEnd), with the AVX-512 test
// (sweep::Quad512); a quad it fails is tested again by CheckRows's RowQuad2, which decides, so
// the blocks flagged are CheckRows's. Tiles of up to kTileQuads quads: their generator reordered
// once per tile (on the stack), then every row.
ECC_AVX512 void CheckRows512(const ParityCheckConfig& cfg, const float* y, int64_t yvs, const float* p, int64_t pvs,
                             int64_t n, int64_t kb0, int64_t kb1, DecodeCounts& counts) {
  constexpr int64_t kTileQuads = 16;
  alignas(64) float gp[kTileQuads * sweep::kQuadGenFloats];
  const auto& L = cfg.layout;
  const float* gen = cfg.generator.data();
  for (int64_t t0 = kb0; t0 < kb1; t0 += 4 * kTileQuads) {
    const int64_t t1 = std::min(kb1, t0 + 4 * kTileQuads);
    for (int64_t k = t0; k < t1; k += 4) sweep::PackQuadGen(gen + L.gen_offsets[k], gp + (k - t0) / 4 * sweep::kQuadGenFloats);
    for (int64_t row = 0; row < n; ++row) {
      const float* yr = y + row * yvs + L.block_starts[t0];
      const float* pr = p + row * pvs + 2 * t0;
      for (int64_t k = t0; k < t1; k += 4) {
        const int64_t i = k - t0;  // 32 i: the quad's first value in the tile, 2 i its first check
        if (!sweep::Quad512(yr + 32 * i, pr + 2 * i, gp + i / 4 * sweep::kQuadGenFloats, cfg.gain_f.data() + 2 * k,
                            cfg.offset_f.data() + 2 * k))
          continue;
        const unsigned bad = sweep::RowQuad2<sweep::kNone, 32>(yr + 32 * i, pr + 2 * i, nullptr, nullptr,
                                                               gen + L.gen_offsets[k], 32, cfg.gain_f.data() + 2 * k,
                                                               cfg.offset_f.data() + 2 * k, -1.f);
        for (int m = 0; m < 4; ++m)
          if ((bad >> m & 1u) && !ParityBlockHolds(cfg, k + m, yr + 32 * (i + m), 1, pr + 2 * (i + m), 1))
            ++counts.flagged;
      }
    }
  }
  counts.vectors += n * (kb1 - kb0);
}
#endif

// How many times faster than the other sweeps the row sweep moves a float: 4 where the AVX-512
// sweep checks every block (blocks of 32, parity 2), so that a check RunItems would hand to the
// thread pool stays in this thread while it takes less than the pool's wake-up (256 x 384: about
// 7 us on one thread, no faster on two; 256 x 1536 still goes to the pool).
int64_t RowsSpeedup(const ParityCheckConfig& cfg) {
#if ECC_ROWS512
  const auto& L = cfg.layout;
  if (cfg.fast && L.parity == 2 && sweep::Has512() && QuadRowsEnd(L, 0, L.num_blocks()) == L.num_blocks()) return 4;
#endif
  (void)cfg;
  return 1;
}

}  // namespace

void CheckParity(const ParityCheckConfig& cfg, const float* y, int64_t ycs, int64_t yvs, const float* p, int64_t pcs,
                 int64_t pvs, int64_t n, DecodeCounts& counts, int64_t block_begin, int64_t block_end) {
  const int64_t blocks = cfg.layout.num_blocks();
  const int64_t kb0 = std::max<int64_t>(block_begin, 0);
  const int64_t kb1 = block_end < 0 ? blocks : std::min(block_end, blocks);
  if (n <= 0 || kb0 >= kb1) return;
  int64_t kq = kb0;  // blocks [kb0, kq): quads of 32 that the AVX-512 sweep checks
#if ECC_ROWS512
  if (ycs == 1 && pcs == 1 && cfg.fast && cfg.layout.parity == 2 && sweep::Has512()) {
    kq = QuadRowsEnd(cfg.layout, kb0, kb1);
    if (kq > kb0) CheckRows512(cfg, y, yvs, p, pvs, n, kb0, kq, counts);
    if (kq == kb1) return;
  }
#endif
  if ((ycs == 1 && pcs == 1) || (yvs == 1 && pvs == 1))
    CheckParityFast(cfg, y, ycs, yvs, p, pcs, pvs, n, kq, kb1, counts);
  else
    CheckStrided(cfg, y, ycs, yvs, p, pcs, pvs, n, kb0, kb1, counts);
}

// ---- attributes and inputs, shared with the CUDA wrapper (ort_attrs.h) -----------------------

OrtStatusPtr ParseParityCheckAttrs(const Ort::ConstKernelInfo& info, ParityCheckAttrs* k) {
  return ParseParityAttrsOf(info, OpId::kParityCheck, k);
}

OrtStatusPtr ParseParityAttrsOf(const Ort::ConstKernelInfo& info, OpId op, ParityCheckAttrs* k) {
  const std::string op_name = Spec(op).name;
  k->name = op_name + "(" + AttrString(info, "layer", "") + ")";
  std::string err = k->cfg.layout.Init(AttrInt(info, "data_channels", 0), 1, AttrInt(info, "block", 0),
                                       AttrInt(info, "parity", 0));
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->cfg.generator = AttrFloats(info, "generator", true);
  k->cfg.gain = AttrFloats(info, "noise_gain", true);
  k->cfg.offset = AttrFloats(info, "noise_offset", true);
  k->cfg.tolerance = TableAttrFloat(info, op, "tolerance");
  err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->cfg.Prepare();
  k->axis = AttrInt(info, "axis", -1);
  k->stride = AttrInt(info, "stride", 1);
  if (k->stride < 1) return Error(ORT_INVALID_ARGUMENT, k->name, "stride must be >= 1");
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), op_name);
  return nullptr;
}

OrtStatusPtr ReadParityInputs(const ParityCheckAttrs& k, Ort::KernelContext& ctx, ParityInputs* in) {
  const auto& L = k.cfg.layout;
  const std::string& name = k.name;
  auto y = ctx.GetInput(0);
  auto p = ctx.GetInput(1);
  auto yi = y.GetTensorTypeAndShapeInfo();
  auto pi = p.GetTensorTypeAndShapeInfo();
  if (yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || pi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return Error(ORT_INVALID_ARGUMENT, name, "Y and P must be float32");
  const auto ys = yi.GetShape(), ps = pi.GetShape();
  const int64_t rank = static_cast<int64_t>(ys.size());
  const int64_t ax = k.axis < 0 ? k.axis + rank : k.axis;
  if (rank < 1 || ax < 0 || ax >= rank) return Error(ORT_INVALID_ARGUMENT, name, "axis out of range for Y's rank");
  if (ys[ax] != L.data_channels)
    return Error(ORT_INVALID_ARGUMENT, name, "Y has " + std::to_string(ys[ax]) + " channels on axis " +
                                                 std::to_string(ax) + ", the code expects " +
                                                 std::to_string(L.data_channels));
  const int64_t checks = L.parity * L.num_blocks();
  in->outer = in->inner = 1;
  for (int64_t i = 0; i < ax; ++i) in->outer *= ys[i];
  for (int64_t i = ax + 1; i < rank; ++i) in->inner *= ys[i];
  in->y_row_stride = 1;
  if (k.stride > 1) {  // every stride-th vector of Y (its rows, all axes but the last flattened)
    if (ax != rank - 1) return Error(ORT_INVALID_ARGUMENT, name, "stride > 1 needs the channels on the last axis");
    const int64_t sampled = (in->outer + k.stride - 1) / k.stride;
    if (ps != std::vector<int64_t>{sampled, checks})
      return Error(ORT_INVALID_ARGUMENT, name, "P must be [" + std::to_string(sampled) + ", " + std::to_string(checks) +
                                                   "]: the checks of every " + std::to_string(k.stride) + "th row of Y");
    in->outer = sampled;
    in->y_row_stride = k.stride;
  } else {
    auto expected = ys;
    expected[ax] = checks;
    if (ps != expected)
      return Error(ORT_INVALID_ARGUMENT, name, "P must have Y's shape with " + std::to_string(expected[ax]) +
                                                   " checks on the channel axis");
  }
  if (OrtStatusPtr st = FlagInput(ctx, 2, name, &in->flag)) return st;
  in->y = y.GetTensorData<float>();
  in->p = p.GetTensorData<float>();
  return nullptr;
}

// ---- onnxruntime CPU kernel -----------------------------------------------------------------

struct ParityCheckKernel : ParityCheckAttrs {
  struct Job {
    const ParityCheckKernel* k;
    const float* y;
    const float* p;
    int64_t outer, inner, y_row_stride;
    WorkSplit split;
    SharedCounts* counts;
  };

  // One work item: a chunk of rows (channels last) or of positions of one outer index, and a
  // span of blocks.
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const auto& L = j->k->cfg.layout;
    const int64_t checks = L.parity * L.num_blocks();
    int64_t o, v0, n, kb0, kb1;
    j->split.Item(item, j->outer, j->inner, L.num_blocks(), &o, &v0, &n, &kb0, &kb1);
    DecodeCounts c;
    if (j->inner == 1)
      CheckParity(j->k->cfg, j->y + v0 * j->y_row_stride * L.data_channels, 1, j->y_row_stride * L.data_channels,
                  j->p + v0 * checks, 1, checks, n, c, kb0, kb1);
    else
      CheckParity(j->k->cfg, j->y + o * L.data_channels * j->inner + v0, j->inner, 1, j->p + o * checks * j->inner + v0,
                  j->inner, 1, n, c, kb0, kb1);
    j->counts->Add(c);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      const auto& L = cfg.layout;
      ParityInputs in;
      if (OrtStatusPtr st = ReadParityInputs(*this, ctx, &in)) return st;
      const bool raised = in.flag && in.flag[0];
      const int64_t blocks = L.num_blocks();
      SharedCounts counts;
      if (in.outer * in.inner > 0) {
        Job job{this, in.y, in.p, in.outer, in.inner, in.y_row_stride,
                SplitWork(in.outer, in.inner, blocks, L.data_channels + L.parity * blocks), &counts};
        RunItems(ctx, &Run, static_cast<size_t>(job.split.items), &job,
                 in.outer * in.inner * (L.data_channels + L.parity * blocks) / (in.inner == 1 ? RowsSpeedup(cfg) : 1));
      }
      return ReportParityRun(ctx, counters, counts.Total(in.outer * in.inner * blocks), raised, fail_stop, name);
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(ParityCheck)

}  // namespace onnx_ecc
