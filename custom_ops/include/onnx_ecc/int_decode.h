// IntDecode, Int32Decode and Im2ColNhwc, the ops of protected int8 layers: their configurations
// (validated attributes) and parsers, shared with the registration (op_table.h, ort_glue.h). The
// maths is int_decode_math.h; the CPU kernels are src/int_decode.cc, src/int32_decode.cc and
// src/im2col_nhwc.cc, the CUDA kernels custom_ops/cuda/ (both validate their inputs with Read*Inputs).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/int_decode_math.h"

namespace onnx_ecc {

struct LayerCounters;

struct IntDecodeConfig {
  int64_t data_channels = 0, block = 0, parity = 0, base = 256;
  bool correct = true;
  bool requantise = true;            // IntDecode: scale and zero_point; Int32Decode: int32 out, none
  std::vector<int64_t> generator;    // parity x block, row-major; row 0 all ones
  std::vector<int64_t> planes;       // per block and check: digit columns
  std::vector<int64_t> offsets;      // per block and check: first digit column, after the data (Prepare)
  int64_t total_planes = 0;
  std::vector<int32_t> bias;         // per data channel (zeros when not given)
  std::vector<int64_t> bias_parity;  // per block and check: sum_i g_ri bias_i (empty: bias not checked)
  std::vector<float> scale;          // per data channel (Prepare expands one value)
  int32_t zero_point = 0;
  int64_t blocks() const { return (data_channels + block - 1) / block; }
  int64_t channels() const { return data_channels + total_planes; }
  std::string Validate() const;
  void Prepare();
  IntCode View() const;  // the maths' view of this config (host pointers)
};

struct IntDecodeAttrs {
  IntDecodeConfig cfg;
  int64_t axis = -1;
  bool fail_stop = false;
  std::string name;
  LayerCounters* counters = nullptr;
  std::mutex bias_mu;  // the bias check repairs cfg.bias in place
};
// The code's attributes, shared by IntDecode (requantise: scale and zero_point too) and Int32Decode;
// `op` names the kernel in messages and counters.
OrtStatusPtr ParseIntCodeAttrs(const Ort::ConstKernelInfo& info, const char* op, bool requantise, IntDecodeAttrs* out);
OrtStatusPtr ParseIntDecodeAttrs(const Ort::ConstKernelInfo& info, IntDecodeAttrs* out);
OrtStatusPtr ParseInt32DecodeAttrs(const Ort::ConstKernelInfo& info, IntDecodeAttrs* out);

struct DecodeCounts;
// Checks the bias against its own parity (when bias_parity is given) and repairs it in place (under mu).
void CheckIntBias(IntDecodeConfig& cfg, std::mutex& mu, DecodeCounts& counts);

// The validated input of IntDecode / Int32Decode: Y as [outer, channels, inner] (inner = 1 when the
// channels are Y's last axis, always so for IntDecode) and the shape of Z.
struct IntDecodeInputs {
  const int32_t* y = nullptr;
  int64_t outer = 0, inner = 0;
  std::vector<int64_t> out_shape;
};
// channels_last: only Y's last axis may hold the channels (IntDecode).
OrtStatusPtr ReadIntDecodeInputs(const IntDecodeAttrs& k, Ort::KernelContext& ctx, bool channels_last,
                                 IntDecodeInputs* in);

struct Im2ColAttrs {
  int64_t k[2] = {1, 1}, st[2] = {1, 1}, pads[4] = {0, 0, 0, 0}, dl[2] = {1, 1};
  int64_t pad_value = 0;
  std::string name;
};
OrtStatusPtr ParseIm2ColAttrs(const Ort::ConstKernelInfo& info, Im2ColAttrs* out);
// Validates X (and reads the optional PadValue, a host input) into the geometry q; *x: X's bytes.
OrtStatusPtr ReadIm2ColInputs(const Im2ColAttrs& a, Ort::KernelContext& ctx, Im2ColShape* q, const uint8_t** x);

}  // namespace onnx_ecc
