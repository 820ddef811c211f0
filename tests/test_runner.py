"""The papermill runner on tiny throw-away notebooks: order, parameters, failures, results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from wsss_lib.core.errors import InvalidInputError, WsssError
from wsss_lib.runner import discover_notebooks, parse_value, run_notebooks


def _nb(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick = False\nseed = 0\ndevice = 'auto'\noutput_dir = None\nx = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


RECORD = ("from wsss_lib.core.results import record\n"
          "record('{name}', {{'x': x, 'quick': quick, 'seed': seed}}, output_dir)\n")


@pytest.fixture()
def nbdir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "01_first.ipynb", RECORD.format(name="01_first"))
    _nb(d / "02_fails.ipynb", "raise ValueError('boom in cell')")
    _nb(d / "03_third.ipynb", RECORD.format(name="03_third"))
    (d / "_helper.ipynb").write_text("{}")  # not a numbered notebook: ignored
    return d


def test_discover_and_only(nbdir):
    assert [p.stem for p in discover_notebooks(nbdir)] == ["01_first", "02_fails", "03_third"]
    assert [p.stem for p in discover_notebooks(nbdir, ["03"])] == ["03_third"]
    with pytest.raises(WsssError, match="matches no notebook"):
        discover_notebooks(nbdir, ["99"])


def test_keep_going_records_everything(nbdir, tmp_path):
    out = tmp_path / "out"
    res = run_notebooks(out, notebooks_dir=nbdir, quick=True, params={"x": 5}, keep_going=True, html=True, seed=3)
    assert [r.status for r in res.values()] == ["ok", "failed", "ok"]
    assert "ValueError" in res["02_fails"].error and "boom in cell" in res["02_fails"].error
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["01_first"] == {"x": 5, "quick": True, "seed": 3}
    assert results["status"]["02_fails"]["status"] == "failed"
    md = (out / "results.md").read_text()
    assert "01_first" in md and "failed" in md
    # every executed notebook records how late its slowest cell's reply was noticed (a lost wake-up: seconds)
    assert 0 <= results["status"]["01_first"]["max_reply_lag"] < 1.0
    assert "slowest reply noticed after" in md
    assert (out / "notebooks" / "01_first.ipynb").is_file() and (out / "html" / "03_third.html").is_file()
    index = (out / "index.html").read_text()  # the gallery links what exists, relative to the run folder
    assert "href='html/03_third.html'" in index and "href='notebooks/01_first.ipynb'" in index
    assert "boom in cell" in index and "href='results.md'" in index


def test_stop_on_failure_keeps_earlier_results(nbdir, tmp_path):
    out = tmp_path / "out"
    res = run_notebooks(out, notebooks_dir=nbdir, html=False)
    assert list(res) == ["01_first", "02_fails"]
    status = json.loads((out / "status.json").read_text())
    assert status["01_first"]["status"] == "ok"
    # re-running one notebook keeps the others' status
    run_notebooks(out, notebooks_dir=nbdir, only=["03"], html=False)
    status = json.loads((out / "status.json").read_text())
    assert set(status) == {"01_first", "02_fails", "03_third"}


def test_hung_cell_times_out_and_the_notebook_is_run_again(tmp_path):
    """A cell that never answers (here: sleeps on the first attempt only, like a lost widget
    reply) times out; the notebook then runs again in a fresh kernel and passes. A cell that
    always hangs fails after the retries, with a timeout error; ordinary errors are not retried."""
    d = tmp_path / "nbs"
    d.mkdir()
    marker = tmp_path / "first_attempt_done"
    _nb(d / "01_flaky.ipynb", f"import pathlib, time\nm = pathlib.Path({str(marker)!r})\n"
                              "if not m.exists():\n    m.touch()\n    time.sleep(60)\n")
    _nb(d / "02_hangs.ipynb", "import time\ntime.sleep(60)")
    res = run_notebooks(tmp_path / "out", notebooks_dir=d, html=False, keep_going=True, timeout=3, retries=1)
    assert res["01_flaky"].status == "ok" and res["01_flaky"].attempts == 2
    assert res["02_hangs"].status == "failed" and res["02_hangs"].attempts == 2
    assert "Timeout" in res["02_hangs"].error or "timed out" in res["02_hangs"].error
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["01_flaky"]["attempts"] == 2


def test_failing_cell_is_not_retried(nbdir, tmp_path):
    res = run_notebooks(tmp_path / "out", notebooks_dir=nbdir, only=["02"], html=False, timeout=30, retries=2)
    assert res["02_fails"].status == "failed" and res["02_fails"].attempts == 1


def test_outputs_never_overwrite_inputs(nbdir):
    with pytest.raises(InvalidInputError, match="must differ"):
        run_notebooks(nbdir, notebooks_dir=nbdir)


def test_unwritable_output_is_one_clear_cli_error(nbdir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "wsss_lib", "run", "--notebooks", str(nbdir), "--out",
                           str(blocker / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not writable" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text,value", [("1", 1), ("0.5", 0.5), ("True", True), ("false", False),
                                        ("None", None), ("abc", "abc"), ("[1, 2]", [1, 2])])
def test_parse_value(text, value):
    assert parse_value(text) == value
