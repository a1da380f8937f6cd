"""Training DeScore reward models: stage 1 (discriminative cold start) on preference pairs.

``ColdStartConfig`` holds every setting (YAML keys are its fields), ``ColdStartTrainer`` runs it with accelerate, and
``descore train cold-start --config FILE`` is the command line. See :mod:`descore.training.cold_start`.
"""

from descore.training.cold_start import (
    ColdStartConfig,
    ColdStartTrainer,
    TrainResult,
    add_lora,
    read_metrics,
    train_cold_start,
)

__all__ = [
    "ColdStartConfig",
    "ColdStartTrainer",
    "TrainResult",
    "add_lora",
    "read_metrics",
    "train_cold_start",
]
