"""Stage 1, discriminative cold start: LoRA + query token + head trained with a Bradley-Terry loss on pairs.

Each pair gives two sequences (video A and video B, same prompt) laid out as at inference
(``user [video, judge instruction] / assistant [CoT][query token]``). With probability ``cot_mask_prob`` the CoT of
both videos is dropped (one draw per pair), so the head learns to score from the video as well as from the CoT and
can score without any CoT afterwards. ``cot_mask_prob: 1.0`` trains a purely discriminative (think-free) reward model
on the same data: the baseline to compare against.

What is trained: LoRA on the language model's linear layers (never the vision tower's), the query token's embedding
row only (peft's ``trainable_token_indices``), the head, and the vision tower and merger when ``freeze_vision`` is
false (as in the reference). ``lm_loss_weight`` adds a language-model loss on the kept CoT tokens (and the end of
turn after them): Bradley-Terry training alone can destroy a small model's ability to write its CoT, which stage 2
and think-then-score inference need.

Determinism and resume: the data order, the CoT draws and every random source are functions of (seed, step), and a
checkpoint holds trainable weights, optimizer and scheduler state, so resuming from step ``s`` gives the losses of an
uninterrupted run. The final model is exported with LoRA merged, as a plain DeScore checkpoint
(:meth:`descore.scoring.DeScore.from_pretrained` loads it); intermediate checkpoints keep the adapters unmerged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from descore.config import CONFIG_NAME
from descore.errors import ConfigError, DataError
from descore.evaluation import PairEvaluation, evaluate_with
from descore.inputs import cot_token_ids
from descore.losses import pair_loss
from descore.metrics import ScoringInput
from descore.modeling import DeScoreModel
from descore.pairs import PairDataset, load_pairs
from descore.scoring import DeScore
from descore.training.checkpointing import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from descore.training.config import config_from_dict, load_yaml_config
from descore.training.data import (
    FrameStore,
    PairBatch,
    PairSchedule,
    RowSpec,
    collate_pairs,
    encode_rows,
    tokenize_pairs,
)

logger = logging.getLogger(__name__)

#: Linear layers of the Qwen-VL language models (attention and MLP); LoRA is restricted to the language model, since
#: Qwen2.5-VL's vision blocks use the same MLP names.
LANGUAGE_MODEL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FINAL_NAME = "final"
METRICS_NAME = "metrics.jsonl"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _help(text: str, required: bool = False) -> dict[str, Any]:
    return {"help": text, "required": required}


@dataclass
class ColdStartConfig:
    """Stage-1 settings. Defaults follow the reference recipe (LoRA r 64 / alpha 128, lr 2e-6, 5% warmup, 4 epochs)."""

    # -- model and data
    model: str | None = field(
        default=None,
        metadata=_help(
            "DeScore checkpoint or base Qwen-VL checkpoint folder to start from (a base gets a query token and head)"
        ),
    )
    model_config: dict = field(
        default_factory=dict,
        metadata=_help(
            "DeScoreConfig fields for a model started from a base Qwen-VL checkpoint (sampling, template, ...)"
        ),
    )
    model_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata=_help("dtype of the frozen weights; trainable weights are always float32")
    )
    train_file: str = field(
        default="",
        metadata=_help(
            "preference pairs to train on (CSV / JSONL; CoT_A and CoT_B unless cot_mask_prob is 1)",
            required=True,
        ),
    )
    eval_file: str | None = field(
        default=None, metadata=_help("held-out pairs evaluated every eval_every steps and at the end")
    )
    video_root: str | None = field(
        default=None,
        metadata=_help("folder relative video paths resolve against (default: each file's folder)"),
    )
    dimension: str | None = field(
        default=None, metadata=_help("label column to train on (required when the file has several)")
    )
    output_dir: str = field(
        default="",
        metadata=_help(
            "where checkpoints, metrics.jsonl and the final model (final/) are written", required=True
        ),
    )
    video_cache_dir: str | None = field(
        default=None,
        metadata=_help("folder for decoded frames (reused by later runs); None keeps them in memory"),
    )
    # -- what is trained
    lora_r: int = field(default=64, metadata=_help("LoRA rank"))
    lora_alpha: float = field(default=128.0, metadata=_help("LoRA scaling numerator (scale = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA input"))
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LANGUAGE_MODEL_LINEAR),
        metadata=_help("names of the language model's linear layers that get LoRA"),
    )
    freeze_vision: bool = field(
        default=False, metadata=_help("keep the vision tower and merger frozen (false: fully trainable)")
    )
    # -- optimisation
    learning_rate: float = field(
        default=2e-6, metadata=_help("AdamW learning rate (LoRA, query row, vision tower)")
    )
    head_learning_rate: float | None = field(
        default=None, metadata=_help("learning rate of the head (default: learning_rate)")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon"))
    max_grad_norm: float | None = field(
        default=1.0, metadata=_help("gradient clipping norm (None: no clipping)")
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = field(
        default="constant", metadata=_help("schedule after warmup")
    )
    warmup_ratio: float = field(default=0.05, metadata=_help("share of the steps with linear warmup"))
    num_epochs: float = field(
        default=4.0, metadata=_help("passes over the training pairs (ignored when max_steps is set)")
    )
    max_steps: int | None = field(
        default=None, metadata=_help("optimizer steps to run (overrides num_epochs)")
    )
    batch_size: int = field(
        default=1, metadata=_help("pairs per micro-batch per process (each pair is two sequences)")
    )
    gradient_accumulation_steps: int = field(default=4, metadata=_help("micro-batches per optimizer step"))
    # -- the objective
    cot_mask_prob: float = field(
        default=0.5,
        metadata=_help(
            "probability of dropping the CoT of both videos of a pair; 1.0 = think-free discriminative baseline"
        ),
    )
    ties: Literal["drop", "bt_ties"] = field(
        default="drop", metadata=_help("drop tied pairs, or train on them with BT-with-ties")
    )
    tie_k: float = field(default=5.0, metadata=_help("tie parameter of BT-with-ties (VideoAlign uses 5)"))
    lm_loss_weight: float = field(
        default=0.0,
        metadata=_help(
            "weight of a language-model loss on the kept CoT tokens (keeps a small model able to write its CoT)"
        ),
    )
    max_cot_tokens: int | None = field(
        default=None, metadata=_help("cut longer chains of thought to this many tokens")
    )
    # -- machinery
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="bf16", metadata=_help("accelerate mixed precision")
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("activation checkpointing in the backbone (less memory, ~30% slower)")
    )
    eval_every: int = field(
        default=0, metadata=_help("evaluate on eval_file every this many steps (0: at the end only)")
    )
    eval_modes: list[str] = field(
        default_factory=lambda: ["no_think", "given_cot"],
        metadata=_help("evaluation modes: no_think (think-free), given_cot (the file's CoT)"),
    )
    eval_batch_size: int = field(default=8, metadata=_help("sequences per evaluation batch"))
    save_every: int = field(
        default=500, metadata=_help("write a checkpoint every this many steps (0: never)")
    )
    save_total_limit: int | None = field(
        default=2, metadata=_help("keep only the newest checkpoints (None: keep all)")
    )
    log_with: list[str] = field(
        default_factory=list,
        metadata=_help("accelerate trackers (tensorboard, wandb, ...); metrics.jsonl is always written"),
    )
    project_name: str = field(default="descore-cold-start", metadata=_help("tracker project name"))
    seed: int = field(default=0, metadata=_help("seed of the data order, the CoT draws, LoRA init, dropout"))
    resume: bool = field(default=False, metadata=_help("continue from the newest checkpoint in output_dir"))
    progress: bool = field(default=True, metadata=_help("show progress bars"))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        if not self.train_file:
            problems.append("train_file is required")
        if not self.output_dir:
            problems.append("output_dir is required")
        checks = [
            ("lora_r", self.lora_r >= 1, ">= 1"),
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("lora_target_modules", bool(self.lora_target_modules), "a non-empty list"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("head_learning_rate", self.head_learning_rate is None or self.head_learning_rate > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("adam_beta1", 0 <= self.adam_beta1 < 1, "in [0, 1)"),
            ("adam_beta2", 0 <= self.adam_beta2 < 1, "in [0, 1)"),
            ("adam_epsilon", self.adam_epsilon > 0, "> 0"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "> 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("num_epochs", self.num_epochs > 0, "> 0"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, ">= 1"),
            ("cot_mask_prob", 0 <= self.cot_mask_prob <= 1, "in [0, 1]"),
            ("tie_k", self.tie_k > 1, "> 1"),
            ("lm_loss_weight", self.lm_loss_weight >= 0, ">= 0"),
            ("max_cot_tokens", self.max_cot_tokens is None or self.max_cot_tokens >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ("save_every", self.save_every >= 0, ">= 0"),
            ("save_total_limit", self.save_total_limit is None or self.save_total_limit >= 1, ">= 1"),
        ]
        problems += [
            f"{name} must be {rule}, got {getattr(self, name)!r}" for name, ok, rule in checks if not ok
        ]
        bad_modes = [m for m in self.eval_modes if m not in ("no_think", "given_cot")]
        if bad_modes:
            problems.append(
                f"eval_modes {bad_modes} not allowed during training; use no_think and/or given_cot"
            )
        if self.lm_loss_weight > 0 and self.cot_mask_prob >= 1:
            problems.append(
                "lm_loss_weight > 0 needs chains of thought to learn from: cot_mask_prob must be < 1"
            )
        if self.model_dtype != "float32" and self.mixed_precision == "no":
            problems.append(
                f"model_dtype {self.model_dtype} needs mixed_precision bf16 or fp16 (trainable weights are float32)"
            )
        if problems:
            raise ConfigError("cold-start config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "cold-start config") -> ColdStartConfig:
        return config_from_dict(cls, data, where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> ColdStartConfig:
        return load_yaml_config(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a run produced: the merged model (in memory and on disk), step count and the last evaluation."""

    scorer: DeScore
    final_dir: Path
    steps: int
    evaluations: dict[str, PairEvaluation]
    history: list[dict[str, float]]


