"""The KFP v2 DAG: synth-or-ingest -> caption (ParallelFor over shards, merged) -> precompute -> stage 1 -> stage 2
-> stage 3 -> evaluate -> register.

The same DAG runs on a cluster (compiled with cluster settings: GPUs, CPU and memory, node selectors,
tolerations, /dev/shm as a memory emptyDir, the data PVC, MLflow and S3 credentials from Secrets) and, unchanged,
on one machine through kfp.local (which ignores the Kubernetes settings). Training, evaluation and registration
are never served from KFP's cache (`set_caching_options(False)`): a model is only ever the result of a run.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

DEFAULT_SECRETS = {  # Secret name -> {key in the Secret: environment variable}
    "mlflow-credentials": {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
    "s3-credentials": {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"},
}


@dataclass(frozen=True)
class ClusterSettings:
    """Kubernetes settings of the tasks, by step (ingest, caption, precompute, train, evaluate, register)."""

    gpu_resource: str = "nvidia.com/gpu"
    gpus: dict = field(default_factory=lambda: {"caption": 1, "precompute": 1, "train": 8, "evaluate": 1})
    cpu: dict = field(default_factory=lambda: {"default": "4", "ingest": "16", "train": "64"})
    memory: dict = field(default_factory=lambda: {"default": "16G", "ingest": "32G", "train": "512G"})
    node_selector: dict = field(default_factory=lambda: {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    tolerations: list = field(default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                         "effect": "NoSchedule"}])  # fmt: skip
    shm_size: str = "64Gi"
    pvc: str = "t2v-data"
    mount_path: str = "/mnt/data"
    secrets: dict = field(default_factory=lambda: DEFAULT_SECRETS)
    retries: dict = field(default_factory=lambda: {"ingest": 1, "caption": 2, "precompute": 1, "train": 3})
    # training on more than one node: each stage's task creates a Kubeflow Trainer TrainJob of train_nodes pods
    # (runtime trainjob_runtime, procs_per_node processes each) and hands it the GPUs and placement set above
    train_nodes: int = 1
    procs_per_node: int = 8
    trainjob_runtime: str = "torch-distributed"

    @classmethod
    def load(cls, path: "str | Path | None") -> "ClusterSettings":
        if path is None:
            return cls()
        if not Path(path).is_file():
            raise ValueError(f"cluster settings {path} not found; see configs/cluster/h100.yaml for the format")
        values = yaml.safe_load(Path(path).read_text()) or {}
        unknown = sorted(set(values) - set(asdict(cls())))
        if unknown:
            raise ValueError(f"{path}: unknown cluster settings {unknown}; known: {sorted(asdict(cls()))}")
        return cls(**values)

    def apply(self, task, step: str):
        """Set this step's resources, placement, volumes, secrets and retries on `task`."""
        from kfp import kubernetes

        task.set_cpu_limit(str(self.cpu.get(step, self.cpu["default"])))
        task.set_memory_limit(str(self.memory.get(step, self.memory["default"])))
        gpus = int(self.gpus.get(step, 0))
        if gpus:
            task.set_accelerator_type(self.gpu_resource).set_accelerator_limit(gpus)
            for key, value in self.node_selector.items():
                kubernetes.add_node_selector(task, key, value)
            for t in self.tolerations:
                kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                          effect=t.get("effect"))  # fmt: skip
            kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=self.shm_size)
        kubernetes.mount_pvc(task, pvc_name=self.pvc, mount_path=self.mount_path)
        for secret, keys in self.secrets.items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys, optional=True)
        if self.retries.get(step):
            task.set_retry(num_retries=int(self.retries[step]), backoff_duration="60s", backoff_factor=2.0)
        return task


