"""The x0 look-ahead: the clean sample the NEXT denoising step would predict from the current latents.

A diffusers ``callback_on_step_end`` runs after the scheduler step: the latents it sees are x_{t_{i+1}}, already
stepped from x_{t_i}, and the model prediction of step i (made at t_i, on the old latents) is gone. The look-ahead
therefore evaluates the denoiser at the next step's timestep t_{i+1}, on the current latents, exactly as step i + 1
will: the pipeline's own transformer calls of step i are recorded (a forward pre-hook keeps their keyword arguments:
text embeddings, attention masks, rotary embeddings, LTX's grid and rope scale, HunyuanVideo's guidance embedding,
attention kwargs) and replayed with the new latents and the new timestep, through the expert that step i + 1 will use
(Wan 2.2), with the pipeline's classifier-free guidance. x0_hat then follows the scheduler's parametrisation at
t_{i+1} (:meth:`~reward_guidance.families.FamilyAdapter.x0`). After the last step the latents are the final sample,
x0_hat is the latents themselves and no transformer call is made.

The hook must be in place before the pipeline's first step: create the :class:`Lookahead` (or the guidance callback
that owns one) before calling the pipeline, and :meth:`Lookahead.close` it when done.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from descore.errors import ConfigError
from reward_guidance.families import FamilyAdapter, TransformerCall

_MAX_RECORDED_CALLS = (
    8  # two CFG branches per step at most; the bound keeps a forgotten hook from holding memory
)


class TransformerRecorder:
    """Keeps the keyword arguments of the latest calls to the given modules (the pipelines call them by keyword)."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.calls: deque[TransformerCall] = deque(maxlen=_MAX_RECORDED_CALLS)
        self._paused = False
        self._stale = False
        self.saw_positional = False
        self._handles = [m.register_forward_pre_hook(self._record, with_kwargs=True) for m in modules]

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self._paused:
            return
        if self._stale:  # the first call of a new step (or run) drops the calls of the step already handled
            self.calls.clear()
            self._stale = False
        if args:
            self.saw_positional = True
        else:
            self.calls.append((module, dict(kwargs)))

    def calls_at(self, timestep: torch.Tensor) -> list[TransformerCall]:
        """The recorded calls made at ``timestep`` (the step the callback reports), in call order."""
        wanted = float(timestep)
        found = []
        for module, kwargs in self.calls:
            recorded = kwargs.get("timestep")
            if isinstance(recorded, torch.Tensor) and abs(float(recorded.max()) - wanted) <= 1e-3 * max(
                1.0, abs(wanted)
            ):
                found.append((module, kwargs))
        return found

    def step_done(self) -> None:
        """The current step's calls stay readable until the transformer is called again (next step or run)."""
        self._stale = True

    def clear(self) -> None:
        self.calls.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made inside the block (the look-ahead's own) are not recorded."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()


class Lookahead:
    """Records a pipeline's transformer calls and predicts x0_hat for the latents after any step."""

    def __init__(self, adapter: FamilyAdapter):
        self.adapter = adapter
        self.recorder = TransformerRecorder(adapter.experts())

    def calls(self, step_index: int, timestep: torch.Tensor) -> list[TransformerCall]:
        """The pipeline's transformer calls of step ``step_index`` (made at ``timestep``)."""
        calls = self.recorder.calls_at(timestep)
        if calls:
            return calls
        if self.recorder.saw_positional:
            raise ConfigError(
                f"{type(self.adapter.pipe).__name__} called its transformer with positional arguments; the look-ahead "
                "can only replay keyword calls"
            )
        raise ConfigError(
            f"no transformer call was recorded for step {step_index}: create the guidance callback before calling "
            "the pipeline (it hooks the transformer) and do not close it during the call"
        )

    def prediction(
        self,
        latents: torch.Tensor,
        step_index: int,
        timestep: torch.Tensor,
        *,
        cfg: bool = True,
        cfg_scale: float | None = None,
    ) -> torch.Tensor | None:
        """The prediction step ``step_index + 1`` will step on, for ``latents`` (None after the last step).

        ``cfg``: replay both classifier-free guidance branches (as the sampler does) or only the conditional one
        (half the cost); ``cfg_scale``: override the pipeline's scale (needed for HunyuanVideo's true CFG).
        """
        adapter = self.adapter
        calls = self.calls(step_index, timestep)
        following = step_index + 1
        if adapter.is_clean(following):
            return None
        next_timestep = adapter.timestep(following)
        if not cfg:
            calls = adapter.conditional_calls(calls, latents.shape[0])
        module = adapter.expert_at(float(next_timestep))
        outputs = []
        with self.recorder.paused():
            for _, kwargs in calls:
                replay = dict(kwargs)
                replay["hidden_states"] = adapter.model_input(latents, kwargs["hidden_states"], next_timestep)
                replay["timestep"] = _moved_timestep(kwargs["timestep"], timestep, next_timestep)
                context = (
                    module.cache_context("reward_guidance")
                    if hasattr(module, "cache_context")
                    else contextlib.nullcontext()
                )
                with context:
                    out = module(**replay)
                outputs.append((out[0] if isinstance(out, tuple) else out.sample).float())
        scale = cfg_scale if cfg_scale is not None else adapter.cfg_scale(float(next_timestep))
        return adapter.combine(outputs, latents.shape[0], scale)

    def x0(
        self,
        latents: torch.Tensor,
        step_index: int,
        timestep: torch.Tensor,
        *,
        cfg: bool = True,
        cfg_scale: float | None = None,
    ) -> torch.Tensor:
        """x0_hat of ``latents`` (the latents after step ``step_index``), differentiable when grad is enabled."""
        prediction = self.prediction(latents, step_index, timestep, cfg=cfg, cfg_scale=cfg_scale)
        if prediction is None:
            return latents.float()
        return self.adapter.x0(latents, prediction, step_index + 1)

    def grid(self, step_index: int, timestep: torch.Tensor) -> tuple[int, int, int] | None:
        """Latent grid of packed latents (LTX), read from the step's recorded call."""
        return self.adapter.grid(self.calls(step_index, timestep))

    def close(self) -> None:
        """Remove the hooks (the adapter's pipeline is left as it was before)."""
        self.recorder.remove()


def _moved_timestep(recorded: torch.Tensor, current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """The recorded timestep tensor with the current step's value replaced by the next step's.

    Entries that differ (a per-token timestep of 0 for conditioning frames) stay as they are.
    """
    at_current = torch.isclose(recorded.float(), torch.as_tensor(float(current), device=recorded.device))
    return torch.where(at_current, following.to(recorded.device), recorded).to(recorded.dtype)
