"""Options of the protecting transform, in one small dataclass."""

from __future__ import annotations

import dataclasses

WEIGHT_LAYER_OPS = ("Gemm", "MatMul", "Conv")      # layers whose second input is a weight
SUPPORTED_OPS = WEIGHT_LAYER_OPS + ("Einsum",)    # Einsum: products of two activations
MODES = ("correct", "detect")
STRATEGIES = ("inline", "rerun")
LAYER_MODES = ("check", "decode", "none")
CONV_CHECKS = ("auto", "sample", "sum")
FILTER_CHECKS = ("parity", "sums")
DEVICES = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class TransformOptions:
    """How to protect a model.

    parity: checks per block (2 corrects one wrong value per block and output vector).
    block: output channels per block; short blocks locate errors better, long ones cost less.
    mode: 'correct' (locate and repair) or 'detect' (report only).
    ops: op types to protect.
    tolerance: threshold multiplier over the float32 rounding bound of each check; None
        calibrates it per layer to ``margin`` x the largest clean syndrome seen on random inputs.
    margin: safety factor of the calibrated tolerance over the clean noise.
    scale: what thresholds scale with: 'output' (the largest value of the block in each output
        vector, found in the decoder's single pass) or 'input' (max|x| of each sample's layer input,
        a rigorous bound that costs one more pass over the input).
    fail_stop: decoders return an error when a block cannot be corrected.
    absorb_activation: fold a following Relu into the decoder (one pass less).
    verify: refuse a result that does not reproduce the original outputs on random inputs.
    weight_checks: l1-decodable weight codes on the protected layers' weights (0: none): a count of
        checks per block of 8192 values (int, or a string like "1000"), or a rate of each weight's
        memory (float in (0, 1), or a string like "5%") that the layer code's parity rows count
        toward (onnx_ecc.weights.sizing); normalised to an int count or a float rate.
    depthwise: check depthwise convolutions too (their check costs about as much as the layer).
    strategy: 'inline' decodes every protected layer's output on every run; 'rerun' keeps the
        original convolutions on the fast path with a cheap sum check each (which onnxruntime's
        blocked layout keeps fast) and recomputes through the decoding graph only on runs
        where a check fires. Gemm / MatMul layers are decoded inline in both.
    separate_parity: compute a layer's parity in a second Conv / Gemm / MatMul that shares nothing
        with the data weights (set by the rerun strategy, so the weights are stored once and a
        fault in them reaches the decoding graph too).
    conv_check: how the rerun strategy's fast path checks a conv: 'sample' (a strided copy of the
        conv recomputes every ``sample_stride``-th row and column, compared with the original's
        fused output and checked against parity filters; the original conv chain stays fused),
        'sum' (a sum check of the whole output, which unfuses the conv's activation and sees an
        error anywhere), or 'auto' ('sum' where that is cheap - a Relu or no activation - and
        'sample' for depthwise convs and convs with a ReLU6 / LeakyRelu). 'sample' is the default:
        it is the cheapest, but sees a transient error only at sampled positions and a corrupted
        weight only where its input is non-zero at a sampled position (README: coverage).
    sample_stride: rows and columns between sampled positions of 'sample' checks.
    filter_checks: how a 'sample' check sees a corrupted weight of a conv: 'sums' (SampleCheck
        reads the conv's own filters and bias on every run and compares each output channel's sum
        with the one stored at transform time: every corrupted weight above rounding is seen, for
        one read of the weights) or 'parity' (parity filters in the strided copy, which see a
        corrupted weight only where its inputs are non-zero at a sampled position). Depthwise
        convs always use sums (their parity filters would be a dense conv).
    layer_modes: per-layer choice, (layer name, mode) pairs: 'check' (rerun strategy: the layer
        runs as in the original with a cheap check on the fast path, and is decoded only in the
        recomputation), 'decode' (decoded inline on every run) or 'none' (left unprotected).
        Layers not named get 'check' under the rerun strategy and 'decode' under inline; this
        is what ``--budget`` chooses.
    budget: latency ratio to the original (e.g. 1.10) within which to protect the layers that
        carry the most risk per unit of cost, measured on this machine (onnx_ecc.transform.budget);
        implies the rerun strategy and chooses layer_modes. None: protect every layer.
    budget_batch: batch size the budget is measured at.
    budget_weight_share: weight of a layer's share of the parameters (memory faults) in its risk,
        against its share of the layer outputs (compute faults).
    device: the execution provider the rerun strategy's fast path is built for. 'cpu' checks a
        float32 Gemm / MatMul and a product of two activations with one CPU node each
        (LinearCheck, ProductCheck: the parity computed in the kernel from the layer's input);
        'cuda' uses only ops that have CUDA kernels (a parity product and a ParityCheck), so
        that no check copies a layer's output to the host.
    """

    parity: int = 2
    block: int = 32
    mode: str = "correct"
    ops: tuple[str, ...] = SUPPORTED_OPS
    tolerance: float | None = None
    margin: float = 32.0
    scale: str = "output"
    depthwise_tolerance: float = 16.0
    fail_stop: bool = False
    absorb_activation: bool = True
    verify: bool = True
    weight_checks: int | float | str = 0
    depthwise: bool = True
    seed: int = 0
    strategy: str = "inline"
    separate_parity: bool = False
    conv_check: str = "sample"
    sample_stride: int = 8
    filter_checks: str = "sums"
    layer_modes: tuple[tuple[str, str], ...] = ()
    budget: float | None = None
    budget_batch: int = 8
    budget_weight_share: float = 0.5
    device: str = "cpu"

    def __post_init__(self):
        if self.parity < 1 or self.parity > 16:
            raise ValueError(f"parity must be in [1, 16], got {self.parity}")
        if self.block < 1 or self.block > 1024:
            raise ValueError(f"block must be in [1, 1024], got {self.block}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        unknown = set(self.ops) - set(SUPPORTED_OPS)
        if unknown:
            raise ValueError(f"unsupported op type(s) {sorted(unknown)}; choose from {SUPPORTED_OPS}")
        if (self.tolerance is not None and self.tolerance <= 0) or self.depthwise_tolerance <= 0 or self.margin <= 0:
            raise ValueError("tolerance must be > 0")
        if self.scale not in ("output", "input"):
            raise ValueError(f"scale must be 'output' or 'input', got {self.scale!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.conv_check not in CONV_CHECKS:
            raise ValueError(f"conv_check must be one of {CONV_CHECKS}, got {self.conv_check!r}")
        if self.filter_checks not in FILTER_CHECKS:
            raise ValueError(f"filter_checks must be one of {FILTER_CHECKS}, got {self.filter_checks!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.sample_stride < 2:
            raise ValueError(f"sample_stride must be >= 2, got {self.sample_stride}")
        bad = sorted({m for _, m in self.layer_modes} - set(LAYER_MODES))
        if bad:
            raise ValueError(f"layer modes must be among {LAYER_MODES}, got {bad}")
        if self.budget is not None:
            if not self.budget >= 1.0:
                raise ValueError(f"budget must be a latency ratio >= 1 (e.g. 1.10), got {self.budget}")
            if self.layer_modes:
                raise ValueError("give either a budget or layer_modes, not both")
        if self.budget_batch < 1 or not 0.0 <= self.budget_weight_share <= 1.0:
            raise ValueError("budget_batch must be >= 1 and budget_weight_share in [0, 1]")
        from onnx_ecc.weights.sizing import parse_weight_checks

        object.__setattr__(self, "weight_checks", parse_weight_checks(self.weight_checks))

    def mode_of(self, layer: str) -> str:
        """How ``layer`` is protected: its entry in layer_modes, else the strategy's default."""
        for name, mode in self.layer_modes:
            if name == layer:
                return mode
        return "check" if self.strategy == "rerun" else "decode"
