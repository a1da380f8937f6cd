"""Chain-of-thought SFT: teach a backbone to write the judge's chain of thought before any reward training.

DeScore's stage 2 samples CoTs from the backbone, so the backbone must already write them in the judge's format. A
large instruct model does; a small or randomly initialised one (the toy world's) does not. This step is plain
teacher forcing on annotated CoTs (the ``CoT_A`` / ``CoT_B`` columns of a pair file): every distinct
(video, prompt, CoT) is one sequence with the inference layout ``user [video, judge instruction] / assistant [CoT]``,
and the loss is the cross-entropy of the CoT tokens and of the end of turn after them (what stops the generation).
Nothing else of the sequence is a target. The reward head is not trained.

Settings come from :class:`SFTConfig` (YAML keys are its fields; ``descore train sft --config FILE``). The model is a
base Qwen-VL checkpoint (``model_config`` sets the DeScore fields: sampling, template, generation) or a DeScore
checkpoint. ``lora_r: null`` trains every language-model weight (what a randomly initialised toy backbone needs);
otherwise LoRA as in stage 1. The output ``OUTPUT_DIR/final`` is a DeScore checkpoint whose head is still untrained:
the starting point of stage 1 (:mod:`descore.training.cold_start`), not a reward model.

Infrastructure is stage 1's: frames decoded once (:class:`~descore.training.data.FrameStore`), the seeded data order
(:class:`~descore.training.data.PairSchedule` over sequences), atomic checkpoints and exact resume
(:mod:`descore.training.checkpointing`), accelerate. :class:`CompletionForward` and :func:`completion_targets` are
shared with stage 2, which needs the same per-token log-probabilities of generated CoTs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from descore.errors import ConfigError, DataError
from descore.inputs import cot_token_ids
from descore.metrics import ScoringInput, pair_inputs
from descore.modeling import DeScoreModel
from descore.pairs import PairDataset, load_pairs
from descore.scoring import DeScore
from descore.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from descore.training.cold_start import (
    _DTYPES,
    FINAL_NAME,
    LANGUAGE_MODEL_LINEAR,
    METRICS_NAME,
    _accelerator,
    _end_of_turn_id,
    _flat,
    _json_number,
    _load_scorer,
    _scheduler,
    _step_seed,
    _truncate_metrics,
    add_lora,
)
from descore.training.config import config_from_dict, load_yaml_config
from descore.training.data import FrameStore, PairSchedule, RowSpec, encode_rows
from descore.training.rewards import format_reward, quality_reward

logger = logging.getLogger(__name__)


def _help(text: str, required: bool = False) -> dict[str, Any]:
    return {"help": text, "required": required}


# ---------------------------------------------------------------------------------------------------- shared pieces
def completion_targets(
    length: int, cot_lengths: Sequence[int], targets: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions and ids of next-token targets in a left-padded batch whose rows end with ``[CoT][query token]``.

    Row ``r`` holds a CoT of ``cot_lengths[r]`` tokens; ``targets[r]`` are the ids its positions must predict, from
    the last prompt token on: the CoT, optionally followed by the token that ended it (end of turn). Returns
    ``(rows, cols, ids)``: the logits at ``(rows[k], cols[k])`` predict ``ids[k]``.
    """
    rows, cols, ids = [], [], []
    for r, (count, row_targets) in enumerate(zip(cot_lengths, targets)):
        if len(row_targets) not in (count, count + 1):
            raise ValueError(f"row {r}: {len(row_targets)} targets for a CoT of {count} tokens")
        first = length - count - 2  # the token before the CoT predicts its first token
        rows += [r] * len(row_targets)
        cols += range(first, first + len(row_targets))
        ids += list(row_targets)
    long = {"dtype": torch.long}
    return torch.tensor(rows, **long), torch.tensor(cols, **long), torch.tensor(ids, **long)


