// Im2ColNhwc: its parser, input validation (shared with the CUDA kernel) and onnxruntime CPU kernel
// (the row copy is int_decode_math.h).
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/int_decode.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"

namespace onnx_ecc {

OrtStatusPtr ParseIm2ColAttrs(const Ort::ConstKernelInfo& info, Im2ColAttrs* a) {
  a->name = "Im2ColNhwc";
  const auto k = AttrInts(info, "kernel_shape", {});
  const auto st = AttrInts(info, "strides", {1, 1});
  const auto pads = AttrInts(info, "pads", {0, 0, 0, 0});
  const auto dl = AttrInts(info, "dilations", {1, 1});
  if (k.size() != 2 || st.size() != 2 || pads.size() != 4 || dl.size() != 2)
    return Error(ORT_INVALID_ARGUMENT, a->name, "kernel_shape, strides and dilations need 2 values and pads 4");
  for (int i = 0; i < 2; ++i) {
    if (k[i] < 1 || st[i] < 1 || dl[i] < 1) return Error(ORT_INVALID_ARGUMENT, a->name, "kernel_shape, strides and dilations must be >= 1");
    a->k[i] = k[i]; a->st[i] = st[i]; a->dl[i] = dl[i];
  }
  for (int i = 0; i < 4; ++i) {
    if (pads[i] < 0) return Error(ORT_INVALID_ARGUMENT, a->name, "pads must be >= 0");
    a->pads[i] = pads[i];
  }
  a->pad_value = AttrInt(info, "pad_value", 0);
  if (a->pad_value < 0 || a->pad_value > 255) return Error(ORT_INVALID_ARGUMENT, a->name, "pad_value must be in 0..255");
  return nullptr;
}

OrtStatusPtr ReadIm2ColInputs(const Im2ColAttrs& a, Ort::KernelContext& ctx, Im2ColShape* q, const uint8_t** xp) {
  auto x = ctx.GetInput(0);
  auto xi = x.GetTensorTypeAndShapeInfo();
  const auto type = xi.GetElementType();
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8)
    return Error(ORT_INVALID_ARGUMENT, a.name, "X must be uint8 or int8");
  const auto s = xi.GetShape();
  if (s.size() != 4) return Error(ORT_INVALID_ARGUMENT, a.name, "X must be 4-D (N, H, W, C)");
  if (s[1] + a.pads[0] + a.pads[2] < a.dl[0] * (a.k[0] - 1) + 1 ||
      s[2] + a.pads[1] + a.pads[3] < a.dl[1] * (a.k[1] - 1) + 1)
    return Error(ORT_INVALID_ARGUMENT, a.name, "the kernel is larger than the padded input");
  q->n = s[0]; q->h = s[1]; q->w = s[2]; q->c = s[3];
  q->ho = (q->h + a.pads[0] + a.pads[2] - a.dl[0] * (a.k[0] - 1) - 1) / a.st[0] + 1;
  q->wo = (q->w + a.pads[1] + a.pads[3] - a.dl[1] * (a.k[1] - 1) - 1) / a.st[1] + 1;
  for (int i = 0; i < 2; ++i) { q->k[i] = a.k[i]; q->st[i] = a.st[i]; q->dl[i] = a.dl[i]; }
  for (int i = 0; i < 4; ++i) q->pads[i] = a.pads[i];
  q->pad = static_cast<uint8_t>(a.pad_value);
  if (ctx.GetInputCount() > 1) {  // PadValue: the run-time zero point (DynamicQuantizeLinear's) overrides pad_value
    auto p = ctx.GetInput(1);
    if (static_cast<const OrtValue*>(p) != nullptr) {
      auto pi = p.GetTensorTypeAndShapeInfo();
      if (pi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || pi.GetElementCount() != 1)
        return Error(ORT_INVALID_ARGUMENT, a.name, "PadValue must be one uint8");
      q->pad = *p.GetTensorData<uint8_t>();  // host memory on either provider (the op table's host port)
    }
  }
  q->flip = static_cast<uint8_t>(type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 ? 0x80 : 0);
  *xp = static_cast<const uint8_t*>(x.GetTensorRawData());
  return nullptr;
}

struct Im2ColKernel : Im2ColAttrs {
  struct Job {
    const Im2ColKernel* k;
    const uint8_t* x;
    uint8_t* y;
    int64_t H, W, C, Ho, Wo;
    uint8_t flip, pad;
  };

  static void Run(void* data, size_t item) {  // one output row (n, oh)
    auto* j = static_cast<Job*>(data);
    const auto* k = j->k;
    const int64_t n = static_cast<int64_t>(item) / j->Ho, oh = static_cast<int64_t>(item) % j->Ho;
    Im2ColRow(j->x + n * j->H * j->W * j->C, j->H, j->W, j->C, j->Wo, oh, k->k, k->st, k->pads, k->dl,
              j->pad, j->flip, j->y + static_cast<int64_t>(item) * j->Wo * k->k[0] * k->k[1] * j->C);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      Im2ColShape q;
      const uint8_t* x = nullptr;
      if (OrtStatusPtr st = ReadIm2ColInputs(*this, ctx, &q, &x)) return st;
      auto y = ctx.GetOutput(0, std::vector<int64_t>{q.n, q.ho, q.wo, q.Row()});
      if (q.n * q.ho * q.wo * q.c == 0) return nullptr;
      Job job{this, x, y.GetTensorMutableData<uint8_t>(), q.h, q.w, q.c, q.ho, q.wo, q.flip, q.pad};
      ctx.ParallelFor(&Run, static_cast<size_t>(q.n * q.ho), 0, &job);
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(Im2ColNhwc)

}  // namespace onnx_ecc
