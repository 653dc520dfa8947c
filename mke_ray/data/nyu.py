"""NYU Depth V2 for MKE: the official labeled frames (RGB, depth, 40-class labels) and unlabeled raw RGB-D pairs.

Files, as their publishers ship them:

* ``nyu_depth_v2_labeled.mat`` (``LABELED_URL``) is MATLAB v7.3, i.e. HDF5 behind a 512-byte MATLAB header. h5py reads
  MATLAB's column-major arrays transposed: ``images`` (1449, 3, 640, 480) uint8, ``depths`` (1449, 640, 480) float32
  in metres (holes filled), ``labels`` (1449, 640, 480) uint16 with 0 = unlabeled and 1..894 class ids. Swapping the
  last two axes gives the 480 x 640 (H x W) frames.
* ``classMapping40.mat`` (``MAPPING_URL``, MATLAB v5): ``mapClass`` 1 x 894 maps each class id to 1..40, ``className``
  1 x 40 names them (``allClassName`` 1 x 894 names the fine classes; not needed here).
* ``splits.mat`` (``SPLITS_URL``, MATLAB v5): ``trainNdxs`` 795 x 1 and ``testNdxs`` 654 x 1, 1-based frame numbers.

Unlabeled pairs use the layout of the widely used "sync" extraction of the raw sequences (BTS, AdaBins, NeWCRFs...):
``ROOT/<scene>/rgb_<id>.jpg`` and, beside it, ``ROOT/<scene>/sync_depth_<id>.png``, a 16-bit grey PNG of depth in
millimetres (0 = no reading). ``.jpeg``/``.png`` RGB files are accepted too, at any depth below ROOT.

Depth enters a student either as ``hha`` (Gupta et al., ECCV 2014) or as ``normalized_depth``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mke_ray.errors import TaskDataError

if TYPE_CHECKING:
    import h5py

NUM_CLASSES = 40
IGNORE = 255  # label of unlabeled pixels (class id 0 in the official file)
MAX_DEPTH = 10.0  # metres: the Kinect's useful range, and the scale of ``normalized_depth``

LABELED_URL = "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat"
SPLITS_URL = "http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat"
MAPPING_URL = "https://github.com/ankurhanda/nyuv2-meta-data/raw/master/classMapping40.mat"
PAIRS_LAYOUT = "ROOT/<scene>/rgb_<id>.jpg with ROOT/<scene>/sync_depth_<id>.png (16-bit PNG, depth in mm)"

_LABELED_KEYS = ("images", "depths", "labels")
_RGB_SUFFIXES = (".jpg", ".jpeg", ".png")
_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I")  # how PIL opens 16-bit grey PNGs
_CHUNK = 32  # frames decoded and resized at a time, to bound the memory beside the result
_HHA_CHUNK = 8


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera for ``width`` x ``height`` images; pixel centres at 1..width as in the NYU MATLAB toolbox."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, height: int, width: int) -> Intrinsics:
        """The same camera for images resized to ``height`` x ``width`` (pixel-centre aligned, as F.interpolate)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx - 0.5) * sx + 0.5,
                       cy=(self.cy - 0.5) * sy + 0.5, width=width, height=height)


# The RGB camera of the NYU Depth V2 toolbox (camera_params.m); labeled depths are registered to it.
KINECT = Intrinsics(fx=5.1885790117450188e+02, fy=5.1946961112127485e+02,
                    cx=3.2558244941119034e+02, cy=2.5373616633400465e+02, width=640, height=480)


@dataclass(frozen=True)
class NyuLabeled:
    """The labeled frames: ``train``/``test`` are 0-based rows of the official split."""

    images: torch.Tensor   # uint8 [N,3,H,W], RGB
    depths: torch.Tensor   # float32 [N,1,H,W], metres
    labels: torch.Tensor   # int64 [N,H,W], 0..39 or IGNORE
    train: torch.Tensor    # int64 [795]
    test: torch.Tensor     # int64 [654]
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class NyuPairs:
    """Unlabeled RGB-D pairs; ``names`` are the RGB files' paths below the root, without suffix."""

    images: torch.Tensor   # uint8 [N,3,H,W], RGB
    depths: torch.Tensor   # float32 [N,1,H,W], metres, 0 where the sensor had no reading
    names: tuple[str, ...]


