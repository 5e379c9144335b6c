"""Run a training stage on several nodes as a Kubeflow Trainer v2 TrainJob, or on one machine with torchrun.

Trainer API: trainer.kubeflow.org/v1alpha1 as of Kubeflow Trainer 2.3 (the `kubeflow-trainer-api==2.3.0` models
validate every TrainJob before it is sent). The job runs the `torch-distributed` ClusterTrainingRuntime
(manifests/base/trainer-runtime.yaml): one JobSet replicated job named "node", `numNodes` pods, each running
`torchrun` with the PET_* rendezvous variables the runtime injects.

Pod settings reach the job through `runtimePatches` (Trainer 2.2+; 2.0's `podSpecOverrides` is gone): node
selector, tolerations, volumes and, on the trainer container, env and volume mounts. GPU, CPU and memory go to
`trainer.resourcesPerNode`. In the pipeline they come from the settings set on the KFP task and passed through
to the component (`dsl.TaskConfig`), so the launcher pod itself stays small.

Waiting: the launcher polls the job until its Complete or Failed condition; a failed job raises `TrainJobFailed`
with the job's reason and message. A retried launcher finds its job by name: a running or finished one is waited
for (never a second copy); a failed one is deleted and created again, and resumes from the checkpoints on the
volume.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
RUNTIME = "torch-distributed"
CONTAINER = "node"  # the trainer container's name in the runtime's "node" replicated job
PATCH_MANAGER = "t2v-pipeline.io/launcher"


class TrainJobFailed(RuntimeError):
    """The TrainJob ended with a Failed condition (or vanished); the message carries its reason."""


@dataclass(frozen=True)
class NodeSettings:
    """What every training pod gets: resources per node and the pod settings of the KFP task."""

    num_nodes: int = 2
    procs_per_node: int = 8
    resources: dict = field(default_factory=dict)  # {"limits": {...}, "requests": {...}}
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    volumes: list = field(default_factory=list)
    volume_mounts: list = field(default_factory=list)
    env: list = field(default_factory=list)
    service_account: str | None = None

    @classmethod
    def from_task_config(cls, task_config, *, num_nodes: int, procs_per_node: int) -> NodeSettings:
        """From a KFP `dsl.TaskConfig` (fields None when the task sets nothing)."""

        def get(name, default):
            value = getattr(task_config, name, None) if task_config is not None else None
            return value if value is not None else default

        return cls(
            num_nodes=num_nodes,
            procs_per_node=procs_per_node,
            resources=get("resources", {}),
            node_selector=get("node_selector", {}),
            tolerations=get("tolerations", []),
            volumes=get("volumes", []),
            volume_mounts=get("volume_mounts", []),
            env=get("env", []),
        )


def trainjob_manifest(
    name: str, *, image: str, args: list[str], settings: NodeSettings, runtime: str = RUNTIME, labels=None
) -> dict:
    """A TrainJob that runs `torchrun -m components.train <args>` on every node; validated against the API."""
    pod = {"nodeSelector": settings.node_selector, "tolerations": settings.tolerations, "volumes": settings.volumes}
    pod = {k: v for k, v in pod.items() if v}
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    container = {"name": CONTAINER, "env": settings.env, "volumeMounts": settings.volume_mounts}
    container = {k: v for k, v in container.items() if v}
    if len(container) > 1:
        pod["containers"] = [container]
    trainer = {
        "image": image,
        "command": ["torchrun", "-m", "components.train"],
        "args": list(args),
        "numNodes": settings.num_nodes,
        "numProcPerNode": settings.procs_per_node,
    }
    if settings.resources:
        trainer["resourcesPerNode"] = settings.resources
    spec: dict = {"runtimeRef": {"name": runtime, "kind": "ClusterTrainingRuntime", "apiGroup": GROUP},
                  "trainer": trainer}  # fmt: skip
    if pod:
        node = {"name": "node", "template": {"spec": {"template": {"spec": pod}}}}
        patch = {"trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node]}}}}
        spec["runtimePatches"] = [{"manager": PATCH_MANAGER, **patch}]
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "t2v-pipeline", **(labels or {})}},
        "spec": spec,
    }
    validate_trainjob(manifest)
    return manifest


def validate_trainjob(manifest: dict) -> None:
    """Check a TrainJob against the kubeflow-trainer-api models: types (pydantic) and, since the models drop
    unknown fields silently, that nothing was dropped."""
    from kubeflow_trainer_api import models

    parsed = models.TrainerV1alpha1TrainJob.from_dict(manifest).to_dict()
    dropped = dropped_fields(manifest, parsed)
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != "TrainJob":
        raise ValueError(f"not a {API_VERSION} TrainJob: {manifest.get('apiVersion')} {manifest.get('kind')}")
    if dropped:
        raise ValueError(f"TrainJob fields unknown to {API_VERSION} (Trainer 2.3): {dropped}")


def dropped_fields(given, parsed, path: str = "") -> list[str]:
    """Paths in `given` that are missing from `parsed`: what an API model (kubeflow-trainer-api) silently ignored
    when it parsed `given`."""
    if isinstance(given, dict):
        if not isinstance(parsed, dict):
            return [path or "."]
        out = []
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            out += dropped_fields(value, parsed[key], where) if key in parsed else [where]
        return out
    if isinstance(given, list):
        if not isinstance(parsed, list) or len(parsed) != len(given):
            return [path]
        return [
            p for i, (g, q) in enumerate(zip(given, parsed, strict=True)) for p in dropped_fields(g, q, f"{path}[{i}]")
        ]
    return []


def custom_objects_api(host: str | None = None):
    """CustomObjectsApi from the pod's service account (in-cluster), the kubeconfig, or an explicit `host`."""
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        return client.CustomObjectsApi(client.ApiClient(cfg))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def condition(job: dict, kind: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def run_trainjob(
    api, manifest: dict, namespace: str, *, poll_s: float = 10.0, timeout_s: float | None = None, report=print
) -> dict:
    """Create the TrainJob (or attach to the one already there with that name) and wait for it to end.

    Returns the final job; raises TrainJobFailed on a Failed condition, a vanished job or the timeout."""
    from kubernetes.client.exceptions import ApiException

    name = manifest["metadata"]["name"]
    try:  # Strict: the server refuses a field the CRD does not know instead of dropping it
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict")
        report(f"created TrainJob {namespace}/{name}: {manifest['spec']['trainer']['numNodes']} nodes")
    except ApiException as err:
        if err.status != 409:
            raise
        existing = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        if condition(existing, "Failed"):  # a retry after a failure: start again (it resumes from checkpoints)
            report(f"TrainJob {namespace}/{name} failed before: deleting it and starting again")
            api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
            )
            _wait_gone(api, namespace, name, poll_s, timeout_s)
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict")
            report(f"created TrainJob {namespace}/{name}: {manifest['spec']['trainer']['numNodes']} nodes")
        else:
            report(f"TrainJob {namespace}/{name} exists (a retried launcher): waiting for it")
    started, last = time.monotonic(), None
    while True:
        try:
            job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                raise TrainJobFailed(f"TrainJob {namespace}/{name} was deleted while the launcher waited") from err
            raise
        if done := condition(job, "Complete"):
            report(f"TrainJob {namespace}/{name} complete: {done.get('reason', '')} {done.get('message', '')}".strip())
            return job
        if failed := condition(job, "Failed"):
            raise TrainJobFailed(
                f"TrainJob {namespace}/{name} failed: {failed.get('reason', 'unknown reason')}: "
                f"{failed.get('message', '')} (kubectl -n {namespace} describe trainjob {name}; the checkpoints on "
                "the volume stay, a retry resumes from them)"
            )
        state = _summary(job)
        if state != last:
            report(f"TrainJob {namespace}/{name}: {state}")
            last = state
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TrainJobFailed(f"TrainJob {namespace}/{name} still running after {timeout_s:.0f} s: {state}")
        time.sleep(poll_s)


def _wait_gone(api, namespace: str, name: str, poll_s: float, timeout_s: float | None) -> None:
    from kubernetes.client.exceptions import ApiException

    started = time.monotonic()
    while True:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TrainJobFailed(f"TrainJob {namespace}/{name} was not deleted within {timeout_s:.0f} s")
        time.sleep(poll_s)


def _summary(job: dict) -> str:
    status = job.get("status") or {}
    jobs = status.get("jobsStatus") or []
    parts = [f"{j.get('name')}: active {j.get('active', 0)}, ready {j.get('ready', 0)}" for j in jobs]
    conditions = [c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"]
    return "; ".join(parts + conditions) or "pending"


def run_standalone(args: list[str], procs: int) -> None:
    """One machine: `torchrun --standalone --nproc-per-node procs -m components.train <args>`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    cmd += ["-m", "components.train", *args]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env=os.environ.copy())
