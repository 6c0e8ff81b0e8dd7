"""Small helpers shared by the importers."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused_gc"]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a model is read.

    A parse allocates many small objects that all stay alive until it ends; the collector's
    repeated passes over them cost up to 40% on large files and find nothing. Reference
    counting still frees everything as usual; the collector is resumed (if it was running)
    even when the parse raises.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
