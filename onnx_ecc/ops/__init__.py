"""The one place where onnx-ecc's custom ops are declared: domain, names, inputs, outputs, attributes.

The graph pass emits nodes from these declarations, the ONNX schemas are registered from them
(so ``onnx.checker`` and shape inference accept protected models), and the test suite checks
that the C++ library implements exactly these names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import onnx
from onnx import defs, helper

DOMAIN = "ai.onnx_ecc"
OPSET_VERSION = 1
FILTER_TOLERANCE = 8.0  # SampleCheck: filter sums are exact up to float rounding of the stored sum
DEFAULT_TOLERANCE = 64.0  # threshold multiplier on eps32 x the rounding bound, before calibration
LEARN_AFTER = 3  # Decode: runs in a row that make a located channel a known erasure (and release it)

_A = defs.OpSchema.AttrType


@dataclasses.dataclass(frozen=True)
class Attr:
    """One attribute of an op: its name, ONNX type, whether it must be given, and what it means."""

    name: str
    kind: Any
    doc: str
    required: bool = False
    default: Any = None


@dataclasses.dataclass(frozen=True)
class OpDecl:
    """One custom op: the name, its inputs and outputs (name, optional?) and attributes."""

    name: str
    doc: str
    inputs: tuple[tuple[str, bool], ...]
    outputs: tuple[tuple[str, bool], ...]
    attrs: tuple[Attr, ...]
    # ports of other types than float32 (and _TYPES'): (port, (letter, allowed types, doc)) pairs
    types: tuple[tuple[str, tuple[str, tuple[str, ...], str]], ...] = ()

    def attr(self, name: str) -> Attr:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(f"{self.name} has no attribute {name!r}")

    def check_attrs(self, attrs: dict) -> None:
        """Raise ValueError for unknown attributes or missing required ones."""
        known = {a.name for a in self.attrs}
        unknown = set(attrs) - known
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {sorted(unknown)}")
        missing = [a.name for a in self.attrs if a.required and a.name not in attrs]
        if missing:
            raise ValueError(f"{self.name}: missing attribute(s) {missing}")

    def make_node(self, inputs, outputs, name: str, **attrs) -> onnx.NodeProto:
        """A NodeProto of this op; unknown or missing required attributes raise ValueError."""
        self.check_attrs(attrs)
        return helper.make_node(self.name, list(inputs), list(outputs), name=name, domain=DOMAIN, **attrs)


def _reporting(fails: str) -> tuple[Attr, ...]:
    """The attributes every checking op reports with: fail_stop (``fails``: what makes it fail),
    and the layer and model its error counters are kept under."""
    return (Attr("fail_stop", _A.INT, f"1: return an error when {fails}", default=0),
            Attr("layer", _A.STRING, "name of the checked layer, for the error counters", default=""),
            Attr("model_id", _A.STRING, "identifier of the protected model, for the error counters", default=""))


DECODE = OpDecl(
    name="Decode",
    doc=(
        "Checks the parity channels of a protected layer's output against its data channels, "
        "corrects up to floor(parity/2) wrong values per block of each output vector, and "
        "passes on only the (corrected) data channels, plus the optional residual R, through "
        "the optional activation."
    ),
    inputs=(("Y", False), ("X", True), ("R", True)),
    outputs=(("Z", False),),
    attrs=(
        Attr("axis", _A.INT, "channel axis of Y (1 for Conv, -1 for Gemm/MatMul)", default=1),
        Attr("scale", _A.STRING, "threshold scale: 'output' (largest |value| of the block per vector) "
             "or 'input' (max|X| per outer index)", default="output"),
        Attr("data_channels", _A.INT, "number of data channels C of the unprotected layer", required=True),
        Attr("groups", _A.INT, "channel segments, each laid out as [C/groups data, parity/groups parity]", default=1),
        Attr("block", _A.INT, "data channels per code block", required=True),
        Attr("parity", _A.INT, "parity channels (checks) per block", required=True),
        Attr("generator", _A.FLOATS, "row-major parity x block generator of every block of one group, concatenated", required=True),
        Attr("noise_gain", _A.FLOATS, "per group, block and check: rounding-noise bound per unit of max|X|", required=True),
        Attr("noise_offset", _A.FLOATS, "per group, block and check: rounding-noise bound independent of X", required=True),
        Attr("tolerance", _A.FLOAT, "threshold = tolerance * eps32 * (noise_gain * scale + noise_offset)", default=DEFAULT_TOLERANCE),
        Attr("mode", _A.STRING, "'correct' or 'detect'", default="correct"),
        Attr("activation", _A.STRING, "activation applied to the corrected data plus R ('' or 'Relu')", default=""),
        *_reporting("a block cannot be corrected"),
        Attr("erasures", _A.INTS, "known erased channels of Y (dead units: channels of the decoded output, as "
             "transform.record's onnx_ecc.erasures), at most parity per block: solved first in every vector"),
        Attr("learn_after", _A.INT, "runs in a row a channel must be located wrong to become a known erasure, "
             "and read right to leave the list (0: the erasures stay as given)", default=LEARN_AFTER),
    ),
)

DEPTHWISE_CHECK = OpDecl(
    name="DepthwiseCheck",
    doc=(
        "Checks a depthwise convolution per sample and channel: the sum of each output channel over "
        "its spatial positions against the filter applied to summed input windows; a channel "
        "found wrong is recomputed from X and a verified copy of the weights."
    ),
    inputs=(("X", False), ("Y", False)),
    outputs=(("Z", False),),
    attrs=(
        Attr("weights", _A.TENSOR, "reference copy of the weights [C, 1, kh, kw]", required=True),
        Attr("bias", _A.TENSOR, "reference copy of the bias [C] (zeros if the layer has none)", required=True),
        Attr("weight_sums", _A.FLOATS, "per channel: checksum of weights and bias, to verify the copy", required=True),
        Attr("strides", _A.INTS, "conv strides", default=[1, 1]),
        Attr("pads", _A.INTS, "conv pads (top, left, bottom, right)", default=[0, 0, 0, 0]),
        Attr("dilations", _A.INTS, "conv dilations", default=[1, 1]),
        Attr("tolerance", _A.FLOAT, "threshold multiplier on eps32 * sum of |terms|", default=DEFAULT_TOLERANCE),
        Attr("mode", _A.STRING, "'correct' or 'detect'", default="correct"),
        Attr("activation", _A.STRING, "activation applied to the output ('' or 'Relu')", default=""),
        *_reporting("a channel cannot be repaired"),
    ),
)

INJECT_FAULT = OpDecl(
    name="InjectFault",
    doc=(
        "Fault injection for campaigns: corrupts randomly chosen elements of X (bit flips or random "
        "values) at a given rate, driven by a seed, so one model serves every trial."
    ),
    inputs=(("X", False), ("Seed", False), ("Rate", False)),
    outputs=(("Y", False),),
    attrs=(
        Attr("kind", _A.STRING, "'bitflip', 'random' or 'zero'", default="bitflip"),
        Attr("bits", _A.INTS, "bit positions to choose from for bitflip (0 = LSB of mantissa, 31 = sign)", default=list(range(32))),
        Attr("count", _A.INT, "if > 0: exactly this many faults per run, ignoring Rate", default=0),
        Attr("site", _A.INT, "index of this injection site; faults are drawn from (Seed, site)", default=0),
    ),
)

SUM_CHECK = OpDecl(
    name="SumCheck",
    doc=(
        "Checks a convolution per sample for the rerun strategy: sum_c weights[c] * Y[n, c] must equal "
        "the sum of the first `taps` values of X[n] plus offset, within tolerance * eps32 * (sum of "
        "|terms|), where Y holds the spatial means of the layer's output and X the spatial means of "
        "its input projected on the weighted filters; with R (means of a residual added to the "
        "output before pooling), Y - R takes Y's place. Raised is Flag or any sample failing."
    ),
    inputs=(("Y", False), ("X", False), ("Flag", True), ("R", True)),
    outputs=(("Raised", False),),
    attrs=(
        Attr("weights", _A.FLOATS, "check weight of every output channel of the layer", required=True),
        Attr("taps", _A.INT, "number of leading X channels that hold projected filter taps", required=True),
        Attr("offset", _A.FLOAT, "sum of weights times the layer's bias", default=0.0),
        Attr("tolerance", _A.FLOAT, "threshold multiplier on eps32 * sum of |terms|", default=DEFAULT_TOLERANCE),
        Attr("fail_stop", _A.INT, "1: return an error when a sample fails the check", default=0),
        Attr("layer", _A.STRING, "name of the checked layer, for the error counters", default=""),
        Attr("model_id", _A.STRING, "identifier of the protected model, for the error counters", default=""),
    ),
)

def _parity_test_attrs() -> tuple[Attr, ...]:
    """The float code's test, shared by ParityCheck, ProductCheck and LinearCheck: generator, noise bounds, tolerance."""
    return (
        Attr("generator", _A.FLOATS, "per block, row-major parity x block_size generator, concatenated", required=True),
        Attr("noise_gain", _A.FLOATS, "per block and check: rounding-noise bound per unit of the block's scale",
             required=True),
        Attr("noise_offset", _A.FLOATS, "per block and check: rounding-noise bound independent of the values",
             required=True),
        Attr("tolerance", _A.FLOAT, "threshold = tolerance * eps32 * (noise_gain * scale + noise_offset)",
             default=DEFAULT_TOLERANCE),
    )


