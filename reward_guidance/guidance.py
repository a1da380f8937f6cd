"""Reward-gradient guidance as a diffusers ``PipelineCallback``: x_t <- x_t + w_t * grad_x r(decode(x0_hat(x_t))).

Pass a :class:`RewardGuidanceCallback` as ``callback_on_step_end`` of any supported pipeline. After each step i inside
the window, the callback takes the latents the scheduler just produced (x_{t_{i+1}}), predicts the clean sample that
step i + 1 would predict (:mod:`reward_guidance.lookahead`: one extra transformer call, or two with the pipeline's
CFG, at the next timestep t_{i+1}; none after the last step), decodes it with gradients (optionally a frame subset),
scores it with a differentiable reward, and moves the latents along the reward gradient (per video: clipped, or
normalised, then scaled by the weight schedule). Step indices are the callback's: step i guides the latents entering step i + 1, and the last
step's guidance refines the final sample directly through the decoder.

Multistep schedulers that rebuild the next sample from the previous one (UniPC's corrector, Wan's default) would
drop an update made between steps; the callback carries the update into their stored sample so that it survives.

Memory knobs: ``frames`` (decode and score a subset: cheapest with Wan's causal VAE, where the first frames need only
the first latent frames), ``checkpointing`` (gradient checkpointing of the transformer and, where supported, the VAE
for the guided step only), ``lookahead_cfg=False`` (conditional branch only), VAE ``slicing`` / ``tiling``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from diffusers import DiffusionPipeline, UniPCMultistepScheduler
from diffusers.callbacks import PipelineCallback
from typing_extensions import Self

from descore.errors import ConfigError
from reward_guidance.decoding import FrameSubset, frame_subset, subset_fps
from reward_guidance.families import FamilyAdapter, family_adapter
from reward_guidance.lookahead import Lookahead
from reward_guidance.protocol import RewardFunction, as_reward
from reward_guidance.scoped import frozen, gradient_checkpointing

logger = logging.getLogger(__name__)

Schedule = Literal["constant", "linear", "cosine"] | Callable[[float], float]

_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "linear": lambda progress: 1.0 - progress,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}


@dataclass
class GuidanceStep:
    """What one guided step did (kept in :attr:`RewardGuidanceCallback.history`)."""

    step: int
    """Callback step index: the update applies to the latents entering step ``step + 1``."""
    weight: float
    """Weight after the schedule."""
    rewards: list[float]
    """Look-ahead reward of each video before the update."""
    grad_norms: list[float]
    """L2 norm of each video's reward gradient before clipping."""
    update_norms: list[float]
    """L2 norm of each video's applied update."""
    seconds: float


def guided_steps(window: tuple[float, float] | tuple[int, int], num_steps: int) -> list[int]:
    """Callback step indices a window selects out of ``num_steps``.

    Floats are fractions of the run: step i is guided when ``start <= i / num_steps < end``; ints are step indices,
    ``start <= i < end``. Raises ConfigError when the window lies outside the run or selects no step.
    """
    start, end = window
    if all(isinstance(v, int) and not isinstance(v, bool) for v in window):
        if end > num_steps:
            raise ConfigError(
                f"guidance window steps [{start}, {end}) lie outside this run's {num_steps} steps (indices "
                f"0..{num_steps - 1}); use an end <= {num_steps}, or fractions such as (0.5, 1.0)"
            )
        return list(range(start, end))
    steps = [i for i in range(num_steps) if start <= i / num_steps < end]
    if not steps:
        raise ConfigError(
            f"guidance window ({start}, {end}) selects none of this run's {num_steps} steps (step i is guided when "
            f"start <= i / {num_steps} < end); widen it or give step indices"
        )
    return steps


