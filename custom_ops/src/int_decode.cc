// IntDecode: the configuration (int_decode.h), its parser and the onnxruntime CPU kernel; the
// maths is int_decode_math.h.
#include <algorithm>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/counters.h"
#include "onnx_ecc/int_decode.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "cpu_work.h"
#include "sweeps.h"  // ECC_CLONES: AVX-512 / AVX2 / baseline clones (integer maths and -ffp-contract=off: the same bits)

namespace onnx_ecc {

std::string IntDecodeConfig::Validate() const {
  if (data_channels < 1 || block < 1 || parity < 1) return "data_channels, block and parity must be >= 1";
  if (parity > kIntMaxParity) return "parity must be <= " + std::to_string(kIntMaxParity);
  if (static_cast<int64_t>(generator.size()) != parity * block)
    return "generator must have parity * block = " + std::to_string(parity * block) + " values";
  for (int64_t i = 0; i < block; ++i)
    if (generator[i] != 1) return "row 0 of the generator must be all ones";
  for (int64_t v : generator)
    if (v < -(int64_t{1} << 20) || v > (int64_t{1} << 20)) return "generator values must be within +-2^20";
  if (static_cast<int64_t>(planes.size()) != blocks() * parity)
    return "planes must have blocks * parity = " + std::to_string(blocks() * parity) + " values";
  for (int64_t p : planes)
    if (p < 1 || p > kIntMaxPlanes) return "planes must be in 1.." + std::to_string(kIntMaxPlanes);
  if (base != 256) return "plane_base must be 256";
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != data_channels) return "bias must have data_channels values";
  if (!bias_parity.empty() && (bias.empty() || static_cast<int64_t>(bias_parity.size()) != blocks() * parity))
    return "bias_parity needs bias and blocks * parity values";
  if (!requantise) return "";
  if (scale.size() != 1 && static_cast<int64_t>(scale.size()) != data_channels)
    return "scale must have 1 or data_channels values";
  for (float s : scale)
    if (!(s > 0) || !(s < 3.4e38f)) return "scale values must be finite and > 0";
  if (zero_point < 0 || zero_point > 255) return "zero_point must be in 0..255 (uint8 output)";
  return "";
}

void IntDecodeConfig::Prepare() {
  offsets.resize(planes.size());
  total_planes = 0;
  for (size_t a = 0; a < planes.size(); ++a) {
    offsets[a] = total_planes;
    total_planes += planes[a];
  }
  if (bias.empty()) bias.assign(static_cast<size_t>(data_channels), 0);
  if (requantise && scale.size() == 1) scale.assign(static_cast<size_t>(data_channels), scale[0]);
}

OrtStatusPtr ParseIntCodeAttrs(const Ort::ConstKernelInfo& info, const char* op, bool requantise, IntDecodeAttrs* k) {
  k->name = std::string(op) + "(" + AttrString(info, "layer", "") + ")";
  auto& c = k->cfg;
  c.requantise = requantise;
  c.data_channels = AttrInt(info, "data_channels", 0);
  c.block = AttrInt(info, "block", 0);
  c.parity = AttrInt(info, "parity", 0);
  c.base = AttrInt(info, "plane_base", 256);
  c.generator = AttrInts(info, "generator", {});
  c.planes = AttrInts(info, "planes", {});
  for (int64_t b : AttrInts(info, "bias", {})) {
    if (b < INT32_MIN || b > INT32_MAX) return Error(ORT_INVALID_ARGUMENT, k->name, "bias values must fit int32");
    c.bias.push_back(static_cast<int32_t>(b));
  }
  c.bias_parity = AttrInts(info, "bias_parity", {});
  if (requantise) {
    c.scale = AttrFloats(info, "scale", true);
    const int64_t zp = AttrInt(info, "zero_point", 0);
    if (zp < 0 || zp > 255) return Error(ORT_INVALID_ARGUMENT, k->name, "zero_point must be in 0..255 (uint8 output)");
    c.zero_point = static_cast<int32_t>(zp);
  }
  const std::string mode = AttrString(info, "mode", "correct");
  if (mode != "correct" && mode != "detect") return Error(ORT_INVALID_ARGUMENT, k->name, "mode must be 'correct' or 'detect'");
  c.correct = mode == "correct";
  std::string err = c.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  c.Prepare();
  k->axis = AttrInt(info, "axis", -1);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), op);
  return nullptr;
}

OrtStatusPtr ParseIntDecodeAttrs(const Ort::ConstKernelInfo& info, IntDecodeAttrs* k) {
  return ParseIntCodeAttrs(info, "IntDecode", true, k);
}

