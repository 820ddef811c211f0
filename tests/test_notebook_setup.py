"""wsss_lib.notebook: papermill parameters are validated up front, outputs land where asked."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.notebook import check_types, setup
from wsss_lib.runner import run_notebooks


@pytest.mark.parametrize("kw,msg", [({"quick": "yes"}, "quick='yes' has type str; expected bool"),
                                    ({"seed": 1.5}, "expected int"), ({"seed": True}, "expected int"),
                                    ({"device": 0}, "expected str"), ({"data_root": 3}, "expected str or NoneType")])
def test_wrong_types_are_one_clear_error(kw, msg):
    with pytest.raises(InvalidInputError, match=msg):
        check_types(**kw)


def test_setup_creates_folders_and_records(tmp_path):
    ctx = setup("99_test", quick=True, seed=1, device="cpu", output_dir=str(tmp_path / "o"))
    assert ctx.figures.is_dir() and ctx.checkpoints.is_dir() and ctx.device.type == "cpu"
    ctx.record({"x": 1.5})
    data = json.loads((tmp_path / "o" / "metrics" / "99_test.json").read_text())
    assert data["x"] == 1.5 and data["quick"] is True and data["seed"] == 1 and "seconds" in data


def test_unavailable_device_is_clear():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        setup("99_test", device="cuda")


def test_wrong_papermill_parameter_fails_the_notebook_with_the_message(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("quick = False\nseed = 0\ndevice = 'cpu'\noutput_dir = None")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(
        "from wsss_lib.notebook import setup\nctx = setup('01_x', quick=quick, seed=seed, device=device, output_dir=output_dir)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, d / "01_x.ipynb")
    res = run_notebooks(tmp_path / "out", notebooks_dir=d, params={"seed": "seven"}, html=False)
    assert res["01_x"].status == "failed"
    assert "InvalidInputError" in res["01_x"].error and "seed='seven'" in res["01_x"].error


def test_one_output_folder_whatever_the_working_directory(tmp_path, monkeypatch):
    """A notebook opened in JupyterLab (kernel cwd: notebooks/) and `wsss run` (from anywhere)
    resolve the same default folder, <checkout>/runs/latest; WSSS_OUTPUT_DIR overrides both."""
    from wsss_lib.cli import main
    from wsss_lib.core.results import default_output_dir

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("WSSS_OUTPUT_DIR", raising=False)
    seen = set()
    for cwd in (repo / "notebooks", repo, tmp_path):
        monkeypatch.chdir(cwd)
        seen.add(default_output_dir())
    assert seen == {repo / "runs" / "latest"}
    monkeypatch.setenv("WSSS_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    assert default_output_dir() == tmp_path / "elsewhere"
    # the CLI's default is the same function: with no --out, `wsss run` writes where the env says
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick = False\nseed = 0\ndevice = 'auto'\noutput_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(output_dir)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbs / "01_where.ipynb")
    assert main(["run", "--notebooks", str(nbs), "--no-html"]) == 0
    assert json.loads((tmp_path / "elsewhere" / "status.json").read_text())["01_where"]["status"] == "ok"


def test_widget_view_prints_one_line_for_a_bad_setting(capsys):
    from wsss_lib.core.errors import InvalidInputError
    from wsss_lib.notebook import widget_view

    @widget_view
    def show(weight=1.0):
        if weight == 0:
            raise InvalidInputError("give at least one layer a weight > 0")
        if weight < 0:
            raise RuntimeError("a real bug")
        return weight

    assert show(2.0) == 2.0
    assert show(0) is None
    out = capsys.readouterr().out
    assert out.strip().splitlines() == ["⚠ give at least one layer a weight > 0"]
    with pytest.raises(RuntimeError):
        show(-1)


def test_explorer_snapshot_is_saved_and_shown_only_in_batch_runs(tmp_path, monkeypatch):
    """A widget explorer's static view: always saved; displayed only under `wsss run` (its HTML cannot
    run widgets), so in JupyterLab the live widget is the one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wsss_lib import nbexec
    from wsss_lib import notebook as nbmod

    assert nbmod.BATCH_ENV == nbexec.BATCH_ENV
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: shown.append(a))
    ctx = setup("99_test", quick=True, device="cpu", output_dir=str(tmp_path))
    monkeypatch.delenv(nbmod.BATCH_ENV, raising=False)
    fig = plt.figure()
    nbmod.explorer_snapshot(ctx, fig)
    assert (tmp_path / "figures" / "99_test_explorer.png").is_file()
    assert not shown and not plt.fignum_exists(fig.number)
    monkeypatch.setenv(nbmod.BATCH_ENV, "1")
    fig = plt.figure()
    nbmod.explorer_snapshot(ctx, fig, "other")
    assert len(shown) == 1 and (tmp_path / "figures" / "99_test_other.png").is_file()
    assert not plt.fignum_exists(fig.number)


def test_wsss_run_kernels_know_they_run_in_batch(tmp_path, monkeypatch):
    from wsss_lib.nbexec import BATCH_ENV

    monkeypatch.delenv(BATCH_ENV, raising=False)
    d = tmp_path / "nbs"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("quick = False\nseed = 0\ndevice = 'cpu'\noutput_dir = None")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(f"import os\nassert os.environ.get({BATCH_ENV!r}) == '1'")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, d / "01_batch.ipynb")
    res = run_notebooks(tmp_path / "out", notebooks_dir=d, html=False)
    assert res["01_batch"].status == "ok", res["01_batch"].error


