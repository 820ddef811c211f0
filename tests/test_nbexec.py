"""The notebook executor (``wsss_lib.nbexec``): the lost wake-up that hung ``wsss run`` (issue 11),
reproduced on a socket pair; the sliced channel that recovers from it; the idle-kernel watchdog on
a real kernel whose reply is dropped; and the reply lag of every cell of the quick run."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from wsss_lib.nbexec import POLL_SLICE, SlicedChannel, reply_lags
from wsss_lib.runner import run_notebooks


async def _deliver_with_lost_wakeup(channel_cls, wait: float, trigger: str = "send"):
    """The hang, on a socket pair: a reply arrives while the client waits on the shell socket, and
    before the event loop sees the socket's ZMQ_FD turn readable the client SENDS on that socket,
    as nbclient's output-widget mimic does when a widget cell clears its output
    (``OutputWidget.sync_state`` -> ``shell_channel.send``). ``Session.send`` sends through a plain
    ``zmq.Socket.shadow`` of the asyncio socket, and a plain send processes the socket's pending
    commands, consuming the FD edge behind pyzmq's asyncio layer. ``trigger="events"`` consumes it
    with a plain read of ZMQ_EVENTS instead. Returns what ``get_msg(timeout=None)`` got within
    ``wait`` seconds, or ``None``."""
    ctx = zmq.asyncio.Context()
    client = ctx.socket(zmq.DEALER)
    port = client.bind_to_random_port("tcp://127.0.0.1")
    sync_ctx = zmq.Context()
    kernel = sync_ctx.socket(zmq.DEALER)
    kernel.connect(f"tcp://127.0.0.1:{port}")
    session = Session(key=b"")
    try:
        channel = channel_cls(client, session)
        waiting = asyncio.ensure_future(channel.get_msg(timeout=None))
        await asyncio.sleep(0.3)  # the client is now parked on the socket's FD
        assert not waiting.done()
        session.send(kernel, "execute_reply", {"status": "ok"})
        time.sleep(0.3)  # blocks the loop: the reply is delivered, the FD turns readable
        if trigger == "send":  # two outputs into an Output widget: two state syncs
            for _ in range(2):
                channel.send(session.msg("comm_msg", {"comm_id": "w", "data": {"method": "update"}}))
                time.sleep(0.05)
        else:
            assert zmq.Socket.shadow(client.underlying).get(zmq.EVENTS) & zmq.POLLIN
        try:
            msg = await asyncio.wait_for(waiting, wait)
        except asyncio.TimeoutError:
            return None
        return msg
    finally:
        client.close(linger=0)
        kernel.close(linger=0)
        ctx.term()
        sync_ctx.term()


class _NoSlices(SlicedChannel):
    poll_slice = 3600.0


class TestLostWakeup:
    @pytest.mark.parametrize("trigger", ["send", "events"])
    def test_plain_channel_never_wakes(self, trigger):
        """The mechanism of the hang: the reply sits in the socket and nbclient's wait sleeps on."""
        assert asyncio.run(_deliver_with_lost_wakeup(AsyncZMQSocketChannel, 3.0, trigger)) is None

    def test_send_rearms_the_wait(self):
        """The cause removed: with slicing switched off, the wait still wakes as soon as the loop runs."""
        t0 = time.perf_counter()
        msg = asyncio.run(_deliver_with_lost_wakeup(_NoSlices, 3.0, "send"))
        assert msg is not None and msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
        assert time.perf_counter() - t0 < 0.7 + 0.3  # 0.7 s of set-up

    def test_any_other_lost_edge_costs_at_most_a_slice(self):
        t0 = time.perf_counter()
        msg = asyncio.run(_deliver_with_lost_wakeup(SlicedChannel, 3.0, "events"))
        assert msg is not None and msg["msg_type"] == "execute_reply"
        assert time.perf_counter() - t0 < 0.6 + 2 * POLL_SLICE  # 0.6 s of set-up, then at most a slice

    def test_sliced_channel_keeps_the_timeout_contract(self):
        async def go():
            ctx = zmq.asyncio.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.bind_to_random_port("tcp://127.0.0.1")
            try:
                ch = SlicedChannel(sock, Session(key=b""))
                from queue import Empty

                t0 = time.perf_counter()
                with pytest.raises(Empty):
                    await ch.get_msg(timeout=0.6)
                slept = time.perf_counter() - t0
                with pytest.raises(Empty):
                    await ch.get_msg(timeout=0)
                return slept
            finally:
                sock.close(linger=0)
                ctx.term()

        assert 0.55 <= asyncio.run(go()) < 1.5


