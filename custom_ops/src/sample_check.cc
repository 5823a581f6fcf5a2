// SampleCheck: the maths (sample_check.h) and its onnxruntime CPU kernel.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "onnx_ecc/sample_check.h"
#include "cpu_work.h"
#include "sweeps.h"

namespace onnx_ecc {

std::string SampleCheckConfig::Validate() const {
  if (channels < 1) return "data_channels must be >= 1";
  if (!(tolerance >= 0)) return "tolerance must be >= 0";
  if (activation == SampleActivation::kClip && !(act_lo <= act_hi)) return "activation_params must be [min, max]";
  if (has_parity) {
    if (parity.layout.data_channels != channels) return "the parity code must cover data_channels";
    return parity.Validate();
  }
  return "";
}

float SampleCheckConfig::Activate(float x) const {
  return SampleActivate(static_cast<int>(activation), act_lo, act_hi, x);
}

namespace {

// One vectorisable sweep: the largest finite |value| of both sides and the largest difference of
// unequal pairs (a pair with a non-finite value not matched exactly counts as infinitely far).
template <SampleActivation kAct, bool kResidual>
ECC_CLONES void Sweep(const float* __restrict a, const float* __restrict b, const float* __restrict r, int64_t n,
                      float lo, float hi, float* scale, float* worst) {
  float m = 0.f, w = 0.f;
  ECC_IVDEP
  for (int64_t i = 0; i < n; ++i) {
    const float u = a[i];
    const float v = SampleActivate(static_cast<int>(kAct), lo, hi, kResidual ? b[i] + r[i] : b[i]);
    m = MaxFinite(m, u);
    m = MaxFinite(m, v);
    const bool same = u == v || (u != u && v != v);
    float d = std::fabs(u - v);
    d = d <= FLT_MAX ? d : 2 * FLT_MAX;
    d = same ? 0.f : d;
    w = d > w ? d : w;
  }
  *scale = m;
  *worst = w;
}

template <SampleActivation kAct>
void SweepAct(const float* a, const float* b, const float* r, int64_t n, float lo, float hi, float* scale,
              float* worst) {
  if (r) Sweep<kAct, true>(a, b, r, n, lo, hi, scale, worst);
  else Sweep<kAct, false>(a, b, r, n, lo, hi, scale, worst);
}

}  // namespace

int64_t SampleMismatches(const SampleCheckConfig& c, const float* a, const float* b, const float* r, int64_t n) {
  float m = 0.f, worst = 0.f;
  switch (c.activation) {
    case SampleActivation::kRelu: SweepAct<SampleActivation::kRelu>(a, b, r, n, c.act_lo, c.act_hi, &m, &worst); break;
    case SampleActivation::kClip: SweepAct<SampleActivation::kClip>(a, b, r, n, c.act_lo, c.act_hi, &m, &worst); break;
    case SampleActivation::kLeakyRelu:
      SweepAct<SampleActivation::kLeakyRelu>(a, b, r, n, c.act_lo, c.act_hi, &m, &worst);
      break;
    default: SweepAct<SampleActivation::kNone>(a, b, r, n, c.act_lo, c.act_hi, &m, &worst);
  }
  if (!(worst > 0.f)) return 0;
  const double thr = SampleThreshold(c.tolerance, m);
  if (static_cast<double>(worst) <= thr * (1 - 1e-6)) return 0;
  int64_t bad = 0;  // the rare path: recount exactly in double
  for (int64_t i = 0; i < n; ++i) bad += SamplePairFails(a[i], c.Activate(r ? b[i] + r[i] : b[i]), thr);
  return bad;
}

int64_t FilterMismatches(const SampleCheckConfig& c, const float* w, int64_t row, const float* bias, int64_t begin,
                         int64_t end) {
  int64_t bad = 0;
  for (int64_t ch = begin; ch < end; ++ch)
    bad += !FilterRowHolds(w + ch * row, row, bias ? bias + ch : nullptr, c.filter_sums[ch], c.filter_tolerance);
  return bad;
}

// ---- attributes and inputs, shared with the CUDA wrapper (ort_attrs.h) -----------------------

OrtStatusPtr ParseSampleCheckAttrs(const Ort::ConstKernelInfo& info, SampleCheckAttrs* k) {
  k->name = "SampleCheck(" + AttrString(info, "layer", "") + ")";
  auto& cfg = k->cfg;
  cfg.channels = AttrInt(info, "data_channels", 0);
  cfg.tolerance = TableAttrFloat(info, OpId::kSampleCheck, "tolerance");
  const std::string act = AttrString(info, "activation", "");
  const auto params = AttrFloats(info, "activation_params", false);
  if (act == "Relu") {
    cfg.activation = SampleActivation::kRelu;
  } else if (act == "Clip" || act == "LeakyRelu") {
    const size_t want = act == "Clip" ? 2 : 1;
    if (params.size() != want)
      return Error(ORT_INVALID_ARGUMENT, k->name, act + " needs " + std::to_string(want) + " activation_params");
    cfg.activation = act == "Clip" ? SampleActivation::kClip : SampleActivation::kLeakyRelu;
    cfg.act_lo = params[0];
    cfg.act_hi = want == 2 ? params[1] : 0.f;
  } else if (!act.empty()) {
    return Error(ORT_INVALID_ARGUMENT, k->name, "activation must be '', 'Relu', 'Clip' or 'LeakyRelu'");
  }
  const int64_t parity = AttrInt(info, "parity", 0);
  if (parity > 0) {
    cfg.has_parity = true;
    std::string err = cfg.parity.layout.Init(cfg.channels, 1, AttrInt(info, "block", 0), parity);
    if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
    cfg.parity.generator = AttrFloats(info, "generator", true);
    cfg.parity.gain = AttrFloats(info, "noise_gain", true);
    cfg.parity.offset = AttrFloats(info, "noise_offset", true);
    cfg.parity.tolerance = TableAttrFloat(info, OpId::kSampleCheck, "parity_tolerance");
  }
  std::string err = cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  if (cfg.has_parity) cfg.parity.Prepare();
  cfg.filter_sums = AttrFloats(info, "filter_sums", false);
  cfg.filter_tolerance = TableAttrFloat(info, OpId::kSampleCheck, "filter_tolerance");
  if (!(cfg.filter_tolerance >= 0)) return Error(ORT_INVALID_ARGUMENT, k->name, "filter_tolerance must be >= 0");
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "SampleCheck");
  return nullptr;
}

