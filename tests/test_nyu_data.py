"""NYU Depth V2 files: the labeled v7.3 file's orientation, the 40-class mapping, the split, raw pairs, HHA."""

import math

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mke_ray.data.nyu import (
    IGNORE,
    KINECT,
    NUM_CLASSES,
    hha,
    load_labeled,
    load_pairs,
    normalized_depth,
)
from mke_ray.tasks.base import TaskDataError
from tests.nyu_fixture import (
    CLASS_NAMES,
    fine_to_40,
    write_class_mapping,
    write_nyu_labeled,
    write_pairs,
    write_splits,
)


@pytest.fixture
def labeled_files(tmp_path):
    """(labeled, mapping, splits) paths of 6 frames of 48 x 64, and the frames as MATLAB sees them."""
    paths = tmp_path / "nyu_depth_v2_labeled.mat", tmp_path / "classMapping40.mat", tmp_path / "splits.mat"
    truth = write_nyu_labeled(paths[0], n=6, size=(48, 64))
    write_class_mapping(paths[1])
    write_splits(paths[2], train=[1, 3, 5], test=[2, 4, 6])
    return paths, truth


def expected_labels(ids: np.ndarray) -> torch.Tensor:
    """Class ids 0..894 as the loader should map them: 0 to IGNORE, k to the fixture's mapClass(k) - 1."""
    lut = np.array([IGNORE] + [fine_to_40(k) - 1 for k in range(1, 895)])
    return torch.from_numpy(lut[ids.astype(np.int64)])


def test_labeled_frames_keep_matlab_orientation(labeled_files):
    paths, truth = labeled_files
    data = load_labeled(*paths)
    assert data.images.shape == (6, 3, 48, 64) and data.images.dtype == torch.uint8
    assert data.depths.shape == (6, 1, 48, 64) and data.depths.dtype == torch.float32
    assert data.labels.shape == (6, 48, 64) and data.labels.dtype == torch.int64
    assert torch.equal(data.images, torch.from_numpy(truth["images"]))
    assert torch.equal(data.depths[:, 0], torch.from_numpy(truth["depths"]))
    # the pattern grows 5 per row and 2 per column: a transposed read would swap these steps
    assert int(data.images[0, 0, 1, 0]) - int(data.images[0, 0, 0, 0]) == 5
    assert int(data.images[0, 0, 0, 1]) - int(data.images[0, 0, 0, 0]) == 2


def test_labels_map_894_classes_to_40_and_0_to_ignore(labeled_files):
    paths, truth = labeled_files
    data = load_labeled(*paths)
    assert torch.equal(data.labels, expected_labels(truth["labels"]))
    assert data.labels[0, 0, 0] == IGNORE and (data.labels == IGNORE).sum() == (truth["labels"] == 0).sum()
    assert set(data.labels.unique().tolist()) <= set(range(NUM_CLASSES)) | {IGNORE}
    assert data.class_names == CLASS_NAMES and len(data.class_names) == NUM_CLASSES


def test_split_indices_are_zero_based(labeled_files):
    data = load_labeled(*labeled_files[0])
    assert data.train.tolist() == [0, 2, 4] and data.test.tolist() == [1, 3, 5]
    assert data.train.dtype == data.test.dtype == torch.int64


def test_size_downsizes_on_load_and_labels_stay_classes(labeled_files):
    paths, truth = labeled_files
    data = load_labeled(*paths, size=(24, 32))
    assert data.images.shape == (6, 3, 24, 32) and data.depths.shape == (6, 1, 24, 32)
    assert data.labels.shape == (6, 24, 32) and data.labels.dtype == torch.int64
    # nearest neighbour, pixel-centre aligned: output pixel (r, c) takes input pixel (2r+1, 2c+1)
    assert torch.equal(data.labels, expected_labels(truth["labels"])[:, 1::2, 1::2])
    # bilinear: a linear depth ramp halves to the mean of each 2 x 2 block (away from the borders)
    blocks = torch.from_numpy(truth["depths"]).unfold(1, 2, 2).unfold(2, 2, 2).mean((-1, -2))
    assert torch.allclose(data.depths[:, 0, 1:-1, 1:-1], blocks[:, 1:-1, 1:-1], atol=1e-4)
    full = load_labeled(*paths)
    assert abs(data.images.float().mean() - full.images.float().mean()) < 2


