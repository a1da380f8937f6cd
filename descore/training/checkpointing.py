"""Atomic training checkpoints: trainable weights, optimizer and scheduler state, trainer state; nothing pickled.

A checkpoint is a folder ``checkpoint-<step>`` in the output directory holding

* ``trainable.safetensors``: every parameter with ``requires_grad`` (LoRA matrices, the query-token row, the head,
  the vision tower when it is trained), by parameter name;
* ``optimizer.safetensors``: the optimizer's per-parameter tensors (AdamW moments and step counts), flattened as
  ``state.<param index>.<name>``; its hyperparameters go to ``trainer_state.json``;
* ``trainer_state.json``: step, scheduler state, optimizer hyperparameters, metric history and what the data order
  depends on.

It is written to a temporary folder and renamed into place (``os.replace``), so a crash never leaves a folder that
looks complete; :func:`latest_checkpoint` only considers renamed folders that hold ``trainer_state.json``. There are
no RNG states to save: the trainer reseeds every random source from (seed, step) at each step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from descore.errors import CheckpointError

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
WEIGHTS_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "trainer_state.json"
_PATTERN = re.compile(rf"^{PREFIX}(\d+)$")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name, detached, contiguous, on CPU."""
    return {
        name: param.detach().to("cpu").contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def checkpoint_step(path: Path) -> int | None:
    match = _PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and checkpoint_step(p) is not None and (p / STATE_NAME).is_file()
    ]
    return sorted(found, key=lambda p: checkpoint_step(p))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (None if there is none)."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically and keep only the ``keep_last`` newest checkpoints (all if None)."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    partial = root / f".{final.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        save_file(trainable_state(model), str(partial / WEIGHTS_NAME), metadata={"format": "pt"})
        tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(partial / OPTIMIZER_NAME), metadata={"format": "pt"})
        payload = {**state, "step": step, "scheduler": scheduler.state_dict(), "optimizer": optimizer_meta}
        (partial / STATE_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        if final.exists():  # a re-run of this step: move the old one aside, then replace it
            stale = root / f".{final.name}.stale-{os.getpid()}"
            os.replace(final, stale)
            shutil.rmtree(stale)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("saved %s", final)
    if keep_last is not None:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint."""
    file = Path(path) / STATE_NAME
    if not file.is_file():
        raise CheckpointError(f"{path}: not a complete training checkpoint ({STATE_NAME} is missing)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}: invalid JSON ({err})") from err


def load_checkpoint(
    path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore trainable weights (strictly: same names and shapes), optimizer and scheduler; return the state."""
    path = Path(path)
    state = read_state(path)
    for name in (WEIGHTS_NAME, OPTIMIZER_NAME):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is missing")
    weights = load_file(str(path / WEIGHTS_NAME))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    wrong = sorted(n for n in set(params) & set(weights) if tuple(params[n].shape) != tuple(weights[n].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: trainable weights do not match the model being trained (different LoRA settings, "
            f"freeze_vision or backbone?): missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / OPTIMIZER_NAME)), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state
