// Thin onnxruntime wrappers (CPU) around the maths in decode.cc, depthwise_check.cc,
// inject_fault.cc and sum_check.cc, and RegisterCustomOps, which registers the op table's CPU and
// CUDA columns (op_table.h). Every failure becomes an ORT error status.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/counters.h"
#include "onnx_ecc/decode.h"
#include "onnx_ecc/depthwise.h"
#include "onnx_ecc/inject.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "cpu_work.h"

namespace onnx_ecc {

// ---- attribute helpers ------------------------------------------------------------------

int64_t AttrInt(const Ort::ConstKernelInfo& info, const char* name, int64_t def) {
  int64_t v = def;
  OrtStatus* s = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v);
  if (s) { Ort::GetApi().ReleaseStatus(s); return def; }
  return v;
}

float AttrFloat(const Ort::ConstKernelInfo& info, const char* name, float def) {
  float v = def;
  OrtStatus* s = Ort::GetApi().KernelInfoGetAttribute_float(info, name, &v);
  if (s) { Ort::GetApi().ReleaseStatus(s); return def; }
  return v;
}

std::string AttrString(const Ort::ConstKernelInfo& info, const char* name, const std::string& def) {
  size_t len = 0;
  OrtStatus* s = Ort::GetApi().KernelInfoGetAttribute_string(info, name, nullptr, &len);
  if (s) { Ort::GetApi().ReleaseStatus(s); return def; }
  std::string out(len, '\0');
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttribute_string(info, name, out.data(), &len));
  out.resize(len > 0 ? len - 1 : 0);
  return out;
}

std::vector<float> AttrFloats(const Ort::ConstKernelInfo& info, const char* name, bool required) {
  size_t len = 0;
  OrtStatus* s = Ort::GetApi().KernelInfoGetAttributeArray_float(info, name, nullptr, &len);
  if (s) {
    Ort::GetApi().ReleaseStatus(s);
    if (required) throw std::invalid_argument(std::string("missing attribute ") + name);
    return {};
  }
  std::vector<float> out(len);
  if (len) Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttributeArray_float(info, name, out.data(), &len));
  return out;
}

std::vector<int64_t> AttrInts(const Ort::ConstKernelInfo& info, const char* name, std::vector<int64_t> def) {
  size_t len = 0;
  OrtStatus* s = Ort::GetApi().KernelInfoGetAttributeArray_int64(info, name, nullptr, &len);
  if (s) { Ort::GetApi().ReleaseStatus(s); return def; }
  std::vector<int64_t> out(len);
  if (len) Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttributeArray_int64(info, name, out.data(), &len));
  return out;
}

