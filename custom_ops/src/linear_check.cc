// LinearCheck: the rerun strategy's check of a weight layer Y = X W (+ bias), left untouched, in
// one CPU kernel. Per chunk of checked rows (every stride-th row of X and Y, all axes but the last
// flattened): their parity P = X_rows WG (+ PB) in a small per-thread buffer, WG [K, checks] being
// the layer's parity weights W Gᵀ, then ParityCheck's test (CheckParity, the same configuration,
// thresholds and counters) of Y's same rows against P. Replaces the Reshape, strided Slice and thin
// parity MatMul (and Split) that fed a ParityCheck: those copied the rows and ran a GEMM whose
// output is a few columns wide. P is accumulated per check in float32 over K in order (a multiply
// and an add, no fused multiply-add: every clone gives the same bits, which the numpy oracle
// linear_check_parity reproduces); that rounding is what the noise bounds and the calibrated
// tolerance cover. CPU only (the op table's CUDA column has no kernel).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"
#include "onnx_ecc/parity_check.h"
#include "cpu_work.h"
#include "sweeps.h"

namespace onnx_ecc {

namespace {

// X [rows, K], Y [rows, N] (leading axes flattened), WG [K, checks], PB [checks] or none.
struct LinearInputs {
  const float *x = nullptr, *wg = nullptr, *y = nullptr, *pb = nullptr;
  const bool* flag = nullptr;
  int64_t rows = 0, k = 0, n = 0;
};

OrtStatusPtr ReadLinearInputs(const LinearCheckAttrs& k, Ort::KernelContext& ctx, LinearInputs* in) {
  const std::string& name = k.name;
  const auto& L = k.cfg.layout;
  const int64_t checks = L.parity * L.num_blocks();
  auto x = ctx.GetInput(0), wg = ctx.GetInput(1), y = ctx.GetInput(2);
  auto xi = x.GetTensorTypeAndShapeInfo(), wi = wg.GetTensorTypeAndShapeInfo(), yi = y.GetTensorTypeAndShapeInfo();
  if (xi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || wi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
      yi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return Error(ORT_INVALID_ARGUMENT, name, "X, WG and Y must be float32");
  const auto xs = xi.GetShape(), ws = wi.GetShape(), ys = yi.GetShape();
  if (xs.empty() || ys.size() != xs.size())
    return Error(ORT_INVALID_ARGUMENT, name, "X and Y must have the same rank (at least 1), got " + ShapeText(xs) +
                                                 " and " + ShapeText(ys));
  in->rows = 1;
  for (size_t i = 0; i + 1 < xs.size(); ++i) {
    if (ys[i] != xs[i])
      return Error(ORT_INVALID_ARGUMENT, name, "X and Y must have the same leading axes, got " + ShapeText(xs) +
                                                   " and " + ShapeText(ys));
    in->rows *= xs[i];
  }
  in->k = xs.back();
  in->n = ys.back();
  if (in->n != L.data_channels)
    return Error(ORT_INVALID_ARGUMENT, name, "Y has " + std::to_string(in->n) + " columns, the code expects " +
                                                 std::to_string(L.data_channels));
  if (ws != std::vector<int64_t>{in->k, checks})
    return Error(ORT_INVALID_ARGUMENT, name, "WG must be [" + std::to_string(in->k) + ", " + std::to_string(checks) +
                                                 "] (X's features, the code's checks), got " + ShapeText(ws));
  if (OrtStatusPtr st = FlagInput(ctx, 3, name, &in->flag)) return st;
  if (ctx.GetInputCount() > 4) {
    auto pb = ctx.GetInput(4);
    if (static_cast<const OrtValue*>(pb) != nullptr) {
      auto pi = pb.GetTensorTypeAndShapeInfo();
      if (pi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || pi.GetElementCount() != static_cast<size_t>(checks))
        return Error(ORT_INVALID_ARGUMENT, name, "PB must hold " + std::to_string(checks) + " float32 values (one per check)");
      in->pb = pb.GetTensorData<float>();
    }
  }
  in->x = x.GetTensorData<float>();
  in->wg = wg.GetTensorData<float>();
  in->y = y.GetTensorData<float>();
  return nullptr;
}

// Sixteen floats as one value: one AVX-512 register (two AVX registers in the AVX2 clone).
typedef float F16 __attribute__((vector_size(64)));

template <typename Vec>
ECC_INLINE Vec LoadVec(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// p[r * checks + c0 + j] for R rows and the V * lanes checks from c0 (Vec: lanes floats): sum
// over kk of x[r][kk] wg[kk][c] in order, one accumulator per (row, check), starting from PB (or 0).
template <typename Vec, int R, int V>
ECC_INLINE void RowTile(const float* x, int64_t xs, int64_t K, const float* wg, int64_t checks, const float* pb,
                        int64_t c0, float* p) {
  constexpr int lanes = sizeof(Vec) / sizeof(float);
  Vec acc[R][V];
  for (int v = 0; v < V; ++v) {
    Vec start = {};
    if (pb) start = LoadVec<Vec>(pb + c0 + lanes * v);
    for (int r = 0; r < R; ++r) acc[r][v] = start;
  }
  const float* w = wg + c0;
  for (int64_t kk = 0; kk < K; ++kk, w += checks) {
    Vec wv[V];
    for (int v = 0; v < V; ++v) wv[v] = LoadVec<Vec>(w + lanes * v);
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * xs + kk];
      for (int v = 0; v < V; ++v) acc[r][v] += xv * wv[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) std::memcpy(p + r * checks + c0 + lanes * v, &acc[r][v], sizeof(Vec));
}

// The same for R rows and one check c (checks beyond the last multiple of 8).
template <int R>
ECC_INLINE void RowColumn(const float* x, int64_t xs, int64_t K, const float* wg, int64_t checks, const float* pb,
                          int64_t c, float* p) {
  float acc[R];
  for (int r = 0; r < R; ++r) acc[r] = pb ? pb[c] : 0.f;
  for (int64_t kk = 0; kk < K; ++kk)
    for (int r = 0; r < R; ++r) acc[r] += x[r * xs + kk] * wg[kk * checks + c];
  for (int r = 0; r < R; ++r) p[r * checks + c] = acc[r];
}

// R rows of P: the checks in tiles of 32, 16 and 8, then one by one.
template <int R>
ECC_INLINE void ParityRows(const float* x, int64_t xs, int64_t K, const float* wg, int64_t checks, const float* pb,
                           float* p) {
  int64_t c = 0;
  for (; c + 32 <= checks; c += 32) RowTile<F16, R, 2>(x, xs, K, wg, checks, pb, c, p);
  for (; c + 16 <= checks; c += 16) RowTile<F16, R, 1>(x, xs, K, wg, checks, pb, c, p);
  for (; c + 8 <= checks; c += 8) RowTile<sweep::F8, R, 1>(x, xs, K, wg, checks, pb, c, p);
  for (; c < checks; ++c) RowColumn<R>(x, xs, K, wg, checks, pb, c, p);
}

// p [rows, checks] = X_rows WG (+ PB) for `rows` rows of X that are x_row_stride apart: four rows
// at a time (each WG vector loaded once for four rows), then the rest.
ECC_CLONES
void ParityOfLinearRows(const float* x, int64_t x_row_stride, int64_t rows, int64_t K, const float* wg, int64_t checks,
                        const float* pb, float* p) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) ParityRows<4>(x + i * x_row_stride, x_row_stride, K, wg, checks, pb, p + i * checks);
  for (; i < rows; ++i) ParityRows<1>(x + i * x_row_stride, x_row_stride, K, wg, checks, pb, p + i * checks);
}

constexpr int64_t kRowsPerItem = 16;  // checked rows per work item

}  // namespace

struct LinearCheckKernel : LinearCheckAttrs {
  struct Job {
    const LinearCheckKernel* k;
    const LinearInputs* in;
    int64_t checked;  // checked rows
    SharedCounts* counts;
  };

