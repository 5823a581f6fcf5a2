// Thin onnxruntime wrappers of the CUDA kernels (kernels.cu): the kernel structs of the op table's
// CUDA column (op_table.h), with the same names, inputs, attributes and validation as the CPU ops
// (ort_attrs.h), registered for CUDAExecutionProvider by GpuOps, running on
// onnxruntime's compute stream with inputs and outputs in device memory. Every failure becomes
// an ORT status; nothing here touches the GPU before a kernel's first Compute, so registering
// the ops works on machines without CUDA.
//
// Counts without a synchronisation: each kernel keeps four cumulative counters in device memory
// that its CUDA kernels add to atomically. After its launches, Compute enqueues a copy of them
// into pinned host memory and records an event; the next Compute (cudaEventQuery, no wait) or a
// read/reset of the counters (through the flusher hook of counters.h, which waits on the event,
// long complete by then in practice) folds their growth into LayerCounters. Runs and vectors are
// known on the host and added at once. fail_stop needs this run's count before returning, so
// only kernels with fail_stop=1 synchronise their stream.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels.cuh"
#include "onnxruntime_cxx_api.h"
#include "onnx_ecc/counters.h"
#include "onnx_ecc/ort_attrs.h"
#include "onnx_ecc/ort_glue.h"

namespace onnx_ecc {
namespace {

#define ECC_CUDA_TRY(expr)                                                                          \
  do {                                                                                              \
    const cudaError_t e_ = (expr);                                                                  \
    if (e_ != cudaSuccess) return Error(ORT_FAIL, name, std::string(#expr) + ": " + cudaGetErrorString(e_)); \
  } while (0)

// A device buffer that grows on demand (growth is rare: the first run of a larger shape).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  ~DeviceBuffer() { if (ptr) cudaFree(ptr); }
  cudaError_t Reserve(size_t need, cudaStream_t stream) {
    if (need <= bytes) return cudaSuccess;
    if (ptr) {
      cudaError_t e = cudaStreamSynchronize(stream);  // earlier launches may still use it
      if (e != cudaSuccess) return e;
      cudaFree(ptr);
      ptr = nullptr;
      bytes = 0;
    }
    cudaError_t e = cudaMalloc(&ptr, need);
    if (e == cudaSuccess) bytes = need;
    else ptr = nullptr;
    return e;
  }
  template <typename T> T* as() const { return static_cast<T*>(ptr); }
};

// Per kernel: the cumulative device counters, their pinned host snapshot, the ordering event,
// and the mutex that serialises the kernel's Compute calls (they share workspaces).
class GpuKernelBase {
 public:
  std::mutex mu;
  LayerCounters* counters_ = nullptr;  // where the device counts are folded

  GpuKernelBase() { AddCountsFlusher(&FlushCallback, this); }
  virtual ~GpuKernelBase() {
    RemoveCountsFlusher(&FlushCallback, this);  // waits for a running flush
    std::lock_guard<std::mutex> lock(mu);
    FoldBlocking();
    if (event_) cudaEventDestroy(event_);
    if (host_) cudaFreeHost(host_);
    if (dev_) cudaFree(dev_);
  }

 protected:
  // Device: [0..3] cumulative totals, [4] this run's uncorrectable (fail_stop), [5] flag count.
  unsigned long long* totals() const { return dev_; }
  unsigned long long* run_uncorrectable() const { return dev_ + 4; }
  unsigned long long* flag_count() const { return dev_ + 5; }

  // Allocates the counters on the current device (first Compute), notes where their counts go,
  // and orders this Compute after the previous one's work even if onnxruntime hands us another
  // stream.
  cudaError_t Begin(cudaStream_t stream, LayerCounters* counters) {
    counters_ = counters;
    cudaError_t e;
    if (!dev_) {
      void* d = nullptr;
      if ((e = cudaMalloc(&d, 6 * sizeof(unsigned long long))) != cudaSuccess) return e;
      if ((e = cudaMemsetAsync(d, 0, 6 * sizeof(unsigned long long), stream)) != cudaSuccess) { cudaFree(d); return e; }
      dev_ = static_cast<unsigned long long*>(d);
    }
    if (!host_) {
      void* h = nullptr;
      if ((e = cudaHostAlloc(&h, 5 * sizeof(unsigned long long), cudaHostAllocDefault)) != cudaSuccess) return e;
      host_ = static_cast<unsigned long long*>(h);
      std::fill(host_, host_ + 5, 0ull);
    }
    if (!event_ && (e = cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)) != cudaSuccess) {
      event_ = nullptr;
      return e;
    }
    return recorded_ ? cudaStreamWaitEvent(stream, event_, 0) : cudaSuccess;
  }

  // After the launches: folds a completed snapshot without waiting, then enqueues a new one.
  // With fail_stop, also copies this run's uncorrectable count and waits for it (returned).
  cudaError_t End(cudaStream_t stream, bool fail_stop, unsigned long long* run_unc) {
    if (pending_ && cudaEventQuery(event_) == cudaSuccess) Fold();
    cudaError_t e;
    if (fail_stop && (e = cudaMemcpyAsync(host_ + 4, run_uncorrectable(), sizeof(unsigned long long),
                                          cudaMemcpyDeviceToHost, stream)) != cudaSuccess)
      return e;
    if ((e = cudaMemcpyAsync(host_, totals(), 4 * sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream)) != cudaSuccess)
      return e;
    if ((e = cudaEventRecord(event_, stream)) != cudaSuccess) return e;
    pending_ = recorded_ = true;
    if (fail_stop) {
      if ((e = cudaEventSynchronize(event_)) != cudaSuccess) return e;
      Fold();
      *run_unc = host_[4];
    }
    return cudaSuccess;
  }

 private:
  unsigned long long* dev_ = nullptr;
  unsigned long long* host_ = nullptr;  // pinned snapshot of totals, then run_uncorrectable
  unsigned long long folded_[4] = {0, 0, 0, 0};
  cudaEvent_t event_ = nullptr;
  bool pending_ = false, recorded_ = false;

  void Fold() {
    pending_ = false;
    if (!counters_) return;
    std::atomic<int64_t>* dst[4] = {&counters_->flagged, &counters_->corrected_blocks, &counters_->corrected_values,
                                    &counters_->uncorrectable};
    for (int i = 0; i < 4; ++i) {
      if (host_[i] > folded_[i]) {
        dst[i]->fetch_add(static_cast<int64_t>(host_[i] - folded_[i]), std::memory_order_relaxed);
        folded_[i] = host_[i];
      }
    }
  }
  void FoldBlocking() {
    if (pending_ && cudaEventSynchronize(event_) == cudaSuccess) Fold();
  }
  static void FlushCallback(void* arg) {
    auto* k = static_cast<GpuKernelBase*>(arg);
    std::lock_guard<std::mutex> lock(k->mu);
    k->FoldBlocking();
  }
};

template <typename T>
cudaError_t Upload(DeviceBuffer& buf, const std::vector<T>& v, cudaStream_t stream) {
  cudaError_t e = buf.Reserve(std::max<size_t>(v.size(), 1) * sizeof(T), stream);
  if (e != cudaSuccess || v.empty()) return e;
  return cudaMemcpyAsync(buf.ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream);
}

OrtStatusPtr UncorrectableError(const std::string& name, unsigned long long n, const char* what) {
  return Error(ORT_FAIL, name, "uncorrectable error: " + std::to_string(n) + " " + what + " failed their checks");
}

}  // namespace

// ---- the kernel structs of the op table's CUDA column: Decode -----------------------------

struct DecodeCudaKernel : DecodeAttrs, GpuKernelBase {
  DeviceBuffer generator, gain, offset, xmax, flags, scratch, er_count, er_pos, marks;
  bool uploaded = false;
  // Known erasures on the device: the snapshot uploaded last (null: none). Learning marks of a
  // run come back with an event and are folded into the learner by a later Compute (no sync):
  // on the GPU a run's marks count one run late.
  std::shared_ptr<const ErasureSet> on_device;
  unsigned int* host_marks = nullptr;  // pinned, 2 * total_channels
  cudaEvent_t marks_event = nullptr;
  int64_t marks_run = 0;  // the run whose marks are in flight (0: none)

