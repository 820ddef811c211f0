"""Run every benchmark (each in its own process) and print one summary of the targets.

    python benchmarks/run_all.py [--quick] [--end-to-end [--default-run]] [--only crf losses] [--out DIR]

Each script's full table is printed as it finishes; each also writes ``<out>/<name>.json``. The
summary (every row that has a target, PASS/MISS) goes to stdout and to ``<out>/summary.md`` /
``summary.json``. Missed targets never make this fail; exit 1 only if a script itself crashed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import REPO, Row, machine, print_table  # noqa: E402

SCRIPTS = ["masks", "crf", "losses", "data", "scaling", "train"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short versions of every benchmark (~3-5 min in all)")
    p.add_argument("--end-to-end", action="store_true", help="also time `wsss run --quick` (minutes)")
    p.add_argument("--default-run", action="store_true", help="with --end-to-end: also the default run (~20 min)")
    p.add_argument("--only", nargs="+", choices=SCRIPTS + ["end_to_end"], help="run only these benchmarks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads in every benchmark (default: untouched)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="JSON/summary folder (default runs/bench)")
    args = p.parse_args(argv)
    names = list(args.only or SCRIPTS + (["end_to_end"] if args.end_to_end else []))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: list[Row] = []
    crashed = []
    t_all = time.perf_counter()
    for name in names:
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), "--seed", str(args.seed), "--json", str(out / f"{name}.json")]
        if args.quick:
            cmd.append("--quick")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if name == "end_to_end":
            cmd += ["--out", str(out)] + (["--default"] if args.default_run else [])
        print(f"\n##### bench_{name}.py {'(quick)' if args.quick else ''}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=REPO)
        print(f"(bench_{name}: {time.perf_counter() - t0:.0f} s, exit {rc})", flush=True)
        jf = out / f"{name}.json"
        if rc != 0 or not jf.is_file():
            crashed.append(name)
            summary.append(Row(f"[{name}] script", None, status="ERROR", note=f"exit code {rc}"))
            continue
        for r in json.loads(jf.read_text())["rows"]:
            if r["target"] or r["status"] in ("ERROR", "n/a"):
                summary.append(Row(f"[{name}] {r['name']}", r["value"], r["unit"], r["target"], r["note"], r["status"]))
    print_table(f"Summary ({'quick' if args.quick else 'full'}; {time.perf_counter() - t_all:.0f} s)", summary)
    m = machine()
    if args.threads:
        m["torch_threads"] = args.threads
    print(f"machine: {m}")
    counts = {s: sum(1 for r in summary if r.status == s) for s in ("PASS", "MISS", "n/a", "ERROR")}
    print("targets: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    (out / "summary.json").write_text(json.dumps({"machine": m, "quick": args.quick, "counts": counts,
                                                  "rows": [r.__dict__ for r in summary]}, indent=2))
    md = ["| measure | value | unit | target | status | note |", "|---|---|---|---|---|---|"]
    from _common import fmt

    md += [f"| {r.name} | {fmt(r.value)} | {r.unit} | {r.target} | {r.status} | {r.note} |" for r in summary]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
