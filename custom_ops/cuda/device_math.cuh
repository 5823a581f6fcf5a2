// The CUDA kernels' items: which code vector, row or element thread u works on, the exact step's
// scratch slots and the counters' atomics. The maths of each item is the CPU kernels' own, in
// custom_ops/include/onnx_ecc/ (decode_math.h, depthwise_math.h, parity_check_math.h,
// sample_check_math.h, inject_math.h, int_decode_math.h, int_sample_check_math.h), so kernels.cu only maps threads to these items, and
// host_emulation.cc runs them in host loops, so that a test without a GPU
// (tests/custom_ops/test_cuda_maths_on_host.py) compares them with the CPU kernels bit for bit.
// Plain C++ when not compiled by nvcc.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernel_params.h"
#include "onnx_ecc/decode_math.h"
#include "onnx_ecc/depthwise_math.h"
#include "onnx_ecc/int_decode_math.h"
#include "onnx_ecc/int_sample_check_math.h"
#include "onnx_ecc/parity_check_math.h"
#include "onnx_ecc/sample_check_math.h"

namespace onnx_ecc {
namespace cuda {
namespace device {

ECC_HD inline unsigned long long AtomicAdd64(unsigned long long* p, unsigned long long v) {
#ifdef __CUDA_ARCH__
  return atomicAdd(p, v);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

// ---- Decode: vector u = (outer, group, block, inner position), inner fastest --------------------

struct Vec {  // one code vector: where its data, parity, residual and output live
  int64_t o, i, g, k;
  int b, r;
  const float* gen;
  const float* yd;  // data channel j at yd[j * inner]
  const float* yp;  // parity q at yp[q * inner]
  const float* rd;  // residual of data channel j at rd[j * inner], or null
  float* zd;
  const float* gain;
  const float* offset;
};

ECC_HD inline Vec Locate(const DecodeParams& p, const float* y, const float* res, float* z, int64_t u) {
  Vec v;
  v.i = u % p.inner;
  int64_t rest = u / p.inner;
  v.k = rest % p.num_blocks;
  rest /= p.num_blocks;
  v.g = rest % p.groups;
  v.o = rest / p.groups;
  const int64_t left = p.data_per_group - v.k * p.block;
  v.b = static_cast<int>(left < p.block ? left : p.block);
  v.r = static_cast<int>(p.parity);
  v.gen = p.generator + v.k * p.block * p.parity;  // every earlier block is full
  const int64_t ybase = v.o * p.total_channels + v.g * (p.data_per_group + p.parity_per_group);
  v.yd = y + (ybase + v.k * p.block) * p.inner + v.i;
  v.yp = y + (ybase + p.data_per_group + v.k * p.parity) * p.inner + v.i;
  const int64_t zoff = (v.o * p.data_channels + v.g * p.data_per_group + v.k * p.block) * p.inner + v.i;
  v.zd = z + zoff;
  v.rd = res ? res + zoff : nullptr;
  const int64_t a = (v.g * p.num_blocks + v.k) * p.parity;
  v.gain = p.gain + a;
  v.offset = p.offset + a;
  return v;
}

// scale='input': the threshold scale of outer index o (1 without X).
ECC_HD inline float XMax(const float* xmax, bool per_outer, int64_t o) {
  return xmax ? InputScale(xmax[per_outer ? o : 0]) : 1.f;
}

ECC_HD inline BlockNoise Noise(const DecodeParams& p, const Vec& v, float xm) {
  return BlockNoise{v.gain, v.offset, TolEps(p.tolerance), p.scale_output ? -1.0 : static_cast<double>(xm)};
}

// Known erasures of the vector's block (their count; *pos: their positions), as decode.cc's RunErasures.
ECC_HD inline int KnownErasures(const DecodeParams& p, const Vec& v, const int** pos) {
  const int64_t gk = v.g * p.num_blocks + v.k;
  *pos = p.er_count ? p.er_pos + gk * kMaxParity : nullptr;
  return p.er_count ? p.er_count[gk] : 0;
}

// The channel of Y of position pos (data j < b, check b + q) of the vector's block (CodeLayout::Channel).
ECC_HD inline int64_t ChannelOf(const DecodeParams& p, const Vec& v, int pos) {
  const int64_t base = v.g * (p.data_per_group + p.parity_per_group);
  return pos < v.b ? base + v.k * p.block + pos : base + p.data_per_group + v.k * p.parity + (pos - v.b);
}

// The fast check of one vector (as decode.cc's sweeps; with inner == 1 in the eight lanes of its
// row sweeps): writes act(data + R) into Z and returns true when the vector must go to the exact
// step, that is when its block has known erasures, or a float check fails and the checks do not
// hold in double either.
ECC_HD inline bool CheckVector(const DecodeParams& p, const Vec& v, float xm) {
  const int* known;
  if (KnownErasures(p, v, &known) > 0) {
    WriteVector(v.yd, p.inner, v.rd, v.zd, p.inner, v.b, p.relu != 0);
    return true;
  }
  const BlockNoise noise = Noise(p, v, xm);
  const bool bad =
      FastChecksFail(v.yd, v.yp, p.inner, v.gen, v.b, v.r, noise, p.scale_output ? -1.f : xm, p.inner == 1);
  WriteVector(v.yd, p.inner, v.rd, v.zd, p.inner, v.b, p.relu != 0);
  return bad && !ChecksHold(v.yd, p.inner, v.yp, p.inner, v.gen, v.b, v.r, noise);
}

// The exact step for one flagged vector (RepairVector, as decode.cc's rare path).
ECC_HD inline void CorrectVector(const DecodeParams& p, const float* y, const float* res, float* z, const float* xmax,
                                 bool per_outer, int64_t u, const BlockScratch& s, DecodeCounts& c) {
  const Vec v = Locate(p, y, res, z, u);
  const int* known;
  const int nk = KnownErasures(p, v, &known);
  BlockOutcome out;
  RepairVector(s, v.gen, Noise(p, v, XMax(xmax, per_outer, v.o)), v.b, v.r, p.correct != 0, p.relu != 0, v.yd, v.yp,
               p.inner, v.rd, v.zd, p.inner, c, known, nk, &out);
  if (!p.marks) return;
  for (int i = 0; i < out.located; ++i) p.marks[ChannelOf(p, v, out.pos[i])] = 1u;  // any order: all write 1
  for (int i = 0; i < nk; ++i)
    if (!(out.agree >> i & 1u)) p.marks[p.total_channels + ChannelOf(p, v, known[i])] = 1u;
}

ECC_HD inline void AddCounts(const DecodeCounts& c, unsigned long long* totals, unsigned long long* run_unc) {
  using ull = unsigned long long;
  if (c.flagged) AtomicAdd64(totals + kFlagged, static_cast<ull>(c.flagged));
  if (c.corrected_blocks) AtomicAdd64(totals + kCorrectedBlocks, static_cast<ull>(c.corrected_blocks));
  if (c.corrected_values) AtomicAdd64(totals + kCorrectedValues, static_cast<ull>(c.corrected_values));
  if (c.uncorrectable) {
    AtomicAdd64(totals + kUncorrectable, static_cast<ull>(c.uncorrectable));
    if (run_unc) AtomicAdd64(run_unc, static_cast<ull>(c.uncorrectable));
  }
}

// ---- DepthwiseCheck -----------------------------------------------------------------------------

// A[n, c, padded row ip, tap column j] (and the same of |x|): the sum over output columns of
// the padded input row at the columns filter tap j reads.
ECC_HD inline void RowSums(const DepthwiseParams& p, const float* x, int64_t unit, double* a, double* aabs) {
  const int64_t hp = p.h + p.pad_t + p.pad_b;
  const int64_t j = unit % p.kw;
  const int64_t ip = (unit / p.kw) % hp;
  const int64_t nc = unit / (p.kw * hp);
  double s = 0, sa = 0;
  const int64_t i = ip - p.pad_t;
  if (i >= 0 && i < p.h) {
    const float* row = x + (nc * p.h + i) * p.w;
    for (int64_t ow = 0; ow < p.wout; ++ow) {
      const int64_t src = j * p.dil_w + ow * p.stride_w - p.pad_l;
      if (src < 0 || src >= p.w) continue;
      const double v = row[src];
      s += v;
      sa += fabs(v);
    }
  }
  a[unit] = s;
  aabs[unit] = sa;
}

// Checks (and repairs) output row oh of (n, c): depthwise_check.cc's per-row test (its sums over
// the taps in the same order) and repair.
ECC_HD inline void CheckRow(const DepthwiseParams& p, const float* x, const float* y, float* z, const double* a,
                            const double* aabs, int64_t unit, DecodeCounts& cnt) {
  const int64_t oh = unit % p.hout;
  const int64_t nc = unit / p.hout;
  const int64_t c = nc % p.channels;
  const int64_t hp = p.h + p.pad_t + p.pad_b;
  const float* yrow = y + unit * p.wout;
  float* zrow = z + unit * p.wout;
  const double* an = a + nc * hp * p.kw;
  const double* aan = aabs + nc * hp * p.kw;
  const float* wt = p.weights + c * p.kh * p.kw;
  const double bias = p.bias[c];
  double actual = 0.0;
  for (int64_t ow = 0; ow < p.wout; ++ow) actual += yrow[ow];
  double expected = DMul(bias, static_cast<double>(p.wout)), bound = DMul(fabs(bias), static_cast<double>(p.wout));
  for (int64_t i = 0; i < p.kh; ++i) {
    const int64_t r = oh * p.stride_h + i * p.dil_h;
    for (int64_t j = 0; j < p.kw; ++j) {
      const double w = wt[i * p.kw + j];
      expected = DAdd(expected, DMul(w, an[r * p.kw + j]));
      bound = DAdd(bound, DMul(fabs(w), aan[r * p.kw + j]));
    }
  }
  const bool ok = DepthwiseRowHolds(actual, expected, bound, p.tolerance);
  if (ok || !p.correct || !DepthwiseChannelVerified(wt, p.kh * p.kw, p.bias[c], p.weight_sums[c])) {
    if (!ok) { ++cnt.flagged; ++cnt.uncorrectable; }
    for (int64_t ow = 0; ow < p.wout; ++ow) zrow[ow] = Activate(p.relu != 0, yrow[ow]);
    return;
  }
  ++cnt.flagged;
  DepthwiseRecomputeRow(p, wt, p.bias[c], x + nc * p.h * p.w, p.h, p.w, oh, p.wout, p.relu != 0, zrow);
  ++cnt.corrected_blocks;
  cnt.corrected_values += p.wout;
}

// ---- ParityCheck: vector u = (outer, block, inner position), inner fastest ----------------------

ECC_HD inline bool ParityVectorHolds(const ParityCheckParams& p, const float* y, const float* pp, int64_t u) {
  const int r = static_cast<int>(p.parity);
  const int64_t i = u % p.inner, t = u / p.inner;
  const int64_t k = t % p.num_blocks, o = t / p.num_blocks;
  const int64_t start = k * p.block;
  const int b = static_cast<int>(p.data_channels - start < p.block ? p.data_channels - start : p.block);
  const float* yk = y + (o * p.y_row_stride * p.data_channels + start) * p.inner + i;
  const float* pk = pp + (o * p.num_blocks * p.parity + k * r) * p.inner + i;
  return ParityBlockHoldsExact(yk, p.inner, pk, p.inner, p.generator + start * r, b, r, p.gain + k * r,
                               p.offset + k * r, p.tolerance);
}

// ---- SampleCheck: element u of [samples, channels, hw] ------------------------------------------

// The compared pair of element u: A's value and act(Y + R).
ECC_HD inline void SamplePair(const SampleCheckParams& p, const float* a, const float* y, const float* r, int64_t u,
                          float* av, float* yv) {
  const int64_t per = p.channels * p.hw, n = u / per, e = u % per;
  *av = a[u];
  const float b = y[n * (p.channels + p.extra) * p.hw + e];
  *yv = SampleActivate(p.act, p.act_lo, p.act_hi, r ? FAdd(b, r[u]) : b);
}

// The larger finite |value| of the pair (the sample's scale is the largest over its elements).
ECC_HD inline float SampleMagnitude(const SampleCheckParams& p, const float* a, const float* y, const float* r,
                                    int64_t u) {
  float av, yv;
  SamplePair(p, a, y, r, u, &av, &yv);
  return MaxFinite(MaxFinite(0.f, av), yv);
}

// Whether element u's pair fails, given its sample's scale (SampleMismatches' exact rule).
ECC_HD inline bool SampleElementFails(const SampleCheckParams& p, const float* a, const float* y, const float* r,
                                      int64_t u, float scale) {
  float av, yv;
  SamplePair(p, a, y, r, u, &av, &yv);
  return SamplePairFails(av, yv, SampleThreshold(p.tolerance, scale));
}

// Whether parity vector u = (sample, block, position) of Y holds.
ECC_HD inline bool SampleParityHolds(const SampleCheckParams& p, const float* y, int64_t u) {
  const int r = static_cast<int>(p.parity);
  const int64_t i = u % p.hw, t = u / p.hw;
  const int64_t k = t % p.num_blocks, n = t / p.num_blocks;
  const int64_t start = k * p.block;
  const int b = static_cast<int>(p.channels - start < p.block ? p.channels - start : p.block);
  const float* yn = y + n * (p.channels + p.extra) * p.hw;
  return ParityBlockHoldsExact(yn + start * p.hw + i, p.hw, yn + (p.channels + k * r) * p.hw + i, p.hw,
                               p.generator + start * r, b, r, p.gain + k * r, p.offset + k * r, p.parity_tolerance);
}

// Whether output channel c's filter and bias still sum to the stored filter sum.
ECC_HD inline bool SampleFilterHolds(const SampleCheckParams& p, const float* w, const float* bias, int64_t c) {
  return FilterRowHolds(w + c * p.row, p.row, bias ? bias + c : nullptr, p.filter_sums[c], p.filter_tolerance);
}

// ---- IntDecode / Int32Decode: item u = (outer, block, inner position), inner fastest -----------

// Checks, corrects and writes code block u of Y into Z: IntDecodeRowBlock (uint8, requantised) or
// Int32DecodeBlock (int32, + bias), the CPU kernels' own maths.
ECC_HD inline void IntDecodeItem(const IntDecodeParams& p, const int32_t* y, void* z, int64_t u, DecodeCounts& c) {
  const int64_t nb = p.code.blocks();
  const int64_t i = u % p.inner, t = u / p.inner;
  const int64_t kb = t % nb, o = t / nb;
  const int32_t* yo = y + o * p.channels * p.inner;
  if (p.requantise)
    IntDecodeRowBlock(p.code, yo, static_cast<uint8_t*>(z) + o * p.code.data_channels, kb, c);
  else
    Int32DecodeBlock(p.code, yo, static_cast<int32_t*>(z) + o * p.code.data_channels * p.inner, p.inner, i, kb, c);
}

// ---- IntSampleCheck: row i of Y; output channel ch of W ----------------------------------------

ECC_HD inline bool IntSampleRowFails(const IntSampleParams& p, const uint8_t* a, const uint8_t* y, int64_t i) {
  return IntSampleRowDiffers(a, y, p.a_rows, p.y_rows, p.row, p.stride, i);
}

ECC_HD inline bool IntSampleFilterFails(const IntSampleParams& p, const int8_t* w, const int32_t* bias, int64_t ch) {
  return !IntFilterHolds(IntFilterSum(w, p.w_rows, p.w_cols, p.by_columns != 0, ch), bias, ch, p.filter_sums[ch]);
}

}  // namespace device
}  // namespace cuda
}  // namespace onnx_ecc
