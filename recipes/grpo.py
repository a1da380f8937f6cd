"""Flow-GRPO: online policy optimisation of a video generator against a reward, with the sampler as a Gaussian policy.

Each update samples ``group_size`` videos for each of ``prompts_per_update`` prompts with the SDE sampler
(:mod:`recipes.rollout`), scores them, turns rewards into per-prompt advantages (:func:`~recipes.groups.group_advantages`)
and takes ``optimizer_steps_per_update`` optimizer steps on the clipped importance-ratio loss

    L = mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))) + beta * ||mu_theta - mu_ref||^2 / (2 std^2)

over a ``timestep_fraction`` of the stochastic steps, where ``r = exp(log p_theta - log p_old)`` is recomputed on the
rollout's own batches (exactly 1 before the first step) and the reference ``mu_ref`` is the same network with the
LoRA disabled. Classifier-free guidance is trained as sampled (both branches recomputed); ``sampling.guidance_scale:
1`` is the no-CFG mode. ``sde_window`` is the "fast" variant: the SDE only on a random window of steps, the ODE
elsewhere.

Run: ``accelerate launch -m recipes.grpo --config FILE`` (or ``python -m recipes.grpo --config FILE``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from descore.errors import ConfigError
from recipes.base import RecipeTrainer, seeded
from recipes.config import RecipeConfig
from recipes.groups import group_advantages
from recipes.lora import reference_policy
from recipes.rollout import Trajectory, recompute_log_probs


@dataclass
class GRPOConfig(RecipeConfig):
    """Flow-GRPO settings. Defaults: Flow-GRPO's Wan2.1 recipe (group 4, clip 1e-3, beta 0.004, lr 1e-4, a 0.7)."""

    output_dir: str = field(
        default="runs/grpo",
        metadata={"help": "where checkpoints, metrics, sample videos and the final LoRA go"},
    )
    noise_level: float | None = field(
        default=None, metadata={"help": "SDE noise level a (flows; None: 0.7) or DDIM eta (None: 1.0)"}
    )
    sde_form: str = field(
        default="flow_grpo",
        metadata={"help": "'flow_grpo' (Flow-GRPO's SDE) or 'cps' (coefficient-preserving)"},
    )
    sde_window: int | None = field(
        default=None,
        metadata={
            "help": "'fast' mode: the SDE only on this many consecutive steps at a random position per update (None: all steps)"
        },
    )
    sde_window_range: list[int] | None = field(
        default=None,
        metadata={"help": "[first, last) steps the SDE window may start in (None: anywhere it fits)"},
    )
    timestep_fraction: float = field(
        default=1.0, metadata={"help": "share of the stochastic steps trained on per update"}
    )
    clip_range: float = field(
        default=1e-3, metadata={"help": "ratio clip epsilon (tiny: averaged log-probs keep ratios near 1)"}
    )
    beta: float = field(
        default=0.004,
        metadata={"help": "KL weight to the adapter-disabled reference (0: no KL, no reference pass)"},
    )
    advantage_clip: float = field(default=5.0, metadata={"help": "advantages are clipped to +-this"})
    global_std: bool = field(
        default=False, metadata={"help": "normalise advantages by the batch std instead of each group's"}
    )
    optimizer_steps_per_update: int = field(
        default=1,
        metadata={"help": "optimizer steps per update; the rollout batches are split evenly between them"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size < 2:
            raise ConfigError(
                f"group_size: GRPO compares samples of a prompt and needs at least 2, got {self.group_size}"
            )
        if self.sde_form not in ("flow_grpo", "cps"):
            raise ConfigError(f"sde_form: expected 'flow_grpo' or 'cps', got {self.sde_form!r}")
        if not 0 < self.timestep_fraction <= 1:
            raise ConfigError(f"timestep_fraction: must lie in (0, 1], got {self.timestep_fraction}")
        if self.clip_range <= 0 or self.beta < 0 or self.advantage_clip <= 0:
            raise ConfigError("clip_range and advantage_clip must be positive and beta not negative")
        if self.sde_window is not None and not 1 <= self.sde_window <= self.sampling.num_inference_steps:
            raise ConfigError(
                f"sde_window: must lie in [1, num_inference_steps={self.sampling.num_inference_steps}], got {self.sde_window}"
            )
        if self.sde_window_range is not None and len(self.sde_window_range) != 2:
            raise ConfigError(f"sde_window_range: expected [first, last), got {self.sde_window_range}")
        if self.optimizer_steps_per_update < 1:
            raise ConfigError("optimizer_steps_per_update: must be >= 1")
        batches = math.ceil(self.prompts_per_update * self.group_size / self.sample_batch_size)
        if self.optimizer_steps_per_update > batches:
            raise ConfigError(
                f"optimizer_steps_per_update: {self.optimizer_steps_per_update} is more than the {batches} rollout "
                "batches of an update"
            )


class GRPOTrainer(RecipeTrainer):
    """Flow-GRPO with LoRA, the reference policy by adapter-disable."""

    name = "grpo"
    config_class = GRPOConfig

    def sde_steps(self, update: int) -> list[int] | None:
        """The stochastic steps of this update: all, or a random window ("fast" mode).

        The window never covers the last step when that step is deterministic (CPS ends on sigma 0, DDIM on
        alpha 1), so that every window holds a step to train on.
        """
        config = self.config
        steps = config.sampling.num_inference_steps
        if config.sde_window is None:
            return None
        usable = steps - 1 if (config.sde_form == "cps" or self.family.kind == "ddim") else steps
        first, last = config.sde_window_range or (0, usable - config.sde_window + 1)
        last = min(last, usable - config.sde_window + 1)
        if last <= first:
            raise ConfigError(
                f"sde_window: no room for a window of {config.sde_window} stochastic step(s) in [{first}, {last}) "
                f"({usable} of the {steps} steps can carry noise)"
            )
        start = int(torch.randint(first, last, (1,), generator=seeded(config.seed, update, "window")))
        return list(range(start, start + config.sde_window))

    def run_update(self, update: int) -> dict[str, float]:
        config = self.config
        started = time.perf_counter()
        samples = self.sample_groups(
            update, noise_level=config.noise_level, form=config.sde_form, sde_steps=self.sde_steps(update)
        )
        sampled = time.perf_counter()
        advantages = group_advantages(
            samples.rewards, samples.group_ids, clip=config.advantage_clip, global_std=config.global_std
        )
        stochastic = samples.trajectories[0].training_steps()
        if not stochastic:
            raise ConfigError("GRPO: the rollout has no stochastic step to train on (noise_level 0?)")
        count = max(1, round(config.timestep_fraction * len(stochastic)))
        order = torch.randperm(len(stochastic), generator=seeded(config.seed, update, self.process, "steps"))
        train_steps = [stochastic[i] for i in order[:count].tolist()]
        batches = list(samples.batches())
        splits = torch.tensor_split(torch.arange(len(batches)), config.optimizer_steps_per_update)
        stats: dict[str, list[float]] = {}
        first_ratio_deviation = 0.0
        for split_index, split in enumerate(splits):
            micro = len(split) * len(train_steps)
            for batch_index in split.tolist():
                part, trajectory = batches[batch_index]
                advantage = advantages[part].to(self.accelerator.device)
                for step in train_steps:
                    values = self._micro_step(trajectory, step, advantage, micro)
                    if split_index == 0:
                        first_ratio_deviation = max(first_ratio_deviation, values.pop("ratio_deviation"))
                    else:
                        values.pop("ratio_deviation")
                    for key, value in values.items():
                        stats.setdefault(key, []).append(value)
            for key, value in self.optimizer_step().items():
                stats.setdefault(key, []).append(value)
        metrics = self.reward_metrics(samples)
        metrics.update(
            {key: sum(v) / len(v) for key, v in stats.items() if not key.endswith(("_min", "_max"))}
        )
        metrics.update({key: min(v) for key, v in stats.items() if key.endswith("_min")})
        metrics.update({key: max(v) for key, v in stats.items() if key.endswith("_max")})
        metrics["train/advantage_abs"] = float(advantages.abs().mean())
        metrics["train/first_step_ratio_deviation"] = first_ratio_deviation
        metrics["time/rollout_s"] = sampled - started
        metrics["time/train_s"] = time.perf_counter() - sampled
        return metrics

    def _micro_step(
        self, trajectory: Trajectory, step: int, advantage: torch.Tensor, micro_steps: int
    ) -> dict[str, float]:
        """Loss of one rollout batch at one step, backpropagated (scaled by 1 / micro_steps)."""
        config = self.config
        old = trajectory.log_probs[:, step].to(self.accelerator.device)
        with self.accelerator.autocast():
            new = recompute_log_probs(self.pipe, trajectory, step)
        ratio = torch.exp(new.log_prob - old)
        unclipped = -advantage * ratio
        clipped = -advantage * torch.clamp(ratio, 1 - config.clip_range, 1 + config.clip_range)
        policy_loss = torch.maximum(unclipped, clipped).mean()
        loss = policy_loss
        kl = torch.zeros(())
        if config.beta > 0:
            with torch.no_grad(), reference_policy(self.pipe), self.accelerator.autocast():
                reference = recompute_log_probs(self.pipe, trajectory, step)
            std = new.std.view(-1, *([1] * (new.mean.ndim - 1)))
            kl = (((new.mean - reference.mean) ** 2) / (2 * std**2)).flatten(1).mean(1).mean()
            loss = loss + config.beta * kl
        self.accelerator.backward(loss / micro_steps)
        detached = ratio.detach()
        return {
            "train/loss": float(loss.detach()),
            "train/policy_loss": float(policy_loss.detach()),
            "train/kl": float(kl.detach()),
            "train/clip_frac": float(((detached - 1).abs() > config.clip_range).float().mean()),
            "train/approx_kl": float(0.5 * ((new.log_prob.detach() - old) ** 2).mean()),
            "train/ratio_mean": float(detached.mean()),
            "train/ratio_min": float(detached.min()),
            "train/ratio_max": float(detached.max()),
            "ratio_deviation": float((detached - 1).abs().max()),
        }


if __name__ == "__main__":
    raise SystemExit(GRPOTrainer.main())
