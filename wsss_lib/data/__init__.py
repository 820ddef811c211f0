"""Datasets: one contract (:mod:`.base`), toy generators and real-dataset index builders.

``load_dataset(name, root, split)`` (:mod:`.registry`) is the single entry point; toy data is
generated on first use (:func:`~.toy_objects.ensure_toy_objects`,
:func:`~.toy_streets.ensure_toy_streets`). Submodules import lazily where they can.
"""

from .base import DatasetInfo, Sample, SegmentationDataset
from ..core.io import to_uint8_image  # noqa: F401
from .registry import DATASETS, default_data_root, fill_tags, load_dataset, load_label  # noqa: F401
from .toy_streets import frame_pairs  # noqa: F401
