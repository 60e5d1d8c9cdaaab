"""Screenshots of the real MLflow UI comparing the runs of a quickstart sweep, for the README.

    .venv/bin/python scripts/mlflow_screenshot.py                # the sweep (~2 min), then ~1-3 min of shots
    .venv/bin/python scripts/mlflow_screenshot.py --db mlflow.db # reuse a store holding a quickstart sweep

Runs `python -m raysweep.run sweeps/quickstart.py --num-samples 12 --max-epochs 6 --seed 0` into a fresh sqlite store
in a temporary folder, serves it with `mlflow server` on 127.0.0.1 at a free port, drives headless Chromium (Debian's
`chromium` package) over its DevTools protocol and writes, into docs/:
- mlflow_runs.png: the experiment's trial runs sorted by val_acc, with their params and status;
- mlflow_charts.png: the chart view, the learning curves (step = epoch) of the 10 best trials;
- mlflow_compare.png: the compare view of the 6 best trials, a parallel-coordinates plot of params against val_acc.
Then it stops Chromium and the server and deletes the temporary folder.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The test suite's server helpers (free ports, waits, `mlflow server`, ending process groups): this script starts the
# same servers the tests do. `python scripts/mlflow_screenshot.py` puts only scripts/ on the path: add the repo.
sys.path.insert(0, str(REPO))
from tests.servers import MlflowServer, answers, free_port, stop_process_group, wait_for  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
EXPERIMENT = "quickstart"
TRIALS = "tags.`raysweep.role` = 'trial'"
BY_VAL_ACC = "metrics.`val_acc`"
CURVES = ("val_acc", "val_loss", "train_acc", "train_loss")  # the chart view's charts, in this order
HIDE_PLOTLY_TOOLBAR = ".modebar-container { display: none !important; }"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs (default: docs/)")
    parser.add_argument("--db", type=Path, help="an existing sqlite store holding a quickstart sweep (skips the sweep)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found; install Debian's chromium: apt-get update && apt-get install -y chromium",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlflow_screenshot_") as tmp:
        folder = Path(tmp)
        db = args.db.resolve() if args.db else run_sweep(folder=folder)
        server = MlflowServer(folder / "server", db=db)
        try:
            uri = server.start(timeout_s=120)
            with Chromium(folder=folder / "chromium") as browser:
                for path in take_screenshots(browser, uri=uri, out=args.out):
                    print(f"wrote {path}")
        finally:
            server.stop()
    return 0


def run_sweep(*, folder: Path) -> Path:
    """The quickstart sweep, 12 trials of at most 6 epochs, into folder/mlflow.db; about 2 minutes on 2 cores."""
    db = folder / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "raysweep.run", str(REPO / "sweeps" / "quickstart.py"), "--num-samples", "12",
               "--max-epochs", "6", "--seed", "0", "--storage", str(folder / "results")]
    print("running:", " ".join(command[1:]), flush=True)
    with open(folder / "sweep.log", "w") as log:
        done = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (folder / "sweep.log").read_text().splitlines()[-20:]
        raise SystemExit(f"the quickstart sweep exited {done.returncode}:\n" + "\n".join(tail))
    return db


def take_screenshots(browser: Chromium, *, uri: str, out: Path) -> list[Path]:
    """The three views of the quickstart experiment at `uri`, written into `out`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"no experiment {EXPERIMENT!r} at {uri}; run the quickstart sweep into that store")
    eid = experiment.experiment_id
    best = client.search_runs([eid], TRIALS, order_by=["metrics.val_acc DESC"], max_results=6)
    out.mkdir(parents=True, exist_ok=True)
    # The runs page keeps its UI state in localStorage, read once when the app loads: write it, then reload.
    state = f'MLflowLocalStorage-1.1-ExperimentPage-["{eid}"]-ReactComponentState'
    query = {"workflowType": "machine_learning", "searchFilter": TRIALS, "orderByKey": BY_VAL_ACC,
             "orderByAsc": "false"}
    runs_page = f"{uri}/#/experiments/{eid}/runs?{urllib.parse.urlencode(query)}"
    return [runs_table(browser, url=runs_page, state=state, best_name=best[0].info.run_name,
                       path=out / "mlflow_runs.png"),
            learning_curves(browser, url=f"{runs_page}&compareRunsMode=CHART", state=state,
                            path=out / "mlflow_charts.png"),
            compare_view(browser, url=f"{uri}/#/compare-runs?" + urllib.parse.urlencode(
                {"runs": json.dumps([r.info.run_id for r in best]), "experiments": json.dumps([eid]),
                 "workflowType": "machine_learning"}), path=out / "mlflow_compare.png")]