  ~DecodeCudaKernel() override {
    if (marks_event) {
      cudaEventSynchronize(marks_event);
      cudaEventDestroy(marks_event);
    }
    if (host_marks) cudaFreeHost(host_marks);
  }

  // Folds the marks of the run in flight into the learner once they have arrived (blocking: wait).
  void FoldMarks(bool wait) {
    if (!marks_run || !host_marks) return;
    if (wait ? cudaEventSynchronize(marks_event) != cudaSuccess : cudaEventQuery(marks_event) != cudaSuccess) return;
    const int64_t n = learner.channels();
    bool any = false;
    for (int64_t c = 0; c < 2 * n; ++c)
      if (host_marks[c]) {
        learner.Mark(c % n, c < n, marks_run);
        any = true;
      }
    learner.EndRun(marks_run, any);
    marks_run = 0;
  }

  // Makes the device hold the run's erasure snapshot and a zeroed mark buffer; sets p's pointers.
  cudaError_t PrepareErasures(cuda::DecodeParams& p, const std::shared_ptr<const ErasureSet>& set, cudaStream_t stream) {
    cudaError_t e;
    if (set != on_device && set) {
      if ((e = Upload(er_count, set->count, stream)) != cudaSuccess) return e;
      if ((e = Upload(er_pos, set->pos, stream)) != cudaSuccess) return e;
      // pageable sources: the copies are staged before cudaMemcpyAsync returns, so set may change later
    }
    on_device = set;
    p.er_count = set ? er_count.as<int>() : nullptr;
    p.er_pos = set ? er_pos.as<int>() : nullptr;
    if (learner.learn_after() <= 0) return cudaSuccess;
    const size_t bytes = static_cast<size_t>(2 * learner.channels()) * sizeof(unsigned int);
    if (!host_marks) {
      void* h = nullptr;
      if ((e = cudaHostAlloc(&h, bytes, cudaHostAllocDefault)) != cudaSuccess) return e;
      host_marks = static_cast<unsigned int*>(h);
    }
    if (!marks_event && (e = cudaEventCreateWithFlags(&marks_event, cudaEventDisableTiming)) != cudaSuccess) {
      marks_event = nullptr;
      return e;
    }
    if ((e = marks.Reserve(bytes, stream)) != cudaSuccess) return e;
    if ((e = cudaMemsetAsync(marks.ptr, 0, bytes, stream)) != cudaSuccess) return e;
    p.marks = marks.as<unsigned int>();
    return cudaSuccess;
  }

