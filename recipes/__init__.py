"""Recipes that fine-tune a video generator against a reward (GRPO, DPO, RWR, DRaFT).

Modules: :mod:`recipes.sde` (stochastic steps with log-probabilities), :mod:`recipes.families` (each pipeline
family's sampling components), :mod:`recipes.rollout` (recorded rollouts, exact log-prob recomputation),
:mod:`recipes.groups` (per-prompt statistics), :mod:`recipes.objectives` (denoising losses), :mod:`recipes.lora`,
:mod:`recipes.ema`, :mod:`recipes.config`, :mod:`recipes.base` (the shared trainer), and the recipes
:mod:`recipes.grpo`, :mod:`recipes.dpo`, :mod:`recipes.rwr`, :mod:`recipes.draft`, each runnable as
``accelerate launch -m recipes.<name> --config FILE``. See docs/recipes.md.
"""
