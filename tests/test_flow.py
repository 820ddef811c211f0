"""Optical flow: recovers a known shift, encoding invariants, dataset pairing and the disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_lib.data.base import Sample
from wsss_lib.core.errors import CorruptFileError, InvalidInputError
from wsss_lib.engine.shard import FlowCache, compute_dataset_flow
from wsss_lib.ops.flow import (FlowParams, camera_motion, compute_flow, encode_flow, flow_partners,
                               raft_weights_path, resolve_method)


def _textured(h=96, w=128, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((h * 2, w * 2, 3)).astype(np.float32), (0, 0), 2.0)
    return (big - big.min()) / (big.max() - big.min())


def _shifted_pair(dx, dy, h=96, w=128, seed=0):
    """Frame 2 = frame 1 moved by (+dx, +dy): content at (x, y) in frame 1 is at (x + dx, y + dy)."""
    import cv2

    big = _textured(h, w, seed)
    m1 = np.float32([[1, 0, -64], [0, 1, -48]])
    m2 = np.float32([[1, 0, -64 + dx], [0, 1, -48 + dy]])
    a = cv2.warpAffine(big, m1, (w, h), flags=cv2.INTER_LINEAR)
    b = cv2.warpAffine(big, m2, (w, h), flags=cv2.INTER_LINEAR)
    return (a * 255 + 0.5).astype(np.uint8), (b * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("method", ["farneback", "dis"])
@pytest.mark.parametrize("shift", [(2.5, -1.5), (0.4, 0.7), (-4.0, 3.0)])
def test_flow_recovers_translation(method, shift):
    a, b = _shifted_pair(*shift)
    flow = compute_flow(a, b, method=method)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    err = np.linalg.norm(flow - np.array(shift, np.float32), axis=-1)
    assert np.median(err) < 0.5, f"median end-point error {np.median(err):.3f} px"


def test_translation_error_helper_matches():
    from wsss_lib.ops.flow import textured_pair, translation_error

    a, b = textured_pair(1.0, 0.0)
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)
    res = translation_error("dis", shifts=[(1.5, -0.5)])
    assert res["max_median_error"] < 0.5 and len(res["per_shift"]) == 1


def test_encode_flow_subtract_median():
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0] = 3.0
    flow[2:4, 2:4] = (6.0, 0.0)  # an object moving 3 px faster than the camera-induced flow
    enc = encode_flow(flow, max_flow=6.0, subtract="median")
    assert torch.allclose(enc[0, 0, 0], torch.tensor(0.5)) and torch.allclose(enc[2, 0, 0], torch.tensor(0.0))
    assert torch.allclose(enc[0, 2, 2], torch.tensor(0.75)) and torch.allclose(enc[2, 2, 2], torch.tensor(0.5))
    with pytest.raises(InvalidInputError):
        encode_flow(flow, subtract="mean")


def test_camera_motion_removes_pan_and_zoom_but_keeps_a_moving_object():
    """Pan + zoom (an affine field) plus one independently moving object: the trimmed affine fit
    recovers the camera field, so 'affine' leaves ~0 on the scene and the object's own motion."""
    h, w = 48, 64
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    cam = torch.stack([2.0 + 1.5 * xs, -0.5 + 1.5 * ys])[None]  # pan (2, -0.5) px + 1.5 px zoom at the border
    flow = cam.clone()
    flow[0, 0, 20:28, 30:40] += 3.0  # an object moving 3 px/frame to the right of the camera flow
    est = camera_motion(flow)
    assert est.shape == flow.shape
    torch.testing.assert_close(est, cam, atol=0.05, rtol=0)
    enc = encode_flow(flow[0], max_flow=6.0, subtract="affine")  # (3, H, W)
    assert float(enc[2, :10].max()) < 0.02  # static scene: no residual motion
    assert float(enc[2, 22:26, 32:38].mean()) == pytest.approx(0.5, abs=0.02)  # 3 px of 6
    # the median cannot remove a zoom: the scene keeps up to 1.5 px of flow at the borders
    assert float(encode_flow(flow[0], max_flow=6.0, subtract="median")[2, :10].max()) > 0.2


def test_flow_zero_for_identical_frames_and_accepts_gray_and_float():
    a, _ = _shifted_pair(0, 0)
    same = compute_flow(a, a)
    assert np.median(np.abs(same)) < 1e-3 and np.abs(same).max() < 0.2
    g = a.mean(axis=2)
    assert compute_flow(g / 255.0, g / 255.0).shape == (96, 128, 2)


def test_flow_non_contiguous_input():
    a, b = _shifted_pair(2, 1)
    a2 = np.ascontiguousarray(a[:, ::-1])[:, ::-1]  # a view with negative strides
    flow = compute_flow(a2, b)
    assert np.median(np.linalg.norm(flow - np.array([2, 1]), axis=-1)) < 0.5


@pytest.mark.parametrize("bad", [dict(method="bogus"), dict(size_mismatch=True), dict(tiny=True)])
def test_flow_bad_input_raises(bad):
    a, b = _shifted_pair(1, 1)
    with pytest.raises(InvalidInputError):
        if "method" in bad:
            compute_flow(a, b, method=bad["method"])
        elif "size_mismatch" in bad:
            compute_flow(a, b[:50])
        else:
            compute_flow(a[:4, :4], b[:4, :4])


