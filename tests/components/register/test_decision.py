"""Which metric decides: a loss between models trained with the same objective, a sample metric both hold when an
imported Open-Sora 1.0 model (IDDPM) meets a rectified-flow one, and an error naming the fix when there is none."""

import json

import pytest

from components.register.decision import decision_metric
from components.register.register import model_card


def evaluation(objective: str, champion_objective: str, **extra) -> dict:
    ours = {"val_loss": 0.30, "adherence/mean": 0.80, **extra}
    theirs = {"val_loss": 0.10, "adherence/mean": 0.55, **extra}
    baseline = {"objective": champion_objective, "metrics": theirs, "model_info": {"version": "1"}}
    return {"objective": objective, "metrics": ours, "data": {"key": "k"}, "baseline": baseline}


def test_a_loss_decides_between_models_of_one_objective():
    result = evaluation("rectified-flow", "rectified-flow")
    assert decision_metric("val_loss", result, result["baseline"]) == ("val_loss", "")
    assert decision_metric("val_loss", result, None) == ("val_loss", "")  # the first version: nothing to compare


def test_a_sample_metric_decides_when_the_objectives_differ():
    result = evaluation("rectified-flow", "iddpm-epsilon")
    metric, note = decision_metric("val_loss", result, result["baseline"])
    assert metric == "adherence/mean" and "rectified-flow vs the champion's iddpm-epsilon" in note
    result = evaluation("rectified-flow", "iddpm-epsilon", fvd=120.0)
    assert decision_metric("val_loss/16-8f-16x16", result, result["baseline"])[0] == "fvd"  # FVD first when present
    assert decision_metric("adherence/mean", result, result["baseline"]) == ("adherence/mean", "")  # asked for


def test_no_shared_sample_metric_is_an_error_naming_the_fix():
    result = evaluation("iddpm-epsilon", "rectified-flow")
    del result["metrics"]["adherence/mean"]
    with pytest.raises(ValueError, match="iddpm-epsilon loss for this model and rectified-flow loss for the champion"):
        decision_metric("val_loss", result, result["baseline"])
    with pytest.raises(ValueError, match="evaluate with --fvd-model or --clip-model"):
        decision_metric("val_loss", result, result["baseline"])


def test_the_card_names_each_loss_objective_and_compares_like_with_like(tmp_path):
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "lineage.json").write_text(json.dumps([]))
    decision = {"promoted": True, "reason": "adherence/mean 0.8 beats champion's 0.55 by more than 0"}
    card = model_card(folder, evaluation("rectified-flow", "iddpm-epsilon"), decision)
    assert "- val_loss (rectified-flow): 0.3 (champion's iddpm-epsilon loss: 0.1, not comparable)" in card
    card = model_card(folder, evaluation("rectified-flow", "rectified-flow"), decision)
    assert "- val_loss (rectified-flow): 0.3 (champion: 0.1)" in card
