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

Besides the pair file, the trainer can take a *stream*: a function that makes fresh (frames, prompt, CoT) examples
on demand (``SFTTrainer(config, stream=...)``, ``streamed_per_batch`` of them in every micro-batch). A procedural
world renders and annotates clips faster than a disk holds them; the toy recipe streams rendered clips next to the
generator's samples from its pair file. The stream is called with a seed derived from (seed, step, process,
micro-batch), so a resumed run sees the same examples.

Infrastructure is stage 1's: frames decoded once (:class:`~descore.training.data.FrameStore`), the seeded data order
(:class:`~descore.training.data.PairSchedule` over sequences), atomic checkpoints and exact resume
(:mod:`descore.training.checkpointing`), accelerate. :class:`CompletionForward` and :func:`completion_targets` are
shared with stage 2, which needs the same per-token log-probabilities of generated CoTs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from descore.errors import ConfigError, DataError
from descore.inputs import cot_token_ids
from descore.metrics import ScoringInput, pair_inputs
from descore.modeling import DeScoreModel
from descore.pairs import PairDataset, load_pairs
from descore.scoring import DeScore
from descore.training.cold_start import LANGUAGE_MODEL_LINEAR, add_lora, train_in_float32
from descore.training.config import TrainingConfig
from descore.training.config import field_help as _help
from descore.training.data import FrameStore, PairSchedule, RowSpec, encode_rows
from descore.training.loop import (
    Run,
    RunResult,
    StageTrainer,
    end_of_turn_id,
    make_adamw,
    make_scheduler,
    to_device,
)
from descore.training.rewards import format_reward, quality_reward
from descore.video_io import Video

logger = logging.getLogger(__name__)


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
        train_in_float32(scorer, config.gradient_checkpointing)
    scorer.model.score_head.requires_grad_(False)
    return peft_model


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
class SFTConfig(TrainingConfig):
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
    streamed_per_batch: int = field(
        default=0,
        metadata=_help(
            "rows of every micro-batch made by the trainer's stream (fresh examples); the rest come from train_file"
        ),
    )
    # -- optimisation
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate"))
    vision_learning_rate: float | None = field(
        default=None, metadata=_help("learning rate of the vision tower (default: learning_rate)")
    )
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

    label = "sft config"

    def validate(self) -> None:
        problems = self.required_problems()
        checks = [
            ("lora_r", self.lora_r is None or self.lora_r >= 1, ">= 1 or null"),
            *self.lora_checks(),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            (
                "vision_learning_rate",
                self.vision_learning_rate is None or self.vision_learning_rate > 0,
                "> 0 or null",
            ),
            *self.optimizer_checks(),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            (
                "streamed_per_batch",
                0 <= self.streamed_per_batch < self.batch_size,
                ">= 0 and below batch_size (the pair file fills the rest)",
            ),
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
            *self.save_checks(),
        ]
        problems += self.check_rules(checks)
        problems += self.precision_problems()
        self.raise_problems(problems)


@dataclass
class SFTResult(RunResult):
    """What a run produced: the model (in memory and on disk), step count, per-step metrics, last evaluation."""

    history: list[dict[str, float]]
    evaluation: dict[str, float]


@dataclass(frozen=True)
class CoTExample:
    """One training sequence: a video, its prompt, the CoT ids and the ids its positions must predict."""

    video: Path
    prompt: str
    cot: tuple[int, ...]
    targets: tuple[int, ...]


@dataclass(frozen=True)
class StreamedCoT:
    """One example made on demand by a stream: frames (T, C, H, W) in [0, 1] at ``fps``, the prompt, the CoT."""

    frames: torch.Tensor
    fps: float
    prompt: str
    cot: str


#: A stream of fresh examples: ``stream(seed, count)`` returns ``count`` examples and depends on nothing but ``seed``.
CoTStream = Callable[[int, int], Sequence[StreamedCoT]]


def _cot_ids(
    tokenizer: Any, text: str, query_token: str, end_of_turn: int, max_tokens: int | None
) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """A CoT's ids, the ids its positions predict (the CoT and the end of turn, dropped when cut) and whether it
    was cut to ``max_tokens``."""
    ids = tuple(cot_token_ids(tokenizer, text, query_token))
    if max_tokens is not None and len(ids) > max_tokens:
        return ids[:max_tokens], ids[:max_tokens], True
    return ids, (*ids, end_of_turn), False


