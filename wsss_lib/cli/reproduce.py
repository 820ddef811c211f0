"""``wsss reproduce paper1|paper2``: a paper's whole pipeline on real data at the paper's scale, one command.

Every step is a cached load-or-compute under ``--out`` (classifier, segmentation and video-model
checkpoints, per-image mask PNGs; paper 2's optical flow is cached per frame under the data root),
so a killed run started again continues where it stopped. Writes ``<out>/reproduce_<paper>.md``
(the results table) and ``<out>/reproduce_<paper>.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..core.errors import InvalidInputError
from ..core.io import atomic_write_bytes, to_jsonable
from ._shared import add_pipeline_args, add_profile_args

# the dataset each paper reproduces by default, and the datasets it accepts
DATASETS = {"paper1": ("voc_aug", ("voc_aug", "voc")), "paper2": ("cityscapes", ("cityscapes", "camvid"))}


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run a paper's whole pipeline (paper 1: classifier, masks, segmentation, "
                                         "evaluation; paper 2: flow, heatmap classifier, regions, video models, "
                                         "evaluation)")
    p.add_argument("paper", choices=sorted(DATASETS),
                   help="which paper (paper 1: VOC 2012 + SBD train_aug; paper 2: Cityscapes or CamVid)")
    add_pipeline_args(p, "voc_aug", "runs/reproduce_<paper>")
    p.set_defaults(dataset=None)  # per paper (DATASETS)
    add_profile_args(p)
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply every training's steps (e.g. 0.1 for a trial run; default 1)")
    p.add_argument("--split", default="val", choices=["val", "test"],
                   help="paper 1's evaluation split (VOC: val; its test labels are not public)")
    p.add_argument("--baselines", nargs="+", default=[], choices=["tags", "full", "checkmask"],
                   help="paper 1: also train and score the same network from tags only, fully supervised "
                        "(the upper bound) and/or with check-mask clicks (simulated from the train labels), "
                        "as rows of the table")
    p.add_argument("--kinds", nargs="+", default=None,
                   help="paper 2: video models to train and score (default: the preset's, appearance two_stream; "
                        "also single_bg, full, two_stream_zero_flow, two_stream_shuffled_flow)")
    p.set_defaults(func=cmd_reproduce)


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _markdown_paper1(res: dict) -> str:
    from ..figures import markdown_table  # lazy: figures imports matplotlib helpers

    cfg = res["config"]
    rows = [{"step": r["step"], "metric": r["metric"], "measured": r["measured"],
             "paper [summary]": "–" if r["paper"] is None else r["paper"]} for r in res["rows"]]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
    return (f"# Paper 1 reproduction: {cfg['dataset']} (profile {cfg['profile']}{', quick' if cfg['quick'] else ''}, "
            f"seed {cfg['seed']}, {cfg['device']})\n\n" + markdown_table(rows) +
            f"\n\nSteps: classifier {cfg['classifier']['steps']}, segmentation "
            + ", ".join(f"{m} {c['steps']}" for m, c in cfg["seg_modes"].items()) + " "
            f"(steps scale {cfg['steps_scale']}). Time of this invocation: {secs} (0 s = loaded from an earlier run).\n"
            "Paper column: VOC 2012 val mIoU from tags only as reported for paper 1 [summary, papers README]; "
            "whether it includes CRF post-processing is not known to us.\n")


def _markdown_paper2(res: dict) -> str:
    from ..figures import markdown_table  # lazy: figures imports matplotlib helpers

    cfg, m = res["config"], res["metrics"]
    rows = [{"model": r["kind"], "mIoU": _fmt(r["miou"]), "background mIoU": _fmt(r["bg_miou"]),
             "foreground mIoU": _fmt(r["fg_miou"]), "moving-class mIoU": _fmt(r["moving_miou"]),
             "steps": m["trained"][r["kind"]]["steps"]} for r in res["rows"]]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
    d = m["data"]
    size = "x".join(str(v) for v in d["size"]) if d.get("size") else "stored size"
    lines = [f"# Paper 2 reproduction: {cfg['dataset']} (profile {cfg['profile']}{', quick' if cfg['quick'] else ''}, "
             f"seed {cfg['seed']}, {cfg['device']})", "",
             f"Test = the official **{cfg['test_split']}** split ({d['test']['frames']} frames), scored at the stored "
             f"label resolution; frames resized to {size} for the networks. Train: {d['train']['frames']} frames of "
             f"{d['train']['source_split']}. Frames without a neighbouring frame (zero flow): train "
             f"{d['train']['zero_flow']}, test {d['test']['zero_flow']}.", "",
             markdown_table(rows), "",
             f"Heatmap classifier (all classes, background ones included): test tag mAP {_fmt(m['classifier']['map'])}."]
    if "regions" in m:
        r = m["regions"]
        lines.append(f"Heatmap regions of the training frames vs their labels: mIoU {_fmt(r['miou'])} (background "
                     f"{_fmt(r['bg_miou'])}, foreground {_fmt(r['fg_miou'])}), coverage {_fmt(r['coverage'])}.")
    kinds = {r["kind"]: r for r in res["rows"]}
    if "appearance" in kinds and "two_stream" in kinds:
        lines.append(f"two-stream − appearance: mIoU {kinds['two_stream']['miou'] - kinds['appearance']['miou']:+.3f} "
                     "(paper 2's direction [paper]: two streams beat appearance alone; its numbers are not available "
                     "to us).")
    lines += ["", f"Classifier steps {cfg['classifier']['steps']}; steps scale {cfg['steps_scale']}. Time of this "
              f"invocation: {secs} (0 s = loaded from an earlier run).", ""]
    return "\n".join(lines)


def cmd_reproduce(args) -> int:
    from ..papers.common import make_context  # lazy: `wsss --help` does not load the pipelines

    if not args.steps_scale > 0:
        raise InvalidInputError(f"--steps-scale must be > 0, got {args.steps_scale}")
    default, allowed = DATASETS[args.paper]
    dataset = args.dataset or default
    if dataset not in allowed:
        raise InvalidInputError(f"wsss reproduce {args.paper} runs on {' or '.join(allowed)}, not {dataset!r}")
    out = args.out.replace("<paper>", args.paper)
    ctx = make_context(args.data_root, out, args.device, args.quick, args.seed, dataset, preset=args.preset)
    if args.paper == "paper1":
        from ..papers.paper1 import reproduce  # lazy: `wsss --help` does not load the pipelines

        res = reproduce(ctx, pretrained=args.pretrained, steps_scale=args.steps_scale, progress=args.progress,
                        split=args.split, baselines=args.baselines)
        text = _markdown_paper1(res)
    else:
        from ..papers.paper2 import reproduce  # lazy: `wsss --help` does not load the pipelines

        res = reproduce(ctx, kinds=args.kinds, pretrained=args.pretrained, steps_scale=args.steps_scale,
                        progress=args.progress)
        text = _markdown_paper2(res)
    out = Path(ctx.out)
    atomic_write_bytes(out / f"reproduce_{args.paper}.json", json.dumps(to_jsonable(res), indent=2, sort_keys=True).encode())
    atomic_write_bytes(out / f"reproduce_{args.paper}.md", text.encode())
    print(out / f"reproduce_{args.paper}.md")
    return 0
