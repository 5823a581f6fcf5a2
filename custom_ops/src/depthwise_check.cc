// Depthwise-convolution check: per output row, spatial sums against the filter applied to
// summed input windows; a wrong row is recomputed from x with the verified reference weights.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "onnx_ecc/depthwise.h"
#include "depthwise_filter.h"
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

namespace {

// Row sums of `rows` rows of width w (row i at x + i * stride) as the scalar loop always formed
// them: 8 float lanes over the first w - w % 8 values, their sum in double in lane order, then the
// remaining values in double. Eight rows at a time go through one transpose, so that the lane
// sums are added as vectors across rows; t and tabs get the sums of x and |x|.
ECC_INLINE void RowSums(const float* x, int64_t stride, int64_t rows, int64_t w, double* t, double* tabs) {
  const int64_t w8 = w - w % 8;
  if (w8 == 0) {  // rows narrower than the lanes: plain sums, one row at a time
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = x + i * stride;
      double t0 = 0, t1 = 0;
      for (int64_t q = 0; q < w; ++q) { t0 += row[q]; t1 += std::fabs(row[q]); }
      t[i] = t0;
      tabs[i] = t1;
    }
    return;
  }
  for (int64_t i = 0; i < rows; i += 8) {
    // A last group of fewer than 8 rows repeats its last row (read, never stored).
    const int n = static_cast<int>(std::min<int64_t>(8, rows - i));
    const float* row[8];
    for (int r = 0; r < 8; ++r) row[r] = x + (i + std::min(r, n - 1)) * stride;
    double t0[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t1[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (w8 > 0) {
      sweep::F8 s0[8], s1[8];
      for (int r = 0; r < 8; ++r) {
        sweep::F8 a = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, b = a;
        for (int64_t q = 0; q < w8; q += 8) {
          const sweep::F8 v = sweep::Load8(row[r] + q);
          a += v;
          b += reinterpret_cast<sweep::F8>(reinterpret_cast<sweep::I8>(v) & 0x7fffffff);
        }
        s0[r] = a;
        s1[r] = b;
      }
      sweep::Transpose8(s0);
      sweep::Transpose8(s1);
      for (int l = 0; l < 8; ++l)
        for (int r = 0; r < 8; ++r) {
          t0[r] += static_cast<double>(s0[l][r]);
          t1[r] += static_cast<double>(s1[l][r]);
        }
    }
    // The remaining columns, in order per row; the rows' chains interleaved.
    for (int64_t q = w8; q < w; ++q)
      for (int r = 0; r < 8; ++r) {
        const float v = row[r][q];
        t0[r] += v;
        t1[r] += std::fabs(v);
      }
    for (int r = 0; r < n; ++r) {
      t[i + r] = t0[r];
      tabs[i + r] = t1[r];
    }
  }
}

// Scratch of one channel's check, per padded input row hp: the windowed row sums of x and |x| at
// each filter tap, tap-major (a[j * hp + row]: consecutive rows adjacent), the plain row sums of
// x and |x| (stride 1), and per residue class of the column stride the class sums.
struct ChannelScratch {
  double *a, *aabs, *rows, *rows_abs, *cls, *clsabs, *actual;
  // Per filter tap j, the same for every row: the residue class r of its first column, and the
  // class elements outside the window: [r, lo_end) before it and [hi_begin, w) after it.
  const int64_t* taps;
};

// Fills taps (3 * kw values) for input width w: no division left in the per-row loop.
void TapWindows(const DepthwiseConfig& cfg, int64_t w, int64_t* taps) {
  const int64_t sw = cfg.stride_w, wout = cfg.OutW(w);
  for (int64_t j = 0; j < cfg.kw; ++j) {
    const int64_t first = j * cfg.dil_w - cfg.pad_l, last = first + (wout - 1) * sw;
    const int64_t r = ((first % sw) + sw) % sw;
    taps[3 * j] = r;
    taps[3 * j + 1] = std::min(first, w);
    taps[3 * j + 2] = std::max<int64_t>(last + sw, r);
  }
}

ECC_INLINE void CheckChannel(const DepthwiseConfig& cfg, int64_t c, const float* x, int64_t h, int64_t w,
                             const float* y, float* z, bool verified, DecodeCounts& counts, const ChannelScratch& s) {
  const int64_t hout = cfg.OutH(h), wout = cfg.OutW(w);
  const int64_t hp = h + cfg.pad_t + cfg.pad_b;
  const int64_t kh = cfg.kh, kw = cfg.kw;
  double* a = s.a;
  double* aabs = s.aabs;
  // A[i][j]: sum over the output columns of input row i at filter tap j, i.e. of x[i][c] for
  // c = j*dil - pad_l + w*stride, w < W_out. That is the total of the row's residue class of c
  // modulo the stride, less the few elements of that class outside the window at either end.
  for (int64_t i = 0; i < hp * kw; ++i) a[i] = aabs[i] = 0.0;
  const int64_t sw = cfg.stride_w;
  if (sw == 1) RowSums(x, w, h, w, s.rows, s.rows_abs);
  for (int64_t i = 0; i < h; ++i) {
    const float* row = x + i * w;
    double* cls = s.cls;
    double* clsabs = s.clsabs;
    if (sw == 1) {
      cls[0] = s.rows[i];
      clsabs[0] = s.rows_abs[i];
    } else {
      for (int64_t q = 0; q < sw; ++q) cls[q] = clsabs[q] = 0.0;
      for (int64_t q = 0; q < w; ++q) { cls[q % sw] += row[q]; clsabs[q % sw] += std::fabs(row[q]); }
    }
    for (int64_t j = 0; j < kw; ++j) {
      const int64_t r = s.taps[3 * j], lo_end = s.taps[3 * j + 1], hi_begin = s.taps[3 * j + 2];
      double v = cls[r], va = clsabs[r];
      for (int64_t q = r; q < lo_end; q += sw) { v -= row[q]; va -= std::fabs(row[q]); }
      for (int64_t q = hi_begin; q < w; q += sw) { v -= row[q]; va -= std::fabs(row[q]); }
      a[j * hp + i + cfg.pad_t] = v;
      aabs[j * hp + i + cfg.pad_t] = va;
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
  RowSums(y, wout, hout, wout, s.actual, s.rows_abs);  // |y| sums unused
  const float* wt = cfg.weights.data() + c * kh * kw;
  const double bias = cfg.bias[c];
  counts.vectors += hout;
  const int64_t sh = cfg.stride_h, dh = cfg.dil_h;
  for (int64_t oh0 = 0; oh0 < hout; oh0 += 8) {
    const int n = static_cast<int>(std::min<int64_t>(8, hout - oh0));
    // expected and bound of output rows oh0 .. oh0 + n - 1, each summed over the taps in order.
    double expected[8], bound[8];
    for (int r = 0; r < 8; ++r) {
      expected[r] = bias * wout;
      bound[r] = std::fabs(bias) * wout;
    }
    // Rows past the last (r >= n) read the zeroed slack after the scratch's sums and are dropped.
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) {
        const double wv = wt[i * kw + j], wa = std::fabs(wt[i * kw + j]);
        const double* aj = a + j * hp + oh0 * sh + i * dh;
        const double* aaj = aabs + j * hp + oh0 * sh + i * dh;
        if (sh == 1) {
          for (int r = 0; r < 8; ++r) {
            expected[r] += wv * aj[r];
            bound[r] += wa * aaj[r];
          }
        } else {
          for (int r = 0; r < 8; ++r) {
            expected[r] += wv * aj[r * sh];
            bound[r] += wa * aaj[r * sh];
          }
        }
      }
    for (int r = 0; r < n; ++r) {
      const int64_t oh = oh0 + r;
      if (DepthwiseRowHolds(s.actual[oh], expected[r], bound[r], cfg.tolerance)) continue;
      ++counts.flagged;
      if (!verified || !cfg.correct) {
        ++counts.uncorrectable;
        continue;
      }
      DepthwiseRecomputeRow(cfg, wt, cfg.bias[c], x, h, w, oh, wout, cfg.relu, z + oh * wout);
      ++counts.corrected_blocks;
      counts.corrected_values += wout;
    }
  }
}


// ---- eight small planes at once ---------------------------------------------------------------
// For planes of up to kSmallPlane values (stride_w 1) the per-row scalar work dominates. Eight
// consecutive planes are transposed so that value e of plane p + l sits at xt[e * 8 + l]; then
// every double and float operation of CheckChannel's check runs once as a vector across the
// eight planes, in the same order, so each lane computes exactly what CheckChannel computes for
// its plane. Only the fault-free outcome is taken from here: a plane with a failing row is
// checked again, counted and repaired by CheckChannel.

// Element-aligned (the scratch lives in std::vector storage, which need not be 64-byte aligned).
typedef double D8 __attribute__((vector_size(64), aligned(8)));
typedef int64_t L8 __attribute__((vector_size(64), aligned(8)));
constexpr int64_t kSmallPlane = 1024;
constexpr int64_t kSmallStrideW = 4;  // column strides of the eight-plane path (its class sums on the stack)

ECC_INLINE D8 ToD8(sweep::F8 v) { return __builtin_convertvector(v, D8); }
ECC_INLINE sweep::F8 AbsF8(sweep::F8 v) {
  return reinterpret_cast<sweep::F8>(reinterpret_cast<sweep::I8>(v) & 0x7fffffff);
}
ECC_INLINE D8 AbsD8(D8 v) { return reinterpret_cast<D8>(reinterpret_cast<L8>(v) & 0x7fffffffffffffffLL); }

bool SmallPlanes(const DepthwiseConfig& cfg, int64_t h, int64_t w) {
  const int64_t hp = h + cfg.pad_t + cfg.pad_b;
  return cfg.stride_w <= kSmallStrideW && h * w <= kSmallPlane && cfg.OutH(h) * cfg.OutW(w) <= kSmallPlane && hp * cfg.kw <= 1024 &&
         hp <= 256 && cfg.kh * cfg.kw <= 64;
}

// out[e * stride + l] = planes[l * len + e] for e < len, l < 8: 8x8 tiles through one transpose
// each (stride 8: eight planes; 16, twice: sixteen).
ECC_INLINE void TransposePlanes(const float* planes, int64_t len, float* out, int64_t stride = 8) {
  int64_t e = 0;
  for (; e + 8 <= len; e += 8) {
    sweep::F8 t[8];
    for (int l = 0; l < 8; ++l) t[l] = sweep::Load8(planes + l * len + e);
    sweep::Transpose8(t);
    for (int m = 0; m < 8; ++m) sweep::Store8(out + (e + m) * stride, t[m]);
  }
  for (; e < len; ++e)
    for (int l = 0; l < 8; ++l) out[e * stride + l] = planes[l * len + e];
}

// The filter's weights and biases of planes p .. p + lanes - 1 by lane: wl[t * lanes + l] is tap
// t of plane p + l's channel, bl[l] its bias. Consecutive channels' weights are one [lanes, K]
// block, transposed by tiles; a run that wraps past the last channel is gathered one by one.
ECC_INLINE void LaneWeights(const DepthwiseConfig& cfg, int64_t p, int lanes, float* wl, float* bl) {
  const int64_t taps = cfg.kh * cfg.kw, c0 = p % cfg.channels;
  if (c0 + lanes <= cfg.channels) {
    for (int half = 0; half < lanes / 8; ++half)
      TransposePlanes(cfg.weights.data() + (c0 + 8 * half) * taps, taps, wl + 8 * half, lanes);
    std::memcpy(bl, cfg.bias.data() + c0, sizeof(float) * lanes);
    return;
  }
  for (int64_t l = 0, c = c0; l < lanes; ++l, c = c + 1 < cfg.channels ? c + 1 : 0) {
    for (int64_t t = 0; t < taps; ++t) wl[t * lanes + l] = cfg.weights[c * taps + t];
    bl[l] = cfg.bias[c];
  }
}

// RowSums of `rows` rows of width w, row i's value q at v[(i * w + q) * 8 + lane], per lane.
ECC_INLINE void RowSums8(const float* v, int64_t rows, int64_t w, D8* t, D8* tabs) {
  const int64_t w8 = w - w % 8;
  const D8 dz = {0, 0, 0, 0, 0, 0, 0, 0};
  const sweep::F8 fz = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = v + i * w * 8;
    D8 t0 = dz, t1 = dz;
    if (w8 > 0) {
      for (int l = 0; l < 8; ++l) {  // lane l of the row's 8 float accumulators, then into double
        sweep::F8 a = fz, b = fz;
        for (int64_t q = l; q < w8; q += 8) {
          const sweep::F8 x = sweep::Load8(row + q * 8);
          a += x;
          b += AbsF8(x);
        }
        t0 += ToD8(a);
        t1 += ToD8(b);
      }
    }
    for (int64_t q = w8; q < w; ++q) {
      const sweep::F8 x = sweep::Load8(row + q * 8);
      t0 += ToD8(x);
      t1 += ToD8(AbsF8(x));
    }
    t[i] = t0;
    tabs[i] = t1;
  }
}

// Checks planes p .. p + 7 (small, stride_w <= kSmallStrideW), transposed into xt and yt
// (TransposePlanes); returns a bit per plane whose check failed somewhere (those are left to
// CheckChannel). A column stride above 1 sums each residue class in column order in double, as
// CheckChannel does.
ECC_INLINE unsigned CheckPlanes8(const DepthwiseConfig& cfg, int64_t p, int64_t h, int64_t w, const int64_t* taps,
                                 const float* xt, const float* yt, D8* a, D8* aabs, D8* rows, D8* rows_abs,
                                 D8* actual) {
  const int64_t hout = cfg.OutH(h), wout = cfg.OutW(w);
  const int64_t hp = h + cfg.pad_t + cfg.pad_b;
  const int64_t kh = cfg.kh, kw = cfg.kw;
  const D8 dz = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < hp * kw; ++i) a[i] = aabs[i] = dz;
  const int64_t sw = cfg.stride_w;
  if (sw == 1) RowSums8(xt, h, w, rows, rows_abs);
  D8 cls[kSmallStrideW], clsabs[kSmallStrideW];
  for (int64_t i = 0; i < h; ++i) {
    const float* row = xt + i * w * 8;
    if (sw == 1) {
      cls[0] = rows[i];
      clsabs[0] = rows_abs[i];
    } else {
      for (int64_t r = 0; r < sw; ++r) {
        D8 v = dz, va = dz;
        for (int64_t q = r; q < w; q += sw) {
          const sweep::F8 xq = sweep::Load8(row + q * 8);
          v += ToD8(xq);
          va += ToD8(AbsF8(xq));
        }
        cls[r] = v;
        clsabs[r] = va;
      }
    }
    for (int64_t j = 0; j < kw; ++j) {
      const int64_t r = taps[3 * j], lo_end = taps[3 * j + 1], hi_begin = taps[3 * j + 2];
      D8 v = cls[r], va = clsabs[r];
      for (int64_t q = r; q < lo_end; q += sw) {
        const sweep::F8 xq = sweep::Load8(row + q * 8);
        v -= ToD8(xq);
        va -= ToD8(AbsF8(xq));
      }
      for (int64_t q = hi_begin; q < w; q += sw) {
        const sweep::F8 xq = sweep::Load8(row + q * 8);
        v -= ToD8(xq);
        va -= ToD8(AbsF8(xq));
      }
      a[j * hp + i + cfg.pad_t] = v;
      aabs[j * hp + i + cfg.pad_t] = va;
    }
  }
  RowSums8(yt, hout, wout, actual, rows_abs);  // |y| sums unused
  D8 wv[64], wa[64], bias = dz;
  for (int l = 0; l < 8; ++l) {
    const int64_t c = (p + l) % cfg.channels;
    for (int64_t t = 0; t < kh * kw; ++t) {
      const float f = cfg.weights[c * kh * kw + t];
      wv[t][l] = f;
      wa[t][l] = std::fabs(f);
    }
    bias[l] = cfg.bias[c];
  }
  const D8 e0 = bias * static_cast<double>(wout), b0 = AbsD8(bias) * static_cast<double>(wout);
  const double tol = DepthwiseTolEps(cfg.tolerance);  // as DepthwiseRowHolds
  const int64_t sh = cfg.stride_h, dh = cfg.dil_h;
  L8 bad = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t oh = 0; oh < hout; ++oh) {
    D8 expected = e0, bound = b0;
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t at = j * hp + oh * sh + i * dh;
        expected += wv[i * kw + j] * a[at];
        bound += wa[i * kw + j] * aabs[at];
      }
    bad |= ~(AbsD8(actual[oh] - expected) <= tol * bound);
  }
  unsigned mask = 0;
  for (int l = 0; l < 8; ++l) mask |= static_cast<unsigned>(bad[l] != 0) << l;
  return mask;
}

