"""Real servers for tests: an `mlflow server` on 127.0.0.1 that a test starts, stops and restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

# The venv's own `mlflow` entry point, next to its python (not resolved: the venv's python is a symlink).
MLFLOW_BIN = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store and served artifacts under `root`.

    start() and stop() can be called repeatedly: a restart keeps the port and the database, as a
    real server coming back after an outage would.
    """

    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:  # Tune pickles callbacks that hold a server; a copy cannot stop it
        return {**self.__dict__, "_proc": None}

    def start(self, *, wait: bool = True, timeout_s: float = 90.0) -> str:
        """Start the server; unless wait=False, wait (at most timeout_s seconds) until it answers."""
        if self._proc is not None:
            return self.wait_until_answering(timeout_s=timeout_s) if wait else self.uri
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            str(MLFLOW_BIN), "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]
        # No job runner: it forks huey consumers that a test does not need and that outlive a stop.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.root / "server.log", "ab") as log:
            # Its own session, so stop() can end the server and its uvicorn worker by this group id.
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self.wait_until_answering(timeout_s=timeout_s) if wait else self.uri

    def wait_until_answering(self, *, timeout_s: float = 90.0) -> str:
        """Wait until /health answers; raise if the server exits or is still silent after timeout_s seconds."""
        if self._proc is None:
            raise RuntimeError("mlflow server is not started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"mlflow server exited at start; see {self.root / 'server.log'}")
            if self.answers():
                return self.uri
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout_s:g} s; see {self.root / 'server.log'}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after timeout_s seconds."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
            time.sleep(0.1)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextmanager
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """Yield the http URI of a fresh `mlflow server` whose store and artifacts live under tmp_path."""
    with MlflowServer(tmp_path) as server:
        yield server.uri


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
