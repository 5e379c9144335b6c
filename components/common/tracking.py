"""MLflow tracking that never holds training up.

Every call is queued and sent by a background thread with short HTTP timeouts and no retries; if the tracking
server is slow or gone, records wait in a bounded queue and are dropped with a warning when it is full, and
`close` waits a bounded time. With no tracking URI nothing is sent. Metrics can also be appended to a local
JSON-lines file (`local_log`), which reports read when there is no server.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def default_artifact_location(uri: str) -> str | None:
    """For a local sqlite store, artifacts beside the database (MLflow's default is ./mlruns in the working
    directory); for a server, its own artifact store."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_id(client, name: str, uri: str) -> str:
    """The id of experiment `name`, created (artifacts beside a local store) when it does not exist."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name, default_artifact_location(uri))


CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")  # what MLflow's client sends as basic auth


class AccessDenied(PermissionError, ValueError):
    """The MLflow server refused who is asking (401) or what they ask (403): bad credentials are bad input."""


def access_denied(err: Exception, uri: str) -> AccessDenied | None:
    """For MLflow's 401 or 403, an error that says what to set or grant; None for any other error."""
    from mlflow.exceptions import MlflowException

    status = err.get_http_status_code() if isinstance(err, MlflowException) else None
    user = os.environ.get(CREDENTIALS[0])
    if status == 401:
        given = f"as user {user!r}" if user else f"without credentials ({' and '.join(CREDENTIALS)} are not set)"
        return AccessDenied(
            f"MLflow at {uri} refused the request {given} (401 unauthenticated): set {CREDENTIALS[0]} and "
            f"{CREDENTIALS[1]} to the pipeline identity's username and password (in a cluster, the mlflow-credentials "
            "Secret; docs/cluster.md)"
        )
    if status == 403:
        return AccessDenied(
            f"MLflow at {uri} denied user {user!r} this request (403 permission denied): other users may only "
            f"read; run it as the pipeline identity, with {CREDENTIALS[0]} and {CREDENTIALS[1]} set to its "
            "username and password (in a cluster, the mlflow-credentials Secret; `t2v pipeline users` sets it up)"
        )
    return None


def check_access(client, uri: str) -> None:
    """One cheap authenticated request; AccessDenied (naming the variables to set) if the server refuses it."""
    try:
        client.search_experiments(max_results=1)
    except Exception as err:
        if denied := access_denied(err, uri):
            raise denied from None
        raise


