"""`onnx-ecc scrub MODEL -o OUT`: check a model's stored weights against its codes and write a repaired copy.

Both codes are used: the layer code (each protected layer's parity rows P = G W, which rebuild
dead or recorded units and single wrong values per column) and, with `transform --weight-checks`,
the weight codes (l1 decoding of scattered errors), layer code first, in turns.
Exit status: 0 clean (OUT, if given, is a byte-identical copy), 1 repaired (written to OUT),
2 some tensors beyond repair (every other tensor repaired and written to OUT, the ones beyond
repair listed; nothing written when nothing could be repaired), 3 bad input (not a readable ONNX
model, no code to check, bad metadata). The input file is never overwritten; OUT is written to a
temporary file in its directory and moved into place with os.replace, so a reader never sees a
half-written model.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_CLEAN, EXIT_REPAIRED, EXIT_UNCORRECTABLE, EXIT_BAD_INPUT = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the scrub verb's arguments."""
    parser.add_argument("model", help="a model written by `onnx-ecc transform` (optionally with --weight-checks)")
    parser.add_argument("-o", "--output", help="where to write the checked/repaired model")
    parser.add_argument("--report", help="also write the per-tensor report as JSON here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the overall status")


def run(args: argparse.Namespace) -> int:
    """Run the scrub verb; returns the exit status."""
    from onnx_ecc.io import check_output_path, load_model
    from onnx_ecc.weights.repair import Scrub, scrub_model

    try:
        if args.output:
            check_output_path(args.output, inputs=[args.model])
        model = load_model(args.model)
        with open(args.model, "rb") as fh:
            raw = fh.read()
        if Scrub(model).empty:
            raise ValueError("model has no code to check: neither layers protected by `onnx-ecc transform` "
                             "nor onnx_ecc.weight_codes metadata")
        repaired, report = scrub_model(model)
    except Exception as exc:  # noqa: BLE001 - any failure to read the input is "bad input"
        print(f"error: cannot scrub {args.model}: {type(exc).__name__}: {exc}".splitlines()[0],
              file=sys.stderr)
        return EXIT_BAD_INPUT
    from onnx_ecc.io import save_model, write_bytes

    print(f"status: {report.status}" if args.quiet else report.table())
    if args.report:
        write_bytes(args.report, json.dumps(report.to_dict(), indent=2).encode())
    if report.status == "clean":
        if args.output:
            write_bytes(args.output, raw)
        return EXIT_CLEAN
    if report.status == "repaired":
        if args.output:
            save_model(repaired, args.output, inputs=[args.model])
            print(f"repaired model written to {args.output}")
        else:
            print("repaired in memory only (no -o given)")
        return EXIT_REPAIRED
    beyond = ", ".join(report.beyond_repair)
    if repaired is not model and args.output:
        save_model(repaired, args.output, inputs=[args.model])
        print(f"partly repaired model written to {args.output}; beyond repair: {beyond}", file=sys.stderr)
    elif repaired is not model:
        print(f"partly repaired in memory only (no -o given); beyond repair: {beyond}", file=sys.stderr)
    else:
        print(f"beyond repair: {beyond}; nothing could be repaired, nothing written", file=sys.stderr)
    return EXIT_UNCORRECTABLE


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (python -m onnx_ecc.cli.scrub)."""
    parser = argparse.ArgumentParser(prog="onnx-ecc scrub", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
