import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

torch.set_num_threads(1)  # tiny models: one thread is faster and steadier than two on 2 cores

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def load_bench():
    """Import a script of ``bench/`` by name (the benchmarks are scripts, not a package; like a script run from
    there, it may import its sibling scripts)."""

    def load(name: str):
        if str(BENCH_DIR) not in sys.path:
            sys.path.append(str(BENCH_DIR))
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load
