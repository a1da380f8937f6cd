"""GPU check of the pipeline and recipe issues on the Wan2.1-T2V-1.3B architecture: time and peak memory.

Builds the real diffusers / transformers classes with random weights directly on the device, in bf16 (the modules
diffusers keeps in fp32 when loading a bf16 checkpoint stay in fp32, as ``from_pretrained(torch_dtype=bf16)`` leaves
them): ``WanTransformer3DModel`` (Wan2.1-T2V-1.3B: 30 blocks of width 1536), ``AutoencoderKLWan`` (defaults: z_dim 16,
base_dim 96), the UMT5-XXL encoder (``UMT5EncoderModel``, 24 layers of width 4096, vocabulary 256384), UniPC on
flow-matching sigmas with flow_shift 3.0 (as the Wan2.1 checkpoints). Nothing can be downloaded, so the prompts are
tokenised by the repository's offline toy T5 tokenizer (its ids fit the large vocabulary). Videos: 33 frames at
240x416, CFG scale 5, ``--steps`` denoising steps (default 10, fewer than the checkpoints' 50).

Rewards: the shipped toy DeScore (``toyworld/checkpoints/toy_descore``) and a DeScore on the Qwen3-VL-8B-Instruct
architecture (random weights, bf16; text 36 layers of width 4096, vision 27 layers of width 1152) with the toy Qwen
tokenizer, sampling the 16 fps clips at 8 fps (16 frames at their native 256x416 after rounding: ~830 video tokens).
The 8B scores think-free only: with random weights its chain of thought would run to ``max_new_tokens``.

Sections (``--sections``; each runs on its own, a failure is printed and the next one runs):

- ``bon``: the plain pipeline (one video; the first call also warms up), then ``DeScorePipeline`` best-of-4 with the 4
  candidates generated in one batch, ranked by the toy DeScore think-free, cascade (think-free for all, thinking for
  the top 2), thinking for all, and by the 8B think-free; plus the scoring time alone of each reward on one set of
  candidates.
- ``guidance``: one guided step (a middle step) of ``RewardGuidanceCallback`` with each think-free reward: all frames,
  the first 9 frames, gradient checkpointing, both; seconds of the guided step (the callback's own timing) and the peak
  memory of the whole guided generation, next to an unguided one.
- ``grpo``: first the rollout with log-probabilities (``recipes.rollout``) against the plain pipeline's sampling of
  the same 4 videos (``output_type="latent"``), median of 3 interleaved runs after a warm-up; then two Flow-GRPO
  updates (``recipes.grpo``; the first warms up): one prompt, group of 4, LoRA rank 32 (alpha 64), gradient
  checkpointing, bf16 mixed precision, the toy DeScore think-free as reward; rollout and training seconds from the
  trainer's metrics and the peak memory of each update.

Peak memory: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (None on a CPU), with the allocation
at the start (the resident weights) next to it; the 8B is built only for its own cases, after the toy-reward ones of
each section, and freed before the next section, so the toy-reward figures never include it. Every record is
appended to ``OUT/results.jsonl`` as soon as it is measured. ``--size tiny --device cpu`` runs the same code on the
repository's tiny factory models (a smoke test); ``--device meta`` only builds the models and counts parameters.

Run: ``python bench/gpu_wan.py --size wan1.3b --device cuda --out DIR [--steps 10] [--sections bon guidance grpo]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PROMPT = "a red ball rolls to the left across a gray floor"
REPO = Path(__file__).resolve().parents[1]
TOY_DESCORE = REPO / "toyworld" / "checkpoints" / "toy_descore"
SECTIONS = ("bon", "guidance", "grpo")
CANDIDATES = 4
ROLLOUT_REPEATS = 3
GUIDANCE_WEIGHT = 0.02

# The architectures of Wan2.1-T2V-1.3B (transformer), its UMT5-XXL text encoder and Qwen3-VL-8B-Instruct.
WAN_1_3B_TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
}
QWEN3_VL_8B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
}
QWEN3_VL_8B_VISION = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_heads": 16,
    "out_hidden_size": 4096,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24],
    "hidden_act": "gelu_pytorch_tanh",
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "in_channels": 3,
}


@dataclass(frozen=True)
class Size:
    """What differs between the real-size check and its tiny smoke version."""

    call: dict[str, Any]
    """Pipeline call arguments (size, guidance, text length) besides the steps."""
    steps: int
    subset: int
    """Frames decoded and scored by the frame-subset guidance setting."""
    judge_sampling: dict[str, Any]
    """DeScore sampling of the large (or tiny) Qwen3-VL reward."""
    judge_name: str


SIZES = {
    "wan1.3b": Size(
        call={
            "height": 240,
            "width": 416,
            "num_frames": 33,
            "guidance_scale": 5.0,
            "max_sequence_length": 512,
        },
        steps=10,
        subset=9,
        judge_sampling={
            "fps": 8.0,
            "min_frames": 4,
            "max_frames": 16,
            "min_pixels": 128 * 128,
            "max_pixels": 448 * 448,
        },
        judge_name="Qwen3-VL-8B arch (random) think-free",
    ),
    "tiny": Size(
        call={"height": 32, "width": 32, "num_frames": 9, "guidance_scale": 5.0, "max_sequence_length": 32},
        steps=3,
        subset=5,
        judge_sampling={
            "fps": 8.0,
            "min_frames": 2,
            "max_frames": 16,
            "min_pixels": 32 * 32,
            "max_pixels": 64 * 64,
        },
        judge_name="tiny Qwen3-VL (random) think-free",
    ),
}


# ---------------------------------------------------------------------------------------------------- bookkeeping
class Recorder:
    """Appends one JSON record per measurement to ``results.jsonl`` and prints a one-line summary (with the seconds
    since the start, to see where a time limit would cut)."""

    def __init__(self, folder: Path, base: dict[str, Any]):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "results.jsonl"
        self.base = base
        self.started = time.perf_counter()

    def __call__(self, section: str, case: str, summary: str = "", **fields: Any) -> None:
        elapsed = time.perf_counter() - self.started
        record = {"section": section, "case": case, **self.base, "elapsed_s": elapsed, **fields}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=_jsonable) + "\n")
        print(f"[{elapsed:6.1f}s] [{section}] {case}: {summary}", flush=True)

    def failure(self, section: str, case: str) -> None:
        """Record the exception being handled (its last line in the summary; the traceback on stderr)."""
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        self(section, case, "FAILED: " + text.strip().splitlines()[-1][:300], error=text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().tolist()
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    return repr(value)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def measured(device: torch.device) -> Iterator[dict[str, Any]]:
    """Wall seconds and (CUDA) peak allocated memory of the block: ``seconds``, ``peak_gib``, ``start_gib``."""
    free_memory(device)
    stats: dict[str, Any] = {"peak_gib": None, "start_gib": None, "peak_reserved_gib": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        stats["start_gib"] = torch.cuda.memory_allocated(device) / 2**30
    started = time.perf_counter()
    yield stats
    synchronize(device)
    stats["seconds"] = time.perf_counter() - started
    if device.type == "cuda":
        stats["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        stats["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30


def describe(stats: dict[str, Any]) -> str:
    peak = (
        "n/a"
        if stats["peak_gib"] is None
        else f"{stats['peak_gib']:.2f} GiB (start {stats['start_gib']:.2f})"
    )
    return f"{stats['seconds']:.2f} s, peak {peak}"


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count(number: int) -> str:
    return f"{number / 1e9:.3f} B" if number >= 1e8 else f"{number / 1e6:.2f} M"


# ---------------------------------------------------------------------------------------------------- models
@contextlib.contextmanager
def built_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed in the block get their weights on ``device`` in ``dtype`` (no CPU copy, no cast)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def build_pipeline(size: str, device: torch.device, dtype: torch.dtype):
    """The Wan2.1 pipeline: the repository's tiny factory one, or the 1.3B architecture built on ``device``."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from recipes.base import cast_as_loaded
    from toyworld.tiny_models import build_t5_tokenizer, build_video_pipeline

    if size == "tiny":
        pipe = build_video_pipeline("wan2.1", seed=0)
        if device.type != "meta":
            pipe.to(device)
        for name in ("transformer", "vae"):
            cast_as_loaded(getattr(pipe, name), dtype)
        pipe.text_encoder.to(dtype)
        return pipe
    tokenizer = build_t5_tokenizer(model_max_length=512)
    torch.manual_seed(0)
    with built_on(device, dtype):
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                **UMT5_XXL,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
            )
        ).eval()
        transformer = WanTransformer3DModel(**WAN_1_3B_TRANSFORMER).eval()
        vae = AutoencoderKLWan().eval()
    cast_as_loaded(transformer, dtype)
    cast_as_loaded(vae, dtype)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def judge_config(size: str):
    """Qwen3-VL config: the tiny factory one, or the 8B architecture with the toy tokenizer's special-token ids."""
    from transformers import Qwen3VLConfig

    from toyworld.tiny_models import qwen_vl_config

    tiny = qwen_vl_config("qwen3_vl", "tiny")
    if size == "tiny":
        return tiny
    return Qwen3VLConfig(
        text_config={**QWEN3_VL_8B_TEXT, "pad_token_id": tiny.text_config.pad_token_id},
        vision_config=QWEN3_VL_8B_VISION,
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=False,
    )


