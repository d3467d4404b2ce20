"""A deep ensemble of MLPs that trains and predicts as one batched network.

Every layer holds weights shaped (members, in, out), so one `torch.baddbmm` runs all
members at once; there is no Python loop over members. Each member has a mean and a
variance head per target (trained on Gaussian negative log-likelihood, Lakshminarayanan
et al. 2017). The total predictive variance is the mixture's: the mean predicted noise
plus the spread of the member means.

For scoring many candidates against one state, the first layer is split into its
state and candidate parts, so the state product is computed once and broadcast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

FloatArray = npt.NDArray[np.float64]

MIN_VARIANCE = 1e-6
"""Floor on predicted variance in standardised target units, for a stable NLL."""


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while inside (restored to torch's default after).

    Tiny activations and gradients in the variance heads become subnormal, and x86 CPUs
    handle those about 20 times slower; one training run took 7 s instead of 0.4 s an epoch.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass(frozen=True)
class EnsembleConfig:
    """Shape of the ensemble; stored in the model's JSON sidecar."""

    n_inputs: int
    n_outputs: int = 2
    members: int = 5
    hidden: tuple[int, ...] = (64, 64)
    linear_skip: bool = False  # a linear path from the inputs to the means, beside the MLP

    def __post_init__(self) -> None:
        if self.members < 1 or self.n_inputs < 1 or self.n_outputs < 1:
            raise ValueError(f"members, n_inputs and n_outputs must be positive: {self}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden sizes must be positive: {self.hidden}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnsembleConfig:
        return cls(int(data["n_inputs"]), int(data["n_outputs"]), int(data["members"]),
                   tuple(int(h) for h in data["hidden"]), bool(data.get("linear_skip", False)))


class BatchedEnsemble(nn.Module):
    """M independent MLPs evaluated together: input (M, B, in) or (B, in) -> (M, B, 2*out)."""

    def __init__(self, config: EnsembleConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        sizes = [config.n_inputs, *config.hidden, 2 * config.n_outputs]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # PyTorch's nn.Linear default init, per member
            w = torch.empty(config.members, fan_in, fan_out).uniform_(-bound, bound, generator=generator)
            b = torch.empty(config.members, 1, fan_out).uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        # Linear skip (config.linear_skip): means = MLP(x) + x W + b. Started at a ridge fit
        # (`init_skip`), the members begin where a linear model ends and the MLP learns
        # only what is not linear: on a few days of history that is what lets the ensemble
        # match its linear and tree baselines instead of trailing them.
        self.skip_w: nn.Parameter | None = None
        self.skip_b: nn.Parameter | None = None
        if config.linear_skip:
            self.skip_w = nn.Parameter(torch.zeros(config.members, config.n_inputs, config.n_outputs))
            self.skip_b = nn.Parameter(torch.zeros(config.members, 1, config.n_outputs))

    def init_skip(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set every member's linear path to ``weight`` (in, out) and ``bias`` (out,)."""
        if self.skip_w is None or self.skip_b is None:
            raise ValueError("this ensemble has no linear skip")
        with torch.no_grad():
            self.skip_w.copy_(weight.to(self.skip_w).expand_as(self.skip_w))
            self.skip_b.copy_(bias.to(self.skip_b).reshape(1, 1, -1).expand_as(self.skip_b))

    def _with_skip(self, raw: torch.Tensor, linear: torch.Tensor | None) -> torch.Tensor:
        if linear is None:
            return raw
        k = self.config.n_outputs
        return torch.cat((raw[..., :k] + linear, raw[..., k:]), dim=-1)

    def _hidden_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        n = len(self.weights)
        for i in range(start, n):
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
            if i < n - 1:
                h = F.silu(h, inplace=not torch.is_grad_enabled())
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (M, B, 2*out): means then unconstrained variances."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.config.members, -1, -1)
        linear = None if self.skip_w is None or self.skip_b is None else torch.baddbmm(self.skip_b, x, self.skip_w)
        return self._with_skip(self._hidden_from(x, 0), linear)

    def forward_broadcast(self, state: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Raw outputs for one state (n_state,) and N candidate rows (N, n_cand).

        The first layer is W_s s + W_c c + b: the state term is one (M, 1, H) product,
        added to the per-candidate term inside the same fused multiply-add.
        """
        n_state = state.shape[-1]
        w0 = self.weights[0]
        state_term = torch.einsum("s,msh->mh", state, w0[:, :n_state, :]).unsqueeze(1) + self.biases[0]
        cand = candidates.unsqueeze(0).expand(self.config.members, -1, -1)
        h = torch.baddbmm(state_term, cand, w0[:, n_state:, :])
        h = F.silu(h, inplace=not torch.is_grad_enabled())
        linear = None
        if self.skip_w is not None and self.skip_b is not None:
            skip_state = torch.einsum("s,mso->mo", state, self.skip_w[:, :n_state, :]).unsqueeze(1) + self.skip_b
            linear = torch.baddbmm(skip_state, cand, self.skip_w[:, n_state:, :])
        return self._with_skip(self._hidden_from(h, 1), linear)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) per member, each (M, B, out)."""
        k = self.config.n_outputs
        mean = raw[..., :k]
        var = F.softplus(raw[..., k:].float()) + MIN_VARIANCE
        return mean.float(), var


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Mean Gaussian NLL over members, samples and targets (target broadcast over members).

    ``beta`` > 0: the beta-NLL of Seitzer et al. (2022), each term weighted by var**beta
    (no gradient through the weight), so that hard samples are not written off as noise
    and the mean fits as well as under squared error (beta = 1) while the variance is still learned.
    """
    if beta == 0.0:
        return F.gaussian_nll_loss(mean, target.expand_as(mean), var, full=False, reduction="mean")
    nll = F.gaussian_nll_loss(mean, target.expand_as(mean), var, full=False, reduction="none")
    return (nll * var.detach() ** beta).mean()


def mixture(raw: npt.NDArray[np.float32], n_outputs: int) -> tuple[FloatArray, FloatArray]:
    """Collapse members of raw outputs (M, B, 2*out): mixture mean (B, out) and total variance.

    Total variance = mean predicted noise + variance of the member means. Done in numpy
    on purpose: torch reductions over strided views of such small outputs took ~6 ms
    each on two CPU threads, several times the cost of the network itself.
    """
    mean = raw[..., :n_outputs].astype(np.float64)
    var = np.logaddexp(0.0, raw[..., n_outputs:].astype(np.float64)) + MIN_VARIANCE  # softplus, as in `split`
    mu = mean.mean(axis=0)
    spread = np.square(mean - mu).mean(axis=0)
    return mu, var.mean(axis=0) + spread
