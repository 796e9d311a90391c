"""Tests for gmcourse.digits: the fixed split of scikit-learn's 8x8 digits and its three forms."""

import numpy as np
import pytest
import sklearn.datasets
import torch

from gmcourse.digits import FORMS, SPLITS, load_digits


@pytest.mark.parametrize(("split", "n"), [("train", 1500), ("test", 297), ("all", 1797)])
def test_split_sizes_shapes_and_dtypes(split, n):
    images, labels = load_digits(split)
    assert images.shape == (n, 8, 8) and images.dtype == torch.int64
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() <= 9
    assert images.device.type == "cpu"
    assert load_digits(split, flatten=True)[0].shape == (n, 64)


def test_levels_span_all_17_grey_levels():
    images, _ = load_digits("train")
    assert torch.equal(torch.unique(images), torch.arange(17))


def test_float_form_is_exactly_levels_over_16():
    levels, _ = load_digits("all")
    floats, _ = load_digits("all", form="float")
    assert floats.dtype == torch.float32
    assert torch.equal(floats * 16, levels.to(torch.float32))
    assert floats.min() == 0 and floats.max() == 1


def test_binary_form_thresholds_at_level_8():
    levels, _ = load_digits("test")
    binary, _ = load_digits("test", form="binary")
    assert binary.dtype == torch.float32
    assert set(torch.unique(binary).tolist()) == {0.0, 1.0}
    assert torch.equal(binary.bool(), levels >= 8)


def test_split_is_disjoint_and_covers_every_image_once():
    # As multisets of (pixels, label) rows, train + test equals scikit-learn's own copy; with
    # 1,500 + 297 = 1,797 rows that makes the split a partition: disjoint and complete.
    reference = sklearn.datasets.load_digits()
    ref_rows = np.concatenate([reference.data.astype(np.int64), reference.target[:, None]], axis=1)
    train, train_labels = load_digits("train", flatten=True)
    test, test_labels = load_digits("test", flatten=True)
    ours = np.concatenate(
        [torch.cat([train, test]).numpy(), torch.cat([train_labels, test_labels]).numpy()[:, None]], axis=1
    )
    sort_rows = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    assert np.array_equal(sort_rows(ours), sort_rows(ref_rows))
    assert len(train) + len(test) == len(reference.target)
    all_images, all_labels = load_digits("all", flatten=True)
    assert torch.equal(all_images, torch.cat([train, test]))
    assert torch.equal(all_labels, torch.cat([train_labels, test_labels]))


def test_split_is_a_shuffle_not_scikit_learns_order():
    _, labels = load_digits("all")
    assert not torch.equal(labels, torch.as_tensor(sklearn.datasets.load_digits().target))
    # Every digit class appears in the test split.
    assert set(load_digits("test")[1].tolist()) == set(range(10))


def test_loading_is_deterministic_and_returns_fresh_tensors():
    images, labels = load_digits("train")
    images[0] = -1  # editing the result must not corrupt the cache
    again_images, again_labels = load_digits("train")
    assert again_images.min() >= 0
    assert torch.equal(again_labels, labels)
    assert torch.equal(again_images[1:], images[1:])


DEVICES = [
    "cpu",
    # The meta device keeps shapes and dtypes but no values: a result there proves that the
    # device argument was used, which the CPU case alone (the default) could not show.
    "meta",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
def test_device_argument_puts_both_tensors_there_and_keeps_dtype_and_values(device, form):
    reference_images, reference_labels = load_digits("test", form=form)  # default: CPU
    images, labels = load_digits("test", form=form, device=device)
    assert images.device.type == device and labels.device.type == device
    assert images.dtype == reference_images.dtype and labels.dtype == reference_labels.dtype
    assert images.shape == reference_images.shape and labels.shape == reference_labels.shape
    if device != "meta":  # meta tensors have no values to compare
        assert torch.equal(images.cpu(), reference_images)
        assert torch.equal(labels.cpu(), reference_labels)


def test_bad_split_or_form_raises_and_lists_the_options():
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\), got 'valid'"):
        load_digits("valid")
    with pytest.raises(ValueError, match=r"form must be one of \('levels', 'float', 'binary'\), got 'bits'"):
        load_digits("train", form="bits")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("form", FORMS)
def test_every_advertised_split_and_form_loads(split, form):
    images, labels = load_digits(split, form=form, flatten=True)
    assert images.shape == (len(labels), 64)
    assert images.dtype == (torch.int64 if form == "levels" else torch.float32)
