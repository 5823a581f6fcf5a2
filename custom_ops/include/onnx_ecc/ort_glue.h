// What the CPU and CUDA onnxruntime wrappers share besides the attribute parsing: the op structs
// onnxruntime sees, made from the rows of the op table (op_table.h), and the registration lists.
#pragma once

#include <type_traits>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/op_table.h"
#include "onnx_ecc/ort_attrs.h"

namespace onnx_ecc {

inline constexpr const char* kCudaProvider = "CUDAExecutionProvider";

// A row's kernels and parser as types: OpKernels<OpId::kDecode>::Cpu is DecodeKernel, and so on.
template <OpId kId>
struct OpKernels;
#define ONNX_ECC_OP_KERNELS(name, parse, cpu, cuda)                               \
  template <>                                                                     \
  struct OpKernels<OpId::k##name> {                                               \
    using Cpu = cpu;                                                              \
    using Cuda = cuda;                                                            \
    template <typename Kernel>                                                    \
    static OrtStatusPtr Parse(const Ort::ConstKernelInfo& info, Kernel* kernel) { \
      return parse(info, kernel);                                                 \
    }                                                                             \
  };
ONNX_ECC_OPS(ONNX_ECC_OP_KERNELS)
#undef ONNX_ECC_OP_KERNELS

inline ONNXTensorElementDataType OrtType(PortType t) {
  switch (t) {
    case PortType::kBool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    case PortType::kInt64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case PortType::kInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case PortType::kUInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case PortType::kInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case PortType::kUInt8OrInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // any: the kernel checks
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
}

inline OrtCustomOpInputOutputCharacteristic OrtCharacteristic(const Port& p) {
  return p.optional ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

// The op struct of one row and provider: name, inputs and outputs from the table; each kernel is
// a Kernel made by the row's parser (MakeKernel). A Kernel has ComputeV2(OrtKernelContext*).
template <OpId kId, typename Kernel, bool kCuda>
struct TableOp : Ort::CustomOpBase<TableOp<kId, Kernel, kCuda>, Kernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return MakeKernel<Kernel>(info, kernel, Spec(kId).name, &OpKernels<kId>::template Parse<Kernel>);
  }
  const char* GetName() const { return Spec(kId).name; }
  const char* GetExecutionProviderType() const { return kCuda ? kCudaProvider : nullptr; }
  size_t GetInputTypeCount() const { return Spec(kId).num_inputs; }
  ONNXTensorElementDataType GetInputType(size_t i) const { return OrtType(Spec(kId).inputs[i].type); }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return OrtCharacteristic(Spec(kId).inputs[i]);
  }
  OrtMemType GetInputMemoryType(size_t i) const {
    return kCuda && Spec(kId).inputs[i].host ? OrtMemTypeCPUInput : OrtMemTypeDefault;
  }
  size_t GetOutputTypeCount() const { return Spec(kId).num_outputs; }
  ONNXTensorElementDataType GetOutputType(size_t i) const { return OrtType(Spec(kId).outputs[i].type); }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t i) const {
    return OrtCharacteristic(Spec(kId).outputs[i]);
  }
};

// The CPU op of each row: name##CpuOp(), defined by ONNX_ECC_CPU_OP(name) in the file that defines
// the row's CPU kernel.
#define ONNX_ECC_DECLARE_CPU_OP(name, parse, cpu, cuda) const OrtCustomOp* name##CpuOp();
ONNX_ECC_OPS(ONNX_ECC_DECLARE_CPU_OP)
#undef ONNX_ECC_DECLARE_CPU_OP

#define ONNX_ECC_CPU_OP(name)                                                                  \
  const OrtCustomOp* name##CpuOp() {                                                           \
    static const TableOp<OpId::k##name, OpKernels<OpId::k##name>::Cpu, false> op;             \
    return &op;                                                                                \
  }

// The CUDA ops: the rows with a CUDA kernel (empty in a CPU-only build).
std::vector<const OrtCustomOp*> GpuOps();

}  // namespace onnx_ecc
