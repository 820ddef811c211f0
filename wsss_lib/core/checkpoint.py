"""Atomic checkpoint writing and safe loading.

A checkpoint is a plain dict of tensors and plain values (torchvision references style)::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "epoch": int, "step": int,
     "config": {...}, "rng": {...}, "metrics": {...}}

Writing goes to a temporary file in the same folder, is fsynced, then renamed over the target,
so an interrupted save never leaves a truncated checkpoint. Loading always uses
``torch.load(..., weights_only=True)``: a checkpoint carrying a pickle payload that would run
code is refused with :class:`~wsss_lib.core.errors.CheckpointError`.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .io import atomic_write_bytes


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Serialise ``obj`` with ``torch.save`` and write it atomically to ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; clear errors for missing/corrupt/unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain values "
            f"(weights_only=True). Only load checkpoints you trust; details: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated or not a torch checkpoint ({exc})") from exc


def rng_state() -> dict[str, Any]:
    """The python / numpy / torch RNG states, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {
        "python": list(_py_state_to_plain(random.getstate())),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(st):
    version, internal, gauss = st
    return int(version), [int(x) for x in internal], gauss
