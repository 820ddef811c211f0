"""``wsss study paper1 | paper2``: every compared model of a paper trained for several seeds, then a
table of paired differences with 95 % bootstrap intervals (``<out>/study.md`` / ``study.json``).

``--choose`` first makes the VAL choices on seed 0 and writes ``<out>/seed_0/choices.json`` (paper 1:
CRF setting and training steps per mode; paper 2: training steps per video model kind); the presets
hold the chosen values (a mismatch is reported).
"""

from __future__ import annotations

import sys

DEFAULT_DATASET = {"paper1": "toy_objects", "paper2": "toy_streets"}


def register(sub) -> None:
    p = sub.add_parser("study", help="seed study of a paper: paired differences with 95 % intervals")
    p.add_argument("paper", choices=["paper1", "paper2"], help="which paper's comparisons")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1; default 5)")
    p.add_argument("--out", default=None, help="output folder (default: runs/study_<paper>[_quick])")
    p.add_argument("--data-root", default=None)
    p.add_argument("--dataset", default=None, help="default: toy_objects (paper1), toy_streets (paper2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="quick (CI-sized) settings")
    p.add_argument("--choose", action="store_true", help="make the VAL choices first (seed 0) into choices.json")
    p.add_argument("--choose-only", action="store_true", help="only the VAL choices")
    p.add_argument("--checkmask", action="store_true",
                   help="paper1: also the check-mask sweep (tau, annotator noise, mask quality) on the same seeds")
    p.add_argument("--checkmask-steps", type=int, default=None,
                   help="paper1: every net of the check-mask sweep trains this many steps instead of the prior's "
                        "VAL-chosen ones (a cheaper sweep, both arms alike) -> <out>/checkmask_study_steps<N>.md")
    p.add_argument("--fusion", action="store_true",
                   help="paper1: also the VAL sweep of the prior's layer fusion (layer sets x channel aggregate, raw "
                        "masks) on the same seeds' classifiers -> <out>/fusion_study.md (TEST not scored)")
    p.add_argument("--masks-only", action="store_true",
                   help="paper1: only the fg/bg mask comparisons (no segmentation nets) -> <out>/mask_study.md")
    p.add_argument("--seed-ids", type=int, nargs="+", default=None,
                   help="run only these seeds (e.g. to split a study over processes; default 0..N-1 of --seeds)")
    p.add_argument("--kinds", nargs="+", default=None,
                   help="only these models (paper1: segmentation nets prior tags full checkmask; paper2: video "
                        "model kinds; default: every compared one); --choose then chooses the steps of those "
                        "among them that are chosen on VAL; a seed scored with fewer kinds is rescored")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    p.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    if args.checkmask_steps is not None and (args.checkmask_steps < 1 or not args.checkmask or args.paper != "paper1"):
        print("wsss: --checkmask-steps needs paper1 --checkmask and a positive number of steps", file=sys.stderr)
        return 2
    from ..papers.study import default_study_dir  # lazy: `wsss --help` and other commands do not load every pipeline
    from ..papers.common import make_context  # lazy: `wsss --help` and other commands do not load every pipeline

    if args.paper == "paper1":
        from ..papers.study_paper1 import choose_paper1 as choose, paper1_study as study  # lazy: `wsss --help` and other commands do not load every pipeline
    else:
        from ..papers.study_paper2 import choose_paper2 as choose, paper2_study as study  # lazy: `wsss --help` and other commands do not load every pipeline
    dataset = args.dataset or DEFAULT_DATASET[args.paper]
    out = args.out or str(default_study_dir(args.paper, args.quick))
    study_kw, choose_kw = {}, {}
    if args.kinds:
        if args.paper == "paper1":
            from ..papers.paper1 import SEG_KINDS as known  # lazy: `wsss --help` and other commands do not load every pipeline
            from ..papers.study_paper1 import CHOOSE_MODES as choosable  # lazy: as above
        else:
            from ..papers.study_paper2 import CHOOSE_KINDS as choosable, STUDY_KINDS as known  # lazy: as above
        unknown = [k for k in args.kinds if k not in known]
        if unknown:
            print(f"wsss: unknown {args.paper} kind(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        study_kw["kinds"] = tuple(k for k in known if k in args.kinds)
        choose_kw["modes" if args.paper == "paper1" else "kinds"] = tuple(k for k in choosable if k in args.kinds)
    if args.choose or args.choose_only:
        ctx = make_context(args.data_root, f"{out}/seed_0", args.device, args.quick, 0, dataset, name="study")
        ch = choose(ctx, progress=args.progress, **choose_kw)
        what = f"CRF {ch['crf']['best']}, " if "crf" in ch else ""
        print(f"VAL choices -> {ctx.out}/choices.json: {what}steps {ch['steps']['chosen']}")
        for name, ok in ch["presets_agree"].items():
            if not ok:
                print(f"wsss: note: the presets' {name} differ from the VAL choice; update wsss_lib/core/config.py",
                      file=sys.stderr)
        if args.choose_only:
            return 0
    extra = {"masks_only": True} if args.masks_only and args.paper == "paper1" else {}
    seeds = args.seed_ids if args.seed_ids is not None else range(args.seeds)
    summary = study(out, seeds, args.quick, args.device, args.data_root, dataset,
                    progress=args.progress, n_resamples=args.resamples, **extra, **study_kw)
    print(f"{out}/{summary['stem']}.md ({len(summary['seeds'])} seeds, {summary['wall_seconds'] / 60:.1f} min)")
    if args.checkmask and args.paper == "paper1":
        from ..papers.study_paper1 import checkmask_study  # lazy: `wsss --help` and other commands do not load every pipeline

        cm = checkmask_study(out, seeds, args.quick, args.device, args.data_root, dataset, steps=args.checkmask_steps,
                             progress=args.progress, n_resamples=args.resamples)
        print(f"{out}/{cm['stem']}.md ({len(cm['seeds'])} seeds, {cm['wall_seconds'] / 60:.1f} min)")
    if args.fusion and args.paper == "paper1":
        from ..papers.study_paper1 import fusion_study  # lazy: `wsss --help` and other commands do not load every pipeline

        fu = fusion_study(out, seeds, args.quick, args.device, args.data_root, dataset, progress=args.progress,
                          n_resamples=args.resamples)
        print(f"{out}/{fu['stem']}.md ({len(fu['seeds'])} seeds, {fu['wall_seconds'] / 60:.1f} min)")
    return 0
