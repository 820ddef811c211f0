"""Atomic checkpoints and the one safe loader (weights_only=True)."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from wsss_lib.core.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from wsss_lib.core.errors import CheckpointError


def test_roundtrip_plain_dict(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7, "config": {"lr": 0.1, "name": "x"}}
    p = save_checkpoint(obj, tmp_path / "sub" / "ck.pt")
    back = load_checkpoint(p)
    assert back["step"] == 7 and back["config"]["name"] == "x"
    assert torch.equal(back["model"]["w"], obj["model"]["w"])
    assert not [f for f in os.listdir(p.parent) if f.endswith(".tmp")], "temp files left behind"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_payload_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(p)


def test_truncated_and_missing(tmp_path):
    p = save_checkpoint({"w": torch.ones(1000)}, tmp_path / "ck.pt")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    p = save_checkpoint({"v": 1}, tmp_path / "ck.pt")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint({"v": 2}, p)
    monkeypatch.undo()
    assert load_checkpoint(p)["v"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["ck.pt"]


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint({"v": 1}, blocker / "ck.pt")


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    st = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint({"rng": st}, tmp_path / "r.pt")
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_pickle_module_error_type_is_what_torch_raises(tmp_path):
    # guard: torch raises pickle.UnpicklingError for disallowed globals; our message depends on it
    p = tmp_path / "evil.pt"
    torch.save(_Evil(), p)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(p, weights_only=True)
