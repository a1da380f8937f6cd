"""The reward protocol: decoded videos (B, F, C, H, W) in [0, 1] + prompts -> one reward per video.

A reward declares whether its output keeps the autograd graph (``differentiable``, needed for gradient guidance)
and which frames it needs (:class:`FrameNeeds`: at least how many, at what rate it samples), so that reranking and
guidance can refuse a generation whose frame count the reward cannot use before spending compute on it.

Implementations: :class:`CallableReward` wraps any function, :class:`DeScoreReward` adapts a
:class:`~descore.scoring.DeScore` model (think or think-free), :class:`CascadeReward` chains a cheap reward and an
expensive one (the expensive one only for the cheap one's top k); :func:`descore_reward` builds the DeScore variants.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from descore.errors import ConfigError, VideoError, check_positive
from descore.scoring import DeScore
from descore.video_io import sample_frame_indices
from reward_guidance.scoped import frozen

Prompts = str | Sequence[str]

GENERATE_MORE = "Generate at least {frames} frames (num_frames), or use a reward that samples faster."


@dataclass(frozen=True)
class FrameNeeds:
    """What a reward needs from a video's frames.

    ``fps``: the rate the reward samples a video at when the video's own rate is known (None: it takes every frame);
    ``max_frames``: it reads at most this many frames, spread evenly; ``min_frames``: fewer sampled frames than this
    cannot be scored.
    """

    min_frames: int = 1
    max_frames: int | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_frames, bool) or not isinstance(self.min_frames, int) or self.min_frames < 1:
            raise ConfigError(f"FrameNeeds.min_frames must be an integer >= 1, got {self.min_frames!r}")
        if self.max_frames is not None and (
            not isinstance(self.max_frames, int) or self.max_frames < self.min_frames
        ):
            raise ConfigError(
                f"FrameNeeds.max_frames must be an integer >= min_frames ({self.min_frames}), got {self.max_frames!r}"
            )
        if self.fps is not None:
            check_positive("FrameNeeds.fps", self.fps)

    def indices(self, num_frames: int, fps: float | None) -> list[int]:
        """Indices of the frames the reward reads from a ``num_frames``-frame video at ``fps`` (None: unknown rate)."""
        if self.fps is not None and fps is not None:
            return sample_frame_indices(num_frames, fps, fps=self.fps, max_frames=self.max_frames)
        return sample_frame_indices(num_frames, None, max_frames=self.max_frames)

    def check(
        self, num_frames: int, fps: float | None, what: str = "the video", fix: str = GENERATE_MORE
    ) -> None:
        """Raise :class:`~descore.errors.VideoError` when the reward cannot score such a video.

        ``fix`` is the remedy the message ends with; ``{frames}`` in it becomes the frame count that would do.
        """
        count = len(self.indices(num_frames, fps))
        if count >= self.min_frames:
            return
        if self.fps is not None and fps is not None:
            needed = math.ceil(self.min_frames * fps / self.fps)
            raise VideoError(
                f"{what} has {num_frames} frame(s) at {fps:g} fps ({num_frames / fps:.2f} s), which the reward samples "
                f"at {self.fps:g} fps into {count} frame(s); it needs at least {self.min_frames}. "
                + fix.format(frames=needed)
            )
        raise VideoError(
            f"{what} has {num_frames} frame(s); the reward needs at least {self.min_frames}. "
            + fix.format(frames=self.min_frames)
        )


@dataclass
class RewardOutput:
    """Rewards of a batch, plus what the reward wrote about them."""

    rewards: torch.Tensor
    """Shape [B], float; keeps the autograd graph for differentiable rewards called on frames that require grad."""
    cots: list[str | None] | None = None
    """Chain of thought per video (rewards that reason), else None."""
    first_stage_rewards: torch.Tensor | None = None
    """Cascades: the cheap reward of every video (``rewards`` then holds the expensive one, NaN where not run)."""


def check_videos(videos: Any, prompts: Prompts, who: str = "reward") -> tuple[torch.Tensor, list[str]]:
    """Validate a (B, F, C, H, W) float video batch in [0, 1] and its prompts (one, or one per video)."""
    if not isinstance(videos, torch.Tensor):
        raise VideoError(
            f"{who}: videos must be a torch.Tensor of shape (B, F, C, H, W), got {type(videos).__name__}"
        )
    if videos.ndim != 5 or videos.shape[2] != 3 or not videos.is_floating_point():
        raise VideoError(
            f"{who}: videos must be a float tensor of shape (B, F, 3, H, W) in [0, 1], got {videos.dtype} "
            f"{tuple(videos.shape)}"
        )
    if videos.shape[0] == 0 or videos.shape[1] == 0:
        raise VideoError(f"{who}: empty video batch {tuple(videos.shape)}")
    with torch.no_grad():
        low, high = float(videos.min()), float(videos.max())
    if not (math.isfinite(low) and math.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
        raise VideoError(
            f"{who}: video values must lie in [0, 1], got [{low:.4g}, {high:.4g}] (decode with "
            "reward_guidance.decoding, which maps the VAE's [-1, 1] to [0, 1])"
        )
    batch = videos.shape[0]
    prompt_list = [prompts] * batch if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != batch:
        raise ConfigError(
            f"{who}: got {batch} videos but {len(prompt_list)} prompts; give one prompt, or one per video"
        )
    for k, prompt in enumerate(prompt_list):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{who}: prompt {k} must be a non-empty string, got {prompt!r}")
    return videos, prompt_list


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return batch_size


class RewardFunction(ABC):
    """Decoded videos (B, F, C, H, W) in [0, 1] + prompts -> rewards [B].

    Subclasses implement :meth:`score_batch` for one micro-batch; calling the reward validates the inputs, splits them
    into micro-batches of ``batch_size`` (None: all at once) and checks that one finite reward comes back per video.
    """

    differentiable: bool = False
    """True when the rewards keep the autograd graph back to the frames (required by gradient guidance)."""
    frames: FrameNeeds = FrameNeeds()
    """Which frames the reward needs."""
    batch_size: int | None = None
    """Videos per :meth:`score_batch` call (None: the whole batch)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def score_batch(
        self, videos: torch.Tensor, prompts: list[str], fps: float | None
    ) -> RewardOutput | torch.Tensor:
        """Rewards of one validated micro-batch; ``fps`` is the videos' frame rate when known."""

    def check_frames(
        self, num_frames: int, fps: float | None, what: str = "the video", fix: str = GENERATE_MORE
    ) -> None:
        """Raise :class:`~descore.errors.VideoError` when a ``num_frames``-frame video at ``fps`` cannot be scored."""
        self.frames.check(num_frames, fps, what, fix)

    def to(self, device: torch.device | str) -> RewardFunction:
        """Move the reward's own models to ``device`` (a wrapped user callable keeps its placement); returns self."""
        return self

    def evaluate(self, videos: torch.Tensor, prompts: Prompts, *, fps: float | None = None) -> RewardOutput:
        """Rewards and rationales of ``videos`` (generated at ``fps`` frames per second, when known)."""
        videos, prompt_list = check_videos(videos, prompts, self.name)
        self.check_frames(videos.shape[1], fps, f"{self.name}: each video")
        step = self.batch_size or videos.shape[0]
        parts = [
            self._one_batch(videos[i : i + step], prompt_list[i : i + step], fps)
            for i in range(0, videos.shape[0], step)
        ]
        cots = None
        if any(p.cots is not None for p in parts):
            cots = [c for p in parts for c in (p.cots or [None] * len(p.rewards))]
        return RewardOutput(rewards=torch.cat([p.rewards for p in parts]), cots=cots)

    def __call__(self, videos: torch.Tensor, prompts: Prompts, *, fps: float | None = None) -> torch.Tensor:
        """Rewards [B] of ``videos``; see :meth:`evaluate`."""
        return self.evaluate(videos, prompts, fps=fps).rewards

    def _one_batch(self, videos: torch.Tensor, prompts: list[str], fps: float | None) -> RewardOutput:
        out = self.score_batch(videos, prompts, fps)
        if not isinstance(out, RewardOutput):
            out = RewardOutput(rewards=out)
        rewards = out.rewards
        if not isinstance(rewards, torch.Tensor):
            rewards = torch.as_tensor(rewards, dtype=torch.float32)
        if rewards.ndim == 2 and rewards.shape[1] == 1:
            rewards = rewards[:, 0]
        if tuple(rewards.shape) != (videos.shape[0],):
            raise ValueError(
                f"{self.name} returned rewards of shape {tuple(rewards.shape)} for {videos.shape[0]} videos; "
                "it must return one number per video"
            )
        if not torch.isfinite(rewards.detach()).all():
            raise ValueError(f"{self.name} returned non-finite rewards {rewards.detach().tolist()}")
        if out.cots is not None and len(out.cots) != len(rewards):
            raise ValueError(
                f"{self.name} returned {len(out.cots)} chains of thought for {len(rewards)} videos"
            )
        return RewardOutput(rewards=rewards.float(), cots=out.cots)


