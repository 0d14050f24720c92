"""Mixed-precision contexts that also hold on devices without autocast (the meta device of the CPU
sync check, models/ernerf/syncguard.py)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast_for(device: torch.device, enabled: bool = True) -> AbstractContextManager:
    """fp16 autocast on CUDA; a no-op elsewhere."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=enabled)


def autocast_off(device: torch.device) -> AbstractContextManager:
    """Autocast switched off for the device's type (nothing to switch off where it does not exist)."""
    if not torch.amp.is_autocast_available(device.type):
        return nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)
