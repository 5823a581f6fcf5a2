"""`onnx-ecc scrub MODEL -o OUT`: check a model's weight codes and write a repaired copy.

Exit status: 0 clean (OUT, if given, is a byte-identical copy), 1 repaired (written to OUT),
2 beyond repair (nothing written), 3 bad input (not a readable ONNX model / bad code metadata).
The input file is never overwritten; OUT is written to a temporary file in its directory and
moved into place with os.replace, so a reader never sees a half-written model.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_CLEAN, EXIT_REPAIRED, EXIT_UNCORRECTABLE, EXIT_BAD_INPUT = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the scrub verb's arguments."""
    parser.add_argument("model", help="protected ONNX model (see add_weight_checks)")
    parser.add_argument("-o", "--output", help="where to write the checked/repaired model")
    parser.add_argument("--report", help="also write the per-tensor report as JSON here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the overall status")


def run(args: argparse.Namespace) -> int:
    """Run the scrub verb; returns the exit status."""
    from onnx_ecc.io import check_output_path, load_model
    from onnx_ecc.weights.model import read_weight_codes, scrub_model

    try:
        if args.output:
            check_output_path(args.output, inputs=[args.model])
        model = load_model(args.model)
        with open(args.model, "rb") as fh:
            raw = fh.read()
        if not read_weight_codes(model):
            raise ValueError("model has no onnx_ecc.weight_codes metadata (run add_weight_checks)")
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
    print("beyond repair: nothing written", file=sys.stderr)
    return EXIT_UNCORRECTABLE


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (python -m onnx_ecc.cli.scrub)."""
    parser = argparse.ArgumentParser(prog="onnx-ecc scrub", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
