"""Rollouts: sample videos with a pipeline's own components, recording every step's latents and log-probability.

:func:`rollout` runs the pipeline family's sampling loop (:mod:`recipes.families`) with the stochastic steps of
:mod:`recipes.sde` in place of the scheduler's deterministic ones: each step is a Gaussian policy, and the trajectory
keeps ``x_t``, ``x_{t+1}`` and ``log p(x_{t+1} | x_t)`` for every step. :func:`recompute_log_probs` re-runs one step
on the stored ``x_t`` with the current network (gradients on) and scores the stored ``x_{t+1}``: with unchanged
weights and the same batch the result is bit-identical, so the GRPO importance ratio starts at exactly 1.

Steps outside ``sde_steps`` (Flow-GRPO's "fast" mode, MixGRPO's window) are deterministic (Euler on a flow, DDIM
with eta 0) and carry no log-probability. Noise comes from one generator per sample, so a sample's trajectory does
not depend on the batch it was drawn in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from diffusers import DiffusionPipeline
from tqdm.auto import tqdm

from descore.errors import ConfigError
from recipes.families import (
    Conditioning,
    DenoiserFamily,
    SampleContext,
    SamplingSpec,
    Schedule,
    family_of,
    predict,
)
from recipes.sde import FLOW_FORMS, SDEStep, ddim_step, flow_sde_step

logger = logging.getLogger(__name__)

#: Default noise level per schedule kind: Flow-GRPO's a = 0.7 for flows, DDPO's eta = 1 for DDIM.
DEFAULT_NOISE_LEVEL = {"flow": 0.7, "ddim": 1.0}


def policy_step(
    schedule: Schedule,
    step: int,
    latents: torch.Tensor,
    model_output: torch.Tensor,
    noise_level: float,
    form: str = "flow_grpo",
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> SDEStep:
    """Step ``step`` of ``schedule`` as a Gaussian policy (``noise_level`` 0: the deterministic sampler)."""
    if schedule.kind == "flow":
        return flow_sde_step(
            latents,
            model_output,
            schedule.sigmas[step],
            schedule.sigmas[step + 1],
            noise_level,
            form,
            prev_sample=prev_sample,
            generator=generator,
        )
    return ddim_step(
        latents,
        model_output,
        schedule.alphas[step],
        schedule.alphas_prev[step],
        noise_level,
        schedule.prediction_type,
        prev_sample=prev_sample,
        generator=generator,
    )


@dataclass
class Trajectory:
    """The record of one rollout batch.

    ``latents`` (B, T + 1, ...) holds x at every step boundary (``latents[:, 0]`` the initial noise,
    ``latents[:, -1]`` the final sample) in fp32; ``log_probs`` (B, T) the log-probability of each step's sample
    under the rollout policy (NaN on deterministic steps); ``stochastic`` (T,) which steps carry a density.
    ``final`` is the final latent, with its autograd graph when the last steps ran with gradients (DRaFT).
    """

    prompts: list[str]
    latents: torch.Tensor
    log_probs: torch.Tensor
    stochastic: torch.Tensor
    context: SampleContext
    noise_level: float
    form: str
    final: torch.Tensor

    @property
    def schedule(self) -> Schedule:
        return self.context.schedule

    def __len__(self) -> int:
        return self.latents.shape[0]

    def select(self, index: torch.Tensor | slice) -> Trajectory:
        """The samples at ``index`` (their log-probabilities were computed in the full batch)."""
        if isinstance(index, torch.Tensor):
            prompts = [self.prompts[i] for i in index.tolist()]
        else:
            prompts = self.prompts[index]
        context = replace(self.context, conditioning=self.context.conditioning.select(index))
        return Trajectory(
            prompts,
            self.latents[index],
            self.log_probs[index],
            self.stochastic,
            context,
            self.noise_level,
            self.form,
            self.final[index],
        )

    def training_steps(self) -> list[int]:
        """The steps with a density, the only ones a policy-gradient loss can use."""
        return [i for i, s in enumerate(self.stochastic.tolist()) if s]


def prepare_context(
    pipe: DiffusionPipeline,
    prompts: Sequence[str],
    spec: SamplingSpec,
    conditioning: Conditioning | None = None,
) -> tuple[DenoiserFamily, SampleContext]:
    """Check the spec, encode ``prompts`` (unless ``conditioning`` is given), set the scheduler and compute the
    static transformer inputs for one sampling run."""
    family = family_of(pipe)
    family.check(pipe, spec)
    device = pipe._execution_device  # walks every module: once per run
    if conditioning is None:
        with torch.no_grad():
            conditioning = family.encode(pipe, list(prompts), spec, device)
    schedule = family.schedule(pipe, spec, device)
    return family, SampleContext(
        spec, schedule, conditioning, family.static_inputs(pipe, spec, device), device
    )


def _check_form(form: str) -> None:
    if form not in FLOW_FORMS:
        raise ConfigError(f"sde_form: unknown {form!r}; expected one of {list(FLOW_FORMS)}")


def rollout(
    pipe: DiffusionPipeline,
    prompts: Sequence[str],
    spec: SamplingSpec,
    generators: list[torch.Generator],
    *,
    noise_level: float | None = None,
    form: str = "flow_grpo",
    sde_steps: Iterable[int] | None = None,
    grad_steps: Iterable[int] = (),
    conditioning: Conditioning | None = None,
    progress: bool = False,
) -> Trajectory:
    """Sample one video latent per prompt with the SDE policy, recording every step.

    ``generators``: one per prompt (initial noise and step noise). ``noise_level``: the SDE's a (flow) or eta
    (DDIM); None takes :data:`DEFAULT_NOISE_LEVEL`. ``sde_steps``: the stochastic steps (None: all).
    ``grad_steps``: steps that run with gradients (DRaFT-K's last K steps). ``conditioning`` reuses prompt
    embeddings encoded before (it must be for ``prompts``).
    """
    if len(generators) != len(prompts):
        raise ConfigError(f"rollout: {len(prompts)} prompts need as many generators, got {len(generators)}")
    _check_form(form)
    family, context = prepare_context(pipe, prompts, spec, conditioning)
    schedule = context.schedule
    level = DEFAULT_NOISE_LEVEL[schedule.kind] if noise_level is None else float(noise_level)
    steps = len(schedule)
    stochastic_steps = set(range(steps) if sde_steps is None else sde_steps)
    outside = sorted(s for s in stochastic_steps if not 0 <= s < steps)
    if outside:
        raise ConfigError(f"sde_steps: {outside} outside the {steps} sampling steps")
    grad = set(grad_steps)
    with torch.no_grad():
        # contiguous, as the stored copy that recompute_log_probs reads (strides can change matmul rounding)
        latents = family.initial_latents(pipe, spec, generators, context.device).float().contiguous()
    states = [latents.detach()]
    log_probs, flags = [], []
    for i in tqdm(range(steps), desc="rollout", disable=not progress, leave=False):
        with torch.set_grad_enabled(i in grad):
            output = predict(family, pipe, latents, i, context)
            step = policy_step(
                schedule,
                i,
                latents,
                output,
                level if i in stochastic_steps else 0.0,
                form,
                generator=generators,
            )
        latents = step.prev_sample
        states.append(latents.detach())
        log_probs.append(step.log_prob.detach())
        flags.append(step.stochastic)
    return Trajectory(
        list(prompts),
        torch.stack(states, dim=1),
        torch.stack(log_probs, dim=1),
        torch.tensor(flags, dtype=torch.bool),
        context,
        level,
        form,
        latents,
    )


def recompute_log_probs(pipe: DiffusionPipeline, trajectory: Trajectory, step: int) -> SDEStep:
    """Re-run step ``step`` on the stored ``x_t`` with the current network and score the stored ``x_{t+1}``.

    Runs with gradients (the policy-gradient loss backpropagates through ``log_prob`` and ``mean``). Batch the
    trajectory as it was rolled out for bit-identical results while the weights are unchanged.
    """
    if not bool(trajectory.stochastic[step]):
        raise ConfigError(f"step {step} of this trajectory is deterministic and has no log-probability")
    family = family_of(pipe)
    latents = trajectory.latents[:, step].contiguous()
    output = predict(family, pipe, latents, step, trajectory.context)
    return policy_step(
        trajectory.schedule,
        step,
        latents,
        output,
        trajectory.noise_level,
        trajectory.form,
        prev_sample=trajectory.latents[:, step + 1].contiguous(),
    )


def seeded_generators(seeds: Iterable[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per seed, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
