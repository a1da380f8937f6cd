"""`DeScorePipeline`: a supported diffusers video pipeline plus a reward model, with best-of-N and reward guidance.

The pipeline's components are the wrapped video pipeline's (``transformer``, ``vae``, ``scheduler``, text encoders,
...; the very same objects) plus ``reward_model``: a :class:`~descore.scoring.DeScore`, or any
:class:`~reward_guidance.protocol.RewardFunction` or ``callable(videos, prompts)``.

A call generates ``num_candidates`` videos per requested video, each from its own recorded seed, scores them with the
reward (DeScore with its chain of thought by default, think-free with ``think=False``, a cascade with
``cascade_top_k``) and returns the best, with every candidate's reward, seed and rationale. ``guidance=`` adds
reward-gradient guidance (:class:`~reward_guidance.guidance.RewardGuidanceCallback`, with the reward in its
think-free, differentiable form) to every generation. With ``num_candidates=1`` and no guidance the videos are exactly
those of the wrapped pipeline called with the same arguments and seed.

Saving and loading: diffusers' loader can only load components whose class derives from one it knows (``ModelMixin``,
``PreTrainedModel``, ...), and a DeScore model is a transformers backbone plus a head, a processor and its own config.
So :meth:`DeScorePipeline.save_pretrained` lets the wrapped pipeline write its own components and ``model_index.json``,
writes the reward model with ``DeScore.save_pretrained`` into ``reward_model/``, and records both in
``model_index.json`` (``"_class_name": "DeScorePipeline"``, ``"_video_pipeline_class"``, ``"reward_model": ["descore.
scoring", "DeScore"]``). :meth:`DeScorePipeline.from_pretrained` reverses that: the video part through its diffusers
class (only the supported diffusers classes, never remote code), the reward through ``DeScore.from_pretrained``. The
folder's video part stays loadable on its own, e.g. with ``WanPipeline.from_pretrained(folder)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import diffusers
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from typing_extensions import Self

from descore.errors import CheckpointError, ConfigError, VideoError, check_positive
from descore.scoring import DeScore
from reward_guidance import (
    CascadeReward,
    DeScoreReward,
    FamilyAdapter,
    RewardFunction,
    RewardGuidanceCallback,
    as_reward,
    best_of_n,
    candidate_seeds,
    descore_reward,
    family_adapter,
    frame_subset,
    subset_fps,
    supported_pipelines,
)
from reward_guidance.best_of_n import check_count, postprocess_frames
from reward_guidance.decoding import FrameSubset
from reward_guidance.guidance import Schedule

logger = logging.getLogger(__name__)

REWARD_MODEL_FOLDER = "reward_model"
"""Subfolder of a saved DeScorePipeline that holds the DeScore checkpoint."""

RewardModel = DeScore | RewardFunction | Callable[..., Any]

_OUTPUT_TYPES = ("pt", "np", "pil", "latent")
_PER_PROMPT_TEXT = ("negative_prompt", "prompt_2", "negative_prompt_2")
"""Call arguments that may hold one string per prompt (split per prompt for best-of-N)."""
_HUB_ARGUMENTS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")


@dataclass
class DeScorePipelineOutput(BaseOutput):
    """What a :class:`DeScorePipeline` call returns. Rows are the requested videos (prompt x num_videos_per_prompt,
    in the wrapped pipeline's order); candidates are the ``num_candidates`` videos generated for each row."""

    frames: Any
    """The winner of every row in the requested ``output_type``, shaped as the wrapped pipeline returns it:
    "pt" (B, F, C, H, W) in [0, 1], "np" (B, F, H, W, C), "pil" a list of frame lists, "latent" the latents."""
    rewards: torch.Tensor | None = None
    """[rows, num_candidates] rewards (a cascade's second stage: NaN outside its shortlist); None when not scored."""
    seeds: list[list[int]] | None = None
    """[rows][num_candidates] seeds; ``generator=torch.Generator().manual_seed(seed)`` with the row's prompt
    regenerates a candidate. None when the caller passed ``generator=`` or ``latents=``."""
    cots: list[list[str | None]] | None = None
    """[rows][num_candidates] chains of thought (None where the reward wrote none, e.g. think-free)."""
    winners: list[int] | None = None
    """Index of the chosen candidate of every row."""
    first_stage_rewards: torch.Tensor | None = None
    """Cascade (``cascade_top_k``): [rows, num_candidates] think-free rewards of every candidate."""
    candidates: torch.Tensor | None = None
    """With ``keep_candidates=True``: every candidate, (rows, num_candidates, F, C, H, W) in [0, 1]."""
    fps: float | None = None
    """Frame rate the reward was told the videos have (pass it when rescoring them)."""


@dataclass(frozen=True)
class GuidanceConfig:
    """Reward-gradient guidance settings of a :class:`DeScorePipeline` call (``guidance=``; a dict works too).

    The fields are those of :class:`~reward_guidance.guidance.RewardGuidanceCallback`: ``weight`` (step size on the
    reward gradient), ``window`` (guided steps: fractions (start, end) of the run, or step indices [start, end)),
    ``schedule`` ("constant", "linear", "cosine" or a function of progress in [0, 1)), ``max_grad_norm`` (clip each
    video's gradient), ``normalize`` (unit-RMS gradients, so that ``weight`` is the latents' RMS change), ``frames``
    (decode and score only these frames), ``checkpointing`` (gradient checkpointing in guided steps),
    ``lookahead_cfg`` (both CFG branches in the look-ahead), ``cfg_scale`` (look-ahead CFG scale; by default the
    pipeline's, and HunyuanVideo's ``true_cfg_scale`` of the call), ``slicing`` / ``tiling`` (VAE memory settings of
    the guided decode).
    """

    weight: float = 1.0
    window: tuple[float, float] | tuple[int, int] = (0.0, 1.0)
    schedule: Schedule = "constant"
    max_grad_norm: float | None = None
    normalize: bool = False
    frames: FrameSubset = None
    checkpointing: bool = False
    lookahead_cfg: bool = True
    cfg_scale: float | None = None
    slicing: bool | None = None
    tiling: bool | dict[str, Any] | None = None

    @classmethod
    def coerce(cls, value: GuidanceConfig | Mapping[str, Any]) -> GuidanceConfig:
        """A GuidanceConfig from itself or a dict of its fields (unknown keys are an error)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"guidance must be a dict or a GuidanceConfig (or None for no guidance), got {type(value).__name__}"
            )
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ConfigError(f"guidance: unknown setting(s) {unknown}; allowed: {known}")
        return cls(**value)

    def callback(
        self, reward: RewardFunction, pipe: DiffusionPipeline, prompt: str | Sequence[str], fps: float
    ) -> RewardGuidanceCallback:
        """The guidance callback for one pipeline call (it hooks the transformer: close it after the call)."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return RewardGuidanceCallback(reward, pipe, prompt=prompt, fps=fps, **settings)


@dataclass
class _StepEnd:
    """The step-end callback arguments of the wrapped pipeline's calls: the caller's, after the guidance if any."""

    guidance: GuidanceConfig | None
    reward: RewardFunction | None
    user: Any
    user_inputs: list[str] | None
    fps: float

    @contextlib.contextmanager
    def arguments(self, pipe: DiffusionPipeline, prompt: str | list[str] | None) -> Iterator[dict[str, Any]]:
        """Keyword arguments for one call; a guidance callback lives (hooks the transformer) for the block only."""
        if self.guidance is None:
            arguments = {}
            if self.user is not None:
                arguments["callback_on_step_end"] = self.user
            if self.user_inputs is not None:
                arguments["callback_on_step_end_tensor_inputs"] = self.user_inputs
            yield arguments
            return
        with self.guidance.callback(self.reward, pipe, prompt, self.fps) as guide:
            callback, inputs = _chain_callbacks(guide, self.user, self.user_inputs)
            yield {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": inputs}


class DeScorePipeline(DiffusionPipeline):
    r"""A supported text-to-video pipeline (``WanPipeline`` for Wan 2.1 / 2.2, ``CogVideoXPipeline``,
    ``LTXPipeline``, ``HunyuanVideoPipeline``) with a reward model: best-of-N reranking with DeScore's chain of thought,
    cascades, and reward-gradient guidance, behind the usual diffusers interface.

    Args:
        video_pipeline: the wrapped pipeline; its components become this pipeline's (shared, not copied).
        reward_model: a :class:`~descore.scoring.DeScore` (or a DeScore checkpoint folder), a
            :class:`~reward_guidance.protocol.RewardFunction`, a ``callable(videos, prompts)`` returning one number
            per video, or None (then pass ``reward=`` to calls that need one).

    Examples:
        ```py
        >>> from pipelines import DeScorePipeline
        >>> pipe = DeScorePipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", reward_model="path/to/descore")
        >>> out = pipe("a red ball rolls to the left", num_candidates=4, seeds=0, num_frames=33)
        >>> out.frames.shape, out.rewards, out.winners, out.cots[0][out.winners[0]]
        >>> pipe("a red ball rolls to the left", guidance={"weight": 0.05, "window": (0.5, 1.0), "normalize": True})
        ```
    """

    _optional_components: ClassVar[list[str]] = ["reward_model"]

    def __init__(
        self,
        video_pipeline: DiffusionPipeline,
        reward_model: RewardModel | str | os.PathLike | None = None,
    ):
        super().__init__()
        if isinstance(video_pipeline, DeScorePipeline):
            raise ConfigError(
                "video_pipeline is already a DeScorePipeline; use DeScorePipeline.from_pipe(pipe, reward_model=...) "
                "to change its reward model"
            )
        if not isinstance(video_pipeline, DiffusionPipeline):
            raise ConfigError(
                f"video_pipeline must be a diffusers pipeline (one of {', '.join(supported_pipelines())}), got "
                f"{type(video_pipeline).__name__}"
            )
        family_adapter(video_pipeline)  # refuses unsupported classes, naming the supported ones
        components = video_pipeline.components
        self.register_modules(**components)
        self.register_to_config(
            _video_pipeline_class=type(video_pipeline).__name__, **video_pipeline.parameters
        )
        self.video_pipeline = video_pipeline
        self._video_components = tuple(components)
        self.reward_model = reward_model
        self._callback_tensor_inputs = list(video_pipeline._callback_tensor_inputs)
        self.model_cpu_offload_seq = video_pipeline.model_cpu_offload_seq
        self._exclude_from_cpu_offload = list(video_pipeline._exclude_from_cpu_offload)
        self._progress_bar_config = dict(getattr(video_pipeline, "_progress_bar_config", {}))

    def __setattr__(self, name: str, value: Any) -> None:
        """Component assignments reach the wrapped pipeline too (``pipe.scheduler = ...`` changes what it runs)."""
        if name == "reward_model":
            value = _resolve_reward_model(value)
            self.register_to_config(reward_model=_component_entry(value))
        elif name in self.__dict__.get("_video_components", ()):
            setattr(self.video_pipeline, name, value)
        super().__setattr__(name, value)

    @classmethod
    def _get_signature_keys(cls, obj: Any) -> tuple[list[str], list[str]]:
        """An instance's components are its wrapped pipeline's plus ``reward_model`` (used by ``components``, ``to``,
        offloading); the class itself has the signature (video_pipeline, reward_model)."""
        if isinstance(obj, DeScorePipeline):
            modules, parameters = obj.video_pipeline._get_signature_keys(obj.video_pipeline)
            return sorted([*modules, "reward_model"]), parameters
        return super()._get_signature_keys(obj)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        reward_model: RewardModel | str | os.PathLike | None = None,
        reward_model_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> DeScorePipeline:
        """Load a saved DeScorePipeline folder, or a supported diffusers video pipeline (folder or hub id) plus
        ``reward_model``.

        Args:
            pretrained_model_name_or_path: a folder written by :meth:`save_pretrained` (its reward model is loaded
                from ``reward_model/`` unless ``reward_model`` is given), or any ``WanPipeline`` /
                ``CogVideoXPipeline`` / ``LTXPipeline`` / ``HunyuanVideoPipeline`` folder or hub id.
            reward_model: a DeScore checkpoint folder, a loaded DeScore, a RewardFunction or a callable.
            reward_model_kwargs: keyword arguments of ``DeScore.from_pretrained`` (e.g. ``torch_dtype``).
            kwargs: diffusers ``from_pretrained`` arguments for the video pipeline (``torch_dtype``, ``variant``,
                components to replace, ...). ``custom_pipeline`` and ``trust_remote_code`` are refused.
        """
        for refused in ("custom_pipeline", "trust_remote_code"):
            if kwargs.get(refused):
                raise ConfigError(
                    f"{refused}: DeScorePipeline loads diffusers' own pipeline classes only "
                    f"({', '.join(supported_pipelines())}) and never runs code from a checkpoint"
                )
        load_options = dict(reward_model_kwargs or {})
        folder, index = _read_model_index(pretrained_model_name_or_path, kwargs)
        if index.get("_class_name") == cls.__name__:
            video_class = _saved_video_class(folder, index)
            with _reward_model_entry_ignored():
                video = video_class.from_pretrained(folder, **kwargs)
            if reward_model is None:
                reward_model = _saved_reward_model(folder, index, load_options)
        elif index.get("_class_name") in supported_pipelines():
            video = DiffusionPipeline.from_pretrained(pretrained_model_name_or_path, **kwargs)
        else:
            raise ConfigError(
                f"{pretrained_model_name_or_path} holds a {index.get('_class_name')}; DeScorePipeline wraps "
                f"{', '.join(supported_pipelines())}"
            )
        pipe = cls(video, reward_model=_resolve_reward_model(reward_model, load_options))
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    @classmethod
    def from_pipe(
        cls,
        pipeline: DiffusionPipeline,
        reward_model: RewardModel | str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> DeScorePipeline:
        """Wrap an existing pipeline without copying its weights.

        ``pipeline``: a supported video pipeline, or a DeScorePipeline (whose reward model is kept unless
        ``reward_model`` is given). ``kwargs``: components or settings to replace, as diffusers' own ``from_pipe``
        takes them (applied to the video pipeline).
        """
        if isinstance(pipeline, DeScorePipeline):
            video = pipeline.video_pipeline
            reward_model = reward_model if reward_model is not None else pipeline.reward_model
        else:
            video = pipeline
        if kwargs:
            if not isinstance(video, DiffusionPipeline):
                raise ConfigError(f"from_pipe needs a diffusers pipeline, got {type(video).__name__}")
            video = type(video).from_pipe(video, **kwargs)
        return cls(video, reward_model=reward_model)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """Write the wrapped pipeline's components and ``model_index.json``, and the DeScore reward model in
        ``reward_model/``; :meth:`from_pretrained` rebuilds both.

        A reward model that is not a DeScore (a RewardFunction or a function) cannot be saved: it is left out with a
        warning (pass it again as ``reward_model=`` when loading).
        """
        if push_to_hub:
            raise ConfigError(
                "push_to_hub: save the DeScorePipeline to a folder, then upload it with huggingface_hub.upload_folder"
            )
        directory = Path(save_directory)
        self.video_pipeline.save_pretrained(
            directory,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            **kwargs,
        )
        reward = self.reward_model
        entry: tuple[str | None, str | None] = (None, None)
        if isinstance(reward, DeScore):
            reward.save_pretrained(directory / REWARD_MODEL_FOLDER)
            entry = _component_entry(reward)
        elif reward is not None:
            logger.warning(
                "reward_model (%s) is not a DeScore and is not saved; pass it as reward_model= to "
                "DeScorePipeline.from_pretrained",
                type(reward).__name__,
            )
        index_file = directory / self.config_name
        index = json.loads(index_file.read_text())
        index.update(
            {
                "_class_name": type(self).__name__,
                "_video_pipeline_class": type(self.video_pipeline).__name__,
                "reward_model": list(entry),
            }
        )
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        logger.info("saved %s to %s", type(self).__name__, directory)

    # ------------------------------------------------------------------ device and progress
    def to(self, *args: Any, **kwargs: Any) -> Self:
        """Move the video components as diffusers does, and the DeScore reward model(s) to the same device
        (their dtype is left as loaded)."""
        super().to(*args, **kwargs)
        if isinstance(self.reward_model, DeScore):
            self.reward_model.model.to(self.device)
        elif isinstance(self.reward_model, RewardFunction):
            self.reward_model.to(self.device)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Progress bars of this pipeline (best-of-N) and of the wrapped one (denoising steps)."""
        super().set_progress_bar_config(**kwargs)
        self.video_pipeline.set_progress_bar_config(**kwargs)

    # ------------------------------------------------------------------ calling
    def check_inputs(
        self,
        prompt: str | list[str] | None,
        num_candidates: int,
        seeds: Any,
        think: bool | None,
        cascade_top_k: int | None,
        score: bool | None,
        candidate_batch_size: int,
        generator: Any,
        output_type: str,
        callback_on_step_end: Any,
        callback_on_step_end_tensor_inputs: list[str] | None,
        pipeline_kwargs: Mapping[str, Any],
    ) -> None:
        """Refuse bad arguments before anything is generated; every error names the argument and the fix."""
        check_count("num_candidates", num_candidates, "1 for one video per prompt, N for the best of N")
        check_count("candidate_batch_size", candidate_batch_size, "candidates per pipeline call")
        if cascade_top_k is not None and (
            isinstance(cascade_top_k, bool)
            or not isinstance(cascade_top_k, int)
            or not 1 <= cascade_top_k <= num_candidates
        ):
            raise ConfigError(
                f"cascade_top_k must be None or an integer in 1..num_candidates ({num_candidates}), got "
                f"{cascade_top_k!r}"
            )
        if think is not None and not isinstance(think, bool):
            raise ConfigError(f"think must be True, False or None, got {think!r}")
        if score is not None and not isinstance(score, bool):
            raise ConfigError(f"score must be None, True or False, got {score!r}")
        if score is False and num_candidates > 1:
            raise ConfigError(
                "score=False: best-of-N scores every candidate; use num_candidates=1 or drop score"
            )
        if output_type not in _OUTPUT_TYPES:
            raise ConfigError(f"output_type must be one of {list(_OUTPUT_TYPES)}, got {output_type!r}")
        if prompt is not None and not (
            (isinstance(prompt, str) and prompt.strip())
            or (
                isinstance(prompt, (list, tuple))
                and prompt
                and all(isinstance(p, str) and p.strip() for p in prompt)
            )
        ):
            raise ConfigError(f"prompt must be a non-empty string or a list of them, got {prompt!r}")
        if generator is not None and num_candidates > 1:
            raise ConfigError(
                "generator: best-of-N seeds every candidate itself; pass seeds= (a base seed, one seed per "
                "candidate, or one list per prompt) instead"
            )
        if seeds is not None and (generator is not None or pipeline_kwargs.get("latents") is not None):
            raise ConfigError(
                "seeds= sets the initial noise, as do generator= and latents=: pass only one of them"
            )
        if seeds is not None and prompt is None:
            raise ConfigError("seeds= needs prompt= (text); with prompt embeddings pass generator= instead")
        accepted = _call_arguments(self.video_pipeline)
        if accepted is not None:
            unknown = sorted(set(pipeline_kwargs) - accepted)
            if unknown:
                raise ConfigError(
                    f"{type(self.video_pipeline).__name__}.__call__ has no argument(s) {unknown}; it accepts "
                    f"{sorted(accepted - {'prompt', 'generator', 'output_type', 'return_dict'})} and DeScorePipeline "
                    "adds num_candidates, seeds, think, cascade_top_k, reward, guidance, score, "
                    "candidate_batch_size, fps, keep_candidates"
                )
        if num_candidates > 1:
            precomputed = sorted(
                k
                for k, v in pipeline_kwargs.items()
                if v is not None and (k == "latents" or "embeds" in k or "attention_mask" in k)
            )
            if precomputed:
                raise ConfigError(
                    f"{precomputed}: best-of-N generates each candidate from the prompt text and its own seed; "
                    "remove them (or use num_candidates=1)"
                )
        if isinstance(prompt, (list, tuple)):
            for name in _PER_PROMPT_TEXT:
                value = pipeline_kwargs.get(name)
                if isinstance(value, (list, tuple)) and len(value) != len(prompt):
                    raise ConfigError(
                        f"{name} has {len(value)} entries for {len(prompt)} prompts; give one per prompt"
                    )
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            requested = list(callback_on_step_end.tensor_inputs)
        else:
            requested = list(callback_on_step_end_tensor_inputs or [])
        unavailable = [k for k in requested if k not in self._callback_tensor_inputs]
        if unavailable:
            raise ConfigError(
                f"callback tensor inputs {unavailable} are not offered by {type(self.video_pipeline).__name__}; "
                f"it offers {self._callback_tensor_inputs}"
            )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        num_candidates: int = 1,
        seeds: int | Sequence[int] | Sequence[Sequence[int]] | None = None,
        think: bool | None = None,
        cascade_top_k: int | None = None,
        reward: RewardModel | None = None,
        guidance: GuidanceConfig | Mapping[str, Any] | None = None,
        score: bool | None = None,
        candidate_batch_size: int = 1,
        fps: float | None = None,
        keep_candidates: bool = False,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str | None = None,
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, Any]]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **kwargs: Any,
    ) -> DeScorePipelineOutput | tuple:
        r"""Generate, score and choose videos.

        Args:
            prompt: one prompt or a list (one row per prompt and ``num_videos_per_prompt``).
            num_candidates: videos generated per row; the reward picks the best (ties: the lower index). With 1 and no
                guidance the result is the wrapped pipeline's own output.
            seeds: the candidates' seeds: a base seed (row r, candidate k gets ``seeds + r * num_candidates + k``),
                ``num_candidates`` seeds used for every row, or one such list per row. None: drawn from torch's RNG and
                recorded in the output.
            think: a DeScore reward model writes its chain of thought before scoring (True; None means True) or scores
                think-free (False). Any other reward keeps its own mode, so passing ``think`` with one is an error.
            cascade_top_k: DeScore cascade: think-free for every candidate, then thinking for the best k of each row.
            reward: overrides the ``reward_model`` component for this call (a DeScore, a RewardFunction used as it is,
                or a callable).
            guidance: reward-gradient guidance (:class:`GuidanceConfig` or a dict of its fields) with the reward's
                differentiable form (a DeScore is used think-free); applied to every candidate.
            score: with ``num_candidates=1``, score the videos (default: when a reward is available).
            candidate_batch_size: candidates generated (and scored) per pipeline call in best-of-N.
            fps: frame rate the reward is told (default: the family's; LTX: the call's ``frame_rate``).
            keep_candidates: also return every candidate's frames (``candidates``).
            generator: with ``num_candidates=1`` only, instead of ``seeds`` (the seeds are then unknown).
            output_type: "pt", "np", "pil" or "latent" (latents cannot be scored); default: the wrapped pipeline's.
            return_dict: return a :class:`DeScorePipelineOutput`, or the tuple (frames, rewards, seeds, cots, winners).
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in diffusers; with guidance, the guidance
                callback runs first in each step and yours sees its updated latents. The callback receives the wrapped
                pipeline.
            kwargs: every other argument of the wrapped pipeline's ``__call__`` (``num_frames``, ``height``,
                ``num_inference_steps``, ``guidance_scale``, ``negative_prompt``, ``frame_rate``, ...).
        """
        video = self.video_pipeline
        adapter = family_adapter(video)
        if output_type is None:
            output_type = adapter.call_default("output_type") or "np"
        self.check_inputs(
            prompt,
            num_candidates,
            seeds,
            think,
            cascade_top_k,
            score,
            candidate_batch_size,
            generator,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            kwargs,
        )
        source = reward if reward is not None else self.reward_model
        guidance_config = GuidanceConfig.coerce(guidance) if guidance is not None else None
        selection = _selection_reward(source, think, cascade_top_k)
        scoring = num_candidates > 1 or (selection is not None and score is not False)
        if scoring and selection is None:
            raise ConfigError(
                f"{'num_candidates > 1 ranks candidates' if num_candidates > 1 else 'score=True scores the videos'} "
                "by a reward, and this pipeline has none: load it with reward_model=... or pass reward=..."
            )
        if guidance_config is not None and source is None:
            raise ConfigError(
                "guidance follows the gradient of a reward, and this pipeline has none: load it with reward_model=... "
                "or pass reward=..."
            )
        if prompt is None and (scoring or guidance_config is not None):
            raise ConfigError("prompt: the reward judges videos against the prompt text; pass prompt=")
        if output_type == "latent" and (scoring or keep_candidates):
            raise ConfigError(
                "output_type='latent': scored or kept videos must be decoded; use 'pt', 'np' or 'pil' (or score=False)"
            )
        fps = _check_fps(fps) if fps is not None else adapter.default_fps(kwargs)
        num_frames = adapter.generated_frames(kwargs)
        if scoring:
            _check_reward_frames(adapter, selection, num_frames, fps, "each generated video")
        guidance_reward = None
        if guidance_config is not None:
            # a scale the call sets but the pipeline does not keep (HunyuanVideo's true CFG)
            if guidance_config.cfg_scale is None and (scale := adapter.call_cfg_scale(kwargs)) is not None:
                guidance_config = dataclasses.replace(guidance_config, cfg_scale=scale)
            guidance_reward = _differentiable(source)
            self._check_guidance(guidance_config, guidance_reward, adapter, prompt, num_frames, fps, kwargs)

        prompts = None if prompt is None else ([prompt] if isinstance(prompt, str) else list(prompt))
        rows = None if prompts is None else self._rows(adapter, prompts, kwargs)
        step_end = _StepEnd(
            guidance_config, guidance_reward, callback_on_step_end, callback_on_step_end_tensor_inputs, fps
        )
        if num_candidates == 1:
            chosen = selection if scoring else None
            out = self._single(
                prompt, rows, seeds, generator, chosen, step_end, output_type, keep_candidates, fps, kwargs
            )
        else:
            out = self._best_of_n(
                prompts,
                rows,
                num_candidates,
                seeds,
                selection,
                step_end,
                candidate_batch_size,
                output_type,
                keep_candidates,
                fps,
                kwargs,
            )
        if not return_dict:
            return out.frames, out.rewards, out.seeds, out.cots, out.winners
        return out

    # ------------------------------------------------------------------ the two generation paths
    def _single(
        self,
        prompt: str | list[str] | None,
        rows: list[str] | None,
        seeds: Any,
        generator: Any,
        reward: RewardFunction | None,
        step_end: _StepEnd,
        output_type: str,
        keep_candidates: bool,
        fps: float,
        kwargs: dict[str, Any],
    ) -> DeScorePipelineOutput:
        """One call of the wrapped pipeline with the caller's arguments, scored afterwards when asked."""
        seed_table = None
        if generator is None and kwargs.get("latents") is None and rows is not None:
            seed_table = _seed_table(seeds, len(rows), 1)
            generator = [torch.Generator().manual_seed(row[0]) for row in seed_table]
        decoded = reward is not None or keep_candidates
        call = {**kwargs, "generator": generator, "output_type": "pt" if decoded else output_type}
        if prompt is not None:
            call["prompt"] = prompt
        with step_end.arguments(self.video_pipeline, prompt) as callbacks:
            frames = self.video_pipeline(**call, **callbacks, return_dict=True).frames
        rewards = cots = first_stage = None
        if reward is not None:
            if frames.shape[0] != len(rows):
                raise ConfigError(
                    f"{type(self.video_pipeline).__name__} returned {frames.shape[0]} videos for {len(rows)} requested "
                    "(prompts x num_videos_per_prompt)"
                )
            rewards, cots, first_stage = _score_rows(reward, frames, rows, fps)
        return DeScorePipelineOutput(
            frames=self._postprocess(frames, output_type) if decoded else frames,
            rewards=rewards,
            seeds=seed_table,
            cots=cots,
            winners=None if rows is None else [0] * len(rows),
            first_stage_rewards=first_stage,
            candidates=frames.unsqueeze(1).cpu() if keep_candidates else None,
            fps=fps,
        )

    def _best_of_n(
        self,
        prompts: list[str],
        rows: list[str],
        num_candidates: int,
        seeds: Any,
        reward: RewardFunction,
        step_end: _StepEnd,
        candidate_batch_size: int,
        output_type: str,
        keep_candidates: bool,
        fps: float,
        kwargs: dict[str, Any],
    ) -> DeScorePipelineOutput:
        """Best-of-N per row with :func:`~reward_guidance.best_of_n.best_of_n`; guidance, when asked, in every call."""
        seed_table = _seed_table(seeds, len(rows), num_candidates)
        per_prompt = len(rows) // len(prompts)
        shared = {k: v for k, v in kwargs.items() if k != "num_videos_per_prompt"}
        show = not self._progress_bar_config.get("disable", False)
        results = []
        for r, row_prompt in enumerate(rows):
            call = dict(shared)
            for name in _PER_PROMPT_TEXT:
                if isinstance(call.get(name), (list, tuple)):
                    call[name] = call[name][r // per_prompt]
            with step_end.arguments(self.video_pipeline, row_prompt) as callbacks:
                results.append(
                    best_of_n(
                        self.video_pipeline,
                        row_prompt,
                        num_candidates,
                        reward,
                        seeds=seed_table[r],
                        batch_size=candidate_batch_size,
                        fps=fps,
                        keep_videos=keep_candidates,
                        progress=show,
                        output_type="pt",
                        **call,
                        **callbacks,
                    )
                )
        cascade = isinstance(reward, CascadeReward)
        return DeScorePipelineOutput(
            frames=self._postprocess(torch.stack([res.video for res in results]), output_type),
            rewards=torch.stack([res.rewards for res in results]),
            seeds=seed_table,
            cots=[list(res.cots) for res in results],
            winners=[res.index for res in results],
            first_stage_rewards=torch.stack([res.first_stage_rewards for res in results])
            if cascade
            else None,
            candidates=torch.stack([res.videos for res in results]) if keep_candidates else None,
            fps=fps,
        )

    # ------------------------------------------------------------------ helpers
    def _rows(self, adapter: FamilyAdapter, prompts: list[str], kwargs: Mapping[str, Any]) -> list[str]:
        """The prompt of every video the wrapped pipeline generates (pipelines that ignore num_videos_per_prompt,
        like CogVideoX, make one per prompt)."""
        per_prompt = 1
        if "num_videos_per_prompt" in adapter.batch_kwargs(prompts[0], 2):
            per_prompt = kwargs.get("num_videos_per_prompt") or 1
            check_count("num_videos_per_prompt", per_prompt, "videos per prompt")
        return [p for p in prompts for _ in range(per_prompt)]

    def _check_guidance(
        self,
        config: GuidanceConfig,
        reward: RewardFunction,
        adapter: FamilyAdapter,
        prompt: str | list[str],
        num_frames: int,
        fps: float,
        kwargs: Mapping[str, Any],
    ) -> None:
        """Settings, step window and frame needs of the guidance, checked before generating."""
        with config.callback(reward, self.video_pipeline, prompt, fps) as probe:
            probe.guided_steps(_num_steps(adapter, kwargs))
        subset = frame_subset(config.frames, num_frames)
        if subset is None:
            _check_reward_frames(adapter, reward, num_frames, fps, "each guided video")
        else:
            reward.check_frames(
                len(subset),
                subset_fps(subset, fps),
                f"the guidance frame subset {subset}",
                "Score at least {frames} frames (guidance frames=).",
            )

    def _postprocess(self, frames: torch.Tensor, output_type: str) -> Any:
        """(B, F, C, H, W) frames in [0, 1] -> ``output_type`` as the wrapped pipeline returns it."""
        return postprocess_frames(self.video_pipeline, frames, output_type)


# ---------------------------------------------------------------------- module helpers
def _call_arguments(pipe: DiffusionPipeline) -> set[str] | None:
    """Names ``pipe.__call__`` accepts (None when it takes ``**kwargs``, i.e. anything)."""
    parameters = inspect.signature(type(pipe).__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters) - {"self"}


def _check_fps(fps: Any) -> float:
    return check_positive("fps", fps, "a positive number (the generated videos' frame rate)")


def _component_entry(value: Any) -> tuple[str | None, str | None]:
    """The (library, class) pair a component is recorded under in ``model_index.json``."""
    if value is None:
        return None, None
    return type(value).__module__, type(value).__name__


def _resolve_reward_model(value: Any, load_options: Mapping[str, Any] | None = None) -> RewardModel | None:
    """A reward model component from an instance, a callable, or a DeScore checkpoint folder."""
    if value is None or isinstance(value, (DeScore, RewardFunction)):
        return value
    if isinstance(value, (str, os.PathLike)):
        return DeScore.from_pretrained(value, **(load_options or {}))
    if callable(value):
        return value
    raise ConfigError(
        "reward_model must be a DeScore, a DeScore checkpoint folder, a RewardFunction or a callable(videos, prompts), "
        f"got {type(value).__name__}"
    )


def _selection_reward(source: Any, think: bool, cascade_top_k: int | None) -> RewardFunction | None:
    """The reward that scores and ranks: DeScore in the mode ``think`` / ``cascade_top_k`` ask for, others as given."""
    if source is None:
        return None
    if isinstance(source, DeScore):
        if cascade_top_k is not None:
            return descore_reward(source, "cascade", top_k=cascade_top_k)
        return descore_reward(source, "think_free" if think is False else "think")
    if think is not None:
        raise ConfigError(
            f"think={think} sets the mode of a DeScore reward model, but the reward is a {type(source).__name__}, "
            "which keeps its own; leave think unset, or build the reward with descore_reward(scorer, 'think' or "
            "'think_free')"
        )
    if cascade_top_k is not None:
        raise ConfigError(
            f"cascade_top_k builds a DeScore cascade, but the reward is a {type(source).__name__}; use a DeScore "
            "reward model, or pass reward=CascadeReward(cheap, expensive, top_k)"
        )
    return as_reward(source)


def _differentiable(source: Any) -> RewardFunction:
    """The reward guidance follows: a DeScore (or DeScore reward) think-free, a cascade's first stage, others as
    they are (the guidance callback refuses non-differentiable ones, naming the fix)."""
    if isinstance(source, DeScore):
        return DeScoreReward(source, "think_free")
    if isinstance(source, DeScoreReward) and source.mode != "think_free":
        return DeScoreReward(
            source.scorer,
            "think_free",
            batch_size=source.batch_size,
            sampling=source.sampling or None,
            generation=source.generation or None,
        )
    if isinstance(source, CascadeReward):
        return _differentiable(source.first)
    return as_reward(source)


def _check_reward_frames(
    adapter: FamilyAdapter, reward: RewardFunction, num_frames: int, fps: float, what: str
) -> None:
    """Refuse, before generating, videos the reward cannot read; the error names the frame count that would do."""
    try:
        reward.check_frames(num_frames, fps)
    except VideoError:
        reward.check_frames(num_frames, fps, what, _frames_remedy(adapter, reward, num_frames, fps))


def _frames_remedy(adapter: FamilyAdapter, reward: RewardFunction, num_frames: int, fps: float) -> str:
    """The fix of a frame-count error: the smallest count this pipeline generates that the reward can read."""
    ratio = adapter.decoder.temporal_compression
    lower_fps = "lower the reward's sampling fps or min_frames (e.g. reward=DeScoreReward(scorer, sampling=dict(fps=...)))"
    for candidate in range(num_frames + ratio, num_frames + ratio * 4096, ratio):
        try:
            reward.check_frames(candidate, fps)
        except VideoError:
            continue
        return f"Pass num_frames={candidate} or more (the pipeline generates 1 + {ratio}k frames), or {lower_fps}."
    return f"No frame count helps: {lower_fps}."


def _num_steps(adapter: FamilyAdapter, kwargs: Mapping[str, Any]) -> int:
    """Denoising steps of a call (custom ``timesteps`` / ``sigmas`` count as given)."""
    for name in ("timesteps", "sigmas"):
        if kwargs.get(name) is not None:
            return len(kwargs[name])
    return int(kwargs.get("num_inference_steps") or adapter.call_default("num_inference_steps"))


def _seed_table(seeds: Any, rows: int, num_candidates: int) -> list[list[int]]:
    """[rows][num_candidates] seeds from a base seed, one list for every row, one list per row, or None (drawn)."""
    if seeds is None:
        drawn = candidate_seeds(None, rows * num_candidates)
        return [drawn[r * num_candidates : (r + 1) * num_candidates] for r in range(rows)]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [candidate_seeds(seeds + r * num_candidates, num_candidates) for r in range(rows)]
    if isinstance(seeds, Sequence) and seeds and all(isinstance(s, Sequence) for s in seeds):
        if len(seeds) != rows:
            raise ConfigError(
                f"seeds has {len(seeds)} lists for {rows} videos (prompts x num_videos_per_prompt)"
            )
        return [candidate_seeds(list(s), num_candidates) for s in seeds]
    if isinstance(seeds, Sequence):
        row = candidate_seeds(list(seeds), num_candidates)
        return [list(row) for _ in range(rows)]
    raise ConfigError(
        f"seeds must be an int, {num_candidates} ints (one per candidate) or one such list per video, got "
        f"{type(seeds).__name__}"
    )


def _score_rows(
    reward: RewardFunction, frames: torch.Tensor, rows: list[str], fps: float
) -> tuple[torch.Tensor, list[list[str | None]], torch.Tensor | None]:
    """Rewards [rows, 1], CoTs and (cascade) first-stage rewards of one video per row. A cascade shortlists among a
    row's candidates, so it runs row by row."""
    with torch.inference_mode():
        if isinstance(reward, CascadeReward):
            parts = [reward.evaluate(frames[r : r + 1], rows[r], fps=fps) for r in range(len(rows))]
            rewards = torch.cat([p.rewards for p in parts])
            first = torch.cat([p.first_stage_rewards for p in parts]).float().cpu().view(-1, 1)
            cots = [c for p in parts for c in p.cots]
        else:
            scored = reward.evaluate(frames, rows, fps=fps)
            rewards, first = scored.rewards, None
            cots = scored.cots or [None] * len(rows)
    return rewards.float().cpu().view(-1, 1), [[c] for c in cots], first


def _chain_callbacks(
    guidance: RewardGuidanceCallback, user: Any, user_inputs: list[str] | None
) -> tuple[Callable[..., dict[str, Any]], list[str]]:
    """One step-end callback: guidance first, then the caller's (which sees the guided latents)."""
    if isinstance(user, (PipelineCallback, MultiPipelineCallbacks)):
        wanted = list(user.tensor_inputs)
    elif user is not None:
        wanted = list(user_inputs or ["latents"])  # the pipelines' default
    else:
        wanted = list(user_inputs or [])
    inputs = list(dict.fromkeys([*guidance.tensor_inputs, *wanted]))

    def step_end(pipe: DiffusionPipeline, step: int, timestep: torch.Tensor, tensors: dict[str, Any]) -> dict:
        tensors = guidance(pipe, step, timestep, tensors)
        if user is not None:
            tensors = {**tensors, **user(pipe, step, timestep, tensors)}
        return tensors

    return step_end, inputs


def _read_model_index(path: str | os.PathLike, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(local folder or hub id, model_index.json) of a pipeline; a saved DeScorePipeline on the hub is downloaded."""
    if os.path.isdir(path):
        index_file = Path(path) / DiffusionPipeline.config_name
        if not index_file.is_file():
            raise CheckpointError(
                f"{path}: no {DiffusionPipeline.config_name}; expected a folder written by save_pretrained"
            )
        try:
            return str(path), json.loads(index_file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{index_file}: not valid JSON ({err})") from err
    hub = {k: kwargs[k] for k in _HUB_ARGUMENTS if k in kwargs}
    try:
        index = dict(DiffusionPipeline.load_config(str(path), **hub))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a local folder, and its {DiffusionPipeline.config_name} cannot be fetched ({err})"
        ) from err
    if index.get("_class_name") == DeScorePipeline.__name__:
        from huggingface_hub import snapshot_download

        return snapshot_download(str(path), **hub), index
    return str(path), index


def _saved_video_class(folder: str, index: Mapping[str, Any]) -> type[DiffusionPipeline]:
    """The diffusers class of a saved DeScorePipeline's video part (supported diffusers classes only)."""
    name = index.get("_video_pipeline_class")
    if name not in supported_pipelines() or not hasattr(diffusers, str(name)):
        raise CheckpointError(
            f"{folder}/{DiffusionPipeline.config_name}: _video_pipeline_class {name!r} is not one of the supported "
            f"diffusers pipelines ({', '.join(supported_pipelines())})"
        )
    return getattr(diffusers, name)


def _saved_reward_model(
    folder: str, index: Mapping[str, Any], load_options: Mapping[str, Any]
) -> DeScore | None:
    """The DeScore saved in ``reward_model/`` (None when the pipeline was saved without one)."""
    entry = index.get("reward_model")
    if not entry or entry[0] is None:
        return None
    if list(entry)[-1] != DeScore.__name__:
        raise CheckpointError(
            f"{folder}/{DiffusionPipeline.config_name}: reward_model {entry} is not a DeScore checkpoint; pass the "
            "reward as reward_model="
        )
    return DeScore.from_pretrained(Path(folder) / REWARD_MODEL_FOLDER, **load_options)


class _RewardModelEntryFilter(logging.Filter):
    """Drops diffusers' "not expected" warnings about the ``reward_model`` entry, which DeScorePipeline loads."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("'reward_model'" in message and "not expected" in message)


@contextlib.contextmanager
def _reward_model_entry_ignored() -> Iterator[None]:
    """While the wrapped class loads a saved DeScorePipeline folder, its model_index.json lists ``reward_model``,
    which that class does not take; the warnings diffusers logs about it would be wrong here."""
    loggers = [
        logging.getLogger(n) for n in ("diffusers.configuration_utils", "diffusers.pipelines.pipeline_utils")
    ]
    quiet = _RewardModelEntryFilter()
    for log in loggers:
        log.addFilter(quiet)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(quiet)