def _check_window(window: Any) -> tuple[float, float] | tuple[int, int]:
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ConfigError(
            f"window must be (start, end): step fractions in [0, 1] or step indices, got {window!r}"
        )
    start, end = window
    if all(isinstance(v, int) and not isinstance(v, bool) for v in window):
        if not 0 <= start < end:
            raise ConfigError(f"window step indices need 0 <= start < end, got {tuple(window)}")
        if (start, end) == (0, 1):
            logger.warning(
                "window (0, 1) holds two ints, read as step indices: only step 0 is guided; write (0.0, 1.0) to "
                "guide the whole run"
            )
        return int(start), int(end)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window):
        raise ConfigError(f"window must hold two numbers, got {tuple(window)}")
    if not 0.0 <= start < end <= 1.0:
        raise ConfigError(
            f"window fractions need 0 <= start < end <= 1, got {tuple(window)}; for step indices pass two ints"
        )
    return float(start), float(end)


def carry_through_scheduler(scheduler: Any, delta: torch.Tensor, next_index: int) -> None:
    """Make an update of the latents entering step ``next_index`` survive a UniPC corrector.

    UniPC's corrector at step n rebuilds the sample from the stored previous sample x_{n-1} and the model outputs:
    ``x_n = c * x_{n-1} + (model terms)`` with ``c = sigma_n / sigma_{n-1}`` (x0-predicting) or ``alpha_n /
    alpha_{n-1}``, so an update of x_n alone would be dropped. Shifting the stored sample by ``delta / c`` makes the
    corrector start from the updated sample, as if the predictor had produced it. Other schedulers step from the
    sample they are given and need nothing.
    """
    if not isinstance(scheduler, UniPCMultistepScheduler) or scheduler.last_sample is None:
        return
    if (
        next_index >= len(scheduler.timesteps)
        or next_index == 0
        or (next_index - 1) in scheduler.disable_corrector
    ):
        return
    alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[next_index])
    alpha_s, sigma_s = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[next_index - 1])
    ratio = float(sigma_t / sigma_s) if scheduler.predict_x0 else float(alpha_t / alpha_s)
    last = scheduler.last_sample
    scheduler.last_sample = last + (delta / ratio).to(last.device, last.dtype)


