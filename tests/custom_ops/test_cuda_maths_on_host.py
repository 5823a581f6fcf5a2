"""The CUDA kernels' maths, compiled for the host, against the CPU kernels and the numpy oracles.

custom_ops/cuda/device_math.cuh holds the per-item work of every CUDA kernel as __host__
__device__ functions; custom_ops/cuda/host_emulation.cc runs them item by item. This test
compiles that file with the host's C++ compiler (as the CPU library is compiled: no FMA
contraction) and checks, on random layouts and faults, that it gives what the CPU kernels give,
bit for bit, so that the GPU and CPU builds cannot drift apart unseen on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_ecc
from onnx_ecc import ops
from onnx_ecc.codes import Layout
from onnx_ecc.ops.oracles import chunk_max_abs, decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "custom_ops" / "cuda" / "host_emulation.cc"
F32, I64, U64 = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_ulonglong)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The host build of the CUDA maths, loaded with ctypes."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None or not SOURCE.is_file():
        pytest.skip("no host C++ compiler (or the sources are not in this checkout)")
    out = tmp_path_factory.mktemp("cuda_host") / "libonnx_ecc_cuda_host.so"
    subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", "-shared", "-fPIC",
                    f"-I{ROOT / 'custom_ops' / 'cuda'}", f"-I{ROOT / 'custom_ops' / 'include'}", str(SOURCE),
                    "-o", str(out)], check=True, capture_output=True)
    lib = ctypes.CDLL(str(out))
    lib.OnnxEccHost_Decode.argtypes = [I64, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_int, F32, F32, F32,
                                       F32, F32, F32, F32, ctypes.c_int, U64, ctypes.POINTER(ctypes.c_int),
                                       ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint)]
    lib.OnnxEccHost_Depthwise.argtypes = [I64, ctypes.c_float, ctypes.c_int, ctypes.c_int, F32, F32,
                                          ctypes.POINTER(ctypes.c_double), F32, F32, F32, U64]
    lib.OnnxEccHost_Inject.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int64,
                                       ctypes.c_int64, F32, F32, ctypes.c_int64, ctypes.c_uint64, ctypes.c_double]
    lib.OnnxEccHost_Inject.restype = ctypes.c_int64
    lib.OnnxEccHost_ParityCheck.argtypes = [I64, ctypes.c_float, F32, F32, F32, F32, F32]
    lib.OnnxEccHost_ParityCheck.restype = ctypes.c_int64
    lib.OnnxEccHost_SampleCheck.argtypes = [I64, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_double,
                                            ctypes.c_float, ctypes.c_float] + [F32] * 9
    lib.OnnxEccHost_SampleCheck.restype = ctypes.c_int64
    return lib


def _ptr(a, kind=ctypes.c_float):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(kind))


def _f32(values):
    return np.ascontiguousarray(values, dtype=np.float32)


def _cpu(decl, inputs, feeds, attrs, types=None):
    """Run one of our ops on the CPU provider; returns its first output."""
    types = types or {}
    node = decl.make_node(list(inputs), ["Z"], "op", **attrs)
    out_type = TensorProto.BOOL if decl in (ops.PARITY_CHECK, ops.SAMPLE_CHECK) else TensorProto.FLOAT
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), None)
                                            for n in inputs if n], [helper.make_tensor_value_info("Z", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)],
                              ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), onnx_ecc.session_options(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _counts(model_id, layer):
    """(flagged, corrected blocks, uncorrectable) counted for a layer (one that never ran flags none)."""
    c = onnx_ecc.read_counters(model_id).get(layer)
    return (c.flagged, c.corrected_blocks, c.uncorrectable) if c is not None else (0, 0, 0)


@pytest.mark.parametrize("seed", range(24))
def test_decode_on_the_host_equals_the_cpu_kernel_bit_for_bit(host, seed):
    rng = np.random.default_rng(500 + seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    layout = Layout(int(rng.integers(1, 40)) * groups, int(rng.integers(1, 33)), int(rng.integers(1, 6)), groups)
    channels_last = bool(rng.integers(2))
    outer = int(rng.integers(1, 4))
    inner_shape = () if channels_last else (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    data = rng.standard_normal((outer, layout.data_channels) + inner_shape)
    rows = np.moveaxis(data, 1, 0).reshape(layout.data_channels, -1)
    y = _f32(np.moveaxis(layout.augment_rows(rows).reshape((layout.total_channels, outer) + inner_shape), 0, 1))
    flat = y.reshape(-1)
    hits = rng.choice(flat.size, size=int(rng.integers(0, max(flat.size // 4, 1))), replace=False)
    kinds = rng.integers(0, 4, size=hits.size)
    flat[hits] = np.where(kinds == 0, np.nan, np.where(kinds == 1, flat[hits] * 1e20,
                          np.where(kinds == 2, flat[hits] + rng.normal(0, 5, hits.size), 0.0))).astype(np.float32)
    scale = str(rng.choice(["output", "input"]))
    x = _f32(rng.standard_normal((outer, 7)))
    residual = _f32(rng.standard_normal((outer, layout.data_channels) + inner_shape)) if rng.integers(2) else None
    n = layout.groups * len(layout.block_sizes) * layout.parity
    attrs = dict(axis=1, data_channels=layout.data_channels, groups=layout.groups, block=layout.block,
                 parity=layout.parity, generator=layout.generator_attribute(),
                 noise_gain=[float(v) for v in rng.uniform(1, 60, n)], noise_offset=[float(v) for v in rng.uniform(0, 2, n)],
                 tolerance=float(rng.choice([2.0, 4.0, 64.0])), mode=str(rng.choice(["correct", "detect"])),
                 activation=str(rng.choice(["", "Relu"])), scale=scale, layer=f"host{seed}", model_id="cuda-host")
    # odd seeds: known erasures (up to parity per block, data and parity channels), solved first
    tpg, nb = layout.total_channels // layout.groups, len(layout.block_sizes)
    er_count = np.zeros(layout.groups * nb, np.int32)
    er_pos = np.zeros(layout.groups * nb * 16, np.int32)
    erasures = []
    for gk in range(layout.groups * nb if seed % 2 else 0):
        g, k = divmod(gk, nb)
        b = layout.block_sizes[k]
        chosen = sorted(rng.choice(b + layout.parity, size=int(rng.integers(0, layout.parity + 1)), replace=False))
        er_count[gk] = len(chosen)
        er_pos[gk * 16: gk * 16 + len(chosen)] = chosen
        erasures += [g * tpg + (k * layout.block + q if q < b else layout.data_per_group + k * layout.parity + q - b)
                     for q in chosen]
    if erasures:
        attrs["erasures"] = sorted(int(c) for c in erasures)
    inputs = ["Y", "X" if scale == "input" else "", "R" if residual is not None else ""]
    feeds = {"Y": y, **({"X": x} if scale == "input" else {}), **({"R": residual} if residual is not None else {})}
    cpu = _cpu(ops.DECODE, inputs, feeds, attrs)
    marks = {}
    want, counts = decode(y, x if scale == "input" else None, residual, **attrs, marks=marks)

    inner = int(np.prod(inner_shape)) if inner_shape else 1
    dims = np.array([outer, inner, layout.groups, layout.data_per_group, layout.parity_per_group,
                     layout.total_channels, layout.data_channels, len(layout.block_sizes), layout.block,
                     layout.parity], np.int64)
    xmax = _f32(chunk_max_abs(x, outer)) if scale == "input" else None
    z = np.zeros_like(cpu)
    totals = np.zeros(4, np.uint64)
    host_marks = np.zeros(2 * layout.total_channels, np.uint32)
    gen, gain, offset = _f32(attrs["generator"]), _f32(attrs["noise_gain"]), _f32(attrs["noise_offset"])
    host.OnnxEccHost_Decode(_ptr(dims, ctypes.c_int64), attrs["tolerance"], int(attrs["mode"] == "correct"),
                            int(attrs["activation"] == "Relu"), int(scale == "output"), _ptr(gen), _ptr(gain),
                            _ptr(offset), _ptr(y), _ptr(residual), _ptr(z), _ptr(xmax), 1, _ptr(totals, ctypes.c_ulonglong),
                            _ptr(er_count, ctypes.c_int) if erasures else None, _ptr(er_pos, ctypes.c_int),
                            _ptr(host_marks, ctypes.c_uint))
    np.testing.assert_array_equal(z, cpu)  # NaN where the CPU has NaN, every other value the same bits
    assert set(np.flatnonzero(host_marks[:layout.total_channels])) == marks["located"]
    assert set(np.flatnonzero(host_marks[layout.total_channels:])) == marks["disagree"]
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)
    assert (int(totals[0]), int(totals[1]), int(totals[3])) == _counts("cuda-host", f"host{seed}") \
        == (counts["flagged"], counts["corrected_blocks"], counts["uncorrectable"])


@pytest.mark.parametrize("strides,pads,dil,relu", [((1, 1), (1, 1, 1, 1), (1, 1), False),
                                                   ((2, 2), (1, 1, 1, 1), (1, 1), True),
                                                   ((1, 2), (0, 2, 1, 0), (2, 1), False)])
def test_depthwise_check_on_the_host_equals_the_cpu_kernel(host, strides, pads, dil, relu):
    rng = np.random.default_rng(sum(strides) + sum(pads))
    c, h, w = 6, 11, 9
    wt, b = _f32(rng.standard_normal((c, 1, 3, 3))), _f32(rng.standard_normal(c))
    x = _f32(rng.standard_normal((2, c, h, w)))
    hout = (h + pads[0] + pads[2] - dil[0] * 2 - 1) // strides[0] + 1
    wout = (w + pads[1] + pads[3] - dil[1] * 2 - 1) // strides[1] + 1
    y = _f32(rng.standard_normal((2, c, hout, wout)))  # not the conv: every row is wrong and repaired
    y[0, 2, 1, 1] = np.nan
    sums = wt.reshape(c, -1).astype(np.float64).sum(1) + b
    attrs = dict(weights=onnx.numpy_helper.from_array(wt), bias=onnx.numpy_helper.from_array(b),
                 weight_sums=sums.tolist(), strides=list(strides), pads=list(pads), dilations=list(dil),
                 tolerance=16.0, activation="Relu" if relu else "", layer=f"dw{strides}{pads}{dil}{relu}",
                 model_id="cuda-host-dw")
    cpu = _cpu(ops.DEPTHWISE_CHECK, ["X", "Y"], {"X": x, "Y": y}, attrs)
    dims = np.array([2, c, h, w, hout, wout, 3, 3, strides[0], strides[1], pads[0], pads[1], pads[2], pads[3],
                     dil[0], dil[1]], np.int64)
    z, totals = np.zeros_like(cpu), np.zeros(4, np.uint64)
    host.OnnxEccHost_Depthwise(_ptr(dims, ctypes.c_int64), 16.0, 1, int(relu), _ptr(wt), _ptr(b),
                               _ptr(np.ascontiguousarray(sums), ctypes.c_double), _ptr(x), _ptr(y), _ptr(z),
                               _ptr(totals, ctypes.c_ulonglong))
    np.testing.assert_array_equal(z, cpu)
    assert int(totals[0]) == _counts("cuda-host-dw", attrs["layer"])[0] > 0


@pytest.mark.parametrize("kind,count,rate", [("bitflip", 5, 0.0), ("bitflip", 0, 0.01), ("random", 0, 0.05),
                                             ("zero", 3, 0.0), ("bitflip", 0, 1.0), ("random", 0, 1.0)])
def test_fault_injection_on_the_host_equals_the_cpu_kernel(host, kind, count, rate):
    """Same seed and site, same faults: campaigns give the same trials on either provider."""
    x = _f32(np.random.default_rng(1).standard_normal(4000))
    bits = [30, 23, 31, 2]
    attrs = dict(kind=kind, bits=bits, count=count, site=7)
    cpu = _cpu(ops.INJECT_FAULT, ["X", "Seed", "Rate"],
               {"X": x, "Seed": np.array(99, np.int64), "Rate": np.array(rate, np.float32)}, attrs,
               {"Seed": TensorProto.INT64})
    y = np.zeros_like(x)
    kinds = {"bitflip": 0, "random": 1, "zero": 2}
    faults = host.OnnxEccHost_Inject(kinds[kind], (ctypes.c_int * len(bits))(*bits), len(bits), count, 7, _ptr(x),
                                     _ptr(y), x.size, 99, float(np.float32(rate)))
    np.testing.assert_array_equal(y.view(np.uint32), cpu.view(np.uint32))
    assert faults > 0 and (y.view(np.uint32) != x.view(np.uint32)).sum() > 0


@pytest.mark.parametrize("seed", range(6))
def test_parity_check_on_the_host_fails_the_blocks_the_cpu_kernel_fails(host, seed):
    rng = np.random.default_rng(seed)
    layout = Layout(int(rng.integers(4, 70)), int(rng.integers(4, 33)), int(rng.integers(1, 4)))
    rows = int(rng.integers(2, 30))
    y = _f32(rng.standard_normal((rows, layout.data_channels)))
    p = _f32(y.astype(np.float64) @ layout.parity_matrix().T)
    bad = rng.choice(rows, size=int(rng.integers(0, rows)), replace=False)
    y[bad, rng.integers(0, layout.data_channels, bad.size)] += np.float32(0.5)
    n = len(layout.block_sizes) * layout.parity
    attrs = dict(axis=-1, data_channels=layout.data_channels, block=layout.block, parity=layout.parity,
                 generator=layout.generator_attribute(), noise_gain=[4.0] * n, noise_offset=[0.0] * n,
                 tolerance=16.0, layer=f"pc{seed}", model_id="cuda-host-pc")
    raised = bool(_cpu(ops.PARITY_CHECK, ["Y", "P"], {"Y": y, "P": p}, attrs)[0])
    dims = np.array([rows, 1, 1, layout.data_channels, len(layout.block_sizes), layout.block, layout.parity], np.int64)
    gen, gain, offset = _f32(attrs["generator"]), _f32(attrs["noise_gain"]), _f32(attrs["noise_offset"])
    failed = host.OnnxEccHost_ParityCheck(_ptr(dims, ctypes.c_int64), 16.0, _ptr(gen), _ptr(gain), _ptr(offset),
                                          _ptr(y), _ptr(p))
    assert failed == _counts("cuda-host-pc", f"pc{seed} (parity check)")[0]
    assert raised == (failed > 0) == (bad.size > 0)


ACTIVATIONS = {"": (0, []), "Relu": (1, []), "Clip": (2, [0.0, 6.0]), "LeakyRelu": (3, [0.1])}


@pytest.mark.parametrize("seed", range(16))
def test_sample_check_on_the_host_fails_the_samples_the_cpu_kernel_fails(host, seed):
    from onnx_ecc.transform.strategies.sample_check import filter_sums

    rng = np.random.default_rng(900 + seed)
    n, c, h, w = int(rng.integers(1, 5)), int(rng.integers(2, 24)), int(rng.integers(1, 5)), int(rng.integers(1, 6))
    activation = str(rng.choice(list(ACTIVATIONS)))
    act, params = ACTIVATIONS[activation]
    with_parity, with_residual = bool(rng.integers(2)), bool(rng.integers(2))
    y = _f32(rng.standard_normal((n, c, h, w)) * 3)
    r = _f32(rng.standard_normal((n, c, h, w))) if with_residual else None
    from onnx_ecc.ops.oracles import _activate

    a = _f32(_activate((y + r).astype(np.float32) if with_residual else y, activation, params))
    attrs = dict(data_channels=c, activation=activation, tolerance=8.0, layer=f"sc{seed}", model_id="cuda-host-sc",
                 **({"activation_params": params} if params else {}))
    layout = Layout(c, int(rng.integers(2, 9)), int(rng.integers(1, 3)))
    if with_parity:
        parity = _f32(np.einsum("pc,nchw->nphw", layout.parity_matrix(), y.astype(np.float64)))
        y_in = np.ascontiguousarray(np.concatenate([y, parity], axis=1))
        k = len(layout.block_sizes) * layout.parity
        attrs.update(block=layout.block, parity=layout.parity, generator=layout.generator_attribute(),
                     noise_gain=layout.output_noise_gains(), noise_offset=[0.0] * k, parity_tolerance=16.0)
        filters = bias = None
    else:
        y_in = y
        filters, bias = _f32(rng.standard_normal((c, 1, 3, 3))), _f32(rng.standard_normal(c))
        attrs["filter_sums"] = filter_sums(filters, bias)
    for _ in range(int(rng.integers(0, 4))):  # faults: a wrong sample, a NaN, a corrupted filter or parity
        i = tuple(int(rng.integers(s)) for s in a.shape)
        kind = int(rng.integers(3))
        if kind == 0:
            a[i] += np.float32(rng.choice([1e-6, 0.5, 1e30]))
        elif kind == 1:
            a[i] = np.nan
        elif filters is not None:
            filters[int(rng.integers(c)), 0, 1, 1] *= np.float32(1.5)
        else:
            y_in[i[0], c + int(rng.integers(y_in.shape[1] - c)), i[2], i[3]] += np.float32(2.0)
    inputs = ["A", "Y", "W" if filters is not None else "", "R" if r is not None else "", "",
              "Bias" if bias is not None else ""]
    feeds = {"A": a, "Y": y_in, **({"W": filters, "Bias": bias} if filters is not None else {}),
             **({"R": r} if r is not None else {})}
    raised = bool(_cpu(ops.SAMPLE_CHECK, inputs, feeds, attrs)[0])
    dims = np.array([n, c, y_in.shape[1] - c, h * w, 9 if filters is not None else 0,
                     len(layout.block_sizes) if with_parity else 0, layout.block, layout.parity if with_parity else 0],
                    np.int64)
    code = [_f32(attrs[k]) if with_parity else None for k in ("generator", "noise_gain", "noise_offset")]
    sums = _f32(attrs["filter_sums"]) if filters is not None else None
    failed = host.OnnxEccHost_SampleCheck(_ptr(dims, ctypes.c_int64), act, *(params + [0.0, 0.0])[:2], 8.0, 16.0,
                                          8.0, *(_ptr(v) for v in code), _ptr(sums), _ptr(a), _ptr(y_in),
                                          _ptr(filters), _ptr(r), _ptr(bias))
    assert failed == _counts("cuda-host-sc", f"sc{seed} (sample check)")[0]
    assert raised == (failed > 0)
