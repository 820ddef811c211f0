"""Region / fg-bg-prior / tags-only / cross-entropy losses: values, invariants, where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.ops.losses import (cross_entropy, median_frequency_weights, fgbg_prior_loss, fgbg_regions, pool_region, present_tag_loss,
                                 region_loss, upsample, upsample_adjoint, tags_only_loss)

POOLINGS = ["mean", "max", "lse", "pixel"]


def _setup(b=2, k=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k + 1, h, w, generator=g, requires_grad=True)
    tags = torch.zeros(b, k)
    tags[0, 0] = 1
    if b > 1:
        tags[1, 1] = tags[1, 2] = 1
    mask = torch.zeros(b, h, w)
    mask[:, 2:5, 3:7] = 1
    return logits, tags, mask


@pytest.mark.parametrize("pooling", POOLINGS)
def test_scalar_finite_and_backward(pooling):
    logits, tags, mask = _setup()
    loss = fgbg_prior_loss(logits, tags, mask, pooling)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_matches_papers_formula_by_hand():
    """L = -1/|L| sum log mean_fg S^k - log mean_bg S^0 - 1/|L̄| sum log(1 - max S^k)."""
    logits, tags, mask = _setup()
    s = torch.softmax(logits.detach(), 1)
    ref = []
    for i in range(2):
        fg, bg = mask[i] > 0, mask[i] == 0
        pres = [k + 1 for k in range(3) if tags[i, k] > 0]
        absn = [k + 1 for k in range(3) if tags[i, k] == 0]
        l_fg = -sum(math.log(s[i, k][fg].mean()) for k in pres) / len(pres)
        l_bg = -math.log(s[i, 0][bg].mean())
        l_abs = -sum(math.log(1 - s[i, k].max()) for k in absn) / len(absn)
        ref.append(l_fg + l_bg + l_abs)
    got = fgbg_prior_loss(logits, tags, mask, "mean")
    assert got.item() == pytest.approx(sum(ref) / 2, rel=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "lse", "pixel"])
def test_fg_term_gradient_only_inside_fg_region(pooling):
    """The present-class term reaches only logits of pixels inside its region."""
    logits, tags, mask = _setup()
    b, c = 2, 4
    regions, present = fgbg_regions(tags, mask)
    regions = regions.clone()
    regions[:, 0] = 0  # drop the background term: only the fg terms remain
    present = present * torch.tensor([0.0, 1, 1, 1])  # ... and no absent term
    loss = region_loss(logits, regions, present, pooling, absent_weight=0.0)
    loss.backward()
    outside = (mask == 0)[:, None].expand(b, c, -1, -1)
    assert logits.grad[outside].abs().max() == 0
    assert logits.grad[~outside].abs().max() > 0


def test_bg_term_gradient_only_outside_mask():
    logits, tags, mask = _setup()
    regions, present = fgbg_regions(tags, mask)
    present = torch.zeros_like(present)
    present[:, 0] = 1
    loss = region_loss(logits, regions, present, "mean", separate=(0,), absent_weight=0.0)
    loss.backward()
    inside = (mask > 0)[:, None].expand_as(logits)
    assert logits.grad[inside].abs().max() == 0


def test_absent_max_term_gradient_only_at_argmax():
    logits, tags, mask = _setup(b=1)
    tags = torch.zeros(1, 3)
    tags[0, 0] = 1
    regions, present = fgbg_regions(tags, mask)
    loss = region_loss(logits, torch.zeros_like(regions), present, "mean", absent_pooling="max")
    loss.backward()
    nonzero = (logits.grad.abs().sum(1) > 0).sum().item()
    assert 1 <= nonzero <= 2  # absent classes 2 and 3: their arg-max pixels (may coincide)


def test_loss_decreases_towards_the_mask():
    """A perfect prediction (fg class on the mask, bg elsewhere) has a lower loss than a flipped one."""
    _, tags, mask = _setup()
    tags = torch.zeros(2, 3)
    tags[:, 0] = 1
    good = torch.full((2, 4, 8, 8), -10.0)
    good[:, 0] = torch.where(mask > 0, -10.0, 10.0)
    good[:, 1] = torch.where(mask > 0, 10.0, -10.0)
    bad = good[:, [1, 0, 2, 3]]
    assert fgbg_prior_loss(good, tags, mask) < 1e-3 < fgbg_prior_loss(bad, tags, mask)


def test_upsampling_low_res_logits():
    logits, tags, mask = _setup(h=4, w=4)
    big_mask = torch.zeros(2, 16, 16)
    big_mask[:, 4:10, 6:12] = 1
    loss = fgbg_prior_loss(logits, tags, big_mask)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.shape == logits.shape


def test_empty_region_contributes_nothing():
    logits, tags, mask = _setup()
    empty = torch.zeros_like(mask)
    for pooling in POOLINGS:
        loss = fgbg_prior_loss(logits, tags, empty, pooling)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


def test_pool_region_values():
    v = torch.tensor([[[[0.1, 0.9], [0.5, 0.3]]]])
    w = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert pool_region(v, w, "mean").item() == pytest.approx(0.3)
    assert pool_region(v, w, "max").item() == pytest.approx(0.5)
    lse = pool_region(v, w, "lse", r=5.0).item()
    assert 0.3 < lse < 0.5
    assert pool_region(v, w, "pixel").item() == pytest.approx(sum(math.log(x) for x in (0.1, 0.5, 0.3)) / 3, rel=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "lse", "pixel"])
def test_pool_region_whole_image_and_broadcast_weights(pooling):
    """``weights=None`` (the whole image, the absent term's fast path) equals all-ones weights, and
    an ``expand``-ed weight view equals the materialised tensor, values and gradients alike."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2, 3, 5, 4, generator=g).clamp(0.01, 1).requires_grad_(True)
    fast = pool_region(v, None, pooling)
    (gf,) = torch.autograd.grad(fast.sum(), v)
    slow = pool_region(v, torch.ones_like(v), pooling)
    (gs,) = torch.autograd.grad(slow.sum(), v)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(gf, gs)
    m = torch.rand(2, 1, 5, 4, generator=g)
    torch.testing.assert_close(pool_region(v, m.expand(-1, 3, -1, -1), pooling),
                               pool_region(v, m.expand(-1, 3, -1, -1).contiguous(), pooling))
    with pytest.raises(InvalidInputError):
        pool_region(v, None, "median")


@pytest.mark.parametrize("low,high", [((12, 12), (96, 96)), ((5, 7), (37, 50)), ((4, 4), (4, 4)), ((6, 8), (3, 5))])
def test_upsample_adjoint_is_the_transpose(low, high):
    g = torch.Generator().manual_seed(1)
    s = torch.rand(2, 3, *low, generator=g, dtype=torch.float64)
    r = torch.rand(2, 3, *high, generator=g, dtype=torch.float64)
    lhs = (upsample(s, high) * r).sum()
    rhs = (s * upsample_adjoint(r, low).double()).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-5)


