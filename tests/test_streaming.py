"""The streaming data path for real (variable-size) datasets: joint crop/pad/flip transforms, the
DataLoader training path, and full-size evaluation summed over images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_real import build_voc_sized
from wsss_lib.core.errors import InvalidInputError
from wsss_lib.core.io import write_masks
from wsss_lib.core.metrics import ConfusionMatrix
from wsss_lib.data.base import SegmentationDataset
from wsss_lib.data.registry import load_dataset
from wsss_lib.data.transforms import JointTransform
from wsss_lib.engine.predict import evaluate_segmentation_both
from wsss_lib.engine.train import fit, is_streamed, preload
from wsss_lib.models import SegNet, build_backbone
from wsss_lib.ops.crf import CRFParams
from wsss_lib.ops.losses import cross_entropy, fgbg_prior_loss
from wsss_lib.papers.segmentation import train_segmentation


def _blocks(h: int, w: int, block: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel encodes its label (label l -> red 10 l) in ``block`` px squares."""
    rng = np.random.default_rng(seed)
    lab = np.kron(rng.integers(0, 21, (h // block + 1, w // block + 1)), np.ones((block, block), int))[:h, :w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = lab * 10
    img[..., 1] = 77
    return img, lab.astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_crop_pad_keeps_labels_aligned(seed):
    img, lab = _blocks(40, 50, seed=seed)
    mask = (lab > 10).astype(np.uint8)
    tf = JointTransform(crop=64, scale=(1.0, 1.0), flip=True, pad_image=(1, 2, 3))
    out_img, out_lab, out_mask = tf(img, lab, mask, rng=np.random.default_rng(seed))
    assert out_img.shape == (64, 64, 3) and out_lab.shape == out_mask.shape == (64, 64)
    pad = out_lab == 255
    assert pad.sum() == 64 * 64 - 40 * 50  # exactly the padding is ignored...
    assert (out_mask[pad] == 255).all() and (out_mask[~pad] != 255).all()  # ...in every map
    assert (out_img[pad] == (1, 2, 3)).all() and (out_img[~pad, 1] == 77).all()
    assert (out_img[~pad, 0] == 10 * out_lab[~pad]).all()  # colour and label still agree pixel by pixel
    assert (out_mask[~pad] == (out_lab[~pad] > 10)).all()
    # the same seed gives the same crop
    again = tf(img, lab, mask, rng=np.random.default_rng(seed))
    assert all((a == b).all() for a, b in zip((out_img, out_lab, out_mask), again))


def test_scaled_crop_stays_aligned():
    img, lab = _blocks(160, 130, block=32, seed=3)
    tf = JointTransform(crop=140, scale=(0.6, 1.4), flip=True)

    def agreement(im, lb):
        keep = lb != 255
        return (np.abs(im[keep, 0].astype(int) - 10 * lb[keep].astype(int)) <= 10).mean()

    for s in range(5):
        out_img, out_lab = tf(img, lab, rng=np.random.default_rng(s))
        assert agreement(out_img, out_lab) > 0.9  # bilinear image vs nearest label: only block borders differ
        assert agreement(out_img[:, 3:], out_lab[:, :-3]) < agreement(out_img, out_lab)  # a 3-px shift is worse
        assert set(np.unique(out_lab)) <= set(np.unique(lab)) | {255}


def test_prior_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6)
    tags = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]])
    mask = (torch.rand(2, 48, 48) > 0.5).float()
    valid = torch.ones(2, 48, 48, dtype=torch.bool)
    assert torch.allclose(fgbg_prior_loss(logits, tags, mask, valid=valid), fgbg_prior_loss(logits, tags, mask))
    valid[:, 40:] = False
    other = mask.clone()
    other[:, 40:] = 1 - other[:, 40:]  # what lies in the padding does not matter
    assert torch.allclose(fgbg_prior_loss(logits, tags, mask, valid=valid), fgbg_prior_loss(logits, tags, other,
                                                                                              valid=valid))


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_sized")
    build_voc_sized(root, n_voc_train=4, n_sbd_only=4, n_val=5, sizes=(60, 110))
    return root


def _tiny_segnet(seed: int = 0) -> SegNet:
    torch.manual_seed(seed)
    return SegNet(build_backbone("small_vgg", widths=[4, 4, 8, 8, 8], depths=[1, 1, 1, 1, 1]), 21, width=8,
                  dilation=2).eval()