def build_judge(size: str, device: torch.device, dtype: torch.dtype):
    """A DeScore on a random Qwen3-VL backbone built on ``device`` in ``dtype`` (8B architecture or tiny)."""
    from transformers import Qwen3VLForConditionalGeneration

    from descore.scoring import DeScore
    from toyworld.tiny_models import build_qwen_vl_processor

    torch.manual_seed(1)
    with built_on(device, dtype):
        backbone = Qwen3VLForConditionalGeneration(judge_config(size)).eval()
        scorer = DeScore.from_backbone(
            backbone, build_qwen_vl_processor("qwen3_vl", "tiny"), sampling=dict(SIZES[size].judge_sampling)
        )
    scorer.model.to(device).eval()
    return scorer


def load_toy_descore(device: torch.device):
    from descore.scoring import DeScore

    scorer = DeScore.from_pretrained(TOY_DESCORE)
    scorer.model.to(device).eval()
    return scorer


def judge_tokens(scorer, size: str) -> dict[str, Any]:
    """Input length of one scored video (prompt + video tokens) and its video grid, for the record."""
    from descore.inputs import encode_inputs

    call = SIZES[size].call
    frames = torch.rand(call["num_frames"], 3, call["height"], call["width"])
    video = scorer.load_video(frames, 16.0, scorer.config.sampling)
    encoded = encode_inputs(
        scorer.processor, scorer.config, [PROMPT], [video], sampling=scorer.config.sampling
    )
    return {
        "input_tokens": int(encoded["input_ids"].shape[1]),
        "video_grid_thw": encoded["video_grid_thw"].tolist(),
        "sampled_frames": int(video.num_frames),
    }


