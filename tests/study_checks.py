"""Helpers shared by the seed-study and paper-1 CLI tests (imported like ``fixtures_real``)."""

from __future__ import annotations

import json

from wsss_lib.cli import main

# paper 1 at tiny sizes: a whole pipeline in seconds on CPU
TINY_PAPER1 = {
    "toy_objects": {"n_train": 24, "n_val": 12, "n_test": 12},
    "classifier": {"widths": [4, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1], "hidden": 8, "steps": 4, "batch_size": 8},
    "seg": {"n_train": None, "n_val": None, "n_test": None, "steps": 3, "batch_size": 4, "head_width": 8},
    "crf": {"workers": 1},
}


def assert_study_resumes(argv: list[str], out, summary: dict, capsys) -> None:
    """Running the study again (without ``--choose``) reads every finished seed back: nothing is
    recomputed and the table is the same."""
    stamp = (out / "seed_1" / "scores.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main([a for a in argv if a != "--choose"]) == 0
    assert (out / "seed_1" / "scores.pt").stat().st_mtime_ns == stamp
    assert "study: seed" not in capsys.readouterr().out
    assert json.loads((out / "study.json").read_text())["comparisons"] == summary["comparisons"]
