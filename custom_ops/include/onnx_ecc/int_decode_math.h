// The maths of the integer ops of int8 layers (IntDecode, Int32Decode, Im2ColNhwc), over plain
// pointers and sizes, written once for the CPU kernels (src/int_decode.cc, int32_decode.cc,
// im2col_nhwc.cc) and the CUDA kernels (custom_ops/cuda/device_math.cuh): ECC_HD (hd.h).
// IntDecode checks the int32 accumulators of an int8 layer whose weight matrix carries parity
// columns: per block of `block` data channels and check row r, the parity value is
// p_r = sum_j base^j d_rj (d_rj: the accumulators of the layer's digit columns, balanced base-256
// digits of the integer parity weights sum_i g_ri W_i), and the syndrome
// s_r = sum_i g_ri a_i - p_r is computed exactly in int64: zero when nothing is wrong, so the
// check has no threshold and no false alarm. Row 0 of the integer generator is all ones, so a
// single wrong data value a_i + e gives s_0 = e and s_r = g_ri e. Then the corrected accumulator
// plus bias is requantised as onnxruntime's QLinearConv / QGemm do (MLAS): float32(acc + bias) *
// scale, clamped to the output range less the zero point, rounded half to even, + zero point.
#pragma once

#include <cstdint>
#include <cstring>

#include "onnx_ecc/decode_math.h"  // DecodeCounts
#include "onnx_ecc/hd.h"

namespace onnx_ecc {

inline constexpr int kIntMaxParity = 4;  // checks per block (int64 syndromes stay exact)
inline constexpr int kIntMaxPlanes = 6;  // digit columns per parity value (base^planes fits int64)

// What IntLocate found in one block's syndromes.
enum IntVerdict : int { kIntClean = 0, kIntParityWrong = 1, kIntFixed = 2, kIntUncorrectable = 3 };

// The code of an IntDecode / Int32Decode node as plain pointers (host or device memory):
// IntDecodeConfig::View on the CPU, the uploaded copies on the GPU.
struct IntCode {
  int64_t data_channels = 0, block = 0, parity = 0, base = 256;
  int correct = 1;
  const int64_t* generator = nullptr;  // parity x block, row-major; row 0 all ones
  const int64_t* planes = nullptr;     // per block and check: digit columns
  const int64_t* offsets = nullptr;    // per block and check: first digit column, after the data
  const int32_t* bias = nullptr;       // per data channel
  const float* scale = nullptr;        // per data channel (IntDecode only)
  int32_t zero_point = 0;
  ECC_HD int64_t blocks() const { return (data_channels + block - 1) / block; }
  ECC_HD int BlockSize(int64_t kb) const {
    const int64_t left = data_channels - kb * block;
    return static_cast<int>(left < block ? left : block);
  }
};

// The exact syndromes of one block: a = its b data accumulators (value i at a[i * stride]), d = the
// digit accumulators of its `parity` checks (check r has planes[r] digits, digit j at
// d[(offsets[r] + j) * stride]), g = the block's generator rows (row r at g + r * gstride).
ECC_HD inline void IntSyndromes(const int32_t* a, int b, const int32_t* d, const int64_t* planes,
                                const int64_t* offsets, const int64_t* g, int64_t gstride, int parity, int64_t base,
                                int64_t* s, int64_t stride = 1) {
  for (int r = 0; r < parity; ++r) {
    const int64_t* gr = g + r * gstride;
    int64_t v = 0;
    if (r == 0) {
      for (int i = 0; i < b; ++i) v += a[i * stride];
    } else {
      for (int i = 0; i < b; ++i) v += gr[i] * static_cast<int64_t>(a[i * stride]);
    }
    int64_t mult = 1;
    const int32_t* dr = d + offsets[r] * stride;
    for (int64_t j = 0; j < planes[r]; ++j, mult *= base) v -= mult * static_cast<int64_t>(dr[j * stride]);
    s[r] = v;
  }
}

// Decides one block from its syndromes: clean; exactly one check disagrees (a parity value is
// wrong, the data are used as they are); a single data value i wrong by e = s_0 (s_r = g_ri e for
// every r >= 1; *where = i, *e); or uncorrectable (also when correct is false and data is wrong).
ECC_HD inline int IntLocate(const int64_t* s, int parity, const int64_t* g, int64_t gstride, int b, bool correct,
                            int* where, int64_t* e) {
  int nz = 0;
  for (int r = 0; r < parity; ++r) nz += s[r] != 0;
  if (nz == 0) return kIntClean;
  if (nz == 1) return kIntParityWrong;
  *e = s[0];
  if (*e == 0) return kIntUncorrectable;
  for (int i = 0; i < b; ++i) {
    bool ok = true;
    for (int r = 1; r < parity && ok; ++r) ok = s[r] == g[r * gstride + i] * *e;
    if (ok) {
      *where = i;
      return correct ? kIntFixed : kIntUncorrectable;
    }
  }
  return kIntUncorrectable;
}

// IntLocate for a block of code c whose syndromes s are not all zero, counted into n (flagged,
// and corrected or uncorrectable). Returns the verdict; with kIntFixed, *where and *e as IntLocate.
ECC_HD inline int IntDecide(const IntCode& c, const int64_t* s, int b, int* where, int64_t* e, DecodeCounts& n) {
  ++n.flagged;
  const int verdict = IntLocate(s, static_cast<int>(c.parity), c.generator, c.block, b, c.correct != 0, where, e);
  if (verdict == kIntParityWrong || verdict == kIntFixed) ++n.corrected_blocks;
  if (verdict == kIntFixed) ++n.corrected_values;
  if (verdict == kIntUncorrectable) ++n.uncorrectable;
  return verdict;
}

// acc - e, the corrected accumulator, in int32 (the true value fits).
ECC_HD inline int32_t IntFixed(int32_t acc, int64_t e) { return static_cast<int32_t>(static_cast<int64_t>(acc) - e); }

// acc + bias as int32 with wrap-around, as the kernels' int32 additions (Int32Decode's output).
ECC_HD inline int32_t AddWrapped(int32_t acc, int32_t bias) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(bias));
}

