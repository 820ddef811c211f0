"""``wsss train-classifier | masks | train-seg | evaluate``: paper 1's pipeline from the command line.

Every command takes ``--data-root --dataset --out --device --seed --quick --resume/--no-resume``,
reuses what earlier commands (or notebooks 01-04 run with the same ``--out``) left in the output
folder, writes its metrics as JSON into ``--out`` and prints that file's path.
"""

from __future__ import annotations

from pathlib import Path

from ._shared import add_pipeline_args, add_profile_args, classifier_overrides, write_metrics


def _common(p) -> None:
    add_pipeline_args(p, "toy_objects", "runs/paper1", resume=True)
    add_profile_args(p)


def register(sub) -> None:
    p = sub.add_parser("train-classifier", help="paper 1: train (or load) the multi-label tag classifier")
    _common(p)
    p.set_defaults(func=cmd_train_classifier)
    p = sub.add_parser("masks", help="paper 1: fg/bg masks from the classifier's activations (+ CRF, CAM, floor)")
    _common(p)
    p.set_defaults(func=cmd_masks)
    p = sub.add_parser("train-seg", help="paper 1: train a segmentation net (fg/bg prior, tags only, full, check-mask)")
    _common(p)
    p.add_argument("--mode", default="prior", choices=["prior", "tags", "full", "checkmask"])
    p.add_argument("--pooling", default=None, choices=["mean", "max", "lse", "pixel"],
                   help="region pooling of the prior loss (default: the seg preset's)")
    p.set_defaults(func=cmd_train_seg)
    p = sub.add_parser("evaluate", help="paper 1: evaluate every trained model in --out on a split")
    _common(p)
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--no-crf", dest="crf", action="store_false", default=True, help="skip CRF post-processing")
    p.set_defaults(func=cmd_evaluate)


def _ctx(args):
    from ..papers.common import make_context  # lazy: `wsss --help` and other commands do not load every pipeline

    return make_context(args.data_root, args.out, args.device, args.quick, args.seed, args.dataset,
                        preset=args.preset)


def _write(ctx, name: str, metrics: dict) -> int:
    return write_metrics(ctx.out, name, metrics)


def _classifier(ctx, args):
    from ..papers.paper1 import get_tag_classifier  # lazy: `wsss --help` and other commands do not load every pipeline

    return get_tag_classifier(ctx, retrain=not args.resume, resume=args.resume, progress=args.progress,
                              **classifier_overrides(args))


def _classifier_metrics(ctx, clf) -> dict:
    from ..papers.paper1 import load_split, streamed  # lazy: `wsss --help` and other commands do not load every pipeline
    from ..engine.predict import evaluate_classifier  # lazy: `wsss --help` and other commands do not load every pipeline

    out = {}
    for split in ("val",) if streamed(ctx) else ("val", "test"):  # real data: test labels are not public
        ds = load_split(ctx, split)
        ev = evaluate_classifier(clf, ds, classes=ds.info.foreground, device=ctx.device)
        names = [ds.info.classes[i] for i in ds.info.foreground]
        out[split] = {"map": ev["map"], "acc": ev["acc"], "exact": ev["exact"], "ap": dict(zip(names, ev["ap"]))}
    return out


def cmd_train_classifier(args) -> int:
    ctx = _ctx(args)
    clf, info = _classifier(ctx, args)
    return _write(ctx, "paper1_classifier", {"config": info["config"], "trained_now": info["trained"],
                                              "train_seconds": info["seconds"], **_classifier_metrics(ctx, clf)})


def cmd_masks(args) -> int:
    from ..papers.paper1 import mask_pipeline  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args)
    clf, _ = _classifier(ctx, args)
    mp = mask_pipeline(ctx, clf, progress=args.progress)
    return _write(ctx, "paper1_masks", {"thresholds": mp["thresholds"], "scores": mp["scores"],
                                         "png_dir": str(Path(ctx.out) / "masks" / "train_crf")})


def cmd_train_seg(args) -> int:
    from ..papers.paper1 import evaluate_segnet, seg_run  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args)
    clf, _ = _classifier(ctx, args)
    model, info = seg_run(ctx, args.mode, clf, pooling=args.pooling, progress=args.progress,
                          retrain=not args.resume, resume=args.resume)
    name = args.mode if args.pooling is None else f"{args.mode}_{args.pooling}"
    res = evaluate_segnet(ctx, model, "test", crf=True)
    return _write(ctx, f"paper1_seg_{name}", {"mode": args.mode, "pooling": info["config"]["pooling"],
                                               "split": "test", "train_seconds": info["seconds"],
                                               "checkmask": info["checkmask"], **res})


def cmd_evaluate(args) -> int:
    from ..papers.paper1 import evaluate_segnet, load_trained_segnets, mask_pipeline  # lazy: `wsss --help` and other commands do not load every pipeline

    ctx = _ctx(args)
    clf, _ = _classifier(ctx, args)
    out = {"classifier": _classifier_metrics(ctx, clf)}
    mp = mask_pipeline(ctx, clf, progress=args.progress)
    out["masks"] = mp["scores"][args.split]
    out["seg"] = {name: evaluate_segnet(ctx, m, args.split, crf=args.crf)
                  for name, m in load_trained_segnets(ctx).items()}
    return _write(ctx, f"paper1_eval_{args.split}", out)
