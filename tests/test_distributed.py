"""Data-parallel training/evaluation (wsss_lib.distributed) and sharded jobs (wsss_lib.shard).

The multi-process tests launch THIS file as the worker script under a real ``torchrun``
(``python -m torch.distributed.run``, c10d rendezvous, 2 CPU processes, Gloo) once per session,
then compare what the ranks wrote with a single-process run done here:

* 2 ranks x global batch 8 == 1 process x batch 8 after 4 steps of ``train.fit`` on a tiny model
  WITH BatchNorm and random flips (tolerance: atol 1e-5 on every parameter and BN buffer; measured
  ~3e-8, while plain per-rank BatchNorm or per-rank flips give ~3e-3), and likewise for the tag
  classifier; segmentation with the prior/tags losses and a two-stream net with an unused head
  train under 2 ranks with identical replicas;
* a 2-rank run resumed from a single-process checkpoint == the uninterrupted single-process run;
* the 2-rank checkpoint loads (strict) into a plain single-process model;
* the distributed confusion matrix / mIoU equals the single-process one exactly;
* ``run_sharded`` computes every item exactly once over the ranks, and a re-run computes none.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wsss_lib.engine import distributed as D
from wsss_lib.engine import shard as S
from wsss_lib.engine import predict, train
from wsss_lib.core.io import write_label
from wsss_lib.data.base import DatasetInfo, Sample
from wsss_lib.papers import segmentation, video
from wsss_lib.core.errors import InvalidInputError, UnsafePathError

NUM_CLASSES = 3
VIDEO_INFO = DatasetInfo(name="tiny", classes=["road", "car", "person"], background=[0], moving=[2])
STEPS = 4
GLOBAL_BATCH = 8
ATOL = 1e-5  # parameters of a 2-rank vs a 1-process run (float32 reductions in another order)


# ----------------------------------------------------------------------------- shared by pytest and the worker

class TinySegNet(nn.Module):
    """conv-BN-ReLU x2 + 1x1 classifier at half resolution, plus a parameter the forward never uses
    (like a head that a fusion variant ignores: DDP must cope)."""

    def __init__(self, seed: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU())
        self.cls = nn.Conv2d(8, NUM_CLASSES, 1)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.cls(self.body(x))


def _dataset(n: int, seed: int, ignore: bool = False) -> train.InMemoryDataset:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n, 16, 16), generator=g)
    imgs[:, 0] = (labels * 100).to(torch.uint8)  # learnable: red channel encodes the class
    if ignore:
        labels[:, :2, :] = 255
    tags = torch.zeros(n, NUM_CLASSES)
    for i in range(n):
        tags[i, labels[i][labels[i] < NUM_CLASSES].unique()] = 1
    return train.InMemoryDataset(imgs, labels, tags)


def _full_size_samples(folder: Path, n: int = 13, write: bool = False) -> list[Sample]:
    """``n`` samples whose label PNGs are stored larger than the 16x16 frames, each its own size."""
    samples = [Sample(id=f"f{i:02d}", image=folder / "unused.jpg", label=folder / f"f{i:02d}.png") for i in range(n)]
    if write:
        g = np.random.default_rng(7)
        for i, s in enumerate(samples):
            lab = g.integers(0, NUM_CLASSES, (20 + i, 24)).astype(np.uint8)
            lab[:3] = 255
            write_label(s.label, lab)
    return samples


def _train(model, ds, ckpt: Path, stop_after=None) -> dict:
    return segmentation.train_segmentation(model, ds, "full", steps=STEPS, batch_size=GLOBAL_BATCH, lr=0.05,
                                    device="cpu", seed=3, amp=False, progress=False, augment=True,
                                    checkpoint_path=ckpt, checkpoint_every=1, config={"test": "ddp"},
                                    stop_after=stop_after)


def _small_backbone(**kw):
    from wsss_lib.models import SmallVGG

    return SmallVGG(widths=(4, 4, 8, 8, 8), depths=(1, 1, 1, 1, 1), **kw)


def _train_classifier(ds):
    from wsss_lib.models import TagClassifier

    torch.manual_seed(0)
    clf = TagClassifier(_small_backbone(), 2)
    hist = train.train_classifier(clf, ds, classes=[1, 2], steps=3, batch_size=GLOBAL_BATCH, device="cpu", seed=1,
                                  amp=False, progress=False)
    return clf, hist


def _entry_points(ds) -> dict:
    """Every kind of training the package does, 2 steps each: segmentation with the prior / tags
    losses (SegNet with dropout) and a two-stream net whose appearance head is unused."""
    from wsss_lib.models import SegNet
    from wsss_lib.models.two_stream import TwoStreamNet

    out = {}
    for mode in ("prior", "tags"):
        torch.manual_seed(0)
        seg = SegNet(_small_backbone(), NUM_CLASSES, width=8, dilation=2)
        hist = segmentation.train_segmentation(seg, ds, mode, masks=torch.rand(len(ds), 16, 16) if mode == "prior" else None,
                                        fg_classes=[1, 2], steps=2, batch_size=GLOBAL_BATCH, device="cpu", amp=False,
                                        progress=False)
        out[mode] = (seg.state_dict(), hist["loss"])
    torch.manual_seed(0)
    ts = TwoStreamNet(SegNet(_small_backbone(), NUM_CLASSES, width=8, dilation=2), _small_backbone(input_norm="none"),
                      late_fusion="none")

    def ts_step(model, batch, device):  # like wsss_lib.video.model_logits: reads a flag through the DDP wrapper
        x = batch["image"]
        if not getattr(model, "uses_flow", False):
            raise AssertionError("the model's attributes are not visible through the DDP wrapper")
        logits = model(x, x.flip(1))
        return nn.functional.cross_entropy(nn.functional.interpolate(logits, size=x.shape[-2:]), batch["label"])

    hist = train.fit(ts, ds, ts_step, steps=2, batch_size=GLOBAL_BATCH, lr=0.01, device="cpu", amp=False,
                     progress=False)
    out["two_stream"] = (ts.state_dict(), hist["loss"])
    return out


def _worker(out: Path) -> None:
    """Run by each torchrun rank."""
    torch.set_num_threads(1)
    info = D.init_from_env("cpu")
    assert info.distributed and info.backend == "gloo", info
    rank = info.rank
    ds = _dataset(24, 0)
    model = TinySegNet()
    hist = _train(model, ds, out / "ckpt_2rank.pt")
    sync_left = any(isinstance(m, (nn.SyncBatchNorm, D.CPUSyncBatchNorm)) for m in model.modules())
    torch.save({"state": model.state_dict(), "loss": hist["loss"], "sync_left": sync_left}, out / f"state_rank{rank}.pt")
    resumed = TinySegNet(seed=99)  # weights come from the single-process checkpoint
    hist = _train(resumed, ds, out / "ckpt_resume.pt")
    torch.save({"state": resumed.state_dict(), "loss": hist["loss"], "from": hist["resumed_from"]},
               out / f"resumed_rank{rank}.pt")
    clf, hist = _train_classifier(ds)
    torch.save({"clf": (clf.state_dict(), hist["loss"]), **_entry_points(ds)}, out / f"entry_rank{rank}.pt")
    seen: list[torch.Tensor] = []  # the images this rank's model is actually run on
    hook = model.register_forward_hook(lambda mod, inp, outp: seen.append(inp[0].detach().clone()))
    res = predict.evaluate_segmentation_both(model, _dataset(13, 5, ignore=True), NUM_CLASSES, device="cpu",
                                           return_predictions=True)
    hook.remove()
    torch.save({"mat": res["raw"].mat, "miou": res["raw"].miou(), "pred": res["pred"], "shard": list(res["shard"]),
                "pixels_scored": res["pixels_scored"], "seen": torch.cat(seen)}, out / f"eval_rank{rank}.pt")
    seen.clear()
    hook = model.register_forward_hook(lambda mod, inp, outp: seen.append(inp[0].detach().clone()))
    vid = video.evaluate_video(model, _dataset(13, 5, ignore=True), VIDEO_INFO, device="cpu", amp=False,
                               label_map=torch.arange(NUM_CLASSES), oracle_bg=True)
    hook.remove()
    torch.save({"scores": vid, "seen": torch.cat(seen)}, out / f"video_rank{rank}.pt")
    seen.clear()
    hook = model.register_forward_hook(lambda mod, inp, outp: seen.append(inp[0].detach().clone()))
    full = video.evaluate_video_full_size(model, _dataset(13, 5, ignore=True), _full_size_samples(out / "labels"),
                                          VIDEO_INFO, device="cpu", amp=False, batch_size=4,
                                          label_map=torch.arange(NUM_CLASSES), oracle_bg=True)
    hook.remove()
    torch.save({"scores": full, "seen": torch.cat(seen)}, out / f"video_full_rank{rank}.pt")
    calls: list[str] = []

    def fn(item):
        calls.append(item)
        return np.full((2, 2), int(item[4:]), np.int64)

    items = [f"item{i:02d}" for i in range(11)]
    first = S.run_sharded(items, fn, lambda it: out / "shard" / f"{it}.npy", progress=False)
    second = S.run_sharded(items, fn, lambda it: out / "shard" / f"{it}.npy", progress=False)
    (out / f"shard_rank{rank}.json").write_text(json.dumps({"calls": calls, "first": first, "second": second}))
    D.cleanup()


# ----------------------------------------------------------------------------- the 2-rank run (once)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _single_process_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    saved = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ}
    try:
        # a single-process run interrupted after 2 steps; the 2-rank run resumes it
        _train(TinySegNet(), _dataset(24, 0), out / "ckpt_resume.pt", stop_after=2)
        _full_size_samples(out / "labels", write=True)
    finally:
        os.environ.update(saved)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", __file__, "worker", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same training, single process (WORLD_SIZE unset)."""
    out = tmp_path_factory.mktemp("single")
    model = TinySegNet()
    hist = _train(model, _dataset(24, 0), out / "ckpt.pt")
    return {"state": model.state_dict(), "loss": hist["loss"]}


