"""The multi-node launcher against a stand-in Kubernetes API server on loopback: the kubernetes client creates a
TrainJob over HTTP, the server validates it against the Trainer 2.3 CRD's schema (trainjob_v1alpha1_schema.yaml,
independent of the launcher's own check) and plays the job's life."""

import json
import threading
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from components.train.launcher import (
    NodeSettings,
    TrainJobFailed,
    custom_objects_api,
    run_trainjob,
    trainjob_manifest,
    validate_trainjob,
)

PREFIX = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/"


@cache
def crd_validator():
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load((Path(__file__).parent / "trainjob_v1alpha1_schema.yaml").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def crd_errors(manifest: dict) -> list[str]:
    """What the API server's validation against the CRD schema refuses, one line per error."""
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator().iter_errors(manifest)]


class StandInAPI(ThreadingHTTPServer):
    """Keeps TrainJobs by (namespace, name); each GET advances a job along `script` (a list of condition
    lists) and returns it; a create of an existing name is 409, an invalid TrainJob 422."""

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), Handler)
        self.jobs, self.script, self.gets, self.created, self.deleted = {}, script, {}, [], []
        self.queries = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def parts(self):
        if not self.path.startswith(PREFIX):
            return None
        rest = self.path[len(PREFIX) :].split("?")[0].split("/")
        return rest  # [namespace, "trainjobs", name?]

    def do_POST(self):
        namespace, plural = self.parts()[:2]
        self.server.queries.append(self.path.partition("?")[2])
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        errors = crd_errors(body)  # what a real server's CRD validation refuses (strict: unknown fields too)
        if errors:
            message = "; ".join(errors)
            return self.reply(422, {"kind": "Status", "status": "Failure", "reason": "Invalid", "message": message})
        key = (namespace, body["metadata"]["name"])
        if plural != "trainjobs":
            return self.reply(404, {"kind": "Status", "reason": "NotFound"})
        if key in self.server.jobs:
            return self.reply(409, {"kind": "Status", "status": "Failure", "reason": "AlreadyExists"})
        self.server.jobs[key] = {**body, "status": {}}
        self.server.created.append(key)
        self.reply(201, self.server.jobs[key])

    def do_DELETE(self):
        namespace, _, name = self.parts()[:3]
        if self.server.jobs.pop((namespace, name), None) is None:
            return self.reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound"})
        self.server.gets.pop(name, None)
        self.server.deleted.append((namespace, name))
        self.reply(200, {"kind": "Status", "status": "Success"})

    def do_GET(self):
        namespace, _, name = self.parts()[:3]
        job = self.server.jobs.get((namespace, name))
        if job is None:
            return self.reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound"})
        n = self.server.gets.get(name, 0)
        self.server.gets[name] = n + 1
        conditions = self.server.script[min(n, len(self.server.script) - 1)]
        job["status"] = {"conditions": conditions, "jobsStatus": [{"name": "node", "active": 2, "ready": 2}]}
        self.reply(200, job)


