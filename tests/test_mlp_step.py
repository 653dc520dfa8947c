"""The TwoMoon network's written-out SGD step (``PerturbedMLP.sgd_step``) against autograd's, bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from mke_ray.models.mlp import PerturbedMLP, softmax_cross_entropy
from mke_ray.training.loop import fit

SETTINGS = [{}, {"input_noise": 1.0}, {"hidden_noise": 5.0}, {"dropout": 0.5},
            {"input_noise": 2.0, "hidden_noise": 10.0, "dropout": 0.8}]


def _data(features: int):
    generator = torch.Generator().manual_seed(features)
    x = torch.randn(270, features, generator=generator)
    return x, (x.sum(1) + 0.3 * torch.randn(270, generator=generator) > 0).long()


def _train(features, hidden, regularization, loss_fn, written_out):
    x, y = _data(features)
    torch.manual_seed(7)  # the weights, then every draw of the training
    model = PerturbedMLP(features, hidden, 2, regularization)
    history = fit(model, x, y, epochs=60, lr=0.5, loss_fn=loss_fn, log_every=20, written_out=written_out)
    return model, history, torch.randn(3)  # where the random stream was left


@pytest.mark.parametrize("regularization", SETTINGS, ids=lambda r: "+".join(r) or "none")
@pytest.mark.parametrize("loss_fn", [softmax_cross_entropy, F.cross_entropy], ids=["published", "cross_entropy"])
@pytest.mark.parametrize("shape", [(1, 32), (2, 16)], ids=["um", "mm"])
def test_written_out_step_is_autograds_bit_for_bit(shape, loss_fn, regularization):
    ours, our_history, our_next = _train(*shape, regularization, loss_fn, written_out=True)
    theirs, their_history, their_next = _train(*shape, regularization, loss_fn, written_out=False)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs from autograd's by up to {(a - b).abs().max().item():.3g}"
    assert our_history == their_history
    assert torch.equal(our_next, their_next)  # the same draws, as many of them
    assert not torch.equal(ours.fc2.weight, PerturbedMLP(*shape, 2).fc2.weight)  # it did train


def test_written_out_step_only_where_it_is_autograds():
    x, y = _data(2)
    model = PerturbedMLP(2, 16, 2, {"dropout": 0.5})
    assert model.sgd_step(x, y, softmax_cross_entropy, 0.1) is not None
    assert model.sgd_step(x, y, lambda logits, target: F.cross_entropy(logits, target) * 2, 0.1) is None
    assert model.sgd_step(x, F.one_hot(y).float(), F.cross_entropy, 0.1) is None  # soft targets
    assert model.sgd_step(x.double(), y, F.cross_entropy, 0.1) is None


STACK = [{}, {}, {"input_noise": 1.0}, {"input_noise": 2.0}, {"hidden_noise": 5.0}, {"hidden_noise": 10.0},
         {"dropout": 0.5}, {"dropout": 0.8}, {"input_noise": 1.0, "hidden_noise": 5.0, "dropout": 0.5}]


def _train_stack(features, hidden, loss, written_out):
    from mke_ray.models.mlp import StackedMLPs
    from mke_ray.training.batched import fit_stacked

    x, y = _data(features)
    models, generators = [], []
    for seed, regularization in enumerate(STACK):  # groups of one and of two, each kind, one with all three
        torch.manual_seed(seed)
        models.append(PerturbedMLP(features, hidden, 2, regularization))
        generators.append(torch.Generator().manual_seed(100 + seed))
    stack = StackedMLPs(models, generators)
    histories = fit_stacked(stack, x, y, epochs=60, lr=0.5, loss=loss, log_every=20, written_out=written_out)
    return stack, histories, [g.get_state() for g in generators]


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "cross_entropy"])
@pytest.mark.parametrize("shape", [(1, 32), (2, 16)], ids=["um", "mm"])
def test_written_out_stacked_step_is_autograds_bit_for_bit(shape, loss):
    ours, our_histories, our_streams = _train_stack(*shape, loss, written_out=True)
    theirs, their_histories, their_streams = _train_stack(*shape, loss, written_out=False)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs from autograd's by up to {(a - b).abs().max().item():.3g}"
    untimed = lambda histories: [[{k: v for k, v in r.items() if k != "stack_seconds"} for r in h]  # noqa: E731
                                 for h in histories]
    assert untimed(our_histories) == untimed(their_histories)
    assert all(torch.equal(a, b) for a, b in zip(our_streams, their_streams))
    x, y = _data(shape[0])
    assert ours.sgd_step(x, y, True, 0.1) is not None
    assert ours.sgd_step(x, F.one_hot(y).float(), True, 0.1) is None  # soft targets: autograd's step
