"""The run that every DeScore trainer shares: accelerate set-up, resume, the seeded step loop, logging, saving, export.

CoT SFT (:mod:`descore.training.sft`), stage 1 (:mod:`descore.training.cold_start`) and stage 2
(:mod:`descore.training.dual_rl`) differ in their data, their forward and their loss. Everything around that is here:
:class:`StageTrainer` checks the output folder, builds the accelerator, resumes from the newest checkpoint (refusing a
changed data layout), runs the step loop (each step reseeds torch from (seed, step, rank), then the trainer's step
function runs; periodic evaluation, ``metrics.jsonl``, trackers, progress bar, checkpoints and callbacks follow), and
exports the final model, LoRA merged, to ``output_dir/final``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from descore.config import CONFIG_NAME
from descore.errors import ConfigError
from descore.evaluation import PairEvaluation
from descore.pairs import PairDataset
from descore.scoring import DeScore
from descore.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from descore.training.data import FrameStore

logger = logging.getLogger(__name__)

FINAL_NAME = "final"
METRICS_NAME = "metrics.jsonl"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------------- set-up
def make_accelerator(config: Any) -> Any:
    """An Accelerator for this run. accelerate keeps one process-wide state; in a single process (a notebook, a test
    session) an earlier run with another mixed precision is forgotten instead of refusing this one."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    kwargs = {
        "mixed_precision": config.mixed_precision,
        "log_with": config.log_with or None,
        "project_dir": config.output_dir,
    }
    try:
        return Accelerator(**kwargs)
    except ValueError as err:
        if PartialState().num_processes > 1:
            raise ConfigError(f"{config.label}: mixed_precision={config.mixed_precision!r}: {err}") from None
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