// One group of kLanes small planes from p: transposes x and y into xt (kLanes * (H W + H_out
// W_out) floats, y's after x's) and runs the float filter on it (scratch fs); returns a bit per
// plane left to the double check (all of them with the filter off). Not inlined, and cloned
// itself: its vectors and pointers get the registers to themselves (inlined into
// DepthwiseCheckPlanes, the transposes' pointers were spilled to the stack).
template <int kLanes>
ECC_CLONES __attribute__((noinline)) unsigned FilterGroup(const DepthwiseConfig& cfg, const dwfilter::Filter& filter,
                                                          int64_t p, const float* x, const float* y, int64_t h,
                                                          int64_t w, float* xt, float* fs) {
  const int64_t plane_in = h * w, plane_out = cfg.OutH(h) * cfg.OutW(w);
  const int64_t hp = h + cfg.pad_t + cfg.pad_b;
  float* yt = xt + kLanes * plane_in;
  for (int half = 0; half < kLanes / 8; ++half) {
    TransposePlanes(x + (p + 8 * half) * plane_in, plane_in, xt + 8 * half, kLanes);
    TransposePlanes(y + (p + 8 * half) * plane_out, plane_out, yt + 8 * half, kLanes);
  }
  if (!filter.on) return (1u << kLanes) - 1;
  float wl[kLanes * 64], bl[kLanes];  // SmallPlanes: at most 64 taps
  LaneWeights(cfg, p, kLanes, wl, bl);
  return dwfilter::FilterPlanes<kLanes>(cfg, filter, wl, bl, xt, yt, h, w, fs, fs + kLanes * cfg.kw * hp,
                                        fs + 2 * kLanes * cfg.kw * hp);
}