# ---------------------------------------------------------------------------------------------------- sections
@dataclass
class Bench:
    size: str
    device: torch.device
    dtype: torch.dtype
    steps: int
    pipe: Any
    toy: Any
    record: Recorder
    judge_factory: Callable[[], Any] | None
    _judge: Any = None

    @property
    def call(self) -> dict[str, Any]:
        return {**SIZES[self.size].call, "num_inference_steps": self.steps}

    def judge(self):
        """The large-VLM DeScore, built (and timed) on first use."""
        if self._judge is None and self.judge_factory is not None:
            with measured(self.device) as stats:
                self._judge = self.judge_factory()
            scorer = self._judge
            self.record(
                "build",
                "judge",
                f"{SIZES[self.size].judge_name}: {count(parameters(scorer.model))} parameters, {describe(stats)}",
                parameters=parameters(scorer.model),
                dtype=str(next(scorer.model.backbone.parameters()).dtype),
                sampling=SIZES[self.size].judge_sampling,
                **judge_tokens(scorer, self.size),
                **stats,
            )
        return self._judge

    def drop_judge(self) -> None:
        self._judge = None
        free_memory(self.device)


def section_bon(bench: Bench) -> None:
    from pipelines import DeScorePipeline
    from reward_guidance.protocol import descore_reward

    pipe, call, record, device = bench.pipe, bench.call, bench.record, bench.device
    bench.drop_judge()  # the toy-reward cases come first, without the large model's weights in memory
    for run in ("first (warm-up)", "second"):
        with measured(device) as stats:
            frames = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="pt", **call).frames
        record(
            "bon",
            f"plain pipeline, 1 video, {run}",
            f"{describe(stats)}; frames {tuple(frames.shape)} {frames.dtype}",
            frames_shape=list(frames.shape),
            frames_finite=bool(torch.isfinite(frames).all()),
            **stats,
        )
    del frames

    descore_pipe = DeScorePipeline.from_pipe(pipe, reward_model=bench.toy)
    descore_pipe.set_progress_bar_config(disable=True)
    descore_pipe.to(device)
    common = {
        "num_candidates": CANDIDATES,
        "seeds": 0,
        "candidate_batch_size": CANDIDATES,
        "output_type": "pt",
    }
    kept: dict[str, Any] = {}

    def best_of(name: str, options: dict[str, Any]) -> None:
        case = f"best-of-{CANDIDATES} batched, {name}"
        try:
            with measured(device) as stats:
                out = descore_pipe(PROMPT, **common, **options, **call)
            cots = [c for c in out.cots[0] if c is not None]
            record(
                "bon",
                case,
                f"{describe(stats)}; rewards {[round(float(r), 4) for r in out.rewards[0]]}, winner {out.winners[0]}",
                rewards=out.rewards[0],
                winner=out.winners[0],
                cot_chars=[len(c) for c in cots],
                **stats,
            )
            if out.candidates is not None:
                kept.update(candidates=out.candidates[0].to(device), fps=out.fps)
        except Exception:  # noqa: BLE001 - a failed case is reported and the next one runs
            record.failure("bon", case)

    def scoring_only(name: str, reward: Any) -> None:
        case = f"scoring only, {CANDIDATES} candidates, {name}"
        if "candidates" not in kept:
            return
        try:
            with measured(device) as stats, torch.inference_mode():
                reward.evaluate(kept["candidates"], PROMPT, fps=kept["fps"])
            record("bon", case, describe(stats), **stats)
        except Exception:  # noqa: BLE001
            record.failure("bon", case)

    with torch.inference_mode():  # the toy judge's first call (kernel selection, caches) is not timed
        bench.toy.score([torch.rand(9, 3, 64, 64)], PROMPT, think=True, video_fps=16.0, progress=False)
    best_of("toy DeScore think-free", {"think": False, "keep_candidates": True})
    best_of("toy DeScore cascade (top 2 think)", {"cascade_top_k": 2})
    best_of("toy DeScore think", {"think": True})
    scoring_only("toy DeScore think-free", descore_reward(bench.toy, "think_free"))
    scoring_only("toy DeScore cascade (top 2 think)", descore_reward(bench.toy, "cascade", top_k=2))
    scoring_only("toy DeScore think", descore_reward(bench.toy, "think"))
    if bench.judge_factory is None:
        return
    name = SIZES[bench.size].judge_name
    try:
        judge = bench.judge()
    except Exception:  # noqa: BLE001
        record.failure("bon", f"build {name}")
        return
    best_of(name, {"think": False, "reward": judge})
    scoring_only(name, descore_reward(judge, "think_free", batch_size=CANDIDATES))


