"""The command line: `python -m raysweep.run SWEEP_FILE [options]`, which builds the one tune.Tuner(...).

Flow: parse -> load and validate the sweep -> preflight: MLflow, storage, --address, the data (exit 2 on any of them,
before Ray starts) -> connect to Ray and check the per-trial resources can be met -> open the parent run ->
Tuner.fit() -> evaluate the best trial on the test split -> report -> print a summary. A failure after the parent run
opened ends every open run FAILED, writes its traceback to the results folder and exits 1.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from raysweep.sweep import Sweep, SweepError
from raysweep.validate import resolve

if TYPE_CHECKING:
    from raysweep.data import Dataset
    from raysweep.results import Outcome

USAGE_ERROR = 2
NO_TRIAL_SUCCEEDED = FAILED = 1  # no trial succeeded, or the sweep failed after it started
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage on two lines; the contract is one line
        print(f"raysweep.run: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m raysweep.run", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("sweep_file", type=Path, help="a sweep file, e.g. sweeps/quickstart.py")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--num-samples", type=int, help="number of trials")
    parser.add_argument("--max-epochs", type=int, help="epoch budget per trial (ASHA's max_t)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a Sweep field, fixed.SETTING or space.SETTING; repeatable")
    parser.add_argument("--smoke", action="store_true", help="2 trials, 1 epoch, a small data subset")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the sweep and sample configs")
    parser.add_argument("--resume", action="store_true", help="continue the latest interrupted run of this sweep")
    parser.add_argument("--storage", help="where Ray Tune keeps trial state (path or s3://); default ./results")
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's, sqlite:///mlflow.db)")
    parser.add_argument("--data-dir", help="data root (default: $RAYSWEEP_DATA_DIR, else ~/.cache/raysweep/data)")
    parser.add_argument("--seed", type=int, help="seed for the searcher and the trials")
    parser.add_argument("--repeats", type=int, help="seeds per configuration (seed, seed+1, ...); the searcher and "
                        "ASHA see their mean")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--verbose", action="store_true", help="Tune's tables and Ray's logs, not the live line")
    shown.add_argument("--quiet", action="store_true", help="print nothing but the summary")
    return parser.parse_args(argv)


def resolve_sweep(args: argparse.Namespace) -> Sweep:
    """The sweep file with every command-line option applied, validated once; then the options' own checks."""
    options = {"num_samples": args.num_samples, "max_epochs": args.max_epochs, "seed": args.seed,
               "repeats": args.repeats}
    sweep = resolve(args.sweep_file, options=options, assignments=args.overrides, smoke=args.smoke)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise SweepError(f"`--data-dir` must be an existing folder, but got --data-dir={args.data_dir!r}")
    address = args.address or os.environ.get("RAY_ADDRESS")
    if sweep.gpu != "auto" and sweep.gpu > 0 and not address:
        import torch

        if torch.cuda.device_count() < sweep.gpu:
            raise SweepError(
                f"`gpu` must be <= the {torch.cuda.device_count()} GPU(s) of this machine for a local run, but got "
                f"gpu={sweep.gpu}; set --set gpu=0 or run on a cluster with --address"
            )
    return sweep


