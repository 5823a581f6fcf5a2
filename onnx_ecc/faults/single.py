"""Single faults for demos and tests: one weight bit flipped, faults baked into one tensor."""

from __future__ import annotations

import numpy as np
import onnx

from onnx_ecc import ops


def flip_weight_bit(model: onnx.ModelProto, tensor: str, index: tuple, bit: int):
    """A copy of ``model`` with one bit of ``tensor[index]`` flipped; also the value before and after."""
    from onnx_ecc.faults.records import Fault, corrupt
    from onnx_ecc.faults.weight_flips import apply_weight_faults

    init = next((i for i in model.graph.initializer if i.name == tensor), None)
    if init is None:
        raise KeyError(f"no initializer named {tensor!r}")
    values = onnx.numpy_helper.to_array(init)
    if values.dtype == np.float16:  # bits 0-9 mantissa, 10-14 exponent, 15 sign
        return _flip_half_bit(model, init.name, values, tuple(int(i) for i in index), bit)
    fault = Fault(target=tensor, index=tuple(int(i) for i in index), kind="bitflip", bit=bit, site="weight")
    before = float(values[tuple(index)])
    return apply_weight_faults(model, [fault]), before, float(corrupt(before, fault))


def _flip_half_bit(model: onnx.ModelProto, name: str, values: np.ndarray, index: tuple, bit: int):
    """flip_weight_bit for a float16 initializer."""
    if not 0 <= bit < 16:
        raise ValueError(f"a float16 value has bits 0-15, not {bit}")
    flipped = values.copy()
    flipped.view(np.uint16)[index] ^= np.uint16(1 << bit)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    init = next(i for i in out.graph.initializer if i.name == name)
    init.CopyFrom(onnx.numpy_helper.from_array(flipped, name))
    return out, float(values[index]), float(flipped[index])


def with_output_fault(model: onnx.ModelProto, tensor: str, seed: int, count: int = 1, bits=(30,),
                      kind: str = "bitflip") -> onnx.ModelProto:
    """A copy of ``model`` whose ``tensor`` passes through an InjectFault node with ``count``
    faults and its seed baked in (campaigns use ``instrument``, which takes the seed as an input).
    The tensor may live in a subgraph (the rerun strategy's decoding branch)."""
    from onnx_ecc.runtime import all_graphs

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = next((sub for sub in all_graphs(out.graph) if any(tensor in n.output for n in sub.node)), None)
    if g is None:
        raise ValueError(f"no node produces {tensor!r}")
    faulty = f"{tensor}__faulty"
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == tensor:
                node.input[i] = faulty
    out.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(seed, np.int64), f"{tensor}__seed"),
                          onnx.numpy_helper.from_array(np.array(0.0, np.float32), f"{tensor}__rate")])
    producer = next(i for i, n in enumerate(g.node) if tensor in n.output)
    g.node.insert(producer + 1, ops.INJECT_FAULT.make_node([tensor, f"{tensor}__seed", f"{tensor}__rate"], [faulty],
                                                          f"inject_{tensor}", kind=kind, bits=list(bits),
                                                          count=count, site=0))
    ops.import_opset(out)
    return out
