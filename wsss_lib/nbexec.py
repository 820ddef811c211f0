"""The papermill engine ``wsss`` that ``wsss run`` executes notebooks with: nbclient with the
lost wake-up that hung widget cells removed, and a watchdog on cells whose kernel is idle while
the client still waits.

The hang (issue 11). nbclient waits for a cell's ``execute_reply`` with one call,
``await shell_channel.get_msg(timeout=<cell limit or None>)``. Underneath, pyzmq's asyncio layer
parks the wait on the socket's ZMQ_FD, which is *edge*-triggered: it signals that the socket's
state changed, and the signal is consumed by whatever next makes libzmq process the socket's
commands (a recv, a send, a read of ZMQ_EVENTS). pyzmq re-checks after its own calls, but
nbclient's output-widget mimic (``nbclient.output_widget.OutputWidget.sync_state``, run for every
output a widget cell sends into an ``Output`` widget such as ``ipywidgets.interactive``'s) sends a
comm message on the *shell* socket through ``Session.send``, which sends through a plain
``zmq.Socket.shadow`` of the asyncio socket. When that send happens after the reply has reached
the socket but before the event loop saw the FD turn readable, the edge is consumed behind pyzmq's
back: the reply sits in the socket and the wait sleeps until its timeout (then pyzmq's final
zero-timeout poll finds the reply "that was there all along"). That was ~1 in 6 executions of
notebooks 02/03/05 here: a cell waited out its limit, 300 s in quick mode and up to 4 h by default.
``tests/test_nbexec.py`` reproduces it on a socket pair.

The fix, in the channel that has the bug:

* :class:`SlicedChannel` ``send`` re-arms the wait: right after the plain send it reads ZMQ_EVENTS
  through the asyncio socket, which makes pyzmq dispatch a message that is waiting (the cause);
* its ``get_msg`` polls in short slices (:data:`POLL_SLICE` s) until the caller's deadline, each
  slice ending with pyzmq's zero-timeout poll, so any other lost edge costs at most one slice;
* :class:`WatchdogClient` (papermill's client on these channels) watches each cell: once IOPub
  has reported the kernel idle for the cell, an ``execute_reply`` that has not arrived within
  :data:`IDLE_REPLY_GRACE` s fails the cell with :class:`LostReplyError` (a
  :class:`TimeoutError`, so ``wsss run`` retries the notebook in a fresh kernel) instead of
  waiting for the cell limit.

Importing this module registers the engine with papermill (``engine_name="wsss"``); papermill's
own ``nbclient`` engine stays available for comparisons (``benchmarks/stress_widgets.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from nbclient.exceptions import CellTimeoutError
from nbclient.util import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from traitlets import Float, Type

ENGINE = "wsss"
POLL_SLICE = 0.25  # s: longest a message can sit unnoticed in a socket
IDLE_REPLY_GRACE = 5.0  # s: kernel idle for the cell, and still no execute_reply -> the cell fails
# set in the environment of every kernel this engine starts: a notebook can tell a batch run (no live
# widgets: its executed copy and HTML show the explorers' static snapshots) from JupyterLab
BATCH_ENV = "WSSS_BATCH_RUN"


class LostReplyError(CellTimeoutError):
    """The kernel finished a cell (IOPub: idle) but its ``execute_reply`` never arrived."""


class SlicedChannel(AsyncZMQSocketChannel):
    """A ZMQ channel whose ``send`` does not swallow a waiting reply's wake-up and whose
    ``get_msg`` polls in slices of :data:`POLL_SLICE` s until its deadline.

    Same contract as :class:`AsyncZMQSocketChannel`: ``get_msg`` returns the next message, raises
    :class:`queue.Empty` when ``timeout`` (seconds; ``None`` = wait forever) passes first.
    """

    poll_slice = POLL_SLICE

    def send(self, msg: dict[str, Any]) -> None:
        super().send(msg)  # Session.send: a plain send on a shadow socket, which may eat the FD edge
        self.socket.get(zmq.EVENTS)  # through pyzmq's asyncio socket: dispatches a waiting message

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        assert self.socket is not None
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = self.poll_slice if deadline is None else min(self.poll_slice, max(0.0, deadline - monotonic()))
            if await self.socket.poll(int(left * 1000)):  # 0 ms: pyzmq answers from zmq_poll at once
                return await self._recv()
            if deadline is not None and monotonic() >= deadline:
                raise Empty


class SlicedKernelClient(AsyncKernelClient):
    """nbclient's kernel client with :class:`SlicedChannel` for shell, IOPub, stdin and control."""

    shell_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    stdin_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    control_channel_class = Type(SlicedChannel)  # type: ignore[assignment]


