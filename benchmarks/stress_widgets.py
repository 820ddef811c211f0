"""Stress the notebook executor on the widget notebooks: count cells whose reply went unnoticed.

Executes the widget notebooks (02, 03, 05 by default) again and again in quick mode through the
runner, with the ``wsss`` engine (:mod:`wsss_lib.nbexec`, the default) or papermill's own
``nbclient`` engine (the one that hung, issue 11), and reads each executed notebook's timing
metadata: a *stall* is a cell whose client noticed the kernel's reply more than ``--lag`` s after
the kernel sent it (:func:`wsss_lib.nbexec.reply_lags`). Before the runs, the notebooks (and 01,
whose classifier 02/03 use) are executed once, not counted, so every counted run reuses the cached
models and takes seconds.

    python benchmarks/stress_widgets.py --runs 10                    # the fix: expect 0 stalls
    python benchmarks/stress_widgets.py --runs 10 --engine nbclient  # before the fix, for comparison

Writes ``<out>/stress.json`` (every execution: notebook, engine, status, seconds, max lag, the
stalled cells) and prints a summary. Exits 0 (a benchmark, not a test); the short version that CI
runs is ``tests/test_nbexec.py`` plus the lag check on every notebook of the quick run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _common import REPO, start

from wsss_lib.nbexec import reply_lags
from wsss_lib.runner import run_notebooks


def _configure(p) -> None:
    p.add_argument("--runs", type=int, default=10, help="rounds; each executes every notebook once (default 10)")
    p.add_argument("--notebooks", nargs="+", default=["02", "03", "05"], help="notebook prefixes (default 02 03 05)")
    p.add_argument("--engine", default="wsss", choices=["wsss", "nbclient"], help="papermill engine (default wsss)")
    p.add_argument("--timeout", type=int, default=120,
                   help="per-cell limit in s: how long a stall of the old engine lasts (default 120)")
    p.add_argument("--lag", type=float, default=2.0, help="a cell noticed this many s late is a stall (default 2)")
    p.add_argument("--out", default=str(REPO / "runs" / "stress_widgets"), help="output folder")


def main(argv=None) -> int:
    args = start(__doc__, argv, _configure)
    out = Path(args.out)
    warm = ["01"] + [n for n in args.notebooks if n != "01"]
    print(f"warm-up (not counted): {' '.join(warm)}", flush=True)
    run_notebooks(out, quick=True, only=warm, html=False, seed=args.seed, device="cpu", keep_going=True)
    rows = []
    for r in range(args.runs):
        for name in args.notebooks:
            t0 = time.time()
            res = run_notebooks(out, quick=True, only=[name], html=False, seed=args.seed, device="cpu",
                                timeout=args.timeout, retries=0, engine=args.engine)
            (stem, result), = res.items()
            lags = reply_lags(result.output) if Path(result.output).is_file() else []
            stalled = [(i, round(lag, 2)) for i, lag in lags if lag > args.lag]
            rows.append({"round": r, "notebook": stem, "engine": args.engine, "status": result.status,
                         "seconds": round(time.time() - t0, 1), "max_lag": round(max((l for _, l in lags), default=0), 3),
                         "stalled_cells": stalled})
            print(f"round {r} {stem}: {result.status} {rows[-1]['seconds']} s, max lag {rows[-1]['max_lag']} s"
                  + (f"  STALL {stalled}" if stalled else ""), flush=True)
            (out / "stress.json").write_text(json.dumps(rows, indent=1))
    n_stall = sum(bool(row["stalled_cells"]) for row in rows)
    n_fail = sum(row["status"] != "ok" for row in rows)
    print(f"\nengine {args.engine}: {len(rows)} executions, {n_stall} stalled (a cell noticed > {args.lag} s late), "
          f"{n_fail} failed; wall {sum(row['seconds'] for row in rows):.0f} s; rows in {out / 'stress.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
