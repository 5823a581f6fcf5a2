// Depthwise-convolution check: per output row, spatial sums against the filter applied to
// summed input windows; a wrong row is recomputed from x with the verified reference weights.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "onnx_ecc/depthwise.h"
#include "sweeps.h"

namespace onnx_ecc {

std::string DepthwiseConfig::Validate() const {
  if (channels < 1 || kh < 1 || kw < 1) return "weights must be [C, 1, kh, kw] with C, kh, kw >= 1";
  if (static_cast<int64_t>(weights.size()) != channels * kh * kw) return "weights size does not match [C, 1, kh, kw]";
  if (static_cast<int64_t>(bias.size()) != channels) return "bias must have C values";
  if (static_cast<int64_t>(weight_sums.size()) != channels) return "weight_sums must have C values";
  if (stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1) return "strides and dilations must be >= 1";
  if (pad_t < 0 || pad_l < 0 || pad_b < 0 || pad_r < 0) return "pads must be >= 0";
  if (!(tolerance > 0)) return "tolerance must be > 0";
  return "";
}

bool DepthwiseConfig::ChannelVerified(int64_t c) const {
  double s = bias[c];
  for (int64_t k = 0; k < kh * kw; ++k) s += weights[c * kh * kw + k];
  const double scale = std::fabs(weight_sums[c]) + 1e-30;
  return std::isfinite(s) && std::fabs(s - weight_sums[c]) <= 1e-6 * scale + 1e-30;
}

namespace {

// Recomputes output row oh of the channel in double precision from the reference weights.
void RecomputeRow(const DepthwiseConfig& cfg, int64_t c, const float* x, int64_t h, int64_t w, int64_t oh,
                  int64_t wout, float* zrow) {
  const float* wt = cfg.weights.data() + c * cfg.kh * cfg.kw;
  for (int64_t ow = 0; ow < wout; ++ow) {
    double acc = cfg.bias[c];
    for (int64_t i = 0; i < cfg.kh; ++i) {
      const int64_t ih = oh * cfg.stride_h - cfg.pad_t + i * cfg.dil_h;
      if (ih < 0 || ih >= h) continue;
      for (int64_t j = 0; j < cfg.kw; ++j) {
        const int64_t iw = ow * cfg.stride_w - cfg.pad_l + j * cfg.dil_w;
        if (iw < 0 || iw >= w) continue;
        acc += static_cast<double>(wt[i * cfg.kw + j]) * x[ih * w + iw];
      }
    }
    const float v = static_cast<float>(acc);
    zrow[ow] = cfg.relu && v < 0.f ? 0.f : v;
  }
}

}  // namespace

namespace {

// Scratch of one channel's check: per padded input row and filter tap, the windowed row sums
// of x and |x| (hp * kw each), and per residue class of the column stride (stride_w each).
constexpr int64_t kStackSums = 2048, kStackClasses = 16;

ECC_INLINE void CheckChannel(const DepthwiseConfig& cfg, int64_t c, const float* x, int64_t h, int64_t w,
                             const float* y, float* z, bool verified, DecodeCounts& counts, double* a, double* aabs,
                             double* cls, double* clsabs) {
  const int64_t hout = cfg.OutH(h), wout = cfg.OutW(w);
  const int64_t hp = h + cfg.pad_t + cfg.pad_b;
  const int64_t kh = cfg.kh, kw = cfg.kw;
  // A[i][j]: sum over the output columns of input row i at filter tap j, i.e. of x[i][c] for
  // c = j*dil - pad_l + w*stride, w < W_out. That is the total of the row's residue class of c
  // modulo the stride, less the few elements of that class outside the window at either end.
  for (int64_t i = 0; i < hp * kw; ++i) a[i] = aabs[i] = 0.0;
  const int64_t sw = cfg.stride_w;
  for (int64_t i = 0; i < h; ++i) {
    const float* row = x + i * w;
    for (int64_t q = 0; q < sw; ++q) cls[q] = clsabs[q] = 0.0;
    if (sw == 1) {
      float s0[8] = {}, s1[8] = {};
      int64_t q = 0;
      for (; q + 8 <= w; q += 8)
        for (int l = 0; l < 8; ++l) { s0[l] += row[q + l]; s1[l] += std::fabs(row[q + l]); }
      double t0 = 0, t1 = 0;
      for (int l = 0; l < 8; ++l) { t0 += s0[l]; t1 += s1[l]; }
      for (; q < w; ++q) { t0 += row[q]; t1 += std::fabs(row[q]); }
      cls[0] = t0;
      clsabs[0] = t1;
    } else {
      for (int64_t q = 0; q < w; ++q) { cls[q % sw] += row[q]; clsabs[q % sw] += std::fabs(row[q]); }
    }
    for (int64_t j = 0; j < kw; ++j) {
      const int64_t first = j * cfg.dil_w - cfg.pad_l, last = first + (wout - 1) * sw;
      const int64_t r = ((first % sw) + sw) % sw;
      double v = cls[r], va = clsabs[r];
      for (int64_t q = r; q < std::min(first, w); q += sw) { v -= row[q]; va -= std::fabs(row[q]); }
      const int64_t after = last + sw;
      for (int64_t q = std::max<int64_t>(after, r); q < w; q += sw) { v -= row[q]; va -= std::fabs(row[q]); }
      a[(i + cfg.pad_t) * kw + j] = v;
      aabs[(i + cfg.pad_t) * kw + j] = va;
    }
  }
  // The output first: a copy (or Relu) of the whole channel in one pass; rows found wrong and
  // correctable are then overwritten with their recomputation.
  const int64_t plane = hout * wout;
  if (cfg.relu) {
    ECC_IVDEP
    for (int64_t i = 0; i < plane; ++i) z[i] = y[i] > 0.f ? y[i] : 0.f;
  } else {
    std::memcpy(z, y, sizeof(float) * plane);
  }
  const float* wt = cfg.weights.data() + c * kh * kw;
  const double bias = cfg.bias[c];
  counts.vectors += hout;
  for (int64_t oh = 0; oh < hout; ++oh) {
    const float* yrow = y + oh * wout;
    float lanes[8] = {};
    int64_t ow = 0;
    for (; ow + 8 <= wout; ow += 8)
      for (int l = 0; l < 8; ++l) lanes[l] += yrow[ow + l];
    double actual = 0.0;
    for (int l = 0; l < 8; ++l) actual += lanes[l];
    for (; ow < wout; ++ow) actual += yrow[ow];
    double expected = bias * wout, bound = std::fabs(bias) * wout;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t r = oh * cfg.stride_h + i * cfg.dil_h;
      for (int64_t j = 0; j < kw; ++j) {
        expected += wt[i * kw + j] * a[r * kw + j];
        bound += std::fabs(wt[i * kw + j]) * aabs[r * kw + j];
      }
    }
    const bool ok = std::fabs(actual - expected) <= cfg.tolerance * FLT_EPSILON * bound;
    if (ok) continue;
    ++counts.flagged;
    if (!verified || !cfg.correct) {
      ++counts.uncorrectable;
      continue;
    }
    RecomputeRow(cfg, c, x, h, w, oh, wout, z + oh * wout);
    ++counts.corrected_blocks;
    counts.corrected_values += wout;
  }
}

}  // namespace