std::vector<float> AttrTensorFloats(const Ort::ConstKernelInfo& info, const char* name, std::vector<int64_t>* shape) {
  Ort::AllocatorWithDefaultOptions alloc;
  Ort::Value t = info.GetTensorAttribute(name, alloc);
  auto ti = t.GetTensorTypeAndShapeInfo();
  if (ti.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    throw std::invalid_argument(std::string("attribute ") + name + " must be a float32 tensor");
  if (shape) *shape = ti.GetShape();
  const float* p = t.GetTensorData<float>();
  return std::vector<float>(p, p + ti.GetElementCount());
}

float TableAttrFloat(const Ort::ConstKernelInfo& info, OpId op, const char* name) {
  const float* def = FloatDefaultOf(op, name);
  if (!def) throw std::invalid_argument(std::string("the op table lists no default of ") + name);
  return AttrFloat(info, name, *def);
}

int64_t TableAttrInt(const Ort::ConstKernelInfo& info, OpId op, const char* name) {
  const long long* def = IntDefaultOf(op, name);
  if (!def) throw std::invalid_argument(std::string("the op table lists no default of ") + name);
  return AttrInt(info, name, static_cast<int64_t>(*def));
}

OrtStatusPtr Error(OrtErrorCode code, const std::string& where, const std::string& msg) {
  return Ort::GetApi().CreateStatus(code, ("onnx-ecc " + where + ": " + msg).c_str());
}

OrtStatusPtr FlagInput(Ort::KernelContext& ctx, size_t index, const std::string& where, const bool** flag) {
  *flag = nullptr;
  if (ctx.GetInputCount() <= index) return nullptr;
  auto f = ctx.GetInput(index);
  if (static_cast<const OrtValue*>(f) == nullptr) return nullptr;
  auto fi = f.GetTensorTypeAndShapeInfo();
  if (fi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL || fi.GetElementCount() != 1)
    return Error(ORT_INVALID_ARGUMENT, where, "Flag must be one bool");
  *flag = f.GetTensorData<bool>();
  return nullptr;
}

OrtStatusPtr ReadFlag(Ort::KernelContext& ctx, size_t index, const std::string& where, bool* raised) {
  const bool* flag = nullptr;
  OrtStatusPtr st = FlagInput(ctx, index, where, &flag);
  *raised = flag != nullptr && flag[0];
  return st;
}

void WriteRaised(Ort::KernelContext& ctx, bool raised) {
  ctx.GetOutput(0, std::vector<int64_t>{1}).GetTensorMutableData<bool>()[0] = raised;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// ---- attribute parsing, shared with the CUDA wrappers (ort_attrs.h) ------------------------

OrtStatusPtr ParseDecodeAttrs(const Ort::ConstKernelInfo& info, DecodeAttrs* k) {
  k->name = "Decode(" + AttrString(info, "layer", "") + ")";
  std::string err = k->cfg.layout.Init(AttrInt(info, "data_channels", 0), AttrInt(info, "groups", 1),
                                       AttrInt(info, "block", 0), AttrInt(info, "parity", 0));
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->cfg.generator = AttrFloats(info, "generator", true);
  k->cfg.gain = AttrFloats(info, "noise_gain", true);
  k->cfg.offset = AttrFloats(info, "noise_offset", true);
  k->cfg.tolerance = TableAttrFloat(info, OpId::kDecode, "tolerance");
  const std::string mode = AttrString(info, "mode", "correct");
  if (mode != "correct" && mode != "detect") return Error(ORT_INVALID_ARGUMENT, k->name, "mode must be 'correct' or 'detect'");
  k->cfg.correct = mode == "correct";
  const std::string act = AttrString(info, "activation", "");
  if (act != "" && act != "Relu") return Error(ORT_INVALID_ARGUMENT, k->name, "activation must be '' or 'Relu'");
  k->cfg.relu = act == "Relu";
  const std::string scale = AttrString(info, "scale", "output");
  if (scale != "output" && scale != "input") return Error(ORT_INVALID_ARGUMENT, k->name, "scale must be 'output' or 'input'");
  k->cfg.scale_output = scale == "output";
  err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->cfg.PrepareThresholds();
  k->axis = AttrInt(info, "axis", 1);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "Decode");
  err = k->learner.Init(k->cfg.layout, AttrInts(info, "erasures", {}), TableAttrInt(info, OpId::kDecode, "learn_after"),
                        k->counters);
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  return nullptr;
}

OrtStatusPtr ParseDepthwiseAttrs(const Ort::ConstKernelInfo& info, DepthwiseAttrs* k) {
  k->name = "DepthwiseCheck(" + AttrString(info, "layer", "") + ")";
  auto& c = k->cfg;
  std::vector<int64_t> wshape, bshape;
  c.weights = AttrTensorFloats(info, "weights", &wshape);
  c.bias = AttrTensorFloats(info, "bias", &bshape);
  if (wshape.size() != 4 || wshape[1] != 1) return Error(ORT_INVALID_ARGUMENT, k->name, "weights must be [C, 1, kh, kw]");
  c.channels = wshape[0]; c.kh = wshape[2]; c.kw = wshape[3];
  auto sums = AttrFloats(info, "weight_sums", true);
  c.weight_sums.assign(sums.begin(), sums.end());
  auto strides = AttrInts(info, "strides", {1, 1});
  auto pads = AttrInts(info, "pads", {0, 0, 0, 0});
  auto dil = AttrInts(info, "dilations", {1, 1});
  if (strides.size() != 2 || pads.size() != 4 || dil.size() != 2)
    return Error(ORT_INVALID_ARGUMENT, k->name, "strides/dilations need 2 values and pads 4");
  c.stride_h = strides[0]; c.stride_w = strides[1];
  c.pad_t = pads[0]; c.pad_l = pads[1]; c.pad_b = pads[2]; c.pad_r = pads[3];
  c.dil_h = dil[0]; c.dil_w = dil[1];
  c.tolerance = TableAttrFloat(info, OpId::kDepthwiseCheck, "tolerance");
  const std::string mode = AttrString(info, "mode", "correct");
  if (mode != "correct" && mode != "detect") return Error(ORT_INVALID_ARGUMENT, k->name, "mode must be 'correct' or 'detect'");
  c.correct = mode == "correct";
  const std::string act = AttrString(info, "activation", "");
  if (act != "" && act != "Relu") return Error(ORT_INVALID_ARGUMENT, k->name, "activation must be '' or 'Relu'");
  c.relu = act == "Relu";
  std::string err = c.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "DepthwiseCheck");
  return nullptr;
}