def test_fullsize_evaluation_equals_per_image_sum(voc):
    info, samples = load_dataset("voc", voc, "val")
    ds = SegmentationDataset(info, samples)
    assert is_streamed(ds) and len({tuple(ds[i]["image"].shape) for i in range(len(ds))}) > 1
    model = _tiny_segnet()
    crf = CRFParams(iterations=2)
    res = evaluate_segmentation_both(model, ds, 21, crf, device="cpu", workers=1, return_predictions=True,
                                     crf_chunk=2)
    raw, with_crf = ConfusionMatrix(21), ConfusionMatrix(21)
    for s in samples:  # each image alone through the in-memory path, the matrices added
        one = evaluate_segmentation_both(model, preload(SegmentationDataset(info, [s])), 21, crf, device="cpu",
                                         workers=1)
        raw += one["raw"]
        with_crf += one["crf"]
    assert torch.equal(res["raw"].mat, raw.mat) and torch.equal(res["crf"].mat, with_crf.mat)
    assert [tuple(p.shape) for p in res["pred"]] == [tuple(ds[i]["label"].shape) for i in range(len(ds))]
    # DataLoader workers read the same images
    res2 = evaluate_segmentation_both(model, ds, 21, None, device="cpu", io_workers=2)
    assert torch.equal(res2["raw"].mat, raw.mat)


def test_streamed_training_same_with_workers(voc, tmp_path):
    info, samples = load_dataset("voc_aug", voc, "train")
    ds = SegmentationDataset(info, samples, transform=JointTransform(crop=48, scale=(0.5, 1.0)))

    def step(model, batch, device):
        assert batch["image"].shape == (4, 3, 48, 48)
        return cross_entropy(model(batch["image"].to(device)), batch["label"].to(device))

    hist = []
    for workers in (0, 2):
        model = _tiny_segnet()
        h = fit(model, ds, step, steps=3, batch_size=4, lr=0.01, device="cpu", seed=1, workers=workers,
                progress=False, amp=False)
        hist.append(h["loss"])
    assert hist[0] == hist[1]


def _train_with_masks(voc, tmp_path):
    """voc_aug train streamed with 48-px crops and a folder of 0/1 masks (the true foreground)."""
    info, samples = load_dataset("voc_aug", voc, "train")
    plain = SegmentationDataset(info, samples)
    labels = [plain[i]["label"].numpy() for i in range(len(plain))]
    write_masks(tmp_path / "masks", plain.ids, [((lb != 0) & (lb != 255)).astype(np.uint8) for lb in labels])
    ds = SegmentationDataset(info, samples, transform=JointTransform(crop=48, scale=(0.5, 1.0)),
                             maps={"fg_mask": tmp_path / "masks"})
    return ds, labels


class TestPerSampleValues:
    """Check-mask's ``accepted`` (one number per image) travels with each streamed sample."""

    def test_values_follow_their_sample(self, voc, tmp_path):
        ds, _ = _train_with_masks(voc, tmp_path)
        acc = np.arange(len(ds)) % 2
        with_acc = ds.with_extra(accepted=acc)
        assert "accepted" not in ds[0] and ds.values == {}  # with_extra returns a new dataset
        for i in range(len(ds)):
            s = with_acc[(i, 7)]
            assert s["accepted"].dtype == torch.float32 and float(s["accepted"]) == acc[i]
            assert s["fg_mask"].shape == (48, 48)
        sub = with_acc.subset([3, 0])
        assert [float(sub[i]["accepted"]) for i in range(2)] == [acc[3], acc[0]]
        # batched by DataLoader workers: (B,), in the order of the batch's indices
        seen = []

        def step(model, batch, device):
            assert batch["accepted"].shape == (4,)
            assert batch["accepted"].tolist() == [float(acc[i]) for i in batch["index"].tolist()]
            seen.append(batch["index"].tolist())
            return cross_entropy(model(batch["image"].to(device)), batch["label"].to(device))

        fit(_tiny_segnet(), with_acc, step, steps=2, batch_size=4, lr=0.01, device="cpu", workers=2,
            progress=False, amp=False)
        assert len(seen) == 2

    def test_wrong_length_raises(self, voc, tmp_path):
        ds, _ = _train_with_masks(voc, tmp_path)
        with pytest.raises(InvalidInputError, match="one per sample"):
            ds.with_extra(accepted=[1.0, 0.0])

    def test_rejected_images_get_no_mask_term(self, voc, tmp_path):
        """Streamed check-mask training: with rejected='ignore' and every image rejected the loss is 0
        and the weights do not move (Adam, no weight decay); with every image accepted they do."""
        ds, _ = _train_with_masks(voc, tmp_path)
        moved = {}
        for name, acc in (("none", np.zeros(len(ds))), ("all", np.ones(len(ds)))):
            model = _tiny_segnet()
            before = [p.detach().clone() for p in model.parameters()]
            h = train_segmentation(model, ds, "prior", accepted=acc, rejected="ignore", steps=2, batch_size=4,
                                   lr=0.01, optimizer="adam", weight_decay=0.0, head_lr_mult=1.0, device="cpu",
                                   progress=False, amp=False)
            moved[name] = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
            if name == "none":
                assert h["loss"] == [0.0, 0.0]
        assert moved["none"] == 0.0 and moved["all"] > 0.0
        with pytest.raises(InvalidInputError, match="mode='prior' only"):
            train_segmentation(_tiny_segnet(), ds, "tags", accepted=np.ones(len(ds)), steps=1, device="cpu",
                               progress=False)
