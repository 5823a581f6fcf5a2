// ProductCheck: the rerun strategy's check of a product of two activations C = A B (attention's
// Q Kᵀ and P V, C = alpha A B) in one CPU kernel. Per batch index: B' = B Gᵀ per code block (a small
// per-thread buffer), the parity P = alpha A B' of every stride-th row of A, and ParityCheck's test (CheckParity,
// the same configuration, thresholds and counters) of C's same rows against P. Replaces the
// Slice, two MatMuls and Reshape that fed a ParityCheck. B' and P are accumulated in float32, as
// the MatMuls they replace are (dot products in eight interleaved lanes); their rounding is what the noise bounds (noise_gain) and the
// calibrated tolerance cover. CPU only (the op table's CUDA column has no kernel).
#include <algorithm>
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

// A [batch, M, K], B [batch, K, N], C [batch, M, N] (all leading axes flattened into batch).
struct ProductInputs {
  const float *a = nullptr, *b = nullptr, *c = nullptr;
  const bool* flag = nullptr;
  int64_t batch = 1, m = 0, k = 0, n = 0;
};

OrtStatusPtr ReadProductInputs(const ProductCheckAttrs& k, Ort::KernelContext& ctx, ProductInputs* in) {
  const std::string& name = k.name;
  auto a = ctx.GetInput(0);
  auto b = ctx.GetInput(1);
  auto c = ctx.GetInput(2);
  auto ai = a.GetTensorTypeAndShapeInfo(), bi = b.GetTensorTypeAndShapeInfo(), ci = c.GetTensorTypeAndShapeInfo();
  if (ai.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || bi.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
      ci.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return Error(ORT_INVALID_ARGUMENT, name, "A, B and C must be float32");
  const auto as = ai.GetShape(), bs = bi.GetShape(), cs = ci.GetShape();
  const size_t rank = as.size();
  if (rank < 2 || bs.size() != rank || cs.size() != rank)
    return Error(ORT_INVALID_ARGUMENT, name, "A, B and C must have the same rank (at least 2), got " + ShapeText(as) +
                                                 ", " + ShapeText(bs) + " and " + ShapeText(cs));
  for (size_t i = 0; i + 2 < rank; ++i)
    if (bs[i] != as[i] || cs[i] != as[i])
      return Error(ORT_INVALID_ARGUMENT, name, "A, B and C must have the same leading (batch) axes, got " +
                                                   ShapeText(as) + ", " + ShapeText(bs) + " and " + ShapeText(cs));
  in->m = as[rank - 2];
  in->k = as[rank - 1];
  in->n = bs[rank - 1];
  if (bs[rank - 2] != in->k || cs[rank - 2] != in->m || cs[rank - 1] != in->n)
    return Error(ORT_INVALID_ARGUMENT, name, "need A [..., M, K], B [..., K, N] and C [..., M, N], got " +
                                                 ShapeText(as) + ", " + ShapeText(bs) + " and " + ShapeText(cs));
  if (in->n != k.cfg.layout.data_channels)
    return Error(ORT_INVALID_ARGUMENT, name, "C has " + std::to_string(in->n) + " columns, the code expects " +
                                                 std::to_string(k.cfg.layout.data_channels));
  in->batch = 1;
  for (size_t i = 0; i + 2 < rank; ++i) in->batch *= as[i];
  if (OrtStatusPtr st = FlagInput(ctx, 3, name, &in->flag)) return st;
  in->a = a.GetTensorData<float>();
  in->b = b.GetTensorData<float>();
  in->c = c.GetTensorData<float>();
  return nullptr;
}

using sweep::F8;
using sweep::Load8;

// sum_t x[t] y[t] over t < n in float32: eight interleaved lanes (t mod 8) added pairwise at the
// end, then the tail in order.
ECC_INLINE float Dot(const float* x, const float* y, int64_t n) {
  F8 acc = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) acc += Load8(x + t) * Load8(y + t);
  float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; t < n; ++t) sum += x[t] * y[t];
  return sum;
}

#if defined(__clang__)
#define ECC_SHUF2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define ECC_SHUF2(a, b, ...) __builtin_shuffle(a, b, sweep::I8{__VA_ARGS__})
#endif

