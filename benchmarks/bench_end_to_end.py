"""Benchmark 5: end to end — ``wsss run --quick`` (and, with ``--default``, the default run): wall time,
peak memory, and each notebook's time (from ``<out>/status.json``).

Targets (2-core CPU, nothing else running): quick <= 6 min, default <= 20 min, peak RSS <= 4 GB.
Peak RSS is measured two ways: ``/usr/bin/time -v``'s "Maximum resident set size" (the largest
*single* process of the run, i.e. a notebook kernel; ``resource.getrusage(RUSAGE_CHILDREN)`` when
GNU time is absent), and the peak of the *summed* RSS of the whole process tree (runner + kernel),
sampled every 0.5 s with psutil. This is long: ``run_all.py`` runs it only with ``--end-to-end``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import REPO, Row, finish, start

TARGETS = {"quick": ("<= 6", "min"), "default": ("<= 20", "min")}
RSS_TARGET = "<= 4"


def _tree_rss_sampler(pid: int, stop: threading.Event, out: dict) -> None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with ipykernel
        return
    peak = 0
    while not stop.is_set():
        try:
            root = psutil.Process(pid)
            procs = [root] + root.children(recursive=True)
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, total)
        except psutil.NoSuchProcess:
            break
        out["peak"] = peak
        stop.wait(0.5)


def run_mode(mode: str, out_dir: Path, device: str) -> dict:
    """Run ``wsss run`` in ``mode`` ("quick" | "default") into ``out_dir``; timing + memory + status."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    cmd = [sys.executable, "-m", "wsss_lib", "run", "--out", str(out_dir), "--no-html", "--keep-going",
           "--device", device]
    if mode == "quick":
        cmd.insert(4, "--quick")
    gnu_time = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    tfile = out_dir.parent / f".{out_dir.name}.time"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    full = [gnu_time, "-v", "-o", str(tfile)] + cmd if gnu_time else cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, tree = threading.Event(), {}
    sampler = threading.Thread(target=_tree_rss_sampler, args=(proc.pid, stop, tree), daemon=True)
    sampler.start()
    log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join(2)
    max_rss_kb = None
    if gnu_time and tfile.is_file():
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", tfile.read_text())
        max_rss_kb = int(m.group(1)) if m else None
        tfile.unlink()
    if max_rss_kb is None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
        max_rss_kb = after if after > before else None
    (out_dir.parent / f"{out_dir.name}.log").write_text(log)
    status = {}
    if (out_dir / "status.json").is_file():
        status = json.loads((out_dir / "status.json").read_text())
    return {"mode": mode, "returncode": proc.returncode, "wall_s": wall, "max_rss_gb": (max_rss_kb or 0) / 1024 ** 2 or None,
            "tree_peak_gb": tree.get("peak", 0) / 1024 ** 3 or None, "status": status}


def main(argv=None) -> int:
    def configure(p):
        p.add_argument("--default", action="store_true", help="also run the default (non-quick) mode (~20 min)")
        p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="where the runs go (default runs/bench)")
        p.add_argument("--device", default="cpu")

    args = start(__doc__, argv, configure)
    modes = ["quick"] + (["default"] if args.default else [])
    rows: list[Row] = []
    results = {}
    for mode in modes:
        r = run_mode(mode, Path(args.out) / f"e2e_{mode}", args.device)
        results[mode] = r
        target, _ = TARGETS[mode]
        ok = sum(1 for s in r["status"].values() if s.get("status") == "ok")
        note = f"exit {r['returncode']}, {ok}/{len(r['status'])} notebooks ok"
        rows.append(Row(f"wsss run {'--quick' if mode == 'quick' else '(default)'}: wall", r["wall_s"] / 60, "min",
                        target, note=note))
        rows.append(Row(f"{mode}: peak RSS, largest process", r["max_rss_gb"], "GB", RSS_TARGET,
                        note="/usr/bin/time -v"))
        rows.append(Row(f"{mode}: peak RSS, whole process tree", r["tree_peak_gb"], "GB", RSS_TARGET,
                        note="psutil, sampled every 0.5 s"))
        for name, st in sorted(r["status"].items()):
            rows.append(Row(f"  {mode}: {name}", st.get("seconds"), "s", note=st.get("status", "") +
                            (f": {st['error'][:80]}" if st.get("error") else "")))
    return finish("End to end: wsss run", rows, args, extra={"runs": results})


if __name__ == "__main__":
    raise SystemExit(main())
