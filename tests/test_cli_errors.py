"""The command line's contract for bad input: exit 2, one line on stderr naming the field and the rule, no traceback,
and Ray never started. Every case runs through `raysweep.run.main` in-process (a subprocess costs ~4 s of imports on
2 cores); a representative handful, several without --dry-run, also run as real `python -m raysweep.run` processes.
Every file in sweeps/ passes --dry-run."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from raysweep import run as run_module
from raysweep.config import TrialConfig
from raysweep.sweep_file import load
from tests.sweep_runs import sweep_source as shared_sweep_source

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", REPO.parent / "shared" / "data"))
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.py"))


def sweep_source(args: str = "") -> str:
    """A sweep file defining Sweep(<args>), named "cli" and searching lr unless args say otherwise."""
    return shared_sweep_source(f"num_samples=2, max_epochs=1, {args}".rstrip(", "), name="cli")


GOOD = sweep_source()
SGD = 'choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.9)}})'

CASES = {  # id: (the sweep file's text, or None for no file; the options; what the one line must name)
    "syntax-error": ("SWEEP = Sweep(name='cli'\n", [], "syntax error at line"),
    "no-SWEEP": ("X = 1\n", ["--dry-run"], "SWEEP"),
    "SWEEP-wrong-type": ("SWEEP = 3\n", ["--dry-run"], "`SWEEP` must be a raysweep.sweep.Sweep, but got int"),
    "no-such-file": (None, [], "sweep file"),
    "unknown-searcher": (sweep_source('searcher="bayes"'), ["--dry-run"], "`searcher`"),
    "unknown-scheduler": (sweep_source('scheduler="pbt"'), ["--dry-run"], "`scheduler`"),
    "unknown-dataset": (sweep_source('dataset="imagenet"'), ["--dry-run"], "`dataset`"),
    "fixed-lr-zero": (sweep_source('fixed={"lr": 0}'), ["--dry-run"], "`lr` must be > 0"),
    "loguniform-low-zero": (sweep_source('space={"lr": loguniform(0, 0.1)}'), ["--dry-run"], "`space.lr`"),
    "low-not-below-high": (sweep_source('space={"dropout": uniform(0.3, 0.3)}'), ["--dry-run"], "`space.dropout`"),
    "choice-of-nothing": (sweep_source('space={"lr": choice([])}'), ["--dry-run"], "`space.lr`"),
    "unknown-setting-in-space": (sweep_source('space={"epochs": choice([1, 2])}'), ["--dry-run"], "`epochs`"),
    "unknown-child-setting": (sweep_source('space={"optimizer": choice({"adam": {"optimizer.beta": uniform(0, 1)}})}'),
                              ["--dry-run"], "`optimizer.beta`"),
    "l1_ratio-corner-outside-0-1": (
        sweep_source('space={"regularizer": choice({"elastic_net": {"regularizer.l1_ratio": uniform(-0.5, 1)}})}'),
        ["--dry-run"], "`regularizer.l1_ratio` must be in [0, 1]"),
    "grid-over-continuous": (sweep_source('searcher="grid"'), ["--dry-run"], "`space.lr` must be a choice"),
    "metric-mode-mismatch": (sweep_source('metric="val_acc", mode="min"'), [], "`mode` must be 'max'"),
    "point-unknown-key": (sweep_source('points_to_evaluate=[{"lr": 0.01, "lr_decay": 0.1}]'), ["--dry-run"],
                          "points_to_evaluate[0]"),
    "fixed-and-searched": (sweep_source('fixed={"lr": 0.01}'), ["--dry-run"], "`lr` is in both"),
    "fixed-and-searched-child": (sweep_source(f'fixed={{"optimizer.momentum": 0.5}}, space={{"optimizer": {SGD}}}'),
                                 ["--dry-run"], "`optimizer.momentum` is in both"),
    "set-unknown-key": (GOOD, ["--dry-run", "--set", "epochs=3"], "`epochs`"),
    "set-without-equals": (GOOD, ["--dry-run", "--set", "num_samples"], "--set: must be KEY=VALUE"),
    "set-searcher-bogus": (GOOD, ["--set", "searcher=bogus"], "`searcher`"),
    "set-unknown-trial-setting": (GOOD, ["--dry-run", "--set", "fixed.momentum=0.9"], "`momentum`"),
    "num-samples-zero": (GOOD, ["--num-samples", "0"], "`num_samples`"),
    "num-samples-not-a-number": (GOOD, ["--dry-run", "--num-samples", "many"], "--num-samples"),
    "max-epochs-negative": (GOOD, ["--dry-run", "--max-epochs", "-1"], "`max_epochs`"),
    "unknown-option": (GOOD, ["--epochs", "3"], "--epochs"),
    "data-dir-missing": (GOOD, ["--data-dir", "no/such/folder"], "--data-dir"),
    "misspelt-setting-suggests": (sweep_source('fixed={"optimiser": "adam"}'), ["--dry-run"],
                                  "unknown trial setting `optimiser`; did you mean `optimizer`? valid: model,"),
    "misspelt-option-suggests": (sweep_source('fixed={"optimizer": "rmsprob"}'), [], "did you mean `rmsprop`?"),
    "set-misspelt-field-suggests": (GOOD, ["--set", "max_epoch=3"], "did you mean `max_epochs`?"),
    "set-domain-on-fixed": (GOOD, ["--set", "fixed.lr=loguniform(1e-4,1e-1)"], "use space.SETTING"),
    "set-call-not-a-helper": (GOOD, ["--set", "space.lr=__import__('os').getcwd()"], "only calls to choice"),
    "child-its-parent-never-uses": (sweep_source('fixed={"optimizer": "adam"}, '
                                                 'space={"optimizer.momentum": uniform(0, 0.9)}'),
                                    [], "`optimizer` can only be 'adam' there, which never uses it"),
    "searched-twice": (sweep_source(f'space={{"optimizer": {SGD}, "optimizer.momentum": uniform(0, 0.5)}}'),
                       ["--dry-run"], "`optimizer.momentum` is searched in two places at once"),
    # Checked before Ray starts too (raysweep.preflight), also by --dry-run: storage, --address, the data's real size.
    "storage-unwritable": (GOOD, ["--storage", "/proc/forbidden/results"], "`--storage` must be a folder or URI"),
    "storage-unwritable-dry-run": (GOOD, ["--dry-run", "--storage", "/proc/forbidden/results"], "`--storage`"),
    "address-not-answering": (GOOD, ["--address", "127.0.0.1:9"], "`--address` must be HOST:PORT"),
    "address-not-answering-dry-run": (GOOD, ["--dry-run", "--address", "127.0.0.1:9"], "`--address`"),
    "subset-larger-than-data-dry-run": (GOOD, ["--dry-run", "--set", "subset=100000"], "`subset` must be an int in"),
}
if torch.cuda.device_count() == 0:  # a local run cannot ask for GPUs this machine does not have
    CASES["gpu-on-cpu-machine"] = (GOOD, ["--set", "gpu=1"], "`gpu`")

# Also run as real processes: a bad file, a bad option and bad values, all without --dry-run, so the checks must come
# before Ray starts. Few, because each process spends ~4 s of CPU importing torch and Ray.
IN_A_PROCESS = ["syntax-error", "unknown-option", "num-samples-zero", "data-dir-missing", "several-mistakes",
                "storage-unwritable", "address-not-answering",
                *(["gpu-on-cpu-machine"] if "gpu-on-cpu-machine" in CASES else ["metric-mode-mismatch"])]


# A file with three mistakes and a bad option: four lines, one per mistake, in one run.
SEVERAL = (sweep_source('searcher="bayes", fixed={"optimiser": "adam"}, space={"dropout": uniform(0.5, 0.1)}'),
           ["--set", "num_samples=0"], ["`searcher`", "`num_samples`", "`optimiser`", "`space.dropout`"])


def write_case(folder: Path, case: str) -> list[str]:
    """The case's sweep file in `folder`, and the argv that runs it."""
    text, options, _ = SEVERAL if case == "several-mistakes" else CASES[case]
    path = folder / "sweep.py"
    if text is not None:
        path.write_text(textwrap.dedent(text))
    return [str(path), *options]


