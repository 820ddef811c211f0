"""Seeds, device selection and mixed precision: the run-time knobs every loop shares."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from .errors import InvalidInputError


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA) and return a CPU ``torch.Generator``.

    Same seed + same CPU => same numbers (tests rely on it). On GPU, cuDNN autotuning may still
    pick different kernels; use ``torch.use_deterministic_algorithms`` if you need bitwise equality.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Pick a device: ``"auto"``/``None`` means cuda > mps > cpu; anything else is checked.

    Raises :class:`InvalidInputError` when the asked device is not available here.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError(f"device {device!r} asked for, but MPS is not available here; use --device cpu or auto")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """Mixed-precision context: bf16/fp16 autocast on CUDA, a no-op elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler active only for fp16 autocast on CUDA (bf16 needs none)."""
    use = bool(enabled and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    return torch.amp.GradScaler("cuda", enabled=use)


def num_threads_hint() -> int:
    """Cores usable by worker pools (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)
