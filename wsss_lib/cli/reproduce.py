"""``wsss reproduce paper1``: a paper's whole pipeline on real data at the paper's scale, one command.

Every step is a cached load-or-compute under ``--out`` (classifier and segmentation checkpoints,
per-image mask PNGs), so a killed run started again continues where it stopped. Writes
``<out>/reproduce_paper1.md`` (the results table) and ``<out>/reproduce_paper1.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import InvalidInputError
from ..core.io import atomic_write_bytes, to_jsonable
from ._shared import add_pipeline_args, add_profile_args


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run a paper's whole pipeline (classifier, masks, segmentation, evaluation)")
    p.add_argument("paper", choices=["paper1"], help="which paper (paper 1: VOC 2012 + SBD train_aug)")
    add_pipeline_args(p, "voc_aug", "runs/reproduce_paper1")
    add_profile_args(p)
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply every training's steps (e.g. 0.1 for a trial run; default 1)")
    p.add_argument("--split", default="val", choices=["val", "test"],
                   help="evaluation split (VOC: val; its test labels are not public)")
    p.set_defaults(func=cmd_reproduce)


def _markdown(res: dict) -> str:
    from ..figures import markdown_table  # lazy: figures imports matplotlib helpers

    cfg = res["config"]
    rows = [{"step": r["step"], "metric": r["metric"], "measured": r["measured"],
             "paper [summary]": "–" if r["paper"] is None else r["paper"]} for r in res["rows"]]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
    return (f"# Paper 1 reproduction: {cfg['dataset']} (profile {cfg['profile']}{', quick' if cfg['quick'] else ''}, "
            f"seed {cfg['seed']}, {cfg['device']})\n\n" + markdown_table(rows) +
            f"\n\nSteps: classifier {cfg['classifier']['steps']}, segmentation {cfg['seg']['steps']} "
            f"(steps scale {cfg['steps_scale']}). Time of this invocation: {secs} (0 s = loaded from an earlier run).\n"
            "Paper column: VOC 2012 val mIoU from tags only as reported for paper 1 [summary, papers README]; "
            "whether it includes CRF post-processing is not known to us.\n")


def cmd_reproduce(args) -> int:
    from ..papers.common import make_context  # lazy: `wsss --help` does not load the pipelines
    from ..papers.paper1 import reproduce  # lazy: `wsss --help` does not load the pipelines

    if not args.steps_scale > 0:
        raise InvalidInputError(f"--steps-scale must be > 0, got {args.steps_scale}")
    ctx = make_context(args.data_root, args.out, args.device, args.quick, args.seed, args.dataset, preset=args.preset)
    res = reproduce(ctx, pretrained=args.pretrained, steps_scale=args.steps_scale, progress=args.progress,
                    split=args.split)
    out = Path(ctx.out)
    atomic_write_bytes(out / "reproduce_paper1.json", json.dumps(to_jsonable(res), indent=2, sort_keys=True).encode())
    atomic_write_bytes(out / "reproduce_paper1.md", _markdown(res).encode())
    print(out / "reproduce_paper1.md")
    return 0