def _nb(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick = False\nseed = 0\ndevice = 'auto'\noutput_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body), nbformat.v4.new_code_cell("print('after')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


# A kernel that finishes the cell (IOPub: idle) but drops its execute_reply, on the first attempt only.
DROP_REPLY = """import pathlib
marker = pathlib.Path({marker!r})
if not marker.exists():
    marker.touch()
    kernel = get_ipython().kernel
    send = kernel.session.send
    def dropping_send(stream, msg_or_type, *args, **kwargs):
        if msg_or_type == "execute_reply":
            kernel.session.send = send  # drop this one reply only
            return None
        return send(stream, msg_or_type, *args, **kwargs)
    kernel.session.send = dropping_send
"""


@pytest.mark.slow
def test_lost_reply_is_detected_in_seconds_and_the_notebook_rerun(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "01_drop.ipynb", DROP_REPLY.format(marker=str(tmp_path / "dropped_once")))
    t0 = time.time()
    res = run_notebooks(tmp_path / "out", notebooks_dir=d, html=False, timeout=600, retries=1)["01_drop"]
    took = time.time() - t0
    assert (tmp_path / "dropped_once").exists()
    assert res.status == "ok" and res.attempts == 2, res.error
    assert took < 60, f"the lost reply was noticed after {took:.0f} s (cell limit 600 s)"
    # the plain engine would have waited for the limit: with retries=0 the failure names the cause
    (tmp_path / "dropped_once").unlink()
    res = run_notebooks(tmp_path / "out2", notebooks_dir=d, html=False, timeout=600, retries=0)["01_drop"]
    assert res.status == "failed" and "reply never arrived" in res.error


def test_reply_lags_reads_papermill_timing(tmp_path, capfd):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "01_ok.ipynb", "import time\ntime.sleep(0.5)")
    res = run_notebooks(tmp_path / "out", notebooks_dir=d, html=False)["01_ok"]
    if os.name == "posix":  # the kernel listens on Unix sockets: no unencrypted-TCP warning per notebook
        assert "without encryption" not in capfd.readouterr().err
    lags = reply_lags(res.output)
    nb = json.loads(Path(res.output).read_text())
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    assert [i for i, _ in lags] == code and len(code) == 4  # papermill adds the injected-parameters cell
    assert all(-0.05 < lag < 1.0 for _, lag in lags), lags
    # a cell noticed late shows its delay
    sleeper = next(i for i, c in enumerate(nb["cells"]) if "time.sleep" in "".join(c["source"]))
    meta = nb["cells"][sleeper]["metadata"]
    idle = datetime.fromisoformat(meta["execution"]["iopub.status.idle"].replace("Z", "+00:00"))
    meta["papermill"]["end_time"] = (idle + timedelta(seconds=30)).replace(tzinfo=None).isoformat()  # naive UTC
    Path(res.output).write_text(json.dumps(nb))
    assert 29.0 < dict(reply_lags(res.output))[sleeper] <= 30.0


@pytest.mark.skipif(os.name != "posix", reason="Unix-socket transport only on POSIX")
def test_kernel_sockets_live_in_the_temp_folder_not_the_notebooks_folder(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "01_where.ipynb", "import json, pathlib\nfrom ipykernel.connect import get_connection_file\n"
        "info = json.loads(pathlib.Path(get_connection_file()).read_text())\n"
        f"pathlib.Path({str(tmp_path / 'conn.json')!r}).write_text(json.dumps(info))")
    assert run_notebooks(tmp_path / "out", notebooks_dir=d, html=False)["01_where"].status == "ok"
    info = json.loads((tmp_path / "conn.json").read_text())
    assert info["transport"] == "ipc"
    assert Path(info["ip"]).parent == Path(tempfile.gettempdir())  # a killed kernel leaves nothing in notebooks/
    assert not [p for p in d.iterdir() if "ipc" in p.name]


def test_quick_run_cells_are_noticed_at_once(quick_run_dir, quick_status):
    """Every cell of every notebook of the quick run (02, 03, 05 have widget cells) was noticed by
    the client within 2 s of the kernel's reply: no lost wake-up waited for a limit."""
    executed = sorted((quick_run_dir / "notebooks").glob("*.ipynb"))
    assert {p.stem for p in executed} >= {"02_fgbg_masks", "03_dense_crf", "05_classifier_heatmaps"}
    slow = {p.stem: [(i, round(lag, 2)) for i, lag in reply_lags(p) if lag > 2.0] for p in executed}
    assert not any(slow.values()), slow