// Scratch sizes: hp * kw tap sums and a slack that 8 rows' reads may run into (twice),
// max(H, H_out) row sums (three), stride_w classes (twice).
int64_t Slack(const DepthwiseConfig& cfg) { return 8 * cfg.stride_h; }
size_t ScratchDoubles(const DepthwiseConfig& cfg, int64_t h, int64_t w) {
  const int64_t hp = h + cfg.pad_t + cfg.pad_b, rows = std::max<int64_t>(h, cfg.OutH(h));
  (void)w;
  return static_cast<size_t>(2 * (hp * cfg.kw + Slack(cfg)) + 3 * rows + 2 * cfg.stride_w);
}

ChannelScratch CarveScratch(const DepthwiseConfig& cfg, int64_t h, double* base) {
  const int64_t hp = h + cfg.pad_t + cfg.pad_b, rows = std::max<int64_t>(h, cfg.OutH(h));
  ChannelScratch s;
  s.a = base;
  s.aabs = s.a + hp * cfg.kw + Slack(cfg);
  s.rows = s.aabs + hp * cfg.kw + Slack(cfg);
  for (int64_t i = 0; i < Slack(cfg); ++i) s.a[hp * cfg.kw + i] = s.aabs[hp * cfg.kw + i] = 0.0;
  s.rows_abs = s.rows + rows;
  s.actual = s.rows_abs + rows;
  s.cls = s.actual + rows;
  s.clsabs = s.cls + cfg.stride_w;
  return s;
}

}  // namespace