def _assert_states_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), k


def test_two_ranks_reach_the_single_process_parameters(two_ranks, reference):
    r0, r1 = (torch.load(two_ranks / f"state_rank{r}.pt", weights_only=True) for r in (0, 1))
    _assert_states_close(r0["state"], reference["state"], ATOL)   # incl. BN running stats
    _assert_states_close(r0["state"], r1["state"], 0.0)           # replicas stay identical
    np.testing.assert_allclose(r0["loss"], reference["loss"], atol=ATOL)  # logged loss = global mean
    assert not r0["sync_left"]  # SyncBatchNorm swapped back to plain BatchNorm after fit


def test_two_ranks_resume_a_single_process_checkpoint(two_ranks, reference):
    res = torch.load(two_ranks / "resumed_rank0.pt", weights_only=True)
    assert res["from"] == 2
    _assert_states_close(res["state"], reference["state"], ATOL)
    np.testing.assert_allclose(res["loss"], reference["loss"], atol=ATOL)


def test_checkpoint_of_two_ranks_loads_in_a_single_process(two_ranks, reference, tmp_path):
    from wsss_lib.core.checkpoint import load_checkpoint

    st = load_checkpoint(two_ranks / "ckpt_2rank.pt")
    assert st["step"] == STEPS and st["complete"]
    model = TinySegNet(seed=5)
    model.load_state_dict(st["model"])  # strict: no "module." prefix, plain BatchNorm keys
    _assert_states_close(model.state_dict(), reference["state"], ATOL)
    # and fit() single-process sees it as a finished run of the same config
    hist = _train(TinySegNet(seed=5), _dataset(24, 0), two_ranks / "ckpt_2rank.pt")
    assert hist["resumed_from"] == STEPS and hist["complete"]


