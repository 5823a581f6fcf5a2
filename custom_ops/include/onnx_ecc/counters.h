// Process-wide error counters per protected layer, readable from Python through a small C API
// (OnnxEcc_CountersJson / OnnxEcc_ResetCounters) since the model's outputs stay unchanged.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "onnx_ecc/decode.h"

namespace onnx_ecc {

struct LayerCounters {
  std::atomic<int64_t> runs{0}, vectors{0}, flagged{0}, corrected_blocks{0}, corrected_values{0}, uncorrectable{0};
  void Add(const DecodeCounts& c) {
    runs.fetch_add(1, std::memory_order_relaxed);
    vectors.fetch_add(c.vectors, std::memory_order_relaxed);
    flagged.fetch_add(c.flagged, std::memory_order_relaxed);
    corrected_blocks.fetch_add(c.corrected_blocks, std::memory_order_relaxed);
    corrected_values.fetch_add(c.corrected_values, std::memory_order_relaxed);
    uncorrectable.fetch_add(c.uncorrectable, std::memory_order_relaxed);
  }
  // The layer's known erasures (Decode: channels of Y, erasures.h), a state rather than a count:
  // exported as "erasures" and "dead_units", kept by a reset.
  void SetErasures(const std::vector<int64_t>& channels) {
    std::lock_guard<std::mutex> lock(erasures_mu);
    erasures = channels;
  }
  std::vector<int64_t> Erasures() {
    std::lock_guard<std::mutex> lock(erasures_mu);
    return erasures;
  }

 private:
  std::mutex erasures_mu;
  std::vector<int64_t> erasures;
};

// The counters of (model_id, layer, op); the pointer stays valid for the life of the process.
LayerCounters* CountersFor(const std::string& model_id, const std::string& layer, const std::string& op);

// Hook for producers whose counts arrive asynchronously (the CUDA kernels keep theirs in device
// memory): a registered flusher is called before the counters are read or reset, and folds
// what it still holds into its LayerCounters. RemoveCountsFlusher waits for a running flush.
using CountsFlusher = void (*)(void* arg);
void AddCountsFlusher(CountsFlusher fn, void* arg);
void RemoveCountsFlusher(CountsFlusher fn, void* arg);

}  // namespace onnx_ecc