def build_pipeline(cluster: "ClusterSettings | None" = None):
    """The pipeline function (a kfp GraphComponent), with `cluster` applied to its tasks."""
    from kfp import dsl

    from components.caption.component import caption_merge, caption_shard, caption_shard_ids
    from components.evaluate.component import evaluate
    from components.ingest.component import synth_or_ingest
    from components.precompute.component import precompute
    from components.register.component import register
    from components.train.component import train_stage, train_stage_nodes

    cluster = cluster or ClusterSettings()
    if cluster.train_nodes > 1:
        import functools

        train_stage = functools.partial(  # the launcher variant in place of the in-pod one
            train_stage_nodes, num_nodes=cluster.train_nodes, procs_per_node=cluster.procs_per_node,
            runtime=cluster.trainjob_runtime,
        )  # fmt: skip

    def named(task, name: str, step: str, cache: bool = True):
        task.set_display_name(name)
        task.set_caching_options(cache)
        return cluster.apply(task, step)

    @dsl.pipeline(name="t2v-pipeline", description="Open-Sora-style STDiT training: data, captions, latents, "
                  "three stages, evaluation and registration")  # fmt: skip
    def t2v_pipeline(
        source: str = "synth",
        workdir: str = "/mnt/data/runs",
        synth_videos: int = 48,
        synth_images: int = 24,
        synth_shape_scale: float = 0.14,
        val_fraction: float = 0.1,
        caption_shards: int = 2,
        captioner: str = "vlm",
        caption_model: str = "llava-hf/llava-v1.6-mistral-7b-hf",
        vae: str = "stabilityai/sd-vae-ft-ema",
        text_encoder: str = "DeepFloyd/t5-v1_1-xxl",
        max_text_tokens: int = 300,
        buckets: str = '{"256": {"1": [1.0, 32], "16": [1.0, 4]}}',
        frame_interval: int = 2,
        stage1_config: str = "configs/train/stage1.yaml",
        stage2_config: str = "configs/train/stage2.yaml",
        stage3_config: str = "configs/train/stage3.yaml",
        stage1_steps: int = 0,
        stage2_steps: int = 0,
        stage3_steps: int = 0,
        stage2_settings: str = "[]",
        stage3_settings: str = "[]",
        eval_prompts: str = "",
        eval_max_prompts: int = 8,
        eval_steps: int = 30,
        eval_guidance_scale: float = 7.0,
        tracking_uri: str = "",
        model_name: str = "t2v-stdit",
        register_metric: str = "val_loss",
        register_margin: float = 0.0,
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        data = named(
            synth_or_ingest(source=source, synth_videos=synth_videos, synth_images=synth_images,
                            synth_shape_scale=synth_shape_scale, val_fraction=val_fraction),
            "synth-or-ingest", "ingest",
        )  # fmt: skip
        shards = named(caption_shard_ids(num_shards=caption_shards), "caption-shards", "light")
        with dsl.ParallelFor(shards.output) as shard:
            part = named(
                caption_shard(manifest=data.outputs["manifest"], shard=shard, num_shards=caption_shards,
                                 captioner=captioner, model=caption_model),
                "caption-shard", "caption",
            )  # fmt: skip
        captioned = named(
            caption_merge(manifest=data.outputs["manifest"], parts=dsl.Collected(part.outputs["part"]),
                             captioner=captioner, model=caption_model),
            "caption-merge", "light",
        )  # fmt: skip
        latents = named(
            precompute(captioned=captioned.outputs["captioned"], vae=vae, text_encoder=text_encoder,
                          max_text_tokens=max_text_tokens, buckets=buckets, frame_interval=frame_interval),
            "precompute", "precompute",
        )  # fmt: skip
        common = {"data": latents.outputs["latents"], "workdir": workdir, "run_id": run_id,
                  "tracking_uri": tracking_uri}  # fmt: skip
        stage1 = named(
            train_stage(stage=1, config=stage1_config, steps=stage1_steps, **common), "stage-1", "train", False
        )
        stage2 = named(
            train_stage(stage=2, config=stage2_config, steps=stage2_steps, init=stage1.outputs["model"],
                        settings=stage2_settings, **common),
            "stage-2", "train", False,
        )  # fmt: skip
        stage3 = named(
            train_stage(stage=3, config=stage3_config, steps=stage3_steps, init=stage2.outputs["model"],
                     settings=stage3_settings, **common),
            "stage-3", "train", False,
        )  # fmt: skip
        evaluation = named(
            evaluate(model=stage3.outputs["model"], data=latents.outputs["latents"],
                        stage1=stage1.outputs["model"], stage2=stage2.outputs["model"], prompts=eval_prompts,
                        max_prompts=eval_max_prompts, steps=eval_steps, guidance_scale=eval_guidance_scale,
                        model_name=model_name, tracking_uri=tracking_uri),
            "evaluate", "evaluate", False,
        )  # fmt: skip
        named(
            register(model=stage3.outputs["model"], evaluation=evaluation.outputs["evaluation"],
                        tracking_uri=tracking_uri, run_id=run_id, name=model_name, metric=register_metric,
                        margin=register_margin),
            "register", "register", False,
        )  # fmt: skip

    return t2v_pipeline