class RewardGuidanceCallback(PipelineCallback):
    """Steer sampling along the gradient of a differentiable reward of the look-ahead clean sample.

    Args:
        reward: a differentiable :class:`~reward_guidance.protocol.RewardFunction`, e.g.
            ``descore_reward(scorer, "think_free")`` or ``CallableReward(fn, differentiable=True)``.
        pipe: the pipeline, or its :class:`~reward_guidance.families.FamilyAdapter`. The transformer is hooked at
            construction: create the callback before calling the pipeline; :meth:`close` removes the hooks.
        prompt: the generation prompt(s) the reward judges against; one, or one per prompt of the pipeline call (each
            is repeated for ``num_videos_per_prompt``).
        weight: step size w on the reward gradient.
        window: guided steps, as fractions (start, end) of the run or step indices [start, end).
        schedule: weight over the window's n guided steps: "constant", "linear" (1 - k / n), "cosine"
            ((1 + cos(pi k / n)) / 2), or a function of the progress k / n in [0, 1).
        max_grad_norm: clip each video's gradient to this L2 norm (None: no clipping).
        normalize: rescale each video's gradient to unit RMS per latent element, so that ``weight`` is the RMS
            change of the latents whatever the reward's scale (instead of clipping).
        frames: decode and score only these frames (see :data:`~reward_guidance.decoding.FrameSubset`).
        checkpointing: gradient checkpointing of the transformer(s) and the VAE during guided steps.
        lookahead_cfg: replay both CFG branches for x0_hat (True) or only the conditional one (half the cost).
        cfg_scale: CFG scale of the look-ahead (default: the pipeline's; needed for HunyuanVideo's true CFG).
        fps: frame rate passed to the reward (default: the family's; for LTX, 25, its pipeline's default
            ``frame_rate``: pass yours if you call LTX with another).
        slicing, tiling: VAE settings for the guided decode (None: leave the VAE's).
    """

    tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(
        self,
        reward: RewardFunction | Callable[..., Any],
        pipe: DiffusionPipeline | FamilyAdapter,
        *,
        prompt: str | Sequence[str],
        weight: float = 1.0,
        window: tuple[float, float] | tuple[int, int] = (0.0, 1.0),
        schedule: Schedule = "constant",
        max_grad_norm: float | None = None,
        normalize: bool = False,
        frames: FrameSubset = None,
        checkpointing: bool = False,
        lookahead_cfg: bool = True,
        cfg_scale: float | None = None,
        fps: float | None = None,
        slicing: bool | None = None,
        tiling: bool | dict[str, Any] | None = None,
    ):
        reward = as_reward(reward)
        if not reward.differentiable:
            raise ConfigError(
                f"{reward.name} is not differentiable; gradient guidance needs a reward that keeps the graph, e.g. "
                "descore_reward(scorer, 'think_free') or CallableReward(fn, differentiable=True)"
            )
        self.reward = reward
        self.adapter = family_adapter(pipe)
        self.prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ConfigError(f"prompt must be a non-empty string or a list of them, got {prompt!r}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight)):
            raise ConfigError(f"weight must be a finite number, got {weight!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if normalize and max_grad_norm is not None:
            raise ConfigError(
                "normalize=True sets every gradient's size, which makes max_grad_norm moot; pass one"
            )
        if isinstance(schedule, str) and schedule not in _SCHEDULES:
            raise ConfigError(f"schedule must be one of {sorted(_SCHEDULES)} or a function, got {schedule!r}")
        if not isinstance(schedule, str) and not callable(schedule):
            raise ConfigError(f"schedule must be one of {sorted(_SCHEDULES)} or a function, got {schedule!r}")
        self.weight = float(weight)
        self.window = _check_window(window)
        self.schedule = _SCHEDULES[schedule] if isinstance(schedule, str) else schedule
        self.max_grad_norm = max_grad_norm
        self.normalize = bool(normalize)
        self.frames = frames
        self.checkpointing = bool(checkpointing)
        self.lookahead_cfg = bool(lookahead_cfg)
        self.cfg_scale = cfg_scale
        self.fps = fps if fps is not None else self.adapter.default_fps()
        self.slicing, self.tiling = slicing, tiling
        self.history: list[GuidanceStep] = []
        self._guided: list[int] = []
        self._checked = False
        self.register_to_config(  # what diffusers' PipelineCallback keeps as its config (repr, to_json_string)
            weight=self.weight,
            window=list(self.window),
            schedule=schedule if isinstance(schedule, str) else getattr(schedule, "__name__", "custom"),
            max_grad_norm=max_grad_norm,
            normalize=self.normalize,
            frames=list(frames) if isinstance(frames, Sequence) else frames,
            checkpointing=self.checkpointing,
            lookahead_cfg=self.lookahead_cfg,
            cfg_scale=cfg_scale,
            fps=self.fps,
        )
        self.lookahead = Lookahead(self.adapter)

    def guided_steps(self, num_inference_steps: int) -> list[int]:
        """The steps this callback guides in a run of ``num_inference_steps`` (raises if the window does not fit)."""
        return guided_steps(self.window, num_inference_steps)

    def close(self) -> None:
        """Remove the transformer hooks."""
        self.lookahead.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the callback
    def callback_fn(
        self,
        pipeline: DiffusionPipeline,
        step_index: int,
        timestep: torch.Tensor,
        callback_kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        try:
            if step_index == 0:
                self._start_run()
                # frames, frame needs and prompt count are checked now, not at a late window's first step
                self._frames_and_prompts(callback_kwargs["latents"], step_index, timestep)
            if step_index in self._guided:
                callback_kwargs["latents"] = self._guide(step_index, timestep, callback_kwargs["latents"])
            return callback_kwargs
        finally:
            self.lookahead.recorder.step_done()

    def _start_run(self) -> None:
        self._guided = self.guided_steps(len(self.adapter.scheduler.timesteps))
        self.history = []
        self._checked = False

    def _batch_prompts(self, batch: int) -> list[str]:
        if batch % len(self.prompts):
            raise ConfigError(
                f"the pipeline generates {batch} videos but the callback has {len(self.prompts)} prompts; give the "
                "callback the pipeline's prompt (or prompts)"
            )
        return [p for p in self.prompts for _ in range(batch // len(self.prompts))]

    def _frames_and_prompts(
        self, latents: torch.Tensor, step_index: int, timestep: torch.Tensor
    ) -> tuple[tuple[int, int, int] | None, list[int] | None, float | None, list[str]]:
        """Latent grid, frame subset, the subset's fps and the per-video prompts of this step's latents."""
        grid = self.lookahead.grid(step_index, timestep)
        num_frames = self.adapter.decoder.num_frames(latents, grid)
        subset = frame_subset(self.frames, num_frames)
        fps = subset_fps(subset, self.fps)
        if not self._checked:
            if subset is None:
                self.reward.check_frames(num_frames, fps, "each guided video")
            else:
                self.reward.check_frames(
                    len(subset),
                    fps,
                    f"the guidance frame subset {subset}",
                    "Score at least {frames} frames (frames=).",
                )
            self._checked = True
        return grid, subset, fps, self._batch_prompts(latents.shape[0])

    def _lookahead_rewards(
        self, latents: torch.Tensor, step_index: int, timestep: torch.Tensor
    ) -> torch.Tensor:
        """Reward of the decoded look-ahead clean sample; keeps the graph when ``latents`` require grad."""
        grid, subset, fps, prompts = self._frames_and_prompts(latents, step_index, timestep)
        grad = latents.requires_grad
        x0 = self.lookahead.x0(
            latents, step_index, timestep, cfg=self.lookahead_cfg, cfg_scale=self.cfg_scale
        )
        video = self.adapter.decoder(
            x0,
            frames=subset,
            grad=grad,
            grid=grid,
            slicing=self.slicing,
            tiling=self.tiling,
        )
        return self.reward(video, prompts, fps=fps)

    def lookahead_rewards(
        self, latents: torch.Tensor, step_index: int, timestep: torch.Tensor
    ) -> torch.Tensor:
        """Reward of decode(x0_hat(latents)) for the latents after step ``step_index`` (no gradients).

        Usable from a callback that runs after this one in the same step (``MultiPipelineCallbacks``), e.g. to log
        how much an update raised the look-ahead reward.
        """
        with torch.no_grad():
            return self._lookahead_rewards(latents.detach(), step_index, timestep)

    def _guide(self, step_index: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if latents.is_inference():
            raise ConfigError(
                "reward guidance needs gradients but the pipeline runs under torch.inference_mode(); call it without "
                "inference_mode (diffusers pipelines already disable gradients for their own work)"
            )
        started = time.perf_counter()
        adapter = self.adapter
        x = latents.detach().clone().requires_grad_(True)
        with (
            torch.enable_grad(),
            frozen(adapter.experts() + [adapter.vae]),
            gradient_checkpointing(adapter.experts() + [adapter.vae], enabled=self.checkpointing),
        ):
            rewards = self._lookahead_rewards(x, step_index, timestep)
            (grad,) = torch.autograd.grad(rewards.sum(), x)
        norms = grad.flatten(1).norm(dim=1)
        factor = torch.ones_like(norms)
        if self.max_grad_norm is not None:
            factor = (self.max_grad_norm / (norms + 1e-12)).clamp(max=1.0)
        elif self.normalize:
            factor = math.sqrt(grad[0].numel()) / (norms + 1e-12)
        position = self._guided.index(step_index)
        weight = self.weight * float(self.schedule(position / len(self._guided)))
        delta = (weight * grad * factor.view(-1, *([1] * (grad.ndim - 1)))).to(latents.dtype)
        carry_through_scheduler(adapter.scheduler, delta, step_index + 1)
        self.history.append(
            GuidanceStep(
                step=step_index,
                weight=weight,
                rewards=rewards.detach().float().tolist(),
                grad_norms=norms.float().tolist(),
                update_norms=delta.flatten(1).float().norm(dim=1).tolist(),
                seconds=time.perf_counter() - started,
            )
        )
        logger.debug("guided step %d: weight %.3g, reward %s", step_index, weight, self.history[-1].rewards)
        return latents + delta
