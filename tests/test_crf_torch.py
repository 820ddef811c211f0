"""Permutohedral lattice (one test class per operation) and the torch dense CRF built on it:
brute-force and pydensecrf references, properties, batches, bad input, devices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as nd
import torch

from wsss_lib.ops.crf import CRFParams, crf_batch, dense_crf
from wsss_lib.ops import permutohedral as P
from wsss_lib.ops.crf_torch import DenseCRF, crf_fgbg_torch, dense_crf_torch
from wsss_lib.core.errors import InvalidInputError

PARAMS = {"default": CRFParams(), "deeplab": CRFParams.deeplab()}


def _blobs(rng, h=48, w=56, n_classes=2, n_obj=3):
    """A textured image with elliptic objects, its label map, and noisy probabilities (C, H, W)."""
    img = rng.uniform(40, 200, 3) + nd.gaussian_filter(rng.normal(0, 30, (h, w, 3)), (1, 1, 0))
    lab = np.zeros((h, w), int)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n_obj):
        cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
        ry, rx = rng.uniform(0.1, 0.3, 2) * [h, w]
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[m] = rng.uniform(0, 255, 3) + rng.normal(0, 10, (m.sum(), 3))
        lab[m] = rng.integers(1, n_classes)
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, lab, _noisy_probs(rng, lab, n_classes)


def _noisy_probs(rng, lab, n_classes, amp=1.0):
    z = nd.gaussian_filter(rng.normal(0, 1, (n_classes,) + lab.shape), (0, 2, 2)) * 4 * amp
    logit = np.eye(n_classes)[lab].transpose(2, 0, 1) * 1.0 + z
    e = np.exp(logit - logit.max(0))
    return (e / e.sum(0)).astype(np.float32)


def _iou(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else float((a & b).sum() / u)


def _t(image):
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def _grid(h, w, sigma):
    """``(1, H*W, 2)`` pixel coordinates divided by ``sigma``."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xx, yy], -1).reshape(1, -1, 2) / sigma


def _exact(features, values):
    """Brute-force ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` per image."""
    d2 = ((features[:, :, None] - features[:, None]) ** 2).sum(-1)
    return torch.exp(-0.5 * d2) @ values


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _pixel_features(image, sxy, srgb=None):
    """pydensecrf's features of a uint8 (H, W, 3) image: (x, y) / sxy [+ (r, g, b) / srgb]; (1, N, d)."""
    h, w = image.shape[:2]
    f = _grid(h, w, sxy)
    if srgb is not None:
        f = torch.cat([f, torch.from_numpy(image).float().reshape(1, -1, 3) / srgb], -1)
    return f


# ---------------------------------------------------------------------------------- lattice ops
class TestElevate:
    def test_points_land_on_the_zero_sum_plane_with_distances_scaled_uniformly(self):
        g = torch.Generator().manual_seed(0)
        for d in (1, 2, 5):
            f = torch.randn(2, 50, d, generator=g) * 3
            el = P.elevate(f)
            assert el.shape == (2, 50, d + 1) and el.dtype == torch.float32
            assert el.sum(-1).abs().max() < 1e-4
            # the embedding is a similarity: distances grow by sqrt(2/3) (d + 1) (lattice spacing)
            off = ~torch.eye(50, dtype=bool)
            exact = "donot_use_mm_for_euclid_dist"
            ratio = torch.cdist(el, el, compute_mode=exact)[:, off] / torch.cdist(f, f, compute_mode=exact)[:, off]
            assert torch.allclose(ratio, torch.full_like(ratio, (2 / 3) ** 0.5 * (d + 1)), rtol=1e-3)

    @pytest.mark.parametrize("bad", [torch.zeros(5, 2), torch.zeros(1, 5, 2, dtype=torch.int64), torch.zeros(1, 0, 2),
                                     torch.full((1, 5, 2), float("nan")), [[[0.0, 1.0]]]])
    def test_bad_features_raise(self, bad):
        with pytest.raises(InvalidInputError):
            P.elevate(bad)
        with pytest.raises(InvalidInputError):
            P.build_lattice(bad)


