"""Pretrain a toy backbone's vision tower to see the toy world: attributes of freshly rendered clips, exact labels.

Why: a vision tower trained from scratch only through a judge's losses (CoT SFT, Bradley-Terry) on a few thousand
clips memorises them and does not learn what separates two samples of one prompt (docs/training.md). The renderer is
cheap and knows every attribute of what it draws, so the tower can first learn them from an endless stream of clips,
as real vision towers are pretrained before a VLM is assembled. A linear read-out of the merged video tokens (what the
language model receives) predicts, per object colour, whether an object of that colour is visible, its shape, size,
motion, and whether it is split, fragmenting or jittering; and for the clip its background, texture, camera motion,
shake and the flicker, blur and noise levels. The read-out is discarded; the backbone is saved with the trained tower
blocks and final merger (DeepStack mergers, which the read-out does not use, stay as loaded), a drop-in replacement
of the folder it was loaded from.

Optionally a share of each batch comes from a generator's own samples labelled by :func:`toyworld.analyzer.measure`
(what the analyzer reads from the pixels), so the tower also sees the generator's artefacts.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from descore.config import SamplingConfig
from descore.errors import ConfigError, VideoError
from descore.modeling import load_backbone
from descore.processing import QwenVLProcessor
from descore.video_io import load_video, read_video
from toyworld.analyzer import (
    FRAGMENTS_PER_FRAME,
    JITTER_RESIDUAL,
    SHAKE_RESIDUAL,
    measure,
    style_grades,
)
from toyworld.defects import STYLE_STRENGTH, apply_defects, sample_defects
from toyworld.render import render
from toyworld.scene import (
    BACKGROUND_COLORS,
    CAMERAS,
    MOTIONS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    WorldConfig,
    sample_scene,
)

logger = logging.getLogger(__name__)

#: Levels of a style fault: none, minor, failure (the analyzer's and the ground truth's grading).
LEVELS = ("none", "minor", "failure")
#: Clip attributes and their classes.
CLIP_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "background": tuple(BACKGROUND_COLORS),
    "texture": tuple(TEXTURES),
    "camera": tuple(CAMERAS),
    "shake": ("no", "yes"),
    "flicker": LEVELS,
    "blur": LEVELS,
    "noise": LEVELS,
}
#: Attributes of the object of each colour (``present`` for every colour, the others only where one is visible).
OBJECT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "present": ("no", "yes"),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "motion": tuple(MOTIONS),
    "split": ("no", "yes"),
    "fragments": ("no", "yes"),
    "jitter": ("no", "yes"),
}
#: Every read-out target: clip attributes, then ``"<colour>:<attribute>"``.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    **CLIP_ATTRIBUTES,
    **{f"{color}:{name}": classes for color in OBJECT_COLORS for name, classes in OBJECT_ATTRIBUTES.items()},
}
#: Label of an attribute that does not apply (no object of that colour); ignored by the loss.
IGNORE = -100


@dataclass
class VisionPretrainingConfig:
    """Settings of :func:`pretrain_vision_tower`."""

    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    generated_fraction: float = 0.25
    """Share of each batch drawn from the generator samples given to :func:`pretrain_vision_tower` (if any)."""
    eval_clips: int = 256
    """Held-out rendered clips on which the read-out accuracy is reported."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if not 0.0 <= self.generated_fraction < 1.0:
            raise ConfigError(f"generated_fraction must be in [0, 1), got {self.generated_fraction}")
        if self.eval_clips < 1:
            raise ConfigError(f"eval_clips must be >= 1, got {self.eval_clips}")


def _encode(labels: Mapping[str, str | None]) -> dict[str, int]:
    """Class indices of named labels (None: does not apply)."""
    out = {}
    for name, classes in ATTRIBUTES.items():
        value = labels.get(name)
        out[name] = IGNORE if value is None else classes.index(value)
    return out


def _level(kind: str, value: float) -> str:
    if value == 0:
        return "none"
    return "failure" if np.isclose(value, STYLE_STRENGTH[kind][0]) else "minor"