def load_labeled(mat_path: str | os.PathLike[str], mapping_path: str | os.PathLike[str],
                 splits_path: str | os.PathLike[str], *, size: tuple[int, int] | None = None) -> NyuLabeled:
    """Read the official labeled frames with 40-class labels and the standard split, resized to ``size`` (H, W).

    Frames are read and resized a chunk at a time, so a small ``size`` keeps memory near the result's.
    """
    mat_path = Path(mat_path)
    with _open_labeled(mat_path) as file:
        images, depths, labels = (file[key] for key in _LABELED_KEYS)
        n, width, height = labels.shape
        lut, class_names = _read_mapping(Path(mapping_path))
        train, test = _read_splits(Path(splits_path), n)
        out_h, out_w = _check_size(size) if size else (height, width)
        result = NyuLabeled(images=torch.empty((n, 3, out_h, out_w), dtype=torch.uint8),
                            depths=torch.empty((n, 1, out_h, out_w)),
                            labels=torch.empty((n, out_h, out_w), dtype=torch.long),
                            train=train, test=test, class_names=class_names)
        try:
            for start in range(0, n, _CHUNK):
                rows = slice(start, min(start + _CHUNK, n))
                ids = torch.from_numpy(labels[rows].astype(np.int64)).transpose(1, 2)
                if ids.numel() and int(ids.max()) >= len(lut):
                    raise TaskDataError(f"{mat_path} has class id {int(ids.max())} but {mapping_path} maps ids 1.."
                                        f"{len(lut) - 1} only; use classMapping40.mat from {MAPPING_URL}")
                result.images[rows] = _resize_images(torch.from_numpy(images[rows]).transpose(2, 3), (out_h, out_w))
                depth = torch.from_numpy(depths[rows].astype(np.float32)).transpose(1, 2).unsqueeze(1)
                result.depths[rows] = _resize_depths(depth, (out_h, out_w))
                result.labels[rows] = _resize_labels(lut[ids], (out_h, out_w))
        except OSError as error:
            raise TaskDataError(f"cannot read {mat_path} ({_first_line(error)}); the download may be truncated: "
                                f"fetch it again from {LABELED_URL}") from None
    return result


def load_pairs(root: str | os.PathLike[str], *, size: tuple[int, int] | None = None) -> NyuPairs:
    """Read every RGB-D pair below ``root`` (layout: ``PAIRS_LAYOUT``), resized to ``size`` (H, W) if given."""
    root = Path(root)
    pairs = _scan_pairs(root)
    target = _check_size(size) if size else None
    images = depths = None
    for i, (rgb_path, depth_path) in enumerate(pairs):
        image, depth = _read_image(rgb_path, depth=False), _read_image(depth_path, depth=True)
        if image.shape[1:] != depth.shape[1:]:
            raise TaskDataError(f"{rgb_path} is {tuple(image.shape[1:])} but its depth {depth_path.name} is "
                                f"{tuple(depth.shape[1:])} (H, W); a pair must share one size")
        if images is None:
            target = target or tuple(image.shape[1:])
            images = torch.empty((len(pairs), 3, *target), dtype=torch.uint8)
            depths = torch.empty((len(pairs), 1, *target))
        elif size is None and tuple(image.shape[1:]) != target:
            raise TaskDataError(f"{rgb_path} is {tuple(image.shape[1:])} but {pairs[0][0]} is {target} (H, W); "
                                f"pass size to resize every pair to one size")
        images[i] = _resize_images(image[None], target)[0]
        depths[i] = _resize_depths(depth[None], target)[0]
    names = tuple(rgb.relative_to(root).with_suffix("").as_posix() for rgb, _ in pairs)
    return NyuPairs(images=images, depths=depths, names=names)