def test_raft_without_local_weights_is_a_clear_error_and_auto_falls_back():
    if raft_weights_path() is not None:
        pytest.skip("RAFT weights are present on this machine")
    assert resolve_method("auto") == "farneback"
    a, b = _shifted_pair(1, 1)
    with pytest.raises(InvalidInputError, match="never downloaded"):
        compute_flow(a, b, method="raft")


def test_encode_flow_ranges_and_layouts():
    flow = np.zeros((10, 12, 2), np.float32)
    flow[..., 0] = 5.0
    flow[0, 0] = (100.0, -100.0)
    enc = encode_flow(flow, max_flow=10.0)
    assert enc.shape == (3, 10, 12) and enc.min() >= 0 and enc.max() <= 1
    assert torch.allclose(enc[0, 5, 5], torch.tensor(0.75)) and torch.allclose(enc[1, 5, 5], torch.tensor(0.5))
    assert torch.allclose(enc[2, 5, 5], torch.tensor(0.5))
    assert enc[0, 0, 0] == 1 and enc[1, 0, 0] == 0 and enc[2, 0, 0] == 1  # clipped
    zero = encode_flow(np.zeros((10, 12, 2)))
    assert torch.allclose(zero[:2], torch.full((2, 10, 12), 0.5)) and zero[2].abs().max() == 0
    batch = encode_flow(torch.from_numpy(flow).permute(2, 0, 1)[None].repeat(2, 1, 1, 1), max_flow=10.0)
    assert batch.shape == (2, 3, 10, 12) and torch.allclose(batch[0], enc)
    per = encode_flow(flow, normalisation="per_image")
    assert per.shape == (3, 10, 12) and per.max() <= 1
    with pytest.raises(InvalidInputError):
        encode_flow(np.zeros((4, 5, 3)))
    with pytest.raises(InvalidInputError):
        encode_flow(flow, normalisation="global")


def test_flow_partners_pairs_next_frame_and_last_with_previous():
    s = [Sample(id=f"c{c}_{f}", image=None, clip=f"c{c}", frame=f) for c in range(2) for f in (2, 0, 1)]
    s.append(Sample(id="still", image=None))
    p = flow_partners(s)
    ids = {x.id: i for i, x in enumerate(s)}
    assert p[ids["c0_0"]] == (ids["c0_1"], 1.0)
    assert p[ids["c0_1"]] == (ids["c0_2"], 1.0)
    assert p[ids["c0_2"]] == (ids["c0_1"], -1.0)
    assert p[ids["still"]] == (-1, 0.0)
    # a sequence neighbour (Cityscapes' leftImg8bit_sequence) beats another labelled frame of the clip
    s[ids["c0_0"]] = Sample(id="c0_0", image=None, clip="c0", frame=0, neighbor="seq/c0_1.png", neighbor_offset=1)
    s[ids["c1_2"]] = Sample(id="c1_2", image=None, clip="c1", frame=2, neighbor="seq/c1_1.png", neighbor_offset=-1)
    p = flow_partners(s)
    assert p[ids["c0_0"]] == ("seq/c0_1.png", 1.0) and p[ids["c1_2"]] == ("seq/c1_1.png", -1.0)
    assert p[ids["c0_1"]] == (ids["c0_2"], 1.0)


def test_dataset_flow_cache_roundtrip(tmp_path):
    from wsss_lib.core.io import write_image

    frames = [_shifted_pair(2 * k, 0)[1] for k in range(3)]  # moves 2 px per frame
    samples = []
    for k, f in enumerate(frames):
        p = tmp_path / "img" / f"f{k}.png"
        write_image(p, f)
        samples.append(Sample(id=f"clip/a {k}", image=p, clip="clip", frame=k))
    cache = FlowCache(tmp_path / "cache", "toy", FlowParams(method="dis"))
    first = compute_dataset_flow(samples, cache, progress=False)
    assert first["computed"] == 3 and first["cached"] == 0 and first["method"] == "dis"
    again = compute_dataset_flow(samples, cache, progress=False)
    assert again["computed"] == 0 and again["cached"] == 3
    for k in range(3):
        f = cache.load(samples[k].id)
        assert f.shape == (96, 128, 2)
        assert abs(np.median(f[..., 0]) - 2.0) < 0.5  # last frame: negated backward flow, same sign
    assert cache.path("a/b").parent == cache.folder  # ids with slashes stay inside the folder
    cache.path(samples[0].id).write_bytes(b"garbage")
    with pytest.raises(CorruptFileError):
        cache.load(samples[0].id)
    with pytest.raises(CorruptFileError, match="wsss flow"):
        cache.load("missing")


def test_flow_cache_is_keyed_by_the_frames_generation(tmp_path):
    """A regenerated toy dataset keeps its sample ids: its flow must not be read from the old cache."""
    from wsss_lib.data.registry import dataset_fingerprint

    root = tmp_path / "toy"
    root.mkdir()
    assert dataset_fingerprint("toy_streets", root) == ""
    (root / "manifest.json").write_text('{"generator": "toy_streets", "version": 2}')
    v2 = dataset_fingerprint("toy_streets", root)
    (root / "manifest.json").write_text('{"generator": "toy_streets", "version": 3}')
    v3 = dataset_fingerprint("toy_streets", root)
    assert v2 and v3 and v2 != v3
    old, new = (FlowCache(tmp_path / "cache", "toy_streets", FlowParams(), v) for v in (v2, v3))
    old.save("clip/0000", np.ones((4, 4, 2), np.float32))
    assert old.folder != new.folder and not new.path("clip/0000").exists()