def scene_attributes(scene: Scene) -> dict[str, int]:
    """Exact read-out labels of a rendered (shown) scene."""
    spec, effects = scene.spec, scene.effects
    labels: dict[str, str | None] = {
        "background": spec.background,
        "texture": spec.texture,
        "camera": spec.camera or "static",
        "shake": "yes" if effects.shake > 0 else "no",
        **{kind: _level(kind, getattr(effects, kind)) for kind in ("flicker", "blur", "noise")},
    }
    visible = {
        obj.color: (obj, effects.for_object(i))
        for i, obj in enumerate(spec.objects)
        if effects.for_object(i).visible
    }
    for color in OBJECT_COLORS:
        labels[f"{color}:present"] = "yes" if color in visible else "no"
        if color in visible:
            obj, fx = visible[color]
            labels.update(
                {
                    f"{color}:shape": obj.shape,
                    f"{color}:size": obj.size,
                    f"{color}:motion": obj.motion,
                    f"{color}:split": "yes" if fx.split else "no",
                    f"{color}:fragments": "yes" if fx.fragments > 0 else "no",
                    f"{color}:jitter": "yes" if fx.jitter > 0 else "no",
                }
            )
    return _encode(labels)


def measured_attributes(video: Any) -> dict[str, int]:
    """Read-out labels of any toy video from what :func:`toyworld.analyzer.measure` reads from its pixels."""
    found, objects = measure(video)

    grades = style_grades(found)
    labels: dict[str, str | None] = {
        "background": found["background"],
        "texture": found["texture"],
        "camera": found["camera"],
        "shake": "yes" if found["shake"] >= SHAKE_RESIDUAL else "no",
        **{name: "none" if g is None else LEVELS[2 - g] for name, g in grades.items()},
    }
    seen = {obj.color: obj for obj in objects}
    for color in OBJECT_COLORS:
        labels[f"{color}:present"] = "yes" if color in seen else "no"
        if color in seen:
            obj = seen[color]
            labels.update(
                {
                    f"{color}:shape": obj.shape,
                    f"{color}:size": obj.size,
                    f"{color}:motion": obj.motion if obj.motion in MOTIONS else None,
                    f"{color}:split": "yes" if obj.split else "no",
                    f"{color}:fragments": "yes" if obj.fragments >= FRAGMENTS_PER_FRAME else "no",
                    f"{color}:jitter": "yes" if obj.jitter >= JITTER_RESIDUAL else "no",
                }
            )
    return _encode(labels)


def measured_clips(
    paths: Sequence[str | Path], progress: bool = False
) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """Frames (N, F, 3, H, W) of toy video files (all of one size) and their :func:`measured_attributes`."""
    frames: list[torch.Tensor] = []
    for path in tqdm(paths, desc="measuring clips", disable=not progress):
        clip = read_video(path).frames
        if frames and clip.shape != frames[0].shape:
            raise VideoError(
                f"{path}: {tuple(clip.shape)} frames, but the first clip ({paths[0]}) has {tuple(frames[0].shape)}; "
                "all clips must have the same frame count and size"
            )
        frames.append(clip)
    if not frames:
        raise ConfigError("measured_clips needs at least one video file")
    return torch.stack(frames), [measured_attributes(f) for f in frames]


def render_batch(
    rng: np.random.Generator, count: int, world: WorldConfig
) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """``count`` random scenes with random defects, rendered: (count, F, 3, H, W) frames and their labels."""
    scenes = []
    for _ in range(count):
        scene = sample_scene(rng, world)
        scenes.append(apply_defects(scene, sample_defects(scene, rng), world))
    return torch.from_numpy(render(scenes, world)), [scene_attributes(s) for s in scenes]


class _Readout(torch.nn.Module):
    """The vision tower plus a linear read-out of all merged video tokens of a clip."""

    def __init__(self, visual: torch.nn.Module, tokens: int):
        super().__init__()
        self.visual = visual
        sizes = [len(c) for c in ATTRIBUTES.values()]
        self.sizes = sizes
        self.linear = torch.nn.Linear(tokens * visual.config.out_hidden_size, sum(sizes))

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.visual(pixel_values, grid_thw=grid_thw).pooler_output
        return list(self.linear(tokens.reshape(grid_thw.shape[0], -1)).split(self.sizes, dim=-1))


def _label_tensors(labels: Sequence[Mapping[str, int]]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([y[name] for y in labels]) for name in ATTRIBUTES}


