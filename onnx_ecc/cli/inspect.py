"""Show how a model is protected: layers, code, extra parameters and FLOPs, layers left alone."""

from __future__ import annotations

import sys

from onnx_ecc.io import ModelFileError, load_model


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a model written by `onnx-ecc transform`")


def run(args) -> int:
    from onnx_ecc.transform.inspection import format_report

    try:
        model = load_model(args.model)
    except ModelFileError as e:
        print(f"onnx-ecc inspect: error: {e}", file=sys.stderr)
        return 2
    print(format_report(model))
    return 0