PARITY_CHECK = OpDecl(
    name="ParityCheck",
    doc=(
        "Checks a layer left untouched for the rerun strategy: per output vector and block, G y must "
        "equal the separately computed parity P within the rounding bound of Decode's scale='output' "
        "rule. Writes no copy of Y; Raised is Flag or any block failing."
    ),
    inputs=(("Y", False), ("P", False), ("Flag", True)),
    outputs=(("Raised", False),),
    attrs=(
        Attr("axis", _A.INT, "channel axis of Y and P", default=-1),
        Attr("stride", _A.INT, "check every stride-th vector of Y (channels last, all other axes flattened); "
             "P is then [vectors / stride rounded up, checks]", default=1),
        Attr("data_channels", _A.INT, "channels of Y", required=True),
        Attr("block", _A.INT, "channels per code block (the last may be shorter)", required=True),
        Attr("parity", _A.INT, "checks per block; block k's are P's channels k*parity .. k*parity+parity-1",
             required=True),
    ) + _parity_test_attrs() + _reporting("a block fails"),
)

PRODUCT_CHECK = OpDecl(
    name="ProductCheck",
    doc=(
        "Checks a product of two activations C = A B (attention's scores and context) for the rerun "
        "strategy in one node: per batch index, the parity P = alpha A_rows (B Gᵀ) of every stride-th "
        "row of A (accumulated in float32), then ParityCheck's test of C's same rows against P. A "
        "[..., M, K], B [..., K, N], C [..., M, N] with the same leading axes (no broadcasting). "
        "CPU only. Raised is Flag or any block failing."
    ),
    inputs=(("A", False), ("B", False), ("C", False), ("Flag", True)),
    outputs=(("Raised", False),),
    attrs=(
        Attr("axis", _A.INT, "channel axis of C (the last)", default=-1),
        Attr("stride", _A.INT, "check rows 0, stride, 2 stride, ... of each product (axis -2)", default=1),
        Attr("alpha", _A.FLOAT, "C = alpha A B: a scale of A that onnxruntime fuses into the product "
             "(attention's 1/sqrt(d)), so that A can be the unscaled operand", default=1.0),
        Attr("data_channels", _A.INT, "columns N of C", required=True),
        Attr("block", _A.INT, "columns per code block (the last may be shorter)", required=True),
        Attr("parity", _A.INT, "checks per block", required=True),
    ) + _parity_test_attrs() + _reporting("a block fails"),
)