class WatchdogClient(PapermillNotebookClient):
    """papermill's notebook client on :class:`SlicedKernelClient`, with the idle-kernel watchdog."""

    idle_reply_grace = Float(IDLE_REPLY_GRACE, help="seconds to wait for execute_reply once the kernel is idle")

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        km.client_class = f"{SlicedKernelClient.__module__}.{SlicedKernelClient.__qualname__}"
        if os.name == "posix":  # local Unix sockets: no open TCP port, no "running over TCP without
            km.transport = "ipc"  # encryption" warning for every notebook; in the temp folder, never the cwd
            km.ip = os.path.join(tempfile.gettempdir(), f"wsss-kernel-{uuid.uuid4().hex[:12]}-ipc")
        return km

    async def async_start_new_kernel(self, **kwargs):
        env = dict(kwargs.pop("env", None) or os.environ)
        env[BATCH_ENV] = "1"  # wsss_lib.notebook.explorer_snapshot shows the static view in batch runs only
        return await super().async_start_new_kernel(env=env, **kwargs)

    start_new_kernel = run_sync(async_start_new_kernel)  # nbclient binds the sync twin to its own coroutine

    async def _async_poll_for_reply(self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive):
        reply = asyncio.ensure_future(
            super()._async_poll_for_reply(msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive))
        idle_since = None
        try:
            while True:
                await asyncio.wait({reply}, timeout=POLL_SLICE)
                if reply.done():
                    return reply.result()
                if task_poll_output_msg.done():  # IOPub said idle for this cell: the kernel is done
                    idle_since = idle_since or monotonic()
                    if monotonic() - idle_since > self.idle_reply_grace:
                        task_poll_kernel_alive.cancel()
                        raise LostReplyError(
                            f"the kernel finished the cell (idle for {self.idle_reply_grace:.0f} s) but its "
                            f"reply never arrived")
        finally:
            if not reply.done():
                reply.cancel()


class WatchdogEngine(NBClientEngine):
    """papermill's nbclient engine executing with :class:`WatchdogClient`."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, **kwargs):
        kwargs.pop("input_path", None)
        kwargs.pop("timeout", None)
        kwargs.pop("startup_timeout", None)
        return WatchdogClient(nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
                              kernel_name=kernel_name, log=logger, log_output=log_output, stdout_file=stdout_file,
                              stderr_file=stderr_file, **kwargs).execute()


papermill_engines.register(ENGINE, WatchdogEngine)


def _utc(stamp: str) -> datetime:
    t = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # papermill writes naive UTC


def reply_lags(notebook: str | os.PathLike) -> list[tuple[int, float]]:
    """``[(cell_index, seconds)]``: how long the client took, per executed code cell, to notice
    that the kernel had finished it.

    The lag is papermill's ``end_time`` (the client's clock, when it moved on) minus the later of
    the kernel's ``shell.execute_reply`` and ``iopub.status.idle`` stamps (same machine, same
    clock). Normally a few milliseconds to ~0.1 s; a lost wake-up shows as the cell limit.
    Cells without the timing metadata (not executed) are skipped.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    lags = []
    for i, cell in enumerate(nb.get("cells", [])):
        meta = cell.get("metadata", {})
        end = meta.get("papermill", {}).get("end_time")
        done = [meta.get("execution", {}).get(k) for k in ("shell.execute_reply", "iopub.status.idle")]
        done = [d for d in done if d]
        if cell.get("cell_type") == "code" and end and done:
            lags.append((i, (_utc(end) - max(_utc(d) for d in done)).total_seconds()))
    return lags
