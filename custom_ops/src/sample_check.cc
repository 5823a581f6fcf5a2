// SampleCheck: the maths (sample_check.h) and its onnxruntime CPU kernel.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/sample_check.h"

namespace onnx_ecc {

std::string SampleCheckConfig::Validate() const {
  if (!(tolerance >= 0)) return "tolerance must be >= 0";
  return "";
}

int64_t SampleMismatches(const SampleCheckConfig& c, const float* a, const float* b, int64_t n) {
  // One sweep: the largest finite |value| and the largest difference of unequal pairs (a pair
  // with a non-finite value that is not matched exactly counts as infinitely different).
  float m = 0.f, worst = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float u = std::fabs(a[i]), v = std::fabs(b[i]);
    m = (u > m && u <= FLT_MAX) ? u : m;
    m = (v > m && v <= FLT_MAX) ? v : m;
    const bool same = a[i] == b[i] || (a[i] != a[i] && b[i] != b[i]);
    float d = std::fabs(a[i] - b[i]);
    d = same ? 0.f : (d <= FLT_MAX ? d : FLT_MAX * 2.f);  // NaN or inf difference: infinite
    worst = d > worst ? d : worst;
  }
  if (!(worst > 0.f)) return 0;
  // recount exactly in double only when some pair differs beyond the sample's threshold
  const double thr = c.tolerance * FLT_EPSILON * m;
  if (static_cast<double>(worst) <= thr * (1 - 1e-6)) return 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (a[i] == b[i] || (a[i] != a[i] && b[i] != b[i])) continue;
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(d <= thr)) ++bad;
  }
  return bad;
}

// ---- onnxruntime CPU kernel -----------------------------------------------------------------

struct SampleCheckKernel : CheckAttrs<SampleCheckConfig> {
  struct Job {
    const SampleCheckKernel* k;
    const float* a;
    const float* b;
    int64_t per_sample;
    std::vector<int64_t>* failed;
  };
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const int64_t off = static_cast<int64_t>(item) * j->per_sample;
    (*j->failed)[item] = SampleMismatches(j->k->cfg, j->a + off, j->b + off, j->per_sample) > 0;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      auto a = ctx.GetInput(0);
      auto b = ctx.GetInput(1);
      auto ai = a.GetTensorTypeAndShapeInfo();
      auto bi = b.GetTensorTypeAndShapeInfo();
      if (ai.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
          bi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        return Error(ORT_INVALID_ARGUMENT, name, "A and B must be float32");
      const auto as = ai.GetShape();
      if (as != bi.GetShape()) return Error(ORT_INVALID_ARGUMENT, name, "A and B must have the same shape");
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
      const int64_t samples = as.empty() ? 1 : as[0];
      const int64_t total = static_cast<int64_t>(ai.GetElementCount());
      DecodeCounts c;
      if (samples > 0 && total > 0) {
        std::vector<int64_t> failed(static_cast<size_t>(samples));
        Job job{this, a.GetTensorData<float>(), b.GetTensorData<float>(), total / samples, &failed};
        ctx.ParallelFor(&Run, failed.size(), 0, &job);
        c.vectors = samples;
        for (int64_t f : failed) c.flagged += f;
      }
      counters->Add(c);
      auto out = ctx.GetOutput(0, std::vector<int64_t>{1});
      out.GetTensorMutableData<bool>()[0] = raised || c.flagged > 0;
      if (fail_stop && c.flagged > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(c.flagged) + " sample(s) failed the sample check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

OrtStatusPtr ParseSampleCheckAttrs(const Ort::ConstKernelInfo& info, SampleCheckKernel* k) {
  k->name = "SampleCheck(" + AttrString(info, "layer", "") + ")";
  k->cfg.tolerance = AttrFloat(info, "tolerance", 1.f);
  std::string err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "SampleCheck");
  return nullptr;
}

struct SampleCheckOp : Ort::CustomOpBase<SampleCheckOp, SampleCheckKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return MakeKernel<SampleCheckKernel>(info, kernel, "SampleCheck", ParseSampleCheckAttrs);
  }
  const char* GetName() const { return "SampleCheck"; }
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

const OrtCustomOp* SampleCheckCpuOp() {
  static const SampleCheckOp op;
  return &op;
}

}  // namespace onnx_ecc