LINEAR_CHECK = OpDecl(
    name="LinearCheck",
    doc=(
        "Checks a weight layer Y = X W (+ bias) left untouched, for the rerun strategy, in one node: the "
        "parity P = X_rows WG (+ PB) of every stride-th row of X (all axes but the last flattened; "
        "accumulated in float32), then ParityCheck's test of Y's same rows against P. WG [K, checks] "
        "is the layer's parity weights (W Gᵀ, times Gemm's alpha), PB [checks] the parity of its "
        "bias (times beta). X [..., K] and Y [..., N] with the same leading axes. CPU only (a float16 "
        "layer's values are given as float32: Casts that onnxruntime merges with its own). Raised is "
        "Flag or any block failing."
    ),
    inputs=(("X", False), ("WG", False), ("Y", False), ("Flag", True), ("PB", True)),
    outputs=(("Raised", False),),
    attrs=(
        Attr("axis", _A.INT, "channel axis of Y (the last)", default=-1),
        Attr("stride", _A.INT, "check rows 0, stride, 2 stride, ... of X and Y (all axes but the last "
             "flattened)", default=1),
        Attr("data_channels", _A.INT, "outputs N of the layer", required=True),
        Attr("block", _A.INT, "outputs per code block (the last may be shorter)", required=True),
        Attr("parity", _A.INT, "checks per block", required=True),
    ) + _parity_test_attrs() + _reporting("a block fails"),
)