def synchronized(
    callback: Callable[..., dict[str, Any]], device: torch.device
) -> Callable[..., dict[str, Any]]:
    """The step-end callback after the device has finished the step, so that the callback's own timing of a guided
    step does not include the queued work of the sampling step before it."""

    def step_end(pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]) -> dict[str, Any]:
        synchronize(device)
        return callback(pipe, step, timestep, tensors)

    return step_end


def section_guidance(bench: Bench) -> None:
    from reward_guidance.guidance import RewardGuidanceCallback
    from reward_guidance.protocol import DeScoreReward

    pipe, call, record, device = bench.pipe, bench.call, bench.record, bench.device
    bench.drop_judge()  # the toy-reward settings come first, without the large model's weights in memory
    middle = bench.steps // 2
    window = (middle, middle + 1)
    subset = SIZES[bench.size].subset
    settings = {
        "all frames": {},
        f"first {subset} frames": {"frames": subset},
        "checkpointing": {"checkpointing": True},
        f"first {subset} frames + checkpointing": {"frames": subset, "checkpointing": True},
    }
    with measured(device) as stats:
        pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **call)
    record("guidance", "unguided generation (latents)", describe(stats), **stats)

    rewards: list[tuple[str, Callable[[], Any]]] = [
        ("toy DeScore think-free", lambda: DeScoreReward(bench.toy, "think_free", batch_size=1))
    ]
    if bench.judge_factory is not None:
        rewards.append(
            (SIZES[bench.size].judge_name, lambda: DeScoreReward(bench.judge(), "think_free", batch_size=1))
        )
    # The first guided run pays one-time costs (backward kernels, autotuning): run it twice, the first as a warm-up.
    runs = [(rewards[0][0], rewards[0][1], "all frames (warm-up)", {})]
    runs += [
        (name, make, setting, options) for name, make in rewards for setting, options in settings.items()
    ]
    for reward_name, make_reward, setting, options in runs:
        case = f"{reward_name}, {setting}, guided step {middle} of {bench.steps}"
        try:
            reward = make_reward()
            with (
                measured(device) as stats,
                RewardGuidanceCallback(
                    reward,
                    pipe,
                    prompt=PROMPT,
                    weight=GUIDANCE_WEIGHT,
                    normalize=True,
                    window=window,
                    **options,
                ) as guidance,
            ):
                pipe(
                    PROMPT,
                    generator=torch.Generator().manual_seed(0),
                    callback_on_step_end=synchronized(guidance, device),
                    callback_on_step_end_tensor_inputs=guidance.tensor_inputs,
                    output_type="latent",
                    **call,
                )
            steps = guidance.history
            record(
                "guidance",
                case,
                f"guided step {steps[0].seconds:.2f} s; whole generation {describe(stats)}",
                guided_step_seconds=[s.seconds for s in steps],
                lookahead_rewards=[s.rewards for s in steps],
                grad_norms=[s.grad_norms for s in steps],
                generation=stats,
                **{k: v for k, v in stats.items() if k != "seconds"},
            )
        except Exception:  # noqa: BLE001
            record.failure("guidance", case)