OrtStatusPtr ParseInjectAttrs(const Ort::ConstKernelInfo& info, InjectAttrs* k) {
  const int64_t site = AttrInt(info, "site", 0);
  k->name = "InjectFault(site " + std::to_string(site) + ")";
  const std::string kind = AttrString(info, "kind", "bitflip");
  if (kind == "bitflip") k->cfg.kind = FaultKind::kBitFlip;
  else if (kind == "random") k->cfg.kind = FaultKind::kRandom;
  else if (kind == "zero") k->cfg.kind = FaultKind::kZero;
  else return Error(ORT_INVALID_ARGUMENT, k->name, "kind must be 'bitflip', 'random' or 'zero'");
  std::vector<int64_t> all(32);
  for (int i = 0; i < 32; ++i) all[i] = i;
  k->cfg.bits = AttrInts(info, "bits", all);
  k->cfg.count = AttrInt(info, "count", 0);
  k->cfg.site = site;
  std::string err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->counters = CountersFor("", "site" + std::to_string(site), "InjectFault");
  return nullptr;
}

OrtStatusPtr ParseSumCheckAttrs(const Ort::ConstKernelInfo& info, SumCheckAttrs* k) {
  k->name = "SumCheck(" + AttrString(info, "layer", "") + ")";
  auto w = AttrFloats(info, "weights", true);
  k->cfg.weights.assign(w.begin(), w.end());
  k->cfg.taps = AttrInt(info, "taps", 0);
  k->cfg.offset = TableAttrFloat(info, OpId::kSumCheck, "offset");
  k->cfg.tolerance = TableAttrFloat(info, OpId::kSumCheck, "tolerance");
  std::string err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "SumCheck");
  return nullptr;
}

