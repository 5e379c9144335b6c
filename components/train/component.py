"""A training stage as KFP components: in the task's own pod (`train_stage`), or on several nodes through a
Kubeflow Trainer TrainJob that the task creates and waits for (`train_stage_nodes`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.kfp import component, image

# The GPUs, placement and env set on a train_stage_nodes task go to the TrainJob's pods, not to the launcher's pod
# (apply_to_task=False); the volumes (the run's PVC) are needed by both.
NODE_PASSTHROUGHS = [
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.RESOURCES, apply_to_task=False),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR, apply_to_task=False),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_TOLERATIONS, apply_to_task=False),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
]


@component
def train_stage(
    data: Input[Dataset],
    model: Output[Model],
    stage: int,
    workdir: str,
    run_id: str,
    recipe: str,
    overrides: str = "[]",
    init: Input[Model] = None,
    tracking_uri: str = "",
    resume_run: str = "",
):
    """Train stage `stage` with the recipe's `train` and `stage<N>` sections on the precompute root `data`,
    starting from the previous stage's `init` when given. Checkpoints live in <workdir>/<run_id>/stage<N> (a PVC on
    the cluster), so a retried task resumes from the last complete one (`resume_run`: another run's id, whose
    folder this run's stages use instead, to go on from where that run stopped); the export, the pipeline folder and the
    metrics log are copied to the `model` artifact at the end. Several GPUs in the pod: torchrun --standalone with
    one process per GPU."""
    from components.common.kfp import task

    with task(f"train-stage-{stage}") as report:
        from pathlib import Path

        import torch

        from components.common.kfp import require_models
        from components.train.stage import collect, outcome, stage_settings

        out_dir = Path(workdir) / (resume_run or run_id) / f"stage{stage}"
        cfg, argv = stage_settings(recipe, overrides, stage, data.path, out_dir, init.path if init else None,
                                   tracking_uri)  # fmt: skip
        require_models(cfg)
        gpus = torch.cuda.device_count()
        if gpus > 1:
            from components.train.launcher import run_standalone

            run_standalone(argv, gpus)
        else:
            from components.train.train import train

            train(cfg)
        model.metadata.update({"stage": stage, **collect(out_dir, model.path)})
        report.figure = outcome(out_dir)


@component(passthroughs=NODE_PASSTHROUGHS)
def train_stage_nodes(
    data: Input[Dataset],
    model: Output[Model],
    stage: int,
    num_nodes: int,
    procs_per_node: int,
    runtime: str,
    workdir: str,
    run_id: str,
    recipe: str,
    overrides: str = "[]",
    init: Input[Model] = None,
    tracking_uri: str = "",
    resume_run: str = "",
    trainer_image: str = image(),
    task_config: dsl.TaskConfig = None,
):
    """Like train_stage, on `num_nodes` nodes x `procs_per_node` processes: creates a Kubeflow Trainer TrainJob
    (runtime `runtime`) in this pod's namespace with the GPUs, node selector, tolerations, env and volumes set on
    this task, waits for it, and fails with the job's reason if it fails. Inputs are copied to the run's volume
    first (every node reads them there); a retried task attaches to its existing TrainJob."""
    from components.common.kfp import task

    with task(f"train-stage-{stage}") as report:
        from pathlib import Path

        from components.train.launcher import NodeSettings, custom_objects_api, run_trainjob, trainjob_manifest
        from components.train.stage import collect, namespace, on_volume, outcome, stage_settings

        root = Path(workdir) / (resume_run or run_id)
        out_dir = root / f"stage{stage}"
        data_path = on_volume(data.path, root, "latents")
        init_path = on_volume(init.path, root, f"init-stage{stage}") if init else None
        _, argv = stage_settings(recipe, overrides, stage, data_path, out_dir, init_path, tracking_uri)
        nodes = NodeSettings.from_task_config(task_config, num_nodes=num_nodes, procs_per_node=procs_per_node)
        name = f"t2v-{run_id}"[:50].rstrip("-").lower() + f"-stage{stage}"
        manifest = trainjob_manifest(
            name,
            image=trainer_image,
            args=argv,
            settings=nodes,
            runtime=runtime,
            labels={"t2v-pipeline.io/run-id": run_id[:63], "t2v-pipeline.io/stage": str(stage)},
        )
        run_trainjob(custom_objects_api(), manifest, namespace())
        model.metadata.update({"stage": stage, "num_nodes": num_nodes, **collect(out_dir, model.path)})
        report.figure = outcome(out_dir)