class CallableReward(RewardFunction):
    """Any function ``fn(videos, prompts)`` (or ``fn(videos, prompts, fps=...)``) returning one number per video.

    ``videos`` reach it as a (B, F, C, H, W) float tensor in [0, 1]. Declare ``differentiable=True`` only if the
    function keeps the autograd graph (torch operations on the frames, no ``.item()``/numpy round trips).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        differentiable: bool = False,
        frames: FrameNeeds | None = None,
        batch_size: int | None = None,
        name: str | None = None,
    ):
        if not callable(fn):
            raise ConfigError(f"CallableReward needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.differentiable = bool(differentiable)
        self.frames = frames if frames is not None else FrameNeeds()
        self.batch_size = _check_batch_size(batch_size)
        self._name = name or getattr(fn, "__name__", type(fn).__name__)
        self._takes_fps = _accepts_keyword(fn, "fps")

    @property
    def name(self) -> str:
        return self._name

    def to(self, device: torch.device | str) -> CallableReward:
        """Move the wrapped function when it is a module (e.g. a learned reward); plain functions stay as they are."""
        if isinstance(self.fn, torch.nn.Module):
            self.fn.to(device)
        return self

    def score_batch(self, videos: torch.Tensor, prompts: list[str], fps: float | None) -> torch.Tensor:
        if self._takes_fps:
            return self.fn(videos, prompts, fps=fps)
        return self.fn(videos, prompts)


def _accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class DeScoreReward(RewardFunction):
    """A :class:`~descore.scoring.DeScore` model as a reward.

    ``mode="think"``: the model writes its chain of thought, then scores (not differentiable; CoTs are returned).
    ``mode="think_free"``: one forward pass; differentiable when the frames require grad (the DeScore weights are
    frozen for the call, so only the frames get gradients). Videos are passed with the generator's ``fps`` so that
    DeScore samples them at its checkpoint's rate, as it was trained.
    """

    def __init__(
        self,
        scorer: DeScore,
        mode: Literal["think", "think_free"] = "think",
        *,
        batch_size: int = 8,
        sampling: dict[str, Any] | None = None,
        generation: dict[str, Any] | None = None,
    ):
        if not isinstance(scorer, DeScore):
            raise ConfigError(f"DeScoreReward needs a descore.scoring.DeScore, got {type(scorer).__name__}")
        if mode not in ("think", "think_free"):
            raise ConfigError(
                f"DeScoreReward mode must be 'think' or 'think_free' (cascade: descore_reward), got {mode!r}"
            )
        self.scorer = scorer
        self.mode = mode
        self.differentiable = mode == "think_free"
        self.batch_size = _check_batch_size(batch_size)
        self.sampling = dict(sampling or {})
        self.generation = dict(generation or {})
        try:
            settings = dataclasses.replace(scorer.config.sampling, **self.sampling)
        except TypeError as err:
            raise ConfigError(f"DeScoreReward sampling overrides {sorted(self.sampling)}: {err}") from err
        settings.validate()
        self.frames = FrameNeeds(
            min_frames=settings.min_frames, max_frames=settings.max_frames, fps=settings.fps
        )

    @property
    def name(self) -> str:
        return f"DeScore({self.mode})"

    def to(self, device: torch.device | str) -> DeScoreReward:
        self.scorer.model.to(device)
        return self

    def score_batch(self, videos: torch.Tensor, prompts: list[str], fps: float | None) -> RewardOutput:
        keep_graph = self.differentiable and videos.requires_grad and torch.is_grad_enabled()
        with frozen([self.scorer.model] if keep_graph else []):
            out = self.scorer.score(
                list(videos),
                prompts,
                think=self.mode == "think",
                differentiable=keep_graph,
                batch_size=videos.shape[0],
                video_fps=fps,
                sampling=self.sampling or None,
                generation=self.generation or None,
                progress=False,
            )
        return RewardOutput(rewards=out.rewards, cots=out.cots if self.mode == "think" else None)


class CascadeReward(RewardFunction):
    """Cheap reward for every video, expensive reward only for the cheap reward's ``top_k``.

    ``rewards`` holds the expensive reward of the shortlisted videos and NaN for the others (their cheap reward is in
    ``first_stage_rewards``), so ``nanargmax`` is the cascade's pick. Not differentiable: the shortlist is a ranking.
    :func:`~reward_guidance.best_of_n.best_of_n` runs the two stages across all candidates, not per batch.
    """

    differentiable = False

    def __init__(self, first: RewardFunction, second: RewardFunction, top_k: int = 2):
        if not isinstance(first, RewardFunction) or not isinstance(second, RewardFunction):
            raise ConfigError(
                "CascadeReward needs two RewardFunction instances (wrap functions with CallableReward)"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"CascadeReward top_k must be an integer >= 1, got {top_k!r}")
        self.first, self.second, self.top_k = first, second, top_k

    @property
    def name(self) -> str:
        return f"Cascade({self.first.name} -> top {self.top_k} -> {self.second.name})"

    def check_frames(
        self, num_frames: int, fps: float | None, what: str = "the video", fix: str = GENERATE_MORE
    ) -> None:
        self.first.check_frames(num_frames, fps, what, fix)
        self.second.check_frames(num_frames, fps, what, fix)

    def to(self, device: torch.device | str) -> CascadeReward:
        self.first.to(device)
        self.second.to(device)
        return self

    def shortlist(self, first_rewards: torch.Tensor) -> list[int]:
        """Indices of the ``top_k`` best first-stage rewards (ties: the earlier index), best first."""
        order = sorted(range(len(first_rewards)), key=lambda k: (-float(first_rewards[k]), k))
        return order[: self.top_k]

    def evaluate(self, videos: torch.Tensor, prompts: Prompts, *, fps: float | None = None) -> RewardOutput:
        videos, prompt_list = check_videos(videos, prompts, self.name)
        first = self.first.evaluate(videos, prompt_list, fps=fps)
        chosen = self.shortlist(first.rewards)
        second = self.second.evaluate(videos[chosen], [prompt_list[k] for k in chosen], fps=fps)
        rewards = torch.full_like(first.rewards, float("nan"))
        rewards[chosen] = second.rewards.to(rewards)
        cots: list[str | None] = [None] * len(rewards)
        for position, k in enumerate(chosen):
            cots[k] = second.cots[position] if second.cots else None
        return RewardOutput(rewards=rewards, cots=cots, first_stage_rewards=first.rewards)

    def score_batch(self, videos: torch.Tensor, prompts: list[str], fps: float | None) -> RewardOutput:
        return self.evaluate(videos, prompts, fps=fps)


def descore_reward(
    scorer: DeScore,
    mode: Literal["think", "think_free", "cascade"] = "think",
    *,
    top_k: int = 2,
    batch_size: int = 8,
    sampling: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
) -> RewardFunction:
    """A DeScore reward: ``think``, ``think_free``, or ``cascade`` (think-free for all, think for the top ``top_k``)."""
    options = {"batch_size": batch_size, "sampling": sampling, "generation": generation}
    if mode == "cascade":
        return CascadeReward(
            DeScoreReward(scorer, "think_free", **options), DeScoreReward(scorer, "think", **options), top_k
        )
    return DeScoreReward(scorer, mode, **options)


def as_reward(reward: Any) -> RewardFunction:
    """A :class:`RewardFunction` from a reward, a :class:`~descore.scoring.DeScore` (think mode) or a callable."""
    if isinstance(reward, RewardFunction):
        return reward
    if isinstance(reward, DeScore):
        return DeScoreReward(reward)
    if callable(reward):
        return CallableReward(reward)
    raise ConfigError(
        f"a reward must be a RewardFunction, a DeScore or a callable(videos, prompts), got {type(reward).__name__}"
    )
