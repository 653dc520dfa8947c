"""NYU Depth V2 semantic segmentation (40 classes): RGB (the teacher's) and depth.

``source: prepared`` reads the official labeled file (795 train / 654 test images, the
894 classes mapped to 40) for the teacher, validation and test, and RGB-D frame pairs
extracted from the raw sequences as the unlabeled set (no labels: students learn from
the teacher's per-pixel pseudo labels only, so MM sup is not available). Depth enters
as HHA (``depth: hha``) or as normalised depth (``depth: normalized``).
``source: synthetic`` generates a stand-in (``mke_ray.data.synthetic_nyu``) whose
unlabeled scenes do have labels, so every diagnostic can be computed.

The score is mIoU over the classes present in truth or prediction, unlabeled pixels
(``IGNORE``) left out; pixel accuracy is reported beside it.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mke_ray.models.segmentation import BACKBONES, DeepLab, GatedFusionSegmenter
from mke_ray.tasks.base import Split, Splits, Task, TaskDataError, TrainSettings

RGB, DEPTH = "rgb", "depth"
IGNORE = 255
SCALE = (0.5, 1.75)  # the random rescaling of the NOISY student and the augment regularizer


class NyuOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    source: Literal["prepared", "synthetic"] = Field("prepared", description="prepared: the official files; "
                                                                            "synthetic: a generated stand-in")
    labeled: str | None = Field(None, description="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    class_mapping: str | None = Field(None, description="classMapping40.mat (894 classes -> 40)")
    splits: str | None = Field(None, description="splits.mat (trainNdxs / testNdxs)")
    pairs: str | None = Field(None, description="folder of RGB-D frame pairs from the raw sequences (unlabeled)")
    depth: Literal["hha", "normalized"] = Field("hha", description="how depth enters the student")
    size: list[int] = Field([240, 320], min_length=2, max_length=2, description="images are resized to H, W")
    val_size: int = Field(80, ge=1, description="training images held out for validation (seeded)")
    split_seed: int = Field(0, ge=0)
    teacher_backbone: Literal[BACKBONES] = Field("resnet101", description="DeepLabV3 backbone of unimodal models")
    student_backbone: Literal[BACKBONES] = Field("resnet50", description="backbone of each branch of MM students")
    weights: str | None = Field(None, description="a local torchvision ResNet state dict for the RGB branches "
                                                  "(nothing is downloaded); default: random initialisation")
    synthetic_scenes: int = Field(400, ge=20, description="synthetic scenes: 25% labeled, 50% unlabeled, "
                                                          "12.5% validation, 12.5% test")
    synthetic_colour_signal: float = Field(10.0, ge=0, description="tint between look-alike classes (0-255)")
    synthetic_seed: int = Field(0, ge=0)

    @field_validator("labeled", "class_mapping", "splits", "pairs", "weights")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value else value

    @field_validator("size")
    @classmethod
    def _sensible_size(cls, value: list[int]) -> list[int]:
        if min(value) < 16:
            raise ValueError(f"size is [height, width], each at least 16 pixels (got {value})")
        return value

    @model_validator(mode="after")
    def _has_files(self):
        if self.source == "prepared":
            missing = [k for k in ("labeled", "class_mapping", "splits", "pairs") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"source: prepared needs {', '.join(missing)} (see docs/nyu.md), "
                                 f"or use source: synthetic")
        return self


def _split(images: torch.Tensor, depth: torch.Tensor, labels: torch.Tensor, rows) -> Split:
    rows = torch.as_tensor(rows, dtype=torch.long)
    return Split(inputs={RGB: images[rows].contiguous(), DEPTH: depth[rows].contiguous()},
                 y=labels[rows].to(torch.uint8))  # 0..39 and IGNORE: a byte per pixel, widened per batch


@lru_cache(maxsize=2)
def _make_splits(options_json: str) -> tuple[Splits, tuple[str, ...]]:
    options = NyuOptions.model_validate_json(options_json)
    if options.source == "synthetic":
        from mke_ray.data.synthetic_nyu import CLASSES, synthetic_nyu

        n = options.synthetic_scenes
        data = synthetic_nyu(n, size=tuple(options.size), colour_signal=options.synthetic_colour_signal,
                             seed=options.synthetic_seed)
        depth = _encode_depth(data["depths"], options.depth)
        cut = [n // 4, n // 4 + n // 2, n // 4 + n // 2 + n // 8]
        parts = [range(0, cut[0]), range(cut[0], cut[1]), range(cut[1], cut[2]), range(cut[2], n)]
        splits = [_split(data["images"], depth, data["labels"], rows) for rows in parts]
        return Splits(labeled=splits[0], unlabeled=splits[1], val=splits[2], test=splits[3]), CLASSES

    from mke_ray.data.nyu import load_labeled, load_pairs

    size = tuple(options.size)
    labeled = load_labeled(Path(options.labeled), Path(options.class_mapping), Path(options.splits), size=size)
    pairs = load_pairs(Path(options.pairs), size=size)
    depth = _encode_depth(labeled.depths, options.depth)
    train = labeled.train.tolist()
    random.Random(options.split_seed).shuffle(train)
    if options.val_size >= len(train):
        raise TaskDataError(f"val_size {options.val_size} leaves no training image of {len(train)}; lower it")
    val, train = sorted(train[:options.val_size]), sorted(train[options.val_size:])
    no_labels = torch.full((len(pairs.images), *size), IGNORE, dtype=torch.uint8)
    unlabeled = Split(inputs={RGB: pairs.images, DEPTH: _encode_depth(pairs.depths, options.depth)}, y=no_labels)
    return Splits(labeled=_split(labeled.images, depth, labeled.labels, train), unlabeled=unlabeled,
                  val=_split(labeled.images, depth, labeled.labels, val),
                  test=_split(labeled.images, depth, labeled.labels, labeled.test)), tuple(labeled.class_names)


def _encode_depth(depths: torch.Tensor, kind: str) -> torch.Tensor:
    """HHA as uint8 [N,3,H,W], or depth / 10 m clipped to [0, 1] as float [N,1,H,W]."""
    from mke_ray.data.nyu import hha, normalized_depth

    return normalized_depth(depths) if kind == "normalized" else hha(depths)


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy; targets may be bytes (classes and IGNORE), unlabeled pixels left out."""
    return F.cross_entropy(logits, targets.long(), ignore_index=IGNORE)


