"""The C++ op table against the Python declarations, so that the two cannot drift apart.

custom_ops/include/onnx_ecc/op_table.h lists every op the library registers: its name, inputs and
outputs (type, optional), the defaults of its float attributes, and whether it has a CPU and a
CUDA kernel. The library exports it as JSON (OnnxEcc_OpTableJson); these tests compare it with
onnx_ecc.ops, whose declarations the graph pass emits nodes from and the ONNX schemas are
registered from.
"""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest
from onnx import defs

import onnx_ecc
from onnx_ecc import ops


def _table() -> dict:
    lib = ctypes.CDLL(onnx_ecc.library_path())
    export = lib.OnnxEcc_OpTableJson
    export.restype = ctypes.c_size_t
    export.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    size = export(None, 0)
    buf = ctypes.create_string_buffer(size)
    export(buf, size)
    return json.loads(buf.value.decode())


@pytest.fixture(scope="module")
def table() -> dict:
    return _table()


@pytest.fixture(scope="module")
def by_name(table) -> dict:
    return {op["name"]: op for op in table["ops"]}


def test_the_library_registers_exactly_the_declared_ops_in_the_declared_domain(table):
    assert table["domain"] == ops.DOMAIN
    names = [op["name"] for op in table["ops"]]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(decl.name for decl in ops.ALL_OPS)
    assert all(op["has_cpu"] for op in table["ops"])  # every op runs on the CPU provider


@pytest.mark.parametrize("decl", ops.ALL_OPS, ids=lambda d: d.name)
def test_inputs_and_outputs_are_the_declared_ones(by_name, decl):
    op = by_name[decl.name]
    assert [(p["name"], p["optional"]) for p in op["inputs"]] == list(decl.inputs)
    assert [(p["name"], p["optional"]) for p in op["outputs"]] == list(decl.outputs)


@pytest.mark.parametrize("decl", ops.ALL_OPS, ids=lambda d: d.name)
def test_input_and_output_types_are_those_of_the_registered_schema(by_name, decl):
    op = by_name[decl.name]
    schema = defs.get_schema(decl.name, ops.OPSET_VERSION, ops.DOMAIN)
    allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
    for ports, formals in ((op["inputs"], schema.inputs), (op["outputs"], schema.outputs)):
        assert [allowed[f.type_str] for f in formals] == [[f"tensor({t})" for t in p["type"].split("|")] for p in ports]


@pytest.mark.parametrize("decl", ops.ALL_OPS, ids=lambda d: d.name)
def test_float_attribute_defaults_are_the_declared_ones(by_name, decl):
    """The C++ parsers read every float attribute with the table's default (TableAttrFloat)."""
    declared = {a.name: float(np.float32(a.default)) for a in decl.attrs
                if a.kind == defs.OpSchema.AttrType.FLOAT and a.default is not None}
    assert by_name[decl.name]["defaults"] == declared


def test_the_default_tolerance_is_the_python_one(by_name):
    assert by_name[ops.DECODE.name]["defaults"]["tolerance"] == ops.DEFAULT_TOLERANCE


@pytest.mark.parametrize("decl", ops.ALL_OPS, ids=lambda d: d.name)
def test_int_attribute_defaults_the_table_lists_are_the_declared_ones(by_name, decl):
    """The int attributes whose default the C++ parsers take from the table (TableAttrInt)."""
    for name, value in by_name[decl.name]["int_defaults"].items():
        assert decl.attr(name).kind == defs.OpSchema.AttrType.INT and decl.attr(name).default == value


def test_decode_learns_erasures_after_the_declared_number_of_runs(by_name):
    assert by_name[ops.DECODE.name]["int_defaults"] == {"learn_after": ops.LEARN_AFTER}


def test_every_op_but_the_cpu_checks_has_a_cuda_kernel_and_the_host_inputs_are_the_scalars(table):
    """The table's CUDA column: SumCheck, ProductCheck and LinearCheck alone run on the CPU under the CUDA
    provider (a transform for CUDA does not emit the last two: TransformOptions.device); the CUDA
    kernels read InjectFault's Seed and Rate and Im2ColNhwc's PadValue from host memory."""
    assert {op["name"] for op in table["ops"] if not op["has_cuda"]} == {ops.SUM_CHECK.name, ops.PRODUCT_CHECK.name,
                                                                            ops.LINEAR_CHECK.name}
    host = {(op["name"], p["name"]) for op in table["ops"] for p in op["inputs"] if p["host"]}
    assert host == {(ops.INJECT_FAULT.name, "Seed"), (ops.INJECT_FAULT.name, "Rate"), (ops.IM2COL_NHWC.name, "PadValue")}
