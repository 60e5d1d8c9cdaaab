"""Where Ray Tune keeps a sweep: its storage URI, the runs in it, the searcher state and the checkpoints.

A sweep's runs live under <storage>/<sweep name>/<run name>, on a local folder, NFS or s3://. Everything here works on
any of them through pyarrow's file systems, except what only a local folder can suffer (a cut file).
"""

from __future__ import annotations

import contextlib
import pickle
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from raysweep.status import best_of, epoch_of

if TYPE_CHECKING:
    from ray.tune import Checkpoint, Result, ResultGrid


def storage_uri(storage: str, name: str) -> str:
    """Where Ray Tune keeps this sweep's runs: an absolute local folder, or a URI such as s3://bucket/path.

    A URI's query stays at the end, where pyarrow and Ray Tune read it: s3://bucket/path?endpoint_override=HOST:PORT
    becomes s3://bucket/path/<name>?endpoint_override=HOST:PORT.
    """
    if "://" in storage:
        uri = urllib.parse.urlsplit(storage)
        return uri._replace(path=f"{uri.path.rstrip('/')}/{name}").geturl()
    return str(Path(storage).expanduser().resolve() / name)


def latest_run(storage_path: str) -> str | None:
    """The newest run folder under the sweep's storage that Ray Tune can restore, or None."""
    import pyarrow.fs
    from ray import tune

    fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)  # reads a URI's query (endpoint_override=...) too
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    names = sorted((i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory), reverse=True)
    return next((n for n in names if tune.Tuner.can_restore(storage_uri(storage_path, n))), None)


def repair_searcher_state(run_path: str, fresh_searcher: Any) -> str | None:
    """Replace a saved searcher state that cannot be read by `fresh_searcher`'s; a warning line, or None.

    Tune copies its snapshot from the driver's staging folder to a local storage folder file by file, in place: a
    driver killed during that copy can leave an empty searcher-state-*.pkl. Tune then logs "Failed to restore the run
    state" and waits forever with nothing to run. A fresh searcher (the sweep's own, unseeded by results) lets the
    restored experiment go on: its finished trials stay, its unfinished ones continue, the trial count is kept (in
    search_gen_state), and only later suggestions lose what the old searcher had learnt. S3 writes whole objects, so
    a remote storage never holds a cut file."""
    if "://" in run_path:
        return None
    saved = sorted(Path(run_path).glob("searcher-state-*.pkl"))  # the newest is the one Tune restores
    if not saved:
        return None
    try:
        with open(saved[-1], "rb") as handle:
            pickle.load(handle)  # our own driver wrote it; Tune itself unpickles it on restore
        return None
    except Exception as exc:
        fresh_searcher.save(str(saved[-1]))
        return (f"the searcher's saved state {saved[-1].name} could not be read ({type(exc).__name__}: the driver was "
                f"killed while saving it); the search goes on with a fresh searcher: every trial is kept, later "
                f"suggestions do not learn from the earlier ones")


def prune_checkpoints(result_grid: ResultGrid, *, metric: str, mode: str) -> None:
    """Delete every checkpoint but each trial's best (status.best_of over its checkpoints) and its latest.

    Runs once fit() has returned, after Tune's final experiment state is saved: that state names each trial's latest
    checkpoint, so a later --resume still finds everything it restores from. Storage errors are ignored; a checkpoint
    left behind costs disk, never a result.
    """
    for result in result_grid:
        if not result.best_checkpoints:  # a trial that never reported, or failed before its first checkpoint
            continue
        _, best_epoch = best_of((m for _, m in result.best_checkpoints), metric=metric, mode=mode)
        keep = {c.path for c in (checkpoint_of(result, epoch=best_epoch), result.checkpoint) if c is not None}
        for checkpoint, _ in result.best_checkpoints:
            if checkpoint.path not in keep:
                with contextlib.suppress(OSError):
                    checkpoint.filesystem.delete_dir(checkpoint.path)


def checkpoint_of(result: Result, *, epoch: int | None) -> Checkpoint | None:
    """The trial's checkpoint of that epoch (the first, if a restart saved it twice), or None."""
    return next((c for c, metrics in result.best_checkpoints if epoch is not None and epoch_of(metrics) == epoch), None)


def local_results_dir(run_path: str, name: str) -> Path:
    """The run's folder when the storage is local; else results/<sweep>/<run> in the working directory.

    Ray Tune gives a remote experiment's path without its scheme (bucket/path/<sweep>/<run> for S3), and a local
    one as an absolute path (storage_uri resolves it), so a path that is not absolute is remote.
    """
    if "://" not in run_path and Path(run_path).is_absolute():
        return Path(run_path)
    run = PurePosixPath(urllib.parse.urlsplit(run_path).path.rstrip("/")).name
    return Path("results").resolve() / name / run
