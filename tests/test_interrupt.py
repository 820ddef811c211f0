"""Nothing is lost: a training killed with SIGKILL resumes from its last atomic checkpoint and
ends with exactly the weights of an uninterrupted run (same seed, CPU, fp32)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from wsss_lib.core.checkpoint import load_checkpoint

SCRIPT = textwrap.dedent('''
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_train import _toy, TINY
    from wsss_lib.models import SmallVGG, TagClassifier
    from wsss_lib.engine.train import train_classifier
    block = int(sys.argv[2])
    torch.manual_seed(0)
    model = TagClassifier(SmallVGG(**TINY), 2, hidden=8)
    ds = _toy()
    if block:  # after `block` batches (past a checkpoint), hang until the parent kills us
        get, calls = ds.__class__.get_batch, [0]
        def slow_get(self, idx):
            calls[0] += 1
            if calls[0] > block:
                time.sleep(3600)
            return get(self, idx)
        ds.__class__.get_batch = slow_get
    train_classifier(model, ds, classes=[1, 2], steps=12, batch_size=4, lr=0.01, optimizer="sgd", device="cpu",
                     seed=5, checkpoint_path=sys.argv[1], checkpoint_every=2, config={{"x": 1}}, progress=False,
                     amp=False)
    print("DONE")
''')


def _launch(tmp_path: Path, out: Path, block: int, script_text: str = SCRIPT) -> subprocess.Popen:
    """Run ``script_text`` (a job writing ``out``; ``block`` > 0: hang after that many units of work)."""
    script = tmp_path / f"job_{abs(hash(script_text))}.py"
    script.write_text(script_text.format(tests=str(Path(__file__).parent)))
    return subprocess.Popen([sys.executable, str(script), str(out), str(block)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full = _launch(tmp_path, tmp_path / "full.pt", 0)
    out, err = full.communicate(timeout=300)
    assert full.returncode == 0, err

    job = _launch(tmp_path, tmp_path / "killed.pt", 6)  # hangs fetching batch 7
    deadline = time.time() + 600
    while time.time() < deadline:  # wait until a mid-training checkpoint exists, then SIGKILL
        if (tmp_path / "killed.pt").is_file():
            ck = load_checkpoint(tmp_path / "killed.pt")
            if 0 < ck["step"] < 11:
                break
        if job.poll() is not None:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    killed_at = load_checkpoint(tmp_path / "killed.pt")  # still a valid checkpoint (atomic writes)
    assert not killed_at["complete"] and killed_at["step"] < 11

    resumed = _launch(tmp_path, tmp_path / "killed.pt", 0)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "killed.pt")
    assert a["complete"] and b["complete"] and a["step"] == b["step"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), f"{k} differs after resume (tolerance: exact, fp32 CPU)"


MASK_SCRIPT = textwrap.dedent('''
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_distributed import _dataset, _tiny_classifier
    from wsss_lib.engine import shard
    block = int(sys.argv[2])
    ds, clf = _dataset(12, 3), _tiny_classifier()
    if block:  # after `block` batches were extracted, hang until the parent kills us
        extract, calls = shard.extract_masks, [0]
        def slow_extract(*a, **kw):
            calls[0] += 1
            if calls[0] > block:
                time.sleep(3600)
            return extract(*a, **kw)
        shard.extract_masks = slow_extract
    res = shard.extract_masks_job(clf, ds, sys.argv[1], threshold=0.5, crf={{"iterations": 2}}, batch_size=2,
                                  rank=0, world=1, progress=False, save_probs=True)
    print("COMPUTED", res["computed"], "SKIPPED", res["skipped"])
''')


def test_sigkill_during_mask_extraction_keeps_finished_masks_and_completes_identically(tmp_path):
    import numpy as np

    full = _launch(tmp_path, tmp_path / "full", 0, MASK_SCRIPT)
    out, err = full.communicate(timeout=300)
    assert full.returncode == 0 and "COMPUTED 12 SKIPPED 0" in out, err

    killed = tmp_path / "killed"
    job = _launch(tmp_path, killed, 3, MASK_SCRIPT)  # 3 batches (6 images) written, then it hangs in the 4th
    deadline = time.time() + 300
    while time.time() < deadline and len(list(killed.glob("*.png"))) < 6 and job.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it enter the hanging batch
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    done = {p.name: p.stat().st_mtime_ns for p in killed.glob("*.png")}
    assert len(done) == 6 and len(list(killed.glob("*.npz"))) == 6  # whole items only (atomic renames)

    resumed = _launch(tmp_path, killed, 0, MASK_SCRIPT)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "COMPUTED 6 SKIPPED 6" in out, (out, err)  # finished work is not redone
    assert all((killed / n).stat().st_mtime_ns == t for n, t in done.items())
    assert not [p for p in killed.iterdir() if p.suffix not in (".png", ".npz")]  # no temp file left behind
    for p in sorted((tmp_path / "full").glob("*")):
        q = killed / p.name
        if p.suffix == ".png":
            assert p.read_bytes() == q.read_bytes(), p.name
        else:
            assert np.array_equal(np.load(p)["fg"], np.load(q)["fg"]), p.name