class CompletionForward(nn.Module):
    """One forward over ``[prompt, video][CoT][query token]`` rows: the head's reward at the query token of every row
    and the log-probability of each completion target (logits divided by ``temperature``, computed in float32).

    A module of its own so that accelerate / DDP wrap the whole computation.
    """

    def __init__(self, model: DeScoreModel, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(
        self, inputs: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**inputs)
        logits = self.model.backbone.lm_head(out.last_hidden_state[rows, cols]).float() / self.temperature
        log_probs = torch.gather(F.log_softmax(logits, dim=-1), 1, targets.unsqueeze(1)).squeeze(1)
        return out.rewards[:, 0], log_probs


def make_trainable(scorer: DeScore, config: Any) -> Any:
    """LoRA as in stage 1 (``config.lora_r`` set) or every language-model weight (``lora_r`` None), plus the vision
    tower unless ``config.freeze_vision``; the head stays frozen. Returns the peft model (None without LoRA)."""
    backbone = scorer.model.backbone
    if config.lora_r is not None:
        peft_model = add_lora(scorer, config)
    else:
        peft_model = None
        scorer.model.requires_grad_(False)
        backbone.model.language_model.requires_grad_(True)
        backbone.lm_head.requires_grad_(True)
        if not config.freeze_vision:
            backbone.model.visual.requires_grad_(True)
        for param in scorer.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        if config.gradient_checkpointing:
            backbone.activation_checkpointing_enable({"use_reentrant": False})
    scorer.model.score_head.requires_grad_(False)
    return peft_model


def save_training_state(
    accelerator: Any,
    trainer: Any,
    step: int,
    model: nn.Module,
    optimizer,
    scheduler,
    data_state: dict[str, Any],
) -> None:
    """Write ``checkpoint-<step>`` of ``trainer`` (config, data layout, grad scaler) atomically, on the main process."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(
            trainer.output_dir,
            step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            state={
                "config": trainer.config.to_dict(),
                "data": data_state,
                "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            },
            keep_last=trainer.config.save_total_limit,
        )
    accelerator.wait_for_everyone()


def resume_training_state(
    accelerator: Any, path: Path, model: nn.Module, optimizer, scheduler, data_state: dict[str, Any]
) -> int:
    """Restore a checkpoint written by :func:`save_training_state` and return its step; refuse a changed layout."""
    state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    saved = state.get("data", {})
    changed = {k: (saved.get(k), v) for k, v in data_state.items() if saved.get(k) != v}
    if changed:
        listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"{path}: cannot resume exactly: the data or batch layout changed ({listing}); use the same data and "
            "batch settings, or start a new output_dir"
        )
    if accelerator.scaler is not None and state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    return int(state["step"])


def check_output_dir(output_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuse to overwrite a run's checkpoints without ``resume``."""
    found = latest_checkpoint(output_dir)
    if found is not None and not resume:
        raise ConfigError(
            f"{output_dir} already holds training checkpoints ({found.name}); set resume: true to continue, or "
            "choose another output_dir"
        )
    return found


def export_model(accelerator: Any, scorer: DeScore, peft_model: Any, output_dir: Path, config: Any) -> Path:
    """Merge LoRA (if any) into the weights and write a plain DeScore checkpoint to ``output_dir/final``
    atomically, in ``config.model_dtype``."""
    final = output_dir / FINAL_NAME
    accelerator.wait_for_everyone()
    if peft_model is not None:
        merged = peft_model.merge_and_unload()
        if merged is not scorer.model.backbone:
            raise RuntimeError("peft returned a different backbone object after merging")
    if config.gradient_checkpointing:
        scorer.model.backbone.activation_checkpointing_disable()
    scorer.model.backbone.to(_DTYPES[config.model_dtype])
    scorer.model.requires_grad_(False)
    scorer.model.eval()
    if accelerator.is_main_process:
        partial = output_dir / f".{FINAL_NAME}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        scorer.save_pretrained(partial)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        logger.info("wrote %s", final)
    accelerator.wait_for_everyone()
    return final


def append_metrics(accelerator: Any, output_dir: Path, metrics: dict[str, float]) -> None:
    """Log ``metrics`` to the trackers and append them to ``output_dir/metrics.jsonl``."""
    accelerator.log(metrics, step=int(metrics["step"]))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / METRICS_NAME, "a") as handle:
            handle.write(json.dumps({k: _json_number(v) for k, v in metrics.items()}) + "\n")