def runs_table(browser: Chromium, *, url: str, state: str, best_name: str, path: Path) -> Path:
    columns = [BY_VAL_ACC, "metrics.`val_loss`", "params.`optimizer`", "params.`lr`", "params.`regularizer`",
               "params.`dropout`", "tags.`raysweep.status`"]
    browser.open(url)
    browser.local_storage({"mlflow.assistant.panelOpen_v1": "false", state: {"selectedColumns": columns}})
    browser.reload()
    # Widths apply only to columns named in columnOrder: keep the grid's order, widen the run names to fit.
    browser.wait_for("document.querySelectorAll('.ag-header-row-column [col-id=\"metrics.`val_acc`\"]').length",
                     what="runs table columns")
    order = browser.js("[...document.querySelectorAll('.ag-header-row-column [col-id]')]"
                       ".sort((a, b) => a.getBoundingClientRect().x - b.getBoundingClientRect().x)"
                       ".map(e => e.getAttribute('col-id'))")
    browser.local_storage({state: {"columnOrder": order, "columnWidths": {"attributes.`Run Name`": 350}}})
    browser.reload()
    browser.wait_for(f"document.body.innerText.includes({json.dumps(best_name)})"
                     " && document.querySelectorAll('[col-id=\"metrics.`val_acc`\"]').length > 5", what="runs table")
    return browser.screenshot(path)


def learning_curves(browser: Chromium, *, url: str, state: str, path: Path) -> Path:
    """The chart view: once it has generated a chart per metric, keep the learning curves, 2 x 2."""
    stored = f"JSON.parse(localStorage.getItem({json.dumps(state)}))"
    browser.open(url)
    browser.wait_for(f"({stored}.compareRunCharts || []).length > 3", what="generated charts")
    charts, sections = browser.js(f"[{stored}.compareRunCharts, {stored}.compareRunSections]")
    charts.sort(key=lambda c: CURVES.index(c.get("metricKey")) if c.get("metricKey") in CURVES else len(CURVES))
    browser.local_storage({state: {
        "compareRunCharts": [{**c, "deleted": c.get("metricKey") not in CURVES} for c in charts],
        "compareRunSections": [{**s, "columns": 2, "cardHeight": 400} for s in sections]}})
    browser.reload()
    browser.wait_for("document.querySelectorAll('.js-plotly-plot').length >= 4", what="learning curves")
    return browser.screenshot(path, height=1200)


