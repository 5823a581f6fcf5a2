// CUDA kernels of the onnx-ecc ops: the same maths as the CPU kernels, from the per-op headers of
// custom_ops/include/onnx_ecc/. device_math.cuh turns a thread's index into its item of that
// maths, exercised on the host too (host_emulation.cc); the kernels only map threads to items.
//
// Decode: one thread per code vector (outer, inner position, group, block), inner position
// fastest so that a warp reads consecutive addresses of each channel. In one sweep it takes the
// block's largest finite |value| (the scale with scale='output'), computes the checks in float,
// and writes act(data + R) into Z; when a check fails it re-checks in double (DecodeBlock's
// first step), and a vector still failing (or holding a non-finite value) is appended to a flag
// list. A second kernel with a
// fixed number of threads (each with its own scratch in global memory, so no large per-thread
// stacks) runs the exact DecodeBlock on every flagged vector and rewrites its data channels.
// The flag list has room for every vector, so nothing is ever dropped.
#include "kernels.cuh"
#include "device_math.cuh"

#include <cfloat>
#include <cmath>
#include <cstring>

namespace onnx_ecc {
namespace cuda {
using namespace device;
namespace {

constexpr int kThreads = 256;

int64_t Blocks(int64_t items, int64_t threads, int64_t cap = (int64_t{1} << 30)) {
  int64_t b = (items + threads - 1) / threads;
  return b < 1 ? 1 : (b > cap ? cap : b);
}

// ---- max |x| --------------------------------------------------------------------------------

__global__ void MaxAbsKernel(const float* x, int64_t len, int finite_only, float* out) {
  const float* p = x + static_cast<int64_t>(blockIdx.x) * len;
  float m = 0.f;
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; i < len;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const float a = fabsf(p[i]);
    if (finite_only && !isfinite(a)) continue;
    m = a > m ? a : m;  // NaN compares false and is skipped
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float t = __shfl_down_sync(0xffffffffu, m, off);
    m = t > m ? t : m;
  }
  __shared__ float warp_max[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) m = warp_max[w] > m ? warp_max[w] : m;
    // Non-negative floats order as their bit patterns (+inf above every finite value).
    atomicMax(reinterpret_cast<unsigned int*>(out + blockIdx.x), FloatBits(m));
  }
}

// ---- Decode ---------------------------------------------------------------------------------

__global__ void CheckKernel(DecodeParams p, const float* y, const float* res, float* z, const float* xmax,
                            bool per_outer, int64_t units, unsigned long long* flags, unsigned long long* flag_count) {
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Vec v = Locate(p, y, res, z, u);
    if (CheckVector(p, v, XMax(xmax, per_outer, v.o))) flags[AtomicAdd64(flag_count, 1)] = static_cast<unsigned long long>(u);
  }
}

__global__ void CorrectKernel(DecodeParams p, const float* y, const float* res, float* z, const float* xmax,
                              bool per_outer, const unsigned long long* flags, const unsigned long long* flag_count,
                              char* scratch, size_t slot_bytes, unsigned long long* totals,
                              unsigned long long* run_unc) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nflags = static_cast<int64_t>(*flag_count);
  if (t >= nflags) return;
  const BlockScratch s = CarveBlockScratch(scratch + t * slot_bytes, p.block, p.parity);
  DecodeCounts c;
  for (int64_t f = t; f < nflags; f += nthreads)
    CorrectVector(p, y, res, z, xmax, per_outer, static_cast<int64_t>(flags[f]), s, c);
  AddCounts(c, totals, run_unc);
}

// ---- DepthwiseCheck -------------------------------------------------------------------------

__global__ void RowSumsKernel(DepthwiseParams p, const float* x, int64_t units, double* a, double* aabs) {
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x)
    RowSums(p, x, u, a, aabs);
}

__global__ void CheckRowsKernel(DepthwiseParams p, const float* x, const float* y, float* z, const double* a,
                                const double* aabs, int64_t units, unsigned long long* totals,
                                unsigned long long* run_unc) {
  DecodeCounts c;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x)
    CheckRow(p, x, y, z, a, aabs, u, c);
  AddCounts(c, totals, run_unc);
}

// ---- InjectFault ----------------------------------------------------------------------------

