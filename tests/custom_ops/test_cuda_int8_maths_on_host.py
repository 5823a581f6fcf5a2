"""The int8 CUDA kernels' maths, compiled for the host, against the CPU kernels and the numpy oracles.

IntDecode, Int32Decode, Im2ColNhwc and IntSampleCheck run on the GPU as items of
custom_ops/cuda/device_math.cuh (IntDecodeItem, IntBiasBlock, Im2ColByte, IntSampleRowFails,
IntSampleFilterFails), which call the shared per-item maths of int_decode_math.h and
int_sample_check_math.h. custom_ops/cuda/host_emulation.cc runs those same items in host loops, in
the kernels' order (the bias check before the decode); this test compiles it with the host
compiler and compares it, on random layouts and faults, with the CPU ops and the oracles: outputs
bit for bit and the counts, so that the GPU build cannot drift from the CPU build unseen.
"""

from __future__ import annotations

import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import integer
from onnx_ecc.ops.oracles import im2col_nhwc, int32_decode, int_decode, int_sample_check, requantize_u8
from onnx_ecc.runtime.counters import read_counters

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "custom_ops" / "cuda" / "host_emulation.cc"
I64, I32, U64 = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_ulonglong)
U8, F32 = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_float)
MODEL_ID = "cuda-host-int8"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The host build of the CUDA maths (as the CPU library: no FMA contraction), loaded with ctypes."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None or not SOURCE.is_file():
        pytest.skip("no host C++ compiler (or the sources are not in this checkout)")
    out = tmp_path_factory.mktemp("cuda_host_int8") / "libonnx_ecc_cuda_host_int8.so"
    subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", "-shared", "-fPIC",
                    f"-I{ROOT / 'custom_ops' / 'cuda'}", f"-I{ROOT / 'custom_ops' / 'include'}", str(SOURCE),
                    "-o", str(out)], check=True, capture_output=True)
    lib = ctypes.CDLL(str(out))
    lib.OnnxEccHost_IntDecode.argtypes = [I64, ctypes.c_int, I64, I64, I64, I32, I64, F32, ctypes.c_int, I32,
                                          ctypes.c_void_p, U64]
    lib.OnnxEccHost_Im2Col.argtypes = [I64, ctypes.c_int, ctypes.c_int, U8, U8]
    lib.OnnxEccHost_IntSampleCheck.argtypes = [I64, I64, U8, U8, ctypes.POINTER(ctypes.c_int8), I32]
    lib.OnnxEccHost_IntSampleCheck.restype = ctypes.c_int64
    return lib


def _ptr(a, kind):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(kind))


