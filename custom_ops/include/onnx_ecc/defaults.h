// The attribute defaults the C++ side falls back on when a node leaves a tolerance out, named
// once. They mirror onnx_ecc.ops (DEFAULT_TOLERANCE, SampleCheck's tolerance, FILTER_TOLERANCE);
// the op table lists them per op (op_table.h) and tests/custom_ops/test_op_table.py checks that
// they equal the Python declarations' defaults.
#pragma once

namespace onnx_ecc {

// Threshold multiplier on eps32 x the rounding bound, before calibration: Decode, DepthwiseCheck,
// SumCheck, ParityCheck, and SampleCheck's parity channels (parity_tolerance).
inline constexpr float kDefaultTolerance = 64.f;
// SampleCheck's pair comparison, in units of eps32 x the sample's largest |value|.
inline constexpr float kSampleTolerance = 16.f;
// SampleCheck's filter sums, in units of eps32 x the sum of the magnitudes.
inline constexpr float kFilterTolerance = 8.f;
// Decode: runs in a row a channel must be located wrong to become a known erasure (and read
// right to leave the list); 0 keeps the known erasures as given (erasures.h).
inline constexpr long long kDefaultLearnAfter = 3;

}  // namespace onnx_ecc
