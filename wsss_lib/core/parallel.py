"""Worker processes: the ONE process-pool helper (CRF batches, toy-data generation, SBD conversion).

Kept free of torch so that worker processes started with ``forkserver``/``spawn`` import little.

* :func:`num_threads_hint` — cores usable by a pool.
* :func:`pool_context` — the start method: ``forkserver`` inside a Jupyter/IPython kernel (forking
  the kernel itself — zmq threads, torch/OpenMP pools — can deadlock a child, which hung notebook
  runs; the kernel's ``__main__`` has no file, so nothing is re-imported), ``fork`` elsewhere
  (cheap, and unlike forkserver/spawn it does not re-run a user's script that lacks an
  ``if __name__ == "__main__":`` guard).
* :func:`run_pool` — ``[fn(t) for t in tasks]`` on worker processes when worthwhile, order kept.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence


def num_threads_hint() -> int:
    """Cores usable by worker pools (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def pool_context(method: str | None = None):
    """The multiprocessing context of a worker pool (see module docstring); ``method`` forces one
    (falling back to this function's choice when the platform lacks it)."""
    methods = mp.get_all_start_methods()
    if method is not None and method in methods:
        return mp.get_context(method)
    if "ipykernel" in sys.modules or "fork" not in methods:
        return mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    return mp.get_context("fork")


def run_pool(fn: Callable, tasks: Sequence, workers: int | None = None, *, min_tasks: int = 2,
             start_method: str | None = None, chunksize: int | None = None, on_result: Callable | None = None,
             in_process_without_fork: bool = False) -> list:
    """``[fn(t) for t in tasks]`` on ``workers`` processes (default :func:`num_threads_hint`), in order.

    Runs in this process when ``workers <= 1`` or there are fewer than ``min_tasks`` tasks, or, with
    ``in_process_without_fork``, when the platform cannot fork (spawning would re-import torch in
    every worker, which costs more than it saves for short tasks). OpenCV's thread pool does not
    survive ``fork`` (children deadlock when the parent has used a parallel cv2 call), so while the
    workers start, an already imported cv2 is switched to one thread and restored afterwards.
    ``on_result(r)`` is called after each result (progress bars).
    """
    tasks = list(tasks)
    workers = num_threads_hint() if workers is None else int(workers)
    workers = max(1, min(workers, len(tasks))) if tasks else 1
    no_fork = "fork" not in mp.get_all_start_methods()
    if workers <= 1 or len(tasks) < min_tasks or (in_process_without_fork and no_fork):
        out = []
        for t in tasks:
            out.append(fn(t))
            if on_result is not None:
                on_result(out[-1])
        return out
    cv2 = sys.modules.get("cv2")
    n_cv = cv2.getNumThreads() if cv2 is not None else None
    if cv2 is not None:
        cv2.setNumThreads(1)
    chunk = chunksize or max(1, len(tasks) // (workers * 4))
    out = []
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(start_method)) as ex:
            for r in ex.map(fn, tasks, chunksize=chunk):
                out.append(r)
                if on_result is not None:
                    on_result(r)
    finally:
        if cv2 is not None:
            cv2.setNumThreads(n_cv)
    return out