SAMPLE_CHECK = OpDecl(
    name="SampleCheck",
    doc=(
        "Checks a convolution for the rerun strategy at a sample of its output positions: A (the "
        "layer's fused output there) must equal act(Y + R), Y being a strided copy of the conv at "
        "the same positions (its first data_channels channels), within tolerance * eps32 * the "
        "sample's largest finite |value| (a non-finite value matched exactly); Y's further channels "
        "are its parity from parity filters, checked as ParityCheck does (parity > 0). Per sample "
        "(first axis). W and Bias, when given, are the conv's own filters [C, ...] and bias [C]: "
        "each output channel's filter plus bias must sum to its filter_sums value within "
        "filter_tolerance * eps32 * the sum of their magnitudes, else every sample fails (this sees "
        "a corrupted weight wherever its inputs are zero). Raised is Flag or any sample failing."
    ),
    inputs=(("A", False), ("Y", False), ("W", True), ("R", True), ("Flag", True), ("Bias", True)),
    outputs=(("Raised", False),),
    attrs=(
        Attr("data_channels", _A.INT, "output channels of the conv", required=True),
        Attr("activation", _A.STRING, "the conv's fused activation: '', 'Relu', 'Clip' or 'LeakyRelu'", default=""),
        Attr("activation_params", _A.FLOATS, "Clip: [min, max]; LeakyRelu: [alpha]"),
        Attr("tolerance", _A.FLOAT, "allowed difference in units of eps32 x the sample's largest |value|",
             default=16.0),
        Attr("block", _A.INT, "parity code of Y's extra channels: data channels per block", default=0),
        Attr("parity", _A.INT, "checks per block (0: Y has no parity channels)", default=0),
        Attr("generator", _A.FLOATS, "per block, row-major parity x block_size generator (with parity > 0)"),
        Attr("noise_gain", _A.FLOATS, "per block and check: rounding bound per unit of the block's scale"),
        Attr("noise_offset", _A.FLOATS, "per block and check: rounding bound independent of the values"),
        Attr("parity_tolerance", _A.FLOAT, "the parity channels' threshold multiplier", default=DEFAULT_TOLERANCE),
        Attr("filter_sums", _A.FLOATS, "per output channel: the sum of its filter and bias (with W)"),
        Attr("filter_tolerance", _A.FLOAT, "allowed filter-sum difference in units of eps32 x the sum of "
             "the magnitudes", default=FILTER_TOLERANCE),
    ) + _reporting("a sample fails"),
)

def _int_code_attrs(digits: str) -> tuple[Attr, ...]:
    """The integer code's attributes, shared by IntDecode and Int32Decode (``digits``: what carries the digits)."""
    return (
        Attr("data_channels", _A.INT, "output channels M of the layer", required=True),
        Attr("block", _A.INT, "data channels per code block (the last may be shorter)", required=True),
        Attr("parity", _A.INT, "checks per block (at most 4)", required=True),
        Attr("generator", _A.INTS, "row-major parity x block integer generator (row 0 all ones)", required=True),
        Attr("planes", _A.INTS, f"per block and check: how many digit {digits} carry its parity value",
             required=True),
        Attr("plane_base", _A.INT, "base of the digits", default=256),
        Attr("bias", _A.INTS, "int32 bias per data channel, added after the check (none: zeros)"),
        Attr("bias_parity", _A.INTS, "per block and check: sum_i g_ri bias_i, the bias's own check"),
    )


