"""The rerun strategy: fast-path checks and the decoding branch."""

from __future__ import annotations


def with_checks(model, graph, checks: list, flag) -> tuple:
    """(the model of ``graph`` with the original's fields, the placed checks, the last check's
    flag name or None): what each add_*_checks returns."""
    import onnx_graphsurgeon as gs

    from onnx_ecc.transform import _restore_model_fields

    graph.toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    _restore_model_fields(model, out)
    return out, checks, flag.name if flag is not None else None