def _run_cpu(decl, feeds: dict, types: dict, out_type, attrs, inputs=None):
    """One of our ops on the CPU provider; returns its first output."""
    inputs = inputs or list(feeds)
    node = decl.make_node(inputs, ["Z"], "op", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, types[n], None) for n in inputs if n],
                          [helper.make_tensor_value_info("Z", out_type, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                              ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), onnx_ecc.session_options(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _counts(key: str) -> tuple[int, int, int, int]:
    c = read_counters(MODEL_ID).get(key)
    return (c.flagged, c.corrected_blocks, c.corrected_values, c.uncorrectable) if c else (0, 0, 0, 0)


def _encoded(rng, acc: np.ndarray, block: int, parity: int):
    """Y [rows, M + digit columns] whose data columns are exactly acc [rows, M]: the code of an
    identity weight (so any accumulators are a valid code word), its planes and generator."""
    m = acc.shape[1]
    digits, planes, g = integer.parity_rows(np.eye(m, dtype=np.int8), block, parity)
    y = acc.astype(np.int64) @ np.concatenate([np.eye(m, dtype=np.int64), digits.astype(np.int64)]).T
    return y.astype(np.int32), planes, g


def _host_decode(host, y, attrs, requantise: bool, outer: int, inner: int):
    """The host emulation of IntDecode / Int32Decode: (Z, totals [flagged, corrected blocks, values, unc])."""
    m, block, parity = attrs["data_channels"], attrs["block"], attrs["parity"]
    planes = np.asarray(attrs["planes"], np.int64)
    offsets = np.concatenate([[0], np.cumsum(planes)[:-1]]).astype(np.int64)
    bias = np.asarray(attrs.get("bias", [0] * m), np.int32).copy()
    bias_parity = np.asarray(attrs["bias_parity"], np.int64).copy() if attrs.get("bias_parity") else None
    scale = np.broadcast_to(np.asarray(attrs.get("scale", [1.0]), np.float32), (m,)).copy()
    dims = np.array([outer, inner, m, block, parity, 256, int(attrs.get("mode", "correct") == "correct")], np.int64)
    gen = np.asarray(attrs["generator"], np.int64)
    z = np.zeros((outer, m, inner), np.uint8 if requantise else np.int32)
    totals = np.zeros(4, np.uint64)
    y = np.ascontiguousarray(y, np.int32)
    host.OnnxEccHost_IntDecode(_ptr(dims, ctypes.c_int64), int(requantise), _ptr(gen, ctypes.c_int64),
                               _ptr(planes, ctypes.c_int64), _ptr(offsets, ctypes.c_int64), _ptr(bias, ctypes.c_int32),
                               _ptr(bias_parity, ctypes.c_int64), _ptr(scale, ctypes.c_float),
                               int(attrs.get("zero_point", 0)), _ptr(y, ctypes.c_int32), z.ctypes.data,
                               _ptr(totals, ctypes.c_ulonglong))
    return z, tuple(int(v) for v in totals)


def _code_attrs(rng, acc, block, parity, layer, *, bias=True, requantise=True):
    y, planes, g = _encoded(rng, acc, block, parity)
    m = acc.shape[1]
    attrs = dict(data_channels=m, block=block, parity=parity, generator=[int(v) for v in g.ravel()], planes=planes,
                 layer=layer, model_id=MODEL_ID, mode=str(rng.choice(["correct", "correct", "detect"])))
    if requantise:
        attrs.update(scale=[float(v) for v in rng.uniform(1e-3, 2e-2, m).astype(np.float32)],
                     zero_point=int(rng.integers(0, 256)))
    if bias:
        b = rng.integers(-5000, 5000, m)
        attrs.update(bias=[int(v) for v in b], bias_parity=integer.bias_parity(b, block, parity))
    return y, attrs


def _faults(rng, y, attrs):
    """Wrong accumulators (a gross single error per chosen block-row, or several), a corrupted bias value."""
    m, block = attrs["data_channels"], attrs["block"]
    flat = y.reshape(-1, y.shape[-1])
    for _ in range(int(rng.integers(0, 12))):
        row, kind = int(rng.integers(flat.shape[0])), int(rng.integers(3))
        if kind == 0:  # one wrong data accumulator: corrected
            flat[row, int(rng.integers(m))] += int(rng.choice([-1, 1])) * int(rng.integers(1, 1 << 22))
        elif kind == 1:  # a wrong digit column: the data stand
            flat[row, m + int(rng.integers(flat.shape[1] - m))] += int(rng.integers(1, 1000))
        else:  # two wrong values in one block: uncorrectable (or a lucky miscorrection the oracle sees too)
            c0 = int(rng.integers(0, (m + block - 1) // block)) * block
            for ch in rng.choice(np.arange(c0, min(c0 + block, m)), size=min(2, min(block, m - c0)), replace=False):
                flat[row, int(ch)] += int(rng.integers(1, 1 << 16))
    if "bias" in attrs and rng.integers(2):
        bias = list(attrs["bias"])
        bias[int(rng.integers(m))] ^= 1 << int(rng.integers(0, 20))  # the stored bias, repaired by its check
        attrs["bias"] = bias


@pytest.mark.parametrize("seed", range(16))
def test_int_decode_on_the_host_equals_the_cpu_kernel_and_the_oracle(host, seed):
    rng = np.random.default_rng(1100 + seed)
    parity = int(rng.integers(1, 5))
    block, m, rows = int(rng.integers(2, 40)), int(rng.integers(1, 90)), int(rng.integers(1, 40))
    acc = rng.integers(-(1 << 16), 1 << 16, (rows, m))  # digit accumulators stay within int32
    y, attrs = _code_attrs(rng, acc, block, parity, f"idec{seed}", bias=bool(rng.integers(4)))
    _faults(rng, y, attrs)
    want, counts = int_decode(y, **attrs)
    cpu = _run_cpu(ops.INT_DECODE, {"X": y}, {"X": TensorProto.INT32}, TensorProto.UINT8, attrs)
    z, totals = _host_decode(host, y, attrs, True, rows, 1)
    np.testing.assert_array_equal(z.reshape(cpu.shape), cpu)
    np.testing.assert_array_equal(cpu, want)
    expected = (counts["flagged"], counts["corrected_blocks"], counts["corrected_values"], counts["uncorrectable"])
    assert totals == _counts(f"idec{seed}") == expected


def test_a_corrected_accumulator_and_a_repaired_bias_requantise_as_the_clean_layer(host):
    """The error-free output from a wrong accumulator in every row and a flipped bias bit, counted."""
    rng = np.random.default_rng(7)
    acc = rng.integers(-(1 << 16), 1 << 16, (24, 40))
    y, attrs = _code_attrs(rng, acc, 16, 2, "idec-fix")
    attrs["mode"] = "correct"
    clean, _ = _host_decode(host, y, attrs, True, 24, 1)
    bad = y.copy()
    bad[np.arange(24), np.arange(24)] += 1 << 21  # one gross error per row, in channel `row`
    attrs["bias"] = list(attrs["bias"])
    attrs["bias"][33] ^= 1 << 13
    z, totals = _host_decode(host, bad, attrs, True, 24, 1)
    np.testing.assert_array_equal(z, clean)
    assert totals == (25, 25, 25, 0)  # 24 rows + the bias block, each one value corrected
    cpu = _run_cpu(ops.INT_DECODE, {"X": bad}, {"X": TensorProto.INT32}, TensorProto.UINT8, attrs)
    np.testing.assert_array_equal(z.reshape(cpu.shape), cpu)
    assert _counts("idec-fix") == totals


def test_requantisation_ties_round_to_even_and_saturate_as_the_oracle(host):
    """Scale 1/2 and 1/4 make every odd (acc + bias) a tie and large ones clamp at both ends."""
    rng = np.random.default_rng(3)
    m = 12
    acc = np.arange(-700, 700, dtype=np.int64)[:, None].repeat(m, 1) + rng.integers(-3, 4, (1400, m))
    y, attrs = _code_attrs(rng, acc, 6, 2, "idec-ties", bias=True)
    attrs.update(mode="correct", zero_point=37, scale=[0.5] * 6 + [0.25] * 6)
    y[5, 3] += 1 << 20  # and a corrected accumulator among them
    v = acc + np.asarray(attrs["bias"], np.int64)
    f = v.astype(np.float32) * np.asarray(attrs["scale"], np.float32)
    assert (np.abs(f - np.trunc(f)) == 0.5).sum() > 1000  # ties present ...
    assert (f < -37).any() and (f > 255 - 37).any()  # ... and saturation at both ends
    want = requantize_u8(acc, np.asarray(attrs["bias"]), np.asarray(attrs["scale"], np.float32), 37)
    z, totals = _host_decode(host, y, attrs, True, acc.shape[0], 1)
    np.testing.assert_array_equal(z.reshape(want.shape), want)
    assert totals[2] == 1
    cpu = _run_cpu(ops.INT_DECODE, {"X": y}, {"X": TensorProto.INT32}, TensorProto.UINT8, attrs)
    np.testing.assert_array_equal(cpu, want)
    assert set(np.unique(want[f < -37])) == {0} and set(np.unique(want[f > 255 - 37])) == {255}


@pytest.mark.parametrize("seed", range(12))
def test_int32_decode_on_the_host_equals_the_cpu_kernel_and_the_oracle(host, seed):
    """Channels-last rows and NCHW planes (axis 1, inner > 1: the kernel's strided item)."""
    rng = np.random.default_rng(1300 + seed)
    parity = int(rng.integers(1, 5))
    block, m = int(rng.integers(2, 40)), int(rng.integers(1, 70))
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 9))
    acc = rng.integers(-(1 << 16), 1 << 16, (n * h * w, m))
    y, attrs = _code_attrs(rng, acc, block, parity, f"i32dec{seed}", bias=bool(rng.integers(4)), requantise=False)
    _faults(rng, y, attrs)
    nchw = seed % 2 == 1
    if nchw:
        y = np.ascontiguousarray(y.reshape(n, h, w, -1).transpose(0, 3, 1, 2))
        attrs["axis"] = 1
    want, counts = int32_decode(y, **attrs)
    cpu = _run_cpu(ops.INT32_DECODE, {"X": y}, {"X": TensorProto.INT32}, TensorProto.INT32, attrs)
    outer, inner = (n, h * w) if nchw else (n * h * w, 1)
    z, totals = _host_decode(host, y, attrs, False, outer, inner)
    np.testing.assert_array_equal(z.reshape(cpu.shape), cpu)
    np.testing.assert_array_equal(cpu, want)
    expected = (counts["flagged"], counts["corrected_blocks"], counts["corrected_values"], counts["uncorrectable"])
    assert totals == _counts(f"i32dec{seed}") == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape,kernel,strides,pads,dil", [
    ((2, 7, 9, 1), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # one channel (the CPU's byte-store path)
    ((1, 8, 6, 5), (2, 3), (2, 1), (0, 2, 1, 0), (1, 2)),
    ((3, 5, 5, 16), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 4, 11, 3), (3, 2), (1, 3), (2, 0, 2, 1), (2, 1)),
])
def test_im2col_on_the_host_equals_the_cpu_kernel_and_the_oracle(host, dtype, shape, kernel, strides, pads, dil):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, shape).astype(dtype)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), dilations=list(dil),
                 pad_value=int(rng.integers(0, 256)))
    want = im2col_nhwc(x, **attrs)
    cpu = _run_cpu(ops.IM2COL_NHWC, {"X": x}, {"X": TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8},
                   TensorProto.UINT8, attrs)
    n, h, w, c = shape
    dims = np.array([n, h, w, c, want.shape[1], want.shape[2], *kernel, *strides, *pads, *dil], np.int64)
    y = np.zeros_like(want)
    host.OnnxEccHost_Im2Col(_ptr(dims, ctypes.c_int64), attrs["pad_value"], 0x80 if dtype == np.int8 else 0,
                            _ptr(x.view(np.uint8), ctypes.c_uint8), _ptr(y, ctypes.c_uint8))
    np.testing.assert_array_equal(y, cpu)
    np.testing.assert_array_equal(cpu, want)


