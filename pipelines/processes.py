"""Running local servers: each in its own process group, waited for until ready, stopped with its children, their
failures shown with the last lines of their logs (pipelines.services starts PostgreSQL, S3 and MLflow with these)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

LOG_LINES = 30  # how much of a server's log an error quotes


class ServiceError(RuntimeError):
    """A service's program is missing, or the service did not come up."""


def _spawn(command: list, log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start a server in its own process group (so Ctrl-C reaches us, not it, and one signal stops all of it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(part) for part in command], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip


def _stop_process(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL what is left of it after `grace` seconds."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    # the leader may be gone while children (uvicorn's worker) linger in its group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _run(command: list, what: str, log: Path) -> None:
    """Run a short command; on failure raise with its output and the last lines of the server's log."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if result.returncode:
        output = (result.stdout + result.stderr).strip()
        raise ServiceError(f"{what} failed (exit {result.returncode}):\n{output}\n{_tail(log)}")


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    """Poll `ready` until it holds; raise with the log's last lines if the process exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.returncode} while starting\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not come up within {timeout:g} s\n{_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()[-LOG_LINES:] if log.exists() else []
    return f"last lines of {log}:\n" + "\n".join(lines)


def _succeeds(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception:
        return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (all held open together, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


# ----------------------------------------------------------------------------- stopping a local run as a whole


class Stopped(BaseException):
    """The run got SIGTERM, SIGHUP or SIGINT (an evicted pod, `kill`, a closed terminal, Ctrl-C). A BaseException,
    like KeyboardInterrupt, so that no `except Exception` on the way (kfp.local's among them) takes it for a
    failure."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class StopOnSignal:
    """While open, SIGTERM, SIGHUP and SIGINT send SIGTERM to every process this one has started (children of
    children included: a signal to this process alone reaches none of them, and kfp.local waits for its running
    task before it lets an exception through) and raise Stopped in the main thread. The processes are remembered,
    so that `end_all` finishes off each even after its parent died and left it to init."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._seen: list = []

    def __enter__(self) -> StopOnSignal:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        import psutil

        self.remember()
        for p in self._seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        if self.received is None:  # a second signal while stopping does not interrupt the stopping
            self.received = signum
            raise Stopped(signum)

    def remember(self) -> None:
        import psutil

        self._seen += psutil.Process().children(recursive=True)

    def end_all(self, grace: float = 10.0) -> int:
        """SIGTERM every process started from here (those remembered and those alive now), SIGKILL what is left
        after `grace` seconds; how many there were."""
        import psutil

        self.remember()
        procs = list({p.pid: p for p in self._seen if p.is_running()}.values())
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        return len(procs)
