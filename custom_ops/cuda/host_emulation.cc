// Host emulation of the CUDA kernels: the items of device_math.cuh run one by one on the host,
// in the order the kernels' launches run them (every check before any correction), so that a test
// on a machine without a GPU compares the CUDA maths with the CPU kernels and the numpy oracles
// (tests/custom_ops/test_cuda_maths_on_host.py compiles this file with the host compiler).
// A C interface of plain arrays, for ctypes.
#include <cmath>
#include <cstring>
#include <vector>

#include "device_math.cuh"

using namespace onnx_ecc;
using namespace onnx_ecc::cuda;
using namespace onnx_ecc::cuda::device;

#define ECC_HOST_API extern "C" __attribute__((visibility("default")))

// dims: outer, inner, groups, data_per_group, parity_per_group, total_channels, data_channels,
// num_blocks (per group), block, parity. totals: four counters, as the kernels' (kernels.cuh).
// er_count, er_pos, marks: DecodeParams' known erasures and learning marks (each may be null).
ECC_HOST_API void OnnxEccHost_Decode(const int64_t* dims, float tolerance, int correct, int relu, int scale_output,
                                     const float* generator, const float* gain, const float* offset, const float* y,
                                     const float* residual, float* z, const float* xmax, int xmax_per_outer,
                                     unsigned long long* totals, const int* er_count, const int* er_pos,
                                     unsigned int* marks) {
  DecodeParams p;
  p.er_count = er_count; p.er_pos = er_pos; p.marks = marks;
  p.outer = dims[0]; p.inner = dims[1]; p.groups = dims[2]; p.data_per_group = dims[3]; p.parity_per_group = dims[4];
  p.total_channels = dims[5]; p.data_channels = dims[6]; p.num_blocks = dims[7]; p.block = dims[8]; p.parity = dims[9];
  p.tolerance = tolerance; p.correct = correct; p.relu = relu; p.scale_output = scale_output;
  p.generator = generator; p.gain = gain; p.offset = offset;
  if (p.scale_output) xmax = nullptr;  // as LaunchDecode
  const bool per_outer = xmax_per_outer != 0;
  std::vector<int64_t> flagged;  // CheckKernel
  for (int64_t u = 0; u < DecodeVectors(p); ++u) {
    const Vec v = Locate(p, y, residual, z, u);
    if (CheckVector(p, v, XMax(xmax, per_outer, v.o))) flagged.push_back(u);
  }
  // CorrectKernel, one thread
  std::vector<double> slot(BlockScratchBytes(p.block, p.parity) / sizeof(double) + 1);
  const BlockScratch s = CarveBlockScratch(slot.data(), p.block, p.parity);
  DecodeCounts c;
  for (int64_t u : flagged) CorrectVector(p, y, residual, z, xmax, per_outer, u, s, c);
  AddCounts(c, totals, nullptr);
}

// dims: n, channels, h, w, hout, wout, kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r,
// dil_h, dil_w.
ECC_HOST_API void OnnxEccHost_Depthwise(const int64_t* dims, float tolerance, int correct, int relu,
                                        const float* weights, const float* bias, const double* weight_sums,
                                        const float* x, const float* y, float* z, unsigned long long* totals) {
  DepthwiseParams p;
  p.n = dims[0]; p.channels = dims[1]; p.h = dims[2]; p.w = dims[3]; p.hout = dims[4]; p.wout = dims[5];
  p.kh = dims[6]; p.kw = dims[7]; p.stride_h = dims[8]; p.stride_w = dims[9]; p.pad_t = dims[10]; p.pad_l = dims[11];
  p.pad_b = dims[12]; p.pad_r = dims[13]; p.dil_h = dims[14]; p.dil_w = dims[15];
  p.tolerance = tolerance; p.correct = correct; p.relu = relu;
  p.weights = weights; p.bias = bias; p.weight_sums = weight_sums;
  const int64_t sums = p.n * p.channels * (p.h + p.pad_t + p.pad_b) * p.kw;  // RowSumsKernel
  std::vector<double> a(static_cast<size_t>(sums)), aabs(static_cast<size_t>(sums));
  for (int64_t u = 0; u < sums; ++u) RowSums(p, x, u, a.data(), aabs.data());
  DecodeCounts c;  // CheckRowsKernel
  for (int64_t u = 0; u < p.n * p.channels * p.hout; ++u) CheckRow(p, x, y, z, a.data(), aabs.data(), u, c);
  AddCounts(c, totals, nullptr);
}

