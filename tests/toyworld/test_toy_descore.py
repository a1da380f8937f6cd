"""The shipped toy DeScore checkpoint (toyworld/checkpoints/toy_descore) and the recipe that reproduces it."""

from __future__ import annotations

import pytest

from descore.scoring import DeScore
from toyworld.descore_recipe import (
    COMPACT_TEMPLATE,
    ToyDeScoreRecipe,
    format_report,
    train_toy_descore,
)


@pytest.mark.slow
def test_the_recipe_runs_end_to_end(tmp_path):
    report = train_toy_descore(tmp_path / "run", ToyDeScoreRecipe.quick(), export_to=tmp_path / "export",
                               progress=False)
    assert set(report["results"]) == {"descore", "descore_stage1", "discriminative_baseline"}
    assert set(report["results"]["descore"]["test_ood"]) == {"think", "no_think", "given_cot"}
    assert DeScore.from_pretrained(tmp_path / "export").config.template == COMPACT_TEMPLATE.name
    assert "discriminative_baseline" in format_report(report)
