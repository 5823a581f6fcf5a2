"""Weight memory ECC: real-number linear checks on stored weights, l1 decoding, model scrubbing."""

from .codes import FAMILIES, CheckMatrix, check_matrix
from .decode import DecodeResult, decode_block, l1_decode_lp, solve_sparse, syndrome_tolerance
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
    scrub_model,
    write_weight_codes,
)
from .scrubber import WeightScrubber

__all__ = [
    "FAMILIES", "CheckMatrix", "check_matrix", "DecodeResult", "decode_block", "l1_decode_lp",
    "solve_sparse", "syndrome_tolerance", "METADATA_KEY", "ScrubReport", "TensorReport",
    "add_weight_checks", "check_tensor", "default_weight_tensors", "make_entry",
    "project_weights", "read_weight_codes", "scrub_model", "write_weight_codes", "WeightScrubber",
]