def generation_agreement(
    scorer: DeScore, pairs: PairDataset, limit: int, max_new_tokens: int | None, batch_size: int
) -> dict[str, float]:
    """Greedy CoTs for the first ``limit`` distinct videos of ``pairs``: the share with a valid answer block
    (``format``) and, when the file has ground-truth sub-scores, their agreement with it (``quality``, exact rule)."""
    truths: dict[tuple[str, str], Any] = {}
    for pair in pairs:
        truths.setdefault((str(pair.video_a), pair.prompt), pair.gt_subscores_a)
        truths.setdefault((str(pair.video_b), pair.prompt), pair.gt_subscores_b)
    keys = list(truths)[:limit]
    generation = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    out = scorer.score(
        [k[0] for k in keys],
        [k[1] for k in keys],
        think=True,
        batch_size=batch_size,
        generation=generation,
        progress=False,
    )
    result = {"format": float(np.mean([format_reward(a) for a in out.answers]))}
    if all(truths[k] is not None for k in keys):
        result["quality"] = float(
            np.mean(
                [
                    quality_reward(a.dimensional_scores if a else None, truths[k])
                    for a, k in zip(out.answers, keys)
                ]
            )
        )
    return result


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class SFTConfig:
    """CoT SFT settings. Defaults suit a pretrained backbone with LoRA; the toy recipe trains a random backbone fully."""

    # -- model and data
    model: str | None = field(
        default=None,
        metadata=_help("base Qwen-VL checkpoint (gets a query token and head) or DeScore checkpoint"),
    )
    model_config: dict = field(
        default_factory=dict,
        metadata=_help(
            "DeScoreConfig fields for a model started from a base Qwen-VL checkpoint (sampling, template)"
        ),
    )
    model_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata=_help("dtype of the frozen weights; trainable weights are always float32")
    )
    train_file: str = field(
        default="",
        metadata=_help("pair file whose CoT_A / CoT_B columns are the CoTs to learn", required=True),
    )
    eval_file: str | None = field(
        default=None,
        metadata=_help("held-out pairs: teacher-forced loss, and greedy CoTs if eval_generate > 0"),
    )
    video_root: str | None = field(
        default=None,
        metadata=_help("folder relative video paths resolve against (default: each file's folder)"),
    )
    output_dir: str = field(
        default="",
        metadata=_help("where checkpoints, metrics.jsonl and the final model (final/) go", required=True),
    )
    video_cache_dir: str | None = field(
        default=None, metadata=_help("folder for decoded frames (shared with later stages); None: in memory")
    )
    # -- what is trained
    lora_r: int | None = field(
        default=64, metadata=_help("LoRA rank; null trains every language-model weight")
    )
    lora_alpha: float = field(default=128.0, metadata=_help("LoRA scaling numerator (scale = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA input"))
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LANGUAGE_MODEL_LINEAR),
        metadata=_help("names of the language model's linear layers that get LoRA"),
    )
    freeze_vision: bool = field(default=False, metadata=_help("keep the vision tower and merger frozen"))
    # -- optimisation
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon"))
    max_grad_norm: float | None = field(
        default=1.0, metadata=_help("gradient clipping norm (None: no clipping)")
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = field(
        default="cosine", metadata=_help("schedule after warmup")
    )
    warmup_ratio: float = field(default=0.05, metadata=_help("share of the steps with linear warmup"))
    num_epochs: float = field(
        default=2.0, metadata=_help("passes over the CoTs (ignored when max_steps is set)")
    )
    max_steps: int | None = field(
        default=None, metadata=_help("optimizer steps to run (overrides num_epochs)")
    )
    batch_size: int = field(default=8, metadata=_help("sequences per micro-batch per process"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    max_cot_tokens: int | None = field(
        default=None,
        metadata=_help("cut longer CoTs to this many tokens (a cut CoT gets no end-of-turn target)"),
    )
    # -- machinery
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="bf16", metadata=_help("accelerate mixed precision")
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("activation checkpointing in the backbone")
    )
    eval_every: int = field(default=0, metadata=_help("evaluate every this many steps (0: at the end only)"))
    eval_generate: int = field(
        default=0,
        metadata=_help(
            "distinct eval videos to write a greedy CoT for (answer format and sub-score agreement)"
        ),
    )
    eval_max_new_tokens: int | None = field(
        default=None, metadata=_help("cap on generated CoT length in evaluation (default: the checkpoint's)")
    )
    eval_batch_size: int = field(default=16, metadata=_help("sequences per evaluation batch"))
    save_every: int = field(
        default=500, metadata=_help("write a checkpoint every this many steps (0: never)")
    )
    save_total_limit: int | None = field(
        default=2, metadata=_help("keep only the newest checkpoints (None: all)")
    )
    log_with: list[str] = field(
        default_factory=list, metadata=_help("accelerate trackers; metrics.jsonl is always written")
    )
    project_name: str = field(default="descore-sft", metadata=_help("tracker project name"))
    seed: int = field(default=0, metadata=_help("seed of the data order, LoRA init and dropout"))
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
            ("lora_r", self.lora_r is None or self.lora_r >= 1, ">= 1 or null"),
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("lora_target_modules", bool(self.lora_target_modules), "a non-empty list"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
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
            ("max_cot_tokens", self.max_cot_tokens is None or self.max_cot_tokens >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_generate", self.eval_generate >= 0, ">= 0"),
            (
                "eval_max_new_tokens",
                self.eval_max_new_tokens is None or self.eval_max_new_tokens >= 1,
                ">= 1",
            ),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ("save_every", self.save_every >= 0, ">= 0"),
            ("save_total_limit", self.save_total_limit is None or self.save_total_limit >= 1, ">= 1"),
        ]
        problems += [
            f"{name} must be {rule}, got {getattr(self, name)!r}" for name, ok, rule in checks if not ok
        ]
        if self.model_dtype != "float32" and self.mixed_precision == "no":
            problems.append(f"model_dtype {self.model_dtype} needs mixed_precision bf16 or fp16")
        if problems:
            raise ConfigError("sft config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "sft config") -> SFTConfig:
        return config_from_dict(cls, data, where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> SFTConfig:
        return load_yaml_config(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SFTResult:
    """What a run produced: the model (in memory and on disk), step count, per-step metrics, last evaluation."""

    scorer: DeScore
    final_dir: Path
    steps: int
    history: list[dict[str, float]]
    evaluation: dict[str, float]


@dataclass(frozen=True)
class CoTExample:
    """One training sequence: a video, its prompt, the CoT ids and the ids its positions must predict."""

    video: Path
    prompt: str
    cot: tuple[int, ...]
    targets: tuple[int, ...]


def cot_examples(
    inputs: Sequence[ScoringInput], tokenizer: Any, query_token: str, end_of_turn: int, max_tokens: int | None
) -> list[CoTExample]:
    """Tokenise each distinct (video, prompt, CoT); targets are the CoT and the end of turn (dropped when cut)."""
    out, cut = [], 0
    for item in inputs:
        ids = tuple(cot_token_ids(tokenizer, item.cot or "", query_token))
        if max_tokens is not None and len(ids) > max_tokens:
            ids, cut = ids[:max_tokens], cut + 1
            targets = ids
        else:
            targets = (*ids, end_of_turn)
        out.append(CoTExample(item.video, item.prompt, ids, targets))
    if cut:
        logger.warning("%d chain(s) of thought cut to max_cot_tokens=%d", cut, max_tokens)
    return out


def _batch(examples: Sequence[CoTExample], frames: FrameStore, scorer: DeScore) -> dict[str, Any]:
    rows = [RowSpec(frames.get(e.video), e.prompt, e.cot) for e in examples]
    inputs = encode_rows(scorer.processor, scorer.model.config, scorer.model.query_token_id, rows)
    positions = completion_targets(
        inputs["input_ids"].shape[1], [len(e.cot) for e in examples], [e.targets for e in examples]
    )
    return {"inputs": inputs, "positions": positions}


# ---------------------------------------------------------------------------------------------------- trainer
class SFTTrainer:
    """Runs CoT SFT. ``scorer`` (optional) is the model to start from instead of ``config.model``; ``callbacks`` are
    called as ``callback(step, metrics)`` after every optimizer step (``step`` counts from 1)."""

    def __init__(
        self,
        config: SFTConfig,
        scorer: DeScore | None = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    ):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self._scorer = scorer
        self.callbacks = list(callbacks)

    def load_data(self) -> tuple[PairDataset, PairDataset | None]:
        """Read the pair files; every pair must carry both CoTs."""
        cfg = self.config
        train = load_pairs(cfg.train_file, video_root=cfg.video_root)
        if not train.has_cot:
            raise DataError(cfg.train_file, ["CoT SFT needs CoT_A and CoT_B for every pair"])
        evaluation = None
        if cfg.eval_file is not None:
            evaluation = load_pairs(cfg.eval_file, video_root=cfg.video_root)
            if not evaluation.has_cot:
                raise DataError(cfg.eval_file, ["CoT SFT evaluation needs CoT_A and CoT_B for every pair"])
        return train, evaluation

    def train(self) -> SFTResult:
        """Validate the data, train, evaluate and export the model to ``output_dir/final``."""
        cfg = self.config
        train_pairs, eval_pairs = self.load_data()
        resume_from = check_output_dir(self.output_dir, cfg.resume)
        accelerator = _accelerator(cfg)
        torch.manual_seed(cfg.seed)
        scorer = self._scorer if self._scorer is not None else _load_scorer(cfg)
        model = scorer.model
        peft_model = make_trainable(scorer, cfg)

        frames = FrameStore(model.config.sampling, cfg.video_cache_dir)
        videos = train_pairs.videos() + (eval_pairs.videos() if eval_pairs is not None else [])
        with accelerator.main_process_first():
            frames.add_all(
                videos, scorer.load_video, progress=cfg.progress and accelerator.is_local_main_process
            )
        end_of_turn = _end_of_turn_id(scorer.tokenizer)
        examples = cot_examples(
            pair_inputs(train_pairs, with_cot=True).inputs,
            scorer.tokenizer,
            model.config.query_token,
            end_of_turn,
            cfg.max_cot_tokens,
        )
        eval_examples = None
        if eval_pairs is not None:
            eval_examples = cot_examples(
                pair_inputs(eval_pairs, with_cot=True).inputs,
                scorer.tokenizer,
                model.config.query_token,
                end_of_turn,
                cfg.max_cot_tokens,
            )
        schedule = PairSchedule(
            num_pairs=len(examples),
            micro_batch=cfg.batch_size,
            accumulation=cfg.gradient_accumulation_steps,
            world_size=accelerator.num_processes,
            seed=cfg.seed,
            cot_mask_prob=0.0,
        )
        total_steps = cfg.max_steps or schedule.steps_for_epochs(cfg.num_epochs)
        forward = CompletionForward(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
        )
        scheduler = _scheduler(cfg, optimizer, total_steps)
        forward, optimizer = accelerator.prepare(forward, optimizer)
        data_state = {
            "sequences_per_step": schedule.pairs_per_step,
            "num_sequences": schedule.num_pairs,
            "train_file": str(train_pairs.source),
        }
        start = 0
        if resume_from is not None:
            start = resume_training_state(accelerator, resume_from, model, optimizer, scheduler, data_state)
        if accelerator.is_main_process:
            _truncate_metrics(self.output_dir / METRICS_NAME, start)
        accelerator.init_trackers(cfg.project_name, config=_flat(cfg.to_dict()))

        history: list[dict[str, float]] = []
        evaluation: dict[str, float] = {}
        bar = tqdm(
            total=total_steps,
            initial=start,
            desc="cot sft",
            unit="step",
            disable=not (cfg.progress and accelerator.is_local_main_process),
        )
        forward.train()
        for step in range(start, total_steps):
            torch.manual_seed(_step_seed(cfg.seed, step, accelerator.process_index))
            began = time.perf_counter()
            plan = schedule.step_plan(step, accelerator.process_index)
            totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # loss sum, tokens
            batches = [_batch([examples[i] for i in indices], frames, scorer) for indices, _ in plan]
            step_tokens = sum(len(b["positions"][2]) for b in batches)
            for micro, batch in enumerate(batches):
                inputs = {
                    k: v.to(accelerator.device) if isinstance(v, torch.Tensor) else v
                    for k, v in batch["inputs"].items()
                }
                rows, cols, targets = (t.to(accelerator.device) for t in batch["positions"])
                last = micro == len(batches) - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(forward):
                    with accelerator.autocast():
                        _, log_probs = forward(inputs, rows, cols, targets)
                    loss = -log_probs.sum() / step_tokens
                    accelerator.backward(loss)
                totals += torch.tensor(
                    [float(-log_probs.detach().sum()), len(targets)],
                    dtype=torch.float64,
                    device=accelerator.device,
                )
            grad_norm = math.nan
            if cfg.max_grad_norm is not None:
                grad_norm = float(accelerator.clip_grad_norm_(forward.parameters(), cfg.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, tokens = accelerator.reduce(totals, reduction="sum").tolist()
            done = step + 1
            metrics = {
                "step": done,
                "loss": loss_sum / tokens,
                "tokens": tokens,
                "epoch": schedule.epoch_of(done),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "seconds": time.perf_counter() - began,
            }
            if (
                cfg.eval_every
                and done % cfg.eval_every == 0
                and eval_examples is not None
                and done < total_steps
            ):
                evaluation = self.evaluate(accelerator, scorer, frames, forward, eval_examples, eval_pairs)
                metrics.update({f"eval/{k}": v for k, v in evaluation.items()})
            history.append(metrics)
            append_metrics(accelerator, self.output_dir, metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
            if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
                save_training_state(accelerator, self, done, model, optimizer, scheduler, data_state)
            for callback in self.callbacks:
                callback(done, metrics)
        bar.close()
        if eval_examples is not None:
            evaluation = self.evaluate(accelerator, scorer, frames, forward, eval_examples, eval_pairs)
            append_metrics(
                accelerator,
                self.output_dir,
                {"step": total_steps, **{f"eval/{k}": v for k, v in evaluation.items()}},
            )
        final_dir = export_model(accelerator, scorer, peft_model, self.output_dir, cfg)
        accelerator.end_training()
        return SFTResult(scorer, final_dir, total_steps, history, evaluation)

    def evaluate(
        self,
        accelerator: Any,
        scorer: DeScore,
        frames: FrameStore,
        forward: nn.Module,
        examples: Sequence[CoTExample],
        pairs: PairDataset,
    ) -> dict[str, float]:
        """Teacher-forced loss and next-token accuracy on the eval CoTs; with ``eval_generate``, greedy CoTs'
        answer format rate and sub-score agreement."""
        cfg = self.config
        result: dict[str, float] = {}
        if accelerator.is_main_process:
            forward.eval()
            loss_sum, correct, count = 0.0, 0, 0
            module = accelerator.unwrap_model(forward)
            with torch.no_grad(), accelerator.autocast():
                for start in range(0, len(examples), cfg.eval_batch_size):
                    batch = _batch(examples[start : start + cfg.eval_batch_size], frames, scorer)
                    inputs = {
                        k: v.to(accelerator.device) if isinstance(v, torch.Tensor) else v
                        for k, v in batch["inputs"].items()
                    }
                    rows, cols, targets = (t.to(accelerator.device) for t in batch["positions"])
                    out = module.model(**inputs)
                    logits = module.model.backbone.lm_head(out.last_hidden_state[rows, cols]).float()
                    loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
                    correct += int((logits.argmax(-1) == targets).sum())
                    count += len(targets)
                result = {"loss": loss_sum / count, "token_accuracy": correct / count}
                if cfg.eval_generate:
                    result.update(
                        generation_agreement(
                            scorer, pairs, cfg.eval_generate, cfg.eval_max_new_tokens, cfg.eval_batch_size
                        )
                    )
            forward.train()
        accelerator.wait_for_everyone()
        return result


def train_sft(config: SFTConfig, scorer: DeScore | None = None) -> SFTResult:
    """Run CoT SFT with ``config`` (see :class:`SFTTrainer`)."""
    return SFTTrainer(config, scorer).train()


__all__ = [
    "CoTExample",
    "CompletionForward",
    "SFTConfig",
    "SFTResult",
    "SFTTrainer",
    "completion_targets",
    "cot_examples",
    "train_sft",
]
