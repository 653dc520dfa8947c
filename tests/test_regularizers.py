import pytest
import torch

from mke_ray.models.mlp import PerturbedMLP
from mke_ray.regularizers import REGULARIZERS, build

NAMES = REGULARIZERS.names()
IN_MODEL = [n for n in NAMES if not REGULARIZERS.get(n).on_data]  # augment acts on the data (tests/test_ravdess.py)


def some_strength(name: str) -> float:
    info = REGULARIZERS.get(name)
    return 0.5 if info.high <= 1 else 2.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["strength 0, training", "eval mode"])
def test_identity_without_random_draws(name, case):
    module = build(name, 0.0).train() if case.startswith("strength 0") else build(name, some_strength(name)).eval()
    x = torch.randn(64, 8)
    state = torch.get_rng_state()
    assert torch.equal(module(x), x)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", IN_MODEL)
def test_perturbs_in_training_mode(name):
    module = build(name, some_strength(name)).train()
    x = torch.randn(64, 8)
    assert not torch.equal(module(x), x)


@pytest.mark.parametrize("name", ["input_noise", "hidden_noise"])
def test_noise_is_relative_to_mean_magnitude(name):
    torch.manual_seed(0)
    x = 3.0 * torch.randn(20_000, 4)
    noise = build(name, 0.5).train()(x) - x
    assert noise.std().item() == pytest.approx(0.5 * x.abs().mean().item(), rel=0.02)


def test_unregularized_network_matches_a_plain_network_bit_for_bit():
    torch.manual_seed(3)
    plain = PerturbedMLP(2, 16, 2)
    torch.manual_seed(3)
    zero = PerturbedMLP(2, 16, 2, {"input_noise": 0.0, "hidden_noise": 0.0, "dropout": 0.0})
    x = torch.randn(10, 2)
    assert torch.equal(plain.train()(x), zero.train()(x))


def test_unknown_regularizer_is_refused():
    with pytest.raises(KeyError, match="unknown regularizer"):
        PerturbedMLP(2, 16, 2, {"input_nosie": 1.0})
