// Attribute parsing and validation of the custom ops, shared by the CPU wrappers (ort_ops.cc,
// which defines these functions) and the CUDA wrappers (custom_ops/cuda/ort_cuda_ops.cc), so
// that both accept and reject exactly the same nodes.
#pragma once

#include <cmath>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/counters.h"
#include "onnx_ecc/decode.h"
#include "onnx_ecc/depthwise.h"
#include "onnx_ecc/erasures.h"
#include "onnx_ecc/inject.h"
#include "onnx_ecc/int_decode.h"
#include "onnx_ecc/int_sample_check.h"
#include "onnx_ecc/op_table.h"
#include "onnx_ecc/parity_check.h"
#include "onnx_ecc/sample_check.h"
#include "onnx_ecc/sum_check.h"

namespace onnx_ecc {

int64_t AttrInt(const Ort::ConstKernelInfo& info, const char* name, int64_t def);
float AttrFloat(const Ort::ConstKernelInfo& info, const char* name, float def);
std::string AttrString(const Ort::ConstKernelInfo& info, const char* name, const std::string& def);
std::vector<float> AttrFloats(const Ort::ConstKernelInfo& info, const char* name, bool required);
std::vector<int64_t> AttrInts(const Ort::ConstKernelInfo& info, const char* name, std::vector<int64_t> def);
std::vector<float> AttrTensorFloats(const Ort::ConstKernelInfo& info, const char* name, std::vector<int64_t>* shape);
// A float attribute of op `op` whose default is the op table's (op_table.h); throws
// std::invalid_argument when the table lists no default for it.
float TableAttrFloat(const Ort::ConstKernelInfo& info, OpId op, const char* name);
int64_t TableAttrInt(const Ort::ConstKernelInfo& info, OpId op, const char* name);

// An ORT status "onnx-ecc <where>: <msg>".
OrtStatusPtr Error(OrtErrorCode code, const std::string& where, const std::string& msg);
// A shape as "[d0, d1, ...]", for error messages.
inline std::string ShapeText(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// The fast-path checks' optional Flag input (one bool, host memory) at ``index``: sets *raised
// to it (false when absent); an error status names the op when it is not one bool.
OrtStatusPtr ReadFlag(Ort::KernelContext& ctx, size_t index, const std::string& where, bool* raised);

// The same input's tensor, where it lives (the CUDA wrappers read it on the device): *flag is
// null when Flag is absent.
OrtStatusPtr FlagInput(Ort::KernelContext& ctx, size_t index, const std::string& where, const bool** flag);

// Writes the checks' Raised output: one bool.
void WriteRaised(Ort::KernelContext& ctx, bool raised);

// The parsed and validated attributes of each op. Parse* return nullptr or an error status;
// they may throw (callers catch).

// What every checking op carries: its maths config, whether a failed check raises, the layer
// it reports as and that layer's counters.
template <typename Config>
struct CheckAttrs {
  Config cfg;
  bool fail_stop = false;
  std::string name;
  LayerCounters* counters = nullptr;
};

struct DecodeAttrs : CheckAttrs<DecodeConfig> {
  int64_t axis = 1;
  // Known erasures (attribute `erasures`, channels of Y) and their run-time learning
  // (`learn_after` runs in a row, the op table's default), per kernel instance.
  ErasureLearner learner;
};
OrtStatusPtr ParseDecodeAttrs(const Ort::ConstKernelInfo& info, DecodeAttrs* out);

// Decode's inputs, checked (types, channel count, R's shape) and laid out as [outer, C, inner].
struct DecodeInputs {
  const float* y = nullptr;
  int64_t outer = 1, inner = 1;
  std::vector<int64_t> out_shape;  // Y's shape with data_channels on the channel axis
  const float* x = nullptr;        // only with scale='input'
  int64_t x_count = 0;
  const float* residual = nullptr; // or nullptr
};
OrtStatusPtr ReadDecodeInputs(const DecodeAttrs& k, Ort::KernelContext& ctx, DecodeInputs* in);

using DepthwiseAttrs = CheckAttrs<DepthwiseConfig>;
OrtStatusPtr ParseDepthwiseAttrs(const Ort::ConstKernelInfo& info, DepthwiseAttrs* out);

// Checks DepthwiseCheck's inputs (types and shapes); returns nullptr or an error status, and
// the shapes of X and Y.
OrtStatusPtr CheckDepthwiseInputs(const DepthwiseAttrs& k, const Ort::ConstValue& x, const Ort::ConstValue& y,
                                  std::vector<int64_t>* xs, std::vector<int64_t>* ys);

struct InjectAttrs {
  InjectConfig cfg;
  std::string name;
  LayerCounters* counters = nullptr;
};
OrtStatusPtr ParseInjectAttrs(const Ort::ConstKernelInfo& info, InjectAttrs* out);

// Checks InjectFault's inputs: X float32, Seed one int64, Rate one float32.
OrtStatusPtr CheckInjectInputs(const InjectAttrs& k, const Ort::ConstValue& x, const Ort::ConstValue& seed,
                               const Ort::ConstValue& rate);

using SumCheckAttrs = CheckAttrs<SumCheckConfig>;
OrtStatusPtr ParseSumCheckAttrs(const Ort::ConstKernelInfo& info, SumCheckAttrs* out);

struct ParityCheckAttrs : CheckAttrs<ParityCheckConfig> {
  int64_t axis = -1;
  int64_t stride = 1;  // check every stride-th vector (channels last only); P holds only those
};
OrtStatusPtr ParseParityCheckAttrs(const Ort::ConstKernelInfo& info, ParityCheckAttrs* out);
// The same for op ``op`` (ParityCheck, ProductCheck or LinearCheck, which share the attributes): its name, its
// table's tolerance default and its counters' op.
OrtStatusPtr ParseParityAttrsOf(const Ort::ConstKernelInfo& info, OpId op, ParityCheckAttrs* out);

// ParityCheck's inputs, checked (types, Y's channels, P's shape, Flag) and laid out as
// Y = [outer, data_channels, inner], P = [outer, checks, inner]. flag: whether Flag is given (it
// may live on the device: the CUDA wrapper reads it there).
struct ParityInputs {
  const float* y = nullptr;
  const float* p = nullptr;
  const bool* flag = nullptr;
  int64_t outer = 1, inner = 1;  // with stride > 1: outer counts the checked vectors only
  int64_t y_row_stride = 1;      // rows of Y between checked vectors (channels last)
};
OrtStatusPtr ReadParityInputs(const ParityCheckAttrs& k, Ort::KernelContext& ctx, ParityInputs* in);

// ProductCheck (product_check.cc): ParityCheck's attributes (axis unused; stride: the row stride
// of each product) and alpha, the parity of C = alpha A B computed from A and B.
struct ProductCheckAttrs : ParityCheckAttrs {
  float alpha = 1.f;
};
inline OrtStatusPtr ParseProductCheckAttrs(const Ort::ConstKernelInfo& info, ProductCheckAttrs* out) {
  if (OrtStatusPtr st = ParseParityAttrsOf(info, OpId::kProductCheck, out)) return st;
  out->alpha = TableAttrFloat(info, OpId::kProductCheck, "alpha");
  if (!std::isfinite(out->alpha)) return Error(ORT_INVALID_ARGUMENT, out->name, "alpha must be finite");
  return nullptr;
}

// LinearCheck (linear_check.cc): ParityCheck's attributes (axis unused; stride: the row stride of
// X and Y flattened to rows), the parity of Y = X W computed from X and the parity weights W Gᵀ.
using LinearCheckAttrs = ParityCheckAttrs;
inline OrtStatusPtr ParseLinearCheckAttrs(const Ort::ConstKernelInfo& info, LinearCheckAttrs* out) {
  return ParseParityAttrsOf(info, OpId::kLinearCheck, out);
}

using SampleCheckAttrs = CheckAttrs<SampleCheckConfig>;
OrtStatusPtr ParseSampleCheckAttrs(const Ort::ConstKernelInfo& info, SampleCheckAttrs* out);

// SampleCheck's inputs, checked (types; A [samples, C, ...]; Y as A with the parity channels
// after the data; R as A; W [C, ...] with filter_sums; Bias [C] only with W; Flag one bool, which
// may live on the device). hw: positions per channel; row: values per filter.
struct SampleInputs {
  const float *a = nullptr, *y = nullptr, *w = nullptr, *r = nullptr, *bias = nullptr;
  const bool* flag = nullptr;
  int64_t samples = 0, hw = 1, row = 0;
};
OrtStatusPtr ReadSampleInputs(const SampleCheckAttrs& k, Ort::KernelContext& ctx, SampleInputs* in);

// IntSampleCheck (int_sample_check.cc): exact, no float attributes.
using IntSampleCheckAttrs = CheckAttrs<IntSampleCheckConfig>;
OrtStatusPtr ParseIntSampleCheckAttrs(const Ort::ConstKernelInfo& info, IntSampleCheckAttrs* out);

// IntSampleCheck's inputs, checked (A and Y both uint8 or int8, Y every row_stride-th row of A on
// axis -2; W int8 with the output channels on weight_axis, with filter_sums; Bias int32 [C] only
// with W; Flag one bool, which may live on the device) as A [outer, a_rows, row], Y [outer,
// y_rows, row] bytes and W [w_rows, w_cols].
struct IntSampleInputs {
  const uint8_t *a = nullptr, *y = nullptr;
  const int8_t* w = nullptr;
  const int32_t* bias = nullptr;
  const bool* flag = nullptr;
  int64_t outer = 1, a_rows = 0, y_rows = 0, row = 0, w_rows = 0, w_cols = 0;
};
OrtStatusPtr ReadIntSampleInputs(const IntSampleCheckAttrs& k, Ort::KernelContext& ctx, IntSampleInputs* in);

// CreateKernelV2 of every op (TableOp, ort_glue.h): makes a Kernel and parses its attributes with
// ``parse``; failures and exceptions become an ORT status.
template <typename Kernel, typename Parse>
OrtStatusPtr MakeKernel(const OrtKernelInfo* info_ptr, void** kernel, const char* op, Parse parse) noexcept {
  try {
    Ort::ConstKernelInfo info(info_ptr);
    auto k = std::make_unique<Kernel>();
    if (OrtStatusPtr st = parse(info, k.get())) return st;
    *kernel = k.release();
    return nullptr;
  } catch (const std::exception& e) {
    return Error(ORT_INVALID_ARGUMENT, op, e.what());
  }
}

}  // namespace onnx_ecc
