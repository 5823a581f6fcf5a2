// ParityCheck: the maths (parity_check.h) and its onnxruntime CPU kernel.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/parity_check.h"

namespace onnx_ecc {

namespace {
constexpr double kEps = FLT_EPSILON;
constexpr int kRows = 64;       // vectors per sweep of one block: syndromes stay in L1
constexpr int kMaxChecks = 16;  // parity <= 16, as CodeLayout::Init enforces
}  // namespace

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

bool ParityBlockHolds(const ParityCheckConfig& cfg, int64_t k, const float* y, int64_t ycs, const float* p,
                      int64_t pcs) {
  const auto& L = cfg.layout;
  const int64_t b = L.block_sizes[k], r = L.parity;
  const float* g = cfg.generator.data() + L.gen_offsets[k];
  double scale = 0;
  for (int64_t j = 0; j < b; ++j) {
    const double v = std::fabs(static_cast<double>(y[j * ycs]));
    if (!std::isfinite(v)) return false;
    scale = std::max(scale, v);
  }
  for (int64_t q = 0; q < r; ++q) {
    const double v = std::fabs(static_cast<double>(p[q * pcs]));
    if (!std::isfinite(v)) return false;
    scale = std::max(scale, v);
  }
  for (int64_t q = 0; q < r; ++q) {
    double syn = -static_cast<double>(p[q * pcs]);
    for (int64_t j = 0; j < b; ++j) syn += static_cast<double>(g[q * b + j]) * y[j * ycs];
    const size_t a = static_cast<size_t>(k * r + q);
    const double bound = kEps * (cfg.gain[a] * scale + cfg.offset[a]);
    if (!(std::fabs(syn) <= cfg.tolerance * bound)) return false;
  }
  return true;
}

namespace {

// Channels contiguous ([rows, C]): per row and block, short dot products over the block's values.
void CheckRows(const ParityCheckConfig& cfg, const float* y, int64_t yvs, const float* p, int64_t pvs, int64_t n,
               DecodeCounts& counts) {
  const auto& L = cfg.layout;
  const int64_t r = L.parity, nb = L.num_blocks();
  std::vector<float> gain(static_cast<size_t>(nb * r)), offset(gain.size());
  for (size_t a = 0; a < gain.size(); ++a) {
    gain[a] = static_cast<float>(cfg.tolerance * kEps * cfg.gain[a]);
    offset[a] = static_cast<float>(cfg.tolerance * kEps * cfg.offset[a]);
  }
  for (int64_t row = 0; row < n; ++row) {
    const float* yr = y + row * yvs;
    const float* pr = p + row * pvs;
    for (int64_t k = 0; k < nb; ++k) {
      const int b = static_cast<int>(L.block_sizes[k]);
      const float* __restrict yk = yr + L.block_starts[k];
      const float* __restrict pk = pr + k * r;
      const float* __restrict g = cfg.generator.data() + L.gen_offsets[k];
      // One sweep over the block: the largest finite |value| and up to two syndromes in 8 lanes.
      float lm[8] = {}, l0[8] = {}, l1[8] = {};
      const float* __restrict g0 = g;
      const float* __restrict g1 = r > 1 ? g + b : g;
      int j = 0;
      for (; j + 8 <= b; j += 8)
        for (int l = 0; l < 8; ++l) {
          const float v = yk[j + l], a = std::fabs(v);
          lm[l] = (a > lm[l] && a <= FLT_MAX) ? a : lm[l];
          l0[l] += g0[j + l] * v;
          l1[l] += g1[j + l] * v;
        }
      float m = 0.f, s0 = 0.f, s1 = 0.f;
      for (int l = 0; l < 8; ++l) {
        m = lm[l] > m ? lm[l] : m;
        s0 += l0[l];
        s1 += l1[l];
      }
      for (; j < b; ++j) {
        const float v = yk[j], a = std::fabs(v);
        m = (a > m && a <= FLT_MAX) ? a : m;
        s0 += g0[j] * v;
        s1 += g1[j] * v;
      }
      for (int64_t q = 0; q < r; ++q) {
        const float a = std::fabs(pk[q]);
        m = (a > m && a <= FLT_MAX) ? a : m;
      }
      bool bad = !(std::fabs(s0 - pk[0]) <= gain[k * r] * m + offset[k * r]);
      if (r > 1) bad |= !(std::fabs(s1 - pk[1]) <= gain[k * r + 1] * m + offset[k * r + 1]);
      for (int64_t q = 2; q < r; ++q) {  // further checks: one more pass each
        const float* __restrict gq = g + q * b;
        float lanes[8] = {};
        int i = 0;
        for (; i + 8 <= b; i += 8)
          for (int l = 0; l < 8; ++l) lanes[l] += gq[i + l] * yk[i + l];
        float acc = -pk[q];
        for (int l = 0; l < 8; ++l) acc += lanes[l];
        for (; i < b; ++i) acc += gq[i] * yk[i];
        bad |= !(std::fabs(acc) <= gain[k * r + q] * m + offset[k * r + q]);
      }
      ++counts.vectors;
      if (bad && !ParityBlockHolds(cfg, k, yk, 1, pk, 1)) ++counts.flagged;
    }
  }
}

}  // namespace

void CheckParity(const ParityCheckConfig& cfg, const float* y, int64_t ycs, int64_t yvs, const float* p, int64_t pcs,
                 int64_t pvs, int64_t n, DecodeCounts& counts) {
  if (ycs == 1 && pcs == 1) {
    CheckRows(cfg, y, yvs, p, pvs, n, counts);
    return;
  }
  const auto& L = cfg.layout;
  const int64_t r = L.parity;
  float syn[kMaxChecks][kRows], mag[kRows];
  for (int64_t k = 0; k < L.num_blocks(); ++k) {
    const int64_t b = L.block_sizes[k];
    const float* g = cfg.generator.data() + L.gen_offsets[k];
    const float* yk = y + L.block_starts[k] * ycs;
    const float* pk = p + k * r * pcs;
    float gain[kMaxChecks], offset[kMaxChecks];
    for (int64_t q = 0; q < r; ++q) {
      gain[q] = static_cast<float>(cfg.tolerance * kEps * cfg.gain[k * r + q]);
      offset[q] = static_cast<float>(cfg.tolerance * kEps * cfg.offset[k * r + q]);
    }
    for (int64_t i0 = 0; i0 < n; i0 += kRows) {
      const int64_t len = std::min<int64_t>(kRows, n - i0);
      for (int64_t i = 0; i < len; ++i) mag[i] = 0.f;
      for (int64_t q = 0; q < r; ++q)
        for (int64_t i = 0; i < len; ++i) {
          const float v = pk[q * pcs + (i0 + i) * pvs];
          syn[q][i] = -v;
          const float a = std::fabs(v);
          mag[i] = (a > mag[i] && a <= FLT_MAX) ? a : mag[i];
        }
      for (int64_t j = 0; j < b; ++j) {
        const float* __restrict src = yk + j * ycs + i0 * yvs;
        for (int64_t i = 0; i < len; ++i) {
          const float a = std::fabs(src[i * yvs]);
          mag[i] = (a > mag[i] && a <= FLT_MAX) ? a : mag[i];
        }
        for (int64_t q = 0; q < r; ++q) {
          const float w = g[q * b + j];
          float* __restrict s = syn[q];
          for (int64_t i = 0; i < len; ++i) s[i] += w * src[i * yvs];
        }
      }
      counts.vectors += len;
      for (int64_t i = 0; i < len; ++i) {
        bool bad = false;
        for (int64_t q = 0; q < r; ++q) bad |= !(std::fabs(syn[q][i]) <= gain[q] * mag[i] + offset[q]);
        if (bad && !ParityBlockHolds(cfg, k, yk + (i0 + i) * yvs, ycs, pk + (i0 + i) * pvs, pcs)) ++counts.flagged;
      }
    }
  }
}

// ---- onnxruntime CPU kernel -----------------------------------------------------------------

using ParityCheckAttrs = CheckAttrs<ParityCheckConfig>;

struct ParityCheckKernel : ParityCheckAttrs {
  int64_t axis = -1;