__global__ void InjectSequentialKernel(InjectParams p, float* y, int64_t n, uint64_t state, double rate,
                                       const float* range_ws, unsigned long long* totals) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const int64_t faults = InjectSequential(p, y, n, state, rate, range_ws);
    if (faults) AtomicAdd64(totals + kFlagged, static_cast<unsigned long long>(faults));
  }
}

__global__ void InjectAllKernel(InjectParams p, float* y, int64_t n, uint64_t state0, const float* range_ws) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    InjectAllOne(p, y, i, state0, range_ws);
}

// ---- ParityCheck -----------------------------------------------------------------------------

// One thread per vector and block, inner position fastest (a warp reads consecutive addresses
// of each channel), grid-stride; the exact double-precision test of parity_check.h.
__global__ void ParityCheckKernel(ParityCheckParams p, const float* y, const float* pp, int64_t units,
                                  unsigned long long* totals, unsigned long long* run_failed) {
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!ParityVectorHolds(p, y, pp, u)) {
      AtomicAdd64(totals + kFlagged, 1);
      AtomicAdd64(run_failed, 1);
    }
  }
}

__global__ void ParityRaisedKernel(const bool* flag, const unsigned long long* run_failed, bool* raised) {
  raised[0] = (flag != nullptr && flag[0]) || *run_failed > 0;
}

// ---- SampleCheck ----------------------------------------------------------------------------

// Per sample, the largest finite |value| of its pairs, as ordered bits of a non-negative float.
__global__ void SampleScaleKernel(SampleCheckParams p, const float* a, const float* y, const float* r, int64_t units,
                                  unsigned int* scale_bits) {
  const int64_t per = p.channels * p.hw;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float m = SampleMagnitude(p, a, y, r, u);
    if (m > 0.f) atomicMax(scale_bits + u / per, FloatBits(m));
  }
}

__global__ void SampleFailKernel(SampleCheckParams p, const float* a, const float* y, const float* r, int64_t units,
                                 const unsigned int* scale_bits, unsigned long long* failed) {
  const int64_t per = p.channels * p.hw;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (SampleElementFails(p, a, y, r, u, BitsFloat(scale_bits[u / per]))) AtomicAdd64(failed + u / per, 1);
}

__global__ void SampleParityKernel(SampleCheckParams p, const float* y, int64_t units, unsigned long long* failed) {
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (!SampleParityHolds(p, y, u)) AtomicAdd64(failed + u / (p.num_blocks * p.hw), 1);
}

__global__ void SampleFilterKernel(SampleCheckParams p, const float* w, const float* bias, unsigned long long* bad) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < p.channels;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (!SampleFilterHolds(p, w, bias, c)) AtomicAdd64(bad, 1);
}

// One thread: the samples that fail (all of them after a corrupted filter), counted; Raised.
__global__ void SampleRaisedKernel(SampleCheckParams p, const unsigned long long* failed, const unsigned long long* bad,
                                   const bool* flag, bool* raised, unsigned long long* totals,
                                   unsigned long long* run_failed) {
  unsigned long long count = 0;
  for (int64_t n = 0; n < p.samples; ++n) count += (*bad > 0 || failed[n] > 0) ? 1 : 0;
  if (count) {
    AtomicAdd64(totals + kFlagged, count);
    AtomicAdd64(run_failed, count);
  }
  raised[0] = (flag != nullptr && flag[0]) || count > 0;
}

// ---- IntDecode / Int32Decode ------------------------------------------------------------------

// One thread per block of the layer's bias (few): checks and repairs the device copy in place.
__global__ void IntBiasKernel(IntDecodeParams p, int32_t* bias, int64_t* bias_parity, unsigned long long* totals,
                              unsigned long long* run_unc) {
  DecodeCounts c;
  for (int64_t kb = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; kb < p.code.blocks();
       kb += static_cast<int64_t>(gridDim.x) * blockDim.x)
    IntBiasBlock(p.code, bias, bias_parity, kb, c);
  AddCounts(c, totals, run_unc);
}

