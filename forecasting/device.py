"""Choice of torch device for training: ``auto`` takes CUDA when present, else the CPU."""

from __future__ import annotations

from typing import Literal

import torch

DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def select_device(choice: str) -> torch.device:
    """Resolve a device choice, with a clear error when CUDA is asked for but absent."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU (use --device cpu or auto)")
        return torch.device("cuda")
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    """A short human name for reports, e.g. 'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