// onnxruntime's requantisation of an int32 accumulator to uint8 (MLAS: MlasRequantizeOutput):
// float32(acc + bias) * scale, clamped to [0 - zp, 255 - zp], rounded half to even (the
// 1.5 * 2^23 trick, exact for |v| < 2^22), + zp. acc + bias wraps as int32 like the kernels'.
// FMul / FAdd: never contracted, so the device rounds as the CPU.
ECC_HD inline uint8_t RequantizeU8(int32_t acc, int32_t bias, float scale, int32_t zp) {
  const int32_t v = AddWrapped(acc, bias);
  const float lo = static_cast<float>(0 - zp), hi = static_cast<float>(255 - zp);
  float f = FMul(static_cast<float>(v), scale);
  f = f < lo ? lo : (f > hi ? hi : f);
  f = FAdd(f, 12582912.0f);
  return static_cast<uint8_t>(static_cast<int32_t>(FloatBits(f)) - 0x4B400000 + zp);
}

// The check of block kb at position p of y [C, inner] (inner = 1: a channels-last row): its
// syndromes and IntDecide's verdict; true, with the channel and the error e, where one wrong
// accumulator is to be fixed (the counts say what was found either way).
ECC_HD inline bool IntBlockToFix(const IntCode& c, const int32_t* y, int64_t inner, int64_t p, int64_t kb,
                                 DecodeCounts& n, int64_t* ch, int64_t* e) {
  const int64_t c0 = kb * c.block;
  const int b = c.BlockSize(kb), R = static_cast<int>(c.parity);
  int64_t s[kIntMaxParity];
  IntSyndromes(y + c0 * inner + p, b, y + c.data_channels * inner + p, c.planes + kb * R, c.offsets + kb * R,
               c.generator, c.block, R, c.base, s, inner);
  int64_t any = 0;
  for (int r = 0; r < R; ++r) any |= s[r];
  if (!any) return false;
  int where = -1;
  if (IntDecide(c, s, b, &where, e, n) != kIntFixed) return false;
  *ch = c0 + where;
  return true;
}

