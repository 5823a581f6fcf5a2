// Registry of per-layer counters and the C functions that export them as JSON.
#include "onnx_ecc/counters.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

namespace onnx_ecc {
namespace {

using Key = std::tuple<std::string, std::string, std::string>;

struct Registry {
  std::mutex mu;
  std::map<Key, std::unique_ptr<LayerCounters>> counters;
};

Registry& GetRegistry() {
  static Registry* r = new Registry();  // never destroyed: kernels may outlive static teardown
  return *r;
}

struct Flushers {
  std::mutex mu;  // held while flushing, so that removal waits for a running flush
  std::vector<std::pair<CountsFlusher, void*>> list;
};

Flushers& GetFlushers() {
  static Flushers* f = new Flushers();
  return *f;
}

void FlushPending() {
  auto& f = GetFlushers();
  std::lock_guard<std::mutex> lock(f.mu);
  for (const auto& [fn, arg] : f.list) fn(arg);
}

void AppendJsonString(std::ostringstream& os, const std::string& s) {
  os << '"';
  for (char ch : s) {
    if (ch == '"' || ch == '\\') os << '\\' << ch;
    else if (static_cast<unsigned char>(ch) < 0x20) os << ' ';
    else os << ch;
  }
  os << '"';
}

}  // namespace

LayerCounters* CountersFor(const std::string& model_id, const std::string& layer, const std::string& op) {
  auto& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto& slot = r.counters[Key{model_id, layer, op}];
  if (!slot) slot = std::make_unique<LayerCounters>();
  return slot.get();
}

void AddCountsFlusher(CountsFlusher fn, void* arg) {
  auto& f = GetFlushers();
  std::lock_guard<std::mutex> lock(f.mu);
  f.list.emplace_back(fn, arg);
}

void RemoveCountsFlusher(CountsFlusher fn, void* arg) {
  auto& f = GetFlushers();
  std::lock_guard<std::mutex> lock(f.mu);
  for (auto it = f.list.begin(); it != f.list.end(); ++it)
    if (it->first == fn && it->second == arg) { f.list.erase(it); break; }
}

}  // namespace onnx_ecc

extern "C" {

// Writes all counters as a JSON list into buf (if it fits); returns the length needed incl. NUL.
__attribute__((visibility("default"))) size_t OnnxEcc_CountersJson(char* buf, size_t len) {
  onnx_ecc::FlushPending();
  auto& r = onnx_ecc::GetRegistry();
  std::ostringstream os;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    os << '[';
    bool first = true;
    for (const auto& [key, c] : r.counters) {
      if (!first) os << ',';
      first = false;
      os << "{\"model_id\":";
      onnx_ecc::AppendJsonString(os, std::get<0>(key));
      os << ",\"layer\":";
      onnx_ecc::AppendJsonString(os, std::get<1>(key));
      os << ",\"op\":";
      onnx_ecc::AppendJsonString(os, std::get<2>(key));
      os << ",\"runs\":" << c->runs.load() << ",\"vectors\":" << c->vectors.load() << ",\"flagged\":" << c->flagged.load()
         << ",\"corrected_blocks\":" << c->corrected_blocks.load() << ",\"corrected_values\":" << c->corrected_values.load()
         << ",\"uncorrectable\":" << c->uncorrectable.load();
      const std::vector<int64_t> erased = c->Erasures();
      os << ",\"dead_units\":" << erased.size() << ",\"erasures\":[";
      for (size_t i = 0; i < erased.size(); ++i) os << (i ? "," : "") << erased[i];
      os << "]}";
    }
    os << ']';
  }
  const std::string s = os.str();
  if (buf && len > s.size()) std::memcpy(buf, s.c_str(), s.size() + 1);
  return s.size() + 1;
}

// Sets every counter back to zero.
__attribute__((visibility("default"))) void OnnxEcc_ResetCounters() {
  onnx_ecc::FlushPending();  // pending counts belong before the reset
  auto& r = onnx_ecc::GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (auto& kv : r.counters) {
    auto& c = *kv.second;
    c.runs = 0; c.vectors = 0; c.flagged = 0; c.corrected_blocks = 0; c.corrected_values = 0; c.uncorrectable = 0;
  }
}

}  // extern "C"