class _PairForward(nn.Module):
    """The training forward: rewards at the query token of every row and, optionally, the CoT language-model loss.

    A module of its own so that accelerate / DDP wrap the whole computation (gradients are synchronised through it).
    """

    def __init__(self, model: DeScoreModel, with_lm: bool):
        super().__init__()
        self.model = model
        self.with_lm = with_lm

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        lm_rows: torch.Tensor,
        lm_cols: torch.Tensor,
        lm_targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**inputs)
        hidden, rewards = out.last_hidden_state, out.rewards[:, 0]
        if not self.with_lm or lm_targets.numel() == 0:
            return rewards, rewards.new_zeros(())
        logits = self.model.backbone.lm_head(hidden[lm_rows, lm_cols])
        return rewards, F.cross_entropy(logits.float(), lm_targets)


def _load_scorer(config: ColdStartConfig) -> DeScore:
    """A DeScore checkpoint as it is, or a base Qwen-VL checkpoint turned into a new DeScore model."""
    if config.model is None:
        raise ConfigError("cold-start config: model is required (or pass a DeScore instance to the trainer)")
    path = Path(config.model)
    dtype = _DTYPES[config.model_dtype]
    if (path / CONFIG_NAME).is_file():
        if config.model_config:
            raise ConfigError(
                f"cold-start config: model_config applies to base Qwen-VL checkpoints, but {path} is a DeScore "
                "checkpoint whose settings stand"
            )
        return DeScore.from_pretrained(path, dtype=dtype)
    return DeScore.from_base_model(path, config.model_config, dtype=dtype)


