// Declarations shared by the CPU and CUDA onnxruntime wrappers.
#pragma once

#include <vector>

#include "onnxruntime_cxx_api.h"

namespace onnx_ecc {

// Mirrors onnx_ecc.ops.DOMAIN; tests check that the two agree.
inline constexpr const char* kDomain = "ai.onnx_ecc";

// The CUDA ops (empty in a CPU-only build).
std::vector<const OrtCustomOp*> GpuOps();

}  // namespace onnx_ecc
