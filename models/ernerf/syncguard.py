"""A CPU check that GPU code never makes the host wait for the device.

Run the code on the meta device (tensors with shapes and no values) inside ``no_host_sync()``:

- meta tensors refuse every read of device values by themselves: ``.item()``, ``bool()``,
  ``nonzero``, boolean-mask indexing, data-dependent shapes all raise;
- the two modes here refuse, in addition, what synchronises on CUDA although it runs on meta: a
  blocking copy between the host and the device (an upload that is not ``non_blocking``, any
  download, ``torch.tensor(data, device=...)``) and operators that read device values inside
  (linalg's error checks, ``repeat_interleave`` without ``output_size``, ``unique``...).

Host tensors stay free to use: reading a CPU tensor is not a synchronisation. What this cannot
see: synchronisations inside CUDA libraries and the fused Triton kernels (they do not run on meta);
on a GPU, ``cuda_sync_log`` records what ``torch.cuda.set_sync_debug_mode`` reports, with the Python
stack of each (the CUDA-only tests and bench/gpu_check.py use it).
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class HostSyncError(RuntimeError):
    """An operation that would make the host wait for the device."""


# operators that read device values (or wait for them) whatever their arguments
_READS = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
    aten._linalg_check_errors.default, aten.is_nonzero.default, aten.equal.default,
    aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
}


def _on_device(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "cpu"


def _tensors(args, kwargs) -> list[torch.Tensor]:
    flat = list(args) + list(kwargs.values())
    out = []
    for a in flat:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def sync_reason(func, args, kwargs) -> str | None:
    """Why ``func(*args, **kwargs)`` would synchronise on CUDA, or None."""
    tensors = _tensors(args, kwargs)
    device = any(_on_device(t) for t in tensors)
    if func in _READS and device:
        return f"{func} reads device values"
    if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
        return "repeat_interleave with a tensor of repeats and no output_size"
    if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and device:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            return f"{func} with a boolean mask"
    if func is aten._to_copy.default:
        src, target = args[0], kwargs.get("device")
        if target is not None and (src.device.type == "cpu") != (torch.device(target).type == "cpu"):
            if src.device.type != "cpu":
                return "a download from the device"
            if not kwargs.get("non_blocking", False):
                return "a blocking upload to the device (use non_blocking from pinned memory)"
    if func is aten.copy_.default:
        dst, src = args[0], args[1]
        if (dst.device.type == "cpu") != (src.device.type == "cpu"):
            if src.device.type != "cpu":
                return "a download from the device"
            if not (len(args) > 2 and args[2]) and not kwargs.get("non_blocking", False):
                return "a blocking upload to the device (use non_blocking from pinned memory)"
    return None


class _NoSyncDispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs)
        if reason is not None:
            raise HostSyncError(reason)
        return func(*args, **kwargs)


class _NoSyncFactories(TorchFunctionMode):
    """``torch.tensor(data, device=d)`` builds on the host and copies below the dispatcher's view."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor):
            device = kwargs.get("device")
            if device is not None and torch.device(device).type != "cpu":
                data = args[0] if args else kwargs.get("data")
                if not (isinstance(data, torch.Tensor) and data.device.type != "cpu"):
                    raise HostSyncError(f"{func.__name__}(host data, device={device}) uploads and waits")
        return func(*args, **kwargs)


@contextmanager
def no_host_sync() -> Iterator[None]:
    """Raise HostSyncError (or meta's own error) at the first operation inside that would make the
    host wait for the device. Use it around code running on the meta device."""
    with _NoSyncFactories(), _NoSyncDispatch():
        yield


@contextmanager
def cuda_sync_log(stack_depth: int = 10) -> Iterator[list[str]]:
    """Record every synchronising CUDA call inside (``torch.cuda.set_sync_debug_mode("warn")``) as
    its message and the Python stack that made it; yields the list, filled as the block runs."""
    found: list[str] = []
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):  # torch: "called a synchronizing CUDA operation"
            show(message, category, filename, lineno, file, line)
            return
        stack = "".join(traceback.format_stack(limit=stack_depth + 2)[:-2])
        found.append(f"{message}\n{stack}")

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