def cot_examples(
    inputs: Sequence[ScoringInput], tokenizer: Any, query_token: str, end_of_turn: int, max_tokens: int | None
) -> list[CoTExample]:
    """Tokenise each distinct (video, prompt, CoT); targets are the CoT and the end of turn (dropped when cut)."""
    out, cut = [], 0
    for item in inputs:
        ids, targets, was_cut = _cot_ids(tokenizer, item.cot or "", query_token, end_of_turn, max_tokens)
        cut += was_cut
        out.append(CoTExample(item.video, item.prompt, ids, targets))
    if cut:
        logger.warning("%d chain(s) of thought cut to max_cot_tokens=%d", cut, max_tokens)
    return out


def _batch(
    rows: Sequence[tuple[Video, str, Sequence[int], Sequence[int]]], scorer: DeScore
) -> dict[str, Any]:
    """Model inputs and completion targets of (sampled video, prompt, CoT ids, target ids) rows."""
    specs = [RowSpec(video, prompt, cot) for video, prompt, cot, _ in rows]
    inputs = encode_rows(scorer.processor, scorer.model.config, scorer.model.query_token_id, specs)
    positions = completion_targets(
        inputs["input_ids"].shape[1], [len(cot) for _, _, cot, _ in rows], [targets for *_, targets in rows]
    )
    return {"inputs": inputs, "positions": positions}


def _file_rows(examples: Sequence[CoTExample], frames: FrameStore) -> list[tuple[Video, str, Any, Any]]:
    return [(frames.get(e.video), e.prompt, e.cot, e.targets) for e in examples]