def section_grpo(bench: Bench) -> None:
    from recipes.families import SamplingSpec, pipeline_call_kwargs
    from recipes.grpo import GRPOConfig, GRPOTrainer
    from recipes.lora import LoraSpec, lora_parameters
    from recipes.rollout import rollout, seeded_generators
    from reward_guidance.protocol import descore_reward

    bench.drop_judge()  # the reward is the toy DeScore: give its memory back
    call = bench.call
    spec = SamplingSpec(
        height=call["height"],
        width=call["width"],
        num_frames=call["num_frames"],
        num_inference_steps=bench.steps,
        guidance_scale=call["guidance_scale"],
        max_sequence_length=call["max_sequence_length"],
    )
    prompts = [PROMPT] * CANDIDATES
    plain_call = pipeline_call_kwargs(bench.pipe, spec)

    def plain() -> None:
        bench.pipe(
            prompts, **plain_call, generator=seeded_generators(range(CANDIDATES)), output_type="latent"
        )

    def recorded() -> None:
        with torch.no_grad():
            rollout(bench.pipe, prompts, spec, seeded_generators(range(CANDIDATES)))

    seconds: dict[str, list[float]] = {"plain": [], "rollout": []}
    for repeat in range(1 + ROLLOUT_REPEATS):  # the first pass warms both up and is not counted
        for name, fn in (("plain", plain), ("rollout", recorded)):
            with measured(bench.device) as stats:
                fn()
            if repeat:
                seconds[name].append(stats["seconds"])
    plain_s, rollout_s = (statistics.median(seconds[name]) for name in ("plain", "rollout"))
    bench.record(
        "grpo",
        f"rollout with log-probs vs plain pipeline, {CANDIDATES} videos (latents)",
        f"plain {plain_s:.2f} s, rollout {rollout_s:.2f} s, ratio {rollout_s / plain_s:.2f} "
        f"(median of {ROLLOUT_REPEATS}, interleaved, after a warm-up)",
        plain_s=plain_s,
        rollout_s=rollout_s,
        ratio=rollout_s / plain_s,
        seconds=seconds,
    )
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir,
            prompts=[PROMPT],
            sampling=spec,
            lora=LoraSpec(rank=32, alpha=64.0),
            prompts_per_update=1,
            group_size=4,
            sample_batch_size=4,
            num_updates=2,
            gradient_checkpointing=True,
            mixed_precision="bf16",
            checkpoint_every=0,
            resume=False,
            progress=False,
        )
        with measured(bench.device) as setup:
            trainer = GRPOTrainer(config, pipe=bench.pipe, reward=descore_reward(bench.toy, "think_free"))
        trainable = sum(p.numel() for p in lora_parameters(trainer.pipe))
        bench.record(
            "grpo",
            "trainer set-up (LoRA r32, AdamW)",
            f"{count(trainable)} LoRA parameters, {describe(setup)}",
            lora_parameters=trainable,
            **setup,
        )
        for update, run in enumerate(("first (warm-up)", "second")):
            with measured(bench.device) as stats:
                metrics = trainer.run_update(update)
            bench.record(
                "grpo",
                f"one update (1 prompt x group 4, checkpointing, bf16 autocast), {run}",
                f"{describe(stats)}; rollout {metrics['time/rollout_s']:.2f} s, "
                f"train {metrics['time/train_s']:.2f} s, reward mean {metrics['reward/mean']:.4f}",
                metrics=metrics,
                sampling=vars(spec),
                timestep_fraction=config.timestep_fraction,
                beta=config.beta,
                **stats,
            )