  // One work item: kRowsPerItem checked rows (their parity in this thread's buffer, then the check).
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const auto& cfg = j->k->cfg;
    const LinearInputs& in = *j->in;
    const int64_t checks = cfg.layout.parity * cfg.layout.num_blocks(), s = j->k->stride;
    const int64_t r0 = static_cast<int64_t>(item) * kRowsPerItem;
    const int64_t n = std::min(kRowsPerItem, j->checked - r0);
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(kRowsPerItem * checks));
    ParityOfLinearRows(in.x + r0 * s * in.k, s * in.k, n, in.k, in.wg, checks, in.pb, buf.data());
    DecodeCounts cnt;
    CheckParity(cfg, in.y + r0 * s * in.n, 1, s * in.n, buf.data(), 1, checks, n, cnt);
    j->counts->Add(cnt);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      const auto& L = cfg.layout;
      LinearInputs in;
      if (OrtStatusPtr st = ReadLinearInputs(*this, ctx, &in)) return st;
      const bool raised = in.flag && in.flag[0];
      const int64_t blocks = L.num_blocks(), checks = L.parity * blocks;
      const int64_t checked = (in.rows + stride - 1) / stride;
      SharedCounts counts;
      if (checked > 0) {
        Job job{this, &in, checked, &counts};
        const size_t items = static_cast<size_t>((checked + kRowsPerItem - 1) / kRowsPerItem);
        // the work in floats: X's and Y's checked rows, and K x checks multiply-adds per row
        const int64_t floats = checked * (in.k + in.n + in.k * checks / 8);
        RunItems(ctx, &Run, items, &job, floats);
      }
      return ReportParityRun(ctx, counters, counts.Total(checked * blocks), raised, fail_stop, name);
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(LinearCheck)

}  // namespace onnx_ecc