def test_size_parameters_reach_the_run_and_its_checkpoint_configs(tmp_path):
    from wsss_lib.papers import paper1 as P1
    from wsss_lib.papers import paper2 as P2

    ctx = setup("01", quick=True, device="cpu", dataset="voc_aug", data_root=str(tmp_path), output_dir=str(tmp_path / "o"),
                real_subset={"n_train": 7, "image_size": [48, 40]})
    assert P1.real_subset(ctx)["n_train"] == 7 and P1.split_size(ctx, "train") == 7
    cfg = P1.classifier_config(ctx)
    assert cfg["image_size"] == [48, 40] and cfg["n_train"] == 7  # another size or subset retrains the classifier
    other = setup("01", quick=True, device="cpu", dataset="voc_aug", data_root=str(tmp_path),
                  output_dir=str(tmp_path / "o"), real_subset={"image_size": [64, 64]})
    assert P1.classifier_config(other) != cfg
    toy = setup("01", quick=True, device="cpu", output_dir=str(tmp_path / "t"))
    assert P1.classifier_config(toy)["image_size"] is None  # the toy runs' configs are unchanged
    cs = setup("05", quick=True, device="cpu", dataset="cityscapes", data_root=str(tmp_path),
               output_dir=str(tmp_path / "c"), clips={"train": 3}, frame_size=[32, 64])
    assert P2.frame_size(cs) == (32, 64) and cs.clips == {"train": 3}
    for kw, msg in (({"real_subset": {"n_trian": 3}}, "n_trian"), ({"clips": {"training": 3}}, "train, val, test"),
                    ({"frame_size": [32]}, "frame_size")):
        with pytest.raises(InvalidInputError, match=msg):
            setup("01", quick=True, device="cpu", output_dir=str(tmp_path / "x"), **kw)


def test_steps_scale_is_the_notebook_budget_and_scales_the_chosen_schedules(tmp_path, monkeypatch, patch_presets):
    """``steps_scale`` (None: the "notebook" preset's budget, a scale and a cap; quick runs 1, no cap)
    multiplies the VAL-chosen steps of paper 1's seg nets and paper 2's video models, nothing else, and
    ``steps_cap`` bounds the result; studies / CLI contexts keep 1 and no cap."""
    from wsss_lib.core.config import preset
    from wsss_lib.papers import paper1 as P1
    from wsss_lib.papers import paper2 as P2
    from wsss_lib.papers.common import make_context

    out = str(tmp_path / "o")
    budget = preset("notebook")["steps_scale"]
    assert setup("04_weak_training", quick=True, device="cpu", output_dir=out).steps_scale == 1.0
    assert setup("04_weak_training", device="cpu", output_dir=out).steps_scale == budget["04_weak_training"] < 1
    assert setup("07_two_stream_video", device="cpu", output_dir=out).steps_scale == budget["07_two_stream_video"] < 1
    assert setup("01_tags_classifier", device="cpu", output_dir=out).steps_scale == 1.0
    caps = preset("notebook")["steps_cap"]
    assert setup("07_two_stream_video", device="cpu", output_dir=out).steps_cap == caps["07_two_stream_video"]
    assert setup("07_two_stream_video", device="cpu", output_dir=out, steps_scale=1).steps_cap is None  # full schedule
    assert setup("07_two_stream_video", quick=True, device="cpu", output_dir=out).steps_cap is None
    assert make_context(None, out, "cpu").steps_scale == 1.0
    for bad in (0, -1, "half", True, 11):
        with pytest.raises(InvalidInputError, match="steps_scale"):
            setup("04", device="cpu", output_dir=out, steps_scale=bad)
    patch_presets({"seg": {"mode_steps": {"full": 400}}, "video_seg": {"kind_steps": {"full": 800}}})
    seen = {}
    monkeypatch.setattr(P1, "get_segnet", lambda ctx, name, mode, clf, **kw: (seen.setdefault("seg", kw["steps"]), {}))
    monkeypatch.setattr(P2, "get_video_model", lambda ctx, kind, streets, **kw: seen.setdefault("video", kw["steps"]))
    ctx = setup("04", device="cpu", output_dir=out, steps_scale=0.25)
    P1.seg_run(ctx, "full", classifier=object())
    P2.train_kind(ctx, "full", {}, {"classifier": object()})
    assert seen == {"seg": 100, "video": 200}
    seen.clear()
    P1.seg_run(ctx, "full", classifier=object(), steps=7)  # an explicit schedule is not scaled
    assert seen == {"seg": 7}
    seen.clear()
    ctx.steps_cap = 150  # the budget's cap after the scale: paper 1's 100 stays, paper 2's 200 is cut to 150
    P1.seg_run(ctx, "full", classifier=object())
    P2.train_kind(ctx, "full", {}, {"classifier": object()})
    assert seen == {"seg": 100, "video": 150}
    seen.clear()
    ctx.steps_scale = 1.0  # a cap alone still applies
    P2.train_kind(ctx, "full", {}, {"classifier": object()})
    assert seen == {"video": 150}