int64_t DepthwisePlanesPerItem(const DepthwiseConfig& cfg, int64_t h, int64_t w, int64_t planes) {
  const int64_t plane_floats = std::max<int64_t>(1, h * w + 2 * cfg.OutH(h) * cfg.OutW(w));
  int64_t per_item = std::max<int64_t>(1, std::min((16384 + plane_floats - 1) / plane_floats, planes / 64));
  if (SmallPlanes(cfg, h, w)) per_item = (per_item + 15) / 16 * 16;
  return per_item;
}

ECC_CLONES
void DepthwiseCheckPlanes(const DepthwiseConfig& cfg, int64_t p0, int64_t p1, const float* x, int64_t h, int64_t w,
                          const float* y, float* z, const char* verified, DecodeCounts& counts) {
  const int64_t plane_in = h * w, plane_out = cfg.OutH(h) * cfg.OutW(w);
  constexpr size_t kStack = 4096;  // doubles: rows up to ~600 with a 3x3 filter
  double stack[kStack];
  thread_local std::vector<double> heap;  // only for very tall inputs or huge strides
  const size_t need = ScratchDoubles(cfg, h, w);
  double* base = stack;
  if (need > kStack) {
    heap.resize(need);
    base = heap.data();
  }
  ChannelScratch s = CarveScratch(cfg, h, base);
  int64_t taps_stack[3 * 64];
  thread_local std::vector<int64_t> taps_heap;
  int64_t* taps = taps_stack;
  if (cfg.kw > 64) {
    taps_heap.resize(static_cast<size_t>(3 * cfg.kw));
    taps = taps_heap.data();
  }
  TapWindows(cfg, w, taps);
  s.taps = taps;
  int64_t pl = p0;
  if (SmallPlanes(cfg, h, w) && p1 - p0 >= 8) {
    thread_local std::vector<float> ft;
    thread_local std::vector<D8> dt;
    const int64_t hp = h + cfg.pad_t + cfg.pad_b, hout = cfg.OutH(h);
    ft.resize(static_cast<size_t>(8 * (plane_in + plane_out)));
    dt.resize(static_cast<size_t>(2 * hp * cfg.kw + h + std::max(h, hout) + hout));
    D8* a8 = dt.data();
    D8* aabs8 = a8 + hp * cfg.kw;
    D8* rows8 = aabs8 + hp * cfg.kw;
    D8* rows_abs8 = rows8 + h;
    D8* actual8 = rows_abs8 + std::max(h, hout);
    // The float filter first (depthwise_filter.h); the double check only for the eights of planes
    // it leaves. Sixteen planes at a time on planes up to 16 wide (faster there, slower on
    // wider ones: measured at 7x7, 14x14 and 28x28).
    const dwfilter::Filter filter = dwfilter::MakeFilter(cfg, w);
    const bool by16 = filter.on && cfg.OutW(w) <= 16;
    thread_local std::vector<float> fs, ft16;
    if (filter.on) fs.resize(static_cast<size_t>((by16 ? 16 : 8) * (2 * cfg.kw + 1) * hp));
    if (by16) ft16.resize(static_cast<size_t>(16 * (plane_in + plane_out)));
    // The output first, in one pass: a copy fused into Y's transposes measured slower at 14x14
    // in kernel_bandwidth.py (0.38-0.48 of a copy against 0.44-0.68; Z written in scattered
    // pieces of eight planes while cold).
    if (cfg.relu) {
      ECC_IVDEP
      for (int64_t i = (p1 - p0 - (p1 - p0) % 8) * plane_out, e = 0; e < i; ++e)
        z[p0 * plane_out + e] = y[p0 * plane_out + e] > 0.f ? y[p0 * plane_out + e] : 0.f;
    } else {
      std::memcpy(z + p0 * plane_out, y + p0 * plane_out, sizeof(float) * (p1 - p0 - (p1 - p0) % 8) * plane_out);
    }
    float* xt = ft.data();
    float* yt = ft.data() + 8 * plane_in;
    while (pl + 8 <= p1) {
      const int n = by16 && pl + 16 <= p1 ? 16 : 8;
      unsigned unsure = 0xffu;   // bit l: plane pl + l left to the double check
      bool transposed8 = false;  // whether xt, yt hold planes pl .. pl + 7
      if (n == 16) {
        unsure = FilterGroup<16>(cfg, filter, pl, x, y, h, w, ft16.data(), fs.data());
      } else {
        unsure = FilterGroup<8>(cfg, filter, pl, x, y, h, w, xt, fs.data());
        transposed8 = true;
      }
      for (int half = 0; half < n / 8; ++half, pl += 8) {
        unsigned bad = 0;
        if (unsure >> (8 * half) & 0xffu) {
          if (!transposed8) {
            TransposePlanes(x + pl * plane_in, plane_in, xt);
            TransposePlanes(y + pl * plane_out, plane_out, yt);
          }
          bad = CheckPlanes8(cfg, pl, h, w, taps, xt, yt, a8, aabs8, rows8, rows_abs8, actual8);
        }
        // The planes that passed are counted at once; only the failing ones are visited.
        counts.vectors += (8 - __builtin_popcount(bad)) * hout;
        for (unsigned m = bad; m != 0; m &= m - 1) {
          const int64_t q = pl + __builtin_ctz(m), c = q % cfg.channels;
          CheckChannel(cfg, c, x + q * plane_in, h, w, y + q * plane_out, z + q * plane_out, verified[c] != 0, counts,
                       s);
        }
      }
    }
  }
  for (; pl < p1; ++pl) {
    const int64_t c = pl % cfg.channels;
    CheckChannel(cfg, c, x + pl * plane_in, h, w, y + pl * plane_out, z + pl * plane_out, verified[c] != 0, counts, s);
  }
}

void DepthwiseCheckChannel(const DepthwiseConfig& cfg, int64_t c, const float* x, int64_t h, int64_t w,
                           const float* y, float* z, bool verified, DecodeCounts& counts) {
  std::vector<double> scratch(ScratchDoubles(cfg, h, w));
  std::vector<int64_t> taps(static_cast<size_t>(3 * cfg.kw));
  TapWindows(cfg, w, taps.data());
  ChannelScratch s = CarveScratch(cfg, h, scratch.data());
  s.taps = taps.data();
  CheckChannel(cfg, c, x, h, w, y, z, verified, counts, s);
}

}  // namespace onnx_ecc