// Returns the number of faults, as LaunchInject adds it to its counter.
ECC_HOST_API int64_t OnnxEccHost_Inject(int kind, const int* bits, int nbits, int64_t count, int64_t site,
                                        const float* x, float* y, int64_t n, uint64_t seed, double rate) {
  InjectParams p;
  p.kind = kind; p.nbits = nbits; p.count = count; p.site = site;
  for (int i = 0; i < nbits && i < kMaxInjectBits; ++i) p.bits[i] = static_cast<unsigned char>(bits[i]);
  std::memcpy(y, x, sizeof(float) * static_cast<size_t>(n));
  return InjectOnHost(p, x, y, n, seed, rate);  // LaunchMaxAbs(finite_only) gives the range
}

// dims: outer, inner, y_row_stride, data_channels, num_blocks, block, parity. Returns the number
// of (outer, block, inner) vectors that fail.
ECC_HOST_API int64_t OnnxEccHost_ParityCheck(const int64_t* dims, float tolerance, const float* generator,
                                             const float* gain, const float* offset, const float* y, const float* pp) {
  ParityCheckParams p;
  p.outer = dims[0]; p.inner = dims[1]; p.y_row_stride = dims[2]; p.data_channels = dims[3]; p.num_blocks = dims[4];
  p.block = dims[5]; p.parity = dims[6]; p.tolerance = tolerance;
  p.generator = generator; p.gain = gain; p.offset = offset;
  int64_t failed = 0;
  for (int64_t u = 0; u < p.outer * p.inner * p.num_blocks; ++u) failed += !ParityVectorHolds(p, y, pp, u);
  return failed;
}

// dims: samples, channels, extra, hw, row, num_blocks, block, parity. act: SampleActivation as an
// int. w (with filter_sums) and bias may be null, r too. Returns the number of samples that fail,
// as LaunchSampleCheck counts them.
ECC_HOST_API int64_t OnnxEccHost_SampleCheck(const int64_t* dims, int act, float act_lo, float act_hi, double tolerance,
                                             float parity_tolerance, float filter_tolerance, const float* generator,
                                             const float* gain, const float* offset, const float* filter_sums,
                                             const float* a, const float* y, const float* w, const float* r,
                                             const float* bias) {
  SampleCheckParams p;
  p.samples = dims[0]; p.channels = dims[1]; p.extra = dims[2]; p.hw = dims[3]; p.row = dims[4];
  p.num_blocks = dims[5]; p.block = dims[6]; p.parity = dims[7];
  p.act = act; p.act_lo = act_lo; p.act_hi = act_hi; p.tolerance = tolerance;
  p.parity_tolerance = parity_tolerance; p.filter_tolerance = filter_tolerance;
  p.generator = generator; p.gain = gain; p.offset = offset; p.filter_sums = filter_sums;
  const int64_t per = p.channels * p.hw;
  std::vector<float> scale(static_cast<size_t>(p.samples), 0.f);  // SampleScaleKernel
  for (int64_t u = 0; u < p.samples * per; ++u) {
    const float m = SampleMagnitude(p, a, y, r, u);
    if (m > scale[u / per]) scale[u / per] = m;
  }
  std::vector<int64_t> failed(static_cast<size_t>(p.samples), 0);  // SampleFailKernel
  for (int64_t u = 0; u < p.samples * per; ++u) failed[u / per] += SampleElementFails(p, a, y, r, u, scale[u / per]);
  if (p.parity > 0)  // SampleParityKernel
    for (int64_t u = 0; u < p.samples * p.num_blocks * p.hw; ++u)
      failed[u / (p.num_blocks * p.hw)] += !SampleParityHolds(p, y, u);
  int64_t bad = 0;  // SampleFilterKernel
  if (w)
    for (int64_t c = 0; c < p.channels; ++c) bad += !SampleFilterHolds(p, w, bias, c);
  int64_t count = 0;  // SampleRaisedKernel
  for (int64_t n = 0; n < p.samples; ++n) count += bad > 0 || failed[n] > 0;
  return count;
}

