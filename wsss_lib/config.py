"""Run sizes: the ONE place where quick (CI) and default sizes live.

Notebooks and the CLI call :func:`preset` with ``quick=True/False``; tests and ``wsss run
--quick`` use the quick sizes, so CI asserts on the same values a notebook records. Each section
belongs to one area of the library (``toy_objects``/``toy_streets`` data, ``classifier``,
``masks``, ``crf``, ``seg`` for paper 1; ``streets_classifier``, ``heatmaps``, ``flow``,
``video_seg`` for paper 2). Override any key with ``preset(..., **overrides)``.
"""

from __future__ import annotations

import copy

from .errors import InvalidInputError

# section -> {"default": {...}, "quick": {...}}; "quick" entries override "default" ones.
PRESETS: dict[str, dict[str, dict]] = {
    "toy_objects": {
        # the dataset is the same in both modes (generated once, deterministic); quick uses subsets
        "default": {"n_train": 1200, "n_val": 200, "n_test": 200, "size": 96, "seed": 0},
        "quick": {},
    },
    "toy_streets": {
        "default": {"n_train": 60, "n_val": 10, "n_test": 10, "frames": 8, "height": 96, "width": 128, "seed": 0},
        "quick": {},
    },
}


def preset(section: str, quick: bool = False, **overrides) -> dict:
    """Sizes for ``section`` in quick or default mode, with ``overrides`` applied.

    Unknown override keys raise :class:`InvalidInputError` (a typo must not be silently ignored).
    """
    if section not in PRESETS:
        raise InvalidInputError(f"unknown preset section {section!r}; known: {sorted(PRESETS)}")
    out = copy.deepcopy(PRESETS[section]["default"])
    if quick:
        out.update(copy.deepcopy(PRESETS[section].get("quick", {})))
    unknown = set(overrides) - set(out)
    if unknown:
        raise InvalidInputError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(out)}")
    out.update(overrides)
    return out
