"""Fashion-MNIST: IDX files written by hand in the test, and the real files where they exist."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from normdyn.validate.fashion_mnist import SYSTEM_DIR, fashion_mnist  # noqa: E402


def _write(path: Path, magic: int, dims: tuple[int, ...], data: bytes) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + data)


def _fixture(root: Path) -> np.ndarray:
    folder = root / "fashion-mnist"
    folder.mkdir()
    images = (np.arange(2 * 28 * 28) % 251).astype(np.uint8).reshape(2, 28, 28)
    for split, n in (("train", 2), ("t10k", 1)):
        _write(folder / f"{split}-images-idx3-ubyte.gz", 0x00000803, (n, 28, 28),
               images[:n].tobytes())
        _write(folder / f"{split}-labels-idx1-ubyte.gz", 0x00000801, (n,),
               bytes([7, 3][:n]))
    return images


def test_idx_fixture_downsampled_by_2x2_means_and_normalized(tmp_path, monkeypatch):
    images = _fixture(tmp_path)
    monkeypatch.setenv("NORMDYN_DATA", str(tmp_path))
    x, y = fashion_mnist(split="train", image_size=14)
    assert x.shape == (2, 1, 14, 14) and y.tolist() == [7, 3]
    # 2x2 means of the pixels in [0, 1], then the training split's scalar mean/std
    small = images.astype(np.float64).reshape(2, 14, 2, 14, 2).mean(axis=(2, 4)) / 255.0
    want = (small - small.mean()) / small.std(ddof=1)
    assert np.allclose(x[:, 0].double().numpy(), want, rtol=0, atol=1e-5)
    x28, _ = fashion_mnist(split="test", image_size=28)
    raw = images[:1].astype(np.float64) / 255.0
    assert np.allclose(x28[:, 0].double().numpy(), (raw - (images / 255.0).mean())
                       / (images / 255.0).std(ddof=1), atol=1e-5)
    x32, _ = fashion_mnist(split="test", image_size=32)
    assert x32.shape == (1, 1, 32, 32)
    assert torch.all(x32[0, 0, :2] == x32[0, 0, 0, 0])  # zero padding, normalized


def test_missing_files_name_both_places_and_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMDYN_DATA", str(tmp_path))
    if SYSTEM_DIR.is_dir():
        pytest.skip("the Debian package is installed here: the fallback would be found")
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist()
    msg = str(info.value)
    assert "\n" not in msg and "make data" in msg
    assert str(tmp_path / "fashion-mnist") in msg and str(SYSTEM_DIR) in msg


def test_bad_image_size_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^image_size must be one of 14, 16, 28, 32, got 20$"):
        fashion_mnist(image_size=20)


@pytest.mark.skipif(not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="the real Fashion-MNIST files are not installed (make data)")
def test_real_files(monkeypatch):
    monkeypatch.delenv("NORMDYN_DATA", raising=False)
    x, y = fashion_mnist(split="train", image_size=16)
    assert x.shape == (60000, 1, 16, 16)
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert torch.bincount(y).tolist() == [6000] * 10
    assert abs(float(x.double().mean())) < 1e-5 and abs(float(x.double().std()) - 1) < 1e-5
    xt, yt = fashion_mnist(split="test", image_size=28)
    assert xt.shape == (10000, 1, 28, 28) and torch.bincount(yt).tolist() == [1000] * 10
