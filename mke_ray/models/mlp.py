"""The TwoMoon network: three linear layers with perturbations at fixed places."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mke_ray.regularizers import build_all
from mke_ray.regularizers.noise import RelativeGaussianNoise


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax probabilities: the loss behind the published TwoMoon Table 2."""
    return F.cross_entropy(F.softmax(logits, dim=1), target)


class PerturbedMLP(nn.Module):
    """``in -> h -> h -> classes`` with ReLU after the two hidden layers.

    Regularizers sit where the MKE TwoMoon experiment puts them: input noise on the
    input, hidden noise after the first ReLU, dropout after both ReLUs. Each is the
    identity at strength 0, so ``PerturbedMLP(2, 16, 2)`` is a plain MLP. The
    forward pass returns logits.
    """

    def __init__(self, in_features: int, hidden: int, classes: int,
                 regularization: Mapping[str, float] | None = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)
        self.input_noise, self.hidden_noise, self.drop1, self.drop2 = build_all(
            regularization, "input_noise", "hidden_noise", "dropout", "dropout")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_noise(x)
        h = self.drop1(self.hidden_noise(torch.relu(self.fc1(x))))
        h = self.drop2(torch.relu(self.fc2(h)))
        return self.fc3(h)

    # the representation a cross-modal method matches (methods.crossmodal): what the last layer reads
    head_names = ("fc3",)  # the layers after it

    @property
    def embed_features(self) -> int:
        return self.fc2.out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The second hidden layer after its ReLU (before its dropout), with the perturbations ``forward`` draws
        up to there, in the same order."""
        x = self.input_noise(x)
        h = self.drop1(self.hidden_noise(torch.relu(self.fc1(x))))
        return torch.relu(self.fc2(h))

    def classify(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits from ``embed``'s features: ``forward(x)`` is ``classify(embed(x), x)``."""
        return self.fc3(self.drop2(h))

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, lr: float
                 ) -> Callable[[], torch.Tensor] | None:
        """One full-batch SGD step on (``x``, ``y``) as a function that returns the step's loss: the training-mode
        forward pass, the backward pass and the update written out with the kernels autograd runs for this
        network, in its order, and the same random draws. The weights come out bit for bit those of
        ``loss_fn(self(x), y).backward()`` and ``p -= lr * p.grad``, with no graph recorded: on TwoMoon's
        networks a step takes about two thirds of the time (``tests/test_mlp_step.py`` checks the bits).

        None where it would not be that: a loss other than ``F.cross_entropy`` or ``softmax_cross_entropy``,
        soft targets, tensors off the CPU or not float32, or a regularizer module of another kind."""
        softmax_first = {F.cross_entropy: False, softmax_cross_entropy: True}.get(loss_fn)
        known = all(type(m) in (RelativeGaussianNoise, nn.Identity) for m in (self.input_noise, self.hidden_noise)) \
            and all(type(m) in (nn.Dropout, nn.Identity) for m in (self.drop1, self.drop2))
        plain = x.device.type == "cpu" and x.dtype == torch.float32 and y.dtype == torch.int64 and y.ndim == 1 \
            and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.parameters())
        if softmax_first is None or not known or not plain or self.drop1.__dict__.get("inplace"):
            return None
        return _sgd_step(self, x, y, lr, softmax_first)


_relu_backward = torch.ops.aten.threshold_backward.default
_nll_loss = torch.ops.aten.nll_loss_forward.default
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default
_nll_loss2d = torch.ops.aten.nll_loss2d_forward.default
_nll_loss2d_backward = torch.ops.aten.nll_loss2d_backward.default
_ONE = torch.tensor(1.0)


def _scale(module: nn.Module) -> float:
    return float(getattr(module, "scale", 0.0))


def _rate(module: nn.Module) -> float:
    return float(getattr(module, "p", 0.0))


