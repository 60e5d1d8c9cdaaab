"""Real servers and processes for tests (and scripts/): free ports, waiting for a condition, ending a process group,
an `mlflow server` on 127.0.0.1, and Ray clusters started with `ray start` on this machine.

Standard library only, so that scripts/mlflow_screenshot.py can import it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

# The venv's own entry points (`mlflow`, `ray`), next to its python (not resolved: the venv's python is a symlink).
BIN = Path(sys.executable).parent
MLFLOW_BIN = BIN / "mlflow"
# Loopback never goes through a proxy, whatever http_proxy says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextmanager
def environment_kept() -> Iterator[None]:
    """Give this process back the environment it had on entry. `ray.init` in a test process sets variables that
    `ray.shutdown` leaves (RAY_AUTH_MODE=token among them), and every later sweep subprocess would inherit them: with
    token auth, a driver's trials never start on a test cluster that runs without it."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        if dict(os.environ) != saved:
            os.environ.clear()
            os.environ.update(saved)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, *, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 2xx within timeout_s seconds."""
    try:
        with _DIRECT.open(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def wait_for(ready: Callable[[], bool], *, timeout_s: float, what: str, process: subprocess.Popen | None = None,
             every_s: float = 0.1) -> None:
    """Poll `ready` every `every_s` seconds until it holds. Raise if `process` (when given) ends first, or after
    timeout_s seconds: a wait for a condition, never a sleep that guesses how long it takes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"waiting for {what}: the process ended (exit {process.returncode}) before it")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}: not reached within {timeout_s:g} s")
        time.sleep(every_s)


def stop_process_group(process: subprocess.Popen, *, grace_s: float = 15.0) -> None:
    """SIGTERM the process group a Popen(start_new_session=True) leads, SIGKILL what outlives grace_s seconds."""
    if _signal_group(process.pid, signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        # poll() reaps the leader: an unreaped (zombie) leader would keep its group alive until the deadline.
        while time.monotonic() < deadline and (process.poll() is None or _signal_group(process.pid, 0)):
            time.sleep(0.1)
        _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send sig to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store (`db`, default root/mlflow.db) and served artifacts under
    `root`.

    start() and stop() can be called repeatedly: a restart keeps the port and the database, as a
    real server coming back after an outage would.
    """

    def __init__(self, root: Path, *, port: int | None = None, db: Path | None = None) -> None:
        self.root = Path(root)
        self.db = Path(db) if db else self.root / "mlflow.db"
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
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]
        # No job runner (it forks huey consumers that a test does not need and that outlive a stop), and no
        # telemetry (there is no network to send it to).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true"}
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
        try:
            wait_for(self.answers, timeout_s=timeout_s, what=f"mlflow server at {self.uri}", process=self._proc,
                     every_s=0.2)
        except (RuntimeError, TimeoutError) as error:
            self.stop()
            raise RuntimeError(f"{error}; see {self.root / 'server.log'}") from None
        return self.uri

    def answers(self) -> bool:
        return answers(f"{self.uri}/health")

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after timeout_s seconds."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        stop_process_group(proc, grace_s=timeout_s)

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


class Process(NamedTuple):
    pid: int
    parent: int
    group: int
    environ: bytes


def processes() -> Iterator[Process]:
    """Every process we may read."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()  # after "(name)", which may hold spaces
                yield Process(int(entry.name), int(fields[1]), int(fields[2]), (entry / "environ").read_bytes())


def cluster_processes(temp: Path) -> list[int]:
    """The processes of a test Ray cluster that runs with RAYSWEEP_TEST_CLUSTER=temp and its --temp-dir(s) in temp:
    those whose environment holds that marker (trial workers that outlive a killed raylet too), and those that hold a
    file open in temp: Ray's dashboard and runtime-env agents write their process title over their environment.
    Never this process, which holds its own driver's log files there after a test's ray.init(address=...)."""
    marker, inside = f"RAYSWEEP_TEST_CLUSTER={temp}".encode(), f"{temp}/"
    found = []
    for process in processes():
        if process.pid == os.getpid():
            continue
        if marker in process.environ.split(b"\0") or any(path.startswith(inside) for path in _open_files(process.pid)):
            found.append(process.pid)
    return found


def _open_files(pid: int) -> Iterator[str]:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                yield os.readlink(fd)


def stop_cluster(temp: Path, *, grace_s: float = 15.0) -> None:
    """SIGTERM every process of the test cluster in temp, SIGKILL what outlives grace_s seconds; remove temp."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in cluster_processes(temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while cluster_processes(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
    shutil.rmtree(temp, ignore_errors=True)


class RayCluster:
    """A Ray cluster on this machine: a head and, optionally, worker raylets, each started by `ray start` on its
    own loopback address with its own temp dir. stop() ends every process the cluster started, by their own ids.

    Ray replaces 127.0.0.1 and "localhost" by the machine's outward address (ray._raylet.is_localhost) but keeps any
    other loopback address, so a multi-node cluster gives each node its own (127.0.0.2, ...) and Tune's `node_ip`
    names the node a trial ran on.
    """

    def __init__(self, *, env: dict[str, str], head_ip: str = "127.0.0.1") -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # unix socket paths must stay under ~107 chars
        self.address = f"{head_ip}:{free_port()}"
        # Every process of this cluster inherits the marker (cluster_processes finds them by it and by their files).
        self.env = {**env, "RAY_AUTH_MODE": "disabled", "RAYSWEEP_TEST_CLUSTER": str(self.temp)}
        self.env.pop("RAY_ADDRESS", None)
        self.groups: dict[str, int] = {}  # node name -> process group of what its `ray start` launched
        self.ips = {"head": head_ip}

    def start_head(self, *options: str) -> None:
        self._ray_start({"head": ["--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false",
                                  f"--dashboard-port={free_port()}", *options]})

    def add_workers(self, workers: dict[str, tuple[str, list[str]]]) -> None:
        """Start worker raylets {name: (loopback ip, `ray start` options)} that join the head, all at once."""
        self.ips.update({name: ip for name, (ip, _) in workers.items()})
        self._ray_start({name: [f"--address={self.address}", *options] for name, (_, options) in workers.items()})

    def _ray_start(self, nodes: dict[str, list[str]]) -> None:
        started = {}
        for name, options in nodes.items():
            argv = [str(BIN / "ray"), "start", *options, f"--node-ip-address={self.ips[name]}",
                    f"--temp-dir={self.temp / name}", "--disable-usage-stats",
                    f"--dashboard-agent-listen-port={free_port()}"]
            with open(self.temp / f"{name}.log", "w") as log:
                started[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True)
            self.groups[name] = started[name].pid
        for name, process in started.items():
            if process.wait(timeout=240) != 0:
                raise RuntimeError(f"`ray start` of node {name} failed:\n"
                                   + (self.temp / f"{name}.log").read_text()[-3000:])

    def node_at(self, ip: str) -> str:
        return next(name for name, node_ip in self.ips.items() if node_ip == ip)

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of the node at once, its trial workers too, as a crashed or reclaimed machine
        vanishes. (Killing only the raylet is not that: a worker then trains on, and reports to the driver, until the
        head declares the node dead, long enough to finish a short trial where it was.)"""
        running = list(processes())
        doomed = {p.pid for p in running if p.group == self.groups[name]}
        while more := {p.pid for p in running if p.parent in doomed} - doomed:  # workers may lead groups of their own
            doomed |= more
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def ours(self) -> list[int]:
        return cluster_processes(self.temp)

    def stop(self) -> None:
        stop_cluster(self.temp)
