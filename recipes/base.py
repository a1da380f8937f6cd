"""The machinery every recipe shares: set-up, group sampling with rewards, optimizer steps, bookkeeping and the CLI.

A recipe subclasses :class:`RecipeTrainer` and implements :meth:`RecipeTrainer.run_update` (one sampling round and
its optimizer steps, returning metrics). The base class

- loads the pipeline (or takes one), checks the sampling spec and the reward's frame needs BEFORE any compute,
  freezes the pipeline and adds the LoRA adapter, builds AdamW, a warm-up schedule and the optional EMA;
- samples groups of videos per prompt with :func:`~recipes.rollout.rollout`, decodes them with
  :mod:`reward_guidance`'s decoder of the family and scores them with the reward in micro-batches;
- logs metrics through accelerate's trackers (a JSONL tracker writing ``metrics.jsonl`` is always on), writes sample
  videos every ``sample_every`` updates, atomic checkpoints every ``checkpoint_every`` updates
  (:mod:`descore.training.checkpointing`: LoRA + EMA weights, optimizer, schedule, metric history), and the final
  LoRA (``output_dir/lora``) that ``pipe.load_lora_weights`` reads.

Exact resume: every random choice is drawn from generators seeded by (seed, update, process, purpose), so a run
resumed from the checkpoint of update k repeats updates k+1... of the uninterrupted run bit for bit.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from diffusers import DiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params
from tqdm.auto import tqdm

from descore.errors import ConfigError, VideoError
from descore.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from descore.training.config import parse_overrides
from descore.video_io import write_video
from recipes.config import RecipeConfig, build_reward, config_dict, config_help, load_config
from recipes.ema import LoraEMA
from recipes.families import Conditioning, family_of, pipeline_call_kwargs
from recipes.lora import add_lora, lora_modules, save_lora
from recipes.rollout import Trajectory, rollout, seeded_generators

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LORA_DIR = "lora"


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of integers and names (stable across runs and platforms)."""
    words = [
        p if isinstance(p, int) else int.from_bytes(str(p).encode()[:8].ljust(8, b"\0"), "little")
        for p in parts
    ]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def seeded(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded by :func:`derived_seed`."""
    return torch.Generator().manual_seed(derived_seed(*parts))


class JSONLTracker(GeneralTracker):
    """An accelerate tracker that appends one JSON line per logged step to ``metrics.jsonl``."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.with_name("config.json").write_text(
            json.dumps(values, indent=2, sort_keys=True, default=str)
        )

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **values}, sort_keys=True) + "\n")

    def rewrite(self, history: Sequence[dict[str, Any]]) -> None:
        """Replace the file with ``history`` (on resume: drop lines logged after the checkpoint)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"step": m["update"], **m}, sort_keys=True) for m in history]
        self.path.write_text("".join(line + "\n" for line in lines))


@dataclass
class GroupSamples:
    """One update's samples: rollout batches, the prompt of each sample, its group id and its reward."""

    trajectories: list[Trajectory]
    prompts: list[str]
    group_ids: torch.Tensor
    rewards: torch.Tensor

    def batches(self) -> Iterator[tuple[slice, Trajectory]]:
        """(sample slice, trajectory) of each rollout batch, in sampling order."""
        start = 0
        for trajectory in self.trajectories:
            yield slice(start, start + len(trajectory)), trajectory
            start += len(trajectory)

    @property
    def final_latents(self) -> torch.Tensor:
        return torch.cat([t.final.detach() for t in self.trajectories])

    @property
    def conditioning(self) -> Conditioning:
        """Every sample's text conditioning, in sample order."""
        return Conditioning.concat([t.context.conditioning for t in self.trajectories])


