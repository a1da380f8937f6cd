"""Stage 2, dual-objective RL: GRPO on the chain of thought and an auxiliary Bradley-Terry loss on the head.

Every step takes ``pairs_per_step`` preference pairs (video A, video B, same prompt) and samples ``group_size`` CoTs
for each of their videos with the current policy (one GRPO group per video). Then:

1. **Rollout reward** (:mod:`descore.training.rewards`): ``quality_weight * R_quality + format_weight * R_format +
   length_weight * R_length``, from the CoT's answer block against the video's ground-truth sub-scores (the pair
   file's ``gt_<dimension>_A/B`` columns). Advantages are group-normalised: ``(r - mean_group) / (std_group + eps)``.
2. **GRPO** on the CoT tokens (and the end-of-turn token that closed each CoT): the clipped importance-weighted
   advantage with asymmetric clipping ``[1 - clip_low, 1 + clip_high]``, plus ``kl_coef`` times the low-variance
   (k3) KL estimator ``exp(ref - logp) - (ref - logp) - 1`` to the reference policy. The reference policy is the
   starting model, obtained by disabling the LoRA adapters (no second copy of the model). Old log-probabilities are
   computed once per step before any update, on the same micro-batches as the updates, so the importance ratio of the
   first update is exactly 1.
3. **Auxiliary Bradley-Terry**: the query token is appended after each generated CoT (the scoring layout
   ``user [video, judge instruction] / assistant [CoT][query token]``), the head scores it, and
   :func:`descore.losses.pair_loss` runs on (rollout ``i`` of video A, rollout ``i`` of video B) with the pair's
   label, weighted by ``bt_weight``. Its gradient reaches the head, the query row and the LoRA weights.

One forward over ``[prompt, video][CoT][query token]`` gives both the CoT log-probabilities and the reward, so each
update costs one forward and backward per micro-batch, plus two gradient-free forwards per step (old and reference
policy). A step's rollouts may be split into ``mini_batches`` optimizer updates and reused for ``ppo_epochs``
passes; the learning-rate schedule counts optimizer updates.

Trained: LoRA on the language model, the query token's embedding row and the head (the reference trains the full LLM
with the vision tower frozen; here the vision tower is frozen too). Determinism and resume follow stage 1: every
random source (data order, sampling) is reseeded from (seed, step), checkpoints are atomic, and resuming replays the
metrics of an uninterrupted run. The final model is exported with LoRA merged as a plain DeScore checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from descore.answer import SubScore
from descore.config import CONFIG_NAME
from descore.errors import ConfigError, DataError
from descore.evaluation import EVAL_MODES, PairEvaluation, evaluate_pairs
from descore.inputs import control_tokens, encode_inputs
from descore.losses import pair_loss
from descore.pairs import PairDataset, load_pairs
from descore.scoring import DeScore, _cot_mask
from descore.training.cold_start import LANGUAGE_MODEL_LINEAR, add_lora
from descore.training.config import TrainingConfig
from descore.training.config import field_help as _help
from descore.training.data import FrameStore, PairSchedule, RowSpec, encode_rows
from descore.training.loop import (
    DTYPES,
    Run,
    RunResult,
    StageTrainer,
    evaluate_modes,
    make_adamw,
    make_scheduler,
    pair_eval_metrics,
    to_device,
)
from descore.training.rewards import (
    REFERENCE_LENGTH_THRESHOLDS,
    REFERENCE_LENGTH_VALUES,
    RewardRule,
    RolloutReward,
)
from descore.training.sft import CompletionForward, completion_targets

logger = logging.getLogger(__name__)


@dataclass
class DualRLConfig(TrainingConfig):
    """Stage-2 settings. Defaults follow the reference recipe (G = 8, clip 0.2 / 0.3, k3 KL 1e-5, BT weight 5e-3,
    reward 0.7 quality + 0.1 format + 0.2 length with the reference's character steps, AdamW lr 1e-6, wd 1e-2)."""

    # -- model and data
    model: str | None = field(
        default=None, metadata=_help("DeScore checkpoint to start from (stage 1's final/)")
    )
    model_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata=_help("dtype of the frozen weights; trainable weights are always float32")
    )
    train_file: str = field(
        default="",
        metadata=_help(
            "preference pairs with ground-truth sub-scores (gt_<dimension>_A/B columns)", required=True
        ),
    )
    eval_file: str | None = field(
        default=None, metadata=_help("held-out pairs evaluated every eval_every steps and at the end")
    )
    video_root: str | None = field(
        default=None, metadata=_help("folder relative video paths resolve against")
    )
    dimension: str | None = field(
        default=None, metadata=_help("label column of the BT loss (required when the file has several)")
    )
    output_dir: str = field(
        default="", metadata=_help("where checkpoints, metrics.jsonl and final/ are written", required=True)
    )
    video_cache_dir: str | None = field(
        default=None, metadata=_help("folder for decoded frames; None keeps them in memory")
    )
    # -- what is trained
    lora_r: int = field(default=64, metadata=_help("LoRA rank"))
    lora_alpha: float = field(default=128.0, metadata=_help("LoRA scaling numerator (scale = alpha / r)"))
    lora_dropout: float = field(
        default=0.0,
        metadata=_help("dropout on the LoRA input (> 0 makes the first importance ratio differ from 1)"),
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LANGUAGE_MODEL_LINEAR),
        metadata=_help("language-model linear layers with LoRA"),
    )
    # -- rollouts
    group_size: int = field(default=8, metadata=_help("CoTs sampled per video (the GRPO group, G)"))
    pairs_per_step: int = field(
        default=16, metadata=_help("preference pairs per step per process (2 x G rollouts each)")
    )
    rollout_batch_size: int = field(
        default=8, metadata=_help("videos per generate call (each sampled G times)")
    )
    temperature: float = field(
        default=1.0, metadata=_help("sampling temperature (log-probabilities use the same)")
    )
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling threshold"))
    max_new_tokens: int = field(
        default=4096, metadata=_help("longest CoT sampled (a longer one is cut, no end of turn)")
    )
    # -- rollout reward
    quality_weight: float = field(
        default=0.7, metadata=_help("weight of sub-score agreement with the ground truth")
    )
    format_weight: float = field(default=0.1, metadata=_help("weight of a valid answer block"))
    length_weight: float = field(default=0.2, metadata=_help("weight of the length term"))
    quality_rule: Literal["exact", "distance"] = field(
        default="exact",
        metadata=_help("exact: share of matching sub-scores; distance: partial credit 1 - |p - t| / 2"),
    )
    length_unit: Literal["chars", "tokens"] = field(
        default="chars", metadata=_help("what the length term counts")
    )
    length_shape: Literal["step", "linear"] = field(
        default="step",
        metadata=_help("step: length_values at length_thresholds; linear: 0 -> 1 between two thresholds"),
    )
    length_thresholds: list[float] = field(
        default_factory=lambda: list(REFERENCE_LENGTH_THRESHOLDS),
        metadata=_help("length thresholds (increasing)"),
    )
    length_values: list[float] = field(
        default_factory=lambda: list(REFERENCE_LENGTH_VALUES),
        metadata=_help("step rewards: one more than thresholds"),
    )
    # -- GRPO
    clip_low: float = field(default=0.2, metadata=_help("lower clip range: ratio >= 1 - clip_low"))
    clip_high: float = field(default=0.3, metadata=_help("upper clip range: ratio <= 1 + clip_high"))
    kl_coef: float = field(
        default=1e-5, metadata=_help("weight of the k3 KL estimator to the reference policy")
    )
    advantage_eps: float = field(default=1e-6, metadata=_help("added to the group std before dividing"))
    scale_advantages: bool = field(
        default=True, metadata=_help("divide advantages by the group std (false: centre only)")
    )
    loss_aggregation: Literal["token_mean", "sequence_mean"] = field(
        default="token_mean",
        metadata=_help("mean over all CoT tokens of an update, or over sequences of per-token means"),
    )
    mini_batches: int = field(
        default=1, metadata=_help("optimizer updates per step (the step's pairs split evenly)")
    )
    ppo_epochs: int = field(default=1, metadata=_help("passes over a step's rollouts"))
    micro_batch_pairs: int = field(
        default=1, metadata=_help("pairs per forward/backward (2 x G sequences each)")
    )
    # -- auxiliary Bradley-Terry
    bt_weight: float = field(default=5e-3, metadata=_help("weight of the BT loss on paired rollouts"))
    ties: Literal["drop", "bt_ties"] = field(
        default="drop", metadata=_help("drop tied pairs from BT, or BT-with-ties")
    )
    tie_k: float = field(default=5.0, metadata=_help("tie parameter of BT-with-ties"))
    # -- optimisation
    learning_rate: float = field(default=1e-6, metadata=_help("AdamW learning rate (LoRA, query row)"))
    head_learning_rate: float | None = field(
        default=None, metadata=_help("learning rate of the head (default: learning_rate)")
    )
    weight_decay: float = field(default=1e-2, metadata=_help("AdamW weight decay"))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon"))
    max_grad_norm: float | None = field(
        default=1.0, metadata=_help("gradient clipping norm (None: no clipping)")
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = field(
        default="constant", metadata=_help("schedule after warmup")
    )
    warmup_ratio: float = field(
        default=0.0, metadata=_help("share of the optimizer updates with linear warmup")
    )
    num_epochs: float = field(
        default=1.0, metadata=_help("passes over the pairs (ignored when max_steps is set)")
    )
    max_steps: int | None = field(default=None, metadata=_help("rollout steps to run (overrides num_epochs)"))
    # -- machinery
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="bf16", metadata=_help("accelerate mixed precision")
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("activation checkpointing in the backbone")
    )
    eval_every: int = field(default=0, metadata=_help("evaluate every this many steps (0: at the end only)"))
    eval_modes: list[str] = field(
        default_factory=lambda: ["think", "no_think"],
        metadata=_help("evaluation modes: think, no_think, given_cot"),
    )
    eval_batch_size: int = field(default=8, metadata=_help("inputs per evaluation batch"))
    eval_max_new_tokens: int | None = field(
        default=None, metadata=_help("cap on CoT length in think evaluation")
    )
    save_every: int = field(default=50, metadata=_help("write a checkpoint every this many steps (0: never)"))
    save_total_limit: int | None = field(
        default=2, metadata=_help("keep only the newest checkpoints (None: keep all)")
    )
    log_with: list[str] = field(
        default_factory=list, metadata=_help("accelerate trackers; metrics.jsonl is always written")
    )
    project_name: str = field(default="descore-dual-rl", metadata=_help("tracker project name"))
    seed: int = field(default=0, metadata=_help("seed of the data order, the sampling and LoRA init"))
    resume: bool = field(default=False, metadata=_help("continue from the newest checkpoint in output_dir"))
    progress: bool = field(default=True, metadata=_help("show progress bars"))

    label = "dual-rl config"

    @property
    def freeze_vision(self) -> bool:
        """Stage 2 never trains the vision tower (so disabling the adapters gives the exact reference policy)."""
        return True

    def reward_rule(self) -> RewardRule:
        return RewardRule(
            quality_weight=self.quality_weight,
            format_weight=self.format_weight,
            length_weight=self.length_weight,
            quality_rule=self.quality_rule,
            length_unit=self.length_unit,
            length_shape=self.length_shape,
            length_thresholds=tuple(self.length_thresholds),
            length_values=tuple(self.length_values),
        )

    def validate(self) -> None:
        problems = self.required_problems()
        checks = [
            ("lora_r", self.lora_r >= 1, ">= 1"),
            *self.lora_checks(),
            ("group_size", self.group_size >= 2, ">= 2 (advantages are relative to the group)"),
            ("pairs_per_step", self.pairs_per_step >= 1, ">= 1"),
            ("rollout_batch_size", self.rollout_batch_size >= 1, ">= 1"),
            ("temperature", self.temperature > 0, "> 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
            ("clip_low", 0 < self.clip_low < 1, "in (0, 1)"),
            ("clip_high", self.clip_high > 0, "> 0"),
            ("kl_coef", self.kl_coef >= 0, ">= 0"),
            ("advantage_eps", self.advantage_eps > 0, "> 0"),
            ("mini_batches", self.mini_batches >= 1, ">= 1"),
            ("ppo_epochs", self.ppo_epochs >= 1, ">= 1"),
            ("micro_batch_pairs", self.micro_batch_pairs >= 1, ">= 1"),
            ("bt_weight", self.bt_weight >= 0, ">= 0"),
            ("tie_k", self.tie_k > 1, "> 1"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("head_learning_rate", self.head_learning_rate is None or self.head_learning_rate > 0, "> 0"),
            *self.optimizer_checks(),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            (
                "eval_max_new_tokens",
                self.eval_max_new_tokens is None or self.eval_max_new_tokens >= 1,
                ">= 1",
            ),
            *self.save_checks(),
        ]
        problems += self.check_rules(checks)
        if self.pairs_per_step % self.mini_batches:
            problems.append(
                f"pairs_per_step ({self.pairs_per_step}) must be a multiple of mini_batches ({self.mini_batches})"
            )
        elif (self.pairs_per_step // self.mini_batches) % self.micro_batch_pairs:
            problems.append(
                f"micro_batch_pairs ({self.micro_batch_pairs}) must divide the pairs of one update "
                f"(pairs_per_step / mini_batches = {self.pairs_per_step // self.mini_batches})"
            )
        bad_modes = [m for m in self.eval_modes if m not in EVAL_MODES]
        if bad_modes:
            problems.append(f"eval_modes {bad_modes} unknown; use {list(EVAL_MODES)}")
        problems += self.precision_problems()
        self.raise_problems(problems)
        try:
            self.reward_rule()
        except ConfigError as err:
            raise ConfigError(f"{self.label}: {err}") from None


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class RLPair:
    """A training pair: both videos, the prompt, the label (+1 A, -1 B, 0 tie) and each video's true sub-scores."""

    video_a: Path
    video_b: Path
    prompt: str
    label: int
    truth_a: dict[str, SubScore]
    truth_b: dict[str, SubScore]


@dataclass
class Rollout:
    """One sampled CoT: its token ids, the token that ended it (None when cut at ``max_new_tokens``), its reward."""

    cot_ids: list[int]
    end_id: int | None
    reward: RolloutReward
    advantage: float = 0.0

    @property
    def targets(self) -> list[int]:
        return self.cot_ids + ([] if self.end_id is None else [self.end_id])


@dataclass
class MicroBatch:
    """Rows ``[A rollouts of its pairs, B rollouts of its pairs]`` (pair-major, rollout-minor) and per-token data."""

    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    advantages: torch.Tensor  # per target token
    labels: torch.Tensor  # per BT pair (one per A row)
    num_rows: int
    old_log_probs: torch.Tensor | None = None
    ref_log_probs: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> MicroBatch:
        moved = to_device(self.inputs, device)
        tensors = {
            name: getattr(self, name).to(device)
            for name in ("rows", "cols", "targets", "advantages", "labels")
        }
        return MicroBatch(inputs=moved, num_rows=self.num_rows, **tensors)

    @property
    def bt_pairs(self) -> int:
        return len(self.labels)


@dataclass
class DualRLResult(RunResult):
    """What a run produced: the merged model (in memory and on disk), step count, history, last evaluation."""

    history: list[dict[str, float]]
    evaluations: dict[str, PairEvaluation]


# ---------------------------------------------------------------------------------------------------- trainer
class DualRLTrainer(StageTrainer):
    """Runs stage 2. ``scorer`` (optional) is the model to start from instead of ``config.model``; ``callbacks`` are
    called as ``callback(step, metrics)`` after every step (``step`` counts from 1)."""

    config: DualRLConfig
    progress_desc = "dual rl"

    def __init__(
        self,
        config: DualRLConfig,
        scorer: DeScore | None = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    ):
        super().__init__(config, scorer, callbacks)
        self.rule = config.reward_rule()

    # ------------------------------------------------------------------ data
    def load_data(self) -> tuple[list[RLPair], str, PairDataset | None]:
        """Read the pair files; the training pairs need ground-truth sub-scores for both videos."""
        cfg = self.config
        try:
            train = load_pairs(cfg.train_file, video_root=cfg.video_root, dimension=cfg.dimension)
        except ConfigError as err:
            raise ConfigError(f"{err}; set `dimension` in the config to the label of the BT loss") from None
        if cfg.dimension is None and len(train.dimensions) != 1:
            raise ConfigError(
                f"{cfg.train_file}: the file has labels {list(train.dimensions)}; set `dimension` to the one to train on"
            )
        dimension = cfg.dimension or train.dimensions[0]
        if not train.has_subscores:
            raise DataError(
                cfg.train_file,
                [
                    (
                        "stage 2 needs ground-truth sub-scores (gt_<dimension>_A and gt_<dimension>_B) for every "
                        "pair: the rollout reward compares the CoT's answer with them"
                    )
                ],
            )
        labels = train.labels(dimension)
        if cfg.ties == "drop" and all(int(label) == 0 for label in labels):
            raise DataError(
                cfg.train_file, [f"every pair is a tie for {dimension!r}: the BT loss has nothing to learn"]
            )
        examples = [
            RLPair(p.video_a, p.video_b, p.prompt, int(label), dict(p.gt_subscores_a), dict(p.gt_subscores_b))
            for p, label in zip(train, labels)
        ]
        evaluation = None
        if cfg.eval_file is not None:
            evaluation = load_pairs(cfg.eval_file, video_root=cfg.video_root, dimension=dimension)
        return examples, dimension, evaluation

    def _load_scorer(self) -> DeScore:
        cfg = self.config
        if cfg.model is None:
            raise ConfigError("dual-rl config: model is required (or pass a DeScore instance to the trainer)")
        if not (Path(cfg.model) / CONFIG_NAME).is_file():
            raise ConfigError(
                f"dual-rl config: model {cfg.model} is not a DeScore checkpoint ({CONFIG_NAME} is missing); stage 2 "
                "starts from a trained reward model (stage 1's final/)"
            )
        return DeScore.from_pretrained(cfg.model, dtype=DTYPES[cfg.model_dtype])

    # ------------------------------------------------------------------ rollouts
    def rollout(self, scorer: DeScore, frames: FrameStore, pairs: Sequence[RLPair]) -> list[list[Rollout]]:
        """``group_size`` sampled CoTs for every video of ``pairs``, in the order [pair 0 A, pair 0 B, pair 1 A, ...],
        with rewards and group-normalised advantages. Uses the global torch RNG (the trainer seeds it per step)."""
        cfg = self.config
        model, tokenizer = scorer.model, scorer.tokenizer
        jobs = [
            job for p in pairs for job in ((p.video_a, p.prompt, p.truth_a), (p.video_b, p.prompt, p.truth_b))
        ]
        eos_ids = scorer._eos_ids()
        special = {
            tokenizer.convert_tokens_to_ids(t) for t in control_tokens(tokenizer, [model.config.query_token])
        }
        suppress = sorted(special - set(eos_ids) - {None, tokenizer.unk_token_id})
        backbone = model.backbone
        was_training = backbone.training
        backbone.eval()
        groups: list[list[Rollout]] = []
        with torch.no_grad():
            for start in range(0, len(jobs), cfg.rollout_batch_size):
                chunk = jobs[start : start + cfg.rollout_batch_size]
                inputs = encode_inputs(
                    scorer.processor, model.config, [j[1] for j in chunk], [frames.get(j[0]) for j in chunk]
                )
                inputs = to_device(inputs, model.device)
                out = backbone.generate(
                    **inputs,
                    do_sample=True,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    top_k=0,
                    repetition_penalty=1.0,
                    max_new_tokens=cfg.max_new_tokens,
                    num_return_sequences=cfg.group_size,
                    eos_token_id=eos_ids,
                    pad_token_id=tokenizer.pad_token_id,
                    suppress_tokens=suppress,
                    return_dict_in_generate=True,
                )
                generated = out.sequences[:, inputs["input_ids"].shape[1] :].cpu()
                mask = _cot_mask(generated, eos_ids)
                for v, (_, _, truth) in enumerate(chunk):
                    group = []
                    for g in range(cfg.group_size):
                        row = v * cfg.group_size + g
                        length = int(mask[row].sum())
                        cot = generated[row, :length].tolist()
                        end = int(generated[row, length]) if length < generated.shape[1] else None
                        text = tokenizer.decode(cot, skip_special_tokens=True)
                        group.append(Rollout(cot, end, self.rule(text, len(cot), truth)))
                    groups.append(self._advantages(group))
        backbone.train(was_training)
        return groups

    def _advantages(self, group: list[Rollout]) -> list[Rollout]:
        rewards = torch.tensor([r.reward.total for r in group], dtype=torch.float64)
        centred = rewards - rewards.mean()
        if self.config.scale_advantages:
            centred = centred / (rewards.std() + self.config.advantage_eps)
        for rollout, advantage in zip(group, centred.tolist()):
            rollout.advantage = advantage
        return group

    def micro_batches(
        self,
        scorer: DeScore,
        frames: FrameStore,
        pairs: Sequence[RLPair],
        groups: Sequence[Sequence[Rollout]],
    ) -> list[MicroBatch]:
        """Encode the rollouts of ``micro_batch_pairs`` pairs at a time in the scoring layout."""
        cfg = self.config
        model = scorer.model
        out = []
        for start in range(0, len(pairs), cfg.micro_batch_pairs):
            chunk = range(start, min(start + cfg.micro_batch_pairs, len(pairs)))
            specs, rollouts = [], []
            for side in (0, 1):  # all A rows, then all B rows
                for p in chunk:
                    video = pairs[p].video_a if side == 0 else pairs[p].video_b
                    for rollout in groups[2 * p + side]:
                        specs.append(RowSpec(frames.get(video), pairs[p].prompt, rollout.cot_ids))
                        rollouts.append(rollout)
            inputs = encode_rows(scorer.processor, model.config, model.query_token_id, specs)
            rows, cols, targets = completion_targets(
                inputs["input_ids"].shape[1],
                [len(r.cot_ids) for r in rollouts],
                [r.targets for r in rollouts],
            )
            advantages = torch.tensor([r.advantage for r in rollouts], dtype=torch.float32)
            labels = torch.tensor(
                [pairs[p].label for p in chunk for _ in range(cfg.group_size)], dtype=torch.long
            )
            out.append(
                MicroBatch(
                    inputs=inputs,
                    rows=rows,
                    cols=cols,
                    targets=targets,
                    advantages=advantages[rows],
                    labels=labels,
                    num_rows=len(rollouts),
                )
            )
        return out

    # ------------------------------------------------------------------ losses
    @staticmethod
    def policy_log_probs(module: CompletionForward, batch: MicroBatch, accelerator: Any) -> torch.Tensor:
        """Log-probabilities of the batch's CoT tokens under ``module`` as it is now (no gradient)."""
        with torch.no_grad(), accelerator.autocast():
            return module(batch.inputs, batch.rows, batch.cols, batch.targets)[1].float()

    def micro_loss(
        self,
        forward: nn.Module,
        batch: MicroBatch,
        accelerator: Any,
        num_tokens: int,
        num_rows: int,
        num_bt: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch, normalised by its update's token, sequence and BT-pair counts, and statistics
        (sums, so that they add up over micro-batches)."""
        cfg = self.config
        with accelerator.autocast():
            rewards, log_probs = forward(batch.inputs, batch.rows, batch.cols, batch.targets)
        log_probs = log_probs.float()
        ratio = torch.exp(log_probs - batch.old_log_probs)
        clipped = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
        pg_plain, pg_clipped = -batch.advantages * ratio, -batch.advantages * clipped
        pg = torch.maximum(pg_plain, pg_clipped)
        delta = batch.ref_log_probs - log_probs
        kl = torch.exp(delta) - delta - 1
        if cfg.loss_aggregation == "token_mean":
            pg_loss, kl_loss = pg.sum() / num_tokens, kl.sum() / num_tokens
        else:
            lengths = torch.bincount(batch.rows, minlength=batch.num_rows).clamp(min=1).float()
            weights = 1.0 / lengths[batch.rows] / num_rows
            pg_loss, kl_loss = (pg * weights).sum(), (kl * weights).sum()
        loss = pg_loss + cfg.kl_coef * kl_loss
        half = batch.num_rows // 2
        labels = batch.labels.to(rewards.device)
        decided = int((labels != 0).sum())
        stats = {
            "pg_loss": float(pg_loss.detach()),
            "kl_loss": float(kl_loss.detach()),
            "kl_sum": float(kl.detach().sum()),
            "clipped": float((pg_clipped > pg_plain).sum()),
            "ratio_sum": float(ratio.detach().sum()),
            "ratio_dev": float((ratio.detach() - 1).abs().max()),
            "tokens": len(ratio),
            "bt_loss": 0.0,
            "bt_correct": 0.0,
            "bt_decided": decided,
            "bt_margin": 0.0,
        }
        if cfg.bt_weight > 0 and (decided or cfg.ties == "bt_ties"):
            out = pair_loss(
                rewards[:half], rewards[half:], labels, ties=cfg.ties, tie_k=cfg.tie_k, reduction="sum"
            )
            loss = loss + cfg.bt_weight * out.loss / num_bt
            stats["bt_loss"] = float(out.loss.detach()) / num_bt
        if decided:
            gaps = (labels[labels != 0] * (rewards[:half] - rewards[half:])[labels != 0]).detach()
            stats["bt_correct"] = float((gaps > 0).sum())
            stats["bt_margin"] = float(gaps.sum())
        return loss, stats

    # ------------------------------------------------------------------ training
    def train(self) -> DualRLResult:
        """Validate the data, train, evaluate and export the merged model to ``output_dir/final``."""
        cfg = self.config
        examples, dimension, eval_pairs = self.load_data()
        resume_from, accelerator, scorer = self._begin()
        model = scorer.model
        peft_model = add_lora(scorer, cfg)

        videos = list(dict.fromkeys(v for p in examples for v in (p.video_a, p.video_b)))
        frames = self._decode_frames(accelerator, scorer, videos)
        schedule = PairSchedule(
            num_pairs=len(examples),
            micro_batch=cfg.pairs_per_step,
            accumulation=1,
            world_size=accelerator.num_processes,
            seed=cfg.seed,
            cot_mask_prob=0.0,
        )
        total_steps = cfg.max_steps or schedule.steps_for_epochs(cfg.num_epochs)
        updates_per_step = cfg.mini_batches * cfg.ppo_epochs
        forward = CompletionForward(model, temperature=cfg.temperature)
        optimizer = make_adamw(cfg, model)
        scheduler = make_scheduler(cfg, optimizer, total_steps * updates_per_step)
        forward, optimizer = accelerator.prepare(forward, optimizer)
        module = accelerator.unwrap_model(forward)
        data_state = {
            "pairs_per_step": schedule.pairs_per_step,
            "num_pairs": schedule.num_pairs,
            "train_file": str(Path(cfg.train_file)),
            "dimension": dimension,
            "updates_per_step": updates_per_step,
        }
        run = Run(accelerator, model, forward, optimizer, scheduler, data_state, total_steps)
        start = self._start(run, resume_from)

        def train_step(step: int) -> dict[str, float]:
            began = time.perf_counter()
            indices = schedule.step_plan(step, accelerator.process_index)[0][0]
            pairs = [examples[i] for i in indices]
            groups = self.rollout(scorer, frames, pairs)
            rollout_seconds = time.perf_counter() - began
            batches = [b.to(accelerator.device) for b in self.micro_batches(scorer, frames, pairs, groups)]
            for batch in batches:
                batch.old_log_probs = self.policy_log_probs(module, batch, accelerator)
                with peft_model.disable_adapter():
                    batch.ref_log_probs = self.policy_log_probs(module, batch, accelerator)
            metrics = self._update(run, batches)
            metrics.update(_rollout_metrics(groups))
            done = step + 1
            metrics.update(
                step=done,
                epoch=schedule.epoch_of(done),
                lr=scheduler.get_last_lr()[0],
                rollout_seconds=rollout_seconds,
                seconds=time.perf_counter() - began,
            )
            return metrics

        history, evaluations = self._run_steps(
            run,
            start,
            train_step,
            postfix=lambda m: {"reward": f"{m['reward']:.3f}", "bt_acc": f"{m['bt_accuracy']:.2f}"},
            evaluate=(
                None
                if eval_pairs is None
                else lambda: self._evaluate(accelerator, scorer, eval_pairs, dimension, forward)
            ),
            eval_metrics=lambda evaluations: pair_eval_metrics(evaluations, dimension),
        )
        final_dir = self._finish(accelerator, scorer, peft_model)
        return DualRLResult(scorer, final_dir, total_steps, history, evaluations)

    def _update(self, run: Run, batches: list[MicroBatch]) -> dict[str, float]:
        """``ppo_epochs`` passes over the step's micro-batches, ``mini_batches`` optimizer updates per pass."""
        cfg, accelerator = self.config, run.accelerator
        per_update = math.ceil(len(batches) / cfg.mini_batches)
        totals: dict[str, float] = {}
        grad_norms, first_dev = [], math.nan
        for epoch in range(cfg.ppo_epochs):
            for first in range(0, len(batches), per_update):
                group = batches[first : first + per_update]
                num_tokens = sum(len(b.targets) for b in group)
                num_rows = sum(b.num_rows for b in group)
                if cfg.ties == "drop":
                    num_bt = max(1, sum(int((b.labels != 0).sum()) for b in group))
                else:
                    num_bt = sum(b.bt_pairs for b in group)
                deviations = []
                for micro, batch in enumerate(group):
                    with run.grad_sync(last=micro == len(group) - 1):
                        loss, stats = self.micro_loss(
                            run.forward, batch, accelerator, num_tokens, num_rows, num_bt
                        )
                        accelerator.backward(loss)
                    deviations.append(stats.pop("ratio_dev"))
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0.0) + value
                if epoch == 0 and first == 0:
                    first_dev = max(deviations)
                grad_norm = run.optimizer_step(cfg.max_grad_norm)
                if cfg.max_grad_norm is not None:
                    grad_norms.append(grad_norm)
        keys = sorted(totals)
        reduced = accelerator.reduce(
            torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=accelerator.device),
            reduction="sum",
        ).tolist()
        t = dict(zip(keys, reduced))
        updates = cfg.ppo_epochs * cfg.mini_batches * accelerator.num_processes
        return {
            "loss": (t["pg_loss"] + cfg.kl_coef * t["kl_loss"] + cfg.bt_weight * t["bt_loss"]) / updates,
            "pg_loss": t["pg_loss"] / updates,
            "kl": t["kl_sum"] / t["tokens"],
            "clip_fraction": t["clipped"] / t["tokens"],
            "ratio_mean": t["ratio_sum"] / t["tokens"],
            "ratio_first_update_max_dev": first_dev,
            "bt_loss": t["bt_loss"] / updates,
            "bt_accuracy": t["bt_correct"] / t["bt_decided"] if t["bt_decided"] else math.nan,
            "bt_margin": t["bt_margin"] / t["bt_decided"] if t["bt_decided"] else math.nan,
            "grad_norm": float(np.mean(grad_norms)) if grad_norms else math.nan,
        }

    def _evaluate(
        self, accelerator: Any, scorer: DeScore, pairs: PairDataset, dimension: str, forward: nn.Module
    ) -> dict[str, PairEvaluation]:
        cfg = self.config
        generation = {} if cfg.eval_max_new_tokens is None else {"max_new_tokens": cfg.eval_max_new_tokens}

        def evaluate(mode: str) -> PairEvaluation:
            return evaluate_pairs(
                scorer,
                pairs,
                mode=mode,
                dimensions=[dimension],
                batch_size=cfg.eval_batch_size,
                generation=generation,
                progress=False,
            )

        def evaluate_all() -> dict[str, PairEvaluation]:
            with accelerator.autocast():
                return evaluate_modes(cfg.eval_modes, pairs, evaluate)

        return self._on_main_process(accelerator, forward, evaluate_all)


def _rollout_metrics(groups: Sequence[Sequence[Rollout]]) -> dict[str, float]:
    """Means over the step's rollouts of every reward component, the within-group spread, CoT lengths, truncation."""
    flat = [r for g in groups for r in g]
    return {
        "reward": float(np.mean([r.reward.total for r in flat])),
        "reward_quality": float(np.mean([r.reward.quality for r in flat])),
        "reward_format": float(np.mean([r.reward.format for r in flat])),
        "reward_length": float(np.mean([r.reward.length for r in flat])),
        "reward_group_std": float(np.mean([np.std([r.reward.total for r in g], ddof=1) for g in groups])),
        "cot_tokens": float(np.mean([len(r.cot_ids) for r in flat])),
        "truncated": float(np.mean([r.end_id is None for r in flat])),
    }


def train_dual_rl(config: DualRLConfig, scorer: DeScore | None = None) -> DualRLResult:
    """Run stage 2 with ``config`` (see :class:`DualRLTrainer`)."""
    return DualRLTrainer(config, scorer).train()


__all__ = [
    "DualRLConfig",
    "DualRLResult",
    "DualRLTrainer",
    "MicroBatch",
    "RLPair",
    "Rollout",
    "train_dual_rl",
]
