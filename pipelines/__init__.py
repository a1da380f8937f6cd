"""diffusers pipelines that wrap a video pipeline together with a DeScore reward model."""
