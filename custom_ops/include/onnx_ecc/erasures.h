// Known erasures of one Decode node, learned at run time: a channel located as wrong in
// learn_after runs in a row (or given as dead when the kernel is made: the `erasures` attribute)
// becomes a known erasure of its block; the exact step then solves it first from the parity
// equations and keeps the rest of the code's power for transient errors (decode_math.h,
// DecodeBlock). A known erasure that reads right again for learn_after runs in a row leaves the
// list. Host side, shared by the CPU and CUDA wrappers; the state is updated once per run, after
// the parallel sweep, under a mutex (the sweeps only store run serials into per-channel atomics
// on their rare path), and each run decodes with an immutable snapshot of the list.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "onnx_ecc/decode.h"

namespace onnx_ecc {

struct LayerCounters;

// One version of a layer's known erasures (immutable once published).
struct ErasureSet {
  std::vector<int64_t> channels;  // sorted channels of Y (the decoded output with its parity)
  std::vector<int> count;         // per flattened (group, block): known erasures
  std::vector<int> pos;           // per block, kMaxParity slots: positions (data j, check b + q), sorted
};

class ErasureLearner {
 public:
  // Checks the initial channels (each in [0, total_channels), at most parity per block) and sets
  // the learner up; learn_after 0 keeps the list as given. Returns "" or an error message.
  std::string Init(const CodeLayout& layout, const std::vector<int64_t>& initial, int64_t learn_after,
                   LayerCounters* counters);

  // Start of a run: its serial, and the snapshot it decodes with (*set null when there is none).
  int64_t BeginRun(std::shared_ptr<const ErasureSet>* set);
  // The sweeps' view of a run (set may be null).
  RunErasures View(const ErasureSet* set, int64_t run);
  // After the run's sweep: the run's marks update the streaks (skipped, without locking, when the
  // run flagged nothing and no channel is erased or on a streak).
  void EndRun(int64_t run, bool flagged);

  // The current list; marks of a run taken in another place (the CUDA kernels' device marks):
  // channel c located / disagreeing in `run`.
  std::vector<int64_t> Channels() const;
  void Mark(int64_t channel, bool located, int64_t run);
  int64_t learn_after() const { return learn_after_; }
  int64_t channels() const { return total_; }

 private:
  std::shared_ptr<const ErasureSet> Build() const;  // from erased_ (caller holds mu_)

  CodeLayout layout_;
  int64_t total_ = 0, learn_after_ = 0;
  std::unique_ptr<std::atomic<int64_t>[]> located_, disagree_;
  std::vector<int> located_streak_, right_streak_;
  std::vector<unsigned char> erased_;
  std::shared_ptr<const ErasureSet> current_;
  std::atomic<bool> active_{false};
  std::atomic<int64_t> serial_{0};
  mutable std::mutex mu_;
  LayerCounters* counters_ = nullptr;
};

}  // namespace onnx_ecc
