r"""Fashion-MNIST from local IDX files (parsed by hand; nothing is downloaded).

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence): 60 000 training and 10 000 test
grey-scale 28x28 images of 10 balanced classes of clothing.  The four files are the gzip'd
IDX files of the release, :data:`FILES`.  They are looked for, in this order, in

1. ``data_root`` when given (the folder itself or its ``fashion-mnist/`` sub-folder), else
2. ``$NORMDYN_DATA/fashion-mnist/`` (when ``NORMDYN_DATA`` is set), then
3. ``/usr/share/datasets/fashion-mnist/`` (the Debian package ``dataset-fashion-mnist``,
   installed by ``make data``).

**IDX format.**  A big-endian header: two zero bytes, a type byte (``0x08``: unsigned
byte), the number of dimensions :math:`k`, then :math:`k` big-endian ``uint32`` sizes,
then the data in C order.  The images have magic ``0x00000803`` (``N x 28 x 28``), the
labels ``0x00000801`` (``N``).

**Image sizes** (pixels are first scaled to :math:`[0, 1]`):

* 28: native.
* 14, 16: *area* downsampling, :func:`area_resize`.  Output pixel :math:`i` averages the
  input over the interval :math:`[i\,s, (i+1)\,s)`, :math:`s = 28/n`, each input pixel
  weighted by its overlap with that interval (a box filter of fractional width, as
  OpenCV's ``INTER_AREA``).  For 14 this is exactly the mean of each 2x2 block; for 16
  (:math:`s = 7/4`) every output pixel straddles input pixels.  The total intensity per
  unit area is kept: the image mean is unchanged.
* 32: zero-padding by 2 pixels on every side (the background of Fashion-MNIST is 0).

The images are then normalized by the scalar mean and std of the *training* split at that
size, as :func:`normdyn.validate.data.digits` is.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FILES",
    "FOLDER",
    "SYSTEM_DIR",
    "IDX_MAGIC",
    "NATIVE_SIZE",
    "fashion_mnist",
    "fashion_mnist_dir",
    "read_idx",
    "write_idx",
    "area_matrix",
    "area_resize",
    "resize_images",
]

FOLDER = "fashion-mnist"
SYSTEM_DIR = Path("/usr/share/datasets") / FOLDER
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""The image and label file of each split."""
IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}
"""Magic number of an unsigned-byte IDX file of 1 (labels) or 3 (images) dimensions."""
NATIVE_SIZE = 28
_SIZES = (14, 16, 28, 32)
_UBYTE = 0x08


def _all_files() -> tuple[str, ...]:
    return tuple(name for split in ("train", "test") for name in FILES[split])


def _candidates(data_root: str | Path | None) -> list[Path]:
    if data_root is not None:
        root = Path(data_root)
        return [root / FOLDER, root]
    out = []
    if os.environ.get("NORMDYN_DATA"):
        out.append(Path(os.environ["NORMDYN_DATA"]) / FOLDER)
    out.append(SYSTEM_DIR)
    return out


def fashion_mnist_dir(data_root: str | Path | None = None) -> Path:
    """The first folder (see the module docstring) that holds all four files.

    Raises :class:`FileNotFoundError` with one line naming the places searched and
    ``make data`` when none does.
    """
    places = _candidates(data_root)
    for folder in places:
        if all((folder / name).is_file() for name in _all_files()):
            return folder
    if data_root is None:
        env = (f"$NORMDYN_DATA/{FOLDER}/ ({places[0]})" if len(places) > 1
               else f"$NORMDYN_DATA/{FOLDER}/ (NORMDYN_DATA is not set)")
        where = f"{env} or {SYSTEM_DIR}/"
    else:
        where = " or ".join(f"{p}/" for p in places)
    raise FileNotFoundError(f"data 'fashion-mnist' not found: expected {', '.join(_all_files())} "
                            f"in {where}; run `make data` (installs the Debian package "
                            "dataset-fashion-mnist) or set NORMDYN_DATA")