def hha(depth: torch.Tensor, intrinsics: Intrinsics = KINECT) -> torch.Tensor:
    """HHA encoding of depth in metres: uint8 [3,H,W] for [H,W] or [1,H,W], [N,3,H,W] for [N,1,H,W].

    Channels follow Gupta et al.'s ``saveHHA.m``: horizontal disparity 31000 / max(depth in cm, 100), height above
    the frame's lowest point in cm, and the angle in degrees between the surface normal and "up", plus 38 (floors 38,
    walls 128, ceilings 218); each rounded and clipped to 0..255. Simplification: "up" is taken to be the camera's -y
    axis (image rows grow downward) instead of the original's iterative gravity estimate from the normals, which
    assumes a level camera, as NYU's roughly is. Normals are the cross product of the back-projected point cloud's
    horizontal and vertical central differences, each summed over a 5 x 5 window, and face the camera.
    ``intrinsics`` are rescaled to the depth's size. Missing depth (0 or not finite) gives 0 in all channels, and
    pixels without a normal (no valid neighbours) 0 in the angle channel.
    """
    if depth.dim() == 4 and depth.shape[1] == 1:
        batch = depth
    elif depth.dim() == 2 or (depth.dim() == 3 and depth.shape[0] == 1):
        batch = depth.reshape(1, 1, *depth.shape[-2:])
    else:
        raise ValueError(f"hha expects depth of shape [H,W], [1,H,W] or [N,1,H,W], not {list(depth.shape)}")
    camera = intrinsics.scaled(*batch.shape[-2:])
    out = torch.empty((len(batch), 3, *batch.shape[-2:]), dtype=torch.uint8)
    for start in range(0, len(batch), _HHA_CHUNK):
        out[start:start + _HHA_CHUNK] = _hha(batch[start:start + _HHA_CHUNK].to(torch.float32), camera)
    return out if depth.dim() == 4 else out[0]


def normalized_depth(depth: torch.Tensor) -> torch.Tensor:
    """Depth / ``MAX_DEPTH`` clipped to [0, 1], float32 of the input's shape; missing (not finite) depth gives 0."""
    depth = depth.to(torch.float32)
    return torch.where(torch.isfinite(depth), depth / MAX_DEPTH, 0.0).clamp(0.0, 1.0)


