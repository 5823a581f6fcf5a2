"""`onnx-ecc prune MODEL --units LAYER:i,j -o OUT`: remove output units on purpose (zero their weights and bias).

For tests of graceful degradation. LAYER is the layer's node name as `onnx-ecc inspect` shows it,
i,j its output units (channels of a Conv, features of a Gemm/MatMul; ranges i-j allowed; repeat
--units for more layers). In a model protected by `onnx-ecc transform`, the units are recorded as
known erasures of their layer (metadata onnx_ecc.erasures): the layer code rebuilds up to R of
them per block (`onnx-ecc scrub`), and `onnx-ecc inspect` shows the correction power left. The
input file is never overwritten and OUT is written atomically. Exit status: 0 written, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an ONNX model (protected by `onnx-ecc transform`, or not)")
    parser.add_argument("--units", action="append", required=True, metavar="LAYER:i,j",
                        help="output units of one layer to remove (repeatable)")
    parser.add_argument("-o", "--output", required=True, help="where to write the pruned model")


def run(args: argparse.Namespace) -> int:
    from onnx_ecc.io import check_output_path, load_model, save_model
    from onnx_ecc.weights.layer_code import parse_units, prune_units

    try:
        units = parse_units(args.units)
        check_output_path(args.output, inputs=[args.model])
        pruned, recorded = prune_units(load_model(args.model), units)
        save_model(pruned, args.output, inputs=[args.model])
    except (ValueError, OSError) as e:
        print(f"onnx-ecc prune: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    for layer, chosen in units.items():
        note = (f"recorded as erasures (channels {', '.join(map(str, recorded[layer]))})" if recorded[layer]
                else "not recorded (the layer has no layer code)")
        print(f"{layer}: units {', '.join(map(str, chosen))} zeroed, {note}")
    print(f"pruned model written to {args.output}")
    return 0