def read_idx(path: str | Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzip'd when its name ends in ``.gz``) as a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != _UBYTE or raw[3] not in IDX_MAGIC:
        raise ValueError(f"{path} is not an unsigned-byte IDX file of 1 or 3 dimensions "
                         f"(magic {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes; its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array of 1 or 3 dimensions as a gzip'd IDX file (for test fixtures)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in IDX_MAGIC:
        raise ValueError(f"array must be uint8 with 1 or 3 dimensions, got {array.dtype} "
                         f"with {array.ndim}")
    head = struct.pack(">I", IDX_MAGIC[array.ndim]) + struct.pack(f">{array.ndim}I",
                                                                   *array.shape)
    path = Path(path)
    with gzip.open(path, "wb") as handle:
        handle.write(head + np.ascontiguousarray(array).tobytes())
    return path


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    r"""The ``(n_out, n_in)`` averaging matrix of area resampling along one axis.

    :math:`A_{ij} = |[i s, (i+1) s) \cap [j, j+1)| / s` with :math:`s = n_{in}/n_{out}`
    (computed in exact rationals); every row sums to 1.  Downsampling only.
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"n_out must be in [1, n_in={n_in}], got {n_out}")
    s = Fraction(n_in, n_out)
    out = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * s, (i + 1) * s
        for j in range(int(lo), min(n_in, -(-hi.numerator // hi.denominator))):
            overlap = min(hi, Fraction(j + 1)) - max(lo, Fraction(j))
            if overlap > 0:
                out[i, j] = float(overlap / s)
    return out


def area_resize(images: Tensor, size: int) -> Tensor:
    """Area-downsample ``(N, C, H, W)`` (square) images to ``size x size``."""
    a = torch.as_tensor(area_matrix(images.shape[-1], size), dtype=images.dtype)
    return torch.einsum("ih,nchw,jw->ncij", a, images, a)


def resize_images(images: Tensor, size: int) -> Tensor:
    """28x28 images to ``size`` (14, 16: area downsampling; 28: as is; 32: zero-padded)."""
    if size not in _SIZES:
        raise ValueError(f"image_size must be one of {', '.join(map(str, _SIZES))}, got {size!r}")
    n = images.shape[-1]
    if size == n:
        return images
    if size > n:
        pad = size - n
        return torch.nn.functional.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    return area_resize(images, size)


@functools.lru_cache(maxsize=4)
def _split(folder: str, split: str, size: int) -> tuple[Tensor, Tensor]:
    """Pixels in [0, 1] at ``size`` and labels (cached: a run reads the train split twice)."""
    image_file, label_file = FILES[split]
    images = read_idx(Path(folder) / image_file)
    labels = read_idx(Path(folder) / label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: {image_file} {images.shape} and {label_file} "
                         f"{labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return resize_images(x, size).contiguous(), torch.from_numpy(labels.astype(np.int64))


def fashion_mnist(
    *, data_root: str | Path | None = None, split: str = "train", image_size: int = NATIVE_SIZE
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST ``split`` as ``(N, 1, image_size, image_size)`` float32 and int64 labels.

    Normalized by the scalar mean and std of the training split at ``image_size``, so the
    training split has zero mean and unit std.  See the module docstring for the search
    path and the resizing.
    """
    if split not in FILES:
        raise ValueError(f"split must be one of 'train', 'test', got {split!r}")
    if isinstance(image_size, bool) or image_size not in _SIZES:
        raise ValueError(f"image_size must be one of {', '.join(map(str, _SIZES))}, "
                         f"got {image_size!r}")
    folder = str(fashion_mnist_dir(data_root))
    mean, std = _train_stats(folder, image_size)
    x, y = _split(folder, split, image_size)
    return ((x - mean) / std).contiguous(), y.clone()


@functools.lru_cache(maxsize=8)
def _train_stats(folder: str, size: int) -> tuple[float, float]:
    """Scalar mean and (Bessel-corrected) std of the training pixels, summed in float64."""
    x, _ = _split(folder, "train", size)
    total, squares, n = 0.0, 0.0, x.numel()
    for chunk in x.split(4096):
        c = chunk.double()
        total += float(c.sum())
        squares += float((c * c).sum())
    mean = total / n
    return mean, ((squares - n * mean * mean) / (n - 1)) ** 0.5
