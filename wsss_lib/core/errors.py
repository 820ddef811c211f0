"""User-facing errors.

Every error that a user can cause (bad path, bad file, bad parameter) is raised as a
:class:`WsssError` subclass with a message that says what was expected. The CLI prints the
message on one line (traceback only with ``--debug``); library callers can catch ``WsssError``.
"""

from __future__ import annotations

import os


class WsssError(Exception):
    """Base class of every error whose message is meant for the user."""


class DatasetLayoutError(WsssError, FileNotFoundError):
    """A dataset root is missing or does not have the expected on-disk layout."""


class CorruptFileError(WsssError, ValueError):
    """An image, label map or checkpoint cannot be decoded; the message names the file."""


class InvalidInputError(WsssError, ValueError):
    """An argument (tensor shape, dtype, value range, parameter) is invalid."""


class UnsafePathError(WsssError, ValueError):
    """A path in a list file would escape the dataset root."""


class CheckpointError(WsssError, RuntimeError):
    """A checkpoint cannot be written or is refused when loaded (e.g. unsafe pickle)."""


def dataset_layout_error(dataset: str, root: str | os.PathLike | None, problem: str, tree: str,
                         url: str | None = None) -> DatasetLayoutError:
    """One readable :class:`DatasetLayoutError`: what is wrong, the expected tree, where to get the data."""
    msg = f"{dataset}: {problem}\nroot: {root}\nexpected layout:\n{tree}"
    if url:
        msg += f"\nobtain it from: {url}"
    return DatasetLayoutError(msg)
