"""The KFP v2 DAG: synth -> ingest -> caption -> precompute -> stage 1 -> stage 2 -> stage 3 -> evaluate -> register.
The data steps fan out: a light task lists the shards, a ParallelFor runs one task per shard (ingest over the files,
caption over the clips, precompute over every stage's data), and a merge makes the result one task would have.

The same DAG runs on a cluster (compiled with cluster settings: GPUs, CPU and memory, node selectors,
tolerations, /dev/shm as a memory emptyDir, the data PVC, each step's Secrets) and, unchanged,
on one machine through kfp.local (which ignores the Kubernetes settings). Training, evaluation and registration
are never served from KFP's cache (`set_caching_options(False)`): a model is only ever the result of a run.
"""

from dataclasses import dataclass
from pathlib import Path

from components.common import settings
from components.common.settings import setting

PRODUCTION_RECIPE = "configs/recipes/production.yaml"

MLFLOW_CREDENTIALS = "mlflow-credentials"  # the pipeline's MLflow identity
DATA_CREDENTIALS = "dvc-credentials"  # S3 keys of the DVC remote's and the footage's buckets, never MLflow's
DEFAULT_SECRETS = {  # Secret name -> {key in the Secret: environment variable}
    MLFLOW_CREDENTIALS: {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
    DATA_CREDENTIALS: {
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "endpoint_url": "AWS_ENDPOINT_URL_S3",
    },
}
# Least privilege (docs/cluster.md, "Who holds which keys"): the data keys where a task reads footage (ingest from
# s3:// sources, and its shard list, which lists them; caption and precompute decode the clips from their sources;
# training too, when it encodes online), MLflow's identity where a task talks to MLflow (training, evaluation,
# registration), nothing for the light steps.
# No task gets the keys of MLflow's artifact bucket: artifacts go through the MLflow server.
STEP_SECRETS = {
    "default": [],
    "ingest": [DATA_CREDENTIALS],
    "ingest-shards": [DATA_CREDENTIALS],
    "caption": [DATA_CREDENTIALS],
    "precompute": [DATA_CREDENTIALS],
    "train": [MLFLOW_CREDENTIALS, DATA_CREDENTIALS],
    "evaluate": [MLFLOW_CREDENTIALS],
    "register": [MLFLOW_CREDENTIALS],
}


@dataclass(frozen=True)
class ClusterSettings:
    """Kubernetes settings of the tasks, by step (ingest, ingest-shards, caption, precompute, train, evaluate, light,
    register): the defaults are a cluster of 8 x H100 80GB nodes; a file (`t2v pipeline compile --cluster FILE`) holds
    what differs, read by the one settings loader (types checked, per-step mappings merged over the defaults)."""

    gpu_resource: str = setting("nvidia.com/gpu", "the GPU resource name of the device plugin")
    gpus: dict = setting({"caption": 1, "precompute": 1, "train": 8, "evaluate": 1}, "GPUs per step", merge=True)
    cpu: dict = setting({"default": "4", "ingest": "16", "precompute": "16", "train": "96"}, "CPU limit per step",
                        merge=True)  # fmt: skip
    memory: dict = setting({"default": "16G", "ingest": "32G", "precompute": "64G", "train": "1000G"},
                           "memory limit per step", merge=True)  # fmt: skip
    node_selector: dict = setting({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "of the GPU steps")
    tolerations: list = setting([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                                "of the GPU steps")  # fmt: skip
    shm_size: str = setting("64Gi", "/dev/shm (a memory emptyDir) of the GPU steps")
    pvc: str = setting("t2v-data", "ReadWriteMany: datasets, checkpoints (a retried training task resumes from them)")
    mount_path: str = setting("/mnt/data", "where the data volume is mounted")
    models_pvc: str = setting(
        "t2v-models",
        "pretrained weights: the models volume in every task, as the Hugging Face cache (HF_HOME), offline, so a hub "
        "id in any setting resolves from it (docs/cluster.md, step 4, stages them); empty for no volume (local)",
    )
    models_path: str = setting("/mnt/models", "where the models volume is mounted")
    tracking_uri: str = setting(
        "http://mlflow.t2v.svc:5000",
        "the MLflow that manifests/ deploys: the pipeline's default tracking_uri (empty refuses `submit` without "
        "--no-tracking, since a task's own store dies with its pod)",
    )
    secrets: dict = setting(
        DEFAULT_SECRETS,
        "the Secrets tasks may get as environment variables (optional ones): name -> {key: variable}; {} for none",
    )
    step_secrets: dict = setting(
        STEP_SECRETS,
        "the Secrets (names in `secrets`) of each step's tasks; `default` for the steps not named",
        merge=True,
    )
    retries: dict = setting({"ingest": 1, "caption": 2, "precompute": 1, "train": 3}, "retries per step", merge=True)
    retry_backoff_s: int = setting(
        60,
        "seconds before a failed task's first retry (doubled for each next one): time for a node or a service to "
        "come back; a local run (kfp.local, one machine) retries at once",
    )
    train_nodes: int = setting(
        1,
        "training on more than one node: each stage's task creates a Kubeflow Trainer TrainJob of train_nodes pods "
        "(runtime trainjob_runtime, procs_per_node processes each) with the GPUs and placement set above",
    )
    procs_per_node: int = setting(8, "training processes per node (one per GPU)")
    trainjob_runtime: str = setting("torch-distributed", "the Kubeflow Trainer runtime of multi-node training")

    def __post_init__(self):
        """A Secret a step names must be one `secrets` defines (a misspelt name would leave the step without its
        keys until it fails on the cluster); with `secrets: {}` no task gets any."""
        if not self.secrets:
            return
        for step, names in self.step_secrets.items():
            unknown = [name for name in names if name not in self.secrets]
            if unknown:
                raise ValueError(
                    f"cluster settings: step_secrets.{step} names {unknown}, which `secrets` does not define (it "
                    f"defines {sorted(self.secrets)}): add them to secrets, or take them out of step_secrets.{step}"
                )

    def secrets_of(self, step: str) -> dict[str, dict[str, str]]:
        """The Secrets `step`'s tasks get: name -> {key in the Secret: environment variable}."""
        names = self.step_secrets.get(step, self.step_secrets.get("default", []))
        return {name: self.secrets[name] for name in names if self.secrets}

    @classmethod
    def load(cls, path: "str | Path | None") -> "ClusterSettings":
        """The defaults, under the settings file `path` (None: the defaults alone)."""
        if path is None:
            return cls()
        if not Path(path).is_file():
            raise ValueError(f"cluster settings {path} not found; see configs/cluster/h100.yaml for the format")
        return settings.load(cls, config=path)

    def model_env(self) -> dict[str, str]:
        """Where every task finds pretrained weights: the models volume as the Hugging Face cache, offline. The
        module diffusers imports from a pipeline folder (its t2v_pipeline.py) is copied to the pod's own disk, not
        into the volume, which tasks only read."""
        if not self.models_path:
            return {}
        hf = f"{self.models_path.rstrip('/')}/hf"
        return {"HF_HOME": hf, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": "/tmp/hf-modules"}

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
        for name, value in self.model_env().items():
            task.set_env_variable(name, value)
        if self.models_pvc:
            # kfp-kubernetes 2.17 mounts a PVC read-write (its PvcMount has no readOnly): tasks only read it
            kubernetes.mount_pvc(task, pvc_name=self.models_pvc, mount_path=self.models_path)
        for secret, keys in self.secrets_of(step).items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys, optional=True)
        if self.retries.get(step):
            task.set_retry(num_retries=int(self.retries[step]), backoff_duration=f"{self.retry_backoff_s}s",
                           backoff_factor=2.0)  # fmt: skip
        return task


def compile_pipeline(out: str, cluster: str | None = None, image: str | None = None) -> Path:
    """The DAG compiled to KFP's IR YAML at `out`, with cluster settings from the file `cluster` (None: the
    defaults) and the components' image `image` (None: $T2V_IMAGE or the release)."""
    import os

    from kfp import compiler

    if image:
        os.environ["T2V_IMAGE"] = image
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(ClusterSettings.load(cluster)), out)
    return Path(out)


def build_pipeline(cluster: "ClusterSettings | None" = None):
    """The pipeline function (a kfp GraphComponent), with `cluster` applied to its tasks.

    Its parameters are the few that change per run (the footage, the recipe, overrides, where runs and MLflow
    live); every step's settings come from the recipe (`recipe`: a path in the image or YAML text, a section per
    step) and `overrides` (a JSON list of "section.key=value", e.g. ["stage2.max_steps=100"]), which each task reads
    for its own step, so a task cannot drift from what `t2v <verb>` would do."""
    from kfp import dsl

    from components.caption.component import caption_merge, caption_shard, caption_shard_ids
    from components.evaluate.component import evaluate
    from components.ingest.component import ingest_merge, ingest_shard, ingest_shard_ids
    from components.precompute.component import precompute_merge, precompute_shard, precompute_shard_ids
    from components.register.component import register
    from components.synth.component import synth
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
        recipe: str = PRODUCTION_RECIPE,  # a path in the image, or YAML text
        overrides: str = "[]",
        workdir: str = "/mnt/data/runs",
        tracking_uri: str = cluster.tracking_uri,
        resume_run: str = "",  # an earlier run's id: its training stages go on from that run's checkpoints
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        settings = {"recipe": recipe, "overrides": overrides}
        toy = named(synth(source=source, **settings), "synth", "light")
        footage = {"toy": toy.outputs["toy"], "source": source, **settings}
        files = named(ingest_shard_ids(**footage), "ingest-shards", "ingest-shards")
        with dsl.ParallelFor(files.output) as shard:
            analysed = named(ingest_shard(shard=shard, workdir=workdir,
                                          run_id=run_id, **footage), "ingest-shard", "ingest")  # fmt: skip
        data = named(ingest_merge(parts=dsl.Collected(analysed.outputs["part"]), **footage), "ingest-merge", "ingest")
        shards = named(caption_shard_ids(**settings), "caption-shards", "light")
        with dsl.ParallelFor(shards.output) as shard:
            part = named(caption_shard(manifest=data.outputs["manifest"], shard=shard, workdir=workdir, run_id=run_id,
                                       **settings), "caption-shard", "caption")  # fmt: skip
        captioned = named(
            caption_merge(manifest=data.outputs["manifest"], parts=dsl.Collected(part.outputs["part"]), **settings),
            "caption-merge", "light",
        )  # fmt: skip
        # every stage's data (buckets, frame sampling, subset) in one fan-out: a shard's task encodes its files of each
        # data once (stages whose data is the same share one keyed folder), the merge makes each stage's folder
        encode = {"captioned": captioned.outputs["captioned"], "workdir": workdir, **settings}
        clips = named(precompute_shard_ids(**encode), "precompute-shards", "light")
        with dsl.ParallelFor(clips.output) as shard:
            encoded = named(precompute_shard(shard=shard, **encode),
                            "precompute-shard", "precompute")  # fmt: skip
        merged = named(precompute_merge(parts=dsl.Collected(encoded.outputs["part"]), **encode), "precompute-merge",
                       "light")  # fmt: skip
        latents = {n: merged.outputs[f"stage{n}"] for n in (1, 2, 3)}
        common = {"workdir": workdir, "run_id": run_id, "tracking_uri": tracking_uri, "resume_run": resume_run,
                  **settings}  # fmt: skip
        stage1 = named(train_stage(stage=1, data=latents[1], **common), "train-stage-1", "train", False)
        stage2 = named(train_stage(stage=2, data=latents[2], init=stage1.outputs["model"], **common),
                       "train-stage-2", "train", False)  # fmt: skip
        stage3 = named(train_stage(stage=3, data=latents[3], init=stage2.outputs["model"], **common),
                       "train-stage-3", "train", False)  # fmt: skip
        evaluation = named(
            evaluate(model=stage3.outputs["model"], data=latents[3], stage1=stage1.outputs["model"],
                     stage2=stage2.outputs["model"], tracking_uri=tracking_uri, **settings),
            "evaluate", "evaluate", False,
        )  # fmt: skip
        named(
            register(model=stage3.outputs["model"], evaluation=evaluation.outputs["evaluation"], run_id=run_id,
                     tracking_uri=tracking_uri, **settings),
            "register", "register", False,
        )  # fmt: skip

    return t2v_pipeline