IntCode IntDecodeConfig::View() const {
  IntCode c;
  c.data_channels = data_channels; c.block = block; c.parity = parity; c.base = base; c.correct = correct ? 1 : 0;
  c.generator = generator.data(); c.planes = planes.data(); c.offsets = offsets.data(); c.bias = bias.data();
  c.scale = requantise ? scale.data() : nullptr; c.zero_point = zero_point;
  return c;
}

void CheckIntBias(IntDecodeConfig& cfg, std::mutex& mu, DecodeCounts& counts) {
  if (cfg.bias_parity.empty()) return;
  std::lock_guard<std::mutex> lock(mu);
  const IntCode c = cfg.View();
  for (int64_t kb = 0; kb < cfg.blocks(); ++kb) IntBiasBlock(c, cfg.bias.data(), cfg.bias_parity.data(), kb, counts);
}

OrtStatusPtr ReadIntDecodeInputs(const IntDecodeAttrs& k, Ort::KernelContext& ctx, bool channels_last,
                                 IntDecodeInputs* in) {
  auto y = ctx.GetInput(0);
  auto yi = y.GetTensorTypeAndShapeInfo();
  if (yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
    return Error(ORT_INVALID_ARGUMENT, k.name, "Y must be int32");
  auto shape = yi.GetShape();
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t ax = k.axis < 0 ? k.axis + rank : k.axis;
  if (channels_last && (rank < 1 || ax != rank - 1))
    return Error(ORT_INVALID_ARGUMENT, k.name, "axis must be Y's last axis (channels last)");
  if (rank < 1 || ax < 0 || ax >= rank) return Error(ORT_INVALID_ARGUMENT, k.name, "axis is outside Y's rank");
  if (shape[ax] != k.cfg.channels())
    return Error(ORT_INVALID_ARGUMENT, k.name, "Y has " + std::to_string(shape[ax]) + " channels, the code expects " +
                                                   std::to_string(k.cfg.channels()) + " (data and digit channels)");
  in->outer = 1;
  in->inner = 1;
  for (int64_t i = 0; i < ax; ++i) in->outer *= shape[i];
  for (int64_t i = ax + 1; i < rank; ++i) in->inner *= shape[i];
  shape[ax] = k.cfg.data_channels;
  in->out_shape = shape;
  in->y = y.GetTensorData<int32_t>();
  return nullptr;
}

namespace {

// Checks, corrects and requantises rows [r0, r1) of Y = [rows, C] into Z = [rows, data_channels].
ECC_CLONES
void DecodeRows(const IntDecodeConfig& cfg, const int32_t* y, uint8_t* z, int64_t r0, int64_t r1, DecodeCounts& counts) {
  const IntCode c = cfg.View();
  const int64_t M = c.data_channels, C = cfg.channels(), nb = c.blocks();
  const float* sc = c.scale;
  const int32_t* bias = c.bias;
  for (int64_t row = r0; row < r1; ++row) {
    const int32_t* yr = y + row * C;
    uint8_t* zr = z + row * M;
    for (int64_t m = 0; m < M; ++m) zr[m] = RequantizeU8(yr[m], bias[m], sc[m], c.zero_point);  // one loop a row
    for (int64_t kb = 0; kb < nb; ++kb) IntDecodeRowCheck(c, yr, zr, kb, counts);  // the CUDA item's check
  }
}

}  // namespace

struct IntDecodeKernel : IntDecodeAttrs {
  struct Job {
    const IntDecodeConfig* cfg;
    const int32_t* y;
    uint8_t* z;
    int64_t rows, chunk;
    SharedCounts* counts;
  };

  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const int64_t r0 = static_cast<int64_t>(item) * j->chunk, r1 = std::min(j->rows, r0 + j->chunk);
    DecodeCounts c;
    DecodeRows(*j->cfg, j->y, j->z, r0, r1, c);
    j->counts->Add(c);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      IntDecodeInputs in;
      if (OrtStatusPtr st = ReadIntDecodeInputs(*this, ctx, true, &in)) return st;
      DecodeCounts bias_counts;
      CheckIntBias(cfg, bias_mu, bias_counts);
      const int64_t rows = in.outer;
      auto z = ctx.GetOutput(0, in.out_shape);
      SharedCounts counts;
      if (rows > 0) {
        const int64_t chunk = std::max<int64_t>(1, 16384 / std::max<int64_t>(cfg.channels(), 1));
        Job job{&cfg, in.y, z.GetTensorMutableData<uint8_t>(), rows, chunk, &counts};
        const int64_t items = (rows + chunk - 1) / chunk;
        RunItems(ctx, &Run, static_cast<size_t>(items), &job, rows * cfg.channels());
      }
      counts.Add(bias_counts);
      return ReportRun(counters, counts.Total(rows * cfg.blocks()), fail_stop, name, "block(s)");
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(IntDecode)

}  // namespace onnx_ecc
