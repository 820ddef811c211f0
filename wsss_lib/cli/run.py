"""``wsss run``: execute every notebook with papermill (the main job)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("run", help="execute the notebooks with papermill, write executed copies, HTML, figures, results")
    p.add_argument("--out", default=None,
                   help="output folder (default: $WSSS_OUTPUT_DIR, else <checkout>/runs/latest, where notebooks "
                        "opened in JupyterLab also write)")
    p.add_argument("--quick", action="store_true", help="CI-sized parameters (minutes, not tens of minutes)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (name or prefix, e.g. 02)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="extra papermill parameter passed to every notebook (repeatable)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    p.add_argument("--notebooks", default=None, help="notebook folder (default: the checkout's notebooks/)")
    p.add_argument("--no-html", action="store_true", help="skip the nbconvert HTML rendering")
    p.add_argument("--timeout", type=int, default=None,
                   help="per-cell timeout in seconds (default 300 with --quick, 4 h otherwise; 0 = none)")
    p.add_argument("--retries", type=int, default=1,
                   help="run a notebook again in a fresh kernel when a cell timed out (default 1)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..core.results import default_output_dir  # lazy: `wsss --help` and other commands load little
    from ..runner import parse_value, run_notebooks  # lazy: `wsss --help` and other commands do not load every pipeline

    out = args.out or default_output_dir()
    params = {k: parse_value(v) for k, v in args.param}
    results = run_notebooks(out, notebooks_dir=args.notebooks, quick=args.quick, only=args.only, params=params,
                            device=args.device, seed=args.seed, keep_going=args.keep_going, html=not args.no_html,
                            timeout=args.timeout, retries=args.retries)
    failed = [r for r in results.values() if r.status != "ok"]
    print(f"wsss run: {len(results) - len(failed)} ok, {len(failed)} failed; results in {out}/results.md, gallery {out}/index.html")
    for r in failed:
        print(f"  FAILED {r.name}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
