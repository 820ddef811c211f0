"""Image/label IO: modes converted, corrupt files named, palette PNGs written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss_lib.core.errors import CorruptFileError, DatasetLayoutError, InvalidInputError
from wsss_lib.core.io import read_image, read_label, write_image, write_label


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "LA"])
def test_read_image_converts_modes(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size=(9, 7), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, size=(9, 7, 3), dtype=np.uint8)).convert(mode)
    p = tmp_path / "x.png"
    img.save(p)
    arr = read_image(p)
    assert arr.dtype == np.uint8 and arr.shape == (9, 7, 3) and arr.flags.c_contiguous


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(p)
    assert read_image(p).min() == 255


def test_corrupt_and_truncated_files_are_named(tmp_path):
    good = tmp_path / "good.jpg"
    write_image(good, np.zeros((32, 32, 3), np.uint8))
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="trunc.jpg"):
        read_image(trunc)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(CorruptFileError, match="junk.png"):
        read_image(junk)
    with pytest.raises(DatasetLayoutError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_label_roundtrip_palette(tmp_path):
    lab = np.array([[0, 1, 2], [255, 20, 3]], dtype=np.uint8)
    p = write_label(tmp_path / "l.png", lab)
    assert Image.open(p).mode == "P"
    assert np.array_equal(read_label(p), lab)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(CorruptFileError, match="single-channel"):
        read_label(rgb)
    with pytest.raises(InvalidInputError):
        write_label(tmp_path / "bad.png", np.array([[300]]))
