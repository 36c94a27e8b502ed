"""Datasets for end-to-end training runs (no download: scikit-learn's bundled 8x8 digits).

:func:`digits` returns the 1797 8x8 handwritten digits of ``sklearn.datasets.load_digits``,
split once and for all into 1437 training and 360 test images (stratified, seed 0), as
float32 ``[B, 1, size, size]`` arrays in ``[0, 1]`` and int64 labels.

To feed LeNet-5's 32x32 input, the 8x8 image is **upsampled by nearest neighbour** (each pixel
becomes a ``size/8 x size/8`` block, ``size = 32`` gives 4x4 blocks). Nearest neighbour keeps
the pixel values exact (no interpolation artefacts) and adds no information; the scale
matches LeNet-5's receptive fields (two 5x5 convs and two pools see the whole 32x32 image).
Sizes that are not a multiple of 8 are made by upsampling to the largest multiple of 8 below
and padding with zeros around it.

Domain shifts for fine-tuning (:data:`SHIFTS`): ``rotate`` turns every image by 90 degrees
counter-clockwise; ``invert`` replaces ``x`` by ``1 - x`` (white digits become black on white).
"""

from __future__ import annotations

import numpy as np

__all__ = ["digits", "SHIFTS", "apply_shift", "upsample"]

SHIFTS = ("none", "rotate", "invert")


def upsample(x, size):
    """``[B, C, 8, 8]`` -> ``[B, C, size, size]`` by nearest neighbour plus zero padding."""
    b, c, h, w = x.shape
    f = size // h
    if f < 1:
        raise ValueError(f"size must be at least the image size {h}, not {size!r}")
    y = np.kron(x, np.ones((1, 1, f, f), dtype=x.dtype))
    pad = size - h * f
    lo = pad // 2
    return np.pad(y, ((0, 0), (0, 0), (lo, pad - lo), (lo, pad - lo))).astype(np.float32)


def apply_shift(x, shift):
    """``x`` under the domain shift ``shift`` (one of :data:`SHIFTS`)."""
    if shift in (None, "none"):
        return x
    if shift == "rotate":
        return np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))
    if shift == "invert":
        return (1.0 - x).astype(np.float32)
    raise ValueError(f"shift must be one of {', '.join(SHIFTS)}, not {shift!r}")


def digits(size=32, shift=None, *, train_subset=None):
    """``(x_train, y_train, x_test, y_test)`` of the digits set, upsampled to ``size``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=360, random_state=0, stratify=y)
    if size != 8:
        x_train, x_test = upsample(x_train, size), upsample(x_test, size)
    x_train, x_test = apply_shift(x_train, shift), apply_shift(x_test, shift)
    if train_subset is not None:
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    return (x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test)
