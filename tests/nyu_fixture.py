"""Tiny NYU Depth V2 look-alikes on disk, in the official files' formats and orientation.

``write_nyu_labeled`` writes what h5py reads from ``nyu_depth_v2_labeled.mat``: HDF5 behind a 512-byte MATLAB v7.3
header, with ``images`` (N, 3, W, H), ``depths`` and ``labels`` (N, W, H): MATLAB's H x W x ... arrays transposed.
Its content is an asymmetric pattern (see ``labeled_truth``), so a loader that forgets the transpose fails.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch
from PIL import Image

# The 40 classes of Gupta et al. (2013), in mapClass order.
CLASS_NAMES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
               "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
               "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
               "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
               "otherfurniture", "otherprop")
FINE_CLASSES = 894
_MATLAB_CLASS = {"images": b"uint8", "depths": b"single", "labels": b"uint16"}


def labeled_truth(n: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The frames ``write_nyu_labeled`` stores, as MATLAB sees them (H x W): images [n,3,H,W] uint8,
    depths [n,H,W] float32 metres, labels [n,H,W] class ids 0..894 (0 at the top-left pixel of frame 0)."""
    h, w = size
    i, r, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    images = np.stack([(31 * i + 80 * k + 5 * r + 2 * c) % 256 for k in range(3)], axis=1).astype(np.uint8)
    depths = (1.0 + 0.5 * i + 0.04 * r + 0.01 * c).astype(np.float32)
    labels = ((97 * i + 13 * r + c) % (FINE_CLASSES + 1)).astype(np.uint16)
    return {"images": images, "depths": depths, "labels": labels}


def fine_to_40(class_id: int) -> int:
    """The deterministic mapping ``write_class_mapping`` writes: class id 1..894 -> 1..40."""
    return (class_id - 1) % 40 + 1


def write_nyu_labeled(path: Path, n: int = 6, size: tuple[int, int] = (48, 64),
                      omit: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A v7.3-style labeled file of ``n`` frames of ``size`` (H, W), leaving out the datasets in ``omit``;
    returns ``labeled_truth``."""
    truth = labeled_truth(n, size)
    stored = {"images": truth["images"].transpose(0, 1, 3, 2), "depths": truth["depths"].transpose(0, 2, 1),
              "labels": truth["labels"].transpose(0, 2, 1)}
    with h5py.File(path, "w", userblock_size=512) as file:
        for key, array in stored.items():
            if key not in omit:
                file.create_dataset(key, data=np.ascontiguousarray(array)).attrs["MATLAB_class"] = _MATLAB_CLASS[key]
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as file:  # what MATLAB writes into the userblock: text, subsystem offset, version, endian
        file.write(header.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM")
    return truth


def write_class_mapping(path: Path) -> None:
    """classMapping40.mat as MATLAB v5: mapClass 1 x 894 (``fine_to_40``), className 1 x 40, allClassName 1 x 894."""
    scipy.io.savemat(path, {
        "mapClass": np.array([[fine_to_40(k) for k in range(1, FINE_CLASSES + 1)]], dtype=np.float64),
        "className": np.array([CLASS_NAMES], dtype=object),
        "allClassName": np.array([[f"class{k:03d}" for k in range(1, FINE_CLASSES + 1)]], dtype=object),
    })


def write_splits(path: Path, train: list[int], test: list[int]) -> None:
    """splits.mat as MATLAB v5: trainNdxs and testNdxs, column vectors of the given 1-based frame numbers."""
    scipy.io.savemat(path, {"trainNdxs": np.array(train, dtype=np.float64).reshape(-1, 1),
                            "testNdxs": np.array(test, dtype=np.float64).reshape(-1, 1)})


PairTruth = tuple[tuple[int, int, int], torch.Tensor]  # a pair's RGB colour, and its depth [1,H,W] in metres


def pair_colour(index: int) -> tuple[int, int, int]:
    return (40 + 50 * index) % 256, (200 - 20 * index) % 256, 90


def write_pairs(root: Path, n: int, size: tuple[int, int],
                scenes: tuple[str, ...] = ("bedroom_0004", "kitchen_0011")) -> dict[str, PairTruth]:
    """``n`` pairs in the sync layout, ``root/<scene>/rgb_<id>.jpg`` and ``sync_depth_<id>.png``, of ``size`` (H, W).

    Pair ``i`` is a flat ``pair_colour(i)`` JPEG and a 16-bit depth PNG of ``1000 + 250 i + 10 row + col`` mm,
    with a 5 x 5 hole (0) in the top-left corner. Returns {name: (colour, depth [1,H,W] in metres)}.
    """
    h, w = size
    row, col = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    truth = {}
    for i in range(n):
        folder = root / scenes[i % len(scenes)]
        folder.mkdir(parents=True, exist_ok=True)
        image = np.empty((h, w, 3), np.uint8)
        image[:] = pair_colour(i)
        Image.fromarray(image).save(folder / f"rgb_{i:05d}.jpg", quality=95)
        depth_mm = (1000 + 250 * i + 10 * row + col).astype(np.uint16)
        depth_mm[:5, :5] = 0
        Image.fromarray(depth_mm).save(folder / f"sync_depth_{i:05d}.png")
        truth[f"{folder.name}/rgb_{i:05d}"] = (pair_colour(i), torch.from_numpy(depth_mm / 1000.0).float()[None])
    return truth