def _resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [N,C,H,W] resized bilinearly (antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    resized = F.interpolate(images.to(torch.float32), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def _resize_depths(depths: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float [N,1,H,W] resized bilinearly over valid (> 0) depth only, so that holes do not pull edges towards 0.

    A pixel stays 0 unless at least half of its interpolation weight falls on valid depth.
    """
    if tuple(depths.shape[-2:]) == tuple(size):
        return depths
    valid = (depths > 0).to(torch.float32)
    total = F.interpolate(depths * valid, size=size, mode="bilinear", align_corners=False, antialias=True)
    weight = F.interpolate(valid, size=size, mode="bilinear", align_corners=False, antialias=True)
    return torch.where(weight >= 0.5, total / weight.clamp_min(1e-6), 0.0)


def _resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int64 [N,H,W] resized by nearest neighbour (pixel-centre aligned), so classes are never blended."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].to(torch.float32), size=size, mode="nearest-exact")[:, 0].to(torch.long)


def _hha(depth: torch.Tensor, camera: Intrinsics) -> torch.Tensor:
    """``hha`` of float32 [n,1,H,W] depth in metres, for a camera matching its size."""
    valid = torch.isfinite(depth) & (depth > 0)
    z = torch.where(valid, depth, 0.0)
    h, w = z.shape[-2:]
    u = torch.arange(1, w + 1, dtype=torch.float32)
    v = torch.arange(1, h + 1, dtype=torch.float32).view(h, 1)
    y = (v - camera.cy) / camera.fy * z
    points = torch.cat([(u - camera.cx) / camera.fx * z, y, z], dim=1)
    normals, has_normal = _normals(points, valid)
    angle = torch.rad2deg(torch.acos((-normals[:, 1:2]).clamp(-1.0, 1.0)))  # up = -y
    height = -100.0 * y  # cm, upward
    lowest = torch.where(valid, height, torch.inf).amin(dim=(2, 3), keepdim=True)
    height = height - torch.where(torch.isfinite(lowest), lowest, 0.0)
    disparity = 310.0 / z.clamp_min(1.0)  # 31000 / max(z in cm, 100)
    channels = torch.cat([disparity, height, angle + 38.0], dim=1)
    keep = torch.cat([valid, valid, valid & has_normal], dim=1)
    return torch.where(keep, channels, 0.0).round().clamp(0, 255).to(torch.uint8)


def _normals(points: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals [n,3,H,W] facing the camera, and where one exists [n,1,H,W]."""
    padded = F.pad(points, (1, 1, 1, 1), mode="replicate")
    ok = F.pad(valid.to(torch.float32), (1, 1, 1, 1), mode="replicate")
    along_u = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) * (ok[..., 1:-1, 2:] * ok[..., 1:-1, :-2])
    along_v = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) * (ok[..., 2:, 1:-1] * ok[..., :-2, 1:-1])
    along_u, along_v = (F.avg_pool2d(t, 5, stride=1, padding=2) for t in (along_u, along_v))
    normals = torch.linalg.cross(along_u, along_v, dim=1)
    normals = torch.where((normals * points).sum(1, keepdim=True) > 0, -normals, normals)
    length = normals.norm(dim=1, keepdim=True)
    has_normal = valid & (length > 1e-12)
    return torch.where(has_normal, normals / length.clamp_min(1e-12), 0.0), has_normal


@contextmanager
def _open_labeled(path: Path) -> Iterator[h5py.File]:
    """The labeled file, open, after checking that it is HDF5 with the three datasets in h5py's orientation."""
    import h5py  # h5py, SciPy and PIL load where the raw files are read, not for hha or the synthetic stand-in

    if not path.is_file():
        raise TaskDataError(f"labeled file not found: {path}; download nyu_depth_v2_labeled.mat (2.8 GB) from "
                            f"{LABELED_URL}")
    if not h5py.is_hdf5(path):
        raise TaskDataError(f"{path} is not an HDF5 (MATLAB v7.3) file; use the official nyu_depth_v2_labeled.mat "
                            f"from {LABELED_URL} as downloaded (not re-saved as v5/v7)")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise TaskDataError(f"cannot open {path} ({_first_line(error)}); fetch it again from {LABELED_URL}") from None
    with file:
        missing = [key for key in _LABELED_KEYS if not isinstance(file.get(key), h5py.Dataset)]
        if missing:
            raise TaskDataError(f"{path} has no dataset {', '.join(missing)} (it has {', '.join(list(file)[:8])}); "
                                f"it is not nyu_depth_v2_labeled.mat, download that from {LABELED_URL}")
        shapes = {key: file[key].shape for key in _LABELED_KEYS}
        n_w_h = shapes["labels"]
        if len(n_w_h) != 3 or shapes["depths"] != n_w_h or shapes["images"] != (n_w_h[0], 3, *n_w_h[1:]):
            raise TaskDataError(f"{path} has datasets of shapes {shapes}; expected images (N, 3, 640, 480), depths and "
                                f"labels (N, 640, 480) as h5py reads the official file from {LABELED_URL}")
        yield file


def _loadmat(path: Path, what: str, url: str) -> dict:
    """A MATLAB v5 file's variables, squeezed."""
    import scipy.io

    if not path.is_file():
        raise TaskDataError(f"{what} not found: {path}; download it from {url}")
    try:
        return scipy.io.loadmat(path, squeeze_me=True)
    except (NotImplementedError, ValueError, TypeError, OSError) as error:
        raise TaskDataError(f"cannot read {path} as a MATLAB v5 .mat file ({_first_line(error)}); download {what} "
                            f"from {url}") from None


def _read_mapping(path: Path) -> tuple[torch.Tensor, tuple[str, ...]]:
    """A lookup table from class id 0..894 to IGNORE or 0..39, and the 40 class names."""
    data = _loadmat(path, "classMapping40.mat", MAPPING_URL)
    for key in ("mapClass", "className"):
        if key not in data:
            found = ", ".join(k for k in data if not k.startswith("__"))
            raise TaskDataError(f"{path} has no variable {key!r} (it has {found or 'none'}); use classMapping40.mat "
                                f"from {MAPPING_URL}")
    mapping = np.atleast_1d(np.asarray(data["mapClass"], dtype=np.float64)).ravel()
    if not np.all((mapping >= 1) & (mapping <= NUM_CLASSES) & (mapping == np.round(mapping))):
        raise TaskDataError(f"{path}: mapClass must hold whole numbers 1..{NUM_CLASSES}; use classMapping40.mat "
                            f"from {MAPPING_URL}")
    names = tuple(str(name) for name in np.atleast_1d(data["className"]).ravel())
    if len(names) != NUM_CLASSES:
        raise TaskDataError(f"{path}: className has {len(names)} names instead of {NUM_CLASSES}; use "
                            f"classMapping40.mat from {MAPPING_URL}")
    lut = torch.full((len(mapping) + 1,), IGNORE, dtype=torch.long)
    lut[1:] = torch.from_numpy(mapping.astype(np.int64) - 1)
    return lut, names


def _read_splits(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 0-based train and test rows of splits.mat, checked against the ``n`` labeled frames."""
    data = _loadmat(path, "splits.mat", SPLITS_URL)
    parts = []
    for key in ("trainNdxs", "testNdxs"):
        if key not in data:
            raise TaskDataError(f"{path} has no variable {key!r}; use splits.mat from {SPLITS_URL}")
        ids = np.atleast_1d(np.asarray(data[key], dtype=np.float64)).ravel()
        bad = ids[(ids < 1) | (ids > n) | (ids != np.round(ids))]
        if len(ids) == 0 or len(bad):
            shown = f"index {bad[0]:g}" if len(bad) else "no index"
            raise TaskDataError(f"{path}: {key} has {shown} outside 1..{n} (the labeled file's frames); use "
                                f"splits.mat from {SPLITS_URL} with the official labeled file")
        parts.append(torch.from_numpy(ids.astype(np.int64) - 1))
    return parts[0], parts[1]


def _scan_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(RGB, depth) paths below ``root`` in sorted order; every RGB file must have its depth."""
    if not root.is_dir():
        raise TaskDataError(f"pairs folder not found: {root}; extract RGB-D pairs from the raw sequences as "
                            f"{PAIRS_LAYOUT}")
    rgbs = sorted((p for p in root.rglob("rgb_*") if p.suffix.lower() in _RGB_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(root).as_posix())
    pairs = [(rgb, rgb.with_name(f"sync_depth_{rgb.stem.removeprefix('rgb_')}.png")) for rgb in rgbs]
    if not pairs:
        raise TaskDataError(f"no RGB-D pairs under {root}; expected {PAIRS_LAYOUT}")
    missing = [(rgb, depth) for rgb, depth in pairs if not depth.is_file()]
    if missing:
        rgb, depth = missing[0]
        raise TaskDataError(f"{len(missing)} of {len(pairs)} RGB files under {root} have no depth file, e.g. "
                            f"{rgb.relative_to(root).as_posix()} lacks {depth.name}; expected {PAIRS_LAYOUT}")
    return pairs


def _read_image(path: Path, depth: bool) -> torch.Tensor:
    """uint8 [3,H,W] RGB, or with ``depth`` float32 [1,H,W] metres from a 16-bit grey PNG in millimetres."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if depth and image.mode not in _DEPTH_MODES:
                raise TaskDataError(f"{path} is not a 16-bit grey PNG (PIL mode {image.mode}); depth must be a 16-bit "
                                    f"PNG in millimetres")
            array = np.array(image if depth else image.convert("RGB"))
    except OSError as error:
        raise TaskDataError(f"cannot decode {path} ({_first_line(error)}); replace or remove the pair") from None
    if depth:
        return torch.from_numpy(array.astype(np.float32) / 1000.0)[None]
    return torch.from_numpy(array).permute(2, 0, 1)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"size must be two positive integers (H, W), not {size!r}")
    return int(size[0]), int(size[1])


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
