"""``wsss data``: generate the embedded toy datasets, or check a real dataset's layout."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("data", help="generate toy datasets / check a real dataset root")
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT")
    dsub.required = True
    for name, help_ in (("toy-objects", "ToyObjects (VOC-like still images)"),
                        ("toy-streets", "ToyStreets (Cityscapes/CamVid-like video clips)")):
        q = dsub.add_parser(name, help=f"generate {help_}")
        q.add_argument("--out", default=None, help="dataset root (default: <data root>/toy/objects or toy/streets)")
        q.add_argument("--n", type=int, default=None, help="number of TRAIN images (objects) or clips (streets)")
        q.add_argument("--seed", type=int, default=None)
        q.set_defaults(func=_toy, kind=name)
    c = dsub.add_parser("check", help="index a dataset root and print its class/sample counts")
    c.add_argument("dataset", help="toy_objects, toy_objects_textured, toy_streets, voc, voc_aug, cityscapes, "
                                   "camvid, youtube_objects")
    c.add_argument("--root", default=None)
    c.add_argument("--split", default="train")
    c.set_defaults(func=_check)


def _toy(args) -> int:
    from ..core.config import preset  # lazy: `wsss --help` and other commands do not load every pipeline
    from ..data.registry import default_data_root  # lazy: `wsss --help` and other commands do not load every pipeline

    over = {"seed": args.seed} if args.seed is not None else {}
    if args.kind == "toy-objects":
        from ..data.toy_objects import ensure_toy_objects  # lazy: `wsss --help` and other commands do not load every pipeline

        if args.n is not None:
            over["n_train"] = args.n
        root = Path(args.out) if args.out else default_data_root() / "toy" / "objects"
        ensure_toy_objects(root, **preset("toy_objects", **over))
    else:
        from ..data.toy_streets import ensure_toy_streets  # lazy: `wsss --help` and other commands do not load every pipeline

        if args.n is not None:
            over["n_train"] = args.n
        root = Path(args.out) if args.out else default_data_root() / "toy" / "streets"
        ensure_toy_streets(root, **preset("toy_streets", **over))
    print(f"wsss data: {args.kind} ready in {root}")
    return 0


def _check(args) -> int:
    from ..data.registry import default_data_root, load_dataset  # lazy: `wsss --help` and other commands do not load every pipeline

    root = args.root or default_data_root()
    info, samples = load_dataset(args.dataset, root, args.split)
    print(json.dumps({"dataset": info.name, "split": args.split, "samples": len(samples),
                      "classes": info.classes, "background": info.background}, indent=2))
    return 0
