"""DRaFT-K: fine-tune a video generator by backpropagating a differentiable reward through the last K sampling steps.

Each update samples ``group_size`` videos per prompt with the deterministic sampler; the first ``steps - K`` steps
run without gradients, the last ``last_k`` with them (activation checkpointing in the transformer with
``gradient_checkpointing``). The final latents are decoded with gradients (optionally only ``reward_frames`` evenly
spaced frames at a random offset, with the VAE's own checkpointing where it has one) and the loss ``-reward`` is
backpropagated into the LoRA. The reward must be differentiable (DeScore think-free, or a CallableReward declared
differentiable).

Run: ``accelerate launch -m recipes.draft --config FILE`` (or ``python -m recipes.draft --config FILE``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from descore.errors import ConfigError, VideoError
from recipes.base import RecipeTrainer, derived_seed, seeded
from recipes.config import RecipeConfig
from recipes.rollout import rollout, seeded_generators
from reward_guidance.scoped import gradient_checkpointing


@dataclass
class DRaFTConfig(RecipeConfig):
    """DRaFT-K settings (K = 1 works well in the reference)."""

    output_dir: str = field(
        default="runs/draft",
        metadata={"help": "where checkpoints, metrics, sample videos and the final LoRA go"},
    )
    group_size: int = field(default=1, metadata={"help": "samples per prompt"})
    last_k: int = field(
        default=1, metadata={"help": "sampling steps the reward gradient flows through (the last ones)"}
    )
    reward_frames: int | None = field(
        default=None,
        metadata={
            "help": "decode and score only this many frames, evenly spaced as widely as the clip allows, at an "
            "offset drawn per update (the reward is told their frame rate); None: every frame"
        },
    )
    decoder_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "activation checkpointing in the VAE decoder (CogVideoX, LTX, HunyuanVideo; with diffusers 0.42 the "
            "CogVideoX VAE's recomputation does not match its forward pass, so leave it off there)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.last_k <= self.sampling.num_inference_steps:
            raise ConfigError(
                f"last_k: must lie in [1, num_inference_steps={self.sampling.num_inference_steps}], got {self.last_k}"
            )
        if self.reward_frames is not None and not 1 <= self.reward_frames <= self.sampling.num_frames:
            raise ConfigError(
                f"reward_frames: must lie in [1, num_frames={self.sampling.num_frames}], got {self.reward_frames}"
            )


class DRaFTTrainer(RecipeTrainer):
    """Direct reward backpropagation through the last K steps."""

    name = "draft"
    config_class = DRaFTConfig
    needs_differentiable_reward = True

    def _reward(self, reward):
        reward = super()._reward(reward)
        frames = self.config.reward_frames
        if frames is not None:
            try:
                reward.check_frames(
                    frames, self._subset_fps(self._subset(0)), "reward_frames: a frame subset"
                )
            except VideoError as err:
                raise ConfigError(f"reward_frames: {err}") from err
        return reward

    def _subset_fps(self, indices: list[int]) -> float | None:
        from reward_guidance.decoding import subset_fps

        return subset_fps(indices, self.fps)

    def _subset(self, offset: int) -> list[int]:
        """``reward_frames`` frames at the widest even spacing that fits, from ``offset``: the reward sees the
        whole clip at a known frame rate (``fps / spacing``), as it would sample a longer video."""
        count, total = self.config.reward_frames, self.config.sampling.num_frames
        spacing = 1 if count == 1 else (total - 1) // (count - 1)
        return list(range(offset, offset + (count - 1) * spacing + 1, spacing))

    def frame_subset(self, update: int) -> list[int] | None:
        """The update's frame subset (None: every frame); its offset is drawn per update."""
        count = self.config.reward_frames
        if count is None:
            return None
        slack = self.config.sampling.num_frames - self._subset(0)[-1]
        generator = seeded(self.config.seed, update, "frames")
        return self._subset(int(torch.randint(slack, (1,), generator=generator)))

    def run_update(self, update: int) -> dict[str, float]:
        config = self.config
        started = time.perf_counter()
        steps = config.sampling.num_inference_steps
        grad_steps = range(steps - config.last_k, steps)
        chosen = self.choose_prompts(update, config.prompts_per_update)
        prompts = [p for p in chosen for _ in range(config.group_size)]
        conditioning = self.encode(chosen).repeat_interleave(config.group_size)
        frames = self.frame_subset(update)
        fps = self.fps if frames is None else self._subset_fps(frames)
        rewards = []
        for start in range(0, len(prompts), config.sample_batch_size):
            part = slice(start, min(start + config.sample_batch_size, len(prompts)))
            seeds = [
                derived_seed(config.seed, update, self.process, "sample", i)
                for i in range(part.start, part.stop)
            ]
            # the VAE's checkpointing must stay on until the backward pass has recomputed its blocks
            with gradient_checkpointing([self.pipe.vae], enabled=config.decoder_checkpointing):
                with self.accelerator.autocast():
                    trajectory = rollout(
                        self.pipe,
                        prompts[part],
                        config.sampling,
                        seeded_generators(seeds, self.accelerator.device),
                        sde_steps=[],
                        grad_steps=grad_steps,
                        conditioning=conditioning.select(part),
                    )
                    videos = self.decode(trajectory.final, grad=True, frames=frames)
                    reward = self.reward(videos, prompts[part], fps=fps)
                self.accelerator.backward(-reward.sum() / len(prompts))
            rewards.append(reward.detach().float().cpu())
        rewards = torch.cat(rewards)
        everything = self.accelerator.gather(rewards.to(self.accelerator.device))
        metrics = {
            "reward/mean": float(everything.mean()),
            "reward/std": float(everything.std(unbiased=False)),
        }
        metrics.update(self.optimizer_step())
        metrics["train/loss"] = -metrics["reward/mean"]
        metrics["time/train_s"] = time.perf_counter() - started
        return metrics


if __name__ == "__main__":
    raise SystemExit(DRaFTTrainer.main())
