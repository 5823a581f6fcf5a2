// CPU-only build: no CUDA ops to register.
#include "onnx_ecc/ort_glue.h"

namespace onnx_ecc {
std::vector<const OrtCustomOp*> GpuOps() { return {}; }
}  // namespace onnx_ecc
