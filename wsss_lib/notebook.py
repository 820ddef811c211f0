"""Helpers every notebook calls in its first cells (kept here so notebooks stay thin).

``ctx = setup("02_fgbg_masks", quick=quick, seed=seed, device=device, output_dir=output_dir,
dataset=dataset, data_root=data_root)`` validates the papermill parameters (a wrong type is one
clear error, not a traceback ten cells later), seeds everything, selects the device and makes
the output folders. ``ctx.save(fig, "name")`` writes ``<output>/figures/<notebook>_<name>.png``;
``ctx.record({...})`` writes the notebook's metrics for ``wsss run``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .core.errors import InvalidInputError
from .core.results import output_dir as _output_dir, record as _record
from .core.runtime import seed_everything, select_device
from .data.registry import default_data_root
from .viz import save_figure

_TYPES = {"quick": bool, "seed": int, "device": str, "dataset": str, "data_root": (str, type(None)),
          "output_dir": (str, type(None))}


@dataclass
class NotebookContext:
    name: str
    quick: bool
    seed: int
    device: torch.device
    dataset: str
    data_root: Path
    out: Path
    started: float = field(default_factory=time.time)

    @property
    def figures(self) -> Path:
        return self.out / "figures"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def save(self, fig, name: str) -> Path:
        """Save a matplotlib Figure as ``figures/<notebook>_<name>.png``."""
        p = save_figure(fig, self.figures / f"{self.name}_{name}.png")
        print(f"[wsss] figure -> {p}")
        return p

    def record(self, metrics: dict) -> Path:
        """Record this notebook's metrics (merged into results.json by ``wsss run``)."""
        metrics = dict(metrics)
        metrics.setdefault("quick", self.quick)
        metrics.setdefault("seed", self.seed)
        metrics["seconds"] = round(time.time() - self.started, 2)
        return _record(self.name, metrics, self.out)


def check_types(**params) -> None:
    """Raise one clear :class:`InvalidInputError` per wrongly typed papermill parameter."""
    for key, value in params.items():
        want = _TYPES.get(key)
        if want is None:
            continue
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if not ok:
            names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
            raise InvalidInputError(f"notebook parameter {key}={value!r} has type {type(value).__name__}; expected {names}")


def setup(name: str, *, quick: bool = False, seed: int = 0, device: str = "auto", dataset: str = "toy_objects",
          data_root: str | None = None, output_dir: str | None = None) -> NotebookContext:
    """Validate parameters, seed, select the device, create output folders; print a summary."""
    check_types(quick=quick, seed=seed, device=device, dataset=dataset, data_root=data_root, output_dir=output_dir)

    seed_everything(seed)
    dev = select_device(device)
    out = _output_dir(output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root else default_data_root()
    if dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"[wsss] {name}: quick={quick} seed={seed} device={dev} dataset={dataset} data_root={root} "
          f"output={out} torch={torch.__version__} python={platform.python_version()}")
    return NotebookContext(name=name, quick=quick, seed=seed, device=dev, dataset=dataset, data_root=root, out=out)