  // After the launches: the run's marks back to the host, for FoldMarks.
  cudaError_t SendMarks(const cuda::DecodeParams& p, int64_t run, cudaStream_t stream) {
    if (!p.marks) return cudaSuccess;
    cudaError_t e = cudaMemcpyAsync(host_marks, p.marks, static_cast<size_t>(2 * learner.channels()) * sizeof(unsigned int),
                                    cudaMemcpyDeviceToHost, stream);
    if (e != cudaSuccess) return e;
    if ((e = cudaEventRecord(marks_event, stream)) != cudaSuccess) return e;
    marks_run = run;
    return cudaSuccess;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      DecodeInputs in;
      if (OrtStatusPtr st = ReadDecodeInputs(*this, ctx, &in)) return st;
      const auto& L = cfg.layout;
      const int64_t outer = in.outer, inner = in.inner;
      const float* x = in.x;
      const int64_t xn = in.x_count;
      const float* residual = in.residual;
      auto z = ctx.GetOutput(0, in.out_shape);
      if (outer * inner == 0) return nullptr;
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      cuda::DecodeParams p;
      p.outer = outer; p.inner = inner; p.groups = L.groups; p.data_per_group = L.data_per_group;
      p.parity_per_group = L.parity_per_group; p.total_channels = L.total_channels; p.data_channels = L.data_channels;
      p.num_blocks = L.num_blocks(); p.block = L.block; p.parity = L.parity;
      p.tolerance = cfg.tolerance; p.correct = cfg.correct; p.relu = cfg.relu; p.scale_output = cfg.scale_output;
      const int64_t vectors = cuda::DecodeVectors(p);

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      if (!uploaded) {
        ECC_CUDA_TRY(Upload(generator, cfg.generator, stream));
        ECC_CUDA_TRY(Upload(gain, cfg.gain, stream));
        ECC_CUDA_TRY(Upload(offset, cfg.offset, stream));
        uploaded = true;
      }
      p.generator = generator.as<float>(); p.gain = gain.as<float>(); p.offset = offset.as<float>();
      ECC_CUDA_TRY(flags.Reserve(static_cast<size_t>(vectors) * sizeof(unsigned long long), stream));
      ECC_CUDA_TRY(scratch.Reserve(cuda::DecodeScratchBytes(p), stream));
      bool per_outer = false;
      if (x) {
        per_outer = xn % std::max<int64_t>(outer, 1) == 0;
        ECC_CUDA_TRY(xmax.Reserve(static_cast<size_t>(per_outer ? outer : 1) * sizeof(float), stream));
        ECC_CUDA_TRY(cuda::LaunchMaxAbs(x, xn, outer, false, xmax.as<float>(), stream));
      }
      if (fail_stop) ECC_CUDA_TRY(cudaMemsetAsync(run_uncorrectable(), 0, sizeof(unsigned long long), stream));
      // the previous run's marks (its buffers are reused now: wait if they have not arrived yet)
      FoldMarks(/*wait=*/true);
      std::shared_ptr<const ErasureSet> erased;
      const int64_t run = learner.BeginRun(&erased);
      ECC_CUDA_TRY(PrepareErasures(p, erased, stream));
      ECC_CUDA_TRY(cuda::LaunchDecode(p, in.y, residual, z.GetTensorMutableData<float>(),
                                      x ? xmax.as<float>() : nullptr, per_outer, flags.as<unsigned long long>(),
                                      flag_count(), scratch.ptr, totals(), fail_stop ? run_uncorrectable() : nullptr,
                                      stream));
      ECC_CUDA_TRY(SendMarks(p, run, stream));
      DecodeCounts host;
      host.vectors = vectors;
      counters->Add(host);  // runs and vectors; the rest arrives from the device
      unsigned long long unc = 0;
      ECC_CUDA_TRY(End(stream, fail_stop, &unc));
      if (fail_stop && unc > 0) return UncorrectableError(name, unc, "code block(s)");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- DepthwiseCheck -----------------------------------------------------------------------

struct DepthwiseCudaKernel : DepthwiseAttrs, GpuKernelBase {
  DeviceBuffer weights, bias, sums, workspace;
  bool uploaded = false;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      auto x = ctx.GetInput(0);
      auto y = ctx.GetInput(1);
      std::vector<int64_t> xs, ys;
      if (OrtStatusPtr st = CheckDepthwiseInputs(*this, x, y, &xs, &ys)) return st;
      auto z = ctx.GetOutput(0, ys);
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      cuda::DepthwiseParams p;
      p.n = xs[0]; p.channels = cfg.channels; p.h = xs[2]; p.w = xs[3]; p.hout = ys[2]; p.wout = ys[3];
      p.kh = cfg.kh; p.kw = cfg.kw; p.stride_h = cfg.stride_h; p.stride_w = cfg.stride_w;
      p.pad_t = cfg.pad_t; p.pad_l = cfg.pad_l; p.pad_b = cfg.pad_b; p.pad_r = cfg.pad_r;
      p.dil_h = cfg.dil_h; p.dil_w = cfg.dil_w; p.tolerance = cfg.tolerance; p.correct = cfg.correct; p.relu = cfg.relu;

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      if (!uploaded) {
        ECC_CUDA_TRY(Upload(weights, cfg.weights, stream));
        ECC_CUDA_TRY(Upload(bias, cfg.bias, stream));
        ECC_CUDA_TRY(Upload(sums, cfg.weight_sums, stream));
        uploaded = true;
      }
      p.weights = weights.as<float>(); p.bias = bias.as<float>(); p.weight_sums = sums.as<double>();
      ECC_CUDA_TRY(workspace.Reserve(std::max<size_t>(cuda::DepthwiseWorkspaceBytes(p), 16), stream));
      if (fail_stop) ECC_CUDA_TRY(cudaMemsetAsync(run_uncorrectable(), 0, sizeof(unsigned long long), stream));
      ECC_CUDA_TRY(cuda::LaunchDepthwise(p, x.GetTensorData<float>(), y.GetTensorData<float>(),
                                         z.GetTensorMutableData<float>(), workspace.ptr, totals(),
                                         fail_stop ? run_uncorrectable() : nullptr, stream));
      DecodeCounts host;
      host.vectors = p.n * p.channels * p.hout;
      counters->Add(host);
      unsigned long long unc = 0;
      ECC_CUDA_TRY(End(stream, fail_stop, &unc));
      if (fail_stop && unc > 0) return UncorrectableError(name, unc, "row(s)");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- ParityCheck ---------------------------------------------------------------------------

struct ParityCheckCudaKernel : ParityCheckAttrs, GpuKernelBase {
  DeviceBuffer generator, gain, offset;
  bool uploaded = false;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      ParityInputs in;
      if (OrtStatusPtr st = ReadParityInputs(*this, ctx, &in)) return st;
      const auto& L = cfg.layout;
      auto out = ctx.GetOutput(0, std::vector<int64_t>{1});
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      cuda::ParityCheckParams p;
      p.outer = in.outer; p.inner = in.inner; p.y_row_stride = in.y_row_stride; p.data_channels = L.data_channels; p.num_blocks = L.num_blocks();
      p.block = L.block; p.parity = L.parity; p.tolerance = cfg.tolerance;

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      if (!uploaded) {
        ECC_CUDA_TRY(Upload(generator, cfg.generator, stream));
        ECC_CUDA_TRY(Upload(gain, cfg.gain, stream));
        ECC_CUDA_TRY(Upload(offset, cfg.offset, stream));
        uploaded = true;
      }
      p.generator = generator.as<float>(); p.gain = gain.as<float>(); p.offset = offset.as<float>();
      // This run's failures are counted in the run_uncorrectable slot, which End reads back for fail_stop.
      ECC_CUDA_TRY(cuda::LaunchParityCheck(p, in.y, in.p, in.flag, out.GetTensorMutableData<bool>(), totals(),
                                           run_uncorrectable(), stream));
      DecodeCounts host;
      host.vectors = in.outer * in.inner * L.num_blocks();
      counters->Add(host);  // runs and vectors; the failures arrive from the device
      unsigned long long failed = 0;
      ECC_CUDA_TRY(End(stream, fail_stop, &failed));
      if (fail_stop && failed > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(failed) + " block(s) failed the parity check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};


// ---- SampleCheck ---------------------------------------------------------------------------

struct SampleCheckCudaKernel : SampleCheckAttrs, GpuKernelBase {
  DeviceBuffer generator, gain, offset, sums, workspace;
  bool uploaded = false;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      SampleInputs in;
      if (OrtStatusPtr st = ReadSampleInputs(*this, ctx, &in)) return st;
      auto out = ctx.GetOutput(0, std::vector<int64_t>{1});
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      cuda::SampleCheckParams p;
      p.samples = in.hw > 0 ? in.samples : 0; p.channels = cfg.channels; p.extra = cfg.extra_channels(); p.hw = in.hw;
      p.row = in.row; p.act = static_cast<int>(cfg.activation); p.act_lo = cfg.act_lo; p.act_hi = cfg.act_hi;
      p.tolerance = cfg.tolerance; p.filter_tolerance = static_cast<float>(cfg.filter_tolerance);
      if (cfg.has_parity) {
        const auto& L = cfg.parity.layout;
        p.num_blocks = L.num_blocks(); p.block = L.block; p.parity = L.parity; p.parity_tolerance = cfg.parity.tolerance;
      }

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      if (!uploaded) {
        if (cfg.has_parity) {
          ECC_CUDA_TRY(Upload(generator, cfg.parity.generator, stream));
          ECC_CUDA_TRY(Upload(gain, cfg.parity.gain, stream));
          ECC_CUDA_TRY(Upload(offset, cfg.parity.offset, stream));
        }
        if (!cfg.filter_sums.empty()) ECC_CUDA_TRY(Upload(sums, cfg.filter_sums, stream));
        uploaded = true;
      }
      p.generator = generator.as<float>(); p.gain = gain.as<float>(); p.offset = offset.as<float>();
      p.filter_sums = sums.as<float>();
      ECC_CUDA_TRY(workspace.Reserve(cuda::SampleCheckWorkspaceBytes(p), stream));
      ECC_CUDA_TRY(cuda::LaunchSampleCheck(p, in.a, in.y, in.w, in.r, in.bias, in.flag, out.GetTensorMutableData<bool>(),
                                           workspace.ptr, totals(), run_uncorrectable(), stream));
      DecodeCounts host;
      host.vectors = p.samples;
      counters->Add(host);  // runs and vectors; the failures arrive from the device
      unsigned long long failed = 0;
      ECC_CUDA_TRY(End(stream, fail_stop, &failed));
      if (fail_stop && failed > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(failed) + " sample(s) failed the sample check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

// ---- InjectFault --------------------------------------------------------------------------

struct InjectCudaKernel : InjectAttrs, GpuKernelBase {
  DeviceBuffer range;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      auto x = ctx.GetInput(0);
      auto seed = ctx.GetInput(1);  // Seed and Rate live in host memory (the table's host ports)
      auto rate = ctx.GetInput(2);
      if (OrtStatusPtr st = CheckInjectInputs(*this, x, seed, rate)) return st;
      auto xi = x.GetTensorTypeAndShapeInfo();
      auto y = ctx.GetOutput(0, xi.GetShape());
      const int64_t n = static_cast<int64_t>(xi.GetElementCount());
      const uint64_t s = static_cast<uint64_t>(seed.GetTensorData<int64_t>()[0]);
      const double r = rate.GetTensorData<float>()[0];
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      ECC_CUDA_TRY(range.Reserve(sizeof(float), stream));
      ECC_CUDA_TRY(cuda::LaunchInject(cfg.Params(), x.GetTensorData<float>(), y.GetTensorMutableData<float>(), n, s, r,
                                      range.as<float>(), totals(), stream));
      DecodeCounts host;
      host.vectors = n;
      // rate >= 1 corrupts every element (known here); the sequential modes count on the device.
      if (n > 0 && cfg.count == 0 && r >= 1) host.flagged = n;
      counters->Add(host);
      unsigned long long unused = 0;
      ECC_CUDA_TRY(End(stream, false, &unused));
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

// ---- IntDecode and Int32Decode ------------------------------------------------------------

// The two integer decoders share their code, its device copies and the launch; they differ in
// the output (uint8 requantised, channels last / int32 accumulators + bias, any channel axis).
struct IntCodeCudaKernel : IntDecodeAttrs, GpuKernelBase {
  DeviceBuffer generator, planes, offsets, bias, bias_parity, scale;
  bool uploaded = false;

  OrtStatusPtr Run(OrtKernelContext* context, bool requantise) noexcept {
    try {
      Ort::KernelContext ctx(context);
      IntDecodeInputs in;
      if (OrtStatusPtr st = ReadIntDecodeInputs(*this, ctx, requantise, &in)) return st;
      auto z = ctx.GetOutput(0, in.out_shape);
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      if (!uploaded) {  // the device copy of the bias is the one checked and repaired from now on
        ECC_CUDA_TRY(Upload(generator, cfg.generator, stream));
        ECC_CUDA_TRY(Upload(planes, cfg.planes, stream));
        ECC_CUDA_TRY(Upload(offsets, cfg.offsets, stream));
        ECC_CUDA_TRY(Upload(bias, cfg.bias, stream));
        ECC_CUDA_TRY(Upload(bias_parity, cfg.bias_parity, stream));
        if (requantise) ECC_CUDA_TRY(Upload(scale, cfg.scale, stream));
        uploaded = true;
      }
      cuda::IntDecodeParams p;
      p.code = cfg.View();  // sizes and flags; the pointers are the device copies
      p.code.generator = generator.as<int64_t>(); p.code.planes = planes.as<int64_t>();
      p.code.offsets = offsets.as<int64_t>(); p.code.bias = bias.as<int32_t>();
      p.code.scale = requantise ? scale.as<float>() : nullptr;
      p.outer = in.outer; p.inner = in.inner; p.channels = cfg.channels(); p.requantise = requantise ? 1 : 0;
      if (fail_stop) ECC_CUDA_TRY(cudaMemsetAsync(run_uncorrectable(), 0, sizeof(unsigned long long), stream));
      void* out = requantise ? static_cast<void*>(z.GetTensorMutableData<uint8_t>())
                             : static_cast<void*>(z.GetTensorMutableData<int32_t>());
      ECC_CUDA_TRY(cuda::LaunchIntDecode(p, in.y, out, bias.as<int32_t>(),
                                         cfg.bias_parity.empty() ? nullptr : bias_parity.as<int64_t>(), totals(),
                                         fail_stop ? run_uncorrectable() : nullptr, stream));
      DecodeCounts host;
      host.vectors = cuda::IntDecodeVectors(p);
      counters->Add(host);  // runs and vectors; the rest arrives from the device
      unsigned long long unc = 0;
      ECC_CUDA_TRY(End(stream, fail_stop, &unc));
      if (fail_stop && unc > 0) return UncorrectableError(name, unc, "block(s)");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

struct IntDecodeCudaKernel : IntCodeCudaKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept { return Run(context, true); }
};

struct Int32DecodeCudaKernel : IntCodeCudaKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept { return Run(context, false); }
};

// ---- Im2ColNhwc ----------------------------------------------------------------------------

// A copy, no checks and no counters: nothing to order or fold (PadValue is a host input).
struct Im2ColCudaKernel : Im2ColAttrs {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      cuda::Im2ColShape q;
      const uint8_t* x = nullptr;
      if (OrtStatusPtr st = ReadIm2ColInputs(*this, ctx, &q, &x)) return st;
      auto y = ctx.GetOutput(0, std::vector<int64_t>{q.n, q.ho, q.wo, q.Row()});
      if (q.Elements() == 0) return nullptr;
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
      ECC_CUDA_TRY(cuda::LaunchIm2Col(q, x, y.GetTensorMutableData<uint8_t>(), stream));
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

// ---- IntSampleCheck ------------------------------------------------------------------------

struct IntSampleCheckCudaKernel : IntSampleCheckAttrs, GpuKernelBase {
  DeviceBuffer sums, workspace;
  bool uploaded = false;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    try {
      Ort::KernelContext ctx(context);
      IntSampleInputs in;
      if (OrtStatusPtr st = ReadIntSampleInputs(*this, ctx, &in)) return st;
      auto out = ctx.GetOutput(0, std::vector<int64_t>{1});
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

      cuda::IntSampleParams p;
      p.outer = in.outer; p.a_rows = in.a_rows; p.y_rows = in.y_rows; p.row = in.row; p.stride = cfg.row_stride;
      p.channels = cfg.channels; p.w_rows = in.w_rows; p.w_cols = in.w_cols; p.by_columns = cfg.weight_axis == 1;

      std::lock_guard<std::mutex> lock(mu);
      ECC_CUDA_TRY(Begin(stream, counters));
      if (!uploaded) {
        if (!cfg.filter_sums.empty()) ECC_CUDA_TRY(Upload(sums, cfg.filter_sums, stream));
        uploaded = true;
      }
      p.filter_sums = sums.as<int64_t>();
      ECC_CUDA_TRY(workspace.Reserve(cuda::IntSampleWorkspaceBytes(), stream));
      ECC_CUDA_TRY(cuda::LaunchIntSampleCheck(p, in.a, in.y, in.w, in.bias, in.flag, out.GetTensorMutableData<bool>(),
                                              workspace.ptr, totals(), run_uncorrectable(), stream));
      DecodeCounts host;
      host.vectors = in.outer * in.y_rows;
      counters->Add(host);  // runs and vectors; the failures arrive from the device
      unsigned long long failed = 0;
      ECC_CUDA_TRY(End(stream, fail_stop, &failed));
      if (fail_stop && failed > 0)
        return Error(ORT_FAIL, name, "error detected: " + std::to_string(failed) +
                                         " row(s) failed the exact sample check");
      return nullptr;
    } catch (const std::exception& e) {
      return Error(ORT_FAIL, name, e.what());
    }
  }
};

namespace {

template <OpId kId>
void AddCudaOp(std::vector<const OrtCustomOp*>& ops) {
  using Kernel = typename OpKernels<kId>::Cuda;
  if constexpr (kHasKernel<Kernel>) {
    static const TableOp<kId, Kernel, true> op;
    ops.push_back(&op);
  }
}

}  // namespace

// The op table's CUDA column.
std::vector<const OrtCustomOp*> GpuOps() {
  std::vector<const OrtCustomOp*> ops;
#define ONNX_ECC_ADD_CUDA_OP(name, parse, cpu, cuda) AddCudaOp<OpId::k##name>(ops);
  ONNX_ECC_OPS(ONNX_ECC_ADD_CUDA_OP)
#undef ONNX_ECC_ADD_CUDA_OP
  return ops;
}

}  // namespace onnx_ecc

// Lets Python (tests, benchmarks) tell a CUDA build from a CPU-only one without loading CUDA.
extern "C" __attribute__((visibility("default"))) int OnnxEcc_HasCuda() { return 1; }