INT_DECODE = OpDecl(
    name="IntDecode",
    doc=(
        "Checks an int8 layer's int32 accumulators Y (channels last: data_channels data channels, then "
        "per block and check its digit columns, balanced base-256 digits of the integer parity weights "
        "sum_i g_ri W_i) exactly: per block and check r, s_r = sum_i g_ri a_i - sum_j 256^j d_rj in int64. "
        "All zero: clean (no threshold, no false alarm); one nonzero: a parity value is wrong, the data "
        "are used as they are; else a single data value a_i wrong by e = s_0 (s_r = g_ri e) is corrected, "
        "or the block is counted uncorrectable and passed unchanged. Then adds the bias (checked against "
        "bias_parity and repaired first) and requantises as onnxruntime's QLinearConv / QGemm: "
        "float32(acc + bias) * scale, round half to even, + zero_point, saturated to uint8."
    ),
    inputs=(("Y", False),),
    outputs=(("Z", False),),
    attrs=(
        Attr("axis", _A.INT, "channel axis of Y (the last: channels last)", default=-1),
    ) + _int_code_attrs("columns") + (
        Attr("scale", _A.FLOATS, "requantisation scale (s_x * s_w) / s_y in float32: one, or one per data channel",
             required=True),
        Attr("zero_point", _A.INT, "zero point of the uint8 output", default=0),
        Attr("mode", _A.STRING, "'correct' or 'detect'", default="correct"),
    ) + _reporting("a block cannot be corrected"),
    types=(("Y", ("I32", ("tensor(int32)",), "int32 accumulators")),
           ("Z", ("U8", ("tensor(uint8)",), "uint8 output"))),
)

INT32_DECODE = OpDecl(
    name="Int32Decode",
    doc=(
        "IntDecode's exact check of an int8 layer's int32 accumulators Y (data_channels data channels, then per "
        "block and check its digit channels) for layers whose output is the int32 accumulators themselves "
        "(MatMulInteger / ConvInteger, as onnxruntime.quantization.quantize_dynamic makes them): the same int64 "
        "syndromes (no threshold, no false alarm) and one-value correction per block and output vector, then "
        "Z = corrected accumulators + bias (int32, wrapping; the bias checked against bias_parity and repaired "
        "first), with no requantisation. The channel axis is the last (channels last) or any other (NCHW: 1)."
    ),
    inputs=(("Y", False),),
    outputs=(("Z", False),),
    attrs=(
        Attr("axis", _A.INT, "channel axis of Y (-1: channels last; 1: NCHW ConvInteger outputs)", default=-1),
    ) + _int_code_attrs("channels") + (
        Attr("mode", _A.STRING, "'correct' or 'detect'", default="correct"),
    ) + _reporting("a block cannot be corrected"),
    types=(("Y", ("I32", ("tensor(int32)",), "int32 accumulators")),
           ("Z", ("I32", ("tensor(int32)",), "int32 accumulators"))),
)

IM2COL_NHWC = OpDecl(
    name="Im2ColNhwc",
    doc=(
        "The im2col copy of a convolution's quantised input, channels last: X [N, H, W, C] -> Y [N, Ho, Wo, "
        "kh*kw*C] with taps ordered (i, j, c), positions outside the input holding pad_value (the input's "
        "zero point), or the value of PadValue where given (a run-time zero point, DynamicQuantizeLinear's), "
        "so that the conv is one MatMulInteger. int8 inputs come out as uint8 (x + 128; pad_value is then "
        "the shifted zero point)."
    ),
    inputs=(("X", False), ("PadValue", True)),
    outputs=(("Y", False),),
    attrs=(
        Attr("kernel_shape", _A.INTS, "kh, kw", required=True),
        Attr("strides", _A.INTS, "conv strides", default=[1, 1]),
        Attr("pads", _A.INTS, "conv pads (top, left, bottom, right)", default=[0, 0, 0, 0]),
        Attr("dilations", _A.INTS, "conv dilations", default=[1, 1]),
        Attr("pad_value", _A.INT, "uint8 value of padded positions", default=0),
    ),
    types=(("X", ("Q", ("tensor(uint8)", "tensor(int8)"), "quantised input")),
           ("PadValue", ("U8", ("tensor(uint8)",), "uint8 columns and pad value")),
           ("Y", ("U8", ("tensor(uint8)",), "uint8 columns and pad value"))),
)

