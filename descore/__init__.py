"""DeScore: think-then-score video reward models."""

__version__ = "0.1.0"
