"""The register step as a KFP component."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.kfp import component


@component
def register(
    model: Input[Model],
    evaluation: Input[Dataset],
    decision: Output[Artifact],
    tracking_uri: str,
    run_id: str,
    name: str = "t2v-stdit",
    metric: str = "val_loss",
    margin: float = 0.0,
):
    """Register the final pipeline as a version of `name` with lineage (this pipeline run's id included); the
    champion moves only when the evaluation shows the new version better by more than `margin`."""
    from pathlib import Path

    from components.register.register import RegisterConfig
    from components.register.register import register as run_register

    result = run_register(
        RegisterConfig(model=str(Path(model.path) / "pipeline"), evaluation=evaluation.path, name=name,
                       tracking_uri=tracking_uri, metric=metric, margin=margin, pipeline_run_id=run_id,
                       decision_path=decision.path)
    )  # fmt: skip
    decision.metadata.update({k: v for k, v in result.items() if v is not None})