# ---------------------------------------------------------------------------------------------------- trainer
class SFTTrainer(StageTrainer):
    """Runs CoT SFT. ``scorer`` (optional) is the model to start from instead of ``config.model``; ``callbacks`` are
    called as ``callback(step, metrics)`` after every optimizer step (``step`` counts from 1); ``stream`` makes the
    ``streamed_per_batch`` fresh examples of every micro-batch (:data:`CoTStream`)."""

    config: SFTConfig
    progress_desc = "cot sft"

    def __init__(
        self,
        config: SFTConfig,
        scorer: DeScore | None = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
        stream: CoTStream | None = None,
    ):
        super().__init__(config, scorer, callbacks)
        if config.streamed_per_batch and stream is None:
            raise ConfigError(
                f"sft config: streamed_per_batch={config.streamed_per_batch} needs a stream "
                "(SFTTrainer(config, stream=...)); set it to 0 to train on train_file alone"
            )
        self.stream = stream

    def _streamed_rows(
        self, scorer: DeScore, step: int, rank: int, micro: int, end_of_turn: int
    ) -> list[tuple[Video, str, Any, Any]]:
        """The stream's examples of one micro-batch, sampled like the checkpoint samples any video."""
        cfg = self.config
        if not cfg.streamed_per_batch:
            return []
        seed = int(np.random.SeedSequence([cfg.seed, step, rank, micro]).generate_state(1)[0])
        rows = []
        for index, item in enumerate(self.stream(seed, cfg.streamed_per_batch)):
            video = scorer.load_video(item.frames, fps=item.fps, position=index)
            ids, targets, _ = _cot_ids(
                scorer.tokenizer, item.cot, scorer.model.config.query_token, end_of_turn, cfg.max_cot_tokens
            )
            rows.append((video, item.prompt, ids, targets))
        return rows

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
        resume_from, accelerator, scorer = self._begin()
        model = scorer.model
        peft_model = make_trainable(scorer, cfg)

        videos = train_pairs.videos() + (eval_pairs.videos() if eval_pairs is not None else [])
        frames = self._decode_frames(accelerator, scorer, videos)
        end_of_turn = end_of_turn_id(scorer.tokenizer)

        def examples_of(pairs: PairDataset) -> list[CoTExample]:
            inputs = pair_inputs(pairs, with_cot=True).inputs
            return cot_examples(
                inputs, scorer.tokenizer, model.config.query_token, end_of_turn, cfg.max_cot_tokens
            )

        examples = examples_of(train_pairs)
        eval_examples = None if eval_pairs is None else examples_of(eval_pairs)
        schedule = PairSchedule(
            num_pairs=len(examples),
            micro_batch=cfg.batch_size - cfg.streamed_per_batch,
            accumulation=cfg.gradient_accumulation_steps,
            world_size=accelerator.num_processes,
            seed=cfg.seed,
            cot_mask_prob=0.0,
        )
        total_steps = cfg.max_steps or schedule.steps_for_epochs(cfg.num_epochs)
        forward = CompletionForward(model)
        optimizer = make_adamw(cfg, model, separate_head=False)
        scheduler = make_scheduler(cfg, optimizer, total_steps)
        forward, optimizer = accelerator.prepare(forward, optimizer)
        data_state = {
            "sequences_per_step": schedule.pairs_per_step,
            "streamed_per_batch": cfg.streamed_per_batch,
            "num_sequences": schedule.num_pairs,
            "train_file": str(train_pairs.source),
        }
        run = Run(accelerator, model, forward, optimizer, scheduler, data_state, total_steps)
        start = self._start(run, resume_from)

        def train_step(step: int) -> dict[str, float]:
            began = time.perf_counter()
            plan = schedule.step_plan(step, accelerator.process_index)
            totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # loss sum, tokens
            batches = [
                _batch(
                    _file_rows([examples[i] for i in indices], frames)
                    + self._streamed_rows(scorer, step, accelerator.process_index, micro, end_of_turn),
                    scorer,
                )
                for micro, (indices, _) in enumerate(plan)
            ]
            step_tokens = sum(len(b["positions"][2]) for b in batches)
            for micro, batch in enumerate(batches):
                inputs = to_device(batch["inputs"], accelerator.device)
                rows, cols, targets = (t.to(accelerator.device) for t in batch["positions"])
                with run.grad_sync(last=micro == len(batches) - 1):
                    with accelerator.autocast():
                        _, log_probs = forward(inputs, rows, cols, targets)
                    loss = -log_probs.sum() / step_tokens
                    accelerator.backward(loss)
                totals += torch.tensor(
                    [float(-log_probs.detach().sum()), len(targets)],
                    dtype=torch.float64,
                    device=accelerator.device,
                )
            grad_norm = run.optimizer_step(cfg.max_grad_norm)
            loss_sum, tokens = accelerator.reduce(totals, reduction="sum").tolist()
            done = step + 1
            return {
                "step": done,
                "loss": loss_sum / tokens,
                "tokens": tokens,
                "epoch": schedule.epoch_of(done),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "seconds": time.perf_counter() - began,
            }

        history, evaluation = self._run_steps(
            run,
            start,
            train_step,
            postfix=lambda m: {"loss": f"{m['loss']:.4f}"},
            evaluate=(
                None
                if eval_examples is None
                else lambda: self.evaluate(accelerator, scorer, frames, forward, eval_examples, eval_pairs)
            ),
            eval_metrics=lambda evaluation: {f"eval/{k}": v for k, v in evaluation.items()},
        )
        final_dir = self._finish(accelerator, scorer, peft_model)
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

        def evaluate() -> dict[str, float]:
            loss_sum, correct, count = 0.0, 0, 0
            module = accelerator.unwrap_model(forward)
            with torch.no_grad(), accelerator.autocast():
                for start in range(0, len(examples), cfg.eval_batch_size):
                    batch = _batch(_file_rows(examples[start : start + cfg.eval_batch_size], frames), scorer)
                    inputs = to_device(batch["inputs"], accelerator.device)
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
            return result

        return self._on_main_process(accelerator, forward, evaluate)


def train_sft(config: SFTConfig, scorer: DeScore | None = None, stream: CoTStream | None = None) -> SFTResult:
    """Run CoT SFT with ``config`` (see :class:`SFTTrainer`)."""
    return SFTTrainer(config, scorer, stream=stream).train()


__all__ = [
    "CoTExample",
    "CoTStream",
    "CompletionForward",
    "SFTConfig",
    "SFTResult",
    "SFTTrainer",
    "StreamedCoT",
    "completion_targets",
    "cot_examples",
    "train_sft",
]
