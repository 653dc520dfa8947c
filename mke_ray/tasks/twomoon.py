"""TwoMoon: the synthetic two-modality task of the MKE paper (Table 2).

Modality ``a`` is the x coordinate, ``b`` the y coordinate. Data and splits follow
the authors' notebook: ``make_moons(500, noise=0.1, random_state=42)``, a
``StandardScaler`` fitted on all 500 points, then 200 test points and 300 training
points, of which 30 are labeled (the teacher's) and 270 unlabeled (the students').
``unlabeled_points`` resizes the unlabeled split alone (fewer of those points, or more drawn afresh), for
ablations of the unlabeled set's size with the teacher unchanged.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mke_ray.models.mlp import PerturbedMLP, softmax_cross_entropy
from mke_ray.tasks.base import Split, Splits, Task, TrainSettings


class TwoMoonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    loss: Literal["published", "corrected"] = Field(
        "corrected",
        description="'published' applies a softmax before the cross-entropy, as the code "
                    "behind the paper's Table 2 did; 'corrected' is plain cross-entropy.")
    n_samples: int = Field(500, ge=20)
    noise: float = Field(0.1, ge=0.0)
    data_seed: int = Field(42, ge=0)
    test_size: float = Field(0.4, gt=0.0, lt=1.0)
    unlabeled_size: float = Field(0.9, gt=0.0, lt=1.0, description="share of the training points left unlabeled")
    hidden_um: int = Field(32, ge=1, description="hidden width of unimodal networks (teacher, UM students)")
    hidden_mm: int = Field(16, ge=1, description="hidden width of multimodal networks")
    val_size: int = Field(200, ge=0, description="validation points: a fresh draw (random_state = data_seed + 1) "
                                                 "scaled like the rest, so the published splits stay untouched")
    unlabeled_points: int | None = Field(
        None, ge=1, description="the unlabeled split's size, the labeled, test and validation splits (and so the "
                                "teacher) unchanged: the first N of the usual unlabeled points, or all of them and "
                                "fresh ones (random_state = data_seed + 2, scaled like the rest); default: as "
                                "unlabeled_size leaves it")
    pseudo_labels: Literal["hard", "soft"] = Field(
        "hard", description="what the students learn from: hard, the teacher's classes; soft, its class "
                            "probabilities (softmax)")


@lru_cache(maxsize=8)
def _make_splits(options: TwoMoonOptions) -> Splits:
    import numpy as np
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = make_moons(n_samples=options.n_samples, noise=options.noise, random_state=options.data_seed)
    scaler = StandardScaler().fit(x)
    x = scaler.transform(x)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=options.test_size, random_state=options.data_seed)
    x_lab, x_unl, y_lab, y_unl = train_test_split(
        x_train, y_train, test_size=options.unlabeled_size, random_state=options.data_seed)

    def split(features, labels) -> Split:
        t = torch.tensor(features, dtype=torch.float32)
        return Split(inputs={"a": t[:, :1].contiguous(), "b": t[:, 1:].contiguous()},
                     y=torch.tensor(labels, dtype=torch.long))

    val = None
    if options.val_size:
        x_val, y_val = make_moons(n_samples=options.val_size, noise=options.noise, random_state=options.data_seed + 1)
        val = split(scaler.transform(x_val), y_val)
    wanted = options.unlabeled_points
    if wanted is not None and wanted <= len(y_unl):
        x_unl, y_unl = x_unl[:wanted], y_unl[:wanted]
    elif wanted is not None:  # more than the split holds: fresh points of the same moons, scaled as the rest
        x_new, y_new = make_moons(n_samples=wanted - len(y_unl), noise=options.noise,
                                  random_state=options.data_seed + 2)
        x_unl, y_unl = np.concatenate([x_unl, scaler.transform(x_new)]), np.concatenate([y_unl, y_new])
    return Splits(labeled=split(x_lab, y_lab), unlabeled=split(x_unl, y_unl), test=split(x_test, y_test), val=val)


COLORS = ("#c0392b", "#2e5fa3")  # the two classes' pseudo labels
SHADES = ("#f4c7c3", "#c6d9f1")  # the two classes' predicted regions


class TwoMoon(Task):
    Options = TwoMoonOptions
    modalities = ("a", "b")
    teacher_modality = "a"
    teacher_defaults = TrainSettings(epochs=1000, lr=0.01, seed=39)
    student_defaults = TrainSettings(epochs=2000, lr=0.01)

    def make_splits(self) -> Splits:
        return _make_splits(self.options)

    def build_model(self, modalities, regularization) -> nn.Module:
        hidden = self.options.hidden_mm if len(modalities) > 1 else self.options.hidden_um
        return PerturbedMLP(len(modalities), hidden, 2, regularization)

    def loss_fn(self):
        return softmax_cross_entropy if self.options.loss == "published" else F.cross_entropy

    stackable = True  # students can be trained as one stacked network (trainer: {kind: batched})
    send_splits = True  # 500 points: made once by the sweep's driver, sent to the trials

    def stacked_loss(self) -> str:
        """``loss_fn`` by name, for ``training.batched.fit_stacked``."""
        return "softmax_cross_entropy" if self.options.loss == "published" else "cross_entropy"

    plot_name = "boundary.png"

    def plot_trial(self, model, modalities, pseudo_labels, title, path: Path) -> bool:
        splits = self.splits()
        unl = splits.unlabeled
        xy = torch.cat([unl.inputs["a"], unl.inputs["b"]], dim=1)
        lo, hi = xy.min(0).values - 0.5, xy.max(0).values + 0.5
        gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 200), torch.linspace(lo[1], hi[1], 200), indexing="xy")
        grid = {"a": gx.reshape(-1, 1), "b": gy.reshape(-1, 1)}
        model.eval()
        with torch.no_grad():
            region = model(torch.cat([grid[m] for m in modalities], dim=1)).argmax(1).reshape(gx.shape)
        title = textwrap.wrap(title, 48)  # the title stays within the figure, however long the trial's name
        pseudo_labels = self.hard(pseudo_labels)  # soft pseudo labels: each point coloured by its top class
        key = (xy.numpy().tobytes(), pseudo_labels.numpy().tobytes(), unl.y.numpy().tobytes(), len(title))
        figure = _FIGURES.pop(key, None) or BoundaryFigure(xy, (lo, hi), pseudo_labels, unl.y, len(title))
        _FIGURES[key] = figure  # the most recent last
        while len(_FIGURES) > 4:  # a student's own pseudo labels (iterated methods) make figures no other reuses
            _FIGURES.pop(next(iter(_FIGURES))).close()
        figure.save(region.numpy(), "\n".join(title), path)
        return True


_FIGURES: dict[tuple, BoundaryFigure] = {}  # this process's figures, by points, pseudo labels and title lines


class BoundaryFigure:
    """A TwoMoon trial's plot: its predicted regions (an image), the unlabeled points coloured by pseudo label
    (crosses where the pseudo label is wrong), the title, a legend.

    Every student of a sweep shares the points, their pseudo labels, the axes and the legend: those are drawn
    once per process, and each trial draws only its regions, the points over them and its title onto that
    background (Matplotlib's blitting), about six times faster than drawing a whole figure for each.
    """

    def __init__(self, xy: torch.Tensor, limits, pseudo_labels: torch.Tensor, truth: torch.Tensor,
                 title_lines: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        (lo, hi), height = limits, 4.6
        self.fig = Figure(figsize=(5, height), dpi=100)
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_subplot()
        # the predicted regions as an image: drawn in a few ms, where contourf takes ten times as long
        self.image = ax.imshow(torch.zeros(2, 2).numpy(), extent=(lo[0].item(), hi[0].item(), lo[1].item(),
                               hi[1].item()), origin="lower", aspect="auto", cmap=ListedColormap(SHADES), vmin=0,
                               vmax=1, alpha=0.8, interpolation="nearest", animated=True)
        wrong = pseudo_labels != truth
        self.points = []
        for cls in (0, 1):
            ok = (pseudo_labels == cls) & ~wrong
            bad = (pseudo_labels == cls) & wrong
            self.points += [ax.scatter(xy[ok, 0], xy[ok, 1], s=10, c=COLORS[cls], alpha=0.7, animated=True),
                            ax.scatter(xy[bad, 0], xy[bad, 1], s=22, c=COLORS[cls], marker="x", animated=True)]
        ax.set_xlabel("modality a (x)", fontsize=9)
        ax.set_ylabel("modality b (y)", fontsize=9)
        self.title = ax.set_title("\n" * (title_lines - 1), fontsize=10, animated=True)
        legend = [Line2D([], [], ls="", marker="o", ms=5, color=COLORS[0], label="pseudo label 0"),
                  Line2D([], [], ls="", marker="o", ms=5, color=COLORS[1], label="pseudo label 1"),
                  Line2D([], [], ls="", marker="x", ms=6, color="0.3", label="wrong pseudo label"),
                  Patch(facecolor=SHADES[0], edgecolor="0.6", label="shade: model's prediction")]
        self.fig.legend(handles=legend, loc="lower center", ncol=2, fontsize=8, frameon=False)
        # fixed margins, in inches (title lines above, the legend below): tight_layout doubles the cost of 210 plots
        self.fig.subplots_adjust(left=0.13, right=0.97, bottom=0.95 / height,
                                 top=1 - (0.15 + 0.19 * title_lines) / height)
        for spine in ax.spines.values():
            spine.set_animated(True)
        self.canvas.draw()  # everything but the animated artists
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def save(self, region, title: str, path: Path) -> None:
        """Draw ``region`` (the predicted class on a grid over the axes, rows bottom to top) and ``title``
        over the background and write the PNG to ``path``."""
        from matplotlib.image import imsave

        self.image.set_data(region)
        self.title.set_text(title)
        self.canvas.restore_region(self.background)
        for artist in (self.image, *self.points):
            self.ax.draw_artist(artist)
        for artist in (*self.ax.spines.values(), self.title):  # the frame over the regions' edge pixels
            self.ax.draw_artist(artist)
        # zlib's fastest level: 6 ms a plot, where the default level takes 21 ms for a file 12% smaller
        imsave(path, self.canvas.buffer_rgba(), format="png", pil_kwargs={"compress_level": 1})

    def close(self) -> None:
        self.fig.clear()
