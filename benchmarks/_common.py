"""Shared helpers of the benchmark scripts: timing (warm-up + median of N), interleaved A/B
ratios, a small result table with a PASS/MISS column, JSON output and machine facts.

Every benchmark script: ``--quick`` (short version), ``--seed``, ``--json PATH`` (write the rows),
leaves ``torch.set_num_threads`` at its default, never asserts, and exits 0 (a missed target is a
``MISS`` row, not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short version (fewer repeats / smaller inputs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result rows as JSON")
    p.add_argument("--repeat", type=int, default=None, help="timed repetitions (default: 3 quick, 7 otherwise)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own default, i.e. untouched). On a machine that is busy "
                        "with other work, 1 avoids multi-thread stalls that distort timings")
    return p


def init(args) -> None:
    """Seed everything; apply ``--threads`` only when given (otherwise torch's default stays)."""
    import numpy as np
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(int(args.threads))


def start(doc: str, argv=None, configure: Callable | None = None):
    """Parse a benchmark script's command line (:func:`parser` with the first line of ``doc``;
    ``configure(p)`` adds script-specific options) and :func:`init` it; returns the arguments."""
    p = parser(doc.splitlines()[0])
    if configure is not None:
        configure(p)
    args = p.parse_args(argv)
    init(args)
    return args


def repeats(args) -> int:
    return args.repeat or (3 if args.quick else 7)


def sync(device=None) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1, device=None) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; ``{"median", "min", "times"}`` in seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "times": times}


def compare(fns: dict[str, Callable[[], object]], repeat: int = 5, warmup: int = 1, device=None) -> dict[str, dict]:
    """Time several functions *interleaved* (A, B, A, B, ...) so that load changes on a shared VM hit
    all of them alike; ``{name: {"median", "min", "times"}}``. Ratios come from one such call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v), "times": v} for k, v in times.items()}


@dataclass
class Row:
    """One result: ``value`` in ``unit``; ``target`` like ``"<= 1.15"`` / ``">= 1.7"`` or ``""``."""

    name: str
    value: float | None
    unit: str = ""
    target: str = ""
    note: str = ""
    status: str = field(default="")

    def __post_init__(self):
        if not self.status:
            self.status = judge(self.value, self.target)


def judge(value: float | None, target: str) -> str:
    """``PASS``/``MISS`` against a target ``"<= x"``, ``">= x"``, ``"< x"``, ``"> x"``; ``-`` without one."""
    if not target:
        return "-"
    if value is None:
        return "n/a"
    op, _, num = target.strip().partition(" ")
    x = float(num)
    ok = {"<=": value <= x, ">=": value >= x, "<": value < x, ">": value > x}.get(op)
    if ok is None:
        raise ValueError(f"bad target {target!r}")
    return "PASS" if ok else "MISS"


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.3f}"
    return f"{v:.4f}"


def print_table(title: str, rows: list[Row]) -> None:
    """A plain-text table: name | value | unit | target | status | note."""
    cols = ["measure", "value", "unit", "target", "status", "note"]
    data = [[r.name, fmt(r.value), r.unit, r.target, r.status, r.note] for r in rows]
    widths = [max(len(c), *(len(d[i]) for d in data)) if data else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    print(f"\n== {title}")
    print(line)
    print("  ".join("-" * w for w in widths))
    for d in data:
        print("  ".join(x.ljust(w) for x, w in zip(d, widths)))
    sys.stdout.flush()


def machine() -> dict:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cores": cores, "torch_threads": torch.get_num_threads(), "gpu": gpu, "loadavg": load}


def finish(title: str, rows: list[Row], args, extra: dict | None = None) -> int:
    """Print the table and (with ``--json``) write ``{"title", "machine", "quick", "rows", ...}``; returns 0."""
    print_table(title, rows)
    m = machine()
    print(f"machine: {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), GPU: {m['gpu'] or 'none'}, "
          f"load average {m['loadavg']} (other processes distort timings: a load above the core count "
          "slows torch's multi-threaded small ops a lot)")
    if args.json:
        out = {"title": title, "machine": machine(), "quick": bool(args.quick), "seed": args.seed,
               "rows": [asdict(r) for r in rows], **(extra or {})}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def guarded(name: str, rows: list[Row], fn: Callable[[], None]) -> None:
    """Run one benchmark section; an exception becomes an ``ERROR`` row (benchmarks never crash)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - report and go on
        rows.append(Row(name, None, status="ERROR", note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"))


def amp_context(device: str = "cpu"):
    """The precision context the library's own loops use (``core.runtime.mixed_precision``: bf16
    autocast on CPUs with native bf16, AMP on CUDA), so a baseline runs exactly like the pipeline."""
    import torch

    from wsss_lib.core.runtime import mixed_precision

    return mixed_precision(torch.device(device), True)


def training_layout(model):
    """Put ``model`` in the memory layout ``train.fit`` uses (channels-last on CPU); returns it."""
    import torch

    return model.to(memory_format=torch.channels_last)


def toy_batch(n: int, split: str = "test", size: int = 96, seed: int = 0):
    """``n`` ToyObjects images rendered in memory (no disk): uint8 ``(n, 3, H, W)``, labels ``(n, H, W)``
    (0..6, 255 band) and fg tags ``(n, 6)``."""
    import numpy as np
    import torch

    from wsss_lib.data.toy_objects import generate_image

    ims, labs = [], []
    for i in range(n):
        im, lab, _ = generate_image(seed, split, i, size=(size, size))
        ims.append(im)
        labs.append(lab)
    images = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.stack(labs)).long()
    tags = torch.stack([torch.stack([(l == c).any() for c in range(1, 7)]) for l in labels]).float()
    return images, labels, tags