def add_lora(scorer: DeScore, config: ColdStartConfig) -> Any:
    """Put LoRA on the language model's linear layers and make the query row, the head (and the vision tower unless
    frozen) trainable, in place. Returns the peft model that owns the adapters (for merging)."""
    from peft import LoraConfig, get_peft_model

    backbone = scorer.model.backbone
    names = "|".join(sorted(set(config.lora_target_modules)))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=rf".*\blanguage_model\..*\.({names})",
        trainable_token_indices=[scorer.model.query_token_id],
        bias="none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers accessor
        try:
            peft_model = get_peft_model(backbone, lora)
        except ValueError as err:
            raise ConfigError(
                f"cold-start config: lora_target_modules {config.lora_target_modules}: {err}"
            ) from None
    if not config.freeze_vision:
        for param in backbone.model.visual.parameters():
            param.requires_grad_(True)
    scorer.model.score_head.requires_grad_(True)
    for param in scorer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if config.gradient_checkpointing:
        backbone.activation_checkpointing_enable({"use_reentrant": False})
    return peft_model


class ColdStartTrainer:
    """Runs stage 1. ``scorer`` (optional) is the model to start from instead of ``config.model``; ``callbacks`` are
    called as ``callback(step, metrics)`` after every optimizer step (``step`` counts from 1)."""

    def __init__(
        self,
        config: ColdStartConfig,
        scorer: DeScore | None = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    ):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self._scorer = scorer
        self.callbacks = list(callbacks)

    # ------------------------------------------------------------------ data
    def load_data(self) -> tuple[PairDataset, str, PairDataset | None]:
        """Read and check the pair files; raise one DataError / ConfigError before anything is trained."""
        cfg = self.config
        try:
            train = load_pairs(
                cfg.train_file, video_root=cfg.video_root, dimension=cfg.dimension, require_non_tie=True
            )
        except ConfigError as err:
            if cfg.dimension is not None:
                raise
            raise ConfigError(f"{err}; set `dimension` in the config to the label to train on") from None
        dimension = cfg.dimension or train.dimensions[0]
        if cfg.cot_mask_prob < 1 and not train.has_cot:
            raise DataError(
                cfg.train_file,
                [
                    (
                        "no chain of thought (CoT_A, CoT_B columns) for every pair, but cot_mask_prob < 1 trains "
                        "with them; add them, or set cot_mask_prob: 1.0 to train a think-free model"
                    )
                ],
            )
        if cfg.ties == "drop":
            kept = train.drop_ties(dimension)
            if len(kept) < len(train):
                logger.info("ties='drop': left out %d tied pairs of %d", len(train) - len(kept), len(train))
            train = kept
        evaluation = None
        if cfg.eval_file is not None:
            evaluation = load_pairs(cfg.eval_file, video_root=cfg.video_root, dimension=dimension)
        return train, dimension, evaluation

    def _check_output_dir(self) -> Path | None:
        found = latest_checkpoint(self.output_dir)
        if found is not None and not self.config.resume:
            raise ConfigError(
                f"{self.output_dir} already holds training checkpoints ({found.name}); set resume: true to "
                "continue, or choose another output_dir"
            )
        return found

    # ------------------------------------------------------------------ training
    def train(self) -> TrainResult:
        """Validate the data, train, evaluate and export the merged model to ``output_dir/final``."""
        cfg = self.config
        train_pairs, dimension, eval_pairs = self.load_data()
        resume_from = self._check_output_dir()
        accelerator = _accelerator(cfg)
        torch.manual_seed(cfg.seed)
        scorer = self._scorer if self._scorer is not None else _load_scorer(cfg)
        model = scorer.model
        peft_model = add_lora(scorer, cfg)

        frames = FrameStore(model.config.sampling, cfg.video_cache_dir)
        videos = train_pairs.videos() + (eval_pairs.videos() if eval_pairs is not None else [])
        with accelerator.main_process_first():
            frames.add_all(videos, scorer.load_video, progress=cfg.progress and accelerator.is_local_main_process)
        examples = tokenize_pairs(
            train_pairs,
            dimension,
            scorer.tokenizer,
            model.config.query_token,
            with_cot=cfg.cot_mask_prob < 1,
            max_cot_tokens=cfg.max_cot_tokens,
        )
        schedule = PairSchedule(
            num_pairs=len(examples),
            micro_batch=cfg.batch_size,
            accumulation=cfg.gradient_accumulation_steps,
            world_size=accelerator.num_processes,
            seed=cfg.seed,
            cot_mask_prob=cfg.cot_mask_prob,
        )
        total_steps = cfg.max_steps or schedule.steps_for_epochs(cfg.num_epochs)

        forward = _PairForward(model, with_lm=cfg.lm_loss_weight > 0)
        optimizer = self._optimizer(model)
        scheduler = _scheduler(cfg, optimizer, total_steps)
        forward, optimizer = accelerator.prepare(forward, optimizer)
        start = 0
        data_state = {
            "pairs_per_step": schedule.pairs_per_step,
            "num_pairs": schedule.num_pairs,
            "train_file": str(train_pairs.source),
            "dimension": dimension,
        }
        if resume_from is not None:
            state = load_checkpoint(resume_from, model=model, optimizer=optimizer, scheduler=scheduler)
            _check_resumable(state, data_state, resume_from)
            if accelerator.scaler is not None and state.get("grad_scaler"):
                accelerator.scaler.load_state_dict(state["grad_scaler"])
            start = state["step"]
        if accelerator.is_main_process:
            _truncate_metrics(self.output_dir / METRICS_NAME, start)
        accelerator.init_trackers(cfg.project_name, config=_flat(cfg.to_dict()))

        end_of_turn = _end_of_turn_id(scorer.tokenizer)
        history: list[dict[str, float]] = []
        evaluations: dict[str, PairEvaluation] = {}
        bar = tqdm(
            total=total_steps,
            initial=start,
            desc="cold start",
            unit="step",
            disable=not (cfg.progress and accelerator.is_local_main_process),
        )
        forward.train()
        for step in range(start, total_steps):
            torch.manual_seed(_step_seed(cfg.seed, step, accelerator.process_index))
            began = time.perf_counter()
            plan = schedule.step_plan(step, accelerator.process_index)
            totals = torch.zeros(8, dtype=torch.float64, device=accelerator.device)
            for micro, (indices, keep) in enumerate(plan):
                batch = collate_pairs(
                    [examples[i] for i in indices],
                    keep.tolist(),
                    frames,
                    scorer.processor,
                    model.config,
                    model.query_token_id,
                    end_of_turn,
                ).to(accelerator.device)
                last = micro == len(plan) - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(forward):
                    loss, stats = self._micro_step(forward, batch, accelerator)
                    accelerator.backward(loss / len(plan))
                totals += stats
            grad_norm = math.nan
            if cfg.max_grad_norm is not None:
                grad_norm = float(accelerator.clip_grad_norm_(forward.parameters(), cfg.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            metrics = _step_metrics(
                accelerator.reduce(totals, reduction="sum"), len(plan) * accelerator.num_processes
            )
            metrics.update(
                step=step + 1,
                epoch=schedule.epoch_of(step + 1),
                lr=scheduler.get_last_lr()[0],
                grad_norm=grad_norm,
                seconds=time.perf_counter() - began,
            )
            done = step + 1
            if (
                cfg.eval_every
                and done % cfg.eval_every == 0
                and eval_pairs is not None
                and done < total_steps
            ):
                evaluations = self._evaluate(accelerator, scorer, frames, eval_pairs, dimension, forward)
                metrics.update(_eval_metrics(evaluations, dimension))
            history.append(metrics)
            self._log(accelerator, metrics, bar)
            if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
                self._save(accelerator, done, model, optimizer, scheduler, data_state)
            for callback in self.callbacks:
                callback(done, metrics)

        bar.close()
        if eval_pairs is not None:
            evaluations = self._evaluate(accelerator, scorer, frames, eval_pairs, dimension, forward)
            final_metrics = {"step": total_steps, **_eval_metrics(evaluations, dimension)}
            self._log(accelerator, final_metrics, None)
        final_dir = self._export(accelerator, scorer, peft_model)
        accelerator.end_training()
        return TrainResult(scorer, final_dir, total_steps, evaluations, history)

    def _optimizer(self, model: DeScoreModel) -> torch.optim.Optimizer:
        cfg = self.config
        head = [p for p in model.score_head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [
            {"params": rest, "lr": cfg.learning_rate},
            {"params": head, "lr": cfg.head_learning_rate or cfg.learning_rate},
        ]
        return torch.optim.AdamW(
            groups,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
        )

    def _micro_step(
        self, forward: nn.Module, batch: PairBatch, accelerator: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one micro-batch and its statistics: [loss, bt, lm, correct, non-tie pairs, margin sum, kept, tokens]."""
        cfg = self.config
        with accelerator.autocast():
            rewards, lm_loss = forward(batch.inputs, batch.lm_rows, batch.lm_cols, batch.lm_targets)
        count = batch.num_pairs
        out = pair_loss(rewards[:count], rewards[count:], batch.labels, ties=cfg.ties, tie_k=cfg.tie_k)
        loss = out.loss + cfg.lm_loss_weight * lm_loss
        decided = count - out.num_ties
        stats = torch.tensor(
            [
                float(loss.detach()),
                float(out.loss.detach()),
                float(lm_loss.detach()),
                float(out.accuracy) * decided if decided else 0.0,
                decided,
                float(out.margin_mean) * decided if decided else 0.0,
                batch.cot_kept / count,
                batch.num_tokens,
            ],
            dtype=torch.float64,
            device=accelerator.device,
        )
        return loss, stats

    # ------------------------------------------------------------------ evaluation, logging, saving
    def score_inputs(
        self, scorer: DeScore, frames: FrameStore, inputs: Sequence[ScoringInput], batch_size: int
    ) -> np.ndarray:
        """Raw rewards of distinct inputs from the decoded frames (think-free or with the given CoT), no gradients."""
        model, tokenizer = scorer.model, scorer.tokenizer
        rewards = []
        for start in range(0, len(inputs), batch_size):
            rows = [
                RowSpec(
                    frames.get(item.video),
                    item.prompt,
                    cot_token_ids(tokenizer, item.cot, model.config.query_token)
                    if item.cot is not None
                    else (),
                )
                for item in inputs[start : start + batch_size]
            ]
            encoded = encode_rows(scorer.processor, model.config, model.query_token_id, rows)
            encoded = {
                k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()
            }
            rewards.append(model(**encoded).rewards[:, 0].float().cpu())
        return torch.cat(rewards).numpy()

    def _evaluate(
        self,
        accelerator: Any,
        scorer: DeScore,
        frames: FrameStore,
        pairs: PairDataset,
        dimension: str,
        forward: nn.Module,
    ) -> dict[str, PairEvaluation]:
        results: dict[str, PairEvaluation] = {}
        if accelerator.is_main_process:
            forward.eval()
            with torch.no_grad(), accelerator.autocast():
                for mode in self.config.eval_modes:
                    if mode == "given_cot" and not pairs.has_cot:
                        logger.info("eval file has no CoT_A / CoT_B: skipping given_cot evaluation")
                        continue
                    results[mode] = evaluate_with(
                        lambda items: (
                            self.score_inputs(scorer, frames, items, self.config.eval_batch_size),
                            None,
                        ),
                        pairs,
                        mode=mode,
                        dimensions=[dimension],
                    )
            forward.train()
        accelerator.wait_for_everyone()
        return results

    def _log(self, accelerator: Any, metrics: dict[str, float], bar: tqdm | None) -> None:
        accelerator.log(metrics, step=int(metrics["step"]))
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / METRICS_NAME, "a") as handle:
                handle.write(json.dumps({k: _json_number(v) for k, v in metrics.items()}) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}", refresh=False)

    def _save(self, accelerator, step, model, optimizer, scheduler, data_state) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(
                self.output_dir,
                step,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                state={
                    "config": self.config.to_dict(),
                    "data": data_state,
                    "grad_scaler": accelerator.scaler.state_dict()
                    if accelerator.scaler is not None
                    else None,
                },
                keep_last=self.config.save_total_limit,
            )
        accelerator.wait_for_everyone()

    def _export(self, accelerator: Any, scorer: DeScore, peft_model: Any) -> Path:
        """Merge LoRA (and the query row) into the weights and write a plain DeScore checkpoint, atomically."""
        final = self.output_dir / FINAL_NAME
        accelerator.wait_for_everyone()
        merged = peft_model.merge_and_unload()
        if merged is not scorer.model.backbone:
            raise RuntimeError("peft returned a different backbone object after merging")
        if self.config.gradient_checkpointing:
            merged.activation_checkpointing_disable()
        merged.to(_DTYPES[self.config.model_dtype])  # trained float32 weights back to the backbone's dtype
        scorer.model.requires_grad_(False)
        scorer.model.eval()
        if accelerator.is_main_process:
            partial = self.output_dir / f".{FINAL_NAME}.partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            scorer.save_pretrained(partial)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            logger.info("wrote the merged DeScore model to %s", final)
        accelerator.wait_for_everyone()
        return final


def train_cold_start(config: ColdStartConfig, scorer: DeScore | None = None) -> TrainResult:
    """Run stage 1 with ``config`` (see :class:`ColdStartTrainer`)."""
    return ColdStartTrainer(config, scorer).train()


# ---------------------------------------------------------------------------------------------------- helpers
def _accelerator(config: ColdStartConfig) -> Any:
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
            raise ConfigError(
                f"cold-start config: mixed_precision={config.mixed_precision!r}: {err}"
            ) from None
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


def _scheduler(config: ColdStartConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[config.lr_scheduler]
    warmup = round(config.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _end_of_turn_id(tokenizer: Any) -> int:
    token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    if token_id is None:
        raise ConfigError(
            "the tokenizer has neither <|im_end|> nor an eos token to end a chain of thought with"
        )
    return int(token_id)


def _step_metrics(totals: torch.Tensor, micro_batches: int) -> dict[str, float]:
    loss, bt, lm, correct, decided, margin, kept, tokens = totals.tolist()
    return {
        "loss": loss / micro_batches,
        "bt_loss": bt / micro_batches,
        "lm_loss": lm / micro_batches,
        "accuracy": correct / decided if decided else math.nan,
        "reward_margin": margin / decided if decided else math.nan,
        "cot_kept": kept / micro_batches,
        "tokens": tokens,
    }


def _eval_metrics(evaluations: dict[str, PairEvaluation], dimension: str) -> dict[str, float]:
    out = {}
    for mode, evaluation in evaluations.items():
        report = evaluation.dimensions[dimension]
        out[f"eval/{mode}/accuracy"] = report.without_ties.accuracy
        out[f"eval/{mode}/accuracy_with_ties"] = report.with_ties.accuracy
        out[f"eval/{mode}/tie_threshold"] = report.with_ties.epsilon
    return out


def _check_resumable(state: dict[str, Any], data_state: dict[str, Any], path: Path) -> None:
    saved = state.get("data", {})
    changed = {k: (saved.get(k), v) for k, v in data_state.items() if saved.get(k) != v}
    if changed:
        listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"{path}: cannot resume exactly: the data or batch layout changed ({listing}); use the same data, "
            "batch_size x gradient_accumulation_steps x processes, or start a new output_dir"
        )


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


def read_metrics(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-step records of ``metrics.jsonl`` in ``output_dir`` (evaluation-only records included)."""
    path = Path(output_dir) / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


__all__ = [
    "LANGUAGE_MODEL_LINEAR",
    "ColdStartConfig",
    "ColdStartTrainer",
    "TrainResult",
    "add_lora",
    "list_checkpoints",
    "read_metrics",
    "train_cold_start",
]
