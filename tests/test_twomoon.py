import torch

from mke_ray.spec import parse_spec
from mke_ray.tasks import TASKS
from mke_ray.tasks.twomoon import softmax_cross_entropy


def twomoon(**options):
    cls = TASKS.get("twomoon")
    return cls(cls.Options(**options))


def test_splits_have_the_papers_sizes_and_modalities():
    splits = twomoon().splits()
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.test)) == (30, 270, 200)
    for split in (splits.labeled, splits.unlabeled, splits.test):
        assert set(split.inputs) == {"a", "b"}
        assert split.inputs["a"].shape == split.inputs["b"].shape == (len(split), 1)
        assert set(split.y.unique().tolist()) <= {0, 1}


def test_features_are_standardised_over_all_points():
    splits = twomoon().splits()
    everything = torch.cat([torch.cat([s.inputs["a"], s.inputs["b"]], 1)
                            for s in (splits.labeled, splits.unlabeled, splits.test)])
    assert torch.allclose(everything.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(everything.std(0, unbiased=False), torch.ones(2), atol=1e-4)


def test_splits_are_deterministic_and_follow_the_data_seed():
    a, b = twomoon().splits(), twomoon().splits()
    assert torch.equal(a.labeled.inputs["a"], b.labeled.inputs["a"])
    other = twomoon(data_seed=7).splits()
    assert not torch.equal(a.labeled.inputs["a"], other.labeled.inputs["a"])


def test_splits_are_disjoint():
    splits = twomoon().splits()
    points = [tuple(torch.cat([s.inputs["a"], s.inputs["b"]], 1)[i].tolist())
              for s in (splits.labeled, splits.unlabeled, splits.test) for i in range(len(s))]
    assert len(set(points)) == 500


def test_modality_a_is_x_and_b_is_y():
    task = twomoon()
    split = task.splits().unlabeled
    both = task.features(split, ("a", "b"))
    assert torch.equal(both[:, 0:1], split.inputs["a"]) and torch.equal(both[:, 1:2], split.inputs["b"])
    assert torch.equal(task.features(split, ("a",)), split.inputs["a"])


def test_unimodal_and_multimodal_networks_have_the_papers_widths():
    task = twomoon()
    um, mm = task.build_model(("a",), {}), task.build_model(("a", "b"), {})
    assert (um.fc1.in_features, um.fc1.out_features, um.fc3.out_features) == (1, 32, 2)
    assert (mm.fc1.in_features, mm.fc1.out_features, mm.fc2.out_features) == (2, 16, 16)
    assert um(torch.zeros(5, 1)).shape == mm(torch.zeros(5, 2)).shape == (5, 2)


def test_published_loss_is_cross_entropy_of_probabilities():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    target = torch.tensor([0, 1])
    plain = torch.nn.functional.cross_entropy(logits, target)
    published = softmax_cross_entropy(logits, target)
    probs = logits.softmax(1)
    assert torch.allclose(published, torch.nn.functional.cross_entropy(probs, target))
    assert not torch.allclose(published, plain)
    assert twomoon(loss="published").loss_fn() is softmax_cross_entropy


def test_plot_is_written(tmp_path):
    task = twomoon()
    model = task.build_model(("a", "b"), {})
    pseudo = task.splits().unlabeled.y.clone()
    assert task.plot_trial(model, ("a", "b"), pseudo, "title", tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000


def _pixels(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA"))


def test_plots_drawn_over_a_shared_background_are_the_whole_figure_drawn_anew(tmp_path):
    """Each trial's plot draws its regions, points and title over a background the process drew once: every
    file must be, pixel for pixel, what Matplotlib draws of the whole figure, whatever the plots before it."""
    from mke_ray.tasks import twomoon as module

    task = twomoon()
    unl = task.splits().unlabeled
    xy = torch.cat([unl.inputs["a"], unl.inputs["b"]], dim=1)
    limits = (xy.min(0).values - 0.5, xy.max(0).values + 0.5)
    flipped = unl.y.clone()
    flipped[:25] = 1 - flipped[:25]  # wrong pseudo labels: crosses
    long_title = "mm_student hidden_noise=10.0 seed=94 repeat=1: test accuracy 83.0% (a title on two lines)"
    cases = [(seed, labels, title) for seed, (labels, title) in
             enumerate([(unl.y, "t"), (flipped, "t"), (flipped, long_title), (unl.y, "t"), (flipped, "t")])]
    for seed, labels, title in cases:
        torch.manual_seed(seed)
        model = task.build_model(("a", "b"), {})
        path = tmp_path / f"{seed}.png"
        assert task.plot_trial(model, ("a", "b"), labels, title, path)
        # the reference: a figure of its own, every artist drawn in one whole draw
        lines = __import__("textwrap").wrap(title, 48)
        whole = module.BoundaryFigure(xy, limits, labels, unl.y, len(lines))
        for artist in (whole.image, *whole.points, whole.title, *whole.ax.spines.values()):
            artist.set_animated(False)
        gx, gy = torch.meshgrid(*(torch.linspace(limits[0][i], limits[1][i], 200) for i in (0, 1)), indexing="xy")
        with torch.no_grad():
            whole.image.set_data(model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).argmax(1)
                                 .reshape(gx.shape).numpy())
        whole.title.set_text("\n".join(lines))
        whole.fig.savefig(tmp_path / f"whole{seed}.png")
        mine, reference = _pixels(path), _pixels(tmp_path / f"whole{seed}.png")
        assert mine.shape == reference.shape
        assert (mine != reference).any(-1).sum() == 0, f"plot {seed} differs from the whole figure"
    assert len({_pixels(tmp_path / f"{seed}.png").tobytes() for seed, _, _ in cases}) == len(cases)
    assert len(module._FIGURES) <= 4


def test_the_paper_sweep_expands_to_210_trials():
    from tests.conftest import ROOT
    from mke_ray.spec import load_spec

    spec = load_spec(ROOT / "sweeps" / "twomoon_grid.yaml")
    assert len(spec.settings()) == 7  # the three "no" columns are one setting
    assert len(spec.trials()) == 7 * 3 * 10
    assert len({t.key for t in spec.trials()}) == 210  # seed 94 twice: told apart by repeat
    assert parse_spec({"name": "x"}).trials()[0].regularization == {
        "input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0}
