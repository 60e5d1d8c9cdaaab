"""ASHA + TPE over the same 24-config discrete space as peers_grid.py; bench/peers.py counts the epochs it spends
until its best val_acc is within 0.003 of the grid's best.

    python -m raysweep.run bench/sweeps/peers_asha.py --data-dir ../shared/data
"""

import dataclasses
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("peers_grid", Path(__file__).with_name("peers_grid.py"))
_grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grid)  # one definition of the space: the grid and ASHA must search the same configs

SWEEP = dataclasses.replace(
    _grid.SWEEP,
    name="peers_asha",
    searcher="tpe",
    scheduler="asha",
    grace_period=1,  # epochs: rungs at 1, 3, 9
    reduction_factor=3,
    num_samples=24,  # as many trials as the grid has configs; the bench reads how many epochs it needed
)