OrtStatusPtr ReadSampleInputs(const SampleCheckAttrs& k, Ort::KernelContext& ctx, SampleInputs* in) {
  const auto& cfg = k.cfg;
  const std::string& name = k.name;
  const size_t count = ctx.GetInputCount();
  auto given = [&](size_t i) { return i < count && static_cast<const OrtValue*>(ctx.GetInput(i)) != nullptr; };
  auto a = ctx.GetInput(0);
  auto y = ctx.GetInput(1);
  auto ai = a.GetTensorTypeAndShapeInfo();
  auto yi = y.GetTensorTypeAndShapeInfo();
  if (ai.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return Error(ORT_INVALID_ARGUMENT, name, "A and Y must be float32");
  const auto as = ai.GetShape();
  if (as.size() < 2 || as[1] != cfg.channels)
    return Error(ORT_INVALID_ARGUMENT, name, "A must be [N, " + std::to_string(cfg.channels) + ", ...]");
  auto expected = as;
  expected[1] = cfg.channels + cfg.extra_channels();
  if (yi.GetShape() != expected)
    return Error(ORT_INVALID_ARGUMENT, name, "Y must have A's shape with " + std::to_string(expected[1]) +
                                                 " channels (data, then parity)");
  *in = SampleInputs{};
  in->samples = as[0];
  for (size_t i = 2; i < as.size(); ++i) in->hw *= as[i];
  in->a = a.GetTensorData<float>();
  in->y = y.GetTensorData<float>();
  if (given(3)) {
    auto ri = ctx.GetInput(3).GetTensorTypeAndShapeInfo();
    if (ri.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ri.GetShape() != as)
      return Error(ORT_INVALID_ARGUMENT, name, "R must be float32 with A's shape");
    in->r = ctx.GetInput(3).GetTensorData<float>();
  }
  if (OrtStatusPtr st = FlagInput(ctx, 4, name, &in->flag)) return st;
  if (given(5) && !given(2)) return Error(ORT_INVALID_ARGUMENT, name, "Bias needs W");
  if (given(2)) {
    auto wi = ctx.GetInput(2).GetTensorTypeAndShapeInfo();
    const auto ws = wi.GetShape();
    if (wi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ws.empty() || ws[0] != cfg.channels)
      return Error(ORT_INVALID_ARGUMENT, name, "W must be float32 with " + std::to_string(cfg.channels) + " output channels");
    if (cfg.filter_sums.size() != static_cast<size_t>(cfg.channels))
      return Error(ORT_INVALID_ARGUMENT, name, "W needs filter_sums with one value per output channel");
    in->w = ctx.GetInput(2).GetTensorData<float>();
    in->row = cfg.channels > 0 ? static_cast<int64_t>(wi.GetElementCount()) / cfg.channels : 0;
    if (given(5)) {
      auto bi = ctx.GetInput(5).GetTensorTypeAndShapeInfo();
      if (bi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
          bi.GetElementCount() != static_cast<size_t>(cfg.channels))
        return Error(ORT_INVALID_ARGUMENT, name, "Bias must be float32 with one value per output channel");
      in->bias = ctx.GetInput(5).GetTensorData<float>();
    }
  }
  return nullptr;
}

// ---- onnxruntime CPU kernel -----------------------------------------------------------------

struct SampleCheckKernel : SampleCheckAttrs {
  struct Job {
    const SampleCheckKernel* k;
    const float *a, *y, *r;
    int64_t hw;
    std::vector<unsigned char>* failed;
  };
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const auto& cfg = j->k->cfg;
    const int64_t n = static_cast<int64_t>(item), c = cfg.channels, hw = j->hw;
    const float* a = j->a + n * c * hw;
    const float* y = j->y + n * (c + cfg.extra_channels()) * hw;
    bool bad = SampleMismatches(cfg, a, y, j->r ? j->r + n * c * hw : nullptr, c * hw) > 0;
    if (!bad && cfg.has_parity) {
      DecodeCounts counts;
      CheckParity(cfg.parity, y, hw, 1, y + c * hw, hw, 1, hw, counts);
      bad = counts.flagged > 0;
    }
    (*j->failed)[item] = bad;
  }

  struct FilterJob {
    const SampleCheckConfig* cfg;
    const float *w, *bias;
    int64_t row, per_item;
    std::vector<int64_t>* bad;
  };
  static void RunFilters(void* data, size_t item) {
    auto* j = static_cast<FilterJob*>(data);
    const int64_t begin = static_cast<int64_t>(item) * j->per_item;
    const int64_t end = std::min(j->cfg->channels, begin + j->per_item);
    (*j->bad)[item] = FilterMismatches(*j->cfg, j->w, j->row, j->bias, begin, end);
  }

  // The output channels whose filter sums fail (none without W).
  int64_t BadFilters(Ort::KernelContext& ctx, const SampleInputs& in) const {
    if (!in.w) return 0;
    const int64_t per_item = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(in.row, 1));
    const int64_t items = (cfg.channels + per_item - 1) / per_item;
    std::vector<int64_t> counts(static_cast<size_t>(items));
    FilterJob job{&cfg, in.w, in.bias, in.row, per_item, &counts};
    if (items == 1) RunFilters(&job, 0);
    else ctx.ParallelFor(&RunFilters, counts.size(), 0, &job);
    int64_t bad = 0;
    for (int64_t v : counts) bad += v;
    return bad;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      SampleInputs in;
      if (OrtStatusPtr st = ReadSampleInputs(*this, ctx, &in)) return st;
      const bool raised = in.flag && in.flag[0];
      DecodeCounts c;
      if (in.samples > 0 && in.hw > 0) {
        std::vector<unsigned char> failed(static_cast<size_t>(in.samples));
        Job job{this, in.a, in.y, in.r, in.hw, &failed};
        if (BadFilters(ctx, in) > 0) {  // a corrupted filter makes every sample wrong
          std::fill(failed.begin(), failed.end(), 1);
        } else {
          RunItems(ctx, &Run, failed.size(), &job, in.samples * cfg.channels * in.hw);
        }
        c.vectors = in.samples;
        for (unsigned char f : failed) c.flagged += f;
      }
      counters->Add(c);
      WriteRaised(ctx, raised || c.flagged > 0);
      if (fail_stop && c.flagged > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(c.flagged) + " sample(s) failed the sample check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(SampleCheck)

}  // namespace onnx_ecc
