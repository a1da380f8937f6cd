"""Can regression onto the toy generator's best samples carry their quality to fresh samples?

RWR, rejection fine-tuning (RAFT) and DPO all teach by regressing the model onto its own samples (or away from
them). This measures that mechanism with an oracle's choice: sample ``--group`` videos for each training prompt,
keep each prompt's best by the toy analyzer, and train the LoRA on the kept videos with the RWR trainer
(``best_of_group``, one update of ``--passes`` optimizer steps). ``--control`` keeps a random sample of each prompt
instead (the best under the analyzer's scores shuffled among the videos, as ``recipe_runs.py --control`` does): the
drift of fine-tuning on the model's own samples. Then, trained against the base model (the adapter disabled):

- the denoising error on the kept videos at several noise levels (does the LoRA fit them?);
- the mean squared latent distance from fresh samples of each prompt (seeds never used in training) to that
  prompt's kept video (do fresh samples move towards it?);
- the analyzer's mean overall score of those fresh samples (does their quality rise?).

Run: ``python bench/regression_fit.py [--passes 400] [--lr 3e-3] [--train-cfg] [--control] [--json FILE]``. The kept videos'
seeds follow the RWR trainer's (seed, update 0, index) derivation, so the update trains on exactly the samples
measured here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from recipe_runs import TOY_SPEC, analyzer_reward, make_trainer, permuted, toy_pipeline

from recipes.groups import best_of_group_weights
from recipes.lora import LoraSpec, reference_policy
from recipes.objectives import denoising_errors, noisy_batch
from recipes.rollout import rollout, seeded_generators
from toyworld.analyzer import analyze
from toyworld.generator import toy_prompts

#: Noise levels at which the denoising error on the kept videos is reported.
LEVELS = (0.2, 0.5, 0.8, 0.95)


def measure(
    prompts: int = 8,
    group: int = 16,
    passes: int = 400,
    lr: float = 3e-3,
    train_cfg: bool = False,
    fresh: int = 8,
    seed: int = 0,
    rank: int = 8,
    control: bool = False,
) -> dict[str, Any]:
    """Train on each prompt's best of ``group`` (``control``: a random one) and measure the fit and the fresh
    samples (trained vs base)."""
    train = toy_prompts(prompts, seed=11)
    reward = permuted(analyzer_reward(), seed) if control else analyzer_reward()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(
            "rwr",
            toy_pipeline(allow_untrained=False),
            TOY_SPEC,
            reward,
            tmp,
            train,
            num_updates=1,
            seed=seed,
            learning_rate=lr,
            prompts_per_update=prompts,
            group_size=group,
            best_of_group=True,
            inner_epochs=passes,
            train_timesteps=1,
            train_batch_size=8,
            train_cfg=train_cfg,
            lora=LoraSpec(rank=rank, alpha=rank),
        )
        # What RWR's update trains on: the same seeds and the same (deterministic) sampler.
        samples = trainer.sample_groups(0, sde_steps=[])
        kept = torch.nonzero(best_of_group_weights(samples.rewards, samples.group_ids) > 0).flatten()
        x0 = samples.final_latents[kept]
        kept_prompts = [samples.prompts[i] for i in kept]
        context = samples.trajectories[0].context
        conditioning = samples.conditioning.select(kept)
        videos = trainer.decode(samples.final_latents).float()
        scores = torch.tensor([analyze(v, p).overall for v, p in zip(videos, samples.prompts)])
        trainer.train()

        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        fresh_prompts = [p for p in kept_prompts for _ in range(fresh)]
        fresh_seeds = list(range(10**7, 10**7 + len(fresh_prompts)))
        targets = x0.repeat_interleave(fresh, 0)

        def evaluate() -> dict[str, Any]:
            errors = {}
            for level in LEVELS:
                batch = noisy_batch(context, x0, noise, torch.full((len(kept),), level))
                errors[str(level)] = float(
                    denoising_errors(
                        trainer.family, trainer.pipe, batch, conditioning, context, train_cfg
                    ).mean()
                )
            final = rollout(
                trainer.pipe, fresh_prompts, TOY_SPEC, seeded_generators(fresh_seeds), sde_steps=[]
            ).final
            videos = trainer.decode(final).float().clamp(0, 1)
            quality = [analyze(v, p).overall for v, p in zip(videos, fresh_prompts)]
            return {
                "denoising_error": errors,
                "distance_to_kept": float(((final - targets) ** 2).flatten(1).mean(1).mean()),
                "fresh_quality": sum(quality) / len(quality),
            }

        with torch.no_grad():
            trained = evaluate()
            with reference_policy(trainer.pipe):
                base = evaluate()
    return {
        "settings": {
            "prompts": prompts,
            "group": group,
            "passes": passes,
            "lr": lr,
            "train_cfg": train_cfg,
            "fresh": fresh,
            "seed": seed,
            "rank": rank,
            "control": control,
        },
        "kept_scores": scores[kept].tolist(),
        "group_mean_scores": [float(scores[samples.group_ids == g].mean()) for g in range(prompts)],
        "trained": trained,
        "base": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="training prompts (toy_prompts(n, seed=11))")
    parser.add_argument("--group", type=int, default=16, help="samples per prompt; the best one is kept")
    parser.add_argument("--passes", type=int, default=400, help="optimizer steps over the kept videos")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--train-cfg", action="store_true", help="regress the guided output (RWR's train_cfg)"
    )
    parser.add_argument("--fresh", type=int, default=8, help="fresh samples per prompt in the evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = rank)")
    parser.add_argument("--control", action="store_true", help="keep a random sample of each prompt instead")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(
        args.prompts,
        args.group,
        args.passes,
        args.lr,
        args.train_cfg,
        args.fresh,
        args.seed,
        args.rank,
        args.control,
    )
    kept = result["kept_scores"]
    means = result["group_mean_scores"]
    print(
        f"kept videos' analyzer score {sum(kept) / len(kept):.3f} (group means {sum(means) / len(means):.3f})"
    )
    print(f"{'':>34} {'base':>8} {'trained':>8}")
    for level in LEVELS:
        key = str(level)
        print(
            f"{'denoising error on kept, s=' + key:>34} {result['base']['denoising_error'][key]:8.4f} "
            f"{result['trained']['denoising_error'][key]:8.4f}"
        )
    for name, key in (
        ("fresh samples' distance to kept", "distance_to_kept"),
        ("fresh quality", "fresh_quality"),
    ):
        print(f"{name:>34} {result['base'][key]:8.4f} {result['trained'][key]:8.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
