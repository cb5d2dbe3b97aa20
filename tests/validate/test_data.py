"""Tests of normdyn.validate.data: shapes, determinism and the CIFAR file format."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402

from normdyn.validate.data import (  # noqa: E402
    digits,
    get_dataset,
    load_cifar,
    make_batches,
    synthetic_images,
    synthetic_sequences,
    write_fake_cifar,
)

# Published per-channel statistics of the CIFAR training sets (pixels in [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_images_shapes_dtypes_and_balance():
    X, y = synthetic_images(50, image_size=8, channels=2, num_classes=5, seed=3)
    assert X.shape == (50, 2, 8, 8) and X.dtype == torch.float32
    assert y.shape == (50,) and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.full((5,), 10))


def test_synthetic_images_are_deterministic_by_seed():
    a = synthetic_images(20, image_size=4, seed=7)
    b = synthetic_images(20, image_size=4, seed=7)
    c = synthetic_images(20, image_size=4, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_synthetic_splits_share_class_means_but_not_samples():
    kw = {"image_size": 4, "channels": 1, "num_classes": 4, "seed": 1, "separation": 2.0}
    X_train, y_train = synthetic_images(400, **kw)
    X_test, y_test = synthetic_images(200, split="test", **kw)
    assert not torch.equal(X_train[:200], X_test)
    centroids = torch.stack([X_train[y_train == k].mean(0) for k in range(4)]).flatten(1)
    nearest = torch.cdist(X_test.flatten(1), centroids).argmin(1)
    assert (nearest == y_test).float().mean() > 0.95


def test_synthetic_images_have_unit_variance():
    X, _ = synthetic_images(2000, image_size=4, seed=0, separation=3.0)
    assert X.var().item() == pytest.approx(1.0, abs=0.1)


def test_synthetic_sequences():
    X, y = synthetic_sequences(12, seq_len=8, input_dim=4, num_classes=3, seed=0)
    assert X.shape == (12, 8, 4) and X.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1, 2}
    assert torch.equal(X, synthetic_sequences(12, seq_len=8, input_dim=4, num_classes=3)[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be >= 1, got 0"),
        ({"n": 4, "separation": 0.0}, "separation must be positive"),
        ({"n": 4, "split": "val"}, "split must be one of"),
        ({"n": 4, "seed": -1}, "seed must be >= 0, got -1"),
    ],
)
def test_synthetic_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_images(**kwargs)


# --------------------------------------------------------------------------- digits


def _undo_normalization(X: torch.Tensor) -> np.ndarray:
    """Recover the integer 0..16 pixels from an affinely normalized digits array."""
    values = np.unique(X.numpy().astype(np.float64))
    step = np.diff(values).min()
    raw = (X.numpy() - values[0]) / step
    assert np.allclose(raw, np.round(raw), atol=1e-3)
    return np.round(raw).astype(np.int64)


def test_digits_recovers_sklearn_images_and_labels():
    bunch = load_digits()
    X_train, y_train = digits(split="train")
    X_test, y_test = digits(split="test")
    assert X_train.shape[1:] == (1, 8, 8) and X_train.dtype == torch.float32
    assert y_train.dtype == torch.int64
    assert len(X_train) + len(X_test) == len(bunch.target)
    assert len(X_test) == pytest.approx(0.2 * len(bunch.target), abs=1)
    raw = _undo_normalization(torch.cat([X_train, X_test]))
    labels = torch.cat([y_train, y_test]).numpy()
    got = sorted((img.tobytes(), int(k)) for img, k in zip(raw[:, 0], labels, strict=True))
    want = sorted(
        (img.astype(np.int64).tobytes(), int(k))
        for img, k in zip(bunch.images, bunch.target, strict=True)
    )
    assert got == want


def test_digits_training_split_is_standardized():
    X, _ = digits()
    assert X.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert X.std().item() == pytest.approx(1.0, abs=1e-5)


def test_digits_upsampled_to_three_channel_32x32():
    X, y = digits(upsample_to_32=True, split="test")
    assert X.shape == (len(y), 3, 32, 32) and X.dtype == torch.float32
    assert torch.equal(X[:, 0], X[:, 1]) and torch.equal(X[:, 0], X[:, 2])
    X8, y8 = digits(split="test")
    assert torch.equal(y, y8)
    pooled = torch.nn.functional.avg_pool2d(X[:, :1], 4)
    correlation = np.corrcoef(pooled.flatten().numpy(), X8.flatten().numpy())[0, 1]
    assert correlation > 0.95


def test_digits_split_is_deterministic_by_seed():
    _, a = digits(split="test", seed=0)
    _, b = digits(split="test", seed=0)
    _, c = digits(split="test", seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="test_fraction must be < 1, got 1.5"):
        digits(test_fraction=1.5)


# --------------------------------------------------------------------------- CIFAR


def _decode_by_hand(folder, names, label_key, mean, std):
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images.append(np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    pixels = np.concatenate(images).astype(np.float64) / 255.0
    normalized = (pixels - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    return normalized, np.asarray(labels)


@pytest.mark.parametrize("use_folder", [False, True])
def test_fake_cifar10_round_trip(tmp_path, use_folder):
    folder = write_fake_cifar(tmp_path, dataset="cifar10", n_per_batch=3, seed=5)
    assert folder == tmp_path / "cifar-10-batches-py"
    assert (folder / "batches.meta").is_file()
    root = folder if use_folder else tmp_path
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    for split, names in [("train", train_names), ("test", ["test_batch"])]:
        X, y = load_cifar(root, dataset="cifar10", split=split)
        want_x, want_y = _decode_by_hand(folder, names, b"labels", CIFAR10_MEAN, CIFAR10_STD)
        assert X.shape == (3 * len(names), 3, 32, 32) and X.dtype == torch.float32
        assert y.dtype == torch.int64
        np.testing.assert_allclose(X.numpy(), want_x, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), want_y)


def test_fake_cifar100_round_trip_uses_fine_labels(tmp_path):
    folder = write_fake_cifar(tmp_path, dataset="cifar100", n_per_batch=6, seed=2)
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    X, y = load_cifar(tmp_path, dataset="cifar100", split="train")
    want_x, want_y = _decode_by_hand(folder, ["train"], b"fine_labels", CIFAR100_MEAN, CIFAR100_STD)
    np.testing.assert_allclose(X.numpy(), want_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), want_y)
    assert y.max() < 100


def test_cifar_rows_are_channel_first_row_major(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((1, 3072), dtype=np.uint8)
    channel, row, col = 2, 5, 17
    data[0, channel * 1024 + row * 32 + col] = 255
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": data, b"labels": [7]}, handle)
    X, y = load_cifar(tmp_path, split="test")
    assert y.tolist() == [7]
    pixels = X[0] * torch.tensor(CIFAR10_STD).view(3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(
        3, 1, 1
    )
    hot = (pixels > 0.5).nonzero().tolist()
    assert hot == [[channel, row, col]]


def test_missing_cifar_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(tmp_path, dataset="cifar10", split="train")
    message = str(info.value)
    for i in range(1, 6):
        assert str(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}") in message
    assert str(tmp_path / "cifar-10-batches-py" / "batches.meta") in message
    assert "never downloaded" in message


def test_missing_cifar_file_is_marked(tmp_path):
    folder = write_fake_cifar(tmp_path, dataset="cifar10", n_per_batch=1, seed=0)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(folder, split="train")
    assert f"{folder / 'data_batch_3'} (missing)" in str(info.value)
    assert f"{folder / 'data_batch_2'} (missing)" not in str(info.value)
    load_cifar(folder, split="test")


def test_missing_cifar100_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(tmp_path, dataset="cifar100", split="test")
    for name in ["test", "meta"]:
        assert str(tmp_path / "cifar-100-python" / name) in str(info.value)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_cifar(tmp_path, dataset="cifar1000")


# --------------------------------------------------------------------------- batching


def test_make_batches_is_deterministic_infinite_and_aligned():
    X = torch.arange(10, dtype=torch.float32).view(10, 1) * 2
    y = torch.arange(10)
    first = list(itertools.islice(make_batches(X, y, 3, seed=4), 7))
    again = list(itertools.islice(make_batches(X, y, 3, seed=4), 7))
    other = list(itertools.islice(make_batches(X, y, 3, seed=5), 7))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    for xb, yb in first:
        assert xb.shape == (3, 1) and torch.equal(xb[:, 0], 2 * yb.float())
    for epoch in range(2):
        seen = torch.cat([yb for _, yb in first[3 * epoch : 3 * epoch + 3]])
        assert len(set(seen.tolist())) == 9


def test_make_batches_validation():
    X, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="batch_size must be <= the number of samples"):
        make_batches(X, y, 5)
    with pytest.raises(ValueError, match="y must have as many rows as X"):
        make_batches(X, y[:3], 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        make_batches(X, y, 0)


# --------------------------------------------------------------------------- dispatch


def test_get_dataset_dispatch(tmp_path):
    X, y = get_dataset("synthetic", n=6, image_size=4, seed=2)
    assert torch.equal(X, synthetic_images(6, image_size=4, seed=2)[0])
    assert get_dataset("sequences", n=5, seq_len=3, input_dim=2)[0].shape == (5, 3, 2)
    assert get_dataset("digits", split="test")[0].shape[1:] == (1, 8, 8)
    assert get_dataset("digits32", split="test")[0].shape[1:] == (3, 32, 32)
    write_fake_cifar(tmp_path, dataset="cifar10", n_per_batch=2, seed=0)
    write_fake_cifar(tmp_path, dataset="cifar100", n_per_batch=2, seed=0)
    assert get_dataset("cifar10", root=tmp_path)[0].shape == (10, 3, 32, 32)
    assert get_dataset("cifar100", root=tmp_path, split="test")[0].shape == (2, 3, 32, 32)


def test_get_dataset_unknown_name():
    with pytest.raises(ValueError) as info:
        get_dataset("imagenet")
    assert str(info.value) == (
        "name must be one of 'cifar10', 'cifar100', 'digits', 'digits32', 'fashion-mnist', "
        "'sequences', 'synthetic', got 'imagenet'"
    )
