"""Fault-injection campaigns: many seeded trials against the original and the protected model.

Why: protection is only worth its cost if, under the same faults, the protected model keeps
its predictions where the original loses them; this module measures exactly that (sweeps over
bit error rates, and a targeted campaign over faults known to corrupt the original).
Mechanism: a Runner holds one onnxruntime session per model whose weights live in numpy
buffers registered with ``SessionOptions.add_initializer`` (prepacking off), so weight faults
are applied in place and undone between trials without rebuilding sessions; output faults use
the InjectFault op driven by seed/rate graph inputs. Trials run on an executor (this process,
local processes or Ray tasks, see executors) and their counts do not depend on which.
"""

from onnx_ecc.campaign.config import (BUILTIN_MODELS, FAULT_TYPES, CampaignError, Config, load_samples, resolve_model,
                                      trial_seed, with_weight_checks)
from onnx_ecc.campaign.runner import Runner
from onnx_ecc.campaign.sweep import read_trials, run_campaign, write_csv
from onnx_ecc.campaign.targeted import TARGETED_CHUNK, TargetedEvaluator, targeted_campaign
from onnx_ecc.campaign.trials import Evaluator

__all__ = ["BUILTIN_MODELS", "FAULT_TYPES", "CampaignError", "Config", "Evaluator", "Runner", "TARGETED_CHUNK",
           "TargetedEvaluator", "load_samples", "read_trials", "resolve_model", "run_campaign", "targeted_campaign",
           "trial_seed", "with_weight_checks", "write_csv"]
