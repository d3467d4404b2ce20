"""Random role masking while training, so that the ensemble copes with a missing input.

Each training sample of each member independently masks each maskable role group
(`forecasting.spec`) with probability ``prob``: the group's standardised columns are
set to 0 (the training mean) and its indicator column to the standardised value of 1,
exactly what a gap looks like at inference. A fresh mask is drawn for every batch.
Validation and calibration data are left as they are (natural gaps only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from forecasting.features import FeatureSpec, Scaler, group_positions

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RoleMasker:
    """Which standardised columns each role group covers, and what a masked group looks like."""

    group_matrix: FloatArray  # (G, d): 1 at a group's columns and at its indicator column
    fill: FloatArray  # (d,) standardised value of a masked column: 0, or the indicator's "on"
    prob: float  # chance that one group of one sample is masked [-]

    @classmethod
    def for_spec(cls, spec: FeatureSpec, x_scaler: Scaler, prob: float) -> RoleMasker | None:
        """The masker of a spec; None when nothing can be masked or ``prob`` is 0."""
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"mask probability must lie in [0, 1), got {prob}")
        groups = group_positions(spec)
        if not groups or prob == 0.0:
            return None
        d = x_scaler.mean.shape[0]
        matrix = np.zeros((len(groups), d))
        fill = np.zeros(d)
        for g, (_, cols, ind) in enumerate(groups):
            matrix[g, cols] = 1.0
            matrix[g, ind] = 1.0
            fill[ind] = (1.0 - x_scaler.mean[ind]) / x_scaler.std[ind]
        return cls(group_matrix=matrix, fill=fill, prob=prob)

    def on(self, device: torch.device) -> TorchMasker:
        return TorchMasker(torch.as_tensor(self.group_matrix, dtype=torch.float32, device=device),
                           torch.as_tensor(self.fill, dtype=torch.float32, device=device), self.prob)


class TorchMasker:
    """`RoleMasker` as tensors on the training device."""

    def __init__(self, group_matrix: torch.Tensor, fill: torch.Tensor, prob: float) -> None:
        self.group_matrix, self.fill, self.prob = group_matrix, fill, prob

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x`` (..., d) standardised rows with random whole groups masked (drawn on the CPU: seeded)."""
        draw = torch.rand((*x.shape[:-1], self.group_matrix.shape[0]), generator=generator) < self.prob
        hit = draw.to(device=x.device, dtype=torch.float32) @ self.group_matrix > 0
        return torch.where(hit, self.fill.to(x.dtype), x)
