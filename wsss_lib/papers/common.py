"""What the steps of both papers share: ONE run context and ONE load-or-train cache.

* :class:`RunContext` / :func:`make_context` — ``data_root``, ``out``, ``device``, ``quick``, ``seed``,
  ``dataset`` (and ``checkpoints = <out>/checkpoints``). The CLI builds one with
  :func:`make_context`; a notebook's :class:`~wsss_lib.notebook.NotebookContext` is a subclass
  (built by the same :func:`make_context`) that adds figure saving and metric recording.
* :func:`load_or_train` — load ``<out>/checkpoints/<name>.pt`` when it is complete and was trained
  with the same config, else train (resumable: :func:`~wsss_lib.engine.train.fit` continues a
  partial checkpoint of the same config).
* :func:`complete_checkpoints` — every complete checkpoint of a kind, for the evaluation commands
  that rebuild trained models from their stored configs.
* :func:`dataset_split` — ``(info, samples)`` of a split of the run's dataset (toy data generated with
  the preset's parameters, so a new generator version regenerates it; ``clips`` keeps the first clips).
* :func:`config_hash` / :func:`state_fingerprint` — cache keys.
* :func:`climb_steps_grid` / :func:`chosen_point` — the VAL choice of training length (and lr) of both
  papers' seed studies.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..core.checkpoint import load_checkpoint
from ..core.errors import CheckpointError, InvalidInputError
from ..core.io import plain_config
from ..core.results import output_dir
from ..core.runtime import seed_everything, select_device
from ..core.config import PROFILES, preset
from ..data.registry import default_data_root, load_dataset

TOY_DATASETS = ("toy_objects", "toy_objects_textured", "toy_streets")


@dataclass
class RunContext:
    """Where a run reads and writes, and how (the fields every paper step reads)."""

    data_root: Path
    out: Path
    device: torch.device
    quick: bool = False
    seed: int = 0
    dataset: str = "toy_objects"
    name: str = "cli"
    preset: str = "auto"  # preset profile: "toy", "paper" or "auto" (toy datasets -> toy, real ones -> paper)
    # run-size overrides (notebook parameters): of the "real_subset" preset (real data in paper 1's toy-sized
    # pipeline: n_train / n_val / n_test / image_size), of the video clips per split (paper 2: train/val/test)
    # and of paper 2's frame size on real data
    real_subset: dict | None = None
    clips: dict | None = None
    frame_size: tuple | list | None = None  # paper 2 on a real dataset: (H, W) the frames are resized to
    # multiplies the VAL-chosen training steps of the segmentation / video nets (a notebook's time budget;
    # 1 = the chosen schedule, what the studies and the reproduce commands train)
    steps_scale: float = 1.0
    # at most this many steps after the scale (a notebook's time budget when one net's chosen schedule is
    # much longer than the others'); None = no cap
    steps_cap: int | None = None

    @property
    def checkpoints(self) -> Path:
        return Path(self.out) / "checkpoints"


def make_context(data_root=None, out=None, device="auto", quick: bool = False, seed: int = 0,
                 dataset: str = "toy_objects", name: str = "cli", preset: str = "auto") -> RunContext:
    """A :class:`RunContext`: seeds everything, selects the device, creates ``<out>/checkpoints``
    (``out`` default: env ``WSSS_OUTPUT_DIR``, else ``./runs/latest``)."""
    seed_everything(seed)
    out = output_dir(out)
    if preset not in ("auto", *PROFILES):
        raise InvalidInputError(f"unknown preset {preset!r}; known: auto, {', '.join(PROFILES)}")
    ctx = RunContext(Path(data_root) if data_root else default_data_root(), out, select_device(device), bool(quick),
                     int(seed), dataset, name, preset)
    ctx.checkpoints.mkdir(parents=True, exist_ok=True)
    return ctx


def profile(ctx) -> str:
    """The preset profile of a run (:data:`~wsss_lib.core.config.PROFILES`): ``ctx.preset``, where
    "auto" means "toy" on the generated datasets and "paper" (paper scale, streamed) on real ones."""
    p = getattr(ctx, "preset", "auto")
    if p == "auto":
        return "toy" if ctx.dataset in TOY_DATASETS else "paper"
    return p


def dataset_split(ctx, split: str, clips: int | None = None):
    """``(info, samples)`` of ``split`` of ``ctx.dataset``. Toy datasets are (re)generated to match
    their preset (a folder written by an older generator version is replaced); ``clips`` keeps the
    frames of the first ``clips`` clips only (video datasets; None = all)."""
    kw = preset(ctx.dataset, False) if ctx.dataset in TOY_DATASETS else {}
    info, samples = load_dataset(ctx.dataset, ctx.data_root, split, **kw)
    if clips is not None:
        names = list(dict.fromkeys(s.clip for s in samples))[: int(clips)]
        keep = set(names)
        samples = [s for s in samples if s.clip in keep]
    return info, samples


def config_hash(cfg: dict) -> str:
    """A short stable hash of a plain config (cache file names)."""
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def state_fingerprint(model: torch.nn.Module) -> str:
    """A short fingerprint of a model's floating-point weights (caches that depend on a model)."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            h.update(k.encode())
            h.update(np.float64(v.double().sum().item()).tobytes())
    return h.hexdigest()[:12]