ECC_CLONES
void DepthwiseCheckPlanes(const DepthwiseConfig& cfg, int64_t p0, int64_t p1, const float* x, int64_t h, int64_t w,
                          const float* y, float* z, const char* verified, DecodeCounts& counts) {
  const int64_t hp = h + cfg.pad_t + cfg.pad_b, sums = hp * cfg.kw;
  const int64_t plane_in = h * w, plane_out = cfg.OutH(h) * cfg.OutW(w);
  double a_stack[kStackSums], aabs_stack[kStackSums], cls_stack[kStackClasses], clsabs_stack[kStackClasses];
  thread_local std::vector<double> a_heap, aabs_heap, cls_heap, clsabs_heap;  // only for huge rows or strides
  double *a = a_stack, *aabs = aabs_stack, *cls = cls_stack, *clsabs = clsabs_stack;
  if (sums > kStackSums) {
    a_heap.resize(sums);
    aabs_heap.resize(sums);
    a = a_heap.data();
    aabs = aabs_heap.data();
  }
  if (cfg.stride_w > kStackClasses) {
    cls_heap.resize(cfg.stride_w);
    clsabs_heap.resize(cfg.stride_w);
    cls = cls_heap.data();
    clsabs = clsabs_heap.data();
  }
  for (int64_t pl = p0; pl < p1; ++pl) {
    const int64_t c = pl % cfg.channels;
    CheckChannel(cfg, c, x + pl * plane_in, h, w, y + pl * plane_out, z + pl * plane_out, verified[c] != 0, counts, a,
                 aabs, cls, clsabs);
  }
}

void DepthwiseCheckChannel(const DepthwiseConfig& cfg, int64_t c, const float* x, int64_t h, int64_t w,
                           const float* y, float* z, bool verified, DecodeCounts& counts) {
  const size_t sums = static_cast<size_t>((h + cfg.pad_t + cfg.pad_b) * cfg.kw);
  std::vector<double> a(sums), aabs(sums), cls(cfg.stride_w), clsabs(cfg.stride_w);
  CheckChannel(cfg, c, x, h, w, y, z, verified, counts, a.data(), aabs.data(), cls.data(), clsabs.data());
}

}  // namespace onnx_ecc
