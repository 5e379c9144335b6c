"""`t2v pipeline compile|run|submit`: the KFP DAG as IR YAML, run locally, or sent to a Kubeflow Pipelines host."""

import argparse
import json
import os
from pathlib import Path

DESCRIPTION = """\
The whole training system as one Kubeflow Pipelines v2 DAG: synth-or-ingest -> caption (ParallelFor over shards,
merged) -> precompute -> stage-1 -> stage-2 -> stage-3 -> evaluate -> register.

  compile   write the IR YAML (upload it in the KFP UI, or `submit` it)
  run       run the DAG on this machine through kfp.local (the toy world by default: tiny models, pixel space)
  submit    create a run on a KFP host (--dry-run prints what would be sent)
Pipeline arguments: --set name=value (repeatable; e.g. --set source=s3://bucket/videos/ --set caption_shards=16).
"""


def _arguments(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected name=value, e.g. --set caption_shards=8")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value) if value else ""
    return out


def compile_pipeline(out: str, cluster: str | None = None, image: str | None = None) -> Path:
    if image:
        os.environ["T2V_IMAGE"] = image
    from kfp import compiler

    from pipelines.t2v import ClusterSettings, build_pipeline

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(ClusterSettings.load(cluster)), out)
    return Path(out)


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "pipeline",
        help="the KFP DAG: compile to IR YAML, run locally (kfp.local), submit to a KFP host",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(title="commands", metavar="<command>", required=True)
    c = sub.add_parser("compile", help="write the pipeline's IR YAML")
    c.add_argument("--out", default="t2v-pipeline.yaml", help="(default t2v-pipeline.yaml)")
    c.add_argument("--cluster", help="cluster settings YAML, e.g. configs/cluster/h100.yaml (default: built-in)")
    c.add_argument("--image", help="the project image the components run in (default $T2V_IMAGE or the release)")
    c.set_defaults(run=_compile)
    r = sub.add_parser("run", help="run the DAG locally with kfp.local (toy world by default)")
    r.add_argument("--root", default="outputs/pipeline", help="artifacts, work, MLflow store (default %(default)s)")
    r.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument")
    r.set_defaults(run=_run)
    s = sub.add_parser("submit", help="create a run on a Kubeflow Pipelines host")
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80")
    s.add_argument("--experiment", default="t2v-pipeline", help="(default t2v-pipeline)")
    s.add_argument("--run-name", help="(default: pipeline name and time)")
    s.add_argument("--cluster", help="cluster settings YAML")
    s.add_argument("--image", help="the project image")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument")
    s.add_argument("--namespace", help="the KFP profile namespace to run in (multi-user KFP), e.g. t2v")
    s.add_argument("--service-account", help="the run's service account, e.g. t2v-pipeline (creates TrainJobs)")
    s.add_argument("--dry-run", action="store_true", help="print what would be sent and stop")
    s.set_defaults(run=_submit)


def _compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.out, args.cluster, args.image)
    print(f"pipeline IR: {path} (upload it in the KFP UI, or `t2v pipeline submit --host ...`)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipelines.demo import summary
    from pipelines.local import latest_outputs, run_local, toy_arguments

    root = Path(args.root)
    arguments = toy_arguments(root, **_arguments(args.set))
    run_local(arguments, root)
    evaluation, decision = latest_outputs(root)
    print("\n" + summary(evaluation, decision, arguments["tracking_uri"]))  # after kfp.local's indented log
    return 0


def _submit(args: argparse.Namespace) -> int:
    import tempfile

    arguments = _arguments(args.set)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(str(Path(tmp) / "t2v-pipeline.yaml"), args.cluster, args.image)
        request = {"host": args.host, "experiment": args.experiment, "run_name": args.run_name,
                   "namespace": args.namespace, "service_account": args.service_account,
                   "arguments": arguments, "package_bytes": package.stat().st_size}  # fmt: skip
        if args.dry_run:
            print(json.dumps(request, indent=2))
            return 0
        import kfp

        client = kfp.Client(host=args.host, **({"namespace": args.namespace} if args.namespace else {}))
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, run_name=args.run_name, experiment_name=args.experiment,
            namespace=args.namespace, service_account=args.service_account,
        )  # fmt: skip
    print(f"run {run.run_id} created on {args.host}")
    return 0