@pytest.fixture
def api_server(request):
    server = StandInAPI(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


RUNNING = [{"type": "Suspended", "status": "False", "reason": "Resumed", "message": ""}]
COMPLETE = [{"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "jobs completed"}]
FAILED = [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "node-0 OOMKilled (exit 137)"}]


def task_config():
    """What KFP hands the component from the settings on its task (TaskConfig passthrough)."""
    return dsl.TaskConfig(
        resources={"limits": {"nvidia.com/gpu": "8", "cpu": "96", "memory": "1000G"}, "requests": {"cpu": "48"}},
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        volumes=[{"name": "t2v-data", "persistentVolumeClaim": {"claimName": "t2v-data"}}],
        volume_mounts=[{"name": "t2v-data", "mountPath": "/mnt/data"}],
        env=[{"name": "MLFLOW_TRACKING_PASSWORD",
              "valueFrom": {"secretKeyRef": {"name": "mlflow-credentials", "key": "password"}}}],
    )  # fmt: skip


def manifest(name="t2v-run1-stage2"):
    settings = NodeSettings.from_task_config(task_config(), num_nodes=2, procs_per_node=8)
    return trainjob_manifest(name, image="registry.local/t2v-pipeline:0.1.0", args=["--stage", "2"], settings=settings)


@pytest.mark.parametrize("api_server", [[RUNNING, RUNNING, COMPLETE]], indirect=True)
def test_the_launcher_creates_a_valid_trainjob_with_the_task_settings_and_waits_for_success(api_server):
    api = custom_objects_api(f"http://127.0.0.1:{api_server.server_port}")
    reports = []
    job = run_trainjob(api, manifest(), "t2v", poll_s=0.01, report=reports.append)
    assert api_server.created == [("t2v", "t2v-run1-stage2")] and job["status"]["conditions"] == COMPLETE
    sent = api_server.jobs[("t2v", "t2v-run1-stage2")]
    trainer = sent["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["command"] == ["torchrun", "-m", "components.train"] and trainer["args"] == ["--stage", "2"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert sent["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                                          "apiGroup": "trainer.kubeflow.org"}  # fmt: skip
    (patch,) = sent["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node" and pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["volumes"] == [{"name": "t2v-data", "persistentVolumeClaim": {"claimName": "t2v-data"}}]
    (container,) = pod["containers"]
    assert container["name"] == "node" and container["volumeMounts"][0]["mountPath"] == "/mnt/data"
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-credentials"
    assert reports[0] == "created TrainJob t2v/t2v-run1-stage2: 2 nodes" and "complete" in reports[-1]
    assert api_server.queries == ["fieldValidation=Strict"]  # unknown fields refused, not silently dropped


def test_the_crd_schema_refuses_what_the_server_would():
    """The stand-in server's schema is the CRD's, not the launcher's check: each of these breaks the CRD."""
    assert crd_errors(manifest()) == []
    cases = {
        "metadata.name": lambda m: m["metadata"].update(name="t2v_Run1.stage2"),  # not an RFC 1035 label
        "spec.trainer.numNodes": lambda m: m["spec"]["trainer"].update(numNodes="2"),
        "spec.trainer.numProcPerNode": lambda m: m["spec"]["trainer"].update(numProcPerNode="auto"),  # int in 2.3
        "spec.trainer.resourcesPerNode.limits.nvidia.com/gpu": lambda m: m["spec"]["trainer"]["resourcesPerNode"][
            "limits"
        ].update({"nvidia.com/gpu": "eight"}),
        "spec": lambda m: m["spec"].pop("runtimeRef"),
        "spec.trainer": lambda m: m["spec"]["trainer"].update(numNode=2),
        "spec.runtimePatches.0": lambda m: m["spec"]["runtimePatches"][0].pop("manager"),
        "spec.runtimePatches.0.trainingRuntimeSpec.template.spec.replicatedJobs.0.template.spec.template.spec."
        "containers.0.volumeMounts.0": lambda m: m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"][
            "spec"
        ]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0].pop(
            "mountPath"
        ),
    }
    for where, breaks in cases.items():
        bad = manifest()
        breaks(bad)
        errors = crd_errors(bad)
        assert any(e.startswith(f"{where}:") for e in errors), (where, errors)


@pytest.mark.parametrize("api_server", [[RUNNING, FAILED]], indirect=True)
def test_a_failed_trainjob_fails_the_launcher_with_its_reason(api_server):
    api = custom_objects_api(f"http://127.0.0.1:{api_server.server_port}")
    with pytest.raises(TrainJobFailed, match=r"failed: FailedJobs: node-0 OOMKilled \(exit 137\)"):
        run_trainjob(api, manifest(), "t2v", poll_s=0.01, report=lambda _: None)


@pytest.mark.parametrize("api_server", [[RUNNING, COMPLETE]], indirect=True)
def test_a_retried_launcher_attaches_to_its_existing_job(api_server):
    api = custom_objects_api(f"http://127.0.0.1:{api_server.server_port}")
    run_trainjob(api, manifest(), "t2v", poll_s=0.01, report=lambda _: None)
    reports = []
    run_trainjob(api, manifest(), "t2v", poll_s=0.01, report=reports.append)
    assert api_server.created == [("t2v", "t2v-run1-stage2")] and "exists (a retried launcher)" in reports[0]


@pytest.mark.parametrize("api_server", [[RUNNING]], indirect=True)
def test_an_invalid_trainjob_is_refused_and_a_hung_one_times_out(api_server):
    from kubernetes.client.exceptions import ApiException

    api = custom_objects_api(f"http://127.0.0.1:{api_server.server_port}")
    bad = manifest()
    bad["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(ApiException) as err:
        run_trainjob(api, bad, "t2v", poll_s=0.01, report=lambda _: None)
    assert err.value.status == 422
    assert "numNodes" in err.value.body  # the server names the field
    with pytest.raises(ValueError, match=r"unknown to trainer.kubeflow.org/v1alpha1.*spec.trainer.numNode"):
        validate_trainjob({**manifest(), "spec": {**manifest()["spec"], "trainer": {"numNode": 2}}})
    with pytest.raises(TrainJobFailed, match="still running after"):
        run_trainjob(api, manifest("t2v-hung"), "t2v", poll_s=0.01, timeout_s=0.05, report=lambda _: None)


@pytest.mark.parametrize("api_server", [[RUNNING, FAILED]], indirect=True)
def test_a_retry_after_a_failed_trainjob_starts_it_again(api_server):
    api = custom_objects_api(f"http://127.0.0.1:{api_server.server_port}")
    with pytest.raises(TrainJobFailed):
        run_trainjob(api, manifest(), "t2v", poll_s=0.01, report=lambda _: None)
    # the failed job is still there when the retry looks (its 3rd read); the new one runs, then completes
    api_server.script = [RUNNING, COMPLETE, FAILED]
    reports = []
    run_trainjob(api, manifest(), "t2v", poll_s=0.01, report=reports.append)
    assert api_server.deleted == [("t2v", "t2v-run1-stage2")] and len(api_server.created) == 2
    assert "failed before: deleting it" in reports[0] and "complete" in reports[-1]