  struct Job {
    const ParityCheckKernel* k;
    const float* y;
    const float* p;
    int64_t outer, inner, chunk, chunks_per_outer;
    std::vector<DecodeCounts>* counts;
  };

  // One work item: a chunk of rows (channels last) or of positions of one outer index.
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const auto& L = j->k->cfg.layout;
    const int64_t checks = L.parity * L.num_blocks();
    auto& c = (*j->counts)[item];
    if (j->inner == 1) {
      const int64_t r0 = static_cast<int64_t>(item) * j->chunk, n = std::min(j->chunk, j->outer - r0);
      CheckParity(j->k->cfg, j->y + r0 * L.data_channels, 1, L.data_channels, j->p + r0 * checks, 1, checks, n, c);
    } else {
      const int64_t o = static_cast<int64_t>(item) / j->chunks_per_outer;
      const int64_t i0 = (static_cast<int64_t>(item) % j->chunks_per_outer) * j->chunk;
      const int64_t n = std::min(j->inner, i0 + j->chunk) - i0;
      CheckParity(j->k->cfg, j->y + o * L.data_channels * j->inner + i0, j->inner, 1,
                  j->p + o * checks * j->inner + i0, j->inner, 1, n, c);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      const auto& L = cfg.layout;
      auto y = ctx.GetInput(0);
      auto p = ctx.GetInput(1);
      auto yi = y.GetTensorTypeAndShapeInfo();
      auto pi = p.GetTensorTypeAndShapeInfo();
      if (yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
          pi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        return Error(ORT_INVALID_ARGUMENT, name, "Y and P must be float32");
      const auto ys = yi.GetShape(), ps = pi.GetShape();
      const int64_t rank = static_cast<int64_t>(ys.size());
      const int64_t ax = axis < 0 ? axis + rank : axis;
      if (rank < 1 || ax < 0 || ax >= rank) return Error(ORT_INVALID_ARGUMENT, name, "axis out of range for Y's rank");
      if (ys[ax] != L.data_channels)
        return Error(ORT_INVALID_ARGUMENT, name, "Y has " + std::to_string(ys[ax]) + " channels on axis " +
                                                     std::to_string(ax) + ", the code expects " +
                                                     std::to_string(L.data_channels));
      auto expected = ys;
      expected[ax] = L.parity * L.num_blocks();
      if (ps != expected)
        return Error(ORT_INVALID_ARGUMENT, name, "P must have Y's shape with " + std::to_string(expected[ax]) +
                                                     " checks on the channel axis");
      bool raised = false;
      if (ctx.GetInputCount() > 2) {
        auto f = ctx.GetInput(2);
        if (static_cast<const OrtValue*>(f) != nullptr) {
          auto fi = f.GetTensorTypeAndShapeInfo();
          if (fi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL || fi.GetElementCount() != 1)
            return Error(ORT_INVALID_ARGUMENT, name, "Flag must be one bool");
          raised = f.GetTensorData<bool>()[0];
        }
      }
      int64_t outer = 1, inner = 1;
      for (int64_t i = 0; i < ax; ++i) outer *= ys[i];
      for (int64_t i = ax + 1; i < rank; ++i) inner *= ys[i];
      DecodeCounts total;
      if (outer * inner > 0) {
        const int64_t chunk = inner == 1 ? std::max<int64_t>(16, std::min<int64_t>(256, outer / 8))
                                         : std::min<int64_t>(inner, 1024);
        const int64_t cpo = inner == 1 ? 1 : (inner + chunk - 1) / chunk;
        const int64_t items = inner == 1 ? (outer + chunk - 1) / chunk : outer * cpo;
        std::vector<DecodeCounts> counts(static_cast<size_t>(items));
        Job job{this, y.GetTensorData<float>(), p.GetTensorData<float>(), outer, inner, chunk, cpo, &counts};
        ctx.ParallelFor(&Run, counts.size(), 0, &job);
        for (const auto& c : counts) total.Add(c);
      }
      counters->Add(total);
      auto out = ctx.GetOutput(0, std::vector<int64_t>{1});
      out.GetTensorMutableData<bool>()[0] = raised || total.flagged > 0;
      if (fail_stop && total.flagged > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(total.flagged) + " block(s) failed the parity check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

OrtStatusPtr ParseParityCheckAttrs(const Ort::ConstKernelInfo& info, ParityCheckKernel* k) {
  k->name = "ParityCheck(" + AttrString(info, "layer", "") + ")";
  std::string err = k->cfg.layout.Init(AttrInt(info, "data_channels", 0), 1, AttrInt(info, "block", 0),
                                       AttrInt(info, "parity", 0));
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->cfg.generator = AttrFloats(info, "generator", true);
  k->cfg.gain = AttrFloats(info, "noise_gain", true);
  k->cfg.offset = AttrFloats(info, "noise_offset", true);
  k->cfg.tolerance = AttrFloat(info, "tolerance", 64.f);
  err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->axis = AttrInt(info, "axis", -1);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "ParityCheck");
  return nullptr;
}

struct ParityCheckOp : Ort::CustomOpBase<ParityCheckOp, ParityCheckKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return MakeKernel<ParityCheckKernel>(info, kernel, "ParityCheck", ParseParityCheckAttrs);
  }
  const char* GetName() const { return "ParityCheck"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL; }
};

const OrtCustomOp* ParityCheckCpuOp() {
  static const ParityCheckOp op;
  return &op;
}

}  // namespace onnx_ecc
