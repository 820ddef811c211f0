"""``wsss flow | heatmaps | train-video | evaluate-video``: paper 2's pipeline from the command line.

Every command takes ``--data-root --dataset --out --device --seed --quick``, reuses what earlier
commands (or notebooks 05-07 run with the same ``--out``) left in the output folder
(checkpoints; flow is cached under the data root), writes its metrics as JSON into ``--out`` and
prints that file's path.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._shared import add_pipeline_args, write_metrics

MODELS = ("appearance", "two_stream", "single_bg", "full")


def _common(p) -> None:
    add_pipeline_args(p, "toy_streets", "runs/paper2", resume=False)


def register(sub) -> None:
    p = sub.add_parser("flow", help="paper 2: compute and cache optical flow for every frame of a dataset")
    _common(p)
    p.add_argument("--method", default=None, choices=["farneback", "dis", "raft", "auto"],
                   help="flow method (default: the flow preset's; raft only with local weights)")
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits")
    p.set_defaults(func=cmd_flow)
    p = sub.add_parser("heatmaps", help="paper 2: train/load the all-class tag classifier and score its heatmap regions")
    _common(p)
    p.add_argument("--layer", default=None, help="'score' (class score maps) or a stage name for Grad-CAM")
    p.add_argument("--normalisation", default=None, choices=["minmax", "max", "sigmoid", "softmax", "none"])
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--crf", action="store_true", help="refine the regions with a dense CRF")
    p.add_argument("--classifier-steps", type=int, default=None, help="classifier training steps (default: preset)")
    p.set_defaults(func=cmd_heatmaps)
    p = sub.add_parser("train-video", help="paper 2: train (or load) a video segmentation model and evaluate it")
    _common(p)
    p.add_argument("--model", default="two_stream", choices=list(MODELS))
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the video_seg preset's)")
    p.add_argument("--classifier-steps", type=int, default=None, help="classifier training steps (default: preset)")
    p.set_defaults(func=cmd_train_video)
    p = sub.add_parser("evaluate-video", help="paper 2: evaluate every trained video model in --out")
    _common(p)
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.set_defaults(func=cmd_evaluate_video)


def _ctx(args, name: str):
    from ..papers.common import make_context  # lazy: `wsss --help` and other commands do not load every pipeline

    return make_context(name=name, quick=args.quick, seed=args.seed, device=args.device, dataset=args.dataset,
                        data_root=args.data_root, out=args.out)


def _clf_over(args) -> dict:
    return {"steps": args.classifier_steps} if getattr(args, "classifier_steps", None) else {}


def _write(ctx, name: str, metrics: dict) -> int:
    return write_metrics(ctx.out, name, metrics)


def cmd_flow(args) -> int:
    from ..papers.common import dataset_split  # lazy: `wsss --help` and other commands do not load every pipeline
    from ..engine.shard import compute_dataset_flow  # lazy: `wsss --help` and other commands do not load every pipeline
    from ..papers.paper2 import flow_cache  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args, "flow")
    cache = flow_cache(ctx, **({"method": args.method} if args.method else {}))
    out = {"dataset": ctx.dataset, "folder": str(cache.folder), "method": cache.params.method, "splits": {}}
    for split in [s for s in args.splits.split(",") if s]:
        t = time.time()
        _, samples = dataset_split(ctx, split)
        res = compute_dataset_flow(samples, cache, progress=args.progress, device=ctx.device)
        res["seconds"] = round(time.time() - t, 2)
        out["splits"][split] = res
    return _write(ctx, "paper2_flow", out)


def cmd_heatmaps(args) -> int:
    from ..papers.paper2 import get_classifier, get_regions, load_streets  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args, "heatmaps")
    streets = load_streets(ctx, progress=args.progress)
    clf, clf_info = get_classifier(ctx, streets, progress=args.progress, **_clf_over(args))
    over = {k: v for k, v in (("layer", args.layer), ("normalisation", args.normalisation),
                              ("threshold", args.threshold)) if v is not None}
    if args.crf:
        over["crf"] = True
    out = {"classifier": clf_info, "regions": {}}
    for split in ("train", "test"):
        reg = get_regions(ctx, clf, streets, split=split, progress=args.progress, **over)
        out["regions"][split] = reg["scores"]
        out["config"] = reg["config"]
    return _write(ctx, "paper2_heatmaps", out)


def cmd_train_video(args) -> int:
    from ..papers.paper2 import run_video_experiment  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args, "train-video")
    over = {"steps": args.steps} if args.steps else {}
    res = run_video_experiment(ctx, kinds=[args.model], progress=args.progress, model_overrides=over,
                               classifier_overrides=_clf_over(args))
    return _write(ctx, f"paper2_video_{args.model}", {"model": args.model, "split": "test",
                                                      "train": res["histories"][args.model],
                                                      **res["results"][args.model]})


def cmd_evaluate_video(args) -> int:
    from ..core.errors import WsssError  # lazy: `wsss --help` and other commands do not load every pipeline
    from ..papers.paper2 import evaluate_model, load_streets, load_video_checkpoints  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args, "evaluate-video")
    streets = load_streets(ctx, splits=("train", args.split), progress=args.progress)
    models = load_video_checkpoints(ctx, streets)
    if not models:
        raise WsssError(f"no trained video model in {Path(ctx.out) / 'checkpoints'}; run `wsss train-video --out "
                        f"{ctx.out}` first")
    out = {"split": args.split}
    for kind, (model, label_map) in models.items():
        out[kind] = evaluate_model(ctx, kind, model, streets, split=args.split, label_map=label_map)
    return _write(ctx, f"paper2_eval_{args.split}", out)
