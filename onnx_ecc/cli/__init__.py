"""The `onnx-ecc` command line: one module per verb, each with add_arguments() and run()."""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS = {
    "demo": "onnx_ecc.cli.demo",
    "transform": "onnx_ecc.cli.transform",
    "inspect": "onnx_ecc.cli.inspect",
    "scrub": "onnx_ecc.cli.scrub",
    "prune": "onnx_ecc.cli.prune",
    "inject": "onnx_ecc.cli.inject",
    "campaign": "onnx_ecc.cli.campaign",
}


def _broken_verb(name: str, error: Exception):
    """A stand-in for a verb whose module failed to import (say, a missing optional package)."""

    class Stub:
        __doc__ = f"(unavailable: {error})"

        @staticmethod
        def add_arguments(parser):
            parser.add_argument("rest", nargs=argparse.REMAINDER)

        @staticmethod
        def run(args):
            print(f"onnx-ecc {name}: unavailable: {error}", file=sys.stderr)
            return 3

    return Stub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnx-ecc", description="Real-number error correction for ONNX models.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, module_name in VERBS.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 - any import failure becomes a stub verb
            module = _broken_verb(name, e)
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else "", description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
