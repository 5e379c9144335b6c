"""The register step as a KFP component."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.kfp import component


@component
def register(
    model: Input[Model],
    evaluation: Input[Dataset],
    decision: Output[Artifact],
    run_id: str,
    recipe: str,
    overrides: str = "[]",
    tracking_uri: str = "",
):
    """Register the final pipeline as a version of the recipe's register.name with lineage (this pipeline run's id
    included); the champion moves only when the evaluation shows the new version better by more than
    register.margin."""
    from components.common.kfp import task

    with task("register") as report:
        from pathlib import Path

        from components.common.kfp import step_settings
        from components.register.register import RegisterConfig
        from components.register.register import register as run_register

        fixed = {"model": str(Path(model.path) / "pipeline"), "evaluation": evaluation.path,
                 "pipeline_run_id": run_id, "decision_path": decision.path}  # fmt: skip
        if tracking_uri:
            fixed["tracking_uri"] = tracking_uri
        result = run_register(step_settings(RegisterConfig, recipe, overrides, ("register",), fixed))
        decision.metadata.update({k: v for k, v in result.items() if v is not None})
        alias = "champion" if result.get("promoted") else "challenger"
        report.figure = f"{result.get('name')} version {result.get('version')}, {alias} ({result.get('reason')})"
