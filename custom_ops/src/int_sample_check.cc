// IntSampleCheck: the maths (int_sample_check.h; per item int_sample_check_math.h, shared with the
// CUDA kernels), its parser, input validation (shared with the CUDA kernel) and onnxruntime CPU kernel.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/int_sample_check.h"
#include "onnx_ecc/int_sample_check_math.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "sweeps.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace onnx_ecc {

std::string IntSampleCheckConfig::Validate() const {
  if (channels < 1) return "data_channels must be >= 1";
  if (weight_axis != 0 && weight_axis != 1) return "weight_axis must be 0 or 1";
  if (row_stride < 1) return "row_stride must be >= 1";
  if (!filter_sums.empty() && filter_sums.size() != static_cast<size_t>(channels))
    return "filter_sums needs one value per output channel";
  return "";
}

int64_t SampleRowMismatches(const uint8_t* a, const uint8_t* y, int64_t outer, int64_t a_rows, int64_t y_rows,
                            int64_t row, int64_t stride) {
  int64_t bad = 0;
  const size_t n = static_cast<size_t>(row);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < y_rows; ++i)
      bad += std::memcmp(y + (o * y_rows + i) * row, a + (o * a_rows + i * stride) * row, n) != 0;
  return bad;
}

namespace {

// Sum of n int8 values: SSE2 psadbw on the bytes shifted to unsigned (16 a step, exact in int64;
// twice the auto-vectorised widening sum's speed, memory-bound on large weights).
int64_t RowSum(const int8_t* w, int64_t n) {
  int64_t i = 0, s = 0;
#if defined(__SSE2__)
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80)), zero = _mm_setzero_si128();
  __m128i acc = _mm_setzero_si128();
  for (; i + 16 <= n; i += 16)
    acc = _mm_add_epi64(acc, _mm_sad_epu8(_mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)), flip),
                                          zero));
  s = _mm_cvtsi128_si64(acc) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(acc, acc)) - 128 * i;
#endif
  for (; i < n; ++i) s += w[i];
  return s;
}

// Column sums of a [rows, cols] int8 matrix into int32 sums (rows < 2^23).
ECC_CLONES void ColumnSums(const int8_t* __restrict w, int64_t rows, int64_t cols, int32_t* __restrict sums) {
  for (int64_t k = 0; k < rows; ++k) {
    const int8_t* r = w + k * cols;
    ECC_IVDEP
    for (int64_t c = 0; c < cols; ++c) sums[c] += r[c];
  }
}

}  // namespace

int64_t IntFilterMismatches(const IntSampleCheckConfig& c, const int8_t* w, int64_t rows, int64_t cols,
                            const int32_t* bias, int64_t begin, int64_t end) {
  int64_t bad = 0;
  if (c.weight_axis == 0) {  // [C, ...]: one row per channel
    for (int64_t ch = begin; ch < end; ++ch)
      bad += !IntFilterHolds(RowSum(w + ch * cols, cols), bias, ch, c.filter_sums[ch]);
    return bad;
  }
  std::vector<int64_t> sums(static_cast<size_t>(c.channels), 0);
  {  // [K, C]: one column per channel, in int32 over blocks of rows
    std::vector<int32_t> part(static_cast<size_t>(c.channels));
    for (int64_t k = 0; k < rows; k += int64_t{1} << 23) {
      const int64_t n = std::min(rows - k, int64_t{1} << 23);
      std::fill(part.begin(), part.end(), 0);
      ColumnSums(w + k * cols, n, cols, part.data());
      for (int64_t ch = 0; ch < c.channels; ++ch) sums[ch] += part[ch];
    }
  }
  for (int64_t ch = begin; ch < end; ++ch) bad += !IntFilterHolds(sums[ch], bias, ch, c.filter_sums[ch]);
  return bad;
}

OrtStatusPtr ParseIntSampleCheckAttrs(const Ort::ConstKernelInfo& info, IntSampleCheckAttrs* k) {
  k->name = "IntSampleCheck(" + AttrString(info, "layer", "") + ")";
  k->cfg.channels = AttrInt(info, "data_channels", 0);
  k->cfg.weight_axis = AttrInt(info, "weight_axis", 0);
  k->cfg.row_stride = AttrInt(info, "row_stride", 1);
  k->cfg.filter_sums = AttrInts(info, "filter_sums", {});
  std::string err = k->cfg.Validate();
  if (!err.empty()) return Error(ORT_INVALID_ARGUMENT, k->name, err);
  k->fail_stop = AttrInt(info, "fail_stop", 0) != 0;
  k->counters = CountersFor(AttrString(info, "model_id", ""), AttrString(info, "layer", ""), "IntSampleCheck");
  return nullptr;
}

namespace {

bool IsQuantised(ONNXTensorElementDataType t) {
  return t == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
}

}  // namespace