// IntDecode's check of block kb of one channels-last row y [data channels, digit columns], once
// its row z [data channels] holds the requantised values: the one wrong accumulator of the block
// corrected and requantised again.
ECC_HD inline void IntDecodeRowCheck(const IntCode& c, const int32_t* y, uint8_t* z, int64_t kb, DecodeCounts& n) {
  int64_t ch = 0, e = 0;
  if (IntBlockToFix(c, y, 1, 0, kb, n, &ch, &e))
    z[ch] = RequantizeU8(IntFixed(y[ch], e), c.bias[ch], c.scale[ch], c.zero_point);
}

// IntDecode's item (the CUDA kernel's): block kb of a row requantised, then checked. The CPU
// requantises whole rows in one loop, then checks each block.
ECC_HD inline void IntDecodeRowBlock(const IntCode& c, const int32_t* y, uint8_t* z, int64_t kb, DecodeCounts& n) {
  const int64_t c0 = kb * c.block;
  const int b = c.BlockSize(kb);
  for (int i = 0; i < b; ++i) z[c0 + i] = RequantizeU8(y[c0 + i], c.bias[c0 + i], c.scale[c0 + i], c.zero_point);
  IntDecodeRowCheck(c, y, z, kb, n);
}

// Int32Decode's check of block kb at position p of one outer index, y [C, inner] and z [M, inner]
// (inner = 1: a channels-last row), once z holds accumulators + bias: the one wrong accumulator
// corrected (+ bias, wrapping as int32).
ECC_HD inline void Int32DecodeCheck(const IntCode& c, const int32_t* y, int32_t* z, int64_t inner, int64_t p,
                                    int64_t kb, DecodeCounts& n) {
  int64_t ch = 0, e = 0;
  if (IntBlockToFix(c, y, inner, p, kb, n, &ch, &e))
    z[ch * inner + p] = AddWrapped(IntFixed(y[ch * inner + p], e), c.bias[ch]);
}

// Int32Decode's item (the CUDA kernel's): block kb at position p written (+ bias), then checked.
ECC_HD inline void Int32DecodeBlock(const IntCode& c, const int32_t* y, int32_t* z, int64_t inner, int64_t p,
                                    int64_t kb, DecodeCounts& n) {
  const int64_t c0 = kb * c.block;
  const int b = c.BlockSize(kb);
  for (int i = 0; i < b; ++i) z[(c0 + i) * inner + p] = AddWrapped(y[(c0 + i) * inner + p], c.bias[c0 + i]);
  Int32DecodeCheck(c, y, z, inner, p, kb, n);
}

// The bias check of block kb (IntDecode and Int32Decode, when bias_parity is given): the bias's
// syndromes against its stored parity; one wrong bias value is repaired in place, a wrong stored
// parity recomputed from the bias; counted into n as a code block.
ECC_HD inline void IntBiasBlock(const IntCode& c, int32_t* bias, int64_t* bias_parity, int64_t kb, DecodeCounts& n) {
  const int64_t c0 = kb * c.block;
  const int b = c.BlockSize(kb), R = static_cast<int>(c.parity);
  int64_t s[kIntMaxParity];
  int64_t any = 0;
  for (int r = 0; r < R; ++r) {
    int64_t v = -bias_parity[kb * R + r];
    for (int i = 0; i < b; ++i) v += c.generator[r * c.block + i] * static_cast<int64_t>(bias[c0 + i]);
    any |= (s[r] = v);
  }
  if (!any) return;
  int where = -1;
  int64_t e = 0;
  const int verdict = IntDecide(c, s, b, &where, &e, n);
  if (verdict == kIntFixed) {
    bias[c0 + where] = IntFixed(bias[c0 + where], e);
  } else if (verdict == kIntParityWrong) {
    for (int r = 0; r < R; ++r) {
      int64_t v = 0;
      for (int i = 0; i < b; ++i) v += c.generator[r * c.block + i] * static_cast<int64_t>(bias[c0 + i]);
      bias_parity[kb * R + r] = v;
    }
  }
}

