r"""scikit-learn's 8x8 handwritten digits with a fixed train/test split (chapter 0, section ch0-data).

The images are used from chapter 0 on (chapter 4 models them autoregressively, in bits per pixel).

The 1,797 images ship inside scikit-learn (:func:`sklearn.datasets.load_digits`), so nothing
is downloaded. Each pixel is a grey level in :math:`\{0, 1, \dots, 16\}` (the number of "on"
pixels in a 4x4 block of the original 32x32 bitmap), which makes the data set small enough
for a laptop and discrete enough for exact categorical likelihoods:

``"levels"``
    int64 in 0..16, for autoregressive models with a 17-way softmax per pixel.
``"float"``
    float32 ``levels / 16`` in [0, 1] (exact: 16 is a power of two), for autoencoders,
    VAEs, GANs and diffusion models.
``"binary"``
    float32 in {0, 1}, ``levels >= 8``, for Bernoulli pixels (RBMs, MADE).

The split is fixed once and for all: the images are shuffled by a NumPy generator seeded
with :data:`SPLIT_SEED`; the first 1,500 form ``"train"``, the other 297 ``"test"``.
Numbers reported in the book and in assignments therefore refer to the same images.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

__all__ = ["load_digits", "SPLITS", "FORMS", "SPLIT_SEED", "N_TRAIN", "N_TEST", "N_LEVELS"]

SPLITS = ("train", "test", "all")
FORMS = ("levels", "float", "binary")
SPLIT_SEED = 2024
N_TRAIN = 1500
N_TEST = 297
N_LEVELS = 17  # grey levels 0..16


@lru_cache(maxsize=1)
def _shuffled_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images (n, 8, 8) int64 and labels (n,) int64, in the fixed shuffled order."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = bunch.images.astype(np.int64)  # stored as float64 with integer values
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    images, labels = images[order], labels[order]
    images.setflags(write=False)  # the cache is shared: nobody may edit it in place
    labels.setflags(write=False)
    return images, labels


def load_digits(
    split: str = "train",
    form: str = "levels",
    flatten: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)`` for one split of the digits.

    Args:
        split: ``"train"`` (1,500 images), ``"test"`` (297) or ``"all"`` (1,797, train first).
        form: ``"levels"`` (int64 0..16), ``"float"`` (float32 levels/16) or ``"binary"``
            (float32, 1 where levels >= 8).
        flatten: images of shape ``(n, 64)`` instead of ``(n, 8, 8)``.
        device: where to put both tensors (default: CPU).

    Returns:
        images ``(n, 8, 8)`` or ``(n, 64)`` and labels ``(n,)`` int64 in 0..9. Fresh tensors
        every call, so editing them never changes what the next call returns.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    images, labels = _shuffled_digits()
    rows = {"train": slice(0, N_TRAIN), "test": slice(N_TRAIN, N_TRAIN + N_TEST), "all": slice(None)}[split]
    levels = torch.tensor(images[rows])  # (n, 8, 8) int64, a copy
    labels = torch.tensor(labels[rows])  # (n,) int64
    if form == "float":
        images_out = levels.to(torch.float32) / (N_LEVELS - 1)
    elif form == "binary":
        images_out = (levels >= (N_LEVELS - 1) // 2).to(torch.float32)
    else:
        images_out = levels
    if flatten:
        images_out = images_out.reshape(len(images_out), -1)  # (n, 64)
    if device is not None:
        images_out, labels = images_out.to(device), labels.to(device)
    return images_out, labels
