"""The evaluate step as a KFP component: the report as an HTML artifact, the numbers as KFP Metrics."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.common.kfp import component


@component
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    stage1: Input[Model],
    stage2: Input[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
    evaluation: Output[Dataset],
    recipe: str,
    overrides: str = "[]",
    tracking_uri: str = "",
):
    """Evaluate the final stage's pipeline on the held-out split with the recipe's `evaluate` section; with a
    tracking URI also the registry's champion of the recipe's register.name when there is one (for the register
    step's decision); loss curves of all stages."""
    from components.common.kfp import task

    with task("evaluate") as told:
        import dataclasses
        from pathlib import Path

        from components.common.kfp import section_value, step_settings
        from components.common.registry import MODEL_NAME
        from components.evaluate.adherence import chance_mean
        from components.evaluate.config import EvalConfig
        from components.evaluate.evaluate import evaluate as run_evaluate
        from components.evaluate.evaluate import write_kfp_outputs

        fixed = {"model": str(Path(model.path) / "pipeline"), "data": data.path, "out_dir": evaluation.path,
                 "loss_curves": [stage1.path, stage2.path, model.path], "progress": False}  # fmt: skip
        if tracking_uri:
            fixed["tracking_uri"] = tracking_uri
        cfg = step_settings(EvalConfig, recipe, overrides, ("evaluate",), fixed)
        if cfg.baseline is None and cfg.tracking_uri:  # the registry's champion, judged on the same held-out set
            name = section_value(recipe, overrides, "register", "name", MODEL_NAME)
            cfg = dataclasses.replace(cfg, baseline=f"models:/{name}@champion")
        result = run_evaluate(cfg)
        write_kfp_outputs(evaluation.path, report, metrics)
        evaluation.metadata.update({"val_loss": result["metrics"]["val_loss"]})
        figures = result["metrics"]
        told.figure = f"validation loss {figures['val_loss']:.4f}" + (
            f", toy-world prompt adherence {figures['adherence/mean']:.0%} (chance {chance_mean(figures):.0%})"
            if "adherence/mean" in figures
            else ""
        )
