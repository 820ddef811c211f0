"""Benchmark: the streamed real-data path (DataLoader workers, pinned memory, AMP) vs the same training in memory.

Builds a VOC 2012 + SBD tree in the official layout with VOC-like variable sizes (200-500 px per
side; ``tests/fixtures_real.build_voc_sized``) in a temporary folder, then trains the tag
classifier through ``engine.train.fit`` twice with the same model and steps:

* **streamed**: ``SegmentationDataset`` read from disk by ``workers`` DataLoader processes, each
  image randomly scaled (0.5-1.5), cropped/padded to 321 px and flipped (``JointTransform``),
  batches page-locked on CUDA (``pin_memory``), AMP (bf16/fp16 autocast) on;
* **in memory**: the same images resized to 321 px and preloaded.

Images/s come from the per-step times ``fit`` records, after warm-up steps. The ratio
streamed / in memory says how much the disk + decoding + augmentation path costs (1.0 = hidden
behind compute). VGG-16 (random init, no download) on CUDA, SmallVGG on CPU (``--backbone`` to
choose). ``--reproduce`` also runs ``wsss reproduce paper1 --quick`` and ``wsss reproduce paper2
--quick`` (``--pretrained none``) on fixture trees and records their wall time and exit code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, Row, finish, guarded, start


def _configure(p) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda...")
    p.add_argument("--backbone", default="auto", choices=["auto", "vgg16", "small_vgg"],
                   help="auto: vgg16 on CUDA, small_vgg on CPU")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--reproduce", action="store_true", help="also run both `wsss reproduce --quick` on fixtures")


def _images_per_s(hist: dict, warm: int, batch: int) -> float:
    t = hist["time"]
    return (len(t) - warm) * batch / max(1e-9, t[-1] - t[warm - 1])


def _throughput(rows, root: Path, device, backbone: str, workers: int, quick: bool, seed: int) -> None:
    import torch

    from wsss_lib.data.base import SegmentationDataset
    from wsss_lib.data.registry import load_dataset
    from wsss_lib.data.transforms import JointTransform
    from wsss_lib.engine.train import classifier_loss_step, fit, preload
    from wsss_lib.models import TagClassifier, build_backbone

    info, samples = load_dataset("voc_aug", root, "train")
    fg = info.foreground
    gpu = device.type == "cuda"
    batch = 10 if gpu else 4
    warm, timed = 2, (4 if quick else 10) if gpu else (2 if quick else 4)
    kw = {"name": "vgg16", "pretrained": None} if backbone == "vgg16" else {"name": "small_vgg"}
    streamed = SegmentationDataset(info, samples, transform=JointTransform(321, (0.5, 1.5), True))
    in_memory = preload(SegmentationDataset(info, samples, size=(321, 321)))
    out = {}
    for name, ds, w in (("streamed", streamed, workers), ("in memory", in_memory, 0)):
        torch.manual_seed(seed)
        model = TagClassifier(build_backbone(**kw), len(fg))
        hist = fit(model, ds, classifier_loss_step(fg), steps=warm + timed, batch_size=batch, lr=1e-3,
                   optimizer="sgd", device=device, progress=False, amp=True, workers=w, seed=seed)
        out[name] = _images_per_s(hist, warm, batch)
        note = f"{backbone}, batch {batch}, {device}, AMP" + (f", {w} workers, pinned={gpu}" if w else "")
        rows.append(Row(f"classifier training, {name} (321 px)", out[name], "img/s", note=note))
    rows.append(Row("streamed / in memory", out["streamed"] / out["in memory"], "x", ">= 0.9",
                    note="1.0 = reading + augmenting fully hidden behind compute"))


def _reproduce(rows, tmp: Path, device, voc_root: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_real import build_cityscapes_sized

    cs = tmp / "cityscapes"
    build_cityscapes_sized(cs, n_train=24, n_val=8)
    for paper, root, ds in (("paper1", voc_root, "voc_aug"), ("paper2", cs, "cityscapes")):
        cmd = [sys.executable, "-m", "wsss_lib", "reproduce", paper, "--dataset", ds, "--data-root", str(root),
               "--out", str(tmp / f"out_{paper}"), "--device", device.type, "--quick", "--pretrained", "none",
               "--no-progress"]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        secs = time.time() - t0
        ok = proc.returncode == 0 and (tmp / f"out_{paper}" / f"reproduce_{paper}.json").is_file()
        rows.append(Row(f"wsss reproduce {paper} --quick (fixture)", secs, "s",
                        note=f"rc {proc.returncode}" + ("" if ok else ": " + (proc.stderr or proc.stdout)[-300:])))


def main(argv=None) -> int:
    args = start(__doc__, argv, _configure)
    from wsss_lib.core.runtime import select_device

    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_real import build_voc_sized

    device = select_device(args.device)
    backbone = args.backbone if args.backbone != "auto" else ("vgg16" if device.type == "cuda" else "small_vgg")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="wsss_stream_") as tmp:
        tmp = Path(tmp)
        voc = tmp / "voc"
        build_voc_sized(voc, n_voc_train=12, n_sbd_only=28, n_val=20, seed=args.seed)
        guarded("throughput", rows, lambda: _throughput(rows, voc, device, backbone, args.workers, args.quick,
                                                        args.seed))
        if args.reproduce:
            guarded("reproduce", rows, lambda: _reproduce(rows, tmp, device, voc))
    return finish(f"Streamed training ({device.type})", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