// Lane l of the result: the sum of v[l]'s eight lanes (pairwise, in three shuffle-and-add steps).
ECC_INLINE F8 Sums8(const F8 (&v)[8]) {
  F8 h[4], e[2];
  for (int i = 0; i < 4; ++i)
    h[i] = ECC_SHUF2(v[2 * i], v[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) + ECC_SHUF2(v[2 * i], v[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  for (int i = 0; i < 2; ++i)
    e[i] = ECC_SHUF2(h[2 * i], h[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) + ECC_SHUF2(h[2 * i], h[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  return ECC_SHUF2(e[0], e[1], 0, 1, 2, 3, 8, 9, 10, 11) + ECC_SHUF2(e[0], e[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

// bgt[(blk * parity + q) * K + kk] = sum_t B[kk, start_blk + t] g_blk[q, t]: B' = B Gᵀ, stored
// transposed ([checks, K]) so that P's dot products read it contiguously. Eight rows of B at a
// time when the block is a multiple of 8 long (their eight dot products reduced together).
ECC_CLONES
void ChecksOfB(const ParityCheckConfig& cfg, const float* b, int64_t K, int64_t N, float* bgt) {
  const auto& L = cfg.layout;
  const int64_t r = L.parity, blocks = L.num_blocks();
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t size = L.block_sizes[blk];
    const float* bb = b + L.block_starts[blk];
    const float* g = cfg.generator.data() + L.gen_offsets[blk];
    for (int64_t q = 0; q < r; ++q) {
      const float* gq = g + q * size;
      float* out = bgt + (blk * r + q) * K;
      int64_t kk = 0;
      if (size % 8 == 0)
        for (; kk + 8 <= K; kk += 8) {
          F8 acc[8];
          for (int l = 0; l < 8; ++l) acc[l] = F8{0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
          for (int64_t t = 0; t < size; t += 8) {
            const F8 gv = Load8(gq + t);
            for (int l = 0; l < 8; ++l) acc[l] += Load8(bb + (kk + l) * N + t) * gv;
          }
          sweep::Store8(out + kk, Sums8(acc));
        }
      for (; kk < K; ++kk) out[kk] = Dot(bb + kk * N, gq, size);
    }
  }
}

// p[i * checks + c] = sum_kk A[i * a_row_stride + kk] bgt[c * K + kk] for rows i < rows: eight
// consecutive (row, check) pairs at a time when K is a multiple of 8 (their dot products reduced
// together), the rest one by one.
ECC_CLONES
void ParityOfRows(const float* a, int64_t a_row_stride, int64_t rows, int64_t K, const float* bgt, int64_t checks,
                  float* p) {
  const int64_t pairs = rows * checks;
  int64_t e = 0;
  if (K % 8 == 0)
    for (; e + 8 <= pairs; e += 8) {
      const float* ar[8];
      const float* br[8];
      F8 acc[8];
      for (int l = 0; l < 8; ++l) {
        ar[l] = a + ((e + l) / checks) * a_row_stride;
        br[l] = bgt + ((e + l) % checks) * K;
        acc[l] = F8{0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      }
      for (int64_t kk = 0; kk < K; kk += 8)
        for (int l = 0; l < 8; ++l) acc[l] += Load8(ar[l] + kk) * Load8(br[l] + kk);
      sweep::Store8(p + e, Sums8(acc));
    }
  for (; e < pairs; ++e) p[e] = Dot(a + (e / checks) * a_row_stride, bgt + (e % checks) * K, K);
}

}  // namespace

struct ProductCheckKernel : ProductCheckAttrs {
  struct Job {
    const ProductCheckKernel* k;
    const ProductInputs* in;
    int64_t rows;  // checked rows per batch index
    SharedCounts* counts;
  };

  // One work item: one batch index (B' and P in this thread's buffer, then the check).
  static void Run(void* data, size_t item) {
    auto* j = static_cast<Job*>(data);
    const auto& cfg = j->k->cfg;
    const ProductInputs& in = *j->in;
    const int64_t checks = cfg.layout.parity * cfg.layout.num_blocks(), s = j->k->stride;
    const int64_t K = in.k, N = in.n, M = in.m;
    const float* a = in.a + static_cast<int64_t>(item) * M * K;
    const float* b = in.b + static_cast<int64_t>(item) * K * N;
    const float* c = in.c + static_cast<int64_t>(item) * M * N;
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(K * checks + j->rows * checks));
    float* bg = buf.data();       // [checks, K]: B' = B Gᵀ, transposed
    float* p = bg + K * checks;   // [rows, checks]: P = A_rows B'
    ChecksOfB(cfg, b, K, N, bg);
    ParityOfRows(a, s * K, j->rows, K, bg, checks, p);
    if (j->k->alpha != 1.f)  // C = alpha (A B), as onnxruntime's fused MatMul scales the product
      for (int64_t e = 0; e < j->rows * checks; ++e) p[e] *= j->k->alpha;
    DecodeCounts cnt;
    CheckParity(cfg, c, 1, s * N, p, 1, checks, j->rows, cnt);
    j->counts->Add(cnt);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      const auto& L = cfg.layout;
      ProductInputs in;
      if (OrtStatusPtr st = ReadProductInputs(*this, ctx, &in)) return st;
      const bool raised = in.flag && in.flag[0];
      const int64_t blocks = L.num_blocks(), checks = L.parity * blocks;
      const int64_t rows = (in.m + stride - 1) / stride;
      SharedCounts counts;
      if (in.batch > 0 && rows > 0) {
        Job job{this, &in, rows, &counts};
        // the floats an item reads and computes: B, B', A's and C's sampled rows, P
        const int64_t floats = in.batch * (in.k * (in.n + checks) + rows * (in.k + in.n + checks));
        RunItems(ctx, &Run, static_cast<size_t>(in.batch), &job, floats);
      }
      return ReportParityRun(ctx, counters, counts.Total(in.batch * rows * blocks), raised, fail_stop, name);
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

ONNX_ECC_CPU_OP(ProductCheck)

}  // namespace onnx_ecc
