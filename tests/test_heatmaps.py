"""Classifier heatmaps: normalisation invariants, shapes, regions from hand-built maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.ops.heatmaps import (NORMALISATIONS, class_heatmaps, heatmap_auc, heatmap_regions, label_to_regions,
                                   normalise_maps, raw_class_maps, regions_to_label, ubiquitous_classes)
from wsss_lib.models.classifier import build_heatmap_classifier


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return build_heatmap_classifier(4, last_stage="conv3", widths=(4, 8, 8, 8, 8), depths=(1, 1, 1, 1, 1)).eval()


@pytest.mark.parametrize("method", NORMALISATIONS)
def test_normalise_maps_range_and_shape(method):
    maps = torch.randn(3, 5, 7, 9) * 4
    out = normalise_maps(maps, method)
    assert out.shape == maps.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_minmax_is_per_image_per_class_and_affine_invariant():
    maps = torch.randn(2, 3, 6, 6)
    out = normalise_maps(maps, "minmax")
    flat = out.flatten(2)
    assert torch.allclose(flat.amax(-1), torch.ones(2, 3)) and torch.allclose(flat.amin(-1), torch.zeros(2, 3))
    scale = torch.tensor([0.5, 3.0, 10.0]).view(1, 3, 1, 1)
    shift = torch.tensor([-2.0, 0.0, 5.0]).view(1, 3, 1, 1)
    assert torch.allclose(normalise_maps(maps * scale + shift, "minmax"), out, atol=1e-5)
    # each image is normalised on its own: scaling image 1 does not change image 0
    m2 = maps.clone()
    m2[1] *= 100
    assert torch.allclose(normalise_maps(m2, "minmax")[0], out[0])


def test_max_normalisation_scale_invariant_and_constant_maps():
    maps = torch.rand(1, 2, 4, 4)
    assert torch.allclose(normalise_maps(maps * 7.0, "max"), normalise_maps(maps, "max"), atol=1e-5)
    const = torch.full((1, 2, 4, 4), 3.0)
    assert normalise_maps(const, "minmax").abs().max() == 0
    assert torch.allclose(normalise_maps(-const, "max"), torch.zeros_like(const))
    assert torch.allclose(normalise_maps(maps, "softmax").sum(1), torch.ones(1, 4, 4))


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4), torch.zeros(1, 2, 3, 3, dtype=torch.long)])
def test_normalise_bad_input(bad):
    with pytest.raises(InvalidInputError):
        normalise_maps(bad)
    with pytest.raises(InvalidInputError):
        normalise_maps(torch.zeros(1, 1, 2, 2), "bogus")


@pytest.mark.parametrize("layer", ["score", "conv2", "conv3"])
@pytest.mark.parametrize("norm", ["minmax", "max"])
def test_class_heatmaps_shapes_range_batched(classifier, layer, norm):
    x = torch.rand(5, 3, 32, 40)
    hm = class_heatmaps(classifier, x, layer=layer, normalisation=norm, batch_size=2)
    assert hm.shape == (5, 4, 32, 40) and float(hm.min()) >= 0 and float(hm.max()) <= 1
    one = class_heatmaps(classifier, x[3:4], layer=layer, normalisation=norm)
    assert torch.allclose(hm[3:4], one, atol=1e-5)
    small = class_heatmaps(classifier, x, layer=layer, normalisation=norm, size=(8, 10))
    assert small.shape == (5, 4, 8, 10)


def test_class_heatmaps_keeps_train_mode_and_accepts_non_contiguous(classifier):
    classifier.train()
    x = torch.rand(2, 3, 40, 32).transpose(2, 3)  # non-contiguous (2, 3, 32, 40)
    hm = class_heatmaps(classifier, x)
    assert classifier.training
    classifier.eval()
    assert hm.shape == (2, 4, 32, 40)


def test_score_layer_is_the_classifier_score_maps(classifier):
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = classifier(x)["score_maps"]
    assert torch.allclose(raw_class_maps(classifier, x, "score"), ref)


def test_class_heatmaps_bad_input(classifier):
    with pytest.raises(InvalidInputError):
        class_heatmaps(classifier, torch.rand(2, 1, 16, 16))
    with pytest.raises(InvalidInputError):
        class_heatmaps(classifier, torch.rand(1, 3, 16, 16), layer="conv9")
    with pytest.raises(InvalidInputError):
        class_heatmaps(classifier, torch.rand(1, 3, 16, 16), normalisation="l2")
    with pytest.raises(InvalidInputError):
        build_heatmap_classifier(3, last_stage="conv7")


def _hand_maps():
    """2 images, 3 classes, 1x4 pixels."""
    h = torch.tensor([[[[0.9, 0.6, 0.1, 0.05]], [[0.1, 0.7, 0.8, 0.1]], [[1.0, 1.0, 1.0, 1.0]]],
                      [[[0.2, 0.2, 0.2, 0.2]], [[0.3, 0.1, 0.9, 0.4]], [[0.0, 0.5, 0.0, 0.0]]]])
    tags = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    return h, tags


def test_heatmap_regions_argmax_among_tagged_classes():
    h, tags = _hand_maps()
    reg = heatmap_regions(h, tags, threshold=0.0)
    assert reg.shape == h.shape
    # image 0: class 2 (untagged, heatmap 1 everywhere) is ignored
    assert reg[0, 2].abs().max() == 0
    assert reg[0, 0, 0].tolist() == [1, 0, 0, 0] and reg[0, 1, 0].tolist() == [0, 1, 1, 1]
    # image 1: classes 1 and 2
    assert reg[1, 0].abs().max() == 0
    assert reg[1, 1, 0].tolist() == [1, 0, 1, 1] and reg[1, 2, 0].tolist() == [0, 1, 0, 0]
    assert torch.all(reg.sum(1) <= 1)


def test_heatmap_regions_threshold_soft_and_complement():
    h, tags = _hand_maps()
    reg = heatmap_regions(h, tags, threshold=0.5)
    assert reg[0, :, 0, 3].sum() == 0  # best tagged value 0.1 < 0.5: unassigned
    assert reg[1, :, 0, 0].sum() == 0 and reg[1, 1, 0, 2] == 1
    soft = heatmap_regions(h, tags, threshold=0.0, mode="soft")
    assert torch.isclose(soft[0, 0, 0, 0], torch.tensor(0.9)) and torch.isclose(soft[0, 1, 0, 2], torch.tensor(0.8))
    comp = heatmap_regions(h, tags, threshold=0.0, complement=[2])
    # image 1: class 2's map becomes 1 - h[1] = [0.7, 0.9, 0.1, 0.6] -> wins pixels 0, 1
    assert comp[1, 2, 0].tolist() == [1, 1, 0, 1] and comp[1, 1, 0].tolist() == [0, 0, 1, 0]
    assert comp[0, 2].abs().max() == 0  # complement of an untagged class stays empty


def test_heatmap_regions_no_tags_and_bad_input():
    h, _ = _hand_maps()
    assert heatmap_regions(h, torch.zeros(2, 3)).abs().max() == 0
    with pytest.raises(InvalidInputError):
        heatmap_regions(h, torch.ones(2, 4))
    with pytest.raises(InvalidInputError):
        heatmap_regions(h, torch.ones(2, 3), mode="fuzzy")
    with pytest.raises(InvalidInputError):
        heatmap_regions(h, torch.ones(2, 3), crf=True)  # CRF needs the images


def test_heatmap_regions_crf_refines_to_image_edges():
    img = torch.zeros(1, 3, 24, 24)
    img[:, :, :, 12:] = 1.0  # left half black, right half white
    h = torch.zeros(1, 2, 24, 24)
    h[0, 0, :, :14] = 0.8  # blurry maps, boundary 2 px off
    h[0, 1, :, 10:] = 0.7
    reg = heatmap_regions(h, torch.ones(1, 2), threshold=0.0, images=img, crf=True)
    lab = regions_to_label(reg)[0]
    assert (lab[:, :12] == 0).float().mean() > 0.9 and (lab[:, 12:] == 1).float().mean() > 0.9


def test_regions_label_roundtrip_and_ubiquitous():
    lab = torch.tensor([[[0, 1, 255], [2, 2, 1]]])
    reg = label_to_regions(lab, 3)
    assert reg.shape == (1, 3, 2, 3) and reg[0, :, 0, 2].sum() == 0
    assert torch.equal(regions_to_label(reg), lab)
    tags = np.array([[1, 0, 1], [1, 1, 1], [1, 0, 0], [1, 0, 1]])
    assert ubiquitous_classes(tags, 0.95) == [0] and ubiquitous_classes(tags, 0.7) == [0, 2]
    with pytest.raises(InvalidInputError):
        ubiquitous_classes(np.zeros((0, 3)))


class TestHeatmapAUC:
    def test_localised_anti_localised_and_absent(self):
        lab = torch.zeros(2, 4, 4, dtype=torch.long)
        lab[0, :, :2] = 1  # image 0: class 1 on the left half, class 0 on the right
        lab[1] = 2  # image 1: class 2 everywhere (no negatives)
        lab[0, 0, 0] = 255  # ignored
        hm = torch.zeros(2, 3, 4, 4)
        hm[0, 1, :, :2] = 1.0  # class 1 fires on its own pixels
        hm[0, 0, :, :2] = 1.0  # class 0 fires on the OTHER class's pixels (co-occurrence, not location)
        auc = heatmap_auc(hm, lab)
        assert auc.shape == (2, 3) and auc.dtype == np.float64
        assert auc[0, 1] == pytest.approx(1.0) and auc[0, 0] == pytest.approx(0.0)
        assert np.isnan(auc[0, 2]) and np.isnan(auc[1]).all()  # absent, or covering the whole image

    def test_ignored_pixels_are_left_out_and_ties_count_half(self):
        lab = torch.tensor([[[0, 1], [255, 255]]])
        hm = torch.zeros(1, 2, 2, 2)
        hm[0, 1, 1] = 5.0  # high scores only on ignored pixels
        assert heatmap_auc(hm, lab)[0, 1] == pytest.approx(0.5)

    def test_bad_input(self):
        with pytest.raises(InvalidInputError, match=r"\(N, H, W\)"):
            heatmap_auc(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))
        with pytest.raises(InvalidInputError, match="floating point"):
            heatmap_auc(torch.zeros(1, 2, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