@pytest.mark.parametrize("seed", range(12))
def test_int_sample_check_on_the_host_fails_the_rows_the_cpu_kernel_fails(host, seed):
    rng = np.random.default_rng(1500 + seed)
    dtype = np.uint8 if seed % 2 else np.int8
    stride, c = int(rng.integers(1, 4)), int(rng.integers(1, 20))
    outer, rows = int(rng.integers(1, 5)), int(rng.integers(1, 12))
    a = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, (outer, rows, c)).astype(dtype)
    y = a[:, ::stride].copy()
    for _ in range(int(rng.integers(0, 4))):  # one flipped bit of the copy
        y.view(np.uint8)[tuple(int(rng.integers(d)) for d in y.shape)] ^= np.uint8(1 << int(rng.integers(8)))
    weight_axis = int(rng.integers(2)) if seed % 3 else None  # None: no W
    w = bias = sums = None
    attrs = dict(data_channels=c, row_stride=stride, layer=f"isc{seed}", model_id=MODEL_ID)
    if weight_axis is not None:
        w = rng.integers(-128, 128, (c, 3, 3) if weight_axis == 0 else (int(rng.integers(1, 30)), c)).astype(np.int8)
        bias = rng.integers(-1000, 1000, c).astype(np.int32) if rng.integers(2) else None
        s = (w.astype(np.int64) if weight_axis == 0 else w.astype(np.int64).T).reshape(c, -1).sum(1)
        sums = s + (bias if bias is not None else 0)
        attrs.update(weight_axis=weight_axis, filter_sums=[int(v) for v in sums])
        if rng.integers(3) == 0:  # a corrupted stored weight: every row fails
            w.reshape(-1)[int(rng.integers(w.size))] ^= np.int8(1 << int(rng.integers(7)))
    want_raised, want_failed = int_sample_check(a, y, w, bias, **attrs)
    inputs = ["A", "Y", "W" if w is not None else "", "Bias" if bias is not None else ""]
    feeds = {"A": a, "Y": y, **({"W": w} if w is not None else {}), **({"Bias": bias} if bias is not None else {})}
    qtype = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    types = {"A": qtype, "Y": qtype, "W": TensorProto.INT8, "Bias": TensorProto.INT32}
    raised = bool(_run_cpu(ops.INT_SAMPLE_CHECK, feeds, types, TensorProto.BOOL, attrs, inputs)[0])
    w_rows, w_cols = ((c, w.size // c) if weight_axis == 0 else w.shape) if w is not None else (0, 0)
    dims = np.array([outer, rows, y.shape[1], c, stride, c, w_rows, w_cols, int(weight_axis == 1)], np.int64)
    sums64 = np.asarray(sums, np.int64) if sums is not None else None
    failed = host.OnnxEccHost_IntSampleCheck(_ptr(dims, ctypes.c_int64), _ptr(sums64, ctypes.c_int64),
                                             _ptr(a.view(np.uint8), ctypes.c_uint8),
                                             _ptr(y.view(np.uint8), ctypes.c_uint8),
                                             _ptr(w, ctypes.c_int8), _ptr(bias, ctypes.c_int32))
    assert failed == want_failed == _counts(f"isc{seed} (sample check)")[0]
    assert raised == want_raised == (failed > 0)
