"""Reward-weighted regression (Flow-RWR) and rejection fine-tuning (RAFT) of a video generator.

Each update samples ``group_size`` videos per prompt with the deterministic sampler, scores them and regresses the
model on its own samples with the denoising loss weighted per sample by ``softmax(reward / beta)`` within each group
(:func:`~recipes.groups.group_softmax_weights`), or, with ``best_of_group``, by 1 on each group's best sample and 0
elsewhere, for ``inner_epochs`` passes of one optimizer step each. No reference model and no log-probabilities: the
cheapest reward-weighted recipe.

Run: ``accelerate launch -m recipes.rwr --config FILE`` (or ``python -m recipes.rwr --config FILE``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from descore.errors import ConfigError
from recipes.base import RecipeTrainer, seeded
from recipes.config import RecipeConfig
from recipes.families import Conditioning, SampleContext
from recipes.groups import best_of_group_weights, group_softmax_weights
from recipes.objectives import NoisyBatch, denoising_errors, logit_normal, noisy_batch


@dataclass
class DenoisingConfig(RecipeConfig):
    """Settings of recipes that train the denoising loss on clean samples (RWR, DPO)."""

    train_batch_size: int = field(
        default=4, metadata={"help": "samples (RWR) or pairs (DPO) per forward/backward"}
    )
    train_timesteps: int = field(
        default=1, metadata={"help": "noise levels drawn per sample (or pair) per update"}
    )
    timestep_density: Literal["logit_normal", "uniform"] = field(
        default="logit_normal", metadata={"help": "density of the training noise levels"}
    )
    logit_mean: float = field(default=0.0, metadata={"help": "logit-normal mean"})
    logit_std: float = field(default=1.0, metadata={"help": "logit-normal std"})
    inner_epochs: int = field(
        default=1,
        metadata={
            "help": "passes over each update's samples (pairs), one optimizer step per pass, each pass with new "
            "noise levels and noise (DDPO's num_inner_epochs)"
        },
    )
    train_cfg: bool = field(
        default=False,
        metadata={
            "help": "regress the classifier-free guided output the samples were drawn with (both branches, one "
            "LoRA) instead of the conditional branch alone; needs CFG in sampling"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_batch_size < 1 or self.train_timesteps < 1 or self.inner_epochs < 1:
            raise ConfigError("train_batch_size, train_timesteps and inner_epochs must be >= 1")
        if self.logit_std <= 0:
            raise ConfigError(f"logit_std: must be positive, got {self.logit_std}")


class DenoisingTrainer(RecipeTrainer):
    """Shared parts of RWR and DPO: noise levels and noise drawn from (seed, update, draw), where pass ``e`` of an
    update uses draws ``e * train_timesteps`` onwards (so one pass draws what it always did)."""

    def _set_up_model(self) -> None:
        if self.config.train_cfg and not self.family.cfg_enabled(self.config.sampling):
            raise ConfigError(
                "train_cfg: the sampling settings run no classifier-free guidance, so there is no guided output "
                "to train (raise sampling.guidance_scale, or true_cfg_scale for HunyuanVideo, above 1)"
            )
        super()._set_up_model()

    def errors(self, batch: NoisyBatch, conditioning: Conditioning, context: SampleContext) -> torch.Tensor:
        """Per-sample denoising errors of the trained objective (guided with ``train_cfg``)."""
        return denoising_errors(self.family, self.pipe, batch, conditioning, context, self.config.train_cfg)

    def draws(self, epoch: int) -> range:
        """The draw indices of one pass over an update's samples."""
        steps = self.config.train_timesteps
        return range(epoch * steps, (epoch + 1) * steps)

    def noise_levels(self, update: int, draw: int, count: int) -> torch.Tensor:
        generator = seeded(self.config.seed, update, self.process, "levels", draw)
        if self.config.timestep_density == "uniform":
            return torch.rand(count, generator=generator)
        return logit_normal(count, generator, self.config.logit_mean, self.config.logit_std)

    def noise_like(self, x0: torch.Tensor, update: int, draw: int) -> torch.Tensor:
        generator = seeded(self.config.seed, update, self.process, "noise", draw)
        return torch.randn(x0.shape, generator=generator).to(x0.device)


@dataclass
class RWRConfig(DenoisingConfig):
    """RWR settings."""

    output_dir: str = field(
        default="runs/rwr",
        metadata={"help": "where checkpoints, metrics, sample videos and the final LoRA go"},
    )
    beta: float = field(default=0.1, metadata={"help": "softmax temperature on the rewards within a group"})
    best_of_group: bool = field(
        default=False, metadata={"help": "rejection fine-tuning: train only on each group's best sample"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ConfigError(f"beta: the RWR temperature must be positive, got {self.beta}")


class RWRTrainer(DenoisingTrainer):
    """Reward-weighted flow-matching regression on the model's own samples (or best-of-group RAFT)."""

    name = "rwr"
    config_class = RWRConfig

    def run_update(self, update: int) -> dict[str, float]:
        config = self.config
        started = time.perf_counter()
        samples = self.sample_groups(update, sde_steps=[])
        sampled = time.perf_counter()
        if config.best_of_group:
            weights = best_of_group_weights(samples.rewards, samples.group_ids)
        else:
            weights = group_softmax_weights(samples.rewards, samples.group_ids, config.beta)
        x0 = samples.final_latents
        conditioning = samples.conditioning
        context = samples.trajectories[0].context
        used = torch.nonzero(weights > 0).flatten()
        total = len(samples.prompts) * config.train_timesteps
        losses, errors, norms = [], [], []
        for epoch in range(config.inner_epochs):
            for draw in self.draws(epoch):
                levels = self.noise_levels(update, draw, len(samples.prompts))
                noise = self.noise_like(x0, update, draw)
                for index in torch.split(used, config.train_batch_size):
                    batch = noisy_batch(context, x0[index], noise[index], levels[index])
                    with self.accelerator.autocast():
                        error = self.errors(batch, conditioning.select(index), context)
                    weight = weights[index].to(error.device)
                    loss = (weight * error).sum() / total
                    self.accelerator.backward(loss)
                    losses.append(float(loss.detach()) * total / len(index))
                    errors.append(float(error.detach().mean()))
            step = self.optimizer_step()
            norms.append(step["train/grad_norm"])
        metrics = self.reward_metrics(samples)
        metrics.update({**step, "train/grad_norm": sum(norms) / len(norms)})
        metrics.update(
            {
                "train/loss": sum(losses) / len(losses),
                "train/denoising_error": sum(errors) / len(errors),
                "train/weight_max": float(weights.max()),
                "train/effective_samples": float(weights.sum() ** 2 / (weights**2).sum()),
                "time/rollout_s": sampled - started,
                "time/train_s": time.perf_counter() - sampled,
            }
        )
        return metrics


if __name__ == "__main__":
    raise SystemExit(RWRTrainer.main())
