"""Trained-in weight codes: train an MLP whose chosen layer satisfies H w = 0, export it to ONNX.

The constraint costs nothing at inference and stores nothing but the code description: after
every optimizer step the constrained weight is projected onto {w : H_b w_b = 0 for every block}
(w <- w - H^T (H H^T)^{-1} H w, just w - H^T H w for the orthonormal dct family), in float64.
The projected flattening is the row-major flattening of the ONNX initializer: ``export_onnx``
writes torch ``Linear.weight`` ([out, in]) unchanged into a ``Gemm(transB=1)`` initializer, so the
two orders agree; export repeats the projection in float64, rounds to float32 and verifies the
code with ``check_tensor`` (it must come back "clean") before writing the metadata
(mode "trained", no parity initializer).

torch is an optional dependency (extra ``train``); it is imported lazily.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_ecc.zoo.torch_modules import _torch
from onnx_ecc.zoo.training import fit

from .model import check_tensor, make_entry, project_weights, read_weight_codes, write_weight_codes

IR_VERSION = 10
OPSET = 17


@dataclasses.dataclass
class Constraint:
    """Which Linear layer (index in the MLP) carries which trained-in code."""

    layer: int = -1
    family: str = "dct"
    checks: int | None = 1000
    fraction: float | None = None
    seed: int = 0
    block_size: int = 8192


def build_mlp(sizes=(784, 512, 10), seed: int = 0):
    """A ReLU MLP (torch.nn.Sequential) with seeded initialisation."""
    torch = _torch()
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _linears(model) -> list:
    torch = _torch()
    return [m for m in model if isinstance(m, torch.nn.Linear)]


def _entry_for(weight: np.ndarray, name: str, c: Constraint) -> dict:
    return make_entry(name, weight.astype(np.float32), mode="trained", family=c.family, seed=c.seed,
                      checks=c.checks, fraction=c.fraction, block_size=c.block_size)


def project_linear(linear, entry: dict) -> None:
    """Project a Linear layer's weight (row-major [out, in]) onto the code's null space, in place."""
    torch = _torch()
    with torch.no_grad():
        w = linear.weight.detach().cpu().numpy().reshape(-1)
        p = project_weights(w, entry)
        linear.weight.copy_(torch.from_numpy(p.reshape(linear.weight.shape)).to(linear.weight.dtype))


def train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    constraint: Constraint | None = None,
    sizes=(784, 512, 10),
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
):
    """Train the MLP with Adam; with a constraint, project the chosen layer after every step."""
    model = build_mlp(sizes, seed)
    layer = _linears(model)[constraint.layer] if constraint else None
    entry = _entry_for(layer.weight.detach().numpy(), "constrained", constraint) if constraint else None
    if layer is not None:
        project_linear(layer, entry)
    x = np.asarray(x_train, np.float32).reshape(len(x_train), -1)
    after = (lambda: project_linear(layer, entry)) if layer is not None else None
    fit(model, x, y_train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, after_step=after)
    return model


def export_onnx(model, constraint: Constraint | None = None, *, input_name: str = "x") -> onnx.ModelProto:
    """Write the MLP as Gemm(transB=1)/Relu nodes; the constrained weight gets a verified trained-in code."""
    torch = _torch()
    nodes, inits = [], []
    linears = _linears(model)
    target = linears[constraint.layer] if constraint else None
    entries = []
    current = input_name
    for i, mod in enumerate(model):
        if isinstance(mod, torch.nn.Linear):
            wname, bname, out = f"fc{i}.weight", f"fc{i}.bias", f"fc{i}.out"
            w = mod.weight.detach().cpu().numpy().astype(np.float64)
            if mod is target:
                spec = _entry_for(w.astype(np.float32), wname, constraint)
                w = project_weights(w.reshape(-1), spec).reshape(w.shape)
                entry = _entry_for(w.astype(np.float32), wname, constraint)
                entry["source"] = "torch.nn.Linear.weight [out, in] = Gemm(transB=1) B, row-major"
                report, _ = check_tensor(w.astype(np.float32).reshape(-1), entry)
                if report.status != "clean":
                    raise RuntimeError(f"exported weight {wname} does not satisfy its code")
                entries.append(entry)
            inits.append(numpy_helper.from_array(w.astype(np.float32), wname))
            inits.append(numpy_helper.from_array(mod.bias.detach().cpu().numpy().astype(np.float32), bname))
            nodes.append(helper.make_node("Gemm", [current, wname, bname], [out], transB=1))
        elif isinstance(mod, torch.nn.ReLU):
            out = f"relu{i}.out"
            nodes.append(helper.make_node("Relu", [current], [out]))
        else:
            raise ValueError(f"cannot export module {type(mod).__name__}")
        current = out
    nodes.append(helper.make_node("Identity", [current], ["logits"]))
    sizes = (linears[0].in_features, linears[-1].out_features)
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", sizes[1]])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="onnx_ecc.weights.trained_in")
    if entries:
        write_weight_codes(proto, read_weight_codes(proto) + entries)
    onnx.checker.check_model(proto)
    return proto


def onnx_logits(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run the exported model with onnxruntime on CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, np.float32).reshape(len(x), -1)})[0]


def accuracy(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the exported model (onnxruntime)."""
    return float(np.mean(onnx_logits(proto, x).argmax(axis=1) == np.asarray(y)))
