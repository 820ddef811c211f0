"""The generic training loop (determinism, resume-after-interrupt, checkpoints) and the paper-1 recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_lib.core.checkpoint import load_checkpoint
from wsss_lib.data.base import DatasetInfo
from wsss_lib.core.errors import InvalidInputError, WsssError
from wsss_lib.models import SegNet, SmallVGG, TagClassifier
from wsss_lib.ops.losses import fgbg_prior_loss
from wsss_lib.engine.train import InMemoryDataset, batch_indices, batch_stream, fit, train_classifier
from wsss_lib.engine.predict import (evaluate_classifier, evaluate_segmentation, evaluate_segmentation_both,
                                     predict_segmentation)
from wsss_lib.papers.segmentation import segmentation_loss_step, train_segmentation

TINY = dict(widths=(4, 6, 8, 8, 8), depths=(1, 1, 1, 1, 1))


def _toy(n=24, size=32, seed=0):
    """Bright squares of class 1 or 2 (by colour) on a dark background."""
    rng = np.random.default_rng(seed)
    imgs = np.full((n, size, size, 3), 30, np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    tags = np.zeros((n, 3), np.float32)
    tags[:, 0] = 1
    for i in range(n):
        c = 1 + i % 2
        y, x = rng.integers(0, size // 2, 2)
        s = size // 2
        imgs[i, y:y + s, x:x + s] = (220, 40, 40) if c == 1 else (40, 40, 220)
        labels[i, y:y + s, x:x + s] = c
        tags[i, c] = 1
    info = DatasetInfo("squares", ["background", "red", "blue"], [0])
    return InMemoryDataset(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                           torch.from_numpy(tags), [f"s{i}" for i in range(n)], info)


def test_batch_indices_pure_and_cover_epochs():
    a = [batch_indices(10, 4, 0, s) for s in range(5)]
    b = [batch_indices(10, 4, 0, s) for s in range(5)]
    assert all((x == y).all() for x, y in zip(a, b))
    flat = np.concatenate(a)
    assert sorted(flat[:10].tolist()) == list(range(10))      # first epoch is a permutation
    assert sorted(flat[10:20].tolist()) == list(range(10))    # so is the second
    assert not (batch_indices(10, 4, 1, 0) == a[0]).all() or not (batch_indices(10, 4, 1, 1) == a[1]).all()
    with pytest.raises(InvalidInputError):
        batch_indices(0, 4, 0, 0)


def _cls_run(tmp_path, name, **kw):
    torch.manual_seed(0)
    model = TagClassifier(SmallVGG(**TINY), 2, hidden=8)
    ds = _toy()
    hist = train_classifier(model, ds, classes=[1, 2], steps=6, batch_size=5, lr=0.01, optimizer="sgd", device="cpu",
                            seed=3, checkpoint_path=tmp_path / f"{name}.pt", checkpoint_every=2, config={"x": 1},
                            progress=False, **kw)
    return model, hist


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, cpu_bf16):
    full, hist_full = _cls_run(tmp_path, "full", cpu_bf16=cpu_bf16)
    part, hist_part = _cls_run(tmp_path, "resumed", stop_after=3, cpu_bf16=cpu_bf16)
    assert not hist_part["complete"]
    ck = load_checkpoint(tmp_path / "resumed.pt")
    assert ck["step"] == 2 and not ck["complete"]  # last checkpoint before the interruption
    resumed, hist_res = _cls_run(tmp_path, "resumed", cpu_bf16=cpu_bf16)
    assert hist_res["resumed_from"] == 2 and hist_res["complete"]
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert hist_res["loss"] == hist_full["loss"]
    ck = load_checkpoint(tmp_path / "full.pt")
    assert {"model", "optimizer", "scheduler", "step", "rng", "config", "history"} <= set(ck)
    assert ck["complete"] and ck["config"] == {"x": 1}


def test_config_change_restarts(tmp_path, capsys):
    _cls_run(tmp_path, "c")
    torch.manual_seed(0)
    model = TagClassifier(SmallVGG(**TINY), 2, hidden=8)
    hist = train_classifier(model, _toy(), classes=[1, 2], steps=6, batch_size=5, lr=0.01, optimizer="sgd",
                            device="cpu", seed=3, checkpoint_path=tmp_path / "c.pt", config={"x": 2}, progress=False)
    assert hist["resumed_from"] == 0
    assert "another config" in capsys.readouterr().out


def test_poly_lr_and_history():
    model = TagClassifier(SmallVGG(**TINY), 2)
    hist = fit(model, _toy(), lambda m, b, d: m(b["image"].to(d))["logits"].pow(2).mean(), steps=5, batch_size=4,
               lr=0.1, device="cpu", progress=False)
    assert hist["lr"][0] == pytest.approx(0.1) and all(a > b for a, b in zip(hist["lr"], hist["lr"][1:]))
    assert len(hist["loss"]) == 5
    assert len(hist["time"]) == 5 and all(0 <= a <= b for a, b in zip(hist["time"], hist["time"][1:]))
    assert hist["time"][-1] <= hist["seconds"]


def test_nan_loss_is_a_clear_error():
    model = TagClassifier(SmallVGG(**TINY), 2)
    with pytest.raises(WsssError, match="loss became"):
        fit(model, _toy(), lambda m, b, d: m(b["image"].to(d))["logits"].sum() * float("nan"), steps=2,
            batch_size=4, lr=0.1, device="cpu", progress=False)
    with pytest.raises(InvalidInputError):
        fit(model, _toy(), lambda m, b, d: m(b["image"])["logits"], steps=1, batch_size=4, lr=0.1, device="cpu",
            progress=False)


def test_generic_dataset_with_collate():
    """fit accepts any indexable dataset of dicts (here a list) and a custom collate."""
    ds = _toy()
    items = [ds[i] for i in range(len(ds))]
    seen = []

    def collate(batch):
        seen.append(len(batch))
        return {"image": torch.stack([b["image"] for b in batch])}

    model = TagClassifier(SmallVGG(**TINY), 2)
    fit(model, items, lambda m, b, d: m(b["image"].to(d))["logits"].pow(2).mean(), steps=2, batch_size=3, lr=0.01,
        device="cpu", progress=False, collate=collate)
    assert seen == [3, 3]


class _DiskLike:
    """A dataset without ``get_batch`` (read item by item, like SegmentationDataset); item ``bad``
    raises the error a corrupt file would."""

    def __init__(self, ds, bad=None):
        self.ds, self.bad = ds, bad

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if i == self.bad:
            raise InvalidInputError(f"cannot decode image file s{i}.jpg")
        return self.ds[i]


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_batch_stream_prefetch_keeps_the_order(prefetch):
    ds = _toy(n=10)
    ref = [ds.get_batch(batch_indices(10, 4, 7, s)) for s in range(2, 9)]
    got = list(batch_stream(_DiskLike(ds), 4, 7, 2, 9, prefetch=prefetch))
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_batch_stream_pins_batches_when_cuda_is_there(monkeypatch):
    """On CUDA every batch (in-memory ones too) goes through the prefetch threads and is pinned."""
    pinned = []

    def fake_pin(self):
        pinned.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    ds = _toy(n=10)
    got = list(batch_stream(ds, 4, 7, 0, 3, prefetch=2, pin=True))
    assert len(got) == 3 and len(pinned) >= 3 * 3  # image, label, tags of each batch
    for s, b in enumerate(got):
        torch.testing.assert_close(b["image"], ds.get_batch(batch_indices(10, 4, 7, s))["image"])


def test_prefetched_read_error_reaches_the_caller_and_fit_equals_in_memory(tmp_path):
    ds = _toy(n=12)
    with pytest.raises(InvalidInputError, match="s5.jpg"):
        list(batch_stream(_DiskLike(ds, bad=5), 4, 0, 0, 10, prefetch=2))
    step = lambda m, b, d: m(b["image"].to(d).float() / 255)["logits"].pow(2).mean()  # noqa: E731
    losses = []
    for data, pf in ((ds, 0), (_DiskLike(ds), 2)):
        torch.manual_seed(0)
        model = TagClassifier(SmallVGG(**TINY), 2)
        losses.append(fit(model, data, step, steps=4, batch_size=4, lr=0.01, device="cpu", progress=False,
                          prefetch=pf, amp=False)["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_classifier_learns_and_evaluates():
    torch.manual_seed(0)
    model = TagClassifier(SmallVGG(**TINY), 2)
    ds = _toy(n=32)
    train_classifier(model, ds, classes=[1, 2], steps=40, batch_size=8, lr=0.01, optimizer="adam", device="cpu",
                     progress=False)
    ev = evaluate_classifier(model, ds, classes=[1, 2])
    assert ev["map"] > 0.9 and 0 <= ev["acc"] <= 1 and ev["ap"].shape == (2,)
    with pytest.raises(InvalidInputError):
        evaluate_classifier(model, ds)  # 3 tag columns vs 2 outputs


@pytest.mark.parametrize("mode", ["prior", "tags", "full"])
def test_train_segmentation_modes(mode):
    torch.manual_seed(0)
    ds = _toy(n=16)
    net = SegNet(SmallVGG(**TINY), 3, width=8, dilation=1)
    masks = (ds.labels > 0).float()
    hist = train_segmentation(net, ds, mode, masks=masks if mode == "prior" else None, steps=3, batch_size=4,
                              lr=0.01, device="cpu", progress=False)
    assert len(hist["loss"]) == 3 and all(np.isfinite(hist["loss"]))
    pred = predict_segmentation(net, ds.images[:3].float() / 255)
    assert pred.shape == (3, 32, 32) and pred.dtype == torch.int64
    cm = evaluate_segmentation(net, ds, 3)
    assert cm.mat.sum() == (ds.labels != 255).sum()


def test_checkmask_training_and_bad_masks():
    ds = _toy(n=8)
    net = SegNet(SmallVGG(**TINY), 3, width=8, dilation=1)
    masks = (ds.labels > 0).float()
    train_segmentation(net, ds, "prior", masks=masks, accepted=torch.tensor([1, 0] * 4), steps=2, batch_size=4,
                       lr=0.01, device="cpu", progress=False)
    with pytest.raises(InvalidInputError):
        train_segmentation(net, ds, "prior", steps=1, device="cpu", progress=False)
    with pytest.raises(InvalidInputError):
        train_segmentation(net, ds, "prior", masks=masks[:3], steps=1, device="cpu", progress=False)
    with pytest.raises(InvalidInputError):
        train_segmentation(net, ds, "weird", steps=1, device="cpu", progress=False)


@pytest.mark.parametrize("rejected", ["tags", "ignore"])
def test_segmentation_step_threads_present_term(rejected):
    """The prior-mode step passes ``present_term`` (and ``tag_pooling``) to fgbg_prior_loss; 0 is the
    plain loss; train_segmentation takes it and rejects a negative weight."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 1)
    batch = {"image": torch.rand(4, 3, 8, 8), "tags": torch.tensor([[1.0, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 0]]),
             "fg_mask": (torch.rand(4, 8, 8) > 0.5).float(), "accepted": torch.tensor([1.0, 0, 1, 1])}
    with torch.no_grad():
        logits = model(batch["image"])
        tags = batch["tags"][:, 1:]
        ref = {}
        for w in (0.0, 0.5):
            if rejected == "tags":
                ref[w] = fgbg_prior_loss(logits, tags, batch["fg_mask"], accepted=batch["accepted"], tag_pooling="lse",
                                         present_term=w)
            else:
                per = fgbg_prior_loss(logits, tags, batch["fg_mask"], tag_pooling="lse", present_term=w,
                                      reduction="none")
                ref[w] = (per * batch["accepted"]).sum() / batch["accepted"].sum()
        for w in (0.0, 0.5):
            step = segmentation_loss_step("prior", [1, 2], tag_pooling="lse", augment=False, rejected=rejected,
                                          present_term=w)
            torch.testing.assert_close(step(model, batch, "cpu"), ref[w])
    assert ref[0.5] > ref[0.0]
    with pytest.raises(InvalidInputError):
        segmentation_loss_step("prior", [1, 2], present_term=-1.0)
    ds = _toy(n=8)
    net = SegNet(SmallVGG(**TINY), 3, width=8, dilation=1)
    hist = train_segmentation(net, ds, "prior", masks=(ds.labels > 0).float(), present_term=0.5, steps=2,
                              batch_size=4, device="cpu", progress=False)
    assert all(np.isfinite(hist["loss"]))
    with pytest.raises(InvalidInputError):
        train_segmentation(net, ds, "prior", masks=(ds.labels > 0).float(), present_term=float("nan"), steps=1,
                           device="cpu", progress=False)


def test_full_supervision_learns_and_crf_evaluation():
    torch.manual_seed(0)
    ds = _toy(n=32)
    net = SegNet(SmallVGG(**TINY), 3, width=16, dilation=1, dropout=0.0)
    train_segmentation(net, ds, "full", steps=100, batch_size=8, lr=0.003, optimizer="adam", head_lr_mult=3.0,
                       device="cpu",
                       progress=False)
    res = evaluate_segmentation_both(net, ds, 3, crf={"bilateral_sxy": 10.0}, workers=1)
    assert res["raw"].miou() > 0.6
    assert res["crf"].miou() > 0.6