INT_SAMPLE_CHECK = OpDecl(
    name="IntSampleCheck",
    doc=(
        "Checks an int8 layer for the rerun strategy, exactly: Y (a strided copy of the layer at sampled "
        "positions, fused by onnxruntime into the same integer kernel) must equal A (the fused layer's "
        "quantised output: a conv's at the same sampled positions, a Gemm / MatMul's whole output, of whose "
        "rows on axis -2 Y holds every row_stride-th) bit for bit, row by row (last axis); no threshold, so "
        "no false alarm. W and Bias, when given, are the layer's own int8 weights and int32 bias: each "
        "output channel's weights plus bias must sum (int64) to its filter_sums value, else every row "
        "fails (this sees a corrupted stored weight wherever its inputs are). Raised is Flag or any row "
        "failing."
    ),
    inputs=(("A", False), ("Y", False), ("W", True), ("Bias", True), ("Flag", True)),
    outputs=(("Raised", False),),
    attrs=(
        Attr("data_channels", _A.INT, "output channels of the layer", required=True),
        Attr("row_stride", _A.INT, "Y's rows on axis -2 are A's rows 0, row_stride, 2 row_stride, ...", default=1),
        Attr("weight_axis", _A.INT, "axis of W holding the output channels: 0, or 1 of a 2-D [K, C] weight",
             default=0),
        Attr("filter_sums", _A.INTS, "per output channel: the sum of its int8 weights and int32 bias (with W)"),
    ) + _reporting("a row fails"),
    types=(("A", ("Q", ("tensor(uint8)", "tensor(int8)"), "quantised outputs")),
           ("Y", ("Q", ("tensor(uint8)", "tensor(int8)"), "quantised outputs")),
           ("W", ("W8", ("tensor(int8)",), "int8 weights")),
           ("Bias", ("I32", ("tensor(int32)",), "int32 bias"))),
)

ALL_OPS: tuple[OpDecl, ...] = (DECODE, DEPTHWISE_CHECK, INJECT_FAULT, SUM_CHECK, PARITY_CHECK, SAMPLE_CHECK,
                               INT_DECODE, INT32_DECODE, IM2COL_NHWC, INT_SAMPLE_CHECK, PRODUCT_CHECK,
                               LINEAR_CHECK)

# Type constraint of the inputs and outputs that are not float32 tensors.
_TYPES = {"Seed": ("I", "tensor(int64)", "seed"), "Flag": ("B", "tensor(bool)", "check flag"),
          "Raised": ("B", "tensor(bool)", "check flag")}


def _schema(decl: OpDecl) -> defs.OpSchema:
    own = dict(decl.types)

    def param(n, opt):
        option = defs.OpSchema.FormalParameterOption
        return defs.OpSchema.FormalParameter(n, own.get(n, _TYPES.get(n, ("T",)))[0],
                                             param_option=option.Optional if opt else option.Single)

    inputs = [param(n, opt) for n, opt in decl.inputs]
    outputs = [param(n, opt) for n, opt in decl.outputs]
    attrs = []
    for a in decl.attrs:
        if a.required or a.default is None:
            attrs.append(defs.OpSchema.Attribute(a.name, a.kind, a.doc, required=a.required))
        else:
            attrs.append(defs.OpSchema.Attribute(a.name, helper.make_attribute(a.name, a.default), a.doc))
    ports = [n for n, _ in decl.inputs + decl.outputs]
    constraints = [("T", ["tensor(float)"], "float32 tensors")] if any(n not in own for n in ports) else []
    for letter, kind, doc in dict.fromkeys(_TYPES[n] for n in ports if n in _TYPES and n not in own):
        constraints.append((letter, [kind], doc))
    for letter, kinds, doc in dict.fromkeys(own[n] for n in ports if n in own):
        constraints.append((letter, list(kinds), doc))
    return defs.OpSchema(decl.name, DOMAIN, OPSET_VERSION, doc=decl.doc, inputs=inputs, outputs=outputs,
                         type_constraints=constraints, attributes=attrs)


def import_opset(model) -> None:
    """Add onnx-ecc's opset to a model's imports (once) so that its custom nodes resolve."""
    import onnx

    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))


def register_schemas() -> None:
    """Register every op's schema with onnx (idempotent)."""
    for decl in ALL_OPS:
        if not defs.has(decl.name, DOMAIN):
            defs.register_schema(_schema(decl))


register_schemas()