class TestEnclosingSimplex:
    """enclosing_simplex + barycentric + simplex_keys: the d + 1 vertices are lattice points of
    remainders 0..d and the barycentric weights rebuild the point from them."""

    @pytest.mark.parametrize("d", [1, 2, 3, 5])
    def test_vertices_surround_the_point(self, d):
        g = torch.Generator().manual_seed(d)
        el = P.elevate(torch.randn(3, 200, d, generator=g) * 4)
        rem0, rank = P.enclosing_simplex(el)
        assert (rem0 % (d + 1) == 0).all() and (rem0.sum(-1) == 0).all()
        assert (rank.sort(-1).values == torch.arange(d + 1)).all()  # a permutation of 0..d
        w = P.barycentric(el, rem0, rank)
        assert w.min() >= -1e-5 and torch.allclose(w.sum(-1), torch.ones(3, 200), atol=1e-5)
        keys = P.simplex_keys(rem0, rank)  # (B, N, d+1, d); the last coordinate is implied
        full = torch.cat([keys, -keys.sum(-1, keepdim=True)], -1)
        r = torch.arange(d + 1).view(1, 1, -1, 1)
        assert ((full - r) % (d + 1) == 0).all()  # vertex r has remainder r on every coordinate
        rebuilt = (w.unsqueeze(-1) * full.float()).sum(-2)
        assert torch.allclose(rebuilt, el, atol=1e-3)


class TestBuildLattice:
    def test_images_of_a_batch_get_disjoint_vertices_and_equal_results(self):
        rng = np.random.default_rng(0)
        image = _blobs(rng, 16, 20)[0]
        f = _pixel_features(image, 5.0, 10.0)
        lat = P.build_lattice(torch.cat([f, f]))
        n = f.shape[1]
        assert not set(lat.offsets[:n].flatten().tolist()) & set(lat.offsets[n:].flatten().tolist())
        out = P.lattice_filter(lat, torch.ones(2, n, 1))
        assert torch.allclose(out[0], out[1])

    def test_blur_neighbours_are_mutual(self):
        rng = np.random.default_rng(1)
        lat = P.build_lattice(_pixel_features(_blobs(rng, 20, 20)[0], 4.0, 8.0))
        m = lat.num_vertices
        for j in range(lat.dim + 1):
            n1, n2 = lat.neighbours[j]
            has = n1 < m
            assert has.any()
            assert (n2[n1[has]] == torch.arange(m)[has]).all()

    def test_wide_coordinates_take_the_unpacked_path_with_the_same_result(self, monkeypatch):
        g = torch.Generator().manual_seed(2)
        f = torch.rand(2, 300, 4, generator=g) * 5
        v = torch.rand(2, 300, 3, generator=g)
        packed = P.gaussian_filter(f, v)
        monkeypatch.setattr(P, "_pack", lambda *a: None)  # as if the keys did not fit in 62 bits
        assert torch.allclose(P.gaussian_filter(f, v), packed, atol=1e-6)
        d = f.shape[-1]
        monkeypatch.setattr(P, "_distinct_simplices", lambda el, img, rem0, rank, b: P._unique_rows(
            torch.cat([img[:, None], rem0[:, :d], rank[:, :d]], 1)))  # nor the simplex codes in 52 bits
        assert torch.allclose(P.gaussian_filter(f, v), packed, atol=1e-6)


