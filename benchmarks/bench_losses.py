"""Benchmark 3: a training step with the papers' losses vs a plain cross-entropy step (same net, same batch).

Steps = forward + loss + backward + SGD update of a DeepLab-style ``SegNet`` (SmallVGG backbone;
channels-last and the library's precision context, as ``train.fit`` runs it)
on a ToyObjects batch (96x96). Losses: paper 1's fg/bg-prior loss (``losses.fgbg_prior_loss``),
the tags-only baseline, paper 2's heatmap-region loss (``losses.region_loss`` over all 7 classes,
every class treated alike), and the two-stream network (appearance + flow) with the region loss
vs the same network with cross-entropy. Target: step ratio <= 1.10. The loss's own cost
(forward + backward of the loss alone, from fixed logits) is listed as a share of a CE step.
"""

from __future__ import annotations

import torch

from _common import Row, amp_context, compare, finish, guarded, repeats, start, toy_batch, training_layout

TARGET = "<= 1.10"


def _setup(args):
    from wsss_lib.ops.losses import cross_entropy, fgbg_prior_loss, region_loss, tags_only_loss

    b = 8 if args.quick else 16
    images, labels, fg_tags = toy_batch(b, split="train", seed=args.seed)
    x = images.float() / 255.0
    lab = labels.clone()
    valid = lab != 255
    g = torch.Generator().manual_seed(args.seed)
    # a noisy fg mask (what the CRF-smoothed prior looks like) and heatmap-like one-hot regions
    fg_mask = ((lab > 0) & valid).float()
    fg_mask = (fg_mask + 0.3 * torch.rand(fg_mask.shape, generator=g)).clamp(0, 1)
    regions = torch.nn.functional.one_hot(torch.where(valid, lab, torch.zeros_like(lab)), 7).permute(0, 3, 1, 2).float()
    present = torch.cat([torch.ones(b, 1), fg_tags], 1)
    losses = {
        "cross-entropy": lambda lg: cross_entropy(lg, lab),
        "fg/bg prior (paper 1)": lambda lg: fgbg_prior_loss(lg, fg_tags, fg_mask),
        "tags only": lambda lg: tags_only_loss(lg, fg_tags),
        "heatmap regions (paper 2)": lambda lg: region_loss(lg, regions, present),
    }
    return x, losses


def _segnet():
    from wsss_lib.models import SegNet, build_backbone

    return SegNet(build_backbone("small_vgg"), 7, width=256, dilation=4)


def _steps(rows, title, model, forward, losses, reps, lr=0.01):
    training_layout(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()

    def make(loss_fn):
        def step():  # as train.fit: forward + loss under the library's precision context
            with amp_context("cpu"):
                loss = loss_fn(forward())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    fns = {name: make(fn) for name, fn in losses.items()}
    t = compare(fns, repeat=reps)
    base = t["cross-entropy"]["median"]
    # the loss alone: forward + backward from fixed logits
    with torch.no_grad(), amp_context("cpu"):
        logits = forward().detach()

    def only(fn):
        def go():
            lg = logits.clone().requires_grad_(True)
            with amp_context("cpu"):
                loss = fn(lg)
            loss.backward()
        return go

    t_only = compare({name: only(fn) for name, fn in losses.items()}, repeat=reps)
    rows.append(Row(f"{title}: cross-entropy step", base, "s/step"))
    for name in losses:
        if name == "cross-entropy":
            continue
        share = 100 * t_only[name]["median"] / base
        rows.append(Row(f"{title}: {name} / CE step", t[name]["median"] / base, "ratio", TARGET,
                        note=f"min ratio {t[name]['min'] / t['cross-entropy']['min']:.3f}; loss alone fwd+bwd "
                             f"= {share:.1f}% of a CE step"))


def segnet_losses(rows, args, reps):
    torch.manual_seed(args.seed)
    x, losses = _setup(args)
    model = _segnet()
    _steps(rows, f"SegNet b{x.shape[0]}", model, lambda: model(x), losses, reps)


def two_stream(rows, args, reps):
    from wsss_lib.models import build_backbone
    from wsss_lib.models.two_stream import TwoStreamNet

    torch.manual_seed(args.seed)
    x, losses = _setup(args)
    flow = torch.rand(x.shape, generator=torch.Generator().manual_seed(args.seed))
    model = TwoStreamNet(_segnet(), build_backbone("small_vgg", input_norm="unit"))
    keep = {k: losses[k] for k in ("cross-entropy", "heatmap regions (paper 2)")}
    _steps(rows, f"two-stream b{x.shape[0]}", model, lambda: model(x, flow), keep, reps)


def main(argv=None) -> int:
    args = start(__doc__, argv)
    reps = repeats(args)
    rows: list[Row] = []
    guarded("SegNet losses", rows, lambda: segnet_losses(rows, args, reps))
    guarded("two-stream", rows, lambda: two_stream(rows, args, reps))
    return finish("Training step: paper losses vs cross-entropy (CPU)", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
