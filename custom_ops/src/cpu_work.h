// How the CPU kernels split a check into thread-pool work items, and the counts those items
// share. Used by ort_ops.cc (Decode, DepthwiseCheck) and parity_check.cc.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include <string>

#include "onnx_ecc/counters.h"
#include "onnx_ecc/decode.h"
#include "onnx_ecc/ort_attrs.h"

namespace onnx_ecc {

// How a check over Y = [outer, channels, inner] splits into thread-pool work items: chunks of
// rows (inner == 1) or of positions of one outer index, times spans of code blocks when that
// alone gives too few items, so that 16 threads get work and no item is too small to pay for
// its dispatch. vector_floats: the values one vector (all its blocks) moves.
struct WorkSplit {
  int64_t chunk = 1, chunks_per_outer = 1, span = 1, spans = 1, items = 0;
  // Vector range [v0, v0 + n) (rows, or positions of outer index o) and blocks [kb0, kb1) of an item.
  void Item(size_t item, int64_t outer, int64_t inner, int64_t blocks, int64_t* o, int64_t* v0, int64_t* n,
            int64_t* kb0, int64_t* kb1) const {
    const int64_t vi = static_cast<int64_t>(item) / spans, si = static_cast<int64_t>(item) % spans;
    *kb0 = si * span;
    *kb1 = std::min(blocks, *kb0 + span);
    if (inner == 1) {
      *o = 0;
      *v0 = vi * chunk;
      *n = std::min(chunk, outer - *v0);
    } else {
      *o = vi / chunks_per_outer;
      *v0 = (vi % chunks_per_outer) * chunk;
      *n = std::min(chunk, inner - *v0);
    }
  }
};

inline WorkSplit SplitWork(int64_t outer, int64_t inner, int64_t blocks, int64_t vector_floats) {
  constexpr int64_t kMinItems = 64, kMinItemFloats = 4096;
  WorkSplit w;
  int64_t vitems;
  if (inner == 1) {
    const int64_t by_size = (kMinItemFloats + vector_floats - 1) / std::max<int64_t>(vector_floats, 1);
    w.chunk = std::max<int64_t>(1, std::min<int64_t>(256, std::max(by_size, (outer + kMinItems - 1) / kMinItems)));
    vitems = (outer + w.chunk - 1) / w.chunk;
  } else {
    w.chunk = inner <= 2048 ? inner : 1024;
    w.chunks_per_outer = (inner + w.chunk - 1) / w.chunk;
    vitems = outer * w.chunks_per_outer;
  }
  if (vitems > 0 && vitems < kMinItems && blocks > 1) {
    const int64_t item_floats = std::min(w.chunk, inner == 1 ? outer : inner) * vector_floats;
    const int64_t want = std::min((kMinItems + vitems - 1) / vitems, std::max<int64_t>(1, item_floats / kMinItemFloats));
    w.span = (blocks + std::min(want, blocks) - 1) / std::min(want, blocks);
    w.spans = (blocks + w.span - 1) / w.span;
  } else {
    w.span = std::max<int64_t>(blocks, 1);
  }
  w.items = vitems * w.spans;
  return w;
}

// Work below this many floats (all items together) runs in the calling thread: waking ORT's
// thread pool costs about 5-10 us a call, more than such work takes (a ParityCheck of 32 rows x 384
// channels: 7 us on one thread, 11-17 us through the pool).
constexpr int64_t kSerialFloats = int64_t{1} << 15;

// Runs fn(data, 0..items-1): through the thread pool, or in this thread when there is one item or
// the items move fewer than kSerialFloats floats together.
template <class Context>
inline void RunItems(Context& ctx, void (*fn)(void*, size_t), size_t items, void* data, int64_t floats) {
  if (items == 0) return;
  if (items == 1 || floats < kSerialFloats) {
    for (size_t i = 0; i < items; ++i) fn(data, i);
    return;
  }
  ctx.ParallelFor(fn, items, 0, data);
}

// Counts of flagged vectors, added by the work items that find any (rare: no contention on the
// fault-free path, and no per-item array).
struct SharedCounts {
  std::atomic<int64_t> flagged{0}, corrected_blocks{0}, corrected_values{0}, uncorrectable{0};
  void Add(const DecodeCounts& c) {
    if (!(c.flagged | c.corrected_blocks | c.corrected_values | c.uncorrectable)) return;
    flagged.fetch_add(c.flagged, std::memory_order_relaxed);
    corrected_blocks.fetch_add(c.corrected_blocks, std::memory_order_relaxed);
    corrected_values.fetch_add(c.corrected_values, std::memory_order_relaxed);
    uncorrectable.fetch_add(c.uncorrectable, std::memory_order_relaxed);
  }
  DecodeCounts Total(int64_t vectors) const {
    DecodeCounts t;
    t.vectors = vectors;
    t.flagged = flagged.load(); t.corrected_blocks = corrected_blocks.load();
    t.corrected_values = corrected_values.load(); t.uncorrectable = uncorrectable.load();
    return t;
  }
};

// Adds a run's counts to its layer's counters; under fail_stop, uncorrectable `what` (code blocks,
// rows) make the run an error.
inline OrtStatusPtr ReportRun(LayerCounters* counters, const DecodeCounts& total, bool fail_stop, const std::string& name,
                              const char* what) {
  counters->Add(total);
  if (fail_stop && total.uncorrectable > 0)
    return Error(ORT_FAIL, name, "uncorrectable error: " + std::to_string(total.uncorrectable) + " " + what +
                                     " failed their checks");
  return nullptr;
}

// A parity check's run (ParityCheck, ProductCheck): counts added, Raised written (set by an
// earlier check or by this one); under fail_stop a failed block makes the run an error.
inline OrtStatusPtr ReportParityRun(Ort::KernelContext& ctx, LayerCounters* counters, const DecodeCounts& total,
                                    bool raised, bool fail_stop, const std::string& name) {
  counters->Add(total);
  WriteRaised(ctx, raised || total.flagged > 0);
  if (fail_stop && total.flagged > 0)
    return Error(ORT_FAIL, name, "error detected: " + std::to_string(total.flagged) + " block(s) failed the parity check");
  return nullptr;
}

}  // namespace onnx_ecc