OrtStatusPtr CheckDepthwiseInputs(const DepthwiseAttrs& k, const Ort::ConstValue& x, const Ort::ConstValue& y,
                                  std::vector<int64_t>* xs, std::vector<int64_t>* ys) {
  const auto& cfg = k.cfg;
  *xs = x.GetTensorTypeAndShapeInfo().GetShape();
  *ys = y.GetTensorTypeAndShapeInfo().GetShape();
  if (x.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
      y.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return Error(ORT_INVALID_ARGUMENT, k.name, "X and Y must be float32");
  if (xs->size() != 4 || ys->size() != 4) return Error(ORT_INVALID_ARGUMENT, k.name, "X and Y must be 4-D (N, C, H, W)");
  if ((*xs)[0] != (*ys)[0] || (*xs)[1] != cfg.channels || (*ys)[1] != cfg.channels)
    return Error(ORT_INVALID_ARGUMENT, k.name, "X and Y must have N and C = " + std::to_string(cfg.channels) + " matching");
  if ((*ys)[2] != cfg.OutH((*xs)[2]) || (*ys)[3] != cfg.OutW((*xs)[3]))
    return Error(ORT_INVALID_ARGUMENT, k.name, "Y's spatial size does not follow from X's and the conv attributes");
  return nullptr;
}

OrtStatusPtr CheckInjectInputs(const InjectAttrs& k, const Ort::ConstValue& x, const Ort::ConstValue& seed,
                               const Ort::ConstValue& rate) {
  if (x.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return Error(ORT_INVALID_ARGUMENT, k.name, "X must be float32");
  if (seed.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 ||
      seed.GetTensorTypeAndShapeInfo().GetElementCount() != 1)
    return Error(ORT_INVALID_ARGUMENT, k.name, "Seed must be one int64");
  if (rate.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
      rate.GetTensorTypeAndShapeInfo().GetElementCount() != 1)
    return Error(ORT_INVALID_ARGUMENT, k.name, "Rate must be one float32");
  return nullptr;
}

OrtStatusPtr ReadDecodeInputs(const DecodeAttrs& k, Ort::KernelContext& ctx, DecodeInputs* in) {
  const auto& L = k.cfg.layout;
  auto y = ctx.GetInput(0);
  auto yi = y.GetTensorTypeAndShapeInfo();
  if (yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return Error(ORT_INVALID_ARGUMENT, k.name, "Y must be float32");
  auto shape = yi.GetShape();
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t ax = k.axis < 0 ? k.axis + rank : k.axis;
  if (rank < 1 || ax < 0 || ax >= rank) return Error(ORT_INVALID_ARGUMENT, k.name, "axis out of range for Y's rank");
  if (shape[ax] != L.total_channels)
    return Error(ORT_INVALID_ARGUMENT, k.name,
                 "Y has " + std::to_string(shape[ax]) + " channels on axis " + std::to_string(ax) +
                     ", the code expects " + std::to_string(L.total_channels));
  in->y = y.GetTensorData<float>();
  in->outer = in->inner = 1;
  for (int64_t i = 0; i < ax; ++i) in->outer *= shape[i];
  for (int64_t i = ax + 1; i < rank; ++i) in->inner *= shape[i];
  if (!k.cfg.scale_output && ctx.GetInputCount() > 1) {  // X is read only with scale='input'
    auto x = ctx.GetInput(1);
    if (static_cast<const OrtValue*>(x) != nullptr) {
      auto xi = x.GetTensorTypeAndShapeInfo();
      if (xi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return Error(ORT_INVALID_ARGUMENT, k.name, "X must be float32");
      in->x = x.GetTensorData<float>();
      in->x_count = static_cast<int64_t>(xi.GetElementCount());
    }
  }
  if (!k.cfg.scale_output && !in->x) return Error(ORT_INVALID_ARGUMENT, k.name, "scale='input' needs the layer input X");
  shape[ax] = L.data_channels;
  in->out_shape = shape;
  if (ctx.GetInputCount() > 2) {
    auto r = ctx.GetInput(2);
    if (static_cast<const OrtValue*>(r) != nullptr) {
      auto ri = r.GetTensorTypeAndShapeInfo();
      if (ri.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ri.GetShape() != shape)
        return Error(ORT_INVALID_ARGUMENT, k.name, "R must be float32 with the shape of the output");
      in->residual = r.GetTensorData<float>();
    }
  }
  return nullptr;
}

// ---- Decode -------------------------------------------------------------------------------

struct DecodeKernel : DecodeAttrs {
  struct Job {
    const DecodeKernel* k;
    const float* y;
    const float* residual;
    float* z;
    const float* xmax;
    int64_t outer, inner;
    WorkSplit split;
    SharedCounts* counts;
    const RunErasures* erasures;
  };

  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const auto& L = j->k->cfg.layout;
    int64_t o, v0, n, kb0, kb1;
    j->split.Item(item, j->outer, j->inner, L.groups * L.num_blocks(), &o, &v0, &n, &kb0, &kb1);
    VectorView v{};
    if (j->inner == 1) {  // [rows, C]: a chunk of rows, channels contiguous
      v = VectorView{j->y + v0 * L.total_channels, j->residual ? j->residual + v0 * L.data_channels : nullptr,
                     j->z + v0 * L.data_channels, 1, L.total_channels, 1, L.data_channels,
                     j->xmax ? j->xmax + v0 : nullptr, 1};
    } else {              // [outer, C, inner]: a chunk of positions of one outer index
      const int64_t yoff = o * L.total_channels * j->inner + v0, zoff = o * L.data_channels * j->inner + v0;
      v = VectorView{j->y + yoff, j->residual ? j->residual + zoff : nullptr, j->z + zoff, j->inner, 1, j->inner, 1,
                     j->xmax ? j->xmax + o : nullptr, 0};
    }
    v.erasures = j->erasures;
    DecodeCounts c;
    DecodeVectors(j->k->cfg, v, n, c, kb0, kb1);
    j->counts->Add(c);
  }

  struct MaxJob {
    const float* x;
    int64_t n, outer;
    float* out;
  };
  static void RunMax(void* data, size_t item) {
    auto* j = static_cast<MaxJob*>(data);
    ChunkMaxAbs(j->x, j->n, j->outer, static_cast<int64_t>(item), static_cast<int64_t>(item) + 1, j->out);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      DecodeInputs in;
      if (OrtStatusPtr st = ReadDecodeInputs(*this, ctx, &in)) return st;
      const auto& L = cfg.layout;
      const int64_t outer = in.outer, inner = in.inner;
      std::vector<float> xmax;
      if (in.x) {
        xmax.resize(outer);
        if (outer > 0 && in.x_count % outer == 0) {
          MaxJob mj{in.x, in.x_count, outer, xmax.data()};
          ctx.ParallelFor(&RunMax, static_cast<size_t>(outer), 0, &mj);
        } else if (outer > 0) {
          ChunkMaxAbs(in.x, in.x_count, outer, 0, 1, xmax.data());
          std::fill(xmax.begin(), xmax.end(), xmax[0]);
        }
      }
      const float* residual = in.residual;
      auto z = ctx.GetOutput(0, in.out_shape);
      if (outer * inner == 0) return nullptr;
      const int64_t blocks = L.groups * L.num_blocks();
      SharedCounts counts;
      std::shared_ptr<const ErasureSet> erased;
      const int64_t run = learner.BeginRun(&erased);
      const RunErasures er = learner.View(erased.get(), run);
      Job job{this, in.y, residual, z.GetTensorMutableData<float>(), xmax.empty() ? nullptr : xmax.data(), outer, inner,
              SplitWork(outer, inner, blocks, L.total_channels + L.data_channels), &counts, &er};
      RunItems(ctx, &Run, static_cast<size_t>(job.split.items), &job, outer * inner * (L.total_channels + L.data_channels));
      const DecodeCounts total = counts.Total(outer * inner * blocks);
      learner.EndRun(run, total.flagged > 0);
      return ReportRun(counters, total, fail_stop, name, "code block(s)");
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- DepthwiseCheck ---------------------------------------------------------------------

struct DepthwiseKernel : DepthwiseAttrs {
  struct Job {
    const DepthwiseKernel* k;
    const float* x;
    const float* y;
    float* z;
    int64_t planes, per_item, h, w;
    const char* verified;
    SharedCounts* counts;
  };
  // One work item: a run of planes (sample, channel) of about 16K values, at least 64 items
  // when there are enough planes.
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const int64_t p0 = static_cast<int64_t>(item) * j->per_item, p1 = std::min(j->planes, p0 + j->per_item);
    DecodeCounts c;
    DepthwiseCheckPlanes(j->k->cfg, p0, p1, j->x, j->h, j->w, j->y, j->z, j->verified, c);
    j->counts->Add(c);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      auto x = ctx.GetInput(0);
      auto y = ctx.GetInput(1);
      std::vector<int64_t> xs, ys;
      if (OrtStatusPtr st = CheckDepthwiseInputs(*this, x, y, &xs, &ys)) return st;
      auto z = ctx.GetOutput(0, ys);
      char verified_stack[1024];
      std::vector<char> verified_heap;
      char* verified = verified_stack;
      if (cfg.channels > 1024) {
        verified_heap.resize(static_cast<size_t>(cfg.channels));
        verified = verified_heap.data();
      }
      for (int64_t c = 0; c < cfg.channels; ++c) verified[c] = cfg.ChannelVerified(c);
      const int64_t planes = xs[0] * xs[1];
      const int64_t per_item = DepthwisePlanesPerItem(cfg, xs[2], xs[3], planes);
      SharedCounts counts;
      Job job{this, x.GetTensorData<float>(), y.GetTensorData<float>(), z.GetTensorMutableData<float>(), planes,
              per_item, xs[2], xs[3], verified, &counts};
      if (planes > 0)
        RunItems(ctx, &Run, static_cast<size_t>((planes + per_item - 1) / per_item), &job,
                 planes * (xs[2] * xs[3] + 2 * ys[2] * ys[3]));
      return ReportRun(counters, counts.Total(planes * ys[2]), fail_stop, name, "row(s)");
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- InjectFault --------------------------------------------------------------------------

struct InjectKernel : InjectAttrs {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      auto x = ctx.GetInput(0);
      auto seed = ctx.GetInput(1);
      auto rate = ctx.GetInput(2);
      if (OrtStatusPtr st = CheckInjectInputs(*this, x, seed, rate)) return st;
      auto xi = x.GetTensorTypeAndShapeInfo();
      auto y = ctx.GetOutput(0, xi.GetShape());
      const int64_t n = static_cast<int64_t>(xi.GetElementCount());
      DecodeCounts c;
      c.vectors = n;
      c.flagged = InjectFaults(cfg, x.GetTensorData<float>(), y.GetTensorMutableData<float>(), n,
                               static_cast<uint64_t>(seed.GetTensorData<int64_t>()[0]), rate.GetTensorData<float>()[0]);
      counters->Add(c);
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- SumCheck -------------------------------------------------------------------------------

struct SumCheckKernel : SumCheckAttrs {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      auto y = ctx.GetInput(0);
      auto x = ctx.GetInput(1);
      auto yi = y.GetTensorTypeAndShapeInfo();
      auto xi = x.GetTensorTypeAndShapeInfo();
      if (yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || xi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        return Error(ORT_INVALID_ARGUMENT, name, "Y and X must be float32");
      const auto ys = yi.GetShape(), xs = xi.GetShape();
      if (ys.empty() || xs.empty() || ys[0] != xs[0]) return Error(ORT_INVALID_ARGUMENT, name, "Y and X must have the same first (batch) dimension");
      const int64_t n = ys[0];
      const int64_t channels = static_cast<int64_t>(cfg.weights.size());
      const int64_t y_per = n ? static_cast<int64_t>(yi.GetElementCount()) / n : 0;
      const int64_t x_per = n ? static_cast<int64_t>(xi.GetElementCount()) / n : 0;
      if (n && y_per != channels)
        return Error(ORT_INVALID_ARGUMENT, name, "Y must hold " + std::to_string(channels) + " means per sample, got " + std::to_string(y_per));
      if (n && x_per < cfg.taps)
        return Error(ORT_INVALID_ARGUMENT, name, "X must hold at least " + std::to_string(cfg.taps) + " means per sample");
      bool raised = false;
      if (OrtStatusPtr st = ReadFlag(ctx, 2, name, &raised)) return st;
      const float* rp = nullptr;
      if (ctx.GetInputCount() > 3) {
        auto r = ctx.GetInput(3);
        if (static_cast<const OrtValue*>(r) != nullptr) {
          auto ri = r.GetTensorTypeAndShapeInfo();
          if (ri.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ri.GetElementCount() != yi.GetElementCount())
            return Error(ORT_INVALID_ARGUMENT, name, "R must be float32 with as many means as Y");
          rp = r.GetTensorData<float>();
        }
      }
      const float* yp = y.GetTensorData<float>();
      const float* xp = x.GetTensorData<float>();
      DecodeCounts c;
      c.vectors = n;
      for (int64_t s = 0; s < n; ++s)
        if (!(SumCheckRatio(cfg, yp + s * y_per, xp + s * x_per, rp ? rp + s * y_per : nullptr) <= cfg.tolerance))
          ++c.flagged;
      counters->Add(c);
      WriteRaised(ctx, raised || c.flagged > 0);
      if (fail_stop && c.flagged > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(c.flagged) + " sample(s) failed the sum check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- registration -------------------------------------------------------------------------

ONNX_ECC_CPU_OP(Decode)
ONNX_ECC_CPU_OP(DepthwiseCheck)
ONNX_ECC_CPU_OP(InjectFault)
ONNX_ECC_CPU_OP(SumCheck)

// The op table's CPU column (ParityCheckCpuOp and SampleCheckCpuOp are defined next to their
// kernels, in parity_check.cc and sample_check.cc).
std::vector<const OrtCustomOp*> CpuOps() {
#define ONNX_ECC_CPU_OP_PTR(name, parse, cpu, cuda) name##CpuOp(),
  return {ONNX_ECC_OPS(ONNX_ECC_CPU_OP_PTR)};
#undef ONNX_ECC_CPU_OP_PTR
}

}  // namespace onnx_ecc

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                              const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (!api) {
    const OrtApi* old = api_base->GetApi(1);
    return old ? old->CreateStatus(ORT_FAIL, "onnx-ecc needs onnxruntime >= 1.21 (C API version 21)") : nullptr;
  }
  Ort::InitApi(api);
  static std::mutex mu;
  static std::vector<std::unique_ptr<Ort::CustomOpDomain>> domains;  // must outlive every session
  try {
    std::lock_guard<std::mutex> lock(mu);
    auto domain = std::make_unique<Ort::CustomOpDomain>(onnx_ecc::kDomain);
    for (const OrtCustomOp* op : onnx_ecc::CpuOps()) domain->Add(op);
    for (const OrtCustomOp* op : onnx_ecc::GpuOps()) domain->Add(op);
    Ort::UnownedSessionOptions(options).Add(*domain);
    domains.push_back(std::move(domain));
    return nullptr;
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, (std::string("onnx-ecc: ") + e.what()).c_str());
  }
}