def _sgd_step(net: PerturbedMLP, x: torch.Tensor, y: torch.Tensor, lr: float, softmax_first: bool
              ) -> Callable[[], torch.Tensor]:
    """``PerturbedMLP.sgd_step``'s step, with what every step shares worked out once: the weights' transposed
    views (the update is in place), the strengths, the input's mean magnitude. Each line of ``step`` is the op
    the autograd graph of the training-mode forward pass holds, or the one its backward node runs (``Linear``:
    ``addmm``; its input's gradient ``grad.mm(W)``, its weight's ``grad.t().mm(input)``, its bias's the column
    sums)."""
    w1, b1, w2, b2, w3, b3 = params = [net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias, net.fc3.weight,
                                       net.fc3.bias]
    w1t, w2t, w3t = w1.t(), w2.t(), w3.t()
    s2, p1, p2 = _scale(net.hidden_noise), _rate(net.drop1), _rate(net.drop2)
    with torch.no_grad():  # the input needs no gradient: nor does its mean
        input_scale = _scale(net.input_noise) * x.abs().mean() if _scale(net.input_noise) else None

    @torch.no_grad()
    def step() -> torch.Tensor:
        # forward: x + s * mean(|x|) * N(0, 1); dropout as F.dropout draws and applies it on a CPU
        inputs = x + input_scale * torch.randn_like(x) if input_scale is not None else x
        h1 = torch.relu(torch.addmm(b1, inputs, w1t))
        noised = h1
        if s2:
            draws = torch.randn_like(h1)
            noised = h1 + (s2 * h1.abs().mean()) * draws
        mask1 = torch.empty_like(h1).bernoulli_(1 - p1).div_(1 - p1) if p1 else None
        d1 = noised * mask1 if p1 else noised
        h2 = torch.relu(torch.addmm(b2, d1, w2t))
        mask2 = torch.empty_like(h2).bernoulli_(1 - p2).div_(1 - p2) if p2 else None
        d2 = h2 * mask2 if p2 else h2
        logits = torch.addmm(b3, d2, w3t)
        probs = torch._softmax(logits, 1, False) if softmax_first else logits
        log_probs = torch._log_softmax(probs, 1, False)
        loss, total_weight = _nll_loss(log_probs, y, None, 1, -100)  # the mean over the targets (none ignored)
        # backward
        g = _nll_loss_backward(_ONE, log_probs, y, None, 1, -100, total_weight)
        g = torch._log_softmax_backward_data(g, log_probs, 1, torch.float32)
        if softmax_first:
            g = torch._softmax_backward_data(g, probs, 1, torch.float32)
        grads3 = (g.t().mm(d2), g.sum(0))
        g = g.mm(w3)
        if p2:
            g = g * mask2
        g = _relu_backward(g, h2, 0)
        grads2 = (g.t().mm(d1), g.sum(0))
        g = g.mm(w2)
        if p1:
            g = g * mask1
        if s2:  # through the noise's scale: d/dh1 of s2 * mean(|h1|) * sum(g * draws)
            through_scale = (g * draws).sum() * s2  # summed to the scale's shape as autograd sums a broadcast
            g = g + through_scale.expand(h1.shape) / h1.numel() * h1.sgn()
        g = _relu_backward(g, h1, 0)
        grads1 = (g.t().mm(inputs), g.sum(0))
        torch._foreach_add_(params, [*grads1, *grads2, *grads3], alpha=-lr)
        return loss

    return step