SECTION_FUNCTIONS: dict[str, Callable[[Bench], None]] = {
    "bon": section_bon,
    "guidance": section_guidance,
    "grpo": section_grpo,
}


# ---------------------------------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict[str, Any]:
    import accelerate
    import diffusers
    import peft
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name, gpu_memory_gib=properties.total_memory / 2**30, cuda=torch.version.cuda
        )
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="wan1.3b")
    parser.add_argument(
        "--device", default="cuda", help="cuda, cpu, or meta (build and count parameters only)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl")
    parser.add_argument("--steps", type=int, help="denoising steps (default: 10 for wan1.3b, 3 for tiny)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--no-judge", action="store_true", help="skip the large Qwen3-VL DeScore")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    dtype = torch.bfloat16
    steps = args.steps or SIZES[args.size].steps
    if steps < 2:
        parser.error("--steps: the guided step is a middle step; use at least 2")

    info = environment(device)
    record = Recorder(args.out, {"size": args.size, "steps": steps})
    record("env", "environment", json.dumps(info), **info, dtype=str(dtype), argv=sys.argv)

    with measured(device) as stats:
        pipe = build_pipeline(args.size, device, dtype)
    counts = {name: parameters(getattr(pipe, name)) for name in ("transformer", "text_encoder", "vae")}
    dtypes = {name: str(getattr(pipe, name).dtype) for name in ("transformer", "text_encoder", "vae")}
    record(
        "build",
        "Wan2.1 pipeline",
        f"{', '.join(f'{k} {count(v)}' for k, v in counts.items())}; {describe(stats)}",
        parameters=counts,
        dtypes=dtypes,
        scheduler=type(pipe.scheduler).__name__,
        scheduler_config=dict(pipe.scheduler.config),
        call={**SIZES[args.size].call, "num_inference_steps": steps},
        **stats,
    )
    judge_factory = None if args.no_judge else (lambda: build_judge(args.size, device, dtype))
    if device.type == "meta":
        if judge_factory is not None:
            scorer = judge_factory()
            tokens = judge_tokens(scorer, args.size)
            record(
                "build",
                "judge",
                f"{count(parameters(scorer.model))} parameters; one video: {tokens}",
                parameters=parameters(scorer.model),
                **tokens,
            )
        return 0

    with measured(device) as stats:
        toy = load_toy_descore(device)
    record(
        "build",
        "toy DeScore",
        f"{count(parameters(toy.model))} parameters, {describe(stats)}",
        parameters=parameters(toy.model),
        dtype=str(next(toy.model.parameters()).dtype),
        sampling=vars(toy.config.sampling),
        max_new_tokens=toy.config.generation.max_new_tokens,
        **stats,
    )
    bench = Bench(args.size, device, dtype, steps, pipe, toy, record, judge_factory)
    failed = []
    for section in [
        s for s in SECTIONS if s in args.sections
    ]:  # grpo adds LoRA to the shared pipe: it runs last
        print(f"== {section}", flush=True)
        try:
            SECTION_FUNCTIONS[section](bench)
        except Exception:  # noqa: BLE001 - report and go on with the next section
            record.failure(section, "section")
            failed.append(section)
        free_memory(device)
    print(f"done; results in {record.path}" + (f"; failed sections: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
