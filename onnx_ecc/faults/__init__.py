"""Fault models for campaigns: typed fault records, weight (memory) faults, computational faults.

Mechanism (applying a Fault to an array or a graph) is kept apart from the fault models
(which faults to draw, seeded), as in pytorchfi.
"""

from onnx_ecc.faults.compute import (Site, compute_faults, fault_feeds, injected_counts, instrument, layer_names,
                                     map_output_index, read_sites, seed_for_fault)
from onnx_ecc.faults.records import KINDS, SITES, Fault, corrupt, faults_from_json, faults_to_json
from onnx_ecc.faults.weight_flips import (BIT_PRESETS, ChannelMap, WeightFaultSpec, apply_in_place, apply_weight_faults,
                                     draw_weight_faults, layer_weight_names, original_names, parse_bits, restore,
                                     target_names, to_original, to_protected, weight_maps)

__all__ = ["Fault", "KINDS", "SITES", "corrupt", "faults_to_json", "faults_from_json",
           "WeightFaultSpec", "BIT_PRESETS", "parse_bits", "draw_weight_faults", "apply_weight_faults",
           "apply_in_place", "restore", "layer_weight_names", "target_names", "weight_maps", "original_names", "ChannelMap",
           "to_protected", "to_original", "instrument", "Site", "read_sites", "fault_feeds", "compute_faults",
           "seed_for_fault", "map_output_index", "injected_counts", "layer_names"]