def miou_scores(pred: torch.Tensor, truth: torch.Tensor, classes: int, ignore: int = IGNORE) -> dict[str, float]:
    """mIoU (%) over classes present in truth or prediction, and pixel accuracy (%), unlabeled pixels left out."""
    valid = truth != ignore
    t, p = truth[valid].long(), pred[valid].long().clamp(0, classes - 1)
    confusion = torch.bincount(t * classes + p, minlength=classes * classes).view(classes, classes).double()
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    miou = (hits[present] / union[present]).mean().item() if present.any() else float("nan")
    return {"miou": 100.0 * miou, "pixel_acc": 100.0 * hits.sum().item() / max(valid.sum().item(), 1)}


class Nyu(Task):
    Options = NyuOptions
    data_options = ("labeled", "class_mapping", "splits", "pairs", "weights")
    modalities = (RGB, DEPTH)
    teacher_modality = RGB
    accelerate = True
    side_by_side = False
    metric, metric_name = "miou", "mIoU"
    ignore_index = IGNORE
    eval_batch = 16
    plot_name = "segmentation.png"
    teacher_defaults = TrainSettings(epochs=50, lr=0.01, momentum=0.9, batch_size=8, select="best_val")
    student_defaults = TrainSettings(epochs=50, lr=0.01, momentum=0.9, batch_size=8, select="best_val")

    def make_splits(self) -> Splits:
        return _make_splits(self.options.model_dump_json())[0]

    def class_names(self) -> list[str]:
        return list(_make_splits(self.options.model_dump_json())[1])

    def build_model(self, modalities, regularization):
        classes = len(self.class_names())
        if modalities == (RGB,):
            return DeepLab(classes, self.options.teacher_backbone, self.options.weights, regularization)
        channels = 3 if self.options.depth == "hha" else 1
        if modalities == (DEPTH,):  # a unimodal network of the new modality (the cross-modal baselines')
            return DeepLab(classes, self.options.teacher_backbone, None, regularization, DEPTH, channels)
        return GatedFusionSegmenter(classes, self.options.student_backbone, channels, self.options.weights,
                                    regularization)

    def loss_fn(self):
        return segmentation_loss

    def pseudo_labels(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.to(torch.uint8)  # a byte per pixel: an eighth of int64 for tens of thousands of label maps

    def scores(self, pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return miou_scores(pred, y, len(self.class_names()))

    def augment(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor, p: float = 1.0):
        """With probability p per sample: a random horizontal flip (half the time) and a rescale by a
        factor in [0.5, 1.75], then a random crop or a pad back to the size, the same for every
        modality and the label map (padding is unlabeled)."""
        inputs = {k: v.float() / 255.0 if v.dtype == torch.uint8 else v.clone() for k, v in inputs.items()}
        targets = targets.clone()
        h, w = targets.shape[-2:]
        for i in range(len(targets)):
            if torch.rand(()) >= p:
                continue
            flip = bool(torch.rand(()) < 0.5)
            scale = float(torch.empty(()).uniform_(*SCALE))
            sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
            top = int(torch.randint(0, abs(sh - h) + 1, ()))
            left = int(torch.randint(0, abs(sw - w) + 1, ()))
            for key, value in inputs.items():
                inputs[key][i] = _rescale(value[i], (sh, sw), (h, w), top, left, flip, "bilinear", 0.0)
            targets[i] = _rescale(targets[i][None].float(), (sh, sw), (h, w), top, left, flip, "nearest-exact",
                                  float(IGNORE))[0].to(targets.dtype)
        return inputs, targets

    def plot_trial(self, model, modalities, pseudo_labels, title, path: Path) -> bool:
        """Three test scenes: the image, the truth, the prediction."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from mke_ray.training.loop import take

        test = self.splits().test
        shown = min(3, len(test))
        x = take(self.features(test, modalities), slice(0, shown))
        pred = self.predict(model, x)
        truth = test.y[:shown].clone()
        fig, axes = plt.subplots(shown, 3, figsize=(9, 2.6 * shown), dpi=90, squeeze=False)
        n = len(self.class_names())
        for row in range(shown):
            image = test.inputs[RGB][row].permute(1, 2, 0)
            truth_shown = truth[row].float().masked_fill(truth[row] == IGNORE, float("nan"))
            for ax, (picture, name) in zip(axes[row], [(image, "image"), (truth_shown, "truth"),
                                                      (pred[row], "prediction")]):
                ax.imshow(picture.numpy(), **({} if name == "image" else {"cmap": "tab20", "vmin": 0, "vmax": n - 1,
                                                                   "interpolation": "nearest"}))
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(name, fontsize=9)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return True


def _rescale(x: torch.Tensor, scaled: tuple[int, int], size: tuple[int, int], top: int, left: int, flip: bool,
             mode: str, fill: float) -> torch.Tensor:
    """[C,H,W] resized to ``scaled``, then cropped (larger) or padded with ``fill`` (smaller) to ``size``."""
    out = F.interpolate(x[None], size=scaled, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))[0]
    if flip:
        out = out.flip(-1)
    h, w = size
    if scaled[0] >= h:
        out = out[:, top:top + h]
    else:
        out = F.pad(out, (0, 0, top, h - scaled[0] - top), value=fill)
    if scaled[1] >= w:
        out = out[:, :, left:left + w]
    else:
        out = F.pad(out, (left, w - scaled[1] - left, 0, 0), value=fill)
    return out
