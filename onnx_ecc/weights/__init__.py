"""Weight memory ECC: real-number linear checks on stored weights, l1 decoding, model scrubbing."""

from .check_matrices import FAMILIES, CheckMatrix, check_matrix
from .decode import DecodeResult, decode_weight_block, l1_decode_lp, repair_bound, solve_sparse, syndrome_tolerance
from .model import (
    METADATA_KEY,
    ScrubReport,
    TensorReport,
    add_weight_checks,
    check_tensor,
    default_weight_tensors,
    make_entry,
    project_weights,
    read_weight_codes,
    write_weight_codes,
)
from .repair import Scrub, scrub_model
from .scrubber import WeightScrubber
from .sizing import LayerRows, layer_rows, parse_weight_checks, tensor_memory

__all__ = [
    "FAMILIES", "CheckMatrix", "check_matrix", "DecodeResult", "decode_weight_block", "l1_decode_lp", "repair_bound",
    "solve_sparse", "syndrome_tolerance", "METADATA_KEY", "ScrubReport", "TensorReport",
    "add_weight_checks", "check_tensor", "default_weight_tensors", "make_entry",
    "project_weights", "read_weight_codes", "scrub_model", "write_weight_codes", "WeightScrubber", "Scrub",
    "LayerRows", "layer_rows", "parse_weight_checks", "tensor_memory",
]