@pytest.fixture()
def cli(tmp_path, monkeypatch, capsys):
    """Call `main(argv)` in tmp_path as the command line would: returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(run_module, "connect", lambda *args, **kwargs: pytest.fail("Ray was about to start"))

    def call(argv: list[str]) -> tuple[int, str, str]:
        try:
            code = run_module.main(argv)
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


def assert_one_line_error(code: int, out: str, err: str, field: str) -> None:
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("raysweep.run: error: "), err
    assert field in lines[0], lines[0]
    assert "Traceback" not in err and "Traceback" not in out
    assert "Started a local Ray instance" not in out + err


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_naming_the_field(cli, tmp_path, case):
    code, out, err = cli(write_case(tmp_path, case))
    assert_one_line_error(code, out, err, CASES[case][2])
    assert out == ""  # nothing ran, so nothing to report


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_dry_run_prints_the_resolved_sweep_and_valid_sample_configs(cli, path):
    data_dir = []  # a dry run loads the data as the run would: the sweeps of MNIST and CIFAR-10 need the files
    if load(path).dataset in ("mnist", "fashion_mnist", "cifar10"):
        if not SHARED_DATA.is_dir():
            pytest.skip(f"{SHARED_DATA} is absent: no offline copy of the sweep's data set")
        data_dir = ["--data-dir", str(SHARED_DATA)]
    code, out, err = cli([str(path), "--dry-run", *data_dir])
    assert code == 0, err
    resolved, samples = out.split("\n\n", 1)
    sweep = load(path)
    assert json.loads(resolved)["name"] == sweep.name and set(json.loads(resolved)["space"]) == set(sweep.space)
    configs = [json.loads(line) for line in samples.splitlines() if line.startswith("  {")]
    assert configs and "Sample trial configs:" in samples
    for config in configs:
        TrialConfig.from_dict(config)


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """Every IN_A_PROCESS case, plus sweeps/quickstart.py --dry-run, as `python -m raysweep.run`, two at a time."""
    jobs = {case: write_case(tmp_path_factory.mktemp(case), case) for case in IN_A_PROCESS}
    jobs["quickstart-dry-run"] = [str(REPO / "sweeps" / "quickstart.py"), "--dry-run"]

    def start(argv: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
        folder = tmp_path_factory.mktemp("cwd")
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "RAY_TMPDIR": str(folder / "ray")}
        done = subprocess.run([sys.executable, "-m", "raysweep.run", *argv], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=300)
        return done, folder

    with ThreadPoolExecutor(max_workers=2) as pool:  # one process per core
        return dict(zip(jobs, pool.map(start, jobs.values()), strict=True))


@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_a_real_process_fails_the_same_way_before_ray_starts(processes, case):
    done, folder = processes[case]
    if case == "several-mistakes":
        assert_one_line_per_mistake(done.returncode, done.stdout, done.stderr, SEVERAL[2])
    else:
        assert_one_line_error(done.returncode, done.stdout, done.stderr, CASES[case][2])
    assert not (folder / "ray").exists(), "Ray created a session under RAY_TMPDIR"
    assert not (folder / "mlflow.db").exists(), "an MLflow store (and so maybe a run) was created"


def assert_one_line_per_mistake(code: int, out: str, err: str, fields: list[str]) -> None:
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == len(fields) and all(line.startswith("raysweep.run: error: ") for line in lines), err
    assert all(field in line for field, line in zip(fields, lines, strict=True)), err
    assert "Traceback" not in err + out and out == ""


def test_a_sweep_with_several_mistakes_reports_each_on_its_own_line(cli, tmp_path):
    code, out, err = cli(write_case(tmp_path, "several-mistakes"))
    assert_one_line_per_mistake(code, out, err, SEVERAL[2])


@pytest.mark.parametrize("options", [
    ["--set", "space.lr=[0.1,0.01]"],  # the README's examples, verbatim
    ["--set", "searcher=random"],
    ["--set", "fixed.hidden=[300,100]"],
    ["--set", "space.lr=loguniform(1e-4,1e-1)"],
])
def test_the_readmes_set_examples_work_on_the_quickstart(cli, options):
    code, out, err = cli([str(REPO / "sweeps" / "quickstart.py"), "--dry-run", *options])
    assert code == 0, err
    assert err == "" or err.startswith("raysweep.run: warning: points_to_evaluate[0] dropped") and err.count("\n") == 1


def test_a_real_dry_run_prints_sample_configs_and_starts_nothing(processes):
    done, folder = processes["quickstart-dry-run"]
    assert done.returncode == 0, done.stderr
    assert '"name": "quickstart"' in done.stdout and "Sample trial configs:" in done.stdout
    assert not (folder / "ray").exists() and not (folder / "mlflow.db").exists() and not (folder / "results").exists()
