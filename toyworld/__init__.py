"""A verifiable micro-world: procedural videos with known quality, tiny real-architecture models, toy checkpoints."""