def compare_view(browser: Chromium, *, url: str, path: Path) -> Path:
    """The compare view: its parallel-coordinates plot starts on an arbitrary metric; switch it to val_acc."""
    browser.open(url)
    selects = "document.querySelectorAll('.du-bois-light-select-selector')"
    browser.wait_for(f"{selects}.length >= 2", what="compare view")
    for _ in range(browser.js(f"{selects}[1].querySelectorAll('.du-bois-light-select-selection-item').length")):
        browser.click(f"{selects}[1].querySelector('.du-bois-light-select-selection-item-remove')")
    browser.choose(f"{selects}[1]", "val_acc")
    browser.choose(f"{selects}[0]", "regularizer")
    browser.click("document.querySelector('h1, h2')")  # closes the dropdown
    browser.wait_for("[...document.querySelectorAll('.parcoords text')].some(t => t.textContent === 'val_acc')",
                     what="parallel coordinates on val_acc")
    return browser.screenshot(path)


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol (JSON over a websocket)."""

    def __init__(self, *, folder: Path, width: int = 1600, height: int = 1000) -> None:
        self.folder, self.width, self.height = folder, width, height
        self.proc: subprocess.Popen | None = None
        self.ws: _WebSocket | None = None
        self._id = 0

    def __enter__(self) -> Chromium:
        port = free_port()
        (self.folder / "profile").mkdir(parents=True)  # a new empty profile: no state from earlier runs
        command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={self.folder / 'profile'}", f"--window-size={self.width},{self.height}",
                   f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1", "about:blank"]
        with open(self.folder / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        listing = f"http://127.0.0.1:{port}/json/list"
        wait_for(lambda: answers(listing), timeout_s=60, what="Chromium's DevTools endpoint", process=self.proc,
                 every_s=0.5)
        with urllib.request.urlopen(listing, timeout=5) as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = _WebSocket(target["webSocketDebuggerUrl"])
        self.call("Page.enable")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None:
            stop_process_group(self.proc)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events arrive interleaved with answers; only our answer matters
            message = json.loads(self.ws.receive())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method} failed: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')} in {expression[:120]}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url="about:blank")  # a hash change alone would not reload the app
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", what=url)

    def reload(self) -> None:
        self.call("Page.reload", ignoreCache=False)
        time.sleep(1)
        self.wait_for("document.readyState === 'complete'", what="reload")

    def local_storage(self, values: dict) -> None:
        """Set string values as they are; merge dict values into the JSON object already stored under the key."""
        for key, value in values.items():
            if isinstance(value, dict):
                self.js(f"localStorage.setItem({json.dumps(key)}, JSON.stringify(Object.assign("
                        f"JSON.parse(localStorage.getItem({json.dumps(key)}) || '{{}}'), {json.dumps(value)})))")
            else:
                self.js(f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})")

    def wait_for(self, condition: str, *, what: str, timeout_s: float = 90) -> None:
        wait_for(lambda: bool(self.js(condition)), timeout_s=timeout_s, what=what, process=self.proc, every_s=0.5)
        time.sleep(1.5)  # the last data has arrived; let charts finish their layout

    def click(self, element: str) -> None:
        x, y = self.js(f"(() => {{ const r = ({element}).getBoundingClientRect(); "
                       "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        time.sleep(0.4)

    def choose(self, select: str, option: str) -> None:
        """Type `option` into a multi-select and press Enter, as a person picks it from the list."""
        self.click(f"{select}.querySelector('input')")
        self.call("Input.insertText", text=option)
        time.sleep(0.4)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
        time.sleep(0.4)

    def screenshot(self, path: Path, *, height: int | None = None) -> Path:
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=height or self.height,
                  deviceScaleFactor=1, mobile=False)
        self.js(f"document.head.insertAdjacentHTML('beforeend', '<style>{HIDE_PLOTLY_TOOLBAR}</style>')")
        time.sleep(1.5)  # a resized viewport relayouts the charts
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


class _WebSocket:
    """The client side of RFC 6455, as much as DevTools needs: masked text frames out, (fragmented) frames in."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self._exactly(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"DevTools refused the websocket: {head.splitlines()[0]!r}")

    def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16 \
            else bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes([0x81]) + length + mask + masked)  # FIN + text frame, masked as clients must

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exactly(8))[0]
            message += self._exactly(n)
            if first & 0x80:  # FIN: the last fragment (screenshots arrive as megabytes of base64)
                return message.decode()

    def close(self) -> None:
        self.sock.close()

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the websocket")
            data += chunk
        return data


if __name__ == "__main__":
    sys.exit(main())
