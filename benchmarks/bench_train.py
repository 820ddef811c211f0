"""Benchmark 7: training throughput (images/s) of the tag classifier and the segmentation net.

Runs ``train.fit`` itself (the library's precision context: AMP on CUDA, bf16 autocast on CPUs
with native bf16; channels-last on CPU; ``cudnn.benchmark`` and pinned, prefetched batches on
CUDA) on an in-memory batch of random images at VOC size (321 x 321, 21 classes) with VGG-16
(random init: no download), and at the toy size (96 px) with the CPU default SmallVGG.
Images/s come from the per-step times ``fit`` records (``history["time"]``), after ``w`` warm-up
steps: ``n * batch / (t[w + n] - t[w])``.
"""

from __future__ import annotations

import torch

from _common import Row, finish, guarded, start


def _data(n: int, size: int, classes: int, seed: int):
    from wsss_lib.engine.train import InMemoryDataset

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n, size, size), dtype=torch.uint8, generator=g)
    tags = (torch.rand(n, classes, generator=g) > 0.7).float()
    tags[:, 0] = 1.0
    return InMemoryDataset(images, labels, tags)


def _images_per_s(build, loss_step, ds, batch: int, warm: int, timed: int, device) -> float:
    from wsss_lib.engine.train import fit

    torch.manual_seed(0)
    hist = fit(build(), ds, loss_step, steps=warm + timed, batch_size=batch, lr=1e-3, optimizer="sgd", device=device,
               progress=False, amp=True)
    t = hist["time"]  # seconds at the end of each step (fit synchronises through loss.item())
    return timed * batch / max(1e-9, t[-1] - t[warm - 1])


def _case(rows, name, backbone_kw, size, classes, batch, warm, timed, device, seed):
    from wsss_lib.models import SegNet, TagClassifier, build_backbone
    from wsss_lib.engine.train import classifier_loss_step
    from wsss_lib.papers.segmentation import segmentation_loss_step

    ds = _data(max(2 * batch, 8), size, classes, seed)
    fg = list(range(1, classes))
    clf = _images_per_s(lambda: TagClassifier(build_backbone(**backbone_kw), len(fg)),
                        classifier_loss_step(fg), ds, batch, warm, timed, device)
    rows.append(Row(f"{name}: classifier training", clf, "img/s", note=f"batch {batch}, {device}"))
    seg = _images_per_s(lambda: SegNet(build_backbone(**backbone_kw), classes),
                        segmentation_loss_step("full", fg), ds, batch, warm, timed, device)
    rows.append(Row(f"{name}: seg training (DeepLab-LargeFOV head)", seg, "img/s", note=f"batch {batch}, {device}"))


def main(argv=None) -> int:
    args = start(__doc__, argv, lambda p: p.add_argument("--device", default="auto",
                                                         help="auto (cuda > mps > cpu), cpu, cuda..."))
    from wsss_lib.core.runtime import select_device

    device = select_device(args.device)
    gpu = device.type == "cuda"
    rows: list[Row] = []
    timed = 2 if args.quick else 4
    guarded("small_vgg 96px", rows, lambda: _case(rows, "SmallVGG 96 px, 7 classes", {"name": "small_vgg"}, 96, 7,
                                                 64 if gpu else 16, 2, timed * 3, device, args.seed))
    guarded("vgg16 321px", rows, lambda: _case(rows, "VGG-16 321 px, 21 classes", {"name": "vgg16", "pretrained": None},
                                              321, 21, 16 if gpu else 2, 2 if gpu else 1, timed, device, args.seed))
    return finish(f"Training throughput ({device.type})", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
