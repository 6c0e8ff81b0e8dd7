"""When the compiled scanners (``_textscan``, ``_wirescan``) are worth their start-up cost.

Both scanners are numba code. In a process that has not run a numba kernel yet, their first
call imports numba and initialises its CPU target (0.4-0.6 s measured on the issue-17
machine), while the pure-Python paths they shortcut (the token parser, the schema-driven
decoder) read every zoo model in 0.2-15 ms. So a load uses the compiled scanners once numba
is loaded anyway (a forward pass ran, or a kernel), or for text too large for the token
parser to be quick; else the Python path. Both give the same result on every input
(tests/fuzz/test_fuzz_prototxt.py, test_fuzz_caffemodel.py), so this is a speed choice only.
"""

from __future__ import annotations

import sys

__all__ = ["compiled_scan_pays", "TEXT_COMPILED_FROM"]

TEXT_COMPILED_FROM = 2 << 20  # bytes of prototxt: the token parser takes ~0.2 ms per KiB


def compiled_scan_pays(nbytes: int, python_from: int | None = None) -> bool:
    """Whether to use a compiled scanner on ``nbytes`` of input: numba is loaded already, or
    the input is at least ``python_from`` bytes (None: never too large for the Python path)."""
    if "numba" in sys.modules:
        return True
    return python_from is not None and nbytes >= python_from