def git_commit() -> str | None:
    """The commit of the code that runs: the image's (T2V_GIT_COMMIT, a build argument of docker/), else the
    checked-out commit of the working directory's repository; None when neither is known."""
    import os
    import subprocess

    if os.environ.get("T2V_GIT_COMMIT"):
        return os.environ["T2V_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


class Tracker:
    def __init__(
        self,
        uri: str | None,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        *,
        timeout_s: float = 5.0,
        max_queue: int = 10_000,
        retry_after_s: float = 30.0,
        system_metrics_s: float | None = 10.0,
        local_log: str | Path | None = None,
        run_id: str | None = None,
    ):
        self.enabled = uri is not None
        # every metric also goes, synchronously, to a local JSON-lines file (for reports that need no server)
        self.local_log = Path(local_log) if local_log is not None else None
        self.retry_after_s = retry_after_s
        self.run_id: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()  # set by close(): a retry in progress stops waiting
        self._dropped = 0
        if not self.enabled:
            return
        # bounded client behaviour: a dead server costs at most timeout_s per call, in the background thread
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, timeout_s))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        try:
            self.run_id = self._reopen(run_id) if run_id else None
            if self.run_id is None:
                exp_id = experiment_id(self.client, experiment, uri)
                self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags or {}).info.run_id
        except Exception as err:  # tracking must not stop training
            reason = access_denied(err, uri) or err
            log.warning("MLflow at %s unavailable (%s); training continues without tracking", uri, reason)
            self.enabled = False
            return
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()
        self._system = None
        if system_metrics_s:
            try:  # CPU, memory, disk, network and GPU utilisation, sampled by MLflow's own monitor thread
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                self._system = SystemMetricsMonitor(self.run_id, sampling_interval=system_metrics_s, tracking_uri=uri)
                self._system.start()
            except Exception as err:
                log.warning("system metrics unavailable: %s", err)

    def _reopen(self, run_id: str) -> str | None:
        """Go on logging into `run_id` (a resumed stage's run), marked running again; None when this server does
        not have it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s not found on this server; the resumed stage logs into a new run", run_id)
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _put(self, item) -> None:
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            if self._dropped in (1, 100, 10_000):
                log.warning("MLflow queue full: %d records dropped so far", self._dropped)

    def _work(self) -> None:
        """Send the queue in order. A record the server does not take waits and is sent again (backing off up to
        retry_after_s), so a restarted or briefly unreachable server loses nothing; meanwhile the queue fills (up to
        max_queue records, then new ones are dropped) and training never waits."""
        pending, delay = None, 0.0
        while True:
            item = pending if pending is not None else self._queue.get()
            if item is None:
                return
            try:
                self._send(*item)
            except Exception as err:
                if not _transient(err):  # the server refused it (e.g. a changed param of a resumed run): drop it
                    log.warning("MLflow refused %s: %s", item[0], err)
                    pending, delay = None, 0.0
                    continue
                if pending is None:
                    log.warning("MLflow %s not recorded (%s); sending it again until the server answers", item[0], err)
                pending, delay = item, min(self.retry_after_s, max(1.0, 2 * delay))
                if self._stop.wait(delay):  # close() gave up on the server
                    return
                continue
            if pending is not None:
                log.warning("MLflow answers again; the records kept meanwhile follow")
            pending, delay = None, 0.0

    def _send(self, kind: str, payload) -> None:
        from mlflow.entities import Metric, Param

        if kind == "metrics":
            step, values, timestamp = payload
            metrics = [Metric(k, float(v), timestamp, step) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        elif kind == "params":
            params = [Param(k, v) for k, v in payload.items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        elif kind == "tags":
            for k, v in payload.items():
                self.client.set_tag(self.run_id, k, v)
        elif kind == "artifact":
            path, artifact_path = payload
            self.client.log_artifact(self.run_id, path, artifact_path)
        elif kind == "end":
            self.client.set_terminated(self.run_id, payload)

    def log_params(self, params: dict) -> None:
        self._put(("params", flatten(params)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._put(("tags", {k: str(v) for k, v in tags.items()}))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import json
        import time

        if self.local_log is not None:
            self.local_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.local_log, "a") as f:
                f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._put(("metrics", (step, dict(metrics), int(time.time() * 1000))))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._put(("artifact", (str(path), artifact_path)))

    @property
    def dropped(self) -> int:
        return self._dropped

    def close(self, status: str = "FINISHED", timeout_s: float = 15.0) -> None:
        """Send what is queued (waiting at most `timeout_s`), then end the run."""
        if not self.enabled:
            return
        if self._system is not None:
            threading.Thread(target=self._system.finish, daemon=True).start()  # never wait on it
        self._put(("end", status))
        self._put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._stop.set()
            log.warning("MLflow did not take the last records within %.0f s; they are dropped", timeout_s)
        self.enabled = False


def _transient(err: Exception) -> bool:
    """A failure worth sending again: no answer, or a server error (5xx); not a refusal (4xx)."""
    from mlflow.exceptions import MlflowException

    return not isinstance(err, MlflowException) or err.get_http_status_code() >= 500


def read_metrics_log(path: Path) -> dict[int, dict]:
    """step -> metrics from a training metrics.jsonl (a resumed run's repeated steps: the last record wins)."""
    steps: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            steps.setdefault(int(record.pop("step")), {}).update(record)
    return dict(sorted(steps.items()))


PLOTTED = ("loss", "val_loss", "lr", "grad_norm")  # what the inputs determine (throughput and memory are not)


def write_plots(log: Path, folder: Path) -> list[Path]:
    """DVC plots of a training log: `<folder>/<metric>.json`, a list of {step, <metric>} per metric in PLOTTED
    (`dvc plots show` reads JSON, not JSON lines)."""
    steps = read_metrics_log(log) if log.exists() else {}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PLOTTED:
        rows = [{"step": step, name: values[name]} for step, values in steps.items() if name in values]
        path = folder / f"{name}.json"
        path.write_text(json.dumps(rows, indent=1) + "\n")
        written.append(path)
    return written
