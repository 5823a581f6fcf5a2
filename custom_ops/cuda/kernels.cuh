// CUDA kernels of the onnx-ecc ops. This header sees only raw device pointers, sizes, small POD
// configs and a cudaStream_t: no onnxruntime types (the ORT wrapper is ort_cuda_ops.cc).
//
// Counts: every launcher adds what it finds to `totals`, four cumulative device counters
// [flagged, corrected_blocks, corrected_values, uncorrectable] that are never reset (the host
// folds their growth into LayerCounters lazily), and, when `run_uncorrectable` is not null, adds
// the uncorrectable count of this run to it (for fail_stop, which the host then reads back).
// Every launcher only enqueues work on `stream` and returns the launch status.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernel_params.h"

namespace onnx_ecc {
namespace cuda {

// ---- Decode -------------------------------------------------------------------------------

// Threads of the exact-correction step and the device scratch they need, in bytes.
int DecodeCorrectionThreads(const DecodeParams& p);
size_t DecodeScratchBytes(const DecodeParams& p);

// Largest |x| of each of `outer` contiguous chunks of x into out[outer] (out[0] only, of all
// of x, when n is not a multiple of outer); non-finite values are skipped when finite_only,
// otherwise NaN is skipped and an infinite maximum becomes FLT_MAX (as ChunkMaxAbs).
cudaError_t LaunchMaxAbs(const float* x, int64_t n, int64_t outer, bool finite_only, float* out,
                         cudaStream_t stream);

// Decodes y into z = act(corrected data + residual), as DecodeVectors. residual: device, the shape
// of z, or null. xmax (scale_output = 0 only; ignored otherwise): device, max|X| per outer index
// (xmax_per_outer) or one for all; null means 1. flags: DecodeVectors(p) slots; flag_count: one
// device counter (zeroed here, on the stream); scratch: DecodeScratchBytes(p) bytes.
cudaError_t LaunchDecode(const DecodeParams& p, const float* y, const float* residual, float* z, const float* xmax,
                         bool xmax_per_outer, unsigned long long* flags, unsigned long long* flag_count, void* scratch,
                         unsigned long long* totals, unsigned long long* run_uncorrectable, cudaStream_t stream);

// ---- DepthwiseCheck -----------------------------------------------------------------------

size_t DepthwiseWorkspaceBytes(const DepthwiseParams& p);
cudaError_t LaunchDepthwise(const DepthwiseParams& p, const float* x, const float* y, float* z, void* workspace,
                            unsigned long long* totals, unsigned long long* run_uncorrectable, cudaStream_t stream);

// ---- ParityCheck --------------------------------------------------------------------------

// Tests every (outer, block, inner) vector with ParityBlockHoldsExact (parity_check.h): each
// failing one adds 1 to totals[kFlagged] and to run_failed (zeroed here, on the stream); then
// raised[0] = flag[0] (flag: device bool, or null) || run_failed > 0. All on the device.
cudaError_t LaunchParityCheck(const ParityCheckParams& p, const float* y, const float* pp, const bool* flag,
                              bool* raised, unsigned long long* totals, unsigned long long* run_failed,
                              cudaStream_t stream);

// ---- SampleCheck --------------------------------------------------------------------------

// Per sample: the pairs of A and act(Y + R) (SampleMismatches' rule), Y's parity vectors
// (ParityBlockHoldsExact) and, with w (device, [channels, row]; bias device or null), the filter
// sums; each failing sample (every sample after a failed filter sum) adds 1 to totals[kFlagged]
// and to run_failed (zeroed here); raised[0] = flag[0] (device bool, or null) || any failed.
// workspace: SampleCheckWorkspaceBytes(p) bytes.
size_t SampleCheckWorkspaceBytes(const SampleCheckParams& p);
cudaError_t LaunchSampleCheck(const SampleCheckParams& p, const float* a, const float* y, const float* w,
                              const float* r, const float* bias, const bool* flag, bool* raised, void* workspace,
                              unsigned long long* totals, unsigned long long* run_failed, cudaStream_t stream);

// ---- InjectFault --------------------------------------------------------------------------

// Copies x into y and corrupts y exactly as InjectFaults (inject_fault.cc) does for the same
// seed and site. range_ws: one device float. The number of faults is added to totals[kFlagged].
cudaError_t LaunchInject(const InjectParams& p, const float* x, float* y, int64_t n, uint64_t seed, double rate,
                         float* range_ws, unsigned long long* totals, cudaStream_t stream);

// ---- IntDecode / Int32Decode ----------------------------------------------------------------

// With bias_parity (device, per block and check; or null): first checks the device bias
// (p.code.bias, = bias) against it and repairs it in place (IntBiasBlock, one thread per block),
// then checks, corrects and writes every code block of y into z (uint8 with p.requantise, else
// int32), one thread per (outer, block, inner position). Counts go to totals (and the run's
// uncorrectable to run_uncorrectable when not null).
cudaError_t LaunchIntDecode(const IntDecodeParams& p, const int32_t* y, void* z, int32_t* bias, int64_t* bias_parity,
                            unsigned long long* totals, unsigned long long* run_uncorrectable, cudaStream_t stream);

// ---- Im2ColNhwc ------------------------------------------------------------------------------

// y[N, Ho, Wo, kh*kw*C] from x[N, H, W, C] (Im2ColByte), one thread per output byte.
cudaError_t LaunchIm2Col(const Im2ColShape& q, const uint8_t* x, uint8_t* y, cudaStream_t stream);

// ---- IntSampleCheck --------------------------------------------------------------------------

// Rows of y that differ from their row of a (IntSampleRowDiffers) and, with w (device; bias device
// or null), the channels whose filter sums fail; the rows failed (all of them after a failed
// filter sum) are added to totals[kFlagged] and to run_failed (zeroed here); raised[0] = flag[0]
// (device bool, or null) || any failed. workspace: IntSampleWorkspaceBytes() bytes.
size_t IntSampleWorkspaceBytes();
cudaError_t LaunchIntSampleCheck(const IntSampleParams& p, const uint8_t* a, const uint8_t* y, const int8_t* w,
                                 const int32_t* bias, const bool* flag, bool* raised, void* workspace,
                                 unsigned long long* totals, unsigned long long* run_failed, cudaStream_t stream);

}  // namespace cuda
}  // namespace onnx_ecc