@torch.no_grad()
def _stacked_sgd_step(stack: "StackedMLPs", params: list[torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
                      lr: float, softmax_first: bool) -> torch.Tensor:
    """``StackedMLPs.sgd_step``'s step: the loss of ``fit_stacked`` (``cross_entropy`` of ``[B, C, N]`` logits with
    ``reduction="none"``, which runs the 2-d loss on ``[B, C, 1, N]``; each model's mean; their sum) and its
    backward, then every group's."""
    outputs = [group.train_forward(x) for group in stack.groups]
    logits = outputs[0][0] if len(outputs) == 1 else torch.cat([logits for logits, _ in outputs])
    classes_first = logits.transpose(1, 2).contiguous()  # [B, C, N]
    probs = torch._softmax(classes_first, 1, False) if softmax_first else classes_first
    log_probs = torch._log_softmax(probs, 1, False)
    shape = log_probs.shape
    per_point, total_weight = _nll_loss2d(log_probs.view(shape[0], shape[1], 1, -1), targets, None, 0, -100)
    per_model = per_point.view(shape[0], shape[2]).mean(dim=1)
    # backward: d(sum of the models' means)/d(per point loss) = 1/N, then the ops' backward kernels
    g = _ONE.expand(shape[0]).unsqueeze(1).expand(shape[0], shape[2]) / shape[2]
    g = _nll_loss2d_backward(g.view(per_point.shape), log_probs.view(shape[0], shape[1], 1, -1), targets, None, 0,
                             -100, total_weight).view(shape)
    g = torch._log_softmax_backward_data(g, log_probs, 1, torch.float32)
    if softmax_first:
        g = torch._softmax_backward_data(g, probs, 1, torch.float32)
    g = g.transpose(1, 2)  # [B, N, C], as the logits
    grads, start = [], 0
    for group, (_, tape) in zip(stack.groups, outputs):
        grads += group.train_backward(g.narrow(0, start, len(group)), tape)
        start += len(group)
    torch._foreach_add_(params, grads, alpha=-lr)
    return per_model


class StackedMLPs(nn.Module):
    """Many ``PerturbedMLP``s of one shape as one network: weights stacked on a leading model axis.

    Built from the models themselves (so each starts from the weights its own seed gave it), each with its
    own regularization strengths and its own random stream ``generators[b]`` (the state the global stream
    had when model b was built: the draws an individual training would make next). The forward pass takes
    the inputs every model shares, ``[N, in]``, and returns logits ``[B, N, classes]``; matrix products are
    batched, noise and dropout masks are drawn per model, in the order ``PerturbedMLP`` draws them. So model b
    computes what ``PerturbedMLP`` computes from the same numbers, up to the order in which the CPU's BLAS
    rounds the batched products' sums (bit for bit on some CPUs, last bits apart on others).
    Neighbouring models with the same perturbations switched on form a group (``_Group``): each group draws
    and applies only its own, so a model without dropout pays nothing for its neighbours' masks (a stack
    ordered by setting has a group per kind of regularizer). ``unstack(b)`` gives model b back.
    """

    def __init__(self, models: list[PerturbedMLP], generators: list[torch.Generator]):
        super().__init__()
        if not models or len(models) != len(generators):
            raise ValueError("need one generator per model, and at least one model")
        kinds = [_kinds(m) for m in models]
        starts = [b for b in range(len(models)) if b == 0 or kinds[b] != kinds[b - 1]]
        bounds = list(zip(starts, starts[1:] + [len(models)]))
        self.groups = nn.ModuleList(_Group(models[a:b], generators[a:b]) for a, b in bounds)
        self._where = [(g, b - a) for g, (a, end) in enumerate(bounds) for b in range(a, end)]

    def __len__(self) -> int:
        return len(self._where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.groups) == 1:
            return self.groups[0](x)
        return torch.cat([group(x) for group in self.groups])

    def unstack(self, b: int) -> PerturbedMLP:
        """Model b, its weights set to the trained ones."""
        group, i = self._where[b]
        return self.groups[group].unstack(i)

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, softmax_first: bool, lr: float
                 ) -> Callable[[], torch.Tensor] | None:
        """One full-batch SGD step of every model on the shared inputs ``x`` ``[N, in]`` and classes ``y``
        ``[N]``, as a function that returns each model's mean loss ``[B]``: what ``training.batched.fit_stacked``
        computes with autograd (the stack's logits, classes first, through the softmax when ``softmax_first``,
        and the cross-entropy), written out with the kernels autograd runs, in its order: the same bits, with
        no graph recorded (``tests/test_mlp_step.py``). None for soft targets or off the CPU."""
        if y.ndim != 1 or x.device.type != "cpu" or any(p.device.type != "cpu" for p in self.parameters()):
            return None
        targets = y.expand(len(self), 1, len(y)).contiguous()  # the 2-d loss's targets, [B, 1, N]
        params = list(self.parameters())
        return lambda: _stacked_sgd_step(self, params, x, targets, lr, softmax_first)


def _kinds(model: PerturbedMLP) -> tuple[bool, bool, bool]:
    return (bool(getattr(model.input_noise, "scale", 0.0)), bool(getattr(model.hidden_noise, "scale", 0.0)),
            bool(getattr(model.drop1, "p", 0.0)))


