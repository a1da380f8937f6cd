"""diffusers pipelines that wrap a video pipeline together with a DeScore reward model.

- :class:`DeScorePipeline`: a supported text-to-video pipeline (Wan 2.1 / 2.2, CogVideoX, LTX, HunyuanVideo) plus a
  reward model component; best-of-N with DeScore's chain of thought, cascades and reward-gradient guidance, with
  ``from_pretrained`` / ``from_pipe`` / ``save_pretrained``.
- :class:`DeScorePipelineOutput`: the chosen videos with every candidate's reward, seed and rationale.
- :class:`GuidanceConfig`: the ``guidance=`` settings of a call.
"""

from pipelines.descore_pipeline import DeScorePipeline, DeScorePipelineOutput, GuidanceConfig

__all__ = ["DeScorePipeline", "DeScorePipelineOutput", "GuidanceConfig"]