def make_scheduler(config: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The config's learning-rate schedule over ``total_steps`` optimizer steps, after ``warmup_ratio`` warmup."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[config.lr_scheduler]
    warmup = round(config.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def make_adamw(config: Any, model: nn.Module, separate_head: bool = True) -> torch.optim.AdamW:
    """AdamW over the trainable parameters with the config's betas, epsilon and weight decay. With
    ``separate_head`` the head gets a group of its own at ``head_learning_rate`` (default ``learning_rate``); a
    config with ``vision_learning_rate`` set gives the vision tower its own group instead."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    vision_lr = getattr(config, "vision_learning_rate", None)
    if vision_lr is not None:
        vision_ids = {id(p) for p in model.backbone.model.visual.parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in vision_ids], "lr": config.learning_rate},
            {"params": [p for p in trainable if id(p) in vision_ids], "lr": vision_lr},
        ]
    elif separate_head:
        head = [p for p in model.score_head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        groups = [
            {"params": [p for p in trainable if id(p) not in head_ids], "lr": config.learning_rate},
            {"params": head, "lr": config.head_learning_rate or config.learning_rate},
        ]
    else:
        groups = [{"params": trainable, "lr": config.learning_rate}]
    return torch.optim.AdamW(
        groups,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )


def load_scorer(config: Any) -> DeScore:
    """``config.model`` as it is (a DeScore checkpoint) or a base Qwen-VL checkpoint turned into a new DeScore model
    with ``config.model_config``, frozen weights in ``config.model_dtype``."""
    if config.model is None:
        raise ConfigError(f"{config.label}: model is required (or pass a DeScore instance to the trainer)")
    path = Path(config.model)
    dtype = DTYPES[config.model_dtype]
    if (path / CONFIG_NAME).is_file():
        if config.model_config:
            raise ConfigError(
                f"{config.label}: model_config applies to base Qwen-VL checkpoints, but {path} is a DeScore "
                "checkpoint whose settings stand"
            )
        return DeScore.from_pretrained(path, dtype=dtype)
    return DeScore.from_base_model(path, config.model_config, dtype=dtype)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends a chain of thought: ``<|im_end|>``, else the tokenizer's eos."""
    token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    if token_id is None:
        raise ConfigError(
            "the tokenizer has neither <|im_end|> nor an eos token to end a chain of thought with"
        )
    return int(token_id)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one process: every random source is a function of (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def to_device(inputs: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """``inputs`` with every tensor moved to ``device`` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_modes(
    modes: Sequence[str], pairs: PairDataset, evaluate: Callable[[str], PairEvaluation]
) -> dict[str, PairEvaluation]:
    """``evaluate(mode)`` for every mode, skipping ``given_cot`` when the pairs carry no CoT."""
    results: dict[str, PairEvaluation] = {}
    for mode in modes:
        if mode == "given_cot" and not pairs.has_cot:
            logger.info("eval file has no CoT_A / CoT_B: skipping given_cot evaluation")
            continue
        results[mode] = evaluate(mode)
    return results


def pair_eval_metrics(evaluations: dict[str, PairEvaluation], dimension: str) -> dict[str, float]:
    """Logged pair accuracies (without and with ties) and tie thresholds of every evaluation mode."""
    out = {}
    for mode, evaluation in evaluations.items():
        report = evaluation.dimensions[dimension]
        out[f"eval/{mode}/accuracy"] = report.without_ties.accuracy
        out[f"eval/{mode}/accuracy_with_ties"] = report.with_ties.accuracy
        out[f"eval/{mode}/tie_threshold"] = report.with_ties.epsilon
    return out


# ---------------------------------------------------------------------------------------------------- metrics file
def read_metrics(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-step records of ``metrics.jsonl`` in ``output_dir`` (evaluation-only records included)."""
    path = Path(output_dir) / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def _truncate_metrics(path: Path, step: int) -> None:
    """Forget logged steps after ``step`` (they are about to be re-run after a resume)."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in config.items()}


# ---------------------------------------------------------------------------------------------------- the run
@dataclass
class RunResult:
    """What every run produces: the trained model (in memory and on disk) and its step count."""

    scorer: DeScore
    final_dir: Path
    steps: int


@dataclass
class Run:
    """The prepared pieces of one run: the accelerator, the trained model and its (wrapped) forward, optimizer,
    scheduler, what the data order depends on (checked on resume), and the number of steps."""

    accelerator: Any
    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data_state: dict[str, Any]
    total_steps: int

    def grad_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Gradient accumulation: no DDP synchronisation except on the last micro-batch of an update."""
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.forward)

    def optimizer_step(self, max_grad_norm: float | None) -> float:
        """Clip (when ``max_grad_norm`` is set), step the optimizer and the schedule, clear the gradients; returns
        the gradient norm before clipping (NaN without clipping)."""
        grad_norm = math.nan
        if max_grad_norm is not None:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.forward.parameters(), max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm


class StageTrainer:
    """Base of the DeScore trainers. ``scorer`` (optional) is the model to start from instead of ``config.model``;
    ``callbacks`` are called as ``callback(step, metrics)`` after every step (``step`` counts from 1).

    A subclass sets ``progress_desc`` (the progress bar's label) and ``resume_hint`` (what must stay the same for an
    exact resume) and writes ``train`` from the pieces below.
    """

    progress_desc: ClassVar[str] = "training"
    resume_hint: ClassVar[str] = "the same data and batch settings"

    def __init__(
        self,
        config: Any,
        scorer: DeScore | None = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    ):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self._scorer = scorer
        self.callbacks = list(callbacks)

    # ------------------------------------------------------------------ set-up
    def _check_output_dir(self) -> Path | None:
        """The checkpoint to resume from; refuse to overwrite a run's checkpoints without ``resume``."""
        found = latest_checkpoint(self.output_dir)
        if found is not None and not self.config.resume:
            raise ConfigError(
                f"{self.output_dir} already holds training checkpoints ({found.name}); set resume: true to "
                "continue, or choose another output_dir"
            )
        return found

    def _load_scorer(self) -> DeScore:
        return load_scorer(self.config)

    def _begin(self) -> tuple[Path | None, Any, DeScore]:
        """The checkpoint to resume from, the accelerator, and the model to train (torch seeded with ``seed`` first,
        so that new weights such as LoRA's are a function of the seed)."""
        resume_from = self._check_output_dir()
        accelerator = make_accelerator(self.config)
        torch.manual_seed(self.config.seed)
        scorer = self._scorer if self._scorer is not None else self._load_scorer()
        return resume_from, accelerator, scorer

    def _decode_frames(self, accelerator: Any, scorer: DeScore, videos: Sequence[Path]) -> FrameStore:
        """Every video decoded once (the main process first, so that a ``video_cache_dir`` is filled once)."""
        cfg = self.config
        frames = FrameStore(scorer.model.config.sampling, cfg.video_cache_dir)
        with accelerator.main_process_first():
            frames.add_all(
                videos, scorer.load_video, progress=cfg.progress and accelerator.is_local_main_process
            )
        return frames

    def _start(self, run: Run, resume_from: Path | None) -> int:
        """Resume from ``resume_from`` (if any), forget metrics logged after it, start the trackers; the first step."""
        start = 0
        if resume_from is not None:
            start = self._resume(run, resume_from)
        if run.accelerator.is_main_process:
            _truncate_metrics(self.output_dir / METRICS_NAME, start)
        run.accelerator.init_trackers(self.config.project_name, config=_flat(self.config.to_dict()))
        return start

    def _resume(self, run: Run, path: Path) -> int:
        """Restore a checkpoint written by :meth:`_save` and return its step; refuse a changed data layout."""
        state = load_checkpoint(path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler)
        saved = state.get("data", {})
        changed = {k: (saved.get(k), v) for k, v in run.data_state.items() if saved.get(k) != v}
        if changed:
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(
                f"{path}: cannot resume exactly: the data or batch layout changed ({listing}); use "
                f"{self.resume_hint}, or start a new output_dir"
            )
        scaler = run.accelerator.scaler
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        return int(state["step"])

    # ------------------------------------------------------------------ the loop
    def _run_steps(
        self,
        run: Run,
        start: int,
        train_step: Callable[[int], dict[str, float]],
        postfix: Callable[[dict[str, float]], dict[str, str]],
        evaluate: Callable[[], Any] | None = None,
        eval_metrics: Callable[[Any], dict[str, float]] | None = None,
    ) -> tuple[list[dict[str, float]], Any]:
        """Steps ``start`` to ``total_steps``: reseed, ``train_step(step)`` (its metrics), evaluate every
        ``eval_every`` steps, log, save every ``save_every`` steps, call back; then the final evaluation. Returns
        the per-step metrics and the last evaluation (``{}`` without ``evaluate``)."""
        cfg, accelerator = self.config, run.accelerator
        history: list[dict[str, float]] = []
        evaluation: Any = {}
        bar = tqdm(
            total=run.total_steps,
            initial=start,
            desc=self.progress_desc,
            unit="step",
            disable=not (cfg.progress and accelerator.is_local_main_process),
        )
        run.forward.train()
        for step in range(start, run.total_steps):
            torch.manual_seed(step_seed(cfg.seed, step, accelerator.process_index))
            metrics = train_step(step)
            done = step + 1
            if (
                evaluate is not None
                and cfg.eval_every
                and done % cfg.eval_every == 0
                and done < run.total_steps
            ):
                evaluation = evaluate()
                metrics.update(eval_metrics(evaluation))
            history.append(metrics)
            self._log(accelerator, metrics)
            bar.update(1)
            bar.set_postfix(**postfix(metrics), refresh=False)
            if cfg.save_every and done % cfg.save_every == 0 and done < run.total_steps:
                self._save(run, done)
            for callback in self.callbacks:
                callback(done, metrics)
        bar.close()
        if evaluate is not None:
            evaluation = evaluate()
            self._log(accelerator, {"step": run.total_steps, **eval_metrics(evaluation)})
        return history, evaluation

    @staticmethod
    def _on_main_process(accelerator: Any, forward: nn.Module, evaluate: Callable[[], dict]) -> dict:
        """``evaluate()`` on the main process with ``forward`` in eval mode (``{}`` elsewhere); all processes wait."""
        result: dict = {}
        if accelerator.is_main_process:
            forward.eval()
            result = evaluate()
            forward.train()
        accelerator.wait_for_everyone()
        return result

    def _log(self, accelerator: Any, metrics: dict[str, float]) -> None:
        """Log ``metrics`` to the trackers and append them to ``output_dir/metrics.jsonl``."""
        accelerator.log(metrics, step=int(metrics["step"]))
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / METRICS_NAME, "a") as handle:
                handle.write(json.dumps({k: _json_number(v) for k, v in metrics.items()}) + "\n")

    def _save(self, run: Run, step: int) -> None:
        """Write ``checkpoint-<step>`` (config, data layout, grad scaler) atomically, on the main process."""
        accelerator = run.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(
                self.output_dir,
                step,
                model=run.model,
                optimizer=run.optimizer,
                scheduler=run.scheduler,
                state={
                    "config": self.config.to_dict(),
                    "data": run.data_state,
                    "grad_scaler": accelerator.scaler.state_dict()
                    if accelerator.scaler is not None
                    else None,
                },
                keep_last=self.config.save_total_limit,
            )
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ the end
    def _finish(self, accelerator: Any, scorer: DeScore, peft_model: Any) -> Path:
        """Export the model (:meth:`_export`) and close the trackers; returns ``output_dir/final``."""
        final_dir = self._export(accelerator, scorer, peft_model)
        accelerator.end_training()
        return final_dir

    def _export(self, accelerator: Any, scorer: DeScore, peft_model: Any) -> Path:
        """Merge LoRA (if any, and the query row) into the weights and write a plain DeScore checkpoint to
        ``output_dir/final`` atomically, frozen weights back in ``model_dtype``."""
        cfg = self.config
        final = self.output_dir / FINAL_NAME
        accelerator.wait_for_everyone()
        backbone = scorer.model.backbone
        if peft_model is not None and peft_model.merge_and_unload() is not backbone:
            raise RuntimeError("peft returned a different backbone object after merging")
        if cfg.gradient_checkpointing:
            backbone.activation_checkpointing_disable()
        backbone.to(DTYPES[cfg.model_dtype])
        scorer.model.requires_grad_(False)
        scorer.model.eval()
        if accelerator.is_main_process:
            partial = self.output_dir / f".{FINAL_NAME}.partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            scorer.save_pretrained(partial)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            logger.info("wrote the DeScore model to %s", final)
        accelerator.wait_for_everyone()
        return final
