// The one table of onnx-ecc's custom ops: per op its name, inputs and outputs (type, optional,
// read from host memory), the defaults of its float attributes, its attribute parser and the
// kernel structs that run it on the CPU and on CUDA (NoKernel: none). RegisterCustomOps
// (ort_ops.cc) registers the CPU column, GpuOps (custom_ops/cuda/ort_cuda_ops.cc) the CUDA column,
// the op structs onnxruntime sees are made from the rows (TableOp, ort_glue.h), and
// OnnxEcc_OpTableJson (op_table.cc) exports the table, which tests/custom_ops/test_op_table.py
// checks against the Python declarations (onnx_ecc.ops), so that the two cannot drift apart.
// No onnxruntime types here.
#pragma once

#include <cstddef>
#include <cstring>

#include "onnx_ecc/defaults.h"

namespace onnx_ecc {

// Mirrors onnx_ecc.ops.DOMAIN.
inline constexpr const char* kDomain = "ai.onnx_ecc";

// kUInt8OrInt8: either (the op reads the type at run time).
enum class PortType { kFloat, kBool, kInt64, kInt32, kUInt8, kInt8, kUInt8OrInt8 };

struct Port {
  const char* name;
  PortType type;
  bool optional;
  bool host;  // the CUDA kernel reads it from host memory (OrtMemTypeCPUInput)
};

struct FloatDefault {
  const char* attr;
  float value;
};

struct IntDefault {
  const char* attr;
  long long value;
};

constexpr PortType kF = PortType::kFloat, kB = PortType::kBool, kI = PortType::kInt64;
constexpr PortType kI32 = PortType::kInt32, kU8 = PortType::kUInt8, kS8 = PortType::kInt8, kU8S8 = PortType::kUInt8OrInt8;

// ---- inputs, outputs and float defaults of each op, in onnx_ecc.ops' order --------------------------

inline constexpr Port kDecodeInputs[] = {{"Y", kF, false, false}, {"X", kF, true, false}, {"R", kF, true, false}};
inline constexpr Port kDecodeOutputs[] = {{"Z", kF, false, false}};
inline constexpr FloatDefault kDecodeDefaults[] = {{"tolerance", kDefaultTolerance}};
inline constexpr IntDefault kDecodeIntDefaults[] = {{"learn_after", kDefaultLearnAfter}};

inline constexpr Port kDepthwiseCheckInputs[] = {{"X", kF, false, false}, {"Y", kF, false, false}};
inline constexpr Port kDepthwiseCheckOutputs[] = {{"Z", kF, false, false}};
inline constexpr FloatDefault kDepthwiseCheckDefaults[] = {{"tolerance", kDefaultTolerance}};
inline constexpr IntDefault kDepthwiseCheckIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

inline constexpr Port kInjectFaultInputs[] = {{"X", kF, false, false}, {"Seed", kI, false, true},
                                              {"Rate", kF, false, true}};
inline constexpr Port kInjectFaultOutputs[] = {{"Y", kF, false, false}};
inline constexpr FloatDefault kInjectFaultDefaults[] = {{nullptr, 0.f}};  // none (an array is never empty)
inline constexpr IntDefault kInjectFaultIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

inline constexpr Port kSumCheckInputs[] = {{"Y", kF, false, false}, {"X", kF, false, false},
                                           {"Flag", kB, true, false}, {"R", kF, true, false}};
inline constexpr Port kSumCheckOutputs[] = {{"Raised", kB, false, false}};
inline constexpr FloatDefault kSumCheckDefaults[] = {{"offset", 0.f}, {"tolerance", kDefaultTolerance}};
inline constexpr IntDefault kSumCheckIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

inline constexpr Port kParityCheckInputs[] = {{"Y", kF, false, false}, {"P", kF, false, false},
                                              {"Flag", kB, true, false}};
inline constexpr Port kParityCheckOutputs[] = {{"Raised", kB, false, false}};
inline constexpr FloatDefault kParityCheckDefaults[] = {{"tolerance", kDefaultTolerance}};
inline constexpr IntDefault kParityCheckIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

inline constexpr Port kSampleCheckInputs[] = {{"A", kF, false, false},   {"Y", kF, false, false},
                                              {"W", kF, true, false},    {"R", kF, true, false},
                                              {"Flag", kB, true, false}, {"Bias", kF, true, false}};
inline constexpr Port kSampleCheckOutputs[] = {{"Raised", kB, false, false}};
inline constexpr FloatDefault kSampleCheckDefaults[] = {{"tolerance", kSampleTolerance},
                                                        {"parity_tolerance", kDefaultTolerance},
                                                        {"filter_tolerance", kFilterTolerance}};
inline constexpr IntDefault kSampleCheckIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

// int8 layers (int_decode.h): no float attributes.
inline constexpr Port kIntDecodeInputs[] = {{"Y", kI32, false, false}};
inline constexpr Port kIntDecodeOutputs[] = {{"Z", kU8, false, false}};
inline constexpr FloatDefault kIntDecodeDefaults[] = {{nullptr, 0.f}};
inline constexpr IntDefault kIntDecodeIntDefaults[] = {{nullptr, 0}};

// int32 accumulators out (quantize_dynamic's MatMulInteger / ConvInteger): no float attributes.
inline constexpr Port kInt32DecodeInputs[] = {{"Y", kI32, false, false}};
inline constexpr Port kInt32DecodeOutputs[] = {{"Z", kI32, false, false}};
inline constexpr FloatDefault kInt32DecodeDefaults[] = {{nullptr, 0.f}};
inline constexpr IntDefault kInt32DecodeIntDefaults[] = {{nullptr, 0}};

inline constexpr Port kIm2ColNhwcInputs[] = {{"X", kU8S8, false, false}, {"PadValue", kU8, true, true}};
inline constexpr Port kIm2ColNhwcOutputs[] = {{"Y", kU8, false, false}};
inline constexpr FloatDefault kIm2ColNhwcDefaults[] = {{nullptr, 0.f}};
inline constexpr IntDefault kIm2ColNhwcIntDefaults[] = {{nullptr, 0}};

// ParityCheck's check of an activation product C = A B with its parity computed in the kernel.
inline constexpr Port kProductCheckInputs[] = {{"A", kF, false, false}, {"B", kF, false, false},
                                               {"C", kF, false, false}, {"Flag", kB, true, false}};
inline constexpr Port kProductCheckOutputs[] = {{"Raised", kB, false, false}};
inline constexpr FloatDefault kProductCheckDefaults[] = {{"alpha", 1.f}, {"tolerance", kDefaultTolerance}};
inline constexpr IntDefault kProductCheckIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

// ParityCheck's check of a weight layer Y = X W (+ bias) with its parity computed in the kernel.
inline constexpr Port kLinearCheckInputs[] = {{"X", kF, false, false}, {"WG", kF, false, false}, {"Y", kF, false, false},
                                              {"Flag", kB, true, false}, {"PB", kF, true, false}};
inline constexpr Port kLinearCheckOutputs[] = {{"Raised", kB, false, false}};
inline constexpr FloatDefault kLinearCheckDefaults[] = {{"tolerance", kDefaultTolerance}};
inline constexpr IntDefault kLinearCheckIntDefaults[] = {{nullptr, 0}};  // none the C++ side reads from the table

// The exact sample check of int8 layers (int_sample_check.h): no float attributes.
inline constexpr Port kIntSampleCheckInputs[] = {{"A", kU8S8, false, false}, {"Y", kU8S8, false, false},
                                                 {"W", kS8, true, false},    {"Bias", kI32, true, false},
                                                 {"Flag", kB, true, false}};
inline constexpr Port kIntSampleCheckOutputs[] = {{"Raised", kB, false, false}};
inline constexpr FloatDefault kIntSampleCheckDefaults[] = {{nullptr, 0.f}};
inline constexpr IntDefault kIntSampleCheckIntDefaults[] = {{nullptr, 0}};

// ---- the table: name, attribute parser (ort_attrs.h), CPU kernel, CUDA kernel ---------------------

#define ONNX_ECC_OPS(X)                                                             \
  X(Decode, ParseDecodeAttrs, DecodeKernel, DecodeCudaKernel)                       \
  X(DepthwiseCheck, ParseDepthwiseAttrs, DepthwiseKernel, DepthwiseCudaKernel)      \
  X(InjectFault, ParseInjectAttrs, InjectKernel, InjectCudaKernel)                  \
  X(SumCheck, ParseSumCheckAttrs, SumCheckKernel, NoKernel)                         \
  X(ParityCheck, ParseParityCheckAttrs, ParityCheckKernel, ParityCheckCudaKernel)   \
  X(SampleCheck, ParseSampleCheckAttrs, SampleCheckKernel, SampleCheckCudaKernel)   \
  X(IntDecode, ParseIntDecodeAttrs, IntDecodeKernel, IntDecodeCudaKernel)           \
  X(Int32Decode, ParseInt32DecodeAttrs, Int32DecodeKernel, Int32DecodeCudaKernel)   \
  X(Im2ColNhwc, ParseIm2ColAttrs, Im2ColKernel, Im2ColCudaKernel)                   \
  X(IntSampleCheck, ParseIntSampleCheckAttrs, IntSampleCheckKernel, IntSampleCheckCudaKernel) \
  X(ProductCheck, ParseProductCheckAttrs, ProductCheckKernel, NoKernel)             \
  X(LinearCheck, ParseLinearCheckAttrs, LinearCheckKernel, NoKernel)

// The kernel structs the table names, defined by the files that implement them (ort_ops.cc,
// parity_check.cc, sample_check.cc, custom_ops/cuda/ort_cuda_ops.cc).
struct NoKernel;
#define ONNX_ECC_DECLARE_KERNELS(name, parse, cpu, cuda) struct cpu; struct cuda;
ONNX_ECC_OPS(ONNX_ECC_DECLARE_KERNELS)
#undef ONNX_ECC_DECLARE_KERNELS

#define ONNX_ECC_OP_ID(name, parse, cpu, cuda) k##name,
enum class OpId { ONNX_ECC_OPS(ONNX_ECC_OP_ID) };
#undef ONNX_ECC_OP_ID

template <typename Kernel>
inline constexpr bool kHasKernel = true;
template <>
inline constexpr bool kHasKernel<NoKernel> = false;

struct OpSpec {
  const char* name;
  const Port* inputs;
  size_t num_inputs;
  const Port* outputs;
  size_t num_outputs;
  const FloatDefault* defaults;
  size_t num_defaults;
  const IntDefault* int_defaults;  // the int attributes whose default the C++ side takes from here
  size_t num_int_defaults;
  bool has_cpu, has_cuda;
};

template <typename D, size_t N>
constexpr size_t CountDefaults(const D (&a)[N]) {
  size_t n = 0;
  for (const D& d : a) n += d.attr != nullptr;
  return n;
}

#define ONNX_ECC_OP_SPEC(name, parse, cpu, cuda)                                                           \
  OpSpec{#name, k##name##Inputs, sizeof(k##name##Inputs) / sizeof(Port), k##name##Outputs,                 \
         sizeof(k##name##Outputs) / sizeof(Port), k##name##Defaults, CountDefaults(k##name##Defaults),        \
         k##name##IntDefaults, CountDefaults(k##name##IntDefaults), kHasKernel<cpu>, kHasKernel<cuda>},
inline constexpr OpSpec kOps[] = {ONNX_ECC_OPS(ONNX_ECC_OP_SPEC)};
#undef ONNX_ECC_OP_SPEC

inline constexpr size_t kNumOps = sizeof(kOps) / sizeof(OpSpec);

constexpr const OpSpec& Spec(OpId id) { return kOps[static_cast<size_t>(id)]; }

// The table's default of float attribute `attr` of an op, or null when it lists none.
inline const float* FloatDefaultOf(OpId id, const char* attr) {
  const OpSpec& s = Spec(id);
  for (size_t i = 0; i < s.num_defaults; ++i)
    if (std::strcmp(s.defaults[i].attr, attr) == 0) return &s.defaults[i].value;
  return nullptr;
}

// The same for int attributes.
inline const long long* IntDefaultOf(OpId id, const char* attr) {
  const OpSpec& s = Spec(id);
  for (size_t i = 0; i < s.num_int_defaults; ++i)
    if (std::strcmp(s.int_defaults[i].attr, attr) == 0) return &s.int_defaults[i].value;
  return nullptr;
}

}  // namespace onnx_ecc
