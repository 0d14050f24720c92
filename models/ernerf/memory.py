"""How much device memory this process may still use.

PyTorch's caching allocator keeps freed blocks reserved for reuse: ``torch.cuda.mem_get_info``'s
free memory does not count them, although the process can use them again. What the process may
use is therefore the driver's free memory plus the reserved-but-unallocated part of its own cache;
a caller takes a share of that (the rest is left to other work and to other processes on a shared
GPU).
"""

from __future__ import annotations

import torch


def usable_bytes(free: int, reserved: int, allocated: int) -> int:
    """Free device memory plus the caching allocator's reserved-but-unused bytes."""
    return free + max(reserved - allocated, 0)


def usable_device_memory(device: torch.device) -> int:
    """``usable_bytes`` of a CUDA device, now."""
    free, _ = torch.cuda.mem_get_info(device)
    return usable_bytes(free, torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device))