def fail(*messages: str) -> NoReturn:
    for message in messages:  # the contract: one line on stderr per mistake, whatever the message was
        print(f"raysweep.run: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def connect(sweep: Sweep, *, address: str | None) -> float:
    """Start a local Ray on all cores, or join a cluster; fail now if no node can ever host a trial.

    Returns the GPU share each trial asks for (`gpu="auto"` resolved against what the cluster has or can start)."""
    import ray

    from raysweep import resources

    # A local Ray would start one idle worker per core for this driver: Tune's trial actors never take them (Tune
    # gives its actors a runtime env, idle workers have none), so they only took CPU from Ray's start and the first
    # trials. A cluster keeps its own settings.
    local = {} if address else {"_system_config": {"prestart_worker_first_driver": False}}
    ray.init(address=address, include_dashboard=False, log_to_driver=True, configure_logging=False, **local)
    capacity = resources.cluster_capacity()
    gpu = resources.trial_gpu(sweep.gpu, capacity=capacity)
    try:
        resources.check_feasible(cpu=sweep.cpu, gpu=gpu, capacity=capacity)
    except resources.InfeasibleError:
        ray.shutdown()
        raise
    return gpu


EXPERIMENT_END_FILE = "experiment_end.json"  # the trial callback's last word: see tracking_callback.ExperimentEnd


def run(
    sweep: Sweep, *, dataset: Dataset, sweep_file: Path, storage_path: str, previous: str | None, tracking_uri: str,
    gpu: float,
) -> Outcome:
    """Run the sweep on Ray Tune, or resume its run `previous`, and record it in MLflow; each trial asks Ray for
    `sweep.cpu` CPUs and `gpu` (the resolved share) of a GPU."""
    import ray
    from ray import tune

    from raysweep import chart_files, failures, progress, results, search, storage, tracking, trainable
    from raysweep.tracking_callback import MlflowTrialCallback
    from raysweep.trial_log import LOG_FILE, ExperimentEnd

    # 1. Where this run lives: its folder in the storage, and its results folder on this machine.
    run_name = previous or time.strftime("%Y-%m-%d_%H-%M-%S")
    run_path = storage.storage_uri(storage_path, run_name)  # an s3:// URI's query stays at its end
    results_dir = storage.local_results_dir(run_path, sweep.name)
    if previous is not None and (finished := results.finished_outcome(results_dir)) is not None:
        return finished  # a finished sweep stays finished: no run reopened, no model logged again, no file rewritten
    end_file = results_dir / EXPERIMENT_END_FILE
    end_file.unlink(missing_ok=True)  # an earlier execution's, on --resume

    # 2. The sweep's parent run in MLflow (the same run again on --resume).
    sweep_run = tracking.start_sweep_run(
        tracking_uri=tracking_uri,
        experiment_name=sweep.name,
        sweep_key=run_path,
        params=tracking.sweep_params(sweep, dataset=dataset) | {"gpu_per_trial": str(gpu)},
        tags=tracking.source_tags(sweep_file),
        artifacts={sweep_file.name: sweep_file.read_text(),
                   "resolved_sweep.json": json.dumps(sweep.to_dict(), default=str)},
        resume=previous is not None,
    )

    # From here on any failure ends every open run of this sweep FAILED, its traceback beside the results.
    with failures.failing_cleanly(sweep_run, log_file=results_dir / failures.ERROR_LOG):
        # 3. The trainable: the data goes into the object store once, and every trial reads it zero-copy.
        trial = tune.with_resources(tune.with_parameters(trainable.trainable, data=dataset, repeats=sweep.repeats),
                                    {"cpu": sweep.cpu, "gpu": gpu})

        # 4. The one Tuner: the saved one on --resume (with its own copy of the callback), else a new one.
        callback = MlflowTrialCallback(sweep_run=sweep_run, max_epochs=sweep.max_epochs, end_file=end_file,
                                       trial_log=results_dir / LOG_FILE)
        if previous is not None:
            repaired = storage.repair_searcher_state(run_path, search.search_algorithm(sweep)[0])
            if repaired:
                print(f"warning: {repaired}", file=sys.stderr)
            tuner = tune.Tuner.restore(run_path, trainable=trial, resume_errored=True)
        else:
            searcher, param_space = search.search_algorithm(sweep)
            tuner = tune.Tuner(
                trial,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric=sweep.metric,
                    mode=sweep.mode,
                    search_alg=searcher,
                    scheduler=search.scheduler(sweep),
                    num_samples=sweep.num_samples,
                    # HyperOpt searchers carry their own ConcurrencyLimiter (search_algorithm); Tune warns if told twice
                    max_concurrent_trials=(sweep.max_concurrent or None) if sweep.searcher == "grid" else None,
                    reuse_actors=True,  # a new trial reuses a finished one's worker: no new process, no torch import
                ),
                run_config=tune.RunConfig(
                    name=run_name,
                    storage_path=storage_path,
                    callbacks=[
                        callback,
                        progress.ProgressCallback(metric=sweep.metric, mode=sweep.mode, max_epochs=sweep.max_epochs),
                    ],
                    # A crashed trial (killed worker, lost node) restarts from its last checkpoint.
                    failure_config=tune.FailureConfig(max_failures=3),
                    # Checkpoint every epoch and keep them all while the sweep runs: Tune's own num_to_keep deletes a
                    # checkpoint before its experiment state stops naming it, which strands a trial when the driver is
                    # killed in between. storage.prune_checkpoints trims each trial to its best and latest after fit().
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=None, checkpoint_score_attribute=sweep.metric, checkpoint_score_order=sweep.mode
                    ),
                    verbose=progress.tune_verbosity(progress.current_mode()),  # the console: see progress.py
                ),
            )

        # 5. Fit; then trim the checkpoints, and the work after fit: table, test split, CSV, report, summary run.
        preloaded = threading.Thread(target=tracking.preload_model_export, name="raysweep-preload", daemon=True)
        preloaded.start()
        result_grid = tuner.fit()
        progress.mute_workers()
        preloaded.join()
        storage.prune_checkpoints(result_grid, metric=sweep.metric, mode=sweep.mode)
        # Nothing after fit needs Ray (checkpoints are read from the storage): it stops, 2-3 s of waiting for its
        # processes to end, while the work after fit runs.
        ray_stopped = threading.Thread(target=ray.shutdown, name="raysweep-ray-shutdown", daemon=True)
        ray_stopped.start()
        chart_files.start_helpers()  # the report's drawing processes start up while the work before the report runs
        try:
            return results.finish(sweep, result_grid=result_grid, dataset=dataset, sweep_run=sweep_run,
                                  results_dir=results_dir, experiment_end=ExperimentEnd.read(end_file))
        finally:
            chart_files.release_helpers()  # none left waiting when the report was not drawn
            ray_stopped.join()