def test_mean_region_loss_matches_upsample_then_pool():
    """The low-resolution fast path equals the textbook computation (upsample, pool, -log), values
    and gradients, for non-integer scale factors too."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 7, 9, generator=g, requires_grad=True)
    regions = torch.rand(3, 4, 45, 61, generator=g) * (torch.rand(3, 4, 1, 1, generator=g) > 0.3)
    present = torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 1]])
    fast = region_loss(logits, regions, present, "mean", absent_weight=0.0, reduction="none")
    (g_fast,) = torch.autograd.grad(fast.sum(), logits)
    probs = upsample(torch.softmax(logits, 1), (45, 61))
    pooled = (probs * regions).flatten(2).sum(-1) / regions.flatten(2).sum(-1).clamp(min=1e-5)
    w = present * (regions.flatten(2).sum(-1) > 0)
    ref = (-torch.log(pooled.clamp(min=1e-5)) * w).sum(1) / w.sum(1).clamp(min=1.0)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-6)


def test_loss_is_float32_under_autocast():
    logits, tags, mask = _setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = fgbg_prior_loss(logits.bfloat16(), tags, mask)
    b = fgbg_prior_loss(logits.bfloat16().float(), tags, mask)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b)


def test_checkmask_rejected_images_use_tag_term():
    logits, tags, mask = _setup()
    per_prior = fgbg_prior_loss(logits, tags, mask, reduction="none")
    per_tags = tags_only_loss(logits, tags, reduction="none")
    mixed = fgbg_prior_loss(logits, tags, mask, accepted=torch.tensor([1.0, 0.0]), reduction="none")
    torch.testing.assert_close(mixed, torch.stack([per_prior[0], per_tags[1]]))


@pytest.mark.parametrize("pooling", ["mean", "max", "lse"])
def test_tags_only_loss(pooling):
    logits, tags, _ = _setup()
    loss = tags_only_loss(logits, tags, pooling)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0


def test_cross_entropy_ignores_255():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 8, 8), 255, dtype=torch.long)
    labels[0, :2, :2] = 1
    loss = cross_entropy(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    # only the top-left low-res cells influence the labelled pixels
    assert logits.grad[0, :, 2:, 2:].abs().max() == 0


def test_bad_shapes_raise():
    logits, tags, mask = _setup()
    with pytest.raises(InvalidInputError):
        fgbg_prior_loss(logits, tags[:, :2], mask)
    with pytest.raises(InvalidInputError):
        fgbg_prior_loss(logits, tags, mask[0])
    with pytest.raises(InvalidInputError):
        region_loss(logits, torch.ones(2, 3, 8, 8), torch.ones(2, 4))
    with pytest.raises(InvalidInputError):
        fgbg_prior_loss(logits, tags, mask, pooling="median")
    with pytest.raises(InvalidInputError):
        cross_entropy(logits, torch.zeros(8, 8, dtype=torch.long))


# --- the present-class image-level tag term (present_term) -------------------------------------------------------


def test_present_term_zero_is_bit_identical_to_the_plain_loss():
    """present_term=0 computes exactly what fgbg_prior_loss computed before the option existed:
    the region loss (+ the check-mask mix), bit for bit."""
    logits, tags, mask = _setup()
    regions, present = fgbg_regions(tags, mask)
    per = region_loss(logits, regions, present, "mean", "max", separate=(0,), reduction="none")
    for pooling in POOLINGS:
        per_p = region_loss(logits, regions, present, pooling, "max", separate=(0,), reduction="none")
        assert torch.equal(fgbg_prior_loss(logits, tags, mask, pooling, present_term=0.0), per_p.mean())
        assert torch.equal(fgbg_prior_loss(logits, tags, mask, pooling, present_term=0), per_p.mean())
    acc = torch.tensor([0.0, 1.0])
    tag = tags_only_loss(logits, tags, "max", "max", reduction="none")
    ref = (acc * per + (1 - acc) * tag).mean()
    assert torch.equal(fgbg_prior_loss(logits, tags, mask, accepted=acc, present_term=0.0), ref)
    assert torch.equal(fgbg_prior_loss(logits, tags, mask, accepted=acc), ref)


def _softmax_px(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


@pytest.mark.parametrize("tag_pooling", ["max", "mean"])
def test_present_term_by_hand_on_a_tiny_example(tag_pooling):
    """(1, 3, 2, 2) logits, K = 2 fg classes, class 1 present, class 2 absent, fg = the diagonal."""
    raw = [[[0.0, 1.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [1.0, 1.0]]]
    logits = torch.tensor([raw])
    tags = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    px = {(i, j): _softmax_px([raw[c][i][j] for c in range(3)]) for i in range(2) for j in range(2)}
    fg, bg = [(0, 0), (1, 1)], [(0, 1), (1, 0)]
    s1 = [px[p][1] for p in px]
    pool1 = max(s1) if tag_pooling == "max" else sum(s1) / 4
    term = -math.log(pool1)
    base = (-math.log(sum(px[p][1] for p in fg) / 2) - math.log(sum(px[p][0] for p in bg) / 2)
            - math.log(1 - max(px[p][2] for p in px)))
    assert present_tag_loss(logits, tags, tag_pooling).item() == pytest.approx(term, rel=1e-6)
    got = fgbg_prior_loss(logits, tags, mask, tag_pooling=tag_pooling, present_term=0.5)
    assert got.item() == pytest.approx(base + 0.5 * term, rel=1e-6)
    assert fgbg_prior_loss(logits, tags, mask, tag_pooling=tag_pooling).item() == pytest.approx(base, rel=1e-6)
    # two present classes: the mean of their terms; none present: the term is 0
    s2 = [px[p][2] for p in px]
    pool2 = max(s2) if tag_pooling == "max" else sum(s2) / 4
    both = present_tag_loss(logits, torch.tensor([[1.0, 1.0]]), tag_pooling).item()
    assert both == pytest.approx((term - math.log(pool2)) / 2, rel=1e-6)
    none = torch.zeros(1, 2)
    assert present_tag_loss(logits, none, tag_pooling).item() == 0.0
    assert torch.equal(fgbg_prior_loss(logits, none, mask, tag_pooling=tag_pooling, present_term=3.0),
                       fgbg_prior_loss(logits, none, mask, tag_pooling=tag_pooling))


@pytest.mark.parametrize("tag_pooling", ["max", "mean", "lse", "pixel"])
def test_present_term_gradient_raises_the_present_class_score(tag_pooling):
    """A gradient step on the added term raises each present class's image-level pooled score and
    leaves absent classes out of the term (zero gradient when only absent classes remain)."""
    logits, tags, mask = _setup(b=2, k=3, h=4, w=4, seed=3)
    full = fgbg_prior_loss(logits, tags, mask, tag_pooling=tag_pooling, present_term=1.0, reduction="sum")
    plain = fgbg_prior_loss(logits, tags, mask, tag_pooling=tag_pooling, reduction="sum")
    (g,) = torch.autograd.grad(full - plain, logits)
    (g_ref,) = torch.autograd.grad(present_tag_loss(logits, tags, tag_pooling, reduction="sum"), logits)
    torch.testing.assert_close(g, g_ref)
    pool = "mean" if tag_pooling == "pixel" else tag_pooling  # "pixel" pools log S; compare S itself
    with torch.no_grad():
        before = pool_region(torch.softmax(logits, 1), None, pool)
        after = pool_region(torch.softmax(logits - 0.5 * g, 1), None, pool)
    pres = tags > 0
    assert (after[:, 1:][pres] > before[:, 1:][pres]).all()
    (g0,) = torch.autograd.grad(present_tag_loss(logits, torch.zeros_like(tags), tag_pooling), logits)
    assert g0.abs().max() == 0


def test_present_term_not_double_counted_for_rejected_images():
    """Rejected (check-mask) images keep exactly their tags-only loss, which already holds the
    present term with weight 1; accepted images get the prior loss + w * the present term."""
    logits, tags, mask = _setup()
    w = 0.7
    prior = fgbg_prior_loss(logits, tags, mask, reduction="none")
    pres = present_tag_loss(logits, tags, "max", reduction="none")
    tag = tags_only_loss(logits, tags, reduction="none")
    mixed = fgbg_prior_loss(logits, tags, mask, accepted=torch.tensor([1.0, 0.0]), present_term=w, reduction="none")
    torch.testing.assert_close(mixed, torch.stack([prior[0] + w * pres[0], tag[1]]))
    # the tags-only loss = the present term + the background term + the absent term (same pooling)
    s = torch.softmax(logits.detach(), 1)
    mx = s.flatten(2).amax(-1)
    absent = 1 - tags
    ref = (present_tag_loss(logits, tags, "max", reduction="none") - torch.log(mx[:, 0])
           + (-torch.log(1 - mx[:, 1:]) * absent).sum(1) / absent.sum(1))
    torch.testing.assert_close(tag.detach(), ref.detach(), rtol=1e-5, atol=1e-6)


def test_present_term_float32_under_autocast():
    logits, tags, _ = _setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = present_tag_loss(logits.bfloat16(), tags)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, present_tag_loss(logits.bfloat16().float(), tags))


def test_present_term_bad_input_raises():
    logits, tags, mask = _setup()
    with pytest.raises(InvalidInputError):
        present_tag_loss(logits, tags[:, :2])
    with pytest.raises(InvalidInputError):
        present_tag_loss(logits, torch.cat([tags, tags]))
    with pytest.raises(InvalidInputError):
        present_tag_loss(logits[0], tags)
    with pytest.raises(InvalidInputError):
        present_tag_loss(logits, tags, "median")
    with pytest.raises(InvalidInputError):
        present_tag_loss(logits, tags, reduction="max")
    for bad in (-0.1, float("nan"), float("inf"), "a", None):
        with pytest.raises(InvalidInputError):
            fgbg_prior_loss(logits, tags, mask, present_term=bad)
    with pytest.raises(InvalidInputError):
        fgbg_prior_loss(logits, tags, mask[0], present_term=1.0)


def test_median_frequency_weights_by_hand():
    # image 0: 3 px class 0, 1 px class 1; image 1: 2 px class 0, 1 px class 2, 1 px ignored
    labels = torch.tensor([[[0, 0, 0, 1]], [[0, 0, 2, 255]]])
    w = median_frequency_weights(labels, 4)
    # freq: class 0 = 5/7 (both images, 4 + 3 labelled px), class 1 = 1/4, class 2 = 1/3; median 1/3; class 3 absent
    assert torch.allclose(w, torch.tensor([(1 / 3) / (5 / 7), (1 / 3) / (1 / 4), 1.0, 0.0]))
    assert torch.allclose(median_frequency_weights(labels, 4, chunk=1), w)
    with pytest.raises(InvalidInputError):
        median_frequency_weights(torch.tensor([[[0, 7]]]), 4)


def test_weighted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, 0] = 255
    assert torch.isclose(cross_entropy(logits, labels, weight=torch.ones(3)), cross_entropy(logits, labels))
    w = torch.tensor([1.0, 2.0, 0.5])
    want = torch.nn.functional.cross_entropy(logits, labels, weight=w, ignore_index=255)
    assert torch.isclose(cross_entropy(logits, labels, weight=w), want)
    with pytest.raises(InvalidInputError):
        cross_entropy(logits, labels, weight=torch.ones(4))


def test_region_loss_terms_add_up_to_region_loss():
    from wsss_lib.ops.losses import fgbg_prior_loss, fgbg_regions, region_loss, region_loss_terms

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, 6, generator=g)
    tags = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0]])
    mask = (torch.rand(3, 24, 24, generator=g) > 0.5).float()
    regions, present = fgbg_regions(tags, mask)
    for pooling in ("mean", "max", "lse", "pixel"):
        t = region_loss_terms(logits, regions, present, pooling=pooling, separate=(0,))
        assert set(t) == {"present", "separate", "absent"} and all(v.shape == (3,) for v in t.values())
        assert all(bool((v >= 0).all()) for v in t.values())
        for w in (1.0, 0.5):
            total = region_loss(logits, regions, present, pooling=pooling, separate=(0,), absent_weight=w,
                                reduction="none")
            assert torch.allclose(total, t["present"] + t["separate"] + w * t["absent"])
        assert torch.allclose((t["present"] + t["separate"] + t["absent"]).mean(),
                              fgbg_prior_loss(logits, tags, mask, pooling=pooling))
    # no separate class: the separate term is 0; an image without absent classes has absent term 0
    t = region_loss_terms(logits, regions, torch.ones(3, 4))
    assert torch.all(t["separate"] == 0) and torch.all(t["absent"] == 0)
