"""Data sets for the validation runs; nothing is ever downloaded.

* :func:`synthetic_images` and :func:`synthetic_sequences` -- class-conditional
  Gaussians whose class means are fixed by ``seed``; ``split`` picks an
  independent sample of the same task.
* :func:`digits` -- scikit-learn's bundled 8x8 digits, optionally upsampled to
  3x32x32 so that the CIFAR ResNets accept them.
* :func:`load_cifar` -- CIFAR-10/100 read from the standard python-pickle files
  in a local directory; :func:`write_fake_cifar` writes a tiny file set in the
  same format for tests.
* :func:`~normdyn.validate.fashion_mnist.fashion_mnist` -- Fashion-MNIST from the local
  gzip'd IDX files (``$NORMDYN_DATA/fashion-mnist/``, then
  ``/usr/share/datasets/fashion-mnist/``; ``make data`` installs them), optionally
  area-downsampled to 14 or 16 or zero-padded to 32.
* :func:`make_batches` -- an infinite, deterministic stream of shuffled mini-batches.
* :func:`get_dataset` -- dispatch by name.

Every loader returns ``(X, y)``: float32 inputs and int64 labels.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from normdyn._checks import check_int, check_positive
from normdyn.validate.fashion_mnist import fashion_mnist

__all__ = [
    "CIFAR_LAYOUT",
    "CIFAR_STATS",
    "DATASETS",
    "synthetic_images",
    "synthetic_sequences",
    "digits",
    "fashion_mnist",
    "load_cifar",
    "cifar_files",
    "write_fake_cifar",
    "make_batches",
    "get_dataset",
]

_SPLITS = ("train", "test")
_SPLIT_STREAM = {"train": 1, "test": 2}

CIFAR_LAYOUT: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": b"labels",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": b"fine_labels",
        "num_classes": 100,
    },
}
"""File names of the python-pickle releases of CIFAR-10 and CIFAR-100."""

CIFAR_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
"""Per-channel training-set mean and std (of pixels scaled to [0, 1])."""


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent torch generator for stream ``stream`` of ``seed``."""
    state = np.random.SeedSequence(seed, spawn_key=(stream,)).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


# --------------------------------------------------------------------------- synthetic


def _gaussian_classes(
    n: int, shape: tuple[int, ...], num_classes: int, seed: int, separation: float, split: str
) -> tuple[Tensor, Tensor]:
    """Balanced labels; ``x = (mean[y] + noise) / sqrt(1 + separation**2)``."""
    n = check_int("n", n, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    seed = check_int("seed", seed)
    separation = float(check_positive("separation", separation))
    _check_choice("split", split, _SPLITS)
    means = separation * torch.randn((num_classes, *shape), generator=_generator(seed, 0))
    sampler = _generator(seed, _SPLIT_STREAM[split])
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=sampler)]
    noise = torch.randn((n, *shape), generator=sampler)
    x = (means[y] + noise) / (1.0 + separation**2) ** 0.5
    return x.to(torch.float32), y.to(torch.int64)


def synthetic_images(
    n: int,
    *,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
    separation: float = 1.0,
    split: str = "train",
) -> tuple[Tensor, Tensor]:
    """``n`` class-conditional Gaussian images, NCHW float32, and balanced int64 labels.

    The class means are drawn from ``seed`` with per-pixel std ``separation`` (in
    units of the noise std); ``split`` draws an independent sample of the same
    classes.  Each pixel has unit variance in expectation.
    """
    image_size = check_int("image_size", image_size, minimum=1)
    channels = check_int("channels", channels, minimum=1)
    shape = (channels, image_size, image_size)
    return _gaussian_classes(n, shape, num_classes, seed, separation, split)