def main(argv: list[str] | None = None) -> int:
    # 1. The sweep and the options. Bad input exits 2 here, with one line, before anything starts.
    args = parse_args(argv)
    try:
        sweep = resolve_sweep(args)
    except SweepError as exc:
        fail(*str(exc).splitlines())  # every mistake in the sweep, one line each

    # 2. What the sweep needs from outside, checked before Ray starts and any MLflow run opens (see preflight). A dry
    #    run takes these same checks: it passes exactly when the real run would get past its start.
    from raysweep import mlflow_runs, preflight, resources
    address = args.address or os.environ.get("RAY_ADDRESS")
    try:
        ready = preflight.check(sweep, tracking_uri=args.tracking_uri, storage_option=args.storage, address=address,
                                data_dir=args.data_dir, resume=args.resume)
        if args.dry_run and not address:  # a local Ray would get this machine's cores; connect() checks a cluster
            preflight.check_local_resources(sweep)
    except preflight.PreflightError as exc:
        fail(str(exc))
    if not args.dry_run:
        from raysweep import progress

        progress.quiet_ray(progress.console_mode(verbose=args.verbose, quiet=args.quiet))
    store = None if args.dry_run else mlflow_runs.open_store_in_background(ready.tracking_uri)  # while Ray starts
    try:
        if not args.dry_run or address:  # joining a cluster starts nothing; a local Ray is only started for real
            gpu = connect(sweep, address=address)
    except resources.InfeasibleError as exc:
        fail(str(exc))
    except ConnectionError as exc:  # e.g. --address auto with no cluster on this machine
        fail(f"`--address` must name a running Ray cluster, but got --address={address!r}: {exc}")
    finally:
        if store is not None:
            store.join()  # before anything else opens the store: two threads creating one sqlite store would race
    if args.dry_run:
        if address:
            import ray

            ray.shutdown()  # leaves the cluster; it stops nothing there
        preflight.print_dry_run(sweep)
        return 0

    # 3. The sweep, then the summary and the exit code. A failure after the sweep run opened says in one line what
    #    failed and where its traceback is (tracking.failing_cleanly has ended the open runs).
    from raysweep import console, failures

    started = time.time()
    try:
        outcome = run(sweep, dataset=ready.dataset, sweep_file=args.sweep_file, storage_path=ready.storage_path,
                      previous=ready.previous, tracking_uri=ready.tracking_uri, gpu=gpu)
    except failures.SweepFailedError as exc:
        print(f"raysweep.run: error: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:  # Ctrl-C outside Tune's own handling (which ends fit() with trials interrupted)
        print("raysweep.run: interrupted; any MLflow run of the sweep left open was ended KILLED", file=sys.stderr)
        return INTERRUPTED
    console.print_summary(outcome, seconds=time.time() - started)
    if len(outcome.table) and (outcome.table.status == "interrupted").any():
        return INTERRUPTED
    return 0 if outcome.best is not None else NO_TRIAL_SUCCEEDED


def cli() -> NoReturn:
    """The command's entry point: main(), then exit without the interpreter's own teardown.

    The atexit handlers (Ray's shutdown, MLflow's and logging's flushes) and the standard streams' flushes run first;
    what is skipped is finalizing the modules torch, Ray and gRPC loaded, which took 4-6 s after every sweep with
    nothing left to write (docs/PERFORMANCE.md, section 5). Only the main thread is alive by then."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
