"""Helpers every notebook calls in its first cells (kept here so notebooks stay thin).

``ctx = setup("02_fgbg_masks", quick=quick, seed=seed, device=device, output_dir=output_dir,
dataset=dataset, data_root=data_root)`` validates the papermill parameters (a wrong type is one
clear error, not a traceback ten cells later), seeds everything, selects the device and makes
the output folders. ``ctx.save(fig, "name")`` writes ``<output>/figures/<notebook>_<name>.png``;
``ctx.record({...})`` writes the notebook's metrics for ``wsss run``.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .core.config import preset
from .core.errors import InvalidInputError
from .core.results import record as _record
from .papers.common import RunContext, make_context
from .viz import save_figure

_TYPES = {"quick": bool, "seed": int, "device": str, "dataset": str, "data_root": (str, type(None)),
          "output_dir": (str, type(None)), "real_subset": (dict, type(None)), "clips": (dict, type(None)),
          "frame_size": (list, tuple, type(None))}


@dataclass
class NotebookContext(RunContext):
    """A notebook's :class:`~wsss_lib.papers.common.RunContext` (the one run context of both papers'
    steps) with the notebook's figure saving and metric recording."""

    started: float = field(default_factory=time.time)

    @property
    def figures(self) -> Path:
        return Path(self.out) / "figures"

    def save(self, fig, name: str) -> None:
        """Save a matplotlib Figure as ``figures/<notebook>_<name>.png`` (prints the path; returns
        nothing, so a notebook cell ending in ``ctx.save(...)`` shows no ``Out[n]``)."""
        p = save_figure(fig, self.figures / f"{self.name}_{name}.png")
        print(f"[wsss] figure -> {p}")

    def record(self, metrics: dict) -> None:
        """Record this notebook's metrics (merged into results.json by ``wsss run``); returns nothing."""
        metrics = dict(metrics)
        metrics.setdefault("quick", self.quick)
        metrics.setdefault("seed", self.seed)
        metrics["seconds"] = round(time.time() - self.started, 2)
        _record(self.name, metrics, self.out)


def widget_view(fn):
    """Wrap a notebook's widget callback: a bad setting chosen with the sliders (an
    :class:`InvalidInputError`, e.g. every layer weight at 0) prints ONE line instead of a traceback
    through ipywidgets; any other error still raises."""

    @functools.wraps(fn)
    def view(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InvalidInputError as exc:
            print(f"⚠ {exc}")
            return None

    return view


BATCH_ENV = "WSSS_BATCH_RUN"  # = wsss_lib.nbexec.BATCH_ENV (set by `wsss run` in its kernels; not imported: papermill)


def explorer_snapshot(ctx: NotebookContext, fig, name: str = "explorer") -> None:
    """The static view of a widget explorer (its default settings): saved as
    ``figures/<notebook>_<name>.png``; SHOWN only in a batch run (``wsss run``: the executed copy and
    its HTML cannot run widgets), with one line saying the controls are interactive in JupyterLab.
    In JupyterLab it is not shown, so the live widget below is the one figure (redrawn per change).
    The figure is closed either way."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    ctx.save(fig, name)
    if os.environ.get(BATCH_ENV):
        from IPython.display import display  # lazy: IPython is present only inside a kernel

        display(fig)
        print("static snapshot (default settings); the controls below are interactive in JupyterLab")
    plt.close(fig)


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
          data_root: str | None = None, output_dir: str | None = None, real_subset: dict | None = None,
          clips: dict | None = None, frame_size=None, steps_scale: float | None = None) -> NotebookContext:
    """Validate parameters, seed, select the device, create output folders; print a summary.

    ``real_subset``: overrides of the "real_subset" preset for a real dataset in notebooks 01-04 (e.g.
    ``{"n_train": 100, "image_size": [128, 128]}``); ``clips``: clips per split for 05-07 (e.g.
    ``{"train": 40, "val": 10, "test": 10}``); ``frame_size``: ``(H, W)`` a real dataset's frames are resized to
    in 05-07 (default: the ``paper2_video_seg`` preset's); ``steps_scale``: the fraction of the VAL-chosen
    training steps the segmentation / video nets train (None: the "notebook" preset's time budget for
    notebook ``name`` -- its ``steps_scale``, and at most its ``steps_cap`` steps per net --, 1 for the others
    and in quick mode; 1: the full schedule, as the studies). An unknown key is one clear error."""
    check_types(quick=quick, seed=seed, device=device, dataset=dataset, data_root=data_root, output_dir=output_dir,
                real_subset=real_subset, clips=clips, frame_size=frame_size)
    if frame_size is not None and (len(frame_size) != 2 or min(int(v) for v in frame_size) < 8):
        raise InvalidInputError(f"frame_size must be (H, W) with sides >= 8 px, got {frame_size!r}")
    steps_cap = None
    if steps_scale is None:  # the notebook budget: a fraction of the chosen steps, and at most a cap
        budget = preset("notebook", quick)
        steps_scale, steps_cap = budget["steps_scale"].get(name, 1.0), budget["steps_cap"].get(name)
    if isinstance(steps_scale, bool) or not isinstance(steps_scale, (int, float)) or not 0 < steps_scale <= 10:
        raise InvalidInputError(f"steps_scale must be a number in (0, 10], got {steps_scale!r}")
    if real_subset:
        preset("real_subset", quick, **real_subset)  # raises on a typo, before any work
    if clips and set(clips) - {"train", "val", "test"}:
        raise InvalidInputError(f"clips takes the splits train, val, test; got {sorted(clips)}")

    # notebooks run the toy-sized pipeline on every dataset (real ones resized, as subsets: "real_subset" preset);
    # the paper-scale pipeline is `wsss reproduce`
    base = make_context(data_root, output_dir, device, quick, seed, dataset, name, preset="toy")
    base.real_subset, base.clips, base.frame_size = real_subset, clips, frame_size
    base.steps_scale, base.steps_cap = float(steps_scale), steps_cap
    ctx = NotebookContext(**{f.name: getattr(base, f.name) for f in fields(RunContext)})
    ctx.figures.mkdir(parents=True, exist_ok=True)
    if ctx.device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"[wsss] {name}: quick={quick} seed={seed} device={ctx.device} dataset={dataset} data_root={ctx.data_root} "
          f"output={ctx.out} torch={torch.__version__} python={platform.python_version()}"
          + (f" steps_scale={ctx.steps_scale:g}" if ctx.steps_scale != 1.0 else "")
          + (f" steps_cap={ctx.steps_cap}" if ctx.steps_cap is not None else ""))
    return ctx
