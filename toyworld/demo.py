"""`descore demo`: best-of-N and reward guidance with the shipped toy generator and toy DeScore, offline, on CPU.

For a handful of toy prompts the demo generates N candidates with the toy Wan generator, lets the toy DeScore pick
the best (think-then-score, with its chain of thought as the rationale), shows reward-gradient guidance against the
unguided run from the same seed, and writes a self-contained HTML report: GIFs side by side, rewards, CoTs and the
analyzer's measurement of every video (the toy world's ground truth).
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from descore.errors import CheckpointError
from descore.scoring import DeScore
from descore.video_io import write_video
from pipelines import DeScorePipeline
from toyworld.analyzer import analyze
from toyworld.generator import DEFAULT_CHECKPOINT as DEFAULT_GENERATOR
from toyworld.generator import TOY_GENERATOR_CALL, WORLD, load_toy_generator, toy_prompts

logger = logging.getLogger(__name__)

DEFAULT_REWARD_MODEL = Path(__file__).resolve().parent / "checkpoints" / "toy_descore"
#: The demo's reward-gradient guidance: the middle half of the steps, normalised gradient steps.
GUIDANCE = {"weight": 2.0, "window": (0.25, 0.75), "normalize": True}


@dataclass
class Candidate:
    seed: int
    reward: float
    cot: str | None
    truth: float
    findings: tuple[str, ...]
    gif: bytes | None
    video: torch.Tensor | None = None
    """The frames (T, C, H, W) in [0, 1], kept by ``run_demo(keep_videos=True)`` (to score them again later)."""


@dataclass
class PromptResult:
    prompt: str
    candidates: list[Candidate]
    winner: int

    @property
    def oracle(self) -> int:
        return int(np.argmax([c.truth for c in self.candidates]))


@dataclass
class GuidanceResult:
    prompt: str
    seed: int
    plain: Candidate
    guided: Candidate


@dataclass
class DemoReport:
    results: list[PromptResult] = field(default_factory=list)
    guidance: list[GuidanceResult] = field(default_factory=list)
    seconds: float = 0.0


def _gif(frames: torch.Tensor, fps: float) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(frames, Path(tmp) / "video.gif", fps=fps)
        return path.read_bytes()


def _candidate(
    video: torch.Tensor,
    prompt: str,
    seed: int,
    reward: float,
    cot: str | None,
    fps: float | None,
    keep_video: bool = False,
) -> Candidate:
    """Measure a video with the analyzer; keep it as a GIF when ``fps`` is given (for the report), and its frames
    when ``keep_video``."""
    analysis = analyze(video, prompt)
    gif = None if fps is None else _gif(video, fps)
    return Candidate(
        seed,
        reward,
        cot,
        analysis.overall,
        analysis.findings,
        gif,
        video.detach().cpu() if keep_video else None,
    )


def run_demo(
    *,
    num_prompts: int = 6,
    num_candidates: int = 8,
    seed: int = 0,
    guidance_prompts: int = 2,
    guidance_weight: float = GUIDANCE["weight"],
    generator_path: str | Path | None = None,
    reward_model_path: str | Path | None = None,
    think: bool = True,
    gifs: bool = True,
    keep_videos: bool = False,
    progress: bool = True,
) -> DemoReport:
    """Generate, rerank and guide; return everything the HTML report shows (``gifs=False``: measurements only;
    ``keep_videos``: every best-of-N candidate keeps its frames)."""
    start = time.perf_counter()
    _check_checkpoints(generator_path, reward_model_path)
    scorer = DeScore.from_pretrained(reward_model_path or DEFAULT_REWARD_MODEL)
    pipe = DeScorePipeline.from_pipe(load_toy_generator(generator_path), reward_model=scorer)
    pipe.set_progress_bar_config(disable=True)
    fps = float(WORLD.fps)
    prompts = toy_prompts(num_prompts, seed)
    report = DemoReport()
    for i, prompt in enumerate(tqdm(prompts, desc="best-of-N", disable=not progress)):
        out = pipe(
            prompt,
            num_candidates=num_candidates,
            seeds=seed * 1000 + i * num_candidates,
            think=think,
            keep_candidates=True,
            candidate_batch_size=num_candidates,
            output_type="pt",
            fps=fps,
            **TOY_GENERATOR_CALL,
        )
        candidates = [
            _candidate(
                out.candidates[0, k],
                prompt,
                out.seeds[0][k],
                float(out.rewards[0, k]),
                out.cots[0][k],
                fps if gifs else None,
                keep_video=keep_videos,
            )
            for k in range(num_candidates)
        ]
        report.results.append(PromptResult(prompt, candidates, out.winners[0]))
    for i, prompt in enumerate(tqdm(prompts[:guidance_prompts], desc="guidance", disable=not progress)):
        run_seed = seed * 1000 + 500 + i
        videos = {}
        guided = {**GUIDANCE, "weight": guidance_weight}
        for name, guidance in (("plain", None), ("guided", guided)):
            out = pipe(
                prompt,
                seeds=[run_seed],
                think=False,
                guidance=guidance,
                output_type="pt",
                fps=fps,
                **TOY_GENERATOR_CALL,
            )
            videos[name] = _candidate(
                out.frames[0], prompt, run_seed, float(out.rewards[0, 0]), None, fps if gifs else None
            )
        report.guidance.append(GuidanceResult(prompt, run_seed, videos["plain"], videos["guided"]))
    report.seconds = time.perf_counter() - start
    return report


def _check_checkpoints(generator_path: str | Path | None, reward_model_path: str | Path | None) -> None:
    """Name every missing default checkpoint and how to produce it, before loading anything."""
    missing = []
    if generator_path is None and not (DEFAULT_GENERATOR / "model_index.json").is_file():
        missing.append(f"the toy generator ({DEFAULT_GENERATOR}; `descore toy train-generator --out DIR`)")
    if reward_model_path is None and not (DEFAULT_REWARD_MODEL / "descore_config.json").is_file():
        missing.append(
            f"the toy DeScore ({DEFAULT_REWARD_MODEL}; `descore toy train-descore --out DIR --export "
            f"{DEFAULT_REWARD_MODEL}`)"
        )
    if missing:
        raise CheckpointError(
            "the demo needs checkpoints that are not in this installation: "
            + "; ".join(missing)
            + ". Pass --generator / --reward-model to use your own."
        )


def _img(gif: bytes, title: str) -> str:
    data = base64.b64encode(gif).decode("ascii")
    return f'<img src="data:image/gif;base64,{data}" title="{html.escape(title)}" width="144" height="144">'


def _cell(c: Candidate, label: str, highlight: bool) -> str:
    style = ' class="win"' if highlight else ""
    findings = html.escape("; ".join(c.findings) or "no defect found")
    return (
        f"<td{style}>{_img(c.gif, label)}<br><b>{html.escape(label)}</b><br>reward {c.reward:+.3f}<br>"
        f"analyzer {c.truth:.2f} / 5<br><small>{findings}</small></td>"
    )


#: Why the demo's pick-vs-random numbers are not the measurement (printed and shown next to them).
FEW_PROMPTS_NOTE = (
    "a few prompts cannot resolve the toy DeScore's small gain over a random pick: bench/toyworld_best_of_n.py "
    "measures it over 1,000 prompts (README, Benchmarks)"
)


def summary(report: DemoReport) -> dict[str, float]:
    """Mean analyzer score of DeScore's pick, of a random pick (the candidates' mean) and of the best candidate."""
    picked = [r.candidates[r.winner].truth for r in report.results]
    random_pick = [float(np.mean([c.truth for c in r.candidates])) for r in report.results]
    oracle = [r.candidates[r.oracle].truth for r in report.results]
    out = {
        "descore_pick": float(np.mean(picked)),
        "random_pick": float(np.mean(random_pick)),
        "best_candidate": float(np.mean(oracle)),
    }
    if report.guidance:
        out["reward_unguided"] = float(np.mean([g.plain.reward for g in report.guidance]))
        out["reward_guided"] = float(np.mean([g.guided.reward for g in report.guidance]))
    return out


def render_html(report: DemoReport) -> str:
    """A self-contained page (GIFs inlined as data URIs)."""
    stats = summary(report)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>descore demo</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px} td{vertical-align:top;padding:6px;text-align:center}",
        ".win{background:#e6f4e6;outline:2px solid #3a3} pre{white-space:pre-wrap;background:#f6f6f6;padding:8px}",
        "</style></head><body><h1>descore demo: think-then-score on the toy world</h1>",
        (
            f"<p>Toy Wan generator + toy DeScore, offline on CPU, {report.seconds:.0f} s. The analyzer measures each "
            "video from its pixels against the prompt (the toy world's ground truth, 1-5).</p>"
        ),
        "<h2>Summary</h2><ul>",
        f"<li>mean analyzer score of DeScore's pick: <b>{stats['descore_pick']:.2f}</b></li>",
        f"<li>of a random pick: {stats['random_pick']:.2f}; of the best candidate: {stats['best_candidate']:.2f}</li>",
        f"<li>{html.escape(FEW_PROMPTS_NOTE)}</li>",
    ]
    if report.guidance:
        parts.append(
            f"<li>guidance: mean reward {stats['reward_unguided']:+.3f} unguided -> "
            f"{stats['reward_guided']:+.3f} guided (same seeds)</li>"
        )
    parts.append("</ul><h2>Best of N</h2>")
    for r in report.results:
        parts.append(f"<h3>{html.escape(r.prompt)}</h3><table><tr>")
        for k, c in enumerate(r.candidates):
            parts.append(
                _cell(c, f"seed {c.seed}" + (" (DeScore's pick)" if k == r.winner else ""), k == r.winner)
            )
        parts.append("</tr></table>")
        cot = r.candidates[r.winner].cot or ""
        parts.append(f"<p>DeScore's rationale for its pick:</p><pre>{html.escape(cot)}</pre>")
    if report.guidance:
        parts.append("<h2>Reward guidance</h2>")
        for g in report.guidance:
            parts.append(f"<h3>{html.escape(g.prompt)}</h3><table><tr>")
            parts.append(_cell(g.plain, f"unguided, seed {g.seed}", False))
            parts.append(_cell(g.guided, f"guided, seed {g.seed}", g.guided.reward > g.plain.reward))
            parts.append("</tr></table>")
    parts.append("</body></html>")
    return "".join(parts)


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    report = run_demo(
        num_prompts=args.prompts,
        num_candidates=args.candidates,
        seed=args.seed,
        guidance_prompts=args.guidance_prompts,
        generator_path=args.generator,
        reward_model_path=args.reward_model,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(render_html(report))
    stats = summary(report)
    print(
        f"DeScore's pick scores {stats['descore_pick']:.2f} / 5 by the analyzer (random pick {stats['random_pick']:.2f},"
        f" best candidate {stats['best_candidate']:.2f}) over {len(report.results)} prompts x {args.candidates}"
        " candidates"
    )
    print(f"  ({FEW_PROMPTS_NOTE})")
    if report.guidance:
        print(
            f"guidance: reward {stats['reward_unguided']:+.3f} -> {stats['reward_guided']:+.3f} (same seeds)"
        )
    print(f"report: {page} ({report.seconds:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline toy-world demo: best-of-N and guidance with a toy DeScore, HTML report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="outputs/demo", help="folder for report.html (default outputs/demo)")
    p.add_argument("--prompts", type=int, default=6, help="toy prompts to generate for (default 6)")
    p.add_argument("--candidates", type=int, default=8, help="candidates per prompt (default 8)")
    p.add_argument("--guidance-prompts", type=int, default=2, help="prompts to show guidance on (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts and candidates (default 0)")
    p.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    p.add_argument(
        "--reward-model", default=None, help="DeScore checkpoint (default: the shipped toy DeScore)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: fastest for these tiny models)"
    )
    p.set_defaults(func=_run)
