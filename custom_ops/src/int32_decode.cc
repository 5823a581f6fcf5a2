// Int32Decode: the exact integer check of an int8 layer whose int32 accumulators are its output
// (MatMulInteger / ConvInteger of quantize_dynamic models): the parser and the onnxruntime CPU
// kernel. The code is IntDecode's (int_decode_math.h: syndromes, location); the output is the
// corrected accumulators plus the optional checked bias, in int32, with no requantisation, on the
// channel axis of channels-last ([..., C]) or NCHW ([N, C, ...]) tensors.
#include <algorithm>
#include <string>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/counters.h"
#include "onnx_ecc/int_decode.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "cpu_work.h"
#include "sweeps.h"  // ECC_CLONES: AVX-512 / AVX2 / baseline clones (integer maths: the same results in each)

namespace onnx_ecc {

OrtStatusPtr ParseInt32DecodeAttrs(const Ort::ConstKernelInfo& info, IntDecodeAttrs* k) {
  return ParseIntCodeAttrs(info, "Int32Decode", false, k);
}

namespace {

constexpr int64_t kSpan = 64;  // positions whose syndromes are summed together (contiguous when NCHW)

// Checks and corrects positions [p0, p0 + len) of one outer index: y and z point at its [C, inner]
// and [M, inner] planes (inner = 1: one channels-last row), element (channel, p) at channel * inner + p.
ECC_CLONES
void DecodeSpan(const IntDecodeConfig& c, const int32_t* y, int32_t* z, int64_t inner, int64_t p0, int64_t len,
                DecodeCounts& counts) {
  const int64_t M = c.data_channels, B = c.block, nb = c.blocks();
  const int R = static_cast<int>(c.parity);
  const int32_t* bias = c.bias.data();
  const IntCode code = c.View();
  for (int64_t m = 0; m < M; ++m) {
    const int32_t* ym = y + m * inner + p0;
    int32_t* zm = z + m * inner + p0;
    for (int64_t j = 0; j < len; ++j) zm[j] = AddWrapped(ym[j], bias[m]);
  }
  int64_t s[kIntMaxParity][kSpan];
  for (int64_t kb = 0; kb < nb; ++kb) {
    const int64_t c0 = kb * B;
    const int b = static_cast<int>(std::min(B, M - c0));
    for (int r = 0; r < R; ++r) std::fill(s[r], s[r] + len, 0);
    for (int i = 0; i < b; ++i) {
      const int32_t* yc = y + (c0 + i) * inner + p0;
      for (int64_t j = 0; j < len; ++j) s[0][j] += yc[j];
      for (int r = 1; r < R; ++r) {
        const int64_t g = c.generator[r * B + i];
        for (int64_t j = 0; j < len; ++j) s[r][j] += g * yc[j];
      }
    }
    for (int r = 0; r < R; ++r) {
      const int64_t first = M + c.offsets[kb * R + r];
      int64_t mult = 1;
      for (int64_t d = 0; d < c.planes[kb * R + r]; ++d, mult *= c.base) {
        const int32_t* yd = y + (first + d) * inner + p0;
        for (int64_t j = 0; j < len; ++j) s[r][j] -= mult * yd[j];
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      int64_t v[kIntMaxParity], any = 0;
      for (int r = 0; r < R; ++r) any |= (v[r] = s[r][j]);
      if (!any) continue;
      int where = -1;
      int64_t e = 0;
      if (IntDecide(code, v, b, &where, &e, counts) == kIntFixed) {  // the shared maths' verdict and fix
        const int64_t ch = c0 + where;
        z[ch * inner + p0 + j] = AddWrapped(IntFixed(y[ch * inner + p0 + j], e), bias[ch]);
      }
    }
  }
}

// One channels-last row: y [C], z [M] (+ bias in one loop, then each block's check, the CUDA item's).
ECC_CLONES
void DecodeRow(const IntCode& c, const int32_t* y, int32_t* z, DecodeCounts& counts) {
  for (int64_t m = 0; m < c.data_channels; ++m) z[m] = AddWrapped(y[m], c.bias[m]);
  for (int64_t kb = 0; kb < c.blocks(); ++kb) Int32DecodeCheck(c, y, z, 1, 0, kb, counts);
}

}  // namespace

struct Int32DecodeKernel : IntDecodeAttrs {
  struct Job {
    const IntDecodeConfig* cfg;
    const int32_t* y;
    int32_t* z;
    int64_t outer, inner, spans, rows_per_item;  // spans per outer index (inner > 1), or rows per item (inner = 1)
    SharedCounts* counts;
  };

  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const IntDecodeConfig& c = *j->cfg;
    const int64_t C = c.channels(), M = c.data_channels;
    DecodeCounts counts;
    if (j->inner == 1) {  // channels last: a range of rows
      const int64_t r0 = static_cast<int64_t>(item) * j->rows_per_item, r1 = std::min(j->outer, r0 + j->rows_per_item);
      const IntCode code = c.View();
      for (int64_t r = r0; r < r1; ++r) DecodeRow(code, j->y + r * C, j->z + r * M, counts);
    } else {
      const int64_t n = static_cast<int64_t>(item) / j->spans, p0 = (static_cast<int64_t>(item) % j->spans) * kSpan;
      DecodeSpan(c, j->y + n * C * j->inner, j->z + n * M * j->inner, j->inner, p0, std::min(kSpan, j->inner - p0),
                 counts);
    }
    j->counts->Add(counts);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      IntDecodeInputs in;
      if (OrtStatusPtr st = ReadIntDecodeInputs(*this, ctx, false, &in)) return st;
      DecodeCounts bias_counts;
      CheckIntBias(cfg, bias_mu, bias_counts);
      const int64_t outer = in.outer, inner = in.inner;
      auto z = ctx.GetOutput(0, in.out_shape);
      SharedCounts counts;
      if (outer > 0 && inner > 0) {
        Job job{&cfg, in.y, z.GetTensorMutableData<int32_t>(), outer, inner,
                (inner + kSpan - 1) / kSpan, std::max<int64_t>(1, 16384 / std::max<int64_t>(cfg.channels(), 1)), &counts};
        const int64_t items = inner == 1 ? (outer + job.rows_per_item - 1) / job.rows_per_item : outer * job.spans;
        RunItems(ctx, &Run, static_cast<size_t>(items), &job, outer * inner * cfg.channels());
      }
      counts.Add(bias_counts);
      return ReportRun(counters, counts.Total(outer * inner * cfg.blocks()), fail_stop, name, "block(s)");
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(Int32Decode)

}  // namespace onnx_ecc