def load_matching(path: Path, config: dict, model: torch.nn.Module, device) -> dict | None:
    """The checkpoint at ``path`` loaded into ``model`` (eval mode, on ``device``) when it is complete
    and its config equals ``config``; else None (an unreadable file is reported and ignored)."""
    if not Path(path).is_file():
        return None
    try:
        st = load_checkpoint(path, map_location=device)
    except CheckpointError as exc:
        print(f"[wsss] ignoring {path}: {exc}")
        return None
    if st.get("config") != plain_config(config) or not st.get("complete", False):
        return None
    model.load_state_dict(st["model"])
    model.to(device).eval()
    return st


def load_or_train(path: Path, config: dict, model: torch.nn.Module, train: Callable[[], dict], device,
                  retrain: bool = False, what: str = "model") -> dict:
    """Load ``model`` from ``path`` (:func:`load_matching`) or call ``train()`` (which must train
    ``model`` in place, checkpointing to ``path`` with ``config``: :func:`~wsss_lib.engine.train.fit`).
    Returns ``{"config", "trained": bool, "history": {...}, "seconds": float}``; ``model`` ends in
    eval mode."""
    st = None if retrain else load_matching(path, config, model, device)
    if st is not None:
        print(f"[wsss] loaded {what} from {path}")
        return {"config": plain_config(config), "trained": False, "history": st.get("history", {}), "seconds": 0.0}
    t0 = time.time()
    hist = train()
    model.eval()
    return {"config": plain_config(config), "trained": True, "history": hist, "seconds": time.time() - t0}


def complete_checkpoints(folder: Path, pattern: str, device="cpu") -> Iterator[tuple[Path, dict]]:
    """``(path, state)`` of every complete checkpoint ``folder/pattern`` (sorted; unreadable ones
    are reported and skipped)."""
    for path in sorted(Path(folder).glob(pattern)):
        try:
            st = load_checkpoint(path, map_location=device)
        except CheckpointError as exc:
            print(f"[wsss] skipping {path}: {exc}")
            continue
        if st.get("complete"):
            yield path, st


def scaled_steps(steps: int, scale: float, cap: int | None = None) -> int:
    """``steps`` multiplied by ``scale``, at most ``cap`` (None: no cap), at least 1: ``--steps-scale`` of the
    reproduce commands, the notebooks' ``steps_scale`` / ``steps_cap``."""
    n = int(round(int(steps) * float(scale)))
    return max(1, n if cap is None else min(n, int(cap)))


def grid_tag(name: str, steps: int, preset_steps: int) -> str:
    """Checkpoint name of a steps-grid point: ``<name>`` (the one the study and the notebooks load) when
    ``steps`` is the preset's, else ``<name>_steps<n>`` -- so the VAL grid's preset point is not trained
    twice."""
    return name if int(steps) == int(preset_steps) else f"{name}_steps{int(steps)}"


def climb_steps_grid(steps_grid, score: Callable[[int, object], float], candidates=(None,),
                     tolerance: float = 0.005) -> dict[tuple[int, object], float]:
    """VAL scores along an ascending grid of training lengths, climbed only while they improve [ours].

    ``score(n, c)`` trains (or loads) the point ``n`` steps x candidate ``c`` (e.g. a learning rate;
    each point is a full schedule) and returns its VAL score, higher is better. At each ``n`` of
    ``steps_grid`` (ascending) every surviving candidate is scored; a candidate survives to the next
    ``n`` only while it is within ``tolerance`` of the best candidate at this ``n`` (successive halving);
    the climb stops after the first ``n`` whose best score does not beat the best so far by more than
    ``tolerance`` (patience of one grid point) -- a grid edge is trained only while VAL still rises.
    Returns ``{(n, c): score}`` of the points scored, in the order scored.
    """
    curve: dict[tuple[int, object], float] = {}
    alive, best = list(candidates), -float("inf")
    for n in sorted(int(n) for n in steps_grid):
        at = {c: float(score(n, c)) for c in alive}
        curve.update({(n, c): v for c, v in at.items()})
        top = max(at.values())
        alive = [c for c in alive if at[c] >= top - tolerance]
        if top <= best + tolerance:
            break
        best = top
    return curve


def chosen_point(curve: dict[tuple[int, object], float], tolerance: float = 0.005) -> tuple[int, object]:
    """``(n, c)`` of a :func:`climb_steps_grid` curve: the fewest steps whose score is within ``tolerance``
    of the best, then the best candidate at that length -- where VAL stops improving."""
    top = max(curve.values())
    n_best = min(n for (n, _), v in curve.items() if v >= top - tolerance)
    return max((k for k in curve if k[0] == n_best), key=curve.__getitem__)