def test_pairs_load_rgb_and_depth_in_metres(tmp_path):
    truth = write_pairs(tmp_path / "sync", n=5, size=(24, 32))
    pairs = load_pairs(tmp_path / "sync")
    assert sorted(pairs.names) == sorted(truth) and len(pairs.names) == 5
    assert pairs.images.shape == (5, 3, 24, 32) and pairs.images.dtype == torch.uint8
    assert pairs.depths.shape == (5, 1, 24, 32) and pairs.depths.dtype == torch.float32
    for i, name in enumerate(pairs.names):
        colour, depth = truth[name]
        assert (pairs.images[i].float().mean((1, 2)) - torch.tensor(colour).float()).abs().max() <= 3
        assert torch.allclose(pairs.depths[i], depth, atol=1e-6)
    assert pairs.depths[:, :, :5, :5].eq(0).all() and pairs.depths[:, :, 5:, 5:].gt(1.0).all()


def test_pairs_resize_keeps_holes_out_of_valid_depth(tmp_path):
    truth = write_pairs(tmp_path / "sync", n=2, size=(24, 32))
    pairs = load_pairs(tmp_path / "sync", size=(12, 16))
    assert pairs.images.shape == (2, 3, 12, 16) and pairs.depths.shape == (2, 1, 12, 16)
    assert pairs.depths[:, :, :2, :2].eq(0).all()  # the 5 x 5 hole, halved
    for i, name in enumerate(pairs.names):
        depth = pairs.depths[i]
        assert depth[depth > 0].min() >= truth[name][1][truth[name][1] > 0].min() - 1e-6  # no 0 blended in
        assert depth[:, 3:, 3:].gt(0).all()


