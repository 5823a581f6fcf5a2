// The maths of the integer ops of int8 layers (IntDecode, Im2ColNhwc), over plain pointers and
// sizes. IntDecode checks the int32 accumulators of an int8 layer whose weight matrix carries
// parity columns: per block of `block` data channels and check row r, the parity value is
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

namespace onnx_ecc {

inline constexpr int kIntMaxParity = 4;  // checks per block (int64 syndromes stay exact)
inline constexpr int kIntMaxPlanes = 6;  // digit columns per parity value (base^planes fits int64)

// What IntLocate found in one block's syndromes.
enum IntVerdict : int { kIntClean = 0, kIntParityWrong = 1, kIntFixed = 2, kIntUncorrectable = 3 };

// The exact syndromes of one block: a = its b data accumulators, d = the digit accumulators of
// its `parity` checks (check r has planes[r] digits, at d + offsets[r]), g = the block's
// generator rows (row r at g + r * gstride).
inline void IntSyndromes(const int32_t* a, int b, const int32_t* d, const int64_t* planes, const int64_t* offsets,
                         const int64_t* g, int64_t gstride, int parity, int64_t base, int64_t* s) {
  for (int r = 0; r < parity; ++r) {
    const int64_t* gr = g + r * gstride;
    int64_t v = 0;
    if (r == 0) {
      for (int i = 0; i < b; ++i) v += a[i];
    } else {
      for (int i = 0; i < b; ++i) v += gr[i] * static_cast<int64_t>(a[i]);
    }
    int64_t mult = 1;
    const int32_t* dr = d + offsets[r];
    for (int64_t j = 0; j < planes[r]; ++j, mult *= base) v -= mult * static_cast<int64_t>(dr[j]);
    s[r] = v;
  }
}

// Decides one block from its syndromes: clean; exactly one check disagrees (a parity value is
// wrong, the data are used as they are); a single data value i wrong by e = s_0 (s_r = g_ri e for
// every r >= 1; *where = i, *e); or uncorrectable (also when correct is false and data is wrong).
inline int IntLocate(const int64_t* s, int parity, const int64_t* g, int64_t gstride, int b, bool correct, int* where,
                     int64_t* e) {
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

// acc + bias as int32 with wrap-around, as the kernels' int32 additions (Int32Decode's output).
inline int32_t AddWrapped(int32_t acc, int32_t bias) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(bias));
}

// onnxruntime's requantisation of an int32 accumulator to uint8 (MLAS: MlasRequantizeOutput):
// float32(acc + bias) * scale, clamped to [0 - zp, 255 - zp], rounded half to even (the
// 1.5 * 2^23 trick, exact for |v| < 2^22), + zp. acc + bias wraps as int32 like the kernels'.
inline uint8_t RequantizeU8(int32_t acc, int32_t bias, float scale, int32_t zp) {
  const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(bias));
  const float lo = static_cast<float>(0 - zp), hi = static_cast<float>(255 - zp);
  float f = static_cast<float>(v) * scale;
  f = f < lo ? lo : (f > hi ? hi : f);
  f = f + 12582912.0f;
  int32_t r;
  std::memcpy(&r, &f, sizeof r);
  return static_cast<uint8_t>(r - 0x4B400000 + zp);
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
