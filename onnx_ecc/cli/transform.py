"""Protect a model: add parity outputs and decoders to its Gemm / MatMul / Conv layers.

The output model runs in onnxruntime with onnx-ecc's library registered, corrects up to
floor(parity/2) wrong values per block of each output vector and reports larger errors.
It is written only if it reproduces the original model's outputs on random inputs.
"""

from __future__ import annotations

import sys

from onnx_ecc.io import ModelFileError, check_output_path, load_model, save_model
from onnx_ecc.transform.options import CONV_CHECKS, DEVICES, FILTER_CHECKS, SUPPORTED_OPS


def add_arguments(parser) -> None:
    parser.add_argument("model", help="input ONNX model (never modified)")
    parser.add_argument("-o", "--output", required=True, help="where to write the protected model")
    parser.add_argument("--parity", type=int, default=2, help="checks per block (default 2: corrects 1 error per block)")
    parser.add_argument("--block", type=int, default=32, help="output channels per block (default 32)")
    parser.add_argument("--mode", choices=["correct", "detect"], default="correct")
    parser.add_argument("--ops", default=",".join(SUPPORTED_OPS), help="op types to protect (comma-separated)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="fixed threshold multiplier (default: calibrated per layer)")
    parser.add_argument("--margin", type=float, default=32.0, help="safety factor of calibrated thresholds")
    parser.add_argument("--strategy", choices=["inline", "rerun"], default="inline",
                        help="inline: decode every run; rerun: check layers on the fast path (the layers as in "
                             "the original) and decode only runs where a check fails")
    parser.add_argument("--conv-check", choices=list(CONV_CHECKS), default="sample",
                        help="rerun strategy's conv check: sample (a strided copy compared at every "
                             "--sample-stride-th row and column; keeps onnxruntime's conv fusions; default), "
                             "sum (the whole output's sum; sees an error anywhere, unfuses the activation) or "
                             "auto (sum after a Relu or no activation, sample for depthwise and ReLU6 convs)")
    parser.add_argument("--sample-stride", type=int, default=8, help="rows and columns between sampled positions (default 8)")
    parser.add_argument("--filter-checks", choices=list(FILTER_CHECKS), default="sums",
                        help="how a sample check sees a corrupted conv weight: 'sums' (each output channel's "
                             "stored filter sum compared on every run; default) or 'parity' (parity filters in "
                             "the strided copy: blind where the weight's inputs are zero at every sample)")
    parser.add_argument("--device", choices=list(DEVICES), default="cpu",
                        help="execution provider the rerun strategy's checks are built for: cpu (one CPU node "
                             "per Gemm / MatMul check; default) or cuda (only ops with CUDA kernels)")
    parser.add_argument("--budget", type=float, default=None, metavar="RATIO",
                        help="latency budget as a ratio to the original (e.g. 1.10): measure each layer's cost "
                             "here and protect the layers with the most risk per cost that fit (rerun strategy)")
    parser.add_argument("--budget-batch", type=int, default=8, help="batch size the budget is measured at (default 8)")
    parser.add_argument("--fail-stop", action="store_true", help="raise an error on uncorrectable blocks")
    parser.add_argument("--no-depthwise", action="store_true",
                        help="leave depthwise convolutions alone (their check costs about as much as the layer)")
    parser.add_argument("--no-absorb", action="store_true", help="do not fold a following Relu into the decoder")
    parser.add_argument("--weight-checks", default="0", metavar="M|R%",
                        help="l1-decodable weight codes for `onnx-ecc scrub`: M checks per block of 8192 weights, "
                             "or a rate R%% of each weight's memory that the layer code's parity rows count toward "
                             "(e.g. 5%%); 0: none (default)")
    parser.add_argument("--no-verify", action="store_true", help="skip the check against the original outputs")


def run(args) -> int:
    from onnx_ecc.transform.inspection import format_report
    from onnx_ecc.transform import TransformError, TransformOptions, transform
    from onnx_ecc.transform.verification import VerificationError

    try:
        options = TransformOptions(parity=args.parity, block=args.block, mode=args.mode,
                                   ops=tuple(o.strip() for o in args.ops.split(",") if o.strip()),
                                   tolerance=args.tolerance, margin=args.margin, fail_stop=args.fail_stop,
                                   absorb_activation=not args.no_absorb, verify=not args.no_verify,
                                   weight_checks=args.weight_checks, depthwise=not args.no_depthwise,
                                   strategy=args.strategy, conv_check=args.conv_check,
                                   sample_stride=args.sample_stride, filter_checks=args.filter_checks, budget=args.budget,
                                   budget_batch=args.budget_batch, device=args.device)
        check_output_path(args.output, inputs=[args.model])
        model = load_model(args.model)
        protected = transform(model, options)
        save_model(protected, args.output, inputs=[args.model])
    except (ModelFileError, TransformError, VerificationError, ValueError) as e:
        print(f"onnx-ecc transform: error: {e}", file=sys.stderr)
        return 2
    print(format_report(protected))
    print(f"wrote {args.output}")
    return 0
