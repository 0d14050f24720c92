"""Optional wall-clock breakdown of rendering and training into named sections.

Model code marks its stages with ``with timed("encoding"): ...``; this costs nothing unless a
``SectionTimer`` is active (``with SectionTimer(sync) as timer: ...``), as bench/ernerf.py does.
Sections nest: each section's figure excludes the time of the sections inside it, so the figures
add up to the timed wall time; whatever no section covers is the caller's (host) time.
On CUDA pass ``sync=torch.cuda.synchronize`` so that device work is charged to its section.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

_active: SectionTimer | None = None


class SectionTimer:
    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync = sync or (lambda: None)
        self.seconds: dict[str, float] = defaultdict(float)  # exclusive time per section
        self._stack: list[float] = []  # time spent in child sections, per open section

    def __enter__(self) -> SectionTimer:
        global _active
        self._previous, _active = _active, self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = self._previous

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        self._stack.append(0.0)
        try:
            yield
        finally:
            self.sync()
            elapsed = time.perf_counter() - start
            children = self._stack.pop()
            self.seconds[name] += elapsed - children
            if self._stack:
                self._stack[-1] += elapsed


def timed(name: str):
    """A context manager charging its body to section ``name`` of the active timer (if any)."""
    return _active.section(name) if _active is not None else nullcontext()