def room(size: tuple[int, int], camera_height: float, wall: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth [H,W] of a level camera ``camera_height`` m above a floor, facing a wall ``wall`` m away; floor mask."""
    camera = KINECT.scaled(*size)
    rows = ((torch.arange(size[0], dtype=torch.float64) + 1 - camera.cy) / camera.fy).view(-1, 1).expand(size)
    to_floor = torch.where(rows > 0, camera_height / rows.clamp_min(1e-9), torch.inf)
    return torch.minimum(to_floor, torch.tensor(wall)).float(), to_floor < wall


def eroded(mask: torch.Tensor, by: int) -> torch.Tensor:
    """``mask`` without pixels within ``by`` of its edge (the image border does not count)."""
    hole = (~mask).float()[None, None]
    return ~(torch.nn.functional.max_pool2d(hole, 2 * by + 1, stride=1, padding=by)[0, 0] > 0)


def test_hha_of_a_room_floor_faces_up_and_height_grows_upward():
    depth, floor = room((48, 64), camera_height=1.2, wall=6.0)
    assert 6 < floor.sum(0)[0] < 24  # rows of floor below the wall
    disparity, height, angle = hha(depth).int()
    floor_in, wall_in = eroded(floor, 3), eroded(~floor, 3)
    assert angle[floor_in].unique().tolist() == [38]  # normal parallel to up: 0 degrees, + 38
    assert angle[wall_in].unique().tolist() == [128]  # 90 degrees
    assert height[floor].max() <= 1  # the floor is the lowest point
    assert disparity[~floor].unique().tolist() == [round(310 / 6.0)]
    camera = KINECT.scaled(48, 64)
    for row in range(48):
        if not floor[row, 0]:
            true_cm = 100 * (1.2 - (row + 1 - camera.cy) / camera.fy * 6.0)
            assert abs(height[row, 10] - min(true_cm, 255)) <= 1
    unsaturated = (~floor[:, 10]) & (height[:, 10] < 255)
    column = height[unsaturated, 10]
    assert len(column) > 10 and (column[:-1] > column[1:]).all()  # higher rows of the wall are higher


def test_hha_normals_average_out_depth_noise():
    depth, floor = room((48, 64), camera_height=1.2, wall=6.0)
    noisy = depth * (1 + 0.01 * torch.randn(depth.shape, generator=torch.Generator().manual_seed(0)))
    angle = hha(noisy)[2].float()
    assert (angle[eroded(floor, 3)] - 38).abs().median() <= 3  # about 6 without the 5 x 5 window
    assert (angle[eroded(~floor, 3)] - 128).abs().median() <= 4  # about 13 without it


def test_hha_shapes_batches_and_missing_depth():
    depth, _ = room((48, 64), camera_height=1.2, wall=6.0)
    batch = torch.stack([depth, depth * 0.5])[:, None]
    batch[1, 0, 10:20, 10:20] = 0
    batch[1, 0, 30, 30] = float("nan")
    out = hha(batch)
    assert out.shape == (2, 3, 48, 64) and out.dtype == torch.uint8
    assert torch.equal(out[0], hha(depth)) and torch.equal(out[1], hha(batch[1]))
    assert out[1, :, 10:20, 10:20].eq(0).all() and out[1, :, 30, 30].eq(0).all()
    assert out[1, 2, 25:35, 40:50].gt(0).all()  # normals elsewhere survive the holes
    assert hha(torch.zeros(1, 1, 8, 8)).eq(0).all()
    noisy = hha(torch.rand(3, 1, 48, 64) * 9 + 0.5)
    assert noisy.shape == (3, 3, 48, 64) and noisy[:, 2].gt(0).all()
    assert hha(torch.zeros(0, 1, 8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        hha(torch.ones(2, 3, 8, 8))


def test_intrinsics_scale_with_the_image():
    assert KINECT.scaled(480, 640) == KINECT
    half = KINECT.scaled(240, 320)
    assert math.isclose(half.fx, KINECT.fx / 2) and math.isclose(half.fy, KINECT.fy / 2)
    assert math.isclose(half.cx, (KINECT.cx - 0.5) / 2 + 0.5) and (half.height, half.width) == (240, 320)


def test_normalized_depth_is_depth_over_10m_in_0_1():
    depth = torch.tensor([[[[0.0, 5.0, 20.0, float("nan"), -1.0]]]])
    out = normalized_depth(depth)
    assert out.shape == depth.shape and out.dtype == torch.float32
    assert out.flatten().tolist() == [0.0, 0.5, 1.0, 0.0, 0.0]


def _error(call) -> str:
    with pytest.raises(TaskDataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def test_labeled_file_errors_are_one_line(labeled_files, tmp_path):
    (_, mapping, splits), _ = labeled_files
    missing = tmp_path / "absent.mat"
    message = _error(lambda: load_labeled(missing, mapping, splits))
    assert f"labeled file not found: {missing}; download" in message
    assert "not an HDF5 (MATLAB v7.3)" in _error(lambda: load_labeled(splits, mapping, splits))
    no_labels = tmp_path / "no_labels.mat"
    write_nyu_labeled(no_labels, omit=("labels",))
    assert "no dataset labels" in _error(lambda: load_labeled(no_labels, mapping, splits))


def test_mapping_and_split_errors_are_one_line(labeled_files, tmp_path):
    (labeled, mapping, splits), _ = labeled_files
    names_only = tmp_path / "names_only.mat"
    scipy.io.savemat(names_only, {"className": np.array([CLASS_NAMES], dtype=object)})
    assert "no variable 'mapClass'" in _error(lambda: load_labeled(labeled, names_only, splits))
    assert "classMapping40.mat not found" in _error(lambda: load_labeled(labeled, tmp_path / "x.mat", splits))
    assert "MATLAB v5" in _error(lambda: load_labeled(labeled, labeled, splits))  # a v7.3 file given as mapping
    short = tmp_path / "short.mat"
    scipy.io.savemat(short, {"mapClass": np.ones((1, 100)), "className": np.array([CLASS_NAMES], dtype=object)})
    assert "class id" in _error(lambda: load_labeled(labeled, short, splits))
    beyond = tmp_path / "beyond.mat"
    write_splits(beyond, train=[1, 7], test=[2])
    assert "trainNdxs has index 7 outside 1..6" in _error(lambda: load_labeled(labeled, mapping, beyond))
    zero = tmp_path / "zero.mat"
    write_splits(zero, train=[1], test=[0, 2])
    assert "testNdxs has index 0 outside 1..6" in _error(lambda: load_labeled(labeled, mapping, zero))


def test_pairs_errors_are_one_line(tmp_path):
    assert "pairs folder not found" in _error(lambda: load_pairs(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    assert "no RGB-D pairs" in _error(lambda: load_pairs(tmp_path / "empty"))
    write_pairs(tmp_path / "sync", n=4, size=(8, 8))
    (tmp_path / "sync" / "bedroom_0004" / "sync_depth_00002.png").unlink()
    message = _error(lambda: load_pairs(tmp_path / "sync"))
    assert "1 of 4 RGB files" in message and "bedroom_0004/rgb_00002.jpg lacks sync_depth_00002.png" in message
    write_pairs(tmp_path / "eight_bit", n=1, size=(8, 8))
    eight_bit = tmp_path / "eight_bit" / "bedroom_0004" / "sync_depth_00000.png"
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(eight_bit)
    assert "not a 16-bit grey PNG" in _error(lambda: load_pairs(tmp_path / "eight_bit"))