// The geometry of an Im2ColNhwc: kernel, strides, pads (top, left, bottom, right), dilations.
struct Im2ColShape {
  int64_t n = 0, h = 0, w = 0, c = 0, ho = 0, wo = 0;
  int64_t k[2] = {1, 1}, st[2] = {1, 1}, pads[4] = {0, 0, 0, 0}, dl[2] = {1, 1};
  uint8_t pad = 0, flip = 0;  // pad: in the output's uint8 values; flip 0x80 shifts int8 inputs to uint8
  ECC_HD int64_t Row() const { return k[0] * k[1] * c; }
  ECC_HD int64_t Elements() const { return n * ho * wo * Row(); }
};

// Im2ColNhwc's item: output byte u of [N, Ho, Wo, (i * kw + j) * C + c] =
// x[n, oh * sh - pt + i * dh, ow * sw - pl + j * dw, c] ^ flip, or pad where outside.
ECC_HD inline uint8_t Im2ColByte(const Im2ColShape& q, const uint8_t* x, int64_t u) {
  const int64_t ch = u % q.c;
  int64_t t = u / q.c;
  const int64_t jj = t % q.k[1];
  t /= q.k[1];
  const int64_t i = t % q.k[0];
  t /= q.k[0];
  const int64_t ow = t % q.wo;
  t /= q.wo;
  const int64_t oh = t % q.ho, n = t / q.ho;
  const int64_t ih = oh * q.st[0] - q.pads[0] + i * q.dl[0], iw = ow * q.st[1] - q.pads[1] + jj * q.dl[1];
  if (ih < 0 || ih >= q.h || iw < 0 || iw >= q.w) return q.pad;
  return static_cast<uint8_t>(x[((n * q.h + ih) * q.w + iw) * q.c + ch] ^ q.flip);
}

// Im2ColNhwc of one output row (sample n, output row oh): out[ow, (i * kw + j) * C + c] =
// x[n, oh * sh - pt + i * dh, ow * sw - pl + j * dw, c], pad where outside; int8 inputs are
// shifted to uint8 (x + 128, flip = 0x80; pad is in the output's uint8 values).
inline void Im2ColRow(const uint8_t* x, int64_t H, int64_t W, int64_t C, int64_t Wo, int64_t oh, const int64_t* k,
                      const int64_t* st, const int64_t* pads, const int64_t* dl, uint8_t pad, uint8_t flip,
                      uint8_t* out) {
  const int64_t KC = k[0] * k[1] * C;
  for (int64_t i = 0; i < k[0]; ++i) {
    const int64_t ih = oh * st[0] - pads[0] + i * dl[0];
    for (int64_t jj = 0; jj < k[1]; ++jj) {
      uint8_t* o = out + (i * k[1] + jj) * C;
      const int64_t off = -pads[1] + jj * dl[1];
      if (ih < 0 || ih >= H) {
        for (int64_t ow = 0; ow < Wo; ++ow) std::memset(o + ow * KC, pad, static_cast<size_t>(C));
        continue;
      }
      const uint8_t* row = x + ih * W * C;
      if (C == 1) {  // one channel (the first conv of grayscale images): byte stores, not 1-byte memcpy calls
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t iw = ow * st[1] + off;
          o[ow * KC] = iw < 0 || iw >= W ? pad : static_cast<uint8_t>(row[iw] ^ flip);
        }
        continue;
      }
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const int64_t iw = ow * st[1] + off;
        uint8_t* dst = o + ow * KC;
        if (iw < 0 || iw >= W) {
          std::memset(dst, pad, static_cast<size_t>(C));
        } else if (flip) {
          const uint8_t* src = row + iw * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<uint8_t>(src[c] ^ 0x80);
        } else {
          std::memcpy(dst, row + iw * C, static_cast<size_t>(C));
        }
      }
    }
  }
}

}  // namespace onnx_ecc