// IntDecode (requantise 1: z uint8 [outer, data_channels], inner 1) and Int32Decode (requantise 0:
// z int32 [outer, data_channels, inner]). dims: outer, inner, data_channels, block, parity, base,
// correct. bias is the code's (repaired in place when bias_parity, per block and check, is not
// null: IntBiasKernel's items, then IntDecodeKernel's). totals as the kernels'.
ECC_HOST_API void OnnxEccHost_IntDecode(const int64_t* dims, int requantise, const int64_t* generator,
                                        const int64_t* planes, const int64_t* offsets, int32_t* bias,
                                        int64_t* bias_parity, const float* scale, int zero_point, const int32_t* y,
                                        void* z, unsigned long long* totals) {
  IntDecodeParams p;
  p.outer = dims[0]; p.inner = dims[1];
  p.code.data_channels = dims[2]; p.code.block = dims[3]; p.code.parity = dims[4]; p.code.base = dims[5];
  p.code.correct = static_cast<int>(dims[6]);
  p.code.generator = generator; p.code.planes = planes; p.code.offsets = offsets; p.code.bias = bias;
  p.code.scale = scale; p.code.zero_point = zero_point; p.requantise = requantise;
  p.channels = p.code.data_channels;
  for (int64_t a = 0; a < p.code.blocks() * p.code.parity; ++a) p.channels += planes[a];
  DecodeCounts c;
  if (bias_parity)
    for (int64_t kb = 0; kb < p.code.blocks(); ++kb) IntBiasBlock(p.code, bias, bias_parity, kb, c);
  for (int64_t u = 0; u < IntDecodeVectors(p); ++u) IntDecodeItem(p, y, z, u, c);
  AddCounts(c, totals, nullptr);
}

// dims: n, h, w, c, ho, wo, kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, dil_h, dil_w.
ECC_HOST_API void OnnxEccHost_Im2Col(const int64_t* dims, int pad, int flip, const uint8_t* x, uint8_t* y) {
  Im2ColShape q;
  q.n = dims[0]; q.h = dims[1]; q.w = dims[2]; q.c = dims[3]; q.ho = dims[4]; q.wo = dims[5];
  q.k[0] = dims[6]; q.k[1] = dims[7]; q.st[0] = dims[8]; q.st[1] = dims[9];
  for (int i = 0; i < 4; ++i) q.pads[i] = dims[10 + i];
  q.dl[0] = dims[14]; q.dl[1] = dims[15];
  q.pad = static_cast<uint8_t>(pad); q.flip = static_cast<uint8_t>(flip);
  for (int64_t u = 0; u < q.Elements(); ++u) y[u] = Im2ColByte(q, x, u);  // Im2ColKernel
}

// dims: outer, a_rows, y_rows, row, stride, channels, w_rows, w_cols, by_columns. w (with
// filter_sums) and bias may be null. Returns the rows counted as failed, as LaunchIntSampleCheck.
ECC_HOST_API int64_t OnnxEccHost_IntSampleCheck(const int64_t* dims, const int64_t* filter_sums, const uint8_t* a,
                                                const uint8_t* y, const int8_t* w, const int32_t* bias) {
  IntSampleParams p;
  p.outer = dims[0]; p.a_rows = dims[1]; p.y_rows = dims[2]; p.row = dims[3]; p.stride = dims[4];
  p.channels = dims[5]; p.w_rows = dims[6]; p.w_cols = dims[7]; p.by_columns = static_cast<int>(dims[8]);
  p.filter_sums = filter_sums;
  int64_t failed = 0, bad = 0;
  for (int64_t i = 0; i < p.outer * p.y_rows; ++i) failed += IntSampleRowFails(p, a, y, i);  // IntSampleRowsKernel
  if (w)
    for (int64_t ch = 0; ch < p.channels; ++ch) bad += IntSampleFilterFails(p, w, bias, ch);  // IntSampleFilterKernel
  return bad > 0 ? p.outer * p.y_rows : failed;  // IntSampleRaisedKernel
}