def _accuracy(logits: list[torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per attribute kind (object attributes pooled over colours) where labels apply."""
    hits: dict[str, list[int]] = {}
    for (name, target), scores in zip(labels.items(), logits):
        keep = target != IGNORE
        kind = name.split(":")[-1]
        right, total = hits.setdefault(kind, [0, 0])
        hits[kind] = [right + int((scores.argmax(-1)[keep] == target[keep]).sum()), total + int(keep.sum())]
    return {kind: right / total for kind, (right, total) in hits.items() if total}


def pretrain_vision_tower(
    base_dir: str | Path,
    out_dir: str | Path,
    sampling: Mapping[str, Any],
    world: WorldConfig,
    config: VisionPretrainingConfig | None = None,
    *,
    generated: tuple[torch.Tensor, Sequence[Mapping[str, int]]] | None = None,
    progress: bool = True,
) -> Path:
    """Train the vision tower and merger of the Qwen-VL checkpoint ``base_dir`` on rendered toy clips of ``world``
    (plus ``generated``: (N, F, 3, H, W) frames in [0, 1] and their :func:`measured_attributes`) and write the whole
    checkpoint to ``out_dir``. Frames are sampled and resized as the judge will see them (``sampling``: a
    :class:`~descore.config.SamplingConfig` mapping). ``out_dir/vision_pretraining.json`` holds the config and the
    read-out accuracy on held-out rendered clips before and after."""
    config = config or VisionPretrainingConfig()
    settings = SamplingConfig(**sampling)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder is not empty")
    if generated is not None:
        clips, clip_labels = generated
        expected = (world.num_frames, 3, world.height, world.width)
        if clips.ndim != 5 or len(clips) == 0 or tuple(clips.shape[1:]) != expected:
            raise ConfigError(
                f"generated: frames of shape {tuple(clips.shape)}, expected (N >= 1, {', '.join(map(str, expected))}) "
                "(clips of the world being rendered)"
            )
        if len(clips) != len(clip_labels):
            raise ConfigError(f"generated: {len(clips)} videos but {len(clip_labels)} label sets")
    backbone = load_backbone(base_dir)
    processor = QwenVLProcessor.from_pretrained(base_dir)

    def pixels(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        videos = [
            load_video(
                f, fps=settings.fps, max_frames=settings.max_frames, source_fps=float(world.fps)
            ).frames
            for f in frames
        ]
        batch = processor.video_processor(
            videos, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels, per_frame=True
        )
        return batch["pixel_values_videos"], batch["video_grid_thw"]

    rng = np.random.default_rng([config.seed, 7])
    eval_frames, eval_labels = render_batch(np.random.default_rng([config.seed, 8]), config.eval_clips, world)
    eval_pixels, eval_grid = pixels(eval_frames)
    eval_targets = _label_tensors(eval_labels)
    tokens = int(eval_grid[0].prod()) // processor.video_processor.merge_size**2
    dtype = next(backbone.model.visual.parameters()).dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        # trained in fp32, saved in the checkpoint's dtype
        model = _Readout(backbone.model.visual, tokens).float()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            result = _accuracy(model(eval_pixels, eval_grid), eval_targets)
        model.train()
        return result

    before = evaluate()
    num_generated = round(config.batch_size * config.generated_fraction) if generated is not None else 0
    losses = []
    for _ in tqdm(range(config.steps), desc="vision pretraining", disable=not progress):
        frames, labels = render_batch(rng, config.batch_size - num_generated, world)
        if num_generated:
            picks = rng.integers(len(generated[1]), size=num_generated)
            frames = torch.cat([frames, generated[0][torch.from_numpy(picks)].float()])
            labels += [generated[1][i] for i in picks]
        targets = _label_tensors(labels)
        logits = model(*pixels(frames))
        loss = sum(
            torch.nn.functional.cross_entropy(scores, targets[name], ignore_index=IGNORE)
            for name, scores in zip(ATTRIBUTES, logits)
            if (targets[name] != IGNORE).any()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = evaluate()
    logger.info("vision pretraining: held-out read-out accuracy %s -> %s", before, after)
    backbone.model.visual.to(dtype)
    backbone.eval()
    out.mkdir(parents=True, exist_ok=True)
    for item in Path(base_dir).iterdir():
        if (
            item.is_file()
            and not item.name.endswith(".safetensors")
            and item.name != "model.safetensors.index.json"
        ):
            shutil.copy2(item, out / item.name)
    backbone.save_pretrained(out, safe_serialization=True)
    window = max(1, config.steps // 10)  # mean loss over the first and the last tenth of the steps
    report = {
        "config": asdict(config),
        "accuracy_before": before,
        "accuracy_after": after,
        "loss_first": float(np.mean(losses[:window])),
        "loss_last": float(np.mean(losses[-window:])),
    }
    (out / "vision_pretraining.json").write_text(json.dumps(report, indent=2) + "\n")
    return out


__all__ = [
    "ATTRIBUTES",
    "VisionPretrainingConfig",
    "measured_attributes",
    "measured_clips",
    "pretrain_vision_tower",
    "render_batch",
    "scene_attributes",
]
