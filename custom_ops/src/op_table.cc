// OnnxEcc_OpTableJson: the op table (op_table.h) as JSON, for the test that checks it against the
// Python declarations (tests/custom_ops/test_op_table.py).
#include "onnx_ecc/op_table.h"

#include <cstring>
#include <limits>
#include <sstream>
#include <string>

namespace onnx_ecc {
namespace {

const char* TypeName(PortType t) {
  switch (t) {
    case PortType::kBool: return "bool";
    case PortType::kInt64: return "int64";
    case PortType::kInt32: return "int32";
    case PortType::kUInt8: return "uint8";
    case PortType::kInt8: return "int8";
    case PortType::kUInt8OrInt8: return "uint8|int8";
    default: return "float";
  }
}

void AppendPorts(std::ostringstream& os, const Port* ports, size_t n) {
  os << '[';
  for (size_t i = 0; i < n; ++i) {
    const Port& p = ports[i];
    os << (i ? "," : "") << "{\"name\":\"" << p.name << "\",\"type\":\"" << TypeName(p.type)
       << "\",\"optional\":" << (p.optional ? "true" : "false") << ",\"host\":" << (p.host ? "true" : "false") << '}';
  }
  os << ']';
}

// {"domain": ..., "ops": [{"name", "inputs": [{"name", "type", "optional", "host"}], "outputs": [...],
// "defaults": {attr: value}, "int_defaults": {attr: value}, "has_cpu", "has_cuda"}]}: what the table says, in any build (has_cuda
// is the table's CUDA column; OnnxEcc_HasCuda says whether this build has the CUDA kernels).
std::string TableJson() {
  std::ostringstream os;
  os.precision(std::numeric_limits<float>::max_digits10);
  os << "{\"domain\":\"" << kDomain << "\",\"ops\":[";
  for (size_t k = 0; k < kNumOps; ++k) {
    const OpSpec& s = kOps[k];
    os << (k ? "," : "") << "{\"name\":\"" << s.name << "\",\"inputs\":";
    AppendPorts(os, s.inputs, s.num_inputs);
    os << ",\"outputs\":";
    AppendPorts(os, s.outputs, s.num_outputs);
    os << ",\"defaults\":{";
    for (size_t i = 0; i < s.num_defaults; ++i)
      os << (i ? "," : "") << '"' << s.defaults[i].attr << "\":" << s.defaults[i].value;
    os << "},\"int_defaults\":{";
    for (size_t i = 0; i < s.num_int_defaults; ++i)
      os << (i ? "," : "") << '"' << s.int_defaults[i].attr << "\":" << s.int_defaults[i].value;
    os << "},\"has_cpu\":" << (s.has_cpu ? "true" : "false") << ",\"has_cuda\":" << (s.has_cuda ? "true" : "false")
       << '}';
  }
  os << "]}";
  return os.str();
}

}  // namespace
}  // namespace onnx_ecc

// Writes the op table as JSON into buf (if it fits); returns the length needed incl. NUL.
extern "C" __attribute__((visibility("default"))) size_t OnnxEcc_OpTableJson(char* buf, size_t len) {
  const std::string s = onnx_ecc::TableJson();
  if (buf && len > s.size()) std::memcpy(buf, s.c_str(), s.size() + 1);
  return s.size() + 1;
}