// One thread per code block of Y, inner position fastest (NCHW Int32Decode reads coalesced).
__global__ void IntDecodeKernel(IntDecodeParams p, const int32_t* y, void* z, int64_t units,
                                unsigned long long* totals, unsigned long long* run_unc) {
  DecodeCounts c;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x)
    IntDecodeItem(p, y, z, u, c);
  AddCounts(c, totals, run_unc);
}

// ---- Im2ColNhwc ---------------------------------------------------------------------------------

__global__ void Im2ColKernel(Im2ColShape q, const uint8_t* x, uint8_t* y, int64_t units) {
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[u] = Im2ColByte(q, x, u);
}

// ---- IntSampleCheck -----------------------------------------------------------------------------

__global__ void IntSampleRowsKernel(IntSampleParams p, const uint8_t* a, const uint8_t* y, int64_t units,
                                    unsigned long long* failed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < units;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (IntSampleRowFails(p, a, y, i)) AtomicAdd64(failed, 1);
}

// One thread per output channel (by columns: a warp reads consecutive channels of a row).
__global__ void IntSampleFilterKernel(IntSampleParams p, const int8_t* w, const int32_t* bias,
                                      unsigned long long* bad) {
  for (int64_t ch = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; ch < p.channels;
       ch += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (IntSampleFilterFails(p, w, bias, ch)) AtomicAdd64(bad, 1);
}

// One thread: the rows failed (every row after a corrupted filter), counted; Raised.
__global__ void IntSampleRaisedKernel(int64_t rows, const unsigned long long* failed, const unsigned long long* bad,
                                      const bool* flag, bool* raised, unsigned long long* totals,
                                      unsigned long long* run_failed) {
  const unsigned long long count = *bad > 0 ? static_cast<unsigned long long>(rows) : *failed;
  if (count) {
    AtomicAdd64(totals + kFlagged, count);
    AtomicAdd64(run_failed, count);
  }
  raised[0] = (flag != nullptr && flag[0]) || count > 0;
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------

cudaError_t LaunchMaxAbs(const float* x, int64_t n, int64_t outer, bool finite_only, float* out, cudaStream_t stream) {
  const bool chunked = outer > 0 && n % outer == 0;
  const int64_t nout = chunked ? outer : 1;
  const int64_t len = chunked ? n / outer : n;
  cudaError_t e = cudaMemsetAsync(out, 0, sizeof(float) * nout, stream);
  if (e != cudaSuccess || len == 0 || nout == 0) return e;
  // Enough blocks per chunk to fill the device when there are few chunks.
  int64_t splits = Blocks(len, kThreads * 8, 64);
  if (nout >= 256) splits = 1;
  if (nout > 0x7fffffff) return cudaErrorInvalidValue;
  dim3 grid(static_cast<unsigned>(nout), static_cast<unsigned>(splits));
  MaxAbsKernel<<<grid, kThreads, 0, stream>>>(x, len, finite_only ? 1 : 0, out);
  return cudaGetLastError();
}

int DecodeCorrectionThreads(const DecodeParams& p) {
  constexpr size_t kBudget = size_t{8} << 20;  // scratch of the exact step per Decode node, bytes
  const size_t slot = BlockScratchBytes(p.block, p.parity);
  int64_t t = static_cast<int64_t>(kBudget / slot);
  t = t > 16384 ? 16384 : t;
  t = t / 128 * 128;
  return static_cast<int>(t < 128 ? 128 : t);
}

size_t DecodeScratchBytes(const DecodeParams& p) {
  return static_cast<size_t>(DecodeCorrectionThreads(p)) * BlockScratchBytes(p.block, p.parity);
}

cudaError_t LaunchDecode(const DecodeParams& p, const float* y, const float* residual, float* z, const float* xmax,
                         bool xmax_per_outer, unsigned long long* flags, unsigned long long* flag_count, void* scratch,
                         unsigned long long* totals, unsigned long long* run_uncorrectable, cudaStream_t stream) {
  const int64_t units = DecodeVectors(p);
  if (units == 0) return cudaSuccess;
  if (p.scale_output) xmax = nullptr;  // the scale comes from each vector's own values
  cudaError_t e = cudaMemsetAsync(flag_count, 0, sizeof(unsigned long long), stream);
  if (e != cudaSuccess) return e;
  CheckKernel<<<static_cast<unsigned>(Blocks(units, kThreads)), kThreads, 0, stream>>>(
      p, y, residual, z, xmax, xmax_per_outer, units, flags, flag_count);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  // A fixed-size launch: it reads the number of flagged vectors on the device (no host sync)
  // and its threads exit at once when there are none.
  const int threads = DecodeCorrectionThreads(p);
  CorrectKernel<<<threads / 128, 128, 0, stream>>>(p, y, residual, z, xmax, xmax_per_outer, flags, flag_count,
                                                   static_cast<char*>(scratch), BlockScratchBytes(p.block, p.parity),
                                                   totals, run_uncorrectable);
  return cudaGetLastError();
}

size_t DepthwiseWorkspaceBytes(const DepthwiseParams& p) {
  return static_cast<size_t>(2 * p.n * p.channels * (p.h + p.pad_t + p.pad_b) * p.kw) * sizeof(double);
}

cudaError_t LaunchDepthwise(const DepthwiseParams& p, const float* x, const float* y, float* z, void* workspace,
                            unsigned long long* totals, unsigned long long* run_uncorrectable, cudaStream_t stream) {
  const int64_t sums = p.n * p.channels * (p.h + p.pad_t + p.pad_b) * p.kw;
  const int64_t rows = p.n * p.channels * p.hout;
  if (rows == 0) return cudaSuccess;
  double* a = static_cast<double*>(workspace);
  double* aabs = a + sums;
  if (sums > 0) {
    RowSumsKernel<<<static_cast<unsigned>(Blocks(sums, kThreads)), kThreads, 0, stream>>>(p, x, sums, a, aabs);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  CheckRowsKernel<<<static_cast<unsigned>(Blocks(rows, kThreads, 4096)), kThreads, 0, stream>>>(
      p, x, y, z, a, aabs, rows, totals, run_uncorrectable);
  return cudaGetLastError();
}

cudaError_t LaunchInject(const InjectParams& p, const float* x, float* y, int64_t n, uint64_t seed, double rate,
                         float* range_ws, unsigned long long* totals, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = cudaSuccess;
  if (x != y && (e = cudaMemcpyAsync(y, x, sizeof(float) * n, cudaMemcpyDeviceToDevice, stream)) != cudaSuccess) return e;
  const uint64_t state = InjectStartState(seed, p.site);
  const bool any = p.count > 0 || rate > 0;
  if (!any) return cudaSuccess;
  if (p.kind == 1 && (e = LaunchMaxAbs(x, n, 1, true, range_ws, stream)) != cudaSuccess) return e;
  if (p.count == 0 && rate >= 1) {
    InjectAllKernel<<<static_cast<unsigned>(Blocks(n, kThreads)), kThreads, 0, stream>>>(p, y, n, state, range_ws);
  } else {
    InjectSequentialKernel<<<1, 1, 0, stream>>>(p, y, n, state, rate, range_ws, totals);
  }
  return cudaGetLastError();
}

cudaError_t LaunchParityCheck(const ParityCheckParams& p, const float* y, const float* pp, const bool* flag,
                              bool* raised, unsigned long long* totals, unsigned long long* run_failed,
                              cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(run_failed, 0, sizeof(unsigned long long), stream);
  if (e != cudaSuccess) return e;
  const int64_t units = p.outer * p.inner * p.num_blocks;
  if (units > 0) {
    ParityCheckKernel<<<static_cast<unsigned>(Blocks(units, kThreads, 65536)), kThreads, 0, stream>>>(p, y, pp, units,
                                                                                                    totals, run_failed);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  ParityRaisedKernel<<<1, 1, 0, stream>>>(flag, run_failed, raised);
  return cudaGetLastError();
}

size_t SampleCheckWorkspaceBytes(const SampleCheckParams& p) {
  return static_cast<size_t>((p.samples + 1) / 2 * 2) * sizeof(unsigned int) +
         static_cast<size_t>(p.samples + 1) * sizeof(unsigned long long);
}

cudaError_t LaunchSampleCheck(const SampleCheckParams& p, const float* a, const float* y, const float* w,
                              const float* r, const float* bias, const bool* flag, bool* raised, void* workspace,
                              unsigned long long* totals, unsigned long long* run_failed, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(workspace, 0, SampleCheckWorkspaceBytes(p), stream);
  if (e != cudaSuccess || (e = cudaMemsetAsync(run_failed, 0, sizeof(unsigned long long), stream)) != cudaSuccess)
    return e;
  auto* scale_bits = static_cast<unsigned int*>(workspace);
  auto* failed = reinterpret_cast<unsigned long long*>(scale_bits + (p.samples + 1) / 2 * 2);
  auto* bad = failed + p.samples;
  const int64_t units = p.samples * p.channels * p.hw;
  if (units > 0) {
    const unsigned blocks = static_cast<unsigned>(Blocks(units, kThreads, 65536));
    SampleScaleKernel<<<blocks, kThreads, 0, stream>>>(p, a, y, r, units, scale_bits);
    SampleFailKernel<<<blocks, kThreads, 0, stream>>>(p, a, y, r, units, scale_bits, failed);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  const int64_t vectors = p.samples * p.num_blocks * p.hw;
  if (p.parity > 0 && vectors > 0) {
    SampleParityKernel<<<static_cast<unsigned>(Blocks(vectors, kThreads, 65536)), kThreads, 0, stream>>>(p, y, vectors,
                                                                                                       failed);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (w && p.channels > 0) {
    SampleFilterKernel<<<static_cast<unsigned>(Blocks(p.channels, kThreads)), kThreads, 0, stream>>>(p, w, bias, bad);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  SampleRaisedKernel<<<1, 1, 0, stream>>>(p, failed, bad, flag, raised, totals, run_failed);
  return cudaGetLastError();
}

cudaError_t LaunchIntDecode(const IntDecodeParams& p, const int32_t* y, void* z, int32_t* bias, int64_t* bias_parity,
                            unsigned long long* totals, unsigned long long* run_uncorrectable, cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  if (bias_parity) {
    IntBiasKernel<<<static_cast<unsigned>(Blocks(p.code.blocks(), kThreads)), kThreads, 0, stream>>>(
        p, bias, bias_parity, totals, run_uncorrectable);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  const int64_t units = IntDecodeVectors(p);
  if (units == 0) return cudaSuccess;
  IntDecodeKernel<<<static_cast<unsigned>(Blocks(units, kThreads, 65536)), kThreads, 0, stream>>>(
      p, y, z, units, totals, run_uncorrectable);
  return cudaGetLastError();
}

cudaError_t LaunchIm2Col(const Im2ColShape& q, const uint8_t* x, uint8_t* y, cudaStream_t stream) {
  const int64_t units = q.Elements();
  if (units == 0) return cudaSuccess;
  Im2ColKernel<<<static_cast<unsigned>(Blocks(units, kThreads, 65536)), kThreads, 0, stream>>>(q, x, y, units);
  return cudaGetLastError();
}

size_t IntSampleWorkspaceBytes() { return 2 * sizeof(unsigned long long); }

cudaError_t LaunchIntSampleCheck(const IntSampleParams& p, const uint8_t* a, const uint8_t* y, const int8_t* w,
                                 const int32_t* bias, const bool* flag, bool* raised, void* workspace,
                                 unsigned long long* totals, unsigned long long* run_failed, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(workspace, 0, IntSampleWorkspaceBytes(), stream);
  if (e != cudaSuccess || (e = cudaMemsetAsync(run_failed, 0, sizeof(unsigned long long), stream)) != cudaSuccess)
    return e;
  auto* failed = static_cast<unsigned long long*>(workspace);
  auto* bad = failed + 1;
  const int64_t rows = p.outer * p.y_rows;
  if (rows > 0 && p.row > 0) {
    IntSampleRowsKernel<<<static_cast<unsigned>(Blocks(rows, kThreads, 65536)), kThreads, 0, stream>>>(p, a, y, rows,
                                                                                                      failed);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (w && p.channels > 0) {
    IntSampleFilterKernel<<<static_cast<unsigned>(Blocks(p.channels, kThreads)), kThreads, 0, stream>>>(p, w, bias,
                                                                                                      bad);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  IntSampleRaisedKernel<<<1, 1, 0, stream>>>(rows, failed, bad, flag, raised, totals, run_failed);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace onnx_ecc
