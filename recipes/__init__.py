"""Recipes that fine-tune a video generator against a reward (GRPO, DPO, RWR, DRaFT)."""
