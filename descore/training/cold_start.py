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

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from descore.errors import ConfigError, DataError
from descore.evaluation import PairEvaluation, evaluate_with
from descore.inputs import cot_token_ids
from descore.losses import pair_loss
from descore.metrics import ScoringInput
from descore.modeling import DeScoreModel
from descore.pairs import PairDataset, load_pairs
from descore.scoring import DeScore
from descore.training.checkpointing import list_checkpoints
from descore.training.config import TrainingConfig
from descore.training.config import field_help as _help
from descore.training.data import (
    FrameStore,
    PairBatch,
    PairSchedule,
    RowSpec,
    collate_pairs,
    encode_rows,
    tokenize_pairs,
)
from descore.training.loop import (
    Run,
    RunResult,
    StageTrainer,
    end_of_turn_id,
    evaluate_modes,
    make_adamw,
    make_scheduler,
    pair_eval_metrics,
    read_metrics,
    to_device,
)

logger = logging.getLogger(__name__)

#: Linear layers of the Qwen-VL language models (attention and MLP); LoRA is restricted to the language model, since
#: Qwen2.5-VL's vision blocks use the same MLP names.
LANGUAGE_MODEL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ColdStartConfig(TrainingConfig):
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

    label = "cold-start config"

    def validate(self) -> None:
        problems = self.required_problems()
        checks = [
            ("lora_r", self.lora_r >= 1, ">= 1"),
            *self.lora_checks(),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("head_learning_rate", self.head_learning_rate is None or self.head_learning_rate > 0, "> 0"),
            *self.optimizer_checks(),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, ">= 1"),
            ("cot_mask_prob", 0 <= self.cot_mask_prob <= 1, "in [0, 1]"),
            ("tie_k", self.tie_k > 1, "> 1"),
            ("lm_loss_weight", self.lm_loss_weight >= 0, ">= 0"),
            ("max_cot_tokens", self.max_cot_tokens is None or self.max_cot_tokens >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            *self.save_checks(),
        ]
        problems += self.check_rules(checks)
        bad_modes = [m for m in self.eval_modes if m not in ("no_think", "given_cot")]
        if bad_modes:
            problems.append(
                f"eval_modes {bad_modes} not allowed during training; use no_think and/or given_cot"
            )
        if self.lm_loss_weight > 0 and self.cot_mask_prob >= 1:
            problems.append(
                "lm_loss_weight > 0 needs chains of thought to learn from: cot_mask_prob must be < 1"
            )
        problems += self.precision_problems()
        self.raise_problems(problems)


@dataclass
class TrainResult(RunResult):
    """What a run produced: the merged model (in memory and on disk), step count and the last evaluation."""

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
    train_in_float32(scorer, config.gradient_checkpointing)
    return peft_model


def train_in_float32(scorer: DeScore, gradient_checkpointing: bool) -> None:
    """Make every trainable parameter float32 (frozen ones keep ``model_dtype``) and switch on activation
    checkpointing in the backbone when asked."""
    for param in scorer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if gradient_checkpointing:
        scorer.model.backbone.activation_checkpointing_enable({"use_reentrant": False})


class ColdStartTrainer(StageTrainer):
    """Runs stage 1. ``scorer`` (optional) is the model to start from instead of ``config.model``; ``callbacks`` are
    called as ``callback(step, metrics)`` after every optimizer step (``step`` counts from 1)."""

    config: ColdStartConfig
    progress_desc = "cold start"
    resume_hint = "the same data, batch_size x gradient_accumulation_steps x processes"

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

    # ------------------------------------------------------------------ training
    def train(self) -> TrainResult:
        """Validate the data, train, evaluate and export the merged model to ``output_dir/final``."""
        cfg = self.config
        train_pairs, dimension, eval_pairs = self.load_data()
        resume_from, accelerator, scorer = self._begin()
        model = scorer.model
        peft_model = add_lora(scorer, cfg)

        videos = train_pairs.videos() + (eval_pairs.videos() if eval_pairs is not None else [])
        frames = self._decode_frames(accelerator, scorer, videos)
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
        optimizer = make_adamw(cfg, model)
        scheduler = make_scheduler(cfg, optimizer, total_steps)
        forward, optimizer = accelerator.prepare(forward, optimizer)
        data_state = {
            "pairs_per_step": schedule.pairs_per_step,
            "num_pairs": schedule.num_pairs,
            "train_file": str(train_pairs.source),
            "dimension": dimension,
        }
        run = Run(accelerator, model, forward, optimizer, scheduler, data_state, total_steps)
        start = self._start(run, resume_from)
        end_of_turn = end_of_turn_id(scorer.tokenizer)

        def train_step(step: int) -> dict[str, float]:
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
                with run.grad_sync(last=micro == len(plan) - 1):
                    loss, stats = self._micro_step(forward, batch, accelerator)
                    accelerator.backward(loss / len(plan))
                totals += stats
            grad_norm = run.optimizer_step(cfg.max_grad_norm)
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
            return metrics

        history, evaluations = self._run_steps(
            run,
            start,
            train_step,
            postfix=lambda m: {"loss": f"{m['loss']:.4f}", "acc": f"{m['accuracy']:.3f}"},
            evaluate=(
                None
                if eval_pairs is None
                else lambda: self._evaluate(accelerator, scorer, frames, eval_pairs, dimension, forward)
            ),
            eval_metrics=lambda evaluations: pair_eval_metrics(evaluations, dimension),
        )
        final_dir = self._finish(accelerator, scorer, peft_model)
        return TrainResult(scorer, final_dir, total_steps, evaluations, history)

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

    # ------------------------------------------------------------------ evaluation
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
            rewards.append(model(**to_device(encoded, model.device)).rewards[:, 0].float().cpu())
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
        def score(items: Sequence[ScoringInput]) -> tuple[np.ndarray, None]:
            return self.score_inputs(scorer, frames, items, self.config.eval_batch_size), None

        def evaluate() -> dict[str, PairEvaluation]:
            with torch.no_grad(), accelerator.autocast():
                return evaluate_modes(
                    self.config.eval_modes,
                    pairs,
                    lambda mode: evaluate_with(score, pairs, mode=mode, dimensions=[dimension]),
                )

        return self._on_main_process(accelerator, forward, evaluate)


def train_cold_start(config: ColdStartConfig, scorer: DeScore | None = None) -> TrainResult:
    """Run stage 1 with ``config`` (see :class:`ColdStartTrainer`)."""
    return ColdStartTrainer(config, scorer).train()


# ---------------------------------------------------------------------------------------------------- helpers
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