class _Group(nn.Module):
    """Models of a stack with the same perturbations switched on (at their own strengths): every one of them
    draws and applies each perturbation the group has, and none other."""

    def __init__(self, models: list[PerturbedMLP], generators: list[torch.Generator]):
        super().__init__()
        object.__setattr__(self, "models", list(models))  # kept, not registered: unstack() fills them
        for name in ("fc1", "fc2", "fc3"):  # x @ W^T + b as baddbmm(b, x, W^T)
            layers = [getattr(m, name) for m in models]
            self.register_parameter(f"{name}_w", nn.Parameter(torch.stack([l.weight.detach().t() for l in layers])))
            self.register_parameter(f"{name}_b", nn.Parameter(torch.stack([l.bias.detach()[None] for l in layers])))
        self.generators = generators
        self.input_noise, self.hidden_noise, self.dropout = _kinds(models[0])
        self.p = [float(getattr(m.drop1, "p", 0.0)) for m in models]
        column = lambda values: torch.tensor(values).view(-1, 1, 1)  # noqa: E731
        self.register_buffer("_s1", column([float(getattr(m.input_noise, "scale", 0.0)) for m in models]),
                             persistent=False)
        self.register_buffer("_s2", column([float(getattr(m.hidden_noise, "scale", 0.0)) for m in models]),
                             persistent=False)
        self.register_buffer("_keep", column([1 - p for p in self.p]), persistent=False)
        # where dropout is all a group draws, NumPy draws its masks (the same bits, twice as fast)
        only_dropout = self.dropout and not (self.input_noise or self.hidden_noise)
        self._masks = [MaskStream(g, 1 - p) for g, p in zip(generators, self.p)] \
            if only_dropout and MaskStream.matches_torch() else None

    def __len__(self) -> int:
        return len(self.generators)

    def _noise(self, h: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """``h[b] + s_b * mean(|h[b]|) * N(0, 1)`` (the mean over model b's tensor)."""
        draws = torch.empty(h.shape, dtype=h.dtype)  # drawn on the CPU, where the generators are
        for b, generator in enumerate(self.generators):
            torch.randn(h.shape[1:], generator=generator, out=draws[b])
        return h + scales * h.abs().mean(dim=(1, 2), keepdim=True) * draws.to(h.device)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        """Inverted dropout with model b's rate, its mask drawn as ``F.dropout`` draws one on a CPU."""
        return h * self._mask(h)

    def _mask(self, h: torch.Tensor) -> torch.Tensor:
        """The next dropout mask of every model for ``h``: ``1 / keep`` where kept, 0 where dropped."""
        if self._masks is not None:
            drawn = np.empty((len(self), h[0].numel()), dtype=np.float32)
            for b, stream in enumerate(self._masks):
                stream.draw(drawn[b])
            return torch.from_numpy(drawn).view(h.shape).to(h.device)
        masks = torch.empty(h.shape, dtype=h.dtype)
        for b, generator in enumerate(self.generators):
            masks[b].bernoulli_(1 - self.p[b], generator=generator)
        return masks.to(h.device).div_(self._keep)

    def _draws(self, h: torch.Tensor) -> torch.Tensor:
        draws = torch.empty(h.shape, dtype=h.dtype)
        for b, generator in enumerate(self.generators):
            torch.randn(h.shape[1:], generator=generator, out=draws[b])
        return draws.to(h.device)

    def train_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """``forward`` in training mode without autograd: the logits, and what ``train_backward`` needs."""
        x = x.expand(len(self), *x.shape)
        if self.input_noise:
            draws = self._draws(x)
            x = x + self._s1 * x.abs().mean(dim=(1, 2), keepdim=True) * draws
        h1 = torch.relu(torch.baddbmm(self.fc1_b, x, self.fc1_w))
        noised, draws = h1, None
        if self.hidden_noise:
            draws = self._draws(h1)
            noised = h1 + self._s2 * h1.abs().mean(dim=(1, 2), keepdim=True) * draws
        mask1 = self._mask(h1) if self.dropout else None
        d1 = noised * mask1 if self.dropout else noised
        h2 = torch.relu(torch.baddbmm(self.fc2_b, d1, self.fc2_w))
        mask2 = self._mask(h2) if self.dropout else None
        d2 = h2 * mask2 if self.dropout else h2
        return torch.baddbmm(self.fc3_b, d2, self.fc3_w), (x, h1, draws, mask1, d1, h2, mask2, d2)

    def train_backward(self, g: torch.Tensor, tape: tuple) -> list[torch.Tensor]:
        """The gradients of the group's parameters (in ``parameters()`` order) from those of its logits: the
        ops of autograd's backward nodes for ``forward`` (``baddbmm``'s: ``grad.bmm(W^T)``, ``input^T.bmm(grad)``,
        the bias's sums over the points)."""
        x, h1, draws, mask1, d1, h2, mask2, d2 = tape
        grads3 = (d2.transpose(1, 2).bmm(g), g.sum(1, keepdim=True))
        g = g.bmm(self.fc3_w.transpose(1, 2))
        if mask2 is not None:
            g = g * mask2
        g = _relu_backward(g, h2, 0)
        grads2 = (d1.transpose(1, 2).bmm(g), g.sum(1, keepdim=True))
        g = g.bmm(self.fc2_w.transpose(1, 2))
        if mask1 is not None:
            g = g * mask1
        if draws is not None:  # through each model's noise scale, s2 * mean(|h1|) over its own tensor
            through_scale = (g * draws).sum((1, 2), keepdim=True) * self._s2
            g = g + through_scale.expand(h1.shape) / h1[0].numel() * h1.sgn()
        g = _relu_backward(g, h1, 0)
        return [x.transpose(1, 2).bmm(g), g.sum(1, keepdim=True), *grads2, *grads3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(len(self), *x.shape)  # every model perturbs its own copy of the shared input
        if self.training and self.input_noise:
            x = self._noise(x, self._s1)
        h = torch.relu(torch.baddbmm(self.fc1_b, x, self.fc1_w))
        if self.training and self.hidden_noise:
            h = self._noise(h, self._s2)
        if self.training and self.dropout:
            h = self._dropout(h)
        h = torch.relu(torch.baddbmm(self.fc2_b, h, self.fc2_w))
        if self.training and self.dropout:
            h = self._dropout(h)
        return torch.baddbmm(self.fc3_b, h, self.fc3_w)

    def unstack(self, b: int) -> PerturbedMLP:
        model = self.models[b]
        with torch.no_grad():
            for name in ("fc1", "fc2", "fc3"):
                layer = getattr(model, name)
                layer.weight.copy_(getattr(self, f"{name}_w")[b].t())
                layer.bias.copy_(getattr(self, f"{name}_b")[b, 0])
        return model.eval()


class MaskStream:
    """Dropout masks drawn by NumPy from a PyTorch generator's Mersenne Twister state: bit for bit the masks
    ``F.dropout`` multiplies by on a CPU (``bernoulli_(keep)``, then divided by ``keep``), about twice as fast.

    On a CPU, ``bernoulli_`` draws each element from two 32-bit outputs of the generator's MT19937: the low 53
    bits of ``first << 32 | second``, times 2**-53, below ``keep`` means kept. NumPy's MT19937 is the same
    generator; this stream starts from the generator's state and then owns it (the generator is not
    advanced). ``matches_torch()`` checks the equivalence on this installation; where it fails, callers use
    ``bernoulli_``.
    """

    def __init__(self, generator: torch.Generator, keep: float):
        state = generator.get_state().numpy()
        _, left, _, _ = struct.unpack_from("<QiiQ", state)
        self.bits = np.random.MT19937()
        self.bits.state = {"bit_generator": "MT19937",
                           "state": {"key": state[24:24 + 624 * 8].view(np.uint64).astype(np.uint32),
                                     "pos": 625 - left}}
        self.below = np.uint64(math.ceil(keep * 2 ** 53))  # u * 2**-53 < keep  <=>  u < ceil(keep * 2**53)
        self.kept_value = np.float32(1) / np.float32(keep)  # float32 division, as div_ does it

    def draw(self, out: np.ndarray) -> np.ndarray:
        """Fill the flat float32 array ``out`` with the next mask: ``1 / keep`` where kept, else 0."""
        raw = self.bits.random_raw(2 * out.size)
        kept = np.less((raw[0::2] & np.uint64(2 ** 21 - 1)) << np.uint64(32) | raw[1::2], self.below)
        return np.multiply(kept, self.kept_value, out=out)

    @staticmethod
    @lru_cache(maxsize=1)
    def matches_torch() -> bool:
        """Whether this stream draws what ``bernoulli_`` draws here, state after the draws included."""
        try:
            generator = torch.Generator().manual_seed(20)
            torch.randn(3, generator=generator)
            stream = MaskStream(generator, 0.7)
            sizes = (5, 700, 2000)
            ours = [stream.draw(np.empty(n, dtype=np.float32)) for n in sizes]
            theirs = [torch.empty(n).bernoulli_(0.7, generator=generator).div_(0.7).numpy() for n in sizes]
            after = MaskStream(generator, 0.7).draw(np.empty(99, dtype=np.float32))
            return all(np.array_equal(a, b) for a, b in zip(ours, theirs)) and \
                np.array_equal(after, stream.draw(np.empty(99, dtype=np.float32)))
        except Exception:  # another state layout: a PyTorch that keeps its generator differently
            return False