def synthetic_sequences(
    n: int,
    *,
    seq_len: int = 8,
    input_dim: int = 4,
    num_classes: int = 3,
    seed: int = 0,
    separation: float = 1.0,
    split: str = "train",
) -> tuple[Tensor, Tensor]:
    """``n`` class-conditional Gaussian sequences ``(n, seq_len, input_dim)`` and labels.

    Same construction as :func:`synthetic_images`, for the Transformer.
    """
    seq_len = check_int("seq_len", seq_len, minimum=1)
    input_dim = check_int("input_dim", input_dim, minimum=1)
    return _gaussian_classes(n, (seq_len, input_dim), num_classes, seed, separation, split)


# --------------------------------------------------------------------------- digits


def _split_indices(y: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    return train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y
    )


def _digit_images(images: np.ndarray, upsample_to_32: bool) -> Tensor:
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    if not upsample_to_32:
        return x
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1)


def digits(
    *,
    upsample_to_32: bool = False,
    seed: int = 0,
    split: str = "train",
    test_fraction: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits: ``(N, 1, 8, 8)`` or, upsampled, ``(N, 3, 32, 32)``.

    The stratified train/test split is fixed by ``seed``.  Images are normalized
    by the scalar mean and std of the training split, so the training split has
    zero mean and unit std.  Upsampling is bilinear, then the channel is repeated.
    """
    from sklearn.datasets import load_digits

    seed = check_int("seed", seed)
    _check_choice("split", split, _SPLITS)
    test_fraction = float(check_positive("test_fraction", test_fraction))
    if test_fraction >= 1:
        raise ValueError(f"test_fraction must be < 1, got {test_fraction}")
    bunch = load_digits()
    train_idx, test_idx = _split_indices(bunch.target, seed, test_fraction)
    x = _digit_images(bunch.images, upsample_to_32)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    idx = torch.as_tensor(train_idx if split == "train" else test_idx)
    x = (x[idx] - mean) / std
    return x.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)[idx]


# --------------------------------------------------------------------------- CIFAR


def _cifar_layout(dataset: str) -> dict[str, Any]:
    _check_choice("dataset", dataset, tuple(CIFAR_LAYOUT))
    return CIFAR_LAYOUT[dataset]


def cifar_files(root: str | Path, *, dataset: str = "cifar10", split: str = "train") -> list[Path]:
    """The data files of ``split`` that :func:`load_cifar` reads below ``root``.

    ``root`` may be the directory that contains the dataset folder or the folder
    itself.  Raises :class:`FileNotFoundError`, naming every expected file, when
    neither location holds all of them.
    """
    layout = _cifar_layout(dataset)
    _check_choice("split", split, _SPLITS)
    root = Path(root)
    folder = root if root.name == layout["folder"] else root / layout["folder"]
    for candidate in (folder, root):
        files = [candidate / name for name in layout[split]]
        if all(path.is_file() for path in files):
            return files
    raise FileNotFoundError(_missing_message(dataset, split, folder, layout))


def _missing_message(dataset: str, split: str, folder: Path, layout: dict[str, Any]) -> str:
    expected = [folder / name for name in (*layout[split], layout["meta"])]
    missing = [path for path in expected if not path.is_file()]
    lines = "".join(f"\n  {path}" + (" (missing)" if path in missing else "") for path in expected)
    return (
        f"{dataset} {split} split not found; expected these files:{lines}\n"
        f"Datasets are never downloaded: extract the python-pickle release "
        f"({layout['folder']}) from https://www.cs.toronto.edu/~kriz/cifar.html "
        f"into {folder.parent} yourself."
    )


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    # The files are trusted local copies of the official release (pickle format).
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[label_key], dtype=np.int64)


def _normalize_cifar(data: np.ndarray, dataset: str) -> Tensor:
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in CIFAR_STATS[dataset])
    x = torch.from_numpy(data).to(torch.float32) / 255.0
    return ((x - mean) / std).contiguous()


def load_cifar(
    root: str | Path, *, dataset: str = "cifar10", split: str = "train"
) -> tuple[Tensor, Tensor]:
    """CIFAR-10/100 from the python-pickle files below ``root``; never downloads.

    Returns ``X`` of shape ``(N, 3, 32, 32)``, pixels scaled to ``[0, 1]`` and
    normalized per channel with :data:`CIFAR_STATS`, and int64 labels (the fine
    labels for CIFAR-100).
    """
    label_key = _cifar_layout(dataset)["label_key"]
    paths = cifar_files(root, dataset=dataset, split=split)
    batches = [_read_batch(path, label_key) for path in paths]
    data = np.concatenate([batch[0] for batch in batches])
    labels = np.concatenate([batch[1] for batch in batches])
    return _normalize_cifar(data, dataset), torch.from_numpy(labels)


def _write_pickle(path: Path, obj: dict[bytes, Any]) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _fake_batch(
    rng: np.random.Generator, n: int, layout: dict[str, Any], name: str
) -> dict[bytes, Any]:
    batch: dict[bytes, Any] = {
        b"batch_label": name.encode(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        layout["label_key"]: rng.integers(0, layout["num_classes"], size=n).tolist(),
        b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
    }
    if layout["num_classes"] == 100:
        batch[b"coarse_labels"] = rng.integers(0, 20, size=n).tolist()
    return batch


def _fake_meta(layout: dict[str, Any]) -> dict[bytes, Any]:
    names = [f"class{i}".encode() for i in range(layout["num_classes"])]
    if layout["num_classes"] == 100:
        coarse = [f"super{i}".encode() for i in range(20)]
        return {b"fine_label_names": names, b"coarse_label_names": coarse}
    return {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}


def write_fake_cifar(
    root: str | Path, *, dataset: str = "cifar10", n_per_batch: int = 4, seed: int = 0
) -> Path:
    """Write a tiny random CIFAR file set in the official pickle format; return its folder.

    Every data file (train batches and test batch) holds ``n_per_batch`` images:
    ``b"data"`` a uint8 ``(n, 3072)`` array (channel-first, row-major) and the labels
    as a list of ints under ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).
    """
    layout = _cifar_layout(dataset)
    n_per_batch = check_int("n_per_batch", n_per_batch, minimum=1)
    rng = np.random.default_rng(check_int("seed", seed))
    folder = Path(root) / layout["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*layout["train"], *layout["test"]):
        _write_pickle(folder / name, _fake_batch(rng, n_per_batch, layout, name))
    _write_pickle(folder / layout["meta"], _fake_meta(layout))
    return folder


# --------------------------------------------------------------------------- batching


def make_batches(
    X: Tensor, y: Tensor, batch_size: int, *, seed: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield shuffled ``(X, y)`` mini-batches forever, deterministically from ``seed``.

    Each epoch is a fresh permutation; the incomplete last batch of an epoch is
    dropped, so every batch has exactly ``batch_size`` rows.
    """
    n = len(X)
    if len(y) != n:
        raise ValueError(f"y must have as many rows as X ({n}), got {len(y)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of samples ({n}), got {batch_size}")
    return _batch_stream(X, y, batch_size, torch.Generator().manual_seed(check_int("seed", seed)))


def _batch_stream(
    X: Tensor, y: Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    n = len(X)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield X[idx], y[idx]


# --------------------------------------------------------------------------- dispatch


def _cifar10(**kw: Any) -> tuple[Tensor, Tensor]:
    return load_cifar(dataset="cifar10", **kw)


def _cifar100(**kw: Any) -> tuple[Tensor, Tensor]:
    return load_cifar(dataset="cifar100", **kw)


def _digits32(**kw: Any) -> tuple[Tensor, Tensor]:
    return digits(upsample_to_32=True, **kw)


DATASETS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "synthetic": synthetic_images,
    "sequences": synthetic_sequences,
    "digits": digits,
    "digits32": _digits32,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "fashion-mnist": fashion_mnist,
}


def get_dataset(name: str, **kw: Any) -> tuple[Tensor, Tensor]:
    """Load data set ``name`` (see :data:`DATASETS`), passing ``kw`` to its loader."""
    if name not in DATASETS:
        valid = ", ".join(repr(key) for key in sorted(DATASETS))
        raise ValueError(f"name must be one of {valid}, got {name!r}")
    return DATASETS[name](**kw)