def test_every_entry_point_trains_under_two_ranks(two_ranks):
    r0, r1 = (torch.load(two_ranks / f"entry_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(r0) == {"clf", "prior", "tags", "two_stream"}
    for k in r0:
        _assert_states_close(r0[k][0], r1[k][0], 0.0)  # DDP keeps the replicas identical
        assert np.isfinite(r0[k][1]).all() and r0[k][1] == r1[k][1]
    # the classifier (BatchNorm, flips, no dropout) also matches a single-process run
    clf, hist = _train_classifier(_dataset(24, 0))
    _assert_states_close(r0["clf"][0], clf.state_dict(), ATOL)
    np.testing.assert_allclose(r0["clf"][1], hist["loss"], atol=ATOL)


def test_distributed_miou_equals_single_process(two_ranks):
    """Each rank scores a disjoint shard of the 13 images (its model sees only those), and the
    summed confusion matrix is the single-process one: the mIoU is exact, not repeated work."""
    r0, r1 = (torch.load(two_ranks / f"eval_rank{r}.pt", weights_only=True) for r in (0, 1))
    ds = _dataset(13, 5, ignore=True)
    # disjoint, contiguous shards that cover the dataset
    assert r0["shard"] == [0, 6] and r1["shard"] == [6, 13]
    # the forward passes of each rank ran on exactly its shard's images, nothing else
    images = ds.images.float() / 255.0
    assert torch.equal(r0["seen"], images[0:6]) and torch.equal(r1["seen"], images[6:13])
    model = TinySegNet()
    model.load_state_dict(torch.load(two_ranks / "state_rank0.pt", weights_only=True)["state"])
    single = predict.evaluate_segmentation_both(model, ds, NUM_CLASSES, device="cpu", return_predictions=True)
    assert single["shard"] == (0, 13)
    # each rank counted only its own pixels; the counts add up to the whole set's
    assert 0 < r0["pixels_scored"] < single["pixels_scored"] and 0 < r1["pixels_scored"] < single["pixels_scored"]
    assert r0["pixels_scored"] + r1["pixels_scored"] == single["pixels_scored"] == int(single["raw"].mat.sum())
    # the per-rank matrices after the sum equal the single-process matrix, on every rank
    assert torch.equal(r0["mat"], single["raw"].mat) and torch.equal(r1["mat"], single["raw"].mat)
    assert r0["miou"] == single["raw"].miou()  # exact: summed integer counts
    assert torch.equal(r0["pred"], single["pred"]) and torch.equal(r1["pred"], single["pred"])  # dataset order


@pytest.mark.parametrize("full_size", [False, True], ids=["in_memory", "full_size"])
def test_distributed_video_scores_equal_single_process(two_ranks, full_size):
    """Paper 2's evaluation is sharded the same way: each rank predicts only its frames, and the
    summed confusion matrices give the single-process scores (oracle-background ceiling included).
    ``full_size``: real-data scoring at each frame's stored label size, each rank reading only its
    frames' label files."""
    r0, r1 = (torch.load(two_ranks / f"video{'_full' if full_size else ''}_rank{r}.pt", weights_only=True)
              for r in (0, 1))
    ds = _dataset(13, 5, ignore=True)
    images = ds.images.float() / 255.0
    assert torch.equal(r0["seen"], images[0:6]) and torch.equal(r1["seen"], images[6:13])
    model = TinySegNet()
    model.load_state_dict(torch.load(two_ranks / "state_rank0.pt", weights_only=True)["state"])
    kw = dict(device="cpu", amp=False, label_map=torch.arange(NUM_CLASSES), oracle_bg=True)
    in_memory = video.evaluate_video(model, ds, VIDEO_INFO, **kw)
    single = (video.evaluate_video_full_size(model, ds, _full_size_samples(two_ranks / "labels"), VIDEO_INFO, **kw)
              if full_size else in_memory)
    assert r0["scores"] == single == r1["scores"]  # exact: summed integer counts
    assert single["oracle_bg"]["bg_miou"] >= single["bg_miou"]
    if full_size:  # scored against the stored (larger) label files, not the dataset's 16x16 labels
        assert single["miou"] != in_memory["miou"]


def test_sharded_job_writes_every_item_once_and_resumes(two_ranks):
    logs = [json.loads((two_ranks / f"shard_rank{r}.json").read_text()) for r in (0, 1)]
    calls = logs[0]["calls"] + logs[1]["calls"]
    items = [f"item{i:02d}" for i in range(11)]
    assert sorted(calls) == items  # each item exactly once across ranks, none twice
    assert [lg["first"]["computed"] for lg in logs] == [5, 6]
    assert all(lg["second"]["computed"] == 0 and lg["second"]["skipped"] == lg["second"]["assigned"] for lg in logs)
    for it in items:
        assert np.load(two_ranks / "shard" / f"{it}.npy")[0, 0] == int(it[4:])
    assert not [p for p in (two_ranks / "shard").iterdir() if p.name.startswith(".")]  # no temp files


# ----------------------------------------------------------------------------- single-process units

@pytest.mark.parametrize("n,world", [(0, 3), (1, 2), (10, 3), (11, 2), (8, 8)])
def test_shard_partitions_items(n, world):
    items = list(range(n))
    parts = [S.shard(items, r, world) for r in range(world)]
    assert sum(parts, []) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_global_batch_must_divide(monkeypatch):
    assert D.local_batch_size(8, 2) == 4
    assert list(D.rank_slice(np.arange(8), 1, 2)) == [4, 5, 6, 7]
    with pytest.raises(InvalidInputError, match="GLOBAL batch"):
        D.local_batch_size(10, 4)
    with pytest.raises(InvalidInputError):
        S.shard([1, 2], 2, 2)


def test_env_and_single_process_defaults(monkeypatch):
    assert D.env_world() == (0, 1, 0)
    assert not D.is_distributed() and D.is_main_process()
    info = D.init_from_env("cpu")
    assert not info.distributed and info.backend is None
    D.barrier()  # no-op
    torch.manual_seed(0)
    a = D.batch_rand(5)
    torch.manual_seed(0)
    assert torch.equal(a, torch.rand(5))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InvalidInputError, match="RANK"):
        D.env_world()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(InvalidInputError, match="MASTER_ADDR"):
        D.init_from_env("cpu")


def test_sync_batchnorm_swap_is_reversible():
    model = TinySegNet()
    keys = list(model.state_dict())
    originals = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    swaps = D.convert_sync_batchnorm(model, "cpu")
    assert len(swaps) == 2 and list(model.state_dict()) == keys
    assert all(isinstance(m, D.CPUSyncBatchNorm) for m in (model.body[1], model.body[4]))
    x = torch.rand(4, 3, 8, 8)
    model.train()
    model(x)  # single process: plain batch norm, updates the shared buffers
    D.restore_batchnorm(swaps)
    assert [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == originals
    assert int(originals[0].num_batches_tracked) == 1


def test_run_sharded_failure_leaves_no_partial_output(tmp_path):
    def fn(i):
        if i == 3:
            raise RuntimeError("boom")
        return {"x": np.arange(3) + i}

    paths = [tmp_path / f"{i}.npz" for i in range(6)]
    with pytest.raises(RuntimeError, match="boom") as err:
        S.run_sharded(range(6), fn, paths, rank=0, world=1, progress=False)
    assert any("item" in n for n in getattr(err.value, "__notes__", []))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.npz", "1.npz", "2.npz"]
    # a killed writer's leftover temp file is cleaned when the item is redone
    (tmp_path / ".3.npz.123-deadbeef.tmp.npz").write_bytes(b"partial")
    res = S.run_sharded(range(6), lambda i: {"x": np.arange(3) + i}, paths, rank=0, world=1, progress=False)
    assert res["computed"] == 3 and res["skipped"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i}.npz" for i in range(6)]
    assert list(np.load(paths[4])["x"]) == [4, 5, 6]


def test_run_sharded_explicit_ranks_batches_and_multi_outputs(tmp_path):
    seen = []

    def fn(batch):
        seen.append(list(batch))
        return [[np.full((3, 3), i, np.uint8), {"i": i}] for i in batch]

    paths = lambda i: [tmp_path / "png" / f"{i}.png", tmp_path / "meta" / f"{i}.json"]  # noqa: E731
    for rank in (1, 0):  # e.g. two independent jobs (SLURM array tasks)
        S.run_sharded(range(7), fn, paths, rank=rank, world=2, progress=False, batch_size=2)
    assert sorted(sum(seen, [])) == list(range(7)) and max(map(len, seen)) == 2
    from wsss_lib.core.io import read_label

    assert int(read_label(tmp_path / "png" / "6.png")[0, 0]) == 6
    assert json.loads((tmp_path / "meta" / "5.json").read_text()) == {"i": 5}
    with pytest.raises(InvalidInputError, match="same output"):
        S.run_sharded([1, 2], lambda i: b"", lambda i: tmp_path / "x.bin", rank=0, world=1, progress=False)
    with pytest.raises(InvalidInputError, match="both"):
        S.run_sharded([1], lambda i: b"", [tmp_path / "y.bin"], rank=0, progress=False)
    with pytest.raises(InvalidInputError, match="how to write"):
        S.run_sharded([1], lambda i: 3.0, [tmp_path / "z.xyz"], rank=0, world=1, progress=False)
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("sid,ok", [("a", True), ("city/a_01", True), ("../a", False), ("/abs", False), ("", False),
                                     ("a/../../b", False)])
def test_safe_relpath(sid, ok):
    if ok:
        assert S.safe_relpath(sid) == sid
    else:
        with pytest.raises(UnsafePathError):
            S.safe_relpath(sid)


def _tiny_classifier():
    from wsss_lib.models import TagClassifier

    torch.manual_seed(0)
    return TagClassifier(_small_backbone(), 2).eval()


@pytest.mark.parametrize("use_crf", [False, True])
def test_mask_job_two_shards(tmp_path, use_crf):
    from wsss_lib.core.io import read_label

    ds = _dataset(5, 1)
    clf = _tiny_classifier()
    crf = {"iterations": 2} if use_crf else None
    s = [S.extract_masks_job(clf, ds, tmp_path, threshold=0.5, crf=crf, batch_size=2, rank=r, world=2,
                             progress=False, save_probs=True) for r in (0, 1)]
    assert [x["computed"] for x in s] == [2, 3]
    for sid in ds.ids:
        m = read_label(tmp_path / f"{sid}.png")
        assert m.shape == (16, 16) and set(np.unique(m)) <= {0, 1}
        assert np.load(tmp_path / f"{sid}.npz")["fg"].shape == (16, 16)
    again = S.extract_masks_job(clf, ds, tmp_path, crf=crf, rank=0, world=1, progress=False, save_probs=True)
    assert again["computed"] == 0 and again["skipped"] == 5


def test_heatmaps_job(tmp_path):
    ds = _dataset(3, 2)
    res = S.heatmaps_job(_tiny_classifier(), ds, tmp_path, batch_size=2, rank=0, world=1, progress=False)
    assert res["computed"] == 3
    h = np.load(tmp_path / "0.npz")["heatmaps"]
    assert h.shape == (2, 16, 16) and h.dtype == np.float16 and 0 <= h.min() and h.max() <= 1


def test_flow_cache_shards(tmp_path):
    from wsss_lib.data.base import Sample
    from wsss_lib.engine.shard import FlowCache, compute_dataset_flow
    from wsss_lib.ops.flow import FlowParams
    from wsss_lib.core.io import write_image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    samples = []
    for t in range(5):
        p = write_image(tmp_path / "img" / f"f{t}.png", np.roll(base, t, axis=1))
        samples.append(Sample(id=f"c/f{t}", image=p, clip="c", frame=t))
    cache = FlowCache(tmp_path / "flow", "toy", FlowParams(method="farneback"))
    runs = [compute_dataset_flow(samples, cache, progress=False, rank=r, world=2) for r in (0, 1)]
    assert [r["computed"] for r in runs] == [2, 3]
    again = compute_dataset_flow(samples, cache, progress=False)  # single process: all cached
    assert again["computed"] == 0 and again["cached"] == 5
    assert all(cache.load(s.id).shape == (24, 40, 2) for s in samples)
    assert not [p for p in cache.folder.iterdir() if p.name.startswith(".")]


def test_write_masks_is_atomic(tmp_path):
    from wsss_lib.core.io import write_masks

    paths = write_masks(tmp_path, ["a", "b"], [np.ones((4, 4), bool), np.zeros((4, 4), np.uint8)])
    assert [p.name for p in paths] == ["a.png", "b.png"] and sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]
    with pytest.raises(InvalidInputError):
        write_masks(tmp_path, ["c"], [np.full((4, 4), 300)])
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "worker":
    _worker(Path(sys.argv[2]))