OrtStatusPtr ReadIntSampleInputs(const IntSampleCheckAttrs& k, Ort::KernelContext& ctx, IntSampleInputs* in) {
  const auto& cfg = k.cfg;
  auto a = ctx.GetInput(0);
  auto y = ctx.GetInput(1);
  auto ai = a.GetTensorTypeAndShapeInfo();
  auto yi = y.GetTensorTypeAndShapeInfo();
  if (!IsQuantised(ai.GetElementType()) || ai.GetElementType() != yi.GetElementType())
    return Error(ORT_INVALID_ARGUMENT, k.name, "A and Y must both be uint8 or both int8");
  const auto as = ai.GetShape();
  const auto ys = yi.GetShape();
  const int64_t s = cfg.row_stride;
  bool fits = as.size() >= 2 && ys.size() == as.size() && ys.back() == as.back();
  for (size_t i = 0; fits && i + 2 < as.size(); ++i) fits = ys[i] == as[i];
  if (!fits || ys[as.size() - 2] != (as[as.size() - 2] + s - 1) / s)
    return Error(ORT_INVALID_ARGUMENT, k.name, "Y must have A's shape but every row_stride-th row on axis -2 (" +
                                                   std::to_string(s) + ")");
  if (OrtStatusPtr st = FlagInput(ctx, 4, k.name, &in->flag)) return st;
  in->row = as.back();
  in->a_rows = as[as.size() - 2];
  in->y_rows = ys[ys.size() - 2];
  in->outer = 1;
  for (size_t i = 0; i + 2 < as.size(); ++i) in->outer *= as[i];
  in->a = static_cast<const uint8_t*>(a.GetTensorRawData());
  in->y = static_cast<const uint8_t*>(y.GetTensorRawData());
  const size_t count = ctx.GetInputCount();
  auto given = [&](size_t i) { return i < count && static_cast<const OrtValue*>(ctx.GetInput(i)) != nullptr; };
  if (given(3) && !given(2)) return Error(ORT_INVALID_ARGUMENT, k.name, "Bias needs W");
  if (!given(2)) return nullptr;
  auto w = ctx.GetInput(2);
  auto wi = w.GetTensorTypeAndShapeInfo();
  const auto ws = wi.GetShape();
  const bool by_columns = cfg.weight_axis == 1;
  if (wi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 || ws.empty() || (by_columns && ws.size() != 2) ||
      ws[by_columns ? 1 : 0] != cfg.channels)
    return Error(ORT_INVALID_ARGUMENT, k.name, "W must be int8 with " + std::to_string(cfg.channels) +
                                                   " output channels on weight_axis");
  if (cfg.filter_sums.empty()) return Error(ORT_INVALID_ARGUMENT, k.name, "W needs filter_sums");
  if (given(3)) {
    auto bi = ctx.GetInput(3).GetTensorTypeAndShapeInfo();
    if (bi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 ||
        bi.GetElementCount() != static_cast<size_t>(cfg.channels))
      return Error(ORT_INVALID_ARGUMENT, k.name, "Bias must be int32 with one value per output channel");
    in->bias = ctx.GetInput(3).GetTensorData<int32_t>();
  }
  const int64_t total = static_cast<int64_t>(wi.GetElementCount());
  in->w_rows = by_columns ? ws[0] : cfg.channels;
  in->w_cols = in->w_rows > 0 ? total / in->w_rows : 0;
  in->w = w.GetTensorData<int8_t>();
  return nullptr;
}

struct IntSampleCheckKernel : IntSampleCheckAttrs {
  // The output channels whose stored weights fail their sums (0 without W).
  int64_t BadFilters(Ort::KernelContext& ctx, const IntSampleInputs& in) const {
    if (!in.w) return 0;
    const int64_t total = in.w_rows * in.w_cols;
    FilterJob job{&cfg, in.w, in.bias, in.w_rows, in.w_cols, 0, {}};
    if (cfg.weight_axis == 1 || total < (1 << 18))  // small, or column sums: one pass
      return IntFilterMismatches(cfg, in.w, in.w_rows, in.w_cols, in.bias, 0, cfg.channels);
    job.per_item = std::max<int64_t>(1, (int64_t{1} << 16) / in.w_cols);  // channels of about 64 KB a task
    job.bad.resize(static_cast<size_t>((cfg.channels + job.per_item - 1) / job.per_item));
    ctx.ParallelFor(&RunFilters, job.bad.size(), 0, &job);
    int64_t bad = 0;
    for (int64_t v : job.bad) bad += v;
    return bad;
  }

  struct FilterJob {
    const IntSampleCheckConfig* cfg;
    const int8_t* w;
    const int32_t* bias;
    int64_t rows, cols, per_item;
    std::vector<int64_t> bad;
  };
  static void RunFilters(void* data, size_t item) {
    auto* j = static_cast<FilterJob*>(data);
    const int64_t begin = static_cast<int64_t>(item) * j->per_item;
    j->bad[item] = IntFilterMismatches(*j->cfg, j->w, j->rows, j->cols, j->bias, begin,
                                       std::min(j->cfg->channels, begin + j->per_item));
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      IntSampleInputs in;
      if (OrtStatusPtr st = ReadIntSampleInputs(*this, ctx, &in)) return st;
      const int64_t bad_filters = BadFilters(ctx, in);
      DecodeCounts c;
      c.vectors = in.outer * in.y_rows;
      c.flagged = bad_filters > 0 ? c.vectors  // a corrupted weight makes every row wrong
                                  : SampleRowMismatches(in.a, in.y, in.outer, in.a_rows, in.y_rows, in.row,
                                                        cfg.row_stride);
      counters->Add(c);
      WriteRaised(ctx, (in.flag && in.flag[0]) || c.flagged > 0);
      if (fail_stop && c.flagged > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(c.flagged) +
                                         " row(s) failed the exact sample check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(IntSampleCheck)

}  // namespace onnx_ecc