class RecipeTrainer:
    """Base class of the recipes (see the module docstring). Subclasses set ``name`` and ``config_class``."""

    name: ClassVar[str] = "recipe"
    config_class: ClassVar[type[RecipeConfig]] = RecipeConfig
    #: Whether the reward must keep the autograd graph (DRaFT).
    needs_differentiable_reward: ClassVar[bool] = False

    def __init__(
        self,
        config: RecipeConfig,
        *,
        pipe: DiffusionPipeline | None = None,
        reward: Any = None,
        accelerator: Accelerator | None = None,
    ):
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.validate()
        self.prompts = self.training_prompts()
        self.eval_prompts = list(config.eval_prompts or self.prompts[:2])
        if pipe is None:
            if not config.pretrained:
                raise ConfigError("pretrained: give the folder of a saved diffusers pipeline (or pass pipe=)")
            if not Path(config.pretrained).is_dir():
                raise ConfigError(f"pretrained: {config.pretrained} is not a folder")
            pipe = DiffusionPipeline.from_pretrained(config.pretrained)
        self.pipe = pipe
        self.family = family_of(pipe)
        self.family.check(pipe, config.sampling)
        self.reward = self._reward(reward)
        self.jsonl = JSONLTracker(self.output_dir / METRICS_FILE)
        self.accelerator = accelerator or _accelerator(
            mixed_precision=config.mixed_precision,
            log_with=[self.jsonl, *config.report_to],
            project_dir=str(self.output_dir),
        )
        pipe.set_progress_bar_config(disable=True)
        self._set_up_model()
        self.update = 0
        self.history: list[dict[str, Any]] = []
        if config.resume:
            self._resume()

    # ------------------------------------------------------------------------------------------ set-up and checks
    def validate(self) -> None:
        """Recipe-specific checks (and data loading), run before the pipeline is loaded or anything computed."""

    def training_prompts(self) -> list[str]:
        """The prompts updates draw from (the config's)."""
        return self.config.training_prompts()

    def _reward(self, reward: Any) -> Any:
        from reward_guidance.families import family_adapter
        from reward_guidance.protocol import CascadeReward, as_reward

        reward = as_reward(reward) if reward is not None else build_reward(self.config.reward)
        if isinstance(reward, CascadeReward):
            raise ConfigError(
                f"reward {reward.name}: a cascade scores only its shortlist (NaN for the other videos), so a recipe "
                "cannot train on it; pass its second-stage reward instead"
            )
        spec = self.config.sampling
        adapter = family_adapter(self.pipe)
        self.decoder = adapter.decoder
        fps = spec.fps if spec.fps is not None else adapter.default_fps(pipeline_call_kwargs(self.pipe, spec))
        self.fps = float(fps)
        try:
            reward.check_frames(spec.num_frames, self.fps, "sampling.num_frames: a generated video")
        except VideoError as err:
            raise ConfigError(f"reward {reward.name}: cannot score the generator's videos: {err}") from err
        if self.needs_differentiable_reward and not reward.differentiable:
            raise ConfigError(
                f"reward: {self.name} backpropagates through the reward, but {reward.name} is not differentiable "
                "(use DeScore think_free, or a CallableReward declared differentiable)"
            )
        return reward

    def _set_up_model(self) -> None:
        config = self.config
        device = self.accelerator.device
        dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
        self.pipe.to(device)
        self.reward.to(device)
        if dtype != torch.float32:
            _cast_frozen_weights(self.pipe, dtype)
        self.params = add_lora(self.pipe, config.lora, seed=derived_seed(config.seed, "lora"))
        cast_training_params(list(lora_modules(self.pipe).values()), dtype=torch.float32)
        for module in lora_modules(self.pipe).values():
            module.eval()  # no dropout anywhere: rollout and recompute must agree
            if config.gradient_checkpointing:
                module.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.learning_rate,
            betas=tuple(config.adam_betas),
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        self.lr_scheduler = get_scheduler(
            "constant_with_warmup", self.optimizer, num_warmup_steps=config.lr_warmup_steps
        )
        self.ema = LoraEMA(self.params, config.ema_decay) if config.ema_decay is not None else None
        self._checkpoint_model = torch.nn.ModuleDict(
            {"lora": torch.nn.ModuleDict(lora_modules(self.pipe)), **({"ema": self.ema} if self.ema else {})}
        )

    # ------------------------------------------------------------------------------------------ sampling and reward
    @property
    def process(self) -> int:
        return self.accelerator.process_index

    def choose_prompts(self, update: int, count: int) -> list[str]:
        """``count`` training prompts for this update and process (without repeats while there are enough)."""
        generator = seeded(self.config.seed, update, self.process, "prompts")
        if count <= len(self.prompts):
            order = torch.randperm(len(self.prompts), generator=generator)[:count]
        else:
            order = torch.randint(len(self.prompts), (count,), generator=generator)
        return [self.prompts[i] for i in order.tolist()]

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad(), self.accelerator.autocast():
            return self.family.encode(self.pipe, prompts, self.config.sampling, self.accelerator.device)

    def sample_groups(
        self,
        update: int,
        *,
        group_size: int | None = None,
        noise_level: float | None = None,
        form: str = "flow_grpo",
        sde_steps: Sequence[int] | None = None,
    ) -> GroupSamples:
        """Roll out ``group_size`` samples for each of ``prompts_per_update`` prompts and score them.

        Samples of one prompt are consecutive; each has its own seed from (seed, update, process, index).
        ``noise_level``/``form``/``sde_steps`` go to :func:`~recipes.rollout.rollout` (``sde_steps=[]``: the
        deterministic sampler).
        """
        config = self.config
        group = config.group_size if group_size is None else group_size
        chosen = self.choose_prompts(update, config.prompts_per_update)
        prompts = [p for p in chosen for _ in range(group)]
        group_ids = torch.arange(len(chosen)).repeat_interleave(group)
        conditioning = self.encode(chosen).repeat_interleave(group)
        seeds = [derived_seed(config.seed, update, self.process, "sample", i) for i in range(len(prompts))]
        trajectories, rewards = [], []
        for start in range(0, len(prompts), config.sample_batch_size):
            part = slice(start, min(start + config.sample_batch_size, len(prompts)))
            with torch.no_grad(), self.accelerator.autocast():
                trajectory = rollout(
                    self.pipe,
                    prompts[part],
                    config.sampling,
                    seeded_generators(seeds[part], self.accelerator.device),
                    noise_level=noise_level,
                    form=form,
                    sde_steps=sde_steps,
                    conditioning=conditioning.select(part),
                )
            trajectories.append(trajectory)
            rewards.append(self.score(trajectory.final, prompts[part]))
        return GroupSamples(trajectories, prompts, group_ids, torch.cat(rewards))

    def decode(self, latents: torch.Tensor, *, grad: bool = False, frames: Any = None) -> torch.Tensor:
        """Latents -> (B, F, C, H, W) frames in [0, 1] with the family's decoder from :mod:`reward_guidance`."""
        return self.decoder(
            latents, grad=grad, frames=frames, grid=self.family.latent_grid(self.pipe, self.config.sampling)
        )

    @torch.no_grad()
    def score(self, latents: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Rewards (B,) of final latents (decoded, then scored in the reward's micro-batches)."""
        videos = self.decode(latents)
        return self.reward(videos, prompts, fps=self.fps).detach().float().cpu()

    def reward_metrics(self, samples: GroupSamples) -> dict[str, float]:
        """Reward mean/std over all processes and the mean within-group std (how much GRPO has to compare)."""
        everything = self.accelerator.gather(samples.rewards.to(self.accelerator.device)).float()
        group_std = torch.stack(
            [
                samples.rewards[samples.group_ids == g].std(unbiased=False)
                for g in torch.unique(samples.group_ids)
            ]
        )
        return {
            "reward/mean": float(everything.mean()),
            "reward/std": float(everything.std(unbiased=False)),
            "reward/group_std": float(group_std.mean()),
        }

    # ------------------------------------------------------------------------------------------ optimisation
    def optimizer_step(self) -> dict[str, float]:
        """Average gradients over processes, clip, step, advance the schedule and the EMA; zero the gradients.

        Every process must call it, and each reduces every parameter in the same order: a parameter that got no
        gradient here (e.g. a Wan 2.2 expert no sampled noise level reached) contributes zeros, so the collective
        calls line up across processes instead of pairing different tensors or hanging.
        """
        if self.accelerator.num_processes > 1:
            for param in self.params:
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
                param.grad = self.accelerator.reduce(grad, reduction="mean")
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = (
            torch.norm(torch.stack([g.detach().float().norm() for g in grads]))
            if grads
            else torch.tensor(0.0)
        )
        if self.config.max_grad_norm > 0 and grads:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        lr = self.lr_scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.params)
        return {"train/grad_norm": float(norm), "train/lr": float(lr)}

    def run_update(self, update: int) -> dict[str, float]:
        """One update of the recipe (sampling, reward, optimizer steps); returns its metrics."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ loop and bookkeeping
    def train(
        self, callback: Callable[[RecipeTrainer, dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Run the remaining updates; returns the metric history (one dict per update).

        ``callback(trainer, metrics)`` runs after each update (before its checkpoint), e.g. for an evaluation; keys
        it adds to ``metrics`` are logged and kept in the history.
        """
        config = self.config
        self.accelerator.init_trackers(f"recipes-{self.name}", config=_flat(config_dict(config)))
        bar = tqdm(
            range(self.update, config.num_updates),
            initial=self.update,
            total=config.num_updates,
            desc=self.name,
            disable=not (config.progress and self.accelerator.is_main_process),
        )
        for update in bar:
            started = time.perf_counter()
            metrics = self.run_update(update)
            self.update = update + 1
            metrics = {"update": self.update, **metrics, "time/update_s": time.perf_counter() - started}
            if callback is not None:
                callback(self, metrics)
            self.history.append(metrics)
            self.accelerator.log(metrics, step=self.update)
            bar.set_postfix(reward=f"{metrics.get('reward/mean', float('nan')):.4g}")
            if config.sample_every and self.update % config.sample_every == 0:
                self.save_samples()
            if (
                config.checkpoint_every and self.update % config.checkpoint_every == 0
            ) or self.update == config.num_updates:
                self.save_checkpoint()
        self.save_final_lora()
        self.accelerator.end_training()
        return self.history

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The EMA weights inside the block when EMA is on (sampling, the final LoRA), else the trained ones."""
        if self.ema is None:
            yield
        else:
            with self.ema.swapped_in(self.params):
                yield

    def save_samples(self) -> list[Path]:
        """Sample videos of the eval prompts with the pipeline itself (fixed seeds) into ``samples/update-N``."""
        if not self.accelerator.is_main_process:
            return []
        folder = self.output_dir / "samples" / f"update-{self.update:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        call = pipeline_call_kwargs(self.pipe, self.config.sampling)
        generators = seeded_generators(
            [derived_seed(self.config.seed, "eval", i) for i in range(len(self.eval_prompts))],
            self.accelerator.device,
        )
        with self.averaged_weights(), self.accelerator.autocast():
            videos = self.pipe(self.eval_prompts, **call, generator=generators, output_type="pt").frames
        paths = [
            write_video(video.float().cpu(), folder / f"{i:02d}.mp4", fps=self.fps)
            for i, video in enumerate(videos)
        ]
        (folder / "prompts.json").write_text(json.dumps(self.eval_prompts, indent=2))
        return paths

    def save_checkpoint(self) -> Path | None:
        """An atomic training checkpoint of the current update (main process)."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        return save_checkpoint(
            self.output_dir,
            self.update,
            model=self._checkpoint_model,
            optimizer=self.optimizer,
            scheduler=self.lr_scheduler,
            state={"update": self.update, "history": self.history, "recipe": self.name},
            keep_last=self.config.keep_checkpoints,
        )

    def _resume(self) -> None:
        path = latest_checkpoint(self.output_dir)
        if path is None:
            return
        state = load_checkpoint(
            path, model=self._checkpoint_model, optimizer=self.optimizer, scheduler=self.lr_scheduler
        )
        if state.get("recipe") != self.name:
            raise ConfigError(
                f"{path}: a {state.get('recipe')!r} checkpoint cannot resume a {self.name!r} run"
            )
        self.update = int(state["update"])
        self.history = list(state["history"])
        if self.accelerator.is_main_process:
            self.jsonl.rewrite(self.history)
        logger.info("resumed %s at update %d from %s", self.name, self.update, path)

    def save_final_lora(self) -> Path:
        """The trained (EMA when on) adapter in ``output_dir/lora``, loadable with ``pipe.load_lora_weights``."""
        directory = self.output_dir / LORA_DIR
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with self.averaged_weights():
                save_lora(self.pipe, directory)
        return directory

    # ------------------------------------------------------------------------------------------ CLI
    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """``python -m recipes.<name> --config FILE [--example NAME] [--set key=value ...]``."""
        parser = argparse.ArgumentParser(
            prog=f"python -m recipes.{cls.name}",
            description=f"{cls.name}: {(cls.__doc__ or '').strip().splitlines()[0]}",
            epilog="config fields:\n" + config_help(cls.config_class),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--config", required=True, help="YAML config file")
        parser.add_argument("--example", help="name of one config in a file of several")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a field (dotted for sections, e.g. lora.rank=8)",
        )
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            config = load_config(
                cls.config_class, args.config, example=args.example, overrides=parse_overrides(args.set)
            )
            trainer = cls(config)
            history = trainer.train()
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if history:
            last = {k: v for k, v in history[-1].items() if isinstance(v, (int, float)) and math.isfinite(v)}
            logger.info("done: %s", json.dumps(last, sort_keys=True))
        return 0


def cast_as_loaded(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Floating weights in ``dtype``, except the modules a diffusers model lists in ``_keep_in_fp32_modules`` (norms,
    embeddings), which stay in (at least) fp32, as ``from_pretrained(torch_dtype=dtype)`` leaves them."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        if not keep.intersection(name.split(".")):
            tensor.data = tensor.data.to(dtype)
        elif tensor.dtype in (torch.float16, torch.bfloat16):
            tensor.data = tensor.data.float()
    return module


def _cast_frozen_weights(pipe: DiffusionPipeline, dtype: torch.dtype) -> None:
    """Cast the pipeline's floating-point weights to ``dtype`` for mixed precision (see :func:`cast_as_loaded`)."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            cast_as_loaded(module, dtype)


def _accelerator(**kwargs: Any) -> Accelerator:
    """An Accelerator for this run. accelerate keeps one process-wide state; in a single process (a notebook, a test
    session) an earlier run with another mixed precision is forgotten instead of refusing this one."""
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(**kwargs)
    except ValueError as err:
        if PartialState().num_processes > 1:
            raise ConfigError(f"mixed_precision={kwargs.get('mixed_precision')!r}: {err}") from None
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config values flattened to ``a.b`` keys of str/int/float/bool/None (what trackers accept)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out
