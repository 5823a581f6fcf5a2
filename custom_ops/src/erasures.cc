// The run-time learner of a Decode node's known erasures (erasures.h).
#include "onnx_ecc/erasures.h"

#include <algorithm>

#include "onnx_ecc/counters.h"

namespace onnx_ecc {

std::string ErasureLearner::Init(const CodeLayout& layout, const std::vector<int64_t>& initial, int64_t learn_after,
                                 LayerCounters* counters) {
  if (learn_after < 0) return "learn_after must be >= 0";
  layout_ = layout;
  total_ = layout.total_channels;
  learn_after_ = learn_after;
  counters_ = counters;
  located_.reset(new std::atomic<int64_t>[static_cast<size_t>(total_)]);
  disagree_.reset(new std::atomic<int64_t>[static_cast<size_t>(total_)]);
  for (int64_t c = 0; c < total_; ++c) {
    located_[c].store(0, std::memory_order_relaxed);
    disagree_[c].store(0, std::memory_order_relaxed);
  }
  located_streak_.assign(static_cast<size_t>(total_), 0);
  right_streak_.assign(static_cast<size_t>(total_), 0);
  erased_.assign(static_cast<size_t>(total_), 0);
  for (int64_t c : initial) {
    if (c < 0 || c >= total_)
      return "erasure channel " + std::to_string(c) + " out of range: Y has channels 0.." + std::to_string(total_ - 1);
    erased_[static_cast<size_t>(c)] = 1;
  }
  std::lock_guard<std::mutex> lock(mu_);
  current_ = Build();
  for (size_t k = 0; current_ && k < current_->count.size(); ++k)
    if (current_->count[k] > layout_.parity)
      return "block " + std::to_string(k) + " has " + std::to_string(current_->count[k]) +
             " erasures, more than its parity " + std::to_string(layout_.parity);
  active_.store(current_ != nullptr, std::memory_order_relaxed);
  if (counters_) counters_->SetErasures(current_ ? current_->channels : std::vector<int64_t>{});
  return "";
}

std::shared_ptr<const ErasureSet> ErasureLearner::Build() const {
  auto set = std::make_shared<ErasureSet>();
  const int64_t blocks = layout_.groups * layout_.num_blocks();
  set->count.assign(static_cast<size_t>(blocks), 0);
  set->pos.assign(static_cast<size_t>(blocks * kMaxParity), 0);
  for (int64_t gk = 0; gk < blocks; ++gk) {
    const int b = static_cast<int>(layout_.block_sizes[gk % layout_.num_blocks()]);
    for (int p = 0; p < b + layout_.parity; ++p) {
      const int64_t c = layout_.Channel(gk, p);
      if (!erased_[static_cast<size_t>(c)]) continue;
      int& n = set->count[static_cast<size_t>(gk)];
      if (n < kMaxParity) set->pos[static_cast<size_t>(gk * kMaxParity + n)] = p;
      ++n;
      set->channels.push_back(c);
    }
  }
  if (set->channels.empty()) return nullptr;
  std::sort(set->channels.begin(), set->channels.end());
  return set;
}

int64_t ErasureLearner::BeginRun(std::shared_ptr<const ErasureSet>* set) {
  const int64_t run = serial_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (active_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(mu_);
    *set = current_;
  } else {
    set->reset();
  }
  return run;
}

RunErasures ErasureLearner::View(const ErasureSet* set, int64_t run) {
  RunErasures v;
  if (set) {
    v.count = set->count.data();
    v.pos = set->pos.data();
  }
  if (learn_after_ > 0) {
    v.located = located_.get();
    v.disagree = disagree_.get();
  }
  v.run = run;
  return v;
}

void ErasureLearner::Mark(int64_t channel, bool located, int64_t run) {
  if (channel < 0 || channel >= total_) return;
  (located ? located_ : disagree_)[channel].store(run, std::memory_order_relaxed);
}

void ErasureLearner::EndRun(int64_t run, bool flagged) {
  if (learn_after_ <= 0) return;
  if (!flagged && !active_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t blocks = layout_.groups * layout_.num_blocks();
  std::vector<int> per_block;  // only allocated when the list changes
  bool changed = false, active = false;
  for (int64_t c = 0; c < total_; ++c) {
    const size_t i = static_cast<size_t>(c);
    if (!erased_[i]) {
      if (located_[c].load(std::memory_order_relaxed) == run) {
        if (++located_streak_[i] >= learn_after_) {
          erased_[i] = 1;
          changed = true;
          located_streak_[i] = right_streak_[i] = 0;
        }
      } else {
        located_streak_[i] = 0;
      }
    } else if (disagree_[c].load(std::memory_order_relaxed) != run) {
      if (++right_streak_[i] >= learn_after_) {
        erased_[i] = 0;
        changed = true;
        located_streak_[i] = right_streak_[i] = 0;
      }
    } else {
      right_streak_[i] = 0;
    }
  }
  if (changed) {
    // A block keeps at most parity erasures: the newest of an over-full block stay candidates.
    per_block.assign(static_cast<size_t>(blocks), 0);
    for (int64_t gk = 0; gk < blocks; ++gk) {
      const int b = static_cast<int>(layout_.block_sizes[gk % layout_.num_blocks()]);
      for (int p = 0; p < b + layout_.parity; ++p) {
        const size_t c = static_cast<size_t>(layout_.Channel(gk, p));
        if (erased_[c] && ++per_block[static_cast<size_t>(gk)] > layout_.parity) erased_[c] = 0;
      }
    }
    current_ = Build();
    if (counters_) counters_->SetErasures(current_ ? current_->channels : std::vector<int64_t>{});
  }
  for (int64_t c = 0; c < total_ && !active; ++c)
    active = erased_[static_cast<size_t>(c)] || located_streak_[static_cast<size_t>(c)] > 0;
  active_.store(active, std::memory_order_release);
}

std::vector<int64_t> ErasureLearner::Channels() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_ ? current_->channels : std::vector<int64_t>{};
}

}  // namespace onnx_ecc
