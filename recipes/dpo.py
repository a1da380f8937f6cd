"""Flow-DPO / Diffusion-DPO: preference optimisation of a video generator on (winner, loser) pairs.

Pairs come from the generator itself, ranked by the reward (``pair_source: online``: each prompt's best and worst of
``group_size`` samples), or from a preference-pair file (``offline``: :func:`descore.pairs.load_pairs`, videos
encoded with the pipeline's VAE). Winner and loser share the noise and the noise level (logit-normal by default);
with ``e(x) = ||target - prediction||^2`` (v = eps - x0 for flows, the scheduler's target for CogVideoX)

    L = -log sigmoid(-(beta / 2) [(e_theta(w) - e_ref(w)) - (e_theta(l) - e_ref(l))])

with a constant ``beta`` and the reference ``e_ref`` from the same network with the LoRA disabled, plus, with
``sft_weight`` alpha > 0, ``alpha e_theta(w)``: the winner's own denoising loss (RPO; trl's ``rpo_alpha``), meant to
keep DPO from raising both errors, the loser's faster than the winner's (on the toy world it does not make DPO learn;
docs/recipes.md). The implicit accuracy (the share of pairs whose inner term is positive) is logged.

Run: ``accelerate launch -m recipes.dpo --config FILE`` (or ``python -m recipes.dpo --config FILE``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from descore.errors import ConfigError, DataError, VideoError
from descore.pairs import PairLabel, load_pairs
from descore.video_io import read_video
from recipes.base import seeded
from recipes.families import Conditioning, SampleContext
from recipes.groups import all_pairs, best_worst_pairs
from recipes.lora import reference_policy
from recipes.objectives import noisy_batch
from recipes.rollout import prepare_context
from recipes.rwr import DenoisingConfig, DenoisingTrainer

logger = logging.getLogger(__name__)


@dataclass
class DPOConfig(DenoisingConfig):
    """DPO settings. ``beta`` defaults to about Flow-DPO's 100 (Diffusion-DPO on epsilon used 2500-5000)."""

    output_dir: str = field(
        default="runs/dpo",
        metadata={"help": "where checkpoints, metrics, sample videos and the final LoRA go"},
    )
    beta: float = field(default=100.0, metadata={"help": "DPO beta (constant over noise levels)"})
    pair_source: Literal["online", "offline"] = field(
        default="online",
        metadata={
            "help": "online: best vs worst of each prompt's group, ranked by the reward; offline: pairs from pair_file"
        },
    )
    pairing: Literal["best_worst", "all"] = field(
        default="best_worst",
        metadata={
            "help": "online: each group's best vs worst sample, or every pair of its samples whose rewards differ"
        },
    )
    min_reward_gap: float = field(
        default=0.0, metadata={"help": "online: skip pairs whose rewards differ by no more"}
    )
    sft_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the winner's denoising loss added to the DPO loss (RPO, trl's rpo_alpha); 0: pure DPO"
        },
    )
    pair_file: str | None = field(
        default=None, metadata={"help": "offline: preference-pair file (CSV/JSONL, descore.pairs formats)"}
    )
    pair_dimension: str = field(
        default="Overall", metadata={"help": "offline: the label column that decides the winner"}
    )
    video_root: str | None = field(
        default=None, metadata={"help": "offline: folder relative video paths resolve against"}
    )
    pairs_per_update: int = field(default=4, metadata={"help": "offline: pairs per update per process"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ConfigError(f"beta: must be positive, got {self.beta}")
        if self.sft_weight < 0:
            raise ConfigError(f"sft_weight: must be >= 0, got {self.sft_weight}")
        if self.pair_source == "offline" and not self.pair_file:
            raise ConfigError("pair_file: pair_source 'offline' needs a preference-pair file")
        if self.pair_source == "online" and self.group_size < 2:
            raise ConfigError(
                f"group_size: online pairs need at least 2 samples per prompt, got {self.group_size}"
            )


class DPOTrainer(DenoisingTrainer):
    """DPO on pairs from the generator (online) or a pair file (offline); reference by adapter-disable."""

    name = "dpo"
    config_class = DPOConfig

    def validate(self) -> None:
        config = self.config
        self.pairs = None
        if config.pair_source == "offline":
            dataset = load_pairs(
                config.pair_file, video_root=config.video_root, dimension=config.pair_dimension
            )
            self.pairs = [p for p in dataset if p.labels[config.pair_dimension] != PairLabel.TIE]
            if not self.pairs:
                raise DataError(
                    config.pair_file, [f"every pair is a tie on {config.pair_dimension}: nothing to learn"]
                )

    def training_prompts(self) -> list[str]:
        if self.pairs is not None:
            return list(dict.fromkeys(p.prompt for p in self.pairs))
        return super().training_prompts()

    # ------------------------------------------------------------------ pairs
    def online_pairs(
        self, update: int
    ) -> tuple[torch.Tensor, torch.Tensor, Conditioning, SampleContext, dict]:
        samples = self.sample_groups(update, sde_steps=[])
        pairs = all_pairs if self.config.pairing == "all" else best_worst_pairs
        winners, losers = pairs(samples.rewards, samples.group_ids, self.config.min_reward_gap)
        x0 = samples.final_latents
        conditioning = samples.conditioning.select(winners)
        metrics = self.reward_metrics(samples)
        metrics["train/pairs"] = float(len(winners))
        if len(winners):
            metrics["train/pair_reward_gap"] = float(
                (samples.rewards[winners] - samples.rewards[losers]).mean()
            )
        return x0[winners], x0[losers], conditioning, samples.trajectories[0].context, metrics

    def _load(self, path, what: str) -> torch.Tensor:
        spec = self.config.sampling
        try:
            frames = read_video(path).frames
        except VideoError as err:
            raise DataError(str(self.config.pair_file), [f"{what}: {err}"]) from err
        if frames.shape[0] < spec.num_frames:
            raise DataError(
                str(self.config.pair_file),
                [f"{what}: {path} has {frames.shape[0]} frames; sampling.num_frames is {spec.num_frames}"],
            )
        frames = F.interpolate(
            frames[: spec.num_frames],
            size=(spec.height, spec.width),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return frames.clamp(0, 1)

    def offline_pairs(
        self, update: int
    ) -> tuple[torch.Tensor, torch.Tensor, Conditioning, SampleContext, dict]:
        config = self.config
        generator = seeded(config.seed, update, self.process, "pairs")
        count = config.pairs_per_update
        order = (
            torch.randperm(len(self.pairs), generator=generator)[:count]
            if count <= len(self.pairs)
            else torch.randint(len(self.pairs), (count,), generator=generator)
        )
        chosen = [self.pairs[i] for i in order.tolist()]
        winners, losers = [], []
        for pair in chosen:
            a_wins = pair.labels[config.pair_dimension] == PairLabel.A
            first, second = (pair.video_a, pair.video_b) if a_wins else (pair.video_b, pair.video_a)
            winners.append(self._load(first, f"line {pair.line}"))
            losers.append(self._load(second, f"line {pair.line}"))
        device = self.accelerator.device
        with self.accelerator.autocast():
            x_w = self.family.encode_video(self.pipe, torch.stack(winners).to(device))
            x_l = self.family.encode_video(self.pipe, torch.stack(losers).to(device))
        prompts = [p.prompt for p in chosen]
        _, context = prepare_context(self.pipe, prompts, config.sampling, self.encode(prompts))
        return x_w, x_l, context.conditioning, context, {"train/pairs": float(len(chosen))}

    # ------------------------------------------------------------------ update
    def run_update(self, update: int) -> dict[str, float]:
        config = self.config
        started = time.perf_counter()
        source = self.online_pairs if config.pair_source == "online" else self.offline_pairs
        x_w, x_l, conditioning, context, metrics = source(update)
        sampled = time.perf_counter()
        count = x_w.shape[0]
        everywhere = count
        if self.accelerator.num_processes > 1:  # optimizer_step is collective: all processes step, or none
            total = torch.tensor(float(count), device=self.accelerator.device)
            everywhere = int(self.accelerator.reduce(total, reduction="sum"))
        if not everywhere:
            logger.warning("update %d: no pair (every group tied); no optimizer step", update)
            return {**metrics, "time/rollout_s": sampled - started, "time/train_s": 0.0}
        stats: dict[str, list[float]] = {}
        for epoch in range(config.inner_epochs):
            for draw in self.draws(epoch):
                levels = self.noise_levels(update, draw, count)
                noise = self.noise_like(x_w, update, draw)  # shared by winner and loser
                for index in torch.split(torch.arange(count), config.train_batch_size):
                    cond = conditioning.select(index)
                    both = Conditioning.concat([cond, cond])
                    batch = noisy_batch(
                        context,
                        torch.cat([x_w[index], x_l[index]]),
                        torch.cat([noise[index]] * 2),
                        torch.cat([levels[index]] * 2),
                    )
                    with self.accelerator.autocast():
                        errors = self.errors(batch, both, context)
                        with torch.no_grad(), reference_policy(self.pipe):
                            reference = self.errors(batch, both, context)
                    model_w, model_l = errors.chunk(2)
                    ref_w, ref_l = reference.chunk(2)
                    inside = -0.5 * config.beta * ((model_w - ref_w) - (model_l - ref_l))
                    loss = (-F.logsigmoid(inside) + config.sft_weight * model_w).sum() / (
                        count * config.train_timesteps
                    )
                    self.accelerator.backward(loss)
                    for key, value in {
                        "train/loss": -F.logsigmoid(inside.detach()).mean(),
                        "train/sft_loss": config.sft_weight * model_w.detach().mean(),
                        "train/implicit_accuracy": (inside.detach() > 0).float().mean(),
                        "train/inside_mean": inside.detach().mean(),
                        "train/model_error_winner": model_w.detach().mean(),
                        "train/model_error_loser": model_l.detach().mean(),
                        "train/reference_error_gap": (ref_w - ref_l).mean(),
                    }.items():
                        stats.setdefault(key, []).append(float(value))
            for key, value in self.optimizer_step().items():
                stats.setdefault(key, []).append(value)
        metrics.update({key: sum(v) / len(v) for key, v in stats.items()})
        metrics["time/rollout_s"] = sampled - started
        metrics["time/train_s"] = time.perf_counter() - sampled
        return metrics


if __name__ == "__main__":
    raise SystemExit(DPOTrainer.main())