class TestLatticeFilter:
    """splat -> blur -> slice against references; linear-algebra properties."""

    def test_close_to_a_brute_force_gaussian_on_a_pixel_grid(self):
        # the lattice's total mass differs from the Gaussian's (pydensecrf's too; normalisation
        # removes it): compare the shape after one best-fitting scale. Measured 0.019 (sigma 1.5-6).
        g = torch.Generator().manual_seed(3)
        for sigma in (1.5, 3.0):
            f = _grid(24, 24, sigma)
            v = torch.rand(1, 24 * 24, 3, generator=g)
            out, ref = P.gaussian_filter(f, v), _exact(f, v)
            scale = (out * ref).sum() / (out * out).sum()
            assert 0.5 < scale < 2
            assert _rel(out * scale, ref) < 0.04

    def test_normalised_filter_close_to_brute_force_in_5d(self):
        # D^-1 K v on scattered 5-D points (bilateral-like): relative error of the deviations from
        # the mean, measured 0.13 (spread 3) to 0.23 (spread 6): an approximation, as in pydensecrf
        g = torch.Generator().manual_seed(4)
        f = torch.rand(2, 400, 5, generator=g) * 3
        v = torch.stack([torch.sin(f[..., 0]), torch.cos(1.3 * f[..., 4])], -1)
        ones = torch.ones(2, 400, 1)
        a = P.gaussian_filter(f, v) / P.gaussian_filter(f, ones)
        b = _exact(f, v) / _exact(f, ones)
        assert _rel(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)) < 0.2

    def test_splat_and_slice_are_adjoint_and_the_filter_nearly_symmetric(self):
        g = torch.Generator().manual_seed(5)
        f = torch.rand(2, 300, 3, generator=g) * 4
        lat = P.build_lattice(f)
        u, v = torch.rand(2, 300, 2, generator=g), torch.rand(2, 300, 2, generator=g)
        vert = torch.rand(lat.num_vertices, 2, generator=g)
        lhs = (P.slice_values(lat, vert) * v).sum()
        assert torch.allclose(lhs, lat.alpha * (vert * P.splat(lat, v)).sum(), rtol=1e-5)
        # the d + 1 directional blurs do not commute exactly on a sparse lattice: nearly symmetric
        # (measured relative asymmetry < 1e-3)
        ku_v = (P.lattice_filter(lat, u) * v).sum()
        u_kv = (u * P.lattice_filter(lat, v)).sum()
        assert abs(float(ku_v - u_kv)) < 5e-3 * float(u_kv)
        both = P.lattice_filter(lat, 2 * u - 3 * v)
        assert torch.allclose(both, 2 * P.lattice_filter(lat, u) - 3 * P.lattice_filter(lat, v), atol=1e-4)

    def test_far_apart_points_do_not_interact(self):
        f = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [0.0, 250.0]]])
        v = torch.tensor([[[1.0], [2.0], [-4.0]]])
        out = P.gaussian_filter(f, v)
        v2 = v.clone()
        v2[0, 1] = 50.0
        out2 = P.gaussian_filter(f, v2)
        assert torch.equal(out[0, [0, 2]], out2[0, [0, 2]]) and out2[0, 1, 0] > out[0, 1, 0] > 0
        assert (out[0, :, 0] * v[0, :, 0] > 0).all()  # the self term keeps the sign

    def test_batch_equals_a_loop_over_images(self):
        rng = np.random.default_rng(6)
        ims = [_blobs(rng, 18, 22)[0] for _ in range(3)]
        f = torch.cat([_pixel_features(i, 6.0, 9.0) for i in ims])
        v = torch.rand(3, 18 * 22, 4)
        batched = P.gaussian_filter(f, v)
        for i in range(3):
            assert torch.allclose(batched[i], P.gaussian_filter(f[i:i + 1], v[i:i + 1])[0], atol=1e-6)

    def test_rescale_folds_per_point_factors(self):
        g = torch.Generator().manual_seed(7)
        f = torch.rand(2, 100, 3, generator=g) * 3
        lat = P.build_lattice(f)
        v, a, b = torch.rand(2, 100, 2), torch.rand(2, 100) + 0.5, torch.rand(2, 100) + 0.5
        ref = P.lattice_filter(lat, v * a[..., None]) * b[..., None]
        assert torch.allclose(P.lattice_filter(P.rescale(lat, a, b), v), ref, atol=1e-5)
        acc = torch.ones(2, 100, 2)
        r = P.rescale(lat, a, b)
        P.slice_values(r, P.blur(r, P.splat(r, v)), add_to=acc)
        assert torch.allclose(acc, 1 + ref, atol=1e-5)

    def test_bad_values_raise(self):
        lat = P.build_lattice(torch.rand(2, 10, 2))
        for bad in (torch.rand(2, 11, 1), torch.rand(1, 10, 1), torch.rand(2, 10), torch.ones(2, 10, 1, dtype=torch.int64),
                    np.ones((2, 10, 1))):
            with pytest.raises(InvalidInputError):
                P.splat(lat, bad)
        with pytest.raises(InvalidInputError):
            P.blur(lat, torch.rand(lat.num_vertices + 1, 2))
        with pytest.raises(InvalidInputError):
            P.slice_values(lat, torch.rand(lat.num_vertices, 2), add_to=torch.zeros(2, 10, 3))
        with pytest.raises(InvalidInputError):
            P.rescale(lat, before=torch.ones(2, 9))

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
    def test_cpu_and_cuda_agree(self):
        rng = np.random.default_rng(8)
        f = torch.cat([_pixel_features(_blobs(rng, 30, 34)[0], 7.0, 10.0) for _ in range(2)])
        v = torch.rand(2, 30 * 34, 3)
        cpu = P.gaussian_filter(f, v)
        gpu = P.gaussian_filter(f.cuda(), v.cuda())
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- the CRF on the lattice
class TestDenseCRFTorch:
    @pytest.mark.parametrize("b,c,h,w", [(2, 2, 24, 32), (1, 5, 17, 23), (3, 3, 8, 8)])
    def test_shapes_and_distribution(self, b, c, h, w):
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
        probs = torch.softmax(torch.randn(b, c, h, w, generator=g), 1)
        out = dense_crf_torch(images, probs)
        assert out.shape == (b, c, h, w) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert torch.allclose(out.sum(1), torch.ones(b, h, w), atol=1e-5)

    def test_unbatched_input_and_module(self):
        rng = np.random.default_rng(0)
        image, _, probs = _blobs(rng, 20, 24)
        out = dense_crf_torch(_t(image), torch.from_numpy(probs))
        assert out.shape == probs.shape
        batched = DenseCRF()(_t(image)[None], torch.from_numpy(probs)[None])[0]
        assert torch.allclose(out, batched, atol=1e-6)

    def test_zero_iterations_returns_clipped_input(self):
        rng = np.random.default_rng(1)
        image, _, probs = _blobs(rng, 16, 16)
        out = dense_crf_torch(_t(image), torch.from_numpy(probs), CRFParams(iterations=0))
        assert torch.allclose(out, torch.from_numpy(probs), atol=1e-4)

    def test_float_and_uint8_images_agree(self):
        rng = np.random.default_rng(2)
        image, _, probs = _blobs(rng, 24, 24)
        a = dense_crf_torch(_t(image), torch.from_numpy(probs))
        b = dense_crf_torch(_t(image).float() / 255.0, torch.from_numpy(probs))
        assert torch.allclose(a, b, atol=1e-4)

    def test_non_contiguous_inputs(self):
        rng = np.random.default_rng(3)
        image, _, probs = _blobs(rng, 30, 26, n_classes=3)
        ref = dense_crf_torch(_t(image)[None], torch.from_numpy(probs)[None])
        img_cl = torch.from_numpy(image)[None].permute(0, 3, 1, 2)  # channels-last view
        pr_t = torch.from_numpy(probs.transpose(0, 2, 1).copy())[None].transpose(2, 3)  # transposed view
        assert not img_cl.is_contiguous() and not pr_t.is_contiguous()
        assert torch.allclose(dense_crf_torch(img_cl, pr_t), ref, atol=1e-6)
        wide = torch.cat([_t(image)[None]] * 2, 0)[::2]  # strided batch
        assert torch.allclose(dense_crf_torch(wide, torch.from_numpy(probs)[None]), ref, atol=1e-6)

    def test_batch_equals_loop_groups_and_fgbg_wrapper(self):
        rng = np.random.default_rng(4)
        items = [_blobs(rng, 20, 20) for _ in range(3)]
        images = torch.stack([_t(i) for i, _, _ in items])
        fg = torch.stack([torch.from_numpy(p[1]) for _, _, p in items])
        probs = torch.stack([1 - fg, fg], 1)
        one = dense_crf_torch(images, probs)
        loop = torch.stack([dense_crf_torch(images[i], probs[i]) for i in range(3)])
        assert torch.allclose(one, loop, atol=1e-5)
        split = dense_crf_torch(images, probs, group_max_elements=1)  # one image per group
        assert torch.allclose(one, split, atol=1e-5)
        assert torch.allclose(crf_fgbg_torch(images, fg), one[:, 1], atol=1e-5)

    def test_exact_gaussian_term_close_to_the_lattice_one(self):
        rng = np.random.default_rng(5)
        image, _, probs = _blobs(rng, 40, 44, n_classes=3)
        a = dense_crf_torch(_t(image), torch.from_numpy(probs)).argmax(0)
        b = dense_crf_torch(_t(image), torch.from_numpy(probs), gaussian="exact").argmax(0)
        assert (a == b).float().mean() > 0.99

    def test_gaussian_term_matmul_and_conv_paths_agree(self, monkeypatch):
        import wsss_lib.ops.crf_torch as ct

        x = torch.rand(2, 3, 30, 41)
        a = ct._gauss_filter(x, 3.0, 4.0)
        monkeypatch.setattr(ct, "_MATMUL_MAX_SIDE", 1)
        assert torch.allclose(a, ct._gauss_filter(x, 3.0, 4.0), rtol=1e-4, atol=1e-4)

    def test_former_sampling_arguments_are_deprecated_and_ignored(self):
        rng = np.random.default_rng(6)
        image, _, probs = _blobs(rng, 16, 18)
        ref = dense_crf_torch(_t(image), torch.from_numpy(probs))
        with pytest.warns(DeprecationWarning, match="stride"):
            out = dense_crf_torch(_t(image), torch.from_numpy(probs), stride=3, kernel_dtype=torch.bfloat16)
        assert torch.equal(out, ref)
        with pytest.raises(TypeError):
            dense_crf_torch(_t(image), torch.from_numpy(probs), nonsense=1)

    def test_crf_batch_torch_matches_crf_batch_layout(self):
        from wsss_lib.ops.crf_torch import crf_batch_torch

        rng = np.random.default_rng(9)
        items = [_blobs(rng, 20, 24), _blobs(rng, 16, 16, n_classes=3), _blobs(rng, 20, 24)]
        images = [i for i, _, _ in items]
        probs = [items[0][2][1], items[1][2], items[2][2][1]]  # fg maps and one 3-label distribution
        out = crf_batch_torch(images, probs, device="cpu")
        ref = crf_batch(images, probs, workers=1)
        assert [o.shape for o in out] == [r.shape for r in ref] == [(20, 24), (3, 16, 16), (20, 24)]
        for o, r in zip(out, ref):
            assert _iou(o > 0.5, r > 0.5) >= 0.99
        with pytest.raises(InvalidInputError):
            crf_batch_torch(images[:2], probs)


