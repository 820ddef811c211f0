"""Joint image + label-map augmentation for real (variable-size) datasets: random scale, random
crop with padding, horizontal flip (DeepLab practice [ours: common practice, not the papers' text]).

The image and every label-like map (the label, a fg/bg mask...) go through the *same* geometric
transform: images are resized bilinearly (antialiased), maps by nearest neighbour, and the padding
needed to reach the crop size is filled with ``pad_image`` in the image and ``ignore_index`` (255)
in every map, so padded pixels are never scored nor supervised. The operations themselves are
torchvision's (``transforms.v2.functional``); only the random draws are ours, from a
``numpy.random.Generator`` so a sample's augmentation is a pure function of its seed
(:func:`wsss_lib.engine.train.item_seed`), whatever the number of DataLoader workers or a resume in between.

Shapes: image uint8 ``(H, W, 3)``, maps integer ``(H, W)``; outputs image uint8 ``(crop, crop, 3)``
and maps int64 ``(crop, crop)`` (numpy, C-contiguous).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ..core.errors import InvalidInputError
from ..core.io import IGNORE_INDEX

# ImageNet mean colour as uint8: padding that a normalising model sees as ~0 (DeepLab pads with the mean) [ours]
MEAN_RGB = (124, 116, 104)


@dataclass
class JointTransform:
    """Random scale -> random crop (padded) -> random horizontal flip of an image and its maps.

    Parameters
    ----------
    crop: output side in pixels (``None``: no crop; then the batch needs equal-size images).
    scale: ``(lo, hi)``: each side is multiplied by ``s ~ U(lo, hi)`` first (``(1, 1)`` = off).
    flip: mirror with probability 0.5.
    pad_image: RGB fill of the image's padding; maps are padded with ``ignore_index``.
    """

    crop: int | None = 321
    scale: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    pad_image: tuple[int, int, int] = MEAN_RGB
    ignore_index: int = IGNORE_INDEX
    joint = True  # (class attribute) SegmentationDataset passes every map and a seeded rng

    def __post_init__(self):
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi:
            raise InvalidInputError(f"scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        if self.crop is not None and int(self.crop) < 1:
            raise InvalidInputError(f"crop must be >= 1 or None, got {self.crop}")
        self.scale = (lo, hi)

    def __call__(self, image: np.ndarray, *maps: np.ndarray, rng: np.random.Generator | None = None):
        """``(image uint8 (H, W, 3), map (H, W), ...)`` -> the same tuple transformed (see module doc)."""
        rng = rng if rng is not None else np.random.default_rng()
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInputError(f"image must be (H, W, 3), got {image.shape}")
        for m in maps:
            if m.shape != image.shape[:2]:
                raise InvalidInputError(f"every map must be {image.shape[:2]} like its image, got {m.shape}")
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W) uint8
        ms = [torch.from_numpy(np.ascontiguousarray(m).astype(np.int64))[None] for m in maps]  # (1, H, W)
        h, w = img.shape[-2:]
        s = float(rng.uniform(*self.scale))
        if s != 1.0:
            size = [max(1, round(h * s)), max(1, round(w * s))]
            img = TF.resize(img, size, InterpolationMode.BILINEAR, antialias=True)
            ms = [TF.resize(m, size, InterpolationMode.NEAREST) for m in ms]
            h, w = size
        if self.crop is not None:
            c = int(self.crop)
            ph, pw = max(0, c - h), max(0, c - w)
            if ph or pw:  # pad right/bottom: [left, top, right, bottom]
                img = torch.stack([TF.pad(img[k:k + 1], [0, 0, pw, ph], fill=int(self.pad_image[k]))[0]
                                   for k in range(3)])
                ms = [TF.pad(m, [0, 0, pw, ph], fill=int(self.ignore_index)) for m in ms]
                h, w = h + ph, w + pw
            top = int(rng.integers(0, h - c + 1))
            left = int(rng.integers(0, w - c + 1))
            img = TF.crop(img, top, left, c, c)
            ms = [TF.crop(m, top, left, c, c) for m in ms]
        if self.flip and rng.random() < 0.5:
            img = TF.horizontal_flip(img)
            ms = [TF.horizontal_flip(m) for m in ms]
        out = [np.ascontiguousarray(img.permute(1, 2, 0).numpy())]
        out += [np.ascontiguousarray(m[0].numpy()) for m in ms]
        return tuple(out)
