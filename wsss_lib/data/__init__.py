"""Datasets: one contract (:mod:`.base`), toy generators and real-dataset index builders."""

from .base import DatasetInfo, Sample, SegmentationDataset, to_uint8_image  # noqa: F401