# --------------------------------------------------------------------------------- vs pydensecrf
def _message_from_pydensecrf(image, probs, kind, sxy, srgb=None):
    """pydensecrf's normalised message difference (label 1 - label 0) for 2 labels, recovered from
    one mean-field step with weight 1: log(Q1/Q0) = unary difference + message difference."""
    import pydensecrf.densecrf as dcrf

    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, 2)
    u = -np.log(probs).reshape(2, -1).astype(np.float32)
    d.setUnaryEnergy(np.ascontiguousarray(u))
    if kind == "gauss":
        d.addPairwiseGaussian(sxy=sxy, compat=1.0)
    else:
        d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image, compat=1.0)
    q = np.asarray(d.inference(1)).reshape(2, -1)
    return (np.log(q[1]) - np.log(q[0]) - (u[0] - u[1])).reshape(h, w)


class TestAgreementWithPydensecrf:
    @pytest.mark.parametrize("kind,sxy,srgb", [("gauss", 3.0, None), ("bilateral", 80.0, 13.0), ("bilateral", 10.0, 3.0)])
    def test_normalised_messages_equal_pydensecrfs(self, kind, sxy, srgb):
        rng = np.random.default_rng(11)
        image = _blobs(rng, 40, 52)[0]
        q1 = rng.uniform(0.05, 0.95, image.shape[:2]).astype(np.float32)
        probs = np.stack([1 - q1, q1])
        ref = _message_from_pydensecrf(image, probs, kind, sxy, srgb)
        lat = P.build_lattice(_pixel_features(image, sxy, srgb))
        norm = (P.lattice_filter(lat, torch.ones(1, lat.points, 1)) + 1e-20).rsqrt()
        q = torch.from_numpy(probs.reshape(2, -1).T.copy())[None]
        msg = (P.lattice_filter(lat, q * norm) * norm)[0]
        ours = (msg[:, 1] - msg[:, 0]).reshape(image.shape[:2]).numpy()
        assert np.abs(ours - ref).max() < 1e-4 * max(1.0, np.abs(ref).max()), np.abs(ours - ref).max()

    @pytest.mark.parametrize("pname", sorted(PARAMS))
    def test_fgbg_on_toy_objects(self, pname):
        """GT-derived noisy fg probabilities of ToyObjects TEST images; the CRF really changes them."""
        from wsss_lib.data.toy_objects import generate_image

        params = PARAMS[pname]
        images, probs = [], []
        for i in range(6):
            image, label, _ = generate_image(0, "test", i)
            fg = ((label > 0) & (label != 255)).astype(int)
            images.append(image)
            probs.append(_noisy_probs(np.random.default_rng(100 + i), fg, 2))
        ref = np.stack(crf_batch(images, probs, params, workers=1))
        out = dense_crf_torch(torch.stack([_t(i) for i in images]), torch.from_numpy(np.stack(probs)), params).numpy()
        raw = np.stack(probs)[:, 1] > 0.5
        ref_m, out_m = ref[:, 1] > 0.5, out[:, 1] > 0.5
        assert _iou(ref_m, raw) < 0.9, "the CRF should change these masks"
        assert (ref_m == out_m).mean() >= 0.995
        assert min(_iou(r, o) for r, o in zip(ref_m, out_m)) >= 0.99
        assert np.abs(ref - out).max() < 1e-3

    @pytest.mark.parametrize("n_classes", [2, 21])
    def test_real_photographs(self, n_classes):
        """scikit-image's bundled photographs, unaries from a coarse noisy labelling with
        gt_prob = 0.7 (as pydensecrf's example): >= 99.5 % of pixels and per-label IoU >= 0.99."""
        skdata = pytest.importorskip("skimage.data")
        params = CRFParams.deeplab()
        step = 4 if n_classes == 2 else 6  # keep the test fast
        for name in ("astronaut", "chelsea", "coffee"):
            photo = getattr(skdata, name)()
            image = np.ascontiguousarray(photo[::step, ::step])
            probs, _ = _coarse_labelling(image, n_classes, seed=len(name))
            ref = dense_crf(image, probs, params).argmax(0)
            out = dense_crf_torch(_t(image), torch.from_numpy(probs), params).argmax(0).numpy()
            assert (ref == out).mean() >= 0.995, name
            ious = [_iou(ref == c, out == c) for c in range(n_classes) if (ref == c).sum() >= 20]
            assert min(ious) >= 0.99, (name, ious)


