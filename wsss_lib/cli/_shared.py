"""Arguments and output shared by the pipeline subcommands of both papers (``paper1``, ``paper2``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.io import atomic_write_bytes, to_jsonable


def add_pipeline_args(p, dataset: str, out: str, resume: bool = False) -> None:
    """``--data-root --dataset --out --device --seed --quick --no-progress`` (+ ``--resume/--no-resume``)."""
    p.add_argument("--data-root", default=None, help="data root (default: $WSSS_DATA_ROOT or <repo>/data)")
    p.add_argument("--dataset", default=dataset, help=f"dataset name (default {dataset})")
    p.add_argument("--out", default=out, help="output folder (checkpoints, metrics JSON)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="quick (CI-sized) settings")
    if resume:
        p.add_argument("--resume", dest="resume", action="store_true", default=True,
                       help="reuse/continue matching checkpoints (default)")
        p.add_argument("--no-resume", dest="resume", action="store_false", help="retrain from scratch")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)


def write_metrics(out_dir, name: str, metrics: dict) -> int:
    """Write ``<out_dir>/<name>.json`` atomically, print its path, return exit code 0."""
    path = Path(out_dir) / f"{name}.json"
    atomic_write_bytes(path, json.dumps(to_jsonable(metrics), indent=2, sort_keys=True).encode())
    print(path)
    return 0


def add_profile_args(p) -> None:
    """``--preset {auto,toy,paper}`` and ``--pretrained PATH|imagenet|none`` (paper 1's pipeline)."""
    p.add_argument("--preset", default="auto", choices=["auto", "toy", "paper"],
                   help="preset profile: toy sizes, paper scale (streamed real data), or auto (by dataset)")
    p.add_argument("--pretrained", default=None,
                   help="classifier backbone weights: a torchvision VGG-16 .pth, 'imagenet' (TORCH_HOME cache) or "
                        "'none' (random init); default: the preset's")


def classifier_overrides(args) -> dict:
    """The classifier preset overrides given on the command line (``--pretrained``)."""
    p = getattr(args, "pretrained", None)
    if p is None:
        return {}
    return {"pretrained": None if str(p).lower() == "none" else str(p)}
