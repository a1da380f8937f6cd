"""How a reward steers video sampling: reward protocol, latent decoders, reranking and gradient guidance.

- :mod:`~reward_guidance.protocol`: ``RewardFunction`` (videos (B, F, C, H, W) in [0, 1] + prompts -> rewards [B]),
  ``CallableReward``, ``DeScoreReward``, ``CascadeReward``, ``descore_reward``.
- :mod:`~reward_guidance.decoding` and :mod:`~reward_guidance.families`: per-family latent -> pixel decoding and the
  pipeline adapters (Wan 2.1 / 2.2, CogVideoX, LTX, HunyuanVideo).
- :mod:`~reward_guidance.best_of_n`: ``best_of_n`` with recorded seeds, batches and cascades.
- :mod:`~reward_guidance.guidance`: ``RewardGuidanceCallback``, x0 look-ahead gradient guidance as a diffusers callback.
"""

from reward_guidance.best_of_n import BestOfNResult, best_of_n, candidate_seeds
from reward_guidance.decoding import LatentDecoder, frame_subset, subset_fps
from reward_guidance.families import (
    FamilyAdapter,
    decode_latents,
    family_adapter,
    register_family,
    supported_pipelines,
)
from reward_guidance.guidance import GuidanceStep, RewardGuidanceCallback, guided_steps
from reward_guidance.lookahead import Lookahead
from reward_guidance.protocol import (
    CallableReward,
    CascadeReward,
    DeScoreReward,
    FrameNeeds,
    RewardFunction,
    RewardOutput,
    as_reward,
    descore_reward,
)

__all__ = [
    "BestOfNResult",
    "CallableReward",
    "CascadeReward",
    "DeScoreReward",
    "FamilyAdapter",
    "FrameNeeds",
    "GuidanceStep",
    "LatentDecoder",
    "Lookahead",
    "RewardFunction",
    "RewardGuidanceCallback",
    "RewardOutput",
    "as_reward",
    "best_of_n",
    "candidate_seeds",
    "decode_latents",
    "descore_reward",
    "family_adapter",
    "frame_subset",
    "guided_steps",
    "register_family",
    "subset_fps",
    "supported_pipelines",
]
