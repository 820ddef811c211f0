"""``wsss bench``: run the performance benchmarks (``benchmarks/run_all.py`` of the checkout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..core.errors import WsssError


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmarks (benchmarks/run_all.py): timings, ratios, PASS/MISS")
    p.add_argument("--quick", action="store_true", help="short versions (a few minutes)")
    p.add_argument("--end-to-end", action="store_true", help="also time `wsss run --quick` end to end")
    p.add_argument("--default-run", action="store_true", help="with --end-to-end: also the default run")
    p.add_argument("--only", nargs="+", metavar="NAME", help="masks, crf, losses, data, scaling, end_to_end")
    p.add_argument("--out", default=None, help="JSON/summary folder (default: runs/bench in the checkout)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_bench)


def benchmarks_dir() -> Path:
    """``<checkout>/benchmarks`` (the benchmarks are scripts of the repository, not of the package)."""
    return Path(__file__).resolve().parents[2] / "benchmarks"


def _bench(args) -> int:
    script = benchmarks_dir() / "run_all.py"
    if not script.is_file():
        raise WsssError(f"benchmarks not found at {script}; `wsss bench` needs a source checkout "
                        "(pip install -e .) — or run `python benchmarks/run_all.py` there")
    cmd = [sys.executable, str(script), "--seed", str(args.seed)]
    if args.quick:
        cmd.append("--quick")
    if args.end_to_end:
        cmd.append("--end-to-end")
    if args.default_run:
        cmd.append("--default-run")
    if args.only:
        cmd += ["--only", *args.only]
    if args.out:
        cmd += ["--out", args.out]
    return subprocess.call(cmd)
