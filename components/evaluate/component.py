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
    prompts: str = "",
    max_prompts: int = 8,
    steps: int = 30,
    guidance_scale: float = 7.0,
    seed: int = 0,
    val_timesteps: int = 10,
    model_name: str = "t2v-stdit",
    tracking_uri: str = "",
):
    """Evaluate the final stage's pipeline on the held-out split, and with a tracking URI also the registry's
    champion of `model_name` when there is one (for the register step's decision); loss curves of all stages."""
    from pathlib import Path

    from components.evaluate.evaluate import EvalConfig, write_kfp_outputs
    from components.evaluate.evaluate import evaluate as run_evaluate

    baseline = f"models:/{model_name}@champion" if tracking_uri else None
    cfg = EvalConfig(model=str(Path(model.path) / "pipeline"), data=data.path, out_dir=evaluation.path,
                     prompts=prompts or None, max_prompts=max_prompts, steps=steps, guidance_scale=guidance_scale,
                     seed=seed, val_timesteps=val_timesteps, baseline=baseline,
                     loss_curves=(stage1.path, stage2.path, model.path), tracking_uri=tracking_uri or None,
                     progress=False)  # fmt: skip
    result = run_evaluate(cfg)
    write_kfp_outputs(evaluation.path, report, metrics)
    evaluation.metadata.update({"val_loss": result["metrics"]["val_loss"]})