def _coarse_labelling(image, n_classes, seed=0, gt_prob=0.7, flip=0.3, block=8):
    """Unaries from a coarse, noisy labelling of a photo: colour clusters (a few k-means steps),
    assigned per ``block`` x ``block`` cell, a share ``flip`` of the cells relabelled at random;
    probability ``gt_prob`` for the label, the rest spread evenly."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    px = image.reshape(-1, 3).astype(np.float32)
    centres = px[rng.choice(len(px), n_classes, replace=False)]
    for _ in range(5):
        lab = ((px[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(n_classes):
            if (lab == c).any():
                centres[c] = px[lab == c].mean(0)
    lab = lab.reshape(h, w)
    cells = lab[block // 2::block, block // 2::block]
    flips = rng.random(cells.shape) < flip
    cells = np.where(flips, rng.integers(0, n_classes, cells.shape), cells)
    coarse = np.kron(cells, np.ones((block, block), int))[:h, :w]
    coarse = np.pad(coarse, ((0, h - coarse.shape[0]), (0, w - coarse.shape[1])), mode="edge")
    probs = np.full((n_classes, h, w), (1 - gt_prob) / (n_classes - 1), np.float32)
    np.put_along_axis(probs, coarse[None], gt_prob, 0)
    return probs, coarse


# ---------------------------------------------------------------------------------- bad input
def _good(h=8, w=9, c=2):
    return torch.zeros(1, 3, h, w, dtype=torch.uint8), torch.full((1, c, h, w), 1.0 / c)


class TestBadInput:
    @pytest.mark.parametrize("case", ["image_channels", "probs_one_class", "hw_mismatch", "batch_mismatch",
                                      "not_distribution", "negative", "nan", "int_probs", "float_image_range",
                                      "int32_image", "list_input", "probs_5d"])
    def test_bad_input_raises(self, case):
        img, pr = _good()
        if case == "image_channels":
            img = img[:, :2]
        elif case == "probs_one_class":
            pr = pr[:, :1]
        elif case == "hw_mismatch":
            pr = torch.full((1, 2, 8, 10), 0.5)
        elif case == "batch_mismatch":
            pr = torch.cat([pr, pr])
        elif case == "not_distribution":
            pr = pr * 1.5
        elif case == "negative":
            pr = pr.clone()
            pr[0, 0, 0, 0], pr[0, 1, 0, 0] = -0.5, 1.5
        elif case == "nan":
            pr = pr.clone()
            pr[0, 0, 0, 0] = float("nan")
        elif case == "int_probs":
            pr = torch.ones(1, 2, 8, 9, dtype=torch.int64)
        elif case == "float_image_range":
            img = img.float() + 3.0
        elif case == "int32_image":
            img = img.to(torch.int32)
        elif case == "list_input":
            img = img.tolist()
        elif case == "probs_5d":
            pr = pr[None]
        with pytest.raises(InvalidInputError):
            dense_crf_torch(img, pr)

    @pytest.mark.parametrize("kwargs", [{"params": {"gauss_sxy": -1.0}}, {"params": {"nope": 1}},
                                        {"params": CRFParams(iterations=-1)}, {"gaussian": "fast"},
                                        {"truncate": 0.0}, {"group_max_elements": -5}])
    def test_bad_settings_raise(self, kwargs):
        img, pr = _good()
        with pytest.raises(InvalidInputError):
            dense_crf_torch(img, pr, **kwargs)

    def test_fgbg_bad_input_raises(self):
        img, _ = _good()
        with pytest.raises(InvalidInputError):
            crf_fgbg_torch(img, torch.full((1, 8, 9), 1.5))
        with pytest.raises(InvalidInputError):
            crf_fgbg_torch(img, torch.ones(1, 8, 9, dtype=torch.uint8))


# ------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available"))])
def test_devices(device):
    rng = np.random.default_rng(7)
    image, _, probs = _blobs(rng, 32, 40, n_classes=3)
    ref = dense_crf_torch(_t(image), torch.from_numpy(probs))
    out = dense_crf_torch(_t(image).to(device), torch.from_numpy(probs).to(device))
    assert out.device.type == device
    assert torch.allclose(out.cpu(), ref, atol=1e-3)


def test_pairwise_kernels_from_one_pixel():
    from wsss_lib.ops.crf import CRFParams
    from wsss_lib.ops.crf_torch import pairwise_kernels

    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 200  # two flat halves of different colour
    p = CRFParams(gauss_sxy=3.0, gauss_compat=2.0, bilateral_sxy=10.0, bilateral_srgb=13.0, bilateral_compat=5.0)
    k = pairwise_kernels(img, 10, 10, p)
    assert k["gaussian"].shape == (20, 30) and k["bilateral"].shape == (20, 30)
    assert float(k["gaussian"][10, 10]) == pytest.approx(2.0) and float(k["bilateral"][10, 10]) == pytest.approx(5.0)
    assert float(k["gaussian"][10, 13]) == pytest.approx(2.0 * np.exp(-9 / 18))
    # the bilateral kernel stops at the colour edge, the Gaussian one does not
    assert float(k["bilateral"][10, 16]) < 1e-6 < float(k["bilateral"][10, 14])
    assert torch.allclose(pairwise_kernels(img.transpose(2, 0, 1).copy(), 10, 10, p)["bilateral"], k["bilateral"])
    with pytest.raises(InvalidInputError):
        pairwise_kernels(img, 25, 0, p)
